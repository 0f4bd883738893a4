//! The master's state: stores, keyspaces, placement and routing versions. Soft (rebuilt from
//! the stores' reports) except the catalog of keyspaces and their incarnations, which the
//! master also keeps on disk (see `catalog`).
//!
//! Pure data and decisions, no I/O and no clock reads: every method that bumps a version takes
//! the current time in milliseconds, so the rules are unit-tested without sockets. Adopting the
//! stores' reports (which replica fills which slot) lives in `adopt`.
use crate::catalog::{Catalog, Entry, EntryState};
use crate::placement::place;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use vasto_wire::{ReplicaLag, ReplicaRoute, RoutingTable, ShardInfo, Status};

pub use vasto_wire::{MAX_REPLICAS, MAX_SHARDS};

/// A position in a replica's change log: incarnation and sequence number (a drain waits for
/// every follower of a frozen or re-laid-out replica to report one at or past its final head).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct LogMark {
    pub incarnation: u64,
    pub seq: u64,
}

/// Why an admin request was refused: the status and message sent back to the admin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Reject {
    pub status: Status,
    pub message: String,
}

impl Reject {
    pub fn new(status: Status, message: impl Into<String>) -> Self {
        Self { status, message: message.into() }
    }

    pub fn bad(message: impl Into<String>) -> Self {
        Self::new(Status::BadRequest, message)
    }
}

/// One registered store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StoreRecord {
    pub address: String,
    pub capacity_bytes: u64,
    /// Free bytes of its data filesystem, as last reported (registration, heartbeat).
    pub free_bytes: u64,
    /// Its free space fell below its reserve: it takes no new replicas.
    pub disk_full: bool,
    /// Its failure domain (`vasto store --zone`; empty: none).
    pub zone: String,
    pub up: bool,
    /// Generation of the connection that registered last; only that connection may mark it down.
    pub generation: u64,
    /// Replication lags of the latest heartbeat (empty until one arrives and while down).
    pub lags: Vec<ReplicaLag>,
    /// The shard replicas it reported last (registration, and again after each shard command).
    pub reports: Vec<ShardInfo>,
    /// When it was last marked down (unix ms; meaningful while `up` is false).
    pub down_since_ms: u64,
    /// The id of the store process's current start (`Register.start_id`; 0 until told).
    pub start_id: u64,
}

/// One keyspace; `placement[shard][replica]` is a store id, "" while unknown (after a restart).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Keyspace {
    /// Which keyspace of this name (chosen at create-keyspace, kept in every replica).
    pub incarnation: u64,
    pub shards: u32,
    pub replicas: u32,
    pub placement: Vec<Vec<String>>,
    /// Stores taking over slots of the placement (replace-store in progress).
    pub joining: Vec<crate::replace::Joining>,
    /// The shard count a grow in progress is heading for (0: none); `placement` then already
    /// has the rows of the new shards.
    pub resizing_to: u32,
    /// When `shards` was put in force (ms since the Unix epoch; 0 for a keyspace never resized).
    /// Stores keep it with each replica, so a restarted master knows the newest shard count.
    pub committed_at_ms: u64,
}

impl Keyspace {
    pub(crate) fn new(incarnation: u64, shards: u32, replicas: u32, placement: Vec<Vec<String>>, committed_at_ms: u64) -> Self {
        Self { incarnation, shards, replicas, placement, joining: Vec::new(), resizing_to: 0, committed_at_ms }
    }

    pub(crate) fn empty(incarnation: u64, shards: u32, replicas: u32, committed_at_ms: u64) -> Self {
        Self::new(incarnation, shards, replicas, vec![vec![String::new(); replicas as usize]; shards as usize], committed_at_ms)
    }

    /// Replica `replica` of `shard` of this keyspace (named `name`) as it stands: serving and
    /// keeping its current shard count, committed when that count was. (Creation time 0: a
    /// command that creates a replica sets it.)
    pub(crate) fn shard_info(&self, name: &str, shard: u32, replica: u32) -> ShardInfo {
        ShardInfo {
            keyspace: name.to_owned(),
            shard,
            shards: self.shards,
            replica,
            replicas: self.replicas,
            committed: self.shards,
            committed_at_ms: self.committed_at_ms,
            keyspace_incarnation: self.incarnation,
            frozen: false,
            created_at_ms: 0,
        }
    }

    pub(crate) fn holds(&self, store: &str) -> bool {
        self.placement.iter().flatten().any(|s| s == store) || self.joining.iter().any(|j| j.store == store)
    }
}

/// What `vasto admin compact` reaches: (store, replica) pairs, and the stores it cannot.
pub(crate) struct CompactPlan {
    pub targets: Vec<(String, ShardInfo)>,
    pub down: Vec<String>,
}

/// Outcome of planning a create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum CreatePlan {
    /// The keyspace exists with exactly these parameters: nothing to do.
    AlreadyExists,
    /// Create it with this placement (`[shard][replica]` -> store id).
    New(Vec<Vec<String>>),
}

/// The keyspace of `catalog` entry `entry`, before any store has reported its replicas.
fn unplaced(entry: &Entry) -> Keyspace {
    Keyspace::empty(entry.incarnation, entry.shards, entry.replicas, entry.committed_at_ms)
}

/// The next routing version: strictly greater than `prev` and never behind the wall clock, so
/// versions keep increasing across master restarts.
pub(crate) fn next_version(prev: u64, now_ms: u64) -> u64 {
    prev.saturating_add(1).max(now_ms)
}

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub(crate) fn unix_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)).unwrap_or(0)
}

/// A keyspace name is 1 to 64 of `[A-Za-z0-9_.-]` and does not start with '.'.
pub(crate) fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len()) && !name.starts_with('.') && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// Everything the master knows; rebuilt from the catalog and the store registrations after a
/// restart.
#[derive(Debug, Default)]
pub(crate) struct State {
    pub stores: BTreeMap<String, StoreRecord>,
    pub keyspaces: BTreeMap<String, Keyspace>,
    /// The keyspaces that exist and the incarnations of deleted ones (persisted by the caller
    /// whenever `catalog_dirty` is set).
    pub catalog: Catalog,
    /// Set when `catalog` changed and must be written to disk.
    pub catalog_dirty: bool,
    /// Interrupted resizes an operator asked to roll back whatever the missing stores hold.
    pub(crate) forced_rollbacks: std::collections::HashSet<String>,
    /// Current routing version of every keyspace name ever seen (kept after a delete).
    pub versions: HashMap<String, u64>,
    /// Keyspaces with a create or delete in flight, with the placement reserved by a create.
    busy: HashMap<String, Vec<Vec<String>>>,
    /// Keyspaces whose operation in progress was asked to roll back.
    pub(crate) cancels: std::collections::HashSet<String>,
    /// Progress of the operations in flight (resize, replace), by keyspace.
    pub(crate) operations: HashMap<String, crate::progress::Operation>,
    generations: u64,
}

impl State {
    /// The state of a master that starts with `catalog`: every live keyspace of it exists, with
    /// no replica placed until the stores report.
    pub fn from_catalog(catalog: Catalog) -> Self {
        let keyspaces = catalog.keyspaces.iter().filter(|(_, e)| e.state == EntryState::Live).map(|(name, e)| (name.clone(), unplaced(e))).collect();
        Self { keyspaces, catalog, ..Default::default() }
    }

    /// Records a store's (re)connection: it is up, owned by a new connection generation, its
    /// previous lags are forgotten, and every shard it reports is adopted. Returns the generation
    /// and the keyspaces whose routing changed (their versions are already bumped).
    pub fn register(&mut self, id: &str, address: &str, shards: &[ShardInfo], now_ms: u64) -> (u64, Vec<String>) {
        let sane: Vec<ShardInfo> = shards.iter().filter(|i| crate::adopt::sane_report(id, i)).cloned().collect();
        let shards = &sane[..];
        self.generations += 1;
        let generation = self.generations;
        let before = self.catching_all();
        let host = self.stores.get(id).map(|r| (r.capacity_bytes, r.free_bytes, r.disk_full, r.zone.clone())).unwrap_or_default();
        let record = StoreRecord {
            address: address.to_owned(),
            capacity_bytes: host.0,
            free_bytes: host.1,
            disk_full: host.2,
            zone: host.3,
            up: true,
            generation,
            lags: Vec::new(),
            reports: shards.to_vec(),
            down_since_ms: 0,
            start_id: 0,
        };
        let old = self.stores.get(id).map(|r| r.reports.clone()).unwrap_or_default();
        let members = self.members_of(&changed_reports(&old, shards));
        self.stores.insert(id.to_owned(), record);
        let mut affected = self.keyspaces_on(id);
        affected.extend(self.members_changed(members));
        affected.extend(shards.iter().filter(|info| self.adopt(id, info)).map(|info| info.keyspace.clone()));
        // Peers following this store may start (or stop) catching up now that it is back.
        affected.extend(self.catching_changes(&before));
        (generation, self.bump_all(affected, now_ms))
    }

    /// Records the process start id a store's registration carried.
    pub fn note_start(&mut self, id: &str, start_id: u64) {
        if let Some(record) = self.stores.get_mut(id) {
            record.start_id = start_id;
        }
    }

    /// A registration repeated on a live connection: re-syncs address and shard list.
    /// Returns `None` when `generation` is no longer the store's current connection.
    pub fn resync(&mut self, id: &str, generation: u64, address: &str, shards: &[ShardInfo], now_ms: u64) -> Option<Vec<String>> {
        if !self.is_current(id, generation) {
            return None;
        }
        let sane: Vec<ShardInfo> = shards.iter().filter(|i| crate::adopt::sane_report(id, i)).cloned().collect();
        let shards = &sane[..];
        let old = self.stores.get(id)?.reports.clone();
        let members = self.members_of(&changed_reports(&old, shards));
        let record = self.stores.get_mut(id)?;
        record.reports = shards.to_vec();
        let moved = record.address != address;
        record.address = address.to_owned();
        // A replica the store no longer reports (a stray it dropped) leaves the tables too.
        let mut affected = self.members_changed(members);
        if moved {
            affected.extend(self.keyspaces_on(id));
        }
        affected.extend(shards.iter().filter(|info| self.adopt(id, info)).map(|info| info.keyspace.clone()));
        Some(self.bump_all(affected, now_ms))
    }

    /// Marks a store down and forgets its lags if `generation` is still its live connection;
    /// returns the keyspaces whose routing changed (versions bumped), including those where a
    /// replica following this store stops catching up. A stale connection's cleanup changes
    /// nothing.
    pub fn store_down(&mut self, id: &str, generation: u64, now_ms: u64) -> Vec<String> {
        if !self.is_current(id, generation) {
            return Vec::new();
        }
        let before = self.catching_all();
        if let Some(record) = self.stores.get_mut(id) {
            record.up = false;
            record.lags.clear();
            record.down_since_ms = now_ms;
        }
        let mut affected = self.keyspaces_on(id);
        affected.extend(self.catching_changes(&before));
        self.bump_all(affected, now_ms)
    }

    /// True while `generation` is the live connection of store `id`.
    pub fn is_current(&self, id: &str, generation: u64) -> bool {
        self.stores.get(id).is_some_and(|s| s.up && s.generation == generation)
    }

    /// Names of the keyspaces with at least one replica on `store`.
    pub fn keyspaces_on(&self, store: &str) -> BTreeSet<String> {
        self.keyspaces.iter().filter(|(_, ks)| ks.holds(store)).map(|(name, _)| name.clone()).collect()
    }

    /// Bumps the routing version of every keyspace in `names`; returns them, sorted.
    pub fn bump_all(&mut self, names: BTreeSet<String>, now_ms: u64) -> Vec<String> {
        for name in &names {
            self.bump(name, now_ms);
        }
        names.into_iter().collect()
    }

    /// Bumps the routing version of `name`; returns the new version.
    pub fn bump(&mut self, name: &str, now_ms: u64) -> u64 {
        let v = self.versions.entry(name.to_owned()).or_insert(0);
        *v = next_version(*v, now_ms);
        *v
    }

    /// Current routing version of `name` (0 if never seen).
    pub fn version(&self, name: &str) -> u64 {
        self.versions.get(name).copied().unwrap_or(0)
    }

    /// Number of replicas placed on each store by existing keyspaces.
    pub fn placed(&self) -> HashMap<&str, usize> {
        count(self.keyspaces.values().flat_map(|ks| ks.placement.iter()))
    }

    /// Number of replicas placed on each store, including placements reserved by creates in flight.
    pub fn load(&self) -> HashMap<&str, usize> {
        count(self.keyspaces.values().flat_map(|ks| ks.placement.iter()).chain(self.busy.values().flatten()))
    }

    /// Validates a create request and chooses the placement.
    pub fn plan_create(&self, name: &str, shards: u32, replicas: u32) -> Result<CreatePlan, Reject> {
        if !valid_name(name) {
            return Err(Reject::bad(format!("invalid keyspace name {name:?}: use 1 to 64 of [A-Za-z0-9_.-], not starting with '.'")));
        }
        if !(1..=MAX_SHARDS).contains(&shards) {
            return Err(Reject::bad(format!("shards must be in 1..={MAX_SHARDS}, got {shards}")));
        }
        if !(1..=MAX_REPLICAS).contains(&replicas) {
            return Err(Reject::bad(format!("replicas must be in 1..={MAX_REPLICAS}, got {replicas}")));
        }
        if self.busy.contains_key(name) {
            return Err(Reject::bad(format!("another operation on keyspace {name} is in progress")));
        }
        if let Some(ks) = self.keyspaces.get(name) {
            if ks.shards == shards && ks.replicas == replicas {
                return Ok(CreatePlan::AlreadyExists);
            }
            return Err(Reject::bad(format!("keyspace {name} already exists with {} shards and {} replicas", ks.shards, ks.replicas)));
        }
        if let Some(entry) = self.catalog.keyspaces.get(name) {
            // In the catalog but not (yet) rebuilt: an interrupted create being rolled back.
            return Err(Reject::bad(format!(
                "keyspace {name} ({}) is being rolled back after an interrupted create; try again in a few seconds",
                match entry.state {
                    EntryState::Creating => "creating",
                    EntryState::Live => "live",
                }
            )));
        }
        let candidates = self.enough_candidates("keyspace needs", replicas)?;
        Ok(CreatePlan::New(place(&candidates, self.load(), shards, replicas)))
    }

    /// Marks `name` busy (reserving `placement` in the load); false if it already is.
    pub fn begin(&mut self, name: &str, placement: Vec<Vec<String>>) -> bool {
        if self.busy.contains_key(name) {
            return false;
        }
        self.busy.insert(name.to_owned(), placement);
        // A cancel that arrived too late for an earlier operation never cancels this one.
        self.cancels.remove(name);
        true
    }

    /// True while a create, delete or replace of `name` is in flight.
    pub fn is_busy(&self, name: &str) -> bool {
        self.busy.contains_key(name)
    }

    /// Clears the busy mark of `name`.
    pub fn end(&mut self, name: &str) {
        self.busy.remove(name);
        self.operations.remove(name);
        self.cancels.remove(name);
    }

    /// Records in the catalog that keyspace `name` (incarnation `incarnation`) is being created
    /// (the caller persists it before creating any replica).
    pub fn begin_create(&mut self, name: &str, incarnation: u64, shards: u32, replicas: u32, now_ms: u64) {
        let entry = Entry { incarnation, state: EntryState::Creating, shards, replicas, committed_at_ms: 0, created_at_ms: now_ms };
        self.catalog.keyspaces.insert(name.to_owned(), entry);
        self.catalog_dirty = true;
    }

    /// Records a created keyspace (live in the catalog) and bumps its version.
    pub fn commit_create(&mut self, name: &str, incarnation: u64, shards: u32, replicas: u32, placement: Vec<Vec<String>>, now_ms: u64) -> u64 {
        self.keyspaces.insert(name.to_owned(), Keyspace::new(incarnation, shards, replicas, placement, 0));
        let entry = self.catalog.keyspaces.entry(name.to_owned()).or_insert_with(|| Entry {
            incarnation,
            state: EntryState::Live,
            shards,
            replicas,
            committed_at_ms: 0,
            created_at_ms: now_ms,
        });
        entry.state = EntryState::Live;
        self.catalog_dirty = true;
        self.bump(name, now_ms)
    }

    /// Validates a delete and lists the replicas to drop now (those on live stores; replicas
    /// on stores that are down or not reported yet are dropped when their store reports them,
    /// since their incarnation is then recorded as deleted).
    pub fn plan_delete(&self, name: &str) -> Result<Vec<(String, ShardInfo)>, Reject> {
        if self.busy.contains_key(name) {
            return Err(Reject::bad(format!("another operation on keyspace {name} is in progress")));
        }
        let Some(ks) = self.keyspaces.get(name) else {
            return Err(Reject::new(Status::UnknownKeyspace, format!("keyspace {name} does not exist")));
        };
        let up = |store: &String| self.stores.get(store).is_some_and(|s| s.up);
        let mut drops: Vec<(String, ShardInfo)> = Vec::new();
        for (shard, row) in ks.placement.iter().enumerate() {
            for (replica, store) in row.iter().enumerate().filter(|(_, s)| up(s)) {
                drops.push((store.clone(), ks.shard_info(name, shard as u32, replica as u32)));
            }
        }
        for (store, info) in self.reported(name).filter(|(_, i)| i.keyspace_incarnation == ks.incarnation) {
            if !drops.iter().any(|(s, i)| *s == store && i.shard == info.shard) {
                drops.push((store, info));
            }
        }
        Ok(drops)
    }

    /// The replicas a compaction of `name` reaches (every one a live store reports of its
    /// current incarnation), and the stores holding some of its placement that are down.
    pub fn plan_compact(&self, name: &str) -> Result<CompactPlan, Reject> {
        let Some(ks) = self.keyspaces.get(name) else {
            return Err(Reject::new(Status::UnknownKeyspace, format!("keyspace {name} does not exist")));
        };
        let targets: Vec<(String, ShardInfo)> = self.reported(name).filter(|(_, i)| i.keyspace_incarnation == ks.incarnation).collect();
        let mut down: Vec<String> = ks.placement.iter().flatten().filter(|s| !s.is_empty() && !self.stores.get(*s).is_some_and(|r| r.up)).cloned().collect();
        down.sort();
        down.dedup();
        Ok(CompactPlan { targets, down })
    }

    /// Every replica of keyspace `name` that a live store reports, whatever its incarnation.
    pub fn reported<'a>(&'a self, name: &'a str) -> impl Iterator<Item = (String, ShardInfo)> + 'a {
        self.stores
            .iter()
            .filter(|(_, r)| r.up)
            .flat_map(move |(id, r)| r.reports.iter().filter(move |i| i.keyspace == name).map(move |i| (id.clone(), i.clone())))
    }

    /// Forgets a deleted keyspace (its incarnation is remembered as deleted) and bumps its
    /// version (its table now says exists=false).
    pub fn remove_keyspace(&mut self, name: &str, now_ms: u64) -> u64 {
        self.keyspaces.remove(name);
        self.catalog.delete(name);
        self.catalog_dirty = true;
        self.bump(name, now_ms)
    }

    /// The routing table of `name` as clients see it.
    pub fn table(&self, name: &str) -> RoutingTable {
        let version = self.version(name);
        let Some(ks) = self.keyspaces.get(name) else {
            return RoutingTable { keyspace: name.to_owned(), exists: false, version, ..Default::default() };
        };
        let routes = (0..ks.placement.len() as u32).map(|shard| self.row_routes(name, shard)).collect();
        RoutingTable { keyspace: name.to_owned(), exists: true, version, shards: ks.shards, replicas: ks.replicas, routes, resizing_to: ks.resizing_to }
    }

    /// The routes of `shard` of `name`: its placement slots, then the stores joining it and the
    /// stray replicas of it (both always catching up), so that every replica that may hold data
    /// is followed by the others.
    pub fn row_routes(&self, name: &str, shard: u32) -> Vec<ReplicaRoute> {
        let Some(row) = self.keyspaces.get(name).and_then(|ks| ks.placement.get(shard as usize)) else { return Vec::new() };
        let strays = self.strays(name).into_iter().filter(|(_, i)| i.shard == shard).map(|(store, _)| self.extra_route(&store));
        row.iter().map(|id| self.route(id, name, shard)).chain(self.joining_routes(name, shard)).chain(strays).collect()
    }

    /// The route of a replica that is not in a placement slot (joining or stray): always
    /// catching up, so clients use it only when nothing else is live.
    pub fn extra_route(&self, store: &str) -> ReplicaRoute {
        let address = self.stores.get(store).map(|s| s.address.clone()).unwrap_or_default();
        ReplicaRoute { store_id: store.to_owned(), address, up: self.stores.get(store).is_some_and(|s| s.up), catching_up: true }
    }

    /// Where store `id`, holding a replica of `shard` of `keyspace`, is; an unknown store has
    /// address "" and is down. `catching_up` as derived by [`State::catching_up`].
    pub fn route(&self, id: &str, keyspace: &str, shard: u32) -> ReplicaRoute {
        match self.stores.get(id) {
            Some(s) => ReplicaRoute { store_id: id.to_owned(), address: s.address.clone(), up: s.up, catching_up: self.catching_up(id, keyspace, shard) },
            None => ReplicaRoute { store_id: id.to_owned(), address: String::new(), up: false, catching_up: false },
        }
    }
}

impl State {
    /// The stores routed for each shard of each of `names` (placement, joining and strays).
    fn members_of(&self, names: &BTreeSet<String>) -> Vec<(String, Vec<Vec<String>>)> {
        let ids = |name: &str| -> Vec<Vec<String>> {
            let shards = self.keyspaces.get(name).map_or(0, |ks| ks.placement.len() as u32);
            (0..shards).map(|shard| self.row_routes(name, shard).into_iter().map(|r| r.store_id).collect()).collect()
        };
        names.iter().filter(|n| self.keyspaces.contains_key(*n)).map(|n| (n.clone(), ids(n))).collect()
    }

    /// The keyspaces among `before` (from [`State::members_of`]) whose routed stores changed.
    fn members_changed(&self, before: Vec<(String, Vec<Vec<String>>)>) -> BTreeSet<String> {
        let names: BTreeSet<String> = before.iter().map(|(n, _)| n.clone()).collect();
        let after = self.members_of(&names);
        before.into_iter().zip(after).filter(|(b, a)| b != a).map(|(b, _)| b.0).collect()
    }
}

/// The keyspaces whose replicas a store reports differently in `new` than in `old` (the routes
/// list reported replicas outside the placement, so their tables may change).
fn changed_reports(old: &[ShardInfo], new: &[ShardInfo]) -> BTreeSet<String> {
    let of = |reports: &[ShardInfo], ks: &str| -> Vec<ShardInfo> {
        let mut v: Vec<ShardInfo> = reports.iter().filter(|i| i.keyspace == ks).cloned().collect();
        v.sort();
        v
    };
    old.iter().chain(new).map(|i| i.keyspace.as_str()).filter(|ks| of(old, ks) != of(new, ks)).map(str::to_owned).collect()
}

fn count<'a>(rows: impl Iterator<Item = &'a Vec<String>>) -> HashMap<&'a str, usize> {
    let mut counts = HashMap::new();
    for store in rows.flatten().filter(|s| !s.is_empty()) {
        *counts.entry(store.as_str()).or_insert(0) += 1;
    }
    counts
}

#[cfg(test)]
#[path = "state_tests.rs"]
mod tests;
