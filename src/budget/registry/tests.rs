//! Unit tests of the budgets by credential: one each, off, bounded by sweeping, reloads, the admin snapshot.

use super::*;
use crate::budget::RefusalReason;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn budgets(rate: f64, burst: u32) -> Budgets {
    let settings = BudgetSettings {
        rate,
        burst,
        max_wait: ms(2000),
    };
    Budgets::new(settings, Arc::default())
}

fn key(name: &str) -> UpstreamCredential {
    UpstreamCredential::Key(Fingerprint::of(name.as_bytes()))
}

fn who(name: &str) -> ClientIdentity {
    ClientIdentity::Token(Fingerprint::of(name.as_bytes()))
}

#[tokio::test(start_paused = true)]
async fn each_upstream_credential_has_its_own_budget() {
    let budgets = budgets(1.0, 1);
    let a = budgets.budget(key("sk_a")).unwrap();
    assert!(Arc::ptr_eq(&a, &budgets.budget(key("sk_a")).unwrap()));
    assert!(!Arc::ptr_eq(&a, &budgets.budget(key("sk_b")).unwrap()));
    let granted = Admission::Granted {
        waited: Duration::ZERO,
    };
    assert_eq!(budgets.admit(key("sk_a"), who("app")).await, granted);
    assert_eq!(budgets.admit(key("sk_b"), who("app")).await, granted);
    assert_eq!(
        budgets
            .admit(UpstreamCredential::Anonymous, who("app"))
            .await,
        granted
    );
    budgets.pause(key("sk_a"), ms(1500));
    let paused = budgets.admit(key("sk_a"), who("app")).await;
    assert!(matches!(paused, Admission::Granted { waited } if waited == ms(1500)));
    assert_eq!(budgets.try_refresh(key("sk_b")), RefreshAdmission::Granted);
}

#[tokio::test(start_paused = true)]
async fn an_off_budget_grants_everything_and_holds_nothing() {
    let budgets = budgets(0.0, 1);
    for _ in 0..100 {
        let admission = budgets.admit(key("sk"), who("app")).await;
        assert_eq!(admission.waited(), Duration::ZERO);
        assert_eq!(budgets.try_refresh(key("sk")), RefreshAdmission::Granted);
    }
    budgets.pause(key("sk"), ms(1000));
    assert!(budgets.budget(key("sk")).is_none());
    assert!(budgets.is_empty());
}

#[tokio::test(start_paused = true)]
async fn sweeping_drops_only_unused_budgets_at_rest() {
    let budgets = budgets(10.0, 1);
    budgets.budget(key("idle"));
    budgets.budget(key("spent")).unwrap().try_refresh();
    budgets.pause(key("paused"), ms(5000));
    let held = budgets.budget(key("held"));
    assert_eq!(budgets.sweep(), 1, "only `idle` is at rest and unused");
    assert_eq!(budgets.len(), 3);
    tokio::time::advance(ms(100)).await;
    assert_eq!(budgets.sweep(), 1, "`spent` refilled");
    drop(held);
    tokio::time::advance(ms(5000)).await;
    assert_eq!(budgets.sweep(), 2);
    assert!(budgets.is_empty());
}

#[tokio::test(start_paused = true)]
async fn many_credentials_at_rest_do_not_pile_up() {
    let budgets = budgets(10.0, 1);
    for n in 0..5 * SWEEP_FROM {
        budgets.budget(key(&format!("sk_{n}")));
    }
    assert!(budgets.len() <= SWEEP_FROM, "{}", budgets.len());
    let long_ago = budgets.len();
    tokio::time::advance(SWEEP_EVERY).await;
    budgets.budget(key("one more"));
    assert!(budgets.len() < long_ago, "a sweep a minute");
}

#[tokio::test(start_paused = true)]
async fn a_reload_reaches_existing_budgets_and_new_ones() {
    let budgets = budgets(10.0, 1);
    budgets.admit(key("old"), who("app")).await;
    budgets.reconfigure(BudgetSettings {
        rate: 1.0,
        burst: 1,
        max_wait: ms(500),
    });
    let refused = budgets.admit(key("old"), who("app")).await;
    assert!(matches!(
        refused,
        Admission::Refused {
            reason: RefusalReason::Exhausted,
            ..
        }
    ));
    budgets.admit(key("new"), who("app")).await;
    let refused = budgets.admit(key("new"), who("app")).await;
    assert!(matches!(refused, Admission::Refused { .. }), "1 a second");
}

#[tokio::test(start_paused = true)]
async fn turning_the_budget_off_lets_waiting_calls_go_and_drops_the_budgets() {
    let budgets = Arc::new(budgets(1.0, 1));
    budgets.admit(key("sk"), who("app")).await;
    let waiting = tokio::spawn({
        let budgets = Arc::clone(&budgets);
        async move { budgets.admit(key("sk"), who("app")).await }
    });
    tokio::task::yield_now().await;
    budgets.reconfigure(BudgetSettings::default());
    let admission = waiting.await.unwrap();
    assert_eq!(admission.waited(), Duration::ZERO);
    assert!(matches!(admission, Admission::Granted { .. }));
    assert!(budgets.budget(key("sk")).is_none());
    tokio::task::yield_now().await; // the driver sees nobody waiting and stops
    budgets.sweep();
    assert!(budgets.is_empty());
}

#[tokio::test(start_paused = true)]
async fn the_snapshot_names_credentials_by_a_fingerprint_prefix_only() {
    let budgets = budgets(10.0, 3);
    budgets.admit(key("sk_live_secret"), who("app")).await;
    budgets.pause(key("sk_live_secret"), ms(2000));
    budgets.budget(UpstreamCredential::Anonymous);
    let before = SystemTime::now();
    let snapshot = budgets.snapshot();
    let digest = hex::encode(Fingerprint::of(b"sk_live_secret").digest());
    let labels: Vec<_> = snapshot.iter().map(|s| s.credential.as_str()).collect();
    let (keyed, anonymous) = match labels[..] {
        ["anonymous", _] => (&snapshot[1], &snapshot[0]),
        _ => (&snapshot[0], &snapshot[1]),
    };
    assert_eq!(keyed.credential, digest[..8]);
    assert_eq!((keyed.tokens, keyed.waiting), (2, 0));
    let until = keyed.paused_until.unwrap();
    let ahead = until.duration_since(before).unwrap();
    assert!(ahead > ms(1900) && ahead < ms(2100), "{ahead:?}");
    assert_eq!(anonymous.credential, "anonymous");
    assert_eq!((anonymous.tokens, anonymous.paused_until), (3, None));
    let json = serde_json::to_string(&snapshot).unwrap();
    assert!(!json.contains("sk_live_secret") && !json.contains(&digest));
    let written = jiff::Timestamp::try_from(until).unwrap();
    let expected = written.round(jiff::Unit::Millisecond).unwrap().to_string();
    assert!(json.contains(&expected), "{json}");
    assert!(json.contains("\"paused_until\":null"), "{json}");
}

#[tokio::test(start_paused = true)]
async fn the_budgets_count_into_their_metrics() {
    let mut registry = prometheus_client::registry::Registry::with_prefix("ayra_cache");
    let metrics = Arc::new(BudgetMetrics::register(&mut registry));
    let settings = BudgetSettings {
        rate: 10.0,
        burst: 1,
        max_wait: ms(50),
    };
    let budgets = Budgets::new(settings, metrics);
    budgets.admit(key("sk"), who("app")).await; // a token was there
    budgets.admit(key("sk"), who("app")).await; // refused at once
    budgets.exhausted(ExhaustedOutcome::Rejected);
    tokio::time::advance(ms(60)).await;
    budgets.admit(key("sk"), who("app")).await; // waits 40 ms
    budgets.pause(key("sk"), Duration::from_secs(60));
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    for line in [
        "ayra_cache_budget_waits_total 1",
        "ayra_cache_budget_wait_seconds_sum 0.04",
        "ayra_cache_budget_exhausted_total{outcome=\"rejected\"} 1",
        "ayra_cache_upstream_paused 1",
    ] {
        assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
    }
}
