//! The shared Redis tier (SPEC section 10): three proxy processes in front of one stand-in, over a real Redis.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::admin::admin_json;
use crate::app::ConfigFile;
use crate::binary::{free_port, launch, Running};
use crate::cached_route::TOKEN;
use crate::redis::{RedisCluster, RedisServer};
use crate::standin::StandIn;

/// `shared.timeout` of every replica here.
const SHARED_TIMEOUT: Duration = Duration::from_millis(500);
/// A request's own work besides waiting for Redis (its fetch from the
/// stand-in, on a loaded machine): half `shared.timeout`, so a request
/// that waited for two Redis operations fails the bound.
const FETCH_SLACK: Duration = Duration::from_millis(250);
const ADMIN_TOKEN: &str = "shared-admin-token";
const SEALING_KEY: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

/// One proxy process with `[shared]` at `redis_url`, and its admin port.
struct Replica {
    running: Running,
    admin: SocketAddr,
}

async fn replica(
    standin: &StandIn,
    redis_url: &str,
    extra: &[(&str, &str)],
    env: &[(&str, &str)],
) -> Replica {
    let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let digest = hex::encode(Sha256::digest(ADMIN_TOKEN.as_bytes()));
    let mut config = ConfigFile::for_upstream(&standin.base_url());
    config
        .set("server.admin_listen", &format!("\"{admin}\""))
        .set("admin.token_sha256", &format!("\"{digest}\""))
        .set("cache.compression", "[]")
        .set("shared.redis_url", &format!("{redis_url:?}"))
        .set(
            "shared.timeout",
            &format!("\"{}ms\"", SHARED_TIMEOUT.as_millis()),
        );
    for (key, literal) in extra {
        config.set(key, literal);
    }
    Replica {
        running: launch(config, env).await,
        admin,
    }
}

async fn replicas(standin: &StandIn, redis_url: &str, extra: &[(&str, &str)]) -> Vec<Replica> {
    let mut all = Vec::new();
    for _ in 0..3 {
        all.push(replica(standin, redis_url, extra, &[]).await);
    }
    all
}

/// What a client saw.
#[derive(Debug)]
struct Seen {
    status: u16,
    x_cache: String,
    cache_status: String,
    body: String,
}

async fn read(client: &reqwest::Client, replica: &Replica, id: &str) -> Seen {
    let response = client
        .get(format!(
            "http://{}/v1/conversations/{id}",
            replica.running.addr
        ))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("the proxy answers");
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .map(|value| value.to_str().unwrap().to_owned())
            .unwrap_or_default()
    };
    let (x_cache, cache_status) = (header("x-cache"), header("cache-status"));
    Seen {
        status: response.status().as_u16(),
        x_cache,
        cache_status,
        body: response.text().await.unwrap(),
    }
}

async fn admin(
    client: &reqwest::Client,
    replica: &Replica,
    method: reqwest::Method,
    path: &str,
) -> Value {
    let url = format!("http://{}{path}", replica.admin);
    admin_json(client, method, url, ADMIN_TOKEN).await
}

/// The replica's `/metrics` text.
async fn metrics_text(client: &reqwest::Client, replica: &Replica) -> String {
    let url = format!("http://{}/metrics", replica.admin);
    let response = client.get(url).send().await.unwrap();
    response.text().await.unwrap()
}

/// Waits (up to 5 s) until `replica` holds `entries` entries.
async fn wait_for_entries(client: &reqwest::Client, replica: &Replica, entries: u64) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let stats = admin(client, replica, reqwest::Method::GET, "/admin/stats").await;
        if stats["entries"] == entries {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "entries stayed at {}",
            stats["entries"]
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn assert_shared_hit(seen: &Seen) {
    assert_eq!(seen.status, 200, "{seen:?}");
    assert_eq!(seen.x_cache, "HIT", "{seen:?}");
    assert!(seen.cache_status.contains("detail=shared"), "{seen:?}");
}

/// The value names Redis holds for conversation `id`.
async fn values_in(redis: &RedisServer, id: &str) -> Vec<String> {
    let mut connection = redis.connection().await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("ayra-cache:v1:{{{id}}}:*"))
        .query_async(&mut connection)
        .await
        .unwrap();
    keys.into_iter()
        .filter(|key| !key.ends_with(":index") && !key.ends_with(":claim"))
        .collect()
}

/// The one value Redis holds for conversation `id`, as (name, raw bytes),
/// once the background write has landed (2 s at most).
pub async fn stored_value(redis: &RedisServer, id: &str) -> (String, Vec<u8>) {
    let mut connection = redis.connection().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let mut names = values_in(redis, id).await;
        if let Some(name) = names.pop() {
            assert!(names.is_empty(), "one value expected for {id}");
            let value: Vec<u8> = redis::cmd("GET")
                .arg(&name)
                .query_async(&mut connection)
                .await
                .unwrap();
            return (name, value);
        }
        assert!(Instant::now() < deadline, "the value never reached Redis");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn a_value_stored_through_one_replica_is_a_hit_on_the_others() {
    let standin = StandIn::spawn().await;
    let redis = RedisServer::start().await;
    let all = replicas(&standin, &redis.url(), &[]).await;
    let client = reqwest::Client::new();
    let first = read(&client, &all[0], "conv_shared_a").await;
    assert_eq!((first.status, first.x_cache.as_str()), (200, "MISS"));
    assert!(first.cache_status.contains("stored"), "{first:?}");
    // Redis expires it at usable_until: here the URL deadline, the
    // stand-in's hour less the 60 s margin (a second less for `Date`).
    let (name, _) = stored_value(&redis, "conv_shared_a").await;
    let mut connection = redis.connection().await.unwrap();
    let pttl: i64 = redis::cmd("PTTL")
        .arg(&name)
        .query_async(&mut connection)
        .await
        .unwrap();
    assert!((3_530_000..=3_540_000).contains(&pttl), "PTTL {pttl}");
    for replica in &all[1..] {
        let seen = read(&client, replica, "conv_shared_a").await;
        assert_shared_hit(&seen);
        assert_eq!(seen.body, first.body);
        // Now held locally: a plain HIT.
        let again = read(&client, replica, "conv_shared_a").await;
        assert_eq!(again.x_cache, "HIT");
        assert!(!again.cache_status.contains("detail=shared"), "{again:?}");
    }
    assert_eq!(standin.requests_for("conv_shared_a").await, 1);
    let metrics = metrics_text(&client, &all[1]).await;
    assert!(
        metrics.contains("ayra_cache_shared_lookups_total{result=\"hit\"} 1"),
        "{metrics}"
    );
    // Another credential never reads it.
    let other = client
        .get(format!(
            "http://{}/v1/conversations/conv_shared_a",
            all[2].running.addr
        ))
        .bearer_auth("sk_test_other")
        .send()
        .await
        .unwrap();
    assert_eq!(other.headers()["x-cache"], "MISS");
    assert_eq!(standin.requests_for("conv_shared_a").await, 2);
}

/// 300 concurrent reads of one cold id, spread over the three replicas.
async fn burst(client: &reqwest::Client, all: &[Replica], id: &str) -> Vec<Seen> {
    let reads = (0..300).map(|i| read(client, &all[i % all.len()], id));
    futures::future::join_all(reads).await
}

#[tokio::test]
async fn a_burst_over_three_replicas_costs_one_upstream_call() {
    let standin = StandIn::spawn().await;
    standin.set("conv_burst", json!({"delay_ms": 300})).await;
    let redis = RedisServer::start().await;
    let all = replicas(&standin, &redis.url(), &[]).await;
    let client = reqwest::Client::new();
    let seen = burst(&client, &all, "conv_burst").await;
    assert!(
        seen.iter().all(|seen| seen.status == 200),
        "{:?}",
        seen.iter().find(|s| s.status != 200)
    );
    assert!(seen.iter().all(|s| s.body == seen[0].body));
    assert_eq!(standin.requests_for("conv_burst").await, 1);
    let shared = seen
        .iter()
        .filter(|s| s.cache_status.contains("detail=shared"))
        .count();
    assert!(
        shared >= 1,
        "the other replicas waited for the claim holder's value"
    );
}

#[tokio::test]
async fn a_value_past_its_url_deadline_is_never_served_from_redis() {
    let standin = StandIn::spawn().await;
    standin
        .set("conv_forged", json!({"recording_ttl_ms": 2000}))
        .await;
    let redis = RedisServer::start().await;
    let extra = [("cache.expiry_margin", "\"0s\"")];
    let a = replica(&standin, &redis.url(), &extra, &[]).await;
    let b = replica(&standin, &redis.url(), &extra, &[]).await;
    let client = reqwest::Client::new();
    assert_eq!(read(&client, &a, "conv_forged").await.x_cache, "MISS");
    let (name, value) = stored_value(&redis, "conv_forged").await;
    let mut connection = redis.connection().await.unwrap();
    // Past the URL deadline, the same bytes written back with a forged expiry.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let _: () = redis::cmd("SET")
        .arg(&name)
        .arg(&value)
        .arg("PX")
        .arg(600_000)
        .query_async(&mut connection)
        .await
        .unwrap();
    let seen = read(&client, &b, "conv_forged").await;
    assert_eq!(seen.x_cache, "MISS", "{seen:?}");
    assert!(!seen.cache_status.contains("detail=shared"), "{seen:?}");
    assert_eq!(standin.requests_for("conv_forged").await, 2);
}

#[tokio::test]
async fn a_purge_through_one_replica_empties_every_replica_and_redis() {
    let standin = StandIn::spawn().await;
    let redis = RedisServer::start().await;
    let all = replicas(&standin, &redis.url(), &[]).await;
    let client = reqwest::Client::new();
    assert_eq!(read(&client, &all[0], "conv_purged").await.x_cache, "MISS");
    tokio::time::sleep(Duration::from_millis(200)).await;
    for replica in &all[1..] {
        assert_shared_hit(&read(&client, replica, "conv_purged").await);
    }
    for replica in &all {
        wait_for_entries(&client, replica, 1).await;
    }
    let report = admin(
        &client,
        &all[0],
        reqwest::Method::DELETE,
        "/admin/cache/conversations/conv_purged",
    )
    .await;
    assert_eq!(report, json!({"purged": 1, "shared": {"purged": 1}}));
    for replica in &all {
        wait_for_entries(&client, replica, 0).await;
    }
    assert!(values_in(&redis, "conv_purged").await.is_empty());
    // Not storable any more: anything still held anywhere would show as a HIT.
    standin
        .set("conv_purged", json!({"status": "in_progress"}))
        .await;
    for replica in &all {
        let seen = read(&client, replica, "conv_purged").await;
        assert_eq!(seen.x_cache, "MISS", "{seen:?}");
    }
    assert_eq!(standin.requests_for("conv_purged").await, 4);
}

#[tokio::test]
async fn sealed_values_hold_no_transcript_text_and_still_serve() {
    let standin = StandIn::spawn().await;
    let redis = RedisServer::start().await;
    let env = [("AYRA_CACHE__SHARED__ENCRYPTION_KEY", SEALING_KEY)];
    let a = replica(&standin, &redis.url(), &[], &env).await;
    let b = replica(&standin, &redis.url(), &[], &env).await;
    let client = reqwest::Client::new();
    let first = read(&client, &a, "conv_sealed").await;
    let body: Value = serde_json::from_str(&first.body).unwrap();
    let text = body["data"]["transcript"]["full_text"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(text.len() > 20);
    let (_, raw) = stored_value(&redis, "conv_sealed").await;
    let raw = String::from_utf8_lossy(&raw);
    assert!(
        !raw.contains(&text[..20]),
        "the transcript is readable in Redis"
    );
    assert!(!raw.contains("conv_sealed\",\"agent_id"));
    assert_shared_hit(&read(&client, &b, "conv_sealed").await);
    // A replica without the key cannot read it: a MISS, never garbage.
    let c = replica(&standin, &redis.url(), &[], &[]).await;
    assert_eq!(read(&client, &c, "conv_sealed").await.x_cache, "MISS");
}

#[tokio::test]
async fn unsealed_values_do_hold_the_transcript() {
    // The counterpart of the sealing test: the same check sees clear text.
    let standin = StandIn::spawn().await;
    let redis = RedisServer::start().await;
    let a = replica(&standin, &redis.url(), &[], &[]).await;
    let client = reqwest::Client::new();
    let first = read(&client, &a, "conv_clear").await;
    let body: Value = serde_json::from_str(&first.body).unwrap();
    let text = body["data"]["transcript"]["full_text"]
        .as_str()
        .unwrap()
        .to_owned();
    let (_, raw) = stored_value(&redis, "conv_clear").await;
    assert!(String::from_utf8_lossy(&raw).contains(&text[..20]));
}

#[tokio::test]
async fn redis_down_at_start_killed_or_frozen_costs_no_request() {
    let standin = StandIn::spawn().await;
    let port = free_port();
    let url = format!("redis://127.0.0.1:{port}/0");
    // Down at start: the replicas start and serve alone.
    let all = replicas(&standin, &url, &[]).await;
    let client = reqwest::Client::new();
    for (i, replica) in all.iter().enumerate() {
        let started = Instant::now();
        let seen = read(&client, replica, &format!("conv_alone_{i}")).await;
        assert_eq!((seen.status, seen.x_cache.as_str()), (200, "MISS"));
        assert!(started.elapsed() < Duration::from_secs(1));
        assert_eq!(
            read(&client, replica, &format!("conv_alone_{i}"))
                .await
                .x_cache,
            "HIT"
        );
    }
    // Redis arrives: sharing resumes by itself.
    let mut redis = RedisServer::start_on(port, false).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut n = 0;
    loop {
        n += 1;
        let id = format!("conv_resumed_{n}");
        read(&client, &all[0], &id).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        if read(&client, &all[1], &id)
            .await
            .cache_status
            .contains("detail=shared")
        {
            break;
        }
        assert!(Instant::now() < deadline, "sharing never resumed");
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    // Killed in the middle of a burst: 20 rounds of 30 reads, Redis killed
    // while round 5's reads are in flight; every request still answered.
    let mut failures = 0;
    for round in 0..20 {
        let (client, all) = (&client, &all);
        let reads = futures::future::join_all((0..30).map(|i| async move {
            let id = format!("conv_kill_{}", (round * 7 + i) % 40);
            read(client, &all[i % 3], &id).await
        }));
        let seen = if round == 5 {
            // The reads are polled first (all 30 sent off), then the kill.
            let (seen, ()) = tokio::join!(reads, async { redis.kill() });
            seen
        } else {
            reads.await
        };
        failures += seen.iter().filter(|s| s.status != 200).count();
    }
    assert_eq!(failures, 0);
    // Frozen (accepts, never answers): a request waits for Redis at most
    // shared.timeout (then the tier rests), plus its own fetch.
    redis.restart().await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    redis.freeze(true);
    for i in 0..6 {
        let started = Instant::now();
        let seen = read(&client, &all[i % 3], &format!("conv_frozen_{i}")).await;
        assert_eq!(seen.status, 200);
        assert!(
            started.elapsed() < SHARED_TIMEOUT + FETCH_SLACK,
            "{:?}",
            started.elapsed()
        );
    }
    redis.freeze(false);
    // Down at start, killed and frozen within a minute: one warning each at most.
    for mut replica in all {
        let logs = replica.running.stop();
        let warnings = crate::binary::json_events(&logs)
            .iter()
            .filter(|event| event["target"] == "ayra_cache::shared" && event["level"] == "WARN")
            .count();
        assert_eq!(warnings, 1, "{logs}");
    }
}

#[tokio::test]
async fn a_redis_cluster_shares_values_and_one_fetch() {
    let standin = StandIn::spawn().await;
    standin
        .set("conv_cluster_burst", json!({"delay_ms": 300}))
        .await;
    let cluster = RedisCluster::start().await;
    let all = replicas(&standin, &cluster.url(), &[("shared.cluster", "true")]).await;
    let client = reqwest::Client::new();
    // The replicas read the topology in the background: wait for sharing.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut n = 0;
    loop {
        n += 1;
        let id = format!("conv_cluster_{n}");
        assert_eq!(read(&client, &all[0], &id).await.status, 200);
        tokio::time::sleep(Duration::from_millis(100)).await;
        let on_b = read(&client, &all[1], &id).await;
        if on_b.cache_status.contains("detail=shared") {
            assert_shared_hit(&read(&client, &all[2], &id).await);
            assert_eq!(standin.requests_for(&id).await, 1);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the cluster never shared a value"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(!cluster.keys("ayra-cache:v1:*").await.is_empty());
    let seen = burst(&client, &all, "conv_cluster_burst").await;
    assert!(seen.iter().all(|seen| seen.status == 200));
    assert_eq!(standin.requests_for("conv_cluster_burst").await, 1);
    // A purge of everything walks every conversation on every node.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let report = admin(&client, &all[0], reqwest::Method::DELETE, "/admin/cache").await;
    assert!(
        report["shared"]["purged"].as_u64().unwrap() >= 2,
        "{report}"
    );
    let left: Vec<String> = cluster
        .keys("ayra-cache:v1:{*")
        .await
        .into_iter()
        .filter(|key| !key.ends_with(":claim"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
    for replica in &all {
        wait_for_entries(&client, replica, 0).await;
    }
}

/// The claim name for `id` read with [`TOKEN`] and every flag on.
fn claim_name(id: &str) -> String {
    let fingerprint = hex::encode(Sha256::digest(format!("Bearer {TOKEN}").as_bytes()));
    format!("ayra-cache:v1:{{{id}}}:k{fingerprint}:111:claim")
}

#[tokio::test]
async fn a_claim_left_by_a_dead_replica_holds_others_only_until_it_lapses() {
    let standin = StandIn::spawn().await;
    let redis = RedisServer::start().await;
    let a = replica(&standin, &redis.url(), &[], &[]).await;
    let client = reqwest::Client::new();
    // A replica claimed the fetch, then died: its claim lapses in 1 s.
    let mut connection = redis.connection().await.unwrap();
    let _: () = redis::cmd("SET")
        .arg(claim_name("conv_orphan"))
        .arg("token-of-a-dead-replica")
        .arg("PX")
        .arg(1000)
        .query_async(&mut connection)
        .await
        .unwrap();
    let started = Instant::now();
    let seen = read(&client, &a, "conv_orphan").await;
    let waited = started.elapsed();
    assert_eq!(
        (seen.status, seen.x_cache.as_str()),
        (200, "MISS"),
        "{seen:?}"
    );
    assert!(
        waited >= Duration::from_millis(800) && waited < Duration::from_secs(5),
        "waited {waited:?}"
    );
    assert_eq!(standin.requests_for("conv_orphan").await, 1);
}

#[tokio::test]
async fn when_the_holder_cannot_store_each_replica_fetches_on_its_own() {
    let standin = StandIn::spawn().await;
    standin
        .set(
            "conv_live",
            json!({"status": "in_progress", "delay_ms": 300}),
        )
        .await;
    let redis = RedisServer::start().await;
    let all = replicas(&standin, &redis.url(), &[]).await;
    let client = reqwest::Client::new();
    let started = Instant::now();
    let seen = burst(&client, &all, "conv_live").await;
    assert!(seen.iter().all(|s| s.status == 200 && s.x_cache == "MISS"));
    assert!(seen.iter().all(|s| !s.cache_status.contains("stored")));
    // One call per replica at most: the holder's, then each waiter's own,
    // right after the holder let go (not after lock_ttl).
    let calls = standin.requests_for("conv_live").await;
    assert!((1..=3).contains(&calls), "{calls} calls");
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(values_in(&redis, "conv_live").await.is_empty());
    let mut connection = redis.connection().await.unwrap();
    let claim: Option<String> = redis::cmd("GET")
        .arg(claim_name("conv_live"))
        .query_async(&mut connection)
        .await
        .unwrap();
    assert_eq!(claim, None, "the holder let go of its claim");
}

#[tokio::test]
async fn a_redis_that_answers_errors_is_no_client_error() {
    let standin = StandIn::spawn().await;
    let redis = RedisServer::start().await;
    let all = replicas(&standin, &redis.url(), &[]).await;
    let client = reqwest::Client::new();
    // Out of memory, evicting nothing: every write is refused with an error.
    let mut connection = redis.connection().await.unwrap();
    for (name, value) in [("maxmemory-policy", "noeviction"), ("maxmemory", "1")] {
        let _: () = redis::cmd("CONFIG")
            .arg("SET")
            .arg(name)
            .arg(value)
            .query_async(&mut connection)
            .await
            .unwrap();
    }
    for (i, replica) in all.iter().enumerate() {
        let id = format!("conv_refused_{i}");
        let seen = read(&client, replica, &id).await;
        assert_eq!(
            (seen.status, seen.x_cache.as_str()),
            (200, "MISS"),
            "{seen:?}"
        );
        assert_eq!(read(&client, replica, &id).await.x_cache, "HIT");
    }
    let metrics = metrics_text(&client, &all[0]).await;
    assert!(
        metrics.contains("ayra_cache_shared_errors_total{kind=\"refused\"}"),
        "{metrics}"
    );
}

#[tokio::test]
async fn refreshes_ahead_across_replicas_are_shared_too() {
    let standin = StandIn::spawn().await;
    standin
        .set("conv_steady", json!({"recording": false}))
        .await;
    let redis = RedisServer::start().await;
    let lifetimes = [("cache.max_ttl", "\"1s\""), ("cache.refresh_ahead", "0.5")];
    let all = replicas(&standin, &redis.url(), &lifetimes).await;
    let client = reqwest::Client::new();
    // Read steadily through the three for about four lifetimes of 1 s; each
    // replica's entry comes due for refresh every half lifetime or so.
    let mut misses = 0;
    let started = Instant::now();
    for i in 0..80 {
        let seen = read(&client, &all[i % 3], "conv_steady").await;
        assert_eq!(seen.status, 200);
        misses += usize::from(seen.x_cache != "HIT");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(misses, 1, "only the very first read missed");
    // One proxy alone refreshes at most once per half lifetime (500 ms)
    // after the first call (see lifetimes.rs); the three together may not
    // make more (three refreshing on their own make about three times that).
    let calls = standin.requests_for("conv_steady").await;
    let most = 1 + started.elapsed().as_millis() as u64 / 500;
    assert!(
        (2..=most).contains(&calls),
        "{calls} upstream calls in {:?}",
        started.elapsed()
    );
}
