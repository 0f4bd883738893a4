//! The result of a run: machine-readable (serde) and human-readable.
use serde::Serialize;
use std::fmt::Write as _;

/// What a load-generator run measured. Latencies are in microseconds and cover every finished
/// request, failed ones included.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The workload as given (`put`, `get`, `mixed:R`).
    pub workload: String,
    /// How keys were drawn (`uniform`, `zipfian:THETA`, `latest`).
    pub distribution: String,
    /// Connections per store (independent clients).
    pub concurrency: usize,
    /// Requests in flight per connection.
    pub pipeline: usize,
    /// Value size in bytes.
    pub value_size: usize,
    /// Size of the key space.
    pub keys: u64,
    /// Measured wall time of the run, in seconds.
    pub duration_secs: f64,
    /// Successful requests (gets that found nothing included).
    pub ops: u64,
    /// Failed requests.
    pub errors: u64,
    /// Gets that found no value (not errors).
    pub not_found: u64,
    /// Successful requests per second.
    pub ops_per_sec: f64,
    /// Median latency.
    pub p50_us: f64,
    /// 99th-percentile latency.
    pub p99_us: f64,
    /// 99.9th-percentile latency.
    pub p999_us: f64,
    /// Slowest request.
    pub max_us: f64,
    /// The first error seen, if any.
    pub first_error: Option<String>,
}

impl Report {
    /// A multi-line summary for people, without a trailing newline.
    pub fn human(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "workload    {} ({} keys, {} connections x {} in flight, {}-byte values, {} keys)",
            self.workload, self.distribution, self.concurrency, self.pipeline, self.value_size, self.keys
        );
        let _ = writeln!(s, "duration    {:.2} s", self.duration_secs);
        let _ = writeln!(s, "requests    {} ok, {} errors, {} not found", self.ops, self.errors, self.not_found);
        let _ = writeln!(s, "throughput  {:.0} ops/s", self.ops_per_sec);
        let _ = write!(s, "latency     p50 {:.0} us  p99 {:.0} us  p99.9 {:.0} us  max {:.0} us", self.p50_us, self.p99_us, self.p999_us, self.max_us);
        if let Some(e) = &self.first_error {
            let _ = write!(s, "\nfirst error {e}");
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Report {
        Report {
            distribution: "zipfian:0.99".into(),
            workload: "mixed:50".into(),
            concurrency: 4,
            pipeline: 2,
            value_size: 100,
            keys: 1000,
            duration_secs: 1.5,
            ops: 3000,
            errors: 1,
            not_found: 7,
            ops_per_sec: 2000.0,
            p50_us: 100.0,
            p99_us: 300.0,
            p999_us: 900.0,
            max_us: 1200.0,
            first_error: Some("connection lost".into()),
        }
    }

    #[test]
    fn human_mentions_every_figure() {
        let h = sample().human();
        for needle in ["mixed:50", "4 connections x 2 in flight", "3000 ok", "1 errors", "7 not found", "2000 ops/s", "p99.9 900 us", "connection lost"] {
            assert!(h.contains(needle), "{needle:?} missing from:\n{h}");
        }
        assert!(!h.ends_with('\n'));
    }

    #[test]
    fn serializes_to_json() {
        let v: serde_json::Value = serde_json::from_str(&serde_json::to_string(&sample()).unwrap()).unwrap();
        assert_eq!(v["ops"], 3000);
        assert_eq!(v["first_error"], "connection lost");
    }
}
