//! The receiving side of replication. For every shard replica this store holds, one follower per
//! peer replica (from the routing table the master pushes) connects to the peer, asks for its
//! local writes after the position saved here, and applies them through the same last-writer-wins
//! merge, saving the new position in the same write batch (see `follower`). Runs on its own
//! thread.
//!
//! A follower that is no longer wanted (its peer left the shard, a resize copy ended) is stopped
//! and its saved position deleted, so a peer of the same name that appears later (a re-created
//! replica) is copied from a snapshot, never resumed from a stale position.
use crate::follower::{follow, FollowCtx, FollowState, LagSamples};
use crate::registry::Registry;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use vasto_wire::{ClusterToken, ReplicaLag, RoutingTable, ShardSelector};

/// How often the replication lag distribution is logged.
const LAG_REPORT: Duration = Duration::from_secs(10);

/// (keyspace, local shard, peer name): the name is the peer's store id, or `store#shard` for a
/// copy from another shard during a resize; positions and lags are kept under it.
pub(crate) type FollowerKey = (String, u32, String);

/// What the replication thread is told.
enum Update {
    /// A routing table pushed by the master.
    Table(RoutingTable),
    /// This replica is being dropped: stop its followers now (not at the next table).
    Dropping(String, u32),
}

/// Handle to the replication thread.
#[derive(Clone)]
pub struct Replication {
    tables: mpsc::UnboundedSender<Update>,
    state: Arc<Mutex<HashMap<FollowerKey, FollowState>>>,
}

impl Replication {
    /// Starts the replication thread for the store `me`, which proves `token` to its peers.
    pub fn start(registry: Arc<Registry>, me: String, token: Option<ClusterToken>) -> std::io::Result<Self> {
        let (tx, rx) = mpsc::unbounded_channel();
        let state = Arc::new(Mutex::new(HashMap::new()));
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let shared = Arc::clone(&state);
        std::thread::Builder::new().name("vasto-replication".into()).spawn(move || rt.block_on(manage(rx, registry, me, token, shared)))?;
        Ok(Self { tables: tx, state })
    }

    /// Hands a routing table pushed by the master to the replication thread.
    pub fn update(&self, table: RoutingTable) {
        let _ = self.tables.send(Update::Table(table));
    }

    /// Stops every follower of the local replica of `shard` of `keyspace` (it is being dropped;
    /// a follower copying a snapshot would hold it open for as long as the copy takes).
    pub fn stop_following(&self, keyspace: &str, shard: u32) {
        let _ = self.tables.send(Update::Dropping(keyspace.to_owned(), shard));
    }

    /// The lag of every follower, for the heartbeat.
    pub fn lags(&self) -> Vec<ReplicaLag> {
        let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let mut out: Vec<ReplicaLag> = state
            .iter()
            .map(|((keyspace, shard, peer), s)| ReplicaLag {
                keyspace: keyspace.clone(),
                shard: *shard,
                peer: peer.clone(),
                entries: s.entries_behind,
                lag_ms: s.behind_since.map(|t| t.elapsed().as_millis() as u64).unwrap_or(0),
                caught_up: s.caught_up,
                position: s.position.seq,
                incarnation: s.position.incarnation,
            })
            .collect();
        out.sort_by(|a, b| (&a.keyspace, a.shard, &a.peer).cmp(&(&b.keyspace, b.shard, &b.peer)));
        out
    }
}

struct Follower {
    source: Source,
    task: tokio::task::JoinHandle<()>,
}

/// Where a follower copies from: a peer's address, which of its shards, and for a resize copy
/// which keys (those the local shard owns under the new shard count, from the routing table,
/// so it does not depend on when the local replica takes its new layout).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Source {
    pub address: String,
    pub shard: u32,
    pub only: Option<ShardSelector>,
}

async fn manage(
    mut updates: mpsc::UnboundedReceiver<Update>,
    registry: Arc<Registry>,
    me: String,
    token: Option<ClusterToken>,
    state: Arc<Mutex<HashMap<FollowerKey, FollowState>>>,
) {
    let mut followers: HashMap<FollowerKey, Follower> = HashMap::new();
    let lag = Arc::new(Mutex::new(LagSamples::new()));
    tokio::spawn(report_lag(Arc::clone(&lag)));
    while let Some(update) = updates.recv().await {
        let table = match update {
            Update::Table(table) => table,
            Update::Dropping(keyspace, shard) => {
                followers.retain(|key, f| {
                    let keep = key.0 != keyspace || key.1 != shard;
                    if !keep {
                        f.task.abort();
                        state.lock().unwrap_or_else(|p| p.into_inner()).remove(key);
                    }
                    keep
                });
                continue;
            }
        };
        let wanted = wanted_followers(&table, &registry, &me);
        let complete = complete_rows(&table);
        let mut gone = Vec::new();
        followers.retain(|key, f| {
            let keep = key.0 != table.keyspace || wanted.get(key) == Some(&f.source);
            if !keep {
                f.task.abort();
                state.lock().unwrap_or_else(|p| p.into_inner()).remove(key);
                if !wanted.contains_key(key) {
                    gone.push(key.clone());
                }
            }
            keep
        });
        for key in gone {
            forget_position(&registry, &key, &complete);
        }
        for (key, source) in wanted {
            if followers.contains_key(&key) {
                continue;
            }
            tracing::info!(keyspace = %key.0, shard = key.1, peer = %key.2, address = %source.address, source_shard = source.shard, "following peer replica");
            state.lock().unwrap_or_else(|p| p.into_inner()).insert(key.clone(), FollowState::default());
            let ctx = FollowCtx {
                registry: Arc::clone(&registry),
                me: me.clone(),
                token: token.clone(),
                key: key.clone(),
                source: source.clone(),
                state: Arc::clone(&state),
                lag: Arc::clone(&lag),
            };
            followers.insert(key, Follower { source, task: tokio::spawn(follow(ctx)) });
        }
    }
}

/// The shards of `table` whose every replica is known (no slot waiting for a store to report
/// after a master restart): only there is a missing peer really gone.
fn complete_rows(table: &RoutingTable) -> Vec<bool> {
    table.routes.iter().map(|row| table.exists && !row.is_empty() && row.iter().all(|r| !r.store_id.is_empty())).collect()
}

/// Deletes the saved position of a follower that is no longer wanted: its peer left the shard
/// (the shard's row is complete and lacks it), the resize copy it served is over, or the
/// keyspace is gone. A peer missing only because its slot is still unknown keeps its position.
fn forget_position(registry: &Registry, key: &FollowerKey, complete: &[bool]) {
    let (keyspace, shard, peer) = key;
    let Some(replica) = registry.get(keyspace, *shard) else { return };
    let resize_copy = peer.contains('#');
    if !resize_copy && !complete.get(*shard as usize).copied().unwrap_or(true) {
        return;
    }
    match replica.forget_peer(peer) {
        Ok(()) => tracing::info!(keyspace = %keyspace, shard, peer = %peer, "stopped following; its saved position is deleted"),
        Err(e) => tracing::warn!(keyspace = %keyspace, shard, peer = %peer, error = %e, "could not delete the saved position"),
    }
}

/// The followers this store should run for a keyspace's table: for every shard it holds, one
/// per other replica of the shard; and during a resize, for every receiving shard it holds, one
/// per replica of every giving shard (named `store#shard`), copying the keys that move.
fn wanted_followers(table: &RoutingTable, registry: &Registry, me: &str) -> HashMap<FollowerKey, Source> {
    let mut wanted = HashMap::new();
    if !table.exists {
        return wanted;
    }
    for (shard, replicas) in table.routes.iter().enumerate() {
        let shard = shard as u32;
        if !replicas.iter().any(|r| r.store_id == me) || registry.get(&table.keyspace, shard).is_none() {
            continue;
        }
        for peer in replicas.iter().filter(|r| r.store_id != me && !r.address.is_empty()) {
            wanted.insert((table.keyspace.clone(), shard, peer.store_id.clone()), Source { address: peer.address.clone(), shard, only: None });
        }
        if let Some((targets, sources)) = vasto_wire::resize_ranges(table.shards, table.resizing_to) {
            if targets.contains(&shard) {
                for source in sources {
                    for peer in table.routes.get(source as usize).into_iter().flatten().filter(|r| !r.address.is_empty()) {
                        let name = format!("{}#{source}", peer.store_id);
                        let only = Some(ShardSelector { shard, shards: table.resizing_to });
                        wanted.insert((table.keyspace.clone(), shard, name), Source { address: peer.address.clone(), shard: source, only });
                    }
                }
            }
        }
    }
    wanted
}

async fn report_lag(lag: Arc<Mutex<LagSamples>>) {
    let mut tick = tokio::time::interval(LAG_REPORT);
    loop {
        tick.tick().await;
        lag.lock().unwrap_or_else(|p| p.into_inner()).log_and_reset();
    }
}
