//! `replace-store`: one function per phase.
//!
//! 1. **Join.** The new store creates the replicas and is listed after the regular replicas of
//!    each shard, catching up (clients use it only if nothing else is live), so it copies from
//!    its peers (a snapshot, then their change logs) and they follow it.
//! 2. **Drain.** Once it has caught up with every live peer, the old copies are frozen: they take
//!    no local write from then on, and each freeze answers the copy's final change-log head.
//!    The replace waits until every other replica of the shard (the new one included) reports
//!    having applied the old copy's log up to that head: positions are saved with the data, so a
//!    report proves it, whatever happened to the sessions.
//! 3. **Switch.** The new store takes the old one's slots, the table is pushed, the old copies
//!    are dropped.
//!
//! A failure, a timeout or a cancel before the switch rolls back: the old copies take writes
//! again and the new ones are drained into the others the same way before they are dropped (a
//! client may have written to them as a last resort); if that drain cannot finish, they stay,
//! listed as extra replicas, and `reconcile` retires them later.
use crate::admin::{phase, poll_until, run_commands, Done, COPY_TIMEOUT, DRAIN_TIMEOUT};
use crate::hub::Shared;
use crate::participants::{Participants, Presence};
use crate::replace::ReplacePlan;
use crate::retire::freeze_and_drain;
use crate::state::{unix_ms, LogMark, Reject};
use std::collections::BTreeMap;
use vasto_wire::fb::ShardCommandKind;
use vasto_wire::{ShardInfo, Status};

/// What one replace is moving: from which store to which, and the replicas on each side.
struct Move<'a> {
    shared: &'a Shared,
    name: &'a str,
    from: String,
    to: String,
    kind: String,
    /// The new copies, on `to`.
    creates: Vec<(String, ShardInfo)>,
    /// The old copies, on `from`.
    olds: Vec<(String, ShardInfo)>,
}

/// Replaces store `from` by store `to` in keyspace `name` (ids or addresses); see the module
/// docs. Re-running a finished replace is a no-op.
pub(crate) async fn replace_store(shared: &Shared, name: &str, from: &str, to: &str) -> (Status, String) {
    let (from, to, infos) = {
        let mut hub = shared.lock();
        let (from, to, slots) = match hub.state.plan_replace(name, from, to) {
            Ok(ReplacePlan::Done) => return (Status::Ok, format!("nothing to move: {from} holds no replica of {name}")),
            Ok(ReplacePlan::Move { from, to, slots }) => (from, to, slots),
            Err(r) => return (r.status, r.message),
        };
        let infos = hub.state.join_infos(name, &slots, unix_ms());
        if !hub.state.begin_join(name, &to, &slots, unix_ms()) {
            return (Status::BadRequest, format!("another operation on keyspace {name} is in progress"));
        }
        hub.push(&[name.to_owned()]);
        (from, to, infos)
    };
    tracing::info!(keyspace = name, %from, %to, replicas = infos.len(), "replacing store: copying to the new store");
    let op = Move {
        shared,
        name,
        kind: format!("replace {from} -> {to}"),
        creates: infos.iter().map(|i| (to.clone(), i.clone())).collect(),
        olds: infos.iter().map(|i| (from.clone(), i.clone())).collect(),
        from,
        to,
    };
    let from_up = shared.lock().state.stores.get(&op.from).is_some_and(|s| s.up);
    let joined = async {
        op.join().await?;
        if from_up {
            op.drain().await?;
        }
        Ok::<(), Reject>(())
    }
    .await;
    match joined {
        Ok(()) => op.switch().await,
        Err(e) => {
            op.roll_back(from_up).await;
            (e.status, e.message)
        }
    }
}

impl Move<'_> {
    /// Phase 1: the new copies are created and catch up with every live peer.
    async fn join(&self) -> Result<(), Reject> {
        phase(self.shared, self.name, &self.kind, "copying");
        run_commands(self.shared, ShardCommandKind::Create, &self.creates, "creating").await?;
        let (name, to) = (self.name, self.to.as_str());
        let slots = self.creates.iter().map(|(store, info)| (store.clone(), info.shard)).collect();
        let participants = Participants::of_slots(&self.shared.lock().state, name, slots);
        let grace = self.shared.config.operation_grace;
        poll_until(self.shared, name, "replace", COPY_TIMEOUT, true, |state| match participants.check(state, unix_ms(), grace)? {
            // The new store may drop off for a moment (see `participants`); it is not counted
            // as caught up until it is back.
            Presence::AllUp => Ok(state.join_caught_up(name, to)),
            Presence::Waiting => Ok(false),
        })
        .await
    }

    /// Phase 2: the old copies stop taking writes, and every other replica applies everything
    /// they logged, up to their final heads.
    async fn drain(&self) -> Result<(), Reject> {
        phase(self.shared, self.name, &self.kind, "draining");
        let frozen = run_commands(self.shared, ShardCommandKind::Freeze, &self.olds, "freezing").await?;
        let finals: BTreeMap<u32, LogMark> = frozen.iter().map(|Done { info, mark, .. }| (info.shard, *mark)).collect();
        tracing::info!(keyspace = self.name, from = %self.from, ?finals, "old copies frozen; waiting for every replica to apply them");
        // Heartbeats carry the positions every 250 ms; let the last keep-alives through first.
        tokio::time::sleep(self.shared.config.drain_settle).await;
        let (name, from) = (self.name, self.from.as_str());
        poll_until(self.shared, name, "drain", DRAIN_TIMEOUT, false, |state| Ok(state.drained(name, from, &finals))).await
    }

    /// Phase 3: the new store takes the slots; the old copies go.
    async fn switch(&self) -> (Status, String) {
        {
            let mut hub = self.shared.lock();
            hub.state.commit_join(self.name, unix_ms());
            hub.push(&[self.name.to_owned()]);
        }
        // A store that is down keeps its copies until it reports them: `reconcile` then drops
        // them as strays (after draining them, which finds nothing left to apply).
        let dropped = run_commands(self.shared, ShardCommandKind::Drop, &self.olds, "dropping").await;
        tracing::info!(keyspace = self.name, from = %self.from, to = %self.to, "store replaced");
        match dropped {
            Ok(_) => (Status::Ok, format!("{} replaced {} in {}", self.to, self.from, self.name)),
            Err(e) => (Status::Ok, format!("{} replaced {} in {}; the old copies are dropped later: {}", self.to, self.from, self.name, e.message)),
        }
    }

    /// Undoes a replace that did not switch: the old copies take writes again, the new ones
    /// are drained into the others and dropped (or left as extras if the drain cannot finish).
    async fn roll_back(&self, from_up: bool) {
        tracing::warn!(keyspace = self.name, from = %self.from, to = %self.to, "replace failed; rolling back");
        phase(self.shared, self.name, &self.kind, "rolling back");
        if from_up {
            // Re-activate the old copies (a create of an existing replica undoes a freeze).
            if let Err(e) = run_commands(self.shared, ShardCommandKind::Create, &self.olds, "re-activating").await {
                tracing::warn!(keyspace = self.name, error = %e.message, "could not re-activate the old copies; reconcile unfreezes them");
            }
        }
        let drained = freeze_and_drain(self.shared, self.name, &self.creates).await;
        {
            let mut hub = self.shared.lock();
            hub.state.abort_join(self.name, unix_ms());
            hub.push(&[self.name.to_owned()]);
        }
        match drained {
            Ok(()) => {
                if let Err(e) = run_commands(self.shared, ShardCommandKind::Drop, &self.creates, "dropping").await {
                    tracing::warn!(keyspace = self.name, error = %e.message, "new copies not dropped; reconcile retires them");
                }
            }
            Err(e) => {
                tracing::warn!(keyspace = self.name, error = %e.message, "new copies could not be drained; they stay as extra replicas until reconcile retires them")
            }
        }
    }
}
