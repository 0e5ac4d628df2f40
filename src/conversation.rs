//! The cached route, `GET`/`HEAD /v1/conversations/{id}`: key, lookup, shared fetch, response.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::{header, HeaderValue, Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;

use crate::auth::Credential;
use crate::cache::coalesce::Role;
use crate::cache::entry::CachedResponse;
use crate::cache::key::{self, CacheKey};
use crate::cache::status::{CacheResult, CacheStatus};
use crate::cache::FetchOutcome;
use crate::error::ProxyError;
use crate::handler::AppState;
use crate::passthrough;
use crate::route::ConversationId;
use crate::telemetry::AccessRecord;
use crate::upstream::UpstreamResponse;

/// Answers a conversation read from the cache, or from one shared upstream fetch.
pub async fn serve(
    state: &AppState,
    request: Request<Incoming>,
    id: ConversationId,
    credential: Credential,
    record: &mut AccessRecord,
) -> Result<Response<Full<Bytes>>, ProxyError> {
    let flags = match key::read_flags(request.uri().query()) {
        Ok(flags) => flags,
        Err(reason) => {
            record.cache = Some(CacheStatus {
                detail: Some(reason.as_str()),
                ..CacheStatus::new(CacheResult::Bypass)
            });
            return passthrough::forward(state, request, &credential, record).await;
        }
    };
    drop(request);
    let key = CacheKey {
        partition: credential.partition,
        id,
        flags,
    };
    if let Some(entry) = state.cache.lookup(&key).await {
        return Ok(hit(&entry, record));
    }
    let upstream = Arc::clone(&state.upstream);
    let (outcome, role) = state
        .cache
        .fetch(key.clone(), move || async move {
            upstream
                .get_conversation(&key.id, key.flags, credential.upstream.as_ref())
                .await
        })
        .await
        .map_err(|_| ProxyError::Internal)?;
    if role == Role::Collapsed {
        state.metrics.coalesced_waiter();
    }
    let mut status = CacheStatus {
        collapsed: role == Role::Collapsed,
        ..CacheStatus::new(CacheResult::Miss)
    };
    match outcome {
        FetchOutcome::Cached(entry) => Ok(hit(&entry, record)),
        FetchOutcome::Failed(error) => {
            status.detail = Some(error.as_str());
            record.cache = Some(status);
            Err(error.into())
        }
        FetchOutcome::Answered { response, stored } => {
            match stored {
                Ok(_) => status.stored = true,
                Err(reason) => status.detail = Some(reason.as_str()),
            }
            if response.status != http::StatusCode::OK {
                status.fwd_status = Some(response.status.as_u16());
            }
            record.cache = Some(status);
            record.upstream = Some(response.elapsed);
            Ok(forwarded(&response))
        }
    }
}

/// A HIT, built from the entry's prebuilt parts plus `age`.
fn hit(entry: &CachedResponse, record: &mut AccessRecord) -> Response<Full<Bytes>> {
    let now = Instant::now();
    record.cache = Some(CacheStatus {
        ttl: Some(entry.time_to_live(now).as_secs()),
        ..CacheStatus::new(CacheResult::Hit)
    });
    let mut response = Response::new(Full::new(entry.body().clone()));
    let headers = response.headers_mut();
    headers.clone_from(entry.headers());
    headers.insert(header::AGE, HeaderValue::from(entry.age(now)));
    response
}

/// The upstream's answer as received, hop-by-hop headers already gone.
pub fn forwarded(upstream: &UpstreamResponse) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(upstream.body.clone()));
    *response.status_mut() = upstream.status;
    *response.headers_mut() = upstream.headers.clone();
    response
}
