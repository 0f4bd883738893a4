use super::*;
use crate::header::encode_value;
use proptest::prelude::*;

const NOW: u64 = 1_000_000;

fn plain(t: u64, user: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    encode_value(&mut v, Header { event_time_ns: t, ..Header::default() }, user);
    v
}

fn tombstone(t: u64) -> Vec<u8> {
    let mut v = Vec::new();
    encode_value(&mut v, Header { event_time_ns: t, tombstone: true, ..Header::default() }, b"");
    v
}

/// What a read of `stored` shows (None for a tombstone).
fn shown(stored: &[u8]) -> Option<String> {
    let (h, user) = Header::split(stored)?;
    if h.tombstone || h.expired(NOW) {
        return None;
    }
    let mut out = Vec::new();
    crate::update::shown(h, user, &mut out);
    Some(String::from_utf8(out).expect("utf-8"))
}

fn joined(a: &[u8], b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    join(a, b, &mut out);
    out
}

/// One replica: its origin id and what it stores for the key.
struct Replica {
    origin: u64,
    stored: Option<Vec<u8>>,
}

impl Replica {
    fn incr(&mut self, delta: Delta, t: u64) -> Result<(Number, Vec<u8>), &'static str> {
        let mut operand = Vec::new();
        let total = increment(self.stored.as_deref(), self.origin, delta, t, NOW, &mut operand)?;
        self.apply(&operand);
        Ok((total, operand))
    }

    fn apply(&mut self, value: &[u8]) {
        self.stored = Some(match &self.stored {
            Some(s) => joined(s, value),
            None => value.to_vec(),
        });
    }
}

#[test]
fn increments_count_on_top_of_a_plain_integer_and_keep_its_expiry() {
    let mut r = Replica { origin: 7, stored: Some(plain(10, b"41")) };
    assert_eq!(r.incr(Delta::Int(1), 20).map(|x| x.0), Ok(Number::Int(42)));
    assert_eq!(shown(r.stored.as_ref().unwrap()).as_deref(), Some("42"));
    assert_eq!(r.incr(Delta::Float(0.5), 21).map(|x| x.0), Ok(Number::Float(42.5)));
    assert_eq!(shown(r.stored.as_ref().unwrap()).as_deref(), Some("42.5"));
    assert_eq!(r.incr(Delta::Int(1), 22).map(|x| x.0), Err(refusal::NOT_INTEGER), "a float counter takes no integer increment");

    let mut expiring = Vec::new();
    encode_value(&mut expiring, Header { event_time_ns: 10, expires_at_ns: NOW + 5, ..Header::default() }, b"5");
    let mut r = Replica { origin: 7, stored: Some(expiring) };
    r.incr(Delta::Int(2), 20).unwrap();
    let (h, _) = Header::split(r.stored.as_ref().unwrap()).unwrap();
    assert_eq!((h.counter, h.expires_at_ns), (true, NOW + 5), "INCR keeps the TTL, as in Redis");
}

#[test]
fn increments_refuse_what_redis_refuses() {
    let cases: [(&[u8], Delta, &str); 6] = [
        (b"abc", Delta::Int(1), refusal::NOT_INTEGER),
        (b"1.5", Delta::Int(1), refusal::NOT_INTEGER),
        (b"01", Delta::Int(1), refusal::NOT_INTEGER),
        (b" 1", Delta::Float(1.0), refusal::NOT_FLOAT),
        (b"9223372036854775807", Delta::Int(1), refusal::OVERFLOW),
        (b"1e308", Delta::Float(1e308), refusal::NOT_FINITE),
    ];
    for (value, delta, why) in cases {
        let mut r = Replica { origin: 1, stored: Some(plain(1, value)) };
        let before = r.stored.clone();
        assert_eq!(r.incr(delta, 2).map(|x| x.0), Err(why), "{:?} {delta:?}", String::from_utf8_lossy(value));
        assert_eq!(r.stored, before, "a refused increment writes nothing");
    }
    let mut r = Replica { origin: 1, stored: Some(plain(1, b"-9223372036854775808")) };
    assert_eq!(r.incr(Delta::Int(-1), 2).map(|x| x.0), Err(refusal::OVERFLOW));
    assert_eq!(parse_int(b"-0"), None);
    assert_eq!(parse_int(b"0"), Some(0));
    assert_eq!(parse_int(b"-12"), Some(-12));
    assert_eq!(parse_float(b"nan"), None);
    assert_eq!(parse_float(b"2.5e1"), Some(25.0));
}

#[test]
fn a_newer_plain_write_replaces_a_counter_and_an_older_one_loses() {
    let mut r = Replica { origin: 1, stored: Some(plain(10, b"5")) };
    let (_, operand) = r.incr(Delta::Int(3), 30).unwrap();
    let counter = r.stored.clone().unwrap();
    assert_eq!(shown(&joined(&counter, &plain(11, b"x"))).as_deref(), Some("x"), "newer than the base: replaces the increments on it");
    assert_eq!(shown(&joined(&plain(9, b"x"), &counter)).as_deref(), Some("8"), "older than the base: loses");
    assert_eq!(shown(&joined(&counter, &plain(10, b"5"))).as_deref(), Some("8"), "the base itself arriving again changes nothing");
    assert_eq!(shown(&joined(&tombstone(12), &counter)), None, "a newer delete removes the counter");
    // The operand alone (a replica that never saw the plain write) shows the same total.
    assert_eq!(shown(&operand).as_deref(), Some("8"));
}

#[test]
fn an_expired_or_deleted_counter_restarts_from_zero() {
    let mut r = Replica { origin: 1, stored: None };
    r.incr(Delta::Int(5), 10).unwrap();
    let mut expiring = Vec::new();
    assert!(set_expiry(r.stored.as_ref().unwrap(), NOW - 1, 11, &mut expiring));
    r.apply(&expiring);
    assert_eq!(shown(r.stored.as_ref().unwrap()), None, "expired");
    assert_eq!(r.incr(Delta::Int(1), 12).map(|x| x.0), Ok(Number::Int(1)));
    // The restarted counter's base is the expiry time: a delete after it removes it.
    r.apply(&tombstone(NOW + 1));
    assert_eq!(shown(r.stored.as_ref().unwrap()), None);
    assert_eq!(r.incr(Delta::Int(2), NOW + 2).map(|x| x.0), Ok(Number::Int(2)));
}

#[test]
fn malformed_counters_lose_and_are_not_read_as_numbers() {
    let mut bad = Vec::new();
    encode_value(&mut bad, Header { event_time_ns: 99, counter: true, ..Header::default() }, b"\x01junk");
    assert_eq!(joined(&bad, &plain(1, b"ok")), plain(1, b"ok"));
    assert!(!render(b"\x01junk", &mut Vec::new()));
}

/// A random value a replica may hold: plain, tombstone, or a counter of a few origins.
fn any_value() -> impl Strategy<Value = Vec<u8>> {
    let entry = (0u64..4, 1u64..5, any::<bool>(), -5i64..5);
    prop_oneof![
        (0u64..6, proptest::collection::vec(any::<u8>(), 0..3)).prop_map(|(t, u)| plain(t, &u)),
        (0u64..6).prop_map(tombstone),
        (0u64..6, -3i64..3, 0u64..3, proptest::collection::btree_map(0u64..4, entry, 0..4)).prop_map(|(bt, bv, exp, entries)| {
            let counter = Counter {
                base: Base { time_ns: bt, number: Number::Int(bv) },
                expiry: ExpiryRegister { set_at_ns: exp, expires_at_ns: exp * 1000 },
                entries: entries
                    .into_iter()
                    .map(|(origin, (_, version, float, n))| Entry {
                        origin,
                        version,
                        number: if float { Number::Float(n as f64 / 2.0) } else { Number::Int(n) },
                    })
                    .collect(),
            };
            let mut v = Vec::new();
            counter.encode(bt + exp, &mut v);
            v
        }),
    ]
}

proptest! {
    /// The join is a semilattice: commutative, associative and idempotent, so every grouping
    /// and order of merges RocksDB picks gives the same bytes.
    #[test]
    fn join_is_commutative_associative_and_idempotent(a in any_value(), b in any_value(), c in any_value()) {
        prop_assert_eq!(joined(&a, &b), joined(&b, &a));
        prop_assert_eq!(joined(&joined(&a, &b), &c), joined(&a, &joined(&b, &c)));
        prop_assert_eq!(joined(&a, &a), a.clone());
        prop_assert_eq!(joined(&joined(&a, &b), &b), joined(&a, &b));
    }

    /// Increments taken on different replicas, each seeing only what reached it, delivered to
    /// the others late, out of order, twice, and through whole-state copies (a snapshot): every
    /// replica ends with the same bytes, and the total is the sum of the increments.
    #[test]
    fn replicas_converge_on_the_sum_of_all_increments(
        ops in proptest::collection::vec((0usize..3, -1000i64..1000, 0u8..4), 1..60),
        delivery_seed in any::<u64>(),
        float in any::<bool>(),
    ) {
        let mut replicas: Vec<Replica> = (0..3).map(|i| Replica { origin: 100 + i as u64, stored: None }).collect();
        let mut sent: Vec<Vec<u8>> = Vec::new();
        let mut rng = delivery_seed;
        let mut next = move |n: usize| { rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17; (rng % n as u64) as usize };
        let (mut sum_int, mut t) = (0i64, 1u64);
        for (r, delta, action) in ops {
            t += 1;
            let delta = if float { Delta::Float(delta as f64 / 4.0) } else { Delta::Int(delta) };
            let (_, operand) = replicas[r].incr(delta, t).expect("in range");
            if let Delta::Int(d) = delta { sum_int += d; }
            sent.push(operand);
            match action {
                // Deliver a random earlier operand to a random replica (perhaps again).
                0 | 1 => { let (to, what) = (next(3), next(sent.len())); replicas[to].apply(&sent[what].clone()); }
                // A replica copies another's whole state (a snapshot).
                2 => { let (to, from) = (next(3), next(3)); if let Some(s) = replicas[from].stored.clone() { replicas[to].apply(&s); } }
                _ => {}
            }
        }
        for replica in replicas.iter_mut() {
            let mut order: Vec<usize> = (0..sent.len()).collect();
            for i in (1..order.len()).rev() { order.swap(i, next(i + 1)); }
            for i in order { replica.apply(&sent[i].clone()); }
        }
        let first = replicas[0].stored.clone().expect("written");
        for replica in &replicas {
            prop_assert_eq!(replica.stored.as_ref(), Some(&first), "replicas converge to the same bytes");
        }
        if !float {
            prop_assert_eq!(shown(&first), Some(sum_int.to_string()));
        }
    }
}
