//! The Vasto store node: thread-per-core monoio runtimes serving the data protocol over RocksDB
//! shards, plus a control thread that keeps the store registered with the master.
//!
//! Layout:
//! * `server` — the core threads: one monoio runtime and `SO_REUSEPORT` listener per core, the
//!   connection loop and framing;
//! * `handler` — one request frame in, one answer out; `group` — group commit of the writes of
//!   one read; `ingest` — receiving an import's SST files;
//! * `registry` — the replicas held (create, freeze, commit, drop, with drop waiting until the
//!   replica's RocksDB is closed and its directory gone);
//! * `master_link` — registration, heartbeats and shard commands, on a plain thread;
//! * `replication` and `follower` — the followers of every peer replica; `tail` — the sending
//!   side (change streams and snapshots); `split` — the export resize copies share;
//! * `identity` — store id, cluster id, and whether the last run may have lost writes.

mod disk;
mod disk_reads;
mod follower;
mod group;
mod handler;
mod identity;
mod ingest;
mod master_link;
mod metrics;
mod pace;
mod refusal;
mod registry;
mod replication;
mod request;
mod server;
mod snapshot_gate;
mod split;
mod tail;
mod update;
mod update_group;

pub use identity::default_boot_id_path;
pub use master_link::HEARTBEAT_INTERVAL;
pub use refusal::{MAX_KEY_BYTES, MAX_SCAN_BYTES, MAX_SCAN_LIMIT, MAX_VALUE_BYTES};
pub use vasto_engine::{EngineOptions, SyncMode};

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use thiserror::Error;
use vasto_engine::{Engine, EngineError};
use vasto_wire::{ClusterToken, WireError};

/// Errors that stop a store or end one master session.
#[derive(Debug, Error)]
pub enum NodeError {
    /// The storage engine failed.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// The data address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: String, source: std::io::Error },
    /// Socket or file I/O failed.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// A frame could not be read or decoded.
    #[error(transparent)]
    Wire(#[from] WireError),
    /// The master refused or misbehaved.
    #[error("master: {0}")]
    Master(String),
    /// The store would accept strangers: no cluster token, and a listen address other peers
    /// can reach.
    #[error("{0}")]
    Open(String),
    /// The configuration cannot work (for example no address to announce).
    #[error("{0}")]
    Config(String),
}

/// Everything a store needs to start.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// Data address to listen on.
    pub listen: SocketAddr,
    /// Address announced to the master and clients (default: the bound listen address).
    pub advertise: Option<String>,
    /// Master address (`host:port`).
    pub master: String,
    /// Data directory: one RocksDB per shard under `DIR/<keyspace>/<shard>`.
    pub dir: PathBuf,
    /// Core threads; 0 means one per available CPU.
    pub threads: usize,
    /// Reader threads that answer gets needing a file read, so those never block a core
    /// thread; 0 reads files on the core threads.
    pub read_threads: usize,
    /// Fewest deferred gets handed to one reader thread at a time (at least 1): see
    /// `disk_reads`.
    pub read_part_gets: usize,
    /// Largest accepted frame body in bytes.
    pub max_frame: usize,
    /// Cap on data moved for other replicas, in MB/s: each snapshot or resize export reads at
    /// most this and each snapshot or copy stream sends at most this (0 = unlimited).
    pub max_move_mbps: u64,
    /// With `false`, data moves at the pace the store's foreground latency allows, under
    /// `max_move_mbps` (see `pace`); with `true`, at exactly `max_move_mbps`.
    pub fixed_pace: bool,
    /// Storage tunables.
    pub engine: EngineOptions,
    /// Where the current boot id is read from (see `identity`; tests point it at a file to
    /// simulate a reboot).
    pub boot_id_path: PathBuf,
    /// The cluster token every peer must prove and that this store proves to the master and its
    /// peers; `None` runs open, which is allowed on loopback only.
    pub token: Option<ClusterToken>,
    /// Writes whose event time is further ahead of this store's clock are refused (a write
    /// from a clock far in the future would win over every later write under last-writer-wins).
    pub max_clock_skew: std::time::Duration,
    /// Connections served at once; one more is refused (`Unavailable`) at its hello.
    pub max_connections: usize,
    /// How long a peer may take for its whole opening, and go without sending a byte while a
    /// frame it started is unfinished.
    pub read_timeout: std::time::Duration,
    /// A data connection with no request for this long is closed.
    pub idle_timeout: std::time::Duration,
    /// How long one attempt to connect to the master may take (it is retried every 250 ms).
    pub master_connect_timeout: std::time::Duration,
    /// The failure domain this store runs in (rack or availability zone; empty: none). The
    /// master puts the replicas of a shard in distinct zones first.
    pub zone: String,
    /// Free bytes on the data filesystem below which the store takes no new replicas (`None`:
    /// 5% of the filesystem, at most 1 GiB).
    pub min_free_bytes: Option<u64>,
    /// Where to serve Prometheus metrics at `/metrics` (`None`: nowhere).
    pub metrics_listen: Option<SocketAddr>,
}

/// A started store: its bound address and threads.
pub struct RunningNode {
    /// The address the data port is bound to.
    pub addr: SocketAddr,
    /// The store id registered with the master.
    pub store_id: String,
    registry: Arc<registry::Registry>,
    dir: PathBuf,
}

impl RunningNode {
    /// Serves until the process gets SIGTERM or SIGINT, then stops cleanly: local writes are
    /// held, every WAL is synced and the clean stop is recorded, so the next start knows
    /// nothing acknowledged was lost even if the machine is rebooted meanwhile. Returns once
    /// that is done; the caller exits the process (the held writes never resume).
    pub fn run_until_stopped(self) -> Result<(), NodeError> {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        rt.block_on(async {
            use tokio::signal::unix::{signal, SignalKind};
            let mut term = signal(SignalKind::terminate())?;
            let mut int = signal(SignalKind::interrupt())?;
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
            Ok::<(), NodeError>(())
        })?;
        tracing::info!("stopping: holding local writes and syncing every shard");
        let replicas = self.registry.all();
        let mut held = Vec::with_capacity(replicas.len());
        for replica in &replicas {
            held.push(replica.sync_and_hold_writes()?);
        }
        identity::mark_clean_stop(&self.dir)?;
        tracing::info!(shards = replicas.len(), "stopped cleanly");
        // The writes stay held until the process exits.
        std::mem::forget(held);
        std::mem::forget(replicas);
        Ok(())
    }
}

/// Refuses a configuration whose announced address others could not reach: without
/// `--advertise` the store announces its listen address, which is no address at all for
/// 0.0.0.0 and only this machine's for loopback when the master is elsewhere.
fn check_announceable(config: &NodeConfig) -> Result<(), NodeError> {
    if config.advertise.is_some() {
        return Ok(());
    }
    if config.listen.ip().is_unspecified() {
        return Err(NodeError::Config(format!(
            "--advertise ADDR is required with --listen {}: clients and peers must be told an address of this host they can reach",
            config.listen
        )));
    }
    if config.listen.ip().is_loopback() {
        use std::net::ToSocketAddrs;
        // A master name that does not resolve now is retried later; only a master known to be
        // elsewhere makes a loopback address wrong.
        let master_elsewhere = config.master.to_socket_addrs().is_ok_and(|mut a| a.any(|a| !a.ip().is_loopback()));
        if master_elsewhere {
            return Err(NodeError::Config(format!(
                "the master {} is not on this machine, but this store would announce {}, which only this machine can reach: \
                 listen on an address of this host, or give --advertise ADDR",
                config.master, config.listen
            )));
        }
    }
    Ok(())
}

/// Opens the shards under `dir`, binds the data port on every core and connects to the master.
pub fn start(config: NodeConfig) -> Result<RunningNode, NodeError> {
    if config.token.is_none() {
        if !config.listen.ip().is_loopback() {
            return Err(NodeError::Open(format!(
                "refusing to listen on {} without a cluster token: anyone who can reach it could read, write and replicate every shard; \
                 give --token-file (or VASTO_TOKEN_FILE), or listen on loopback",
                config.listen
            )));
        }
        tracing::warn!("no cluster token: the store is open to anyone who can reach {} (loopback only)", config.listen);
    }
    check_announceable(&config)?;
    std::fs::create_dir_all(&config.dir)?;
    let store_id = identity::load_or_create_store_id(&config.dir)?;
    let cluster_id = identity::load_cluster_id(&config.dir)?.unwrap_or(0);
    let engine = Engine::new(&config.dir, &config.engine)?;
    let lost = identity::previous_run_lost_writes(&config.dir, &config.boot_id_path, holds_shards(&config.dir)?)?;
    if lost {
        tracing::warn!(
            "the last run did not stop cleanly, the machine has rebooted since and writes were not synced one by one: \
             writes it acknowledged may be lost, so every change log starts a new incarnation (followers re-copy) \
             and every replica copies again from its peers"
        );
    }
    let registry = Arc::new(registry::Registry::open(engine, lost, cluster_id)?);
    identity::record_run(&config.dir, &config.boot_id_path, config.engine.sync)?;
    let threads = if config.threads == 0 { std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1) } else { config.threads };
    let limits = server::Limits {
        max_frame: config.max_frame,
        max_skew_ns: u64::try_from(config.max_clock_skew.as_nanos()).unwrap_or(u64::MAX),
        max_connections: config.max_connections.max(1),
        read_timeout: config.read_timeout,
        idle_timeout: config.idle_timeout,
    };
    let metrics = Arc::new(metrics::StoreMetrics::new(threads));
    let reads = Arc::new(disk_reads::ReadPool::start(config.read_threads, config.read_part_gets)?);
    let cap = config.max_move_mbps.saturating_mul(1_000_000);
    let moves = vasto_engine::MoveRate::new(cap);
    if !config.fixed_pace {
        pace::spawn_governor(moves.clone(), if cap == 0 { pace::UNCAPPED } else { cap }, Arc::clone(&metrics))?;
    }
    let shared =
        server::CoreShared { registry: Arc::clone(&registry), limits, token: config.token.clone(), metrics: Arc::clone(&metrics), reads, moves: moves.clone() };
    let (addr, _cores) = server::spawn_cores(config.listen, threads, shared)?;
    let identity = master_link::Identity {
        store_id: store_id.clone(),
        address: config.advertise.clone().unwrap_or_else(|| addr.to_string()),
        dir: config.dir.clone(),
        zone: config.zone.clone(),
        disk: disk::DiskWatch::new(&config.dir, config.min_free_bytes),
        token: config.token.clone(),
        // The start time in nanoseconds: no two starts of one store share it.
        start_id: std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)),
    };
    tracing::info!(%addr, threads, store_id = %store_id, dir = %config.dir.display(), sync = config.engine.sync.name(),
        block_cache_mb = config.engine.block_cache_bytes >> 20, value_cache_mb = config.engine.value_cache_bytes >> 20, "store listening");
    let replication = replication::Replication::start(Arc::clone(&registry), store_id.clone(), config.token.clone())?;
    if let Some(listen) = config.metrics_listen {
        let view = metrics::StoreView { metrics, moves, registry: Arc::clone(&registry), replication: replication.clone(), disk: identity.disk.clone() };
        vasto_metrics::serve(listen, move |s| view.collect(s)).map_err(|e| NodeError::Config(e.to_string()))?;
    }
    spawn_cache_report(Arc::clone(&registry))?;
    spawn_unkept_sweeper(Arc::clone(&registry))?;
    if config.engine.sync == SyncMode::EverySec {
        spawn_wal_syncer(Arc::clone(&registry))?;
    }
    master_link::spawn(config.master.clone(), config.master_connect_timeout, identity, Arc::clone(&registry), replication)?;
    Ok(RunningNode { addr, store_id, registry, dir: config.dir })
}

/// True when `dir` holds at least one keyspace directory.
fn holds_shards(dir: &std::path::Path) -> Result<bool, NodeError> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() && vasto_engine::valid_keyspace_name(&entry.file_name().to_string_lossy()) {
            return Ok(true);
        }
    }
    Ok(false)
}

/// How often `--sync everysec` syncs every WAL.
const WAL_SYNC_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// Syncs every replica's WAL once a second (`--sync everysec`).
fn spawn_wal_syncer(registry: Arc<registry::Registry>) -> Result<(), NodeError> {
    std::thread::Builder::new().name("vasto-wal-sync".into()).spawn(move || loop {
        std::thread::sleep(WAL_SYNC_EVERY);
        registry.sync_all();
    })?;
    Ok(())
}

/// How long no key a replica's layout does not keep must have arrived before it is compacted
/// again: a follower catching up after a resize delivers its backlog of them in a burst.
const UNKEPT_QUIET: std::time::Duration = std::time::Duration::from_secs(5);

/// Compacts replicas that received keys their layout does not keep, once those stop arriving.
fn spawn_unkept_sweeper(registry: Arc<registry::Registry>) -> Result<(), NodeError> {
    std::thread::Builder::new().name("vasto-unkept".into()).spawn(move || loop {
        std::thread::sleep(UNKEPT_QUIET / 2);
        registry.compact_where_unkept_keys_arrived(UNKEPT_QUIET);
    })?;
    Ok(())
}

/// How often the value cache's hit ratio is logged.
const CACHE_REPORT: std::time::Duration = std::time::Duration::from_secs(10);

/// Logs the value cache's hits, misses and size every [`CACHE_REPORT`] while it is used.
fn spawn_cache_report(registry: Arc<registry::Registry>) -> Result<(), NodeError> {
    let Some(mut last) = registry.cache_stats() else { return Ok(()) };
    std::thread::Builder::new().name("vasto-cache-report".into()).spawn(move || loop {
        std::thread::sleep(CACHE_REPORT);
        let Some(now) = registry.cache_stats() else { return };
        let (hits, misses) = (now.hits - last.hits, now.misses - last.misses);
        if hits + misses > 0 {
            let hit_pct = 100.0 * hits as f64 / (hits + misses) as f64;
            tracing::info!(hits, misses, hit_pct = format!("{hit_pct:.1}"), entries = now.entries, mb = now.bytes >> 20, "value cache over the last 10 s");
        }
        last = now;
    })?;
    Ok(())
}

#[cfg(test)]
mod disk_reads_tests;
#[cfg(test)]
mod tests;

#[cfg(test)]
mod fuzz_tests;
