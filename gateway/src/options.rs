//! Option lists of SET, GETEX, EXPIRE and SCAN, parsed with Redis 7's rules and error texts.
//! Times are turned into absolute nanoseconds since the Unix epoch (the store's unit) here, from
//! the `now` the caller passes, so parsing is deterministic and testable.
use crate::reply::{errors, Reply};
use crate::resp::parse_i64;

/// When SET writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Cond {
    /// Always.
    #[default]
    Always,
    /// NX: only if the key is missing.
    Nx,
    /// XX: only if the key exists.
    Xx,
}

/// What a write does to the key's expiry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Expiry {
    /// No expiry (a plain SET clears the TTL).
    #[default]
    Never,
    /// Expire this many nanoseconds after the write (EX, PX, SETEX, PSETEX).
    After(u64),
    /// Expire at this absolute time, ns since the epoch (EXAT, PXAT).
    At(u64),
    /// Keep the key's current expiry (KEEPTTL).
    Keep,
}

impl Expiry {
    /// The absolute expiry of a write made at `now_ns` (`None` for [`Expiry::Never`] and
    /// [`Expiry::Keep`]).
    pub fn deadline(self, now_ns: u64) -> Option<u64> {
        match self {
            Expiry::After(d) => Some(now_ns.saturating_add(d)),
            Expiry::At(t) => Some(t),
            Expiry::Never | Expiry::Keep => None,
        }
    }
}

/// The options of one SET.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SetArgs {
    /// NX / XX.
    pub cond: Cond,
    /// EX / PX / EXAT / PXAT / KEEPTTL.
    pub expiry: Expiry,
    /// GET: answer with the old value.
    pub get: bool,
}

impl SetArgs {
    /// Whether this SET overwrites without reading (no NX, XX, GET or KEEPTTL): such writes
    /// are ordered by their event times alone.
    pub fn is_blind(&self) -> bool {
        self.cond == Cond::Always && !self.get && self.expiry != Expiry::Keep
    }
}

/// What GETEX does to the expiry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GetExChange {
    /// Set it (EX, PX, EXAT, PXAT), absolute ns.
    At(u64),
    /// Remove it (PERSIST).
    Persist,
}

/// EXPIRE's NX / XX / GT / LT.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ExpireCond {
    /// No condition.
    #[default]
    Always,
    /// NX: only if the key has no expiry.
    Nx,
    /// XX: only if it has one.
    Xx,
    /// GT: only if the new expiry is later (no expiry counts as infinitely late).
    Gt,
    /// LT: only if the new expiry is earlier.
    Lt,
    /// XX and LT: only if the key has an expiry and the new one is earlier.
    XxLt,
}

/// A number that must be an integer (Redis's `getLongLongFromObject`).
pub fn int_arg(arg: &[u8]) -> Result<i64, Reply> {
    parse_i64(arg).ok_or(errors::NOT_INTEGER)
}

/// A number that must be a float (INCRBYFLOAT): no spaces, not NaN.
pub fn float_arg(arg: &[u8]) -> Result<f64, Reply> {
    let text = std::str::from_utf8(arg).map_err(|_| errors::NOT_FLOAT)?;
    match text.parse::<f64>() {
        Ok(v) if !v.is_nan() => Ok(v),
        _ => Err(errors::NOT_FLOAT),
    }
}

/// `invalid expire time in 'cmd' command`.
pub fn invalid_expire(cmd: &str) -> Reply {
    Reply::err(format!("invalid expire time in '{cmd}' command"))
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Unit {
    Ex,
    Px,
    ExAt,
    PxAt,
}

/// An expire argument of SET, SETEX, PSETEX or GETEX: positive, not overflowing; `now_ms` is
/// the current time for the relative units. Returns the expiry relative (`After`) or absolute.
fn expire_arg(arg: &[u8], unit: Unit, now_ms: i64, cmd: &str) -> Result<Expiry, Reply> {
    let n = int_arg(arg)?;
    if n <= 0 || (matches!(unit, Unit::Ex | Unit::ExAt) && n > i64::MAX / 1000) {
        return Err(invalid_expire(cmd));
    }
    let ms = if matches!(unit, Unit::Ex | Unit::ExAt) { n * 1000 } else { n };
    match unit {
        Unit::Ex | Unit::Px => {
            ms.checked_add(now_ms).ok_or_else(|| invalid_expire(cmd))?;
            Ok(Expiry::After(ms_to_ns(ms)))
        }
        Unit::ExAt | Unit::PxAt => Ok(Expiry::At(ms_to_ns(ms))),
    }
}

/// Milliseconds to nanoseconds, saturating at the largest time the store can hold.
pub fn ms_to_ns(ms: i64) -> u64 {
    (ms.max(0) as u64).saturating_mul(1_000_000)
}

fn eq(arg: &[u8], name: &str) -> bool {
    arg.eq_ignore_ascii_case(name.as_bytes())
}

/// The options after `SET key value`.
pub fn set_args(opts: &[&[u8]], now_ms: i64) -> Result<SetArgs, Reply> {
    let mut args = SetArgs::default();
    let mut unit: Option<(Unit, &[u8])> = None;
    let mut i = 0;
    while i < opts.len() {
        let opt = opts[i];
        let next = opts.get(i + 1).copied();
        let no_expiry = unit.is_none() && args.expiry != Expiry::Keep;
        let expiry_unit = [("ex", Unit::Ex), ("px", Unit::Px), ("exat", Unit::ExAt), ("pxat", Unit::PxAt)].into_iter().find(|(n, _)| eq(opt, n));
        if eq(opt, "nx") && args.cond != Cond::Xx {
            args.cond = Cond::Nx;
        } else if eq(opt, "xx") && args.cond != Cond::Nx {
            args.cond = Cond::Xx;
        } else if eq(opt, "get") {
            args.get = true;
        } else if eq(opt, "keepttl") && unit.is_none() {
            args.expiry = Expiry::Keep;
        } else if let (Some((_, u)), Some(value)) = (expiry_unit, next) {
            // The same unit again replaces the value; another unit is a syntax error.
            if !(no_expiry || unit.is_some_and(|(prev, _)| prev == u)) {
                return Err(errors::SYNTAX);
            }
            unit = Some((u, value));
            i += 1;
        } else {
            return Err(errors::SYNTAX);
        }
        i += 1;
    }
    if let Some((u, value)) = unit {
        args.expiry = expire_arg(value, u, now_ms, "set")?;
    }
    Ok(args)
}

/// The options after `GETEX key`: at most one of EX, PX, EXAT, PXAT, PERSIST.
pub fn getex_args(opts: &[&[u8]], now_ms: i64) -> Result<Option<GetExChange>, Reply> {
    match opts {
        [] => Ok(None),
        [opt] if eq(opt, "persist") => Ok(Some(GetExChange::Persist)),
        [opt, value] => {
            let unit = [("ex", Unit::Ex), ("px", Unit::Px), ("exat", Unit::ExAt), ("pxat", Unit::PxAt)].into_iter().find(|(n, _)| eq(opt, n));
            let Some((_, u)) = unit else { return Err(errors::SYNTAX) };
            let deadline = expire_arg(value, u, now_ms, "getex")?.deadline(ms_to_ns(now_ms));
            Ok(deadline.map(GetExChange::At))
        }
        _ => Err(errors::SYNTAX),
    }
}

/// The time and options of EXPIRE (`seconds`), PEXPIRE (`millis`), EXPIREAT and PEXPIREAT
/// (`absolute`): the absolute expiry in ns (a time in the past deletes the key) and the condition.
pub fn expire_args(when: &[u8], opts: &[&[u8]], millis: bool, absolute: bool, now_ms: i64, cmd: &str) -> Result<(u64, ExpireCond), Reply> {
    let (mut nx, mut xx, mut gt, mut lt) = (false, false, false, false);
    for opt in opts {
        match () {
            _ if eq(opt, "nx") => nx = true,
            _ if eq(opt, "xx") => xx = true,
            _ if eq(opt, "gt") => gt = true,
            _ if eq(opt, "lt") => lt = true,
            _ => return Err(Reply::err(format!("Unsupported option {}", String::from_utf8_lossy(opt)))),
        }
    }
    if nx && (xx || gt || lt) {
        return Err(Reply::error("ERR NX and XX, GT or LT options at the same time are not compatible"));
    }
    if gt && lt {
        return Err(Reply::error("ERR GT and LT options at the same time are not compatible"));
    }
    let n = int_arg(when)?;
    let ms = if millis { n } else { n.checked_mul(1000).ok_or_else(|| invalid_expire(cmd))? };
    let ms = if absolute { ms } else { ms.checked_add(now_ms).ok_or_else(|| invalid_expire(cmd))? };
    // Never 0: the store reads 0 as "no expiry"; anything in the past deletes the key.
    let at = ms_to_ns(ms).max(1);
    let cond = match (nx, xx, gt, lt) {
        (true, ..) => ExpireCond::Nx,
        (_, _, true, _) => ExpireCond::Gt,
        (_, true, _, true) => ExpireCond::XxLt,
        (_, _, _, true) => ExpireCond::Lt,
        (_, true, ..) => ExpireCond::Xx,
        _ => ExpireCond::Always,
    };
    Ok((at, cond))
}

/// What SCAN's TYPE option selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TypeFilter {
    /// No TYPE, or TYPE string: every key (all Vasto values are strings).
    All,
    /// A Redis type Vasto does not have: no key.
    Nothing,
}

/// The options after `SCAN cursor`: pattern, COUNT (default 10) and TYPE.
pub fn scan_args<'a>(opts: &[&'a [u8]]) -> Result<(Option<&'a [u8]>, u64, TypeFilter), Reply> {
    let (mut pattern, mut count, mut filter) = (None, 10u64, TypeFilter::All);
    let mut i = 0;
    while i < opts.len() {
        let Some(&value) = opts.get(i + 1) else { return Err(errors::SYNTAX) };
        if eq(opts[i], "count") {
            let n = int_arg(value)?;
            if n < 1 {
                return Err(errors::SYNTAX);
            }
            count = n as u64;
        } else if eq(opts[i], "match") {
            pattern = (value != b"*").then_some(value);
        } else if eq(opts[i], "type") {
            filter = match value.to_ascii_lowercase().as_slice() {
                b"string" => TypeFilter::All,
                b"list" | b"set" | b"zset" | b"hash" | b"stream" => TypeFilter::Nothing,
                _ => return Err(Reply::err(format!("unknown type name '{}'", String::from_utf8_lossy(value)))),
            };
        } else {
            return Err(errors::SYNTAX);
        }
        i += 2;
    }
    Ok((pattern, count, filter))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW_MS: i64 = 1_700_000_000_000;

    fn set(opts: &str) -> Result<SetArgs, Reply> {
        let parts: Vec<&[u8]> = opts.split_whitespace().map(str::as_bytes).collect();
        set_args(&parts, NOW_MS)
    }

    #[test]
    fn set_options_follow_redis_7() {
        assert_eq!(set(""), Ok(SetArgs::default()));
        assert!(set("").unwrap().is_blind());
        assert_eq!(set("ex 10").unwrap().expiry, Expiry::After(10_000_000_000));
        assert!(set("EX 10").unwrap().is_blind(), "a TTL needs no read");
        assert_eq!(set("px 1500").unwrap().expiry, Expiry::After(1_500_000_000));
        assert_eq!(set("exat 1700000100").unwrap().expiry, Expiry::At(1_700_000_100_000_000_000));
        assert_eq!(set("pxat 1700000100123").unwrap().expiry, Expiry::At(1_700_000_100_123_000_000));
        assert_eq!(set("ex 1 ex 5").unwrap().expiry, Expiry::After(5_000_000_000), "the same option twice: the last wins");
        let nx_get = set("nx get keepttl").unwrap();
        assert_eq!((nx_get.cond, nx_get.get, nx_get.expiry), (Cond::Nx, true, Expiry::Keep));
        assert!(!nx_get.is_blind());
        assert_eq!(set("xx xx").unwrap().cond, Cond::Xx);
        for bad in ["nx xx", "xx nx", "ex 1 px 1", "px 1 exat 5", "ex 1 keepttl", "keepttl ex 1", "ex", "foo", "persist", "nx 10"] {
            assert_eq!(set(bad), Err(errors::SYNTAX), "{bad}");
        }
        assert_eq!(set("ex ten"), Err(errors::NOT_INTEGER));
        for bad in ["ex 0", "px -5", "ex 9223372036854775807", "pxat 0", "px 9223372036854775807"] {
            assert_eq!(set(bad), Err(invalid_expire("set")), "{bad}");
        }
        assert_eq!(invalid_expire("set"), Reply::error("ERR invalid expire time in 'set' command"));
    }

    #[test]
    fn getex_options() {
        let g = |s: &str| getex_args(&s.split_whitespace().map(str::as_bytes).collect::<Vec<_>>(), NOW_MS);
        assert_eq!(g(""), Ok(None));
        assert_eq!(g("persist"), Ok(Some(GetExChange::Persist)));
        assert_eq!(g("ex 1"), Ok(Some(GetExChange::At(1_700_000_001_000_000_000))));
        assert_eq!(g("pxat 5"), Ok(Some(GetExChange::At(5_000_000))));
        assert_eq!(g("ex 1 px 2"), Err(errors::SYNTAX));
        assert_eq!(g("nx"), Err(errors::SYNTAX));
        assert_eq!(g("ex 0"), Err(invalid_expire("getex")));
    }

    #[test]
    fn expire_options_and_times() {
        let e = |when: &str, opts: &str, millis, absolute| {
            expire_args(when.as_bytes(), &opts.split_whitespace().map(str::as_bytes).collect::<Vec<_>>(), millis, absolute, NOW_MS, "expire")
        };
        assert_eq!(e("10", "", false, false), Ok((1_700_000_010_000_000_000, ExpireCond::Always)));
        assert_eq!(e("10", "nx", true, false), Ok((1_700_000_000_010_000_000, ExpireCond::Nx)));
        assert_eq!(e("5", "xx gt", false, true), Ok((5_000_000_000, ExpireCond::Gt)), "GT already needs an expiry");
        assert_eq!(e("5", "lt xx", false, true), Ok((5_000_000_000, ExpireCond::XxLt)));
        assert_eq!(e("-5", "", false, false).map(|(at, _)| at < 1_700_000_000_000_000_000), Ok(true), "negative: in the past");
        assert_eq!(e("-5", "", false, true).map(|(at, _)| at), Ok(1), "never 0 (no expiry)");
        assert_eq!(e("1", "nx xx", false, false), Err(Reply::error("ERR NX and XX, GT or LT options at the same time are not compatible")));
        assert_eq!(e("1", "gt lt", false, false), Err(Reply::error("ERR GT and LT options at the same time are not compatible")));
        assert_eq!(e("1", "foo", false, false), Err(Reply::err("Unsupported option foo")));
        assert_eq!(e("x", "", false, false), Err(errors::NOT_INTEGER));
        assert_eq!(e("9223372036854775807", "", false, false), Err(invalid_expire("expire")));
    }

    #[test]
    fn scan_options_and_numbers() {
        fn s(opts: &'static str) -> Result<(Option<&'static [u8]>, u64, TypeFilter), Reply> {
            scan_args(&opts.split_whitespace().map(str::as_bytes).collect::<Vec<_>>())
        }
        assert_eq!(s(""), Ok((None, 10, TypeFilter::All)));
        assert_eq!(s("MATCH user:* COUNT 100 TYPE string"), Ok((Some(&b"user:*"[..]), 100, TypeFilter::All)));
        assert_eq!(s("match *"), Ok((None, 10, TypeFilter::All)));
        assert_eq!(s("type hash"), Ok((None, 10, TypeFilter::Nothing)));
        assert_eq!(s("count 0"), Err(errors::SYNTAX));
        assert_eq!(s("count"), Err(errors::SYNTAX));
        assert_eq!(s("count x"), Err(errors::NOT_INTEGER));
        assert_eq!(s("type blob"), Err(Reply::err("unknown type name 'blob'")));
        assert_eq!(float_arg(b"10.5"), Ok(10.5));
        assert_eq!(float_arg(b"-3e2"), Ok(-300.0));
        assert_eq!(float_arg(b"nan"), Err(errors::NOT_FLOAT));
        assert_eq!(float_arg(b" 1"), Err(errors::NOT_FLOAT));
        assert_eq!(float_arg(b"abc"), Err(errors::NOT_FLOAT));
    }
}
