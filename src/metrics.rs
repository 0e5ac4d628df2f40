//! Prometheus metrics: the registry every part's series are in, the request and upstream series, and their text encoding.
//!
//! Parts hand plain labels (`&'static str` names, or the label enums here)
//! and never their own types; a part with series of its own registers them
//! with [`Metrics::register`]. The two series every request adds to are
//! counted per thread ([`request_series`]), in arrays indexed by typed
//! labels: counting a request is a few stores no other thread makes, with
//! no lookup and no lock. Labels are low-cardinality: never an id, never a
//! credential.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Metric, Registry};

mod request_series;

use request_series::{RequestCounts, RequestDurations, RequestSeries, LATENCY_BOUNDS};

/// The `route` label of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RouteLabel {
    Conversation = 0,
    PassThrough = 1,
    Health = 2,
    Other = 3,
}

impl RouteLabel {
    /// Every value, in index order.
    const ALL: [RouteLabel; 4] = [
        RouteLabel::Conversation,
        RouteLabel::PassThrough,
        RouteLabel::Health,
        RouteLabel::Other,
    ];

    fn as_str(self) -> &'static str {
        match self {
            RouteLabel::Conversation => "conversation",
            RouteLabel::PassThrough => "passthrough",
            RouteLabel::Health => "health",
            RouteLabel::Other => "other",
        }
    }
}

/// The `cache` label of a request: what the cache did, or `none`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CacheLabel {
    Hit = 0,
    Miss = 1,
    Bypass = 2,
    Stale = 3,
    None = 4,
}

impl CacheLabel {
    /// Every value, in index order.
    const ALL: [CacheLabel; 5] = [
        CacheLabel::Hit,
        CacheLabel::Miss,
        CacheLabel::Bypass,
        CacheLabel::Stale,
        CacheLabel::None,
    ];

    fn as_str(self) -> &'static str {
        match self {
            CacheLabel::Hit => "hit",
            CacheLabel::Miss => "miss",
            CacheLabel::Bypass => "bypass",
            CacheLabel::Stale => "stale",
            CacheLabel::None => "none",
        }
    }
}

const STATUS_CLASSES: [&str; 4] = ["2xx", "3xx", "4xx", "5xx"];

/// An upstream exchange that failed, as its series label it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpstreamFault {
    /// The `kind` label (`unavailable`, `timeout`, ...).
    pub kind: &'static str,
    /// It ran out of time: the `timeout` outcome rather than `error`.
    pub timed_out: bool,
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

/// One request counted in `ayra_cache_fetch_waiting` while it lives.
pub struct FetchWaiting(Gauge);

impl Drop for FetchWaiting {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Every metric the proxy exports.
pub struct Metrics {
    /// Locked only to register a series and to encode them all.
    registry: Mutex<Registry>,
    /// `requests_total` and `request_duration_seconds`, counted per thread.
    requests: Arc<RequestSeries>,
    upstream_duration: Family<OutcomeLabel, Histogram, fn() -> Histogram>,
    upstream_errors: Family<KindLabel, Counter>,
    /// Every upstream fault, whatever its kind (for the totals; not exported).
    upstream_faults: Counter,
    coalesced_waiters: Counter,
    fetch_waiting: Gauge,
    stores: Counter,
    store_refusals: Family<ReasonLabel, Counter>,
    evictions: Family<CauseLabel, Counter>,
    refreshes: Family<ResultLabel, Counter>,
    entries: Gauge,
    bytes: Gauge,
    started: Instant,
}

/// Latency buckets from 50 µs to about 13 s, as the request series have them.
fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BOUNDS)
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
        let requests = Arc::new(RequestSeries::default());
        registry.register(
            "requests",
            "Requests answered",
            RequestCounts(Arc::clone(&requests)),
        );
        registry.register(
            "request_duration_seconds",
            "Time to answer a request, by cache result",
            RequestDurations(Arc::clone(&requests)),
        );
        let metrics = Metrics {
            requests,
            upstream_duration: Family::new_with_constructor(latency_histogram),
            upstream_errors: Family::default(),
            upstream_faults: Counter::default(),
            coalesced_waiters: Counter::default(),
            fetch_waiting: Gauge::default(),
            stores: Counter::default(),
            store_refusals: Family::default(),
            evictions: Family::default(),
            refreshes: Family::default(),
            entries: Gauge::default(),
            bytes: Gauge::default(),
            started: Instant::now(),
            registry: Mutex::new(registry),
        };
        metrics.register_the_rest();
        metrics
    }

    fn register_the_rest(&self) {
        let mut registry = self.registry();
        let r = &mut *registry;
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
    }

    /// Lets a part register series of its own kinds (collectors included).
    pub fn register_with<T>(&self, register: impl FnOnce(&mut Registry) -> T) -> T {
        register(&mut self.registry())
    }

    /// Adds a part's own series to what is exported.
    pub fn register(&self, name: &str, help: &str, metric: impl Metric) {
        self.registry().register(name, help, metric);
    }

    fn registry(&self) -> MutexGuard<'_, Registry> {
        // Registering never leaves the registry half-updated.
        self.registry.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts one answered request.
    pub(crate) fn request(
        &self,
        route: RouteLabel,
        cache: CacheLabel,
        status: u16,
        latency: Duration,
    ) {
        let class = usize::from(status.clamp(200, 599) / 100 - 2);
        self.requests.count(route, cache, class, latency);
    }

    /// Times one upstream exchange, and counts it when it failed.
    pub fn upstream(&self, elapsed: Duration, fault: Option<UpstreamFault>) {
        let outcome = match fault {
            None => "ok",
            Some(fault) if fault.timed_out => "timeout",
            Some(_) => "error",
        };
        self.upstream_duration
            .get_or_create(&OutcomeLabel { outcome })
            .observe(elapsed.as_secs_f64());
        if let Some(fault) = fault {
            let kind = fault.kind;
            self.upstream_errors
                .get_or_create(&KindLabel { kind })
                .inc();
            self.upstream_faults.inc();
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

    /// An answer was stored.
    pub fn stored(&self) {
        self.stores.inc();
    }

    /// An answer was not stored, for `reason` (the `reason` label).
    pub fn store_refused(&self, reason: &'static str) {
        self.store_refusals
            .get_or_create(&ReasonLabel { reason })
            .inc();
    }

    /// An entry left the cache, for `cause` (the `cause` label).
    pub fn eviction(&self, cause: &'static str) {
        self.evictions.get_or_create(&CauseLabel { cause }).inc();
    }

    /// A background refresh ended with `result` (the `result` label).
    pub fn refresh(&self, result: &'static str) {
        self.refreshes.get_or_create(&ResultLabel { result }).inc();
    }

    /// The running totals an operator reads first.
    pub fn totals(&self) -> Totals {
        let sum_cache = |cache: CacheLabel| -> u64 {
            RouteLabel::ALL
                .into_iter()
                .flat_map(|route| (0..STATUS_CLASSES.len()).map(move |class| (route, class)))
                .map(|(route, class)| self.requests.requests(route, cache, class))
                .sum()
        };
        Totals {
            hits: sum_cache(CacheLabel::Hit),
            misses: sum_cache(CacheLabel::Miss),
            upstream_errors: self.upstream_faults.get(),
            uptime: self.started.elapsed(),
        }
    }

    /// The Prometheus text exposition, with the cache's `entries` and
    /// `bytes` gauges as given.
    pub fn encode(&self, entries: u64, bytes: u64) -> String {
        self.entries.set(i64::try_from(entries).unwrap_or(i64::MAX));
        self.bytes.set(i64::try_from(bytes).unwrap_or(i64::MAX));
        let mut text = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry());
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_counted_by_route_cache_and_status_class() {
        let metrics = Metrics::new();
        let ms = Duration::from_millis(1);
        metrics.request(RouteLabel::Conversation, CacheLabel::Hit, 200, ms);
        metrics.request(RouteLabel::Conversation, CacheLabel::Miss, 404, ms);
        metrics.request(RouteLabel::Other, CacheLabel::None, 404, ms);
        let text = metrics.encode(3, 42);
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
    fn upstream_faults_and_cache_events_are_labelled() {
        let metrics = Metrics::new();
        let timeout = UpstreamFault {
            kind: "timeout",
            timed_out: true,
        };
        metrics.upstream(Duration::from_millis(5), Some(timeout));
        metrics.upstream(Duration::from_millis(5), None);
        metrics.store_refused("in_progress");
        metrics.stored();
        metrics.eviction("size");
        let text = metrics.encode(0, 0);
        assert!(text.contains("ayra_cache_upstream_errors_total{kind=\"timeout\"} 1"));
        assert!(text
            .contains("ayra_cache_upstream_request_duration_seconds_count{outcome=\"timeout\"} 1"));
        assert!(text.contains("ayra_cache_store_refusals_total{reason=\"in_progress\"} 1"));
        assert!(text.contains("ayra_cache_stores_total 1"));
        assert!(text.contains("ayra_cache_evictions_total{cause=\"size\"} 1"));
        assert_eq!(metrics.totals().upstream_errors, 1);
    }

    #[test]
    fn a_part_registers_series_of_its_own() {
        let metrics = Metrics::new();
        let own = Counter::<u64>::default();
        metrics.register("parts_own", "A part's own series", own.clone());
        own.inc();
        assert!(metrics
            .encode(0, 0)
            .contains("ayra_cache_parts_own_total 1"));
    }
}
