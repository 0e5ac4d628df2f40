//! One budget per upstream credential, found by its fingerprint; budgets at rest are dropped, so memory stays bounded.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant, SystemTime};

use serde::{Serialize, Serializer};

use crate::cache::shared::SharedTier;
use crate::config::BudgetSettings;
use crate::domain::Fingerprint;

use super::decision::{Admission, ExhaustedOutcome, RefreshAdmission};
use super::metrics::BudgetMetrics;
use super::now;
use super::shared::{follow_pauses, SharedBudget};
use super::turns::ClientIdentity;
use super::waiting::Budget;

/// Whose quota an upstream call spends: the credential it carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UpstreamCredential {
    /// Pass-through mode, a request without `Authorization`.
    Anonymous,
    /// The fingerprint of the `Authorization` sent upstream: the proxy's
    /// `upstream.api_key`, or in pass-through mode the client's own.
    Key(Fingerprint),
}

impl UpstreamCredential {
    /// How an operator sees it: the fingerprint's first 8 hex digits, never the key.
    pub fn label(&self) -> String {
        match self {
            UpstreamCredential::Anonymous => "anonymous".to_owned(),
            UpstreamCredential::Key(fingerprint) => hex::encode(&fingerprint.digest()[..4]),
        }
    }
}

/// One budget's state for `/admin/stats`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BudgetSnapshot {
    /// [`UpstreamCredential::label`].
    pub credential: String,
    /// Whole tokens in the bucket.
    pub tokens: u32,
    /// Calls waiting for their turn.
    pub waiting: usize,
    /// The end of an upstream `429`'s pause, while it lasts (RFC 3339).
    #[serde(serialize_with = "rfc3339")]
    pub paused_until: Option<SystemTime>,
}

fn rfc3339<S: Serializer>(at: &Option<SystemTime>, serializer: S) -> Result<S::Ok, S::Error> {
    let text = at
        .and_then(|at| jiff::Timestamp::try_from(at).ok())
        .map(|at| at.round(jiff::Unit::Millisecond).unwrap_or(at).to_string());
    text.serialize(serializer)
}

/// At rest, unused budgets are dropped at least this often...
const SWEEP_EVERY: Duration = Duration::from_secs(60);
/// ...and whenever the map has doubled since the last sweep, from this size on.
const SWEEP_FROM: usize = 1024;

/// The budgets of every upstream credential in use.
#[derive(Debug)]
pub struct Budgets {
    held: RwLock<Held>,
    metrics: Arc<BudgetMetrics>,
    /// With `[shared]`: the tier every budget leases its tokens from.
    shared: Option<Arc<SharedTier>>,
}

#[derive(Debug)]
struct Held {
    settings: BudgetSettings,
    budgets: HashMap<UpstreamCredential, Arc<Budget>>,
    next_sweep: Instant,
    sweep_above: usize,
}

impl Budgets {
    pub fn new(settings: BudgetSettings, metrics: Arc<BudgetMetrics>) -> Budgets {
        Budgets {
            held: RwLock::new(Held {
                settings,
                budgets: HashMap::new(),
                next_sweep: now() + SWEEP_EVERY,
                sweep_above: SWEEP_FROM,
            }),
            metrics,
            shared: None,
        }
    }

    /// Budgets shared with every replica through `shared` (SPEC section 12,
    /// "Across replicas"): each credential's tokens are leased from one
    /// bucket in Redis and its pauses are told to all; without a tier (or
    /// while Redis is unreachable) each paces alone. For the composition
    /// root: `Cache::shared_tier` gives the tier.
    pub(crate) fn sharing(
        settings: BudgetSettings,
        metrics: Arc<BudgetMetrics>,
        shared: Option<Arc<SharedTier>>,
    ) -> Budgets {
        Budgets {
            shared,
            ..Budgets::new(settings, metrics)
        }
    }

    // Every step under these locks is a short map or ledger update that
    // leaves them consistent, so a panic elsewhere does not poison them.
    fn read(&self) -> RwLockReadGuard<'_, Held> {
        self.held.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, Held> {
        self.held.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// The budget of `credential`, made on first use; none while the budget is off.
    pub fn budget(&self, credential: UpstreamCredential) -> Option<Arc<Budget>> {
        {
            let held = self.read();
            if held.settings.is_off() {
                return None;
            }
            if let Some(budget) = held.budgets.get(&credential) {
                return Some(Arc::clone(budget));
            }
        }
        let now = now();
        let mut held = self.write();
        if held.settings.is_off() {
            return None;
        }
        if !held.budgets.contains_key(&credential)
            && (now >= held.next_sweep || held.budgets.len() >= held.sweep_above)
        {
            held.sweep(now);
        }
        let settings = held.settings;
        let budget = held
            .budgets
            .entry(credential)
            .or_insert_with(|| Arc::new(self.new_budget(credential, &settings, now)));
        Some(Arc::clone(budget))
    }

    fn new_budget(
        &self,
        credential: UpstreamCredential,
        settings: &BudgetSettings,
        now: Instant,
    ) -> Budget {
        let metrics = Arc::clone(&self.metrics);
        match &self.shared {
            Some(tier) => {
                let shared = SharedBudget::new(Arc::clone(tier), credential);
                Budget::sharing(credential, settings, metrics, shared, now)
            }
            None => Budget::new(credential, settings, metrics, now),
        }
    }

    /// Waits for the turn of a call on `credential` by `who`; granted at
    /// once while the budget is off.
    pub async fn admit(&self, credential: UpstreamCredential, who: ClientIdentity) -> Admission {
        match self.budget(credential) {
            Some(budget) => budget.admit(who).await,
            None => Admission::Granted {
                waited: Duration::ZERO,
            },
        }
    }

    /// May a background refresh on `credential` call upstream now? Never waits.
    pub fn try_refresh(&self, credential: UpstreamCredential) -> RefreshAdmission {
        self.budget(credential)
            .map_or(RefreshAdmission::Granted, |budget| budget.try_refresh())
    }

    /// The upstream answered `429` on `credential`: pause it for `pause`
    /// ([`super::pause_length`]). Nothing while the budget is off.
    pub fn pause(&self, credential: UpstreamCredential, pause: Duration) {
        if let Some(budget) = self.budget(credential) {
            budget.pause(pause);
        }
    }

    /// The work that pauses these budgets when another replica tells of an
    /// upstream `429`, for the composition root to run beside the cache's
    /// (subscribed now, so no notice from here on is missed); none without
    /// a shared tier.
    pub(crate) fn follow_shared_pauses(
        self: &Arc<Self>,
    ) -> Option<impl std::future::Future<Output = ()> + Send + 'static> {
        let notices = self.shared.as_ref()?.notices();
        Some(follow_pauses(Arc::clone(self), notices))
    }

    /// Another replica told of an upstream `429` on `credential`: pause it
    /// here too, if this replica holds its budget.
    pub(super) fn paused_elsewhere(&self, credential: UpstreamCredential, pause: Duration) {
        let budget = self.read().budgets.get(&credential).map(Arc::clone);
        if let Some(budget) = budget {
            budget.pause_here(pause);
        }
    }

    /// Counts a refused call by what the caller answered it with.
    pub fn exhausted(&self, outcome: ExhaustedOutcome) {
        self.metrics.exhausted(outcome);
    }

    /// New settings (SIGHUP): every budget takes them for its calls from now on.
    pub fn reconfigure(&self, settings: BudgetSettings) {
        let now = now();
        let mut held = self.write();
        held.settings = settings;
        for budget in held.budgets.values() {
            budget.reconfigure(&settings, now);
        }
        if settings.is_off() {
            held.sweep(now);
        }
    }

    /// Drops the budgets nobody uses that a new one would equal; says how many.
    pub fn sweep(&self) -> usize {
        self.write().sweep(now())
    }

    /// Budgets held.
    pub fn len(&self) -> usize {
        self.read().budgets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every budget held, ordered by credential label.
    pub fn snapshot(&self) -> Vec<BudgetSnapshot> {
        let (now, wall) = (now(), SystemTime::now());
        let mut snapshots: Vec<_> = self
            .read()
            .budgets
            .values()
            .map(|budget| {
                let view = budget.view(now);
                BudgetSnapshot {
                    credential: budget.credential().label(),
                    tokens: view.tokens.unwrap_or(0),
                    waiting: view.waiting,
                    paused_until: view.paused_until.map(|until| wall + (until - now)),
                }
            })
            .collect();
        snapshots.sort_by(|a, b| a.credential.cmp(&b.credential));
        snapshots
    }
}

impl Held {
    /// A budget at rest that only the map holds is dropped: made again on
    /// its next call, it would be the same.
    fn sweep(&mut self, now: Instant) -> usize {
        let before = self.budgets.len();
        self.budgets
            .retain(|_, budget| Arc::strong_count(budget) > 1 || !budget.is_at_rest(now));
        self.next_sweep = now + SWEEP_EVERY;
        self.sweep_above = (self.budgets.len() * 2).max(SWEEP_FROM);
        before - self.budgets.len()
    }
}

#[cfg(test)]
mod tests;
