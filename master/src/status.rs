//! The cluster status document returned (as JSON) to a `StatusRequest`.
use crate::progress::OperationStatus;
use crate::state::State;
use serde::{Deserialize, Serialize};
use vasto_wire::ReplicaLag;

/// Everything the master knows, as sent in the `json` field of the status reply.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterStatus {
    /// This cluster's id (hex): every store of it has the same in its `cluster-id` file.
    #[serde(default)]
    pub cluster_id: String,
    /// Every store ever registered with this master, sorted by id.
    pub stores: Vec<StoreStatus>,
    /// Every keyspace, sorted by name.
    pub keyspaces: Vec<KeyspaceStatus>,
}

/// One store.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreStatus {
    /// Stable store id.
    pub id: String,
    /// Data address clients connect to.
    pub address: String,
    /// True while the store's connection to the master is alive.
    pub up: bool,
    /// Size of the store's data filesystem in bytes.
    pub capacity_bytes: u64,
    /// Bytes free on it, as last reported.
    #[serde(default)]
    pub free_bytes: u64,
    /// Free space fell below the store's reserve: it takes no new replicas.
    #[serde(default)]
    pub disk_full: bool,
    /// The store's failure domain (empty: none given).
    #[serde(default)]
    pub zone: String,
    /// Number of shard replicas placed on this store.
    pub replicas: u64,
}

/// One keyspace and its routing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyspaceStatus {
    /// Keyspace name.
    pub name: String,
    /// Number of shards.
    pub shards: u32,
    /// Replicas per shard.
    pub replicas: u32,
    /// Current routing version.
    pub version: u64,
    /// `routes[shard][replica]`; replica 0 is the primary.
    pub routes: Vec<Vec<RouteStatus>>,
    /// The resize or replace in progress, if any.
    #[serde(default)]
    pub operation: Option<OperationStatus>,
    /// Which keyspace of this name (its incarnation, hex).
    #[serde(default)]
    pub incarnation: String,
    /// Why the master leaves something as it is for now (an interrupted resize waiting for
    /// every replica to report, an extra replica waiting to be retired).
    #[serde(default)]
    pub waiting: Option<String>,
    /// Replicas the master is about to bring in line (roll a resize forward or back, unfreeze,
    /// drop a leftover, retire a stray): 0 when everything reported matches the keyspace.
    #[serde(default)]
    pub repairs: u32,
}

/// Where one replica lives.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteStatus {
    /// Store id ("" when no store has reported this replica since the master started).
    pub store_id: String,
    /// The store's address ("" when the store is unknown).
    pub address: String,
    /// Whether the store is up.
    pub up: bool,
    /// Up, but still catching up with a live peer (clients prefer other live replicas).
    #[serde(default)]
    pub catching_up: bool,
    /// Replication lags the store last reported for this shard, one per followed peer.
    #[serde(default)]
    pub lags: Vec<LagStatus>,
}

/// How far one replica is behind one of its peers, as last reported by its store.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LagStatus {
    /// Store id of the peer followed.
    pub peer: String,
    /// Sequence numbers of the peer not yet applied.
    pub entries: u64,
    /// Milliseconds since this replica last held everything the peer had (0 = caught up).
    pub lag_ms: u64,
    /// True while the replica's current session with the peer has reached the peer's head.
    pub caught_up: bool,
    /// The peer's change-log position applied here.
    #[serde(default)]
    pub position: u64,
    /// The incarnation of the peer's change log that position belongs to (hex).
    #[serde(default)]
    pub incarnation: String,
}

impl From<&ReplicaLag> for LagStatus {
    fn from(l: &ReplicaLag) -> Self {
        Self {
            peer: l.peer.clone(),
            entries: l.entries,
            lag_ms: l.lag_ms,
            caught_up: l.caught_up,
            position: l.position,
            incarnation: format!("{:016x}", l.incarnation),
        }
    }
}

impl State {
    /// Builds the status document (`now_ms`: the current time, for operation durations).
    pub(crate) fn status(&self, now_ms: u64) -> ClusterStatus {
        let placed = self.placed();
        let stores = self
            .stores
            .iter()
            .map(|(id, s)| StoreStatus {
                id: id.clone(),
                address: s.address.clone(),
                up: s.up,
                capacity_bytes: s.capacity_bytes,
                free_bytes: s.free_bytes,
                disk_full: s.disk_full,
                zone: s.zone.clone(),
                replicas: placed.get(id.as_str()).copied().unwrap_or(0) as u64,
            })
            .collect();
        let keyspaces = self
            .keyspaces
            .iter()
            .map(|(name, ks)| KeyspaceStatus {
                name: name.clone(),
                shards: ks.shards,
                replicas: ks.replicas,
                version: self.version(name),
                operation: self.operation_status(name, now_ms),
                incarnation: format!("{:016x}", ks.incarnation),
                waiting: self.reconcile_waiting(name),
                repairs: self.reconcile_plan(name).fixes.len() as u32,
                routes: (0..ks.placement.len() as u32)
                    .map(|shard| {
                        self.row_routes(name, shard)
                            .into_iter()
                            .map(|r| {
                                let id = r.store_id.clone();
                                RouteStatus {
                                    store_id: r.store_id,
                                    address: r.address,
                                    up: r.up,
                                    catching_up: r.catching_up,
                                    lags: self.lags_of(&id, name, shard).map(LagStatus::from).collect(),
                                }
                            })
                            .collect()
                    })
                    .collect(),
            })
            .collect();
        ClusterStatus { cluster_id: String::new(), stores, keyspaces }
    }
}
