//! One request loop (a task issuing requests back to back on a shared connection) and the live
//! progress line.
use crate::keys::{KeyBuf, SplitMix64};
use crate::Workload;
use hdrhistogram::Histogram;
use std::io::{IsTerminal, Write as _};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use vasto_client::{ClientError, Keyspace};

/// Live counters of one task, written only by that task and read by the progress printer.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    /// Successful requests so far.
    pub ops: AtomicU64,
    /// Failed requests so far.
    pub errors: AtomicU64,
}

/// Everything one request loop needs.
pub(crate) struct Task {
    /// The keyspace handle (shares its client's connections with the other tasks of the client).
    pub ks: Keyspace,
    /// The request mix.
    pub workload: Workload,
    /// Size of the key space.
    pub keys: u64,
    /// The value every put writes.
    pub value: Arc<[u8]>,
    /// This task's random stream.
    pub rng: SplitMix64,
    /// Latency histogram in microseconds (empty, auto-resizing).
    pub hist: Histogram<u64>,
    /// Shared with the progress printer.
    pub counters: Arc<Counters>,
    /// When to stop; a request still in flight then is abandoned and not counted.
    pub deadline: tokio::time::Instant,
    /// Stops early once it holds `true`.
    pub stop: Option<tokio::sync::watch::Receiver<bool>>,
}

/// What one request loop measured.
pub(crate) struct TaskResult {
    /// Latencies in microseconds.
    pub hist: Histogram<u64>,
    /// Successful requests.
    pub ops: u64,
    /// Failed requests.
    pub errors: u64,
    /// Gets that found nothing.
    pub not_found: u64,
    /// The first failure and when it happened.
    pub first_error: Option<(Instant, String)>,
}

/// Issues requests back to back until the deadline or an early stop.
pub(crate) async fn run_task(task: Task) -> TaskResult {
    let Task { ks, workload, keys, value, mut rng, mut hist, counters, deadline, stop } = task;
    let mut key = KeyBuf::new(keys);
    // Values read land here, one buffer reused by every get of this task.
    let mut read_buf = Vec::new();
    let (mut ops, mut errors, mut not_found) = (0u64, 0u64, 0u64);
    let mut first_error = None;
    let stop = async move {
        let early = async move {
            let stopped = match stop {
                Some(mut rx) => rx.wait_for(|s| *s).await.is_ok(),
                None => false,
            };
            // No stop signal, or its sender is gone: only the deadline ends the run.
            if !stopped {
                std::future::pending::<()>().await;
            }
        };
        tokio::select! {
            _ = tokio::time::sleep_until(deadline) => {}
            _ = early => {}
        }
    };
    tokio::pin!(stop);
    loop {
        let index = rng.below(keys);
        let read = workload.is_read(rng.next_u64());
        let key = key.set(index);
        let started = Instant::now();
        let outcome = tokio::select! {
            biased;
            _ = &mut stop => break,
            r = request(&ks, read, key, &value, &mut read_buf) => r,
        };
        record(&mut hist, started.elapsed());
        match outcome {
            Ok(found) => {
                ops += 1;
                not_found += u64::from(!found);
                counters.ops.store(ops, Ordering::Relaxed);
            }
            Err(e) => {
                errors += 1;
                counters.errors.store(errors, Ordering::Relaxed);
                if first_error.is_none() {
                    first_error = Some((Instant::now(), e.to_string()));
                }
                // A failure can be immediate (e.g. a closed connection): let other tasks run.
                tokio::task::yield_now().await;
            }
        }
    }
    TaskResult { hist, ops, errors, not_found, first_error }
}

/// Records `latency` in microseconds, growing the histogram as needed (`saturating_record`
/// would clamp instead of growing).
#[inline]
pub(crate) fn record(hist: &mut Histogram<u64>, latency: Duration) {
    let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
    if hist.record(us).is_err() {
        hist.saturating_record(us);
    }
}

/// One get or put; `Ok(false)` for a get that found nothing.
#[inline]
async fn request(ks: &Keyspace, read: bool, key: &[u8], value: &[u8], buf: &mut Vec<u8>) -> Result<bool, ClientError> {
    if read {
        ks.get_into(key, buf).await
    } else {
        ks.put(key, value).await.map(|()| true)
    }
}

/// Prints a progress line to stderr every second until aborted: elapsed time, ops/s over the
/// last second, total ops and errors. Overwrites one line on a terminal, one line per second
/// otherwise.
pub(crate) async fn print_progress(start: Instant, counters: Vec<Arc<Counters>>) {
    let tty = std::io::stderr().is_terminal();
    let period = Duration::from_secs(1);
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::from_std(start) + period, period);
    let (mut last_ops, mut last_at) = (0u64, start);
    loop {
        ticks.tick().await;
        let now = Instant::now();
        let ops: u64 = counters.iter().map(|c| c.ops.load(Ordering::Relaxed)).sum();
        let errors: u64 = counters.iter().map(|c| c.errors.load(Ordering::Relaxed)).sum();
        let secs = now.duration_since(last_at).as_secs_f64().max(1e-9);
        let rate = (ops - last_ops.min(ops)) as f64 / secs;
        let line = format!("[{:>5.1}s] {:>10.0} ops/s  {:>12} ops  {} errors", now.duration_since(start).as_secs_f64(), rate, ops, errors);
        let mut err = std::io::stderr().lock();
        let _ = if tty { write!(err, "\r{line}\x1b[K") } else { writeln!(err, "{line}") };
        let _ = err.flush();
        (last_ops, last_at) = (ops, now);
    }
}

/// Ends the progress output (moves off the overwritten line on a terminal).
pub(crate) fn finish_progress() {
    if std::io::stderr().is_terminal() {
        let mut err = std::io::stderr().lock();
        let _ = writeln!(err);
    }
}
