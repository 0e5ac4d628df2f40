//! The open-loop client's send times: slot `i` is due at `start + i / rate`, whoever sends it and whenever.
//!
//! Connections take slots in order from one counter; a slot taken late (every
//! connection was busy) is still timed from when it was due, so a stall of
//! the server counts for every request it held back (no coordinated
//! omission), as wrk2 does.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Every send time of one run.
#[derive(Debug)]
pub struct Schedule {
    start: Instant,
    interval_ns: f64,
    slots: u64,
    first_measured: u64,
    next: AtomicU64,
}

/// One request's place in the schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slot {
    pub index: u64,
    /// When it is due: its latency is counted from here.
    pub due: Instant,
    /// False during the warm-up, whose answers are not counted.
    pub measured: bool,
}

impl Schedule {
    /// `rate` requests a second from `start`: `warmup`, then `duration` measured.
    pub fn new(start: Instant, rate: f64, warmup: Duration, duration: Duration) -> Schedule {
        assert!(rate > 0.0, "a rate above 0");
        let count = |span: Duration| (span.as_secs_f64() * rate).round() as u64;
        let first_measured = count(warmup);
        Schedule {
            start,
            interval_ns: 1e9 / rate,
            slots: first_measured + count(duration),
            first_measured,
            next: AtomicU64::new(0),
        }
    }

    /// The next slot nobody has taken, or None when the run is over.
    pub fn take(&self) -> Option<Slot> {
        let index = self.next.fetch_add(1, Ordering::Relaxed);
        (index < self.slots).then(|| Slot {
            index,
            due: self.due(index),
            measured: index >= self.first_measured,
        })
    }

    pub fn due(&self, index: u64) -> Instant {
        self.start + Duration::from_nanos((index as f64 * self.interval_ns) as u64)
    }

    /// When the measured part begins and ends (the last slot's due time plus one interval).
    pub fn measured_window(&self) -> (Instant, Instant) {
        (self.due(self.first_measured), self.due(self.slots))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_come_in_order_one_interval_apart_then_run_out() {
        let start = Instant::now();
        let schedule = Schedule::new(
            start,
            1000.0,
            Duration::from_millis(2),
            Duration::from_millis(3),
        );
        let slots: Vec<Slot> = std::iter::from_fn(|| schedule.take()).collect();
        assert_eq!(slots.len(), 5);
        for (i, slot) in slots.iter().enumerate() {
            assert_eq!(slot.index, i as u64);
            assert_eq!(slot.due, start + Duration::from_millis(i as u64));
            assert_eq!(slot.measured, i >= 2, "slot {i}");
        }
        assert_eq!(schedule.take(), None);
        let (from, to) = schedule.measured_window();
        assert_eq!(
            (from - start, to - start),
            (Duration::from_millis(2), Duration::from_millis(5))
        );
    }

    #[test]
    fn fractional_intervals_do_not_drift() {
        let start = Instant::now();
        let schedule = Schedule::new(start, 3.0, Duration::ZERO, Duration::from_secs(10));
        assert_eq!(schedule.due(30) - start, Duration::from_secs(10));
    }
}
