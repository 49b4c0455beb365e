//! What a request used: its tokens, and the latency histogram of the usage rollups —
//! quarter-octave buckets, so a percentile read from it is the upper edge of its bucket,
//! at most 19% above the true value.

use serde::Deserialize;

/// Tokens of one request, as the upstream counted them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub struct Usage {
    #[serde(default)]
    pub prompt_tokens: u64,
    #[serde(default)]
    pub completion_tokens: u64,
}

/// Buckets per doubling of latency.
const BUCKETS_PER_OCTAVE: f64 = 4.0;

/// The histogram bucket of a latency: `floor(4 · log2(ms + 1))`.
pub fn latency_bucket(latency_ms: u64) -> i64 {
    ((latency_ms as f64 + 1.0).log2() * BUCKETS_PER_OCTAVE).floor() as i64
}

/// The largest latency (ms) that falls in `bucket`.
pub fn bucket_upper_ms(bucket: i64) -> f64 {
    (2f64.powf((bucket + 1) as f64 / BUCKETS_PER_OCTAVE) - 1.0).max(0.0)
}

/// The `fraction` percentile (0..=1) of a histogram given as `(bucket, count)` in bucket
/// order, rounded to 0.1 ms; `None` when it is empty.
pub fn percentile(histogram: &[(i64, i64)], fraction: f64) -> Option<f64> {
    let total: i64 = histogram.iter().map(|(_, n)| n).sum();
    if total == 0 {
        return None;
    }
    let target = (total as f64 * fraction).ceil() as i64;
    let mut seen = 0;
    for (bucket, n) in histogram {
        seen += n;
        if seen >= target {
            return Some((bucket_upper_ms(*bucket) * 10.0).round() / 10.0);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_buckets_bound_the_error() {
        for ms in [0u64, 1, 7, 100, 999, 12_345, 600_000] {
            let upper = bucket_upper_ms(latency_bucket(ms));
            assert!(upper >= ms as f64, "{ms} > {upper}");
            assert!(upper <= (ms as f64 + 1.0) * 1.19 + 1.0, "{ms}: {upper}");
        }
    }

    #[test]
    fn percentiles_come_from_the_bucket_they_fall_in() {
        let histogram = [(latency_bucket(10), 94), (latency_bucket(1000), 6)];
        assert_eq!(percentile(&histogram, 0.5), Some((bucket_upper_ms(latency_bucket(10)) * 10.0).round() / 10.0));
        assert!(percentile(&histogram, 0.95).unwrap() >= 1000.0);
        assert_eq!(percentile(&[], 0.95), None);
    }
}
