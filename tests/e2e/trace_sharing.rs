//! SPEC section 13 where requests share work: HITs, the cache key, refreshes and coalesced fetches.

use std::time::Duration;

use serde_json::json;

use crate::app::{spawn_app, spawn_pair};
use crate::cached_route::header;
use crate::redis::RedisServer;
use crate::shared::stored_value;
use crate::standin::{SeenRequest, StandIn};
use crate::trace_context::{fresh_id, get_with, is_generated, last_seen, W3cTraceParent};

#[tokio::test]
async fn a_hit_carries_its_own_ids_never_the_stored_ones() {
    let (standin, app) = spawn_pair(&[]).await;
    let id = fresh_id();
    // An API that answers with ids of its own: none of them is stored.
    let echoed = W3cTraceParent::random("01").text();
    let extra = [["x-request-id", "upstream-echo"], ["traceparent", &echoed]];
    standin.set(&id, json!({ "extra_headers": extra })).await;
    let path = format!("/v1/conversations/{id}");
    let first = W3cTraceParent::random("01").text();
    let miss = get_with(
        &app,
        &path,
        &[("x-request-id", "first"), ("traceparent", &first)],
    )
    .await;
    assert_eq!(header(&miss, "x-cache"), "MISS");
    assert_eq!(header(&miss, "x-request-id"), "first");
    let second = W3cTraceParent::random("01").text();
    let hit = get_with(
        &app,
        &path,
        &[("x-request-id", "second"), ("traceparent", &second)],
    )
    .await;
    assert_eq!(header(&hit, "x-cache"), "HIT");
    assert_eq!(header(&hit, "x-request-id"), "second");
    let anonymous = get_with(&app, &path, &[]).await;
    assert_eq!(header(&anonymous, "x-cache"), "HIT");
    assert!(is_generated(&header(&anonymous, "x-request-id")));
    for response in [&hit, &anonymous] {
        for name in ["traceparent", "tracestate"] {
            assert_eq!(header(response, name), "", "a HIT repeats no {name}");
        }
    }
    assert_eq!(
        standin.requests_for(&id).await,
        1,
        "HITs call nothing upstream"
    );
}

#[tokio::test]
async fn the_ids_never_reach_the_shared_tiers_value() {
    let redis = RedisServer::start().await;
    let standin = StandIn::spawn().await;
    let id = fresh_id();
    let echoed = W3cTraceParent::random("01");
    let extra = [
        ["x-request-id", "upstream-echo"],
        ["traceparent", &echoed.text()],
    ];
    standin.set(&id, json!({ "extra_headers": extra })).await;
    let redis_url = format!("{:?}", redis.url());
    let keys = [
        ("shared.redis_url", redis_url.as_str()),
        ("cache.compression", "[]"),
    ];
    let app = spawn_app(&standin, &keys).await;
    let client = W3cTraceParent::random("01");
    let sent = [
        ("x-request-id", "reader-4f1c"),
        ("traceparent", &client.text()),
        ("tracestate", "vendor=st4te"),
    ];
    let path = format!("/v1/conversations/{id}");
    assert_eq!(
        header(&get_with(&app, &path, &sent).await, "x-cache"),
        "MISS"
    );
    let (_, raw) = stored_value(&redis, &id).await;
    let text = String::from_utf8_lossy(&raw);
    assert!(
        text.contains(&id),
        "the value is readable: the check can see"
    );
    for needle in ["reader-4f1c", "vendor=st4te", "upstream-echo"] {
        assert!(!text.contains(needle), "{needle} stored");
    }
    for trace in [&client, &echoed] {
        for hex in [&trace.trace_id, &trace.parent_id] {
            assert!(!text.contains(hex.as_str()), "{hex} stored");
            let bytes = hex::decode(hex).unwrap();
            assert!(
                !raw.windows(bytes.len()).any(|w| w == bytes),
                "{hex} stored as bytes"
            );
        }
    }
}

#[tokio::test]
async fn the_ids_never_change_the_cache_key() {
    let (standin, app) = spawn_pair(&[]).await;
    let id = fresh_id();
    let path = format!("/v1/conversations/{id}");
    let mut results = Vec::new();
    for n in 0..4 {
        let request_id = format!("reader-{n}");
        let trace = W3cTraceParent::random(if n % 2 == 0 { "01" } else { "00" }).text();
        let state = format!("k{n}=v{n}");
        let sent = [
            ("x-request-id", request_id.as_str()),
            ("traceparent", trace.as_str()),
            ("tracestate", state.as_str()),
        ];
        results.push(header(&get_with(&app, &path, &sent).await, "x-cache"));
    }
    assert_eq!(results, ["MISS", "HIT", "HIT", "HIT"]);
    assert_eq!(standin.requests_for(&id).await, 1, "one entry for all");
}

#[tokio::test]
async fn a_refresh_carries_the_ids_of_the_request_that_triggered_it() {
    let standin = StandIn::spawn().await;
    let id = fresh_id();
    standin.set(&id, json!({"recording": false})).await;
    let keys = [("cache.max_ttl", "\"1s\""), ("cache.refresh_ahead", "0.5")];
    let app = spawn_app(&standin, &keys).await;
    let path = format!("/v1/conversations/{id}");
    let first = W3cTraceParent::random("01").text();
    get_with(
        &app,
        &path,
        &[("x-request-id", "filler"), ("traceparent", &first)],
    )
    .await;
    // The refresh window is the entry's last half second of fresh life.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let trigger = W3cTraceParent::random("01");
    let sent = [
        ("x-request-id", "trigger"),
        ("traceparent", &trigger.text()),
    ];
    let hit = get_with(&app, &path, &sent).await;
    assert_eq!(header(&hit, "x-cache"), "HIT");
    let seen = wait_for_calls(&standin, &id, 2).await;
    assert_eq!(seen.request_id.as_deref(), Some("trigger"));
    let refresh = W3cTraceParent::read(seen.traceparent.as_deref().unwrap()).unwrap();
    assert_eq!(refresh.trace_id, trigger.trace_id);
    assert_ne!(refresh.parent_id, trigger.parent_id);
}

/// Waits until the stand-in has answered `calls` reads of `id`; the last one.
pub async fn wait_for_calls(standin: &StandIn, id: &str, calls: u64) -> SeenRequest {
    for _ in 0..200 {
        if standin.requests_for(id).await >= calls {
            return last_seen(standin).await;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the stand-in never saw {calls} reads of {id}");
}

#[tokio::test]
async fn a_coalesced_fetch_carries_the_ids_of_the_request_that_started_it() {
    let (standin, app) = spawn_pair(&[]).await;
    let id = fresh_id();
    standin.set(&id, json!({"delay_ms": 400})).await;
    let path = format!("/v1/conversations/{id}");
    let leader = W3cTraceParent::random("01");
    let leader_trace = leader.text();
    let leader_headers = [
        ("x-request-id", "leader"),
        ("traceparent", leader_trace.as_str()),
    ];
    let leading = get_with(&app, &path, &leader_headers);
    let (app, path) = (&app, path.as_str());
    let joining = async {
        wait_for_calls(&standin, &id, 1).await;
        let joiners = (0..5).map(|n| async move {
            let request_id = format!("joiner-{n}");
            let trace = W3cTraceParent::random("00").text();
            let sent = [
                ("x-request-id", request_id.as_str()),
                ("traceparent", &trace),
            ];
            let response = get_with(app, path, &sent).await;
            (request_id, response)
        });
        futures::future::join_all(joiners).await
    };
    let (leading, joined) = tokio::join!(leading, joining);
    assert_eq!(header(&leading, "x-request-id"), "leader");
    for (request_id, response) in &joined {
        assert!(header(response, "cache-status").contains("collapsed"));
        assert_eq!(&header(response, "x-request-id"), request_id, "its own id");
    }
    assert_eq!(standin.requests_for(&id).await, 1, "one upstream call");
    let seen = last_seen(&standin).await;
    assert_eq!(seen.request_id.as_deref(), Some("leader"));
    let sent = W3cTraceParent::read(seen.traceparent.as_deref().unwrap()).unwrap();
    assert_eq!(sent.trace_id, leader.trace_id);
}
