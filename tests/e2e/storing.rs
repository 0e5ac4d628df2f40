//! What is stored and for how long: statuses, analytics, no-store, expiry, lifetimes, skew.

use std::time::Duration;

use serde_json::{json, Value};

use crate::app::{spawn_app, spawn_pair};
use crate::cached_route::{header, TOKEN};
use crate::standin::StandIn;

/// Reads `path` twice and returns both `x-cache` values.
async fn twice(app: &crate::app::TestApp, path: &str) -> (String, String) {
    let first = header(&app.get(path, Some(TOKEN)).await, "x-cache");
    let second = header(&app.get(path, Some(TOKEN)).await, "x-cache");
    (first, second)
}

fn misses() -> (String, String) {
    ("MISS".into(), "MISS".into())
}

#[tokio::test]
async fn a_live_conversation_is_not_stored_until_completed() {
    let (standin, app) = spawn_pair(&[]).await;
    standin
        .set("conv_live", json!({"status": "in_progress"}))
        .await;
    let response = app.get("/v1/conversations/conv_live", Some(TOKEN)).await;
    assert_eq!(
        header(&response, "cache-status"),
        "ayra-cache; fwd=miss; detail=in_progress"
    );
    assert_eq!(twice(&app, "/v1/conversations/conv_live").await, misses());
    assert_eq!(standin.requests_for("conv_live").await, 3);

    standin
        .set("conv_live", json!({"status": "completed"}))
        .await;
    let (first, second) = twice(&app, "/v1/conversations/conv_live").await;
    assert_eq!((first.as_str(), second.as_str()), ("MISS", "HIT"));
    assert_eq!(standin.requests_for("conv_live").await, 4);
}

#[tokio::test]
async fn configured_statuses_are_stored() {
    let (standin, app) = spawn_pair(&[("cache.statuses", "[\"completed\", \"archived\"]")]).await;
    standin
        .set("conv_arch", json!({"status": "archived"}))
        .await;
    let (first, second) = twice(&app, "/v1/conversations/conv_arch").await;
    assert_eq!((first.as_str(), second.as_str()), ("MISS", "HIT"));
    standin
        .set("conv_other", json!({"status": "in_progress"}))
        .await;
    assert_eq!(twice(&app, "/v1/conversations/conv_other").await, misses());
}

#[tokio::test]
async fn pending_analytics_block_storing_only_when_asked_for() {
    let (standin, app) = spawn_pair(&[]).await;
    standin
        .set("conv_an", json!({"analytics_pending": true}))
        .await;
    let response = app.get("/v1/conversations/conv_an", Some(TOKEN)).await;
    assert_eq!(
        header(&response, "cache-status"),
        "ayra-cache; fwd=miss; detail=analytics_pending"
    );
    assert_eq!(twice(&app, "/v1/conversations/conv_an").await, misses());
    let without = "/v1/conversations/conv_an?include_analytics=false";
    let (first, second) = twice(&app, without).await;
    assert_eq!((first.as_str(), second.as_str()), ("MISS", "HIT"));
    assert_eq!(standin.requests_for("conv_an").await, 4);
}

#[tokio::test]
async fn no_store_answers_are_not_stored() {
    let (standin, app) = spawn_pair(&[]).await;
    standin
        .set("conv_ns", json!({"cache_control": "private, no-store"}))
        .await;
    assert_eq!(twice(&app, "/v1/conversations/conv_ns").await, misses());
    let response = app.get("/v1/conversations/conv_ns", Some(TOKEN)).await;
    assert_eq!(
        header(&response, "cache-status"),
        "ayra-cache; fwd=miss; detail=no_store"
    );
}

#[tokio::test]
async fn a_recording_url_without_a_readable_expiry_is_not_stored() {
    let (standin, app) = spawn_pair(&[]).await;
    standin
        .set("conv_exp", json!({"expires_at": "next tuesday"}))
        .await;
    let response = app.get("/v1/conversations/conv_exp", Some(TOKEN)).await;
    assert_eq!(
        header(&response, "cache-status"),
        "ayra-cache; fwd=miss; detail=missing_expiry"
    );
    assert_eq!(twice(&app, "/v1/conversations/conv_exp").await, misses());
    // Without a recording there is no URL to die: stored for max_ttl.
    standin.set("conv_norec", json!({"recording": false})).await;
    let (first, second) = twice(&app, "/v1/conversations/conv_norec").await;
    assert_eq!((first.as_str(), second.as_str()), ("MISS", "HIT"));
}

#[tokio::test]
async fn error_statuses_and_unreadable_bodies_pass_through_unstored() {
    let (standin, app) = spawn_pair(&[]).await;
    standin.set("conv_404", json!({"exists": false})).await;
    standin.set("conv_500", json!({"fail_status": 500})).await;
    standin
        .set("conv_bad", json!({"fault": "malformed_body"}))
        .await;
    for (id, status, detail) in [
        ("conv_404", 404, "fwd-status=404; detail=status"),
        ("conv_500", 500, "fwd-status=500; detail=status"),
        ("conv_bad", 200, "detail=unreadable_body"),
    ] {
        for _ in 0..2 {
            let response = app
                .get(&format!("/v1/conversations/{id}"), Some(TOKEN))
                .await;
            assert_eq!(response.status(), status);
            assert_eq!(header(&response, "x-cache"), "MISS");
            assert_eq!(
                header(&response, "cache-status"),
                format!("ayra-cache; fwd=miss; {detail}")
            );
        }
        assert_eq!(standin.requests_for(id).await, 2, "{id}");
    }
    let not_found: Value = app
        .get("/v1/conversations/conv_404", Some(TOKEN))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(not_found["error"]["code"], "conversation_not_found");
}

#[tokio::test]
async fn a_429_reaches_the_client_with_retry_after_and_is_not_stored() {
    let (standin, app) = spawn_pair(&[]).await;
    standin.set("conv_429", json!({"fail_status": 429})).await;
    for _ in 0..2 {
        let response = app.get("/v1/conversations/conv_429", Some(TOKEN)).await;
        assert_eq!(response.status(), 429);
        assert_eq!(header(&response, "retry-after"), "7");
    }
    assert_eq!(standin.requests_for("conv_429").await, 2);
}

#[tokio::test]
async fn an_entry_dies_before_its_recording_url() {
    let (standin, app) = spawn_pair(&[("cache.expiry_margin", "\"500ms\"")]).await;
    // The URL lives 2.5 s: the entry at most 2.5 - 0.5 - 1 (Date's resolution) = 1 s.
    standin
        .set("conv_url", json!({"recording_ttl_ms": 2500}))
        .await;
    let path = "/v1/conversations/conv_url";
    let (first, second) = twice(&app, path).await;
    assert_eq!((first.as_str(), second.as_str()), ("MISS", "HIT"));
    tokio::time::sleep(Duration::from_millis(2000)).await;
    assert_eq!(header(&app.get(path, Some(TOKEN)).await, "x-cache"), "MISS");
    assert_eq!(standin.requests_for("conv_url").await, 2);
}

#[tokio::test]
async fn a_url_inside_the_margin_is_never_stored() {
    let (standin, app) = spawn_pair(&[]).await;
    standin
        .set("conv_soon", json!({"recording_ttl_ms": 30_000}))
        .await;
    let response = app.get("/v1/conversations/conv_soon", Some(TOKEN)).await;
    assert_eq!(
        header(&response, "cache-status"),
        "ayra-cache; fwd=miss; detail=lifetime_too_short"
    );
    assert_eq!(twice(&app, "/v1/conversations/conv_soon").await, misses());
}

#[tokio::test]
async fn max_ttl_bounds_every_entry() {
    let (standin, app) = spawn_pair(&[("cache.max_ttl", "\"700ms\"")]).await;
    standin.set("conv_ttl", json!({"recording": false})).await;
    let path = "/v1/conversations/conv_ttl";
    let (first, second) = twice(&app, path).await;
    assert_eq!((first.as_str(), second.as_str()), ("MISS", "HIT"));
    tokio::time::sleep(Duration::from_millis(900)).await;
    assert_eq!(header(&app.get(path, Some(TOKEN)).await, "x-cache"), "MISS");
    assert_eq!(standin.requests_for("conv_ttl").await, 2);
}

/// The `ttl=` of a HIT's `cache-status`.
fn ttl_of(response: &reqwest::Response) -> u64 {
    let status = header(response, "cache-status");
    let ttl = status.split("ttl=").nth(1).expect("a ttl");
    ttl.parse().unwrap()
}

#[tokio::test]
async fn the_upstream_clock_decides_the_url_lifetime() {
    // The stand-in's clock runs an hour behind: by our clock its URLs, valid
    // 30 minutes by its own, died half an hour ago. They are still good.
    let behind = StandIn::spawn().await;
    behind.set_skew_ms(-3_600_000).await;
    behind
        .set("conv_skew", json!({"recording_ttl_ms": 1_800_000}))
        .await;
    let app = spawn_app(&behind, &[]).await;
    let (first, second) = twice(&app, "/v1/conversations/conv_skew").await;
    assert_eq!((first.as_str(), second.as_str()), ("MISS", "HIT"));
    let hit = app.get("/v1/conversations/conv_skew", Some(TOKEN)).await;
    let ttl = ttl_of(&hit);
    assert!((1700..=1739).contains(&ttl), "ttl {ttl}");

    // Forty minutes ahead, a 10-minute URL: by our clock it seems to live 50
    // minutes, but only 10 are real.
    let ahead = StandIn::spawn().await;
    ahead.set_skew_ms(2_400_000).await;
    ahead
        .set("conv_skew", json!({"recording_ttl_ms": 600_000}))
        .await;
    let app = spawn_app(&ahead, &[]).await;
    app.get("/v1/conversations/conv_skew", Some(TOKEN)).await;
    let hit = app.get("/v1/conversations/conv_skew", Some(TOKEN)).await;
    assert_eq!(header(&hit, "x-cache"), "HIT");
    let ttl = ttl_of(&hit);
    assert!((530..=539).contains(&ttl), "ttl {ttl}");
}

#[tokio::test]
async fn without_a_date_the_receive_time_is_the_signing_clock() {
    let (standin, app) = spawn_pair(&[]).await;
    standin
        .set(
            "conv_nodate",
            json!({"omit_date": true, "recording_ttl_ms": 600_000}),
        )
        .await;
    app.get("/v1/conversations/conv_nodate", Some(TOKEN)).await;
    let hit = app.get("/v1/conversations/conv_nodate", Some(TOKEN)).await;
    assert_eq!(header(&hit, "x-cache"), "HIT");
    let ttl = ttl_of(&hit);
    assert!((535..=540).contains(&ttl), "ttl {ttl}");
}

#[tokio::test]
async fn no_store_is_read_in_any_case_and_private_is_not_stored() {
    let (standin, app) = spawn_pair(&[]).await;
    for (i, value) in ["NO-STORE", "no-store, max-age=abc", "private"]
        .iter()
        .enumerate()
    {
        let id = format!("conv_ns{i}");
        standin.set(&id, json!({"cache_control": value})).await;
        let path = format!("/v1/conversations/{id}");
        let response = app.get(&path, Some(TOKEN)).await;
        assert_eq!(
            header(&response, "cache-status"),
            "ayra-cache; fwd=miss; detail=no_store",
            "{value}"
        );
        assert_eq!(twice(&app, &path).await, misses());
    }
}

#[tokio::test]
async fn an_absurd_upstream_age_never_breaks_a_hit() {
    let (standin, app) = spawn_pair(&[]).await;
    standin.set("conv_old", json!({"age": u64::MAX})).await;
    app.get("/v1/conversations/conv_old", Some(TOKEN)).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let hit = app.get("/v1/conversations/conv_old", Some(TOKEN)).await;
    assert_eq!(hit.status(), 200);
    assert_eq!(header(&hit, "x-cache"), "HIT");
    let age: u64 = header(&hit, "age").parse().unwrap();
    assert!(age >= 1 << 31);
}
