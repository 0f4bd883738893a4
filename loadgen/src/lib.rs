//! The load generator behind `vasto loadgen`.
//!
//! Like `redis-benchmark -c C -P P`: [`run`] opens `concurrency` independent clients (so each
//! store sees `concurrency` connections), and on each client `pipeline` tasks issue requests back
//! to back, so up to `pipeline` requests are in flight per connection. Keys are
//! `key:000000000042`-style indexes drawn uniformly from `0..keys`; every put writes the same
//! `value_size` random bytes. Every request's latency goes into an HDR histogram (microseconds,
//! 3 significant digits); the [`Report`] gives throughput and percentiles.
//!
//! ```no_run
//! # async fn demo() -> Result<(), vasto_loadgen::LoadgenError> {
//! use vasto_loadgen::{run, LoadgenConfig, Workload};
//! use std::time::Duration;
//!
//! let report = run(&LoadgenConfig {
//!     master: "127.0.0.1:8278".into(),
//!     keyspace: "default".into(),
//!     workload: "mixed:90".parse().map_err(vasto_loadgen::LoadgenError::Config)?,
//!     keys: 100_000,
//!     value_size: 100,
//!     concurrency: 16,
//!     pipeline: 4,
//!     duration: Duration::from_secs(10),
//!     progress: true,
//!     stop: None,
//! })
//! .await?;
//! println!("{}", report.human());
//! # Ok(()) }
//! ```

mod keys;
mod report;
mod worker;
mod workload;

pub use report::Report;
pub use workload::Workload;

use futures_util::future::{join_all, try_join_all};
use hdrhistogram::Histogram;
use keys::SplitMix64;
use std::sync::Arc;
use std::time::{Duration, Instant};
use thiserror::Error;
use vasto_client::Client;
use worker::{Counters, Task};

/// Significant digits of the latency histograms.
const HIST_SIGFIG: u8 = 3;

/// What to run.
#[derive(Debug, Clone)]
pub struct LoadgenConfig {
    /// The master's `host:port`.
    pub master: String,
    /// The keyspace to load (must exist).
    pub keyspace: String,
    /// The request mix.
    pub workload: Workload,
    /// Size of the key space: keys are drawn uniformly from `0..keys`.
    pub keys: u64,
    /// Bytes per written value.
    pub value_size: usize,
    /// Independent clients, i.e. connections per store.
    pub concurrency: usize,
    /// Requests in flight per connection.
    pub pipeline: usize,
    /// How long to run.
    pub duration: Duration,
    /// Print a progress line to stderr every second.
    pub progress: bool,
    /// Stops the run early once it holds `true` (e.g. on Ctrl-C); the report then covers the
    /// time until the stop.
    pub stop: Option<tokio::sync::watch::Receiver<bool>>,
}

/// Why a run could not happen. Failed requests during a run are not errors: they are counted
/// in the [`Report`].
#[derive(Debug, Error)]
pub enum LoadgenError {
    /// The configuration is invalid.
    #[error("invalid loadgen configuration: {0}")]
    Config(String),
    /// Connecting to the cluster or opening the keyspace failed.
    #[error(transparent)]
    Client(#[from] vasto_client::ClientError),
}

/// Runs the load described by `config` and reports what it measured. Fails only if the
/// configuration is invalid or the clients cannot connect or open the keyspace.
pub async fn run(config: &LoadgenConfig) -> Result<Report, LoadgenError> {
    validate(config)?;
    let tasks_total = config.concurrency.checked_mul(config.pipeline).ok_or_else(|| LoadgenError::Config("concurrency x pipeline is too large".into()))?;

    let clients = try_join_all((0..config.concurrency).map(|_| Client::connect(&config.master))).await?;
    let keyspaces = try_join_all(clients.iter().map(|c| c.keyspace(&config.keyspace))).await?;

    let mut seeder = SplitMix64::new(seed());
    let mut value = vec![0u8; config.value_size];
    seeder.fill(&mut value);
    let value: Arc<[u8]> = value.into();

    let start = Instant::now();
    let deadline = tokio::time::Instant::from_std(start) + config.duration;
    let mut counters = Vec::with_capacity(tasks_total);
    let mut handles = Vec::with_capacity(tasks_total);
    for ks in &keyspaces {
        for _ in 0..config.pipeline {
            let c = Arc::new(Counters::default());
            counters.push(Arc::clone(&c));
            let task = Task {
                ks: ks.clone(),
                workload: config.workload,
                keys: config.keys,
                value: Arc::clone(&value),
                rng: SplitMix64::new(seeder.next_u64()),
                hist: new_histogram()?,
                counters: c,
                deadline,
                stop: config.stop.clone(),
            };
            handles.push(tokio::spawn(worker::run_task(task)));
        }
    }
    let progress = config.progress.then(|| tokio::spawn(worker::print_progress(start, counters)));

    let results = join_all(handles).await;
    let elapsed = start.elapsed();
    if let Some(p) = progress {
        p.abort();
        let _ = p.await;
        worker::finish_progress();
    }
    drop(keyspaces);
    drop(clients);

    let mut hist = new_histogram()?;
    let (mut ops, mut errors, mut not_found) = (0u64, 0u64, 0u64);
    let mut first_error: Option<(Instant, String)> = None;
    for result in results {
        let r = match result {
            Ok(r) => r,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(e) => return Err(LoadgenError::Config(format!("load task did not finish: {e}"))),
        };
        hist.add(&r.hist).map_err(|e| LoadgenError::Config(format!("merging latency histograms: {e}")))?;
        ops += r.ops;
        errors += r.errors;
        not_found += r.not_found;
        if let Some((at, msg)) = r.first_error {
            if !matches!(&first_error, Some((first, _)) if *first <= at) {
                first_error = Some((at, msg));
            }
        }
    }

    let secs = elapsed.as_secs_f64();
    let us = |q: f64| if hist.is_empty() { 0.0 } else { hist.value_at_quantile(q) as f64 };
    Ok(Report {
        workload: config.workload.to_string(),
        concurrency: config.concurrency,
        pipeline: config.pipeline,
        value_size: config.value_size,
        keys: config.keys,
        duration_secs: secs,
        ops,
        errors,
        not_found,
        ops_per_sec: if secs > 0.0 { ops as f64 / secs } else { 0.0 },
        p50_us: us(0.5),
        p99_us: us(0.99),
        p999_us: us(0.999),
        max_us: if hist.is_empty() { 0.0 } else { hist.max() as f64 },
        first_error: first_error.map(|(_, msg)| msg),
    })
}

/// Checks the configuration before anything connects.
fn validate(config: &LoadgenConfig) -> Result<(), LoadgenError> {
    let fail = |what: &str| Err(LoadgenError::Config(what.to_owned()));
    if config.keys == 0 {
        return fail("keys must be greater than 0");
    }
    if config.concurrency == 0 {
        return fail("concurrency must be greater than 0");
    }
    if config.pipeline == 0 {
        return fail("pipeline must be greater than 0");
    }
    if config.duration.is_zero() {
        return fail("duration must be greater than 0");
    }
    if config.keyspace.is_empty() {
        return fail("keyspace must not be empty");
    }
    Ok(())
}

/// An empty auto-resizing latency histogram.
fn new_histogram() -> Result<Histogram<u64>, LoadgenError> {
    Histogram::new(HIST_SIGFIG).map_err(|e| LoadgenError::Config(format!("latency histogram: {e}")))
}

/// A seed that differs between runs and processes.
fn seed() -> u64 {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0);
    nanos ^ u64::from(std::process::id()).rotate_left(32)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> LoadgenConfig {
        LoadgenConfig {
            master: "127.0.0.1:1".into(),
            keyspace: "ks".into(),
            workload: Workload::Put,
            keys: 10,
            value_size: 8,
            concurrency: 1,
            pipeline: 1,
            duration: Duration::from_millis(10),
            progress: false,
            stop: None,
        }
    }

    #[test]
    fn validation_rejects_zeroes() {
        assert!(validate(&config()).is_ok());
        let cases: [fn(&mut LoadgenConfig); 5] =
            [|c| c.keys = 0, |c| c.concurrency = 0, |c| c.pipeline = 0, |c| c.duration = Duration::ZERO, |c| c.keyspace.clear()];
        for break_it in cases {
            let mut c = config();
            break_it(&mut c);
            assert!(matches!(validate(&c), Err(LoadgenError::Config(_))), "{c:?}");
        }
    }

    #[tokio::test]
    async fn invalid_config_fails_before_connecting() {
        let mut c = config();
        c.pipeline = 0;
        let err = run(&c).await.unwrap_err();
        assert!(err.to_string().contains("pipeline"), "{err}");
    }

    #[test]
    fn histograms_merge() {
        let mut a = new_histogram().unwrap();
        let mut b = new_histogram().unwrap();
        worker::record(&mut a, Duration::from_micros(100));
        worker::record(&mut b, Duration::from_secs(10));
        a.add(&b).unwrap();
        assert_eq!(a.len(), 2);
        assert!(a.max() >= 9_990_000);
    }
}
