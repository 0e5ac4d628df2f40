//! Percentiles of recorded durations (nearest rank over every sample: no histogram buckets).

/// A summary of samples in nanoseconds, reported in microseconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    pub count: usize,
    pub p50_us: f64,
    pub p90_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
    pub mean_us: f64,
}

/// Sorts `samples` (nanoseconds) and summarises them; all zeros when there are none.
pub fn summarise(samples: &mut [u64]) -> Summary {
    samples.sort_unstable();
    let at = |q: f64| nearest_rank(samples, q) as f64 / 1000.0;
    let total: u128 = samples.iter().map(|&s| u128::from(s)).sum();
    Summary {
        count: samples.len(),
        p50_us: at(0.50),
        p90_us: at(0.90),
        p99_us: at(0.99),
        p999_us: at(0.999),
        max_us: samples.last().copied().unwrap_or(0) as f64 / 1000.0,
        mean_us: total as f64 / samples.len().max(1) as f64 / 1000.0,
    }
}

/// The smallest sample with at least a fraction `q` of the samples at or below it.
fn nearest_rank(sorted: &[u64], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles_of_one_to_a_thousand() {
        let mut samples: Vec<u64> = (1..=1000).rev().map(|us| us * 1000).collect();
        let summary = summarise(&mut samples);
        assert_eq!(summary.count, 1000);
        assert_eq!(
            (
                summary.p50_us,
                summary.p90_us,
                summary.p99_us,
                summary.p999_us,
                summary.max_us
            ),
            (500.0, 900.0, 990.0, 999.0, 1000.0)
        );
        assert_eq!(summary.mean_us, 500.5);
    }

    #[test]
    fn one_slow_sample_in_a_hundred_is_the_p99() {
        let mut samples = vec![1_000; 99];
        samples.push(50_000);
        let summary = summarise(&mut samples);
        assert_eq!(
            (summary.p50_us, summary.p99_us, summary.max_us),
            (1.0, 1.0, 50.0)
        );
        samples.push(50_000);
        assert_eq!(summarise(&mut samples).p99_us, 50.0);
    }

    #[test]
    fn no_samples_summarise_to_zeros() {
        assert_eq!(summarise(&mut []).count, 0);
        assert_eq!(summarise(&mut []).p99_us, 0.0);
    }
}
