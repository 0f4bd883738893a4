//! Bringing the replicas the stores report back in line with the keyspaces, after a master
//! restart, an interrupted operation, or a store that was away. Every decision is either safe
//! whatever the missing stores hold, or waits until it is:
//!
//! * A replica of a **deleted** keyspace incarnation is dropped (the user deleted it).
//! * A keyspace whose **create was interrupted** (still `creating` in the catalog) is rolled
//!   back: its replicas are dropped and its incarnation recorded as deleted. Nobody used it: its
//!   table is pushed only once every replica exists.
//! * A replica of an **older commit** that already serves the current shard count took part in
//!   the resize and missed its commit: it is committed (roll forward; the commit was only sent
//!   after the drain completed). One of a shard the current count does not have (retired by a
//!   committed shrink, or left by a grow a later commit superseded) is dropped.
//! * A replica of the **current commit** serving another count, or a new shard of it, is left by
//!   a resize that did not commit as far as the live stores know. Rolling it back is safe only if
//!   no replica anywhere committed it: when a placed replica of an old shard still serves and
//!   keeps the current count (the commit needs every replica switched first), or when every
//!   replica of every shard involved has reported (the picture is complete), or when an operator
//!   asked for it (`vasto admin cancel KS`). Otherwise the master waits for the missing stores
//!   and says so in `status`: a store that has the commit could have compacted the moved keys
//!   away, and rolling back would lose them.
//! * A **frozen** replica holding a slot with no operation running (a replace interrupted by a
//!   master restart, or a store restarted while frozen) is unfrozen: if it is the one being
//!   replaced, the replace is simply run again.
//! * A **stray** replica (reported but in no slot: the other side of an interrupted replace, or
//!   a replaced dead store that came back) is retired: frozen, drained into every replica of its
//!   shard, then dropped. Only once every slot holder of the shard is up, since each must
//!   confirm.
//! * Reports that arrived while an operation ran on a keyspace are adopted once none does.
//!
//! The first pass runs [`GRACE`] after the master starts, so live stores have reported.
use crate::admin::run_commands;
use crate::catalog::{EntryState, Known};
use crate::hub::Shared;
use crate::retire::retire;
use crate::state::{unix_ms, State};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;
use vasto_wire::fb::ShardCommandKind;
use vasto_wire::ShardInfo;

/// Time after the master starts before replicas are reconciled (stores reconnect within about a
/// second; heartbeats come every 250 ms).
pub(crate) const GRACE: Duration = Duration::from_secs(3);
/// How often the reports are checked afterwards.
const EVERY: Duration = Duration::from_secs(1);

/// What to do with one reported replica.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Action {
    /// Put the current shard count in force on it (roll a resize forward).
    Commit,
    /// Give it the keyspace's current layout, unfrozen (roll a resize back, or unfreeze).
    Restore,
    /// Drop it: nothing it holds is needed.
    Drop,
    /// Freeze, drain into the other replicas, then drop.
    Retire,
}

/// One command that brings a replica in line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Fix {
    pub store: String,
    pub action: Action,
    pub info: ShardInfo,
}

/// What reconciling one keyspace name amounts to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Plan {
    pub fixes: Vec<Fix>,
    /// The create was interrupted: record the incarnation as deleted.
    pub forget_create: bool,
    /// Why something is left as it is for now (shown in `status`).
    pub waiting: Option<String>,
}

impl State {
    /// Every keyspace name some live store reports or the catalog knows.
    pub(crate) fn reconcilable_names(&self) -> BTreeSet<String> {
        let reported = self.stores.values().filter(|r| r.up).flat_map(|r| r.reports.iter().map(|i| i.keyspace.clone()));
        reported.chain(self.catalog.keyspaces.keys().cloned()).collect()
    }

    /// The fixes for keyspace name `name` (nothing while an operation on it is in flight).
    pub(crate) fn reconcile_plan(&self, name: &str) -> Plan {
        let mut plan = Plan::default();
        if self.is_busy(name) {
            return plan;
        }
        let fix = |store: &str, action, info: ShardInfo| Fix { store: store.to_owned(), action, info };
        for (store, info) in self.reported(name) {
            if self.catalog.classify(name, info.keyspace_incarnation) == Known::Deleted {
                plan.fixes.push(fix(&store, Action::Drop, info));
            }
        }
        if self.catalog.keyspaces.get(name).is_some_and(|e| e.state == EntryState::Creating) {
            let incarnation = self.catalog.keyspaces[name].incarnation;
            plan.fixes.extend(self.reported(name).filter(|(_, i)| i.keyspace_incarnation == incarnation).map(|(s, i)| fix(&s, Action::Drop, i)));
            plan.forget_create = true;
            return plan;
        }
        let Some(ks) = self.keyspaces.get(name) else { return plan };
        let current: Vec<(String, ShardInfo)> =
            self.reported(name).filter(|(_, i)| i.keyspace_incarnation == ks.incarnation && i.replicas == ks.replicas).collect();
        let rollback_safe = self.forced_rollbacks.contains(name) || self.no_replica_committed(name, &current);
        let target = |i: &ShardInfo| ks.shard_info(name, i.shard, i.replica);
        let mut undecided = 0;
        for (store, report) in &current {
            let same_commit = report.committed_at_ms == ks.committed_at_ms;
            let action = if report.shard >= ks.shards {
                match (report.committed_at_ms < ks.committed_at_ms, rollback_safe) {
                    (true, _) | (false, true) => Some(Action::Drop),
                    (false, false) => {
                        undecided += 1;
                        None
                    }
                }
            } else if !same_commit {
                (report.committed_at_ms < ks.committed_at_ms && report.shards == ks.shards).then_some(Action::Commit)
            } else if (report.shards, report.committed) != (ks.shards, ks.shards) {
                if !rollback_safe {
                    undecided += 1;
                }
                rollback_safe.then_some(Action::Restore)
            } else if report.frozen && ks.placement.get(report.shard as usize).is_some_and(|row| row.get(report.replica as usize) == Some(store)) {
                Some(Action::Restore)
            } else {
                None
            };
            if let Some(action) = action {
                plan.fixes.push(fix(store, action, target(report)));
            }
        }
        for (store, stray) in self.strays(name) {
            let holders_up = ks.placement.get(stray.shard as usize).is_some_and(|row| row.iter().all(|s| self.stores.get(s).is_some_and(|r| r.up)));
            if holders_up {
                plan.fixes.push(fix(&store, Action::Retire, target(&stray)));
            } else {
                plan.waiting
                    .get_or_insert_with(|| format!("an extra replica of shard {} on {store} waits for every replica of its shard to be up", stray.shard));
            }
        }
        if undecided > 0 {
            plan.waiting = Some(format!(
                "{undecided} replica(s) left by a resize that did not commit as far as the live stores know; waiting for every replica to report \
                 (a missing store may hold the commit). `vasto admin cancel {name}` rolls it back anyway"
            ));
        }
        plan
    }

    /// True when the live reports prove that no replica of `name` committed a resize away from
    /// the current count: a placed replica of a current shard still serves and keeps it (every
    /// replica switches before a commit is sent), or every replica of every shard involved has
    /// reported.
    fn no_replica_committed(&self, name: &str, current: &[(String, ShardInfo)]) -> bool {
        let Some(ks) = self.keyspaces.get(name) else { return false };
        let now = current.iter().filter(|(_, i)| i.committed_at_ms == ks.committed_at_ms);
        let placed = |store: &str, i: &ShardInfo| ks.placement.get(i.shard as usize).and_then(|row| row.get(i.replica as usize)).is_some_and(|s| s == store);
        if now.clone().any(|(s, i)| i.shard < ks.shards && (i.shards, i.committed) == (ks.shards, ks.shards) && placed(s, i)) {
            return true;
        }
        let rows = now.clone().map(|(_, i)| i.shards.max(i.shard.saturating_add(1))).max().unwrap_or(0).max(ks.shards);
        (0..rows).all(|shard| {
            let seen: BTreeSet<u32> = now.clone().filter(|(_, i)| i.shard == shard).map(|(_, i)| i.replica).collect();
            seen.len() as u32 == ks.replicas
        })
    }

    /// Why reconciling `name` waits, if it does (for `status`).
    pub(crate) fn reconcile_waiting(&self, name: &str) -> Option<String> {
        self.reconcile_plan(name).waiting
    }
}

/// Runs forever: after [`GRACE`], every [`EVERY`], applies the plan of every keyspace name that
/// needs fixes, each in its own task while the keyspace is marked busy, then pushes its table.
pub(crate) async fn run(shared: Arc<Shared>) {
    tokio::time::sleep(GRACE).await;
    loop {
        let started: Vec<(String, Plan)> = {
            let mut hub = shared.lock();
            let names: Vec<String> = hub.state.reconcilable_names().into_iter().collect();
            // Reports that arrived while an operation ran on a keyspace were not adopted then.
            let readopted: Vec<String> = names.iter().filter(|name| hub.state.readopt(name)).cloned().collect();
            if !readopted.is_empty() {
                let affected = hub.state.bump_all(readopted.into_iter().collect(), unix_ms());
                let _ = shared.persist(&mut hub);
                hub.push(&affected);
            }
            names
                .into_iter()
                .filter_map(|name| {
                    let plan = hub.state.reconcile_plan(&name);
                    let needed = !plan.fixes.is_empty() || plan.forget_create;
                    let started = needed && hub.state.begin(&name, Vec::new());
                    if started {
                        hub.state.set_phase(&name, "repair", "repairing", unix_ms());
                    }
                    started.then_some((name, plan))
                })
                .collect()
        };
        for (name, plan) in started {
            let shared = Arc::clone(&shared);
            tokio::spawn(async move {
                apply(&shared, &name, plan).await;
                let mut hub = shared.lock();
                hub.state.end(&name);
                hub.state.bump(&name, unix_ms());
                let _ = shared.persist(&mut hub);
                hub.push(&[name]);
            });
        }
        tokio::time::sleep(EVERY).await;
    }
}

/// Carries out one keyspace's plan: commits, then restores, then drops, then retirements.
async fn apply(shared: &Shared, name: &str, plan: Plan) {
    let batch = |action| plan.fixes.iter().filter(|f| f.action == action).map(|f| (f.store.clone(), f.info.clone())).collect::<Vec<_>>();
    for (action, kind, what) in [
        (Action::Commit, ShardCommandKind::Commit, "completing the resize on"),
        (Action::Restore, ShardCommandKind::Create, "restoring the layout of"),
        (Action::Drop, ShardCommandKind::Drop, "dropping the leftover"),
    ] {
        let targets = batch(action);
        if targets.is_empty() {
            continue;
        }
        tracing::info!(keyspace = %name, replicas = targets.len(), "{what} replicas");
        if let Err(e) = run_commands(shared, kind, &targets, what).await {
            tracing::warn!(keyspace = %name, error = %e.message, "reconciling failed; retrying");
        }
    }
    let strays = batch(Action::Retire);
    if !strays.is_empty() {
        tracing::info!(keyspace = %name, replicas = strays.len(), "retiring extra replicas left by an interrupted replace");
        if let Err(e) = retire(shared, name, &strays).await {
            tracing::warn!(keyspace = %name, error = %e.message, "retiring extra replicas failed; retrying");
        }
    }
    let mut hub = shared.lock();
    if plan.forget_create {
        tracing::warn!(keyspace = %name, "rolled back a create the master did not finish");
        hub.state.catalog.delete(name);
        hub.state.catalog_dirty = true;
    }
    if plan.fixes.iter().any(|f| f.action == Action::Restore || f.action == Action::Drop) {
        hub.state.forced_rollbacks.remove(name);
    }
}

#[cfg(test)]
#[path = "reconcile_tests.rs"]
mod tests;
