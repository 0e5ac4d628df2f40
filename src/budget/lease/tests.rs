//! Unit tests of the supply of leased tokens: lease sizes, and the fall back to pacing alone and the way back; clock passed in.

use super::*;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn supply(rate: f64, burst: u32) -> Supply {
    let settings = BudgetSettings {
        rate,
        burst,
        max_wait: Duration::from_secs(2),
    };
    Supply::new(&settings).expect("on")
}

fn granted(tokens: u32, next_in: Duration) -> Result<LeaseAnswer, SharedError> {
    Ok(LeaseAnswer::Granted { tokens, next_in })
}

fn wanted(step: Option<SupplyStep>) -> u32 {
    match step {
        Some(SupplyStep::Lease { wanted, .. }) => wanted,
        other => panic!("expected a lease, got {other:?}"),
    }
}

#[test]
fn a_lease_is_a_tenth_of_the_rate_within_one_and_the_burst() {
    assert_eq!(lease_size(30.0, 5), 3);
    assert_eq!(lease_size(30.0, 2), 2, "never above the burst");
    assert_eq!(lease_size(5.0, 10), 1, "at least one");
    assert_eq!(lease_size(0.01, 10), 1);
    assert_eq!(lease_size(1_000.0, 40), 40);
    assert_eq!(lease_size(1_000.0, 500), 100);
    assert_eq!(lease_size(20.0, 0), 1);
}

#[test]
fn a_sharing_replica_leases_what_its_calls_need_and_spends_it() {
    let t0 = Instant::now();
    let mut s = supply(30.0, 5);
    assert_eq!(s.source(t0), Source::Lease, "nothing leased yet");
    assert_eq!(wanted(s.step(t0, 1)), 1, "no more than the calls waiting");
    assert_eq!(wanted(s.step(t0, 50)), 3, "no more than a lease");
    assert_eq!(s.settle(granted(2, Duration::ZERO), t0), None);
    assert_eq!((s.source(t0), s.leased()), (Source::Leased, 2));
    assert_eq!(s.step(t0, 5), None, "a token is there");
    s.spend();
    s.spend();
    assert_eq!(s.source(t0), Source::Lease);
}

#[test]
fn when_redis_says_the_next_token_comes_later_the_driver_waits_for_it() {
    let t0 = Instant::now();
    let mut s = supply(30.0, 5);
    s.settle(granted(0, ms(20)), t0);
    assert_eq!(
        s.step(t0 + ms(5), 3),
        Some(SupplyStep::WaitUntil(t0 + ms(20)))
    );
    assert_eq!(wanted(s.step(t0 + ms(20), 3)), 3);
}

#[test]
fn no_answer_paces_alone_then_probes_redis_every_retry() {
    let t0 = Instant::now();
    let mut s = supply(30.0, 5);
    s.settle(granted(1, Duration::ZERO), t0);
    s.settle(Err(SharedError::Timeout), t0);
    assert_eq!(
        s.mode(),
        Mode::Alone {
            retry_at: t0 + RETRY
        }
    );
    assert_eq!(s.source(t0), Source::Local, "the local bucket alone paces");
    assert_eq!(s.step(t0, 4), None);
    assert_eq!(s.source(t0 + RETRY), Source::Lease, "time to probe");
    assert_eq!(wanted(s.step(t0 + RETRY, 4)), 3);
    s.settle(Err(SharedError::Resting), t0 + RETRY);
    assert_eq!(s.source(t0 + RETRY), Source::Local, "still alone");
    let soon = t0 + RETRY + RETRY_WHILE_RESTING;
    assert_eq!(
        s.source(soon),
        Source::Lease,
        "a resting tier is asked soon again"
    );
    s.settle(Err(SharedError::Unavailable), soon);
    assert_eq!(
        s.mode(),
        Mode::Alone {
            retry_at: soon + RETRY
        }
    );
    let back = soon + RETRY;
    s.settle(granted(0, ms(10)), back);
    assert_eq!(s.mode(), Mode::Sharing, "the first answer shares again");
    assert_eq!(
        s.source(back),
        Source::Leased,
        "the token leased before is kept"
    );
}

#[test]
fn a_pause_found_in_redis_is_reported_and_no_lease_is_made_during_it() {
    let t0 = Instant::now();
    let mut s = supply(30.0, 5);
    let left = ms(1_500);
    assert_eq!(s.settle(Ok(LeaseAnswer::Paused { left }), t0), Some(left));
    assert_eq!(
        s.step(t0 + ms(10), 1),
        Some(SupplyStep::WaitUntil(t0 + left))
    );
}

#[test]
fn a_reload_changes_what_the_next_lease_asks_for() {
    let t0 = Instant::now();
    let mut s = supply(30.0, 5);
    s.reshape(&BudgetSettings {
        rate: 100.0,
        burst: 50,
        max_wait: Duration::from_secs(1),
    });
    match s.step(t0, 99) {
        Some(SupplyStep::Lease { wanted, shape }) => {
            assert_eq!(wanted, 10);
            assert_eq!(shape, BucketShape::new(100.0, 50));
        }
        other => panic!("{other:?}"),
    }
}
