//! Where the cache reads the time: the monotonic clock, or in unit tests a clock the test moves by hand.
//!
//! Outside tests a [`Clock`] holds nothing and [`Clock::now`] is
//! `Instant::now()`: a HIT pays nothing for the clock being injectable.

use std::time::Instant;

#[cfg(test)]
use std::sync::{Arc, Mutex};
#[cfg(test)]
use std::time::Duration;

/// The cache's "now".
#[derive(Clone, Default)]
pub(crate) struct Clock {
    /// A test's hand-moved time, when set.
    #[cfg(test)]
    manual: Option<Arc<Mutex<Instant>>>,
}

impl Clock {
    /// The instant now.
    #[inline]
    pub fn now(&self) -> Instant {
        #[cfg(test)]
        if let Some(manual) = &self.manual {
            return *manual.lock().unwrap();
        }
        Instant::now()
    }

    /// A clock that stands still at `start` until [`Clock::advance`] moves it.
    #[cfg(test)]
    pub fn manual(start: Instant) -> Clock {
        Clock {
            manual: Some(Arc::new(Mutex::new(start))),
        }
    }

    /// Moves a manual clock (and every clone of it) forward by `by`.
    #[cfg(test)]
    pub fn advance(&self, by: Duration) {
        let manual = self.manual.as_ref().expect("a manual clock");
        *manual.lock().unwrap() += by;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_clock_moves_only_by_hand_and_for_every_clone() {
        let start = Instant::now();
        let clock = Clock::manual(start);
        let other = clock.clone();
        assert_eq!(clock.now(), start);
        other.advance(Duration::from_secs(5));
        assert_eq!(clock.now(), start + Duration::from_secs(5));
        assert!(Clock::default().now() >= start);
    }
}
