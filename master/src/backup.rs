//! `vasto admin backup`: one replica of every shard writes a RocksDB checkpoint into the backup
//! directory, once it holds every write acknowledged before the backup began.
//!
//! Replication is asynchronous, so the replica chosen for a shard may not yet have a write
//! another replica acknowledged a moment ago. The backup therefore first asks every live peer
//! of the chosen replica for its change-log head (a `Mark`), then waits until the chosen
//! replica's heartbeats report having applied each peer's log up to that mark, and only then
//! has it write the checkpoint. Writes a peer that is down took and had not replicated are not
//! in the backup; the reply names such peers. The keyspace is busy while the backup runs: no
//! resize, replace or import starts (a checkpoint must hold one shard count).
use crate::admin::{phase, poll_until, run_commands, run_commands_until, BusyGuard};
use crate::hub::Shared;
use crate::state::{unix_ms, LogMark, Reject, State};
use serde::Serialize;
use std::path::Path;
use std::time::Duration;
use vasto_wire::fb::ShardCommandKind;
use vasto_wire::{ShardInfo, Status};

/// How long the chosen replicas may take to apply what their peers had logged at the start.
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(120);
/// How long writing the checkpoints may take (copies, when the backup directory is on another
/// filesystem than a store's data, take as long as the data takes to copy).
const CHECKPOINT_TIMEOUT: Duration = Duration::from_secs(3600);

/// The replica a shard's backup is taken from, and the peers it must first catch up with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ShardSource {
    pub shard: u32,
    /// The store holding the chosen replica, and that replica.
    pub store: String,
    pub info: ShardInfo,
    /// The connection generation of that store when planned: a store that reconnects during the
    /// backup may have restarted and lost writes it had applied, so the backup is refused.
    pub generation: u64,
    /// Every other replica of the shard whose store is up.
    pub peers: Vec<(String, ShardInfo)>,
    /// Stores placed on the shard that are down (their unreplicated writes are missed).
    pub down: Vec<String>,
}

/// A planned backup of one keyspace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BackupPlan {
    pub incarnation: u64,
    pub shards: u32,
    pub replicas: u32,
    pub version: u64,
    pub sources: Vec<ShardSource>,
}

/// What the master tells the admin once every checkpoint is written (the reply's JSON).
#[derive(Debug, Serialize)]
pub(crate) struct BackupTaken {
    pub keyspace: String,
    /// The keyspace's incarnation, hex.
    pub keyspace_incarnation: String,
    pub shards: u32,
    pub replicas: u32,
    pub routing_version: u64,
    pub started_at_ms: u64,
    pub finished_at_ms: u64,
    pub taken: Vec<ShardTaken>,
}

/// One shard's checkpoint.
#[derive(Debug, Serialize)]
pub(crate) struct ShardTaken {
    pub shard: u32,
    pub store: String,
    pub replica: u32,
    /// The checkpoint's directory name, under the backup directory.
    pub dir: String,
    /// The change-log position the checkpoint covers (of the chosen replica's log).
    pub log_incarnation: u64,
    pub log_position: u64,
    pub peers_down: Vec<String>,
}

/// The directory name of shard `shard`'s checkpoint inside a backup.
pub(crate) fn shard_dir_name(shard: u32) -> String {
    format!("shard-{shard:05}")
}

impl State {
    /// Chooses, for every shard of `name`, a replica whose store is up and that has caught up
    /// (the first in placement order), with its live peers and the stores that are down.
    /// Refused while the keyspace is resized or a store of it replaced, and when some shard
    /// has no such replica.
    pub fn plan_backup(&self, name: &str) -> Result<BackupPlan, Reject> {
        let Some(ks) = self.keyspaces.get(name) else {
            return Err(Reject::new(Status::UnknownKeyspace, format!("keyspace {name} does not exist")));
        };
        if ks.resizing_to != 0 || !ks.joining.is_empty() {
            return Err(Reject::new(Status::Unavailable, format!("keyspace {name} is being resized or has a store replaced; back it up once that is over")));
        }
        let up = |store: &str| !store.is_empty() && self.stores.get(store).is_some_and(|s| s.up);
        let mut sources = Vec::with_capacity(ks.shards as usize);
        for shard in 0..ks.shards {
            let row = ks.placement.get(shard as usize).map_or(&[][..], Vec::as_slice);
            let chosen = row
                .iter()
                .position(|s| up(s) && !self.catching_up(s, name, shard))
                .ok_or_else(|| Reject::new(Status::Unavailable, format!("no replica of shard {shard} of {name} is up and caught up; back up once one is")))?;
            let others = row.iter().enumerate().filter(|&(i, s)| i != chosen && !s.is_empty());
            let peers = others.clone().filter(|(_, s)| up(s)).map(|(i, s)| (s.clone(), ks.shard_info(name, shard, i as u32))).collect();
            let down = others.filter(|(_, s)| !up(s)).map(|(_, s)| s.clone()).collect();
            let generation = self.stores.get(&row[chosen]).map_or(0, |s| s.generation);
            sources.push(ShardSource { shard, store: row[chosen].clone(), info: ks.shard_info(name, shard, chosen as u32), generation, peers, down });
        }
        Ok(BackupPlan { incarnation: ks.incarnation, shards: ks.shards, replicas: ks.replicas, version: self.version(name), sources })
    }
}

/// Backs up `name` into `dir` (absolute; each shard's checkpoint goes to
/// `dir/shard-NNNNN`). Answers with [`BackupTaken`] as JSON; the admin writes the manifest.
pub(crate) async fn backup_keyspace(shared: &Shared, name: &str, dir: &str) -> (Status, String, String) {
    match run_backup(shared, name, dir).await {
        Ok(taken) => match serde_json::to_string(&taken) {
            Ok(json) => (Status::Ok, String::new(), json),
            Err(e) => (Status::Internal, format!("encoding the backup's outcome: {e}"), String::new()),
        },
        Err(r) => (r.status, r.message, String::new()),
    }
}

async fn run_backup(shared: &Shared, name: &str, dir: &str) -> Result<BackupTaken, Reject> {
    if !Path::new(dir).is_absolute() {
        return Err(Reject::bad(format!("the backup directory must be an absolute path (each store resolves it on its own machine), not {dir:?}")));
    }
    let started_at_ms = unix_ms();
    let plan = {
        let mut hub = shared.lock();
        let plan = hub.state.plan_backup(name)?;
        if !hub.state.begin(name, Vec::new()) {
            let what = hub.state.operation_kind(name).unwrap_or_else(|| "another operation".into());
            return Err(Reject::new(Status::Unavailable, format!("keyspace {name} is busy ({what}); back it up once it is over")));
        }
        hub.state.set_phase(name, "backup", "marking", started_at_ms);
        plan
    };
    let _busy = BusyGuard { shared, name };
    let peers: Vec<(String, ShardInfo)> = plan.sources.iter().flat_map(|s| s.peers.iter().cloned()).collect();
    let marks = run_commands(shared, ShardCommandKind::Mark, &peers, "marking").await?;
    // (chosen store, shard, peer store, the peer's head when the backup began)
    let waits: Vec<(&str, u32, String, LogMark)> = marks
        .into_iter()
        .filter_map(|done| plan.sources.iter().find(|s| s.shard == done.info.shard).map(|s| (s.store.as_str(), s.shard, done.store, done.mark)))
        .collect();
    phase(shared, name, "backup", "catching up");
    poll_until(shared, name, "backup", CATCH_UP_TIMEOUT, true, |state| {
        check_sessions(state, &plan)?;
        if let Some((_, shard, peer, _)) = waits.iter().find(|(_, _, peer, _)| !state.stores.get(peer).is_some_and(|r| r.up)) {
            return Err(Reject::new(
                Status::Unavailable,
                format!("store {peer} went down before shard {shard} had caught up with what it acknowledged; back up again (it will be named as down)"),
            ));
        }
        Ok(waits.iter().all(|(store, shard, peer, mark)| state.reports_past(store, name, *shard, peer, *mark)))
    })
    .await?;
    phase(shared, name, "backup", "checkpointing");
    let dirs: Vec<String> = plan.sources.iter().map(|s| Path::new(dir).join(shard_dir_name(s.shard)).to_string_lossy().into_owned()).collect();
    let targets = plan.sources.iter().zip(&dirs).map(|(s, d)| (s.store.as_str(), &s.info, d.as_str()));
    let deadline = tokio::time::Instant::now() + CHECKPOINT_TIMEOUT;
    let done = run_commands_until(shared, ShardCommandKind::Checkpoint, targets, deadline, "checkpointing").await?;
    check_sessions(&shared.lock().state, &plan)?;
    let taken = plan
        .sources
        .iter()
        .map(|s| {
            let mark = done.iter().find(|d| d.info.shard == s.shard).map_or_else(LogMark::default, |d| d.mark);
            ShardTaken {
                shard: s.shard,
                store: s.store.clone(),
                replica: s.info.replica,
                dir: shard_dir_name(s.shard),
                log_incarnation: mark.incarnation,
                log_position: mark.seq,
                peers_down: s.down.clone(),
            }
        })
        .collect();
    tracing::info!(keyspace = name, dir, shards = plan.shards, "backup taken");
    Ok(BackupTaken {
        keyspace: name.to_owned(),
        keyspace_incarnation: format!("{:016x}", plan.incarnation),
        shards: plan.shards,
        replicas: plan.replicas,
        routing_version: plan.version,
        started_at_ms,
        finished_at_ms: unix_ms(),
        taken,
    })
}

/// Every chosen store is still up on the connection it had when the backup was planned.
fn check_sessions(state: &State, plan: &BackupPlan) -> Result<(), Reject> {
    match plan.sources.iter().find(|s| !state.stores.get(&s.store).is_some_and(|r| r.up && r.generation == s.generation)) {
        Some(s) => {
            Err(Reject::new(Status::Unavailable, format!("store {} went down or reconnected during the backup of shard {}; back up again", s.store, s.shard)))
        }
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use crate::state::State;
    use vasto_wire::{ReplicaLag, Status};

    #[test]
    fn a_backup_needs_a_live_caught_up_replica_of_every_shard() {
        let mut state = State::default();
        assert_eq!(state.plan_backup("nope").unwrap_err().status, Status::UnknownKeyspace);
        state.keyspaces.insert("ks".into(), crate::state::Keyspace::new(9, 2, 2, vec![vec!["a".into(), "b".into()], vec!["b".into(), "c".into()]], 0));
        let mut generations = std::collections::HashMap::new();
        for id in ["a", "b", "c"] {
            generations.insert(id, state.register(id, &format!("{id}:1"), &[], 1).0);
        }
        assert_eq!(state.plan_backup("ks").unwrap_err().status, Status::Unavailable, "no replica has said it caught up yet");
        let lag = |shard: u32, peer: &str| ReplicaLag { keyspace: "ks".into(), shard, peer: peer.into(), caught_up: true, ..Default::default() };
        state.heartbeat("a", generations["a"], vec![lag(0, "b")], 2);
        state.heartbeat("b", generations["b"], vec![lag(0, "a"), lag(1, "c")], 2);
        state.heartbeat("c", generations["c"], vec![lag(1, "b")], 2);
        let plan = state.plan_backup("ks").unwrap();
        assert_eq!(plan.incarnation, 9);
        assert_eq!(plan.sources[0].store, "a");
        assert_eq!(plan.sources[0].peers.iter().map(|(s, _)| s.as_str()).collect::<Vec<_>>(), ["b"]);
        assert_eq!((plan.sources[1].store.as_str(), plan.sources[1].info.replica), ("b", 0));
        // With b down, shard 0 comes from a and names b as missed; shard 1 comes from c.
        state.store_down("b", generations["b"], 3);
        let plan = state.plan_backup("ks").unwrap();
        assert_eq!((plan.sources[0].down.clone(), plan.sources[1].store.clone(), plan.sources[1].info.replica), (vec!["b".to_owned()], "c".to_owned(), 1));
        state.store_down("c", generations["c"], 3);
        assert_eq!(state.plan_backup("ks").unwrap_err().status, Status::Unavailable, "shard 1 has no live replica");
    }
}
