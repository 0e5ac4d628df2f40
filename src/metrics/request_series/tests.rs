use std::sync::Arc;

use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use super::*;

fn encoded(registry: &Registry) -> String {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, registry).unwrap();
    text
}

#[test]
fn the_bounds_are_fifty_microseconds_doubling_then_infinity() {
    let expected: Vec<f64> = exponential_buckets(0.000_05, 2.0, 19).collect();
    assert_eq!(&LATENCY_BOUNDS[..19], &expected[..]);
    assert_eq!(LATENCY_BOUNDS[19], f64::INFINITY);
}

#[test]
fn every_thread_counts_apart_and_a_scrape_sums_them() {
    const THREADS: usize = 4;
    let series = Arc::new(RequestSeries::default());
    // Every thread starts counting together, and none ends before all have
    // counted: four threads alive at once, four slots (an ended thread's
    // slot goes to the next thread started).
    let start = Arc::new(std::sync::Barrier::new(THREADS));
    let counted = Arc::new(std::sync::Barrier::new(THREADS));
    let threads: Vec<_> = (0..THREADS)
        .map(|_| {
            let (series, start, counted) = (
                Arc::clone(&series),
                Arc::clone(&start),
                Arc::clone(&counted),
            );
            std::thread::spawn(move || {
                start.wait();
                for _ in 0..20_000 {
                    series.count(RouteLabel::Conversation, CacheLabel::Hit, 0, Duration::ZERO);
                }
                counted.wait();
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    // The threads have ended: their counts stay.
    assert_eq!(
        series.requests(RouteLabel::Conversation, CacheLabel::Hit, 0),
        80_000,
        "no count lost"
    );
    let index = request_index(RouteLabel::Conversation, CacheLabel::Hit, 0);
    let per_shard: Vec<u64> = series
        .shards
        .iter()
        .map(|shard| shard.requests[index].load(Ordering::Relaxed))
        .collect();
    assert_eq!(
        per_shard, [20_000; THREADS],
        "each thread counted in a shard of its own"
    );
    assert_eq!(
        series.requests(RouteLabel::Conversation, CacheLabel::Miss, 0),
        0
    );
}

#[test]
fn each_label_set_counts_alone() {
    let series = RequestSeries::default();
    series.count(
        RouteLabel::PassThrough,
        CacheLabel::Bypass,
        3,
        Duration::ZERO,
    );
    series.count(
        RouteLabel::PassThrough,
        CacheLabel::Bypass,
        3,
        Duration::ZERO,
    );
    series.count(RouteLabel::Other, CacheLabel::None, 2, Duration::ZERO);
    let mut counted = Vec::new();
    for route in RouteLabel::ALL {
        for cache in CacheLabel::ALL {
            for class in 0..CLASSES {
                let n = series.requests(route, cache, class);
                if n > 0 {
                    counted.push((route, cache, class, n));
                }
            }
        }
    }
    assert_eq!(
        counted,
        [
            (RouteLabel::PassThrough, CacheLabel::Bypass, 3, 2),
            (RouteLabel::Other, CacheLabel::None, 2, 1),
        ]
    );
}

/// The histograms encode exactly as prometheus-client's own would, fed the
/// same observations from several threads.
#[test]
fn the_durations_encode_as_prometheus_clients_histograms() {
    let took = [
        Duration::ZERO,
        Duration::from_micros(50),
        Duration::from_micros(51),
        Duration::from_micros(700),
        Duration::from_millis(3),
        Duration::from_secs(1),
        Duration::from_secs(30),
    ];
    let series = Arc::new(RequestSeries::default());
    let family =
        Family::<CacheLabelSet, Histogram, fn() -> Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.000_05, 2.0, 19))
        });
    for (at, took) in took.iter().enumerate() {
        let cache = CacheLabel::ALL[at % 2];
        let labels = CacheLabelSet {
            cache: cache.as_str(),
        };
        family.get_or_create(&labels).observe(took.as_secs_f64());
        let series = Arc::clone(&series);
        let took = *took;
        std::thread::spawn(move || series.count(RouteLabel::Conversation, cache, 0, took))
            .join()
            .unwrap();
    }
    for cache in CacheLabel::ALL.into_iter().skip(2) {
        // Present from the start, as ours are.
        drop(family.get_or_create(&CacheLabelSet {
            cache: cache.as_str(),
        }));
    }
    let mut ours = Registry::default();
    ours.register("d", "durations", RequestDurations(Arc::clone(&series)));
    let mut theirs = Registry::default();
    theirs.register("d", "durations", family);
    let sorted = |text: String| {
        let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
        lines.sort();
        lines
    };
    let ours = sorted(encoded(&ours));
    assert!(
        ours.contains(&"d_count{cache=\"hit\"} 4".to_owned()),
        "{ours:#?}"
    );
    assert_eq!(ours, sorted(encoded(&theirs)));
}

#[test]
fn the_counts_encode_every_label_set_from_the_start() {
    let series = Arc::new(RequestSeries::default());
    series.count(RouteLabel::Health, CacheLabel::None, 0, Duration::ZERO);
    let mut registry = Registry::default();
    registry.register("requests", "Requests answered", RequestCounts(series));
    let text = encoded(&registry);
    let samples: Vec<&str> = text.lines().filter(|line| !line.starts_with('#')).collect();
    assert_eq!(samples.len(), ROUTES * CACHES * CLASSES);
    assert!(samples.contains(&"requests_total{route=\"health\",cache=\"none\",status=\"2xx\"} 1"));
    assert!(
        samples.contains(&"requests_total{route=\"conversation\",cache=\"hit\",status=\"5xx\"} 0")
    );
    assert!(text.contains("# TYPE requests counter"));
}
