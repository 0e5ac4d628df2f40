//! Live reload: SIGHUP applies the reloadable keys, names the others, and keeps the cache and connections.

use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::app::{spawn_with, ConfigFile};
use crate::binary::{free_port, start};
use crate::cached_route::header;
use crate::standin::StandIn;

/// How long a reload's log line may take after SIGHUP.
pub const LOG_WAIT: Duration = Duration::from_secs(5);

fn digest(token: &str) -> String {
    format!("[\"{}\"]", hex::encode(Sha256::digest(token.as_bytes())))
}

fn proxy_key_config(standin: &StandIn, token: &str) -> ConfigFile {
    let mut config = ConfigFile::for_upstream(&standin.base_url());
    config
        .set("upstream.api_key", "\"sk_proxy\"")
        .set("auth.client_tokens_sha256", &digest(token));
    config
}

async fn status(app: &crate::app::TestApp, client: &reqwest::Client, token: &str) -> (u16, String) {
    let response = client
        .get(app.url("/v1/conversations/conv_rl"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), header(&response, "x-cache"))
}

#[tokio::test]
async fn a_reload_swaps_tokens_keeps_entries_and_connections_and_names_restart_keys() {
    let standin = StandIn::spawn().await;
    let app = spawn_with(&proxy_key_config(&standin, "token-old")).await;
    // One client, one pooled keep-alive connection across the reload.
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(1)
        .build()
        .unwrap();
    assert_eq!(
        status(&app, &client, "token-old").await,
        (200, "MISS".into())
    );
    assert_eq!(status(&app, &client, "token-new").await.0, 401);

    let mut changed = proxy_key_config(&standin, "token-new");
    changed
        .set("server.listen", "\"127.0.0.1:1\"")
        .set("server.worker_threads", "3")
        .set("cache.max_bytes", "\"1MiB\"")
        .set("upstream.timeout", "\"5s\"");
    let report = app.reload(&changed);
    assert_eq!(
        report.needs_restart,
        ["server.listen", "server.worker_threads", "cache.max_bytes"]
    );
    // Turning the shared tier on needs a restart too.
    let mut shared = changed.clone();
    shared.set("shared.redis_url", "\"redis://127.0.0.1:1/0\"");
    let report = app.reload(&shared);
    assert_eq!(
        report.needs_restart,
        [
            "server.listen",
            "server.worker_threads",
            "cache.max_bytes",
            "shared"
        ]
    );
    app.reload(&changed);
    assert_eq!(
        status(&app, &client, "token-new").await,
        (200, "HIT".into()),
        "the entry survived"
    );
    assert_eq!(
        status(&app, &client, "token-old").await.0,
        401,
        "the removed token is refused"
    );
    assert_eq!(standin.requests_for("conv_rl").await, 1);
}

#[tokio::test]
async fn reloaded_cache_rules_apply_to_new_requests() {
    let standin = StandIn::spawn().await;
    standin
        .set("conv_live", serde_json::json!({"status": "in_progress"}))
        .await;
    let config = ConfigFile::for_upstream(&standin.base_url());
    let app = spawn_with(&config).await;
    let path = "/v1/conversations/conv_live";
    assert_eq!(header(&app.get(path, Some("k")).await, "x-cache"), "MISS");
    assert_eq!(header(&app.get(path, Some("k")).await, "x-cache"), "MISS");
    let mut micro = ConfigFile::for_upstream(&standin.base_url());
    micro.set("cache.in_progress_ttl", "\"5s\"");
    assert!(app.reload(&micro).needs_restart.is_empty());
    assert_eq!(header(&app.get(path, Some("k")).await, "x-cache"), "MISS");
    assert_eq!(header(&app.get(path, Some("k")).await, "x-cache"), "HIT");
}

#[tokio::test]
async fn sighup_reloads_the_binary_and_an_invalid_file_changes_nothing() {
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;
    let standin = StandIn::spawn().await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let listen = format!("\"127.0.0.1:{port}\"");
    let mut config = proxy_key_config(&standin, "token-a");
    config
        .set("server.listen", &listen)
        .set("log.level", "\"info\"");
    let path = config.write(&dir);
    let mut running = start(&path, &[], format!("127.0.0.1:{port}").parse().unwrap()).await;
    let pid = Pid::from_raw(running.child.id() as i32);
    let url = format!("http://127.0.0.1:{port}/v1/conversations/conv_hup");
    let client = reqwest::Client::new();
    let get = |token: &'static str| client.get(&url).bearer_auth(token).send();
    assert_eq!(get("token-a").await.unwrap().status(), 200);

    // A broken file: refused, nothing changes.
    std::fs::write(&path, config.render() + "[cache]\nbogus_key = 1\n").unwrap();
    let mark = running.log.so_far().len();
    kill(pid, Signal::SIGHUP).unwrap();
    let refused = running
        .log
        .line_after(mark, &["config reload refused: nothing changed"], LOG_WAIT)
        .await;
    assert!(refused.contains("cache.bogus_key"), "{refused}");
    assert_eq!(get("token-a").await.unwrap().status(), 200);

    // A good one: token-b replaces token-a at once.
    let mut next = proxy_key_config(&standin, "token-b");
    next.set("server.listen", &listen)
        .set("log.level", "\"info\"");
    std::fs::write(&path, next.render()).unwrap();
    let mark = running.log.so_far().len();
    kill(pid, Signal::SIGHUP).unwrap();
    running
        .log
        .line_after(mark, &["\"config reloaded\""], LOG_WAIT)
        .await;
    let hit = get("token-b").await.unwrap();
    assert_eq!(hit.status(), 200);
    assert_eq!(header(&hit, "x-cache"), "HIT");
    assert_eq!(get("token-a").await.unwrap().status(), 401);
    running.stop();
}

#[tokio::test]
async fn a_reload_that_lengthens_lifetimes_applies_in_full() {
    // Started with entries fresh for 300 ms and no stale life, then reloaded
    // to an hour: an entry stored after the reload outlives the lifetimes the
    // proxy started with (a cap fixed at start would end it at 300 ms).
    let standin = StandIn::spawn().await;
    let mut start = ConfigFile::for_upstream(&standin.base_url());
    start
        .set("cache.max_ttl", "\"300ms\"")
        .set("cache.stale_if_error", "\"0s\"")
        .set("cache.refresh_ahead", "0");
    let app = spawn_with(&start).await;
    let mut longer = start.clone();
    longer.set("cache.max_ttl", "\"1h\"");
    assert!(app.reload(&longer).needs_restart.is_empty());
    let path = "/v1/conversations/conv_longer";
    let sent = Instant::now();
    assert_eq!(header(&app.get(path, Some("t")).await, "x-cache"), "MISS");
    tokio::time::sleep_until((sent + Duration::from_millis(900)).into()).await;
    assert_eq!(header(&app.get(path, Some("t")).await, "x-cache"), "HIT");
    assert_eq!(standin.requests_for("conv_longer").await, 1);
}

#[tokio::test]
async fn the_level_in_force_when_a_request_arrives_decides_its_access_event() {
    // A request under way while a reload raises the level from warn to info
    // is not logged (the proxy keeps what an access event needs only for
    // requests that arrive with it on); the next one is.
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;
    let standin = StandIn::spawn().await;
    standin
        .set("conv_during", serde_json::json!({"delay_ms": 800}))
        .await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut config = ConfigFile::for_upstream(&standin.base_url());
    config
        .set("server.listen", &format!("\"127.0.0.1:{port}\""))
        .set("log.level", "\"warn\"");
    let path = config.write(&dir);
    let mut running = start(&path, &[], format!("127.0.0.1:{port}").parse().unwrap()).await;
    let client = reqwest::Client::new();
    let url = |id: &str| format!("http://127.0.0.1:{port}/v1/conversations/{id}");
    let during = tokio::spawn(client.get(url("conv_during")).bearer_auth("t").send());
    // Under way: the upstream has its call (and holds it for 800 ms).
    let deadline = Instant::now() + LOG_WAIT;
    while standin.requests_for("conv_during").await == 0 {
        assert!(
            Instant::now() < deadline,
            "the request never reached the upstream"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    config.set("log.level", "\"info\"");
    std::fs::write(&path, config.render()).unwrap();
    let mark = running.log.so_far().len();
    kill(Pid::from_raw(running.child.id() as i32), Signal::SIGHUP).unwrap();
    running
        .log
        .line_after(mark, &["\"config reloaded\""], LOG_WAIT)
        .await;
    let answered = during.await.unwrap().unwrap();
    assert_eq!(answered.status(), 200);
    assert_eq!(
        standin.requests_for("conv_during").await,
        1,
        "still one call"
    );
    let after = client.get(url("conv_after")).bearer_auth("t").send();
    assert_eq!(after.await.unwrap().status(), 200);
    running
        .log
        .line_after(mark, &["ayra_cache::access", "conv_after"], LOG_WAIT)
        .await;
    // Its event, had there been one, came before the next request's.
    let logs = running.log.so_far();
    assert!(!logs.contains("/v1/conversations/conv_during"), "{logs}");
    running.stop();
}
