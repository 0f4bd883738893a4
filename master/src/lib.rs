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
mod backup;
mod catalog;
mod client_conn;
mod command;
mod hub;
mod lag;
mod metrics;
mod participants;
mod placement;
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
pub use placement::ZONE_WARNING;
pub use progress::OperationStatus;
pub use state::{MAX_REPLICAS, MAX_SHARDS};
pub use status::{ClusterStatus, KeyspaceStatus, LagStatus, RouteStatus, StoreStatus};

use hub::Shared;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use vasto_wire::{read_frame, Admission, ClusterToken, ConnectionSlot, Doorman, FrameEncoder, Role, Status, WireError};

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
    /// How long a store taking part in a resize or replace may be down (a network blip, a
    /// restart) before the operation rolls back; while it is down the operation waits.
    pub operation_grace: Duration,
    /// The cluster token every peer must prove; `None` runs open, allowed on loopback only.
    pub token: Option<ClusterToken>,
    /// Connections served at once (stores, clients, admins); one more is refused at its hello.
    pub max_connections: usize,
    /// Where to serve Prometheus metrics at `/metrics` (`None`: nowhere).
    pub metrics_listen: Option<SocketAddr>,
}

impl Default for MasterConfig {
    /// Listens on `127.0.0.1:8278` with its files in `./vasto-master`, 1 s heartbeat timeout,
    /// 10 s command timeout, 1.2 s drain settle, 5 s operation grace, no token, 10,000
    /// connections, no metrics.
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8278)),
            dir: PathBuf::from("vasto-master"),
            cluster_id: None,
            heartbeat_timeout: Duration::from_secs(1),
            command_timeout: Duration::from_secs(10),
            drain_settle: Duration::from_millis(1200),
            operation_grace: Duration::from_secs(5),
            token: None,
            max_connections: 10_000,
            metrics_listen: None,
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
    /// The master would accept strangers: no cluster token and a non-loopback listen address.
    #[error("{0}")]
    Open(String),
    /// The metrics endpoint could not start.
    #[error(transparent)]
    Metrics(#[from] vasto_metrics::MetricsError),
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
    if config.token.is_none() {
        if !addr.ip().is_loopback() {
            return Err(MasterError::Open(format!(
                "refusing to listen on {addr} without a cluster token: anyone who can reach it could delete keyspaces or register as a store; \
                 give --token-file (or VASTO_TOKEN_FILE), or listen on loopback"
            )));
        }
        tracing::warn!("no cluster token: the master is open to anyone who can reach {addr} (loopback only)");
    }
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
    let max_connections = config.max_connections.max(1);
    let shared = Arc::new(Shared::new(config, cluster_id, catalog_dir, catalog));
    tokio::spawn(reconcile::run(Arc::clone(&shared)));
    let connections = Arc::new(AtomicUsize::new(0));
    if let Some(addr) = shared.config.metrics_listen {
        let view = metrics::MasterView { shared: Arc::clone(&shared), connections: Arc::clone(&connections) };
        vasto_metrics::serve(addr, move |s| view.collect(s))?;
    }
    loop {
        match listener.accept().await {
            Ok((mut stream, peer)) => {
                let Some(slot) = ConnectionSlot::take(&connections, max_connections) else {
                    tracing::warn!(%peer, max_connections, "refused a connection: too many connections");
                    let mut out = Vec::new();
                    let message = format!("this master serves at most {max_connections} connections");
                    FrameEncoder::new().hello_reply(&mut out, Status::Unavailable, &message, 0);
                    tokio::spawn(async move {
                        let _ = tokio::time::timeout(Duration::from_secs(1), stream.write_all(&out)).await;
                    });
                    continue;
                };
                let shared = Arc::clone(&shared);
                tokio::spawn(async move {
                    let _slot = slot;
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

/// The opening (hello, and the token's proof when the master has one), then hands the
/// connection to the store loop or the client loop with the role the peer was admitted as.
async fn handle_conn(shared: Arc<Shared>, stream: TcpStream) -> Result<(), MasterError> {
    stream.set_nodelay(true)?;
    let peer = stream.peer_addr().map(|a| a.to_string()).unwrap_or_default();
    let (mut rd, mut wr) = stream.into_split();
    let mut buf = Vec::new();
    let mut door = Doorman::new("master", shared.config.token.clone());
    let (mut enc, mut out) = (FrameEncoder::new(), Vec::new());
    // The whole opening must fit in the command timeout, however the peer dribbles its bytes.
    let deadline = tokio::time::Instant::now() + shared.config.command_timeout;
    let role = loop {
        let next = tokio::time::timeout_at(deadline, read_frame(&mut rd, &mut buf, vasto_wire::OPENING_MAX_FRAME)).await;
        match next {
            Ok(result) => result?,
            Err(_) => return Err(MasterError::Protocol("the opening did not finish within the command timeout".into())),
        }
        out.clear();
        let admission = door.on_frame(&buf, shared.cluster_id, &mut enc, &mut out);
        wr.write_all(&out).await?;
        match admission {
            Admission::Wait => {}
            Admission::Admitted(role) => break role,
            Admission::Refused(why) => {
                tracing::warn!(%peer, %why, "refused a connection");
                let _ = wr.shutdown().await;
                return Err(MasterError::Protocol(why));
            }
        }
    };
    match role {
        Role::Store => store_conn::serve_store(shared, rd, wr, buf).await,
        role => client_conn::serve_client(shared, role, peer, rd, wr, buf).await,
    }
}

/// Largest frame from a client, admin or importer: subscriptions and admin commands are small.
const CLIENT_MAX_FRAME: usize = 1 << 20;
/// Largest frame from a store: a registration lists every replica it holds (~100 bytes each).
const STORE_MAX_FRAME: usize = 8 << 20;

#[cfg(test)]
mod fuzz_tests;
#[cfg(test)]
mod server_tests;
