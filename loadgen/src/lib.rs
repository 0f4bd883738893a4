//! The load generator behind `vasto loadgen`.
//!
//! Like `redis-benchmark -c C -P P`: [`run`] opens `concurrency` independent clients (so each
//! store sees `concurrency` connections), and on each client `pipeline` tasks issue requests back
//! to back, so up to `pipeline` requests are in flight per connection. The clients are spread
//! over `threads` OS threads, each running its own single-threaded tokio runtime (like
//! `redis-benchmark --threads`), so the generator's own cost per request stays low. Keys are
//! `key:000000000042`-style indexes drawn from `0..keys` uniformly, zipfian or skewed to the
//! latest writes ([`Distribution`]); the workload is put, get, a get/put mix or one of YCSB's
//! A, B, C and F ([`Workload`]); every put writes the same
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
//!     distribution: Some("zipfian:0.99".parse().map_err(vasto_loadgen::LoadgenError::Config)?),
//!     value_size: 100,
//!     concurrency: 16,
//!     pipeline: 4,
//!     threads: 0,
//!     duration: Duration::from_secs(10),
//!     progress: true,
//!     stop: None,
//!     token: None,
//! })
//! .await?;
//! println!("{}", report.human());
//! # Ok(()) }
//! ```

mod distribution;
mod keys;
mod report;
mod sampler;
mod worker;
mod workload;

pub use distribution::Distribution;
pub use report::Report;
pub use sampler::{Request, RequestSampler};
pub use workload::{Workload, Ycsb};

use hdrhistogram::Histogram;
use keys::SplitMix64;
use std::sync::Arc;
use std::time::{Duration, Instant};
use thiserror::Error;
use worker::{Counters, Stop, ThreadPlan, ThreadResult};

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
    /// Size of the key space: keys are drawn from `0..keys`.
    pub keys: u64,
    /// How keys are drawn (`None`: the workload's default, see
    /// [`Workload::default_distribution`]).
    pub distribution: Option<Distribution>,
    /// Bytes per written value.
    pub value_size: usize,
    /// Independent clients, i.e. connections per store.
    pub concurrency: usize,
    /// Requests in flight per connection.
    pub pipeline: usize,
    /// OS threads driving the clients (0 = one per CPU, never more than `concurrency`).
    pub threads: usize,
    /// How long to run.
    pub duration: Duration,
    /// Print a progress line to stderr every second.
    pub progress: bool,
    /// Stops the run early once it holds `true` (e.g. on Ctrl-C); the report then covers the
    /// time until the stop.
    pub stop: Option<tokio::sync::watch::Receiver<bool>>,
    /// The cluster token (`None`: an open cluster).
    pub token: Option<vasto_client::ClusterToken>,
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
    config.concurrency.checked_mul(config.pipeline).ok_or_else(|| LoadgenError::Config("concurrency x pipeline is too large".into()))?;
    let threads = match config.threads {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    }
    .min(config.concurrency);

    let mut seeder = SplitMix64::new(seed());
    let mut value = vec![0u8; config.value_size];
    seeder.fill(&mut value);
    let value: Arc<[u8]> = value.into();
    let distribution = config.distribution.unwrap_or(config.workload.default_distribution());
    // The zipfian constants cost a pass over up to a million ranks: computed once, copied.
    let chooser = distribution::KeyChooser::new(distribution, config.keys);
    let stop = Arc::new(Stop::default());
    let (start_tx, start_rx) = tokio::sync::watch::channel(false);
    let mut counters = Vec::with_capacity(threads);
    let mut readies = Vec::with_capacity(threads);
    let mut dones = Vec::with_capacity(threads);
    let mut handles = Vec::with_capacity(threads);
    for t in 0..threads {
        let plan = ThreadPlan {
            master: config.master.clone(),
            token: config.token.clone(),
            keyspace: config.keyspace.clone(),
            workload: config.workload,
            keys: config.keys,
            chooser,
            thread: t,
            threads,
            pipeline: config.pipeline,
            // Client i runs on thread i % threads.
            clients: (t..config.concurrency).step_by(threads).count(),
            value: Arc::clone(&value),
            seed: seeder.next_u64(),
            counters: Arc::new(Counters::default()),
            stop: Arc::clone(&stop),
        };
        counters.push(Arc::clone(&plan.counters));
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let (done_tx, done_rx) = tokio::sync::oneshot::channel();
        let start_rx = start_rx.clone();
        let spawned = std::thread::Builder::new().name(format!("vasto-loadgen-{t}")).spawn(move || worker::thread_main(plan, ready_tx, start_rx, done_tx));
        handles.push(spawned.map_err(|e| LoadgenError::Config(format!("starting a load thread: {e}")))?);
        readies.push(ready_rx);
        dones.push(done_rx);
    }
    // Every client connects before the clock starts; dropping `start_tx` on an error ends the
    // threads that did connect.
    for ready in readies {
        ready.await.map_err(|_| LoadgenError::Config("a load thread died while connecting".into()))??;
    }

    let start = Instant::now();
    let _ = start_tx.send(true);
    let progress = config.progress.then(|| tokio::spawn(worker::print_progress(start, counters.clone())));
    let deadline = tokio::time::sleep_until(tokio::time::Instant::from_std(start) + config.duration);
    let early = async {
        let stopped = match config.stop.clone() {
            Some(mut rx) => rx.wait_for(|s| *s).await.is_ok(),
            None => false,
        };
        // No stop signal, or its sender is gone: only the deadline ends the run.
        if !stopped {
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        _ = deadline => {}
        _ = early => {}
    }
    stop.stop();
    let elapsed = start.elapsed();
    if let Some(p) = progress {
        p.abort();
        let _ = p.await;
        worker::finish_progress();
    }

    let mut hist = new_histogram()?;
    let mut not_found = 0u64;
    let mut first_error: Option<(Instant, String)> = None;
    for done in dones {
        let ThreadResult { hist: h, not_found: n, first_error: e } =
            done.await.map_err(|_| LoadgenError::Config("a load thread died during the run".into()))?;
        hist.add(&h).map_err(|e| LoadgenError::Config(format!("merging latency histograms: {e}")))?;
        not_found += n;
        if let Some((at, msg)) = e {
            if !matches!(&first_error, Some((first, _)) if *first <= at) {
                first_error = Some((at, msg));
            }
        }
    }
    for handle in handles {
        if let Ok(Err(panic)) = tokio::task::spawn_blocking(move || handle.join()).await {
            std::panic::resume_unwind(panic);
        }
    }
    let ops: u64 = counters.iter().map(|c| c.ops.load(std::sync::atomic::Ordering::Relaxed)).sum();
    let errors: u64 = counters.iter().map(|c| c.errors.load(std::sync::atomic::Ordering::Relaxed)).sum();

    let secs = elapsed.as_secs_f64();
    let us = |q: f64| if hist.is_empty() { 0.0 } else { hist.value_at_quantile(q) as f64 };
    Ok(Report {
        workload: config.workload.to_string(),
        distribution: distribution.to_string(),
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
pub(crate) fn new_histogram() -> Result<Histogram<u64>, LoadgenError> {
    Histogram::new(HIST_SIGFIG).map_err(|e| LoadgenError::Config(format!("latency histogram: {e}")))
}

/// A seed that differs between runs and processes.
pub(crate) fn seed() -> u64 {
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
            distribution: None,
            value_size: 8,
            concurrency: 1,
            pipeline: 1,
            threads: 0,
            duration: Duration::from_millis(10),
            progress: false,
            stop: None,
            token: None,
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
