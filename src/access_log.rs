//! The access log: what one request did, returned by its route as an [`Outcome`] and logged once.

use std::time::Duration;

use http::header::HeaderName;
use http::{HeaderValue, Request, Response, StatusCode};

use crate::body::ResponseBody;
use crate::cache::status::CacheStatus;
use crate::error::ProxyError;
use crate::route::RouteKind;
use crate::trace_context::{RequestIds, TraceId, X_REQUEST_ID};

// Names made once: inserting by a `&str` parses the name for every response.
static X_CACHE: HeaderName = HeaderName::from_static("x-cache");
static CACHE_STATUS: HeaderName = HeaderName::from_static("cache-status");

/// What a route did for one request: the answer, and what the cache and the
/// upstream did for it. Routes return it; `handler::handle` turns it into
/// headers, the access event and the request metrics, once.
#[derive(Debug)]
pub(crate) struct Outcome {
    /// The response, or the error the proxy answers with. Boxed: an
    /// outcome is handed up by value through every level of the request
    /// path, and a response is 176 bytes that each level copied with a call
    /// to `memcpy`; with the box an outcome is about 128 bytes, moved inline
    /// (see docs/decisions.md).
    pub(crate) answer: Result<Box<Response<ResponseBody>>, ProxyError>,
    /// What the cache did, when the request reached it.
    pub(crate) cache: Option<CacheStatus>,
    /// Time spent on the upstream exchange this request waited for.
    pub(crate) upstream: Option<Duration>,
    /// A request that joined another's upstream exchange: the trace of the
    /// request that started it, when that had one.
    pub(crate) leader_trace: Option<TraceId>,
    /// How long its upstream call waited for a turn in the budget, when it waited.
    pub(crate) budget_wait: Option<Duration>,
}

impl Outcome {
    /// A response, before the cache or the upstream had a say.
    pub(crate) fn answered(response: impl Into<Box<Response<ResponseBody>>>) -> Outcome {
        Outcome {
            answer: Ok(response.into()),
            cache: None,
            upstream: None,
            leader_trace: None,
            budget_wait: None,
        }
    }

    /// An error, before the cache or the upstream had a say.
    pub(crate) fn failed(error: ProxyError) -> Outcome {
        Outcome {
            answer: Err(error),
            cache: None,
            upstream: None,
            leader_trace: None,
            budget_wait: None,
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
    /// The trace of the request whose upstream exchange this one joined.
    pub(crate) leader_trace: Option<TraceId>,
    /// How long its upstream call waited for a turn in the budget.
    pub(crate) budget_wait: Option<Duration>,
    /// The error code answered, if the proxy answered with an error.
    pub(crate) error: Option<&'static str>,
    pub(crate) latency: Duration,
}

/// Who asked what: the part of the access event known when a request arrives.
#[derive(Debug)]
pub(crate) struct AccessRecord {
    /// Its request id and trace: what the response, the access event and
    /// any upstream call made for it carry.
    ids: RequestIds,
    method: http::Method,
    /// The request target, shared with the request (no copy); only its path
    /// is logged. Kept only when the access event is on as the request
    /// arrives: the level in force then decides whether it is logged.
    uri: Option<http::Uri>,
}

impl AccessRecord {
    /// Starts the record of a request. Its path is logged, and its ids,
    /// never the query or other headers.
    pub(crate) fn start<B>(request: &Request<B>) -> AccessRecord {
        AccessRecord {
            ids: RequestIds::of(request.headers()),
            method: request.method().clone(),
            uri: tracing::enabled!(target: "ayra_cache::access", tracing::Level::INFO)
                .then(|| request.uri().clone()),
        }
    }

    /// The request's own ids.
    pub(crate) fn ids(&self) -> &RequestIds {
        &self.ids
    }

    /// Adds `x-request-id`, and `x-cache` and `cache-status` when the cache
    /// had a say. Last, after [`AccessRecord::emit`]: the request id moves
    /// into the response instead of being copied.
    pub(crate) fn decorate(
        self,
        response: &mut Response<ResponseBody>,
        cache: Option<&CacheStatus>,
    ) {
        let headers = response.headers_mut();
        headers.insert(X_REQUEST_ID.clone(), self.ids.request_id);
        if let Some(status) = cache {
            headers.insert(
                X_CACHE.clone(),
                HeaderValue::from_static(status.result.as_str()),
            );
            headers.insert(CACHE_STATUS.clone(), status.header_value());
        }
    }

    /// Emits the access event. A request that joined another's exchange
    /// logs that one's trace id when it came with a trace of its own.
    pub(crate) fn emit(&self, answered: &Answered) {
        // Off when the request arrived: not logged, even if the level was
        // raised since (by a reload).
        let Some(uri) = &self.uri else {
            return;
        };
        let cache = answered.cache;
        // By reference: nothing is copied unless the event is enabled.
        let trace = self.ids.trace.as_ref();
        let leader = answered.leader_trace.as_ref().filter(|_| trace.is_some());
        // Fields are evaluated only when the event is enabled: the ids are
        // written as hex (on the stack) only then.
        tracing::info!(
            target: "ayra_cache::access",
            request_id = self.ids.request_id.to_str().unwrap_or(""),
            trace_id = trace.map(|trace| display(trace.trace_id_hex())),
            parent_id = trace.map(|trace| display(trace.parent_id_hex())),
            method = self.method.as_str(),
            path = uri.path(),
            route = answered.route.as_str(),
            status = answered.status.as_u16(),
            cache = cache.map_or("none", |c| c.result.label()),
            detail = cache.and_then(|c| c.detail).unwrap_or(""),
            collapsed = cache.is_some_and(|c| c.collapsed),
            leader_trace_id = leader.map(|leader| display(leader.hex())),
            refresh_started = cache.is_some_and(|c| c.refreshing),
            fwd_status = cache.and_then(|c| c.fwd_status),
            error = answered.error.unwrap_or(""),
            latency_ms = millis(answered.latency),
            upstream_ms = answered.upstream.map(millis),
            budget_wait_ms = answered.budget_wait.map(millis),
            "request"
        );
    }
}

fn millis(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}
