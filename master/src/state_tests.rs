use super::*;

fn info(ks: &str, shard: u32, shards: u32, replica: u32, replicas: u32) -> ShardInfo {
    ShardInfo { keyspace: ks.into(), shard, shards, replica, replicas }
}

fn with_stores(ids: &[&str]) -> State {
    let mut st = State::default();
    for id in ids {
        st.register(id, &format!("{id}:1"), 100, &[], 1);
    }
    st
}

fn create(st: &mut State, name: &str, shards: u32, replicas: u32, now: u64) -> Vec<Vec<String>> {
    let CreatePlan::New(p) = st.plan_create(name, shards, replicas).expect("plan") else { panic!("exists") };
    st.commit_create(name, shards, replicas, p.clone(), now);
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
    st.register("c", "c:1", 100, &[], 2);
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
    st.register("a", "a:1", 100, &[], 1);
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
    let (old, _) = st.register("a", "a:1", 1, &[info("ks", 0, 1, 0, 1)], 1);
    let (new, _) = st.register("a", "a:2", 1, &[info("ks", 0, 1, 0, 1)], 2);
    assert!(new > old);
    assert!(st.store_down("a", old, 3).is_empty());
    assert!(st.stores["a"].up);
    assert!(st.resync("a", old, "a:3", 1, &[], 3).is_none());
    assert_eq!(st.store_down("a", new, 4), vec!["ks".to_string()]);
    assert!(!st.stores["a"].up);
    assert!(!st.table("ks").routes[0][0].up);
}

#[test]
fn rebuild_from_reports() {
    // A fresh master learns a 2-shard, 2-replica keyspace from its stores, one at a time.
    let mut st = State::default();
    let (_, affected) = st.register("a", "a:1", 10, &[info("ks", 0, 2, 0, 2), info("ks", 1, 2, 1, 2)], 100);
    assert_eq!(affected, vec!["ks".to_string()]);
    let t = st.table("ks");
    assert!(t.exists);
    assert_eq!((t.shards, t.replicas, t.version), (2, 2, 100));
    assert_eq!(t.routes[0][0], ReplicaRoute { store_id: "a".into(), address: "a:1".into(), up: true });
    // Not reported yet: unknown store, no address, down.
    assert_eq!(t.routes[0][1], ReplicaRoute { store_id: String::new(), address: String::new(), up: false });

    let (_, affected) = st.register("b", "b:1", 10, &[info("ks", 0, 2, 1, 2), info("ks", 1, 2, 0, 2)], 100);
    assert_eq!(affected, vec!["ks".to_string()]);
    let t = st.table("ks");
    assert_eq!(t.version, 101);
    let ids: Vec<Vec<&str>> = t.routes.iter().map(|r| r.iter().map(|x| x.store_id.as_str()).collect()).collect();
    assert_eq!(ids, vec![vec!["a", "b"], vec!["b", "a"]]);
    assert!(t.routes.iter().flatten().all(|r| r.up));

    // Conflicting or nonsense reports are ignored.
    let (_, affected) = st.register("c", "c:1", 10, &[info("ks", 0, 4, 0, 2), info("ks", 5, 2, 0, 2), info(".bad", 0, 1, 0, 1)], 200);
    assert!(affected.is_empty());
    // A live holder keeps its slot; a down holder's slot is taken over.
    st.register("c", "c:1", 10, &[info("ks", 0, 2, 0, 2)], 200);
    assert_eq!(st.table("ks").routes[0][0].store_id, "a");
    let g = st.stores["a"].generation;
    st.store_down("a", g, 300);
    st.register("c", "c:1", 10, &[info("ks", 0, 2, 0, 2)], 300);
    assert_eq!(st.table("ks").routes[0][0].store_id, "c");

    let status = st.status();
    assert_eq!(status.stores.iter().map(|s| (s.id.as_str(), s.replicas)).collect::<Vec<_>>(), [("a", 1), ("b", 2), ("c", 1)]);
    assert_eq!(status.keyspaces.len(), 1);
    assert_eq!(status.keyspaces[0].routes[0][0].address, "c:1");
}

#[test]
fn delete_requires_every_holder_alive() {
    let mut st = with_stores(&["a", "b"]);
    assert_eq!(st.plan_delete("nope").unwrap_err().status, Status::UnknownKeyspace);
    create(&mut st, "ks", 2, 2, 1);
    assert_eq!(st.plan_delete("ks").expect("plan").len(), 4);
    let g = st.stores["b"].generation;
    st.store_down("b", g, 2);
    let err = st.plan_delete("ks").unwrap_err();
    assert_eq!(err.message, "store b holding replicas of ks is down; bring it back before deleting");
    // After a restart, a slot nobody reported blocks the delete too.
    let mut fresh = State::default();
    fresh.register("a", "a:1", 1, &[info("ks", 0, 1, 0, 2)], 1);
    assert_eq!(fresh.plan_delete("ks").unwrap_err().status, Status::BadRequest);
}

#[test]
fn busy_keyspace_ignores_reports() {
    let mut st = with_stores(&["a"]);
    assert!(st.begin("ks", Vec::new()));
    st.register("a", "a:1", 1, &[info("ks", 0, 1, 0, 1)], 5);
    assert!(!st.table("ks").exists);
    st.end("ks");
    st.register("a", "a:1", 1, &[info("ks", 0, 1, 0, 1)], 6);
    assert!(st.table("ks").exists);
}
