//! Coalescing: concurrent reads of one key share one upstream exchange, whatever it yields.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::app::{spawn_pair, spawn_with, ConfigFile, TestApp};
use crate::cached_route::{header, TOKEN};
use crate::hostile::{conversation_body, ok_response, read_head, requested_id, status_of};
use crate::raw;

/// An upstream that counts the requests for each id and answers one only
/// once released (never, when `answer` has none for the id).
struct HeldUpstream {
    base_url: String,
    calls: Arc<Mutex<HashMap<String, usize>>>,
    release: watch::Sender<bool>,
}

async fn held_upstream(answer: fn(&str) -> Option<String>) -> HeldUpstream {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base_url = format!("http://{}", listener.local_addr().unwrap());
    let calls = Arc::new(Mutex::new(HashMap::new()));
    let (release, released) = watch::channel(false);
    let counted = Arc::clone(&calls);
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let (calls, mut released) = (Arc::clone(&counted), released.clone());
            tokio::spawn(async move {
                let mut buffer = Vec::new();
                while let Some(head) = read_head(&mut stream, &mut buffer).await {
                    let id = requested_id(&head);
                    *calls.lock().unwrap().entry(id.clone()).or_insert(0) += 1;
                    let Some(answer) = answer(&id) else {
                        return std::future::pending().await;
                    };
                    if released.wait_for(|released| *released).await.is_err()
                        || stream.write_all(answer.as_bytes()).await.is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    HeldUpstream {
        base_url,
        calls,
        release,
    }
}

impl HeldUpstream {
    fn calls(&self, id: &str) -> usize {
        self.calls.lock().unwrap().get(id).copied().unwrap_or(0)
    }
}

/// Waits until `n` requests wait for an upstream exchange at once
/// (`ayra_cache_fetch_waiting` on the admin listener).
async fn wait_for_waiting(app: &TestApp, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = app.client.get(app.admin_url("/metrics")).send().await;
        let text = text.unwrap().text().await.unwrap();
        let waiting = text
            .lines()
            .find_map(|line| line.strip_prefix("ayra_cache_fetch_waiting "))
            .map(|value| value.trim().parse::<usize>().unwrap());
        if waiting == Some(n) {
            return;
        }
        assert!(Instant::now() < deadline, "waiting: {waiting:?} of {n}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A proxy in front of `upstream`, with an admin listener.
async fn proxy_for(upstream: &HeldUpstream, keys: &[(&str, &str)]) -> TestApp {
    let mut config = ConfigFile::for_upstream(&upstream.base_url);
    config.set("server.admin_listen", "\"127.0.0.1:0\"");
    for (key, literal) in keys {
        config.set(key, literal);
    }
    spawn_with(&config).await
}

/// Sends `n` reads of `id`, each on its own connection, and lets `upstream`
/// answer once all `n` wait for an exchange; then reads every answer
/// (status, `x-cache`, `cache-status`).
async fn burst(
    app: &TestApp,
    upstream: &HeldUpstream,
    id: &str,
    n: usize,
) -> Vec<(Option<u16>, String, String)> {
    let request = format!(
        "GET /v1/conversations/{id} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\nConnection: close\r\n\r\n"
    );
    upstream.release.send_replace(false);
    let mut clients = Vec::new();
    for _ in 0..n {
        let mut stream = TcpStream::connect(app.addr).await.unwrap();
        stream.write_all(request.as_bytes()).await.unwrap();
        clients.push(stream);
    }
    wait_for_waiting(app, n).await;
    // The one exchange's request may still be on its way to the upstream.
    let deadline = Instant::now() + Duration::from_secs(5);
    while upstream.calls(id) == 0 {
        assert!(Instant::now() < deadline, "{id} never reached the upstream");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(upstream.calls(id), 1, "{id}: one exchange for {n} waiting");
    upstream.release.send_replace(true);
    let answers = clients
        .iter_mut()
        .map(|stream| raw::read_until_closed(stream, Duration::from_secs(5)));
    let field = |answer: &str, name: &str| {
        answer
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .unwrap_or_default()
            .to_owned()
    };
    futures::future::join_all(answers)
        .await
        .iter()
        .map(|answer| {
            let status = status_of(answer);
            (
                status,
                field(answer, "x-cache: "),
                field(answer, "cache-status: "),
            )
        })
        .collect()
}

#[tokio::test]
async fn a_burst_of_reads_costs_one_upstream_call() {
    let upstream = held_upstream(|id| Some(ok_response(&conversation_body(id, "fresh")))).await;
    let app = proxy_for(&upstream, &[]).await;
    let results = burst(&app, &upstream, "conv_burst", 50).await;
    assert!(results.iter().all(|(status, _, _)| *status == Some(200)));
    let count = |cache_status: &str| results.iter().filter(|(_, _, c)| c == cache_status).count();
    let leaders = count("ayra-cache; fwd=miss; stored");
    let collapsed = count("ayra-cache; fwd=miss; collapsed; stored");
    assert_eq!((leaders, collapsed), (1, 49), "{results:?}");
    assert!(results.iter().all(|(_, x_cache, _)| x_cache == "MISS"));
    assert_eq!(upstream.calls("conv_burst"), 1);
    let after = app.get("/v1/conversations/conv_burst", Some(TOKEN)).await;
    assert_eq!(header(&after, "x-cache"), "HIT");
    assert_eq!(upstream.calls("conv_burst"), 1);
}

/// A 404 for `conv_gone`, a live conversation for `conv_live`, nothing ever for `conv_slow`.
fn unstorable_answer(id: &str) -> Option<String> {
    let body = match id {
        "conv_gone" => {
            let body = json!({"error": {"type": "not_found", "message": "gone", "code": "conversation_not_found"}});
            let body = body.to_string();
            return Some(format!(
                "HTTP/1.1 404 Not Found\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            ));
        }
        "conv_live" => json!({"data": {"id": id, "status": "in_progress", "analytics": null}}),
        _ => return None,
    };
    Some(ok_response(&body.to_string()))
}

#[tokio::test]
async fn unstorable_answers_and_errors_are_shared_too() {
    let upstream = held_upstream(unstorable_answer).await;
    let app = proxy_for(&upstream, &[("upstream.timeout", "\"2s\"")]).await;
    for (id, expected) in [("conv_gone", 404), ("conv_live", 200), ("conv_slow", 504)] {
        let results = burst(&app, &upstream, id, 20).await;
        assert!(
            results
                .iter()
                .all(|(status, _, _)| *status == Some(expected)),
            "{id}: {results:?}"
        );
        let collapsed = results
            .iter()
            .filter(|(_, _, c)| c.contains("; collapsed"))
            .count();
        assert_eq!(collapsed, 19, "{id}: {results:?}");
        assert_eq!(upstream.calls(id), 1, "{id}");
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
    let standin = crate::standin::StandIn::spawn().await;
    standin.set("conv_alone", json!({"delay_ms": 300})).await;
    let app = crate::app::spawn_app(&standin, &[("server.admin_listen", "\"127.0.0.1:0\"")]).await;
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(50))
        .build()
        .unwrap();
    let url = app.url("/v1/conversations/conv_alone");
    assert!(impatient.get(&url).bearer_auth(TOKEN).send().await.is_err());
    // The fetch goes on alone: wait for its answer to be stored.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let text = app.client.get(app.admin_url("/metrics")).send().await;
        let text = text.unwrap().text().await.unwrap();
        if text.lines().any(|line| line == "ayra_cache_stores_total 1") {
            break;
        }
        assert!(Instant::now() < deadline, "never stored: {text}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let later = app.get("/v1/conversations/conv_alone", Some(TOKEN)).await;
    assert_eq!(header(&later, "x-cache"), "HIT");
    assert_eq!(standin.requests_for("conv_alone").await, 1);
}
