//! Routes: health, 404, id checks, pass-through and what it carries, head limits.

use serde_json::Value;

use crate::app::spawn_pair;
use crate::cached_route::{header, TOKEN};
use crate::raw;

#[tokio::test]
async fn health_is_answered_locally() {
    let (standin, app) = spawn_pair(&[]).await;
    let response = app.get("/healthz", None).await;
    assert_eq!(response.status(), 200);
    assert_eq!(header(&response, "content-type"), "application/json");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body, serde_json::json!({"status": "ok"}));
    assert_eq!(standin.stats().await.requests_total, 0);
}

#[tokio::test]
async fn unknown_paths_are_404_and_never_forwarded() {
    let (standin, app) = spawn_pair(&[]).await;
    for path in [
        "/",
        "/v2/conversations/x",
        "/v1",
        "/admin",
        "/healthz/x",
        "/metrics",
    ] {
        let response = app.get(path, Some(TOKEN)).await;
        assert_eq!(response.status(), 404, "{path}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["type"], "not_found");
        assert!(body["error"]["code"].is_string() && body["error"]["message"].is_string());
    }
    let post = app.client.post(app.url("/healthz")).send().await.unwrap();
    assert_eq!(post.status(), 404);
    assert_eq!(standin.stats().await.requests_total, 0);
}

#[tokio::test]
async fn invalid_ids_are_400_whatever_the_method() {
    let (standin, app) = spawn_pair(&[]).await;
    let long = "x".repeat(129);
    for id in [
        "a.b",
        "a%2Fb",
        "a/b",
        "",
        "caf%C3%A9",
        "a%20b",
        long.as_str(),
    ] {
        for method in [reqwest::Method::GET, reqwest::Method::DELETE] {
            let url = app.url(&format!("/v1/conversations/{id}"));
            let response = app
                .client
                .request(method.clone(), url)
                .bearer_auth(TOKEN)
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 400, "{method} {id}");
            let body: Value = response.json().await.unwrap();
            assert_eq!(body["error"]["type"], "invalid_request_error");
            assert_eq!(body["error"]["code"], "invalid_conversation_id");
        }
    }
    // Client libraries normalise dot segments away; raw bytes do not.
    for target in [
        "/v1/conversations/..",
        "/v1/conversations/.",
        "/v1/conversations/%2e%2e",
    ] {
        let response = raw::exchange(app.addr, &raw::get(target)).await;
        assert!(response.starts_with("HTTP/1.1 400"), "{target}: {response}");
    }
    assert_eq!(standin.stats().await.requests_total, 0);
}

#[tokio::test]
async fn pass_through_keeps_method_path_query_body_and_end_to_end_headers() {
    let (standin, app) = spawn_pair(&[]).await;
    let response = app
        .client
        .post(app.url("/v1/calls?dry_run=true"))
        .bearer_auth(TOKEN)
        .header("content-type", "application/json")
        .header("x-trace", "t-1")
        .header("cookie", "c=1")
        .header("connection", "x-hop")
        .header("x-hop", "1")
        .header("te", "trailers")
        .body(r#"{"to":"+15550001111"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(header(&response, "x-cache"), "BYPASS");
    assert_eq!(header(&response, "cache-status"), "ayra-cache; fwd=bypass");
    let echo: Value = response.json().await.unwrap();
    let echo = &echo["echo"];
    assert_eq!(echo["method"], "POST");
    assert_eq!(echo["path"], "/v1/calls");
    assert_eq!(echo["query"], "dry_run=true");
    assert_eq!(echo["body"], r#"{"to":"+15550001111"}"#);
    let seen = standin.stats().await.requests;
    let seen = seen.last().unwrap();
    assert_eq!(seen.header("x-trace"), Some("t-1"));
    assert_eq!(seen.header("cookie"), Some("c=1"));
    assert_eq!(
        seen.header("authorization"),
        Some(format!("Bearer {TOKEN}").as_str())
    );
    let host = standin.base_url().trim_start_matches("http://").to_owned();
    assert_eq!(seen.header("host"), Some(host.as_str()));
    for hop in ["x-hop", "te"] {
        assert_eq!(seen.header(hop), None, "{hop} travelled");
    }
}

#[tokio::test]
async fn pass_through_is_never_cached() {
    let (standin, app) = spawn_pair(&[]).await;
    for _ in 0..2 {
        let response = app.get("/v1/agents?page=1", Some(TOKEN)).await;
        assert_eq!(header(&response, "x-cache"), "BYPASS");
    }
    let delete = app
        .client
        .delete(app.url("/v1/conversations/conv_del"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(header(&delete, "x-cache"), "BYPASS");
    let stats = standin.stats().await;
    assert_eq!(stats.requests_total, 3);
    assert_eq!(stats.requests.last().unwrap().method, "DELETE");
}

#[tokio::test]
async fn dot_segments_are_refused() {
    let (standin, app) = spawn_pair(&[]).await;
    for target in ["/v1/../admin", "/v1/%2e%2e/admin", "/v1/./agents"] {
        let response = raw::exchange(app.addr, &raw::get(target)).await;
        assert!(response.starts_with("HTTP/1.1 400"), "{target}: {response}");
    }
    assert_eq!(standin.stats().await.requests_total, 0);
}

#[tokio::test]
async fn an_absolute_form_target_never_chooses_the_upstream() {
    let (standin, app) = spawn_pair(&[]).await;
    let request = format!(
        "GET http://evil.example/v1/conversations/conv_abs HTTP/1.1\r\nHost: evil.example\r\nAuthorization: Bearer {TOKEN}\r\nConnection: close\r\n\r\n"
    );
    let response = raw::exchange(app.addr, &request).await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    let seen = standin.stats().await.requests;
    let host = standin.base_url().trim_start_matches("http://").to_owned();
    assert_eq!(seen[0].header("host"), Some(host.as_str()));
}

#[tokio::test]
async fn oversized_heads_and_targets_are_refused() {
    let (standin, app) = spawn_pair(&[]).await;
    let long_target = format!("/v1/agents?q={}", "a".repeat(9 * 1024));
    let response = raw::exchange(app.addr, &raw::get(&long_target)).await;
    // The README's table: 414 `uri_too_long` for a target over 8 KiB.
    assert!(response.starts_with("HTTP/1.1 414"), "{response}");
    assert!(response.contains("\"uri_too_long\""), "{response}");
    let big_header = format!(
        "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\nConnection: close\r\n\r\n",
        "b".repeat(17 * 1024)
    );
    let response = raw::exchange(app.addr, &big_header).await;
    assert!(response.starts_with("HTTP/1.1 431"), "{response}");
    let many: String = (0..101).map(|i| format!("X-H{i}: v\r\n")).collect();
    let many = format!("GET /healthz HTTP/1.1\r\nHost: x\r\n{many}Connection: close\r\n\r\n");
    let response = raw::exchange(app.addr, &many).await;
    assert!(response.starts_with("HTTP/1.1 431"), "{response}");
    assert_eq!(standin.stats().await.requests_total, 0);
    assert_eq!(app.get("/healthz", None).await.status(), 200);
}

#[tokio::test]
async fn ambiguous_framing_is_refused_or_ends_the_connection() {
    let (standin, app) = spawn_pair(&[]).await;
    let refused = [
        "POST /v1/calls HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
        "POST /v1/calls HTTP/1.1\r\nHost: x\r\nContent-Length: +3\r\n\r\nabc",
        "POST /v1/calls HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\nabc",
    ];
    for request in refused {
        let response = raw::exchange(app.addr, request).await;
        assert!(
            response.starts_with("HTTP/1.1 400"),
            "{request:?} got {response}"
        );
    }
    assert_eq!(standin.stats().await.requests_total, 0);
    // Content-Length with Transfer-Encoding: the chunked framing wins (RFC 9112
    // section 6.3) and the connection is closed after the one response, so
    // nothing can be smuggled behind it. No `Connection: close` is sent here.
    let both = "POST /v1/calls HTTP/1.1\r\nHost: x\r\nContent-Length: 40\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /v1/smuggled HTTP/1.1\r\nHost: x\r\n\r\n";
    let started = std::time::Instant::now();
    let response = raw::exchange(app.addr, both).await;
    assert!(
        started.elapsed() < std::time::Duration::from_secs(2),
        "left open"
    );
    assert_eq!(response.matches("HTTP/1.1 ").count(), 1, "{response}");
    let seen = standin.stats().await.requests;
    assert!(seen.iter().all(|r| r.path != "/v1/smuggled"));
}
