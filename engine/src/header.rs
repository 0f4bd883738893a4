//! The stored value format and the last-writer-wins order.
//!
//! Stored value = 17-byte header + user bytes. Header: event time (u64 LE, ns since the Unix
//! epoch), expiry (u64 LE, ns since the epoch, 0 = never), flags (u8, bit 0 = tombstone, bit 1 =
//! counter: the user bytes are a counter, see `counter`).

/// Length of the header in front of every stored value.
pub const HEADER_LEN: usize = 17;
const TOMBSTONE: u8 = 1;
const COUNTER: u8 = 2;
/// The decoded header of a stored value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Header {
    /// Writer's event time, ns since the Unix epoch.
    pub event_time_ns: u64,
    /// Absolute expiry, ns since the Unix epoch; 0 means never.
    pub expires_at_ns: u64,
    /// True for a delete.
    pub tombstone: bool,
    /// True for a counter (see `counter`): the user bytes are its state, not what a read shows.
    pub counter: bool,
}

impl Header {
    /// Appends the encoded header to `out`.
    #[inline]
    pub fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.event_time_ns.to_le_bytes());
        out.extend_from_slice(&self.expires_at_ns.to_le_bytes());
        out.push(if self.tombstone { TOMBSTONE } else { 0 } | if self.counter { COUNTER } else { 0 });
    }

    /// Whether a flags byte marks a counter.
    #[inline]
    pub(crate) fn flags_counter(flags: u8) -> bool {
        flags & COUNTER != 0
    }

    /// Splits a stored value into header and user bytes; `None` if it is too short to be one.
    #[inline]
    pub fn split(stored: &[u8]) -> Option<(Header, &[u8])> {
        let (h, user) = stored.split_at_checked(HEADER_LEN)?;
        let event_time_ns = u64::from_le_bytes(h[0..8].try_into().ok()?);
        let expires_at_ns = u64::from_le_bytes(h[8..16].try_into().ok()?);
        Some((Header { event_time_ns, expires_at_ns, tombstone: h[16] & TOMBSTONE != 0, counter: h[16] & COUNTER != 0 }, user))
    }

    /// True when the value has an expiry at or before `now_ns`.
    #[inline]
    pub fn expired(&self, now_ns: u64) -> bool {
        self.expires_at_ns != 0 && self.expires_at_ns <= now_ns
    }
}

/// Encodes a stored value (header + user bytes) into `out`, replacing its contents.
#[inline]
pub fn encode_value(out: &mut Vec<u8>, header: Header, user: &[u8]) {
    out.clear();
    out.reserve(HEADER_LEN + user.len());
    header.write(out);
    out.extend_from_slice(user);
}

/// Expiry for a write at `event_time_ns` living `ttl_ns` (0 = forever), saturating.
#[inline]
pub fn expiry_for(event_time_ns: u64, ttl_ns: u64) -> u64 {
    if ttl_ns == 0 {
        0
    } else {
        event_time_ns.saturating_add(ttl_ns)
    }
}

/// The last-writer-wins order: true when stored value `a` beats `b`.
///
/// Greater event time wins; ties break on tombstone (a delete beats a put), then expiry, then the
/// user bytes, so every replica picks the same winner whatever the arrival order. A value too
/// short to carry a header loses to any well-formed one.
#[inline]
pub fn newer(a: &[u8], b: &[u8]) -> bool {
    match (Header::split(a), Header::split(b)) {
        (Some((ha, ua)), Some((hb, ub))) => (ha.event_time_ns, ha.tombstone, ha.expires_at_ns, ua) > (hb.event_time_ns, hb.tombstone, hb.expires_at_ns, ub),
        (Some(_), None) => true,
        (None, Some(_)) => false,
        (None, None) => a > b,
    }
}

/// Picks the winner among an optional existing value and operands (the merge operator's core).
pub fn winner<'a>(existing: Option<&'a [u8]>, operands: impl Iterator<Item = &'a [u8]>) -> Option<&'a [u8]> {
    let mut best = existing;
    for op in operands {
        best = match best {
            Some(b) if !newer(op, b) => Some(b),
            _ => Some(op),
        };
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn value(t: u64, tomb: bool, user: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        encode_value(&mut v, Header { event_time_ns: t, expires_at_ns: 0, tombstone: tomb, counter: false }, user);
        v
    }

    #[test]
    fn header_round_trips_and_short_values_are_rejected() {
        let v = value(42, true, b"xy");
        let (h, user) = Header::split(&v).unwrap();
        assert_eq!((h.event_time_ns, h.tombstone, user), (42, true, &b"xy"[..]));
        assert!(Header::split(&v[..HEADER_LEN - 1]).is_none());
        let empty = value(1, false, b"");
        assert_eq!(Header::split(&empty).unwrap().1, b"");
    }

    #[test]
    fn newer_event_time_wins_and_delete_wins_ties() {
        assert!(newer(&value(2, false, b"a"), &value(1, false, b"b")));
        assert!(!newer(&value(1, false, b"z"), &value(2, false, b"a")));
        assert!(newer(&value(5, true, b""), &value(5, false, b"zzz")));
        assert!(newer(&value(1, false, b""), b"garbage"));
    }

    #[test]
    fn expiry_saturates() {
        assert_eq!(expiry_for(10, 0), 0);
        assert_eq!(expiry_for(u64::MAX - 1, 5), u64::MAX);
        assert!(Header { event_time_ns: 0, expires_at_ns: 5, ..Header::default() }.expired(5));
    }

    proptest! {
        /// The winner is the same whatever order the writes arrive in and however they are grouped.
        #[test]
        fn lww_is_order_independent(writes in proptest::collection::vec((0u64..20, any::<bool>(), proptest::collection::vec(any::<u8>(), 0..4)), 1..12), split in 0usize..12) {
            let values: Vec<Vec<u8>> = writes.iter().map(|(t, d, u)| value(*t, *d, u)).collect();
            let forward = winner(None, values.iter().map(|v| v.as_slice())).unwrap().to_vec();
            let backward = winner(None, values.iter().rev().map(|v| v.as_slice())).unwrap().to_vec();
            prop_assert_eq!(&forward, &backward);
            let split = split.min(values.len());
            let partial = winner(None, values[..split].iter().map(|v| v.as_slice())).map(|v| v.to_vec());
            let grouped = winner(partial.as_deref(), values[split..].iter().map(|v| v.as_slice())).unwrap().to_vec();
            prop_assert_eq!(&forward, &grouped);
            let max_t = writes.iter().map(|w| w.0).max().unwrap();
            prop_assert_eq!(Header::split(&forward).unwrap().0.event_time_ns, max_t);
        }
    }
}
