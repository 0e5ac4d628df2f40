//! The periodic summary event: entries, bytes, hit ratio and upstream errors since the last one.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::cache::Cache;
use crate::metrics::{Metrics, Totals};

/// Logs a summary every `interval` until `stop` changes.
pub async fn run(
    metrics: Arc<Metrics>,
    cache: Arc<Cache>,
    interval: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let mut ticks = tokio::time::interval(interval);
    ticks.tick().await;
    let mut last = metrics.totals();
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = stop.changed() => return,
        }
        let now = metrics.totals();
        let usage = cache.usage().await;
        let window = since(&last, &now);
        tracing::info!(
            target: "ayra_cache::summary",
            entries = usage.entries,
            bytes = usage.bytes,
            hits = window.hits,
            misses = window.misses,
            hit_ratio = window.hit_ratio(),
            upstream_errors = window.upstream_errors,
            "summary"
        );
        last = now;
    }
}

/// The counts between two totals.
fn since(earlier: &Totals, later: &Totals) -> Totals {
    Totals {
        hits: later.hits.saturating_sub(earlier.hits),
        misses: later.misses.saturating_sub(earlier.misses),
        upstream_errors: later
            .upstream_errors
            .saturating_sub(earlier.upstream_errors),
        uptime: later.uptime,
    }
}
