//! Owned control-plane values (registration, routing), decoded from verified frames.
use crate::fb;

/// One shard replica held by a store: which keyspace, which shard of how many, which replica.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct ShardInfo {
    /// Keyspace name.
    pub keyspace: String,
    /// Shard index in `0..shards`.
    pub shard: u32,
    /// Shard count requests are checked against (the serving layout; during a resize, the new
    /// count, while clients still route by `committed`).
    pub shards: u32,
    /// Replica index in `0..replicas`; 0 is the primary.
    pub replica: u32,
    /// Number of replicas of each shard.
    pub replicas: u32,
    /// Shard count clients route by, as the replica last learnt it; its compaction keeps the
    /// keys owned under `shards` or under this count, so a resize can roll back until committed.
    pub committed: u32,
    /// When `committed` was put in force (ms since the Unix epoch, chosen by the master).
    pub committed_at_ms: u64,
    /// Which keyspace of this name: chosen at create-keyspace, so a re-created keyspace of the
    /// same name never adopts the replicas of an earlier one (0: a replica from before
    /// keyspaces had incarnations).
    pub keyspace_incarnation: u64,
    /// The replica refuses writes: it is being retired and drains to its peers.
    pub frozen: bool,
    /// When the master created the replica (ms since the Unix epoch): of two replicas reporting
    /// the same slot, which was there first (recorded for operators).
    pub created_at_ms: u64,
}

/// Largest shard count a keyspace may have.
pub const MAX_SHARDS: u32 = 4096;
/// Largest replica count a keyspace may have (each replica is on its own store).
pub const MAX_REPLICAS: u32 = 16;

impl ShardInfo {
    /// Checks the counts and numbers against each other and the protocol's bounds (not the
    /// keyspace name: that is the engine's rule). Every node checks what it receives before
    /// acting on it, since sizes are allocated from these numbers.
    pub fn check_counts(&self) -> Result<(), String> {
        let counts_ok = [self.shards, self.committed].iter().all(|n| (1..=MAX_SHARDS).contains(n));
        if !counts_ok {
            return Err(format!("shard counts {} and {} must be in 1..={MAX_SHARDS}", self.shards, self.committed));
        }
        if !(1..=MAX_REPLICAS).contains(&self.replicas) || self.replica >= self.replicas {
            return Err(format!("replica {} of {} is not within 1..={MAX_REPLICAS} replicas", self.replica, self.replicas));
        }
        if self.shard >= self.shards.max(self.committed) {
            return Err(format!("shard {} is beyond {} shards", self.shard, self.shards.max(self.committed)));
        }
        Ok(())
    }

    /// Copies a verified view into an owned value (missing strings become empty).
    pub fn from_fb(v: fb::ShardInfo<'_>) -> Self {
        let committed = if v.committed() == 0 { v.shards() } else { v.committed() };
        Self {
            keyspace: v.keyspace().unwrap_or_default().to_owned(),
            shard: v.shard(),
            shards: v.shards(),
            replica: v.replica(),
            replicas: v.replicas(),
            committed,
            committed_at_ms: v.committed_at(),
            keyspace_incarnation: v.keyspace_incarnation(),
            frozen: v.frozen(),
            created_at_ms: v.created_at(),
        }
    }
}

/// Where one replica of a shard lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaRoute {
    /// The store's stable id.
    pub store_id: String,
    /// The store's data address (`host:port`).
    pub address: String,
    /// False while the master has no live connection from that store.
    pub up: bool,
    /// Up, but still catching up with its peers: clients prefer other live replicas.
    pub catching_up: bool,
}

/// How far one shard replica is behind one of its peers, as reported in heartbeats.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ReplicaLag {
    /// Keyspace name.
    pub keyspace: String,
    /// Shard index.
    pub shard: u32,
    /// Store id of the peer being followed.
    pub peer: String,
    /// Sequence numbers of the peer not yet applied.
    pub entries: u64,
    /// Milliseconds since this replica last held everything the peer had (0 = caught up).
    pub lag_ms: u64,
    /// True while the follower's current session with the peer has reached the peer's head;
    /// false as soon as that session ends.
    pub caught_up: bool,
    /// The peer's change-log position applied here (saved with the data).
    pub position: u64,
    /// The incarnation of the peer's change log `position` belongs to.
    pub incarnation: u64,
}

impl ReplicaLag {
    /// Copies a verified view into an owned value.
    pub fn from_fb(v: fb::ReplicaLag<'_>) -> Self {
        Self {
            keyspace: v.keyspace().unwrap_or_default().to_owned(),
            shard: v.shard(),
            peer: v.peer().unwrap_or_default().to_owned(),
            entries: v.entries(),
            lag_ms: v.lag_ms(),
            caught_up: v.caught_up(),
            position: v.position(),
            incarnation: v.incarnation(),
        }
    }
}

/// The full routing table of one keyspace, as pushed by the master.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RoutingTable {
    /// Keyspace name.
    pub keyspace: String,
    /// False when the keyspace does not exist (never created, or deleted).
    pub exists: bool,
    /// Increases on every change; a client keeps the highest it has seen.
    pub version: u64,
    /// Number of shards.
    pub shards: u32,
    /// Replicas per shard.
    pub replicas: u32,
    /// `routes[shard][replica]`; during a grow also the rows of the new shards.
    pub routes: Vec<Vec<ReplicaRoute>>,
    /// The shard count a grow in progress is heading for; 0 when not resizing.
    pub resizing_to: u32,
}

impl RoutingTable {
    /// Copies a verified view into an owned table. Shards are placed by their `shard` field;
    /// entries out of range are ignored, so a malformed table can never cause an out-of-bounds index.
    pub fn from_fb(v: fb::RoutingTable<'_>) -> Self {
        let shards = v.shards();
        let rows = v.resizing_to().max(shards).min(MAX_DECODED_ROWS);
        let mut routes = vec![Vec::new(); rows as usize];
        for route in v.routes().iter().flat_map(|r| r.iter()) {
            let Some(slot) = routes.get_mut(route.shard() as usize) else { continue };
            *slot = route
                .replicas()
                .iter()
                .flat_map(|r| r.iter())
                .map(|r| ReplicaRoute {
                    store_id: r.store_id().unwrap_or_default().to_owned(),
                    address: r.address().unwrap_or_default().to_owned(),
                    up: r.up(),
                    catching_up: r.catching_up(),
                })
                .collect();
        }
        Self {
            keyspace: v.keyspace().unwrap_or_default().to_owned(),
            exists: v.exists(),
            version: v.version(),
            shards,
            replicas: v.replicas(),
            routes,
            resizing_to: v.resizing_to(),
        }
    }
}

/// Upper bound on the rows a decoded routing table allocates, whatever a peer claims.
const MAX_DECODED_ROWS: u32 = 1 << 16;

/// During a resize from `shards` to `resizing_to` shards: the shards receiving keys and the
/// shards giving them. Growing m -> n: [m, n) from [0, m); shrinking n -> m: [0, m) from [m, n).
/// `None` when not resizing (`resizing_to` 0 or equal).
pub fn resize_ranges(shards: u32, resizing_to: u32) -> Option<(std::ops::Range<u32>, std::ops::Range<u32>)> {
    match resizing_to {
        0 => None,
        to if to > shards => Some((shards..to, 0..shards)),
        to if to < shards => Some((0..to, to..shards)),
        _ => None,
    }
}

/// A store's data filesystem as it reports it to the master.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DiskReport {
    /// Size of the filesystem (0: unknown).
    pub capacity_bytes: u64,
    /// Bytes free to the store's user.
    pub free_bytes: u64,
    /// Free space fell below the store's reserve: it takes no new replicas (and refuses writes
    /// while it stays there).
    pub full: bool,
}
