//! Gets that need the disk, off the core threads.
//!
//! A core thread serves many connections, so a get that blocks it on a file read stalls all of
//! them, and a store with two cores has at most two reads in flight however many clients wait.
//! So a get first reads memory only (value cache, memtables, block cache:
//! `Shard::get_with_expiry_in_memory`); when that cannot answer, the get is *deferred*: held,
//! with every later get of the same read buffer (so answers keep request order), up to the
//! first request that is not a get. The connection then splits the batch into parts
//! (consecutive gets, their keys copied into the part; at most one per reader thread, each of
//! at least `--read-part-gets` gets), hands the parts to the pool and waits; its core serves
//! other connections meanwhile. Each part is answered by one reader into the part's own
//! buffer, so a pipelined connection can have several reads at the disk, not one. The
//! connection then appends the answers to its output in request order.
//!
//! The pool has `--read-threads` threads (default 16): enough reads in flight for an SSD's
//! queue, while each waits on the disk and costs no CPU. With 0, gets read files on the core.
//! A part costs two cross-thread wake-ups (the reader's, then the connection's), so parts have
//! at least `--read-part-gets` gets (default 4): where the CPU, not the disk, is the limit,
//! fewer wake-ups serve more gets than more reads side by side (ARCHITECTURE.md has the
//! numbers). A hand-off also costs one small allocation (the reply channel) per part, a part
//! being at least one get that waits for a file read: nothing on the in-memory path. The
//! parts' buffers are the connection's and reused from batch to batch.
use crate::metrics::{Op, Tally};
use crate::refusal::engine_status;
use crate::registry::Replica;
use crate::server::OUTPUT_BOUND;
use std::collections::VecDeque;
use std::ops::Range;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use vasto_wire::{FrameEncoder, Status};

/// Gets answered by reader threads since the start (`vasto_store_disk_gets`).
pub(crate) static DISK_GETS: AtomicU64 = AtomicU64::new(0);

/// Gets held at most per batch: bounds the answers one hand-off adds to the output.
pub(crate) const MAX_DEFERRED: usize = 64;

/// The most a part's answer buffer keeps between batches.
const PART_KEEP_CAPACITY: usize = 64 << 10;

/// One deferred get: its key is a range of the connection's read buffer (in a [`ReadBatch`])
/// or of its part's keys (in a [`Part`]).
struct DeferredGet {
    id: u64,
    replica: Arc<Replica>,
    key: Range<usize>,
    with_expiry: bool,
}

/// The gets of one connection waiting for a reader. Its vectors are reused from batch to batch.
#[derive(Default)]
pub(crate) struct ReadBatch {
    /// In request order; keys are ranges of the connection's read buffer.
    gets: Vec<DeferredGet>,
    /// The parts of the last run, kept for their buffers.
    parts: Vec<Part>,
    /// Where the parts in flight come back (empty between runs, kept for its capacity).
    waiting: Vec<tokio::sync::oneshot::Receiver<Part>>,
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

/// Consecutive gets of a batch, answered by one reader into `out`: answer `i` is
/// `out[ends[i - 1]..ends[i]]` (from 0 for the first). Gets are answered in order until `out`
/// holds `budget` bytes (at least one is).
#[derive(Default)]
struct Part {
    /// The gets; their keys are ranges of `keys`.
    gets: Vec<DeferredGet>,
    keys: Vec<u8>,
    out: Vec<u8>,
    ends: Vec<usize>,
    statuses: Vec<Status>,
    budget: usize,
}

impl Part {
    /// Empties the part for the gets `gets` of a batch whose keys are in `input`.
    fn fill(&mut self, gets: &[DeferredGet], input: &[u8], budget: usize) {
        self.clear();
        self.budget = budget;
        for get in gets {
            let start = self.keys.len();
            self.keys.extend_from_slice(&input[get.key.clone()]);
            self.gets.push(DeferredGet { key: start..self.keys.len(), replica: Arc::clone(&get.replica), ..*get });
        }
    }

    fn clear(&mut self) {
        self.gets.clear();
        self.keys.clear();
        self.out.clear();
        if self.out.capacity() > PART_KEEP_CAPACITY {
            // One batch of large values does not pin its memory for the connection's life.
            self.out = Vec::new();
        }
        self.ends.clear();
        self.statuses.clear();
    }

    /// Answers the gets in order (blocking: a reader thread's work).
    fn answer(&mut self, enc: &mut FrameEncoder) {
        let Self { gets, keys, out, ends, statuses, budget } = self;
        for get in gets.iter() {
            if out.len() >= *budget && !ends.is_empty() {
                break;
            }
            let key = &keys[get.key.clone()];
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
            ends.push(out.len());
        }
    }

    /// Whether every get of the part was answered.
    fn complete(&self) -> bool {
        self.ends.len() == self.gets.len()
    }
}

/// A part on its way to a reader, and where to send it back.
struct Job {
    part: Part,
    done: tokio::sync::oneshot::Sender<Part>,
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

/// The jobs waiting for a reader. One queue for all readers, so a batch goes to whichever
/// reader is free; a push wakes one idle reader and none when all are busy (each then takes
/// the next job as it finishes, without sleeping). A `Mutex<mpsc::Receiver>` shared by the
/// readers cost two wake-ups per job (the channel's, then the mutex's for the next waiter):
/// on 11 GB under a 2 GiB limit a fifth of the readers' time was in system calls, most of them
/// the futex calls of that hand-over.
#[derive(Default)]
struct JobQueue {
    state: Mutex<QueueState>,
    work: Condvar,
}

#[derive(Default)]
struct QueueState {
    jobs: VecDeque<Job>,
    /// Readers asleep on `work`.
    idle: usize,
    /// Set when the pool is dropped: readers finish once the queue is empty.
    closed: bool,
}

impl JobQueue {
    /// The state, even if a reader panicked while holding it (the state stays consistent:
    /// every change to it is a single push, pop or counter update).
    fn lock(&self) -> MutexGuard<'_, QueueState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn push(&self, job: Job) {
        let mut state = self.lock();
        state.jobs.push_back(job);
        let wake = state.idle > 0;
        drop(state);
        if wake {
            self.work.notify_one();
        }
    }

    /// The next job, waiting for one; `None` once the pool is dropped and the queue is empty.
    fn pop(&self) -> Option<Job> {
        let mut state = self.lock();
        loop {
            if let Some(job) = state.jobs.pop_front() {
                return Some(job);
            }
            if state.closed {
                return None;
            }
            state.idle += 1;
            state = self.work.wait(state).unwrap_or_else(|p| p.into_inner());
            state.idle -= 1;
        }
    }

    fn close(&self) {
        self.lock().closed = true;
        self.work.notify_all();
    }
}

/// The reader threads (see the module docs). Dropping the pool lets its threads finish.
pub struct ReadPool {
    jobs: Option<Arc<JobQueue>>,
    /// The reader threads: a batch is split into at most this many parts.
    threads: usize,
    /// The fewest gets of a part (the last part of a batch may have fewer).
    part_gets: usize,
}

impl Drop for ReadPool {
    fn drop(&mut self) {
        if let Some(jobs) = &self.jobs {
            jobs.close();
        }
    }
}

impl ReadPool {
    /// A pool of `threads` reader threads (0: none, gets read files on the core threads) that
    /// are handed at least `part_gets` gets at a time (a batch with fewer goes whole).
    pub fn start(threads: usize, part_gets: usize) -> std::io::Result<Self> {
        if threads == 0 {
            return Ok(Self { jobs: None, threads: 0, part_gets });
        }
        let queue = Arc::new(JobQueue::default());
        for n in 0..threads {
            let jobs = Arc::clone(&queue);
            let spawned = std::thread::Builder::new().name(format!("vasto-read-{n}")).spawn(move || {
                let mut enc = FrameEncoder::new();
                while let Some(Job { mut part, done }) = jobs.pop() {
                    part.answer(&mut enc);
                    // The connection may be gone (its task dropped): then so is the part.
                    let _ = done.send(part);
                }
            });
            if let Err(e) = spawned {
                // The readers already started finish instead of waiting forever.
                queue.close();
                return Err(e);
            }
        }
        Ok(Self { jobs: Some(queue), threads, part_gets })
    }

    /// Whether gets that need a file are deferred to the pool.
    pub fn enabled(&self) -> bool {
        self.jobs.is_some()
    }

    /// Answers the batch's gets on the reader threads, appending the answers to `out` in request
    /// order until `out` holds the output bound (the batch is then still pending: send `out`
    /// and run it again), and counts their statuses in `tally`. `input` is the read buffer the
    /// gets were deferred from. Without a pool, answers them here. False if a reader died with
    /// a part (only when the process is ending).
    pub async fn run(&self, batch: &mut ReadBatch, input: &[u8], out: &mut Vec<u8>, enc: &mut FrameEncoder, tally: &mut Tally) -> bool {
        let room = OUTPUT_BOUND.saturating_sub(out.len());
        if room == 0 || batch.gets.is_empty() {
            return true;
        }
        let parts = parts_of(batch.gets.len(), self.threads, self.part_gets);
        let ReadBatch { gets, parts: spare, waiting } = batch;
        let mut split = std::mem::take(spare);
        split.resize_with(parts.max(split.len()), Part::default);
        let per_part = gets.len().div_ceil(parts);
        for (part, chunk) in split.iter_mut().zip(gets.chunks(per_part)) {
            part.fill(chunk, input, room.div_ceil(parts));
        }
        let used = gets.len().div_ceil(per_part);
        match &self.jobs {
            Some(jobs) => {
                for part in split.drain(..used) {
                    let (done, back) = tokio::sync::oneshot::channel();
                    jobs.push(Job { part, done });
                    waiting.push(back);
                }
                // The parts come back in order; the ones after the first are mostly answered
                // by the time the first is.
                for back in waiting.drain(..) {
                    let Ok(part) = back.await else { return false };
                    split.push(part);
                }
                // The unused parts, kept after the used ones for their buffers.
                let unused = split.len() - used;
                split.rotate_left(unused);
            }
            None => {
                for part in &mut split[..used] {
                    part.answer(enc);
                }
            }
        }
        let answered = append_in_order(&split[..used], out, tally);
        DISK_GETS.fetch_add(answered as u64, Ordering::Relaxed);
        gets.drain(..answered);
        for part in &mut split {
            part.clear();
        }
        *spare = split;
        true
    }
}

/// How many parts a batch of `gets` is split into: as many as have at least `part_gets` gets
/// each (one for a smaller batch), at most one per reader thread, and one without readers.
fn parts_of(gets: usize, threads: usize, part_gets: usize) -> usize {
    (gets / part_gets.max(1)).clamp(1, threads.max(1))
}

#[cfg(test)]
#[test]
fn batches_split_into_parts_of_at_least_part_gets() {
    assert_eq!([1, 4, 7, 8, 11, 12, 64].map(|g| parts_of(g, 16, 4)), [1, 1, 1, 2, 2, 3, 16]);
    assert_eq!([1, 3, 64].map(|g| parts_of(g, 16, 1)), [1, 3, 16], "one get per part, up to one part per reader");
    assert_eq!([1, 64].map(|g| parts_of(g, 0, 4)), [1, 1], "no readers: answered whole on the core");
    assert_eq!(parts_of(64, 2, 0), 2, "0 is taken as 1");
}

/// Appends the parts' answers to `out` in order, stopping once `out` holds the output bound or
/// at the first part that stopped early; returns how many were appended, each counted in
/// `tally`.
fn append_in_order(parts: &[Part], out: &mut Vec<u8>, tally: &mut Tally) -> usize {
    let mut appended = 0;
    for part in parts {
        let mut start = 0;
        for (&end, &status) in part.ends.iter().zip(&part.statuses) {
            if out.len() >= OUTPUT_BOUND {
                return appended;
            }
            out.extend_from_slice(&part.out[start..end]);
            tally.count(Op::Get, status);
            start = end;
            appended += 1;
        }
        if !part.complete() {
            break;
        }
    }
    appended
}
