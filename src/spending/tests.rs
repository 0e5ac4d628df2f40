//! Unit tests of spending: turns for clients and refreshes, waits noted, pauses from a 429 (tokio's paused clock).

use std::time::{Duration, SystemTime};

use http::{header, HeaderMap, HeaderValue, StatusCode};

use super::*;
use crate::config::BudgetSettings;
use crate::domain::Fingerprint;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn budgets(rate: f64, burst: u32, max_wait: Duration) -> Arc<Budgets> {
    let settings = BudgetSettings {
        rate,
        burst,
        max_wait,
    };
    Arc::new(Budgets::new(settings, Arc::default()))
}

fn spender(budgets: &Arc<Budgets>, key: &str) -> Spender {
    let credential = UpstreamCredential::Key(Fingerprint::of(key.as_bytes()));
    Spender::new(budgets, credential, ClientIdentity::Anonymous)
}

fn retry_after(seconds: &str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(header::RETRY_AFTER, HeaderValue::from_str(seconds).unwrap());
    headers
}

#[tokio::test(start_paused = true)]
async fn a_clients_call_waits_for_its_turn_and_notes_the_wait() {
    let budgets = budgets(10.0, 1, ms(2000));
    let call = spender(&budgets, "sk");
    let first = call.client_turn().await;
    assert_eq!(
        (first.go, first.wait()),
        (Ok(()), None),
        "a token was there"
    );
    let second = call.client_turn().await;
    assert_eq!(second.go, Ok(()));
    assert_eq!(second.wait(), Some(ms(100)), "one token interval");
}

#[tokio::test(start_paused = true)]
async fn a_call_whose_turn_cannot_come_in_time_is_refused_with_whole_seconds() {
    let budgets = budgets(0.5, 1, ms(100));
    let call = spender(&budgets, "sk");
    assert_eq!(call.client_turn().await.go, Ok(()));
    let refused = call.client_turn().await.go;
    assert_eq!(
        refused,
        Err(Refused {
            retry_after_secs: 2
        })
    );
}

#[tokio::test(start_paused = true)]
async fn a_refresh_never_waits_and_is_skipped_without_a_spare_token() {
    let budgets = budgets(1.0, 1, ms(2000));
    let call = spender(&budgets, "sk");
    assert_eq!(call.refresh_turn(), RefreshAdmission::Granted);
    let before = tokio::time::Instant::now();
    assert_eq!(call.refresh_turn(), RefreshAdmission::Skipped);
    assert_eq!(before.elapsed(), Duration::ZERO);
}

#[tokio::test(start_paused = true)]
async fn a_429_pauses_its_credential_for_its_retry_after_and_no_other() {
    let budgets = budgets(100.0, 10, ms(500));
    let (paused, other) = (spender(&budgets, "sk_a"), spender(&budgets, "sk_b"));
    paused.answered(StatusCode::OK, &retry_after("2"), SystemTime::now());
    assert_eq!(paused.client_turn().await.go, Ok(()));
    paused.answered(
        StatusCode::TOO_MANY_REQUESTS,
        &retry_after("2"),
        SystemTime::now(),
    );
    let refused = paused.client_turn().await.go;
    assert_eq!(
        refused,
        Err(Refused {
            retry_after_secs: 2
        })
    );
    assert_eq!(paused.refresh_turn(), RefreshAdmission::Skipped);
    assert_eq!(other.client_turn().await.go, Ok(()));
    tokio::time::advance(ms(2000)).await;
    assert_eq!(paused.client_turn().await.go, Ok(()));
}
