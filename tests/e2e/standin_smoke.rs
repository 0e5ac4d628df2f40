//! The stand-in Ayra API itself: default answers, knobs, echo and faults, checked without the proxy.

use crate::standin::StandIn;
use serde_json::json;

#[tokio::test]
async fn standin_serves_any_conversation_and_counts_it() {
    let upstream = StandIn::spawn().await;
    let client = reqwest::Client::new();
    let url = format!("{}/v1/conversations/conv_demo1", upstream.base_url());
    let response = client
        .get(&url)
        .bearer_auth("sk_test")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let serial = response.headers()["x-standin-serial"]
        .to_str()
        .unwrap()
        .to_owned();
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["data"]["id"], "conv_demo1");
    assert_eq!(
        body["data"]["integrations"]["standin_serial"].to_string(),
        serial
    );
    assert!(body["data"]["recording"]["expires_at"].is_string());

    let stats = upstream.stats().await;
    assert_eq!(stats.requests_total, 1);
    assert_eq!(upstream.requests_for("conv_demo1").await, 1);
    assert_eq!(
        stats.requests[0].header("authorization"),
        Some("Bearer sk_test")
    );
}

#[tokio::test]
async fn standin_knobs_change_the_answer_until_cleared() {
    let upstream = StandIn::spawn_with_args(&["--recording-ttl", "90s"]).await;
    let client = reqwest::Client::new();
    let url = format!("{}/v1/conversations/conv_gone", upstream.base_url());
    upstream.set("conv_gone", json!({"exists": false})).await;
    let response = client.get(&url).bearer_auth("k").send().await.unwrap();
    assert_eq!(response.status(), 404);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "conversation_not_found");

    upstream.clear("conv_gone").await;
    let response = client.get(&url).bearer_auth("k").send().await.unwrap();
    assert_eq!(response.status(), 200);

    upstream.set_skew_ms(-30_000).await;
    upstream.reset().await;
    assert_eq!(upstream.stats().await.requests_total, 0);
}

#[tokio::test]
async fn standin_echoes_other_api_requests() {
    let upstream = StandIn::spawn().await;
    let client = reqwest::Client::new();
    let url = format!("{}/v1/calls?x=1", upstream.base_url());
    let response = client
        .post(&url)
        .header("x-probe", "1")
        .body("hi")
        .send()
        .await
        .unwrap();
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["echo"]["method"], "POST");
    assert_eq!(body["echo"]["query"], "x=1");
    assert_eq!(body["echo"]["body"], "hi");
    assert!(body["echo"]["headers"]
        .as_array()
        .unwrap()
        .contains(&json!(["x-probe", "1"])));
}

#[tokio::test]
async fn standin_faults_reach_the_client_as_errors() {
    let upstream = StandIn::spawn().await;
    let client = reqwest::Client::new();
    let url = format!("{}/v1/conversations/conv_bad", upstream.base_url());
    for fault in [
        "malformed_head",
        "bad_header",
        "drop_mid_body",
        "short_body",
        "close_without_response",
    ] {
        upstream.set("conv_bad", json!({"fault": fault})).await;
        let outcome = match client.get(&url).bearer_auth("k").send().await {
            Ok(response) => response.bytes().await.map(|_| ()),
            Err(error) => Err(error),
        };
        assert!(outcome.is_err(), "{fault} should fail the exchange");
    }
}

#[tokio::test]
async fn standin_rate_limits_each_key_and_records_when_it_called() {
    let upstream = StandIn::spawn().await;
    upstream.set_rate_limit(1.0, 2).await;
    let client = reqwest::Client::new();
    let url = format!("{}/v1/conversations/conv_limited", upstream.base_url());
    let call = |key: &'static str| client.get(&url).bearer_auth(key).send();
    assert_eq!(call("sk_a").await.unwrap().status(), 200);
    assert_eq!(call("sk_a").await.unwrap().status(), 200);
    let limited = call("sk_a").await.unwrap();
    assert_eq!(limited.status(), 429);
    assert_eq!(limited.headers()["retry-after"], "1");
    let body: serde_json::Value = limited.json().await.unwrap();
    assert_eq!(body["error"]["type"], "rate_limit_error");
    assert_eq!(
        call("sk_b").await.unwrap().status(),
        200,
        "each key its own"
    );
    let record = upstream.calls().await;
    let limited: Vec<u16> = record.calls["sk_a"].iter().map(|c| c.limited).collect();
    assert_eq!(limited, [0, 0, 429]);
    assert_eq!(record.times_of("sk_b").len(), 1);
    assert!(record
        .times_of("sk_a")
        .iter()
        .all(|at| *at <= record.now_ms));
    upstream.reset().await;
    assert!(upstream.calls().await.calls.is_empty());
    assert_eq!(
        call("sk_a").await.unwrap().status(),
        200,
        "reset lifts the limit"
    );
}
