//! The command table: every command the gateway knows, its arity (Redis's convention: `n` is
//! exactly `n` arguments with the name, `-n` at least `n`), what `COMMAND` reports about it,
//! and how it takes part in a pipeline wave. One row per command; [`Cmd`] indexes the table
//! and the per-command statistics.
use crate::resp::Span;

/// How a command touches the keyspace; decides which commands of a pipeline may run at once
/// (see [`crate::wave`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// No store access: answered by the gateway at once, in order.
    Local,
    /// Reads its keys.
    Read,
    /// Overwrites its keys without reading them (plain SET, SETEX, PSETEX, MSET): ordered by
    /// event time, so two of them may run at once.
    Write,
    /// Reads and writes its keys (INCR, APPEND, conditional SET, DEL, EXPIRE, ...).
    Modify,
    /// Touches many keys or global state (SCAN, KEYS, DBSIZE, MSETNX, INFO, HELLO, QUIT):
    /// runs alone, after everything before it and before everything after it.
    Barrier,
}

/// One row of the command table.
#[derive(Debug)]
pub struct Spec {
    /// Lower-case name, as in error messages and `INFO commandstats`.
    pub name: &'static str,
    /// Redis arity, the name included.
    pub arity: i32,
    /// `COMMAND` flags.
    pub flags: &'static [&'static str],
    /// First key, last key (-1: the last argument), step; 0 0 0 without keys.
    pub keys: (i64, i64, i64),
    /// How it runs in a pipeline (a SET's options may make it [`Access::Modify`]).
    pub access: Access,
}

macro_rules! commands {
    ($($variant:ident $name:literal $arity:literal [$($flag:literal),*] ($f:literal $l:literal $s:literal) $access:ident;)*) => {
        /// A known command; the index of its row in [`SPECS`].
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[repr(usize)]
        pub enum Cmd { $(#[doc = $name] $variant),* }

        /// The command table, in [`Cmd`] order.
        pub static SPECS: &[Spec] = &[
            $(Spec { name: $name, arity: $arity, flags: &[$($flag),*], keys: ($f, $l, $s), access: Access::$access }),*
        ];

        /// The command called `name` (any case), if the gateway knows it.
        pub fn lookup(name: &[u8]) -> Option<Cmd> {
            let mut lower = [0u8; 16];
            let lower = lower.get_mut(..name.len())?;
            for (l, c) in lower.iter_mut().zip(name) {
                *l = c.to_ascii_lowercase();
            }
            match &*lower {
                $(n if n == $name.as_bytes() => Some(Cmd::$variant),)*
                _ => None,
            }
        }
    };
}

commands! {
    Ping "ping" -1 ["fast", "stale"] (0 0 0) Local;
    Echo "echo" 2 ["fast", "stale"] (0 0 0) Local;
    Hello "hello" -1 ["noscript", "loading", "stale", "fast", "no_auth", "allow_busy"] (0 0 0) Barrier;
    Auth "auth" -2 ["noscript", "loading", "stale", "fast", "no_auth", "allow_busy"] (0 0 0) Local;
    Client "client" -2 ["sentinel"] (0 0 0) Local;
    Select "select" 2 ["loading", "stale", "fast"] (0 0 0) Local;
    Quit "quit" -1 ["noscript", "loading", "stale", "fast", "no_auth", "allow_busy"] (0 0 0) Barrier;
    Command "command" -1 ["loading", "stale"] (0 0 0) Local;
    Config "config" -2 ["admin", "noscript", "loading", "stale"] (0 0 0) Local;
    Info "info" -1 ["loading", "stale"] (0 0 0) Barrier;
    Dbsize "dbsize" 1 ["readonly"] (0 0 0) Barrier;
    Time "time" 1 ["loading", "stale", "fast"] (0 0 0) Local;
    Get "get" 2 ["readonly", "fast"] (1 1 1) Read;
    Set "set" -3 ["write", "denyoom"] (1 1 1) Write;
    Setex "setex" 4 ["write", "denyoom"] (1 1 1) Write;
    Psetex "psetex" 4 ["write", "denyoom"] (1 1 1) Write;
    Setnx "setnx" 3 ["write", "denyoom", "fast"] (1 1 1) Modify;
    Getset "getset" 3 ["write", "denyoom", "fast"] (1 1 1) Modify;
    Getdel "getdel" 2 ["write", "fast"] (1 1 1) Modify;
    Getex "getex" -2 ["write", "fast"] (1 1 1) Modify;
    Mget "mget" -2 ["readonly", "fast"] (1 -1 1) Read;
    Mset "mset" -3 ["write", "denyoom"] (1 -1 2) Write;
    Msetnx "msetnx" -3 ["write", "denyoom"] (1 -1 2) Barrier;
    Append "append" 3 ["write", "denyoom", "fast"] (1 1 1) Modify;
    Strlen "strlen" 2 ["readonly", "fast"] (1 1 1) Read;
    Incr "incr" 2 ["write", "denyoom", "fast"] (1 1 1) Modify;
    Decr "decr" 2 ["write", "denyoom", "fast"] (1 1 1) Modify;
    Incrby "incrby" 3 ["write", "denyoom", "fast"] (1 1 1) Modify;
    Decrby "decrby" 3 ["write", "denyoom", "fast"] (1 1 1) Modify;
    Incrbyfloat "incrbyfloat" 3 ["write", "denyoom", "fast"] (1 1 1) Modify;
    Del "del" -2 ["write"] (1 -1 1) Modify;
    Unlink "unlink" -2 ["write", "fast"] (1 -1 1) Modify;
    Exists "exists" -2 ["readonly", "fast"] (1 -1 1) Read;
    Type "type" 2 ["readonly", "fast"] (1 1 1) Read;
    Expire "expire" -3 ["write", "fast"] (1 1 1) Modify;
    Pexpire "pexpire" -3 ["write", "fast"] (1 1 1) Modify;
    Expireat "expireat" -3 ["write", "fast"] (1 1 1) Modify;
    Pexpireat "pexpireat" -3 ["write", "fast"] (1 1 1) Modify;
    Ttl "ttl" 2 ["readonly", "fast"] (1 1 1) Read;
    Pttl "pttl" 2 ["readonly", "fast"] (1 1 1) Read;
    Persist "persist" 2 ["write", "fast"] (1 1 1) Modify;
    Scan "scan" -2 ["readonly"] (0 0 0) Barrier;
    Keys "keys" 2 ["readonly"] (0 0 0) Barrier;
}

impl Cmd {
    /// This command's row.
    pub fn spec(self) -> &'static Spec {
        &SPECS[self as usize]
    }

    /// Whether `argc` arguments (the name included) fit its arity.
    pub fn arity_ok(self, argc: usize) -> bool {
        let arity = self.spec().arity;
        if arity >= 0 {
            argc == arity as usize
        } else {
            argc >= arity.unsigned_abs() as usize
        }
    }

    /// Whether it may run before the client authenticated (Redis: AUTH, HELLO, QUIT).
    pub fn no_auth(self) -> bool {
        matches!(self, Cmd::Auth | Cmd::Hello | Cmd::Quit)
    }
}

/// The arguments of one request (its name is argument 0), borrowed from the read buffer.
#[derive(Debug, Clone, Copy)]
pub struct Args<'a> {
    buf: &'a [u8],
    spans: &'a [Span],
}

impl<'a> Args<'a> {
    /// The arguments `spans` of `buf`.
    pub fn new(buf: &'a [u8], spans: &'a [Span]) -> Self {
        Self { buf, spans }
    }

    /// How many there are, the name included.
    pub fn len(&self) -> usize {
        self.spans.len()
    }

    /// Argument `i`; empty when there is none (never panics).
    pub fn get(&self, i: usize) -> &'a [u8] {
        self.spans.get(i).and_then(|s| self.buf.get(s.start..s.end)).unwrap_or_default()
    }

    /// The arguments from `i` on.
    pub fn from(&self, i: usize) -> Args<'a> {
        Args { buf: self.buf, spans: self.spans.get(i..).unwrap_or_default() }
    }

    /// Every argument in order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = &'a [u8]> + Clone + 'a {
        let buf = self.buf;
        self.spans.iter().map(move |s| buf.get(s.start..s.end).unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_ignores_case_and_the_table_is_consistent() {
        assert_eq!(lookup(b"GET"), Some(Cmd::Get));
        assert_eq!(lookup(b"IncrByFloat"), Some(Cmd::Incrbyfloat));
        assert_eq!(lookup(b"nosuchcommand"), None);
        assert_eq!(lookup(b"a-name-longer-than-any-command"), None);
        assert_eq!(lookup(b""), None);
        for (i, spec) in SPECS.iter().enumerate() {
            assert_eq!(lookup(spec.name.as_bytes()).map(|c| c as usize), Some(i), "{}", spec.name);
        }
        assert!(Cmd::Get.arity_ok(2) && !Cmd::Get.arity_ok(3));
        assert!(Cmd::Mset.arity_ok(3) && Cmd::Mset.arity_ok(5) && !Cmd::Mset.arity_ok(2));
    }

    #[test]
    fn args_never_panic_out_of_range() {
        let buf = b"GETkey";
        let spans = [Span { start: 0, end: 3 }, Span { start: 3, end: 6 }, Span { start: 5, end: 99 }];
        let args = Args::new(buf, &spans);
        assert_eq!((args.get(0), args.get(1), args.get(2), args.get(7)), (&b"GET"[..], &b"key"[..], &b""[..], &b""[..]));
        assert_eq!(args.from(1).len(), 2);
        assert_eq!(args.from(9).len(), 0);
    }
}
