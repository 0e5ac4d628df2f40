//! The token bucket, in its GCRA form: `rate` tokens a second, at most `burst` held; pure, `now` passed in.
//!
//! The bucket keeps one instant, when it will be full again, instead of a
//! token count and a refill time: taking a token moves that instant one
//! interval later, and time passing refills it by itself. No float drifts,
//! and the next token's instant is one subtraction away.

use std::time::{Duration, Instant};

use crate::config::BudgetSettings;

/// How fast tokens come and how many may be held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pace {
    interval: Duration,
    burst: u32,
}

impl Pace {
    /// `rate` tokens a second, at most `burst` (at least 1) held; none when
    /// `rate` is zero (or not a positive number): the budget is off.
    pub fn new(rate: f64, burst: u32) -> Option<Pace> {
        if !(rate.is_finite() && rate > 0.0) {
            return None;
        }
        Some(Pace {
            interval: Duration::from_secs_f64(1.0 / rate),
            burst: burst.max(1),
        })
    }

    /// The pace `[upstream.budget]` asks for; none when it is off.
    pub fn from_settings(settings: &BudgetSettings) -> Option<Pace> {
        Pace::new(settings.rate, settings.burst)
    }

    /// How long an empty bucket takes to fill.
    fn capacity(&self) -> Duration {
        self.interval.saturating_mul(self.burst)
    }

    /// The tokens `debt` (time until full) leaves in the bucket, fractional.
    fn tokens_left(&self, debt: Duration) -> f64 {
        self.capacity().saturating_sub(debt).as_secs_f64() / self.interval.as_secs_f64()
    }
}

/// A bucket of tokens; off (every take succeeds) without a pace.
#[derive(Debug, Clone)]
pub struct Bucket {
    pace: Option<Pace>,
    /// When the bucket holds `burst` tokens again; at or before now: full.
    full_at: Instant,
}

impl Bucket {
    /// A full bucket.
    pub fn new(pace: Option<Pace>, now: Instant) -> Bucket {
        Bucket { pace, full_at: now }
    }

    /// Time until the bucket is full again.
    fn debt(&self, now: Instant) -> Duration {
        self.full_at.saturating_duration_since(now)
    }

    /// Takes one token, or says when the next one comes.
    pub fn try_take(&mut self, now: Instant) -> Result<(), Instant> {
        let Some(pace) = self.pace else {
            return Ok(());
        };
        let debt = self.debt(now) + pace.interval;
        match debt.checked_sub(pace.capacity()) {
            Some(early) if !early.is_zero() => Err(now + early),
            _ => {
                self.full_at = now + debt;
                Ok(())
            }
        }
    }

    /// When a token is there to take: `now` if one is.
    pub fn next_token_at(&self, now: Instant) -> Instant {
        self.token_at(now, 0)
    }

    /// When a call behind `ahead` others could take its token, if nobody
    /// else takes one meanwhile.
    pub fn token_at(&self, now: Instant, ahead: usize) -> Instant {
        let Some(pace) = self.pace else {
            return now;
        };
        let takes = u32::try_from(ahead.saturating_add(1)).unwrap_or(u32::MAX);
        let needed = self.debt(now) + pace.interval.saturating_mul(takes);
        now + needed.saturating_sub(pace.capacity())
    }

    /// Whole tokens in the bucket; none when it is off.
    pub fn tokens(&self, now: Instant) -> Option<u32> {
        let pace = self.pace?;
        // The float is at most `burst`; a hair under a whole token is not one.
        Some((pace.tokens_left(self.debt(now)) + 1e-9).floor() as u32)
    }

    /// Full: it holds `burst` tokens (or is off), as a new bucket would.
    pub fn is_full(&self, now: Instant) -> bool {
        self.pace.is_none() || self.full_at <= now
    }

    /// Puts back a token that was taken but not spent; never above full.
    pub fn give_back(&mut self, now: Instant) {
        if let Some(pace) = self.pace {
            self.full_at = now + self.debt(now).saturating_sub(pace.interval);
        }
    }

    /// A new pace for calls from now on (a reload). The tokens held are
    /// kept, at most the new `burst`: a change never grants a fresh burst.
    /// A bucket turned on starts full, as a new one would.
    pub fn set_pace(&mut self, pace: Option<Pace>, now: Instant) {
        match (self.pace, pace) {
            (Some(old), Some(new)) if old != new => {
                let held = old.tokens_left(self.debt(now)).min(f64::from(new.burst));
                let missing = f64::from(new.burst) - held;
                self.full_at = now + new.interval.mul_f64(missing);
            }
            (None, Some(_)) => self.full_at = now,
            _ => {}
        }
        self.pace = pace;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn bucket(rate: f64, burst: u32, now: Instant) -> Bucket {
        Bucket::new(Pace::new(rate, burst), now)
    }

    fn take_all(bucket: &mut Bucket, now: Instant) -> u32 {
        let mut taken = 0;
        while bucket.try_take(now).is_ok() {
            taken += 1;
            assert!(taken <= 1_000, "the bucket never ran dry");
        }
        taken
    }

    #[test]
    fn a_full_bucket_gives_its_burst_then_says_when_the_next_token_comes() {
        let t0 = Instant::now();
        let mut b = bucket(10.0, 4, t0);
        assert_eq!(b.tokens(t0), Some(4));
        assert_eq!(take_all(&mut b, t0), 4);
        assert_eq!(b.tokens(t0), Some(0));
        assert_eq!(b.try_take(t0), Err(t0 + ms(100)));
        assert_eq!(b.next_token_at(t0), t0 + ms(100));
        assert_eq!(b.try_take(t0 + ms(99)), Err(t0 + ms(100)));
        assert_eq!(b.try_take(t0 + ms(100)), Ok(()));
        assert_eq!(b.try_take(t0 + ms(100)), Err(t0 + ms(200)));
    }

    #[test]
    fn a_quiet_spell_refills_at_most_the_burst() {
        let t0 = Instant::now();
        let mut b = bucket(10.0, 4, t0);
        take_all(&mut b, t0);
        assert_eq!(b.tokens(t0 + ms(250)), Some(2));
        assert!(!b.is_full(t0 + ms(399)));
        assert!(b.is_full(t0 + ms(400)));
        assert_eq!(take_all(&mut b, t0 + Duration::from_secs(60)), 4);
    }

    #[test]
    fn calls_taken_as_fast_as_allowed_stay_within_burst_plus_rate_times_t() {
        let (rate, burst) = (20.0, 5);
        let t0 = Instant::now();
        let mut b = bucket(rate, burst, t0);
        let (mut now, mut taken) = (t0, 0u32);
        while now <= t0 + Duration::from_secs(10) {
            match b.try_take(now) {
                Ok(()) => taken += 1,
                Err(next) => now = next,
            }
            let allowed = f64::from(burst) + rate * (now - t0).as_secs_f64();
            assert!(f64::from(taken) <= allowed + 1e-6, "{taken} by {now:?}");
        }
        assert_eq!(taken, 5 + 200);
    }

    #[test]
    fn an_off_bucket_always_has_a_token() {
        let t0 = Instant::now();
        let mut b = bucket(0.0, 4, t0);
        assert!((0..10_000).all(|_| b.try_take(t0).is_ok()));
        assert_eq!(b.next_token_at(t0), t0);
        assert_eq!(b.token_at(t0, 500), t0);
        assert!(b.is_full(t0) && b.tokens(t0).is_none());
    }

    #[test]
    fn the_token_of_a_call_behind_others_comes_one_interval_each_later() {
        let t0 = Instant::now();
        let mut b = bucket(10.0, 2, t0);
        assert_eq!(b.token_at(t0, 0), t0);
        assert_eq!(b.token_at(t0, 1), t0);
        assert_eq!(b.token_at(t0, 2), t0 + ms(100));
        take_all(&mut b, t0);
        assert_eq!(b.token_at(t0, 3), t0 + ms(400));
    }

    #[test]
    fn a_token_given_back_is_taken_again_but_never_overfills() {
        let t0 = Instant::now();
        let mut b = bucket(10.0, 2, t0);
        take_all(&mut b, t0);
        b.give_back(t0);
        assert_eq!(take_all(&mut b, t0), 1);
        let mut full = bucket(10.0, 2, t0);
        full.give_back(t0);
        assert_eq!(take_all(&mut full, t0), 2);
    }

    #[test]
    fn a_lower_rate_applies_at_once_without_a_fresh_burst() {
        let t0 = Instant::now();
        let mut b = bucket(10.0, 10, t0);
        take_all(&mut b, t0);
        b.set_pace(Pace::new(1.0, 10), t0);
        assert_eq!(b.try_take(t0), Err(t0 + Duration::from_secs(1)));
        assert_eq!(b.try_take(t0 + ms(500)), Err(t0 + Duration::from_secs(1)));
        assert_eq!(b.try_take(t0 + Duration::from_secs(1)), Ok(()));
    }

    #[test]
    fn a_higher_rate_applies_at_once_without_a_fresh_burst() {
        let t0 = Instant::now();
        let mut b = bucket(1.0, 10, t0);
        take_all(&mut b, t0);
        b.set_pace(Pace::new(100.0, 10), t0);
        assert_eq!(b.try_take(t0), Err(t0 + ms(10)));
        assert_eq!(take_all(&mut b, t0 + ms(10)), 1);
    }

    #[test]
    fn a_new_pace_keeps_the_tokens_held_up_to_the_new_burst() {
        let t0 = Instant::now();
        let mut b = bucket(10.0, 10, t0);
        for _ in 0..4 {
            b.try_take(t0).unwrap();
        }
        b.set_pace(Pace::new(20.0, 10), t0);
        assert_eq!(b.tokens(t0), Some(6));
        b.set_pace(Pace::new(20.0, 3), t0);
        assert_eq!(b.tokens(t0), Some(3));
        b.set_pace(Pace::new(20.0, 40), t0);
        assert_eq!(b.tokens(t0), Some(3), "a larger burst grants nothing");
    }

    #[test]
    fn a_bucket_turned_on_starts_full_and_one_turned_off_grants_all() {
        let t0 = Instant::now();
        let mut b = bucket(0.0, 1, t0);
        b.set_pace(Pace::new(5.0, 3), t0);
        assert_eq!(take_all(&mut b, t0), 3);
        b.set_pace(None, t0);
        assert!(b.try_take(t0).is_ok());
    }
}
