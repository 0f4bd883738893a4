//! The value cache seen through a shard: whatever mix of local writes, replicated writes,
//! imports and compactions, a shard with a cache answers every get exactly as one without.
use super::*;
use crate::header::{encode_value, Header};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    Put {
        key: u8,
        t: u64,
        value: u8,
    },
    Delete {
        key: u8,
        t: u64,
    },
    /// A write replicated from a peer (a stored value applied through the merge).
    Replicated {
        key: u8,
        t: u64,
        value: u8,
        tombstone: bool,
    },
    /// A bulk import of one key (an SST ingest, which the cache cannot merge in).
    Import {
        key: u8,
        t: u64,
        value: u8,
    },
    Compact,
    Get {
        key: u8,
    },
    /// An increment taken by the shard (a counter, or refused on a value that is not a number).
    Increment {
        key: u8,
        t: u64,
        delta: i8,
    },
    /// A peer's counter operand for the key, applied through the merge.
    PeerIncrement {
        key: u8,
        t: u64,
        delta: i8,
        origin: u8,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let key = 0u8..12;
    let t = 1u64..40;
    prop_oneof![
        3 => (key.clone(), t.clone(), any::<u8>()).prop_map(|(key, t, value)| Op::Put { key, t, value }),
        1 => (key.clone(), t.clone()).prop_map(|(key, t)| Op::Delete { key, t }),
        2 => (key.clone(), t.clone(), any::<u8>(), any::<bool>()).prop_map(|(key, t, value, tombstone)| Op::Replicated { key, t, value, tombstone }),
        1 => (key.clone(), t.clone(), any::<u8>()).prop_map(|(key, t, value)| Op::Import { key, t, value }),
        1 => Just(Op::Compact),
        6 => key.clone().prop_map(|key| Op::Get { key }),
        2 => (key.clone(), t.clone(), any::<i8>()).prop_map(|(key, t, delta)| Op::Increment { key, t, delta }),
        1 => (key, t, any::<i8>(), 0u8..3).prop_map(|(key, t, delta, origin)| Op::PeerIncrement { key, t, delta, origin }),
    ]
}

fn key(k: u8) -> Vec<u8> {
    format!("key-{k}").into_bytes()
}

/// A value whose length varies with its byte, so cached entries grow and shrink.
fn value(v: u8) -> Vec<u8> {
    vec![v; usize::from(v % 24)]
}

fn read(s: &Shard, key: &[u8]) -> Option<Vec<u8>> {
    s.get(key, |v| v.map(<[u8]>::to_vec)).unwrap()
}

fn apply(s: &Shard, op: &Op, scratch: &Path, n: usize) {
    match *op {
        Op::Put { key: k, t, value: v } => s.put(&key(k), &value(v), t, 0).unwrap(),
        Op::Delete { key: k, t } => s.delete(&key(k), t).unwrap(),
        Op::Replicated { key: k, t, value: v, tombstone } => {
            let (mut stored, user) = (Vec::new(), if tombstone { Vec::new() } else { value(v) });
            encode_value(&mut stored, Header { event_time_ns: t, expires_at_ns: 0, tombstone, counter: false }, &user);
            s.apply_replicated("peer", [(key(k).as_slice(), stored.as_slice())], crate::LogPosition { incarnation: 1, seq: n as u64 }).unwrap();
        }
        Op::Import { key: k, t, value: v } => {
            let file = scratch.join(format!("import-{n}.sst"));
            ImportWriter::default().write(&file, [(key(k).as_slice(), value(v).as_slice())], t).unwrap();
            s.ingest_import(&[file], 1).unwrap();
        }
        Op::Compact => s.compact().unwrap(),
        Op::Get { .. } => {}
        Op::Increment { key: k, t, delta } => {
            let _ = s.update(&key(k), t, &crate::UpdateOp::Increment(crate::counter::Delta::Int(delta.into())), &mut Vec::new());
        }
        Op::PeerIncrement { key: k, t, delta, origin } => {
            let mut operand = Vec::new();
            crate::counter::increment(None, u64::from(origin), crate::counter::Delta::Int(delta.into()), t, now_ns(), &mut operand).unwrap();
            s.apply_replicated("peer", [(key(k).as_slice(), operand.as_slice())], crate::LogPosition { incarnation: 1, seq: n as u64 }).unwrap();
        }
    }
}

/// Applies `ops` to a shard without a cache, one with a cache and one whose cache evicts all the
/// time, reading every key from all three after every step.
fn check(ops: &[Op]) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    let meta = ShardMeta { keyspace: "c".into(), shard: 0, shards: 1, replica: 0, replicas: 1, ..Default::default() };
    let open = |name: &str, cache_bytes: usize| {
        // The event times are tiny (nanoseconds after the epoch), so with the default grace a
        // tombstone is collectable as soon as it is written, and whether a later, older put
        // resurrects the key would depend on when each engine's background compaction ran.
        let tombstone_grace = std::time::Duration::MAX;
        let opts = EngineOptions { value_cache_bytes: cache_bytes, tombstone_grace, ..EngineOptions::default() };
        Engine::new(&dir.path().join(name), &opts).unwrap().create_shard(&meta).unwrap()
    };
    let plain = open("plain", 0);
    let cached = open("cached", 1 << 20);
    // Small enough that entries are evicted all the time.
    let tiny = open("tiny", 64 * 1600);
    for (n, op) in ops.iter().enumerate() {
        for (name, shard) in [("plain", &plain), ("cached", &cached), ("tiny", &tiny)] {
            let scratch = dir.path().join(format!("{name}-files"));
            std::fs::create_dir_all(&scratch).unwrap();
            apply(shard, op, &scratch, n);
        }
        if let Op::Get { key: k } = *op {
            prop_assert_eq!(read(&cached, &key(k)), read(&plain, &key(k)));
        }
        // Read every key after every step: a stale entry anywhere would show.
        for k in 0..12 {
            let expected = read(&plain, &key(k));
            prop_assert_eq!(&read(&cached, &key(k)), &expected, "cached shard, key {} after {:?}", k, op);
            prop_assert_eq!(&read(&tiny, &key(k)), &expected, "tiny cache, key {} after {:?}", k, op);
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn a_cached_shard_reads_like_an_uncached_one(ops in proptest::collection::vec(op(), 1..60)) {
        check(&ops)?;
    }
}

/// The case CI once failed on: a put older than a tombstone, after imports made RocksDB flush
/// and compact. With a grace shorter than the event times' age the uncached shard had already
/// collected the tombstone (so the old put came back) and the others had not.
#[test]
fn an_old_put_after_a_tombstone_reads_the_same_everywhere() {
    use Op::*;
    let ops = [
        Delete { key: 0, t: 12 },
        Replicated { key: 0, t: 1, value: 112, tombstone: true },
        Put { key: 0, t: 2, value: 80 },
        Delete { key: 6, t: 8 },
        Put { key: 0, t: 12, value: 203 },
        Import { key: 6, t: 35, value: 9 },
        Replicated { key: 6, t: 32, value: 96, tombstone: false },
        Import { key: 6, t: 23, value: 209 },
        Put { key: 0, t: 2, value: 243 },
    ];
    for _ in 0..5 {
        check(&ops).unwrap();
    }
}

#[test]
fn reads_are_served_from_the_cache_and_expire_in_real_time() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::new(dir.path(), &EngineOptions::default()).unwrap();
    let s = engine.create_shard(&ShardMeta { keyspace: "c".into(), shard: 0, shards: 1, replica: 0, replicas: 1, ..Default::default() }).unwrap();
    // Long enough to outlast the reads below on a stalled machine.
    let (t, ttl) = (now_ns(), 2_000_000_000);
    s.put(b"k", b"v", t, ttl).unwrap();
    assert_eq!(read(&s, b"k").as_deref(), Some(&b"v"[..]));
    let after_fill = engine.cache_stats().unwrap();
    for _ in 0..10 {
        assert_eq!(read(&s, b"k").as_deref(), Some(&b"v"[..]));
    }
    let stats = engine.cache_stats().unwrap();
    assert_eq!(stats.hits - after_fill.hits, 10, "{stats:?}");
    assert_eq!(stats.misses, after_fill.misses);
    std::thread::sleep(std::time::Duration::from_nanos((t + ttl + 100_000_000).saturating_sub(now_ns())));
    assert_eq!(read(&s, b"k"), None, "a cached value expires with its TTL");
}

#[test]
fn concurrent_fills_never_hide_a_committed_write() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::new(dir.path(), &EngineOptions::default()).unwrap();
    let s = engine.create_shard(&ShardMeta { keyspace: "c".into(), shard: 0, shards: 1, replica: 0, replicas: 1, ..Default::default() }).unwrap();
    const KEYS: usize = 3000;
    let name = |i: usize| format!("race-{i}").into_bytes();
    for i in 0..KEYS {
        s.put(&name(i), b"old", 1, 0).unwrap();
    }
    // Readers chase the writer: each reads (and so tries to cache) the key being overwritten
    // at that moment, which is when a fill could race the write.
    let current = std::sync::atomic::AtomicUsize::new(0);
    let done = std::sync::atomic::AtomicBool::new(false);
    let started = std::sync::Barrier::new(3);
    std::thread::scope(|scope| {
        for _ in 0..2 {
            scope.spawn(|| {
                started.wait();
                while !done.load(std::sync::atomic::Ordering::Acquire) {
                    let _ = read(&s, &name(current.load(std::sync::atomic::Ordering::Acquire)));
                }
            });
        }
        started.wait();
        for i in 0..KEYS {
            current.store(i, std::sync::atomic::Ordering::Release);
            s.put(&name(i), b"new", 2, 0).unwrap();
        }
        done.store(true, std::sync::atomic::Ordering::Release);
    });
    let stale = (0..KEYS).filter(|&i| read(&s, &name(i)).as_deref() != Some(&b"new"[..])).count();
    assert_eq!(stale, 0, "keys whose committed write is hidden by a stale cached value");
    // The check above filled the cache; reading again must hit it.
    let before = engine.cache_stats().unwrap().hits;
    assert_eq!(read(&s, &name(0)).as_deref(), Some(&b"new"[..]));
    assert_eq!(engine.cache_stats().unwrap().hits, before + 1);
}
