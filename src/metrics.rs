//! Prometheus metrics: every counter, histogram and gauge the proxy exports, and their text encoding.
//!
//! Series on the request path are resolved once at start into arrays indexed
//! by typed labels, so counting a request is an atomic add with no lookup.
//! Labels are low-cardinality: never an id, never a credential.

use std::time::{Duration, Instant};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::cache::policy::NoStoreReason;
use crate::cache::shared::SharedMetrics;
use crate::cache::status::CacheResult;
use crate::cache::Usage;
use crate::error::UpstreamError;
use crate::route::RouteKind;

/// The `cache` label of a request: what the cache did, or `none`.
const CACHE_LABELS: [&str; 5] = ["hit", "miss", "bypass", "stale", "none"];
const STATUS_CLASSES: [&str; 4] = ["2xx", "3xx", "4xx", "5xx"];

/// Why an entry left the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EvictionCause {
    /// Its lifetime ended.
    Lifetime,
    /// The byte bound needed the room.
    Size,
    /// An operator purged it.
    Purge,
    /// A newer answer took its place.
    Replaced,
}

impl EvictionCause {
    /// The `cause` label.
    pub fn as_str(self) -> &'static str {
        match self {
            EvictionCause::Lifetime => "lifetime",
            EvictionCause::Size => "size",
            EvictionCause::Purge => "purge",
            EvictionCause::Replaced => "replaced",
        }
    }
}

/// How an upstream exchange ended, for its duration histogram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamOutcome {
    Ok,
    Error,
    Timeout,
}

impl UpstreamOutcome {
    fn as_str(self) -> &'static str {
        match self {
            UpstreamOutcome::Ok => "ok",
            UpstreamOutcome::Error => "error",
            UpstreamOutcome::Timeout => "timeout",
        }
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: &'static str,
    cache: &'static str,
    status: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CacheLabel {
    cache: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CauseLabel {
    cause: &'static str,
}

type RequestCounters =
    [[[Counter; STATUS_CLASSES.len()]; CACHE_LABELS.len()]; RouteKind::ALL.len()];

/// One request counted in `ayra_cache_fetch_waiting` while it lives.
pub struct FetchWaiting(Gauge);

impl Drop for FetchWaiting {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Every metric the proxy exports.
pub struct Metrics {
    registry: Registry,
    requests: RequestCounters,
    request_duration: [Histogram; CACHE_LABELS.len()],
    upstream_duration: Family<OutcomeLabel, Histogram, fn() -> Histogram>,
    upstream_errors: Family<KindLabel, Counter>,
    coalesced_waiters: Counter,
    fetch_waiting: Gauge,
    stores: Counter,
    store_refusals: Family<ReasonLabel, Counter>,
    evictions: Family<CauseLabel, Counter>,
    refreshes: Family<ResultLabel, Counter>,
    entries: Gauge,
    bytes: Gauge,
    started: Instant,
    /// The shared tier's series (zero without `[shared]`).
    pub shared: std::sync::Arc<SharedMetrics>,
}

/// Latency buckets from 50 µs to about 13 s.
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.000_05, 2.0, 19))
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// All metrics at zero, every request series present from the start.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("ayra_cache");
        let request_family = Family::<RequestLabels, Counter>::default();
        let requests = RouteKind::ALL.map(|route| {
            std::array::from_fn(|cache| {
                std::array::from_fn(|status| {
                    request_family.get_or_create_owned(&RequestLabels {
                        route: route.as_str(),
                        cache: CACHE_LABELS[cache],
                        status: STATUS_CLASSES[status],
                    })
                })
            })
        });
        registry.register("requests", "Requests answered", request_family);
        let duration_family =
            Family::<CacheLabel, Histogram, fn() -> Histogram>::new_with_constructor(
                latency_histogram,
            );
        let request_duration =
            CACHE_LABELS.map(|cache| duration_family.get_or_create_owned(&CacheLabel { cache }));
        registry.register(
            "request_duration_seconds",
            "Time to answer a request, by cache result",
            duration_family,
        );
        let metrics = Metrics {
            requests,
            request_duration,
            upstream_duration: Family::new_with_constructor(latency_histogram),
            upstream_errors: Family::default(),
            coalesced_waiters: Counter::default(),
            fetch_waiting: Gauge::default(),
            stores: Counter::default(),
            store_refusals: Family::default(),
            evictions: Family::default(),
            refreshes: Family::default(),
            entries: Gauge::default(),
            bytes: Gauge::default(),
            started: Instant::now(),
            shared: Default::default(),
            registry,
        };
        metrics.register_the_rest()
    }

    fn register_the_rest(mut self) -> Metrics {
        let r = &mut self.registry;
        r.register(
            "upstream_request_duration_seconds",
            "Upstream exchanges, by outcome",
            self.upstream_duration.clone(),
        );
        r.register(
            "upstream_errors",
            "Upstream faults, by kind",
            self.upstream_errors.clone(),
        );
        r.register(
            "coalesced_waiters",
            "Requests that joined another request's upstream exchange",
            self.coalesced_waiters.clone(),
        );
        r.register(
            "fetch_waiting",
            "Cached-route requests waiting now for an upstream exchange, their own or one they joined",
            self.fetch_waiting.clone(),
        );
        r.register("stores", "Answers stored", self.stores.clone());
        r.register(
            "store_refusals",
            "Upstream answers not stored, by reason",
            self.store_refusals.clone(),
        );
        r.register(
            "evictions",
            "Entries that left the cache, by cause",
            self.evictions.clone(),
        );
        r.register(
            "refreshes",
            "Background refreshes ahead of expiry, by result",
            self.refreshes.clone(),
        );
        r.register("entries", "Entries held", self.entries.clone());
        r.register(
            "bytes",
            "Bytes held, by the cache's weigher",
            self.bytes.clone(),
        );
        self.shared = std::sync::Arc::new(SharedMetrics::register(r));
        self
    }

    /// Counts one answered request.
    pub fn request(
        &self,
        route: RouteKind,
        cache: Option<CacheResult>,
        status: u16,
        latency: Duration,
    ) {
        let cache = cache_index(cache);
        let class = usize::from(status.clamp(200, 599) / 100 - 2);
        self.requests[route as usize][cache][class].inc();
        self.request_duration[cache].observe(latency.as_secs_f64());
    }

    /// Times one upstream exchange, and counts it when it failed.
    pub fn upstream(&self, elapsed: Duration, result: Result<(), UpstreamError>) {
        let outcome = match result {
            Ok(()) => UpstreamOutcome::Ok,
            Err(UpstreamError::Timeout) => UpstreamOutcome::Timeout,
            Err(_) => UpstreamOutcome::Error,
        };
        self.upstream_duration
            .get_or_create(&OutcomeLabel {
                outcome: outcome.as_str(),
            })
            .observe(elapsed.as_secs_f64());
        if let Err(error) = result {
            self.upstream_errors
                .get_or_create(&KindLabel {
                    kind: error.as_str(),
                })
                .inc();
        }
    }

    /// A request joined another's upstream exchange.
    pub fn coalesced_waiter(&self) {
        self.coalesced_waiters.inc();
    }

    /// A cached-route request waits for an upstream exchange until the
    /// guard is dropped (`ayra_cache_fetch_waiting`).
    pub fn fetch_waiting(&self) -> FetchWaiting {
        self.fetch_waiting.inc();
        FetchWaiting(self.fetch_waiting.clone())
    }

    /// An answer was stored, or refused for `reason`.
    pub fn store_decision(&self, refused: Option<NoStoreReason>) {
        match refused {
            None => {
                self.stores.inc();
            }
            Some(reason) => {
                self.store_refusals
                    .get_or_create(&ReasonLabel {
                        reason: reason.as_str(),
                    })
                    .inc();
            }
        }
    }

    /// An entry left the cache.
    pub fn eviction(&self, cause: EvictionCause) {
        self.evictions
            .get_or_create(&CauseLabel {
                cause: cause.as_str(),
            })
            .inc();
    }

    /// A background refresh got an answer: stored, or not storable.
    pub fn refresh(&self, stored: bool) {
        let result = if stored { "stored" } else { "not_stored" };
        self.refreshes.get_or_create(&ResultLabel { result }).inc();
    }

    /// A background refresh failed upstream.
    pub fn refresh_failed(&self) {
        self.refreshes
            .get_or_create(&ResultLabel { result: "error" })
            .inc();
    }

    /// The running totals an operator reads first.
    pub fn totals(&self) -> Totals {
        let sum_cache = |cache: usize| -> u64 {
            self.requests
                .iter()
                .flat_map(|by_cache| by_cache[cache].iter())
                .map(Counter::get)
                .sum()
        };
        let mut upstream_errors = 0;
        for kind in UpstreamError::ALL {
            if let Some(counter) = self.upstream_errors.get(&KindLabel {
                kind: kind.as_str(),
            }) {
                upstream_errors += counter.get();
            }
        }
        Totals {
            hits: sum_cache(cache_index(Some(CacheResult::Hit))),
            misses: sum_cache(cache_index(Some(CacheResult::Miss))),
            upstream_errors,
            uptime: self.started.elapsed(),
        }
    }

    /// The Prometheus text exposition, with the gauges read from `usage`.
    pub fn encode(&self, usage: Usage) -> String {
        self.entries
            .set(i64::try_from(usage.entries).unwrap_or(i64::MAX));
        self.bytes
            .set(i64::try_from(usage.bytes).unwrap_or(i64::MAX));
        let mut text = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}

/// Totals since start.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Totals {
    pub hits: u64,
    pub misses: u64,
    pub upstream_errors: u64,
    pub uptime: Duration,
}

impl Totals {
    /// Hits over hits and misses (0 before any).
    pub fn hit_ratio(&self) -> f64 {
        let lookups = self.hits + self.misses;
        if lookups == 0 {
            0.0
        } else {
            self.hits as f64 / lookups as f64
        }
    }
}

fn cache_index(cache: Option<CacheResult>) -> usize {
    match cache {
        Some(CacheResult::Hit) => 0,
        Some(CacheResult::Miss) => 1,
        Some(CacheResult::Bypass) => 2,
        Some(CacheResult::Stale) => 3,
        None => 4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_counted_by_route_cache_and_status_class() {
        let metrics = Metrics::new();
        let ms = Duration::from_millis(1);
        metrics.request(RouteKind::Conversation, Some(CacheResult::Hit), 200, ms);
        metrics.request(RouteKind::Conversation, Some(CacheResult::Miss), 404, ms);
        metrics.request(RouteKind::Other, None, 404, ms);
        let text = metrics.encode(Usage {
            entries: 3,
            bytes: 42,
        });
        assert!(text.contains(
            "ayra_cache_requests_total{route=\"conversation\",cache=\"hit\",status=\"2xx\"} 1"
        ));
        assert!(text.contains(
            "ayra_cache_requests_total{route=\"conversation\",cache=\"miss\",status=\"4xx\"} 1"
        ));
        assert!(text.contains(
            "ayra_cache_requests_total{route=\"other\",cache=\"none\",status=\"4xx\"} 1"
        ));
        assert!(text.contains("ayra_cache_entries 3"));
        assert!(text.contains("ayra_cache_bytes 42"));
        let totals = metrics.totals();
        assert_eq!((totals.hits, totals.misses), (1, 1));
        assert!((totals.hit_ratio() - 0.5).abs() < f64::EPSILON);
    }

    #[test]
    fn upstream_faults_and_store_decisions_are_labelled() {
        let metrics = Metrics::new();
        metrics.upstream(Duration::from_millis(5), Err(UpstreamError::Timeout));
        metrics.upstream(Duration::from_millis(5), Ok(()));
        metrics.store_decision(Some(NoStoreReason::InProgress));
        metrics.store_decision(None);
        metrics.eviction(EvictionCause::Size);
        let text = metrics.encode(Usage {
            entries: 0,
            bytes: 0,
        });
        assert!(text.contains("ayra_cache_upstream_errors_total{kind=\"timeout\"} 1"));
        assert!(text
            .contains("ayra_cache_upstream_request_duration_seconds_count{outcome=\"timeout\"} 1"));
        assert!(text.contains("ayra_cache_store_refusals_total{reason=\"in_progress\"} 1"));
        assert!(text.contains("ayra_cache_stores_total 1"));
        assert!(text.contains("ayra_cache_evictions_total{cause=\"size\"} 1"));
        assert_eq!(metrics.totals().upstream_errors, 1);
    }
}
