//! `Shard::update_many` against `Shard::update` one at a time, through real RocksDB shards.
use super::*;
use crate::counter::Delta;
use proptest::prelude::*;

fn meta() -> ShardMeta {
    ShardMeta { keyspace: "ks".into(), shard: 0, shards: 1, replica: 0, replicas: 1, ..Default::default() }
}

/// One generated update: key index, and what it does.
#[derive(Debug, Clone)]
enum Gen {
    Set(Vec<u8>, u8, bool),
    Delete(bool),
    Append(Vec<u8>),
    Incr(i64),
    Get,
}

fn op(g: &Gen) -> UpdateOp<'_> {
    match g {
        Gen::Set(v, cond, return_old) => UpdateOp::Set {
            value: v,
            condition: [SetCondition::Always, SetCondition::IfAbsent, SetCondition::IfPresent][*cond as usize % 3],
            expiry: ExpiryChange::Clear,
            return_old: *return_old,
        },
        Gen::Delete(return_old) => UpdateOp::Delete { return_old: *return_old },
        Gen::Append(s) => UpdateOp::Append { suffix: s, max_len: 64 },
        Gen::Incr(d) => UpdateOp::Increment(Delta::Int(*d)),
        Gen::Get => UpdateOp::GetExpire { expiry: ExpiryChange::Keep },
    }
}

fn gen() -> impl Strategy<Value = (u8, Gen)> {
    let value = prop::collection::vec(prop::sample::select(b"0123456789ab".to_vec()), 0..6);
    let g = prop_oneof![
        (value.clone(), any::<u8>(), any::<bool>()).prop_map(|(v, c, r)| Gen::Set(v, c, r)),
        any::<bool>().prop_map(Gen::Delete),
        value.prop_map(Gen::Append),
        (-5i64..5).prop_map(Gen::Incr),
        Just(Gen::Get),
    ];
    (0u8..4, g)
}

/// An outcome made comparable: the error's text stands for the error.
type Seen = (Result<Updated, String>, Vec<u8>);

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Updates run in groups of any size, keys repeating within them, answer and leave the
    /// shard exactly as the same updates run one by one.
    #[test]
    fn grouped_updates_match_updates_one_by_one(ops in prop::collection::vec(gen(), 1..60), cuts in prop::collection::vec(1usize..12, 1..20)) {
        let dir = tempfile::tempdir().unwrap();
        let (ea, eb) = (Engine::new(&dir.path().join("a"), &EngineOptions::default()).unwrap(), Engine::new(&dir.path().join("b"), &EngineOptions::default()).unwrap());
        let (grouped, single) = (ea.create_shard(&meta()).unwrap(), eb.create_shard(&meta()).unwrap());
        let keys: Vec<Vec<u8>> = (0..4).map(|k| format!("k{k}").into_bytes()).collect();
        let t0 = now_ns();
        let mut expected: Vec<Seen> = Vec::new();
        for (i, (k, g)) in ops.iter().enumerate() {
            let mut returned = Vec::new();
            let outcome = single.update(&keys[*k as usize], t0 + i as u64 * 1000, &op(g), &mut returned).map_err(|e| e.to_string());
            if outcome.as_ref().is_ok_and(|u| !u.returned) {
                returned.clear();
            }
            expected.push((outcome, returned));
        }
        let mut seen: Vec<Option<Seen>> = vec![None; ops.len()];
        let (mut from, mut cut) = (0, cuts.iter().cycle());
        while from < ops.len() {
            let to = (from + cut.next().copied().unwrap_or(1)).min(ops.len());
            let updates = ops[from..to].iter().enumerate().map(|(j, (k, g))| KeyUpdate { key: &keys[*k as usize], event_time_ns: t0 + (from + j) as u64 * 1000, op: op(g) });
            grouped.update_many(updates, |j, outcome, value| {
                assert!(seen[from + j].is_none(), "update {} reported twice", from + j);
                seen[from + j] = Some((outcome.map_err(|e| e.to_string()), value.to_vec()));
            });
            from = to;
        }
        for (i, (want, got)) in expected.iter().zip(&seen).enumerate() {
            prop_assert_eq!(Some(want), got.as_ref(), "update {}: {:?}", i, &ops[i]);
        }
        for k in &keys {
            let read = |s: &Shard| s.get(k, |v| v.map(<[u8]>::to_vec)).unwrap();
            prop_assert_eq!(read(&grouped), read(&single), "key {:?}", String::from_utf8_lossy(k));
        }
    }
}
