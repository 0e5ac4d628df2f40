//! Routing: which handler answers a request, and what every answer gets (`date`, `HEAD`).

use std::time::Instant;

use crate::control;
use crate::conversation;
use crate::echo;
use crate::request_reader::Request;
use crate::response::Response;
use crate::state::State;

/// The answer to `request`: the control API under `/_standin/`, the API
/// under `/v1/` (counted and given a serial), 404 elsewhere.
pub fn respond(state: &State, request: &Request) -> Response {
    let mut response = route(state, request);
    if response.send_date {
        response
            .headers
            .insert(0, ("date".to_owned(), state.clock.http_date()));
    }
    response.head_only = request.method == "HEAD";
    response
}

fn route(state: &State, request: &Request) -> Response {
    if let Some(control_path) = request.path.strip_prefix("/_standin/") {
        return control::respond(state, request, control_path);
    }
    if !request.path.starts_with("/v1/") {
        return Response::no_route(&request.method, &request.path);
    }
    let conversation_id = conversation_id(request);
    let serial = state.record_api_request(request, conversation_id);
    log_api_request(request, serial);
    let key = conversation::bearer_token(request).unwrap_or("");
    let limited = state.rate_limits.call(key, &request.path, Instant::now());
    let mut response = match (limited, conversation_id) {
        (Some(retry_after), _) => rate_limited(retry_after),
        (None, Some(id)) => conversation::respond(state, request, id, serial),
        (None, None) => echo::respond(request),
    };
    response
        .headers
        .insert(0, ("x-standin-serial".to_owned(), serial.to_string()));
    response
}

/// The Ayra API's `429`, with the `retry-after` a rate-limit knob gave.
fn rate_limited(retry_after: String) -> Response {
    Response::error(429, "rate_limit_error", "Too many requests", "rate_limited")
        .with_header("retry-after", retry_after)
}

/// Logs an API request with the ids that join it to its caller's logs (at
/// `info`: `AYRA_STANDIN_LOG=info` shows it).
fn log_api_request(request: &Request, serial: u64) {
    tracing::info!(
        target: "ayra_standin::api",
        serial,
        method = %request.method,
        path = %request.path,
        request_id = request.header("x-request-id"),
        traceparent = request.header("traceparent"),
        tracestate = request.header("tracestate"),
        "request"
    );
}

/// The id of a `GET`/`HEAD /v1/conversations/{id}` request (one non-empty path segment).
fn conversation_id(request: &Request) -> Option<&str> {
    if request.method != "GET" && request.method != "HEAD" {
        return None;
    }
    let id = request.path.strip_prefix("/v1/conversations/")?;
    (!id.is_empty() && !id.contains('/')).then_some(id)
}
