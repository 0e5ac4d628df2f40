//! Credentials: a cache partitioned per client key, or one proxy-held key with client tokens.

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::app::{spawn_app, spawn_pair};
use crate::cached_route::{header, serial};
use crate::standin::StandIn;

#[tokio::test]
async fn an_answer_fetched_with_one_key_is_never_served_to_another() {
    let (standin, app) = spawn_pair(&[]).await;
    let path = "/v1/conversations/conv_k";
    let a = app.get(path, Some("key_a")).await;
    assert_eq!(header(&a, "x-cache"), "MISS");
    let a_hit = app.get(path, Some("key_a")).await;
    assert_eq!(header(&a_hit, "x-cache"), "HIT");
    let b = app.get(path, Some("key_b")).await;
    assert_eq!(header(&b, "x-cache"), "MISS");
    let none = app.get(path, None).await;
    assert_eq!(header(&none, "x-cache"), "MISS");
    assert_eq!(
        none.status(),
        401,
        "the stand-in refuses a request without a key"
    );
    assert_eq!(standin.requests_for("conv_k").await, 3);
    let stats = standin.stats().await;
    let seen: Vec<Option<&str>> = stats
        .requests
        .iter()
        .map(|r| r.header("authorization"))
        .collect();
    assert_eq!(seen, [Some("Bearer key_a"), Some("Bearer key_b"), None]);
}

#[tokio::test]
async fn a_key_refused_upstream_does_not_poison_the_others() {
    let (standin, app) = spawn_pair(&[]).await;
    standin
        .set("conv_p", json!({"forbidden_tokens": ["key_weak"]}))
        .await;
    let path = "/v1/conversations/conv_p";
    for _ in 0..2 {
        let weak = app.get(path, Some("key_weak")).await;
        assert_eq!(weak.status(), 403);
        assert_eq!(header(&weak, "x-cache"), "MISS");
    }
    let strong = app.get(path, Some("key_strong")).await;
    assert_eq!(strong.status(), 200);
    assert_eq!(header(&strong, "x-cache"), "MISS");
    let weak = app.get(path, Some("key_weak")).await;
    assert_eq!(weak.status(), 403);
    assert_eq!(standin.requests_for("conv_p").await, 4);
}

fn digest(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

async fn proxy_key_app(standin: &StandIn) -> crate::app::TestApp {
    let tokens = format!(
        "[\"{}\", \"{}\"]",
        digest("client-one"),
        digest("client-two")
    );
    spawn_app(
        standin,
        &[
            ("upstream.api_key", "\"sk_proxy_key\""),
            ("auth.client_tokens_sha256", &tokens),
        ],
    )
    .await
}

#[tokio::test]
async fn with_a_proxy_key_clients_need_a_listed_token() {
    let standin = StandIn::spawn().await;
    let app = proxy_key_app(&standin).await;
    let path = "/v1/conversations/conv_t";
    for token in [None, Some("client-three"), Some("sk_proxy_key")] {
        let refused = app.get(path, token).await;
        assert_eq!(refused.status(), 401, "{token:?}");
        let body: Value = refused.json().await.unwrap();
        assert_eq!(body["error"]["type"], "authentication_error");
    }
    let refused = app.client.post(app.url("/v1/calls")).send().await.unwrap();
    assert_eq!(refused.status(), 401);
    assert_eq!(standin.stats().await.requests_total, 0);
    let health = app.get("/healthz", None).await;
    assert_eq!(health.status(), 200);
}

#[tokio::test]
async fn with_a_proxy_key_one_cache_serves_every_client_and_only_the_key_travels() {
    let standin = StandIn::spawn().await;
    let app = proxy_key_app(&standin).await;
    let path = "/v1/conversations/conv_s";
    let one = app.get(path, Some("client-one")).await;
    assert_eq!(header(&one, "x-cache"), "MISS");
    let one: Value = one.json().await.unwrap();
    let two = app.get(path, Some("client-two")).await;
    assert_eq!(header(&two, "x-cache"), "HIT");
    let two: Value = two.json().await.unwrap();
    assert_eq!(serial(&one), serial(&two));

    let echo = app
        .client
        .post(app.url("/v1/calls"))
        .bearer_auth("client-one")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(header(&echo, "x-cache"), "BYPASS");
    let stats = standin.stats().await;
    assert_eq!(stats.requests.len(), 2);
    for seen in &stats.requests {
        assert_eq!(seen.header("authorization"), Some("Bearer sk_proxy_key"));
        for (_, value) in &seen.headers {
            assert!(!value.contains("client-one"), "a client token travelled");
        }
    }
}

#[tokio::test]
async fn anonymous_clients_are_let_in_only_when_allowed() {
    let standin = StandIn::spawn().await;
    let app = spawn_app(
        &standin,
        &[
            ("upstream.api_key", "\"sk_proxy_key\""),
            ("auth.allow_anonymous", "true"),
        ],
    )
    .await;
    let response = app.get("/v1/conversations/conv_anon", None).await;
    assert_eq!(response.status(), 200);
    let seen = standin.stats().await.requests;
    assert_eq!(seen[0].header("authorization"), Some("Bearer sk_proxy_key"));
}

#[tokio::test]
async fn two_authorization_headers_are_refused() {
    let (standin, app) = spawn_pair(&[]).await;
    let response = app
        .client
        .get(app.url("/v1/conversations/conv_two"))
        .header("authorization", "Bearer a")
        .header("authorization", "Bearer b")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    assert_eq!(standin.stats().await.requests_total, 0);
}
