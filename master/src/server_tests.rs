//! End-to-end tests of the master over real loopback TCP with fake stores and clients.
use super::*;
use std::collections::BTreeSet;
use std::sync::Mutex;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use vasto_wire::fb::ShardCommandKind;
use vasto_wire::{parse_frame, ReplicaLag, RoutingTable, ShardInfo, Status, DEFAULT_MAX_FRAME};

#[path = "server_repl_tests.rs"]
mod replication;

const WAIT: Duration = Duration::from_secs(5);

async fn start() -> SocketAddr {
    start_with_heartbeat_timeout(MasterConfig::default().heartbeat_timeout).await
}

async fn start_with_heartbeat_timeout(heartbeat_timeout: Duration) -> SocketAddr {
    start_in(&master_dir(), heartbeat_timeout).await
}

/// A directory for one master's files that outlives the test's master.
fn master_dir() -> std::path::PathBuf {
    tempfile::tempdir().expect("temp dir").keep()
}

/// A master whose files are in `dir` (a restarted master is started on the same one).
async fn start_in(dir: &std::path::Path, heartbeat_timeout: Duration) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(serve(listener, MasterConfig { listen: addr, heartbeat_timeout, dir: dir.to_path_buf(), ..Default::default() }));
    addr
}

async fn connect(addr: SocketAddr, role: Role) -> TcpStream {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    let mut out = Vec::new();
    FrameEncoder::new().hello(&mut out, role, 0, &[0; 16]);
    s.write_all(&out).await.expect("hello");
    let mut buf = Vec::new();
    read_frame(&mut s, &mut buf, DEFAULT_MAX_FRAME).await.expect("hello reply");
    let reply = parse_frame(&buf).expect("parse").body_as_hello_reply().expect("hello reply");
    assert_eq!(reply.status(), Status::Ok);
    s
}

/// A fake store whose shard set survives "restarts", like a store's data directory. Its
/// heartbeats carry `lags`; routing tables pushed on its connection arrive on `tables`.
struct FakeStore {
    id: String,
    tasks: Vec<JoinHandle<()>>,
    wr: Arc<tokio::sync::Mutex<OwnedWriteHalf>>,
    lags: Arc<Mutex<Vec<ReplicaLag>>>,
    tables: mpsc::UnboundedReceiver<RoutingTable>,
}

impl FakeStore {
    async fn start(addr: SocketAddr, id: &str, shards: Arc<Mutex<BTreeSet<ShardInfo>>>) -> Self {
        let s = connect(addr, Role::Store).await;
        let (mut rd, mut wr) = s.into_split();
        let mut out = Vec::new();
        let held: Vec<ShardInfo> = shards.lock().expect("lock").iter().cloned().collect();
        FrameEncoder::new().register(
            &mut out,
            id,
            &format!("{id}.example:7000"),
            "",
            vasto_wire::DiskReport { capacity_bytes: 1 << 30, free_bytes: 1 << 29, full: false },
            &held,
            1,
        );
        wr.write_all(&out).await.expect("register");
        let wr = Arc::new(tokio::sync::Mutex::new(wr));
        let lags = Arc::new(Mutex::new(Vec::new()));
        let heartbeat = {
            let (wr, id, lags) = (Arc::clone(&wr), id.to_owned(), Arc::clone(&lags));
            tokio::spawn(async move {
                loop {
                    if heartbeat(&wr, &id, &lags).await.is_err() {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
            })
        };
        let (tables_tx, tables) = mpsc::unbounded_channel();
        let writer = Arc::clone(&wr);
        let reader = tokio::spawn(async move {
            let (wr, mut buf, mut enc) = (writer, Vec::new(), FrameEncoder::new());
            while read_frame(&mut rd, &mut buf, DEFAULT_MAX_FRAME).await.is_ok() {
                let Ok(frame) = parse_frame(&buf) else { return };
                if let Some(t) = frame.body_as_routing_table() {
                    let _ = tables_tx.send(RoutingTable::from_fb(t));
                    continue;
                }
                let Some(cmd) = frame.body_as_shard_command() else { continue };
                let Some(info) = cmd.shard().map(ShardInfo::from_fb) else { continue };
                {
                    let mut held = shards.lock().expect("lock");
                    let old = held.iter().find(|s| s.keyspace == info.keyspace && s.shard == info.shard).cloned();
                    held.retain(|s| !(s.keyspace == info.keyspace && s.shard == info.shard));
                    match cmd.kind() {
                        ShardCommandKind::Create => {
                            held.insert(ShardInfo { frozen: false, ..info });
                        }
                        ShardCommandKind::Freeze => held.extend(old.map(|o| ShardInfo { frozen: true, ..o })),
                        ShardCommandKind::Commit => {
                            held.insert(info);
                        }
                        _ => {}
                    }
                }
                let mut out = Vec::new();
                enc.shard_command_ack(&mut out, frame.id(), Status::Ok, "", 0, 1);
                if send(&wr, &out).await.is_err() {
                    return;
                }
            }
        });
        Self { id: id.to_owned(), tasks: vec![heartbeat, reader], wr, lags, tables }
    }

    /// Reports `lags` from now on, starting with a heartbeat sent at once.
    async fn set_lags(&self, lags: Vec<ReplicaLag>) {
        *self.lags.lock().expect("lock") = lags;
        heartbeat(&self.wr, &self.id, &self.lags).await.expect("heartbeat");
    }

    /// Subscribes to `keyspace` on the store's own connection.
    async fn subscribe(&self, keyspace: &str) {
        let mut out = Vec::new();
        FrameEncoder::new().subscribe(&mut out, keyspace);
        send(&self.wr, &out).await.expect("subscribe");
    }

    /// Waits for a table pushed on the store connection that satisfies `pred`.
    async fn table_where(&mut self, pred: impl Fn(&RoutingTable) -> bool) -> RoutingTable {
        loop {
            let t = tokio::time::timeout(WAIT, self.tables.recv()).await.expect("in time").expect("connection open");
            if pred(&t) {
                return t;
            }
        }
    }

    /// Like kill -9: the tasks stop and the socket is closed.
    fn kill(self) {
        for t in self.tasks {
            t.abort();
        }
    }
}

async fn send(wr: &tokio::sync::Mutex<OwnedWriteHalf>, frame: &[u8]) -> std::io::Result<()> {
    wr.lock().await.write_all(frame).await
}

/// Sends a heartbeat with the current `lags`, read under the writer lock so that heartbeats
/// reach the master in the order the lags were set.
async fn heartbeat(wr: &tokio::sync::Mutex<OwnedWriteHalf>, id: &str, lags: &Mutex<Vec<ReplicaLag>>) -> std::io::Result<()> {
    let mut w = wr.lock().await;
    let mut out = Vec::new();
    FrameEncoder::new().heartbeat(&mut out, id, &lags.lock().expect("lock"), vasto_wire::DiskReport::default());
    w.write_all(&out).await
}

#[derive(Debug)]
enum Msg {
    Table(RoutingTable),
    Reply { id: u64, status: Status, message: String, json: String },
}

async fn next_msg(s: &mut TcpStream) -> Msg {
    let mut buf = Vec::new();
    let frame = loop {
        tokio::time::timeout(WAIT, read_frame(s, &mut buf, DEFAULT_MAX_FRAME)).await.expect("in time").expect("frame");
        let frame = parse_frame(&buf).expect("parse");
        // The master's keep-alives carry nothing.
        if frame.body_type() != vasto_wire::Body::Heartbeat {
            break frame;
        }
    };
    if let Some(t) = frame.body_as_routing_table() {
        return Msg::Table(RoutingTable::from_fb(t));
    }
    let r = frame.body_as_admin_reply().expect("admin reply");
    Msg::Reply { id: frame.id(), status: r.status(), message: r.message().unwrap_or_default().to_owned(), json: r.json().unwrap_or_default().to_owned() }
}

async fn request(s: &mut TcpStream, frame: Vec<u8>) {
    s.write_all(&frame).await.expect("write");
}

async fn status(s: &mut TcpStream) -> ClusterStatus {
    let mut out = Vec::new();
    FrameEncoder::new().status_request(&mut out, 99);
    request(s, out).await;
    match next_msg(s).await {
        Msg::Reply { id: 99, status: Status::Ok, json, .. } => serde_json::from_str(&json).expect("json"),
        other => panic!("unexpected {other:?}"),
    }
}

async fn wait_stores_up(s: &mut TcpStream, n: usize) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while status(s).await.stores.iter().filter(|s| s.up).count() < n {
        assert!(tokio::time::Instant::now() < deadline, "stores did not register");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Reads until a table of "ks" satisfying `pred` arrives; returns it and the replies seen.
async fn table_where(s: &mut TcpStream, pred: impl Fn(&RoutingTable) -> bool) -> (RoutingTable, Vec<Msg>) {
    let mut seen = Vec::new();
    loop {
        match next_msg(s).await {
            Msg::Table(t) if pred(&t) => return (t, seen),
            other => seen.push(other),
        }
    }
}

async fn reply_to(s: &mut TcpStream, id: u64, seen: Vec<Msg>) -> (Status, String) {
    for m in seen {
        if let Msg::Reply { id: got, status, message, .. } = m {
            if got == id {
                return (status, message);
            }
        }
    }
    loop {
        if let Msg::Reply { id: got, status, message, .. } = next_msg(s).await {
            if got == id {
                return (status, message);
            }
        }
    }
}

#[tokio::test]
async fn create_push_store_down_and_delete() {
    // A heartbeat timeout far past the wait below: the dead store must be seen by its closed
    // connection, not by its silence.
    let addr = start_with_heartbeat_timeout(Duration::from_secs(60)).await;
    let shards = Arc::new(Mutex::new(BTreeSet::new()));
    let store = FakeStore::start(addr, "s1", Arc::clone(&shards)).await;
    let mut client = connect(addr, Role::Admin).await;
    let mut enc = FrameEncoder::new();

    let mut out = Vec::new();
    enc.subscribe(&mut out, "ks");
    request(&mut client, out).await;
    match next_msg(&mut client).await {
        Msg::Table(t) => assert!(!t.exists && t.keyspace == "ks"),
        other => panic!("unexpected {other:?}"),
    }
    wait_stores_up(&mut client, 1).await;

    // Too many replicas for one store.
    let mut out = Vec::new();
    enc.create_keyspace(&mut out, 6, "ks", 4, 2, false);
    request(&mut client, out).await;
    let (st, msg) = reply_to(&mut client, 6, Vec::new()).await;
    assert_eq!(st, Status::BadRequest);
    assert!(msg.contains("needs 2 distinct stores but only 1"), "{msg}");

    let mut out = Vec::new();
    enc.create_keyspace(&mut out, 7, "ks", 4, 1, false);
    request(&mut client, out).await;
    let (t, seen) = table_where(&mut client, |t| t.exists).await;
    assert_eq!((t.shards, t.replicas, t.routes.len()), (4, 1, 4));
    assert!(t.routes.iter().flatten().all(|r| r.store_id == "s1" && r.up && r.address == "s1.example:7000"));
    assert_eq!(reply_to(&mut client, 7, seen).await.0, Status::Ok);
    assert_eq!(shards.lock().expect("lock").len(), 4, "the store got a create per shard");

    // Same again: idempotent.
    let mut out = Vec::new();
    enc.create_keyspace(&mut out, 8, "ks", 4, 1, false);
    request(&mut client, out).await;
    assert_eq!(reply_to(&mut client, 8, Vec::new()).await.0, Status::Ok);

    // The store dies: the client hears about it as soon as its connection closes.
    store.kill();
    let down = tokio::time::timeout(Duration::from_secs(20), table_where(&mut client, |t| t.exists && t.routes.iter().flatten().all(|r| !r.up)))
        .await
        .expect("store marked down when its connection closed")
        .0;
    assert!(down.version > t.version);

    // Deleting while the holder is down goes through: its incarnation is recorded as deleted.
    let mut out = Vec::new();
    enc.delete_keyspace(&mut out, 9, "ks");
    request(&mut client, out).await;
    let (gone, seen) = table_where(&mut client, |t| !t.exists).await;
    assert!(gone.version > down.version);
    assert_eq!(reply_to(&mut client, 9, seen).await.0, Status::Ok);

    // The store comes back with its shards: they are not adopted, and they are dropped.
    let store = FakeStore::start(addr, "s1", Arc::clone(&shards)).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !shards.lock().expect("lock").is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "the deleted keyspace's replicas were not dropped");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut admin = connect(addr, Role::Admin).await;
    assert!(status(&mut admin).await.keyspaces.is_empty(), "a deleted keyspace never comes back");

    // The reconcile that dropped them may hold the name a moment longer (busy): retry then.
    let deadline = tokio::time::Instant::now() + WAIT;
    for id in 11.. {
        let mut out = Vec::new();
        enc.delete_keyspace(&mut out, id, "ks");
        request(&mut client, out).await;
        let (status, message) = reply_to(&mut client, id, Vec::new()).await;
        if status == Status::BadRequest && message.contains("in progress") && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        }
        assert_eq!(status, Status::UnknownKeyspace, "{message}");
        break;
    }
    store.kill();
}

#[tokio::test]
async fn silent_store_is_marked_down_by_the_heartbeat_timeout() {
    let addr = start_with_heartbeat_timeout(Duration::from_millis(750)).await;
    let shards = Arc::new(Mutex::new(BTreeSet::new()));
    let mut store = FakeStore::start(addr, "quiet", shards).await;
    let mut client = connect(addr, Role::Admin).await;
    wait_stores_up(&mut client, 1).await;
    let mut out = Vec::new();
    FrameEncoder::new().subscribe(&mut out, "ks");
    request(&mut client, out).await;
    let mut out = Vec::new();
    FrameEncoder::new().create_keyspace(&mut out, 1, "ks", 2, 1, false);
    request(&mut client, out).await;
    table_where(&mut client, |t| t.exists).await;
    // Stop the heartbeats but keep the socket open (a hung process).
    store.tasks.remove(0).abort();
    tokio::time::timeout(Duration::from_secs(20), table_where(&mut client, |t| t.exists && t.routes.iter().flatten().all(|r| !r.up)))
        .await
        .expect("silent store marked down by the heartbeat timeout");
    store.kill();
}

#[tokio::test]
async fn restarted_master_rebuilds_from_reports() {
    let addr = start().await;
    let shards: BTreeSet<ShardInfo> = (0..3)
        .map(|shard| ShardInfo { keyspace: "users".into(), shard, shards: 3, replica: 0, replicas: 1, committed: 3, committed_at_ms: 1, ..Default::default() })
        .collect();
    let store = FakeStore::start(addr, "s9", Arc::new(Mutex::new(shards))).await;
    let mut client = connect(addr, Role::Admin).await;
    let mut out = Vec::new();
    FrameEncoder::new().subscribe(&mut out, "users");
    request(&mut client, out).await;
    let (t, _) = table_where(&mut client, |t| t.exists).await;
    assert_eq!(t.keyspace, "users");
    assert!(t.routes.iter().flatten().all(|r| r.store_id == "s9" && r.up));
    let st = status(&mut client).await;
    assert_eq!(st.stores.len(), 1);
    assert_eq!(st.stores[0].replicas, 3);
    assert_eq!(st.keyspaces[0].name, "users");
    store.kill();
}

#[tokio::test]
async fn bad_input_never_hurts_other_connections() {
    let addr = start().await;

    // Wrong protocol version: a clear refusal.
    let mut fbb = flatbuffers::FlatBufferBuilder::new();
    let hello = vasto_wire::fb::Hello::create(&mut fbb, &vasto_wire::fb::HelloArgs { protocol_version: 999, role: Role::Client, cluster_id: 0, nonce: None });
    let args = vasto_wire::fb::FrameArgs { id: 0, body_type: vasto_wire::Body::Hello, body: Some(hello.as_union_value()) };
    let frame = vasto_wire::fb::Frame::create(&mut fbb, &args);
    fbb.finish(frame, None);
    let mut out = Vec::new();
    vasto_wire::write_len_prefix(&mut out, fbb.finished_data().len());
    out.extend_from_slice(fbb.finished_data());
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(&out).await.expect("write");
    let mut buf = Vec::new();
    read_frame(&mut s, &mut buf, DEFAULT_MAX_FRAME).await.expect("reply");
    let reply = parse_frame(&buf).expect("parse").body_as_hello_reply().expect("hello reply");
    assert_eq!(reply.status(), Status::VersionMismatch);
    assert!(reply.message().unwrap_or_default().contains("version"));

    // Garbage after a good hello, and an oversized frame: those connections are closed.
    let mut junk = connect(addr, Role::Admin).await;
    junk.write_all(&[8, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8]).await.expect("write");
    let mut huge = connect(addr, Role::Client).await;
    huge.write_all(&[0xff, 0xff, 0xff, 0xff]).await.expect("write");
    for s in [&mut junk, &mut huge] {
        // Keep-alives may come first; then the connection closes.
        let closed = async {
            while read_frame(s, &mut buf, DEFAULT_MAX_FRAME).await.is_ok() {
                assert_eq!(parse_frame(&buf).expect("parse").body_type(), vasto_wire::Body::Heartbeat);
            }
        };
        tokio::time::timeout(WAIT, closed).await.expect("closed in time");
    }

    // A data request sent to the master gets a BadRequest with its id.
    let mut client = connect(addr, Role::Admin).await;
    let mut out = Vec::new();
    FrameEncoder::new().get(&mut out, 42, "ks", 0, b"k");
    request(&mut client, out).await;
    assert!(matches!(next_msg(&mut client).await, Msg::Reply { id: 42, status: Status::BadRequest, .. }));
    let mut out = Vec::new();
    FrameEncoder::new().create_keyspace(&mut out, 43, ".bad", 1, 1, false);
    request(&mut client, out).await;
    assert!(matches!(next_msg(&mut client).await, Msg::Reply { id: 43, status: Status::BadRequest, .. }));
    assert!(status(&mut client).await.stores.is_empty());
}

#[tokio::test]
async fn connections_over_the_limit_are_refused_at_their_hello_and_slots_free_on_close() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(serve(listener, MasterConfig { listen: addr, dir: master_dir(), max_connections: 2, ..Default::default() }));
    let first = connect(addr, Role::Client).await;
    let _second = connect(addr, Role::Admin).await;
    let mut third = TcpStream::connect(addr).await.expect("connect");
    let mut out = Vec::new();
    FrameEncoder::new().hello(&mut out, Role::Client, 0, &[0; 16]);
    third.write_all(&out).await.expect("hello");
    let mut buf = Vec::new();
    tokio::time::timeout(WAIT, read_frame(&mut third, &mut buf, DEFAULT_MAX_FRAME)).await.expect("in time").expect("reply");
    let reply = parse_frame(&buf).expect("parse").body_as_hello_reply().expect("hello reply");
    assert_eq!(reply.status(), Status::Unavailable);
    assert!(reply.message().unwrap_or_default().contains("at most 2 connections"));
    drop(first);
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let mut s = TcpStream::connect(addr).await.expect("connect");
        let mut out = Vec::new();
        FrameEncoder::new().hello(&mut out, Role::Client, 0, &[0; 16]);
        s.write_all(&out).await.expect("hello");
        tokio::time::timeout(WAIT, read_frame(&mut s, &mut buf, DEFAULT_MAX_FRAME)).await.expect("in time").expect("reply");
        if parse_frame(&buf).expect("parse").body_as_hello_reply().expect("hello reply").status() == Status::Ok {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the closed connection's slot was never freed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
