//! What every request shares: the live settings, the upstream client and its budgets, the cache, the metrics.

use std::sync::Arc;

use crate::budget::Budgets;
use crate::cache::Cache;
use crate::live::LiveSettings;
use crate::metrics::Metrics;
use crate::passthrough::PassThrough;
use crate::upstream::Upstream;

/// What every request shares; built by the composition root ([`crate::app`]).
/// A clone shares every part (each is behind an `Arc`): each worker serves
/// from a clone of its own (see [`crate::server::Respond`]).
#[derive(Clone)]
pub struct AppState {
    /// The settings that change on reload, swapped as one value.
    pub live: Arc<LiveSettings>,
    pub upstream: Arc<Upstream>,
    /// The upstream calls' budgets, one per upstream credential.
    pub budgets: Arc<Budgets>,
    pub cache: Arc<Cache>,
    pub metrics: Arc<Metrics>,
    /// The pass-through route, with the bounds on a forwarded body (fixed at start).
    pub passthrough: PassThrough,
}
