//! Unit tests of waiting for a turn, on tokio's paused clock: pacing, rotation, deadlines, dropped waiters, pauses, reloads.

use std::future::Future;
use std::pin::Pin;
use std::task::Poll;

use super::*;
use crate::budget::RefusalReason;
use crate::domain::Fingerprint;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn settings(rate: f64, burst: u32, max_wait: Duration) -> BudgetSettings {
    BudgetSettings {
        rate,
        burst,
        max_wait,
    }
}

fn budget(rate: f64, burst: u32, max_wait: Duration) -> Arc<Budget> {
    Arc::new(Budget::new(
        UpstreamCredential::Anonymous,
        &settings(rate, burst, max_wait),
        Arc::default(),
        now(),
    ))
}

fn client(name: &str) -> ClientIdentity {
    ClientIdentity::Token(Fingerprint::of(name.as_bytes()))
}

fn granted(waited: Duration) -> Admission {
    Admission::Granted { waited }
}

/// Polls `future` once: queued calls stay pending, answered ones are ready.
async fn poll_once<F: Future + Unpin>(future: &mut F) -> Poll<F::Output> {
    std::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut *future).poll(cx))).await
}

/// Lets the driver and the waiting tasks run without moving the clock.
async fn settle() {
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
}

#[tokio::test(start_paused = true)]
async fn calls_beyond_the_burst_are_granted_one_interval_apart() {
    let budget = budget(10.0, 2, ms(5000));
    let calls: Vec<_> = (0..6)
        .map(|_| {
            let budget = Arc::clone(&budget);
            tokio::spawn(async move { budget.admit(client("a")).await })
        })
        .collect();
    let mut answers = Vec::new();
    for call in calls {
        answers.push(call.await.unwrap());
    }
    let expected = [0, 0, 100, 200, 300, 400].map(|n| granted(ms(n)));
    assert_eq!(answers, expected);
    settle().await;
    assert!(budget.is_at_rest(now() + ms(200)), "the driver stopped");
}

#[tokio::test(start_paused = true)]
async fn a_call_whose_turn_cannot_come_in_time_is_refused_at_once() {
    let budget = budget(1.0, 1, ms(500));
    assert_eq!(budget.admit(client("a")).await, granted(ms(0)));
    let start = now();
    let refused = budget.admit(client("a")).await;
    assert_eq!(
        refused,
        Admission::Refused {
            retry_after_secs: 1,
            reason: RefusalReason::Exhausted,
            waited: Duration::ZERO,
        }
    );
    assert_eq!(now(), start, "no waiting for a turn that cannot come");
}

#[tokio::test(start_paused = true)]
async fn a_call_still_waiting_at_its_deadline_is_refused_with_retry_after() {
    let budget = budget(1.0, 1, ms(1500));
    assert_eq!(budget.admit(client("a")).await, granted(ms(0)));
    let first = tokio::spawn({
        let budget = Arc::clone(&budget);
        async move { budget.admit(client("a")).await }
    });
    settle().await;
    // b's own queue is empty: its turn could come at 1 s, but a's call
    // was first and takes that token; the next comes at 2 s, past 1.5 s.
    let b = budget.admit(client("b")).await;
    assert_eq!(
        b,
        Admission::Refused {
            retry_after_secs: 1,
            reason: RefusalReason::Exhausted,
            waited: ms(1500),
        }
    );
    assert_eq!(first.await.unwrap(), granted(ms(1000)));
}

#[tokio::test(start_paused = true)]
async fn a_newcomer_is_granted_after_at_most_one_turn_of_a_busy_client() {
    let budget = budget(10.0, 1, ms(5000));
    assert_eq!(budget.admit(client("backfill")).await, granted(ms(0)));
    let backfill: Vec<_> = (0..20)
        .map(|_| {
            let budget = Arc::clone(&budget);
            tokio::spawn(async move { budget.admit(client("backfill")).await })
        })
        .collect();
    settle().await;
    let dashboard = budget.admit(client("dashboard")).await;
    assert_eq!(dashboard, granted(ms(200)), "one backfill turn, then ours");
    for call in backfill {
        assert!(matches!(
            call.await.unwrap(),
            Admission::Granted { .. } | Admission::Refused { .. }
        ));
    }
}

#[tokio::test(start_paused = true)]
async fn a_token_sent_to_a_dropped_call_goes_to_the_next_in_turn() {
    let budget = budget(10.0, 1, ms(5000));
    assert_eq!(budget.admit(client("a")).await, granted(ms(0)));
    let mut dropped = Box::pin(budget.admit(client("a")));
    assert!(poll_once(&mut dropped).await.is_pending());
    let mut next = Box::pin(budget.admit(client("b")));
    assert!(poll_once(&mut next).await.is_pending());
    tokio::time::advance(ms(100)).await;
    settle().await;
    assert_eq!(budget.view(now()).waiting, 1, "the token went to `dropped`");
    drop(dropped);
    assert_eq!(poll_once(&mut next).await, Poll::Ready(granted(ms(100))));
}

#[tokio::test(start_paused = true)]
async fn a_token_sent_to_a_dropped_call_goes_back_to_the_bucket() {
    let budget = budget(10.0, 1, ms(5000));
    assert_eq!(budget.admit(client("a")).await, granted(ms(0)));
    let mut dropped = Box::pin(budget.admit(client("a")));
    assert!(poll_once(&mut dropped).await.is_pending());
    tokio::time::advance(ms(100)).await;
    settle().await;
    drop(dropped);
    assert_eq!(budget.try_refresh(), RefreshAdmission::Granted);
    assert_eq!(budget.try_refresh(), RefreshAdmission::Skipped);
}

#[tokio::test(start_paused = true)]
async fn a_call_dropped_before_its_turn_leaves_the_queue() {
    let budget = budget(10.0, 1, ms(5000));
    assert_eq!(budget.admit(client("a")).await, granted(ms(0)));
    let mut dropped = Box::pin(budget.admit(client("a")));
    assert!(poll_once(&mut dropped).await.is_pending());
    assert_eq!(budget.view(now()).waiting, 1);
    drop(dropped);
    assert_eq!(budget.view(now()).waiting, 0);
    assert_eq!(budget.admit(client("b")).await, granted(ms(100)));
}

#[tokio::test(start_paused = true)]
async fn a_pause_holds_calls_until_it_ends_or_refuses_them_past_their_wait() {
    let budget = budget(10.0, 5, ms(3000));
    budget.pause(ms(2000));
    assert_eq!(budget.admit(client("a")).await, granted(ms(2000)));
    budget.pause(ms(4200));
    assert_eq!(
        budget.admit(client("a")).await,
        Admission::Refused {
            retry_after_secs: 5,
            reason: RefusalReason::Paused,
            waited: Duration::ZERO,
        }
    );
}

#[tokio::test(start_paused = true)]
async fn a_pause_landing_while_calls_wait_holds_them_too() {
    let budget = budget(10.0, 1, ms(3000));
    assert_eq!(budget.admit(client("a")).await, granted(ms(0)));
    let waiting = tokio::spawn({
        let budget = Arc::clone(&budget);
        async move { budget.admit(client("a")).await }
    });
    settle().await;
    budget.pause(ms(1000));
    assert_eq!(waiting.await.unwrap(), granted(ms(1000)));
}

#[tokio::test(start_paused = true)]
async fn a_reload_changes_the_pace_of_waiting_calls_at_once() {
    let budget = budget(1.0, 1, ms(5000));
    assert_eq!(budget.admit(client("a")).await, granted(ms(0)));
    let waiting = tokio::spawn({
        let budget = Arc::clone(&budget);
        async move { budget.admit(client("a")).await }
    });
    settle().await;
    // The driver sleeps until 1 s; at 100 tokens a second the token is due at 10 ms.
    budget.reconfigure(&settings(100.0, 1, ms(5000)), now());
    assert_eq!(waiting.await.unwrap(), granted(ms(10)));
    budget.reconfigure(&settings(0.5, 1, ms(5000)), now());
    assert_eq!(budget.admit(client("a")).await, granted(ms(2000)));
}

#[tokio::test(start_paused = true)]
async fn a_refresh_never_takes_a_token_a_client_waits_for() {
    let budget = budget(10.0, 1, ms(5000));
    assert_eq!(budget.try_refresh(), RefreshAdmission::Granted);
    let waiting = tokio::spawn({
        let budget = Arc::clone(&budget);
        async move { budget.admit(client("a")).await }
    });
    settle().await;
    tokio::time::advance(ms(99)).await;
    assert_eq!(budget.try_refresh(), RefreshAdmission::Skipped);
    assert_eq!(waiting.await.unwrap(), granted(ms(100)));
    tokio::time::advance(ms(100)).await;
    assert_eq!(budget.try_refresh(), RefreshAdmission::Granted);
}
