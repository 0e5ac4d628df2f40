//! A connection's clock: milliseconds since it was accepted, on the kernel's coarse monotonic clock.
//!
//! A connection notes the time when a head begins, when a request ends and
//! when bytes go out: several times per request. `Instant::now()` reads the
//! clock source each time (tens of nanoseconds in a VM); the coarse clock
//! (`CLOCK_MONOTONIC_COARSE`) is the time the kernel stored at its last tick,
//! one load from the vDSO page, behind by at most one tick (1-4 ms). nginx
//! keeps its timers on a cached clock for the same reason. A time read here
//! turns back into an `Instant` with `slack` added, so a deadline built on it
//! is never early, and late by at most twice the slack.

use std::sync::LazyLock;
use std::time::{Duration, Instant};

use rustix::time::{clock_getres, clock_gettime, ClockId, Timespec};

#[cfg(any(target_os = "linux", target_os = "android"))]
const COARSE: ClockId = ClockId::MonotonicCoarse;
#[cfg(not(any(target_os = "linux", target_os = "android")))]
const COARSE: ClockId = ClockId::Monotonic;

/// How far a coarse reading, cut to whole milliseconds, may fall behind the
/// true time elapsed: one tick for each of the two readings compared, at
/// most, plus the millisecond cut off.
static SLACK: LazyLock<Duration> =
    LazyLock::new(|| duration(clock_getres(COARSE)) + Duration::from_millis(1));

fn duration(time: Timespec) -> Duration {
    Duration::new(
        u64::try_from(time.tv_sec).unwrap_or(0),
        u32::try_from(time.tv_nsec).unwrap_or(0),
    )
}

/// Time since a connection was accepted, read cheaply.
#[derive(Debug)]
pub(super) struct ConnectionClock {
    /// When the connection was accepted, on the precise clock.
    origin: Instant,
    /// The coarse clock's reading at `origin`.
    origin_coarse: Duration,
}

impl ConnectionClock {
    pub fn start() -> ConnectionClock {
        let origin_coarse = duration(clock_gettime(COARSE));
        ConnectionClock {
            origin: Instant::now(),
            origin_coarse,
        }
    }

    /// Milliseconds since the connection was accepted, as the coarse clock tells them.
    pub fn now_ms(&self) -> u64 {
        let elapsed = duration(clock_gettime(COARSE)).saturating_sub(self.origin_coarse);
        u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX)
    }

    /// The instant a reading of `ms` stands for, never before the true time of the reading.
    pub fn instant(&self, ms: u64) -> Instant {
        self.origin + Duration::from_millis(ms) + *SLACK
    }

    /// The instant the connection was accepted.
    #[cfg(test)]
    pub fn origin(&self) -> Instant {
        self.origin
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The one rule the connection's timers rest on: a reading, turned back
    /// into an instant, is never before the moment it was read.
    #[test]
    fn a_reading_is_never_before_the_time_it_was_read() {
        let clock = ConnectionClock::start();
        let deadline = Instant::now() + Duration::from_millis(60);
        let mut readings = 0;
        while Instant::now() < deadline {
            let before = Instant::now();
            let reading = clock.now_ms();
            assert!(
                clock.instant(reading) >= before,
                "a reading {:?} early",
                before - clock.instant(reading)
            );
            readings += 1;
        }
        assert!(readings > 100, "only {readings} readings");
    }

    #[test]
    fn a_reading_is_late_by_at_most_twice_the_slack() {
        let clock = ConnectionClock::start();
        let after = Instant::now();
        let reading = clock.instant(clock.now_ms());
        assert!(reading <= after + *SLACK * 2, "{:?} late", reading - after);
        assert!(*SLACK < Duration::from_millis(20), "slack {:?}", *SLACK);
    }
}
