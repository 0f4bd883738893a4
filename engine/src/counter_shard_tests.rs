//! Counters and read-modify-writes through real RocksDB shards: the merge operator, the value
//! cache, change-log replication, snapshots, compaction and reopening.
use super::*;
use crate::counter::Delta;

fn meta() -> ShardMeta {
    ShardMeta { keyspace: "ks".into(), shard: 0, shards: 1, replica: 0, replicas: 2, ..Default::default() }
}

fn get(s: &Shard, key: &[u8]) -> Option<String> {
    s.get(key, |v| v.map(|v| String::from_utf8_lossy(v).into_owned())).unwrap()
}

fn incr(s: &Shard, key: &[u8], delta: i64) -> i64 {
    s.update(key, now_ns(), &UpdateOp::Increment(Delta::Int(delta)), &mut Vec::new()).unwrap().number
}

/// Applies everything `from` logged after `after` to `to`, as a follower would.
fn replicate(from: &Shard, to: &Shard, peer: &str, after: LogPosition) -> LogPosition {
    let mut entries = Vec::new();
    let read = from.read_changes(after, usize::MAX, |k, v| entries.push((k.to_vec(), v.to_vec()))).unwrap();
    to.apply_replicated(peer, entries.iter().map(|(k, v)| (k.as_slice(), v.as_slice())), read.position).unwrap();
    read.position
}

#[test]
fn increments_on_both_replicas_all_count_through_replication_snapshots_and_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let (ea, eb) =
        (Engine::new(&dir.path().join("a"), &EngineOptions::default()).unwrap(), Engine::new(&dir.path().join("b"), &EngineOptions::default()).unwrap());
    let (a, b) = (ea.create_shard(&meta()).unwrap(), eb.create_shard(&meta()).unwrap());
    let (mut from_a, mut from_b) =
        (LogPosition { incarnation: a.log_mark().incarnation, seq: 0 }, LogPosition { incarnation: b.log_mark().incarnation, seq: 0 });
    a.put(b"n", b"10", now_ns(), 0).unwrap();
    from_a = replicate(&a, &b, "a", from_a);
    let mut expected = 10;
    for round in 0..50i64 {
        // Both replicas take increments before seeing each other's; reads warm the value cache.
        incr(&a, b"n", round);
        incr(&b, b"n", -1);
        expected += round - 1;
        assert!(get(&a, b"n").is_some() && get(&b, b"n").is_some());
        if round % 7 == 0 {
            from_a = replicate(&a, &b, "a", from_a);
            from_b = replicate(&b, &a, "b", from_b);
            assert_eq!((get(&a, b"n"), get(&b, b"n")), (Some(expected.to_string()), Some(expected.to_string())), "round {round}");
        }
    }
    from_a = replicate(&a, &b, "a", from_a);
    replicate(&b, &a, "b", from_b);
    // The same entries again (a follower resuming from an older saved position) change nothing.
    replicate(&a, &b, "a", LogPosition { incarnation: from_a.incarnation, seq: 0 });
    assert_eq!(get(&a, b"n"), Some(expected.to_string()));
    assert_eq!(get(&b, b"n"), Some(expected.to_string()));

    // A third replica bootstrapped from a snapshot of b, then tailing a from the start: a's
    // increments arrive twice (in b's state and in a's log) and count once.
    let ec = Engine::new(&dir.path().join("c"), &EngineOptions::default()).unwrap();
    let c = ec.create_shard(&meta()).unwrap();
    let snap = b.export_snapshot(&dir.path().join("snap"), 1 << 20, &MoveRate::new(0)).unwrap();
    c.ingest_snapshot("b", &snap.files, snap.position).unwrap();
    replicate(&a, &c, "a", LogPosition { incarnation: from_a.incarnation, seq: 0 });
    assert_eq!(get(&c, b"n"), Some(expected.to_string()));

    // Compaction folds the operands; a reopened replica shows the same total and keeps counting.
    b.compact().unwrap();
    assert_eq!(get(&b, b"n"), Some(expected.to_string()));
    drop((b, eb));
    let eb = Engine::new(&dir.path().join("b"), &EngineOptions::default()).unwrap();
    let b = eb.open_all(false).unwrap().pop().unwrap();
    assert_eq!(incr(&b, b"n", 5), expected + 5);
    // A scan shows the total too.
    let mut scanned = Vec::new();
    b.scan(b"", b"", 10, usize::MAX, |k, v| scanned.push((k.to_vec(), v.to_vec()))).unwrap();
    assert_eq!(scanned, vec![(b"n".to_vec(), (expected + 5).to_string().into_bytes())]);
}

#[test]
fn a_set_after_increments_replaces_the_counter_and_the_cache_follows() {
    let dir = tempfile::tempdir().unwrap();
    let e = Engine::new(dir.path(), &EngineOptions::default()).unwrap();
    let s = e.create_shard(&meta()).unwrap();
    assert_eq!(incr(&s, b"k", 3), 3);
    assert_eq!(get(&s, b"k").as_deref(), Some("3"), "cached now");
    assert_eq!(incr(&s, b"k", 4), 7);
    assert_eq!(get(&s, b"k").as_deref(), Some("7"), "the increment dropped the cached copy");
    s.put(b"k", b"plain", now_ns(), 0).unwrap();
    assert_eq!(get(&s, b"k").as_deref(), Some("plain"));
    let refused = s.update(b"k", now_ns(), &UpdateOp::Increment(Delta::Int(1)), &mut Vec::new());
    assert!(matches!(refused, Err(EngineError::Refused(counter::refusal::NOT_INTEGER))), "{refused:?}");
    let mut old = Vec::new();
    let op = UpdateOp::Set { value: b"5", condition: SetCondition::IfPresent, expiry: ExpiryChange::Clear, return_old: true };
    let done = s.update(b"k", now_ns(), &op, &mut old).unwrap();
    assert!(done.applied && done.returned && old == b"plain");
    assert_eq!(s.update(b"k", now_ns(), &UpdateOp::Increment(Delta::Float(0.25)), &mut Vec::new()).unwrap().float_number, 5.25);
    assert_eq!(get(&s, b"k").as_deref(), Some("5.25"));
    let expired = s
        .update(b"k", now_ns(), &UpdateOp::Expire { expiry: ExpiryChange::At(now_ns() + 60_000_000_000), condition: ExpireCondition::Always }, &mut Vec::new())
        .unwrap();
    assert!(expired.applied);
    let expiry = s.get_with_expiry(b"k", |v| v.map(|(_, at)| at)).unwrap();
    assert!(expiry.is_some_and(|at| at > now_ns()), "{expiry:?}");
}
