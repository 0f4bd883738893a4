//! Adopting the stores' reports: which reported replica fills which placement slot.
//!
//! A report is adopted only into the keyspace of its incarnation (see `catalog`): replicas of a
//! deleted incarnation are left for `reconcile` to drop, replicas of another live incarnation
//! are never routed. Within a keyspace the newest commit reported decides the shard count (a
//! newer one re-shapes the keyspace and re-adopts every report held), and a replica fills its
//! slot when it belongs to that count.
//!
//! Two live stores may report the same slot (a replace-store was interrupted by a master
//! restart: the old replica, frozen or not, and the one that was taking over; or a replaced dead
//! store came back). The first to report fills an empty slot; a later report takes a slot from
//! its holder only if the holder is frozen (being retired) and it is not. The other is a
//! *stray*: listed in the routing table as an extra, catching-up replica, so that its data
//! reaches the others, until `reconcile` drains it into them and drops it.
use crate::catalog::{Entry, EntryState, Known};
use crate::state::{valid_name, Keyspace, State};
use vasto_wire::ShardInfo;

/// Whether a reported replica could exist: a valid name, counts within the limits, its shard
/// and replica numbers within its counts. A report is all the master has to size a keyspace it
/// rebuilds, so an absurd one must never be kept (the fuzz test found one report asking for
/// 100 GB, and one whose shard number overflowed the reconcile arithmetic).
pub(crate) fn sane_report(store: &str, info: &ShardInfo) -> bool {
    let checked = if valid_name(&info.keyspace) { info.check_counts() } else { Err("invalid keyspace name".into()) };
    match checked {
        Ok(()) => true,
        Err(why) => {
            tracing::warn!(store, ?info, %why, "ignoring an invalid shard report");
            false
        }
    }
}

impl State {
    /// Adopts one reported shard replica (a sane one, see [`sane_report`]); true when the
    /// keyspace's routing changed.
    pub(crate) fn adopt(&mut self, store: &str, info: &ShardInfo) -> bool {
        let name = &info.keyspace;
        if self.is_busy(name) {
            // An operation on this keyspace is in flight; it decides the outcome.
            return false;
        }
        match self.catalog.classify(name, info.keyspace_incarnation) {
            Known::Current => {}
            Known::Deleted | Known::Foreign => return false,
            Known::Unknown => {
                // Not in the catalog at all: a catalog that was lost, or data from before
                // catalogs. The keyspace is rebuilt from its reports, as a soft-state master did.
                tracing::warn!(keyspace = %name, incarnation = %format!("{:x}", info.keyspace_incarnation), store, "adopting a keyspace the catalog does not know");
                let entry = Entry {
                    incarnation: info.keyspace_incarnation,
                    state: EntryState::Live,
                    shards: info.committed,
                    replicas: info.replicas,
                    committed_at_ms: info.committed_at_ms,
                    created_at_ms: 0,
                };
                self.catalog.keyspaces.insert(name.clone(), entry);
                self.catalog_dirty = true;
            }
        }
        if self.catalog.keyspaces.get(name).is_some_and(|e| e.state == EntryState::Creating) {
            // An interrupted create: `reconcile` rolls it back.
            return false;
        }
        let ks = self
            .keyspaces
            .entry(name.clone())
            .or_insert_with(|| Keyspace::empty(info.keyspace_incarnation, info.committed, info.replicas, info.committed_at_ms));
        if info.committed_at_ms > ks.committed_at_ms && ks.replicas == info.replicas {
            tracing::info!(keyspace = %name, shards = info.committed, was = ks.shards, "a newer shard count was committed; re-adopting every report");
            *ks = Keyspace::empty(info.keyspace_incarnation, info.committed, info.replicas, info.committed_at_ms);
            self.note_commit(name, info.committed, info.committed_at_ms);
            let reports: Vec<(String, ShardInfo)> = self.reported(name).filter(|(_, i)| i.keyspace_incarnation == info.keyspace_incarnation).collect();
            for (id, report) in reports {
                self.place_report(&id, &report);
            }
            return true;
        }
        self.place_report(store, info)
    }

    /// Records in the catalog that `name` has `shards` shards since `committed_at_ms`.
    pub(crate) fn note_commit(&mut self, name: &str, shards: u32, committed_at_ms: u64) {
        if let Some(entry) = self.catalog.keyspaces.get_mut(name) {
            if (entry.shards, entry.committed_at_ms) != (shards, committed_at_ms) {
                entry.shards = shards;
                entry.committed_at_ms = committed_at_ms;
                self.catalog_dirty = true;
            }
        }
    }

    /// Puts a reported replica in its placement slot if it belongs to the keyspace as it is and
    /// is preferred to the slot's current holder (see the module docs).
    fn place_report(&mut self, store: &str, info: &ShardInfo) -> bool {
        let Some(ks) = self.keyspaces.get(&info.keyspace) else { return false };
        let current = info.committed_at_ms == ks.committed_at_ms || info.shards == ks.shards;
        if !current || ks.replicas != info.replicas || info.shard >= ks.shards || info.keyspace_incarnation != ks.incarnation {
            tracing::debug!(store, ?info, shards = ks.shards, replicas = ks.replicas, "shard report does not belong to the keyspace as it is; not routed");
            return false;
        }
        let row = &ks.placement[info.shard as usize];
        let holder = &row[info.replica as usize];
        if holder == store {
            return false;
        }
        if row.iter().any(|s| s == store) {
            // The store already fills another slot of this shard (one replica per shard each).
            return false;
        }
        if !holder.is_empty() && self.stores.get(holder.as_str()).is_some_and(|s| s.up) {
            let held = self.stores.get(holder.as_str()).and_then(|s| s.reports.iter().find(|r| same_slot(r, info))).cloned();
            let takes_over = held.is_none_or(|h| h.frozen && !info.frozen);
            if !takes_over {
                tracing::info!(store, holder = %holder, ?info, "two stores report the same replica; the holder keeps the slot, the other is a stray");
                return false;
            }
            tracing::info!(store, was = %holder, ?info, "two stores report the same replica; this unfrozen one takes the slot from a frozen one");
        }
        let name = info.keyspace.clone();
        if let Some(ks) = self.keyspaces.get_mut(&name) {
            ks.placement[info.shard as usize][info.replica as usize] = store.to_owned();
        }
        true
    }

    /// Adopts again every live report of `name` (reports are skipped while an operation runs on
    /// the keyspace; `reconcile` calls this once none does). True when routing changed.
    pub(crate) fn readopt(&mut self, name: &str) -> bool {
        if self.is_busy(name) {
            return false;
        }
        let reports: Vec<(String, ShardInfo)> = self.reported(name).collect();
        let mut changed = false;
        for (store, info) in reports {
            changed |= self.adopt(&store, &info);
        }
        changed
    }

    /// The replicas of `name`'s current shards that live stores report but that fill no
    /// placement slot and are not joining: left by an interrupted replace (or a slot taken by a
    /// preferred replica). They are routed as extras until drained and dropped.
    pub fn strays(&self, name: &str) -> Vec<(String, ShardInfo)> {
        let Some(ks) = self.keyspaces.get(name) else { return Vec::new() };
        self.reported(name)
            .filter(|(store, info)| {
                info.keyspace_incarnation == ks.incarnation
                    && info.replicas == ks.replicas
                    && ks.placement.get(info.shard as usize).is_some_and(|row| !row.contains(store))
                    && !ks.joining.iter().any(|j| j.store == *store && j.shard == info.shard)
                    && (info.committed_at_ms == ks.committed_at_ms || info.shards == ks.shards)
            })
            .collect()
    }
}

/// True when two reports are of the same replica slot of the same keyspace incarnation.
fn same_slot(a: &ShardInfo, b: &ShardInfo) -> bool {
    (a.keyspace.as_str(), a.keyspace_incarnation, a.shard, a.replica) == (b.keyspace.as_str(), b.keyspace_incarnation, b.shard, b.replica)
}
