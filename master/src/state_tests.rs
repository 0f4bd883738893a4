use super::*;
use crate::LagStatus;

fn info(ks: &str, shard: u32, shards: u32, replica: u32, replicas: u32) -> ShardInfo {
    ShardInfo { keyspace: ks.into(), shard, shards, replica, replicas, committed: shards, committed_at_ms: 1, ..Default::default() }
}

fn with_stores(ids: &[&str]) -> State {
    let mut st = State::default();
    for id in ids {
        st.register(id, &format!("{id}:1"), &[], 1);
    }
    st
}

fn create(st: &mut State, name: &str, shards: u32, replicas: u32, now: u64) -> Vec<Vec<String>> {
    let CreatePlan::New(p) = st.plan_create(name, shards, replicas).expect("plan") else { panic!("exists") };
    st.commit_create(name, 1, shards, replicas, p.clone(), now);
    p
}

#[test]
fn names() {
    assert!(valid_name("a"));
    assert!(valid_name("Users_v2.prod-1"));
    assert!(valid_name(&"x".repeat(64)));
    assert!(!valid_name(""));
    assert!(!valid_name(&"x".repeat(65)));
    assert!(!valid_name(".hidden"));
    assert!(!valid_name("a/b"));
    assert!(!valid_name("a b"));
    assert!(!valid_name("é"));
}

#[test]
fn placement_is_distinct_and_least_loaded() {
    let mut st = with_stores(&["a", "b", "c"]);
    let p = create(&mut st, "ks", 6, 2, 1);
    assert_eq!(p.len(), 6);
    for row in &p {
        assert_eq!(row.len(), 2);
        assert_ne!(row[0], row[1], "replicas of a shard must be on distinct stores");
    }
    // 12 replicas over 3 stores: exactly 4 each, and primaries spread too.
    let load = st.load();
    assert_eq!(["a", "b", "c"].map(|s| load[s]), [4, 4, 4]);
    let mut primaries: HashMap<&str, usize> = HashMap::new();
    for row in &p {
        *primaries.entry(row[0].as_str()).or_default() += 1;
    }
    assert_eq!(["a", "b", "c"].map(|s| primaries[s]), [2, 2, 2]);
    // Ties by store id: the first shard goes to a, then b.
    assert_eq!(p[0], vec!["a".to_string(), "b".to_string()]);
}

#[test]
fn placement_prefers_the_least_loaded_store() {
    let mut st = with_stores(&["a", "b"]);
    create(&mut st, "one", 3, 1, 1); // a, b, a
    st.register("c", "c:1", &[], 2);
    let p = create(&mut st, "two", 2, 1, 2);
    assert_eq!(p, vec![vec!["c".to_string()], vec!["b".to_string()]]);
}

#[test]
fn placement_skips_down_stores_and_refuses_too_many_replicas() {
    let mut st = with_stores(&["a", "b", "c"]);
    let gen_c = st.stores["c"].generation;
    st.store_down("c", gen_c, 5);
    let err = st.plan_create("ks", 4, 3).unwrap_err();
    assert_eq!(err.status, Status::BadRequest);
    assert_eq!(err.message, "keyspace needs 3 distinct stores but only 2 are alive");
    let p = create(&mut st, "ks", 4, 2, 6);
    assert!(p.iter().flatten().all(|s| s != "c"));
}

#[test]
fn create_validation_and_idempotence() {
    let mut st = with_stores(&["a", "b"]);
    assert!(st.plan_create(".x", 1, 1).is_err());
    assert!(st.plan_create("x", 0, 1).is_err());
    assert!(st.plan_create("x", MAX_SHARDS + 1, 1).is_err());
    assert!(st.plan_create("x", MAX_SHARDS, 1).is_ok());
    assert!(st.plan_create("x", 1, 0).is_err());
    create(&mut st, "x", 4, 2, 1);
    assert_eq!(st.plan_create("x", 4, 2), Ok(CreatePlan::AlreadyExists));
    assert_eq!(st.plan_create("x", 8, 2).unwrap_err().status, Status::BadRequest);
    // A create in flight blocks a second one of the same name.
    assert!(st.begin("y", vec![vec!["a".into()]]));
    assert!(st.plan_create("y", 1, 1).is_err());
    assert!(!st.begin("y", Vec::new()));
    st.end("y");
    assert!(st.plan_create("y", 1, 1).is_ok());
}

#[test]
fn version_is_monotonic() {
    assert_eq!(next_version(0, 1000), 1000);
    assert_eq!(next_version(1000, 1000), 1001);
    assert_eq!(next_version(5000, 1000), 5001, "a clock going back never lowers the version");
    assert_eq!(next_version(u64::MAX, 0), u64::MAX);

    let mut st = with_stores(&["a"]);
    create(&mut st, "ks", 2, 1, 10_000);
    let v1 = st.version("ks");
    assert_eq!(v1, 10_000);
    let g = st.stores["a"].generation;
    assert_eq!(st.store_down("a", g, 9_000), vec!["ks".to_string()]);
    let v2 = st.version("ks");
    assert!(v2 > v1);
    // Delete and recreate: the version keeps growing even with a clock that went back.
    st.register("a", "a:1", &[], 1);
    let v3 = st.version("ks");
    assert!(v3 > v2);
    st.remove_keyspace("ks", 1);
    let v4 = st.version("ks");
    assert!(v4 > v3);
    let t = st.table("ks");
    assert!(!t.exists);
    assert_eq!(t.version, v4);
    create(&mut st, "ks", 2, 1, 2);
    assert!(st.version("ks") > v4);
}

#[test]
fn stale_connection_never_marks_a_newer_one_down() {
    let mut st = State::default();
    let (old, _) = st.register("a", "a:1", &[info("ks", 0, 1, 0, 1)], 1);
    let (new, _) = st.register("a", "a:2", &[info("ks", 0, 1, 0, 1)], 2);
    assert!(new > old);
    assert!(st.store_down("a", old, 3).is_empty());
    assert!(st.stores["a"].up);
    assert!(st.resync("a", old, "a:3", &[], 3).is_none());
    assert_eq!(st.store_down("a", new, 4), vec!["ks".to_string()]);
    assert!(!st.stores["a"].up);
    assert!(!st.table("ks").routes[0][0].up);
}

#[test]
fn rebuild_from_reports() {
    // A fresh master learns a 2-shard, 2-replica keyspace from its stores, one at a time.
    let mut st = State::default();
    let (_, affected) = st.register("a", "a:1", &[info("ks", 0, 2, 0, 2), info("ks", 1, 2, 1, 2)], 100);
    assert_eq!(affected, vec!["ks".to_string()]);
    let t = st.table("ks");
    assert!(t.exists);
    assert_eq!((t.shards, t.replicas, t.version), (2, 2, 100));
    assert_eq!(t.routes[0][0], ReplicaRoute { store_id: "a".into(), address: "a:1".into(), up: true, catching_up: false });
    // Not reported yet: unknown store, no address, down.
    assert_eq!(t.routes[0][1], ReplicaRoute { store_id: String::new(), address: String::new(), up: false, catching_up: false });

    let (_, affected) = st.register("b", "b:1", &[info("ks", 0, 2, 1, 2), info("ks", 1, 2, 0, 2)], 100);
    assert_eq!(affected, vec!["ks".to_string()]);
    let t = st.table("ks");
    assert_eq!(t.version, 101);
    let ids: Vec<Vec<&str>> = t.routes.iter().map(|r| r.iter().map(|x| x.store_id.as_str()).collect()).collect();
    assert_eq!(ids, vec![vec!["a", "b"], vec!["b", "a"]]);
    assert!(t.routes.iter().flatten().all(|r| r.up));

    // Conflicting or nonsense reports never change the layout or the placement (a report of
    // the same commit is listed as a stray of its shard, which other replicas follow).
    st.register("c", "c:1", &[info("ks", 0, 4, 0, 2), info("ks", 5, 2, 0, 2), info(".bad", 0, 1, 0, 1)], 200);
    let t = st.table("ks");
    assert_eq!(t.shards, 2);
    let placed: Vec<Vec<&str>> = t.routes.iter().map(|r| r.iter().take(2).map(|x| x.store_id.as_str()).collect()).collect();
    assert_eq!(placed, vec![vec!["a", "b"], vec!["b", "a"]]);
    assert!(!st.keyspaces.contains_key(".bad"));
    // A live holder keeps its slot; a down holder's slot is taken over.
    st.register("c", "c:1", &[info("ks", 0, 2, 0, 2)], 200);
    assert_eq!(st.table("ks").routes[0][0].store_id, "a");
    let g = st.stores["a"].generation;
    st.store_down("a", g, 300);
    st.register("c", "c:1", &[info("ks", 0, 2, 0, 2)], 300);
    assert_eq!(st.table("ks").routes[0][0].store_id, "c");

    let status = st.status(0);
    assert_eq!(status.stores.iter().map(|s| (s.id.as_str(), s.replicas)).collect::<Vec<_>>(), [("a", 1), ("b", 2), ("c", 1)]);
    assert_eq!(status.keyspaces.len(), 1);
    assert_eq!(status.keyspaces[0].routes[0][0].address, "c:1");
}

#[test]
fn delete_drops_what_is_live_and_remembers_the_incarnation_for_the_rest() {
    let mut st = with_stores(&["a", "b"]);
    assert_eq!(st.plan_delete("nope").unwrap_err().status, Status::UnknownKeyspace);
    create(&mut st, "ks", 2, 2, 1);
    assert_eq!(st.plan_delete("ks").expect("plan").len(), 4);
    let g = st.stores["b"].generation;
    st.store_down("b", g, 2);
    assert_eq!(st.plan_delete("ks").expect("plan").iter().map(|(s, _)| s.as_str()).collect::<Vec<_>>(), vec!["a", "a"], "only the live store's replicas now");
    st.remove_keyspace("ks", 3);
    assert_eq!(st.catalog.classify("ks", 1), crate::catalog::Known::Deleted);
    // b comes back with its replicas: they are not adopted, and reconcile drops them.
    st.register("b", "b:1", &[info("ks", 0, 2, 1, 2), info("ks", 1, 2, 1, 2)].map(|i| ShardInfo { keyspace_incarnation: 1, ..i }), 4);
    assert!(!st.table("ks").exists, "a deleted keyspace never comes back");
    let plan = st.reconcile_plan("ks");
    assert_eq!(plan.fixes.iter().filter(|f| f.store == "b" && f.action == crate::reconcile::Action::Drop).count(), 2);
    // A keyspace re-created under the same name never adopts them either.
    let CreatePlan::New(p) = st.plan_create("ks", 2, 2).expect("plan") else { panic!("exists") };
    st.commit_create("ks", 2, 2, 2, p, 5);
    assert_eq!(st.catalog.classify("ks", 1), crate::catalog::Known::Deleted);
    assert!(st.strays("ks").is_empty(), "an old incarnation's replicas are not strays of the new one");
}

#[test]
fn busy_keyspace_ignores_reports() {
    let mut st = with_stores(&["a"]);
    assert!(st.begin("ks", Vec::new()));
    st.register("a", "a:1", &[info("ks", 0, 1, 0, 1)], 5);
    assert!(!st.table("ks").exists);
    st.end("ks");
    st.register("a", "a:1", &[info("ks", 0, 1, 0, 1)], 6);
    assert!(st.table("ks").exists);
}

fn lag(ks: &str, shard: u32, peer: &str, caught_up: bool) -> ReplicaLag {
    ReplicaLag { keyspace: ks.into(), shard, peer: peer.into(), entries: 7, lag_ms: 40, caught_up, ..Default::default() }
}

/// `ks` with one shard whose replicas are on b and c; store a holds nothing of it. b and c
/// have each reported being caught up with the other.
fn b_and_c_with_peer_a() -> State {
    let mut st = State::default();
    st.register("a", "a:1", &[], 1);
    st.register("b", "b:1", &[info("ks", 0, 1, 0, 2)], 1);
    st.register("c", "c:1", &[info("ks", 0, 1, 1, 2)], 1);
    for (id, peer) in [("b", "c"), ("c", "b")] {
        let g = st.stores[id].generation;
        st.heartbeat(id, g, vec![lag("ks", 0, peer, true)], 1);
    }
    st
}

#[test]
fn a_store_counts_as_catching_up_until_its_first_heartbeat() {
    let mut st = State::default();
    st.register("b", "b:1", &[info("ks", 0, 1, 0, 2)], 1);
    assert!(!st.table("ks").routes[0][0].catching_up, "no live peer to catch up with");
    let (gen_c, affected) = st.register("c", "c:1", &[info("ks", 0, 1, 1, 2)], 2);
    assert_eq!(affected, vec!["ks".to_string()]);
    assert!(st.table("ks").routes[0].iter().all(|r| r.catching_up), "neither has said how far behind it is");
    assert_eq!(st.heartbeat("c", gen_c, vec![lag("ks", 0, "b", true)], 3), Some(vec!["ks".to_string()]));
    let routes = &st.table("ks").routes[0];
    assert!(routes[0].catching_up && !routes[1].catching_up, "c has; b has not");
}

/// Found in CI: a store's first heartbeat went out before its replication had the routing
/// table, so it reported no lag at all; the master took that for caught up and routed reads to
/// a replica that had not copied its peer yet.
#[test]
fn a_heartbeat_that_does_not_mention_a_live_peer_is_still_catching_up() {
    let mut st = State::default();
    st.register("b", "b:1", &[info("ks", 0, 1, 0, 2)], 1);
    let (gen_c, _) = st.register("c", "c:1", &[info("ks", 0, 1, 1, 2)], 2);
    assert_eq!(st.heartbeat("c", gen_c, Vec::new(), 3), Some(Vec::new()), "no follower of b yet: still catching up");
    assert!(st.table("ks").routes[0][1].catching_up);
    assert_eq!(st.heartbeat("c", gen_c, vec![lag("ks", 0, "elsewhere", true)], 4), Some(Vec::new()), "a lag towards another store says nothing of b");
    assert!(st.table("ks").routes[0][1].catching_up);
    assert_eq!(st.heartbeat("c", gen_c, vec![lag("ks", 0, "b", true)], 5), Some(vec!["ks".to_string()]));
    assert!(!st.table("ks").routes[0][1].catching_up);
    // b goes down: c has no live peer to catch up with, whatever it reports.
    let gen_b = st.stores["b"].generation;
    st.store_down("b", gen_b, 6);
    assert_eq!(st.heartbeat("c", gen_c, Vec::new(), 7), Some(Vec::new()));
    assert!(!st.table("ks").routes[0][1].catching_up);
}

#[test]
fn catching_up_needs_a_lag_towards_a_live_peer() {
    let mut st = b_and_c_with_peer_a();
    let gen_c = st.stores["c"].generation;
    let v0 = st.version("ks");
    // No heartbeat with lags yet: not catching up.
    assert!(st.table("ks").routes[0].iter().all(|r| r.up && !r.catching_up));

    // c lags behind the live peer a.
    assert_eq!(st.heartbeat("c", gen_c, vec![lag("ks", 0, "a", false), lag("ks", 0, "b", true)], 10), Some(vec!["ks".to_string()]));
    let t = st.table("ks");
    assert!(t.version > v0);
    assert!(!t.routes[0][0].catching_up && t.routes[0][1].catching_up);
    let status = st.status(0);
    let route = &status.keyspaces[0].routes[0][1];
    assert!(route.catching_up);
    assert_eq!(route.lags.len(), 2);
    assert_eq!(
        route.lags[0],
        LagStatus { peer: "a".into(), entries: 7, lag_ms: 40, caught_up: false, incarnation: format!("{:016x}", 0), ..Default::default() }
    );
    assert!(matches!(&status.keyspaces[0].routes[0][0].lags[..], [l] if l.peer == "c" && l.caught_up), "b's own report");

    // The peer goes down: c is no longer catching up, though a holds nothing of ks.
    let gen_a = st.stores["a"].generation;
    let v1 = st.version("ks");
    assert_eq!(st.store_down("a", gen_a, 11), vec!["ks".to_string()]);
    assert!(st.version("ks") > v1);
    assert!(!st.table("ks").routes[0][1].catching_up);
    // It comes back: c, still reporting the lag, is catching up again.
    let (_, affected) = st.register("a", "a:1", &[], 12);
    assert_eq!(affected, vec!["ks".to_string()]);
    assert!(st.table("ks").routes[0][1].catching_up);

    // Caught up: the flag clears and the version moves.
    let v2 = st.version("ks");
    assert_eq!(st.heartbeat("c", gen_c, vec![lag("ks", 0, "a", true), lag("ks", 0, "b", true)], 13), Some(vec!["ks".to_string()]));
    assert!(st.version("ks") > v2);
    assert!(!st.table("ks").routes[0][1].catching_up);
}

#[test]
fn lags_that_change_nothing_do_not_bump_the_version() {
    let mut st = b_and_c_with_peer_a();
    let gen_c = st.stores["c"].generation;
    let v0 = st.version("ks");
    // Caught up with b, and besides: caught up, towards an unknown peer, or for a shard c does
    // not hold: nothing changes.
    for extra in [vec![lag("ks", 0, "a", true)], vec![lag("ks", 0, "nobody", false)], vec![lag("ks", 3, "a", false), lag("other", 0, "a", false)], Vec::new()] {
        let lags = [vec![lag("ks", 0, "b", true)], extra].concat();
        assert_eq!(st.heartbeat("c", gen_c, lags, 100), Some(Vec::new()));
    }
    assert_eq!(st.version("ks"), v0);
    // Catching up, then the same again with other numbers: one bump only.
    assert_eq!(st.heartbeat("c", gen_c, vec![lag("ks", 0, "b", false)], 101).map(|a| a.len()), Some(1));
    let v1 = st.version("ks");
    let mut later = lag("ks", 0, "b", false);
    (later.entries, later.lag_ms) = (3, 290);
    assert_eq!(st.heartbeat("c", gen_c, vec![later], 102), Some(Vec::new()));
    assert_eq!(st.version("ks"), v1);
    assert_eq!(st.status(0).keyspaces[0].routes[0][1].lags[0].lag_ms, 290);
    // A stale connection's heartbeat is refused.
    assert_eq!(st.heartbeat("c", gen_c + 100, Vec::new(), 103), None);
}

#[test]
fn lags_are_forgotten_when_the_store_goes_down_or_re_registers() {
    let mut st = b_and_c_with_peer_a();
    let gen_c = st.stores["c"].generation;
    st.heartbeat("c", gen_c, vec![lag("ks", 0, "a", false)], 10);
    assert!(st.table("ks").routes[0][1].catching_up);
    // Re-registering (a new connection) forgets the lags: catching up until it reports again.
    let (gen_c, _) = st.register("c", "c:1", &[info("ks", 0, 1, 1, 2)], 11);
    assert!(st.stores["c"].lags.is_empty());
    assert!(st.table("ks").routes[0][1].catching_up);
    assert_eq!(st.heartbeat("c", gen_c, vec![lag("ks", 0, "b", true)], 11), Some(vec!["ks".to_string()]));
    assert!(!st.table("ks").routes[0][1].catching_up);
    st.heartbeat("c", gen_c, vec![lag("ks", 0, "a", false)], 12);
    st.store_down("c", gen_c, 13);
    let route = &st.table("ks").routes[0][1];
    assert!(!route.up && !route.catching_up);
    assert!(st.stores["c"].lags.is_empty());
    assert!(st.status(0).keyspaces[0].routes[0][1].lags.is_empty());
}

#[test]
fn a_stray_replica_the_store_drops_leaves_the_table_at_once() {
    // Found by the soak (seed 5067): a replaced store came back with its old replica (a stray,
    // followed by the others), then dropped it; its new report changed no placement, so the
    // table was never pushed and the other replicas followed the gone copy forever.
    let mut st = b_and_c_with_peer_a();
    let gen_a = st.stores["a"].generation;
    let affected = st.resync("a", gen_a, "a:1", &[info("ks", 0, 1, 0, 2)], 2).expect("current");
    assert_eq!(affected, vec!["ks".to_string()]);
    assert!(st.table("ks").routes[0].iter().any(|r| r.store_id == "a"), "the stray is followed");
    let affected = st.resync("a", gen_a, "a:1", &[], 3).expect("current");
    assert_eq!(affected, vec!["ks".to_string()], "dropping the stray changes the table");
    assert!(st.table("ks").routes[0].iter().all(|r| r.store_id != "a"));
    assert!(st.resync("a", gen_a, "a:1", &[], 4).expect("current").is_empty(), "an unchanged report changes nothing");
}

#[test]
fn a_report_with_absurd_counts_is_ignored_without_allocating() {
    // Found by the fuzz test: a report of u32::MAX replicas made the master size the keyspace
    // it rebuilds from it (~100 GB) and abort.
    let mut st = State::default();
    let absurd = ShardInfo { replicas: u32::MAX, replica: 7, ..info("ks", 0, 1, 0, 1) };
    let (_, affected) = st.register("a", "a:1", &[absurd, ShardInfo { replicas: MAX_REPLICAS + 1, ..info("ks", 0, 1, 0, 1) }], 1);
    assert!(affected.is_empty() && st.keyspaces.is_empty());
    assert!(st.plan_create("ks", 1, MAX_REPLICAS + 1).is_err(), "a create is bounded the same way");
    // And one whose shard number overflowed the arithmetic of the status's reconcile check.
    let (_, _) = st.register("b", "b:1", &[info("ks", 0, 1, 0, 2), ShardInfo { shard: u32::MAX, ..info("ks", 0, 1, 1, 2) }], 2);
    let _ = st.status(3);
    assert!(st.stores["b"].reports.iter().all(|r| r.shard != u32::MAX), "an impossible report is not kept");
}
