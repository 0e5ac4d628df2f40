//! The access log: what one request did, returned by its route as an [`Outcome`] and logged once.

use std::time::Duration;

use http::header::HeaderName;
use http::{HeaderValue, Request, Response, StatusCode};

use crate::body::ResponseBody;
use crate::cache::status::CacheStatus;
use crate::error::ProxyError;
use crate::route::RouteKind;

// Names made once: inserting by a `&str` parses the name for every response.
static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
static X_CACHE: HeaderName = HeaderName::from_static("x-cache");
static CACHE_STATUS: HeaderName = HeaderName::from_static("cache-status");

/// What a route did for one request: the answer, and what the cache and the
/// upstream did for it. Routes return it; `handler::handle` turns it into
/// headers, the access event and the request metrics, once.
#[derive(Debug)]
pub(crate) struct Outcome {
    /// The response, or the error the proxy answers with.
    pub(crate) answer: Result<Response<ResponseBody>, ProxyError>,
    /// What the cache did, when the request reached it.
    pub(crate) cache: Option<CacheStatus>,
    /// Time spent on the upstream exchange this request waited for.
    pub(crate) upstream: Option<Duration>,
}

impl Outcome {
    /// A response, before the cache or the upstream had a say.
    pub(crate) fn answered(response: Response<ResponseBody>) -> Outcome {
        Outcome {
            answer: Ok(response),
            cache: None,
            upstream: None,
        }
    }

    /// An error, before the cache or the upstream had a say.
    pub(crate) fn failed(error: ProxyError) -> Outcome {
        Outcome {
            answer: Err(error),
            cache: None,
            upstream: None,
        }
    }

    /// This outcome, with what the cache did.
    pub(crate) fn with_cache(self, status: CacheStatus) -> Outcome {
        Outcome {
            cache: Some(status),
            ..self
        }
    }
}

/// What is logged of a request once it is answered.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Answered {
    /// The kind of route taken.
    pub(crate) route: RouteKind,
    pub(crate) status: StatusCode,
    pub(crate) cache: Option<CacheStatus>,
    pub(crate) upstream: Option<Duration>,
    /// The error code answered, if the proxy answered with an error.
    pub(crate) error: Option<&'static str>,
    pub(crate) latency: Duration,
}

/// Who asked what: the part of the access event known when a request arrives.
#[derive(Debug)]
pub(crate) struct AccessRecord {
    request_id: HeaderValue,
    method: http::Method,
    /// The request target, shared with the request (no copy); only its path is logged.
    uri: http::Uri,
}

impl AccessRecord {
    /// Starts the record of a request. Its path is logged, never the query or headers.
    pub(crate) fn start<B>(request: &Request<B>) -> AccessRecord {
        AccessRecord {
            request_id: request_id(),
            method: request.method().clone(),
            uri: request.uri().clone(),
        }
    }

    /// Adds `x-request-id`, and `x-cache` and `cache-status` when the cache had a say.
    pub(crate) fn decorate(
        &self,
        response: &mut Response<ResponseBody>,
        cache: Option<&CacheStatus>,
    ) {
        let headers = response.headers_mut();
        headers.insert(X_REQUEST_ID.clone(), self.request_id.clone());
        if let Some(status) = cache {
            headers.insert(
                X_CACHE.clone(),
                HeaderValue::from_static(status.result.as_str()),
            );
            headers.insert(CACHE_STATUS.clone(), status.header_value());
        }
    }

    /// Emits the access event.
    pub(crate) fn emit(&self, answered: &Answered) {
        let cache = answered.cache;
        tracing::info!(
            target: "ayra_cache::access",
            request_id = self.request_id.to_str().unwrap_or(""),
            method = self.method.as_str(),
            path = self.uri.path(),
            route = answered.route.as_str(),
            status = answered.status.as_u16(),
            cache = cache.map_or("none", |c| c.result.label()),
            detail = cache.and_then(|c| c.detail).unwrap_or(""),
            collapsed = cache.is_some_and(|c| c.collapsed),
            refresh_started = cache.is_some_and(|c| c.refreshing),
            fwd_status = cache.and_then(|c| c.fwd_status),
            error = answered.error.unwrap_or(""),
            latency_ms = millis(answered.latency),
            upstream_ms = answered.upstream.map(millis),
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
