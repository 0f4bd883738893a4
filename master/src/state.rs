//! The master's soft state: stores, keyspaces, placement and routing versions.
//!
//! Pure data and decisions, no I/O and no clock reads: every method that bumps a version takes
//! the current time in milliseconds, so the rules are unit-tested without sockets.
use std::collections::{BTreeMap, BTreeSet, HashMap};
use vasto_wire::{ReplicaLag, ReplicaRoute, RoutingTable, ShardInfo, Status};

/// Largest shard count a keyspace may have.
pub const MAX_SHARDS: u32 = 4096;

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
    pub up: bool,
    /// Generation of the connection that registered last; only that connection may mark it down.
    pub generation: u64,
    /// Replication lags of the latest heartbeat (empty until one arrives and while down).
    pub lags: Vec<ReplicaLag>,
    /// The shard replicas it reported last (registration, and again after each shard command).
    pub reports: Vec<ShardInfo>,
}

/// One keyspace; `placement[shard][replica]` is a store id, "" while unknown (after a restart).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Keyspace {
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
    pub(crate) fn new(shards: u32, replicas: u32, placement: Vec<Vec<String>>, committed_at_ms: u64) -> Self {
        Self { shards, replicas, placement, joining: Vec::new(), resizing_to: 0, committed_at_ms }
    }

    fn empty(shards: u32, replicas: u32, committed_at_ms: u64) -> Self {
        Self::new(shards, replicas, vec![vec![String::new(); replicas as usize]; shards as usize], committed_at_ms)
    }

    /// Replica `replica` of `shard` of this keyspace (named `name`) as it stands: serving and
    /// keeping its current shard count, committed when that count was.
    pub(crate) fn shard_info(&self, name: &str, shard: u32, replica: u32) -> ShardInfo {
        ShardInfo {
            keyspace: name.to_owned(),
            shard,
            shards: self.shards,
            replica,
            replicas: self.replicas,
            committed: self.shards,
            committed_at_ms: self.committed_at_ms,
        }
    }

    fn holds(&self, store: &str) -> bool {
        self.placement.iter().flatten().any(|s| s == store) || self.joining.iter().any(|j| j.store == store)
    }
}

/// Outcome of planning a create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum CreatePlan {
    /// The keyspace exists with exactly these parameters: nothing to do.
    AlreadyExists,
    /// Create it with this placement (`[shard][replica]` -> store id).
    New(Vec<Vec<String>>),
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

/// Everything the master knows; rebuilt from store registrations after a restart.
#[derive(Debug, Default)]
pub(crate) struct State {
    pub stores: BTreeMap<String, StoreRecord>,
    pub keyspaces: BTreeMap<String, Keyspace>,
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
    /// Records a store's (re)connection: it is up, owned by a new connection generation, its
    /// previous lags are forgotten, and every shard it reports is adopted. Returns the generation
    /// and the keyspaces whose routing changed (their versions are already bumped).
    pub fn register(&mut self, id: &str, address: &str, capacity_bytes: u64, shards: &[ShardInfo], now_ms: u64) -> (u64, Vec<String>) {
        self.generations += 1;
        let generation = self.generations;
        let before = self.catching_all();
        let record = StoreRecord { address: address.to_owned(), capacity_bytes, up: true, generation, lags: Vec::new(), reports: shards.to_vec() };
        self.stores.insert(id.to_owned(), record);
        let mut affected = self.keyspaces_on(id);
        affected.extend(shards.iter().filter(|info| self.adopt(id, info)).map(|info| info.keyspace.clone()));
        // Peers following this store may start (or stop) catching up now that it is back.
        affected.extend(self.catching_changes(&before));
        (generation, self.bump_all(affected, now_ms))
    }

    /// A registration repeated on a live connection: re-syncs address, capacity and shard list.
    /// Returns `None` when `generation` is no longer the store's current connection.
    pub fn resync(&mut self, id: &str, generation: u64, address: &str, capacity_bytes: u64, shards: &[ShardInfo], now_ms: u64) -> Option<Vec<String>> {
        if !self.is_current(id, generation) {
            return None;
        }
        let mut affected = BTreeSet::new();
        let record = self.stores.get_mut(id)?;
        record.capacity_bytes = capacity_bytes;
        record.reports = shards.to_vec();
        if record.address != address {
            record.address = address.to_owned();
            affected = self.keyspaces_on(id);
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
        }
        let mut affected = self.keyspaces_on(id);
        affected.extend(self.catching_changes(&before));
        self.bump_all(affected, now_ms)
    }

    /// True while `generation` is the live connection of store `id`.
    pub fn is_current(&self, id: &str, generation: u64) -> bool {
        self.stores.get(id).is_some_and(|s| s.up && s.generation == generation)
    }

    /// Adopts one reported shard replica; true when the keyspace's routing changed.
    ///
    /// The report with the newest `committed_at_ms` decides the keyspace's shard count: a newer
    /// one re-shapes the keyspace and re-adopts every report held. A replica is placed when it
    /// belongs to that count: same commit, or an older commit but already serving the new count
    /// (it took part in the resize and missed its end; `reconcile` completes it).
    fn adopt(&mut self, store: &str, info: &ShardInfo) -> bool {
        let name = &info.keyspace;
        let counts_ok = [info.shards, info.committed].iter().all(|n| (1..=MAX_SHARDS).contains(n));
        let sane = valid_name(name) && counts_ok && info.replicas >= 1 && info.shard < info.shards.max(info.committed) && info.replica < info.replicas;
        if !sane {
            tracing::warn!(store, ?info, "ignoring an invalid shard report");
            return false;
        }
        if self.busy.contains_key(name) {
            // An operation on this keyspace is in flight; it decides the outcome.
            return false;
        }
        let ks = self.keyspaces.entry(name.clone()).or_insert_with(|| Keyspace::empty(info.committed, info.replicas, info.committed_at_ms));
        if info.committed_at_ms > ks.committed_at_ms && ks.replicas == info.replicas {
            tracing::info!(keyspace = %name, shards = info.committed, was = ks.shards, "a newer shard count was committed; re-adopting every report");
            *ks = Keyspace::empty(info.committed, info.replicas, info.committed_at_ms);
            let reports: Vec<(String, ShardInfo)> = self
                .stores
                .iter()
                .filter(|(_, r)| r.up)
                .flat_map(|(id, r)| r.reports.iter().filter(|i| &i.keyspace == name).map(move |i| (id.clone(), i.clone())))
                .collect();
            for (id, report) in reports {
                self.place_report(&id, &report);
            }
            return true;
        }
        self.place_report(store, info)
    }

    /// Puts a reported replica in its placement slot if it belongs to the keyspace as it is.
    fn place_report(&mut self, store: &str, info: &ShardInfo) -> bool {
        let Some(ks) = self.keyspaces.get_mut(&info.keyspace) else { return false };
        let current = info.committed_at_ms == ks.committed_at_ms || info.shards == ks.shards;
        if !current || ks.replicas != info.replicas || info.shard >= ks.shards {
            tracing::debug!(store, ?info, shards = ks.shards, replicas = ks.replicas, "shard report does not belong to the keyspace as it is; not routed");
            return false;
        }
        let slot = &mut ks.placement[info.shard as usize][info.replica as usize];
        if slot == store {
            return false;
        }
        if !slot.is_empty() && self.stores.get(slot.as_str()).is_some_and(|s| s.up) {
            tracing::warn!(store, holder = %slot, ?info, "replica already held by another live store; report ignored");
            return false;
        }
        *slot = store.to_owned();
        true
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
        if replicas == 0 {
            return Err(Reject::bad("replicas must be at least 1"));
        }
        if self.busy.contains_key(name) {
            return Err(Reject::bad(format!("another create or delete of keyspace {name} is in progress")));
        }
        if let Some(ks) = self.keyspaces.get(name) {
            if ks.shards == shards && ks.replicas == replicas {
                return Ok(CreatePlan::AlreadyExists);
            }
            return Err(Reject::bad(format!("keyspace {name} already exists with {} shards and {} replicas", ks.shards, ks.replicas)));
        }
        let live: Vec<&str> = self.stores.iter().filter(|(_, s)| s.up).map(|(id, _)| id.as_str()).collect();
        if replicas as usize > live.len() {
            return Err(Reject::bad(format!("keyspace needs {replicas} distinct stores but only {} are alive", live.len())));
        }
        Ok(CreatePlan::New(place(&live, self.load(), shards, replicas)))
    }

    /// Marks `name` busy (reserving `placement` in the load); false if it already is.
    pub fn begin(&mut self, name: &str, placement: Vec<Vec<String>>) -> bool {
        if self.busy.contains_key(name) {
            return false;
        }
        self.busy.insert(name.to_owned(), placement);
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
    }

    /// Records a created keyspace and bumps its version.
    pub fn commit_create(&mut self, name: &str, shards: u32, replicas: u32, placement: Vec<Vec<String>>, now_ms: u64) -> u64 {
        self.keyspaces.insert(name.to_owned(), Keyspace::new(shards, replicas, placement, 0));
        self.bump(name, now_ms)
    }

    /// Validates a delete: every replica must be on a known, live store. Returns what to drop.
    pub fn plan_delete(&self, name: &str) -> Result<Vec<(String, ShardInfo)>, Reject> {
        if self.busy.contains_key(name) {
            return Err(Reject::bad(format!("another create or delete of keyspace {name} is in progress")));
        }
        let Some(ks) = self.keyspaces.get(name) else {
            return Err(Reject::new(Status::UnknownKeyspace, format!("keyspace {name} does not exist")));
        };
        let mut drops = Vec::new();
        for (shard, row) in ks.placement.iter().enumerate() {
            for (replica, store) in row.iter().enumerate() {
                if store.is_empty() {
                    return Err(Reject::bad(format!(
                        "shard {shard} replica {replica} of {name} is on a store that has not registered since the master started; bring it back before deleting"
                    )));
                }
                if !self.stores.get(store).is_some_and(|s| s.up) {
                    return Err(Reject::bad(format!("store {store} holding replicas of {name} is down; bring it back before deleting")));
                }
                drops.push((store.clone(), ks.shard_info(name, shard as u32, replica as u32)));
            }
        }
        Ok(drops)
    }

    /// Forgets a deleted keyspace and bumps its version (its table now says exists=false).
    pub fn remove_keyspace(&mut self, name: &str, now_ms: u64) -> u64 {
        self.keyspaces.remove(name);
        self.bump(name, now_ms)
    }

    /// The routing table of `name` as clients see it.
    pub fn table(&self, name: &str) -> RoutingTable {
        let version = self.version(name);
        let Some(ks) = self.keyspaces.get(name) else {
            return RoutingTable { keyspace: name.to_owned(), exists: false, version, ..Default::default() };
        };
        let routes = ks
            .placement
            .iter()
            .enumerate()
            .map(|(shard, row)| row.iter().map(|id| self.route(id, name, shard as u32)).chain(self.joining_routes(name, shard as u32)).collect())
            .collect();
        RoutingTable { keyspace: name.to_owned(), exists: true, version, shards: ks.shards, replicas: ks.replicas, routes, resizing_to: ks.resizing_to }
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

fn count<'a>(rows: impl Iterator<Item = &'a Vec<String>>) -> HashMap<&'a str, usize> {
    let mut counts = HashMap::new();
    for store in rows.flatten().filter(|s| !s.is_empty()) {
        *counts.entry(store.as_str()).or_insert(0) += 1;
    }
    counts
}

/// Places `replicas` copies of each of `shards` shards on distinct stores of `live`, the least
/// loaded first (ties by store id). Caller guarantees `replicas <= live.len()`.
pub(crate) fn place<'a>(live: &[&'a str], mut load: HashMap<&'a str, usize>, shards: u32, replicas: u32) -> Vec<Vec<String>> {
    let mut placement = Vec::with_capacity(shards as usize);
    for _ in 0..shards {
        let mut row: Vec<String> = Vec::with_capacity(replicas as usize);
        for _ in 0..replicas {
            let pick = live.iter().copied().filter(|id| !row.iter().any(|r| r == id)).min_by_key(|id| (load.get(id).copied().unwrap_or(0), *id));
            let Some(pick) = pick else { break };
            *load.entry(pick).or_insert(0) += 1;
            row.push(pick.to_owned());
        }
        placement.push(row);
    }
    placement
}

#[cfg(test)]
#[path = "state_tests.rs"]
mod tests;
