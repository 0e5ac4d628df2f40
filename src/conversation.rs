//! The cached route, `GET`/`HEAD /v1/conversations/{id}`: key, lookup, shared fetch, response.

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::{header, HeaderValue, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;

use crate::auth::Credential;
use crate::cache::coalesce::Role;
use crate::cache::entry::{CachedResponse, Freshness};
use crate::cache::key::{self, CacheKey};
use crate::cache::status::{CacheResult, CacheStatus};
use crate::cache::{Failure, FetchOutcome};
use crate::error::{ProxyError, UpstreamError};
use crate::handler::AppState;
use crate::passthrough;
use crate::route::ConversationId;
use crate::telemetry::AccessRecord;
use crate::upstream::{Upstream, UpstreamResponse};

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
        let refreshing = state.cache.wants_refresh(&entry, Instant::now())
            && state
                .cache
                .refresh(key.clone(), fetcher(&state.upstream, &key, &credential));
        return Ok(hit(&entry, record, refreshing));
    }
    let (outcome, role) = state
        .cache
        .fetch(key.clone(), fetcher(&state.upstream, &key, &credential))
        .await
        .map_err(|_| ProxyError::Internal)?;
    if role == Role::Collapsed {
        state.metrics.coalesced_waiter();
    }
    let status = CacheStatus {
        collapsed: role == Role::Collapsed,
        ..CacheStatus::new(CacheResult::Miss)
    };
    match outcome {
        FetchOutcome::Cached(entry) => Ok(hit(&entry, record, false)),
        FetchOutcome::Stale { entry, failure } => stale(&entry, failure, status, record),
        FetchOutcome::Failed(error) => failed(error, status, record),
        FetchOutcome::Answered {
            response,
            stored,
            revalidated,
        } => {
            record.cache = Some(CacheStatus {
                stored: stored.is_ok(),
                detail: stored.err().map(|reason| reason.as_str()),
                revalidated,
                ..answered(status, &response)
            });
            record.upstream = Some(response.elapsed);
            Ok(forwarded(&response))
        }
    }
}

/// The upstream call for `key` (lazy: nothing happens until it is polled),
/// holding the credential only until it is made.
fn fetcher(
    upstream: &Arc<Upstream>,
    key: &CacheKey,
    credential: &Credential,
) -> impl Future<Output = Result<UpstreamResponse, UpstreamError>> + Send + 'static {
    let upstream = Arc::clone(upstream);
    let (id, flags) = (key.id.clone(), key.flags);
    let authorization = credential.upstream.clone();
    async move {
        upstream
            .get_conversation(&id, flags, authorization.as_ref())
            .await
    }
}

/// A HIT, built from the entry's prebuilt parts plus `age`.
fn hit(
    entry: &CachedResponse,
    record: &mut AccessRecord,
    refreshing: bool,
) -> Response<Full<Bytes>> {
    let now = Instant::now();
    record.cache = Some(CacheStatus {
        ttl: Some(entry.time_to_live(now).as_secs()),
        refreshing,
        ..CacheStatus::new(CacheResult::Hit)
    });
    from_entry(entry, now)
}

/// A stale entry standing in for a failing upstream, unless it died meanwhile.
fn stale(
    entry: &CachedResponse,
    failure: Failure,
    status: CacheStatus,
    record: &mut AccessRecord,
) -> Result<Response<Full<Bytes>>, ProxyError> {
    let now = Instant::now();
    let fwd_status = failure.status().map(|status| status.as_u16());
    if entry.freshness(now) == Freshness::Dead {
        return match failure {
            Failure::Error(error) => failed(error, status, record),
            Failure::Answered(response) => {
                record.cache = Some(CacheStatus {
                    revalidated: true,
                    ..answered(status, &response)
                });
                Ok(forwarded(&response))
            }
        };
    }
    record.cache = Some(CacheStatus {
        result: CacheResult::Stale,
        fwd_status,
        detail: Some("stale-if-error"),
        ..status
    });
    Ok(from_entry(entry, now))
}

fn failed(
    error: UpstreamError,
    status: CacheStatus,
    record: &mut AccessRecord,
) -> Result<Response<Full<Bytes>>, ProxyError> {
    record.cache = Some(CacheStatus {
        detail: Some(error.as_str()),
        ..status
    });
    Err(error.into())
}

/// `status` with the upstream's status noted when it is not a 200.
fn answered(status: CacheStatus, response: &UpstreamResponse) -> CacheStatus {
    CacheStatus {
        fwd_status: (response.status != StatusCode::OK).then_some(response.status.as_u16()),
        ..status
    }
}

fn from_entry(entry: &CachedResponse, now: Instant) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(entry.body().clone()));
    *response.status_mut() = entry.status();
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
