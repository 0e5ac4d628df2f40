//! Upstream faults: each is a clear 502 or 504 in the error shape, nothing is stored, serving goes on.

use serde_json::{json, Value};

use crate::app::{spawn_pair, spawn_with, ConfigFile};
use crate::cached_route::{header, TOKEN};

/// Asserts the response is `status` with `upstream_error` / `code`.
async fn assert_upstream_error(response: reqwest::Response, status: u16, code: &str) {
    assert_eq!(response.status(), status, "{code}");
    assert_eq!(header(&response, "content-type"), "application/json");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["type"], "upstream_error");
    assert_eq!(body["error"]["code"], code);
}

#[tokio::test]
async fn an_unreachable_upstream_is_502() {
    // A port nothing listens on, outside the range outgoing connections use.
    let port = crate::binary::free_port();
    let app = spawn_with(&ConfigFile::for_upstream(&format!(
        "http://127.0.0.1:{port}"
    )))
    .await;
    let response = app.get("/v1/conversations/conv_x", Some(TOKEN)).await;
    assert_eq!(header(&response, "x-cache"), "MISS");
    assert_upstream_error(response, 502, "upstream_unavailable").await;
    let response = app.get("/v1/agents", Some(TOKEN)).await;
    assert_upstream_error(response, 502, "upstream_unavailable").await;
    assert_eq!(app.get("/healthz", None).await.status(), 200);
}

#[tokio::test]
async fn a_slow_upstream_is_504_and_nothing_is_stored() {
    let (standin, app) = spawn_pair(&[("upstream.timeout", "\"300ms\"")]).await;
    standin.set("conv_slow", json!({"delay_ms": 1000})).await;
    let response = app.get("/v1/conversations/conv_slow", Some(TOKEN)).await;
    assert_eq!(
        header(&response, "cache-status"),
        "ayra-cache; fwd=miss; detail=timeout"
    );
    assert_upstream_error(response, 504, "upstream_timeout").await;
    standin
        .set("conv_slow", json!({"fault": "trickle", "trickle_ms": 20}))
        .await;
    let response = app.get("/v1/conversations/conv_slow", Some(TOKEN)).await;
    assert_upstream_error(response, 504, "upstream_timeout").await;
    standin
        .set("conv_slow", json!({"fault": "chunked_never_ends"}))
        .await;
    let response = app.get("/v1/conversations/conv_slow", Some(TOKEN)).await;
    assert_upstream_error(response, 504, "upstream_timeout").await;
    standin.clear("conv_slow").await;
    let response = app.get("/v1/conversations/conv_slow", Some(TOKEN)).await;
    assert_eq!(response.status(), 200);
    assert_eq!(header(&response, "x-cache"), "MISS");
    assert_eq!(standin.requests_for("conv_slow").await, 4);
}

#[tokio::test]
async fn a_body_over_max_body_is_502() {
    let (standin, app) = spawn_pair(&[("upstream.max_body", "\"64KiB\"")]).await;
    standin
        .set("conv_big", json!({"body_bytes": 200_000}))
        .await;
    for _ in 0..2 {
        let response = app.get("/v1/conversations/conv_big", Some(TOKEN)).await;
        assert_upstream_error(response, 502, "upstream_response_too_large").await;
    }
    assert_eq!(standin.requests_for("conv_big").await, 2);
    standin
        .set("conv_fits", json!({"body_bytes": 30_000}))
        .await;
    let response = app.get("/v1/conversations/conv_fits", Some(TOKEN)).await;
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn an_unreadable_answer_is_502_and_never_stored() {
    let (standin, app) = spawn_pair(&[]).await;
    for fault in [
        "malformed_head",
        "bad_header",
        "drop_mid_body",
        "short_body",
        "close_without_response",
    ] {
        standin.set("conv_broken", json!({"fault": fault})).await;
        let response = app.get("/v1/conversations/conv_broken", Some(TOKEN)).await;
        assert_eq!(header(&response, "x-cache"), "MISS", "{fault}");
        assert_upstream_error(response, 502, "upstream_bad_response").await;
    }
    standin.clear("conv_broken").await;
    let response = app.get("/v1/conversations/conv_broken", Some(TOKEN)).await;
    assert_eq!(response.status(), 200, "the proxy keeps serving");
    assert_eq!(
        header(&response, "x-cache"),
        "MISS",
        "nothing broken was stored"
    );
}
