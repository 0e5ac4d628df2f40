//! The shared tier's Prometheus series: lookups, claims, claim waits, writes and faults.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

use crate::metrics::Metrics;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: &'static str,
}

/// What a shared lookup found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LookupResult {
    /// A value this replica may serve.
    Hit,
    Miss,
    /// A value past what this replica's clock allows (never served).
    Expired,
    /// A value that could not be opened or decoded (never served).
    Unreadable,
    /// Redis gave no answer.
    Error,
}

impl LookupResult {
    /// The `result` label.
    pub fn as_str(self) -> &'static str {
        match self {
            LookupResult::Hit => "hit",
            LookupResult::Miss => "miss",
            LookupResult::Expired => "expired",
            LookupResult::Unreadable => "unreadable",
            LookupResult::Error => "error",
        }
    }
}

/// What a claim on a key's fetch gave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClaimResult {
    /// This replica fetches.
    Held,
    /// Another replica is fetching.
    Taken,
    /// Redis gave no answer.
    Error,
}

impl ClaimResult {
    /// The `result` label.
    pub fn as_str(self) -> &'static str {
        match self {
            ClaimResult::Held => "held",
            ClaimResult::Taken => "taken",
            ClaimResult::Error => "error",
        }
    }
}

/// How a wait for another replica's fetch ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitOutcome {
    /// Its value arrived.
    Value,
    /// It let go of the key without a value this replica could serve.
    Released,
    /// `lock_ttl` passed.
    TimedOut,
    /// Redis gave no answer.
    Error,
}

impl WaitOutcome {
    /// The `result` label.
    pub fn as_str(self) -> &'static str {
        match self {
            WaitOutcome::Value => "value",
            WaitOutcome::Released => "released",
            WaitOutcome::TimedOut => "timeout",
            WaitOutcome::Error => "error",
        }
    }
}

/// The shared tier's counters, registered with the proxy's other metrics.
#[derive(Default)]
pub struct TierMetrics {
    lookups: Family<ResultLabel, Counter>,
    errors: Family<KindLabel, Counter>,
    claims: Family<ResultLabel, Counter>,
    claim_waits: Family<ResultLabel, Counter>,
    writes: Family<ResultLabel, Counter>,
}

impl TierMetrics {
    /// Registers every series with the proxy's metrics.
    pub fn register(into: &Metrics) -> TierMetrics {
        let metrics = TierMetrics::default();
        into.register(
            "shared_lookups",
            "Shared-tier lookups, by result (hit, miss, expired, unreadable, error)",
            metrics.lookups.clone(),
        );
        into.register(
            "shared_errors",
            "Shared-tier operations without an answer, by kind",
            metrics.errors.clone(),
        );
        into.register(
            "shared_claims",
            "Claims on a key's fetch, by result (held, taken, error)",
            metrics.claims.clone(),
        );
        into.register(
            "shared_claim_waits",
            "Waits for another replica's fetch, by outcome (value, released, timeout, error)",
            metrics.claim_waits.clone(),
        );
        into.register(
            "shared_writes",
            "Values written to the shared tier, by result (ok, error)",
            metrics.writes.clone(),
        );
        metrics
    }

    pub fn lookup(&self, result: LookupResult) {
        let result = result.as_str();
        self.lookups.get_or_create(&ResultLabel { result }).inc();
    }

    /// A Redis operation that gave no answer, by its `kind` label.
    pub fn error(&self, kind: &'static str) {
        self.errors.get_or_create(&KindLabel { kind }).inc();
    }

    pub fn claim(&self, result: ClaimResult) {
        let result = result.as_str();
        self.claims.get_or_create(&ResultLabel { result }).inc();
    }

    pub fn claim_wait(&self, outcome: WaitOutcome) {
        let result = outcome.as_str();
        self.claim_waits
            .get_or_create(&ResultLabel { result })
            .inc();
    }

    pub fn write(&self, ok: bool) {
        let result = if ok { "ok" } else { "error" };
        self.writes.get_or_create(&ResultLabel { result }).inc();
    }
}
