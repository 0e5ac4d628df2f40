//! The upstream budget end to end: calls paced within `rate` and `burst`, clients taking turns (SPEC section 12).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::app::{spawn_app, ConfigFile};
use crate::binary::{json_events, launch};
use crate::cached_route::{header, TOKEN};
use crate::standin::StandIn;

/// How much earlier than its budget allows a call may be seen: a timer
/// fires on whole milliseconds, and the start is read before any request
/// is sent (loopback latency only ever makes a call look later).
pub const TIMER_GRANULARITY_MS: f64 = 2.0;

/// Asserts that by every instant `t` (ms after `start_ms`, on the
/// stand-in's clock) the upstream saw at most `burst + rate * t` calls.
pub fn assert_within_budget(times: &[f64], start_ms: f64, rate: f64, burst: u32) {
    let mut times = times.to_vec();
    times.sort_by(f64::total_cmp);
    for (k, at_ms) in times.iter().enumerate() {
        let t = (at_ms - start_ms + TIMER_GRANULARITY_MS) / 1000.0;
        let allowed = f64::from(burst) + rate * t;
        assert!(
            (k + 1) as f64 <= allowed + 1e-9,
            "{} calls by {:.1} ms, the budget allows {allowed:.2}",
            k + 1,
            at_ms - start_ms
        );
    }
}

/// What the proxy answered one request.
pub struct Answer {
    pub status: u16,
    pub cache: String,
    pub cache_status: String,
    pub retry_after: Option<u64>,
    pub body: Value,
}

/// A budget refusal: 429, `retry-after` of at least a second, the API's error shape.
pub fn assert_refused_call(answer: &Answer) {
    assert_eq!(answer.status, 429);
    assert!(answer.retry_after.is_some_and(|seconds| seconds >= 1));
    assert_eq!(answer.body["error"]["type"], "rate_limit_error");
    assert_eq!(answer.body["error"]["code"], "upstream_budget_exhausted");
    assert!(answer.body["error"]["message"].is_string());
}

pub async fn answer(response: reqwest::Response) -> Answer {
    let status = response.status().as_u16();
    let cache = header(&response, "x-cache");
    let cache_status = header(&response, "cache-status");
    let retry_after = response
        .headers()
        .get("retry-after")
        .map(|value| value.to_str().unwrap().parse().expect("whole seconds"));
    let body = response.json().await.unwrap_or(Value::Null);
    Answer {
        status,
        cache,
        cache_status,
        retry_after,
        body,
    }
}

/// A budget refusal on the cached route: [`assert_refused_call`], and `cache-status` says why.
pub fn assert_refused(answer: &Answer) {
    assert_refused_call(answer);
    assert!(
        answer.cache_status.contains("detail=budget"),
        "{}",
        answer.cache_status
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_hundred_cold_misses_at_once_are_paced_within_rate_and_burst() {
    let standin = StandIn::spawn().await;
    let budget = [
        ("upstream.budget.rate", "20"),
        ("upstream.budget.burst", "5"),
        ("upstream.budget.max_wait", "\"1s\""),
    ];
    let app = spawn_app(&standin, &budget).await;
    let start_ms = standin.calls().await.now_ms;
    let requests = (0..200).map(|i| {
        let path = format!("/v1/conversations/paced_{i}");
        let app = &app;
        async move { answer(app.get(&path, Some(TOKEN)).await).await }
    });
    let answers = futures::future::join_all(requests).await;
    let mut answered = 0;
    for answer in &answers {
        match answer.status {
            200 => answered += 1,
            _ => assert_refused(answer),
        }
        assert_eq!(answer.cache, "MISS");
    }
    let times = standin.calls().await.times_of(TOKEN);
    println!(
        "pacing: {answered} answered, {} refused, upstream calls at ms {:?}",
        200 - answered,
        times
            .iter()
            .map(|t| (t - start_ms).round())
            .collect::<Vec<_>>()
    );
    assert_within_budget(&times, start_ms, 20.0, 5);
    assert_eq!(times.len(), answered, "every call answered one request");
    assert!((5..200).contains(&answered), "some went, some were refused");
}

fn digests(tokens: &[&str]) -> String {
    let hex: Vec<_> = tokens
        .iter()
        .map(|token| format!("\"{}\"", hex::encode(Sha256::digest(token.as_bytes()))))
        .collect();
    format!("[{}]", hex.join(", "))
}

/// The `budget_wait_ms` the access event of `path` logged (0 when it did not wait).
fn budget_wait_ms(events: &[Value], path: &str) -> f64 {
    let event = events
        .iter()
        .find(|event| event["target"] == "ayra_cache::access" && event["path"] == path)
        .unwrap_or_else(|| panic!("no access event for {path}"));
    assert_eq!(event["status"], 200, "{event}");
    event["budget_wait_ms"].as_f64().unwrap_or(0.0)
}

const RATE: f64 = 100.0;
const BURST: u32 = 5;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_client_with_one_miss_waits_one_turn_behind_a_backfill() {
    let standin = StandIn::spawn().await;
    let mut config = ConfigFile::for_upstream(&standin.base_url());
    config
        .set("upstream.api_key", "\"sk_shared_key\"")
        .set(
            "auth.client_tokens_sha256",
            &digests(&["backfill", "dashboard"]),
        )
        .set("upstream.budget.rate", &RATE.to_string())
        .set("upstream.budget.burst", &BURST.to_string())
        .set("upstream.budget.max_wait", "\"5s\"")
        .set("log.level", "\"info\"")
        .set("log.format", "\"json\"");
    let mut running = launch(config, &[]).await;
    let base = format!("http://{}", running.addr);
    let start_ms = standin.calls().await.now_ms;
    let answered = Arc::new(AtomicUsize::new(0));
    let started = Arc::new(tokio::sync::Notify::new());
    let client = reqwest::Client::new();
    let backfill: Vec<_> = (0..16)
        .map(|connection| {
            let (client, base) = (client.clone(), base.clone());
            let (answered, started) = (Arc::clone(&answered), Arc::clone(&started));
            tokio::spawn(async move {
                for i in (connection..300).step_by(16) {
                    let url = format!("{base}/v1/conversations/backfill_{i}");
                    let response = client.get(url).bearer_auth("backfill").send().await;
                    assert_eq!(response.unwrap().status(), 200);
                    if answered.fetch_add(1, Ordering::SeqCst) + 1 == 16 {
                        started.notify_one();
                    }
                }
            })
        })
        .collect();
    started.notified().await;
    let dashboard = reqwest::Client::new();
    for i in 0..10 {
        let url = format!("{base}/v1/conversations/dashboard_{i}");
        let response = dashboard.get(url).bearer_auth("dashboard").send().await;
        assert_eq!(response.unwrap().status(), 200);
    }
    let backfill_left = 300 - answered.load(Ordering::SeqCst);
    for task in backfill {
        task.await.unwrap();
    }
    let events = json_events(&running.stop());
    let waits: Vec<f64> = (0..10)
        .map(|i| budget_wait_ms(&events, &format!("/v1/conversations/dashboard_{i}")))
        .collect();
    let mut backfill_waits: Vec<f64> = (0..300)
        .map(|i| budget_wait_ms(&events, &format!("/v1/conversations/backfill_{i}")))
        .collect();
    backfill_waits.sort_by(f64::total_cmp);
    println!(
        "turns: dashboard waits (ms) {waits:?}; backfill wait p50 {:.1} ms, max {:.1} ms; \
         {backfill_left} backfill misses still to go when the dashboard was done",
        backfill_waits[150], backfill_waits[299]
    );
    // One token interval, plus one turn of the backfill ahead of it, plus
    // scheduling slack on a loaded machine.
    let interval_ms = 1000.0 / RATE;
    let bound = 2.0 * interval_ms + 30.0;
    for wait in &waits {
        assert!(
            *wait <= bound,
            "a dashboard miss waited {wait} ms, over {bound}"
        );
    }
    assert!(
        backfill_left > 0,
        "the backfill was still queued throughout"
    );
    let times = standin.calls().await.times_of("sk_shared_key");
    assert_eq!(times.len(), 310);
    assert_within_budget(&times, start_ms, RATE, BURST);
}

/// Waits (polling the proxy) until `deadline`; for lifetimes, which no event marks.
pub async fn until(deadline: Instant) {
    tokio::time::sleep_until(deadline.into()).await;
}

pub fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

#[tokio::test]
async fn a_refresh_without_a_spare_token_is_skipped_and_never_waits() {
    use crate::admin::{admin_app, metrics, series};
    let standin = StandIn::spawn().await;
    let app = admin_app(
        &standin,
        &[
            ("upstream.budget.rate", "0.5"),
            ("upstream.budget.burst", "1"),
            ("upstream.budget.max_wait", "\"5s\""),
            ("cache.max_ttl", "\"400ms\""),
            ("cache.refresh_ahead", "0.9"),
        ],
    )
    .await;
    let path = "/v1/conversations/refreshed";
    let stored = Instant::now();
    assert_eq!(answer(app.get(path, Some(TOKEN)).await).await.cache, "MISS");
    until(stored + ms(60)).await;
    let hit = answer(app.get(path, Some(TOKEN)).await).await;
    assert_eq!(hit.cache, "HIT");
    let skipped = "ayra_cache_refreshes_total{result=\"skipped\"}";
    let deadline = Instant::now() + ms(1000);
    while series(&metrics(&app).await, skipped) < 1.0 {
        assert!(
            Instant::now() < deadline,
            "the refresh was not skipped at once"
        );
        tokio::time::sleep(ms(10)).await;
    }
    assert_eq!(
        standin.calls().await.times_of(TOKEN).len(),
        1,
        "the refresh never called"
    );
}

#[tokio::test]
async fn a_pass_through_call_takes_its_turn_and_is_refused_past_max_wait() {
    let standin = StandIn::spawn().await;
    let budget = [
        ("upstream.budget.rate", "0.2"),
        ("upstream.budget.burst", "1"),
        ("upstream.budget.max_wait", "\"0s\""),
    ];
    let app = spawn_app(&standin, &budget).await;
    let forwarded = answer(app.get("/v1/agents", Some(TOKEN)).await).await;
    assert_eq!(forwarded.status, 200);
    let refused = answer(app.get("/v1/agents", Some(TOKEN)).await).await;
    assert_refused_call(&refused);
    assert!(refused.retry_after.is_some_and(|seconds| seconds <= 5));
    assert_eq!(standin.calls().await.times_of(TOKEN).len(), 1);
}
