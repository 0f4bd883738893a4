//! Commands the gateway answers itself, without the store: connection state (HELLO, AUTH,
//! CLIENT, SELECT, QUIT), introspection (COMMAND, CONFIG GET, INFO) and PING, ECHO, TIME.
use crate::command::{Cmd, SPECS};
use crate::glob::glob_match;
use crate::parse::{Command, Introspection};
use crate::reply::{errors, Proto, Reply};
use crate::{Session, Shared};
use std::sync::atomic::Ordering::Relaxed;

/// The Redis version the gateway claims (`HELLO`, `INFO`): the command set and replies follow
/// Redis 7.
pub const REDIS_VERSION: &str = "7.2.0";

const NO_PASSWORD: Reply =
    Reply::error("ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?");
const HELLO_NOAUTH: Reply = Reply::error(
    "NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time",
);

/// Answers a local command (`None` when `cmd` needs the store), updating `session`.
pub fn run(shared: &Shared, session: &mut Session, cmd: &Command<'_>) -> Option<Reply> {
    Some(match *cmd {
        Command::Ping(None) => Reply::Simple("PONG"),
        Command::Ping(Some(m)) | Command::Echo(m) => Reply::bulk(m),
        Command::Hello { proto, auth, name } => {
            if let Some((user, password)) = auth {
                if !password_ok(shared, Some(user), password) {
                    return Some(errors::WRONGPASS);
                }
                session.authed = true;
            }
            if !session.authed {
                return Some(HELLO_NOAUTH);
            }
            if let Some(name) = name {
                session.name = (!name.is_empty()).then(|| name.to_vec());
            }
            if let Some(p) = proto {
                session.proto = if p == 3 { Proto::Resp3 } else { Proto::Resp2 };
            }
            hello_reply(session)
        }
        Command::Auth { user, password } => {
            if shared.config.password.is_none() && user.is_none() {
                NO_PASSWORD
            } else if password_ok(shared, user, password) {
                session.authed = true;
                Reply::Ok
            } else {
                errors::WRONGPASS
            }
        }
        Command::ClientId => Reply::Int(session.id as i64),
        Command::ClientGetName => Reply::bulk_or_null(session.name.clone()),
        Command::ClientSetName(name) => {
            session.name = (!name.is_empty()).then(|| name.to_vec());
            Reply::Ok
        }
        Command::ClientSetInfo => Reply::Ok,
        Command::Select(0) => Reply::Ok,
        Command::Select(_) => errors::DB_RANGE,
        Command::Quit => {
            session.quit = true;
            Reply::Ok
        }
        Command::Introspect(Introspection::All) => Reply::Array(SPECS.iter().map(command_info).collect()),
        Command::Introspect(Introspection::Count) => Reply::Int(SPECS.len() as i64),
        Command::Introspect(Introspection::Docs) => Reply::Map(Vec::new()),
        Command::Introspect(Introspection::Info(names)) => {
            Reply::Array(names.iter().map(|n| crate::command::lookup(n).map_or(Reply::Null, |c| command_info(c.spec()))).collect())
        }
        Command::Introspect(Introspection::Names) => Reply::Array(SPECS.iter().map(|s| Reply::Static(s.name.as_bytes())).collect()),
        Command::ConfigGet(patterns) => {
            let params = config_params(shared);
            let matched = params.into_iter().filter(|(name, _)| patterns.iter().any(|p| glob_match(&p.to_ascii_lowercase(), name.as_bytes())));
            Reply::Map(matched.map(|(name, value)| (Reply::Static(name.as_bytes()), Reply::Bulk(value.into_bytes()))).collect())
        }
        Command::ConfigResetStat => {
            shared.stats.reset();
            Reply::Ok
        }
        Command::Info(sections) => Reply::Text(info(shared, &sections.iter().collect::<Vec<_>>())),
        Command::Time => {
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
            Reply::Array(vec![Reply::Bulk(now.as_secs().to_string().into_bytes()), Reply::Bulk(now.subsec_micros().to_string().into_bytes())])
        }
        _ => return None,
    })
}

/// Whether `password` (for `user`, `default` when absent) is accepted: with no password
/// configured the default user takes any (Redis's `nopass`); otherwise it must be the
/// configured one, compared in constant time.
fn password_ok(shared: &Shared, user: Option<&[u8]>, password: &[u8]) -> bool {
    if user.is_some_and(|u| u != b"default") {
        return false;
    }
    match &shared.config.password {
        None => true,
        Some(want) => want.len() == password.len() && want.iter().zip(password).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0,
    }
}

fn hello_reply(session: &Session) -> Reply {
    Reply::Map(vec![
        (Reply::Static(b"server"), Reply::Static(b"redis")),
        (Reply::Static(b"version"), Reply::Static(REDIS_VERSION.as_bytes())),
        (Reply::Static(b"proto"), Reply::Int(session.proto.number())),
        (Reply::Static(b"id"), Reply::Int(session.id as i64)),
        (Reply::Static(b"mode"), Reply::Static(b"standalone")),
        (Reply::Static(b"role"), Reply::Static(b"master")),
        (Reply::Static(b"modules"), Reply::Array(Vec::new())),
    ])
}

/// One `COMMAND` entry in Redis 7's layout: name, arity, flags, first key, last key, step,
/// ACL categories, tips, key specs, subcommands.
fn command_info(spec: &crate::command::Spec) -> Reply {
    let categories = spec.flags.iter().filter_map(|f| match *f {
        "readonly" => Some("@read"),
        "write" => Some("@write"),
        "fast" => Some("@fast"),
        _ => None,
    });
    Reply::Array(vec![
        Reply::Static(spec.name.as_bytes()),
        Reply::Int(i64::from(spec.arity)),
        Reply::Set(spec.flags.iter().map(|f| Reply::Simple(f)).collect()),
        Reply::Int(spec.keys.0),
        Reply::Int(spec.keys.1),
        Reply::Int(spec.keys.2),
        Reply::Set(categories.map(Reply::Simple).collect()),
        Reply::Array(Vec::new()),
        Reply::Array(Vec::new()),
        Reply::Array(Vec::new()),
    ])
}

/// The parameters CONFIG GET knows (enough for redis-benchmark and tools that look at the
/// persistence settings; Vasto's durability is the store's `--sync`).
fn config_params(shared: &Shared) -> Vec<(&'static str, String)> {
    vec![
        ("save", String::new()),
        ("appendonly", "no".into()),
        ("databases", "1".into()),
        ("maxmemory", "0".into()),
        ("timeout", "0".into()),
        ("port", shared.listen.port().to_string()),
        ("bind", shared.listen.ip().to_string()),
        ("maxclients", shared.config.max_clients.to_string()),
        ("proto-max-bulk-len", crate::MAX_VALUE.to_string()),
    ]
}

/// The INFO text for `sections` (none, `default`: server, clients, stats, keyspace; `all` or
/// `everything`: those and commandstats), in Redis's `# Section\r\nfield:value\r\n` format.
pub fn info(shared: &Shared, sections: &[&[u8]]) -> String {
    use std::fmt::Write;
    let all = sections.iter().any(|s| s.eq_ignore_ascii_case(b"all") || s.eq_ignore_ascii_case(b"everything"));
    let default = sections.is_empty() || sections.iter().any(|s| s.eq_ignore_ascii_case(b"default"));
    let wants = |name: &str| all || (default && name != "commandstats") || sections.iter().any(|s| s.eq_ignore_ascii_case(name.as_bytes()));
    let stats = &shared.stats;
    let mut out = String::new();
    let section = |out: &mut String, title: &str| {
        if !out.is_empty() {
            out.push_str("\r\n");
        }
        let _ = write!(out, "# {title}\r\n");
    };
    if wants("server") {
        section(&mut out, "Server");
        let uptime = stats.started.elapsed().as_secs();
        let _ = write!(
            out,
            "redis_version:{REDIS_VERSION}\r\nredis_mode:standalone\r\nvasto_gateway_version:{}\r\nos:{}\r\narch_bits:{}\r\nprocess_id:{}\r\n\
             tcp_port:{}\r\nuptime_in_seconds:{uptime}\r\nuptime_in_days:{}\r\nvasto_master:{}\r\nvasto_keyspace:{}\r\n",
            env!("CARGO_PKG_VERSION"),
            std::env::consts::OS,
            usize::BITS,
            std::process::id(),
            shared.listen.port(),
            uptime / 86_400,
            shared.config.master,
            shared.config.keyspace,
        );
    }
    if wants("clients") {
        section(&mut out, "Clients");
        let _ = write!(out, "connected_clients:{}\r\nmaxclients:{}\r\n", stats.connected_clients.load(Relaxed), shared.config.max_clients);
    }
    if wants("stats") {
        section(&mut out, "Stats");
        let _ = write!(
            out,
            "total_connections_received:{}\r\ntotal_commands_processed:{}\r\ninstantaneous_ops_per_sec:0\r\nrejected_connections:{}\r\n\
             total_error_replies:{}\r\nscan_cursors:{}\r\n",
            stats.connections_received.load(Relaxed),
            stats.commands_processed.load(Relaxed),
            stats.rejected_connections.load(Relaxed),
            stats.error_replies.load(Relaxed),
            shared.cursors.len(),
        );
    }
    if wants("keyspace") {
        // Counting keys is a full scan (DBSIZE does it on request), so no db0 line here.
        section(&mut out, "Keyspace");
    }
    if wants("commandstats") {
        section(&mut out, "Commandstats");
        stats.commandstats(&mut out);
    }
    out
}

/// Whether a request named `name` may change how the requests after it are parsed (the
/// authentication state): the connection stops parsing after it until it has run.
pub fn changes_auth(name: &[u8]) -> bool {
    matches!(crate::command::lookup(name), Some(Cmd::Auth | Cmd::Hello))
}
