//! Gets that need the disk, off the core threads.
//!
//! A core thread serves many connections, so a get that blocks it on a file read stalls all of
//! them, and a store with two cores has at most two reads in flight however many clients wait.
//! So a get first reads memory only (value cache, memtables, block cache:
//! `Shard::get_with_expiry_in_memory`); when that cannot answer, the get is *deferred*: held,
//! with every later get of the same read buffer (so answers keep request order), up to the
//! first request that is not a get. The connection then hands the batch, with its read buffer
//! and output buffer (moved, not copied), to a pool of reader threads and waits; its core serves
//! other connections meanwhile. A reader answers the gets in order into the output buffer and
//! hands everything back.
//!
//! The pool has `--read-threads` threads (default 16): enough reads in flight for an SSD's
//! queue, while each waits on the disk and costs no CPU. With 0, gets read files on the core.
//! A hand-off costs one small allocation (the reply channel) per batch of up to
//! [`MAX_DEFERRED`] gets, each of which waits for a file read: nothing on the in-memory path.
use crate::metrics::{Op, Tally};
use crate::refusal::engine_status;
use crate::registry::Replica;
use crate::server::OUTPUT_BOUND;
use std::ops::Range;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use vasto_wire::{FrameEncoder, Status};

/// Gets answered by reader threads since the start (`vasto_store_disk_gets`).
pub(crate) static DISK_GETS: AtomicU64 = AtomicU64::new(0);

/// Gets held at most per batch: bounds the answers one hand-off adds to the output.
pub(crate) const MAX_DEFERRED: usize = 64;

/// One deferred get: its key is a range of the read buffer the batch travels with.
struct DeferredGet {
    id: u64,
    replica: Arc<Replica>,
    key: Range<usize>,
    with_expiry: bool,
}

/// The gets of one connection waiting for a reader. Its vectors are reused from batch to batch.
#[derive(Default)]
pub(crate) struct ReadBatch {
    gets: Vec<DeferredGet>,
    /// The answers' statuses, in order, once answered.
    statuses: Vec<Status>,
}

impl ReadBatch {
    /// True when gets wait in the batch.
    pub fn pending(&self) -> bool {
        !self.gets.is_empty()
    }

    /// True when no more gets fit.
    pub fn is_full(&self) -> bool {
        self.gets.len() >= MAX_DEFERRED
    }

    /// Holds a get of `key`, a slice of `input` already checked against the replica.
    pub fn defer(&mut self, input: &[u8], id: u64, replica: &Arc<Replica>, key: &[u8], with_expiry: bool) {
        let start = key.as_ptr() as usize - input.as_ptr() as usize;
        self.gets.push(DeferredGet { id, replica: Arc::clone(replica), key: start..start + key.len(), with_expiry });
    }
}

/// A batch on its way to a reader with the connection's buffers (moved, not copied), and
/// where to send it all back.
struct Job {
    gets: Vec<DeferredGet>,
    statuses: Vec<Status>,
    input: Vec<u8>,
    out: Vec<u8>,
    done: Option<tokio::sync::oneshot::Sender<Job>>,
}

impl Job {
    /// Answers the gets in order, appending to `out`, until `out` holds [`OUTPUT_BOUND`]
    /// bytes; the rest stay in `gets` for the next run, once the connection has sent what
    /// `out` holds (blocking: a reader thread's work).
    fn answer(&mut self, enc: &mut FrameEncoder) {
        let Self { gets, statuses, input, out, .. } = self;
        statuses.clear();
        for get in gets.iter() {
            if out.len() >= OUTPUT_BOUND {
                break;
            }
            let key = &input[get.key.clone()];
            let answered = catch_unwind(AssertUnwindSafe(|| answer_get(enc, out, get.id, &get.replica, key, get.with_expiry, Tier::Any)));
            let status = match answered {
                Ok(Ok(Some(status))) => status,
                // A read of every tier is never incomplete; answered rather than assumed.
                Ok(Ok(None)) => fail(enc, out, get.id, Status::Internal, "storage error: a read of every tier came back incomplete"),
                Ok(Err(e)) => {
                    let (status, message) = engine_status(&e);
                    fail(enc, out, get.id, status, &message)
                }
                Err(_) => {
                    tracing::error!("a deferred get panicked; answering Internal");
                    fail(enc, out, get.id, Status::Internal, "internal error while handling the request")
                }
            };
            statuses.push(status);
        }
        gets.drain(..statuses.len());
    }
}

fn fail(enc: &mut FrameEncoder, out: &mut Vec<u8>, id: u64, status: Status, message: &str) -> Status {
    enc.status(out, id, status, message, 0);
    status
}

/// Where a get may read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Tier {
    /// Memory only: `Ok(None)` when the answer needs a file.
    Memory,
    /// Anything, the disk included.
    Any,
}

/// Reads `key` from `replica` and appends the answer (value or not found) to `out`; `Ok(None)`,
/// with nothing appended, when `tier` is [`Tier::Memory`] and the answer needs a file.
pub(crate) fn answer_get(
    enc: &mut FrameEncoder,
    out: &mut Vec<u8>,
    id: u64,
    replica: &Replica,
    key: &[u8],
    with_expiry: bool,
    tier: Tier,
) -> Result<Option<Status>, vasto_engine::EngineError> {
    let encode = |v: Option<(&[u8], u64)>| match v {
        Some((value, expires_at_ns)) => {
            if with_expiry {
                enc.value_expiring(out, id, value, expires_at_ns);
            } else {
                enc.value(out, id, value);
            }
            Status::Ok
        }
        None => {
            enc.status(out, id, Status::NotFound, "", 0);
            Status::NotFound
        }
    };
    match tier {
        Tier::Memory => replica.shard.get_with_expiry_in_memory(key, encode),
        Tier::Any => replica.shard.get_with_expiry(key, encode).map(Some),
    }
}

/// The reader threads (see the module docs). Dropping the pool lets its threads finish.
pub struct ReadPool {
    jobs: Option<mpsc::Sender<Job>>,
}

impl ReadPool {
    /// A pool of `threads` reader threads (0: none, gets read files on the core threads).
    pub fn start(threads: usize) -> std::io::Result<Self> {
        if threads == 0 {
            return Ok(Self { jobs: None });
        }
        let (tx, rx) = mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        for n in 0..threads {
            let rx = Arc::clone(&rx);
            std::thread::Builder::new().name(format!("vasto-read-{n}")).spawn(move || {
                let mut enc = FrameEncoder::new();
                loop {
                    // The lock is held only to take one job; a poisoned lock still hands out jobs.
                    let job = rx.lock().unwrap_or_else(|p| p.into_inner()).recv();
                    let Ok(mut job) = job else { return };
                    job.answer(&mut enc);
                    // The connection may be gone (its task dropped): then so is the job.
                    if let Some(done) = job.done.take() {
                        let _ = done.send(job);
                    }
                }
            })?;
        }
        Ok(Self { jobs: Some(tx) })
    }

    /// Whether gets that need a file are deferred to the pool.
    pub fn enabled(&self) -> bool {
        self.jobs.is_some()
    }

    /// Answers the batch's gets on a reader thread, appending to `out` after what it holds,
    /// until `out` reaches the output bound (the batch is then still pending: send `out` and
    /// run it again), counts their statuses in `tally` and gives the buffers back (`None`: the
    /// reader died with them, only when the process is ending). Without a pool, answers them
    /// here.
    pub async fn run(&self, batch: &mut ReadBatch, input: Vec<u8>, out: Vec<u8>, enc: &mut FrameEncoder, tally: &mut Tally) -> Option<(Vec<u8>, Vec<u8>)> {
        let (done, back) = tokio::sync::oneshot::channel();
        let mut job = Job { gets: std::mem::take(&mut batch.gets), statuses: std::mem::take(&mut batch.statuses), input, out, done: Some(done) };
        job = match &self.jobs {
            Some(jobs) => match jobs.send(job) {
                Ok(()) => back.await.ok()?,
                Err(mpsc::SendError(mut job)) => {
                    job.answer(enc);
                    job
                }
            },
            None => {
                job.answer(enc);
                job
            }
        };
        for &status in &job.statuses {
            tally.count(Op::Get, status);
        }
        DISK_GETS.fetch_add(job.statuses.len() as u64, Ordering::Relaxed);
        batch.gets = std::mem::take(&mut job.gets);
        batch.statuses = std::mem::take(&mut job.statuses);
        Some((job.input, job.out))
    }
}
