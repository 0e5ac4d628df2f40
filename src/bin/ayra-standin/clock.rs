//! The stand-in's clock: real time plus an adjustable skew, used for `Date` and `expires_at`.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Largest skew accepted either way (ten years), keeping every date printable.
pub const MAX_SKEW_MS: i64 = 10 * 365 * 24 * 3600 * 1000;

/// Real time shifted by a skew in milliseconds (negative: the stand-in runs late).
#[derive(Debug)]
pub struct Clock {
    skew_ms: AtomicI64,
}

impl Clock {
    /// A clock running `skew_ms` milliseconds ahead of real time.
    pub fn new(skew_ms: i64) -> Self {
        Self {
            skew_ms: AtomicI64::new(skew_ms),
        }
    }

    /// Sets the skew for every answer from now on.
    pub fn set_skew_ms(&self, skew_ms: i64) {
        self.skew_ms.store(skew_ms, Ordering::Relaxed);
    }

    /// The stand-in's "now".
    pub fn now(&self) -> SystemTime {
        let skew_ms = self.skew_ms.load(Ordering::Relaxed);
        let real = SystemTime::now();
        let shift = Duration::from_millis(skew_ms.unsigned_abs());
        let shifted = if skew_ms >= 0 {
            real.checked_add(shift)
        } else {
            real.checked_sub(shift)
        };
        shifted.unwrap_or(real)
    }

    /// The stand-in's "now" as an HTTP-date, for the `Date` header.
    pub fn http_date(&self) -> String {
        httpdate::fmt_http_date(self.now())
    }

    /// Unix seconds (rounded down) of the stand-in's "now" plus `lifetime`
    /// (plus nothing if that would overflow the system clock).
    pub fn unix_seconds_after(&self, lifetime: Duration) -> i64 {
        let now = self.now();
        let instant = now.checked_add(lifetime).unwrap_or(now);
        match instant.duration_since(UNIX_EPOCH) {
            Ok(since_epoch) => i64::try_from(since_epoch.as_secs()).unwrap_or(i64::MAX),
            Err(before_epoch) => {
                -i64::try_from(before_epoch.duration().as_secs()).unwrap_or(i64::MAX)
            }
        }
    }
}
