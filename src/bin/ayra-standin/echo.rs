//! The echo for every other `/v1/` request: what arrived, as JSON, so tests see what a proxy passed on.

use serde::Serialize;

use crate::request_reader::Request;
use crate::response::{Body, Response};

#[derive(Debug, Serialize)]
struct EchoEnvelope<'a> {
    echo: Echo<'a>,
}

#[derive(Debug, Serialize)]
struct Echo<'a> {
    method: &'a str,
    path: &'a str,
    query: &'a str,
    headers: &'a [(String, String)],
    body: std::borrow::Cow<'a, str>,
}

/// `200 {"echo": {"method", "path", "query", "headers": [[name, value], ...], "body"}}`.
pub fn respond(request: &Request) -> Response {
    let echo = EchoEnvelope {
        echo: Echo {
            method: &request.method,
            path: &request.path,
            query: &request.query,
            headers: &request.headers,
            body: String::from_utf8_lossy(&request.body),
        },
    };
    Response::json(200, Body::json(&echo))
}
