//! Coalescing: concurrent reads of one key share one upstream exchange, whatever it yields.

use std::time::Duration;

use serde_json::json;

use crate::app::{spawn_pair, TestApp};
use crate::cached_route::{header, TOKEN};

/// Fires `n` concurrent reads of `path`; returns (status, x-cache, cache-status) of each.
async fn burst(app: &TestApp, path: &str, n: usize) -> Vec<(u16, String, String)> {
    let requests = (0..n).map(|_| async {
        let response = app.get(path, Some(TOKEN)).await;
        (
            response.status().as_u16(),
            header(&response, "x-cache"),
            header(&response, "cache-status"),
        )
    });
    futures::future::join_all(requests).await
}

#[tokio::test]
async fn a_burst_of_reads_costs_one_upstream_call() {
    let (standin, app) = spawn_pair(&[]).await;
    standin.set("conv_burst", json!({"delay_ms": 300})).await;
    let results = burst(&app, "/v1/conversations/conv_burst", 50).await;
    assert!(results
        .iter()
        .all(|(status, cache, _)| *status == 200 && cache == "MISS"));
    let collapsed = results
        .iter()
        .filter(|(_, _, status)| status == "ayra-cache; fwd=miss; collapsed; stored")
        .count();
    assert_eq!(collapsed, 49);
    assert_eq!(standin.requests_for("conv_burst").await, 1);
    let after = app.get("/v1/conversations/conv_burst", Some(TOKEN)).await;
    assert_eq!(header(&after, "x-cache"), "HIT");
    assert_eq!(standin.requests_for("conv_burst").await, 1);
}

#[tokio::test]
async fn unstorable_answers_and_errors_are_shared_too() {
    let (standin, app) = spawn_pair(&[("upstream.timeout", "\"1500ms\"")]).await;
    standin
        .set("conv_gone", json!({"exists": false, "delay_ms": 700}))
        .await;
    standin
        .set(
            "conv_live",
            json!({"status": "in_progress", "delay_ms": 700}),
        )
        .await;
    standin.set("conv_slow", json!({"delay_ms": 3000})).await;
    for (id, expected) in [("conv_gone", 404), ("conv_live", 200), ("conv_slow", 504)] {
        let results = burst(&app, &format!("/v1/conversations/{id}"), 20).await;
        assert!(
            results.iter().all(|(status, _, _)| *status == expected),
            "{id}: {results:?}"
        );
        assert_eq!(standin.requests_for(id).await, 1, "{id}");
    }
}

#[tokio::test]
async fn the_shared_fetch_outlives_the_client_that_started_it() {
    let (standin, app) = spawn_pair(&[]).await;
    standin.set("conv_hang", json!({"delay_ms": 500})).await;
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(100))
        .build()
        .unwrap();
    let url = app.url("/v1/conversations/conv_hang");
    let leader = impatient.get(&url).bearer_auth(TOKEN).send();
    let follower = async {
        tokio::time::sleep(Duration::from_millis(50)).await;
        app.get("/v1/conversations/conv_hang", Some(TOKEN)).await
    };
    let (leader, follower) = tokio::join!(leader, follower);
    assert!(leader.is_err(), "the leader should have hung up");
    assert_eq!(follower.status(), 200);
    assert_eq!(
        header(&follower, "cache-status"),
        "ayra-cache; fwd=miss; collapsed; stored"
    );
    let later = app.get("/v1/conversations/conv_hang", Some(TOKEN)).await;
    assert_eq!(header(&later, "x-cache"), "HIT");
    assert_eq!(standin.requests_for("conv_hang").await, 1);
}

#[tokio::test]
async fn a_fetch_abandoned_by_everyone_still_stores_its_answer() {
    let (standin, app) = spawn_pair(&[]).await;
    standin.set("conv_alone", json!({"delay_ms": 300})).await;
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(50))
        .build()
        .unwrap();
    let url = app.url("/v1/conversations/conv_alone");
    assert!(impatient.get(&url).bearer_auth(TOKEN).send().await.is_err());
    // The fetch goes on alone; wait for its upstream call to land and be stored.
    for _ in 0..50 {
        if standin.requests_for("conv_alone").await == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(600)).await;
    let later = app.get("/v1/conversations/conv_alone", Some(TOKEN)).await;
    assert_eq!(header(&later, "x-cache"), "HIT");
    assert_eq!(standin.requests_for("conv_alone").await, 1);
}
