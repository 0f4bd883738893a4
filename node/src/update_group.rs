//! Group commit of the read-modify-writes of one read, as [`crate::group`] does for puts:
//! consecutive updates that arrive in the same read buffer are held (their key and value as
//! ranges of that buffer) and run with one `Shard::update_many` per shard replica, which
//! decides each on what the replica holds under one hold of the change-log lock and commits
//! their writes in one RocksDB write. A pipeline of INCRs costs one WAL append per group
//! instead of one per increment.
//!
//! Each update is still answered only after its write is committed, and in request order; the
//! group is run before any other request of the connection is handled.
use crate::group::{range_in, replica_index, MAX_GROUP};
use crate::metrics::{Op, Tally};
use crate::registry::Replica;
use std::ops::Range;
use std::sync::Arc;
use vasto_engine::{EngineError, KeyUpdate, UpdateOp, Updated};
use vasto_wire::{FrameEncoder, UpdateOutcome};

/// One held update; its op's value (a set's value, an append's suffix) is `value` in the read
/// buffer, attached when the group runs.
struct HeldUpdate {
    id: u64,
    /// Index into [`UpdateGroup::replicas`].
    replica: usize,
    key: Range<usize>,
    value: Range<usize>,
    event_time_ns: u64,
    op: UpdateOp<'static>,
}

/// The updates held since the last flush. Its vectors are reused: a warm connection holds and
/// runs updates without allocating.
#[derive(Default)]
pub(crate) struct UpdateGroup {
    held: Vec<HeldUpdate>,
    replicas: Vec<Arc<Replica>>,
    /// Per held update, once run: its outcome and its returned value in `returned`.
    outcomes: Vec<(Result<Updated, EngineError>, Range<usize>)>,
    returned: Vec<u8>,
    /// The held updates of the replica being run.
    members: Vec<usize>,
}

impl UpdateGroup {
    /// True when nothing is held.
    pub fn is_empty(&self) -> bool {
        self.held.is_empty()
    }

    /// True when the group should be run before another update is held.
    pub fn is_full(&self) -> bool {
        self.held.len() >= MAX_GROUP
    }

    /// Holds `update`, whose key and value (a set's value, an append's suffix) are slices of
    /// `input`.
    pub fn hold(&mut self, input: &[u8], id: u64, replica: &Arc<Replica>, update: KeyUpdate<'_>) {
        let replica = replica_index(&mut self.replicas, replica);
        let value = match update.op {
            UpdateOp::Set { value, .. } => value,
            UpdateOp::Append { suffix, .. } => suffix,
            _ => &[],
        };
        self.held.push(HeldUpdate {
            id,
            replica,
            key: range_in(input, update.key),
            value: range_in(input, value),
            event_time_ns: update.event_time_ns,
            op: with_value(update.op, &[]),
        });
    }

    /// Runs the held updates, one `update_many` per replica, and appends each one's answer to
    /// `out` in the order they were held. `input` is the buffer they were held from.
    pub fn flush(&mut self, input: &[u8], enc: &mut FrameEncoder, out: &mut Vec<u8>, tally: &mut Tally) {
        if self.held.is_empty() {
            return;
        }
        let UpdateGroup { held, replicas, outcomes, returned, members } = self;
        outcomes.clear();
        outcomes.resize_with(held.len(), || (Err(EngineError::Corrupt("the update was not run".into())), 0..0));
        returned.clear();
        for (index, replica) in replicas.iter().enumerate() {
            members.clear();
            members.extend(held.iter().enumerate().filter(|(_, h)| h.replica == index).map(|(i, _)| i));
            let updates = members.iter().map(|&i| {
                let h = &held[i];
                KeyUpdate { key: &input[h.key.clone()], event_time_ns: h.event_time_ns, op: with_value(h.op, &input[h.value.clone()]) }
            });
            replica.shard.update_many(updates, |j, outcome, value| {
                let start = returned.len();
                returned.extend_from_slice(value);
                outcomes[members[j]] = (outcome, start..returned.len());
            });
            // Wakes the tails if anything was written (a spurious wake-up finds nothing new).
            replica.appended();
        }
        for (h, (outcome, value)) in held.iter().zip(outcomes.iter()) {
            tally.count(Op::Update, outcome.as_ref().map_or_else(|e| crate::refusal::engine_status(e).0, |_| vasto_wire::Status::Ok));
            match outcome {
                Ok(done) => {
                    let value = done.returned.then(|| &returned[value.clone()]);
                    enc.update_outcome(out, h.id, &UpdateOutcome { applied: done.applied, value, number: done.number, float_number: done.float_number });
                }
                Err(e) => {
                    let (status, message) = crate::refusal::engine_status(e);
                    enc.status(out, h.id, status, &message, 0);
                }
            }
        }
        held.clear();
        replicas.clear();
        outcomes.clear();
        if returned.capacity() > KEEP_RETURNED {
            *returned = Vec::new();
        }
    }

    /// Drops the held updates unrun, answering each `Internal` (after a handler panic).
    pub fn abandon(&mut self, enc: &mut FrameEncoder, out: &mut Vec<u8>, tally: &mut Tally) {
        for h in self.held.drain(..) {
            tally.count(Op::Update, vasto_wire::Status::Internal);
            enc.status(out, h.id, vasto_wire::Status::Internal, "internal error while handling the request", 0);
        }
        self.replicas.clear();
    }
}

/// Returned values' buffer grown past this by large values is released after the answers.
const KEEP_RETURNED: usize = 1 << 20;

/// `op` with its value (a set's value, an append's suffix) taken from `value`.
fn with_value<'a>(op: UpdateOp<'_>, value: &'a [u8]) -> UpdateOp<'a> {
    match op {
        UpdateOp::Set { condition, expiry, return_old, .. } => UpdateOp::Set { value, condition, expiry, return_old },
        UpdateOp::Append { max_len, .. } => UpdateOp::Append { suffix: value, max_len },
        UpdateOp::Delete { return_old } => UpdateOp::Delete { return_old },
        UpdateOp::Expire { expiry, condition } => UpdateOp::Expire { expiry, condition },
        UpdateOp::GetExpire { expiry } => UpdateOp::GetExpire { expiry },
        UpdateOp::Increment(delta) => UpdateOp::Increment(delta),
    }
}
