//! A fixed-bucket latency histogram in relaxed atomics.
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Upper bounds, in seconds, of the latency buckets every Vasto histogram uses (then `+Inf`):
/// 25 µs to 10 s, about three per decade, so p50 and p99 of a sub-millisecond store and of a
/// resize's stalls both fall inside.
pub const LATENCY_BUCKETS: [f64; 18] =
    [0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// Nanosecond bounds of [`LATENCY_BUCKETS`].
const BOUNDS_NS: [u64; 18] = {
    let mut ns = [0u64; 18];
    let mut i = 0;
    while i < ns.len() {
        ns[i] = (LATENCY_BUCKETS[i] * 1e9) as u64;
        i += 1;
    }
    ns
};

/// Counts of observations per bucket (not cumulative; the last counts those above every bound),
/// and their sum. Every update is a relaxed atomic add: a scrape may see one observation's
/// count before its sum, which Prometheus tolerates.
#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [AtomicU64; 19],
    sum_ns: AtomicU64,
}

impl Histogram {
    /// Records `count` observations that each took `ns` nanoseconds.
    pub fn observe_ns(&self, ns: u64, count: u64) {
        if count == 0 {
            return;
        }
        let bucket = BOUNDS_NS.iter().position(|&b| ns <= b).unwrap_or(BOUNDS_NS.len());
        self.buckets[bucket].fetch_add(count, Relaxed);
        self.sum_ns.fetch_add(ns.saturating_mul(count), Relaxed);
    }

    /// Adds this histogram's counts into `into` (bucket counts, then the sum in nanoseconds):
    /// how a scrape sums the per-thread histograms of one metric.
    pub fn add_to(&self, into: &mut HistogramTotals) {
        for (total, bucket) in into.buckets.iter_mut().zip(&self.buckets) {
            *total += bucket.load(Relaxed);
        }
        into.sum_ns += self.sum_ns.load(Relaxed);
    }

    /// The counts now.
    pub fn totals(&self) -> HistogramTotals {
        let mut t = HistogramTotals::default();
        self.add_to(&mut t);
        t
    }
}

/// A snapshot of one or several [`Histogram`]s.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct HistogramTotals {
    /// Observations per bucket (not cumulative), the last above every bound.
    pub buckets: [u64; 19],
    /// Sum of the observations in nanoseconds.
    pub sum_ns: u64,
}

impl HistogramTotals {
    /// Number of observations.
    pub fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_land_in_the_first_bucket_that_holds_them() {
        let h = Histogram::default();
        h.observe_ns(10_000, 1); // 10 µs: first bucket
        h.observe_ns(25_000, 2); // exactly on a bound: that bucket
        h.observe_ns(300_000, 1); // 0.3 ms: the 0.5 ms bucket
        h.observe_ns(60_000_000_000, 1); // a minute: above every bound
        h.observe_ns(1, 0); // nothing
        let t = h.totals();
        assert_eq!(t.buckets[0], 3);
        assert_eq!(t.buckets[4], 1);
        assert_eq!(t.buckets[18], 1);
        assert_eq!(t.count(), 5);
        assert_eq!(t.sum_ns, 10_000 + 50_000 + 300_000 + 60_000_000_000);
        let mut twice = t.clone();
        h.add_to(&mut twice);
        assert_eq!(twice.count(), 10);
    }
}
