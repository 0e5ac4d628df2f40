//! Three replicas' budgets sharing one real `redis-server`: together within `rate` and `burst`, a pause told to all, and pacing alone (one warning each) while Redis is gone.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::Layer;

use super::SharedBudget;
use crate::budget::{
    Admission, Budgets, ClientIdentity, RefreshAdmission, RefusalReason, UpstreamCredential,
};
use crate::cache::shared::test_redis::{TestRedis, TestTier};
use crate::config::BudgetSettings;
use crate::domain::Fingerprint;

const RATE: f64 = 30.0;
const BURST: u32 = 5;

fn credential() -> UpstreamCredential {
    UpstreamCredential::Key(Fingerprint::of(b"Bearer sk_shared_budget_test"))
}

/// Replicas' budgets on `redis`, one per `max_wait`, each with its own shared tier.
async fn replicas(redis: &TestRedis, max_waits: [Duration; 3]) -> Vec<(Arc<Budgets>, TestTier)> {
    let mut replicas = Vec::new();
    for max_wait in max_waits {
        let settings = BudgetSettings {
            rate: RATE,
            burst: BURST,
            max_wait,
        };
        let tier = TestTier::connect(redis, "budget-test:").await;
        let shared = Some(Arc::clone(&tier.tier));
        let budgets = Arc::new(Budgets::sharing(settings, Arc::default(), shared));
        // Runs until the test's runtime ends.
        tokio::spawn(budgets.follow_shared_pauses().expect("a shared tier"));
        replicas.push((budgets, tier));
    }
    replicas
}

/// Waits until Redis holds `credential`'s pause (told in the background).
async fn pause_in_redis(redis: &TestRedis, tier: &TestTier) {
    let name = SharedBudget::new(Arc::clone(&tier.tier), credential()).name;
    let (_, pause_key) = tier.tier.budget_keys(&name);
    let mut connection = redis.connection().await.unwrap();
    let told = async {
        loop {
            let left: i64 = redis::cmd("PTTL")
                .arg(&pause_key)
                .query_async(&mut connection)
                .await
                .unwrap();
            if left > 0 {
                return;
            }
            tokio::task::yield_now().await;
        }
    };
    tokio::time::timeout(Duration::from_secs(2), told)
        .await
        .expect("the pause was told to Redis");
}

/// Waits until `budgets` shows `credential` paused, or says it never did.
async fn paused_here(budgets: &Budgets) -> bool {
    let shown = async {
        while budgets.snapshot().iter().all(|b| b.paused_until.is_none()) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(1), shown)
        .await
        .is_ok()
}

/// Calls as fast as `budgets` lets them, from 8 clients, until `end`;
/// the instants their tokens came.
async fn spend_until(budgets: Arc<Budgets>, end: Instant) -> Vec<Instant> {
    let grants = Arc::new(Mutex::new(Vec::new()));
    let clients: Vec<_> = (0..8)
        .map(|n| {
            let (budgets, grants) = (Arc::clone(&budgets), Arc::clone(&grants));
            let who = ClientIdentity::Token(Fingerprint::of(format!("client {n}").as_bytes()));
            tokio::spawn(async move {
                while Instant::now() < end {
                    if let Admission::Granted { .. } = budgets.admit(credential(), who).await {
                        grants.lock().unwrap().push(Instant::now());
                    }
                }
            })
        })
        .collect();
    for client in clients {
        client.await.unwrap();
    }
    let mut grants = std::mem::take(&mut *grants.lock().unwrap());
    grants.sort();
    grants
}

/// Every replica spending until `end`; each one's grants.
async fn all_spend_until(replicas: &[(Arc<Budgets>, TestTier)], end: Instant) -> Vec<Vec<Instant>> {
    let spending: Vec<_> = replicas
        .iter()
        .map(|(budgets, _)| tokio::spawn(spend_until(Arc::clone(budgets), end)))
        .collect();
    let mut all = Vec::new();
    for replica in spending {
        all.push(replica.await.unwrap());
    }
    all
}

/// No window from `from` on held more grants than `allowance + rate·t`.
fn assert_paced(grants: &[Instant], from: Instant, allowance: f64, what: &str) {
    let after: Vec<_> = grants.iter().filter(|at| **at >= from).collect();
    for (n, at) in after.iter().enumerate() {
        let allowed = allowance + RATE * at.duration_since(from).as_secs_f64();
        assert!(
            (n + 1) as f64 <= allowed,
            "{what}: {} grants by {:?}, at most {allowed:.1} allowed",
            n + 1,
            at.duration_since(from)
        );
    }
}

fn merged(all: &[Vec<Instant>]) -> Vec<Instant> {
    let mut merged: Vec<_> = all.iter().flatten().copied().collect();
    merged.sort();
    merged
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_together_stay_within_the_rate_and_the_burst() {
    let redis = TestRedis::start().await;
    let replicas = replicas(&redis, [Duration::from_secs(1); 3]).await;
    let start = Instant::now();
    let all = all_spend_until(&replicas, start + Duration::from_secs(3)).await;
    let grants = merged(&all);
    // Exact: a grant is timed here after Redis made it, never before.
    assert_paced(&grants, start, f64::from(BURST), "three replicas");
    let elapsed = grants.last().unwrap().duration_since(start).as_secs_f64();
    assert!(
        grants.len() as f64 >= RATE * elapsed * 0.8,
        "together they spend the rate: {} grants in {elapsed:.2}s",
        grants.len()
    );
    for (n, replica) in all.iter().enumerate() {
        assert!(!replica.is_empty(), "replica {n} got no token at all");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pause_set_by_one_replica_holds_the_others_even_one_that_starts_later() {
    let redis = TestRedis::start().await;
    let long = Duration::from_secs(5);
    let replicas = replicas(&redis, [long, long, Duration::from_millis(200)]).await;
    let pause = Duration::from_millis(1500);
    let paused_at = Instant::now();
    replicas[0].0.pause(credential(), pause);
    pause_in_redis(&redis, &replicas[0].1).await;
    let who = ClientIdentity::Anonymous;
    let (waiting, short) = (Arc::clone(&replicas[1].0), &replicas[2].0);
    let waiter = tokio::spawn(async move { waiting.admit(credential(), who).await });
    let impatient = short.admit(credential(), who).await;
    let paused = |admission: &Admission| {
        matches!(
            admission,
            Admission::Refused {
                reason: RefusalReason::Paused,
                ..
            }
        )
    };
    assert!(paused(&impatient), "{impatient:?}");
    // A replica that starts during the pause heard no notice: the key holds it.
    let settings = BudgetSettings {
        rate: RATE,
        burst: BURST,
        max_wait: Duration::from_millis(200),
    };
    let late_tier = TestTier::connect(&redis, "budget-test:").await;
    let late = Budgets::sharing(settings, Arc::default(), Some(Arc::clone(&late_tier.tier)));
    let late_call = late.admit(credential(), who).await;
    assert!(paused(&late_call), "{late_call:?}");
    assert!(matches!(waiter.await.unwrap(), Admission::Granted { .. }));
    let held = paused_at.elapsed();
    assert!(
        held >= pause - Duration::from_millis(50),
        "held only {held:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pause_stops_the_tokens_other_replicas_hold_already() {
    let redis = TestRedis::start().await;
    let short = Duration::from_millis(200);
    let replicas = replicas(&redis, [short; 3]).await;
    let holder = &replicas[1].0;
    // A refresh finds no token: one is leased and held for the next.
    assert_eq!(holder.try_refresh(credential()), RefreshAdmission::Skipped);
    let leased = async {
        while holder.snapshot().first().is_none_or(|b| b.tokens == 0) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(1), leased)
        .await
        .expect("a token leased for the next refresh");
    replicas[0].0.pause(credential(), Duration::from_secs(2));
    assert!(paused_here(holder).await, "the notice paused the holder");
    assert_eq!(
        holder.try_refresh(credential()),
        RefreshAdmission::Skipped,
        "the token held is not spent during the pause"
    );
    let call = holder.admit(credential(), ClientIdentity::Anonymous).await;
    assert!(
        matches!(call, Admission::Refused { .. }),
        "no call during the pause: {call:?}"
    );
    assert_eq!(holder.snapshot()[0].tokens, 1, "still held");
}

/// Counts the shared tier's warnings.
#[derive(Clone, Default)]
struct TierWarnings(Arc<Mutex<usize>>);

impl<S: tracing::Subscriber> Layer<S> for TierWarnings {
    fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
        let meta = event.metadata();
        if *meta.level() == tracing::Level::WARN && meta.target() == "ayra_cache::shared" {
            *self.0.lock().unwrap() += 1;
        }
    }
}

// On one thread: the warnings are counted by a subscriber set for this
// thread, which every task of this runtime runs on.
#[tokio::test(flavor = "current_thread")]
async fn without_redis_each_replica_paces_alone_warns_once_and_shares_again_when_it_returns() {
    let warnings = TierWarnings::default();
    let subscriber = tracing_subscriber::registry().with(warnings.clone());
    let _counting = tracing::subscriber::set_default(subscriber);
    let mut redis = TestRedis::start().await;
    let replicas = replicas(&redis, [Duration::from_secs(1); 3]).await;
    redis.kill();
    let start = Instant::now();
    let alone = all_spend_until(&replicas, start + Duration::from_secs(2)).await;
    for (n, grants) in alone.iter().enumerate() {
        assert_paced(grants, start, f64::from(BURST), "one replica alone");
        assert!(!grants.is_empty(), "replica {n} got no token alone");
        let elapsed = grants.last().unwrap().duration_since(start).as_secs_f64();
        assert!(
            grants.len() as f64 >= RATE * elapsed * 0.8,
            "replica {n} alone spends the full rate: {} grants in {elapsed:.2}s",
            grants.len()
        );
    }
    assert_eq!(*warnings.0.lock().unwrap(), 3, "one warning per replica");

    redis.restart().await;
    let back = Instant::now();
    let shared = all_spend_until(&replicas, back + Duration::from_secs(4)).await;
    // A replica asks again a second after its last fault; that first query
    // may still find the broken connection (one more fault) while the tier
    // reconnects: within two seconds every replica shares again.
    let settled = back + crate::cache::shared::REST * 2 + Duration::from_millis(300);
    // The window opens mid-stream: besides the burst, each replica may
    // still spend one lease (3 tokens at rate 30) made before it opened.
    let allowance =
        f64::from(BURST) + 3.0 * f64::from(crate::budget::lease::lease_size(RATE, BURST));
    assert_paced(&merged(&shared), settled, allowance, "sharing again");
    assert_eq!(*warnings.0.lock().unwrap(), 3, "no more warnings");
}
