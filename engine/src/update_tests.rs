use super::*;

const NOW: u64 = 1_000_000_000;

fn plain(t: u64, expires_at_ns: u64, user: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    encode_value(&mut v, Header { event_time_ns: t, expires_at_ns, ..Header::default() }, user);
    v
}

/// A stored value split into its header and user bytes.
type Stored = (Header, Vec<u8>);

/// Runs `op` on `current` at event time 100 and returns the decision, the value written and the
/// value returned.
fn run(current: Option<&[u8]>, op: UpdateOp<'_>) -> (Decision, Option<Stored>, Vec<u8>) {
    let (mut write, mut returned) = (Vec::new(), Vec::new());
    let d = decide(current, &op, 100, NOW, 1, &mut write, &mut returned).expect("decided");
    let written = d.write.then(|| Header::split(&write).map(|(h, u)| (h, u.to_vec())).expect("a stored value"));
    (d, written, returned)
}

fn set(value: &[u8], condition: SetCondition, expiry: ExpiryChange, return_old: bool) -> UpdateOp<'_> {
    UpdateOp::Set { value, condition, expiry, return_old }
}

#[test]
fn set_conditions_and_the_old_value() {
    let old = plain(50, 0, b"old");
    let (d, w, r) = run(Some(&old), set(b"new", SetCondition::IfAbsent, ExpiryChange::Clear, true));
    assert_eq!((d.outcome.applied, d.outcome.returned, w, r), (false, true, None, b"old".to_vec()), "NX on a present key: not set, GET returns the old value");
    let (d, w, _) = run(None, set(b"new", SetCondition::IfPresent, ExpiryChange::Clear, false));
    assert_eq!((d.outcome.applied, d.outcome.returned, w), (false, false, None));
    let (d, w, _) = run(Some(&old), set(b"new", SetCondition::IfPresent, ExpiryChange::At(NOW + 9), false));
    let (h, user) = w.expect("written");
    assert_eq!((d.outcome.applied, h.event_time_ns, h.expires_at_ns, user), (true, 100, NOW + 9, b"new".to_vec()));
}

#[test]
fn a_write_decided_on_a_value_is_later_than_it() {
    let future = plain(500, 0, b"from a fast clock");
    let (_, w, _) = run(Some(&future), set(b"new", SetCondition::Always, ExpiryChange::Clear, false));
    assert_eq!(w.expect("written").0.event_time_ns, 501);
}

#[test]
fn keepttl_append_and_getdel() {
    let expiring = plain(50, NOW + 7, b"ab");
    let (_, w, _) = run(Some(&expiring), set(b"x", SetCondition::Always, ExpiryChange::Keep, false));
    assert_eq!(w.expect("written").0.expires_at_ns, NOW + 7);
    let (d, w, _) = run(Some(&expiring), UpdateOp::Append { suffix: b"cd", max_len: 10 });
    let (h, user) = w.expect("written");
    assert_eq!((d.outcome.number, user, h.expires_at_ns), (4, b"abcd".to_vec(), NOW + 7), "APPEND keeps the TTL");
    let (d, w, _) = run(None, UpdateOp::Append { suffix: b"cd", max_len: 10 });
    assert_eq!((d.outcome.number, w.map(|w| w.1)), (2, Some(b"cd".to_vec())));
    let (mut write, mut returned) = (Vec::new(), Vec::new());
    assert!(decide(Some(&expiring), &UpdateOp::Append { suffix: b"toolong", max_len: 8 }, 100, NOW, 1, &mut write, &mut returned).is_err());
    let (d, w, r) = run(Some(&expiring), UpdateOp::Delete { return_old: true });
    assert_eq!((d.outcome.applied, r), (true, b"ab".to_vec()));
    assert!(w.expect("a tombstone").0.tombstone);
    let (d, w, _) = run(None, UpdateOp::Delete { return_old: false });
    assert!(!d.outcome.applied && w.expect("a tombstone even so, for copies elsewhere").0.tombstone);
}

#[test]
fn expire_options_follow_redis() {
    let forever = plain(50, 0, b"v");
    let expiring = plain(50, NOW + 100, b"v");
    let expire = |at, condition| UpdateOp::Expire { expiry: ExpiryChange::At(at), condition };
    let cases = [
        (&forever, expire(NOW + 5, ExpireCondition::IfNoExpiry), true),
        (&expiring, expire(NOW + 5, ExpireCondition::IfNoExpiry), false),
        (&forever, expire(NOW + 5, ExpireCondition::IfExpiry), false),
        (&expiring, expire(NOW + 500, ExpireCondition::IfLater), true),
        (&expiring, expire(NOW + 5, ExpireCondition::IfLater), false),
        (&forever, expire(NOW + 5, ExpireCondition::IfLater), false),
        (&forever, expire(NOW + 5, ExpireCondition::IfEarlier), true),
        (&expiring, expire(NOW + 500, ExpireCondition::IfEarlier), false),
    ];
    for (i, (current, op, applied)) in cases.into_iter().enumerate() {
        assert_eq!(run(Some(current), op).0.outcome.applied, applied, "case {i}");
    }
    let (d, w, _) = run(Some(&forever), expire(NOW - 1, ExpireCondition::Always));
    assert!(d.outcome.applied && w.expect("written").0.tombstone, "an expiry in the past deletes");
    assert!(!run(None, expire(NOW + 5, ExpireCondition::Always)).0.outcome.applied, "a missing key");
    let persist = UpdateOp::Expire { expiry: ExpiryChange::Clear, condition: ExpireCondition::Always };
    assert!(!run(Some(&forever), persist).0.outcome.applied);
    let (d, w, _) = run(Some(&expiring), persist);
    assert_eq!((d.outcome.applied, w.map(|w| w.0.expires_at_ns)), (true, Some(0)));
}

#[test]
fn getex_and_counters_through_expiry_changes() {
    let (d, w, r) = run(Some(&plain(50, 0, b"v")), UpdateOp::GetExpire { expiry: ExpiryChange::Keep });
    assert_eq!((d.outcome.returned, w, r), (true, None, b"v".to_vec()));
    let (d, _, _) = run(None, UpdateOp::GetExpire { expiry: ExpiryChange::At(NOW + 1) });
    assert!(!d.outcome.returned);
    let (d, counter, _) = run(None, UpdateOp::Increment(Delta::Int(7)));
    assert_eq!(d.outcome.number, 7);
    let mut stored = Vec::new();
    let (h, user) = counter.expect("written");
    encode_value(&mut stored, h, &user);
    let (d, w, r) = run(Some(&stored), UpdateOp::GetExpire { expiry: ExpiryChange::At(NOW + 50) });
    let (h, _) = w.expect("written");
    assert_eq!((d.outcome.returned, r, h.counter, h.expires_at_ns), (true, b"7".to_vec(), true, NOW + 50), "a counter keeps counting with its new expiry");
}
