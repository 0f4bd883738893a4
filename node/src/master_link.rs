//! The store's persistent connection to the master: hello, registration with every shard held,
//! heartbeats every 250 ms, and shard commands executed as they arrive. Reconnects forever.
use crate::disk::DiskWatch;
use crate::registry::Registry;
use crate::replication::Replication;
use crate::NodeError;
use std::io::{ErrorKind, Write};
use std::net::{Shutdown, TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use vasto_engine::LogPosition;
use vasto_wire::{
    fb, greet_blocking, parse_frame, read_frame_blocking, Body, ClusterToken, FrameEncoder, Greeter, Role, RoutingTable, ShardInfo, Status, WireError,
    DEFAULT_MAX_FRAME, MASTER_SILENCE,
};

/// How often a store tells the master it is alive.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_millis(250);
const RECONNECT_DELAY: Duration = Duration::from_millis(250);
/// How long the master may take to answer each frame of the opening.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

/// Who this store is, as told to the master.
#[derive(Debug, Clone)]
pub struct Identity {
    /// Stable id, kept in `DIR/store-id`.
    pub store_id: String,
    /// Address clients use to reach this store.
    pub address: String,
    /// Data directory.
    pub dir: PathBuf,
    /// The failure domain reported to the master (empty: none).
    pub zone: String,
    /// The data filesystem, reported at registration and with every heartbeat.
    pub disk: DiskWatch,
    /// The cluster token proven to the master, if the cluster has one.
    pub token: Option<ClusterToken>,
    /// Chosen at each start of the process (see `Register.start_id`): the master tells a
    /// reconnection of the same process from a restart by it.
    pub start_id: u64,
}

/// Runs the master link on its own thread until the process ends; each attempt to reach the
/// master connects within `connect_timeout`.
pub fn spawn(
    master: String,
    connect_timeout: Duration,
    identity: Identity,
    registry: Arc<Registry>,
    replication: Replication,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new().name("vasto-master-link".into()).spawn(move || {
        let mut failures = 0u32;
        loop {
            match connect(&master, connect_timeout).and_then(|s| session(s, &identity, &registry, &replication)) {
                Ok(()) => failures = 0,
                Err(e) => {
                    // Log the first failure and then every 40th (~10 s) to keep the log readable.
                    if failures.is_multiple_of(40) {
                        tracing::warn!(master = %master, error = %e, "master connection lost; retrying");
                    }
                    failures = failures.saturating_add(1);
                }
            }
            std::thread::sleep(RECONNECT_DELAY);
        }
    })
}

/// Connects to `master` (`host:port`), trying each address it resolves to for at most
/// `timeout`.
fn connect(master: &str, timeout: Duration) -> Result<TcpStream, NodeError> {
    let mut last = None;
    for addr in master.to_socket_addrs()? {
        match TcpStream::connect_timeout(&addr, timeout) {
            Ok(s) => return Ok(s),
            Err(e) => last = Some(e),
        }
    }
    Err(last.map(NodeError::from).unwrap_or_else(|| NodeError::Master(format!("{master} resolves to no address"))))
}

fn send(stream: &Mutex<TcpStream>, frame: &[u8]) -> Result<(), NodeError> {
    let mut s = stream.lock().unwrap_or_else(|p| p.into_inner());
    s.write_all(frame)?;
    Ok(())
}

/// One connected session; returns when the connection breaks.
fn session(mut stream: TcpStream, identity: &Identity, registry: &Registry, replication: &Replication) -> Result<(), NodeError> {
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(HELLO_TIMEOUT))?;
    let greeter = Greeter::new(Role::Store, registry.cluster_id(), identity.token.as_ref());
    let master_cluster = greet_blocking(&mut stream, greeter).map_err(|e| NodeError::Master(format!("master refused the store: {e}")))?;
    // The master sends a keep-alive every 500 ms: a longer silence means it is gone.
    stream.set_read_timeout(Some(MASTER_SILENCE))?;
    let mut reader = stream.try_clone()?;
    let writer = Arc::new(Mutex::new(stream));
    let mut enc = FrameEncoder::new();
    let mut out = Vec::new();

    join_cluster(registry, &identity.dir, master_cluster)?;
    let infos = registry.infos();
    enc.register(&mut out, &identity.store_id, &identity.address, &identity.zone, identity.disk.report(), &infos, identity.start_id);
    // Subscribe to the routing table of every keyspace held: replication needs the peers.
    let mut keyspaces: Vec<&str> = infos.iter().map(|i| i.keyspace.as_str()).collect();
    keyspaces.dedup();
    for ks in keyspaces {
        enc.subscribe(&mut out, ks);
    }
    send(&writer, &out)?;
    tracing::info!(store_id = %identity.store_id, "registered with the master");

    let stop = Arc::new(AtomicBool::new(false));
    let heartbeat = {
        let (writer, stop, id, replication, disk) =
            (Arc::clone(&writer), Arc::clone(&stop), identity.store_id.clone(), replication.clone(), identity.disk.clone());
        std::thread::Builder::new().name("vasto-heartbeat".into()).spawn(move || {
            let mut enc = FrameEncoder::new();
            let mut out = Vec::new();
            while !stop.load(Ordering::Acquire) {
                out.clear();
                enc.heartbeat(&mut out, &id, &replication.lags(), disk.report());
                if send(&writer, &out).is_err() {
                    break;
                }
                std::thread::sleep(HEARTBEAT_INTERVAL);
            }
        })?
    };
    let result = command_loop(&mut reader, &writer, registry, replication, identity, &mut enc);
    stop.store(true, Ordering::Release);
    let _ = reader.shutdown(Shutdown::Both);
    let _ = heartbeat.join();
    result
}

/// Checks the master's cluster id against the store's, adopting it (durably, before anything
/// is registered) when the store has none yet.
fn join_cluster(registry: &Registry, dir: &std::path::Path, master_cluster: u64) -> Result<(), NodeError> {
    let ours = registry.cluster_id();
    if master_cluster == 0 {
        return Err(NodeError::Master("the master sent no cluster id (an older master?)".into()));
    }
    if ours == 0 {
        crate::identity::save_cluster_id(dir, master_cluster)?;
        registry.set_cluster_id(master_cluster);
        tracing::info!(cluster_id = %format!("{master_cluster:016x}"), "joined the cluster");
    } else if ours != master_cluster {
        return Err(NodeError::Master(format!("this store belongs to cluster {ours:016x}, the master to cluster {master_cluster:016x}")));
    }
    Ok(())
}

fn command_loop(
    reader: &mut TcpStream,
    writer: &Arc<Mutex<TcpStream>>,
    registry: &Registry,
    replication: &Replication,
    identity: &Identity,
    enc: &mut FrameEncoder,
) -> Result<(), NodeError> {
    let mut buf = Vec::new();
    let mut out = Vec::new();
    loop {
        read_frame_blocking(reader, &mut buf, DEFAULT_MAX_FRAME).map_err(|e| match e {
            WireError::Io(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                NodeError::Master(format!("no frame from the master for {MASTER_SILENCE:?}; reconnecting"))
            }
            e => e.into(),
        })?;
        let frame = parse_frame(&buf)?;
        out.clear();
        if let Some(table) = frame.body_as_routing_table() {
            replication.update(RoutingTable::from_fb(table));
            continue;
        }
        if frame.body_type() == Body::Heartbeat {
            continue; // the master's keep-alive
        }
        match frame.body_as_shard_command() {
            Some(cmd) if cmd.kind() == fb::ShardCommandKind::Checkpoint => {
                checkpoint_in_background(cmd, frame.id(), registry, writer);
                continue;
            }
            Some(cmd) => {
                if cmd.kind() == fb::ShardCommandKind::Drop {
                    // Stop its followers first: one copying a snapshot holds the replica open.
                    if let Some(shard) = cmd.shard() {
                        replication.stop_following(shard.keyspace().unwrap_or_default(), shard.shard());
                    }
                }
                let (status, message, mark) = execute(cmd, registry);
                enc.shard_command_ack(&mut out, frame.id(), status, &message, mark.seq, mark.incarnation);
                // A compaction or a mark changes no shard: nothing more to report.
                if status == Status::Ok && !matches!(cmd.kind(), fb::ShardCommandKind::Compact | fb::ShardCommandKind::Mark) {
                    if cmd.kind() == fb::ShardCommandKind::Create {
                        if let Some(keyspace) = cmd.shard().and_then(|s| s.keyspace()) {
                            enc.subscribe(&mut out, keyspace);
                        }
                    }
                    // The master keeps what each store reports; tell it the shard set as it is now.
                    enc.register(&mut out, &identity.store_id, &identity.address, &identity.zone, identity.disk.report(), &registry.infos(), identity.start_id);
                }
            }
            None => {
                enc.shard_command_ack(&mut out, frame.id(), Status::BadRequest, "stores only accept shard commands and routing tables from the master", 0, 0)
            }
        }
        send(writer, &out)?;
    }
}

/// Runs one shard command; the answer carries the replica's change-log position once it took
/// effect (what a drain waits for after a freeze or a layout change).
fn execute(cmd: fb::ShardCommand<'_>, registry: &Registry) -> (Status, String, LogPosition) {
    let none = LogPosition::default();
    let Some(info) = cmd.shard().map(ShardInfo::from_fb) else {
        return (Status::BadRequest, "shard command without a shard".into(), none);
    };
    let place = format!("{}/{}", info.keyspace, info.shard);
    // A create or commit carries a layout the replica adopts; a drop or freeze only names it
    // (a leftover shard beyond every layout is dropped this way).
    let lays_out = matches!(cmd.kind(), fb::ShardCommandKind::Create | fb::ShardCommandKind::Commit);
    if let Err(why) = if lays_out { info.check_counts() } else { Ok(()) } {
        tracing::warn!(shard = %place, kind = ?cmd.kind(), %why, "refused an impossible shard command");
        return (Status::BadRequest, format!("{place}: {why}"), none);
    }
    let outcome = match cmd.kind() {
        fb::ShardCommandKind::Create => registry.create(&info).inspect(|mark| {
            tracing::info!(keyspace = %info.keyspace, shard = info.shard, replica = info.replica, serving = info.shards, committed = info.committed, head = mark.seq, "created shard (or took the layout)");
        }),
        fb::ShardCommandKind::Freeze => registry.freeze(&info.keyspace, info.shard).inspect(|mark| {
            tracing::info!(keyspace = %info.keyspace, shard = info.shard, final_head = mark.seq, "froze shard: refusing writes while it drains");
        }),
        fb::ShardCommandKind::Commit => registry.commit(&info).inspect(|_| {
            tracing::info!(keyspace = %info.keyspace, shard = info.shard, shards = info.shards, "resize committed: serving and keeping this shard count only");
        }),
        fb::ShardCommandKind::Compact => registry.compact_on_request(&info.keyspace, info.shard).map(|started| {
            tracing::info!(keyspace = %info.keyspace, shard = info.shard, started, "full compaction requested");
            none
        }),
        fb::ShardCommandKind::Mark => match registry.get(&info.keyspace, info.shard) {
            Some(replica) => Ok(replica.log_mark()),
            None => Err(NodeError::Master(format!("no replica of {place} here"))),
        },
        fb::ShardCommandKind::Drop => registry.drop_shard(&info.keyspace, info.shard).map(|()| {
            tracing::info!(keyspace = %info.keyspace, shard = info.shard, "dropped shard: closed and deleted");
            none
        }),
        _ => return (Status::BadRequest, "unknown shard command".into(), none),
    };
    match outcome {
        Ok(mark) => (Status::Ok, String::new(), mark),
        Err(e) => {
            tracing::warn!(shard = %place, kind = ?cmd.kind(), error = %e, "shard command failed");
            let status = match e {
                NodeError::Master(_) => Status::Unavailable,
                _ => Status::Internal,
            };
            (status, format!("{place}: {e}"), none)
        }
    }
}

/// Writes a checkpoint of a held replica into the command's directory on a helper thread (it
/// takes as long as copying the data when the directory is on another filesystem than the
/// store's, and the master link must keep reading meanwhile), and acks command `id` from there
/// with the change-log position the checkpoint covers.
fn checkpoint_in_background(cmd: fb::ShardCommand<'_>, id: u64, registry: &Registry, writer: &Arc<Mutex<TcpStream>>) {
    let writer = Arc::clone(writer);
    let ack = move |status: Status, message: &str, mark: LogPosition| {
        let mut out = Vec::new();
        FrameEncoder::new().shard_command_ack(&mut out, id, status, message, mark.seq, mark.incarnation);
        if let Err(e) = send(&writer, &out) {
            tracing::warn!(error = %e, "could not answer a checkpoint command; the master times it out");
        }
    };
    let Some(info) = cmd.shard().map(ShardInfo::from_fb) else {
        return ack(Status::BadRequest, "checkpoint command without a shard", LogPosition::default());
    };
    let place = format!("{}/{}", info.keyspace, info.shard);
    let dir = PathBuf::from(cmd.dir().unwrap_or_default());
    if !dir.is_absolute() {
        return ack(
            Status::BadRequest,
            &format!("{place}: the checkpoint directory must be an absolute path, not {:?}", dir.display()),
            LogPosition::default(),
        );
    }
    let Some(replica) = registry.get(&info.keyspace, info.shard) else {
        return ack(Status::Internal, &format!("{place}: no replica of it here"), LogPosition::default());
    };
    let spawned = std::thread::Builder::new().name("vasto-checkpoint".into()).spawn(move || match replica.checkpoint_into(&dir) {
        Ok(mark) => {
            tracing::info!(shard = %place, dir = %dir.display(), position = mark.seq, "wrote a checkpoint for a backup");
            ack(Status::Ok, "", mark);
        }
        Err(e) => {
            tracing::warn!(shard = %place, dir = %dir.display(), error = %e, "checkpoint failed");
            ack(Status::Internal, &format!("{place}: checkpoint into {}: {e}", dir.display()), LogPosition::default());
        }
    });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "could not start a checkpoint thread; the master times the command out");
    }
}
