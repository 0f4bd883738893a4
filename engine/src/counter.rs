//! Counters that converge across replicas (INCR and friends under active-active replication).
//!
//! A counter is a stored value with the counter flag whose user bytes hold:
//!
//! * the **base**: the plain value the increments build on (its event time and its number; a
//!   missing key is base 0 at time 0, a deleted or expired one base 0 at the time it went);
//! * the **expiry register**: the last expiry set on the counter and when it was set;
//! * one **entry per origin** (a replica's change-log incarnation): that origin's running sum of
//!   its increments since the base, and how many increments it took (its version).
//!
//! An origin updates only its own entry, under its change log's lock, and replicates the whole
//! entry, never a delta: joining two copies keeps, per origin, the entry with the greater
//! version. So a copy applied twice, late, out of order, by a snapshot and again by a tail, or
//! carried through a resize, counts once, and every replica that has seen the same increments
//! shows the same total (the sum runs in origin order, so float totals agree to the bit).
//!
//! Against a plain write (SET, DEL), the counter competes by its base: a plain write newer than
//! the base replaces the counter and the increments built on the older value; one not newer
//! loses. An increment therefore counts on top of the value its replica held when it took it.
//! The join is associative, commutative and idempotent (property-tested below), so RocksDB may
//! merge operands in any grouping.
//!
//! Layout of the user bytes (all integers little-endian): format (u8 = 1), base time (u64),
//! base kind (u8: 0 integer, 1 float), base number (8 bytes), expiry set at (u64), expires at
//! (u64, 0 = never), entry count (u16), then per entry in increasing origin order: origin
//! (u64), version (u64), kind (u8), number (8 bytes).
use crate::header::{Header, HEADER_LEN};

const FORMAT: u8 = 1;
const FIXED: usize = 1 + 8 + 1 + 8 + 8 + 8 + 2;
const ENTRY: usize = 8 + 8 + 1 + 8;

/// Why an increment was refused, in Redis's words (the gateway answers `-ERR <text>`).
pub mod refusal {
    /// The stored value is not an integer (or the counter holds a float) for an integer increment.
    pub const NOT_INTEGER: &str = "value is not an integer or out of range";
    /// The stored value is not a number for a float increment.
    pub const NOT_FLOAT: &str = "value is not a valid float";
    /// The integer total would leave the range of a signed 64-bit integer.
    pub const OVERFLOW: &str = "increment or decrement would overflow";
    /// The float total would not be a finite number.
    pub const NOT_FINITE: &str = "increment would produce NaN or Infinity";
}

/// A number a counter holds: an integer until a float is added to it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Number {
    /// A signed 64-bit integer.
    Int(i64),
    /// An IEEE double.
    Float(f64),
}

impl Number {
    fn kind(self) -> u8 {
        match self {
            Number::Int(_) => 0,
            Number::Float(_) => 1,
        }
    }

    fn bits(self) -> u64 {
        match self {
            Number::Int(i) => i as u64,
            Number::Float(f) => f.to_bits(),
        }
    }

    fn decode(kind: u8, bits: u64) -> Option<Self> {
        match kind {
            0 => Some(Number::Int(bits as i64)),
            1 => Some(Number::Float(f64::from_bits(bits))),
            _ => None,
        }
    }

    fn as_f64(self) -> f64 {
        match self {
            Number::Int(i) => i as f64,
            Number::Float(f) => f,
        }
    }

    /// Appends the number as Redis shows it: integers in decimal, floats in the shortest form
    /// that reads back as the same double, without exponent.
    pub fn render(self, out: &mut Vec<u8>) {
        use std::io::Write;
        // Writing to a Vec cannot fail.
        let _ = match self {
            Number::Int(i) => write!(out, "{i}"),
            Number::Float(f) => write!(out, "{f}"),
        };
    }
}

/// The total of a counter: integers are summed exactly (wider than 64 bits, so a total past
/// the range of the increments still shows), floats in origin order.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Total {
    Int(i128),
    Float(f64),
}

impl Total {
    fn render(self, out: &mut Vec<u8>) {
        match self {
            Total::Int(i) => {
                use std::io::Write;
                let _ = write!(out, "{i}");
            }
            Total::Float(f) => Number::Float(f).render(out),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
struct Base {
    time_ns: u64,
    number: Number,
}

impl Base {
    /// The order of bases: later first, then kind and bits, so equal keys mean equal bases.
    fn rank(&self) -> (u64, u8, u64) {
        (self.time_ns, self.number.kind(), self.number.bits())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Default)]
struct ExpiryRegister {
    set_at_ns: u64,
    expires_at_ns: u64,
}

#[derive(Debug, Clone, Copy, PartialEq)]
struct Entry {
    origin: u64,
    version: u64,
    number: Number,
}

impl Entry {
    fn rank(&self) -> (u64, u8, u64) {
        (self.version, self.number.kind(), self.number.bits())
    }
}

/// A decoded counter.
#[derive(Debug, Clone, PartialEq)]
struct Counter {
    base: Base,
    expiry: ExpiryRegister,
    entries: Vec<Entry>,
}

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

/// A borrowed, validated counter body: reads its parts without allocating.
#[derive(Clone, Copy)]
struct View<'a> {
    raw: &'a [u8],
    count: usize,
}

impl<'a> View<'a> {
    fn parse(raw: &'a [u8]) -> Option<Self> {
        if raw.len() < FIXED || raw[0] != FORMAT {
            return None;
        }
        let count = u16::from_le_bytes([raw[FIXED - 2], raw[FIXED - 1]]) as usize;
        if raw.len() != FIXED + count * ENTRY || Number::decode(raw[9], 0).is_none() {
            return None;
        }
        let view = Self { raw, count };
        // Every entry's kind must be known, and origins strictly increasing.
        let mut last = None;
        for i in 0..count {
            let at = FIXED + i * ENTRY;
            let origin = u64_at(raw, at)?;
            Number::decode(raw[at + 16], 0)?;
            if last.is_some_and(|l| l >= origin) {
                return None;
            }
            last = Some(origin);
        }
        Some(view)
    }

    fn base(&self) -> Base {
        let number = Number::decode(self.raw[9], u64_at(self.raw, 10).unwrap_or(0)).unwrap_or(Number::Int(0));
        Base { time_ns: u64_at(self.raw, 1).unwrap_or(0), number }
    }

    fn expiry(&self) -> ExpiryRegister {
        ExpiryRegister { set_at_ns: u64_at(self.raw, 18).unwrap_or(0), expires_at_ns: u64_at(self.raw, 26).unwrap_or(0) }
    }

    fn entries(&self) -> impl Iterator<Item = Entry> + Clone + 'a {
        let raw = self.raw;
        (0..self.count).map(move |i| {
            let at = FIXED + i * ENTRY;
            let number = Number::decode(raw[at + 16], u64_at(raw, at + 17).unwrap_or(0)).unwrap_or(Number::Int(0));
            Entry { origin: u64_at(raw, at).unwrap_or(0), version: u64_at(raw, at + 8).unwrap_or(0), number }
        })
    }

    fn total(&self) -> Total {
        total(self.base(), self.entries())
    }

    fn decode(&self) -> Counter {
        Counter { base: self.base(), expiry: self.expiry(), entries: self.entries().collect() }
    }
}

fn total(base: Base, entries: impl Iterator<Item = Entry> + Clone) -> Total {
    let float = matches!(base.number, Number::Float(_)) || entries.clone().any(|e| matches!(e.number, Number::Float(_)));
    if float {
        Total::Float(entries.fold(base.number.as_f64(), |sum, e| sum + e.number.as_f64()))
    } else {
        let int = |n: Number| match n {
            Number::Int(i) => i128::from(i),
            Number::Float(_) => 0,
        };
        Total::Int(entries.fold(int(base.number), |sum, e| sum + int(e.number)))
    }
}

impl Counter {
    /// Encodes as a stored value (header with the counter flag) into `out`, replacing it.
    fn encode(&self, event_time_ns: u64, out: &mut Vec<u8>) {
        out.clear();
        let header = Header { event_time_ns, expires_at_ns: self.expiry.expires_at_ns, tombstone: false, counter: true };
        header.write(out);
        out.push(FORMAT);
        out.extend_from_slice(&self.base.time_ns.to_le_bytes());
        out.push(self.base.number.kind());
        out.extend_from_slice(&self.base.number.bits().to_le_bytes());
        out.extend_from_slice(&self.expiry.set_at_ns.to_le_bytes());
        out.extend_from_slice(&self.expiry.expires_at_ns.to_le_bytes());
        out.extend_from_slice(&(self.entries.len() as u16).to_le_bytes());
        for e in &self.entries {
            out.extend_from_slice(&e.origin.to_le_bytes());
            out.extend_from_slice(&e.version.to_le_bytes());
            out.push(e.number.kind());
            out.extend_from_slice(&e.number.bits().to_le_bytes());
        }
    }
}

/// A stored value split into header and a parsed counter body, if it is a well-formed counter.
fn as_counter(stored: &[u8]) -> Option<(Header, View<'_>)> {
    let (h, user) = Header::split(stored)?;
    if !h.counter {
        return None;
    }
    Some((h, View::parse(user)?))
}

/// True when `stored` carries the counter flag (well-formed or not).
pub(crate) fn is_counter(stored: &[u8]) -> bool {
    stored.get(HEADER_LEN - 1).is_some_and(|flags| Header::flags_counter(*flags))
}

/// Appends what a read shows for the counter body `user` (its total); false if the body is
/// not a well-formed counter (then nothing is appended).
pub fn render(user: &[u8], out: &mut Vec<u8>) -> bool {
    match View::parse(user) {
        Some(view) => {
            view.total().render(out);
            true
        }
        None => false,
    }
}

/// Joins two stored values (either may be a counter) into the one every replica keeps, in
/// `out`. Plain values follow last-writer-wins; see the module comment for counters.
pub(crate) fn join(a: &[u8], b: &[u8], out: &mut Vec<u8>) {
    let pick = |v: &[u8], out: &mut Vec<u8>| {
        out.clear();
        out.extend_from_slice(v);
    };
    // A value flagged as a counter whose body cannot be read loses to any readable one.
    let readable = |v: &[u8]| !is_counter(v) || as_counter(v).is_some();
    match (readable(a), readable(b)) {
        (true, false) => return pick(a, out),
        (false, true) => return pick(b, out),
        (false, false) => return pick(a.max(b), out),
        (true, true) => {}
    }
    match (as_counter(a), as_counter(b)) {
        (None, None) => pick(if crate::header::newer(b, a) { b } else { a }, out),
        (Some((_, c)), None) => pick(if plain_beats(b, &c) { b } else { a }, out),
        (None, Some((_, c))) => pick(if plain_beats(a, &c) { a } else { b }, out),
        (Some((ha, ca)), Some((hb, cb))) => match ca.base().rank().cmp(&cb.base().rank()) {
            std::cmp::Ordering::Greater => pick(a, out),
            std::cmp::Ordering::Less => pick(b, out),
            std::cmp::Ordering::Equal => {
                let joined = Counter { base: ca.base(), expiry: later_expiry(ca.expiry(), cb.expiry()), entries: joined_entries(ca, cb) };
                joined.encode(ha.event_time_ns.max(hb.event_time_ns), out);
            }
        },
    }
}

/// Whether the plain (or malformed) value `plain` replaces counter `c`: a well-formed one does
/// when it is newer than the counter's base; a malformed one never does.
fn plain_beats(plain: &[u8], c: &View<'_>) -> bool {
    Header::split(plain).is_some_and(|(h, _)| !h.counter && h.event_time_ns > c.base().time_ns)
}

fn later_expiry(a: ExpiryRegister, b: ExpiryRegister) -> ExpiryRegister {
    if (b.set_at_ns, b.expires_at_ns) > (a.set_at_ns, a.expires_at_ns) {
        b
    } else {
        a
    }
}

fn joined_entries(a: View<'_>, b: View<'_>) -> Vec<Entry> {
    use std::cmp::Ordering;
    let mut out = Vec::with_capacity(a.count + b.count);
    let (mut a, mut b) = (a.entries().peekable(), b.entries().peekable());
    while let (Some(x), Some(y)) = (a.peek().copied(), b.peek().copied()) {
        match x.origin.cmp(&y.origin) {
            Ordering::Less => {
                out.push(x);
                a.next();
            }
            Ordering::Greater => {
                out.push(y);
                b.next();
            }
            Ordering::Equal => {
                out.push(if y.rank() > x.rank() { y } else { x });
                a.next();
                b.next();
            }
        }
    }
    out.extend(a);
    out.extend(b);
    out
}

/// An increment's amount.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Delta {
    /// INCRBY: the total must stay an integer in the i64 range.
    Int(i64),
    /// INCRBYFLOAT: the total becomes (or stays) a float and must stay finite.
    Float(f64),
}

/// Parses a plain value the way Redis reads an integer: optional '-', digits, no leading zero,
/// no sign on zero, within i64.
pub(crate) fn parse_int(text: &[u8]) -> Option<i64> {
    let digits = text.strip_prefix(b"-").unwrap_or(text);
    let canonical = !digits.is_empty() && digits.iter().all(u8::is_ascii_digit) && (digits[0] != b'0' || (digits.len() == 1 && digits.len() == text.len()));
    if !canonical {
        return None;
    }
    std::str::from_utf8(text).ok()?.parse().ok()
}

/// Parses a plain value as a float for INCRBYFLOAT: a finite decimal number without spaces.
pub(crate) fn parse_float(text: &[u8]) -> Option<f64> {
    let s = std::str::from_utf8(text).ok()?;
    if s.is_empty() || s.trim() != s || s.bytes().any(|b| b.is_ascii_alphabetic() && !matches!(b, b'e' | b'E')) {
        return None;
    }
    s.parse::<f64>().ok().filter(|f| f.is_finite())
}

/// The counter an increment builds on, as `current` (the stored value on the origin, if any)
/// presents it at `now_ns`: a live counter as it is, anything else turned into a fresh base.
fn observed(current: Option<&[u8]>, delta: Delta, now_ns: u64) -> Result<Counter, &'static str> {
    let fresh = |time_ns: u64| Counter { base: Base { time_ns, number: Number::Int(0) }, expiry: ExpiryRegister::default(), entries: Vec::new() };
    let Some((h, user)) = current.and_then(Header::split) else { return Ok(fresh(0)) };
    if h.counter {
        let Some(view) = View::parse(user) else { return Ok(fresh(h.event_time_ns)) };
        if h.expired(now_ns) {
            return Ok(fresh(h.expires_at_ns.max(view.base().time_ns.saturating_add(1))));
        }
        return Ok(view.decode());
    }
    if h.tombstone {
        return Ok(fresh(h.event_time_ns));
    }
    if h.expired(now_ns) {
        return Ok(fresh(h.expires_at_ns.max(h.event_time_ns.saturating_add(1))));
    }
    let number = match delta {
        Delta::Int(_) => Number::Int(parse_int(user).ok_or(refusal::NOT_INTEGER)?),
        Delta::Float(_) => match parse_int(user) {
            Some(i) => Number::Int(i),
            None => Number::Float(parse_float(user).ok_or(refusal::NOT_FLOAT)?),
        },
    };
    let expiry = ExpiryRegister { set_at_ns: h.event_time_ns, expires_at_ns: h.expires_at_ns };
    Ok(Counter { base: Base { time_ns: h.event_time_ns, number }, expiry, entries: Vec::new() })
}

/// Takes an increment on its origin: from `current` (the stored value the origin holds, read
/// under its change log's lock), writes into `operand` the stored value to merge and replicate
/// (the base and expiry the origin saw, and its own entry advanced by `delta`), and returns the
/// new total. Refused (with a [`refusal`] text) when the value is not a number of the right
/// kind or the total would overflow or stop being finite; then `operand` is untouched.
pub(crate) fn increment(
    current: Option<&[u8]>,
    origin: u64,
    delta: Delta,
    event_time_ns: u64,
    now_ns: u64,
    operand: &mut Vec<u8>,
) -> Result<Number, &'static str> {
    let mut counter = observed(current, delta, now_ns)?;
    let before = total(counter.base, counter.entries.iter().copied());
    let own = counter.entries.iter().find(|e| e.origin == origin).copied();
    let version = own.map_or(0, |e| e.version) + 1;
    let number = match (delta, before) {
        (Delta::Int(_), Total::Float(_)) => return Err(refusal::NOT_INTEGER),
        (Delta::Int(d), Total::Int(t)) => {
            if i64::try_from(t + i128::from(d)).is_err() {
                return Err(refusal::OVERFLOW);
            }
            let mine = match own.map(|e| e.number) {
                Some(Number::Int(i)) => i,
                _ => 0,
            };
            Number::Int(mine.checked_add(d).ok_or(refusal::OVERFLOW)?)
        }
        (Delta::Float(d), _) => Number::Float(own.map_or(0.0, |e| e.number.as_f64()) + d),
    };
    let mine = Entry { origin, version, number };
    let mut after_entries = counter.entries.clone();
    match after_entries.iter_mut().find(|e| e.origin == origin) {
        Some(e) => *e = mine,
        None => {
            after_entries.push(mine);
            after_entries.sort_unstable_by_key(|e| e.origin);
        }
    }
    let after = match total(counter.base, after_entries.iter().copied()) {
        Total::Int(t) => Number::Int(i64::try_from(t).map_err(|_| refusal::OVERFLOW)?),
        Total::Float(f) if f.is_finite() => Number::Float(f),
        Total::Float(_) => return Err(refusal::NOT_FINITE),
    };
    counter.entries = vec![mine];
    counter.encode(event_time_ns, operand);
    Ok(after)
}

/// Writes into `operand` a counter operand that sets the expiry of the live counter `current`
/// to `expires_at_ns` (0 = never) as of `event_time_ns`; false (nothing written) when
/// `current` is not a well-formed counter.
pub(crate) fn set_expiry(current: &[u8], expires_at_ns: u64, event_time_ns: u64, operand: &mut Vec<u8>) -> bool {
    let Some((_, view)) = as_counter(current) else { return false };
    let counter = Counter { base: view.base(), expiry: ExpiryRegister { set_at_ns: event_time_ns, expires_at_ns }, entries: Vec::new() };
    counter.encode(event_time_ns, operand);
    true
}

#[cfg(test)]
#[path = "counter_tests.rs"]
mod tests;
