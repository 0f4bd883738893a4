//! The Vasto master: a soft-state registry of stores and keyspaces.
//!
//! Stores connect, say hello, register (with every shard replica they hold) and keep the
//! connection alive with heartbeats, which also report how far each replica lags behind its
//! peers; a restarted master rebuilds every keyspace from these reports. Clients, admins and
//! stores (to find their replication peers) subscribe to routing tables, which are pushed on
//! every change, including a replica starting or stopping to catch up; clients and admins also
//! create, delete and inspect keyspaces. On disk (`--dir`) only the cluster id and the catalog
//! of keyspaces with their incarnations (see `catalog`).
//!
//! Every connection speaks length-prefixed FlatBuffers frames (see `vasto-wire`).

#![warn(missing_docs)]

mod admin;
mod adopt;
mod catalog;
mod client_conn;
mod hub;
mod lag;
mod progress;
mod reconcile;
mod replace;
mod replace_run;
mod resize;
mod resize_run;
mod retire;
mod state;
mod status;
mod store_conn;

pub use catalog::CatalogError;
pub use progress::OperationStatus;
pub use state::MAX_SHARDS;
pub use status::{ClusterStatus, KeyspaceStatus, LagStatus, RouteStatus, StoreStatus};

use hub::Shared;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use vasto_wire::{parse_frame, read_frame, FrameEncoder, Role, Status, WireError, DEFAULT_MAX_FRAME, PROTOCOL_VERSION};

/// How the master listens and how patient it is.
#[derive(Debug, Clone)]
pub struct MasterConfig {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Directory of the cluster id and the keyspace catalog (created if missing).
    pub dir: PathBuf,
    /// The cluster id to use when `dir` has none yet (restoring a lost master directory);
    /// `None` creates a new cluster at the first start.
    pub cluster_id: Option<u64>,
    /// A store that sends no frame for this long is marked down (stores heartbeat every 250 ms).
    pub heartbeat_timeout: Duration,
    /// How long to wait for a store to acknowledge a shard command.
    pub command_timeout: Duration,
    /// How long a resize or replace waits, once the old shards are frozen, before trusting the
    /// replicas' reports that they applied everything: long enough for a keep-alive (500 ms)
    /// and a heartbeat (250 ms) to pass through every replica.
    pub drain_settle: Duration,
}

impl Default for MasterConfig {
    /// Listens on `127.0.0.1:8278` with its files in `./vasto-master`, 1 s heartbeat timeout,
    /// 10 s command timeout, 1.2 s drain settle.
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8278)),
            dir: PathBuf::from("vasto-master"),
            cluster_id: None,
            heartbeat_timeout: Duration::from_secs(1),
            command_timeout: Duration::from_secs(10),
            drain_settle: Duration::from_millis(1200),
        }
    }
}

/// Everything that can go wrong in the master or on one of its connections.
#[derive(thiserror::Error, Debug)]
pub enum MasterError {
    /// The listening socket could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// The underlying error.
        source: std::io::Error,
    },
    /// An I/O error on a socket.
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    /// A frame could not be read or decoded.
    #[error(transparent)]
    Wire(#[from] WireError),
    /// The peer broke the conversation (wrong first frame, bad registration, ...).
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The master's directory cannot be used.
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    /// A store sent nothing for longer than the heartbeat timeout.
    #[error("no frame from store {store} within {timeout:?}")]
    HeartbeatTimeout {
        /// The silent store.
        store: String,
        /// The timeout that elapsed.
        timeout: Duration,
    },
}

/// Binds `config.listen`, logs "master listening on ADDR" and serves forever.
pub async fn run(config: MasterConfig) -> Result<(), MasterError> {
    let addr = config.listen;
    let listener = TcpListener::bind(addr).await.map_err(|source| MasterError::Bind { addr, source })?;
    let local = listener.local_addr().unwrap_or(addr);
    tracing::info!("master listening on {local}");
    serve(listener, config).await
}

/// Serves connections accepted on `listener` forever (`config.listen` is ignored).
/// One connection's failure never affects the others.
pub async fn serve(listener: TcpListener, config: MasterConfig) -> Result<(), MasterError> {
    let (catalog_dir, cluster_id, catalog) = catalog::CatalogDir::open(&config.dir, config.cluster_id)?;
    tracing::info!(cluster_id = %format!("{cluster_id:016x}"), dir = %config.dir.display(), keyspaces = catalog.keyspaces.len(), "master state loaded");
    let shared = Arc::new(Shared::new(config, cluster_id, catalog_dir, catalog));
    tokio::spawn(reconcile::run(Arc::clone(&shared)));
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let shared = Arc::clone(&shared);
                tokio::spawn(async move {
                    if let Err(e) = handle_conn(shared, stream).await {
                        tracing::debug!(%peer, error = %e, "connection closed");
                    }
                });
            }
            Err(e) => {
                // Typically out of file descriptors: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Hello exchange, then hands the connection to the store or client loop.
async fn handle_conn(shared: Arc<Shared>, stream: TcpStream) -> Result<(), MasterError> {
    stream.set_nodelay(true)?;
    let peer = stream.peer_addr().map(|a| a.to_string()).unwrap_or_default();
    let (mut rd, mut wr) = stream.into_split();
    let mut buf = Vec::new();
    let first = tokio::time::timeout(shared.config.command_timeout, read_frame(&mut rd, &mut buf, DEFAULT_MAX_FRAME)).await;
    match first {
        Ok(result) => result?,
        Err(_) => return Err(MasterError::Protocol("no hello within the command timeout".into())),
    }
    let mut enc = FrameEncoder::new();
    let mut out = Vec::new();
    let ours = shared.cluster_id;
    let hello = parse_frame(&buf)?.body_as_hello().map(|h| (h.protocol_version(), h.role(), h.cluster_id()));
    let Some((version, role, theirs)) = hello else {
        enc.hello_reply(&mut out, Status::BadRequest, "the first frame must be a hello", ours);
        wr.write_all(&out).await?;
        return Err(MasterError::Protocol("the first frame was not a hello".into()));
    };
    if version != PROTOCOL_VERSION {
        let message = format!("protocol version mismatch: the master speaks version {PROTOCOL_VERSION}, the peer speaks version {version}");
        enc.hello_reply(&mut out, Status::VersionMismatch, &message, ours);
        wr.write_all(&out).await?;
        let _ = wr.shutdown().await;
        return Err(MasterError::Protocol(message));
    }
    if role != Role::Store && role != Role::Client && role != Role::Admin {
        enc.hello_reply(&mut out, Status::BadRequest, "unknown role", ours);
        wr.write_all(&out).await?;
        return Err(MasterError::Protocol(format!("unknown role {}", role.0)));
    }
    if theirs != 0 && theirs != ours {
        let message = format!("this master runs cluster {ours:016x}; the peer belongs to cluster {theirs:016x}");
        tracing::warn!(peer = %peer, role = ?role, %message, "refused a node of another cluster");
        enc.hello_reply(&mut out, Status::WrongCluster, &message, ours);
        wr.write_all(&out).await?;
        let _ = wr.shutdown().await;
        return Err(MasterError::Protocol(message));
    }
    enc.hello_reply(&mut out, Status::Ok, "", ours);
    wr.write_all(&out).await?;
    if role == Role::Store {
        store_conn::serve_store(shared, rd, wr, buf).await
    } else {
        client_conn::serve_client(shared, rd, wr, buf).await
    }
}

#[cfg(test)]
mod server_tests;
