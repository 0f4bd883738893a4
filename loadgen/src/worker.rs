//! One load thread (a single-threaded tokio runtime driving its share of the clients), the
//! request loops on it, and the live progress line.
//!
//! Each thread owns its clients, its tasks and one latency histogram, so a request touches
//! nothing another thread writes: no cross-thread wake-ups, no contended locks, and the
//! histogram stays in cache (with one histogram per task, 1,024 of them at c64 P16, recording
//! was a tenth of the load generator's profile, nearly all cache misses).
use crate::distribution::{KeyChooser, Recency};
use crate::keys::{KeyBuf, SplitMix64};
use crate::workload::Op;
use crate::{LoadgenError, Workload};
use hdrhistogram::Histogram;
use std::cell::{Cell, RefCell};
use std::io::{IsTerminal, Write as _};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{oneshot, watch, Notify};
use vasto_client::{Client, ClientConfig, ClientError, Keyspace};

/// How long a thread waits, after the end of the run, for requests still in flight before it
/// abandons them (a dead store would otherwise hold the run until the request timeout).
const GRACE: Duration = Duration::from_secs(1);

/// Live counters of one thread, written only by that thread and read by the progress printer.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    /// Successful requests so far.
    pub ops: AtomicU64,
    /// Failed requests so far.
    pub errors: AtomicU64,
}

impl Counters {
    /// Adds one to a counter only this thread writes (no read-modify-write instruction needed).
    fn bump(counter: &AtomicU64) {
        counter.store(counter.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
    }
}

/// The end of the run, shared by every thread.
#[derive(Default)]
pub(crate) struct Stop {
    flag: AtomicBool,
    notify: Notify,
}

impl Stop {
    /// Ends the run: requests finishing from now on are not counted.
    pub fn stop(&self) {
        self.flag.store(true, Ordering::Release);
        self.notify.notify_waiters();
    }

    fn stopped(&self) -> bool {
        self.flag.load(Ordering::Relaxed)
    }

    async fn wait(&self) {
        let notified = self.notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if !self.flag.load(Ordering::Acquire) {
            notified.await;
        }
    }
}

/// What one thread measured.
pub(crate) struct ThreadResult {
    /// Latencies in microseconds.
    pub hist: Histogram<u64>,
    /// Gets that found nothing.
    pub not_found: u64,
    /// The first failure and when it happened.
    pub first_error: Option<(Instant, String)>,
}

/// What a thread needs, besides its clients.
pub(crate) struct ThreadPlan {
    pub master: String,
    pub token: Option<vasto_client::ClusterToken>,
    pub keyspace: String,
    pub workload: Workload,
    pub keys: u64,
    pub chooser: KeyChooser,
    /// This thread's index and the number of threads (where `latest` writes start).
    pub thread: usize,
    pub threads: usize,
    pub pipeline: usize,
    pub clients: usize,
    pub value: Arc<[u8]>,
    pub seed: u64,
    pub counters: Arc<Counters>,
    pub stop: Arc<Stop>,
}

/// The per-thread state every task of the thread records into.
struct ThreadStats {
    hist: RefCell<Histogram<u64>>,
    not_found: Cell<u64>,
    first_error: RefCell<Option<(Instant, String)>>,
    counters: Arc<Counters>,
    /// The thread's `latest` write cursor, shared by its tasks.
    recency: Recency,
}

/// Runs one load thread to completion: connects its clients and reports that on `ready`, waits
/// for the start (the run is abandoned if `start` closes), runs until the stop, and sends what
/// it measured on `done`.
pub(crate) fn thread_main(
    plan: ThreadPlan,
    ready: oneshot::Sender<Result<(), LoadgenError>>,
    mut start: watch::Receiver<bool>,
    done: oneshot::Sender<ThreadResult>,
) {
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            let _ = ready.send(Err(LoadgenError::Config(format!("load thread runtime: {e}"))));
            return;
        }
    };
    let local = tokio::task::LocalSet::new();
    local.block_on(&runtime, async move {
        let keyspaces = match connect(&plan).await {
            Ok(k) => k,
            Err(e) => {
                let _ = ready.send(Err(e.into()));
                return;
            }
        };
        let hist = match crate::new_histogram() {
            Ok(h) => h,
            Err(e) => {
                let _ = ready.send(Err(e));
                return;
            }
        };
        if ready.send(Ok(())).is_err() || start.wait_for(|s| *s).await.is_err() {
            return;
        }
        let stats = Rc::new(ThreadStats {
            hist: RefCell::new(hist),
            not_found: Cell::new(0),
            first_error: RefCell::new(None),
            counters: plan.counters,
            recency: Recency::new(plan.thread, plan.threads, plan.keys),
        });
        let mut seeder = SplitMix64::new(plan.seed);
        let mut tasks = Vec::with_capacity(keyspaces.len() * plan.pipeline);
        for ks in &keyspaces {
            for _ in 0..plan.pipeline {
                let task = Task {
                    ks: ks.clone(),
                    workload: plan.workload,
                    keys: plan.keys,
                    chooser: plan.chooser,
                    value: Arc::clone(&plan.value),
                    rng: SplitMix64::new(seeder.next_u64()),
                    stats: Rc::clone(&stats),
                    stop: Arc::clone(&plan.stop),
                };
                tasks.push(tokio::task::spawn_local(run_task(task)));
            }
        }
        let all_done = futures_util::future::join_all(tasks);
        let grace_over = async {
            plan.stop.wait().await;
            tokio::time::sleep(GRACE).await;
        };
        tokio::select! {
            _ = all_done => {}
            _ = grace_over => {}
        }
        // Abandoned tasks (see GRACE) still hold the stats, so they are copied out.
        let result = ThreadResult { hist: stats.hist.borrow().clone(), not_found: stats.not_found.get(), first_error: stats.first_error.take() };
        let _ = done.send(result);
    });
}

async fn connect(plan: &ThreadPlan) -> Result<Vec<Keyspace>, ClientError> {
    let clients = futures_util::future::try_join_all(
        (0..plan.clients).map(|_| Client::connect_with(&plan.master, ClientConfig { token: plan.token.clone(), ..ClientConfig::default() })),
    )
    .await?;
    futures_util::future::try_join_all(clients.iter().map(|c| c.keyspace(&plan.keyspace))).await
}

/// One request loop.
struct Task {
    /// The keyspace handle (shares its client's connections with the other tasks of the client).
    ks: Keyspace,
    workload: Workload,
    keys: u64,
    chooser: KeyChooser,
    /// The value every put writes.
    value: Arc<[u8]>,
    rng: SplitMix64,
    stats: Rc<ThreadStats>,
    stop: Arc<Stop>,
}

/// Issues requests back to back until the stop; a request that finishes after it is not counted.
async fn run_task(task: Task) {
    let Task { ks, workload, keys, chooser, value, mut rng, stats, stop } = task;
    let mut key = KeyBuf::new(keys);
    // Values read land here, one buffer reused by every get of this task.
    let mut read_buf = Vec::new();
    while !stop.stopped() {
        let (op, index) = crate::sampler::draw(workload, &chooser, &mut rng, &stats.recency);
        let key = key.set(index);
        let started = Instant::now();
        let outcome = request(&ks, op, key, &value, &mut read_buf).await;
        if stop.stopped() {
            break;
        }
        record(&mut stats.hist.borrow_mut(), started.elapsed());
        match outcome {
            Ok(found) => {
                Counters::bump(&stats.counters.ops);
                if !found {
                    stats.not_found.set(stats.not_found.get() + 1);
                }
            }
            Err(e) => {
                Counters::bump(&stats.counters.errors);
                if stats.first_error.borrow().is_none() {
                    stats.first_error.replace(Some((Instant::now(), e.to_string())));
                }
                // A failure can be immediate (e.g. a closed connection): let other tasks run.
                tokio::task::yield_now().await;
            }
        }
    }
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

/// One get, put, or get then put of the same key; `Ok(false)` when the get found nothing.
#[inline]
async fn request(ks: &Keyspace, op: Op, key: &[u8], value: &[u8], buf: &mut Vec<u8>) -> Result<bool, ClientError> {
    match op {
        Op::Read => ks.get_into(key, buf).await,
        Op::Write => ks.put(key, value).await.map(|()| true),
        Op::ReadModifyWrite => {
            let found = ks.get_into(key, buf).await?;
            ks.put(key, value).await?;
            Ok(found)
        }
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
