//! Bringing replicas back in line with their keyspace after a master restart in the middle of a
//! resize, or after a store missed the end of one.
//!
//! Every replica reports its layout: the shard count it serves, the count it knows to be in
//! force (`committed`) and since when. The newest commit reported decides the keyspace's count
//! (see `State::adopt`). Then, for each report of a live store:
//! * a replica of a shard the count does not have is dropped: a new shard of a grow that was
//!   never committed (rolled back), or a shard a committed shrink retired;
//! * a replica of the current commit serving another count is restored to serve the current
//!   one: the resize was not committed, so it rolls back (nothing was compacted away yet);
//! * a replica of an older commit already serving the new count took part in the resize and
//!   missed its commit: it is committed (rolls forward).
//!
//! A replica of an older commit serving the old count missed the resize entirely; it is not
//! routed, and left on disk for an operator (`vasto admin replace-store`).
//!
//! The master waits [`GRACE`] after it starts before the first pass, so that every live store
//! has reported and the newest commit is known.
use crate::admin::run_commands;
use crate::hub::Shared;
use crate::state::{unix_ms, State};
use std::time::Duration;
use vasto_wire::fb::ShardCommandKind;
use vasto_wire::ShardInfo;

/// Time after the master starts before replicas are reconciled (stores reconnect within about a
/// second; heartbeats come every 250 ms).
pub(crate) const GRACE: Duration = Duration::from_secs(3);
/// How often the reports are checked afterwards.
const EVERY: Duration = Duration::from_secs(1);

/// One command that brings a replica in line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Fix {
    pub store: String,
    pub kind: ShardCommandKind,
    pub info: ShardInfo,
}

impl State {
    /// The commands that bring every reported replica of `name` in line with the keyspace
    /// (nothing while an operation on it is in flight).
    pub(crate) fn fixes(&self, name: &str) -> Vec<Fix> {
        let Some(ks) = self.keyspaces.get(name) else { return Vec::new() };
        if self.is_busy(name) {
            return Vec::new();
        }
        let mut fixes = Vec::new();
        for (store, record) in self.stores.iter().filter(|(_, r)| r.up) {
            for report in record.reports.iter().filter(|r| r.keyspace == name && r.replicas == ks.replicas) {
                let current = report.committed_at_ms == ks.committed_at_ms;
                let target = ks.shard_info(name, report.shard, report.replica);
                let kind = if report.shard >= ks.shards {
                    ShardCommandKind::Drop
                } else if current && (report.shards, report.committed) != (ks.shards, ks.shards) {
                    ShardCommandKind::Create
                } else if !current && report.shards == ks.shards {
                    ShardCommandKind::Commit
                } else {
                    continue;
                };
                fixes.push(Fix { store: store.clone(), kind, info: target });
            }
        }
        fixes
    }
}

/// Runs forever: after [`GRACE`], every [`EVERY`], applies the fixes of every keyspace that
/// needs some, marking it busy meanwhile, then pushes its table.
pub(crate) async fn run(shared: std::sync::Arc<Shared>) {
    tokio::time::sleep(GRACE).await;
    loop {
        let pending: Vec<(String, Vec<Fix>)> = {
            let mut hub = shared.lock();
            let names: Vec<String> = hub.state.keyspaces.keys().cloned().collect();
            names
                .into_iter()
                .filter_map(|name| {
                    let fixes = hub.state.fixes(&name);
                    let started = !fixes.is_empty() && hub.state.begin(&name, Vec::new());
                    if started {
                        hub.state.set_phase(&name, "repair after an interrupted resize", "repairing", unix_ms());
                    }
                    started.then_some((name, fixes))
                })
                .collect()
        };
        for (name, fixes) in pending {
            for kind in [ShardCommandKind::Commit, ShardCommandKind::Create, ShardCommandKind::Drop] {
                let batch: Vec<(String, ShardInfo)> = fixes.iter().filter(|f| f.kind == kind).map(|f| (f.store.clone(), f.info.clone())).collect();
                if batch.is_empty() {
                    continue;
                }
                let what = match kind {
                    ShardCommandKind::Commit => "completing the resize on",
                    ShardCommandKind::Create => "rolling back the resize on",
                    _ => "dropping the leftover",
                };
                tracing::info!(keyspace = %name, replicas = batch.len(), "{what} replicas left by an interrupted resize");
                if let Err(e) = run_commands(&shared, kind, &batch, what).await {
                    tracing::warn!(keyspace = %name, error = %e.message, "reconciling failed; retrying");
                }
            }
            let mut hub = shared.lock();
            hub.state.end(&name);
            hub.state.bump(&name, unix_ms());
            hub.push(&[name]);
        }
        tokio::time::sleep(EVERY).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(shard: u32, shards: u32, committed: u32, at: u64) -> ShardInfo {
        ShardInfo { keyspace: "ks".into(), shard, shards, replica: 0, replicas: 1, committed, committed_at_ms: at }
    }

    fn fixes_for(reports: &[(&str, ShardInfo)]) -> (State, Vec<(String, ShardCommandKind, u32)>) {
        let mut s = State::default();
        for (i, (store, info)) in reports.iter().enumerate() {
            s.register(store, &format!("127.0.0.1:{i}"), 0, std::slice::from_ref(info), 1);
        }
        let fixes = s.fixes("ks").into_iter().map(|f| (f.store, f.kind, f.info.shard)).collect();
        (s, fixes)
    }

    #[test]
    fn an_uncommitted_grow_rolls_back() {
        // 2 -> 3 interrupted after the old shards started serving 3: commit time 0 everywhere.
        let (s, fixes) = fixes_for(&[("a", report(0, 3, 2, 0)), ("b", report(1, 3, 2, 0)), ("c", report(2, 3, 2, 0))]);
        assert_eq!(s.keyspaces["ks"].shards, 2);
        assert_eq!(s.table("ks").routes.len(), 2, "the keyspace serves by 2 shards");
        assert_eq!(fixes, vec![("a".into(), ShardCommandKind::Create, 0), ("b".into(), ShardCommandKind::Create, 1), ("c".into(), ShardCommandKind::Drop, 2)]);
    }

    #[test]
    fn a_partly_committed_resize_rolls_forward_whatever_the_report_order() {
        // 2 -> 3 committed at 50 on b and c only; a missed the commit but serves 3.
        let reports = [("a", report(0, 3, 2, 0)), ("b", report(1, 3, 3, 50)), ("c", report(2, 3, 3, 50))];
        for order in [[0, 1, 2], [2, 1, 0], [1, 0, 2]] {
            let ordered: Vec<(&str, ShardInfo)> = order.iter().map(|&i| reports[i].clone()).collect();
            let (s, fixes) = fixes_for(&ordered);
            assert_eq!((s.keyspaces["ks"].shards, s.keyspaces["ks"].committed_at_ms), (3, 50));
            assert!(s.table("ks").routes.iter().all(|r| r.len() == 1 && !r[0].store_id.is_empty()), "every shard routed: {order:?}");
            assert_eq!(fixes, vec![("a".into(), ShardCommandKind::Commit, 0)]);
        }
    }

    #[test]
    fn a_committed_shrink_drops_the_retired_shards_and_a_stale_replica_is_not_routed() {
        // 3 -> 2 committed at 70; c's retired shard 2 is left; d holds shard 1 from before the resize.
        let (s, fixes) = fixes_for(&[("c", report(2, 2, 3, 0)), ("a", report(0, 2, 2, 70)), ("b", report(1, 2, 2, 70)), ("d", report(1, 3, 3, 0))]);
        assert_eq!(s.keyspaces["ks"].shards, 2);
        assert_eq!(s.keyspaces["ks"].placement, vec![vec!["a".to_owned()], vec!["b".to_owned()]]);
        assert_eq!(fixes, vec![("c".into(), ShardCommandKind::Drop, 2)]);
    }

    #[test]
    fn nothing_to_fix_in_a_settled_keyspace() {
        let (_, fixes) = fixes_for(&[("a", report(0, 2, 2, 9)), ("b", report(1, 2, 2, 9))]);
        assert!(fixes.is_empty());
    }
}
