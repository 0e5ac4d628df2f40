//! The upstream's own 429 pauses its credential (stale stands in meanwhile); budget keys are validated, reloaded at once, and shown to operators.

use std::net::SocketAddr;
use std::time::Instant;

use crate::admin::{admin_app, admin_json, any_budget_paused, metrics, series, ADMIN_TOKEN};
use crate::app::ConfigFile;
use crate::binary::{free_port, start};
use crate::budget::{answer, assert_refused, ms, until};
use crate::standin::StandIn;

#[tokio::test]
async fn an_upstream_429_pauses_its_credential_only_and_stale_stands_in() {
    let standin = StandIn::spawn().await;
    let app = admin_app(
        &standin,
        &[
            ("upstream.budget.rate", "50"),
            ("upstream.budget.burst", "10"),
            ("upstream.budget.max_wait", "\"500ms\""),
            ("cache.max_ttl", "\"300ms\""),
            ("cache.stale_if_error", "\"1h\""),
            ("cache.refresh_ahead", "0"),
        ],
    )
    .await;
    let read = |path: &'static str, token: &'static str| {
        let app = &app;
        async move { answer(app.get(path, Some(token)).await).await }
    };
    let stored = Instant::now();
    assert_eq!(read("/v1/conversations/held", "sk_a").await.status, 200);

    standin.throttle("sk_a", 1, "2").await;
    let limited = read("/v1/conversations/limited", "sk_a").await;
    let paused_at = standin.calls().await.times_of("sk_a")[1];
    assert_eq!(
        limited.status, 429,
        "the upstream's 429 reaches its requester"
    );
    assert_eq!(limited.retry_after, Some(2));
    assert_eq!(limited.body["error"]["code"], "rate_limited");

    let other = read("/v1/conversations/other", "sk_b").await;
    assert_eq!(other.status, 200, "another credential is not paused");
    let cold = read("/v1/conversations/cold", "sk_a").await;
    assert_refused(&cold);
    assert!(cold.retry_after <= Some(2), "the pause's remaining seconds");
    until(stored + ms(350)).await;
    let stale = read("/v1/conversations/held", "sk_a").await;
    assert_eq!(stale.status, 200);
    assert_eq!(stale.cache, "STALE");
    assert_eq!(stale.cache_status, "ayra-cache; fwd=stale; detail=budget");

    let text = metrics(&app).await;
    assert_eq!(series(&text, "ayra_cache_upstream_paused"), 1.0);
    assert_eq!(
        series(
            &text,
            "ayra_cache_budget_exhausted_total{outcome=\"stale\"}"
        ),
        1.0
    );
    assert_eq!(
        series(
            &text,
            "ayra_cache_budget_exhausted_total{outcome=\"rejected\"}"
        ),
        1.0
    );
    assert!(
        text.contains("ayra_cache_budget_wait_seconds_bucket"),
        "{text}"
    );
    assert!(text.contains("ayra_cache_budget_waits_total"), "{text}");
    let url = app.admin_url("/admin/stats");
    let stats = admin_json(&app.client, reqwest::Method::GET, url, ADMIN_TOKEN).await;
    let budgets = stats["budgets"].as_array().expect("budgets in the stats");
    assert_eq!(budgets.len(), 2, "{stats}");
    assert!(any_budget_paused(&stats), "{stats}");
    assert!(budgets.iter().all(|budget| budget["waiting"] == 0));
    let shown = stats.to_string();
    assert!(
        !shown.contains("sk_a") && !shown.contains("sk_b"),
        "{shown}"
    );

    // Wait out the pause: the next call goes, and none went during it.
    let after = loop {
        let answer = read("/v1/conversations/after", "sk_a").await;
        if answer.status == 200 {
            break answer;
        }
        assert_refused(&answer);
        let wait = answer.retry_after.unwrap().min(1);
        tokio::time::sleep(std::time::Duration::from_secs(wait)).await;
    };
    assert_eq!(after.cache, "MISS");
    let times = standin.calls().await.times_of("sk_a");
    assert_eq!(times.len(), 3, "held, limited, after: {times:?}");
    assert!(
        times[2] - paused_at >= 2000.0,
        "a call {:.0} ms into a 2 s pause",
        times[2] - paused_at
    );
}

#[tokio::test]
async fn a_bad_budget_reload_is_refused_naming_the_key_and_a_lower_rate_applies_at_once() {
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;
    let standin = StandIn::spawn().await;
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let mut config = ConfigFile::for_upstream(&standin.base_url());
    config
        .set("server.listen", &format!("\"{addr}\""))
        .set("upstream.budget.rate", "1000")
        .set("upstream.budget.burst", "1")
        .set("upstream.budget.max_wait", "\"0s\"")
        .set("log.level", "\"info\"");
    let dir = tempfile::tempdir().unwrap();
    let path = config.write(&dir);
    let mut running = start(&path, &[], addr).await;
    let pid = Pid::from_raw(running.child.id() as i32);
    let client = reqwest::Client::new();
    let get = |i: u32| {
        let url = format!("http://{addr}/v1/conversations/reloaded_{i}");
        let request = client.get(url).bearer_auth("sk_reload");
        async move { answer(request.send().await.unwrap()).await }
    };
    for i in 0..3 {
        assert_eq!(get(i).await.status, 200);
    }
    let sighup = |text: String, expect: &'static str| {
        std::fs::write(&path, text).unwrap();
        let mark = running.log.so_far().len();
        kill(pid, Signal::SIGHUP).unwrap();
        let log = &running.log;
        async move { log.line_after(mark, &[expect], ms(5000)).await }
    };
    let refused = sighup(
        with(&config, "upstream.budget.burst", "0"),
        "config reload refused: nothing changed",
    )
    .await;
    assert!(refused.contains("upstream.budget.burst"), "{refused}");
    sighup(
        with(&config, "upstream.budget.rate", "0.2"),
        "config reloaded",
    )
    .await;
    let first = get(3).await;
    assert!(first.status == 200 || first.status == 429);
    let second = get(4).await;
    assert_refused(&second);
    assert!(
        second.retry_after.is_some_and(|s| s <= 5),
        "one call per 5 s"
    );
    running.stop();
}

fn with(config: &ConfigFile, key: &str, literal: &str) -> String {
    let mut changed = config.clone();
    changed.set(key, literal);
    changed.render()
}
