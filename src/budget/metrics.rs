//! The budget's Prometheus series: waits, their length, refusals by what the client got, and whether any credential is paused.

use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use super::decision::ExhaustedOutcome;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

/// The budget's counters, registered with the proxy's other metrics.
#[derive(Debug)]
pub struct BudgetMetrics {
    waits: Counter,
    wait_seconds: Histogram,
    exhausted: [Counter; ExhaustedOutcome::ALL.len()],
    paused: Arc<PausedGauge>,
}

/// Waits from 1 ms to about 4 minutes (`max_wait` is at most 5).
fn wait_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 19))
}

impl Default for BudgetMetrics {
    /// Series counted into but exported nowhere (tests; a budget left unregistered).
    fn default() -> Self {
        BudgetMetrics {
            waits: Counter::default(),
            wait_seconds: wait_histogram(),
            exhausted: Default::default(),
            paused: Arc::new(PausedGauge::default()),
        }
    }
}

impl BudgetMetrics {
    /// Registers every series in `registry`, both `outcome` labels present from the start.
    pub fn register(registry: &mut Registry) -> BudgetMetrics {
        let exhausted = Family::<OutcomeLabel, Counter>::default();
        let metrics = BudgetMetrics {
            exhausted: ExhaustedOutcome::ALL.map(|outcome| {
                let outcome = outcome.as_str();
                exhausted.get_or_create_owned(&OutcomeLabel { outcome })
            }),
            ..BudgetMetrics::default()
        };
        registry.register(
            "budget_waits",
            "Upstream calls that waited for their turn in the budget",
            metrics.waits.clone(),
        );
        registry.register(
            "budget_wait_seconds",
            "How long upstream calls waited for their turn, granted or not",
            metrics.wait_seconds.clone(),
        );
        registry.register(
            "budget_exhausted",
            "Calls that got no turn, by what the client got (stale, rejected)",
            exhausted,
        );
        registry.register_collector(Box::new(Arc::clone(&metrics.paused)));
        metrics
    }

    /// A queued call was answered after `waited`.
    pub(super) fn waited(&self, waited: Duration) {
        self.waits.inc();
        self.wait_seconds.observe(waited.as_secs_f64());
    }

    /// A call got no turn and the caller answered it with `outcome`.
    pub fn exhausted(&self, outcome: ExhaustedOutcome) {
        self.exhausted[outcome as usize].inc();
    }

    /// A credential is paused until `until`.
    pub(super) fn paused_until(&self, until: Instant) {
        self.paused.extend(until);
    }
}

/// `ayra_cache_upstream_paused`: 1 while any credential is paused. A pause
/// is only ever extended, so the latest end of all of them says it,
/// read when the metrics are scraped.
#[derive(Debug, Default)]
struct PausedGauge {
    until: Mutex<Option<Instant>>,
}

impl PausedGauge {
    fn extend(&self, until: Instant) {
        let mut latest = self.until.lock().unwrap_or_else(PoisonError::into_inner);
        if latest.is_none_or(|latest| latest < until) {
            *latest = Some(until);
        }
    }

    fn value_at(&self, now: Instant) -> i64 {
        let latest = self.until.lock().unwrap_or_else(PoisonError::into_inner);
        i64::from(latest.is_some_and(|until| until > now))
    }
}

impl Collector for PausedGauge {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        let gauge = ConstGauge::new(self.value_at(Instant::now()));
        let metric = encoder.encode_descriptor(
            "upstream_paused",
            "1 while the upstream's 429 pauses any upstream credential",
            None,
            gauge.metric_type(),
        )?;
        gauge.encode(metric)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exported(registry: &Registry) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, registry).unwrap();
        text
    }

    fn has_line(text: &str, line: &str) -> bool {
        text.lines().any(|l| l == line)
    }

    #[test]
    fn the_series_are_exported_under_the_proxys_prefix() {
        let mut registry = Registry::with_prefix("ayra_cache");
        let metrics = BudgetMetrics::register(&mut registry);
        let text = exported(&registry);
        for line in [
            "ayra_cache_budget_waits_total 0",
            "ayra_cache_budget_exhausted_total{outcome=\"stale\"} 0",
            "ayra_cache_budget_exhausted_total{outcome=\"rejected\"} 0",
            "ayra_cache_budget_wait_seconds_count 0",
            "ayra_cache_upstream_paused 0",
        ] {
            assert!(has_line(&text, line), "{line} in\n{text}");
        }
        metrics.waited(Duration::from_millis(300));
        metrics.exhausted(ExhaustedOutcome::Stale);
        metrics.exhausted(ExhaustedOutcome::Stale);
        metrics.exhausted(ExhaustedOutcome::Rejected);
        metrics.paused_until(Instant::now() + Duration::from_secs(60));
        let text = exported(&registry);
        for line in [
            "ayra_cache_budget_waits_total 1",
            "ayra_cache_budget_exhausted_total{outcome=\"stale\"} 2",
            "ayra_cache_budget_exhausted_total{outcome=\"rejected\"} 1",
            "ayra_cache_budget_wait_seconds_sum 0.3",
            "ayra_cache_upstream_paused 1",
        ] {
            assert!(has_line(&text, line), "{line} in\n{text}");
        }
    }

    #[test]
    fn the_paused_gauge_is_one_until_the_latest_pause_ends() {
        let gauge = PausedGauge::default();
        let t0 = Instant::now();
        assert_eq!(gauge.value_at(t0), 0);
        gauge.extend(t0 + Duration::from_secs(5));
        gauge.extend(t0 + Duration::from_secs(2));
        assert_eq!(gauge.value_at(t0 + Duration::from_secs(4)), 1);
        assert_eq!(gauge.value_at(t0 + Duration::from_secs(5)), 0);
    }
}
