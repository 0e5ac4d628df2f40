//! What the budget decides for a call, a refresh, and what the caller made of a refusal.

use std::time::Duration;

/// The answer to a call that asked for its turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Go: the call has its token (`waited` is zero when one was there).
    Granted { waited: Duration },
    /// No turn within `max_wait`: answer without calling upstream.
    Refused {
        /// For the `retry-after` header: whole seconds until a turn could come, at least 1.
        retry_after_secs: u64,
        reason: RefusalReason,
        /// How long the call waited before it was refused (zero: refused at once).
        waited: Duration,
    },
}

impl Admission {
    /// A label: `granted`, `exhausted` or `paused`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Admission::Granted { .. } => "granted",
            Admission::Refused { reason, .. } => reason.as_str(),
        }
    }

    /// How long the call waited for its answer, for the access log.
    pub fn waited(&self) -> Duration {
        match self {
            Admission::Granted { waited } | Admission::Refused { waited, .. } => *waited,
        }
    }
}

/// Why a call got no turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusalReason {
    /// The rate: too many calls ahead of it.
    Exhausted,
    /// The upstream's own `429` paused the credential past the call's wait.
    Paused,
}

impl RefusalReason {
    pub fn as_str(self) -> &'static str {
        match self {
            RefusalReason::Exhausted => "exhausted",
            RefusalReason::Paused => "paused",
        }
    }
}

/// The answer to a background refresh, which never waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefreshAdmission {
    /// A token no client was waiting for: refresh.
    Granted,
    /// Clients are waiting, the credential is paused, or no token is there:
    /// the entry lives out its times.
    Skipped,
}

impl RefreshAdmission {
    pub fn as_str(self) -> &'static str {
        match self {
            RefreshAdmission::Granted => "granted",
            RefreshAdmission::Skipped => "skipped",
        }
    }
}

/// What the caller answered a refused call with (the `outcome` label of
/// `ayra_cache_budget_exhausted_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExhaustedOutcome {
    /// A usable entry stood in.
    Stale,
    /// The client got a `429`.
    Rejected,
}

impl ExhaustedOutcome {
    pub const ALL: [ExhaustedOutcome; 2] = [ExhaustedOutcome::Stale, ExhaustedOutcome::Rejected];

    pub fn as_str(self) -> &'static str {
        match self {
            ExhaustedOutcome::Stale => "stale",
            ExhaustedOutcome::Rejected => "rejected",
        }
    }
}
