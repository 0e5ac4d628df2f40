//! Warm restarts: the real binary writes its cache on SIGTERM and reads it back at start.

use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};

use crate::app::ConfigFile;
use crate::binary::{free_port, json_events, start, Running};
use crate::cached_route::{header, serial};
use crate::standin::StandIn;

async fn run_proxy(standin: &StandIn, snapshot: &Path, dir: &tempfile::TempDir) -> Running {
    let port = free_port();
    let mut config = ConfigFile::for_upstream(&standin.base_url());
    let listen = format!("\"127.0.0.1:{port}\"");
    let snapshot = format!("{:?}", snapshot.display().to_string());
    config
        .set("server.listen", &listen)
        .set("log.level", "\"info\"")
        .set("cache.expiry_margin", "\"0s\"")
        .set("cache.snapshot_path", &snapshot);
    let path = config.write(dir);
    start(&path, &[], format!("127.0.0.1:{port}").parse().unwrap()).await
}

async fn get(running: &Running, id: &str) -> (String, Option<u64>) {
    let url = format!("http://{}/v1/conversations/{id}", running.addr);
    let response = reqwest::Client::new()
        .get(url)
        .bearer_auth("sk_restart")
        .send()
        .await
        .unwrap();
    let cache = header(&response, "x-cache");
    let body: Value = response.json().await.unwrap();
    (cache, body["data"].is_object().then(|| serial(&body)))
}

/// Stops the proxy with SIGTERM and returns its log.
fn stop(mut running: Running) -> String {
    running.stop()
}

fn event(logs: &str, message: &str) -> Option<Value> {
    json_events(logs)
        .into_iter()
        .find(|event| event["message"] == message)
}

#[tokio::test]
async fn a_restart_keeps_every_usable_entry_and_costs_no_upstream_call() {
    let standin = StandIn::spawn().await;
    standin
        .set("conv_short", json!({"recording_ttl_ms": 2500}))
        .await;
    let dir = tempfile::tempdir().unwrap();
    let snapshot = dir.path().join("cache.snapshot");

    let first = run_proxy(&standin, &snapshot, &dir).await;
    let (_, kept_serial) = get(&first, "conv_kept").await;
    get(&first, "conv_short").await;
    let (cache, _) = get(&first, "conv_kept").await;
    assert_eq!(cache, "HIT");
    let logs = stop(first);
    let written = event(&logs, "snapshot written").expect(&logs);
    assert_eq!(written["written"], 2);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&snapshot).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);

    // conv_short's URL dies (2.5 s, less the Date's second) while we are down.
    tokio::time::sleep(Duration::from_millis(2600)).await;
    let calls_before = standin.stats().await.requests_total;
    let second = run_proxy(&standin, &snapshot, &dir).await;
    assert!(!snapshot.exists(), "a snapshot is used once");
    let (cache, serial) = get(&second, "conv_kept").await;
    assert_eq!(cache, "HIT");
    assert_eq!(serial, kept_serial);
    assert_eq!(standin.stats().await.requests_total, calls_before);
    let (cache, _) = get(&second, "conv_short").await;
    assert_eq!(cache, "MISS", "the expired entry was skipped");
    let logs = stop(second);
    let loaded = event(&logs, "snapshot loaded: warm start").expect(&logs);
    assert_eq!(
        (loaded["loaded"].as_u64(), loaded["skipped"].as_u64()),
        (Some(1), Some(1))
    );
}

#[tokio::test]
async fn a_damaged_or_foreign_snapshot_is_a_logged_cold_start() {
    let standin = StandIn::spawn().await;
    let dir = tempfile::tempdir().unwrap();
    let snapshot = dir.path().join("cache.snapshot");
    let first = run_proxy(&standin, &snapshot, &dir).await;
    get(&first, "conv_1").await;
    stop(first);
    let good = std::fs::read(&snapshot).unwrap();

    for damaged in [
        good[..good.len() - 3].to_vec(),
        b"not a snapshot at all".to_vec(),
    ] {
        std::fs::write(&snapshot, &damaged).unwrap();
        let running = run_proxy(&standin, &snapshot, &dir).await;
        let (cache, _) = get(&running, "conv_1").await;
        assert_eq!(cache, "MISS");
        let logs = stop(running);
        let warning = event(&logs, "snapshot unusable: cold start").expect(&logs);
        assert_eq!(warning["level"], "WARN");
    }
    std::fs::remove_file(&snapshot).ok();
    let running = run_proxy(&standin, &snapshot, &dir).await;
    let logs = stop(running);
    assert!(event(&logs, "no snapshot: cold start").is_some(), "{logs}");
}
