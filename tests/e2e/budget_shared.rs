//! The upstream budget across replicas: three proxy processes sharing one real Redis stay within one `rate`, all pause on one `429`, and pace alone while Redis is gone.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::admin::{admin_json, any_budget_paused};
use crate::app::ConfigFile;
use crate::binary::{free_port, json_events, launch, Running};
use crate::budget::{answer, assert_refused, assert_within_budget, Answer, TIMER_GRANULARITY_MS};
use crate::redis::RedisServer;
use crate::standin::{CallRecord, StandIn};

const RATE: f64 = 30.0;
const BURST: u32 = 5;
/// The one upstream credential (pass-through: the clients' own key).
const KEY: &str = "sk_shared_budget";
/// Another credential, whose calls make each replica connect to Redis.
const WARM_KEY: &str = "sk_warm_up";
const ADMIN_TOKEN: &str = "budget-shared-admin";
/// Client connections each replica is fed cold misses over.
const LOOPS: usize = 8;
/// What every replica logs when the shared tier fails.
const TIER_FAILED: &str = "the shared tier failed";

/// One proxy process with `[shared]` and the budget, and its admin port.
struct Replica {
    running: Running,
    admin: SocketAddr,
    client: reqwest::Client,
}

impl Replica {
    /// A `GET` of conversation `id` with `token`, as answered.
    async fn read(&self, id: &str, token: &str) -> Answer {
        let url = format!("http://{}/v1/conversations/{id}", self.running.addr);
        let sent = self.client.get(url).bearer_auth(token).send().await;
        answer(sent.expect("the replica answers")).await
    }

    /// Whether `/admin/stats` shows a budget paused.
    async fn shows_a_pause(&self) -> bool {
        let url = format!("http://{}/admin/stats", self.admin);
        let stats = admin_json(&self.client, reqwest::Method::GET, url, ADMIN_TOKEN).await;
        any_budget_paused(&stats)
    }
}

/// The messages of the shared tier's warnings in `logs`.
fn tier_warnings(logs: &str) -> Vec<String> {
    json_events(logs)
        .iter()
        .filter(|event| event["target"] == "ayra_cache::shared" && event["level"] == "WARN")
        .map(|event| event["message"].to_string())
        .collect()
}

/// Three replicas on `redis`, each having reached it once (a cold miss on
/// another credential), none warned.
async fn replicas(standin: &StandIn, redis: &RedisServer, max_wait: &str) -> Vec<Replica> {
    let mut all = Vec::new();
    for n in 0..3 {
        let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let digest = hex::encode(Sha256::digest(ADMIN_TOKEN.as_bytes()));
        let mut config = ConfigFile::for_upstream(&standin.base_url());
        config
            .set("server.admin_listen", &format!("\"{admin}\""))
            .set("admin.token_sha256", &format!("\"{digest}\""))
            .set("shared.redis_url", &format!("{:?}", redis.url()))
            .set("shared.timeout", "\"500ms\"")
            .set("upstream.budget.rate", &RATE.to_string())
            .set("upstream.budget.burst", &BURST.to_string())
            .set("upstream.budget.max_wait", &format!("\"{max_wait}\""));
        let replica = Replica {
            running: launch(config, &[]).await,
            admin,
            client: reqwest::Client::new(),
        };
        let warm = replica.read(&format!("warm_{n}"), WARM_KEY).await;
        assert_eq!(warm.status, 200);
        all.push(replica);
    }
    for (n, replica) in all.iter().enumerate() {
        let log = replica.running.log.so_far();
        assert!(tier_warnings(&log).is_empty(), "replica {n} warned: {log}");
    }
    all
}

/// Feeds every replica cold misses on [`KEY`] over [`LOOPS`] connections
/// each, one after another on each, until `end`; each replica's answers.
/// Replica `n` reads ids `{prefix}_r{n}_*`, so the stand-in's record tells
/// whose call each was.
async fn feed_until(all: &[Replica], prefix: &str, end: Instant) -> Vec<Vec<Answer>> {
    let replicas = all.iter().enumerate().map(|(n, replica)| async move {
        let loops = (0..LOOPS).map(|connection| async move {
            let mut answers = Vec::new();
            let mut i = connection;
            while Instant::now() < end {
                answers.push(replica.read(&format!("{prefix}_r{n}_{i}"), KEY).await);
                i += LOOPS;
            }
            answers
        });
        let answers = futures::future::join_all(loops).await;
        answers.into_iter().flatten().collect::<Vec<_>>()
    });
    futures::future::join_all(replicas).await
}

/// A 200 from the upstream, or the budget's own 429.
fn assert_answered(answers: &[Answer]) {
    for answer in answers {
        match answer.status {
            200 => assert_eq!(answer.cache, "MISS"),
            _ => assert_refused(answer),
        }
    }
}

/// The times of [`KEY`]'s calls whose path contains `part`, oldest first.
fn times_with(record: &CallRecord, part: &str) -> Vec<f64> {
    let calls = record
        .of(KEY)
        .iter()
        .filter(|call| call.path.contains(part));
    calls.map(|call| call.at_ms).collect()
}

/// Asserts the calls spend about the whole rate from `start_ms` on: at
/// least 80% of `rate` over the time they took.
fn assert_spends_the_rate(times: &[f64], start_ms: f64, what: &str) {
    let last = times.last().unwrap_or_else(|| panic!("{what}: no call"));
    let elapsed = (last - start_ms) / 1000.0;
    assert!(
        times.len() as f64 >= RATE * elapsed * 0.8,
        "{what} spend the rate: {} calls in {elapsed:.2} s",
        times.len()
    );
}

fn offsets(times: &[f64], start_ms: f64) -> Vec<f64> {
    times.iter().map(|t| (t - start_ms).round()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_replicas_on_one_redis_together_stay_within_one_rate_and_burst() {
    let standin = StandIn::spawn().await;
    let redis = RedisServer::start().await;
    let all = replicas(&standin, &redis, "1s").await;
    let start_ms = standin.calls().await.now_ms;
    let end = Instant::now() + Duration::from_secs(3);
    let answers = feed_until(&all, "paced", end).await;
    let record = standin.calls().await;
    let times = record.times_of(KEY);
    println!(
        "three replicas: {} calls at ms {:?}",
        times.len(),
        offsets(&times, start_ms)
    );
    // Exact: Redis grants a token before its call leaves, and the first
    // grant comes after `start_ms` (plus the timer's granularity).
    assert_within_budget(&times, start_ms, RATE, BURST);
    assert_spends_the_rate(&times, start_ms, "together they");
    for (n, answers) in answers.iter().enumerate() {
        assert_answered(answers);
        let granted = answers.iter().filter(|answer| answer.status == 200).count();
        assert_eq!(
            granted,
            times_with(&record, &format!("paced_r{n}_")).len(),
            "replica {n}: one call per answer"
        );
        assert!(granted > 0, "replica {n} got no turn at all");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_upstream_429_answered_to_one_replica_pauses_all_three() {
    let standin = StandIn::spawn().await;
    let redis = RedisServer::start().await;
    // Longer than the pause: calls made during it wait for its end.
    let all = replicas(&standin, &redis, "3s").await;
    // Replicas 0 and 1 hold the key's budget (they hear the pause's
    // notice); replica 2 makes its first call during the pause (it finds
    // the pause in Redis).
    for (n, replica) in all[..2].iter().enumerate() {
        let before = replica.read(&format!("before_r{n}"), KEY).await;
        assert_eq!((before.status, before.cache.as_str()), (200, "MISS"));
    }
    standin.throttle(KEY, 1, "2").await;
    let limited = all[0].read("limited", KEY).await;
    assert_eq!(limited.status, 429, "the upstream's 429 reaches its client");
    assert_eq!(limited.retry_after, Some(2));
    assert_eq!(limited.body["error"]["code"], "rate_limited");
    let record = standin.calls().await;
    let paused_at = record.of(KEY).iter().find(|call| call.limited == 429);
    let paused_at = paused_at.expect("the throttled call").at_ms;
    // The notice reached replica 1; it is published after the pause's key
    // is set in Redis, so replica 2's first lease finds the key.
    let deadline = Instant::now() + Duration::from_secs(2);
    while !all[1].shows_a_pause().await {
        assert!(
            Instant::now() < deadline,
            "replica 1 never heard of the pause"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let during = all.iter().enumerate().map(|(n, replica)| async move {
        let reads = (0..4).map(|i| async move {
            let id = format!("paused_r{n}_{i}");
            replica.read(&id, KEY).await
        });
        futures::future::join_all(reads).await
    });
    let answers = futures::future::join_all(during).await;
    let record = standin.calls().await;
    let after: Vec<f64> = record
        .times_of(KEY)
        .into_iter()
        .filter(|at| *at > paused_at)
        .collect();
    println!(
        "pause: calls at ms {:?} after the 429",
        offsets(&after, paused_at)
    );
    // Every replica started its pause after the stand-in sent the 429.
    let resumed_ms = paused_at + 2000.0;
    let first = after.first().expect("calls after the pause");
    assert!(
        *first + TIMER_GRANULARITY_MS >= resumed_ms,
        "a call {:.0} ms into a 2 s pause",
        first - paused_at
    );
    assert_within_budget(&after, resumed_ms, RATE, BURST);
    for (n, answers) in answers.iter().enumerate() {
        for answer in answers {
            assert_eq!((answer.status, answer.cache.as_str()), (200, "MISS"));
        }
        let calls = times_with(&record, &format!("paused_r{n}_")).len();
        assert_eq!(calls, 4, "replica {n}: each read called once");
    }
    assert_eq!(after.len(), 12, "no other call after the 429");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_redis_stopped_each_replica_paces_alone_and_warns_once() {
    let standin = StandIn::spawn().await;
    let mut redis = RedisServer::start().await;
    let mut all = replicas(&standin, &redis, "1s").await;
    redis.kill();
    let start_ms = standin.calls().await.now_ms;
    let end = Instant::now() + Duration::from_secs(3);
    let answers = feed_until(&all, "alone", end).await;
    let record = standin.calls().await;
    for (n, answers) in answers.iter().enumerate() {
        assert_answered(answers);
        let times = times_with(&record, &format!("alone_r{n}_"));
        println!(
            "replica {n} alone: {} calls at ms {:?}",
            times.len(),
            offsets(&times, start_ms)
        );
        assert_within_budget(&times, start_ms, RATE, BURST);
        assert_spends_the_rate(&times, start_ms, &format!("replica {n} alone"));
    }
    for (n, replica) in all.iter_mut().enumerate() {
        let logs = replica.running.stop();
        let warnings = tier_warnings(&logs);
        assert_eq!(warnings.len(), 1, "replica {n}: {logs}");
        assert!(warnings[0].contains(TIER_FAILED), "{}", warnings[0]);
    }
}
