//! The admin listener: metrics, stats, purges, and its token.

use std::time::Duration;

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::app::{spawn_app, TestApp};
use crate::cached_route::{header, TOKEN};
use crate::standin::StandIn;

pub const ADMIN_TOKEN: &str = "admin-secret-token";

pub async fn admin_app(standin: &StandIn, extra: &[(&str, &str)]) -> TestApp {
    let digest = format!(
        "\"{}\"",
        hex::encode(Sha256::digest(ADMIN_TOKEN.as_bytes()))
    );
    let mut keys = vec![
        ("server.admin_listen", "\"127.0.0.1:0\""),
        ("admin.token_sha256", digest.as_str()),
    ];
    keys.extend_from_slice(extra);
    spawn_app(standin, &keys).await
}

/// The JSON answer of an admin call (`method` on `url`) made with `token`.
pub async fn admin_json(
    client: &reqwest::Client,
    method: reqwest::Method,
    url: String,
    token: &str,
) -> Value {
    client
        .request(method, url)
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Whether `/admin/stats` shows any budget paused.
pub fn any_budget_paused(stats: &Value) -> bool {
    let budgets = stats["budgets"].as_array().expect("budgets in the stats");
    budgets
        .iter()
        .any(|budget| budget["paused_until"].is_string())
}

pub async fn metrics(app: &TestApp) -> String {
    let response = app
        .client
        .get(app.admin_url("/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(header(&response, "content-type").starts_with("application/openmetrics-text"));
    response.text().await.unwrap()
}

/// The value of one series in a metrics text, 0 when absent.
pub fn series(text: &str, name_and_labels: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(name_and_labels)?.strip_prefix(' '))
        .map(|value| value.trim().parse().unwrap())
        .unwrap_or(0.0)
}

async fn admin(
    app: &TestApp,
    method: reqwest::Method,
    path: &str,
    token: Option<&str>,
) -> reqwest::Response {
    let mut request = app.client.request(method, app.admin_url(path));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.unwrap()
}

/// `DELETE path` on the admin listener with the operator's token.
async fn delete_as_operator(app: &TestApp, path: &str) -> reqwest::Response {
    admin(app, reqwest::Method::DELETE, path, Some(ADMIN_TOKEN)).await
}

#[tokio::test]
async fn metrics_count_requests_stores_refusals_and_upstream_calls() {
    let standin = StandIn::spawn().await;
    standin
        .set("conv_live", json!({"status": "in_progress"}))
        .await;
    let app = admin_app(&standin, &[("upstream.timeout", "\"300ms\"")]).await;
    standin.set("conv_slow", json!({"delay_ms": 1000})).await;
    app.get("/v1/conversations/conv_m", Some(TOKEN)).await;
    app.get("/v1/conversations/conv_m", Some(TOKEN)).await;
    app.get("/v1/conversations/conv_live", Some(TOKEN)).await;
    app.get("/v1/conversations/conv_slow", Some(TOKEN)).await;
    app.get("/v1/agents", Some(TOKEN)).await;
    app.get("/nowhere", None).await;

    let text = metrics(&app).await;
    let requests = |labels: &str| series(&text, &format!("ayra_cache_requests_total{{{labels}}}"));
    assert_eq!(
        requests(r#"route="conversation",cache="miss",status="2xx""#),
        2.0
    );
    assert_eq!(
        requests(r#"route="conversation",cache="hit",status="2xx""#),
        1.0
    );
    assert_eq!(
        requests(r#"route="conversation",cache="miss",status="5xx""#),
        1.0
    );
    assert_eq!(
        requests(r#"route="passthrough",cache="bypass",status="2xx""#),
        1.0
    );
    assert_eq!(requests(r#"route="other",cache="none",status="4xx""#), 1.0);
    assert_eq!(series(&text, "ayra_cache_stores_total"), 1.0);
    assert_eq!(
        series(
            &text,
            r#"ayra_cache_store_refusals_total{reason="in_progress"}"#
        ),
        1.0
    );
    assert_eq!(
        series(&text, r#"ayra_cache_upstream_errors_total{kind="timeout"}"#),
        1.0
    );
    assert_eq!(
        series(
            &text,
            r#"ayra_cache_upstream_request_duration_seconds_count{outcome="ok"}"#
        ),
        3.0
    );
    assert_eq!(
        series(
            &text,
            r#"ayra_cache_request_duration_seconds_count{cache="hit"}"#
        ),
        1.0
    );
    assert_eq!(series(&text, "ayra_cache_entries"), 1.0);
    assert!(series(&text, "ayra_cache_bytes") > 1000.0);
    assert!(
        !text.contains("conv_m") && !text.contains(TOKEN),
        "ids or credentials in labels"
    );
    // None of it is on the public port.
    assert_eq!(app.get("/metrics", None).await.status(), 404);
    assert_eq!(
        app.get("/admin/stats", Some(ADMIN_TOKEN)).await.status(),
        404
    );
}

#[tokio::test]
async fn coalesced_waiters_are_counted() {
    let standin = StandIn::spawn().await;
    standin.set("conv_c", json!({"delay_ms": 300})).await;
    let app = admin_app(&standin, &[]).await;
    let burst = (0..10).map(|_| app.get("/v1/conversations/conv_c", Some(TOKEN)));
    futures::future::join_all(burst).await;
    let text = metrics(&app).await;
    assert_eq!(series(&text, "ayra_cache_coalesced_waiters_total"), 9.0);
    assert_eq!(standin.requests_for("conv_c").await, 1);
}

#[tokio::test]
async fn admin_routes_need_the_admin_token() {
    let standin = StandIn::spawn().await;
    let app = admin_app(&standin, &[]).await;
    for token in [None, Some("wrong"), Some(TOKEN)] {
        let response = admin(&app, reqwest::Method::GET, "/admin/stats", token).await;
        assert_eq!(response.status(), 401, "{token:?}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["type"], "authentication_error");
    }
    let ok = admin(
        &app,
        reqwest::Method::GET,
        "/admin/stats",
        Some(ADMIN_TOKEN),
    )
    .await;
    assert_eq!(ok.status(), 200);
    let health = admin(&app, reqwest::Method::GET, "/healthz", None).await;
    assert_eq!(health.status(), 200);
    let unknown = admin(
        &app,
        reqwest::Method::GET,
        "/v1/conversations/x",
        Some(ADMIN_TOKEN),
    )
    .await;
    assert_eq!(unknown.status(), 404);
    assert_eq!(standin.stats().await.requests_total, 0);
}

#[tokio::test]
async fn without_an_admin_token_configured_admin_routes_are_disabled() {
    let standin = StandIn::spawn().await;
    let app = spawn_app(&standin, &[("server.admin_listen", "\"127.0.0.1:0\"")]).await;
    let response = delete_as_operator(&app, "/admin/cache").await;
    assert_eq!(response.status(), 403);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["type"], "permission_error");
    assert_eq!(body["error"]["code"], "admin_disabled");
    assert_eq!(
        admin(&app, reqwest::Method::GET, "/metrics", None)
            .await
            .status(),
        200
    );
}

#[tokio::test]
async fn purging_a_conversation_drops_every_variant_and_credential() {
    let standin = StandIn::spawn().await;
    let app = admin_app(&standin, &[]).await;
    let reads = [
        ("/v1/conversations/conv_a", "key_1"),
        ("/v1/conversations/conv_a?include_transcript=false", "key_1"),
        ("/v1/conversations/conv_a", "key_2"),
        ("/v1/conversations/conv_a?include_analytics=0", "key_2"),
        ("/v1/conversations/conv_b", "key_1"),
    ];
    for (path, key) in reads {
        assert_eq!(header(&app.get(path, Some(key)).await, "x-cache"), "MISS");
    }
    let purge = delete_as_operator(&app, "/admin/cache/conversations/conv_a").await;
    assert_eq!(purge.status(), 200);
    assert_eq!(purge.json::<Value>().await.unwrap(), json!({"purged": 4}));
    for (path, key) in reads {
        let expected = if path.contains("conv_b") {
            "HIT"
        } else {
            "MISS"
        };
        assert_eq!(
            header(&app.get(path, Some(key)).await, "x-cache"),
            expected,
            "{path}"
        );
    }
    assert_eq!(standin.requests_for("conv_a").await, 8);
    let text = metrics(&app).await;
    assert_eq!(
        series(&text, r#"ayra_cache_evictions_total{cause="purge"}"#),
        4.0
    );
    let bad = delete_as_operator(&app, "/admin/cache/conversations/a.b").await;
    assert_eq!(bad.status(), 400);
}

#[tokio::test]
async fn a_purge_reaches_entries_the_workers_serve_from_their_hot_maps() {
    let standin = StandIn::spawn().await;
    let app = admin_app(&standin, &[]).await;
    // Three variants, each read until its worker serves it from its own
    // map: a MISS, a HIT that puts it there, HITs answered from it.
    let paths = [
        "/v1/conversations/conv_a",
        "/v1/conversations/conv_a?include_transcript=false",
        "/v1/conversations/conv_a?include_analytics=false",
    ];
    for path in paths {
        let first = app.get(path, Some(TOKEN)).await;
        assert_eq!(header(&first, "x-cache"), "MISS");
        for _ in 0..3 {
            assert_eq!(header(&app.get(path, Some(TOKEN)).await, "x-cache"), "HIT");
        }
    }
    assert_eq!(standin.requests_for("conv_a").await, 3);
    let purge = delete_as_operator(&app, "/admin/cache/conversations/conv_a").await;
    assert_eq!(purge.json::<Value>().await.unwrap(), json!({"purged": 3}));
    // Three lookups in a row: at most one of them is the one in sixteen
    // that goes to moka, so a map answering after the purge would show.
    for path in paths {
        let after = app.get(path, Some(TOKEN)).await;
        assert_eq!(header(&after, "x-cache"), "MISS", "{path}");
    }
    assert_eq!(standin.requests_for("conv_a").await, 6);
}

#[tokio::test]
async fn purging_everything_and_the_stats() {
    let standin = StandIn::spawn().await;
    let app = admin_app(&standin, &[]).await;
    for id in ["conv_1", "conv_2", "conv_3"] {
        app.get(&format!("/v1/conversations/{id}"), Some(TOKEN))
            .await;
    }
    app.get("/v1/conversations/conv_1", Some(TOKEN)).await;
    let stats: Value = admin(
        &app,
        reqwest::Method::GET,
        "/admin/stats",
        Some(ADMIN_TOKEN),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(stats["entries"], 3);
    assert!(stats["bytes"].as_u64().unwrap() > 3000);
    assert_eq!(stats["hits"], 1);
    assert_eq!(stats["misses"], 3);
    assert_eq!(stats["hit_ratio"], 0.25);
    assert_eq!(stats["upstream_errors"], 0);
    assert!(stats["uptime_seconds"].is_u64());
    let purge = delete_as_operator(&app, "/admin/cache").await;
    assert_eq!(purge.json::<Value>().await.unwrap(), json!({"purged": 3}));
    let after = app.get("/v1/conversations/conv_2", Some(TOKEN)).await;
    assert_eq!(header(&after, "x-cache"), "MISS");
    let wrong_method = admin(
        &app,
        reqwest::Method::GET,
        "/admin/cache",
        Some(ADMIN_TOKEN),
    )
    .await;
    assert_eq!(wrong_method.status(), 405);
}

#[tokio::test]
async fn size_evictions_are_counted() {
    let standin = StandIn::spawn().await;
    let app = admin_app(&standin, &[("cache.max_bytes", "\"20KiB\"")]).await;
    for i in 0..10 {
        app.get(&format!("/v1/conversations/conv_s{i}"), Some(TOKEN))
            .await;
    }
    // `/metrics` runs the cache's pending housekeeping (where moka evicts
    // and reports evictions) before it counts.
    let text = metrics(&app).await;
    assert!(
        series(&text, r#"ayra_cache_evictions_total{cause="size"}"#) >= 1.0,
        "{text}"
    );
    assert!(series(&text, "ayra_cache_bytes") <= 20.0 * 1024.0);
}

#[tokio::test]
async fn stored_means_stored_even_when_another_conversation_is_purged_meanwhile() {
    let standin = StandIn::spawn().await;
    standin.set("conv_slow", json!({"delay_ms": 400})).await;
    let app = admin_app(&standin, &[]).await;
    let slow = app.get("/v1/conversations/conv_slow", Some(TOKEN));
    let purge = async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        delete_as_operator(&app, "/admin/cache/conversations/conv_other").await
    };
    let (slow, purge) = tokio::join!(slow, purge);
    assert_eq!(purge.status(), 200);
    assert_eq!(
        header(&slow, "cache-status"),
        "ayra-cache; fwd=miss; stored"
    );
    let next = app.get("/v1/conversations/conv_slow", Some(TOKEN)).await;
    assert_eq!(
        header(&next, "x-cache"),
        "HIT",
        "what was reported stored is there"
    );

    // A purge of the conversation itself while it is fetched: not stored, and said so.
    standin.set("conv_slow2", json!({"delay_ms": 400})).await;
    let slow = app.get("/v1/conversations/conv_slow2", Some(TOKEN));
    let purge = async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        delete_as_operator(&app, "/admin/cache/conversations/conv_slow2").await
    };
    let (slow, _) = tokio::join!(slow, purge);
    assert_eq!(
        header(&slow, "cache-status"),
        "ayra-cache; fwd=miss; detail=superseded"
    );
    let next = app.get("/v1/conversations/conv_slow2", Some(TOKEN)).await;
    assert_eq!(header(&next, "x-cache"), "MISS");
}
