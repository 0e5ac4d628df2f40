//! What a handler answers: status, headers, body, and how to deliver it on the wire.

use std::time::Duration;

use bytes::Bytes;
use serde::Serialize;

/// A response body as a list of byte segments (cheap to clone).
#[derive(Debug, Clone, Default)]
pub struct Body {
    segments: Vec<Bytes>,
    len: usize,
}

impl Body {
    /// A body of one segment.
    pub fn from_bytes(bytes: impl Into<Bytes>) -> Self {
        Self::from_segments(vec![bytes.into()])
    }

    /// A body made of `segments`, in order.
    pub fn from_segments(segments: Vec<Bytes>) -> Self {
        let len = segments.iter().map(Bytes::len).sum();
        Self { segments, len }
    }

    /// The body serialised as JSON.
    pub fn json(value: &impl Serialize) -> Self {
        // Our response types hold only strings, numbers and string-keyed maps,
        // which always serialise.
        let bytes = serde_json::to_vec(value).expect("stand-in responses serialise to JSON");
        Self::from_bytes(bytes)
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// The segments, in order.
    pub fn segments(&self) -> &[Bytes] {
        &self.segments
    }

    /// The whole body in one buffer.
    pub fn to_vec(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(self.len);
        for segment in &self.segments {
            bytes.extend_from_slice(segment);
        }
        bytes
    }
}

/// `{"error": {...}}`, the API's error shape.
#[derive(Debug, Serialize)]
struct ErrorEnvelope<'a> {
    error: ErrorDetails<'a>,
}

#[derive(Debug, Serialize)]
struct ErrorDetails<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    message: &'a str,
    code: &'a str,
}

/// How the response travels: properly, or with one of the faults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// A well-formed response.
    Complete,
    /// A garbage status line, then close.
    MalformedHead,
    /// A header line without a colon, then close.
    BadHeader,
    /// Half the body under the full `content-length`, then close.
    DropMidBody,
    /// The body under a `content-length` 100 bytes too long, then close.
    ShortBody,
    /// Chunked, a few chunks, then silence until the peer leaves.
    ChunkedNeverEnds,
    /// The body one byte at a time, with this pause between bytes.
    Trickle(Duration),
    /// Nothing at all, then close.
    CloseWithoutResponse,
}

/// One answer to one request.
#[derive(Debug, Clone)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Headers in order. The writer adds the framing header
    /// (`content-length` or `transfer-encoding`) and `connection` as needed.
    pub headers: Vec<(String, String)>,
    /// The body (also measured for `HEAD`).
    pub body: Body,
    /// `HEAD`: send the head of this response without its body.
    pub head_only: bool,
    /// Give the response a `date` header from the stand-in's clock (the router adds it).
    pub send_date: bool,
    /// Pause before writing the head.
    pub delay: Duration,
    /// Well-formed or faulty.
    pub delivery: Delivery,
}

impl Response {
    /// A response with `status`, a JSON body and its content type.
    pub fn json(status: u16, body: Body) -> Self {
        Self {
            status,
            headers: vec![("content-type".to_owned(), "application/json".to_owned())],
            body,
            head_only: false,
            send_date: true,
            delay: Duration::ZERO,
            delivery: Delivery::Complete,
        }
    }

    /// A bodiless response (e.g. 204).
    pub fn empty(status: u16) -> Self {
        Self {
            headers: Vec::new(),
            ..Self::json(status, Body::default())
        }
    }

    /// The API's error shape: `{"error": {"type", "message", "code"}}`.
    pub fn error(status: u16, kind: &str, message: &str, code: &str) -> Self {
        let body = ErrorEnvelope {
            error: ErrorDetails {
                kind,
                message,
                code,
            },
        };
        Self::json(status, Body::json(&body))
    }

    /// The error the Ayra API gives for `status` (a 429 also gets `retry-after: 7`).
    pub fn api_error(status: u16) -> Self {
        let (kind, code, message) = match status {
            400 => (
                "invalid_request_error",
                "invalid_request",
                "The request is invalid",
            ),
            401 => ("authentication_error", "invalid_api_key", "Invalid API key"),
            403 => (
                "permission_error",
                "insufficient_permissions",
                "You don't have permission to access this conversation",
            ),
            404 => (
                "not_found",
                "conversation_not_found",
                "Conversation not found",
            ),
            429 => ("rate_limit_error", "rate_limited", "Too many requests"),
            500..=599 => ("api_error", "internal_error", "An internal error occurred"),
            _ => (
                "invalid_request_error",
                "request_failed",
                "The request failed",
            ),
        };
        let response = Self::error(status, kind, message, code);
        if status == 429 {
            response.with_header("retry-after", "7")
        } else {
            response
        }
    }

    /// `400 invalid_request_error` with a message saying what is wrong.
    pub fn bad_request(message: &str) -> Self {
        Self::error(400, "invalid_request_error", message, "invalid_request")
    }

    /// `404 not_found` for a path nothing serves.
    pub fn no_route(method: &str, path: &str) -> Self {
        let message = format!("No route for {method} {path}");
        Self::error(404, "not_found", &message, "route_not_found")
    }

    /// This response with one more header.
    pub fn with_header(mut self, name: &str, value: impl Into<String>) -> Self {
        self.headers.push((name.to_owned(), value.into()));
        self
    }
}
