//! Requests into typed commands: one [`Command`] per request, its arguments borrowed from the
//! read buffer, every option checked (syntax and number errors are answered before anything
//! reaches the store). The arity has been checked against the table before.
use crate::command::{Access, Args, Cmd};
use crate::options::{self, int_arg, Cond, ExpireCond, Expiry, GetExChange, SetArgs, TypeFilter};
use crate::reply::{errors, Reply};

/// One parsed request.
#[derive(Debug, Clone, Copy)]
pub enum Command<'a> {
    /// PING [message].
    Ping(Option<&'a [u8]>),
    /// ECHO message.
    Echo(&'a [u8]),
    /// HELLO [protover [AUTH user pass] [SETNAME name]].
    Hello { proto: Option<i64>, auth: Option<(&'a [u8], &'a [u8])>, name: Option<&'a [u8]> },
    /// AUTH [user] password.
    Auth { user: Option<&'a [u8]>, password: &'a [u8] },
    /// CLIENT ID.
    ClientId,
    /// CLIENT GETNAME.
    ClientGetName,
    /// CLIENT SETNAME name.
    ClientSetName(&'a [u8]),
    /// CLIENT SETINFO LIB-NAME|LIB-VER value (checked, then ignored).
    ClientSetInfo,
    /// SELECT db.
    Select(i64),
    /// QUIT.
    Quit,
    /// COMMAND [COUNT | DOCS | INFO | LIST].
    Introspect(Introspection<'a>),
    /// CONFIG GET pattern...
    ConfigGet(Args<'a>),
    /// CONFIG RESETSTAT.
    ConfigResetStat,
    /// INFO [section...].
    Info(Args<'a>),
    /// DBSIZE.
    DbSize,
    /// TIME.
    Time,
    /// GET key.
    Get(&'a [u8]),
    /// SET key value [options], SETNX (as `NX`) and GETSET (as `GET`, reply = old value).
    Set { key: &'a [u8], value: &'a [u8], args: SetArgs, reply_int: bool },
    /// GETDEL key.
    GetDel(&'a [u8]),
    /// GETEX key [option].
    GetEx { key: &'a [u8], change: Option<GetExChange> },
    /// MGET key...
    MGet(Args<'a>),
    /// MSET key value ...
    MSet(Args<'a>),
    /// MSETNX key value ...
    MSetNx(Args<'a>),
    /// APPEND key suffix.
    Append { key: &'a [u8], suffix: &'a [u8] },
    /// STRLEN key.
    Strlen(&'a [u8]),
    /// INCR, DECR, INCRBY, DECRBY.
    IncrBy { key: &'a [u8], delta: i64 },
    /// INCRBYFLOAT key delta.
    IncrByFloat { key: &'a [u8], delta: f64 },
    /// DEL / UNLINK key...
    Del(Args<'a>),
    /// EXISTS key...
    Exists(Args<'a>),
    /// TYPE key.
    Type(&'a [u8]),
    /// EXPIRE, PEXPIRE, EXPIREAT, PEXPIREAT: the absolute expiry (ns) and the condition.
    Expire { key: &'a [u8], at_ns: u64, cond: ExpireCond },
    /// TTL / PTTL.
    Ttl { key: &'a [u8], millis: bool },
    /// PERSIST key.
    Persist(&'a [u8]),
    /// SCAN cursor [MATCH pattern] [COUNT n] [TYPE t].
    Scan { cursor: u64, pattern: Option<&'a [u8]>, count: u64, filter: TypeFilter },
    /// KEYS pattern.
    Keys(&'a [u8]),
}

impl<'a> Command<'a> {
    /// Parses request `args` of command `cmd`; `Err` is the reply (syntax, number, subcommand
    /// and subcommand-arity errors). `now_ms` turns relative expiry times into absolute ones.
    pub fn parse(cmd: Cmd, args: Args<'a>, now_ms: i64) -> Result<Command<'a>, Reply> {
        let a = |i| args.get(i);
        let opts = || args.from(3).iter().collect::<Vec<_>>();
        Ok(match cmd {
            Cmd::Ping if args.len() > 2 => return Err(arity("ping")),
            Cmd::Ping => Command::Ping((args.len() == 2).then(|| a(1))),
            Cmd::Echo => Command::Echo(a(1)),
            Cmd::Hello => hello(args)?,
            Cmd::Auth => match args.len() {
                2 => Command::Auth { user: None, password: a(1) },
                3 => Command::Auth { user: Some(a(1)), password: a(2) },
                _ => return Err(errors::SYNTAX),
            },
            Cmd::Client => client(args)?,
            Cmd::Select => Command::Select(int_arg(a(1))?),
            Cmd::Quit => Command::Quit,
            Cmd::Command => command(args)?,
            Cmd::Config => config(args)?,
            Cmd::Info => Command::Info(args.from(1)),
            Cmd::Dbsize => Command::DbSize,
            Cmd::Time => Command::Time,
            Cmd::Get => Command::Get(a(1)),
            Cmd::Set => {
                let rest: Vec<&[u8]> = args.from(3).iter().collect();
                Command::Set { key: a(1), value: a(2), args: options::set_args(&rest, now_ms)?, reply_int: false }
            }
            Cmd::Setex | Cmd::Psetex => {
                let name = if cmd == Cmd::Setex { "setex" } else { "psetex" };
                let n = int_arg(a(2))?;
                let ms = if cmd == Cmd::Setex { n.checked_mul(1000) } else { Some(n) };
                match ms {
                    Some(ms) if n > 0 && ms.checked_add(now_ms).is_some() => Command::Set {
                        key: a(1),
                        value: a(3),
                        args: SetArgs { expiry: Expiry::After(options::ms_to_ns(ms)), ..SetArgs::default() },
                        reply_int: false,
                    },
                    _ => return Err(options::invalid_expire(name)),
                }
            }
            Cmd::Setnx => Command::Set { key: a(1), value: a(2), args: SetArgs { cond: Cond::Nx, ..SetArgs::default() }, reply_int: true },
            Cmd::Getset => Command::Set { key: a(1), value: a(2), args: SetArgs { get: true, ..SetArgs::default() }, reply_int: false },
            Cmd::Getdel => Command::GetDel(a(1)),
            Cmd::Getex => {
                let rest: Vec<&[u8]> = args.from(2).iter().collect();
                Command::GetEx { key: a(1), change: options::getex_args(&rest, now_ms)? }
            }
            Cmd::Mget => Command::MGet(args.from(1)),
            Cmd::Mset | Cmd::Msetnx if args.len() % 2 == 0 => return Err(arity(cmd.spec().name)),
            Cmd::Mset => Command::MSet(args.from(1)),
            Cmd::Msetnx => Command::MSetNx(args.from(1)),
            Cmd::Append => Command::Append { key: a(1), suffix: a(2) },
            Cmd::Strlen => Command::Strlen(a(1)),
            Cmd::Incr => Command::IncrBy { key: a(1), delta: 1 },
            Cmd::Decr => Command::IncrBy { key: a(1), delta: -1 },
            Cmd::Incrby => Command::IncrBy { key: a(1), delta: int_arg(a(2))? },
            Cmd::Decrby => {
                let n = int_arg(a(2))?;
                Command::IncrBy { key: a(1), delta: n.checked_neg().ok_or(Reply::error("ERR decrement would overflow"))? }
            }
            Cmd::Incrbyfloat => Command::IncrByFloat { key: a(1), delta: options::float_arg(a(2))? },
            Cmd::Del | Cmd::Unlink => Command::Del(args.from(1)),
            Cmd::Exists => Command::Exists(args.from(1)),
            Cmd::Type => Command::Type(a(1)),
            Cmd::Expire | Cmd::Pexpire | Cmd::Expireat | Cmd::Pexpireat => {
                let millis = matches!(cmd, Cmd::Pexpire | Cmd::Pexpireat);
                let absolute = matches!(cmd, Cmd::Expireat | Cmd::Pexpireat);
                let (at_ns, cond) = options::expire_args(a(2), &opts(), millis, absolute, now_ms, cmd.spec().name)?;
                Command::Expire { key: a(1), at_ns, cond }
            }
            Cmd::Ttl => Command::Ttl { key: a(1), millis: false },
            Cmd::Pttl => Command::Ttl { key: a(1), millis: true },
            Cmd::Persist => Command::Persist(a(1)),
            Cmd::Scan => {
                let cursor = std::str::from_utf8(a(1)).ok().and_then(|c| c.parse::<u64>().ok()).filter(|_| !a(1).starts_with(b"+"));
                let cursor = cursor.ok_or(errors::INVALID_CURSOR)?;
                let rest: Vec<&[u8]> = args.from(2).iter().collect();
                let (pattern, count, filter) = options::scan_args(&rest)?;
                Command::Scan { cursor, pattern, count, filter }
            }
            Cmd::Keys => Command::Keys(a(1)),
        })
    }

    /// How this command runs in a pipeline wave.
    pub fn access(&self, cmd: Cmd) -> Access {
        match self {
            Command::Set { args, .. } if !args.is_blind() => Access::Modify,
            Command::GetEx { change: None, .. } => Access::Read,
            _ => cmd.spec().access,
        }
    }

    /// Every key this command touches (none for local and barrier commands but MSETNX).
    pub fn keys(&self) -> Keys<'a> {
        match *self {
            Command::Get(k) | Command::GetDel(k) | Command::Strlen(k) | Command::Type(k) | Command::Persist(k) => Keys::One(Some(k)),
            Command::Set { key, .. }
            | Command::GetEx { key, .. }
            | Command::Append { key, .. }
            | Command::IncrBy { key, .. }
            | Command::IncrByFloat { key, .. }
            | Command::Expire { key, .. }
            | Command::Ttl { key, .. } => Keys::One(Some(key)),
            Command::MGet(keys) | Command::Del(keys) | Command::Exists(keys) => Keys::Every { args: keys, next: 0, step: 1 },
            Command::MSet(pairs) | Command::MSetNx(pairs) => Keys::Every { args: pairs, next: 0, step: 2 },
            _ => Keys::One(None),
        }
    }

    /// Calls `f` with every key of [`Command::keys`].
    pub fn for_each_key(&self, f: impl FnMut(&'a [u8])) {
        self.keys().for_each(f)
    }

    /// How many keys [`Command::keys`] yields.
    pub fn key_count(&self) -> usize {
        match self.keys() {
            Keys::One(k) => usize::from(k.is_some()),
            Keys::Every { args, step, .. } => args.len().div_ceil(step),
        }
    }

    /// How many event times this command needs from the gateway clock: one per key written by
    /// a SET, MSET or DEL (sent with the writes), and one for every other read-modify-write.
    /// The store stamps those itself, at its clock or just after the value they change; the
    /// tick taken meanwhile makes every later write of the gateway later still.
    pub fn event_times(&self) -> u64 {
        match self {
            Command::Set { .. } => 1,
            Command::MSet(pairs) | Command::MSetNx(pairs) => pairs.len() as u64 / 2,
            Command::Del(keys) => keys.len() as u64,
            Command::GetDel(_)
            | Command::GetEx { change: Some(_), .. }
            | Command::Append { .. }
            | Command::IncrBy { .. }
            | Command::IncrByFloat { .. }
            | Command::Expire { .. }
            | Command::Persist(_) => 1,
            _ => 0,
        }
    }
}

/// What a COMMAND request asks.
#[derive(Debug, Clone, Copy)]
pub enum Introspection<'a> {
    /// COMMAND: every command's description.
    All,
    /// COMMAND COUNT.
    Count,
    /// COMMAND DOCS [name...] (answered with no documentation).
    Docs,
    /// COMMAND INFO name...
    Info(Args<'a>),
    /// COMMAND LIST.
    Names,
}

/// The keys of one command, borrowed from its request.
#[derive(Debug, Clone)]
pub enum Keys<'a> {
    /// At most one key.
    One(Option<&'a [u8]>),
    /// Every `step`-th argument from `next` on.
    Every {
        /// The arguments holding the keys.
        args: Args<'a>,
        /// The next one to yield.
        next: usize,
        /// 1 for key lists, 2 for key-value pairs.
        step: usize,
    },
}

impl<'a> Iterator for Keys<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        match self {
            Keys::One(k) => k.take(),
            Keys::Every { args, next, step } => {
                if *next >= args.len() {
                    return None;
                }
                let key = args.get(*next);
                *next += *step;
                Some(key)
            }
        }
    }
}

/// `wrong number of arguments for 'name' command`.
pub fn arity(name: &str) -> Reply {
    Reply::err(format!("wrong number of arguments for '{name}' command"))
}

fn unknown_subcommand(sub: &[u8], cmd: &str) -> Reply {
    Reply::err(format!("unknown subcommand '{}'. Try {cmd} HELP.", String::from_utf8_lossy(&sub[..sub.len().min(128)])))
}

/// Whether `name` is a valid client name: printable ASCII without spaces (or empty).
pub fn valid_client_name(name: &[u8]) -> bool {
    name.iter().all(|&c| (b'!'..=b'~').contains(&c))
}

/// The error for an invalid client name.
pub const BAD_CLIENT_NAME: Reply = Reply::error("ERR Client names cannot contain spaces, newlines or special characters.");

fn hello(args: Args<'_>) -> Result<Command<'_>, Reply> {
    let mut proto = None;
    let mut i = 1;
    if args.len() >= 2 {
        let v = int_arg(args.get(1)).map_err(|_| Reply::error("ERR Protocol version is not an integer or out of range"))?;
        if !(2..=3).contains(&v) {
            return Err(Reply::error("NOPROTO unsupported protocol version"));
        }
        proto = Some(v);
        i = 2;
    }
    let (mut auth, mut name) = (None, None);
    while i < args.len() {
        let opt = args.get(i);
        let more = args.len() - 1 - i;
        if opt.eq_ignore_ascii_case(b"auth") && more >= 2 {
            auth = Some((args.get(i + 1), args.get(i + 2)));
            i += 3;
        } else if opt.eq_ignore_ascii_case(b"setname") && more >= 1 {
            let n = args.get(i + 1);
            if !valid_client_name(n) {
                return Err(BAD_CLIENT_NAME);
            }
            name = Some(n);
            i += 2;
        } else {
            return Err(Reply::err(format!("Syntax error in HELLO option '{}'", String::from_utf8_lossy(opt))));
        }
    }
    Ok(Command::Hello { proto, auth, name })
}

fn client(args: Args<'_>) -> Result<Command<'_>, Reply> {
    let sub = args.get(1);
    let is = |name: &str| sub.eq_ignore_ascii_case(name.as_bytes());
    let want = |n: usize, name: &str| if args.len() == n { Ok(()) } else { Err(arity(&format!("client|{name}"))) };
    if is("id") {
        want(2, "id").map(|_| Command::ClientId)
    } else if is("getname") {
        want(2, "getname").map(|_| Command::ClientGetName)
    } else if is("setname") {
        want(3, "setname")?;
        if !valid_client_name(args.get(2)) {
            return Err(BAD_CLIENT_NAME);
        }
        Ok(Command::ClientSetName(args.get(2)))
    } else if is("setinfo") {
        want(4, "setinfo")?;
        let attr = args.get(2);
        let lib_name = attr.eq_ignore_ascii_case(b"lib-name");
        if !lib_name && !attr.eq_ignore_ascii_case(b"lib-ver") {
            return Err(Reply::err(format!("Unrecognized option '{}'", String::from_utf8_lossy(attr))));
        }
        if !valid_client_name(args.get(3)) {
            let which = if lib_name { "lib-name" } else { "lib-ver" };
            return Err(Reply::err(format!("{which} cannot contain spaces, newlines or special characters.")));
        }
        Ok(Command::ClientSetInfo)
    } else {
        Err(unknown_subcommand(sub, "CLIENT"))
    }
}

fn command(args: Args<'_>) -> Result<Command<'_>, Reply> {
    if args.len() == 1 {
        return Ok(Command::Introspect(Introspection::All));
    }
    let sub = args.get(1);
    let is = |name: &str| sub.eq_ignore_ascii_case(name.as_bytes());
    if is("count") {
        if args.len() != 2 {
            return Err(arity("command|count"));
        }
        Ok(Command::Introspect(Introspection::Count))
    } else if is("docs") {
        Ok(Command::Introspect(Introspection::Docs))
    } else if is("info") {
        Ok(Command::Introspect(Introspection::Info(args.from(2))))
    } else if is("list") {
        Ok(Command::Introspect(Introspection::Names))
    } else {
        Err(unknown_subcommand(sub, "COMMAND"))
    }
}

fn config(args: Args<'_>) -> Result<Command<'_>, Reply> {
    let sub = args.get(1);
    let is = |name: &str| sub.eq_ignore_ascii_case(name.as_bytes());
    if is("get") {
        if args.len() < 3 {
            return Err(arity("config|get"));
        }
        Ok(Command::ConfigGet(args.from(2)))
    } else if is("resetstat") {
        if args.len() != 2 {
            return Err(arity("config|resetstat"));
        }
        Ok(Command::ConfigResetStat)
    } else if is("set") {
        if args.len() < 4 || args.len() % 2 != 0 {
            return Err(arity("config|set"));
        }
        Err(Reply::err(format!("Unknown option or number of arguments for CONFIG SET - '{}'", String::from_utf8_lossy(args.get(2)))))
    } else {
        Err(unknown_subcommand(sub, "CONFIG"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::lookup;
    use crate::resp::Span;

    /// Parses `words` as one request (at a fixed time).
    fn with<T>(words: &[&str], f: impl FnOnce(Cmd, Result<Command<'_>, Reply>) -> T) -> T {
        let buf: Vec<u8> = words.concat().into_bytes();
        let mut spans = Vec::new();
        let mut at = 0;
        for w in words {
            spans.push(Span { start: at, end: at + w.len() });
            at += w.len();
        }
        let cmd = lookup(words[0].as_bytes()).expect("a known command");
        f(cmd, Command::parse(cmd, Args::new(&buf, &spans), 1_700_000_000_000))
    }

    fn access(words: &[&str]) -> Access {
        with(words, |cmd, c| c.expect("parses").access(cmd))
    }

    #[test]
    fn commands_classify_for_waves() {
        assert_eq!(access(&["GET", "k"]), Access::Read);
        assert_eq!(access(&["SET", "k", "v"]), Access::Write);
        assert_eq!(access(&["SET", "k", "v", "EX", "5"]), Access::Write, "a TTL needs no read");
        assert_eq!(access(&["SET", "k", "v", "PXAT", "5"]), Access::Write);
        assert_eq!(access(&["SET", "k", "v", "NX"]), Access::Modify);
        assert_eq!(access(&["SET", "k", "v", "GET"]), Access::Modify);
        assert_eq!(access(&["SET", "k", "v", "KEEPTTL"]), Access::Modify);
        assert_eq!(access(&["SETEX", "k", "5", "v"]), Access::Write);
        assert_eq!(access(&["MSET", "a", "1", "b", "2"]), Access::Write);
        assert_eq!(access(&["MSETNX", "a", "1"]), Access::Barrier);
        assert_eq!(access(&["GETEX", "k"]), Access::Read);
        assert_eq!(access(&["GETEX", "k", "PERSIST"]), Access::Modify);
        assert_eq!(access(&["INCR", "k"]), Access::Modify);
        assert_eq!(access(&["DEL", "k"]), Access::Modify);
        assert_eq!(access(&["SCAN", "0"]), Access::Barrier);
        assert_eq!(access(&["PING"]), Access::Local);
    }

    #[test]
    fn keys_and_event_times() {
        with(&["MSET", "a", "1", "b", "2", "a", "3"], |_, c| {
            let c = c.expect("parses");
            assert_eq!(c.keys().collect::<Vec<_>>(), vec![&b"a"[..], b"b", b"a"]);
            assert_eq!((c.key_count(), c.event_times()), (3, 3), "a tick per pair: the later `a` wins");
        });
        with(&["DEL", "a", "b"], |_, c| assert_eq!(c.expect("parses").event_times(), 2));
        with(&["INCR", "a"], |_, c| assert_eq!(c.expect("parses").event_times(), 1, "a fence tick"));
        with(&["GET", "a"], |_, c| assert_eq!(c.expect("parses").event_times(), 0));
        with(&["PING"], |_, c| assert_eq!(c.expect("parses").key_count(), 0));
    }

    #[test]
    fn argument_errors() {
        let err = |words: &[&str]| with(words, |_, c| c.err());
        assert_eq!(err(&["DECRBY", "k", "-9223372036854775808"]), Some(Reply::error("ERR decrement would overflow")));
        assert_eq!(err(&["MSET", "a", "1", "b"]), Some(arity("mset")));
        assert_eq!(err(&["PING", "a", "b"]), Some(arity("ping")));
        assert_eq!(err(&["SETEX", "k", "0", "v"]), Some(options::invalid_expire("setex")));
        assert_eq!(err(&["SCAN", "+1"]), Some(errors::INVALID_CURSOR));
        assert_eq!(err(&["HELLO", "1"]), Some(Reply::error("NOPROTO unsupported protocol version")));
        assert_eq!(err(&["HELLO", "3", "AUTH", "u"]), Some(Reply::err("Syntax error in HELLO option 'AUTH'")));
        assert_eq!(err(&["CLIENT", "SETNAME"]), Some(arity("client|setname")));
        assert_eq!(err(&["CLIENT", "KILL"]), Some(Reply::err("unknown subcommand 'KILL'. Try CLIENT HELP.")));
        assert_eq!(err(&["CONFIG", "SET", "a", "b"]), Some(Reply::err("Unknown option or number of arguments for CONFIG SET - 'a'")));
        assert_eq!(err(&["AUTH", "a", "b", "c"]), Some(errors::SYNTAX));
        assert!(err(&["SET", "k", "v", "EX", "5"]).is_none());
    }
}
