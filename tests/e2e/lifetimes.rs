//! SPEC section 8: stale-if-error, refresh-ahead and micro-caching, against the stand-in.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::app::{spawn_app, TestApp};
use crate::cached_route::{header, TOKEN};
use crate::standin::StandIn;

/// What a read returned: status, `x-cache`, `cache-status`, and the stand-in serial if any.
struct Read {
    status: u16,
    cache: String,
    cache_status: String,
    age: Option<u64>,
    serial: Option<u64>,
}

async fn read(app: &TestApp, path: &str, token: &str) -> Read {
    let response = app.get(path, Some(token)).await;
    let status = response.status().as_u16();
    let cache = header(&response, "x-cache");
    let cache_status = header(&response, "cache-status");
    let age = header(&response, "age").parse().ok();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    let serial = body["data"]["integrations"]["standin_serial"].as_u64();
    Read {
        status,
        cache,
        cache_status,
        age,
        serial,
    }
}

fn sleep(ms: u64) -> tokio::time::Sleep {
    tokio::time::sleep(Duration::from_millis(ms))
}

/// A stand-in whose `conv_s` has no recording (no URL deadline), and a proxy
/// whose entries are fresh for `fresh` and usable for an hour more.
async fn stale_pair(fresh: &str, extra: &[(&str, &str)]) -> (StandIn, TestApp) {
    let standin = StandIn::spawn().await;
    standin.set("conv_s", json!({"recording": false})).await;
    let fresh = format!("\"{fresh}\"");
    let mut keys = vec![
        ("cache.max_ttl", fresh.as_str()),
        ("cache.stale_if_error", "\"1h\""),
        ("cache.refresh_ahead", "0"),
        ("upstream.timeout", "\"300ms\""),
    ];
    keys.extend_from_slice(extra);
    let app = spawn_app(&standin, &keys).await;
    (standin, app)
}

#[tokio::test]
async fn a_failing_upstream_gets_the_stale_entry_instead() {
    let (standin, app) = stale_pair("300ms", &[]).await;
    let path = "/v1/conversations/conv_s";
    let first = read(&app, path, TOKEN).await;
    assert_eq!(first.cache, "MISS");
    sleep(400).await;
    let failures = [
        (
            json!({"fail_status": 503}),
            "ayra-cache; fwd=stale; fwd-status=503; detail=stale-if-error",
        ),
        (
            json!({"fail_status": 429}),
            "ayra-cache; fwd=stale; fwd-status=429; detail=stale-if-error",
        ),
        (
            json!({"fault": "close_without_response"}),
            "ayra-cache; fwd=stale; detail=stale-if-error",
        ),
        (
            json!({"delay_ms": 1000}),
            "ayra-cache; fwd=stale; detail=stale-if-error",
        ),
    ];
    for (outage, expected) in failures {
        standin.start_outage(outage.clone()).await;
        let stale = read(&app, path, TOKEN).await;
        assert_eq!(stale.status, 200, "{outage}");
        assert_eq!(stale.cache, "STALE", "{outage}");
        assert_eq!(stale.cache_status, expected);
        assert_eq!(stale.serial, first.serial, "the stored body");
        assert!(stale.age.is_some());
    }
    // Each stale read went upstream; the connection closed without an answer
    // was tried twice (a read is retried once on a fresh connection).
    assert_eq!(
        standin.requests_for("conv_s").await,
        6,
        "each stale read went upstream"
    );
    standin.end_outage().await;
    let fresh = read(&app, path, TOKEN).await;
    assert_eq!(fresh.cache, "MISS");
    assert_eq!(fresh.cache_status, "ayra-cache; fwd=stale; stored");
    assert_ne!(
        fresh.serial, first.serial,
        "a storable answer replaced the entry"
    );
    let hit = read(&app, path, TOKEN).await;
    assert_eq!(hit.cache, "HIT");
    assert_eq!(hit.serial, fresh.serial);
}

#[tokio::test]
async fn readers_of_a_stale_entry_share_one_revalidation() {
    let (standin, app) = stale_pair("200ms", &[]).await;
    let path = "/v1/conversations/conv_s";
    read(&app, path, TOKEN).await;
    sleep(300).await;
    standin
        .start_outage(json!({"fail_status": 500, "delay_ms": 150}))
        .await;
    let reads = (0..20).map(|_| read(&app, path, TOKEN));
    let reads = futures::future::join_all(reads).await;
    assert!(reads.iter().all(|r| r.cache == "STALE" && r.status == 200));
    assert_eq!(standin.requests_for("conv_s").await, 2);
}

#[tokio::test]
async fn nothing_is_served_at_or_past_the_url_deadline() {
    // The URL lives 4.5 s, its expires_at and the Date in whole seconds:
    // less the 2 s margin and the Date's second, the entry's hard deadline
    // comes 1 or 2 s after receipt (a proxy that ignored the margin would
    // keep it 3 or 4 s). The exact instant is tested with the clock passed
    // in (`cache::policy` tests); here: still served before the earliest it
    // can be, dead after the latest.
    let standin = StandIn::spawn().await;
    standin
        .set("conv_d", json!({"recording_ttl_ms": 4500}))
        .await;
    let app = spawn_app(
        &standin,
        &[
            ("cache.max_ttl", "\"300ms\""),
            ("cache.expiry_margin", "\"2s\""),
            ("cache.stale_if_error", "\"1h\""),
            ("cache.refresh_ahead", "0"),
        ],
    )
    .await;
    let path = "/v1/conversations/conv_d";
    let sent = Instant::now();
    assert_eq!(read(&app, path, TOKEN).await.cache, "MISS");
    let received = Instant::now();
    standin.start_outage(json!({"fail_status": 503})).await;
    tokio::time::sleep_until((sent + Duration::from_millis(500)).into()).await;
    assert_eq!(read(&app, path, TOKEN).await.cache, "STALE");
    tokio::time::sleep_until((received + Duration::from_millis(2100)).into()).await;
    let past = read(&app, path, TOKEN).await;
    assert_eq!(past.status, 503, "the dead entry is not served");
    assert_eq!(past.cache, "MISS");
    assert_eq!(
        past.cache_status,
        "ayra-cache; fwd=miss; fwd-status=503; detail=status"
    );
}

/// The admin listener's `/metrics` text.
async fn metrics_text(app: &TestApp) -> String {
    let url = app.admin_url("/metrics");
    let response = app.client.get(url).send().await.unwrap();
    response.text().await.unwrap()
}

async fn admin_stats_entries(app: &TestApp) -> u64 {
    let text = metrics_text(app).await;
    text.lines()
        .find_map(|line| line.strip_prefix("ayra_cache_entries "))
        .map(|n| n.trim().parse().unwrap())
        .unwrap()
}

#[tokio::test]
async fn a_404_drops_the_credentials_entries_and_a_403_drops_the_entry() {
    let (standin, app) = stale_pair("200ms", &[("server.admin_listen", "\"127.0.0.1:0\"")]).await;
    let plain = "/v1/conversations/conv_s";
    let variant = "/v1/conversations/conv_s?include_transcript=false";
    for (path, token) in [
        (plain, "key_a"),
        (variant, "key_a"),
        (plain, "key_b"),
        (variant, "key_b"),
    ] {
        assert_eq!(read(&app, path, token).await.cache, "MISS");
    }
    assert_eq!(admin_stats_entries(&app).await, 4);
    sleep(300).await;

    standin
        .set(
            "conv_s",
            json!({"recording": false, "forbidden_tokens": ["key_b"]}),
        )
        .await;
    let refused = read(&app, plain, "key_b").await;
    assert_eq!(refused.status, 403);
    assert_eq!(
        refused.cache_status,
        "ayra-cache; fwd=stale; fwd-status=403; detail=status"
    );
    assert_eq!(
        admin_stats_entries(&app).await,
        3,
        "only key_b's plain entry went"
    );

    standin.set("conv_s", json!({"exists": false})).await;
    let gone = read(&app, plain, "key_a").await;
    assert_eq!(gone.status, 404);
    assert_eq!(
        admin_stats_entries(&app).await,
        1,
        "both of key_a's entries went"
    );
    // key_b's variant is still held: in an outage it still stands in.
    standin.start_outage(json!({"fail_status": 502})).await;
    assert_eq!(read(&app, variant, "key_b").await.cache, "STALE");
}

#[tokio::test]
async fn a_steady_reader_never_sees_a_second_miss() {
    let standin = StandIn::spawn().await;
    standin.set("conv_r", json!({"recording": false})).await;
    let app = spawn_app(
        &standin,
        &[("cache.max_ttl", "\"1s\""), ("cache.refresh_ahead", "0.5")],
    )
    .await;
    let path = "/v1/conversations/conv_r";
    let mut misses = 0;
    let mut serials = Vec::new();
    // 70 reads over at least 3.5 s: more than three lifetimes of 1 s. A
    // refresh starts in the last half of each and has 500 ms to land.
    let started = Instant::now();
    for _ in 0..70 {
        let r = read(&app, path, TOKEN).await;
        assert_eq!(r.status, 200);
        misses += usize::from(r.cache != "HIT");
        serials.push(r.serial.unwrap());
        sleep(50).await;
    }
    // A refresh the last reads started may still be landing: read on until
    // it is served (the next starts only half a lifetime after it landed).
    let deadline = Instant::now() + Duration::from_secs(2);
    let calls = loop {
        let calls = standin.requests_for("conv_r").await;
        let mut served = serials.clone();
        served.dedup();
        if served.len() as u64 == calls {
            break calls;
        }
        assert!(
            Instant::now() < deadline,
            "{calls} calls, served {served:?}"
        );
        let r = read(&app, path, TOKEN).await;
        misses += usize::from(r.cache != "HIT");
        serials.push(r.serial.unwrap());
        sleep(50).await;
    };
    assert_eq!(misses, 1, "only the first read missed");
    // A refresh starts no sooner than half a lifetime (500 ms) after the
    // answer it replaces was received: one call, then one per 500 ms at most.
    let most = 1 + started.elapsed().as_millis() as u64 / 500;
    assert!(
        (4..=most).contains(&calls),
        "{calls} upstream calls in {:?}",
        started.elapsed()
    );
    // The refresh carried the credential of the request that found the entry.
    let seen = standin.stats().await.requests;
    assert!(seen
        .iter()
        .all(|r| r.header("authorization") == Some("Bearer sk_test_alpha")));
}

/// Upstream exchanges the proxy has finished, whatever their outcome.
async fn upstream_exchanges_done(app: &TestApp) -> u64 {
    let text = metrics_text(app).await;
    text.lines()
        .filter(|line| line.starts_with("ayra_cache_upstream_request_duration_seconds_count"))
        .map(|line| line.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .sum()
}

#[tokio::test]
async fn one_refresh_per_key_and_a_failed_refresh_leaves_the_entry() {
    let standin = StandIn::spawn().await;
    standin.set("conv_r", json!({"recording": false})).await;
    let app = spawn_app(
        &standin,
        &[
            ("cache.max_ttl", "\"3s\""),
            ("cache.refresh_ahead", "0.5"),
            ("server.admin_listen", "\"127.0.0.1:0\""),
        ],
    )
    .await;
    let path = "/v1/conversations/conv_r";
    let first = read(&app, path, TOKEN).await;
    // Into the last half of the fresh life, where a HIT starts a refresh.
    sleep(1600).await;
    standin
        .start_outage(json!({"fail_status": 500, "delay_ms": 200}))
        .await;
    let burst = futures::future::join_all((0..20).map(|_| read(&app, path, TOKEN))).await;
    assert!(burst
        .iter()
        .all(|r| r.cache == "HIT" && r.serial == first.serial));
    // Every refresh the burst could start was started by now; once the one
    // that went (200 ms at the upstream) has ended, none other came.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while upstream_exchanges_done(&app).await < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "the refresh never ended"
        );
        sleep(10).await;
    }
    assert_eq!(
        standin.requests_for("conv_r").await,
        2,
        "one refresh for 20 hits"
    );
    let after = read(&app, path, TOKEN).await;
    assert_eq!(after.cache, "HIT");
    assert_eq!(
        after.serial, first.serial,
        "the failed refresh left the entry"
    );
}

#[tokio::test]
async fn live_conversations_are_micro_cached_per_credential_and_never_stale() {
    let standin = StandIn::spawn().await;
    standin
        .set("conv_live", json!({"status": "in_progress"}))
        .await;
    let app = spawn_app(
        &standin,
        &[
            ("cache.in_progress_ttl", "\"500ms\""),
            ("cache.stale_if_error", "\"1h\""),
        ],
    )
    .await;
    let path = "/v1/conversations/conv_live";
    let first = read(&app, path, TOKEN).await;
    assert_eq!(first.cache_status, "ayra-cache; fwd=miss; stored");
    let hit = read(&app, path, TOKEN).await;
    assert_eq!(hit.cache, "HIT");
    assert_eq!(hit.serial, first.serial);
    assert_eq!(read(&app, path, "another_key").await.cache, "MISS");
    sleep(600).await;
    standin.start_outage(json!({"fail_status": 503})).await;
    let after = read(&app, path, TOKEN).await;
    assert_eq!(after.status, 503, "a micro-cached answer never stands in");
    assert_eq!(after.cache, "MISS");
    assert_eq!(standin.requests_for("conv_live").await, 3);
}

#[tokio::test]
async fn a_missing_conversation_is_remembered_per_credential() {
    let standin = StandIn::spawn().await;
    standin.set("conv_gone", json!({"exists": false})).await;
    let app = spawn_app(&standin, &[("cache.not_found_ttl", "\"500ms\"")]).await;
    let path = "/v1/conversations/conv_gone";
    let first = app.get(path, Some(TOKEN)).await;
    assert_eq!(first.status(), 404);
    assert_eq!(
        header(&first, "cache-status"),
        "ayra-cache; fwd=miss; fwd-status=404; stored"
    );
    let hit = app.get(path, Some(TOKEN)).await;
    assert_eq!(hit.status(), 404);
    assert_eq!(header(&hit, "x-cache"), "HIT");
    assert!(header(&hit, "age").parse::<u64>().is_ok());
    let body: Value = hit.json().await.unwrap();
    assert_eq!(body["error"]["code"], "conversation_not_found");
    assert_eq!(
        header(&app.get(path, Some("another_key")).await, "x-cache"),
        "MISS"
    );
    sleep(600).await;
    assert_eq!(header(&app.get(path, Some(TOKEN)).await, "x-cache"), "MISS");
    assert_eq!(standin.requests_for("conv_gone").await, 3);
}
