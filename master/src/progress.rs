//! Progress of the operation running on a keyspace (resize, replace), for `vasto admin status`.
use crate::state::State;
use serde::{Deserialize, Serialize};
use vasto_wire::ReplicaLag;

/// An operation in progress on a keyspace, as shown by `vasto admin status`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OperationStatus {
    /// `resize` or `replace`, with its arguments (e.g. `resize 2 -> 5 shards`).
    pub kind: String,
    /// Current step: `copying`, `draining`, `committing` or `rolling back`.
    pub phase: String,
    /// Milliseconds since the operation started.
    pub running_ms: u64,
    /// Copies (one per receiving replica and source replica) that have reached their source's
    /// head, out of `copies` reported so far.
    pub copies_caught_up: u32,
    /// Copies reported by the receiving stores.
    pub copies: u32,
    /// Change-log entries the copies still have to apply, summed.
    pub entries_behind: u64,
}

/// The operation a keyspace is busy with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Operation {
    pub kind: String,
    pub phase: &'static str,
    pub started_ms: u64,
}

impl State {
    /// Records that `name` is in `phase` of the operation `kind` (the start time is kept from
    /// the first call until [`State::end`]).
    pub fn set_phase(&mut self, name: &str, kind: &str, phase: &'static str, now_ms: u64) {
        let op = self.operations.entry(name.to_owned()).or_insert_with(|| Operation { kind: kind.to_owned(), phase, started_ms: now_ms });
        op.phase = phase;
    }

    /// The kind of the operation running on `name` (e.g. `resize 2 -> 3 shards`), if any.
    pub fn operation_kind(&self, name: &str) -> Option<String> {
        self.operations.get(name).map(|op| op.kind.clone())
    }

    /// The progress of the operation running on `name`, if any.
    pub(crate) fn operation_status(&self, name: &str, now_ms: u64) -> Option<OperationStatus> {
        let op = self.operations.get(name)?;
        let ks = self.keyspaces.get(name)?;
        let copies: Vec<&ReplicaLag> = match self.resize_ranges(name) {
            // Resize copies are named `store#shard`; plain replication between replicas is not.
            Some((targets, _)) => targets
                .flat_map(|t| ks.placement.get(t as usize).into_iter().flatten().map(move |store| (store, t)))
                .flat_map(|(store, t)| self.lags_of(store, name, t).filter(|l| l.peer.contains('#')))
                .collect(),
            None => ks.joining.iter().flat_map(|j| self.lags_of(&j.store, name, j.shard)).collect(),
        };
        Some(OperationStatus {
            kind: op.kind.clone(),
            phase: op.phase.to_owned(),
            running_ms: now_ms.saturating_sub(op.started_ms),
            copies_caught_up: copies.iter().filter(|l| l.caught_up).count() as u32,
            copies: copies.len() as u32,
            entries_behind: copies.iter().map(|l| l.entries).sum(),
        })
    }
}
