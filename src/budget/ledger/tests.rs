//! Unit tests of one budget's ledger: the fast path, queueing, turns, withdrawal, refreshes, pauses; clock passed in.

use super::*;
use crate::domain::Fingerprint;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn ledger(rate: f64, burst: u32, max_wait: Duration, now: Instant) -> Ledger {
    let settings = BudgetSettings {
        rate,
        burst,
        max_wait,
    };
    Ledger::new(&settings, now)
}

fn client(name: &str) -> ClientIdentity {
    ClientIdentity::Token(Fingerprint::of(name.as_bytes()))
}

fn queued(arrival: Arrival) -> Place {
    match arrival {
        Arrival::Queued(place) => place,
        other => panic!("expected a queued call, got {other:?}"),
    }
}

fn has_token(place: &mut Place) -> bool {
    place.receiver.try_recv().is_ok()
}

#[test]
fn a_token_there_and_nobody_waiting_is_granted_at_once() {
    let t0 = Instant::now();
    let mut l = ledger(10.0, 2, ms(1000), t0);
    assert!(matches!(l.arrive(client("a"), t0), Arrival::Granted));
    assert!(matches!(l.arrive(client("a"), t0), Arrival::Granted));
    let place = queued(l.arrive(client("a"), t0));
    assert!(
        place.start_driver,
        "the first queued call starts the driver"
    );
    assert_eq!(place.deadline, t0 + ms(1000));
    assert!(!queued(l.arrive(client("b"), t0)).start_driver);
}

#[test]
fn a_queued_call_gets_the_next_token_when_it_comes() {
    let t0 = Instant::now();
    let mut l = ledger(10.0, 1, ms(1000), t0);
    assert!(matches!(l.arrive(client("a"), t0), Arrival::Granted));
    let mut place = queued(l.arrive(client("a"), t0));
    assert_eq!(l.drive(t0 + ms(50)), DriverStep::WaitUntil(t0 + ms(100)));
    assert!(!has_token(&mut place));
    assert_eq!(
        l.drive(t0 + ms(100)),
        DriverStep::Done,
        "nobody left: the driver stops"
    );
    assert!(has_token(&mut place));
}

#[test]
fn a_newcomer_never_jumps_the_queue() {
    let t0 = Instant::now();
    let mut l = ledger(10.0, 1, ms(1000), t0);
    assert!(matches!(l.arrive(client("a"), t0), Arrival::Granted));
    let mut first = queued(l.arrive(client("a"), t0));
    // The token has come but no driver ran yet: the newcomer queues, the
    // earlier call gets it.
    let mut second = queued(l.arrive(client("a"), t0 + ms(100)));
    assert!(has_token(&mut first) && !has_token(&mut second));
}

#[test]
fn waiting_identities_are_granted_in_rotation() {
    let t0 = Instant::now();
    let mut l = ledger(10.0, 1, ms(2000), t0);
    assert!(matches!(l.arrive(client("a"), t0), Arrival::Granted));
    let mut a: Vec<_> = (0..5).map(|_| queued(l.arrive(client("a"), t0))).collect();
    let mut b = queued(l.arrive(client("b"), t0));
    l.drive(t0 + ms(100));
    assert!(has_token(&mut a[0]) && !has_token(&mut b));
    l.drive(t0 + ms(200));
    assert!(has_token(&mut b), "b waited one of a's turns, not five");
    assert!(!has_token(&mut a[1]));
    l.drive(t0 + ms(300));
    assert!(has_token(&mut a[1]));
}

#[test]
fn a_turn_that_cannot_come_within_max_wait_is_refused_at_once() {
    let t0 = Instant::now();
    let mut l = ledger(10.0, 1, ms(250), t0);
    assert!(matches!(l.arrive(client("a"), t0), Arrival::Granted));
    queued(l.arrive(client("a"), t0)); // token at 100 ms
    queued(l.arrive(client("a"), t0)); // 200 ms
    match l.arrive(client("a"), t0) {
        Arrival::Refused {
            reason,
            retry_after_secs,
        } => assert_eq!((reason, retry_after_secs), (RefusalReason::Exhausted, 1)),
        other => panic!("300 ms is past the 250 ms wait: {other:?}"),
    }
    // Another identity is not behind a's calls: it may still get a turn.
    queued(l.arrive(client("b"), t0));
}

#[test]
fn no_wait_allowed_means_refused_unless_a_token_is_there() {
    let t0 = Instant::now();
    let mut l = ledger(10.0, 1, Duration::ZERO, t0);
    assert!(matches!(l.arrive(client("a"), t0), Arrival::Granted));
    assert!(matches!(l.arrive(client("a"), t0), Arrival::Refused { .. }));
}

#[test]
fn a_pause_holds_every_grant_until_it_ends() {
    let t0 = Instant::now();
    let mut l = ledger(10.0, 5, ms(3000), t0);
    assert!(l.pause(t0 + ms(2000)));
    let mut place = queued(l.arrive(client("a"), t0));
    assert_eq!(l.drive(t0 + ms(1000)), DriverStep::WaitUntil(t0 + ms(2000)));
    assert!(!has_token(&mut place));
    assert_eq!(l.try_refresh(t0 + ms(1000)), RefreshAdmission::Skipped);
    assert_eq!(l.drive(t0 + ms(2000)), DriverStep::Done);
    assert!(has_token(&mut place));
}

#[test]
fn a_pause_past_the_wait_refuses_at_once_with_the_pause_left() {
    let t0 = Instant::now();
    let mut l = ledger(10.0, 5, ms(2000), t0);
    l.pause(t0 + ms(4500));
    match l.arrive(client("a"), t0 + ms(500)) {
        Arrival::Refused {
            reason,
            retry_after_secs,
        } => assert_eq!((reason, retry_after_secs), (RefusalReason::Paused, 4)),
        other => panic!("expected a refusal, got {other:?}"),
    }
    let (reason, _) = l.refusal(&client("a"), t0 + ms(4600));
    assert_eq!(reason, RefusalReason::Exhausted, "the pause is over");
}

#[test]
fn a_call_that_gives_up_before_its_turn_leaves_its_place() {
    let t0 = Instant::now();
    let mut l = ledger(10.0, 1, ms(1000), t0);
    assert!(matches!(l.arrive(client("a"), t0), Arrival::Granted));
    let mut gone = queued(l.arrive(client("a"), t0));
    let mut next = queued(l.arrive(client("b"), t0));
    let withdrawal = l.withdraw(&client("a"), gone.ticket, &mut gone.receiver);
    assert_eq!(withdrawal, Withdrawal::Withdrawn);
    l.drive(t0 + ms(100));
    assert!(has_token(&mut next));
}

#[test]
fn a_token_sent_to_a_call_that_went_away_goes_to_the_next_in_turn() {
    let t0 = Instant::now();
    let mut l = ledger(10.0, 1, ms(1000), t0);
    assert!(matches!(l.arrive(client("a"), t0), Arrival::Granted));
    let mut gone = queued(l.arrive(client("a"), t0));
    let mut next = queued(l.arrive(client("b"), t0));
    l.drive(t0 + ms(100)); // gone's token is in its channel
    let withdrawal = l.withdraw(&client("a"), gone.ticket, &mut gone.receiver);
    assert_eq!(withdrawal, Withdrawal::AlreadyGranted);
    l.return_token(t0 + ms(100));
    assert!(has_token(&mut next));
}

#[test]
fn a_token_sent_to_a_call_that_went_away_goes_back_to_the_bucket() {
    let t0 = Instant::now();
    let mut l = ledger(10.0, 1, ms(1000), t0);
    assert!(matches!(l.arrive(client("a"), t0), Arrival::Granted));
    let mut gone = queued(l.arrive(client("a"), t0));
    l.drive(t0 + ms(100));
    assert_eq!(
        l.withdraw(&client("a"), gone.ticket, &mut gone.receiver),
        Withdrawal::AlreadyGranted
    );
    l.return_token(t0 + ms(100));
    assert!(matches!(
        l.arrive(client("c"), t0 + ms(100)),
        Arrival::Granted
    ));
}

#[test]
fn a_refresh_takes_only_a_token_no_client_waits_for() {
    let t0 = Instant::now();
    let mut l = ledger(10.0, 2, ms(1000), t0);
    assert_eq!(l.try_refresh(t0), RefreshAdmission::Granted);
    assert!(matches!(l.arrive(client("a"), t0), Arrival::Granted));
    assert_eq!(l.try_refresh(t0), RefreshAdmission::Skipped, "no token");
    let _waiting = queued(l.arrive(client("a"), t0));
    // A token has come, but a client waits for it.
    assert_eq!(l.try_refresh(t0 + ms(100)), RefreshAdmission::Skipped);
    assert_eq!(l.view(t0).waiting, 1, "a refresh never queues");
}

#[test]
fn a_budget_turned_off_by_a_reload_lets_every_waiting_call_go() {
    let t0 = Instant::now();
    let mut l = ledger(1.0, 1, ms(5000), t0);
    assert!(matches!(l.arrive(client("a"), t0), Arrival::Granted));
    let mut places: Vec<_> = (0..3).map(|_| queued(l.arrive(client("a"), t0))).collect();
    let off = BudgetSettings {
        rate: 0.0,
        burst: 1,
        max_wait: ms(5000),
    };
    l.reconfigure(&off, t0);
    assert!(places.iter_mut().all(has_token));
}

#[test]
fn a_ledger_is_at_rest_only_when_a_new_one_would_be_the_same() {
    let t0 = Instant::now();
    let mut l = ledger(10.0, 1, ms(1000), t0);
    assert!(l.is_at_rest(t0));
    assert!(matches!(l.arrive(client("a"), t0), Arrival::Granted));
    assert!(!l.is_at_rest(t0), "the bucket is not full");
    assert!(l.is_at_rest(t0 + ms(100)));
    l.pause(t0 + ms(500));
    assert!(!l.is_at_rest(t0 + ms(200)), "paused");
    let place = queued(l.arrive(client("a"), t0 + ms(200)));
    assert!(place.start_driver);
    assert!(!l.is_at_rest(t0 + ms(200)));
    assert_eq!(l.drive(t0 + ms(500)), DriverStep::Done);
    assert!(l.is_at_rest(t0 + ms(600)));
}

#[test]
fn the_view_shows_tokens_waiting_calls_and_the_pause() {
    let t0 = Instant::now();
    let mut l = ledger(10.0, 3, ms(1000), t0);
    assert!(matches!(l.arrive(client("a"), t0), Arrival::Granted));
    l.pause(t0 + ms(700));
    let _place = queued(l.arrive(client("a"), t0));
    let view = l.view(t0);
    assert_eq!(view.tokens, Some(2));
    assert_eq!(view.waiting, 1);
    assert_eq!(view.paused_until, Some(t0 + ms(700)));
}

fn sharing(rate: f64, burst: u32, max_wait: Duration, now: Instant) -> Ledger {
    let settings = BudgetSettings {
        rate,
        burst,
        max_wait,
    };
    Ledger::sharing(&settings, ms(100), now)
}

fn granted(tokens: u32, next_in: Duration) -> Result<LeaseAnswer, SharedError> {
    Ok(LeaseAnswer::Granted { tokens, next_in })
}

#[test]
fn a_sharing_ledger_grants_only_leased_tokens_leasing_what_waits() {
    let t0 = Instant::now();
    let mut l = sharing(30.0, 5, ms(1000), t0);
    let mut first = queued(l.arrive(client("a"), t0));
    assert!(first.start_driver, "nothing leased: the driver leases");
    let mut second = queued(l.arrive(client("b"), t0));
    let shape = BucketShape::new(30.0, 5);
    assert_eq!(l.drive(t0), DriverStep::Lease { wanted: 2, shape });
    assert_eq!(l.leased(granted(1, ms(33)), t0), None);
    assert!(has_token(&mut first));
    assert!(!has_token(&mut second));
    assert_eq!(l.drive(t0), DriverStep::WaitUntil(t0 + ms(33)));
    assert_eq!(l.drive(t0 + ms(33)), DriverStep::Lease { wanted: 1, shape });
    l.leased(granted(2, Duration::ZERO), t0 + ms(33));
    assert!(has_token(&mut second));
    assert_eq!(l.drive(t0 + ms(33)), DriverStep::Done);
    assert!(
        matches!(l.arrive(client("c"), t0 + ms(40)), Arrival::Granted),
        "a token leased and left over goes at once"
    );
}

#[test]
fn a_pause_found_by_a_lease_holds_every_call_until_it_ends() {
    let t0 = Instant::now();
    let mut l = sharing(30.0, 5, ms(5000), t0);
    let mut place = queued(l.arrive(client("a"), t0));
    assert!(matches!(l.drive(t0), DriverStep::Lease { .. }));
    let left = ms(2000);
    let paused = l.leased(Ok(LeaseAnswer::Paused { left }), t0);
    assert_eq!(paused, Some(t0 + left));
    assert_eq!(l.view(t0).paused_until, Some(t0 + left));
    assert_eq!(l.drive(t0 + ms(10)), DriverStep::WaitUntil(t0 + left));
    assert!(matches!(l.drive(t0 + left), DriverStep::Lease { .. }));
    l.leased(granted(1, Duration::ZERO), t0 + left);
    assert!(has_token(&mut place));
}

#[test]
fn without_an_answer_from_redis_the_local_bucket_paces_alone() {
    let t0 = Instant::now();
    let mut l = sharing(10.0, 2, ms(5000), t0);
    let mut places: Vec<_> = (0..4).map(|_| queued(l.arrive(client("a"), t0))).collect();
    assert!(matches!(l.drive(t0), DriverStep::Lease { .. }));
    l.leased(Err(SharedError::Unavailable), t0);
    let got = |places: &mut Vec<Place>| places.iter_mut().map(has_token).filter(|got| *got).count();
    assert_eq!(got(&mut places), 2, "the local burst");
    assert_eq!(l.drive(t0), DriverStep::WaitUntil(t0 + ms(100)));
    assert_eq!(l.drive(t0 + ms(100)), DriverStep::WaitUntil(t0 + ms(200)));
    assert_eq!(got(&mut places), 1, "then the full local rate");
    let retry = t0 + crate::cache::shared::REST;
    assert!(
        matches!(l.drive(retry), DriverStep::Lease { .. }),
        "a second later Redis is asked again"
    );
}

#[test]
fn a_refresh_that_finds_no_leased_token_has_one_leased_for_the_next() {
    let t0 = Instant::now();
    let mut l = sharing(30.0, 5, ms(1000), t0);
    assert_eq!(l.try_refresh(t0), RefreshAdmission::Skipped, "never waits");
    assert!(l.start_driver(t0), "the driver leases a reserve");
    assert!(!l.start_driver(t0), "one driver");
    let shape = BucketShape::new(30.0, 5);
    assert_eq!(l.drive(t0), DriverStep::Lease { wanted: 1, shape });
    l.leased(granted(1, Duration::ZERO), t0);
    assert_eq!(l.drive(t0), DriverStep::Done);
    assert_eq!(l.try_refresh(t0), RefreshAdmission::Granted);
    let mut local = ledger(30.0, 5, ms(1000), t0);
    assert!(!local.start_driver(t0), "a ledger alone leases nothing");
}

#[test]
fn a_call_that_must_lease_may_wait_one_round_trip_beyond_max_wait() {
    let t0 = Instant::now();
    let mut l = sharing(30.0, 5, Duration::ZERO, t0);
    let mut place = queued(l.arrive(client("a"), t0));
    assert_eq!(
        place.deadline,
        t0 + ms(100),
        "max_wait 0s plus the round trip"
    );
    assert!(matches!(l.drive(t0), DriverStep::Lease { .. }));
    l.leased(granted(1, Duration::ZERO), t0 + ms(1));
    assert!(has_token(&mut place));
    l.leased(granted(1, Duration::ZERO), t0 + ms(2));
    assert!(
        matches!(l.arrive(client("a"), t0 + ms(3)), Arrival::Granted),
        "a leased token there: no grace needed, none given"
    );
}
