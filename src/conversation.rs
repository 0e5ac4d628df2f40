//! The cached route, `GET`/`HEAD /v1/conversations/{id}`: key, lookup, shared fetch, response.

use std::future::Future;
use std::time::Instant;

use http::{header, HeaderMap, HeaderValue, Request, Response, StatusCode};
use hyper::body::Incoming;

use crate::access_log::Outcome;
use crate::auth::Credential;
use crate::body::ResponseBody;
use crate::budget::ExhaustedOutcome;
use crate::cache::coalescing::Role;
use crate::cache::encoding::{negotiate, Encoding};
use crate::cache::entry::{CachedResponse, Freshness};
use crate::cache::key::{self, BypassReason, CacheKey, KeyRef};
use crate::cache::representation::not_modified;
use crate::cache::seconds;
use crate::cache::status::{CacheResult, CacheStatus};
use crate::cache::{Failure, FetchError, FetchOutcome, Fetched, Found, StarterTrace};
use crate::conversation_fetch::{upstream_fetch, CallParts};
use crate::domain::ConversationIdRef;
use crate::error::ProxyError;
use crate::live::Live;
use crate::spending::{self, CallFor, WaitNote};
use crate::state::AppState;
use crate::trace_context::RequestIds;
use crate::upstream::UpstreamError;

/// Answers a conversation read from the cache, or from one shared upstream
/// fetch; returns the answer with what the cache and the upstream did. An
/// upstream call made for it (a fetch it starts, a refresh it triggers)
/// carries its `ids`; neither keys nor is stored with the answer. A read
/// whose query the cache cannot key is not answered here: the reason comes
/// back, and the caller, which owns the request, forwards it with
/// [`bypass`] (the request is only borrowed here, and `id` borrows from it).
///
/// A HIT is answered in here; everything that calls the upstream (a MISS,
/// a bypass) runs boxed: held inline, its few KB of state would be part of
/// every HIT's future, which the server moves (copies) for each request.
/// An async block, not an `async fn`: see `handler::handle`.
#[allow(
    clippy::manual_async_fn,
    reason = "an async fn holds its arguments twice"
)]
pub(crate) fn serve<'a>(
    state: &'a AppState,
    live: &'a Live,
    request: &'a Request<Incoming>,
    id: ConversationIdRef<'a>,
    credential: &'a Credential,
    ids: &'a RequestIds,
) -> impl Future<Output = Result<Outcome, BypassReason>> + Send + 'a {
    async move {
        let flags = key::read_flags(request.uri().query())?;
        // The body of a read is never used; the headers pick the representation.
        let headers = request.headers();
        // Borrowed: a HIT makes no key of its own; a fetch or a refresh does.
        let key = KeyRef {
            partition: credential.partition,
            id,
            flags,
        };
        let rules = &live.cache;
        let Some(Found { entry, now }) = state.cache.lookup(&key).await else {
            return Ok(Box::pin(miss(state, live, key.owned(), credential, headers, ids)).await);
        };
        let client = Client::new(headers, &rules.encodings);
        if client.wants_compression() {
            state.cache.precompress(&key, &entry, rules);
        }
        let refreshing = rules.wants_refresh(&entry, now) && {
            let call = CallFor::Refresh;
            let key = key.owned();
            let (fetch, starter, _) = call_for(state, live, &key, credential, ids, headers, call);
            state.cache.refresh(key, starter, fetch, rules)
        };
        Ok(hit(&entry, &client, refreshing, now))
    }
}

/// A conversation read whose query the cache cannot key (`reason`):
/// forwarded as it came, never cached.
pub(crate) async fn bypass(
    state: &AppState,
    live: &Live,
    request: Request<Incoming>,
    credential: &Credential,
    ids: &RequestIds,
    reason: BypassReason,
) -> Outcome {
    let bypass = CacheStatus {
        detail: Some(reason.as_str()),
        ..CacheStatus::new(CacheResult::Bypass)
    };
    let forwarded = state
        .passthrough
        .forward(live, request, credential, ids)
        .await;
    forwarded.with_cache(bypass)
}

/// A conversation read the cache could not answer: one shared upstream
/// fetch, started or joined.
async fn miss(
    state: &AppState,
    live: &Live,
    key: CacheKey,
    credential: &Credential,
    headers: &HeaderMap,
    ids: &RequestIds,
) -> Outcome {
    let client = Client::new(headers, &live.cache.encodings);
    let call = CallFor::Client;
    let (fetch, starter, note) = call_for(state, live, &key, credential, ids, headers, call);
    let waiting = state.metrics.fetch_waiting();
    let fetched = state.cache.fetch(key, starter, fetch, &live.cache).await;
    drop(waiting);
    let Ok((outcome, role)) = fetched else {
        return Outcome::failed(ProxyError::Internal);
    };
    missed(state, (outcome, note), role, &client)
}

/// What a MISS gets from the fetch it started or joined; one that joined
/// learns the trace of the request that started it. The one that started
/// it logs how long its call waited for a turn in the budget (`note`).
fn missed(
    state: &AppState,
    (outcome, note): (FetchOutcome, Option<WaitNote>),
    role: Role<StarterTrace>,
    client: &Client<'_>,
) -> Outcome {
    let refused = got_no_turn(&outcome) && matches!(role, Role::Leader);
    let leader_trace = match role {
        Role::Leader => None,
        Role::Collapsed { leader } => {
            state.metrics.coalesced_waiter();
            leader
        }
    };
    let status = CacheStatus {
        collapsed: matches!(role, Role::Collapsed { .. }),
        ..CacheStatus::new(CacheResult::Miss)
    };
    let answered = fetched_outcome(outcome, client, status);
    // One refused call, counted once: by the request that made it.
    if refused {
        let stood_in = answered
            .cache
            .is_some_and(|c| c.result == CacheResult::Stale);
        state.budgets.exhausted(if stood_in {
            ExhaustedOutcome::Stale
        } else {
            ExhaustedOutcome::Rejected
        });
    }
    Outcome {
        leader_trace,
        budget_wait: note.as_ref().and_then(spending::waited),
        ..answered
    }
}

/// The fetch never went out: the upstream budget gave it no turn.
fn got_no_turn(outcome: &FetchOutcome) -> bool {
    let error = match outcome {
        FetchOutcome::Failed(error)
        | FetchOutcome::Stale {
            failure: Failure::Error(error),
            ..
        } => error,
        _ => return false,
    };
    matches!(error, FetchError::NoTurn { .. })
}

/// An upstream call for `key` made for this request (`call`: who it is
/// for): the fetch, carrying the request's ids (`headers` are the
/// request's own); its trace, which the requests that join the call are told;
/// and for a client's call, where it notes how long it waited for its turn.
fn call_for(
    state: &AppState,
    live: &Live,
    key: &CacheKey,
    credential: &Credential,
    ids: &RequestIds,
    headers: &HeaderMap,
    call: CallFor,
) -> (
    impl Future<Output = Result<Fetched, FetchError>> + Send + 'static,
    StarterTrace,
    Option<WaitNote>,
) {
    let note = (call == CallFor::Client).then(WaitNote::default);
    let carried = ids.upstream(headers);
    let parts = CallParts {
        upstream: &state.upstream,
        budgets: &state.budgets,
        live,
    };
    let fetch = upstream_fetch(parts, key, credential, carried, call, note.clone());
    (fetch, ids.trace.map(|trace| trace.trace()), note)
}

/// What a request that waited for a fetch gets from its outcome.
fn fetched_outcome(outcome: FetchOutcome, client: &Client<'_>, status: CacheStatus) -> Outcome {
    match outcome {
        FetchOutcome::Cached(entry) => hit(&entry, client, false, Instant::now()),
        FetchOutcome::Shared(entry) => {
            let shared = hit(&entry, client, false, Instant::now());
            let cache = shared.cache.map(|hit| CacheStatus {
                detail: Some("shared"),
                collapsed: status.collapsed,
                ..hit
            });
            Outcome { cache, ..shared }
        }
        FetchOutcome::Stale { entry, failure } => stale(&entry, client, failure, status),
        FetchOutcome::Failed(error) => failed(error, status),
        FetchOutcome::Answered {
            response,
            stored,
            revalidated,
        } => {
            let cache = CacheStatus {
                stored: stored.is_ok(),
                detail: stored.as_ref().err().map(|reason| reason.as_str()),
                revalidated,
                ..answered(status, &response)
            };
            let answer = match stored {
                Ok(entry) => client.stored_miss(&entry, &response),
                Err(_) => as_response(&response),
            };
            Outcome {
                upstream: Some(response.elapsed),
                ..Outcome::answered(answer).with_cache(cache)
            }
        }
    }
}

/// Headers the proxy adds to a HIT: `age`, `vary`, `content-encoding`,
/// `x-cache`, `cache-status` and `x-request-id`.
const HIT_HEADERS: usize = 6;

/// What the client's request says about the representation it wants.
struct Client<'a> {
    headers: &'a HeaderMap,
    /// The codings the proxy offers.
    encodings: &'a [Encoding],
    /// The offered coding the client's `Accept-Encoding` prefers, read once
    /// per request (a HIT both asks for it and answers in it).
    preferred: Option<Encoding>,
}

impl<'a> Client<'a> {
    fn new(headers: &'a HeaderMap, encodings: &'a [Encoding]) -> Client<'a> {
        let preferred = if encodings.is_empty() {
            None
        } else {
            let accept_encoding = headers
                .get(header::ACCEPT_ENCODING)
                .and_then(|value| value.to_str().ok());
            negotiate(accept_encoding, encodings)
        };
        Client {
            headers,
            encodings,
            preferred,
        }
    }

    /// The entry as this client should get it: in the coding it prefers if
    /// that variant is ready, or a 304 if it already holds that representation.
    /// Built in its box: see [`Outcome::answer`].
    fn response(&self, entry: &CachedResponse, now: Instant) -> Box<Response<ResponseBody>> {
        let variant = self
            .preferred
            .filter(|_| entry.compressible())
            .and_then(|encoding| entry.variant(encoding));
        let (body, etag) = match variant {
            Some(variant) => (variant.body(), Some(variant.etag())),
            None => (entry.body(), entry.etag()),
        };
        let mut response = match etag.filter(|etag| not_modified(self.headers, etag)) {
            Some(etag) => not_modified_response(etag),
            None => {
                let mut response = Box::new(Response::new(ResponseBody::new(body.to_buf())));
                *response.status_mut() = entry.status();
                let headers = response.headers_mut();
                // Room for the entry's headers and what the proxy adds to a HIT.
                headers.reserve(entry.headers().len() + HIT_HEADERS);
                for (name, value) in entry.headers() {
                    headers.append(name.clone(), value.clone());
                }
                if let Some(variant) = variant {
                    headers.insert(header::ETAG, variant.etag().clone());
                    headers.insert(
                        header::CONTENT_ENCODING,
                        HeaderValue::from_static(variant.encoding().as_str()),
                    );
                }
                response
            }
        };
        let headers = response.headers_mut();
        headers.insert(header::AGE, seconds::age(entry.age(now)));
        if entry.compressible() && !self.encodings.is_empty() {
            headers.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
        }
        response
    }

    /// The answer that was just stored: as the upstream sent it, with the
    /// entry's ETag, or a 304 when the client already holds it.
    fn stored_miss(
        &self,
        entry: &CachedResponse,
        upstream: &Fetched,
    ) -> Box<Response<ResponseBody>> {
        let Some(etag) = entry.etag() else {
            return as_response(upstream);
        };
        let mut response = if not_modified(self.headers, etag) {
            // A 304 stands for the stored entry: it carries its age, as on a HIT.
            let mut response = not_modified_response(etag);
            let age = seconds::age(entry.age(Instant::now()));
            response.headers_mut().insert(header::AGE, age);
            response
        } else {
            let mut response = as_response(upstream);
            response.headers_mut().insert(header::ETAG, etag.clone());
            response
        };
        if entry.compressible() && !self.encodings.is_empty() {
            response
                .headers_mut()
                .insert(header::VARY, HeaderValue::from_static("accept-encoding"));
        }
        response
    }

    /// Whether the client accepts one of the offered codings.
    fn wants_compression(&self) -> bool {
        self.preferred.is_some()
    }
}

fn not_modified_response(etag: &HeaderValue) -> Box<Response<ResponseBody>> {
    let mut response = Box::new(Response::new(ResponseBody::default()));
    *response.status_mut() = StatusCode::NOT_MODIFIED;
    response.headers_mut().insert(header::ETAG, etag.clone());
    response
}

/// A fetched answer as the client gets it: status, headers and body as received.
fn as_response(fetched: &Fetched) -> Box<Response<ResponseBody>> {
    let mut response = Box::new(Response::new(ResponseBody::from(fetched.body.clone())));
    *response.status_mut() = fetched.status;
    *response.headers_mut() = fetched.headers.clone();
    response
}

/// A HIT, built from the entry's prebuilt parts plus `age`.
fn hit(entry: &CachedResponse, client: &Client<'_>, refreshing: bool, now: Instant) -> Outcome {
    let status = CacheStatus {
        ttl: Some(entry.time_to_live(now).as_secs()),
        refreshing,
        ..CacheStatus::new(CacheResult::Hit)
    };
    Outcome::answered(client.response(entry, now)).with_cache(status)
}

/// A stale entry standing in for a failing upstream, unless it died meanwhile.
fn stale(
    entry: &CachedResponse,
    client: &Client<'_>,
    failure: Failure,
    status: CacheStatus,
) -> Outcome {
    let now = Instant::now();
    let fwd_status = failure.status().map(|status| status.as_u16());
    if entry.freshness(now) == Freshness::Dead {
        return match failure {
            Failure::Error(error) => failed(error, status),
            Failure::Answered(response) => {
                let passed_on = CacheStatus {
                    revalidated: true,
                    ..answered(status, &response)
                };
                Outcome::answered(as_response(&response)).with_cache(passed_on)
            }
        };
    }
    let detail = match failure {
        Failure::Error(FetchError::NoTurn { .. }) => NO_TURN,
        _ => "stale-if-error",
    };
    let standing_in = CacheStatus {
        result: CacheResult::Stale,
        fwd_status,
        detail: Some(detail),
        ..status
    };
    Outcome::answered(client.response(entry, now)).with_cache(standing_in)
}

/// The `cache-status` detail of a call the upstream budget gave no turn.
const NO_TURN: &str = "budget";

/// The upstream's fault (or the budget's refusal) as the client's error,
/// with what the cache did.
fn failed(error: FetchError, status: CacheStatus) -> Outcome {
    let (error, detail) = proxy_error(error);
    let status = CacheStatus {
        detail: Some(detail),
        ..status
    };
    Outcome::failed(error).with_cache(status)
}

/// The client's error for a failed fetch, and the `cache-status` detail.
fn proxy_error(error: FetchError) -> (ProxyError, &'static str) {
    let upstream = match error {
        FetchError::NoTurn { retry_after_secs } => {
            return (ProxyError::BudgetExhausted { retry_after_secs }, NO_TURN);
        }
        FetchError::Unavailable => UpstreamError::Unavailable,
        FetchError::Timeout => UpstreamError::Timeout,
        FetchError::TooLarge => UpstreamError::TooLarge,
        FetchError::BadResponse => UpstreamError::BadResponse,
    };
    (upstream.into(), upstream.as_str())
}

/// `status` with the upstream's status noted when it is not a 200.
fn answered(status: CacheStatus, response: &Fetched) -> CacheStatus {
    CacheStatus {
        fwd_status: (response.status != StatusCode::OK).then_some(response.status.as_u16()),
        ..status
    }
}
