//! Test harness: real `vasto` processes on 127.0.0.1 with free ports and temporary directories.
//! Every process is killed by PID when its handle is dropped, so a failing test leaves nothing.
#![allow(dead_code)]

pub mod impair;
pub mod netns;

use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};
use vasto_wire::{parse_frame, FrameEncoder, Role, Status, DEFAULT_MAX_FRAME};

/// The `vasto` binary the tests run: the one cargo built for them, or `VASTO_BIN` (the soak
/// script runs a copy, so a rebuild during a soak does not change the binary under it).
pub fn vasto() -> std::path::PathBuf {
    std::env::var_os("VASTO_BIN").map(Into::into).unwrap_or_else(|| env!("CARGO_BIN_EXE_vasto").into())
}

/// A port that was free a moment ago and that this test process has not handed out before (the
/// kernel may offer a port again once it is released, and two stores given the same port would
/// each hold only part of the cluster: the soak found this, seed 9033).
pub fn free_port() -> u16 {
    static HANDED_OUT: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    loop {
        let port = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free port");
        let mut handed = HANDED_OUT.lock().unwrap_or_else(|p| p.into_inner());
        if !handed.contains(&port) {
            handed.push(port);
            return port;
        }
    }
}

/// A child process killed (SIGKILL) and reaped on drop.
pub struct Proc {
    pub name: String,
    pub child: Child,
    pub log: PathBuf,
}

impl Proc {
    pub fn spawn(name: &str, args: &[&str], log: &Path) -> Proc {
        Self::spawn_in(None, name, args, log)
    }

    /// Like [`Proc::spawn`], inside network namespace `ns` if given (`ip netns exec` execs
    /// `vasto` in place, so the PID is still that of `vasto`).
    pub fn spawn_in(ns: Option<&str>, name: &str, args: &[&str], log: &Path) -> Proc {
        let file = std::fs::File::create(log).expect("log file");
        let mut command = match ns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(vasto());
                c
            }
            None => Command::new(vasto()),
        };
        let child = command
            .args(args)
            .env("RUST_LOG", std::env::var("VASTO_TEST_LOG").unwrap_or_else(|_| "info".into()))
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("log file"))
            .stderr(file)
            .spawn()
            .expect("spawn vasto");
        Proc { name: name.into(), child, log: log.to_path_buf() }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// kill -9 and reap.
    pub fn kill(mut self) {
        self.kill_now();
    }

    fn kill_now(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill_now();
    }
}

/// A seed for a randomized test: from the environment variable `var`, else from the clock;
/// printed (as `what seed=N`) so a failure can be re-run with the same one.
pub fn seed(var: &str, what: &str) -> u64 {
    let seed = std::env::var(var).ok().and_then(|s| s.parse().ok()).unwrap_or_else(vasto_client::now_ns);
    println!("{what} seed={seed} (re-run with {var}={seed})");
    seed
}

/// Polls `f` every 50 ms until it returns `Some`, or panics after `timeout`.
pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A master plus stores, each a real process.
pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub master_addr: String,
    pub master: Option<Proc>,
    pub store_addrs: Vec<String>,
    pub stores: Vec<Option<Proc>>,
    /// Flags every start of the master gets, after `--listen`.
    master_flags: Vec<String>,
    /// The cluster token file every process started here (and every CLI run) is given, if any.
    pub token_file: Option<PathBuf>,
    /// The hosts when the cluster runs in network namespaces: the master on host 0, store `i`
    /// on host `i + 1` (dropped last, after the processes).
    pub net: Option<netns::Net>,
}

/// A store that stalls this long on a loaded 2-core machine is not dead: tests that kill a
/// store see its connection close, which the master notices at once.
const TEST_HEARTBEAT_TIMEOUT_MS: &str = "4000";

impl Cluster {
    /// Starts a master and `stores` stores and waits until every store is registered.
    pub fn start(stores: usize) -> Cluster {
        Self::start_with_master_flags(stores, &[])
    }

    /// Like [`Cluster::start`], with extra flags for the master (kept for its restarts).
    pub fn start_with_master_flags(stores: usize, flags: &[&str]) -> Cluster {
        Self::start_full(stores, flags, false)
    }

    /// Like [`Cluster::start`], with a cluster token (a random one in `DIR/token`) given to the
    /// master, every store and every CLI run.
    pub fn start_secured(stores: usize) -> Cluster {
        Self::start_full(stores, &[], true)
    }

    /// Like [`Cluster::start_secured`], with the master and each store on its own host (network
    /// namespace, see `netns`), and the master's heartbeat timeout at `heartbeat_ms`; `Err` says
    /// why namespaces cannot be made here (the caller skips).
    pub fn start_on_hosts(stores: usize, heartbeat_ms: u64, flags: &[&str]) -> Result<Cluster, String> {
        let net = netns::Net::create(stores + 1)?;
        let mut all = vec!["--heartbeat-timeout-ms".to_owned(), heartbeat_ms.to_string()];
        all.extend(flags.iter().map(|f| (*f).to_owned()));
        Ok(Self::start_with(stores, all, true, Some(net)))
    }

    fn start_full(stores: usize, flags: &[&str], secured: bool) -> Cluster {
        let mut master_flags = vec!["--heartbeat-timeout-ms".to_owned(), TEST_HEARTBEAT_TIMEOUT_MS.to_owned()];
        master_flags.extend(flags.iter().map(|f| (*f).to_owned()));
        Self::start_with(stores, master_flags, secured, None)
    }

    fn start_with(stores: usize, master_flags: Vec<String>, secured: bool, net: Option<netns::Net>) -> Cluster {
        let dir = tempfile::tempdir().expect("temp dir");
        let master_addr = match &net {
            Some(net) => format!("{}:7000", net.hosts[0].ip),
            None => format!("127.0.0.1:{}", free_port()),
        };
        let token_file = secured.then(|| write_token(&dir.path().join("token")));
        let mut c = Cluster { dir, master_addr, master: None, store_addrs: Vec::new(), stores: Vec::new(), master_flags, token_file, net };
        c.start_master();
        for i in 0..stores {
            let addr = match &c.net {
                Some(net) => format!("{}:7100", net.hosts[i + 1].ip),
                None => format!("127.0.0.1:{}", free_port()),
            };
            c.store_addrs.push(addr);
            c.stores.push(None);
        }
        for i in 0..stores {
            c.start_store(i);
        }
        c.wait_stores_up(stores);
        c
    }

    pub fn start_master(&mut self) {
        let log = self.dir.path().join("master.log");
        let dir = self.dir.path().join("master").display().to_string();
        let mut args = vec!["master", "--listen", &self.master_addr, "--dir", &dir];
        args.extend(self.master_flags.iter().map(String::as_str));
        let token = self.token_args();
        args.extend(token.iter().map(String::as_str));
        let ns = self.net.as_ref().map(|n| n.hosts[0].ns.clone());
        self.master = Some(Proc::spawn_in(ns.as_deref(), "master", &args, &log));
    }

    /// Replaces the extra flags of the master's next starts.
    pub fn set_master_flags(&mut self, flags: &[&str]) {
        assert!(self.net.is_none(), "the master of a cluster on hosts keeps its flags");
        self.master_flags = vec!["--heartbeat-timeout-ms".to_owned(), TEST_HEARTBEAT_TIMEOUT_MS.to_owned()];
        self.master_flags.extend(flags.iter().map(|f| (*f).to_owned()));
    }

    /// The operation status document of keyspace `name` (`null` when none runs).
    pub fn operation(&self, name: &str) -> serde_json::Value {
        let s = self.status().unwrap_or_default();
        s["keyspaces"].as_array().and_then(|k| k.iter().find(|k| k["name"] == name)).map(|k| k["operation"].clone()).unwrap_or_default()
    }

    /// Starts the master and waits until it answers.
    pub fn start_master_and_wait(&mut self) {
        self.start_master();
        wait_for("the master to answer", Duration::from_secs(30), || self.status().map(drop));
    }

    pub fn kill_master(&mut self) {
        if let Some(m) = self.master.take() {
            m.kill();
        }
    }

    pub fn start_store(&mut self, i: usize) {
        self.start_store_with(i, &[]);
    }

    /// Starts store `i` with extra flags.
    pub fn start_store_with(&mut self, i: usize, extra: &[&str]) {
        let dir = self.dir.path().join(format!("store-{i}"));
        let log = self.dir.path().join(format!("store-{i}.log"));
        let dir = dir.display().to_string();
        let mut args = vec!["store", "--master", &self.master_addr, "--listen", &self.store_addrs[i], "--dir", &dir, "--threads", "2"];
        let token = self.token_args();
        args.extend(token.iter().map(String::as_str));
        args.extend_from_slice(extra);
        let ns = self.net.as_ref().map(|n| n.hosts[i + 1].ns.clone());
        self.stores[i] = Some(Proc::spawn_in(ns.as_deref(), &format!("store-{i}"), &args, &log));
    }

    /// Starts one more store (on a new port and directory) and waits until the cluster has
    /// `up` stores; returns its index.
    pub fn add_store(&mut self, up: usize) -> usize {
        self.add_store_with(up, &[])
    }

    /// [`Cluster::add_store`] with extra flags for the store's first start.
    pub fn add_store_with(&mut self, up: usize, extra: &[&str]) -> usize {
        assert!(self.net.is_none(), "a cluster on hosts has a fixed number of them");
        self.store_addrs.push(format!("127.0.0.1:{}", free_port()));
        self.stores.push(None);
        let i = self.stores.len() - 1;
        self.start_store_with(i, extra);
        self.wait_stores_up(up);
        i
    }

    /// kill -9 of store `i`.
    pub fn kill_store(&mut self, i: usize) {
        if let Some(p) = self.stores[i].take() {
            p.kill();
        }
    }

    /// `vasto admin --master M ARGS...` with a 60 s bound.
    pub fn admin(&self, args: &[&str]) -> Output {
        let mut all = vec!["admin", "--master", &self.master_addr];
        all.extend_from_slice(args);
        self.vasto(&all)
    }

    /// Runs the CLI against this cluster's master with a 60 s bound (and its token, if any).
    pub fn vasto(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new(vasto());
        cmd.args(args).env("VASTO_TEST", "1").env_remove("VASTO_TOKEN_FILE");
        if let Some(token) = &self.token_file {
            cmd.env("VASTO_TOKEN_FILE", token);
        }
        run_bounded(&mut cmd, Duration::from_secs(60))
    }

    /// `--token-file PATH` when the cluster has a token.
    fn token_args(&self) -> Vec<String> {
        self.token_file.iter().flat_map(|t| ["--token-file".to_owned(), t.display().to_string()]).collect()
    }

    /// The cluster token, for in-process clients.
    pub fn token(&self) -> Option<vasto_wire::ClusterToken> {
        self.token_file.as_deref().map(|t| vasto_wire::ClusterToken::from_file(t).expect("the test token"))
    }

    /// Client settings for this cluster (its token, a 10 s timeout).
    pub fn client_config(&self) -> vasto_client::ClientConfig {
        vasto_client::ClientConfig { token: self.token(), ..Default::default() }
    }

    /// `vasto admin status --json`, parsed.
    pub fn status(&self) -> Option<serde_json::Value> {
        let out = self.vasto(&["admin", "--master", &self.master_addr, "status", "--json"]);
        out.status.success().then(|| serde_json::from_slice(&out.stdout).ok()).flatten()
    }

    /// The replica addresses of every shard of `keyspace` (`[shard][replica]`), as `admin status`
    /// lists them, and the keyspace's shard count.
    pub fn routes(&self, keyspace: &str) -> (u32, Vec<Vec<String>>) {
        let s = self.status().expect("status");
        let ks = s["keyspaces"].as_array().expect("keyspaces").iter().find(|k| k["name"] == keyspace).expect("keyspace in status").clone();
        let rows = ks["routes"]
            .as_array()
            .expect("routes")
            .iter()
            .map(|r| r.as_array().expect("replicas").iter().map(|x| x["address"].as_str().unwrap_or_default().to_owned()).collect())
            .collect();
        (ks["shards"].as_u64().unwrap_or(0) as u32, rows)
    }

    /// Waits up to 30 s until at least `n` stores are up; panics with the status and every
    /// process's log otherwise.
    pub fn wait_stores_up(&self, n: usize) {
        let timeout = Duration::from_secs(30);
        let deadline = Instant::now() + timeout;
        let up = || Some(self.status()?["stores"].as_array()?.iter().filter(|st| st["up"] == true).count());
        while up().is_none_or(|up| up < n) {
            assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {n} stores up; status {:?}\n{}", self.status(), self.logs());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The master's log and every store's, each under its file name.
    pub fn logs(&self) -> String {
        let files = std::iter::once("master.log".to_owned()).chain((0..self.stores.len()).map(|i| format!("store-{i}.log")));
        files.map(|f| format!("--- {f}\n{}", std::fs::read_to_string(self.dir.path().join(&f)).unwrap_or_default())).collect::<Vec<_>>().join("\n")
    }

    pub fn create_keyspace(&self, name: &str, shards: u32, replicas: u32) {
        let out = self.vasto(&[
            "admin",
            "--master",
            &self.master_addr,
            "create-keyspace",
            name,
            "--shards",
            &shards.to_string(),
            "--replicas",
            &replicas.to_string(),
        ]);
        assert!(out.status.success(), "create-keyspace failed: {}", String::from_utf8_lossy(&out.stderr));
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() && std::env::var_os("VASTO_TEST_KEEP").is_some() {
            let kept = std::mem::replace(&mut self.dir, tempfile::tempdir().expect("temp dir")).keep();
            eprintln!("keeping the cluster's files in {}", kept.display());
        }
        if std::thread::panicking() {
            // Show what the processes said, to make a CI failure readable.
            for entry in std::fs::read_dir(self.dir.path()).into_iter().flatten().flatten() {
                if entry.path().extension().is_some_and(|e| e == "log") {
                    let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
                    let tail: Vec<&str> = text.lines().rev().take(30).collect();
                    eprintln!("---- {} (last lines) ----", entry.path().display());
                    for line in tail.iter().rev() {
                        eprintln!("{line}");
                    }
                }
            }
        }
    }
}

/// Runs a command to completion, killing it (by PID) if it takes longer than `timeout`.
pub fn run_bounded(cmd: &mut Command, timeout: Duration) -> Output {
    let child = cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn");
    wait_bounded(child, &format!("{cmd:?}"), timeout)
}

/// Waits for a spawned child (`what` names it) and collects its output, killing it (by PID)
/// if it takes longer than `timeout`.
pub fn wait_bounded(child: std::process::Child, what: &str, timeout: Duration) -> Output {
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(timeout) {
        Ok(out) => out.expect("command output"),
        Err(_) => {
            // SAFETY: kill(2) on the PID of a child we spawned and have not reaped.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
            panic!("command {what} did not finish within {timeout:?}");
        }
    }
}

/// Writes a random token (32 hex digits) to `path` and returns the path.
pub fn write_token(path: &Path) -> PathBuf {
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom").and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes)).expect("random bytes");
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    std::fs::write(path, format!("{hex}\n")).expect("write the token file");
    path.to_owned()
}

/// A raw protocol connection to one store, to look at what a store physically holds.
pub struct Raw {
    pub stream: TcpStream,
    pub enc: FrameEncoder,
    pub buf: Vec<u8>,
}

impl Raw {
    /// A client connection to an open store.
    pub fn connect(addr: &str) -> Raw {
        Self::connect_as(addr, Role::Client, None).expect("open the connection")
    }

    /// A connection admitted as `role`, proving `token` if given.
    pub fn connect_as(addr: &str, role: Role, token: Option<&vasto_wire::ClusterToken>) -> Result<Raw, vasto_wire::HandshakeError> {
        let mut stream = TcpStream::connect(addr).expect("connect");
        stream.set_read_timeout(Some(Duration::from_secs(10))).expect("read timeout");
        vasto_wire::greet_blocking(&mut stream, vasto_wire::Greeter::new(role, 0, token))?;
        Ok(Raw { stream, enc: FrameEncoder::new(), buf: Vec::new() })
    }

    pub fn read_frame(&mut self) -> &[u8] {
        vasto_wire::read_frame_blocking(&mut self.stream, &mut self.buf, DEFAULT_MAX_FRAME).expect("a frame");
        &self.buf
    }

    /// Every key of `shard` held by this store.
    pub fn scan_all(&mut self, keyspace: &str, shard: u32) -> (Status, usize) {
        let mut out = Vec::new();
        self.enc.scan(&mut out, 1, keyspace, shard, b"", b"", 10_000);
        self.stream.write_all(&out).unwrap();
        let resp = parse_frame(self.read_frame()).unwrap().body_as_response().unwrap();
        (resp.status(), resp.entries().map(|e| e.len()).unwrap_or(0))
    }

    /// How many live keys of `shard` this store serves (every scan page).
    pub fn count_keys(&mut self, keyspace: &str, shard: u32) -> usize {
        let (mut count, mut after) = (0, Vec::new());
        loop {
            let mut out = Vec::new();
            self.enc.scan(&mut out, 1, keyspace, shard, b"", &after, 10_000);
            self.stream.write_all(&out).unwrap();
            let resp = parse_frame(self.read_frame()).unwrap().body_as_response().unwrap();
            assert_eq!(resp.status(), Status::Ok, "scan of {keyspace}/{shard}: {}", resp.message().unwrap_or_default());
            let entries = resp.entries().unwrap_or_default();
            count += entries.len();
            match entries.iter().next_back().and_then(|e| e.key()) {
                Some(last) if resp.more() => after = last.to_vec(),
                _ => return count,
            }
        }
    }

    /// Pipelined gets of `keys` on one shard: the value (or None) of each, in order.
    pub fn get_many(&mut self, keyspace: &str, shard: u32, keys: &[Vec<u8>]) -> Vec<Option<Vec<u8>>> {
        // In chunks, so neither side's socket buffer fills while the other is still writing.
        keys.chunks(256).flat_map(|chunk| self.get_chunk(keyspace, shard, chunk)).collect()
    }

    fn get_chunk(&mut self, keyspace: &str, shard: u32, keys: &[Vec<u8>]) -> Vec<Option<Vec<u8>>> {
        let mut out = Vec::new();
        for (i, k) in keys.iter().enumerate() {
            self.enc.get(&mut out, i as u64 + 1, keyspace, shard, k);
        }
        self.stream.write_all(&out).unwrap();
        (0..keys.len())
            .map(|_| {
                let r = parse_frame(self.read_frame()).unwrap().body_as_response().unwrap();
                match r.status() {
                    Status::Ok => Some(r.value().unwrap_or_default().to_vec()),
                    Status::NotFound => None,
                    other => panic!("get answered {other:?}: {}", r.message().unwrap_or_default()),
                }
            })
            .collect()
    }

    /// A put with an explicit event time, straight to this store.
    pub fn put(&mut self, keyspace: &str, shard: u32, key: &[u8], value: &[u8], event_time_ns: u64) {
        let mut out = Vec::new();
        self.enc.put(&mut out, 1, keyspace, shard, key, value, event_time_ns, 0);
        self.stream.write_all(&out).unwrap();
        let r = parse_frame(self.read_frame()).unwrap().body_as_response().unwrap();
        assert_eq!(r.status(), Status::Ok, "{}", r.message().unwrap_or_default());
    }
}

/// Acknowledged (key, value) writes.
pub type Acked = Vec<(Vec<u8>, Vec<u8>)>;

/// Writes keys `{tag}:0..n` (value: the number) one after another; each must succeed.
pub async fn put_numbered(ks: &vasto_client::Keyspace, tag: &str, n: usize, acked: &mut Acked) {
    for i in 0..n {
        let (k, v) = (format!("{tag}:{i}").into_bytes(), format!("{i}").into_bytes());
        ks.put(&k, &v).await.unwrap_or_else(|e| panic!("write {tag}:{i} failed: {e}"));
        acked.push((k, v));
    }
}

/// Runs `vasto ARGS` in the background (bounded to 120 s) while writing `{tag}:{i}` keys to
/// `ks` back to back; every write must succeed. Returns the command's output and the number of
/// writes acknowledged meanwhile (appended to `acked`).
pub async fn while_writing(args: Vec<String>, ks: &vasto_client::Keyspace, tag: &str, acked: &mut Acked) -> (Output, usize) {
    let command = tokio::task::spawn_blocking(move || run_bounded(Command::new(vasto()).args(&args), Duration::from_secs(120)));
    let mut i = 0;
    while !command.is_finished() {
        let (k, v) = (format!("{tag}:{i}").into_bytes(), format!("{i}").into_bytes());
        ks.put(&k, &v).await.unwrap_or_else(|e| panic!("write {tag}:{i} failed while the command ran: {e}"));
        acked.push((k, v));
        i += 1;
    }
    (command.await.expect("command thread"), i)
}

/// Waits (up to 60 s) until every replica directory of `keyspace` on every store holds only keys
/// its committed layout of `shards` owns (compaction after a resize), and only shards below
/// `shards` exist; returns the raw entries per shard directory.
pub fn wait_only_owned_keys(cluster: &Cluster, keyspace: &str, shards: u32) -> Vec<(String, u64)> {
    wait_for(&format!("every shard of {keyspace} to hold only its own keys"), Duration::from_secs(300), || only_owned_keys_now(cluster, keyspace, shards))
}

/// One look at the replica directories of `keyspace`: `Some(entries per directory)` when every
/// one is a shard below `shards` serving and keeping `shards` shards, with no key it does not own.
pub fn only_owned_keys_now(cluster: &Cluster, keyspace: &str, shards: u32) -> Option<Vec<(String, u64)>> {
    let engine = vasto_engine::Engine::new(&cluster.dir.path().join("census"), &vasto_engine::EngineOptions::default()).expect("engine");
    let mut seen = Vec::new();
    for i in 0..cluster.stores.len() {
        let ks_dir = cluster.dir.path().join(format!("store-{i}")).join(keyspace);
        for entry in std::fs::read_dir(&ks_dir).into_iter().flatten().flatten() {
            if !entry.path().join("CURRENT").exists() {
                continue;
            }
            // A directory being compacted or dropped may fail to open for a moment: look again later.
            let census = match engine.census(&entry.path()) {
                Ok(c) => c,
                Err(e) => return unsettled(&format!("{}: {e}", entry.path().display())),
            };
            let settled = census.meta.shard < shards && census.layout.serving == shards && census.layout.committed == shards && census.not_owned == 0;
            if !settled {
                let why = format!(
                    "{}: shard {}, serving {}, committed {}, {} keys it does not own",
                    entry.path().display(),
                    census.meta.shard,
                    census.layout.serving,
                    census.layout.committed,
                    census.not_owned
                );
                return unsettled(&why);
            }
            seen.push((entry.path().display().to_string(), census.entries));
        }
    }
    Some(seen)
}

/// Prints why a replica directory is not settled yet, once per distinct reason (the check is
/// polled), so a timeout says which directory held it up.
fn unsettled<T>(why: &str) -> Option<T> {
    static LAST: std::sync::Mutex<String> = std::sync::Mutex::new(String::new());
    let mut last = LAST.lock().unwrap_or_else(|p| p.into_inner());
    if *last != why {
        eprintln!("not settled yet: {why}");
        *last = why.to_owned();
    }
    None
}

/// Splits the acknowledged writes of `expected` that shard `shard` of `shards` owns into keys and
/// their expected values, in the same order.
pub fn shard_writes(expected: &[(Vec<u8>, Vec<u8>)], shards: u32, shard: u32) -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
    expected.iter().filter(|(k, _)| vasto_hash::shard_of(k, shards) == shard).cloned().unzip()
}

/// Reads `keys` from one replica and describes how it differs from `values`: `None` when every
/// key holds its expected value, otherwise how many differ and the first that does.
pub fn replica_differs(
    addr: &str,
    token: Option<&vasto_wire::ClusterToken>,
    keyspace: &str,
    shard: u32,
    keys: &[Vec<u8>],
    values: &[Vec<u8>],
) -> Option<String> {
    let got = Raw::connect_as(addr, Role::Client, token).expect("open the connection").get_many(keyspace, shard, keys);
    let differ = |(g, v): &(&Option<Vec<u8>>, &Vec<u8>)| g.as_deref() != Some(v.as_slice());
    let bad = got.iter().zip(values).filter(differ).count();
    let (i, (g, v)) = got.iter().zip(values).enumerate().find(|(_, pair)| differ(pair))?;
    Some(format!(
        "{addr} shard {shard}: {bad} differ, e.g. {:?} holds {:?}, expected {:?}",
        String::from_utf8_lossy(&keys[i]),
        g.as_deref().map(String::from_utf8_lossy),
        String::from_utf8_lossy(v)
    ))
}

/// Waits until every replica of every shard holds exactly `expected` for each key.
pub fn assert_all_replicas_hold(cluster: &Cluster, keyspace: &str, expected: &[(Vec<u8>, Vec<u8>)]) {
    let (shards, replicas) = cluster.routes(keyspace);
    let token = cluster.token();
    for (shard, addrs) in replicas.iter().enumerate() {
        let (keys, values) = shard_writes(expected, shards, shard as u32);
        for addr in addrs {
            wait_for(&format!("replica {addr} of shard {shard} to hold all {} acknowledged writes", keys.len()), Duration::from_secs(30), || {
                match replica_differs(addr, token.as_ref(), keyspace, shard as u32, &keys, &values) {
                    Some(why) => {
                        eprintln!("{why}");
                        None
                    }
                    None => Some(()),
                }
            });
        }
    }
}
