//! Group commit of the writes of one read: consecutive puts and deletes that arrive in the same
//! read buffer are held (as ranges of that buffer, nothing copied) and written with one RocksDB
//! write batch per shard replica, then acknowledged. One batch means one change-log lock, one
//! WAL append and one write-group handoff for the whole group instead of one per request; a
//! pipelined writer's requests arrive together, so this is where its throughput comes from.
//!
//! A write is acknowledged only after its batch is committed. The group is written before any
//! other request of the same connection is handled, so a read sees the writes sent before it and
//! answers keep the order of the requests.
use crate::metrics::{Op, Tally};
use crate::registry::Replica;
use std::ops::Range;
use std::sync::Arc;
use vasto_engine::{EngineError, Write};
use vasto_wire::{FrameEncoder, Status};

/// Writes held at most per group, so one huge pipelined burst is still committed in pieces.
pub(crate) const MAX_GROUP: usize = 256;

/// One held put or delete: ranges point into the read buffer the group was built from.
struct HeldWrite {
    id: u64,
    /// Index into [`WriteGroup::replicas`].
    replica: usize,
    key: Range<usize>,
    /// `None` for a delete.
    value: Option<Range<usize>>,
    event_time_ns: u64,
    ttl_ns: u64,
}

/// The writes held since the last flush, and the replicas they go to. Its vectors are reused:
/// holding and flushing allocate nothing once the connection is warm.
#[derive(Default)]
pub(crate) struct WriteGroup {
    writes: Vec<HeldWrite>,
    replicas: Vec<Arc<Replica>>,
    outcomes: Vec<Result<(), EngineError>>,
}

impl WriteGroup {
    /// True when nothing is held.
    pub fn is_empty(&self) -> bool {
        self.writes.is_empty()
    }

    /// True when the group should be flushed before another write is held.
    pub fn is_full(&self) -> bool {
        self.writes.len() >= MAX_GROUP
    }

    /// Holds `write`, whose key and value are slices of `input`.
    pub fn hold(&mut self, input: &[u8], id: u64, replica: &Arc<Replica>, write: Write<'_>) {
        let replica = replica_index(&mut self.replicas, replica);
        let held = match write {
            Write::Put { key, value, event_time_ns, ttl_ns } => {
                HeldWrite { id, replica, key: range_in(input, key), value: Some(range_in(input, value)), event_time_ns, ttl_ns }
            }
            Write::Delete { key, event_time_ns } => HeldWrite { id, replica, key: range_in(input, key), value: None, event_time_ns, ttl_ns: 0 },
        };
        self.writes.push(held);
    }

    /// Commits the held writes, one batch per replica, and appends each one's answer to `out` in
    /// the order they were held: `Ok`, or the refusal or storage error of its batch (none of a
    /// failed batch was written). A batch refused because a key no longer belongs to the shard
    /// (a layout change between the check and the commit) is retried one write at a time, so
    /// only the writes of moved keys are refused. `input` is the buffer they were held from.
    pub fn flush(&mut self, input: &[u8], enc: &mut FrameEncoder, out: &mut Vec<u8>, tally: &mut Tally) {
        if self.writes.is_empty() {
            return;
        }
        self.outcomes.clear();
        let write_of = |w: &HeldWrite| {
            let key = &input[w.key.clone()];
            match &w.value {
                Some(v) => Write::Put { key, value: &input[v.clone()], event_time_ns: w.event_time_ns, ttl_ns: w.ttl_ns },
                None => Write::Delete { key, event_time_ns: w.event_time_ns },
            }
        };
        for (index, replica) in self.replicas.iter().enumerate() {
            let outcome = replica.shard.write_batch(self.writes.iter().filter(|w| w.replica == index).map(write_of));
            if outcome.is_ok() {
                replica.appended();
            }
            self.outcomes.push(outcome);
        }
        for w in &self.writes {
            let outcome = match &self.outcomes[w.replica] {
                Err(EngineError::NotOwned) => {
                    let replica = &self.replicas[w.replica];
                    let single = replica.shard.write_batch([write_of(w)]);
                    if single.is_ok() {
                        replica.appended();
                    }
                    single
                }
                Ok(()) => Ok(()),
                Err(e) => Err(e.clone()),
            };
            let op = if w.value.is_some() { Op::Put } else { Op::Delete };
            match outcome {
                Ok(()) => {
                    tally.count(op, Status::Ok);
                    enc.status(out, w.id, Status::Ok, "", 0);
                }
                Err(e) => {
                    let (status, message) = crate::refusal::engine_status(&e);
                    tally.count(op, status);
                    enc.status(out, w.id, status, &message, 0);
                }
            }
        }
        self.writes.clear();
        self.replicas.clear();
        self.outcomes.clear();
    }

    /// Drops the held writes unwritten, answering each `Internal` (after a handler panic).
    pub fn abandon(&mut self, enc: &mut FrameEncoder, out: &mut Vec<u8>, tally: &mut Tally) {
        for w in self.writes.drain(..) {
            tally.count(if w.value.is_some() { Op::Put } else { Op::Delete }, Status::Internal);
            enc.status(out, w.id, Status::Internal, "internal error while handling the request", 0);
        }
        self.replicas.clear();
    }
}

/// The index of `replica` in a group's `replicas`, added at the end when it is not there yet.
pub(crate) fn replica_index(replicas: &mut Vec<Arc<Replica>>, replica: &Arc<Replica>) -> usize {
    match replicas.iter().position(|r| Arc::ptr_eq(r, replica)) {
        Some(i) => i,
        None => {
            replicas.push(Arc::clone(replica));
            replicas.len() - 1
        }
    }
}

/// The position of `part` inside `whole`; `part` must be a subslice of `whole` or empty (an
/// absent field reads as a static empty slice).
pub(crate) fn range_in(whole: &[u8], part: &[u8]) -> Range<usize> {
    if part.is_empty() {
        return 0..0;
    }
    let start = (part.as_ptr() as usize).wrapping_sub(whole.as_ptr() as usize);
    debug_assert!(start <= whole.len() && start + part.len() <= whole.len(), "a held slice comes from the read buffer");
    start..start + part.len()
}
