//! Admin operations that need the stores: create and delete a keyspace.
use crate::hub::{Ack, Pending, Shared};
use crate::replace::ReplacePlan;
use crate::state::{unix_ms, CreatePlan, Reject};
use std::sync::Arc;
use tokio::sync::oneshot;
use tokio::time::Instant;
use vasto_wire::fb::ShardCommandKind;
use vasto_wire::{ShardInfo, Status};

/// A shard command sent to a store and awaiting its ack.
struct Sent {
    id: u64,
    store: String,
    info: ShardInfo,
    rx: oneshot::Receiver<Ack>,
    pending: Pending,
}

/// Queues one shard command on a store's connection.
fn send_command(shared: &Shared, store: &str, kind: ShardCommandKind, info: &ShardInfo) -> Result<Sent, Reject> {
    let id = shared.frame_id();
    let mut hub = shared.lock();
    let Some(link) = hub.link(store) else {
        return Err(Reject::new(Status::Unavailable, format!("store {store} is not connected")));
    };
    let (outbox, pending) = (link.outbox.clone(), Arc::clone(&link.pending));
    let (tx, rx) = oneshot::channel();
    pending.lock().unwrap_or_else(|p| p.into_inner()).insert(id, tx);
    let mut out = Vec::new();
    hub.enc.shard_command(&mut out, id, kind, info);
    if outbox.send(Arc::new(out)).is_err() {
        pending.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
        return Err(Reject::new(Status::Unavailable, format!("store {store} is not connected")));
    }
    Ok(Sent { id, store: store.to_owned(), info: info.clone(), rx, pending })
}

/// Waits for the ack of `sent` until `deadline`.
async fn await_ack(sent: Sent, deadline: Instant, what: &str) -> Result<(), Reject> {
    let Sent { id, store, info, rx, pending } = sent;
    let place = format!("{what} shard {} replica {} of {} on store {store}", info.shard, info.replica, info.keyspace);
    match tokio::time::timeout_at(deadline, rx).await {
        Ok(Ok(ack)) if ack.status == Status::Ok => Ok(()),
        Ok(Ok(ack)) => Err(Reject::new(ack.status, format!("{place}: {}", ack.message))),
        Ok(Err(_)) => Err(Reject::new(Status::Unavailable, format!("{place}: connection to the store was lost"))),
        Err(_) => {
            pending.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
            Err(Reject::new(Status::Unavailable, format!("{place}: no answer within the command timeout")))
        }
    }
}

/// Sends `kind` for every (store, shard) it can reach and waits for all acks (until one shared
/// deadline); returns the first failure.
pub(crate) async fn run_commands(shared: &Shared, kind: ShardCommandKind, targets: &[(String, ShardInfo)], what: &str) -> Result<(), Reject> {
    let deadline = Instant::now() + shared.config.command_timeout;
    let mut sent = Vec::with_capacity(targets.len());
    let mut first_err = None;
    for (store, info) in targets {
        match send_command(shared, store, kind, info) {
            Ok(s) => sent.push(s),
            // Keep going: a drop must reach every other store even if one is gone.
            Err(e) => {
                first_err.get_or_insert(e);
            }
        }
    }
    for s in sent {
        if let Err(e) = await_ack(s, deadline, what).await {
            first_err.get_or_insert(e);
        }
    }
    first_err.map_or(Ok(()), Err)
}

/// Records the step the operation on `name` is at, for `vasto admin status`.
fn phase(shared: &Shared, name: &str, kind: &str, phase: &'static str) {
    shared.lock().state.set_phase(name, kind, phase, unix_ms());
}

/// Clears the busy mark of a keyspace when an operation ends, however it ends.
struct BusyGuard<'a> {
    shared: &'a Shared,
    name: &'a str,
}

impl Drop for BusyGuard<'_> {
    fn drop(&mut self) {
        self.shared.lock().state.end(self.name);
    }
}

/// Creates a keyspace: plans the placement, creates every replica on its store, and on success
/// records it and pushes the new table. On failure, drops whatever was created.
pub(crate) async fn create_keyspace(shared: &Shared, name: &str, shards: u32, replicas: u32) -> (Status, String) {
    let placement = {
        let mut hub = shared.lock();
        match hub.state.plan_create(name, shards, replicas) {
            Ok(CreatePlan::AlreadyExists) => return (Status::Ok, format!("keyspace {name} already exists")),
            Ok(CreatePlan::New(placement)) => {
                hub.state.begin(name, placement.clone());
                placement
            }
            Err(r) => return (r.status, r.message),
        }
    };
    let _busy = BusyGuard { shared, name };
    let targets: Vec<(String, ShardInfo)> = placement
        .iter()
        .enumerate()
        .flat_map(|(shard, row)| {
            row.iter().enumerate().map(move |(replica, store)| {
                let info = ShardInfo {
                    keyspace: name.to_owned(),
                    shard: shard as u32,
                    shards,
                    replica: replica as u32,
                    replicas,
                    committed: shards,
                    committed_at_ms: 0,
                };
                (store.clone(), info)
            })
        })
        .collect();
    if let Err(e) = run_commands(shared, ShardCommandKind::Create, &targets, "creating").await {
        tracing::warn!(keyspace = name, error = %e.message, "create failed; dropping the replicas created");
        // Best effort: a store that never got the create simply acks the drop.
        let _ = run_commands(shared, ShardCommandKind::Drop, &targets, "dropping").await;
        return (e.status, e.message);
    }
    let mut hub = shared.lock();
    let version = hub.state.commit_create(name, shards, replicas, placement, unix_ms());
    hub.push(&[name.to_owned()]);
    tracing::info!(keyspace = name, shards, replicas, version, "keyspace created");
    (Status::Ok, format!("keyspace {name} created"))
}

/// Deletes a keyspace: drops every replica, forgets it and pushes a table with exists=false.
pub(crate) async fn delete_keyspace(shared: &Shared, name: &str) -> (Status, String) {
    let targets = {
        let mut hub = shared.lock();
        match hub.state.plan_delete(name) {
            Ok(targets) => {
                hub.state.begin(name, Vec::new());
                targets
            }
            Err(r) => return (r.status, r.message),
        }
    };
    let _busy = BusyGuard { shared, name };
    if let Err(e) = run_commands(shared, ShardCommandKind::Drop, &targets, "dropping").await {
        tracing::warn!(keyspace = name, error = %e.message, "delete failed");
        return (e.status, e.message);
    }
    let mut hub = shared.lock();
    let version = hub.state.remove_keyspace(name, unix_ms());
    hub.push(&[name.to_owned()]);
    tracing::info!(keyspace = name, version, "keyspace deleted");
    (Status::Ok, format!("keyspace {name} deleted"))
}

/// How long a joining store may take to copy and catch up before the replace is rolled back.
const JOIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1800);

/// Replaces store `from` by store `to` in keyspace `name`: `to` creates the replicas and joins
/// as an extra, catching-up replica (so it copies from its peers: a snapshot when their logs no
/// longer reach back, then their change logs); once it has caught up with every live peer it
/// takes `from`'s slots, the table is pushed and `from`'s copies are dropped. A failure or a
/// timeout rolls back (the join is abandoned and `to`'s copies dropped); re-running it is safe.
pub(crate) async fn replace_store(shared: &Shared, name: &str, from: &str, to: &str) -> (Status, String) {
    let (from, to, slots, infos) = {
        let mut hub = shared.lock();
        let plan = match hub.state.plan_replace(name, from, to) {
            Ok(ReplacePlan::Done) => return (Status::Ok, format!("nothing to move: {from} holds no replica of {name}")),
            Ok(ReplacePlan::Move { from, to, slots }) => (from, to, slots),
            Err(r) => return (r.status, r.message),
        };
        let infos = hub.state.join_infos(name, &plan.2);
        if !hub.state.begin_join(name, &plan.1, &plan.2, unix_ms()) {
            return (Status::BadRequest, format!("another operation on keyspace {name} is in progress"));
        }
        hub.push(&[name.to_owned()]);
        (plan.0, plan.1, plan.2, infos)
    };
    tracing::info!(keyspace = name, %from, %to, replicas = slots.len(), "replacing store: copying to the new store");
    let kind = format!("replace {from} -> {to}");
    phase(shared, name, &kind, "copying");
    let creates: Vec<(String, ShardInfo)> = infos.iter().map(|i| (to.clone(), i.clone())).collect();
    let olds: Vec<(String, ShardInfo)> = infos.iter().map(|i| (from.clone(), i.clone())).collect();
    let from_up = shared.lock().state.stores.get(&from).is_some_and(|s| s.up);
    let joined = async {
        run_commands(shared, ShardCommandKind::Create, &creates, "creating").await?;
        wait_caught_up(shared, name, &to).await?;
        if from_up {
            // Drain: the old copies stop taking writes (clients move to another replica), and
            // everything they acknowledged reaches every other replica before they leave.
            phase(shared, name, &kind, "draining");
            run_commands(shared, ShardCommandKind::Freeze, &olds, "freezing").await?;
            wait_drained(shared, name, &from).await?;
        }
        Ok::<(), Reject>(())
    }
    .await;
    if let Err(e) = joined {
        tracing::warn!(keyspace = name, %from, %to, error = %e.message, "replace failed; rolling back");
        phase(shared, name, &kind, "rolling back");
        {
            let mut hub = shared.lock();
            hub.state.abort_join(name, unix_ms());
            hub.push(&[name.to_owned()]);
        }
        if from_up {
            // Re-activate the old copies (a create of an existing replica undoes a freeze).
            let _ = run_commands(shared, ShardCommandKind::Create, &olds, "re-activating").await;
        }
        let _ = run_commands(shared, ShardCommandKind::Drop, &creates, "dropping").await;
        return (e.status, e.message);
    }
    {
        let mut hub = shared.lock();
        hub.state.commit_join(name, unix_ms());
        hub.push(&[name.to_owned()]);
    }
    // The old copies go last; a store that is down keeps them until it is cleaned up by hand.
    let dropped = run_commands(shared, ShardCommandKind::Drop, &olds, "dropping").await;
    tracing::info!(keyspace = name, %from, %to, "store replaced");
    match dropped {
        Ok(()) => (Status::Ok, format!("{to} replaced {from} in {name}")),
        Err(e) => (Status::Ok, format!("{to} replaced {from} in {name}; the old copies were not dropped: {}", e.message)),
    }
}

/// Polls the joining store's reported lags until it has caught up with every live peer.
async fn wait_caught_up(shared: &Shared, name: &str, to: &str) -> Result<(), Reject> {
    poll_until(shared, name, "replace", JOIN_TIMEOUT, true, |state| {
        if !state.stores.get(to).is_some_and(|s| s.up) {
            return Err(Reject::new(Status::Unavailable, format!("store {to} went down while joining {name}")));
        }
        Ok(state.join_caught_up(name, to))
    })
    .await
}

/// After the old copies are frozen, waits until every other replica of their shards (the joining
/// store included) reports having applied everything the old store logged.
async fn wait_drained(shared: &Shared, name: &str, from: &str) -> Result<(), Reject> {
    // Let the followers hear the frozen store's final head (keep-alives every 500 ms) and report
    // it (heartbeats every 250 ms) before trusting the reports.
    tokio::time::sleep(shared.config.drain_settle).await;
    poll_until(shared, name, "drain", DRAIN_TIMEOUT, false, |state| Ok(state.drained(name, from))).await
}

/// Re-checks `done` against the state every 100 ms until it holds, it fails, a cancel of the
/// operation on `name` is requested (when `cancellable`), or `timeout` passes.
async fn poll_until(
    shared: &Shared,
    name: &str,
    what: &str,
    timeout: std::time::Duration,
    cancellable: bool,
    mut done: impl FnMut(&crate::state::State) -> Result<bool, Reject>,
) -> Result<(), Reject> {
    let deadline = Instant::now() + timeout;
    loop {
        {
            let mut hub = shared.lock();
            if cancellable && hub.state.take_cancel(name) {
                return Err(Reject::bad(format!("the {what} of {name} was cancelled")));
            }
            if done(&hub.state)? {
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            return Err(Reject::new(Status::Unavailable, format!("the {what} of {name} did not finish within {timeout:?}")));
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

const DRAIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// Grows or shrinks keyspace `name` to `shards` shards while clients keep reading and writing
/// (see `resize.rs` for the steps). A failure, a timeout or a cancel rolls back: every shard
/// takes its old layout again and new shards are dropped. Resizing to the current size is a
/// no-op.
pub(crate) async fn resize_keyspace(shared: &Shared, name: &str, shards: u32) -> (Status, String) {
    let old_shards: u32 = {
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
    let kind = format!("resize {old_shards} -> {shards} shards");
    phase(shared, name, &kind, "copying");
    let (targets, sources) = match shared.lock().state.resize_ranges(name) {
        Some(ranges) => ranges,
        None => return (Status::Internal, format!("the resize of {name} vanished")),
    };
    let grow = shards > old_shards;
    let (targets_new, targets_old, sources_new, sources_old) = {
        let hub = shared.lock();
        let st = &hub.state;
        (
            st.shard_infos(name, targets.clone(), shards, old_shards),
            st.shard_infos(name, targets, old_shards, old_shards),
            st.shard_infos(name, sources.clone(), shards, old_shards),
            st.shard_infos(name, sources, old_shards, old_shards),
        )
    };
    let result = async {
        // Receiving shards: created (grow) or re-laid out (shrink) for the new shard count.
        run_commands(shared, ShardCommandKind::Create, &targets_new, "preparing").await?;
        wait_resize(shared, name, false).await?;
        // The giving shards stop taking the keys that move (they answer wrong-shard, so clients
        // wait for the new table), and the receiving shards apply what is left.
        run_commands(shared, ShardCommandKind::Create, &sources_new, "re-laying out").await?;
        tracing::info!(keyspace = name, "resizing: the giving shards refuse the keys that move; draining");
        phase(shared, name, &kind, "draining");
        tokio::time::sleep(shared.config.drain_settle).await;
        wait_resize(shared, name, true).await?;
        // Until here the old shard count is still in force everywhere and a rollback loses
        // nothing (compaction keeps the keys of both counts).
        Ok::<(), Reject>(())
    }
    .await;
    if let Err(e) = result {
        tracing::warn!(keyspace = name, error = %e.message, "resize failed; rolling back");
        phase(shared, name, &kind, "rolling back");
        {
            let mut hub = shared.lock();
            hub.state.abort_resize(name, unix_ms());
            hub.push(&[name.to_owned()]);
        }
        let _ = run_commands(shared, ShardCommandKind::Create, &sources_old, "restoring the layout of").await;
        if grow {
            let _ = run_commands(shared, ShardCommandKind::Drop, &targets_new, "dropping").await;
        } else {
            let _ = run_commands(shared, ShardCommandKind::Create, &targets_old, "restoring the layout of").await;
        }
        return (e.status, e.message);
    }
    // Commit on the stores first, then tell the clients: a master that dies in between leaves
    // replicas that know the new count, and the restarted master completes the resize from them
    // (see `reconcile`). A store that misses the commit gets it when it reports again.
    phase(shared, name, &kind, "committing");
    let (committed_at, commits) = {
        let hub = shared.lock();
        let at = hub.state.next_commit_ms(name, unix_ms());
        let mut infos = hub.state.shard_infos(name, 0..shards, shards, shards);
        infos.iter_mut().for_each(|(_, info)| info.committed_at_ms = at);
        (at, infos)
    };
    if let Err(e) = run_commands(shared, ShardCommandKind::Commit, &commits, "committing").await {
        tracing::warn!(keyspace = name, error = %e.message, "a replica missed the commit; it gets it when it reports again");
    }
    {
        let mut hub = shared.lock();
        hub.state.commit_resize(name, committed_at, unix_ms());
        hub.push(&[name.to_owned()]);
    }
    if !grow {
        // The retiring shards own nothing any more.
        if let Err(e) = run_commands(shared, ShardCommandKind::Drop, &sources_new, "dropping").await {
            tracing::warn!(keyspace = name, error = %e.message, "retired shards not dropped");
        }
    }
    tracing::info!(keyspace = name, shards, "keyspace resized");
    (Status::Ok, format!("keyspace {name} now has {shards} shards"))
}

/// Waits until the receiving shards have copied from every giving replica (and with
/// `drained`, applied everything), honouring cancels.
async fn wait_resize(shared: &Shared, name: &str, drained: bool) -> Result<(), Reject> {
    let timeout = if drained { DRAIN_TIMEOUT } else { JOIN_TIMEOUT };
    poll_until(shared, name, "resize", timeout, true, |state| {
        // A replica that misses part of the copy could not be trusted afterwards: roll back.
        if let Some(store) = state.resize_store_down(name) {
            return Err(Reject::new(Status::Unavailable, format!("store {store} holding a replica of {name} went down during the resize")));
        }
        Ok(state.resize_copied(name, drained))
    })
    .await
}
