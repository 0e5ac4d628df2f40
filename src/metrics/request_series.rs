//! The request series (`requests_total`, `request_duration_seconds`), counted per thread and summed when scraped.
//!
//! Every request adds to both series. Held in one place, the two workers
//! would write the same cache lines on every request (a counter, and the
//! lock and buckets of a histogram), passing them back and forth between
//! their CPUs. Here each thread adds to its own [`Shard`], which no other
//! thread writes, and a scrape sums every thread's. A thread that ends
//! leaves its shard to the next thread given its slot, so no count is lost
//! and no series goes backwards.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use thread_local::ThreadLocal;

use super::{CacheLabel, RouteLabel, STATUS_CLASSES};

const ROUTES: usize = RouteLabel::ALL.len();
const CACHES: usize = CacheLabel::ALL.len();
const CLASSES: usize = STATUS_CLASSES.len();

/// Upper bounds of the latency buckets, in seconds: 50 µs doubling to about
/// 13 s (19 finite bounds), then `+Inf`.
pub(super) const LATENCY_BOUNDS: [f64; 20] = {
    let mut bounds = [f64::INFINITY; 20];
    let mut at = 0;
    let mut bound = 0.000_05;
    while at < 19 {
        bounds[at] = bound;
        bound *= 2.0;
        at += 1;
    }
    bounds
};

/// Adds `amount` to a value only the calling thread writes: a load and a
/// store, without the locked read-modify-write a shared value needs.
fn add(value: &AtomicU64, amount: u64) {
    value.store(value.load(Ordering::Relaxed) + amount, Ordering::Relaxed);
}

/// One histogram's counts on one thread.
#[derive(Default)]
struct Durations {
    /// The sum of the observed seconds, as `f64` bits.
    sum: AtomicU64,
    count: AtomicU64,
    /// Observations per bucket (not cumulative), as [`LATENCY_BOUNDS`] orders them.
    buckets: [AtomicU64; LATENCY_BOUNDS.len()],
}

impl Durations {
    fn observe(&self, seconds: f64) {
        let sum = f64::from_bits(self.sum.load(Ordering::Relaxed)) + seconds;
        self.sum.store(sum.to_bits(), Ordering::Relaxed);
        add(&self.count, 1);
        // As prometheus-client buckets: the first bound not below the value
        // (a NaN lands in `+Inf`).
        let bucket = LATENCY_BOUNDS
            .iter()
            .position(|bound| *bound >= seconds)
            .unwrap_or(LATENCY_BOUNDS.len() - 1);
        add(&self.buckets[bucket], 1);
    }
}

/// One thread's counts, aligned to whole cache-line pairs so that no other
/// thread's shard shares a line with it.
#[repr(align(128))]
struct Shard {
    /// Indexed by [`request_index`].
    requests: [AtomicU64; ROUTES * CACHES * CLASSES],
    durations: [Durations; CACHES],
}

impl Default for Shard {
    fn default() -> Shard {
        Shard {
            requests: std::array::from_fn(|_| AtomicU64::new(0)),
            durations: Default::default(),
        }
    }
}

fn request_index(route: RouteLabel, cache: CacheLabel, class: usize) -> usize {
    (route as usize * CACHES + cache as usize) * CLASSES + class
}

/// Both request series, every thread's shard of them.
#[derive(Default)]
pub(super) struct RequestSeries {
    shards: ThreadLocal<Shard>,
}

/// The counts are read by the scrape, not printed.
impl fmt::Debug for RequestSeries {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequestSeries").finish_non_exhaustive()
    }
}

impl RequestSeries {
    /// Counts one request on the calling thread's shard.
    pub(super) fn count(&self, route: RouteLabel, cache: CacheLabel, class: usize, took: Duration) {
        let shard = self.shards.get_or_default();
        add(&shard.requests[request_index(route, cache, class)], 1);
        shard.durations[cache as usize].observe(took.as_secs_f64());
    }

    /// Requests counted so far with this route, cache result and status class.
    pub(super) fn requests(&self, route: RouteLabel, cache: CacheLabel, class: usize) -> u64 {
        let index = request_index(route, cache, class);
        self.shards
            .iter()
            .map(|shard| shard.requests[index].load(Ordering::Relaxed))
            .sum()
    }

    /// The summed histogram of one cache result: sum, count, and each
    /// bucket's own count (not cumulative) with its upper bound.
    fn durations(&self, cache: CacheLabel) -> (f64, u64, Vec<(f64, u64)>) {
        let mut sum = 0.0;
        let mut count = 0;
        let mut buckets: Vec<(f64, u64)> = LATENCY_BOUNDS.iter().map(|bound| (*bound, 0)).collect();
        for shard in self.shards.iter() {
            let durations = &shard.durations[cache as usize];
            sum += f64::from_bits(durations.sum.load(Ordering::Relaxed));
            count += durations.count.load(Ordering::Relaxed);
            for (bucket, counted) in buckets.iter_mut().zip(&durations.buckets) {
                bucket.1 += counted.load(Ordering::Relaxed);
            }
        }
        (sum, count, buckets)
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: &'static str,
    cache: &'static str,
    status: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CacheLabelSet {
    cache: &'static str,
}

/// `requests_total` as registered: every label set, from the start.
#[derive(Debug)]
pub(super) struct RequestCounts(pub(super) std::sync::Arc<RequestSeries>);

impl EncodeMetric for RequestCounts {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), fmt::Error> {
        for route in RouteLabel::ALL {
            for cache in CacheLabel::ALL {
                for (class, status) in STATUS_CLASSES.iter().enumerate() {
                    let labels = RequestLabels {
                        route: route.as_str(),
                        cache: cache.as_str(),
                        status,
                    };
                    let value = self.0.requests(route, cache, class);
                    encoder
                        .encode_family(&labels)?
                        .encode_counter::<NoLabelSet, _, u64>(&value, None)?;
                }
            }
        }
        Ok(())
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Counter
    }
}

/// `request_duration_seconds` as registered: one histogram per cache result.
#[derive(Debug)]
pub(super) struct RequestDurations(pub(super) std::sync::Arc<RequestSeries>);

impl EncodeMetric for RequestDurations {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), fmt::Error> {
        for cache in CacheLabel::ALL {
            let labels = CacheLabelSet {
                cache: cache.as_str(),
            };
            let (sum, count, buckets) = self.0.durations(cache);
            encoder
                .encode_family(&labels)?
                .encode_histogram::<NoLabelSet>(sum, count, &buckets, None)?;
        }
        Ok(())
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

#[cfg(test)]
mod tests;
