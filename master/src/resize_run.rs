//! `resize`: one function per phase (the state it works on is in `resize`).
//!
//! 1. **Copy.** The receiving shards are created (grow) or re-laid out (shrink) for the new
//!    shard count; every replica of them copies the keys that move from every replica of the
//!    giving shards (a split export, then the change logs, filtered).
//! 2. **Drain.** The giving shards switch to the new count: from that instant they refuse the
//!    keys that move (clients wait for the next table), and each switch answers the replica's
//!    change-log head at that instant. The resize waits until every receiving replica reports
//!    having applied every giving replica's log up to that head.
//! 3. **Commit.** Every replica of the new shards is told the new count is in force (then
//!    compacts away the keys it no longer owns), the table is pushed, retired shards dropped.
//!
//! A failure, a timeout, a participating store down for longer than the operation grace (or back
//! without its replica) or a cancel before the commit rolls back: nothing was compacted away yet, so restoring the old layouts loses nothing.
use crate::admin::{phase, poll_until, run_commands, Done, COPY_TIMEOUT, DRAIN_TIMEOUT};
use crate::hub::Shared;
use crate::participants::{Participants, Presence};
use crate::state::{unix_ms, Reject};
use vasto_wire::fb::ShardCommandKind;
use vasto_wire::{ShardInfo, Status};

/// The replicas one resize touches, in their old and new layouts.
struct Plan<'a> {
    shared: &'a Shared,
    name: &'a str,
    kind: String,
    shards: u32,
    grow: bool,
    targets_new: Vec<(String, ShardInfo)>,
    targets_old: Vec<(String, ShardInfo)>,
    sources_new: Vec<(String, ShardInfo)>,
    sources_old: Vec<(String, ShardInfo)>,
}

/// Grows or shrinks keyspace `name` to `shards` shards while clients keep reading and writing
/// (see the module docs). Resizing to the current size is a no-op.
pub(crate) async fn resize_keyspace(shared: &Shared, name: &str, shards: u32) -> (Status, String) {
    let old_shards = {
        let mut hub = shared.lock();
        let rows = match hub.state.plan_resize(name, shards) {
            Ok(None) => return (Status::Ok, format!("keyspace {name} already has {shards} shards")),
            Ok(Some(rows)) => rows,
            Err(r) => return (r.status, r.message),
        };
        let old = hub.state.keyspaces.get(name).map(|ks| ks.shards).unwrap_or(0);
        if !hub.state.begin_resize(name, shards, rows, unix_ms()) {
            return (Status::BadRequest, format!("another operation on keyspace {name} is in progress"));
        }
        hub.push(&[name.to_owned()]);
        old
    };
    tracing::info!(keyspace = name, from = old_shards, to = shards, "resizing: copying the keys that move");
    let Some(plan) = Plan::new(shared, name, old_shards, shards) else { return (Status::Internal, format!("the resize of {name} vanished")) };
    let result = async {
        plan.copy().await?;
        plan.drain().await
    }
    .await;
    match result {
        Ok(()) => plan.commit().await,
        Err(e) => {
            plan.roll_back().await;
            (e.status, e.message)
        }
    }
}

impl<'a> Plan<'a> {
    fn new(shared: &'a Shared, name: &'a str, old_shards: u32, shards: u32) -> Option<Self> {
        let hub = shared.lock();
        let st = &hub.state;
        let (targets, sources) = st.resize_ranges(name)?;
        let now = unix_ms();
        let mut targets_new = st.shard_infos(name, targets.clone(), shards, old_shards);
        // New shards of a grow are created now (their creation time orders them after the old).
        targets_new.iter_mut().filter(|(_, i)| i.shard >= old_shards).for_each(|(_, i)| i.created_at_ms = now);
        Some(Self {
            shared,
            name,
            kind: format!("resize {old_shards} -> {shards} shards"),
            shards,
            grow: shards > old_shards,
            targets_new,
            targets_old: st.shard_infos(name, targets, old_shards, old_shards),
            sources_new: st.shard_infos(name, sources.clone(), shards, old_shards),
            sources_old: st.shard_infos(name, sources, old_shards, old_shards),
        })
    }

    /// Phase 1: the receiving replicas copy the moving keys from every giving replica.
    async fn copy(&self) -> Result<(), Reject> {
        phase(self.shared, self.name, &self.kind, "copying");
        run_commands(self.shared, ShardCommandKind::Create, &self.targets_new, "preparing").await?;
        self.wait(COPY_TIMEOUT, |state, name| state.resize_copied(name)).await
    }

    /// Phase 2: the giving replicas refuse the moving keys from their switch on; the receiving
    /// replicas apply everything logged before it.
    async fn drain(&self) -> Result<(), Reject> {
        let switched: Vec<Done> = run_commands(self.shared, ShardCommandKind::Create, &self.sources_new, "re-laying out").await?;
        tracing::info!(keyspace = self.name, "resizing: the giving shards refuse the keys that move; draining");
        phase(self.shared, self.name, &self.kind, "draining");
        // Heartbeats carry the positions every 250 ms; let the last keep-alives through first.
        tokio::time::sleep(self.shared.config.drain_settle).await;
        self.wait(DRAIN_TIMEOUT, |state, name| state.resize_drained(name, &switched)).await
    }

    /// Waits until `done` holds. A participating store that goes down pauses the wait for up to
    /// the operation grace (see `participants`); longer, or back without its replica, rolls back.
    async fn wait(&self, timeout: std::time::Duration, done: impl Fn(&crate::state::State, &str) -> bool) -> Result<(), Reject> {
        let name = self.name;
        let participants = {
            let hub = self.shared.lock();
            let Some((targets, sources)) = hub.state.resize_ranges(name) else {
                return Err(Reject::new(Status::Internal, format!("the resize of {name} vanished")));
            };
            Participants::of_shards(&hub.state, name, targets.chain(sources))
        };
        let grace = self.shared.config.operation_grace;
        poll_until(self.shared, name, "resize", timeout, true, |state| {
            // A replica that misses part of the copy while down must not be counted as copied.
            match participants.check(state, unix_ms(), grace)? {
                Presence::AllUp => Ok(done(state, name)),
                Presence::Waiting => Ok(false),
            }
        })
        .await
    }

    /// Phase 3: commit on the stores first, then tell the clients: a master that dies in between
    /// leaves replicas that know the new count, and the restarted master completes the resize
    /// from them (see `reconcile`). A replica that misses the commit gets it when it reports.
    async fn commit(&self) -> (Status, String) {
        let (name, shards) = (self.name, self.shards);
        phase(self.shared, name, &self.kind, "committing");
        let (committed_at, commits) = {
            let hub = self.shared.lock();
            let at = hub.state.next_commit_ms(name, unix_ms());
            let mut infos = hub.state.shard_infos(name, 0..shards, shards, shards);
            infos.iter_mut().for_each(|(_, info)| info.committed_at_ms = at);
            (at, infos)
        };
        if let Err(e) = run_commands(self.shared, ShardCommandKind::Commit, &commits, "committing").await {
            tracing::warn!(keyspace = name, error = %e.message, "a replica missed the commit; it gets it when it reports again");
        }
        {
            let mut hub = self.shared.lock();
            hub.state.commit_resize(name, committed_at, unix_ms());
            let _ = self.shared.persist(&mut hub);
            hub.push(&[name.to_owned()]);
        }
        if !self.grow {
            // The retiring shards own nothing any more (they refused every key since the switch
            // and everything before it was drained).
            if let Err(e) = run_commands(self.shared, ShardCommandKind::Drop, &self.sources_new, "dropping").await {
                tracing::warn!(keyspace = name, error = %e.message, "retired shards not dropped; reconcile drops them when their stores report");
            }
        }
        tracing::info!(keyspace = name, shards, "keyspace resized");
        (Status::Ok, format!("keyspace {name} now has {shards} shards"))
    }

    /// Restores every old layout and drops the new shards (nothing was compacted away yet),
    /// then ends the resize. A replica that cannot be reached keeps its new layout and is put
    /// back in line by `reconcile` once it reports (its layout shows the resize never committed).
    async fn roll_back(&self) {
        tracing::warn!(keyspace = self.name, "resize failed; rolling back");
        phase(self.shared, self.name, &self.kind, "rolling back");
        if let Err(e) = run_commands(self.shared, ShardCommandKind::Create, &self.sources_old, "restoring the layout of").await {
            tracing::warn!(keyspace = self.name, error = %e.message, "not every giving replica took its old layout back");
        }
        let rest = if self.grow {
            run_commands(self.shared, ShardCommandKind::Drop, &self.targets_new, "dropping").await
        } else {
            run_commands(self.shared, ShardCommandKind::Create, &self.targets_old, "restoring the layout of").await
        };
        if let Err(e) = rest {
            tracing::warn!(keyspace = self.name, error = %e.message, "not every receiving replica was rolled back");
        }
        let mut hub = self.shared.lock();
        hub.state.abort_resize(self.name, unix_ms());
        hub.push(&[self.name.to_owned()]);
    }
}
