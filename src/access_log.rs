//! The access log: what one request did, gathered on its way through and logged once.

use std::time::Duration;

use http::header::HeaderName;
use http::{HeaderValue, Request, Response};

use crate::body::ResponseBody;
use crate::cache::status::CacheStatus;
use crate::route::RouteKind;

// Names made once: inserting by a `&str` parses the name for every response.
static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
static X_CACHE: HeaderName = HeaderName::from_static("x-cache");
static CACHE_STATUS: HeaderName = HeaderName::from_static("cache-status");

/// What one request did, gathered on its way through and logged once.
#[derive(Debug)]
pub struct AccessRecord {
    request_id: HeaderValue,
    method: http::Method,
    /// The request target, shared with the request (no copy); only its path is logged.
    uri: http::Uri,
    /// The kind of route taken.
    pub route: RouteKind,
    /// What the cache did, when the request reached it.
    pub cache: Option<CacheStatus>,
    /// Time spent on the upstream exchange this request waited for.
    pub upstream: Option<Duration>,
    /// The error code answered, if the proxy answered with an error.
    pub error: Option<&'static str>,
}

impl AccessRecord {
    /// Starts the record of a request. Its path is logged, never the query or headers.
    pub fn start<B>(request: &Request<B>) -> AccessRecord {
        AccessRecord {
            request_id: request_id(),
            method: request.method().clone(),
            uri: request.uri().clone(),
            route: RouteKind::Other,
            cache: None,
            upstream: None,
            error: None,
        }
    }

    /// Adds `x-request-id`, and `x-cache` and `cache-status` when the cache had a say.
    pub fn decorate(&self, response: &mut Response<ResponseBody>) {
        let headers = response.headers_mut();
        headers.insert(X_REQUEST_ID.clone(), self.request_id.clone());
        if let Some(status) = &self.cache {
            headers.insert(
                X_CACHE.clone(),
                HeaderValue::from_static(status.result.as_str()),
            );
            headers.insert(CACHE_STATUS.clone(), status.header_value());
        }
    }

    /// Emits the access event.
    pub fn emit(&self, status: http::StatusCode, latency: Duration) {
        let cache = self.cache.map_or("none", |c| c.result.label());
        let detail = self.cache.and_then(|c| c.detail).unwrap_or("");
        tracing::info!(
            target: "ayra_cache::access",
            request_id = self.request_id.to_str().unwrap_or(""),
            method = self.method.as_str(),
            path = self.uri.path(),
            route = self.route.as_str(),
            status = status.as_u16(),
            cache,
            detail,
            collapsed = self.cache.is_some_and(|c| c.collapsed),
            refresh_started = self.cache.is_some_and(|c| c.refreshing),
            fwd_status = self.cache.and_then(|c| c.fwd_status),
            error = self.error.unwrap_or(""),
            latency_ms = millis(latency),
            upstream_ms = self.upstream.map(millis),
            "request"
        );
    }
}

fn millis(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

fn request_id() -> HeaderValue {
    let id = uuid::Uuid::new_v4();
    let mut buffer = uuid::Uuid::encode_buffer();
    HeaderValue::from_str(id.simple().encode_lower(&mut buffer))
        .unwrap_or_else(|_| HeaderValue::from_static("-"))
}
