//! The reconcile rules, on reports alone (no sockets): what is fixed at once, what waits.
use super::*;
use crate::catalog::{Entry, EntryState};

const INC: u64 = 0xabc;

fn report(shard: u32, shards: u32, committed: u32, at: u64) -> ShardInfo {
    ShardInfo { keyspace: "ks".into(), shard, shards, replica: 0, replicas: 1, committed, committed_at_ms: at, keyspace_incarnation: INC, ..Default::default() }
}

fn replica(r: ShardInfo, replica: u32, replicas: u32) -> ShardInfo {
    ShardInfo { replica, replicas, ..r }
}

/// A master that has just restarted and heard these reports (one store each, in this order).
fn state(reports: &[(&str, ShardInfo)]) -> State {
    let mut s = State::default();
    for (i, (store, info)) in reports.iter().enumerate() {
        s.register(store, &format!("127.0.0.1:{i}"), std::slice::from_ref(info), 1);
    }
    s
}

fn fixes(s: &State) -> Vec<(String, Action, u32)> {
    s.reconcile_plan("ks").fixes.into_iter().map(|f| (f.store, f.action, f.info.shard)).collect()
}

#[test]
fn an_uncommitted_grow_rolls_back_once_every_replica_reported() {
    // 2 -> 3 interrupted after the old shards started serving 3: commit time 0 everywhere.
    let s = state(&[("a", report(0, 3, 2, 0)), ("b", report(1, 3, 2, 0)), ("c", report(2, 3, 2, 0))]);
    assert_eq!(s.keyspaces["ks"].shards, 2);
    assert_eq!(s.table("ks").routes.len(), 2, "the keyspace serves by 2 shards");
    assert_eq!(fixes(&s), vec![("a".into(), Action::Restore, 0), ("b".into(), Action::Restore, 1), ("c".into(), Action::Drop, 2)]);
}

#[test]
fn an_uncommitted_resize_waits_while_a_replica_that_may_hold_the_commit_is_missing() {
    // 2 -> 3 with shard 1 on a store that has not reported: it may have been committed there
    // (and compacted), so nothing is rolled back.
    let mut s = state(&[("a", report(0, 3, 2, 0)), ("c", report(2, 3, 2, 0))]);
    let plan = s.reconcile_plan("ks");
    assert!(plan.fixes.is_empty(), "{plan:?}");
    assert!(plan.waiting.as_deref().is_some_and(|w| w.contains("cancel")), "{plan:?}");
    // An operator may force it.
    assert!(s.request_cancel("ks"));
    assert_eq!(fixes(&s), vec![("a".into(), Action::Restore, 0), ("c".into(), Action::Drop, 2)]);
}

#[test]
fn a_replica_still_at_the_old_layout_proves_nothing_was_committed() {
    // The master died while copying: the old shards never switched. Shard 1's store is missing,
    // but a placed replica still serving 2 proves no replica committed 3.
    let s = state(&[("a", report(0, 2, 2, 0)), ("c", report(2, 3, 2, 0))]);
    assert_eq!(fixes(&s), vec![("c".into(), Action::Drop, 2)]);
}

#[test]
fn a_partly_committed_resize_rolls_forward_whatever_the_report_order() {
    // 2 -> 3 committed at 50 on b and c only; a missed the commit but serves 3.
    let reports = [("a", report(0, 3, 2, 0)), ("b", report(1, 3, 3, 50)), ("c", report(2, 3, 3, 50))];
    for order in [[0, 1, 2], [2, 1, 0], [1, 0, 2]] {
        let ordered: Vec<(&str, ShardInfo)> = order.iter().map(|&i| reports[i].clone()).collect();
        let s = state(&ordered);
        assert_eq!((s.keyspaces["ks"].shards, s.keyspaces["ks"].committed_at_ms), (3, 50));
        assert!(s.table("ks").routes.iter().all(|r| r.len() == 1 && !r[0].store_id.is_empty()), "every shard routed: {order:?}");
        assert_eq!(fixes(&s), vec![("a".into(), Action::Commit, 0)]);
        assert_eq!(s.catalog.keyspaces["ks"].shards, 3, "the catalog learns the newest commit");
    }
}

#[test]
fn a_committed_shrink_drops_the_retired_shards_and_a_stale_replica_is_not_routed() {
    // 3 -> 2 committed at 70; c's retired shard 2 is left; d holds shard 1 from before the resize.
    let s = state(&[("c", report(2, 2, 3, 0)), ("a", report(0, 2, 2, 70)), ("b", report(1, 2, 2, 70)), ("d", report(1, 3, 3, 0))]);
    assert_eq!(s.keyspaces["ks"].shards, 2);
    assert_eq!(s.keyspaces["ks"].placement, vec![vec!["a".to_owned()], vec!["b".to_owned()]]);
    assert_eq!(fixes(&s), vec![("c".into(), Action::Drop, 2)]);
}

#[test]
fn nothing_to_fix_in_a_settled_keyspace() {
    let s = state(&[("a", report(0, 2, 2, 9)), ("b", report(1, 2, 2, 9))]);
    assert!(fixes(&s).is_empty());
    assert_eq!(s.reconcile_plan("ks").waiting, None);
}

#[test]
fn replicas_of_a_deleted_incarnation_are_dropped_and_a_new_one_is_not_disturbed() {
    let mut s = state(&[("a", report(0, 1, 1, 0))]);
    s.remove_keyspace("ks", 2);
    let new = Entry { incarnation: INC + 1, state: EntryState::Live, shards: 1, replicas: 1, committed_at_ms: 0, created_at_ms: 3 };
    s.catalog.keyspaces.insert("ks".into(), new);
    s.keyspaces.insert("ks".into(), crate::state::Keyspace::empty(INC + 1, 1, 1, 0));
    s.register("b", "127.0.0.1:9", &[ShardInfo { keyspace_incarnation: INC + 1, ..report(0, 1, 1, 0) }], 4);
    assert_eq!(s.keyspaces["ks"].placement, vec![vec!["b".to_owned()]], "the new incarnation's replica is routed");
    s.register("a", "127.0.0.1:8", &[report(0, 1, 1, 0)], 5);
    assert_eq!(s.keyspaces["ks"].placement, vec![vec!["b".to_owned()]], "the old one never is");
    assert_eq!(fixes(&s), vec![("a".into(), Action::Drop, 0)]);
}

#[test]
fn an_interrupted_create_is_rolled_back() {
    let mut s = State::default();
    s.begin_create("ks", INC, 2, 1, 1);
    s.register("a", "127.0.0.1:1", &[report(0, 2, 2, 0)], 2);
    assert!(!s.table("ks").exists, "a create that did not finish serves nobody");
    let plan = s.reconcile_plan("ks");
    assert!(plan.forget_create);
    assert_eq!(plan.fixes.iter().map(|f| (f.store.as_str(), f.action)).collect::<Vec<_>>(), vec![("a", Action::Drop)]);
}

#[test]
fn of_two_stores_reporting_one_slot_the_unfrozen_or_else_the_first_holds_it_and_the_other_is_retired() {
    // An interrupted replace a -> b: a was frozen (draining), b joined later.
    let old = ShardInfo { frozen: true, created_at_ms: 10, ..replica(report(0, 1, 1, 0), 0, 2) };
    let new = ShardInfo { created_at_ms: 20, ..replica(report(0, 1, 1, 0), 0, 2) };
    let peer = ShardInfo { created_at_ms: 10, ..replica(report(0, 1, 1, 0), 1, 2) };
    for order in [[0, 1, 2], [1, 0, 2], [2, 0, 1]] {
        let reports = [("a", old.clone()), ("b", new.clone()), ("c", peer.clone())];
        let s = state(&order.map(|i| reports[i].clone()));
        assert_eq!(s.keyspaces["ks"].placement[0], vec!["b".to_owned(), "c".to_owned()], "{order:?}");
        let routes = &s.table("ks").routes[0];
        assert_eq!(routes.len(), 3, "the stray is still routed, so its writes reach the others");
        assert!(routes[2].store_id == "a" && routes[2].catching_up);
        assert_eq!(fixes(&s), vec![("a".into(), Action::Retire, 0)]);
    }
    // Both unfrozen (a replaced dead store came back, its drop missed): the holder keeps the
    // slot, whichever is older; the operator's replace is not undone.
    let s = state(&[("b", new.clone()), ("a", ShardInfo { frozen: false, ..old.clone() }), ("c", peer.clone())]);
    assert_eq!(s.keyspaces["ks"].placement[0][0], "b");
    assert_eq!(fixes(&s), vec![("a".into(), Action::Retire, 0)]);
    // A stray is retired only once every slot holder is up to confirm the drain.
    let mut s = state(&[("a", old), ("b", new), ("c", peer)]);
    let gc = s.stores["c"].generation;
    s.store_down("c", gc, 9);
    let plan = s.reconcile_plan("ks");
    assert!(plan.fixes.is_empty() && plan.waiting.is_some(), "{plan:?}");
}

#[test]
fn a_frozen_replica_alone_in_its_slot_is_unfrozen() {
    let s = state(&[("a", ShardInfo { frozen: true, ..report(0, 1, 1, 0) })]);
    assert_eq!(fixes(&s), vec![("a".into(), Action::Restore, 0)]);
}

#[test]
fn a_report_that_arrived_during_an_operation_is_adopted_once_it_is_over() {
    let mut s = state(&[("a", report(0, 2, 2, 0))]);
    assert!(s.begin("ks", Vec::new()));
    s.register("b", "127.0.0.1:7", &[report(1, 2, 2, 0)], 2);
    assert_eq!(s.keyspaces["ks"].placement[1][0], "", "not adopted while busy");
    assert!(!s.readopt("ks"), "still busy");
    s.end("ks");
    assert!(s.readopt("ks"));
    assert_eq!(s.keyspaces["ks"].placement[1][0], "b");
}
