//! Admin operations that need the stores: shard commands and their acks, create and delete a
//! keyspace, and the helpers every longer operation (`replace_run`, `resize_run`, `retire`,
//! `reconcile`) shares.
use crate::hub::{Ack, Pending, Shared};
use crate::state::{unix_ms, CreatePlan, LogMark, Reject};
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

/// A shard command a store carried out, with the replica's change-log position after it.
#[derive(Debug, Clone)]
pub(crate) struct Done {
    pub store: String,
    pub info: ShardInfo,
    pub mark: LogMark,
}

/// Queues one shard command on a store's connection (`dir`: the checkpoint directory of a
/// `Checkpoint`, empty otherwise).
fn send_command(shared: &Shared, store: &str, kind: ShardCommandKind, info: &ShardInfo, dir: &str) -> Result<Sent, Reject> {
    let id = shared.frame_id();
    let mut hub = shared.lock();
    let Some(link) = hub.link(store) else {
        return Err(Reject::new(Status::Unavailable, format!("store {store} is not connected")));
    };
    let (outbox, pending) = (link.outbox.clone(), Arc::clone(&link.pending));
    let (tx, rx) = oneshot::channel();
    pending.lock().unwrap_or_else(|p| p.into_inner()).insert(id, tx);
    let mut out = Vec::new();
    hub.enc.shard_command(&mut out, id, kind, info, dir);
    if outbox.send(Arc::new(out)).is_err() {
        pending.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
        return Err(Reject::new(Status::Unavailable, format!("store {store} is not connected")));
    }
    Ok(Sent { id, store: store.to_owned(), info: info.clone(), rx, pending })
}

/// Waits for the ack of `sent` until `deadline`.
async fn await_ack(sent: Sent, deadline: Instant, what: &str) -> Result<Done, Reject> {
    let Sent { id, store, info, rx, pending } = sent;
    let place = format!("{what} shard {} replica {} of {} on store {store}", info.shard, info.replica, info.keyspace);
    match tokio::time::timeout_at(deadline, rx).await {
        Ok(Ok(ack)) if ack.status == Status::Ok => Ok(Done { store, info, mark: ack.mark }),
        Ok(Ok(ack)) => Err(Reject::new(ack.status, format!("{place}: {}", ack.message))),
        Ok(Err(_)) => Err(Reject::new(Status::Unavailable, format!("{place}: connection to the store was lost"))),
        Err(_) => {
            pending.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
            Err(Reject::new(Status::Unavailable, format!("{place}: no answer within the command timeout")))
        }
    }
}

/// Sends `kind` for every (store, shard) it can reach and waits for all acks (until one shared
/// deadline); returns every ack, or the first failure.
pub(crate) async fn run_commands(shared: &Shared, kind: ShardCommandKind, targets: &[(String, ShardInfo)], what: &str) -> Result<Vec<Done>, Reject> {
    let deadline = Instant::now() + shared.config.command_timeout;
    run_commands_until(shared, kind, targets.iter().map(|(store, info)| (store.as_str(), info, "")), deadline, what).await
}

/// [`run_commands`] with a deadline of the caller's and a directory per command (see
/// [`send_command`]).
pub(crate) async fn run_commands_until<'a>(
    shared: &Shared,
    kind: ShardCommandKind,
    targets: impl Iterator<Item = (&'a str, &'a ShardInfo, &'a str)>,
    deadline: Instant,
    what: &str,
) -> Result<Vec<Done>, Reject> {
    let mut sent = Vec::new();
    let mut first_err = None;
    for (store, info, dir) in targets {
        match send_command(shared, store, kind, info, dir) {
            Ok(s) => sent.push(s),
            // Keep going: a drop must reach every other store even if one is gone.
            Err(e) => {
                first_err.get_or_insert(e);
            }
        }
    }
    let mut done = Vec::with_capacity(sent.len());
    for s in sent {
        match await_ack(s, deadline, what).await {
            Ok(d) => done.push(d),
            Err(e) => {
                first_err.get_or_insert(e);
            }
        }
    }
    first_err.map_or(Ok(done), Err)
}

/// Records the step the operation on `name` is at, for `vasto admin status`.
pub(crate) fn phase(shared: &Shared, name: &str, kind: &str, phase: &'static str) {
    shared.lock().state.set_phase(name, kind, phase, unix_ms());
}

/// Clears the busy mark of a keyspace when an operation ends, however it ends.
pub(crate) struct BusyGuard<'a> {
    pub shared: &'a Shared,
    pub name: &'a str,
}

impl Drop for BusyGuard<'_> {
    fn drop(&mut self) {
        self.shared.lock().state.end(self.name);
    }
}

/// Creates a keyspace: plans the placement, records the new incarnation in the catalog (on
/// disk, before any replica exists), creates every replica on its store, and on success marks it
/// live and pushes the new table. On failure, drops whatever was created and records the
/// incarnation as deleted (a replica that missed the drop is dropped when its store reports it).
/// Replicas that cannot all go to distinct zones make it refuse with `require_zones`, and
/// otherwise answer with a warning after [`crate::ZONE_WARNING`].
pub(crate) async fn create_keyspace(shared: &Shared, name: &str, shards: u32, replicas: u32, require_zones: bool) -> (Status, String) {
    let incarnation = vasto_hash::random_id();
    let (placement, zone_warning) = {
        let mut hub = shared.lock();
        let placement = match hub.state.plan_create(name, shards, replicas) {
            Ok(CreatePlan::AlreadyExists) => return (Status::Ok, format!("keyspace {name} already exists")),
            Ok(CreatePlan::New(placement)) => placement,
            Err(r) => return (r.status, r.message),
        };
        let zone_warning = hub.state.zone_clashes(&placement);
        if let Some(clash) = zone_warning.as_ref().filter(|_| require_zones) {
            return (Status::BadRequest, format!("keyspace {name} refused (--require-zones): {clash}"));
        }
        hub.state.begin(name, placement.clone());
        hub.state.begin_create(name, incarnation, shards, replicas, unix_ms());
        if let Err(e) = shared.persist(&mut hub) {
            hub.state.catalog.keyspaces.remove(name);
            hub.state.end(name);
            return (Status::Internal, format!("cannot record keyspace {name} in the master's catalog: {e}"));
        }
        (placement, zone_warning)
    };
    let _busy = BusyGuard { shared, name };
    let now = unix_ms();
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
                    keyspace_incarnation: incarnation,
                    frozen: false,
                    created_at_ms: now,
                };
                (store.clone(), info)
            })
        })
        .collect();
    if let Err(e) = run_commands(shared, ShardCommandKind::Create, &targets, "creating").await {
        tracing::warn!(keyspace = name, error = %e.message, "create failed; dropping the replicas created");
        // Best effort: a store that never got the create simply acks the drop.
        let _ = run_commands(shared, ShardCommandKind::Drop, &targets, "dropping").await;
        let mut hub = shared.lock();
        hub.state.catalog.delete(name);
        hub.state.catalog_dirty = true;
        let _ = shared.persist(&mut hub);
        return (e.status, e.message);
    }
    let recorded = {
        let mut hub = shared.lock();
        let version = hub.state.commit_create(name, incarnation, shards, replicas, placement, unix_ms());
        match shared.persist(&mut hub) {
            Ok(()) => {
                hub.push(&[name.to_owned()]);
                Ok(version)
            }
            Err(e) => {
                // Not recorded as live: a restarted master would roll it back, so nobody may
                // use it.
                hub.state.remove_keyspace(name, unix_ms());
                let _ = shared.persist(&mut hub);
                Err(e)
            }
        }
    };
    let version = match recorded {
        Ok(version) => version,
        Err(e) => {
            let _ = run_commands(shared, ShardCommandKind::Drop, &targets, "dropping").await;
            return (Status::Internal, format!("cannot record keyspace {name} in the master's catalog: {e}"));
        }
    };
    tracing::info!(keyspace = name, shards, replicas, version, incarnation = %format!("{incarnation:x}"), "keyspace created");
    match zone_warning {
        Some(clash) => {
            tracing::warn!(keyspace = name, "{clash}");
            (Status::Ok, format!("keyspace {name} created{}{clash}", crate::ZONE_WARNING))
        }
        None => (Status::Ok, format!("keyspace {name} created")),
    }
}

/// Deletes a keyspace: records its incarnation as deleted (on disk), drops every replica on a
/// live store, forgets it and pushes a table with exists=false. Replicas on stores that are
/// down are dropped when their stores report them.
pub(crate) async fn delete_keyspace(shared: &Shared, name: &str) -> (Status, String) {
    let targets = {
        let mut hub = shared.lock();
        let targets = match hub.state.plan_delete(name) {
            Ok(targets) => targets,
            Err(r) => return (r.status, r.message),
        };
        hub.state.begin(name, Vec::new());
        let version = hub.state.remove_keyspace(name, unix_ms());
        if let Err(e) = shared.persist(&mut hub) {
            tracing::error!(keyspace = name, error = %e, "the deletion is not on disk yet; it is written at the next catalog change");
        }
        hub.push(&[name.to_owned()]);
        tracing::info!(keyspace = name, version, "keyspace deleted; dropping its replicas");
        targets
    };
    let _busy = BusyGuard { shared, name };
    match run_commands(shared, ShardCommandKind::Drop, &targets, "dropping").await {
        Ok(_) => (Status::Ok, format!("keyspace {name} deleted")),
        Err(e) => {
            tracing::warn!(keyspace = name, error = %e.message, "some replicas were not dropped yet; they are dropped when their stores report them");
            (Status::Ok, format!("keyspace {name} deleted; some replicas are dropped later: {}", e.message))
        }
    }
}

/// Starts a full compaction of every replica of `name` on the stores that are up (each runs in
/// the store's background; the answer comes once every one has started). `Unavailable` when a
/// store holding some of it is down or did not answer: those replicas were not compacted.
pub(crate) async fn compact_keyspace(shared: &Shared, name: &str) -> (Status, String) {
    let crate::state::CompactPlan { targets, down } = match shared.lock().state.plan_compact(name) {
        Ok(plan) => plan,
        Err(r) => return (r.status, r.message),
    };
    if let Err(e) = run_commands(shared, ShardCommandKind::Compact, &targets, "compacting").await {
        return (e.status, e.message);
    }
    tracing::info!(keyspace = name, replicas = targets.len(), "full compaction started");
    let started = format!("compacting {} replicas of {name} in the background", targets.len());
    if down.is_empty() {
        (Status::Ok, started)
    } else {
        (Status::Unavailable, format!("{started}; not the ones on {}, which are down", down.join(", ")))
    }
}

/// Re-checks `done` against the state every 100 ms until it holds, it fails, a cancel of the
/// operation on `name` is requested (when `cancellable`), or `timeout` passes.
pub(crate) async fn poll_until(
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

/// How long a drain (every follower passing a frozen or re-laid-out replica's final head) may
/// take before the operation rolls back.
pub(crate) const DRAIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);
/// How long copying and catching up may take before a replace or resize is rolled back.
pub(crate) const COPY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1800);
