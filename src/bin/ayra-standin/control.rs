//! The control API under `/_standin/`: knobs, outage, rate limits, clock, stats, call record and reset (not counted as API traffic).

use serde::Deserialize;

use crate::clock::MAX_SKEW_MS;
use crate::knobs::Knobs;
use crate::rate_limits::{RateLimit, Throttle};
use crate::request_reader::Request;
use crate::response::{Body, Response};
use crate::state::State;

/// Body of `PUT /_standin/clock`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ClockSettings {
    skew_ms: i64,
}

/// Answers a control request; `control_path` is the path after `/_standin/`.
pub fn respond(state: &State, request: &Request, control_path: &str) -> Response {
    let method = request.method.as_str();
    match (method, control_path) {
        ("GET", "stats") => Response::json(200, state.stats()),
        ("POST", "reset") => {
            state.reset();
            Response::empty(204)
        }
        ("PUT", "clock") => set_clock(state, request),
        ("PUT", "outage") => match Knobs::from_json(&request.body) {
            Ok(knobs) => {
                state.conversations.set_outage(Some(knobs));
                Response::empty(204)
            }
            Err(message) => Response::bad_request(&message),
        },
        ("DELETE", "outage") => {
            state.conversations.set_outage(None);
            Response::empty(204)
        }
        ("GET", "calls") => Response::json(200, Body::json(&state.rate_limits.record())),
        ("PUT", "rate_limit") => match RateLimit::from_json(&request.body) {
            Ok(limit) => {
                state.rate_limits.set_rate_limit(Some(limit));
                Response::empty(204)
            }
            Err(message) => Response::bad_request(&message),
        },
        ("DELETE", "rate_limit") => {
            state.rate_limits.set_rate_limit(None);
            Response::empty(204)
        }
        ("PUT", "throttle") => match Throttle::from_json(&request.body) {
            Ok(throttle) => {
                state.rate_limits.set_throttle(Some(throttle));
                Response::empty(204)
            }
            Err(message) => Response::bad_request(&message),
        },
        (_, "stats") => method_not_allowed("GET"),
        (_, "reset") => method_not_allowed("POST"),
        (_, "clock") => method_not_allowed("PUT"),
        (_, "outage" | "rate_limit") => method_not_allowed("PUT, DELETE"),
        (_, "calls") => method_not_allowed("GET"),
        (_, "throttle") => method_not_allowed("PUT"),
        _ => match conversation_id(control_path) {
            Some(id) => conversation_knobs(state, request, id),
            None => Response::no_route(method, &request.path),
        },
    }
}

/// The id in `conversations/{id}` (one non-empty path segment).
fn conversation_id(control_path: &str) -> Option<&str> {
    let id = control_path.strip_prefix("conversations/")?;
    (!id.is_empty() && !id.contains('/')).then_some(id)
}

fn conversation_knobs(state: &State, request: &Request, id: &str) -> Response {
    match request.method.as_str() {
        "PUT" => match Knobs::from_json(&request.body) {
            Ok(knobs) => {
                state.conversations.set(id, knobs);
                Response::empty(204)
            }
            Err(message) => Response::bad_request(&message),
        },
        "DELETE" => {
            state.conversations.clear(id);
            Response::empty(204)
        }
        _ => method_not_allowed("PUT, DELETE"),
    }
}

fn set_clock(state: &State, request: &Request) -> Response {
    let settings: ClockSettings = match serde_json::from_slice(&request.body) {
        Ok(settings) => settings,
        Err(error) => return Response::bad_request(&format!("Invalid clock settings: {error}")),
    };
    if settings.skew_ms.abs() > MAX_SKEW_MS {
        return Response::bad_request(&format!(
            "skew_ms must be between -{MAX_SKEW_MS} and {MAX_SKEW_MS}"
        ));
    }
    state.clock.set_skew_ms(settings.skew_ms);
    Response::empty(204)
}

fn method_not_allowed(allowed: &str) -> Response {
    Response::error(
        405,
        "invalid_request_error",
        "Method not allowed",
        "method_not_allowed",
    )
    .with_header("allow", allowed)
}
