//! `vasto gateway` through the real path: a master, stores and the gateway as processes, driven
//! by redis-cli (RESP2 and RESP3), raw sockets (protocol errors, limits, deep pipelines),
//! redis-py (tests/gateway_py, in a virtualenv under target/) and redis-benchmark.
//! The tests install what they need: `./scripts/setup.sh redis-tools` (apt, only if missing)
//! and `pip install redis` into target/gateway-venv (reused once it works).
mod common;

use common::{free_port, run_bounded, wait_for, Cluster, Proc};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::Mutex;
use std::time::Duration;

/// The keyspace the gateways of these tests serve (not `default`, to test `--keyspace`).
const KEYSPACE: &str = "redis";

/// A cluster with one keyspace and a gateway in front of it.
struct Gateway {
    port: u16,
    /// The password clients must give (the cluster token's text), if the cluster has one.
    password: Option<String>,
    _gateway: Proc,
    cluster: Cluster,
}

impl Gateway {
    fn start(stores: usize, shards: u32, secured: bool) -> Gateway {
        install_redis_tools();
        let cluster = if secured { Cluster::start_secured(stores) } else { Cluster::start(stores) };
        cluster.create_keyspace(KEYSPACE, shards, 1);
        let port = free_port();
        let listen = format!("127.0.0.1:{port}");
        let mut args = vec!["gateway", "--master", &cluster.master_addr, "--listen", &listen, "--keyspace", KEYSPACE];
        let token = cluster.token_file.as_ref().map(|t| t.display().to_string());
        if let Some(t) = &token {
            args.extend(["--token-file", t]);
        }
        let gateway = Proc::spawn("gateway", &args, &cluster.dir.path().join("gateway.log"));
        let password = cluster.token_file.as_ref().map(|t| std::fs::read_to_string(t).expect("token").trim().to_owned());
        let gw = Gateway { port, password, _gateway: gateway, cluster };
        wait_for("the gateway to answer", Duration::from_secs(30), || {
            let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
            s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
            s.write_all(b"PING\r\n").ok()?;
            let mut buf = [0u8; 64];
            let n = s.read(&mut buf).ok()?;
            (buf[..n].starts_with(b"+PONG") || buf[..n].starts_with(b"-NOAUTH")).then_some(())
        });
        gw
    }

    /// `redis-cli -p PORT --no-raw EXTRA... ARGS...`: its output (stdout and stderr), trimmed.
    fn cli_with(&self, extra: &[&str], args: &[&str]) -> String {
        let mut cmd = Command::new("redis-cli");
        cmd.args(["-p", &self.port.to_string(), "--no-raw"]).args(extra).args(args);
        text(&run_bounded(&mut cmd, Duration::from_secs(60)))
    }

    fn cli(&self, args: &[&str]) -> String {
        self.cli_with(&[], args)
    }

    /// Commands fed to one redis-cli on standard input (one connection), its output.
    fn cli_script(&self, extra: &[&str], script: &str) -> String {
        let mut child = Command::new("redis-cli")
            .args(["-p", &self.port.to_string(), "--no-raw"])
            .args(extra)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("redis-cli");
        child.stdin.take().expect("stdin").write_all(script.as_bytes()).expect("script");
        let pid = child.id();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(child.wait_with_output());
        });
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(out) => text(&out.expect("redis-cli output")),
            Err(_) => {
                // SAFETY: kill(2) on the PID of a child we spawned and have not reaped.
                unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
                panic!("redis-cli did not finish within 60 s");
            }
        }
    }

    fn connect(&self) -> TcpStream {
        let s = TcpStream::connect(("127.0.0.1", self.port)).expect("connect to the gateway");
        s.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
        s
    }
}

fn text(out: &Output) -> String {
    let mut s = String::from_utf8_lossy(&out.stdout).into_owned();
    s.push_str(&String::from_utf8_lossy(&out.stderr));
    s.trim_end().to_owned()
}

/// redis-cli and redis-benchmark (Debian's redis-tools), installed once per test process.
fn install_redis_tools() {
    static DONE: Mutex<bool> = Mutex::new(false);
    let mut done = DONE.lock().unwrap_or_else(|p| p.into_inner());
    if !*done {
        eprintln!("gateway tests: ./scripts/setup.sh redis-tools (apt-installs redis-cli and redis-benchmark if missing)");
        let out = run_bounded(Command::new("./scripts/setup.sh").arg("redis-tools"), Duration::from_secs(600));
        assert!(out.status.success(), "setup.sh redis-tools failed: {}", text(&out));
        *done = true;
    }
}

/// A Python with redis-py: target/gateway-venv, made (python3 -m venv, pip install redis) if it
/// does not work yet.
fn python_with_redis() -> PathBuf {
    static LOCK: Mutex<()> = Mutex::new(());
    let _one_at_a_time = LOCK.lock().unwrap_or_else(|p| p.into_inner());
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target").join("gateway-venv");
    let python = venv.join("bin").join("python");
    let works = || run_bounded(Command::new(&python).args(["-c", "import redis; print(redis.__version__)"]), Duration::from_secs(60));
    if python.exists() && works().status.success() {
        eprintln!("gateway tests: reusing {} (redis-py {})", venv.display(), text(&works()));
        return python;
    }
    eprintln!("gateway tests: creating {} and installing redis-py from PyPI (pip install redis)", venv.display());
    let out = run_bounded(Command::new("python3").args(["-m", "venv"]).arg(&venv), Duration::from_secs(300));
    assert!(out.status.success(), "python3 -m venv failed: {}", text(&out));
    let out = run_bounded(Command::new(&python).args(["-m", "pip", "install", "--quiet", "redis"]), Duration::from_secs(600));
    assert!(out.status.success(), "pip install redis failed: {}", text(&out));
    eprintln!("gateway tests: installed redis-py {}", text(&works()));
    python
}

/// Reads from `s` until `want` bytes arrived or the peer closed; returns what arrived.
fn read_n(s: &mut TcpStream, want: usize) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    while got.len() < want {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
    got
}

/// Whether the peer closed `s` (a read returns 0 within the read timeout).
fn closed(s: &mut TcpStream) -> bool {
    matches!(s.read(&mut [0u8; 16]), Ok(0))
}

#[test]
fn redis_cli_speaks_every_command() {
    let gw = Gateway::start(1, 2, false);
    let steps: &[(&[&str], &str)] = &[
        (&["PING"], "PONG"),
        (&["PING", "hello"], "\"hello\""),
        (&["ECHO", "hi"], "\"hi\""),
        (&["SET", "k", "v"], "OK"),
        (&["GET", "k"], "\"v\""),
        (&["GET", "missing"], "(nil)"),
        (&["SET", "k", "v2", "NX"], "(nil)"),
        (&["SET", "k", "v2", "XX", "GET"], "\"v\""),
        (&["SET", "fresh", "x", "NX", "GET"], "(nil)"),
        (&["SETNX", "k", "x"], "(integer) 0"),
        (&["GETSET", "k", "v3"], "\"v2\""),
        (&["STRLEN", "k"], "(integer) 2"),
        (&["APPEND", "k", "45"], "(integer) 4"),
        (&["GETDEL", "k"], "\"v345\""),
        (&["EXISTS", "k"], "(integer) 0"),
        (&["MSET", "a", "1", "b", "2", "a", "3"], "OK"),
        (&["MGET", "a", "b", "c"], "1) \"3\"\n2) \"2\"\n3) (nil)"),
        (&["MSETNX", "a", "9", "c", "3"], "(integer) 0"),
        (&["MSETNX", "c", "3", "d", "4"], "(integer) 1"),
        (&["EXISTS", "a", "a", "c", "zz"], "(integer) 3"),
        (&["TYPE", "a"], "string"),
        (&["TYPE", "zz"], "none"),
        (&["INCR", "n"], "(integer) 1"),
        (&["INCRBY", "n", "9"], "(integer) 10"),
        (&["DECR", "n"], "(integer) 9"),
        (&["DECRBY", "n", "10"], "(integer) -1"),
        (&["INCRBYFLOAT", "f", "10.5"], "\"10.5\""),
        (&["INCRBYFLOAT", "f", "2989.5"], "\"3000\""),
        (&["SET", "t", "v", "EX", "1000"], "OK"),
        (&["EXPIRE", "t", "50", "GT"], "(integer) 0"),
        (&["EXPIRE", "t", "50", "LT"], "(integer) 1"),
        (&["EXPIRE", "t", "50", "NX"], "(integer) 0"),
        (&["EXPIRE", "t", "50", "NX", "XX"], "(error) ERR NX and XX, GT or LT options at the same time are not compatible"),
        (&["PERSIST", "t"], "(integer) 1"),
        (&["TTL", "t"], "(integer) -1"),
        (&["TTL", "zz"], "(integer) -2"),
        (&["PTTL", "zz"], "(integer) -2"),
        (&["PEXPIRE", "t", "100000"], "(integer) 1"),
        (&["EXPIREAT", "t", "1"], "(integer) 1"),
        (&["GET", "t"], "(nil)"),
        (&["PEXPIREAT", "zz", "99999999999999"], "(integer) 0"),
        (&["SETEX", "s", "100", "v"], "OK"),
        (&["PSETEX", "s2", "100000", "v"], "OK"),
        (&["GETEX", "s", "PERSIST"], "\"v\""),
        (&["TTL", "s"], "(integer) -1"),
        (&["GETEX", "s", "EX", "10"], "\"v\""),
        (&["GETEX", "s"], "\"v\""),
        (&["SET", "kt", "v", "KEEPTTL"], "OK"),
        (&["DEL", "a", "b", "zz", "a"], "(integer) 2"),
        (&["UNLINK", "c", "c"], "(integer) 1"),
        (&["SELECT", "0"], "OK"),
        (&["SELECT", "1"], "(error) ERR DB index is out of range"),
        (&["SELECT", "x"], "(error) ERR value is not an integer or out of range"),
        (&["CLIENT", "ID"], "(integer) *"),
        (&["CLIENT", "NOPE"], "(error) ERR unknown subcommand 'NOPE'. Try CLIENT HELP."),
        (&["CLIENT", "SETNAME", "a b"], "(error) ERR Client names cannot contain spaces, newlines or special characters."),
        (&["CONFIG", "GET", "save"], "1) \"save\"\n2) \"\""),
        (&["CONFIG", "GET", "no-such-thing"], "(empty array)"),
        (&["COMMAND", "COUNT"], "(integer) *"),
        (&["COMMAND", "DOCS"], "(empty array)"),
        (&["FOO", "a", "b"], "(error) ERR unknown command 'FOO', with args beginning with: 'a' 'b' "),
        (&["GET"], "(error) ERR wrong number of arguments for 'get' command"),
        (&["PING", "a", "b"], "(error) ERR wrong number of arguments for 'ping' command"),
        (&["MSET", "a", "1", "b"], "(error) ERR wrong number of arguments for 'mset' command"),
        (&["SET", "k", "v", "EX", "0"], "(error) ERR invalid expire time in 'set' command"),
        (&["SETEX", "k", "-1", "v"], "(error) ERR invalid expire time in 'setex' command"),
        (&["SET", "k", "v", "EX", "1", "PX", "1"], "(error) ERR syntax error"),
        (&["SET", "k", "v", "NX", "XX"], "(error) ERR syntax error"),
        (&["SET", "k", "v", "EX", "x"], "(error) ERR value is not an integer or out of range"),
        (&["SET", "text", "abc"], "OK"),
        (&["INCR", "text"], "(error) ERR value is not an integer or out of range"),
        (&["INCRBY", "n", "1.5"], "(error) ERR value is not an integer or out of range"),
        (&["INCRBYFLOAT", "f", "abc"], "(error) ERR value is not a valid float"),
        (&["INCRBYFLOAT", "text", "1"], "(error) ERR value is not a valid float"),
        (&["SET", "max", "9223372036854775807"], "OK"),
        (&["INCR", "max"], "(error) ERR increment or decrement would overflow"),
        (&["DECRBY", "n", "-9223372036854775808"], "(error) ERR decrement would overflow"),
        (&["SCAN", "12345"], "(error) ERR invalid cursor"),
        (&["SCAN", "x"], "(error) ERR invalid cursor"),
        (&["SCAN", "0", "COUNT", "0"], "(error) ERR syntax error"),
        (
            &["AUTH", "x"],
            "(error) ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?",
        ),
        (&["AUTH", "default", "anything"], "OK"),
        (&["AUTH", "someone", "x"], "(error) WRONGPASS invalid username-password pair or user is disabled."),
        (&["HELLO", "4"], "(error) NOPROTO unsupported protocol version"),
        (&["HELLO", "x"], "(error) ERR Protocol version is not an integer or out of range"),
        (&["HELLO", "3", "FOO"], "(error) ERR Syntax error in HELLO option 'FOO'"),
    ];
    for (args, want) in steps {
        // A trailing `*` checks only the start of the output.
        let got = gw.cli(args);
        match want.strip_suffix('*') {
            Some(start) => assert!(got.starts_with(start), "{args:?}: got {got:?}, want it to start with {start:?}"),
            None => assert_eq!(got, want.trim_end(), "{args:?}"),
        }
    }
    // Expiry read back in both units, and a key that expires.
    gw.cli(&["SET", "e", "v", "EX", "100"]);
    let ttl = gw.cli(&["TTL", "e"]);
    assert!(ttl == "(integer) 100" || ttl == "(integer) 99", "{ttl}");
    let pttl: i64 = gw.cli(&["PTTL", "e"]).trim_start_matches("(integer) ").parse().expect("a number");
    assert!((98_000..=100_000).contains(&pttl), "{pttl}");
    gw.cli(&["SET", "short", "v", "PX", "200"]);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(gw.cli(&["GET", "short"]), "(nil)");
    // Keyspace-wide commands.
    for i in 0..30 {
        gw.cli(&["SET", &format!("user:{i:02}"), "x"]);
    }
    let keys = gw.cli(&["KEYS", "user:1?"]);
    assert_eq!(keys.lines().count(), 10, "{keys}");
    assert!(keys.contains("\"user:10\"") && keys.contains("\"user:19\""), "{keys}");
    let scan = gw.cli(&["SCAN", "0", "MATCH", "user:2*", "COUNT", "1000"]);
    assert!(scan.starts_with("1) \"0\"\n2)  1) \"user:20\""), "{scan}");
    // SCAN with small pages: integer cursors that visit every key once.
    let (mut cursor, mut seen, mut pages) = ("0".to_owned(), Vec::new(), 0);
    loop {
        let page = gw.cli(&["SCAN", &cursor, "MATCH", "user:*", "COUNT", "4"]);
        let mut quoted = page.lines().filter_map(|l| l.split('"').nth(1).map(str::to_owned));
        cursor = quoted.next().expect("a cursor");
        seen.extend(quoted);
        pages += 1;
        if cursor == "0" {
            break;
        }
        assert!(pages < 100, "the scan does not end");
    }
    seen.sort();
    let all: Vec<String> = (0..30).map(|i| format!("user:{i:02}")).collect();
    assert_eq!(seen, all, "every key once");
    assert!(pages >= 8, "{pages} pages of at most 4 keys");
    let dbsize: i64 = gw.cli(&["DBSIZE"]).trim_start_matches("(integer) ").parse().expect("a number");
    assert!(dbsize >= 30, "{dbsize}");
    assert!(gw.cli(&["INFO"]).contains("redis_version:7.2.0"));
    let stats = gw.cli(&["INFO", "commandstats"]);
    assert!(stats.contains("cmdstat_incr:calls=") && stats.contains("failed_calls="), "{stats}");
    assert_eq!(gw.cli(&["TIME"]).lines().count(), 2);
    // Connection state lives as long as the connection.
    let script = gw.cli_script(&[], "CLIENT SETNAME me\nCLIENT GETNAME\nCLIENT SETINFO LIB-NAME x\n");
    assert_eq!(script, "OK\n\"me\"\nOK");
    // RESP3: typed nulls and maps.
    assert_eq!(gw.cli_with(&["-3"], &["GET", "missing"]), "(nil)");
    let hello = gw.cli_with(&["-3"], &["HELLO", "3"]);
    for field in [
        "\"server\" => \"redis\"",
        "\"version\" => \"7.2.0\"",
        "\"proto\" => (integer) 3",
        "\"mode\" => \"standalone\"",
        "\"role\" => \"master\"",
        "\"modules\" => (empty array)",
    ] {
        assert!(hello.contains(field), "{field} in {hello}");
    }
    assert_eq!(gw.cli_with(&["-3"], &["CONFIG", "GET", "appendonly"]), "1# \"appendonly\" => \"no\"");
    assert_eq!(gw.cli_with(&["-3"], &["INCRBYFLOAT", "f3", "1.25"]), "\"1.25\"");
    assert!(gw.cli_with(&["-3"], &["MGET", "e", "missing"]).ends_with("2) (nil)"));
    let hello2 = gw.cli(&["HELLO", "2"]);
    assert!(hello2.contains(" 5) \"proto\"\n 6) (integer) 2"), "{hello2}");
}

#[test]
fn protocol_errors_close_and_pipelines_keep_order() {
    let gw = Gateway::start(1, 2, false);
    // A bad request after a good one: the good one's reply, Redis's protocol error, then close.
    let mut s = gw.connect();
    s.write_all(b"PING\r\n*1\r\n$x\r\n").expect("write");
    let want = b"+PONG\r\n-ERR Protocol error: invalid bulk length\r\n";
    assert_eq!(read_n(&mut s, want.len()), want);
    assert!(closed(&mut s), "the connection closes after a protocol error");
    for (bad, error) in [
        (&b"*1\r\n$99999999999\r\n"[..], "-ERR Protocol error: invalid bulk length\r\n"),
        (b"*99999999\r\n", "-ERR Protocol error: invalid multibulk length\r\n"),
        (b"*1\r\n+PING\r\n", "-ERR Protocol error: expected '$', got '+'\r\n"),
        (b"SET \"a b\r\n", "-ERR Protocol error: unbalanced quotes in request\r\n"),
    ] {
        let mut s = gw.connect();
        s.write_all(bad).expect("write");
        assert_eq!(String::from_utf8_lossy(&read_n(&mut s, error.len())), error);
        assert!(closed(&mut s), "{error}");
    }
    // Errors that are not protocol errors keep the connection; inline requests with quotes.
    let mut s = gw.connect();
    s.write_all(b"NOPE\r\nSET \"a b\" \"c\\x41\"\r\nGET \"a b\"\r\nGET\r\n").expect("write");
    let want = "-ERR unknown command 'NOPE', with args beginning with: \r\n+OK\r\n$2\r\ncA\r\n-ERR wrong number of arguments for 'get' command\r\n";
    assert_eq!(String::from_utf8_lossy(&read_n(&mut s, want.len())), want);
    // Values and keys over the store's limits get a clear error without closing.
    let big = vec![b'x'; (32 << 20) + 1];
    let mut request = format!("*3\r\n$3\r\nSET\r\n$3\r\nbig\r\n${}\r\n", big.len()).into_bytes();
    request.extend_from_slice(&big);
    request.extend_from_slice(b"\r\n");
    let long_key = "k".repeat((64 << 10) + 1);
    request.extend_from_slice(format!("*2\r\n$3\r\nGET\r\n${}\r\n{long_key}\r\nPING\r\n", long_key.len()).as_bytes());
    s.write_all(&request).expect("write a large value");
    let want = "-ERR string exceeds maximum allowed size (proto-max-bulk-len: values are limited to 32 MiB)\r\n\
                -ERR key exceeds maximum allowed size (keys are limited to 64 KiB)\r\n+PONG\r\n";
    assert_eq!(String::from_utf8_lossy(&read_n(&mut s, want.len())), want);
    // A value of exactly 32 MiB is stored and read back.
    let max = vec![b'y'; 32 << 20];
    let mut request = format!("*3\r\n$3\r\nSET\r\n$3\r\nmax\r\n${}\r\n", max.len()).into_bytes();
    request.extend_from_slice(&max);
    request.extend_from_slice(b"\r\n*2\r\n$6\r\nSTRLEN\r\n$3\r\nmax\r\n");
    s.write_all(&request).expect("write the largest value");
    assert_eq!(String::from_utf8_lossy(&read_n(&mut s, 19)), "+OK\r\n:33554432\r\n");

    // A deep pipeline in one write: 30,000 requests mixing overwrites, reads and increments of
    // the same keys; every reply in order, each read seeing exactly the writes before it.
    let mut requests = Vec::new();
    let mut want = Vec::new();
    for i in 0..10_000 {
        let key = format!("p{}", i % 7);
        requests.extend_from_slice(format!("*3\r\n$3\r\nSET\r\n${}\r\n{key}\r\n${}\r\n{i}\r\n", key.len(), i.to_string().len()).as_bytes());
        want.extend_from_slice(b"+OK\r\n");
        requests.extend_from_slice(format!("*2\r\n$3\r\nGET\r\n${}\r\n{key}\r\n", key.len()).as_bytes());
        want.extend_from_slice(format!("${}\r\n{i}\r\n", i.to_string().len()).as_bytes());
        requests.extend_from_slice(b"*2\r\n$4\r\nINCR\r\n$7\r\ncounter\r\n");
        want.extend_from_slice(format!(":{}\r\n", i + 1).as_bytes());
    }
    let mut writer = s.try_clone().expect("clone");
    let sender = std::thread::spawn(move || writer.write_all(&requests));
    let got = read_n(&mut s, want.len());
    sender.join().expect("writer").expect("write the pipeline");
    assert_eq!(got.len(), want.len());
    assert!(got == want, "the pipeline's replies differ from the first {} bytes", got.iter().zip(&want).take_while(|(a, b)| a == b).count());

    // Too many clients: the next one is told so (checked against a gateway of 2).
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let args = ["gateway", "--master", &gw.cluster.master_addr, "--listen", &listen, "--keyspace", KEYSPACE, "--max-clients", "2"];
    let _small = Proc::spawn("small-gateway", &args, &gw.cluster.dir.path().join("small-gateway.log"));
    let connect = || {
        let s = TcpStream::connect(("127.0.0.1", port)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
        Some(s)
    };
    let (mut a, mut b) = wait_for("the small gateway", Duration::from_secs(30), || {
        let (mut a, b) = (connect()?, connect()?);
        a.write_all(b"PING\r\n").ok()?;
        (read_n(&mut a, 7) == b"+PONG\r\n").then_some((a, b))
    });
    let mut c = connect().expect("connect");
    let full = b"-ERR max number of clients reached\r\n";
    assert_eq!(read_n(&mut c, full.len()), full);
    b.write_all(b"PING\r\n").expect("write");
    assert_eq!(read_n(&mut b, 7), b"+PONG\r\n");
    a.write_all(b"QUIT\r\n").expect("write");
    assert_eq!(read_n(&mut a, 5), b"+OK\r\n");
    assert!(closed(&mut a), "QUIT closes");
}

#[test]
fn auth_with_the_cluster_token_and_redis_py() {
    let gw = Gateway::start(1, 2, true);
    let password = gw.password.clone().expect("a secured cluster");
    assert_eq!(gw.cli(&["PING"]), "(error) NOAUTH Authentication required.");
    assert_eq!(gw.cli(&["GET", "k"]), "(error) NOAUTH Authentication required.");
    assert_eq!(gw.cli(&["GET"]), "(error) ERR wrong number of arguments for 'get' command", "arity comes first, as in Redis");
    assert_eq!(gw.cli(&["AUTH", "wrong"]), "(error) WRONGPASS invalid username-password pair or user is disabled.");
    assert_eq!(gw.cli(&["AUTH", "someone", &password]), "(error) WRONGPASS invalid username-password pair or user is disabled.");
    assert!(gw.cli(&["HELLO", "3"]).starts_with("(error) NOAUTH HELLO must be called with the client already authenticated"));
    assert_eq!(gw.cli_with(&["-a", &password, "--no-auth-warning"], &["PING"]), "PONG");
    assert_eq!(gw.cli_with(&["--user", "default", "--pass", &password, "--no-auth-warning"], &["SET", "k", "v"]), "OK");
    assert_eq!(gw.cli_script(&[], &format!("AUTH {password}\nGET k\n")), "OK\n\"v\"");
    let hello = gw.cli(&["HELLO", "3", "AUTH", "default", &password, "SETNAME", "py"]);
    assert!(hello.contains("\"proto\" => (integer) 3") || hello.contains("(integer) 3"), "{hello}");
    assert_eq!(gw.cli_with(&["-3", "-a", &password, "--no-auth-warning"], &["GET", "k"]), "\"v\"");
    // Before authenticating, requests are held to 10 arguments and 16 KiB bulk strings.
    let mut s = gw.connect();
    s.write_all(b"*11\r\n").expect("write");
    let want = "-ERR Protocol error: unauthenticated multibulk length\r\n";
    assert_eq!(String::from_utf8_lossy(&read_n(&mut s, want.len())), want);
    assert!(closed(&mut s));
    // AUTH and a large request in one write: the request is read with the limits of the
    // authenticated client it comes from.
    let mut s = gw.connect();
    let value = "v".repeat(100_000);
    s.write_all(format!("AUTH {password}\r\n*3\r\n$3\r\nSET\r\n$3\r\nbig\r\n${}\r\n{value}\r\n", value.len()).as_bytes()).expect("write");
    assert_eq!(read_n(&mut s, 10), b"+OK\r\n+OK\r\n");

    // redis-py against the secured gateway (AUTH through HELLO 3 and through AUTH).
    let python = python_with_redis();
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/gateway_py/test_gateway.py");
    let out = run_bounded(Command::new(&python).arg(&script).arg(gw.port.to_string()).arg(&password), Duration::from_secs(300));
    eprintln!("{}", text(&out));
    assert!(out.status.success(), "redis-py checks failed (secured gateway)");
}

#[test]
fn redis_py_over_two_stores() {
    let gw = Gateway::start(2, 4, false);
    let python = python_with_redis();
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/gateway_py/test_gateway.py");
    let out = run_bounded(Command::new(&python).arg(&script).arg(gw.port.to_string()), Duration::from_secs(300));
    eprintln!("{}", text(&out));
    assert!(out.status.success(), "redis-py checks failed");
}

#[test]
fn redis_benchmark_runs_clean() {
    let gw = Gateway::start(1, 2, false);
    let mut cmd = Command::new("redis-benchmark");
    cmd.args(["-p", &gw.port.to_string(), "-t", "ping,set,get,incr,mset", "-n", "100000", "-P", "16", "-q"]);
    let out = run_bounded(&mut cmd, Duration::from_secs(600));
    // Keep each line's final state (redis-benchmark redraws its progress with carriage returns).
    let report: String = text(&out).lines().map(|l| format!("{}\n", l.rsplit('\r').next().unwrap_or_default().trim())).collect();
    eprintln!("{report}");
    assert!(out.status.success(), "redis-benchmark failed");
    assert!(!report.contains("WARNING") && !report.contains("ERROR"), "{report}");
    for test in ["PING_INLINE", "PING_MBULK", "SET", "GET", "INCR", "MSET (10 keys)"] {
        assert!(report.lines().any(|l| l.contains(&format!("{test}: ")) && l.contains("requests per second")), "{test} in {report}");
    }
    // The counter redis-benchmark increments holds every increment.
    assert_eq!(gw.cli(&["GET", "counter:__rand_int__"]), "\"100000\"");
}
