//! The request path: `handle` logs once and turns errors into responses around `route`, which returns the route's `Outcome`.

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use http::{header, HeaderValue, Method, Request, Response};
use hyper::body::Incoming;

use crate::access_log::{AccessRecord, Answered, Outcome};
use crate::auth::Credential;
use crate::body::ResponseBody;
use crate::cache::status::{CacheResult, CacheStatus};
use crate::conversation;
use crate::domain::ConversationIdRef;
use crate::error::{ClientError, ProxyError};
use crate::live::Live;
use crate::metrics::{CacheLabel, RouteLabel};
use crate::route::{self, Route, RouteKind};
use crate::server::{HeadRefusal, Respond};
use crate::state::AppState;
use crate::trace_context::RequestIds;

/// The longest request target accepted (SPEC section 6).
const MAX_TARGET_BYTES: usize = 8 * 1024;

impl Respond for AppState {
    fn respond(
        self: Arc<Self>,
        request: Box<Request<Incoming>>,
    ) -> impl Future<Output = Response<ResponseBody>> + Send {
        handle(self, request)
    }

    fn refuse(&self, refusal: HeadRefusal) -> Response<ResponseBody> {
        refused_head(refusal)
    }
}

/// The 400 for a head the transport refused, in the API's error shape.
pub fn refused_head(refusal: HeadRefusal) -> Response<ResponseBody> {
    match refusal {
        HeadRefusal::BareLineFeed => ProxyError::from(ClientError::BareLineFeed).into_response(),
    }
}

/// Answers one request; from what its route did, writes `x-cache` and
/// `cache-status`, the access event and the request metrics, once. Never fails.
///
/// The request path's steps are async blocks, not `async fn`s: an `async
/// fn`'s future keeps each argument twice (as passed, and moved into its
/// body), and the server moves this future for every request; a request
/// head is a few hundred bytes, so each level of `async fn` cost a HIT
/// about half a KB of copying (see docs/decisions.md).
#[allow(
    clippy::manual_async_fn,
    reason = "an async fn holds its arguments twice"
)]
pub fn handle(
    state: Arc<AppState>,
    request: Box<Request<Incoming>>,
) -> impl Future<Output = Response<ResponseBody>> + Send {
    async move {
        let started = Instant::now();
        let record = AccessRecord::start(&request);
        let (route, outcome) = route(&state, request, record.ids()).await;
        let (mut response, error) = match outcome.answer {
            Ok(response) => (response, None),
            Err(error) => {
                let code = error.code();
                (Box::new(error.into_response()), Some(code))
            }
        };
        let latency = started.elapsed();
        record.emit(&Answered {
            route,
            status: response.status(),
            cache: outcome.cache,
            upstream: outcome.upstream,
            leader_trace: outcome.leader_trace,
            budget_wait: outcome.budget_wait,
            error,
            latency,
        });
        state.metrics.request(
            route_label(route),
            cache_label(outcome.cache.map(|status| status.result)),
            response.status().as_u16(),
            latency,
        );
        record.decorate(&mut response, outcome.cache.as_ref());
        *response
    }
}

/// Sends the request down its route: the kind of route taken, and what it
/// did. `ids` are the request's own, for any upstream call made for it.
#[allow(
    clippy::manual_async_fn,
    reason = "an async fn holds its arguments twice"
)]
fn route<'a>(
    state: &'a AppState,
    request: Box<Request<Incoming>>,
    ids: &'a RequestIds,
) -> impl Future<Output = (RouteKind, Outcome)> + Send + 'a {
    async move {
        let target_len = request
            .uri()
            .path_and_query()
            .map_or(0, |pq| pq.as_str().len());
        if target_len > MAX_TARGET_BYTES {
            return (RouteKind::Other, Outcome::failed(ProxyError::UriTooLong));
        }

        // Only the path decides: an absolute-form target's host is never used.
        let path = request.uri().path();
        // One consistent set of live settings for the whole request. A
        // guard, not a clone of the `Arc`: a clone would write the one
        // reference count every worker shares, on every request.
        let live = state.live.load();
        let route = route::classify(path);
        let kind = route.kind();
        // Each step hands its `Outcome` up by value: the fewer levels of
        // future between the HIT and `handle`, the fewer copies of it.
        let outcome = match route {
            Route::Health if is_read(request.method()) => Outcome::answered(health()),
            Route::Health | Route::NotFound => Outcome::failed(ProxyError::NotFound),
            Route::Conversation(raw_id) => match conversation_target(&live, &request, raw_id) {
                Ok((credential, id)) if is_read(request.method()) => {
                    match conversation::serve(state, &live, &request, id, &credential, ids).await {
                        Ok(outcome) => outcome,
                        // Boxed: see `conversation::serve`.
                        Err(reason) => {
                            let forward = conversation::bypass(
                                state,
                                &live,
                                *request,
                                &credential,
                                ids,
                                reason,
                            );
                            Box::pin(forward).await
                        }
                    }
                }
                // Boxed: see `conversation::serve`.
                Ok((credential, _)) => {
                    Box::pin(conversation_write(state, &live, *request, credential, ids)).await
                }
                Err(error) => Outcome::failed(error),
            },
            // Boxed: see `conversation::serve`.
            Route::PassThrough => Box::pin(pass_through_route(state, &live, *request, ids))
                .await
                .unwrap_or_else(Outcome::failed),
        };
        (kind, outcome)
    }
}

/// `/v1/conversations/{id}`: the credential and the id, whatever the method.
fn conversation_target<'a, B>(
    live: &Live,
    request: &Request<B>,
    raw_id: &'a str,
) -> Result<(Credential, ConversationIdRef<'a>), ProxyError> {
    let credential = live.auth.credential(request.headers())?;
    Ok((credential, ConversationIdRef::parse(raw_id)?))
}

/// Anything but a read of a conversation: forwarded, never cached.
async fn conversation_write(
    state: &AppState,
    live: &Live,
    request: Request<Incoming>,
    credential: Credential,
    ids: &RequestIds,
) -> Outcome {
    if let Err(error) = refuse_unforwardable_method(request.method()) {
        return Outcome::failed(error);
    }
    let forwarded = state
        .passthrough
        .forward(live, request, &credential, ids)
        .await;
    forwarded.with_cache(CacheStatus::new(CacheResult::Bypass))
}

/// Any other path under `/v1/`: forwarded, never cached.
async fn pass_through_route(
    state: &AppState,
    live: &Live,
    request: Request<Incoming>,
    ids: &RequestIds,
) -> Result<Outcome, ProxyError> {
    refuse_unforwardable_method(request.method())?;
    let credential = live.auth.credential(request.headers())?;
    route::check_forwardable(request.uri().path())?;
    let forwarded = state
        .passthrough
        .forward(live, request, &credential, ids)
        .await;
    Ok(forwarded.with_cache(CacheStatus::new(CacheResult::Bypass)))
}

/// The `route` label of a request.
fn route_label(route: RouteKind) -> RouteLabel {
    match route {
        RouteKind::Conversation => RouteLabel::Conversation,
        RouteKind::PassThrough => RouteLabel::PassThrough,
        RouteKind::Health => RouteLabel::Health,
        RouteKind::Other => RouteLabel::Other,
    }
}

/// The `cache` label of a request.
fn cache_label(cache: Option<CacheResult>) -> CacheLabel {
    match cache {
        Some(CacheResult::Hit) => CacheLabel::Hit,
        Some(CacheResult::Miss) => CacheLabel::Miss,
        Some(CacheResult::Bypass) => CacheLabel::Bypass,
        Some(CacheResult::Stale) => CacheLabel::Stale,
        None => CacheLabel::None,
    }
}

/// CONNECT would turn the proxy into a tunnel and TRACE echoes credentials
/// back: neither is ever forwarded.
fn refuse_unforwardable_method(method: &Method) -> Result<(), ProxyError> {
    if method == Method::CONNECT || method == Method::TRACE {
        Err(ProxyError::MethodNotAllowed)
    } else {
        Ok(())
    }
}

fn is_read(method: &Method) -> bool {
    method == Method::GET || method == Method::HEAD
}

fn health() -> Response<ResponseBody> {
    let mut response = Response::new(ResponseBody::from(&b"{\"status\":\"ok\"}"[..]));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}
