//! Request heads and bodies at their edges: bare LFs behind pipelined
//! requests and split across writes, line feeds inside bodies that are not
//! heads, and the bounds on a forwarded body (`server.max_request_body`).
//!
//! Each case asserts what the client got, what the stand-in saw (its request
//! log), and that the proxy still serves other clients.

use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::app::spawn_pair;
use crate::cached_route::TOKEN;
use crate::hostile::{assert_error, assert_still_serving, exchange_bytes, status_of};
use crate::raw;

const LIMIT: Duration = Duration::from_secs(3);

/// The responses in `answer`, in order, split at each status line.
fn answers(answer: &str) -> Vec<&str> {
    answer
        .match_indices("HTTP/1.1 ")
        .map(|(at, _)| at)
        .collect::<Vec<_>>()
        .windows(2)
        .map(|w| &answer[w[0]..w[1]])
        .chain(answer.rfind("HTTP/1.1 ").map(|at| &answer[at..]))
        .collect()
}

#[tokio::test]
async fn a_bare_lf_head_behind_pipelined_requests_is_refused_after_their_answers() {
    let (standin, app) = spawn_pair(&[]).await;
    let request = format!(
        "GET /v1/conversations/conv_first HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n\r\n\
         GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n\
         GET /v1/conversations/conv_lf HTTP/1.1\nHost: x\nAuthorization: Bearer {TOKEN}\n\n\
         GET /v1/conversations/conv_after HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n\r\n"
    );
    let answer = exchange_bytes(app.addr, request.as_bytes(), LIMIT).await;
    let answers = answers(&answer);
    assert_eq!(answers.len(), 3, "{answer}");
    assert_eq!(status_of(answers[0]), Some(200), "{answer}");
    assert!(answers[1].ends_with(r#"{"status":"ok"}"#), "{answer}");
    assert_error(answers[2], 400, "invalid_line_ending", "third of four");
    // Nothing after the refused head is read: the connection closes.
    let seen = standin.stats().await.requests;
    let paths: Vec<&str> = seen.iter().map(|r| r.path.as_str()).collect();
    assert_eq!(paths, ["/v1/conversations/conv_first"]);
    assert_still_serving(&app).await;
}

#[tokio::test]
async fn a_bare_lf_in_a_head_sent_in_pieces_is_refused() {
    let (standin, app) = spawn_pair(&[]).await;
    let pieces: [&[u8]; 4] = [
        b"GET /v1/conversations/co",
        b"nv_split HTTP/1.1\r\nHost: x\r",
        b"\nX-A: 1\r\nX-B: 2",
        b"\n\r\n",
    ];
    let mut stream = TcpStream::connect(app.addr).await.unwrap();
    for piece in pieces {
        stream.write_all(piece).await.unwrap();
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    let answer = raw::read_until_closed(&mut stream, LIMIT).await;
    assert_error(&answer, 400, "invalid_line_ending", "a head in pieces");
    assert_eq!(standin.stats().await.requests_total, 0);
    assert_still_serving(&app).await;
}

#[tokio::test]
async fn line_feeds_inside_bodies_are_not_heads() {
    let (standin, app) = spawn_pair(&[]).await;
    let counted = "{\n\"to\": \"+1555\"\n}\n\n";
    let request = format!(
        "POST /v1/calls HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\nContent-Length: {}\r\n\r\n{counted}\
         POST /v1/calls HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\nTransfer-Encoding: chunked\r\n\r\n\
         3;note=x\r\n{{\n\n\r\n3\r\n}}\n\n\r\n0\r\nX-Trailer: 1\r\n\r\n\
         GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        counted.len()
    );
    let answer = exchange_bytes(app.addr, request.as_bytes(), LIMIT).await;
    let answers = answers(&answer);
    let statuses: Vec<_> = answers.iter().map(|a| status_of(a)).collect();
    assert_eq!(statuses, [Some(200); 3], "{answer}");
    let seen = standin.stats().await;
    assert_eq!(seen.requests_total, 2, "{answer}");
    // The stand-in echoes each body: both arrived whole, as sent.
    assert!(
        answers[0].contains(r#""body":"{\n\"to\": \"+1555\"\n}\n\n""#),
        "{answer}"
    );
    assert!(answers[1].contains(r#""body":"{\n\n}\n\n""#), "{answer}");
}

#[tokio::test]
async fn a_body_over_max_request_body_is_a_413_and_never_forwarded() {
    let (standin, app) = spawn_pair(&[("server.max_request_body", "\"1KiB\"")]).await;
    let big = "x".repeat(1025);
    let chunked: String = (0..3)
        .map(|_| format!("200\r\n{}\r\n", "y".repeat(512)))
        .collect();
    let cases = [
        (
            "a declared length over the limit",
            format!("POST /v1/calls HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{big}", big.len()),
        ),
        (
            "chunks adding up past the limit",
            format!("POST /v1/calls HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n{chunked}0\r\n\r\n"),
        ),
    ];
    for (name, request) in cases {
        let answer = exchange_bytes(app.addr, request.as_bytes(), LIMIT).await;
        assert_error(&answer, 413, "request_body_too_large", name);
        assert_eq!(answer.matches("HTTP/1.1 ").count(), 1, "{name}: {answer}");
    }
    assert_eq!(standin.stats().await.requests_total, 0);
    // A body at the limit goes through.
    let at_limit = "z".repeat(1024);
    let request = format!(
        "POST /v1/calls HTTP/1.1\r\nHost: x\r\nContent-Length: 1024\r\nConnection: close\r\n\r\n{at_limit}"
    );
    let answer = raw::exchange(app.addr, &request).await;
    assert_eq!(status_of(&answer), Some(200), "{answer}");
    assert_eq!(standin.stats().await.requests_total, 1);
    assert_still_serving(&app).await;
}
