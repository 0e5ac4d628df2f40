//! Tests of the shared bucket: its arithmetic on an injected clock, and the Lua script held to it on a real `redis-server`.

use super::*;
use crate::cache::shared::test_redis::{TestCluster, TestRedis, TestTier};

const SECOND: u64 = 1_000_000;

fn shape(rate: f64, burst: u32) -> BucketShape {
    BucketShape::new(rate, burst)
}

#[test]
fn an_unused_bucket_leases_its_burst_then_says_when_the_next_token_comes() {
    let s = shape(10.0, 4);
    let now = 1_000 * SECOND;
    let first = gcra_lease(0, now, s, 3);
    assert_eq!((first.tokens, first.next_in_us), (3, 0));
    let second = gcra_lease(first.tat_us, now, s, 3);
    assert_eq!(second.tokens, 1, "only the burst's last token is left");
    assert_eq!(second.next_in_us, 100_000);
    let none = gcra_lease(second.tat_us, now + 50_000, s, 3);
    assert_eq!((none.tokens, none.tat_us), (0, second.tat_us));
    assert_eq!(none.next_in_us, 50_000);
    let one = gcra_lease(second.tat_us, now + 100_000, s, 3);
    assert_eq!(one.tokens, 1);
}

#[test]
fn a_rate_that_does_not_divide_a_second_is_rounded_slower_never_faster() {
    assert_eq!(shape(30.0, 5).interval_us, 33_334);
    assert_eq!(shape(3.0, 0).burst, 1);
    assert_eq!(shape(2_000_000.0, 1).interval_us, 1);
}

#[test]
fn leases_taken_as_fast_as_allowed_stay_within_burst_plus_rate_times_t() {
    let (rate, burst) = (30.0, 5);
    let s = shape(rate, burst);
    let t0 = 5_000 * SECOND;
    let (mut tat, mut now, mut taken) = (0, t0, 0u64);
    for wanted in [3, 1, 2].iter().cycle().take(2_000) {
        let grant = gcra_lease(tat, now, s, *wanted);
        tat = grant.tat_us;
        taken += u64::from(grant.tokens);
        let allowed = f64::from(burst) + rate * (now - t0) as f64 / SECOND as f64;
        assert!(taken as f64 <= allowed + 1e-9, "{taken} by {now}");
        now += grant.next_in_us.max(1);
    }
    let elapsed = (now - t0) as f64 / SECOND as f64;
    assert!(
        taken as f64 >= rate * elapsed * 0.99,
        "{taken} in {elapsed}s"
    );
}

/// The stored TAT (zero when there is none).
async fn stored_tat(redis: &TestRedis, key: &str) -> u64 {
    let mut connection = redis.connection().await.unwrap();
    let tat: Option<u64> = redis::cmd("GET")
        .arg(key)
        .query_async(&mut connection)
        .await
        .unwrap();
    tat.unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_script_leases_exactly_as_the_arithmetic_says() {
    let redis = TestRedis::start().await;
    let replica = TestTier::connect(&redis, "t:").await;
    let s = shape(50.0, 4);
    let (bucket, _) = replica.tier.names.budget("cafe");
    for wanted in [2, 3, 1, 4, 2, 2, 1, 3] {
        let before = stored_tat(&redis, &bucket).await;
        let (granted, next_in_us, paused, now_us) =
            replica.tier.lease_raw("cafe", s, wanted).await.unwrap();
        let expected = gcra_lease(before, u64::try_from(now_us).unwrap(), s, wanted);
        assert_eq!(paused, 0);
        assert_eq!(u32::try_from(granted).unwrap(), expected.tokens, "{wanted}");
        assert_eq!(u64::try_from(next_in_us).unwrap(), expected.next_in_us);
        if expected.tokens > 0 {
            assert_eq!(stored_tat(&redis, &bucket).await, expected.tat_us);
        }
        if expected.tokens < wanted {
            tokio::time::sleep(Duration::from_micros(expected.next_in_us)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pause_stops_every_lease_until_it_ends_and_is_never_shortened() {
    let redis = TestRedis::start().await;
    let replica = TestTier::connect(&redis, "t:").await;
    let tier = &replica.tier;
    let s = shape(100.0, 10);
    tier.pause_budget("beef", Duration::from_millis(400))
        .await
        .unwrap();
    tier.pause_budget("beef", Duration::from_millis(50))
        .await
        .unwrap();
    match tier.lease("beef", s, 3).await.unwrap() {
        LeaseAnswer::Paused { left } => {
            assert!(left > Duration::from_millis(300) && left <= Duration::from_millis(400));
        }
        other => panic!("leased during a pause: {other:?}"),
    }
    let other = tier.lease("f00d", s, 3).await.unwrap();
    assert!(
        matches!(other, LeaseAnswer::Granted { tokens: 3, .. }),
        "another credential is not paused: {other:?}"
    );
    let mut connection = redis.connection().await.unwrap();
    let (_, pause) = tier.names.budget("beef");
    let _: () = redis::cmd("PEXPIRE")
        .arg(&pause)
        .arg(1)
        .query_async(&mut connection)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;
    let after = tier.lease("beef", s, 3).await.unwrap();
    assert!(
        matches!(after, LeaseAnswer::Granted { tokens: 3, .. }),
        "{after:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_redis_cluster_a_bucket_and_its_pause_are_one_slot_and_the_scripts_load() {
    let cluster = TestCluster::start().await;
    let replica = TestTier::connect_cluster(&cluster, "t:").await;
    let tier = &replica.tier;
    let s = shape(10.0, 4);
    for credential in ["cafe", "beef", "f00d", "anon"] {
        let leased = tier.lease(credential, s, 3).await;
        assert!(
            matches!(leased, Ok(LeaseAnswer::Granted { tokens: 3, .. })),
            "{credential}: {leased:?}"
        );
        tier.pause_budget(credential, Duration::from_secs(5))
            .await
            .unwrap();
        let paused = tier.lease(credential, s, 1).await;
        assert!(
            matches!(paused, Ok(LeaseAnswer::Paused { .. })),
            "{credential}: {paused:?}"
        );
    }
}
