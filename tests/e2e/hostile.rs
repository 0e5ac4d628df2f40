//! Hostile clients and broken upstreams, in raw bytes, beyond `routes.rs`,
//! `limits.rs` and `faults.rs`.
//!
//! Every client case asserts a clear 4xx or a closed connection, that nothing
//! reached the upstream that should not (the stand-in's request counter), and
//! that the proxy still answers `/healthz` afterwards. The upstream cases use
//! a scripted upstream written here when the stand-in has no knob for the
//! misbehaviour (a keep-alive connection closed while idle, bytes past the end
//! of an answer, an informational answer first).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::app::{spawn_pair, spawn_with, ConfigFile, TestApp};
use crate::cached_route::{header, TOKEN};
use crate::raw;
use crate::standin::StandIn;

/// Sends `bytes` as they are and reads until the proxy closes (or `limit` passes).
pub(crate) async fn exchange_bytes(addr: SocketAddr, bytes: &[u8], limit: Duration) -> String {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    // The proxy may close before reading everything: that is an answer too.
    let _ = stream.write_all(bytes).await;
    raw::read_until_closed(&mut stream, limit).await
}

/// The status code of the first response in `answer`, or `None` when the
/// connection was closed without one.
pub(crate) fn status_of(answer: &str) -> Option<u16> {
    let rest = answer.strip_prefix("HTTP/1.1 ")?;
    rest.get(..3)?.parse().ok()
}

/// `answer` is one `status` response in the API's error shape with `code`.
pub(crate) fn assert_error(answer: &str, status: u16, code: &str, name: &str) {
    assert_eq!(status_of(answer), Some(status), "{name}: {answer}");
    let body = answer.split_once("\r\n\r\n").map_or("", |(_, body)| body);
    let json: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{name}: {e}: {body}"));
    assert_eq!(
        json["error"]["type"], "invalid_request_error",
        "{name}: {body}"
    );
    assert_eq!(json["error"]["code"], code, "{name}: {body}");
    assert!(json["error"]["message"].is_string(), "{name}: {body}");
}

/// The proxy still serves other clients.
pub(crate) async fn assert_still_serving(app: &TestApp) {
    let response = app.get("/healthz", None).await;
    assert_eq!(response.status(), 200, "the proxy stopped answering");
}

/// How soon a refused request without an answer must see its connection
/// closed: well before the 10 s header read timeout, when a proxy that
/// hung on the request would close it.
const PROMPT_CLOSE: Duration = Duration::from_secs(3);

/// Each request gets a 4xx, or its connection closed promptly without a
/// byte; nothing reaches the upstream.
pub(crate) async fn assert_refused_locally(
    standin: &StandIn,
    app: &TestApp,
    cases: &[(&str, &[u8])],
) {
    for (name, bytes) in cases {
        let before = standin.stats().await.requests_total;
        let mut stream = TcpStream::connect(app.addr).await.expect("connect");
        // The proxy may close before reading everything: that is an answer too.
        let _ = stream.write_all(bytes).await;
        let received = raw::read_to_close(&mut stream, PROMPT_CLOSE).await;
        let answer = received.text;
        match status_of(&answer) {
            Some(status) => assert!(
                (400..500).contains(&status),
                "{name}: answered {status}: {answer}"
            ),
            None => {
                assert!(answer.is_empty(), "{name}: not HTTP: {answer:?}");
                assert!(
                    received.closed,
                    "{name}: neither answered nor closed within {PROMPT_CLOSE:?}"
                );
            }
        }
        // A refused request never opens an exchange: no answer may follow it.
        assert!(answer.matches("HTTP/1.1 ").count() <= 1, "{name}: {answer}");
        let after = standin.stats().await.requests_total;
        assert_eq!(after, before, "{name}: reached the upstream");
    }
    assert_still_serving(app).await;
}

#[tokio::test]
async fn malformed_heads_are_refused_before_anything_is_forwarded() {
    let (standin, app) = spawn_pair(&[]).await;
    let auth = format!("Authorization: Bearer {TOKEN}\r\n");
    let conv = |extra: &str| {
        format!("GET /v1/conversations/conv_h HTTP/1.1\r\nHost: x\r\n{auth}{extra}\r\n")
            .into_bytes()
    };
    let long_method = format!(
        "{} /v1/agents HTTP/1.1\r\nHost: x\r\n\r\n",
        "A".repeat(20_000)
    );
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("obs-fold, space", conv("X-A: 1\r\n  folded: 2\r\n")),
        ("obs-fold, tab", conv("X-A: 1\r\n\tfolded\r\n")),
        ("NUL in a header value", conv("X-A: a\0b\r\n")),
        ("SOH in a header value", conv("X-A: a\x01b\r\n")),
        ("DEL in a header value", conv("X-A: a\x7fb\r\n")),
        ("bare CR in a header value", conv("X-A: a\rb\r\n")),
        ("NUL in a header name", conv("X-\0A: 1\r\n")),
        ("space before the colon", conv("Host : y\r\n")),
        ("empty header name", conv(": 1\r\n")),
        (
            "NUL in the path",
            b"GET /v1/conversations/conv_h\0x HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        ),
        (
            "invalid UTF-8 in a pass-through path",
            b"GET /v1/agents/\xff\xfe HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        ),
        (
            "invalid UTF-8 in an id",
            b"GET /v1/conversations/conv_\xc3\x28 HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        ),
        (
            "valid UTF-8 in an id",
            "GET /v1/conversations/conv_é HTTP/1.1\r\nHost: x\r\n\r\n"
                .as_bytes()
                .to_vec(),
        ),
        (
            "HTTP/0.9 request line",
            b"GET /v1/conversations/conv_h\r\n\r\n".to_vec(),
        ),
        (
            "HTTP/1.2",
            b"GET /v1/conversations/conv_h HTTP/1.2\r\nHost: x\r\n\r\n".to_vec(),
        ),
        (
            "HTTP/2.0 on an HTTP/1 request line",
            b"GET /v1/conversations/conv_h HTTP/2.0\r\nHost: x\r\n\r\n".to_vec(),
        ),
        (
            "HTTP/9.9",
            b"GET /v1/conversations/conv_h HTTP/9.9\r\nHost: x\r\n\r\n".to_vec(),
        ),
        (
            "lower-case protocol name",
            b"GET /v1/conversations/conv_h http/1.1\r\nHost: x\r\n\r\n".to_vec(),
        ),
        (
            "no space before the version",
            b"GET /v1/conversations/conv_hHTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        ),
        (
            "a target without a leading slash",
            b"GET v1/agents HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        ),
        ("an absurdly long method", long_method.into_bytes()),
        (
            "Transfer-Encoding: xchunked",
            b"POST /v1/calls HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n"
                .to_vec(),
        ),
        (
            "Transfer-Encoding: chunked, identity",
            b"POST /v1/calls HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n"
                .to_vec(),
        ),
        (
            "two Transfer-Encoding fields",
            b"POST /v1/calls HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r\n0\r\n\r\n"
                .to_vec(),
        ),
        (
            "Transfer-Encoding on HTTP/1.0",
            b"POST /v1/calls HTTP/1.0\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
                .to_vec(),
        ),
        (
            "Content-Length: -1",
            b"POST /v1/calls HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n".to_vec(),
        ),
        (
            "Content-Length past u64",
            b"POST /v1/calls HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999999\r\n\r\nabc"
                .to_vec(),
        ),
        (
            "Content-Length: 3, 4",
            b"POST /v1/calls HTTP/1.1\r\nHost: x\r\nContent-Length: 3, 4\r\n\r\nabcd".to_vec(),
        ),
        (
            "Content-Length in hex",
            b"POST /v1/calls HTTP/1.1\r\nHost: x\r\nContent-Length: 0x3\r\n\r\nabc".to_vec(),
        ),
        (
            "CONNECT to another host",
            b"CONNECT evil.example:443 HTTP/1.1\r\nHost: evil.example:443\r\n\r\n".to_vec(),
        ),
        (
            "asterisk-form OPTIONS",
            b"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        ),
    ];
    let cases: Vec<(&str, &[u8])> = cases.iter().map(|(n, b)| (*n, b.as_slice())).collect();
    assert_refused_locally(&standin, &app, &cases).await;
    assert_eq!(standin.stats().await.requests_total, 0);
}

#[tokio::test]
async fn an_http2_preface_gets_http2_not_a_forwarded_request() {
    let (standin, app) = spawn_pair(&[]).await;
    let mut stream = TcpStream::connect(app.addr).await.unwrap();
    // The preface, then garbage where the client's SETTINGS frame belongs.
    stream
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\nGET /v1/agents HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let answer = raw::read_until_closed(&mut stream, Duration::from_secs(3)).await;
    assert!(!answer.contains("HTTP/1.1 2"), "{answer:?}");
    assert_eq!(standin.stats().await.requests_total, 0);
    assert_still_serving(&app).await;
}

#[tokio::test]
async fn a_silent_connection_is_closed_at_the_header_read_timeout() {
    let (_standin, app) = spawn_pair(&[("server.header_read_timeout", "\"400ms\"")]).await;
    let mut stream = TcpStream::connect(app.addr).await.unwrap();
    let started = Instant::now();
    let answer = raw::read_until_closed(&mut stream, Duration::from_secs(3)).await;
    let waited = started.elapsed();
    assert!(answer.is_empty(), "{answer}");
    assert!(
        waited >= Duration::from_millis(350),
        "closed after {waited:?}"
    );
    assert!(waited < Duration::from_secs(2), "closed after {waited:?}");
    assert_still_serving(&app).await;
}

#[tokio::test]
async fn another_host_in_host_or_forwarding_headers_never_chooses_the_upstream() {
    let (standin, app) = spawn_pair(&[]).await;
    let upstream_host = standin.base_url().trim_start_matches("http://").to_owned();
    let hostile = "Host: evil.example\r\nX-Forwarded-Host: evil.example\r\nForwarded: host=evil.example\r\nX-Forwarded-Proto: https\r\n";
    let requests = [
        format!("GET /v1/conversations/conv_host HTTP/1.1\r\n{hostile}Authorization: Bearer {TOKEN}\r\nConnection: close\r\n\r\n"),
        format!("GET https://user:pw@evil.example:444/v1/conversations/conv_host2 HTTP/1.1\r\n{hostile}Authorization: Bearer {TOKEN}\r\nConnection: close\r\n\r\n"),
        format!("GET /v1/agents HTTP/1.1\r\n{hostile}Authorization: Bearer {TOKEN}\r\nConnection: close\r\n\r\n"),
        format!("POST https://evil.example/v1/calls HTTP/1.1\r\nHost: evil.example\r\nAuthorization: Bearer {TOKEN}\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{{}}"),
    ];
    for request in &requests {
        let answer = raw::exchange(app.addr, request).await;
        assert_eq!(status_of(&answer), Some(200), "{answer}");
    }
    let seen = standin.stats().await.requests;
    assert_eq!(seen.len(), requests.len());
    for request in &seen {
        assert_eq!(
            request.header("host"),
            Some(upstream_host.as_str()),
            "{request:?}"
        );
    }
    // On the cached route the upstream request is built: no client header travels.
    for request in &seen[..2] {
        for name in ["x-forwarded-host", "forwarded", "x-forwarded-proto"] {
            assert_eq!(request.header(name), None, "{name} travelled: {request:?}");
        }
    }
}

#[tokio::test]
async fn expect_100_continue_gets_the_body_forwarded_once() {
    let (standin, app) = spawn_pair(&[]).await;
    let mut stream = TcpStream::connect(app.addr).await.unwrap();
    let body = r#"{"to":"+1555"}"#;
    let head = format!(
        "POST /v1/calls HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\nExpect: 100-continue\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut interim = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(2), stream.read(&mut interim))
        .await
        .expect("100 Continue before the body")
        .unwrap();
    let interim = String::from_utf8_lossy(&interim[..n]).into_owned();
    assert!(
        interim.starts_with("HTTP/1.1 100 Continue\r\n"),
        "{interim}"
    );
    stream.write_all(body.as_bytes()).await.unwrap();
    let answer = raw::read_until_closed(&mut stream, Duration::from_secs(3)).await;
    assert_eq!(status_of(&answer), Some(200), "{answer}");
    assert!(
        answer.contains(r#""body":"{\"to\":\"+1555\"}""#),
        "{answer}"
    );
    let stats = standin.stats().await;
    assert_eq!(stats.requests_total, 1);
    assert_eq!(stats.requests[0].method, "POST");
}

#[tokio::test]
async fn a_request_smuggled_in_the_body_of_a_cached_read_is_never_forwarded() {
    let (standin, app) = spawn_pair(&[]).await;
    let smuggled =
        format!("GET /v1/smuggled HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n\r\n");
    let request = format!(
        "GET /v1/conversations/conv_body HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\nContent-Length: {}\r\n\r\n{smuggled}GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        smuggled.len()
    );
    let answer = raw::exchange(app.addr, &request).await;
    assert_eq!(status_of(&answer), Some(200), "{answer}");
    // The conversation, then the health check: two answers, never three.
    assert_eq!(answer.matches("HTTP/1.1 200 OK").count(), 2, "{answer}");
    assert!(answer.ends_with(r#"{"status":"ok"}"#), "{answer}");
    let seen = standin.stats().await.requests;
    assert!(seen.iter().all(|r| r.path != "/v1/smuggled"), "{seen:?}");
    assert_eq!(seen.len(), 1);
}

#[tokio::test]
async fn pipelined_requests_with_different_credentials_get_their_own_answers_in_order() {
    let (standin, app) = spawn_pair(&[]).await;
    for i in 0..3 {
        standin
            .set(&format!("conv_pipe{i}"), json!({"delay_ms": 60 - 20 * i}))
            .await;
    }
    let mut pipelined = String::new();
    for round in 0..2 {
        for i in 0..3u64 {
            let token = format!("sk_pipe_{}", (i + round) % 2);
            pipelined.push_str(&format!(
                "GET /v1/conversations/conv_pipe{i} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\r\n"
            ));
        }
    }
    pipelined.push_str("GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let answer = raw::exchange(app.addr, &pipelined).await;
    assert_eq!(answer.matches("HTTP/1.1 200 OK").count(), 7, "{answer}");
    let ids: Vec<&str> = answer
        .match_indices("\"id\":\"conv_pipe")
        .map(|(at, _)| &answer[at + 6..at + 16])
        .collect();
    assert_eq!(
        ids,
        [
            "conv_pipe0",
            "conv_pipe1",
            "conv_pipe2",
            "conv_pipe0",
            "conv_pipe1",
            "conv_pipe2"
        ]
    );
    // Round two swaps the credentials of round one: nothing is a HIT across them.
    let caches: Vec<&str> = answer
        .match_indices("x-cache: ")
        .map(|(at, _)| &answer[at + 9..at + 13])
        .collect();
    assert_eq!(caches, ["MISS"; 6], "{answer}");
    assert_eq!(standin.stats().await.requests_total, 6);
}

#[tokio::test]
async fn headers_named_in_connection_cannot_strip_the_credential_or_the_host() {
    let (standin, app) = spawn_pair(&[]).await;
    let request = format!(
        "GET /v1/agents HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\nConnection: close, authorization, host, content-length\r\n\r\n"
    );
    let answer = raw::exchange(app.addr, &request).await;
    assert_eq!(status_of(&answer), Some(200), "{answer}");
    let seen = standin.stats().await.requests;
    let upstream_host = standin.base_url().trim_start_matches("http://").to_owned();
    assert_eq!(
        seen[0].header("authorization"),
        Some(format!("Bearer {TOKEN}").as_str())
    );
    assert_eq!(seen[0].header("host"), Some(upstream_host.as_str()));
}

// ---------------------------------------------------------------------------
// Once known defects, now held (see `request_framing.rs` for their edges).

#[tokio::test]
async fn bare_lf_line_endings_are_refused() {
    let (standin, app) = spawn_pair(&[]).await;
    let cases: [(&str, &[u8]); 3] = [
        (
            "all LF",
            b"GET /v1/conversations/conv_lf HTTP/1.1\nHost: x\nAuthorization: Bearer a\n\n",
        ),
        (
            "LF after the request line",
            b"GET /v1/agents HTTP/1.1\nHost: x\r\n\r\n",
        ),
        (
            "LF in one field",
            b"GET /v1/agents HTTP/1.1\r\nHost: x\nX-A: 1\r\n\r\n",
        ),
    ];
    assert_refused_locally(&standin, &app, &cases).await;
    for (name, bytes) in cases {
        let answer = exchange_bytes(app.addr, bytes, Duration::from_secs(3)).await;
        assert_error(&answer, 400, "invalid_line_ending", name);
    }
}

#[tokio::test]
async fn an_absurd_chunk_size_is_a_400_and_opens_no_upstream_exchange() {
    let (standin, app) = spawn_pair(&[]).await;
    let cases: [(&str, &[u8]); 3] = [
        (
            "a chunk size past u64",
            b"POST /v1/calls HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffffffff\r\nabc\r\n0\r\n\r\n",
        ),
        (
            "a negative chunk size",
            b"POST /v1/calls HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n-1\r\nabc\r\n0\r\n\r\n",
        ),
        (
            "a chunk size that is not hex",
            b"POST /v1/calls HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",
        ),
    ];
    assert_refused_locally(&standin, &app, &cases).await;
    for (name, bytes) in cases {
        let answer = exchange_bytes(app.addr, bytes, Duration::from_secs(3)).await;
        assert_error(&answer, 400, "invalid_request_body", name);
    }
}

#[tokio::test]
async fn connect_and_trace_are_never_forwarded() {
    // The stand-in counts only `/v1/` requests, and a forwarded CONNECT
    // arrives as `CONNECT host:port`: count every head that arrives instead.
    let (base_url, heads) = recording_upstream().await;
    let app = proxy_for(&base_url).await;
    for path in ["/v1/agents", "/v1/conversations/conv_m"] {
        for method in ["CONNECT", "TRACE"] {
            let request = format!(
                "{method} {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n\r\n"
            );
            let answer = exchange_bytes(app.addr, request.as_bytes(), Duration::from_secs(3)).await;
            let status = status_of(&answer);
            assert!(
                status.is_none_or(|s| (400..500).contains(&s)),
                "{method} {path}: {answer}"
            );
        }
    }
    let heads = heads.lock().unwrap().clone();
    assert!(heads.is_empty(), "forwarded: {heads:?}");
    assert_still_serving(&app).await;
}

#[tokio::test]
async fn dot_segments_behind_encoded_slashes_are_refused() {
    let (standin, app) = spawn_pair(&[]).await;
    let targets = [
        "/v1/%2e%2e%2fadmin",
        "/v1/..%2Fadmin",
        "/v1/agents%2F..%2F..%2Fadmin",
        "/v1/..%5Cadmin",
        "/v1/..\\admin",
    ];
    let cases: Vec<(&str, Vec<u8>)> = targets
        .iter()
        .map(|t| (*t, raw::get(t).into_bytes()))
        .collect();
    let cases: Vec<(&str, &[u8])> = cases.iter().map(|(n, b)| (*n, b.as_slice())).collect();
    assert_refused_locally(&standin, &app, &cases).await;
}

#[tokio::test]
async fn a_slow_request_body_does_not_starve_the_upstream() {
    let (standin, app) = spawn_pair(&[
        ("upstream.max_concurrency", "1"),
        ("upstream.timeout", "\"1s\""),
        ("server.header_read_timeout", "\"800ms\""),
    ])
    .await;
    let mut slow = TcpStream::connect(app.addr).await.unwrap();
    let head = format!(
        "POST /v1/calls HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\nContent-Length: 100\r\n\r\n{{"
    );
    slow.write_all(head.as_bytes()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = Instant::now();
    let response = app.get("/v1/conversations/conv_starved", Some(TOKEN)).await;
    assert_eq!(response.status(), 200);
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "a miss waited {:?} behind a slow client's body",
        started.elapsed()
    );
    // The slow client gets 408 once its body is late, and nothing went upstream for it.
    let answer = raw::read_until_closed(&mut slow, Duration::from_secs(3)).await;
    assert_error(&answer, 408, "request_body_timeout", "a trickled body");
    assert_eq!(standin.requests_for("conv_starved").await, 1);
    assert_eq!(
        standin.stats().await.requests_total,
        1,
        "the slow POST went upstream"
    );
    assert_still_serving(&app).await;
}

#[tokio::test]
async fn a_half_closed_client_still_gets_its_answer() {
    // A client may shut down its write side once the request is sent
    // (`nc -N`, some HTTP/1.0 tools): the answer still comes, even a slow one.
    let (standin, app) = spawn_pair(&[]).await;
    standin.set("conv_half", json!({"delay_ms": 200})).await;
    let requests = [
        raw::get("/healthz"),
        format!(
            "GET /v1/conversations/conv_half HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n\r\n"
        ),
    ];
    for request in requests {
        let mut stream = TcpStream::connect(app.addr).await.unwrap();
        stream.write_all(request.as_bytes()).await.unwrap();
        stream.shutdown().await.unwrap();
        let answer = raw::read_until_closed(&mut stream, Duration::from_secs(3)).await;
        assert_eq!(status_of(&answer), Some(200), "{request}: {answer:?}");
    }
}

// ---------------------------------------------------------------------------
// Broken upstreams the stand-in cannot play: a scripted upstream.

/// A storable answer for `id`, with `marker` in it.
pub(crate) fn conversation_body(id: &str, marker: &str) -> String {
    let expires = SystemTime::now() + Duration::from_secs(3600);
    let expires = jiff::Timestamp::try_from(expires).unwrap().to_string();
    json!({"data": {
        "id": id, "status": "completed", "marker": marker,
        "recording": {"url": "https://r.example/x.mp3", "expires_at": expires},
        "analytics": {"interruptions": 0}
    }})
    .to_string()
}

/// `200` with `body`, kept alive.
pub(crate) fn ok_response(body: &str) -> String {
    format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// The id a request head asks for.
pub(crate) fn requested_id(head: &str) -> String {
    let path = head.split(' ').nth(1).unwrap_or("");
    let path = path.split('?').next().unwrap_or("");
    path.trim_start_matches("/v1/conversations/").to_owned()
}

/// Reads one request head (the proxy's GETs have no body); `None` when the peer closed.
pub(crate) async fn read_head(stream: &mut TcpStream, buffer: &mut Vec<u8>) -> Option<String> {
    loop {
        if let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buffer[..end]).into_owned();
            buffer.drain(..end + 4);
            return Some(head);
        }
        let mut chunk = [0u8; 4096];
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buffer.extend_from_slice(&chunk[..n]),
        }
    }
}

/// An upstream on a free port that hands each connection, numbered from 0,
/// to `script`; counts the connections.
async fn scripted_upstream<S, F>(script: S) -> (String, Arc<AtomicUsize>)
where
    S: Fn(TcpStream, usize) -> F + Send + Sync + 'static,
    F: Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base_url = format!("http://{}", listener.local_addr().unwrap());
    let connections = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&connections);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let index = counter.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(script(stream, index));
        }
    });
    (base_url, connections)
}

/// An upstream that answers every request with a storable conversation and
/// keeps each request head it received.
async fn recording_upstream() -> (String, Arc<Mutex<Vec<String>>>) {
    let heads = Arc::new(Mutex::new(Vec::new()));
    let kept = Arc::clone(&heads);
    let (base_url, _) = scripted_upstream(move |mut stream, _| {
        let heads = Arc::clone(&kept);
        async move {
            let mut buffer = Vec::new();
            while let Some(head) = read_head(&mut stream, &mut buffer).await {
                let body = conversation_body(&requested_id(&head), "fresh");
                heads.lock().unwrap().push(head);
                if stream
                    .write_all(ok_response(&body).as_bytes())
                    .await
                    .is_err()
                {
                    return;
                }
            }
        }
    })
    .await;
    (base_url, heads)
}

async fn proxy_for(base_url: &str) -> TestApp {
    spawn_with(&ConfigFile::for_upstream(base_url)).await
}

async fn body_of(response: reqwest::Response) -> Value {
    response.json().await.unwrap()
}

#[tokio::test]
async fn a_pooled_connection_the_upstream_closed_while_idle_is_not_reused() {
    // Each connection answers, then closes after 100 ms without a request
    // (an upstream with a short keep-alive timeout).
    let (base_url, connections) = scripted_upstream(|mut stream, _| async move {
        let mut buffer = Vec::new();
        while let Ok(Some(head)) = tokio::time::timeout(
            Duration::from_millis(100),
            read_head(&mut stream, &mut buffer),
        )
        .await
        {
            let id = requested_id(&head);
            let body = conversation_body(&id, "fresh");
            if stream
                .write_all(ok_response(&body).as_bytes())
                .await
                .is_err()
            {
                return;
            }
        }
    })
    .await;
    let app = proxy_for(&base_url).await;
    for (i, pause) in [0u64, 300, 300].into_iter().enumerate() {
        tokio::time::sleep(Duration::from_millis(pause)).await;
        let response = app
            .get(&format!("/v1/conversations/conv_idle{i}"), Some(TOKEN))
            .await;
        assert_eq!(response.status(), 200, "request {i}");
        assert_eq!(header(&response, "x-cache"), "MISS");
    }
    assert_eq!(connections.load(Ordering::SeqCst), 3);
    let hit = app.get("/v1/conversations/conv_idle0", Some(TOKEN)).await;
    assert_eq!(header(&hit, "x-cache"), "HIT");
}

#[tokio::test]
async fn a_reused_connection_closed_without_an_answer_is_retried_once_for_a_read() {
    // Connection 0 answers its first request, then reads the second and
    // closes without a byte. The cached route's GET is idempotent (RFC 9110
    // section 9.2.2): it goes once more, on a fresh connection.
    let (base_url, connections) = scripted_upstream(|mut stream, index| async move {
        let mut buffer = Vec::new();
        let mut served = 0;
        while let Some(head) = read_head(&mut stream, &mut buffer).await {
            if index == 0 && served == 1 {
                return;
            }
            let body = conversation_body(&requested_id(&head), "fresh");
            if stream
                .write_all(ok_response(&body).as_bytes())
                .await
                .is_err()
            {
                return;
            }
            served += 1;
        }
    })
    .await;
    let app = proxy_for(&base_url).await;
    let first = app.get("/v1/conversations/conv_r1", Some(TOKEN)).await;
    assert_eq!(first.status(), 200);
    let retried = app.get("/v1/conversations/conv_r2", Some(TOKEN)).await;
    assert_eq!(retried.status(), 200);
    assert_eq!(header(&retried, "x-cache"), "MISS");
    let again = app.get("/v1/conversations/conv_r2", Some(TOKEN)).await;
    assert_eq!(header(&again, "x-cache"), "HIT");
    assert_eq!(
        connections.load(Ordering::SeqCst),
        2,
        "one fresh connection for the retry"
    );
}

#[tokio::test]
async fn bytes_past_the_end_of_an_answer_never_become_the_next_answer() {
    // Connection 0 sends a whole answer followed by a second, forged one
    // that would poison the next request if the connection were reused.
    let (base_url, connections) = scripted_upstream(|mut stream, index| async move {
        let mut buffer = Vec::new();
        while let Some(head) = read_head(&mut stream, &mut buffer).await {
            let id = requested_id(&head);
            let mut answer = ok_response(&conversation_body(&id, "fresh"));
            if index == 0 {
                answer.push_str(&ok_response(&conversation_body("conv_b", "forged")));
            }
            if stream.write_all(answer.as_bytes()).await.is_err() {
                return;
            }
        }
    })
    .await;
    let app = proxy_for(&base_url).await;
    let first = app.get("/v1/conversations/conv_a", Some("sk_alice")).await;
    assert_eq!(first.status(), 200);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let second = app.get("/v1/conversations/conv_b", Some("sk_bob")).await;
    let status = second.status();
    let body = body_of(second).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["data"]["marker"], "fresh",
        "a forged answer was served"
    );
    // The connection that carried extra bytes was dropped, not reused.
    assert_eq!(connections.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn informational_answers_before_the_answer_are_skipped() {
    let (base_url, _) = scripted_upstream(|mut stream, _| async move {
        let mut buffer = Vec::new();
        while let Some(head) = read_head(&mut stream, &mut buffer).await {
            let body = conversation_body(&requested_id(&head), "fresh");
            let answer = format!(
                "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: </x>; rel=preload\r\n\r\n{}",
                ok_response(&body)
            );
            if stream.write_all(answer.as_bytes()).await.is_err() {
                return;
            }
        }
    })
    .await;
    let app = proxy_for(&base_url).await;
    let response = app.get("/v1/conversations/conv_1xx", Some(TOKEN)).await;
    assert_eq!(response.status(), 200);
    assert_eq!(header(&response, "x-cache"), "MISS");
    let hit = app.get("/v1/conversations/conv_1xx", Some(TOKEN)).await;
    assert_eq!(header(&hit, "x-cache"), "HIT");
}

#[tokio::test]
async fn an_oversized_upstream_head_is_a_502_never_stored() {
    let (standin, app) = spawn_pair(&[]).await;
    let many: Vec<(String, String)> = (0..150)
        .map(|i| (format!("x-many-{i}"), "v".to_owned()))
        .collect();
    let huge = vec![("x-huge".to_owned(), "h".repeat(1024 * 1024))];
    for extra in [many, huge] {
        standin
            .set("conv_head", json!({ "extra_headers": extra }))
            .await;
        let response = app.get("/v1/conversations/conv_head", Some(TOKEN)).await;
        assert_eq!(response.status(), 502);
        assert_eq!(
            body_of(response).await["error"]["code"],
            "upstream_bad_response"
        );
    }
    standin.clear("conv_head").await;
    let response = app.get("/v1/conversations/conv_head", Some(TOKEN)).await;
    assert_eq!(response.status(), 200);
    assert_eq!(header(&response, "x-cache"), "MISS");
    assert_eq!(standin.requests_for("conv_head").await, 3);
}

#[tokio::test]
async fn an_upstream_that_closes_after_every_answer_is_served_and_cached() {
    let (standin, app) = spawn_pair(&[]).await;
    for i in 0..3 {
        standin
            .set(
                &format!("conv_close{i}"),
                json!({"extra_headers": [["connection", "close"]]}),
            )
            .await;
    }
    for i in 0..3 {
        let path = format!("/v1/conversations/conv_close{i}");
        let response = app.get(&path, Some(TOKEN)).await;
        assert_eq!(response.status(), 200);
        assert_eq!(header(&response, "x-cache"), "MISS");
        let hit = app.get(&path, Some(TOKEN)).await;
        assert_eq!(header(&hit, "x-cache"), "HIT");
    }
    assert_eq!(standin.stats().await.requests_total, 3);
}

/// Races wanted before the test below may pass.
const RACES: usize = 3;

#[tokio::test]
async fn an_idle_connection_closed_as_it_is_reused_is_retried_on_a_fresh_one() {
    // As each request goes, the upstream is told to close its idle
    // connections: the proxy may take the pooled connection before it sees
    // the close. The upstream shuts its
    // side and still reads a moment, so a request sent on a closing
    // connection arrives (and is counted) but is never answered. Requests
    // go until that race has happened a few times; each must succeed.
    let raced = Arc::new(AtomicUsize::new(0));
    let close_idle = Arc::new(tokio::sync::Notify::new());
    let (counted, told) = (Arc::clone(&raced), Arc::clone(&close_idle));
    let (base_url, _) = scripted_upstream(move |mut stream, _| {
        let (raced, told) = (Arc::clone(&counted), Arc::clone(&told));
        async move {
            let mut buffer = Vec::new();
            loop {
                let close = told.notified();
                let head = tokio::select! {
                    head = read_head(&mut stream, &mut buffer) => head,
                    () = close => break,
                };
                let Some(head) = head else { return };
                let body = conversation_body(&requested_id(&head), "fresh");
                if stream
                    .write_all(ok_response(&body).as_bytes())
                    .await
                    .is_err()
                {
                    return;
                }
            }
            let _ = stream.shutdown().await;
            let late = tokio::time::timeout(
                Duration::from_millis(100),
                read_head(&mut stream, &mut buffer),
            );
            if let Ok(Some(_)) = late.await {
                raced.fetch_add(1, Ordering::SeqCst);
            }
        }
    })
    .await;
    let app = proxy_for(&base_url).await;
    let mut failed = Vec::new();
    let mut sent = 0u64;
    while raced.load(Ordering::SeqCst) < RACES && sent < 2000 {
        let request = app
            .client
            .get(app.url(&format!("/v1/conversations/conv_race{sent}")))
            .bearer_auth(TOKEN)
            .send();
        let close = async {
            // A varying head start for the request: the close lands before
            // the proxy takes the connection, or as it does.
            for _ in 0..sent % 8 {
                tokio::task::yield_now().await;
            }
            close_idle.notify_waiters();
        };
        let (response, ()) = tokio::join!(request, close);
        let response = response.expect("the proxy answers");
        if response.status() != 200 {
            failed.push((sent, response.status().as_u16()));
        }
        sent += 1;
    }
    assert!(failed.is_empty(), "failed: {failed:?}");
    assert!(
        raced.load(Ordering::SeqCst) >= RACES,
        "the race happened {} times in {sent} requests",
        raced.load(Ordering::SeqCst)
    );
    eprintln!("{RACES} races in {sent} requests");
}
