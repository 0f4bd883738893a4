//! The Vasto store node: thread-per-core monoio runtimes serving the data protocol over RocksDB
//! shards, plus a control thread that keeps the store registered with the master.

mod group;
mod handler;
mod ingest;
mod master_link;
mod registry;
mod replication;
mod server;
mod split;
mod tail;

pub use handler::{MAX_KEY_BYTES, MAX_SCAN_LIMIT, MAX_VALUE_BYTES};
pub use master_link::HEARTBEAT_INTERVAL;
pub use vasto_engine::EngineOptions;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use thiserror::Error;
use vasto_engine::{Engine, EngineError};
use vasto_wire::WireError;

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
    /// Largest accepted frame body in bytes.
    pub max_frame: usize,
    /// Cap on data moved for other replicas, in MB/s: each snapshot or resize export reads at
    /// most this and each snapshot or copy stream sends at most this (0 = unlimited).
    pub max_move_mbps: u64,
    /// Storage tunables.
    pub engine: EngineOptions,
}

/// A started store: its bound address and threads.
pub struct RunningNode {
    /// The address the data port is bound to.
    pub addr: SocketAddr,
    /// The store id registered with the master.
    pub store_id: String,
    cores: Vec<std::thread::JoinHandle<()>>,
}

impl RunningNode {
    /// Blocks until the core threads end (they only end if the process is shutting down).
    pub fn wait(self) {
        for c in self.cores {
            let _ = c.join();
        }
    }
}

/// Opens the shards under `dir`, binds the data port on every core and connects to the master.
pub fn start(config: NodeConfig) -> Result<RunningNode, NodeError> {
    let engine = Engine::new(&config.dir, &config.engine)?;
    let store_id = load_or_create_store_id(&config.dir)?;
    let registry = Arc::new(registry::Registry::open(engine)?);
    let threads = if config.threads == 0 { std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1) } else { config.threads };
    let limits = server::Limits { max_frame: config.max_frame, move_bytes_per_sec: config.max_move_mbps.saturating_mul(1_000_000) };
    let (addr, cores) = server::spawn_cores(config.listen, threads, Arc::clone(&registry), limits)?;
    let identity =
        master_link::Identity { store_id: store_id.clone(), address: config.advertise.clone().unwrap_or_else(|| addr.to_string()), dir: config.dir.clone() };
    tracing::info!(%addr, threads, store_id = %store_id, dir = %config.dir.display(), "store listening");
    let replication = replication::Replication::start(Arc::clone(&registry), store_id.clone())?;
    spawn_cache_report(Arc::clone(&registry))?;
    master_link::spawn(config.master.clone(), identity, registry, replication)?;
    Ok(RunningNode { addr, store_id, cores })
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

/// The store's stable id, created on first start in `DIR/store-id`.
fn load_or_create_store_id(dir: &std::path::Path) -> Result<String, NodeError> {
    let path = dir.join("store-id");
    match std::fs::read_to_string(&path) {
        Ok(id) if !id.trim().is_empty() => return Ok(id.trim().to_owned()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e.into()),
    }
    let seed = format!("{}-{}-{}", vasto_engine::now_ns(), std::process::id(), dir.display());
    let id = format!("store-{:012x}", vasto_hash::key_hash(seed.as_bytes()) >> 16);
    std::fs::write(&path, &id)?;
    Ok(id)
}

#[cfg(test)]
mod tests;
