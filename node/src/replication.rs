//! The receiving side of replication. For every shard replica this store holds, one follower per
//! peer replica (from the routing table the master pushes) connects to the peer, asks for its
//! local writes after the position saved here, and applies them through the same last-writer-wins
//! merge, saving the new position in the same write batch. Runs on its own thread.
use crate::registry::Registry;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use vasto_engine::header::Header;
use vasto_wire::{parse_frame, read_frame, FrameEncoder, ReplicaLag, Role, RoutingTable, ShardSelector, Status, DEFAULT_MAX_FRAME};

const RETRY: Duration = Duration::from_millis(250);
/// A tail silent for this long (keep-alives come every 500 ms) is considered dead.
const SILENCE: Duration = Duration::from_secs(3);
/// How often the replication lag distribution is logged.
const LAG_REPORT: Duration = Duration::from_secs(10);
/// How long a follower waits for the next piece of a snapshot (the first one waits for the export).
const SNAPSHOT_SILENCE: Duration = Duration::from_secs(600);

type FollowerKey = (String, u32, String);

/// Replication state of one (keyspace, shard, peer) follower.
#[derive(Debug, Clone, Default)]
struct FollowState {
    entries_behind: u64,
    behind_since: Option<Instant>,
    caught_up: bool,
}

/// Handle to the replication thread.
#[derive(Clone)]
pub struct Replication {
    tables: mpsc::UnboundedSender<RoutingTable>,
    state: Arc<Mutex<HashMap<FollowerKey, FollowState>>>,
}

impl Replication {
    /// Starts the replication thread for the store `me`.
    pub fn start(registry: Arc<Registry>, me: String) -> std::io::Result<Self> {
        let (tx, rx) = mpsc::unbounded_channel();
        let state = Arc::new(Mutex::new(HashMap::new()));
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let shared = Arc::clone(&state);
        std::thread::Builder::new().name("vasto-replication".into()).spawn(move || rt.block_on(manage(rx, registry, me, shared)))?;
        Ok(Self { tables: tx, state })
    }

    /// Hands a routing table pushed by the master to the replication thread.
    pub fn update(&self, table: RoutingTable) {
        let _ = self.tables.send(table);
    }

    /// The lag of every follower, for the heartbeat.
    pub fn lags(&self) -> Vec<ReplicaLag> {
        let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let mut out: Vec<ReplicaLag> = state
            .iter()
            .map(|((keyspace, shard, peer), s)| ReplicaLag {
                keyspace: keyspace.clone(),
                shard: *shard,
                peer: peer.clone(),
                entries: s.entries_behind,
                lag_ms: s.behind_since.map(|t| t.elapsed().as_millis() as u64).unwrap_or(0),
                caught_up: s.caught_up,
            })
            .collect();
        out.sort_by(|a, b| (&a.keyspace, a.shard, &a.peer).cmp(&(&b.keyspace, b.shard, &b.peer)));
        out
    }
}

struct Follower {
    source: Source,
    task: tokio::task::JoinHandle<()>,
}

/// Where a follower copies from: a peer's address, which of its shards, and for a resize copy
/// which keys (those the local shard owns under the new shard count, from the routing table,
/// so it does not depend on when the local replica takes its new layout).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Source {
    address: String,
    shard: u32,
    only: Option<ShardSelector>,
}

async fn manage(mut tables: mpsc::UnboundedReceiver<RoutingTable>, registry: Arc<Registry>, me: String, state: Arc<Mutex<HashMap<FollowerKey, FollowState>>>) {
    let mut followers: HashMap<FollowerKey, Follower> = HashMap::new();
    let lag = Arc::new(Mutex::new(LagSamples::new()));
    tokio::spawn(report_lag(Arc::clone(&lag)));
    while let Some(table) = tables.recv().await {
        let wanted = wanted_followers(&table, &registry, &me);
        followers.retain(|key, f| {
            let keep = key.0 != table.keyspace || wanted.get(key) == Some(&f.source);
            if !keep {
                f.task.abort();
                state.lock().unwrap_or_else(|p| p.into_inner()).remove(key);
            }
            keep
        });
        for (key, source) in wanted {
            if followers.contains_key(&key) {
                continue;
            }
            tracing::info!(keyspace = %key.0, shard = key.1, peer = %key.2, address = %source.address, source_shard = source.shard, "following peer replica");
            state.lock().unwrap_or_else(|p| p.into_inner()).insert(key.clone(), FollowState::default());
            let ctx = FollowCtx {
                registry: Arc::clone(&registry),
                me: me.clone(),
                key: key.clone(),
                source: source.clone(),
                state: Arc::clone(&state),
                lag: Arc::clone(&lag),
            };
            followers.insert(key, Follower { source, task: tokio::spawn(follow(ctx)) });
        }
    }
}

/// The followers this store should run for a keyspace's table: for every shard it holds, one
/// per other replica of the shard; and during a resize, for every receiving shard it holds, one
/// per replica of every giving shard (named `store#shard`), copying the keys that move.
fn wanted_followers(table: &RoutingTable, registry: &Registry, me: &str) -> HashMap<FollowerKey, Source> {
    let mut wanted = HashMap::new();
    if !table.exists {
        return wanted;
    }
    for (shard, replicas) in table.routes.iter().enumerate() {
        let shard = shard as u32;
        if !replicas.iter().any(|r| r.store_id == me) || registry.get(&table.keyspace, shard).is_none() {
            continue;
        }
        for peer in replicas.iter().filter(|r| r.store_id != me && !r.address.is_empty()) {
            wanted.insert((table.keyspace.clone(), shard, peer.store_id.clone()), Source { address: peer.address.clone(), shard, only: None });
        }
        if let Some((targets, sources)) = vasto_wire::resize_ranges(table.shards, table.resizing_to) {
            if targets.contains(&shard) {
                for source in sources {
                    for peer in table.routes.get(source as usize).into_iter().flatten().filter(|r| !r.address.is_empty()) {
                        let name = format!("{}#{source}", peer.store_id);
                        let only = Some(ShardSelector { shard, shards: table.resizing_to });
                        wanted.insert((table.keyspace.clone(), shard, name), Source { address: peer.address.clone(), shard: source, only });
                    }
                }
            }
        }
    }
    wanted
}

struct FollowCtx {
    registry: Arc<Registry>,
    me: String,
    /// (keyspace, local shard, peer name): the name is the peer's store id, or `store#shard`
    /// for a copy from another shard during a resize; positions and lags are kept under it.
    key: FollowerKey,
    source: Source,
    state: Arc<Mutex<HashMap<FollowerKey, FollowState>>>,
    lag: Arc<Mutex<LagSamples>>,
}

impl FollowCtx {
    fn record(&self, position: u64, head: u64) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let Some(s) = state.get_mut(&self.key) else { return };
        s.entries_behind = head.saturating_sub(position);
        if position >= head {
            s.caught_up = true;
            s.behind_since = None;
        } else if s.behind_since.is_none() {
            s.behind_since = Some(Instant::now());
        }
    }
}

async fn follow(ctx: FollowCtx) {
    loop {
        match follow_once(&ctx).await {
            Ok(()) => {}
            Err(e) => tracing::debug!(keyspace = %ctx.key.0, shard = ctx.key.1, peer = %ctx.key.2, error = %e, "tail ended; reconnecting"),
        }
        tokio::time::sleep(RETRY).await;
    }
}

/// Connects to a peer store, says hello as a store and sends `request`.
async fn connect_peer(address: &str, request: &[u8]) -> Result<BufReader<TcpStream>, String> {
    let mut stream =
        tokio::time::timeout(SILENCE, TcpStream::connect(address)).await.map_err(|_| "connect timed out".to_string())?.map_err(|e| e.to_string())?;
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    FrameEncoder::new().hello(&mut out, Role::Store);
    out.extend_from_slice(request);
    stream.write_all(&out).await.map_err(|e| e.to_string())?;
    let mut reader = BufReader::with_capacity(256 << 10, stream);
    let mut buf = Vec::new();
    tokio::time::timeout(SILENCE, read_frame(&mut reader, &mut buf, DEFAULT_MAX_FRAME))
        .await
        .map_err(|_| "no hello reply".to_string())?
        .map_err(|e| e.to_string())?;
    let reply = parse_frame(&buf).ok().and_then(|f| f.body_as_hello_reply()).ok_or("peer did not answer the hello")?;
    if reply.status() != Status::Ok {
        return Err(format!("peer refused: {}", reply.message().unwrap_or_default()));
    }
    Ok(reader)
}

/// One tail session: connect, ask for changes after the saved position, apply until it breaks.
async fn follow_once(ctx: &FollowCtx) -> Result<(), String> {
    let (keyspace, shard, peer) = &ctx.key;
    let replica = ctx.registry.get(keyspace, *shard).ok_or("replica no longer held")?;
    let Some(after) = replica.peer_position(peer).map_err(|e| e.to_string())? else {
        // Never copied from this peer: its log only has its own writes, so start from a snapshot.
        return bootstrap(ctx, &replica).await;
    };
    let mut request = Vec::new();
    FrameEncoder::new().tail(&mut request, keyspace, ctx.source.shard, after, &ctx.me, ctx.source.only);
    let mut reader = connect_peer(&ctx.source.address, &request).await?;
    let mut buf = Vec::new();
    let mut saved = after;
    loop {
        tokio::time::timeout(SILENCE, read_frame(&mut reader, &mut buf, DEFAULT_MAX_FRAME))
            .await
            .map_err(|_| "peer went silent".to_string())?
            .map_err(|e| e.to_string())?;
        let frame = parse_frame(&buf).map_err(|e| e.to_string())?;
        let changes = frame.body_as_changes().ok_or("unexpected frame on a tail")?;
        match changes.status() {
            Status::Ok => {}
            Status::Trimmed => {
                tracing::warn!(keyspace = %keyspace, shard, peer = %peer, after, "too far behind the peer's change log; re-bootstrapping from a snapshot");
                return bootstrap(ctx, &replica).await;
            }
            other => return Err(format!("peer refused the tail: {}", vasto_wire::status_name(other))),
        }
        let entries = changes.entries();
        let now = vasto_engine::now_ns();
        // A copy from another shard (resize) keeps only the keys that move here (the sender
        // already filters; this guards against a sender that does not).
        let only = ctx.source.only;
        let pairs =
            entries.iter().flat_map(|e| e.iter()).filter_map(|kv| Some((kv.key()?, kv.value()?))).filter(move |(k, _)| only.is_none_or(|sel| sel.contains(k)));
        // Positions only advance with entries of the peer's log; a keep-alive repeats the last one.
        if changes.position() > saved {
            saved = changes.position();
            replica.apply_replicated(peer, pairs.clone(), changes.position()).map_err(|e| e.to_string())?;
            let mut lag = ctx.lag.lock().unwrap_or_else(|p| p.into_inner());
            for (_, v) in pairs {
                if let Some((h, _)) = Header::split(v) {
                    lag.record(now.saturating_sub(h.event_time_ns) / 1000);
                }
            }
        }
        ctx.record(changes.position(), changes.head());
    }
}

/// Replication lag samples (write event time to apply time, in µs) for the periodic log line.
struct LagSamples {
    hist: hdrhistogram::Histogram<u64>,
}

impl LagSamples {
    fn new() -> Self {
        Self { hist: hdrhistogram::Histogram::new(3).expect("3 significant digits is a valid precision") }
    }

    fn record(&mut self, micros: u64) {
        let _ = self.hist.record(micros.max(1));
    }
}

async fn report_lag(lag: Arc<Mutex<LagSamples>>) {
    let mut tick = tokio::time::interval(LAG_REPORT);
    loop {
        tick.tick().await;
        let mut l = lag.lock().unwrap_or_else(|p| p.into_inner());
        if l.hist.is_empty() {
            continue;
        }
        let h = &l.hist;
        tracing::info!(
            entries = h.len(),
            p50_us = h.value_at_quantile(0.5),
            p99_us = h.value_at_quantile(0.99),
            p999_us = h.value_at_quantile(0.999),
            max_us = h.max(),
            "replication lag (write event time to applied here) over the last 10 s"
        );
        l.hist.reset();
    }
}

/// Fetches a full snapshot of the peer's replica, ingests it (last-writer-wins against what is
/// here), and records the position to tail from. The caller then resumes tailing.
async fn bootstrap(ctx: &FollowCtx, replica: &crate::registry::Replica) -> Result<(), String> {
    let (keyspace, shard, peer) = &ctx.key;
    let mut request = Vec::new();
    FrameEncoder::new().snapshot_request(&mut request, keyspace, ctx.source.shard, &ctx.me, ctx.source.only);
    let mut reader = connect_peer(&ctx.source.address, &request).await?;
    let dir = replica.dir().with_extension(format!("snapshot-in-{}", vasto_engine::now_ns()));
    let result = receive_snapshot(&mut reader, &dir).await.and_then(|(files, position)| {
        replica.ingest_snapshot(peer, &files, position).map_err(|e| e.to_string())?;
        tracing::info!(keyspace = %keyspace, shard, peer = %peer, files = files.len(), position, "snapshot ingested; tailing from there");
        Ok(())
    });
    if dir.exists() {
        if let Err(e) = std::fs::remove_dir_all(&dir) {
            tracing::warn!(dir = %dir.display(), error = %e, "could not remove received snapshot files");
        }
    }
    result
}

/// Writes the snapshot pieces into files under `dir`; returns the files and the tail position.
async fn receive_snapshot(reader: &mut BufReader<TcpStream>, dir: &std::path::Path) -> Result<(Vec<std::path::PathBuf>, u64), String> {
    use std::io::Write;
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut files: Vec<std::path::PathBuf> = Vec::new();
    let mut current: Option<std::fs::File> = None;
    let mut buf = Vec::new();
    loop {
        // Exporting a large shard takes a while before the first piece arrives.
        tokio::time::timeout(SNAPSHOT_SILENCE, read_frame(reader, &mut buf, DEFAULT_MAX_FRAME))
            .await
            .map_err(|_| "snapshot stalled".to_string())?
            .map_err(|e| e.to_string())?;
        let frame = parse_frame(&buf).map_err(|e| e.to_string())?;
        let chunk = frame.body_as_snapshot_chunk().ok_or("unexpected frame during a snapshot")?;
        if chunk.status() != Status::Ok {
            return Err(format!("peer could not send a snapshot: {}", chunk.message().unwrap_or_default()));
        }
        if chunk.done() {
            if let Some(f) = current.take() {
                f.sync_all().map_err(|e| e.to_string())?;
            }
            return Ok((files, chunk.position()));
        }
        let index = chunk.file() as usize;
        if index >= files.len() {
            if let Some(f) = current.take() {
                f.sync_all().map_err(|e| e.to_string())?;
            }
            let path = dir.join(format!("{index:06}.sst"));
            current = Some(std::fs::File::create(&path).map_err(|e| format!("{}: {e}", path.display()))?);
            files.push(path);
        }
        let file = current.as_mut().ok_or("snapshot pieces out of order")?;
        file.write_all(chunk.data().unwrap_or_default()).map_err(|e| e.to_string())?;
    }
}
