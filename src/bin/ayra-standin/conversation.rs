//! The conversation route, `GET`/`HEAD /v1/conversations/{id}`, shaped by that conversation's knobs.

use crate::body_template::SlotValues;
use crate::conversation_store::KnobsSnapshot;
use crate::flags::Flags;
use crate::knobs::{Fault, Knobs};
use crate::request_reader::Request;
use crate::response::{Body, Delivery, Response};
use crate::state::State;

/// The answer for conversation `id`; `serial` is this response's serial number.
pub fn respond(state: &State, request: &Request, id: &str, serial: u64) -> Response {
    let Some(token) = bearer_token(request) else {
        return Response::error(
            401,
            "authentication_error",
            "Missing API key: send Authorization: Bearer <key>",
            "missing_api_key",
        );
    };
    let flags = match Flags::from_query(&request.query) {
        Ok(flags) => flags,
        Err(message) => {
            return Response::error(400, "invalid_request_error", &message, "invalid_parameter")
        }
    };
    let snapshot = state.conversations.knobs(id);
    let knobs = &snapshot.knobs;
    let response = if let Some(status) = knobs.fail_status {
        Response::api_error(status)
    } else if !knobs.exists {
        Response::api_error(404)
    } else if knobs
        .forbidden_tokens
        .iter()
        .any(|forbidden| forbidden == token)
    {
        Response::api_error(403)
    } else {
        Response::json(200, conversation_body(state, id, flags, &snapshot, serial))
    };
    apply_knobs(response, knobs)
}

/// The token of an `Authorization: Bearer <token>` header, if there is one.
pub fn bearer_token(request: &Request) -> Option<&str> {
    let (scheme, token) = request.header("authorization")?.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

fn conversation_body(
    state: &State,
    id: &str,
    flags: Flags,
    snapshot: &KnobsSnapshot,
    serial: u64,
) -> Body {
    let template = state.conversations.template(id, flags, snapshot);
    let lifetime = snapshot.knobs.recording_ttl(state.recording_ttl);
    let expires_unix = state.clock.unix_seconds_after(lifetime);
    let body = template.render(&SlotValues::new(id, serial, expires_unix));
    if snapshot.knobs.fault == Some(Fault::MalformedBody) {
        // Any proper prefix of a JSON object is not JSON.
        let mut bytes = body.to_vec();
        bytes.truncate(bytes.len() / 2);
        return Body::from_bytes(bytes);
    }
    body
}

/// The headers, pause and delivery the knobs ask for, on any answer for this conversation.
fn apply_knobs(mut response: Response, knobs: &Knobs) -> Response {
    if let Some(cache_control) = &knobs.cache_control {
        response = response.with_header("cache-control", cache_control.as_str());
    }
    if let Some(age) = knobs.age {
        response = response.with_header("age", age.to_string());
    }
    response.headers.extend(knobs.extra_headers.iter().cloned());
    response.send_date = !knobs.omit_date;
    response.delay = knobs.delay();
    response.delivery = match knobs.fault {
        None | Some(Fault::MalformedBody) => Delivery::Complete,
        Some(Fault::MalformedHead) => Delivery::MalformedHead,
        Some(Fault::BadHeader) => Delivery::BadHeader,
        Some(Fault::DropMidBody) => Delivery::DropMidBody,
        Some(Fault::ShortBody) => Delivery::ShortBody,
        Some(Fault::ChunkedNeverEnds) => Delivery::ChunkedNeverEnds,
        Some(Fault::Trickle) => Delivery::Trickle(knobs.trickle_interval()),
        Some(Fault::CloseWithoutResponse) => Delivery::CloseWithoutResponse,
    };
    response
}
