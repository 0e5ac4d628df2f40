//! Tokens from the bucket shared across replicas: how many one round trip leases, and whether this replica shares or paces alone; pure, `now` passed in.
//!
//! With `[shared]`, a call spends a token only when it holds one leased
//! from the credential's bucket in Redis *and* its replica's own bucket has
//! one (so a replica never goes faster than `rate` by itself, and has no
//! fresh burst to spend when it falls back). Leases are made by the
//! budget's driver, outside the budget's lock, only while calls wait.
//!
//! **Falling back.** A lease that gets no answer (Redis down, slow past
//! `shared.timeout`, resting after a fault) turns the replica [`Mode::Alone`]:
//! its own bucket alone paces it at the full `rate`, as SPEC section 12
//! asks. After [`RETRY`] (less while the tier only rests: that costs no
//! round trip) a call waits for one more lease, which probes Redis; the
//! first answer turns the replica back to [`Mode::Sharing`], by itself.

use std::time::{Duration, Instant};

use crate::cache::shared::{BucketShape, LeaseAnswer, SharedError};
use crate::config::BudgetSettings;

/// How long a replica paces alone before it asks Redis again: the shared
/// tier's own rest after a fault, so a down Redis costs one probe a second.
pub const RETRY: Duration = crate::cache::shared::REST;

/// While the tier rests after a fault, asking costs no round trip: ask
/// this often, so sharing resumes as soon as the tier's rest ends.
const RETRY_WHILE_RESTING: Duration = Duration::from_millis(100);

/// How long to pace alone after a lease got `error`.
fn retry_after(error: SharedError) -> Duration {
    match error {
        SharedError::Resting => RETRY_WHILE_RESTING,
        SharedError::Unavailable | SharedError::Timeout | SharedError::Refused => RETRY,
    }
}

/// How many tokens one round trip asks for at most:
/// `min(burst, max(1, rate / 10))`.
///
/// A tenth of the rate, so at saturation a replica makes about ten round
/// trips a second per credential (cheap for Redis, and a round trip of
/// `shared.timeout` at worst never starves it), while what a lease hands
/// out at once is a tenth of a second's worth of calls: the upstream sees
/// calls spread within 100 ms of where one bucket would put them, never a
/// second's worth in a clump. At most `burst`, since the bucket never holds
/// more; at least one. A replica asks for no more than the calls waiting,
/// so tokens rarely sit leased and unused while another replica waits.
pub fn lease_size(rate: f64, burst: u32) -> u32 {
    let tenth = (rate / 10.0).floor().clamp(1.0, f64::from(u32::MAX)) as u32;
    tenth.min(burst.max(1))
}

/// Whether this replica's budget shares the bucket in Redis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Tokens are leased from Redis.
    Sharing,
    /// Redis gave no answer: the local bucket alone paces, until `retry_at`.
    Alone { retry_at: Instant },
}

/// Where the next call's token would come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// A token leased earlier.
    Leased,
    /// The local bucket alone (fallen back).
    Local,
    /// Nothing until a lease is made.
    Lease,
}

/// What the driver does for the supply when calls wait and the local
/// bucket has a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SupplyStep {
    /// Ask Redis for up to `wanted` tokens of this shape.
    Lease { wanted: u32, shape: BucketShape },
    /// Redis said no token comes before this.
    WaitUntil(Instant),
}

/// One credential's tokens leased from Redis.
#[derive(Debug, Clone)]
pub struct Supply {
    shape: BucketShape,
    lease_size: u32,
    leased: u32,
    /// A lease said the next token comes no earlier.
    next_lease_at: Option<Instant>,
    mode: Mode,
    /// A refresh found no token: lease one that no call waits for.
    reserve_wanted: bool,
    /// The longest a lease may take (`shared.timeout`).
    round_trip: Duration,
}

impl Supply {
    /// Sharing, nothing leased yet; none while the budget is off.
    pub fn new(settings: &BudgetSettings) -> Option<Supply> {
        (!settings.is_off()).then(|| Supply {
            shape: BucketShape::new(settings.rate, settings.burst),
            lease_size: lease_size(settings.rate, settings.burst),
            leased: 0,
            next_lease_at: None,
            mode: Mode::Sharing,
            reserve_wanted: false,
            round_trip: Duration::ZERO,
        })
    }

    /// Leases that may take up to `round_trip`.
    pub fn with_round_trip(mut self, round_trip: Duration) -> Supply {
        self.round_trip = round_trip;
        self
    }

    /// How much longer than `max_wait` a call arriving now may wait: the
    /// round trip that finds out whether Redis has a token for it (with
    /// `max_wait = "0s"`, a call would otherwise never get a shared token).
    pub fn grace(&self, now: Instant) -> Duration {
        match self.source(now) {
            Source::Lease => self.round_trip,
            Source::Leased | Source::Local => Duration::ZERO,
        }
    }

    #[cfg(test)]
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Leased tokens not spent yet.
    pub fn leased(&self) -> u32 {
        self.leased
    }

    pub fn source(&self, now: Instant) -> Source {
        match self.mode {
            Mode::Sharing if self.leased > 0 => Source::Leased,
            Mode::Alone { retry_at } if now < retry_at => Source::Local,
            _ => Source::Lease,
        }
    }

    /// A leased token was spent.
    pub fn spend(&mut self) {
        self.leased = self.leased.saturating_sub(1);
    }

    /// What to do when `waiting` calls wait for a token the supply must
    /// give; none when it has one to give.
    pub fn step(&self, now: Instant, waiting: usize) -> Option<SupplyStep> {
        if self.source(now) != Source::Lease {
            return None;
        }
        match self.next_lease_at {
            Some(at) if at > now && self.mode == Mode::Sharing => Some(SupplyStep::WaitUntil(at)),
            _ => Some(SupplyStep::Lease {
                wanted: u32::try_from(waiting)
                    .unwrap_or(u32::MAX)
                    .clamp(1, self.lease_size),
                shape: self.shape,
            }),
        }
    }

    /// A background refresh found no leased token (a refresh never waits,
    /// and leases are made only for waiting calls): lease one for the next
    /// refresh, or the next call.
    pub fn want_reserve(&mut self) {
        self.reserve_wanted = true;
    }

    /// The lease of a reserve token, when one is wanted and can be asked for now.
    pub fn reserve_step(&self, now: Instant) -> Option<SupplyStep> {
        if !self.reserve_wanted {
            return None;
        }
        self.step(now, 1)
            .filter(|step| matches!(step, SupplyStep::Lease { .. }))
    }

    /// A lease's answer; the pause it reported, if any.
    pub fn settle(
        &mut self,
        answer: Result<LeaseAnswer, SharedError>,
        now: Instant,
    ) -> Option<Duration> {
        self.reserve_wanted = false;
        let answer = match answer {
            Ok(answer) => answer,
            Err(error) => {
                self.mode = Mode::Alone {
                    retry_at: now + retry_after(error),
                };
                return None;
            }
        };
        self.mode = Mode::Sharing;
        match answer {
            LeaseAnswer::Granted { tokens, next_in } => {
                self.leased = self.leased.saturating_add(tokens);
                self.next_lease_at = (!next_in.is_zero()).then(|| now + next_in);
                None
            }
            LeaseAnswer::Paused { left } => {
                self.next_lease_at = Some(now + left);
                Some(left)
            }
        }
    }

    /// New settings (a reload): the next lease asks for the new pace.
    pub fn reshape(&mut self, settings: &BudgetSettings) {
        if let Some(new) = Supply::new(settings) {
            self.shape = new.shape;
            self.lease_size = new.lease_size;
        }
    }
}

#[cfg(test)]
mod tests;
