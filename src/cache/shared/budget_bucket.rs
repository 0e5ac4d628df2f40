//! The upstream budget's shared side: one GCRA bucket per upstream credential fingerprint in Redis, leased a few tokens per round trip, and the pauses an upstream `429` sets.
//!
//! The bucket is the same GCRA as each replica's local one: Redis keeps one
//! number, the theoretical arrival time (TAT: when the bucket is full
//! again, in microseconds of Redis's own clock), and a lease of `wanted`
//! tokens moves it `granted` intervals later. Redis's clock (`TIME`), not
//! the replicas', is the only one read, so replicas whose clocks disagree
//! still share one pace. [`gcra_lease`] is the script's arithmetic in Rust,
//! and the tests hold the script to it.
//!
//! A pause is a key with `PX` beside the bucket (one hash slot): the lease
//! script answers "paused" while it lives, so no replica is given a token
//! until it ends, whether or not it heard of the `429`; and a notice, so
//! replicas stop spending the tokens they hold already.

use std::sync::LazyLock;
use std::time::Duration;

use redis::Script;

use super::{Notice, SharedError, SharedTier};

/// Leases up to ARGV[3] tokens from the bucket KEYS[1] (TAT, µs) of
/// ARGV[1] µs per token holding at most ARGV[2], unless KEYS[2] (a pause)
/// lives. Answers {granted, µs until one more token, pause ms left, now µs}.
static LEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local paused = redis.call('PTTL', KEYS[2])
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
if paused > 0 then return {0, 0, paused, now} end
local interval = tonumber(ARGV[1])
local capacity = tonumber(ARGV[2]) * interval
local stored = redis.call('GET', KEYS[1])
local tat = math.max(stored and tonumber(stored) or now, now)
local room = math.floor((now + capacity - tat) / interval)
local granted = math.max(0, math.min(tonumber(ARGV[3]), room))
tat = tat + granted * interval
if granted > 0 then
  redis.call('SET', KEYS[1], string.format('%d', tat), 'PX', math.ceil((tat - now) / 1000) + 1)
end
return {granted, math.max(0, tat + interval - capacity - now), 0, now}",
    )
});

/// Pauses KEYS[1] for ARGV[1] ms, unless it is paused longer already.
static PAUSE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[1]) then
  redis.call('SET', KEYS[1], '1', 'PX', ARGV[1])
  return 1
end
return 0",
    )
});

/// The pace of a credential's bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BucketShape {
    /// Microseconds per token, rounded up (never faster than the rate).
    pub interval_us: u64,
    /// Tokens held at most.
    pub burst: u32,
}

impl BucketShape {
    /// `rate` tokens a second, at most `burst` (at least 1) held.
    pub fn new(rate: f64, burst: u32) -> BucketShape {
        BucketShape {
            interval_us: (1e6 / rate).ceil().max(1.0) as u64,
            burst: burst.max(1),
        }
    }
}

/// What a lease got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseAnswer {
    /// `tokens` (perhaps fewer than wanted, perhaps none); one more could
    /// be there in `next_in` (zero: there is one now).
    Granted { tokens: u32, next_in: Duration },
    /// An upstream `429` paused the credential for `left` more.
    Paused { left: Duration },
}

/// The script's answer, as sent.
type Reply = (i64, i64, i64, i64);

impl SharedTier {
    /// Leases up to `wanted` tokens of `credential`'s shared bucket, bounded
    /// by `shared.timeout`.
    pub async fn lease(
        &self,
        credential: &str,
        shape: BucketShape,
        wanted: u32,
    ) -> Result<LeaseAnswer, SharedError> {
        let (granted, next_in_us, paused_ms, _now_us) =
            self.lease_raw(credential, shape, wanted).await?;
        if paused_ms > 0 {
            return Ok(LeaseAnswer::Paused {
                left: Duration::from_millis(paused_ms.unsigned_abs()),
            });
        }
        Ok(LeaseAnswer::Granted {
            tokens: u32::try_from(granted).unwrap_or(0),
            next_in: Duration::from_micros(next_in_us.unsigned_abs()),
        })
    }

    async fn lease_raw(
        &self,
        credential: &str,
        shape: BucketShape,
        wanted: u32,
    ) -> Result<Reply, SharedError> {
        let (bucket, pause) = self.names.budget(credential);
        let mut invocation = LEASE.prepare_invoke();
        invocation
            .key(bucket)
            .key(pause)
            .arg(shape.interval_us)
            .arg(shape.burst)
            .arg(wanted);
        self.link.invoke(&invocation).await
    }

    /// Pauses `credential` for every replica for `pause` (an upstream
    /// `429`), unless it is paused longer already: the key every lease
    /// checks, then a notice for the tokens replicas hold already. Each
    /// operation bounded by `shared.timeout`.
    pub async fn pause_budget(&self, credential: &str, pause: Duration) -> Result<(), SharedError> {
        let left_ms = u64::try_from(pause.as_millis().max(1)).unwrap_or(u64::MAX);
        let (_, key) = self.names.budget(credential);
        let mut invocation = PAUSE.prepare_invoke();
        invocation.key(key).arg(left_ms);
        if self.link.invoke::<i64>(&invocation).await? == 1 {
            let credential = credential.to_owned();
            self.publish(&Notice::BudgetPaused {
                credential,
                left_ms,
            })
            .await;
        }
        Ok(())
    }
}

impl SharedTier {
    /// The names of `credential`'s bucket and pause, for tests that look at Redis.
    #[cfg(test)]
    pub fn budget_keys(&self, credential: &str) -> (String, String) {
        self.names.budget(credential)
    }
}

/// One lease as the script computes it.
#[cfg(test)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grant {
    pub tokens: u32,
    /// The TAT after the lease.
    pub tat_us: u64,
    /// Microseconds until one more token.
    pub next_in_us: u64,
}

/// The lease script's arithmetic: up to `wanted` tokens from a bucket whose
/// TAT is `tat_us` (zero: never used), at `now_us`. Kept beside the script
/// for its tests, which hold the script to it.
#[cfg(test)]
pub fn gcra_lease(tat_us: u64, now_us: u64, shape: BucketShape, wanted: u32) -> Grant {
    let interval = shape.interval_us;
    let capacity = u64::from(shape.burst) * interval;
    let tat = tat_us.max(now_us);
    let room = (now_us + capacity).saturating_sub(tat) / interval;
    let tokens = u32::try_from(room).unwrap_or(u32::MAX).min(wanted);
    let tat = tat + u64::from(tokens) * interval;
    Grant {
        tokens,
        tat_us: tat,
        next_in_us: (tat + interval).saturating_sub(capacity + now_us),
    }
}

#[cfg(test)]
mod tests;
