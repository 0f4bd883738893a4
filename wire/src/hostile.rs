//! Structure-aware fuzzing input (feature `hostile`): valid frames of every message type with
//! hostile field values, and mutations of them. Random bytes almost never pass the FlatBuffers
//! verifier, so this is how the request paths behind it are reached.
use crate::control::{DiskReport, ReplicaLag, ReplicaRoute, RoutingTable, ShardInfo};
use crate::fb::{Condition, ExpireCondition, ExpiryMode, OpKind, Role, ShardCommandKind, Status, UpdateKind};
use crate::{BatchOpRef, FrameEncoder, ShardSelector, UpdateRequest};
use proptest::collection::vec;
use proptest::prelude::*;

/// Keyspace names: real ones, empty, invalid, path-like, long, control characters, any text.
pub fn keyspace() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => Just("ks".to_owned()),
        2 => Just("four".to_owned()),
        1 => Just(String::new()),
        1 => Just(".bad".to_owned()),
        1 => Just("../../etc".to_owned()),
        1 => Just("x".repeat(300)),
        1 => Just("nul\0name".to_owned()),
        2 => "\\PC{0,12}",
    ]
}

/// Shard numbers and counts: small, boundary and any.
pub fn number() -> impl Strategy<Value = u32> {
    prop_oneof![4 => 0u32..5, 1 => Just(u32::MAX), 1 => Just(u32::MAX / 2), 1 => any::<u32>()]
}

/// Times, positions and sizes: zero, boundaries, around now, any.
pub fn big() -> impl Strategy<Value = u64> {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0);
    prop_oneof![2 => Just(0u64), 1 => Just(u64::MAX), 1 => Just(u64::MAX / 2), 2 => Just(now), 1 => (now - 1_000_000_000)..(now + 1_000_000_000), 2 => any::<u64>()]
}

/// Byte strings: empty, small, and just over the key limit (64 KiB).
pub fn bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![2 => Just(Vec::new()), 6 => vec(any::<u8>(), 0..24), 1 => Just(vec![b'k'; (64 << 10) + 1])]
}

fn text() -> impl Strategy<Value = String> {
    prop_oneof![3 => "[a-z0-9:.-]{0,16}", 1 => Just(String::new()), 1 => "\\PC{0,40}"]
}

/// Shard reports with hostile fields.
pub fn shard_info() -> impl Strategy<Value = ShardInfo> {
    (keyspace(), number(), number(), number(), number(), number(), big(), big(), any::<bool>(), big()).prop_map(
        |(keyspace, shard, shards, replica, replicas, committed, committed_at_ms, keyspace_incarnation, frozen, created_at_ms)| ShardInfo {
            keyspace,
            shard,
            shards,
            replica,
            replicas,
            committed,
            committed_at_ms,
            keyspace_incarnation,
            frozen,
            created_at_ms,
        },
    )
}

/// Replication lag reports with hostile fields.
pub fn lag() -> impl Strategy<Value = ReplicaLag> {
    (keyspace(), number(), text(), big(), big(), any::<bool>(), big(), big()).prop_map(
        |(keyspace, shard, peer, entries, lag_ms, caught_up, position, incarnation)| ReplicaLag {
            keyspace,
            shard,
            peer,
            entries,
            lag_ms,
            caught_up,
            position,
            incarnation,
        },
    )
}

fn table() -> impl Strategy<Value = RoutingTable> {
    let route =
        (text(), text(), any::<bool>(), any::<bool>()).prop_map(|(store_id, address, up, catching_up)| ReplicaRoute { store_id, address, up, catching_up });
    (keyspace(), any::<bool>(), big(), number(), number(), vec(vec(route, 0..4), 0..6), number()).prop_map(
        |(keyspace, exists, version, shards, replicas, routes, resizing_to)| RoutingTable { keyspace, exists, version, shards, replicas, routes, resizing_to },
    )
}

fn selector() -> impl Strategy<Value = Option<ShardSelector>> {
    proptest::option::of((number(), number()).prop_map(|(shard, shards)| ShardSelector { shard, shards }))
}

/// One frame, length prefix included, of any message type with hostile fields.
pub fn frame() -> impl Strategy<Value = Vec<u8>> {
    let data = prop_oneof![
        (any::<u64>(), keyspace(), number(), bytes()).prop_map(|(id, ks, s, k)| encode(|e, o| e.get(o, id, &ks, s, &k))),
        (any::<u64>(), keyspace(), number(), bytes(), bytes(), big(), big())
            .prop_map(|(id, ks, s, k, v, t, ttl)| encode(|e, o| e.put(o, id, &ks, s, &k, &v, t, ttl))),
        (any::<u64>(), keyspace(), number(), bytes(), big()).prop_map(|(id, ks, s, k, t)| encode(|e, o| e.delete(o, id, &ks, s, &k, t))),
        (any::<u64>(), keyspace(), number(), vec((any::<u8>(), bytes(), bytes(), big(), big()), 0..12)).prop_map(|(id, ks, s, ops)| encode(|e, o| {
            let ops: Vec<BatchOpRef<'_>> =
                ops.iter().map(|(kind, k, v, t, ttl)| BatchOpRef { kind: OpKind(*kind % 3), key: k, value: v, event_time_ns: *t, ttl_ns: *ttl }).collect();
            e.batch(o, id, &ks, s, &ops)
        })),
        (any::<u64>(), keyspace(), number(), bytes(), bytes(), any::<u32>()).prop_map(|(id, ks, s, p, a, l)| encode(|e, o| e.scan(o, id, &ks, s, &p, &a, l))),
        (any::<u64>(), keyspace(), number(), bytes(), any::<bool>()).prop_map(|(id, ks, s, k, x)| encode(|e, o| e.get_with(o, id, &ks, s, &k, x))),
        (any::<u64>(), keyspace(), number(), bytes(), bytes(), big(), any::<[u8; 5]>(), big(), any::<i64>(), any::<f64>()).prop_map(
            |(id, ks, s, k, v, t, kinds, at, delta, delta_float)| encode(|e, o| {
                let mut r = UpdateRequest::new(UpdateKind(kinds[0] % 9), &k, t);
                r.value = &v;
                r.condition = Condition(kinds[1] % 4);
                r.expiry = ExpiryMode(kinds[2] % 4);
                r.expire_condition = ExpireCondition(kinds[3] % 6);
                r.return_old = kinds[4] & 1 == 1;
                (r.expires_at_ns, r.delta, r.delta_float) = (at, delta, delta_float);
                e.update(o, id, &ks, s, &r)
            })
        ),
    ];
    let streams = prop_oneof![
        (keyspace(), number(), big(), big(), text(), selector())
            .prop_map(|(ks, s, inc, after, f, only)| encode(|e, o| e.tail(o, &ks, s, inc, after, &f, only))),
        (keyspace(), number(), text(), selector()).prop_map(|(ks, s, f, only)| encode(|e, o| e.snapshot_request(o, &ks, s, &f, only))),
        (any::<u64>(), keyspace(), number(), number(), number(), bytes(), any::<bool>())
            .prop_map(|(id, ks, s, n, file, d, done)| encode(|e, o| e.ingest(o, id, &ks, s, n, file, &d, done))),
    ];
    let control = prop_oneof![
        (any::<u8>(), big(), bytes()).prop_map(|(r, c, n)| encode(|e, o| e.hello(o, Role(r), c, &n))),
        bytes().prop_map(|p| encode(|e, o| e.auth(o, &p))),
        (text(), text(), big(), vec(shard_info(), 0..8), big()).prop_map(|(id, a, c, s, b)| encode(|e, o| e.register(
            o,
            &id,
            &a,
            &id,
            DiskReport { capacity_bytes: c, free_bytes: c / 2, full: c % 2 == 0 },
            &s,
            b
        ))),
        (text(), vec(lag(), 0..8)).prop_map(|(id, l)| encode(|e, o| e.heartbeat(o, &id, &l, DiskReport::default()))),
        (any::<u64>(), any::<u8>(), shard_info(), keyspace()).prop_map(|(id, k, s, dir)| encode(|e, o| e.shard_command(o, id, ShardCommandKind(k), &s, &dir))),
        (any::<u64>(), any::<u8>(), text(), big(), big()).prop_map(|(id, s, m, h, i)| encode(|e, o| e.shard_command_ack(o, id, Status(s), &m, h, i))),
        table().prop_map(|t| encode(|e, o| e.routing_table(o, &t))),
    ];
    let admin = prop_oneof![
        keyspace().prop_map(|ks| encode(|e, o| e.subscribe(o, &ks))),
        (any::<u64>(), keyspace(), number(), number()).prop_map(|(id, ks, s, r)| encode(|e, o| e.create_keyspace(o, id, &ks, s, r, s % 2 == 0))),
        (any::<u64>(), keyspace()).prop_map(|(id, ks)| encode(|e, o| e.delete_keyspace(o, id, &ks))),
        (any::<u64>(), keyspace(), text(), text()).prop_map(|(id, ks, f, t)| encode(|e, o| e.replace_store(o, id, &ks, &f, &t))),
        (any::<u64>(), keyspace(), number()).prop_map(|(id, ks, s)| encode(|e, o| e.resize_keyspace(o, id, &ks, s))),
        (any::<u64>(), keyspace()).prop_map(|(id, ks)| encode(|e, o| e.cancel_operation(o, id, &ks))),
        (any::<u64>(), keyspace()).prop_map(|(id, ks)| encode(|e, o| e.compact_keyspace(o, id, &ks))),
        (any::<u64>(), keyspace(), keyspace()).prop_map(|(id, ks, dir)| encode(|e, o| e.backup_keyspace(o, id, &ks, &dir))),
        (any::<u64>(), keyspace()).prop_map(|(id, ks)| encode(|e, o| e.begin_import(o, id, &ks))),
        (any::<u64>(), keyspace()).prop_map(|(id, ks)| encode(|e, o| e.end_import(o, id, &ks))),
        any::<u64>().prop_map(|id| encode(|e, o| e.status_request(o, id))),
    ];
    prop_oneof![6 => data, 2 => streams, 2 => control, 2 => admin]
}

/// A frame, or a mutation of one: bytes flipped, the body cut short or extended, or the length
/// prefix rewritten.
pub fn frame_or_mutation() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => frame(),
        1 => (frame(), vec((any::<prop::sample::Index>(), any::<u8>()), 1..4)).prop_map(|(mut f, flips)| {
            for (at, byte) in flips {
                let i = at.index(f.len());
                f[i] ^= byte.max(1);
            }
            f
        }),
        1 => (frame(), any::<prop::sample::Index>()).prop_map(|(f, cut)| {
            // Keep the prefix consistent with the cut body: a short, well-framed, invalid body.
            let body = &f[crate::LEN_PREFIX..];
            let body = &body[..cut.index(body.len())];
            let mut out = (body.len() as u32).to_le_bytes().to_vec();
            out.extend_from_slice(body);
            out
        }),
        1 => (frame(), vec(any::<u8>(), 1..16)).prop_map(|(f, tail)| {
            let mut body = f[crate::LEN_PREFIX..].to_vec();
            body.extend_from_slice(&tail);
            let mut out = (body.len() as u32).to_le_bytes().to_vec();
            out.extend_from_slice(&body);
            out
        }),
    ]
}

fn encode(f: impl FnOnce(&mut FrameEncoder, &mut Vec<u8>)) -> Vec<u8> {
    let mut out = Vec::new();
    f(&mut FrameEncoder::new(), &mut out);
    out
}

/// A runner for a fuzz target: `VASTO_FUZZ_CASES` cases (default `default_cases`) from seed
/// `VASTO_FUZZ_SEED` (default: random), which it prints so a failure can be re-run.
pub fn runner(default_cases: u32) -> (proptest::test_runner::TestRunner, u64, u32) {
    use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
    let cases = std::env::var("VASTO_FUZZ_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(default_cases);
    let seed = std::env::var("VASTO_FUZZ_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        let mut b = [0u8; 8];
        let _ = getrandom::getrandom(&mut b);
        u64::from_le_bytes(b)
    });
    let mut bytes = [0u8; 32];
    bytes[..8].copy_from_slice(&seed.to_le_bytes());
    let config = Config { cases, failure_persistence: None, ..Config::default() };
    (TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::ChaCha, &bytes)), seed, cases)
}
