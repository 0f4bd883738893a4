//! A RESP (Redis protocol) gateway in front of one Vasto keyspace, so `redis-cli`, `redis-py`,
//! `redis-benchmark` and other Redis clients can use Vasto. It speaks RESP2 and RESP3, takes
//! pipelines as deep as clients send them, and reaches the stores through the native client
//! (routing, failover and wrong-shard retries happen there: a gateway client never sees them).
//!
//! ```no_run
//! # async fn demo() -> Result<(), vasto_gateway::GatewayError> {
//! let config = vasto_gateway::GatewayConfig::new("127.0.0.1:8278", "127.0.0.1:6380".parse().unwrap(), "default");
//! vasto_gateway::Gateway::start(config).await?.serve().await
//! # }
//! ```
//!
//! Layout:
//! * [`resp`]: request parsing (multibulk and inline, incremental, bounded), Redis's protocol errors;
//! * `reply`: replies and their RESP2/RESP3 encoding;
//! * `command`: the command table (names, arities, flags, how each runs in a pipeline);
//! * `parse` and `options`: requests into typed commands, option lists with Redis 7's rules;
//! * `wave`: which commands of a pipeline may run at once;
//! * `conn`: the connection loop (read, parse, run in waves, one write);
//! * `local`: commands answered without the store (HELLO, AUTH, CLIENT, COMMAND, CONFIG, INFO...);
//! * `exec`: data commands through the native client;
//! * `glob`, `cursor`, `clock`, `stats`: SCAN's patterns and cursors, the event-time
//!   clock, INFO's counters.
#![warn(missing_docs)]

mod clock;
mod command;
mod conn;
mod cursor;
mod exec;
mod glob;
mod local;
mod options;
mod parse;
mod reply;
pub mod resp;
mod stats;
mod wave;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use tokio::net::TcpListener;
use vasto_client::{Client, ClientConfig, ClientError, Keyspace};

pub use local::REDIS_VERSION;

/// Longest value the store takes (and the gateway sends): 32 MiB.
pub const MAX_VALUE: usize = 32 << 20;
/// Longest key the store takes: 64 KiB.
pub const MAX_KEY: usize = 64 << 10;

/// Why the gateway could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// The master could not be reached, or the keyspace does not exist.
    #[error("keyspace {keyspace:?} via master {master}: {source}")]
    Client {
        /// The master address.
        master: String,
        /// The keyspace.
        keyspace: String,
        /// What the client said.
        source: ClientError,
    },
    /// No password and a listen address other than loopback: anyone who can reach it could
    /// read and write the keyspace.
    #[error("refusing to listen on {0} without a password: anyone who can reach it could read and write the keyspace; give the cluster token (--token-file), or listen on loopback")]
    Open(SocketAddr),
    /// The listen address could not be bound, or accepting failed for good.
    #[error("listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// The socket error.
        source: std::io::Error,
    },
}

/// How to run a gateway.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// The master's address (`host:port`).
    pub master: String,
    /// Where Redis clients connect.
    pub listen: SocketAddr,
    /// The keyspace every command works on (Redis's database 0).
    pub keyspace: String,
    /// The native client's settings (timeouts, cluster token).
    pub client: ClientConfig,
    /// The password `AUTH` / `HELLO AUTH` must give (the cluster token's text); `None`: no
    /// authentication, AUTH answers as a Redis without a password does.
    pub password: Option<Vec<u8>>,
    /// Connections served at once; one more gets `-ERR max number of clients reached`.
    pub max_clients: usize,
}

impl GatewayConfig {
    /// A gateway for `keyspace` through `master`, listening on `listen`, without a password, at
    /// most 10,000 clients, default client settings.
    pub fn new(master: &str, listen: SocketAddr, keyspace: &str) -> Self {
        Self { master: master.into(), listen, keyspace: keyspace.into(), client: ClientConfig::default(), password: None, max_clients: 10_000 }
    }
}

/// State shared by every connection of one gateway.
pub(crate) struct Shared {
    pub config: GatewayConfig,
    /// The address actually bound.
    pub listen: SocketAddr,
    pub keyspace: Keyspace,
    pub stats: stats::Stats,
    pub cursors: cursor::CursorTable,
    pub clock: clock::EventClock,
    next_client_id: AtomicU64,
}

/// Per-connection state that commands change.
pub(crate) struct Session {
    pub id: u64,
    pub proto: reply::Proto,
    pub authed: bool,
    pub name: Option<Vec<u8>>,
    pub quit: bool,
}

impl Session {
    pub fn new(id: u64, authed: bool) -> Self {
        Self { id, proto: reply::Proto::Resp2, authed, name: None, quit: false }
    }
}

/// A gateway that is connected to its keyspace and bound to its address.
pub struct Gateway {
    shared: Arc<Shared>,
    listener: TcpListener,
}

impl Gateway {
    /// Connects to the master, waits for the keyspace's routing table (failing if the keyspace
    /// does not exist) and binds the listen address. Without a password only a loopback
    /// address is accepted.
    pub async fn start(config: GatewayConfig) -> Result<Gateway, GatewayError> {
        if config.password.is_none() && !config.listen.ip().is_loopback() {
            return Err(GatewayError::Open(config.listen));
        }
        let client_err = |source| GatewayError::Client { master: config.master.clone(), keyspace: config.keyspace.clone(), source };
        let client = Client::connect_with(&config.master, config.client.clone()).await.map_err(client_err)?;
        let keyspace = client.keyspace(&config.keyspace).await.map_err(client_err)?;
        let listener = TcpListener::bind(config.listen).await.map_err(|source| GatewayError::Listen { addr: config.listen, source })?;
        let listen = listener.local_addr().map_err(|source| GatewayError::Listen { addr: config.listen, source })?;
        let shared = Shared {
            config,
            listen,
            keyspace,
            stats: stats::Stats::default(),
            cursors: cursor::CursorTable::default(),
            clock: clock::EventClock::new(),
            next_client_id: AtomicU64::new(1),
        };
        Ok(Gateway { shared: Arc::new(shared), listener })
    }

    /// The address clients connect to.
    pub fn local_addr(&self) -> SocketAddr {
        self.shared.listen
    }

    /// Serves clients, one task per connection, until the process ends.
    pub async fn serve(self) -> Result<(), GatewayError> {
        let Gateway { shared, listener } = self;
        tracing::info!(listen = %shared.listen, keyspace = %shared.config.keyspace, master = %shared.config.master, "RESP gateway ready");
        loop {
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors and the like: wait, then go on accepting.
                    tracing::warn!("accept: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            };
            let stats = &shared.stats;
            if stats.connected_clients.load(Relaxed) >= shared.config.max_clients as u64 {
                stats.rejected_connections.fetch_add(1, Relaxed);
                tokio::spawn(async move {
                    let mut stream = stream;
                    let _ = tokio::io::AsyncWriteExt::write_all(&mut stream, b"-ERR max number of clients reached\r\n").await;
                });
                continue;
            }
            stats.connections_received.fetch_add(1, Relaxed);
            stats.connected_clients.fetch_add(1, Relaxed);
            let shared = Arc::clone(&shared);
            let id = shared.next_client_id.fetch_add(1, Relaxed);
            tokio::spawn(async move {
                let _gauge = Connected(&shared.stats.connected_clients);
                conn::serve(&shared, stream, id).await;
            });
        }
    }
}

/// Decrements the connected-clients gauge when a connection task ends, however it ends.
struct Connected<'a>(&'a AtomicU64);

impl Drop for Connected<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Relaxed);
    }
}
