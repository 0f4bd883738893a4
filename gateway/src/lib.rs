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
//! * `worker`: the worker threads (a single-threaded runtime and a native client each);
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
mod worker;

use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use tokio::net::TcpListener;
use vasto_client::{ClientConfig, ClientError, Keyspace};

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
    /// A worker thread could not start (its runtime could not be built).
    #[error("starting gateway worker thread {index}: {source}")]
    Thread {
        /// Which worker.
        index: usize,
        /// The system's error.
        source: std::io::Error,
    },
    /// A worker thread stopped while the gateway was serving (a bug: workers run until the
    /// gateway is dropped).
    #[error("gateway worker thread {0} stopped")]
    WorkerStopped(usize),
    /// The metrics endpoint could not start.
    #[error(transparent)]
    Metrics(#[from] vasto_metrics::MetricsError),
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
    /// Worker threads, each with its own single-threaded runtime and its own native client;
    /// connections are handed to them in turn (at least 1).
    pub threads: usize,
    /// Where to serve Prometheus metrics at `/metrics` (`None`: nowhere).
    pub metrics_listen: Option<SocketAddr>,
}

impl GatewayConfig {
    /// A gateway for `keyspace` through `master`, listening on `listen`, without a password, at
    /// most 10,000 clients, default client settings, a worker thread per core, no metrics.
    pub fn new(master: &str, listen: SocketAddr, keyspace: &str) -> Self {
        let threads = std::thread::available_parallelism().map_or(1, usize::from);
        Self {
            master: master.into(),
            listen,
            keyspace: keyspace.into(),
            client: ClientConfig::default(),
            password: None,
            max_clients: 10_000,
            threads,
            metrics_listen: None,
        }
    }
}

/// What the connections of one worker thread run against: the worker's own keyspace handle
/// (its own connections to the stores, so requests of different threads never contend for one
/// lock) and the gateway-wide counters, cursors and clock, which every worker shares.
pub(crate) struct Shared {
    pub config: Arc<GatewayConfig>,
    /// The address actually bound.
    pub listen: SocketAddr,
    pub keyspace: Keyspace,
    pub stats: Arc<stats::Stats>,
    pub cursors: Arc<cursor::CursorTable>,
    pub clock: Arc<clock::EventClock>,
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

/// A gateway that is connected to its keyspace and bound to its address. Its worker threads
/// stop when it is dropped.
pub struct Gateway {
    config: Arc<GatewayConfig>,
    listen: SocketAddr,
    listener: TcpListener,
    stats: Arc<stats::Stats>,
    workers: Vec<worker::Handle>,
}

impl Gateway {
    /// Starts the worker threads, each connected to the master with the keyspace's routing
    /// table in hand (failing if the keyspace does not exist), and binds the listen address.
    /// Without a password only a loopback address is accepted.
    pub async fn start(config: GatewayConfig) -> Result<Gateway, GatewayError> {
        if config.password.is_none() && !config.listen.ip().is_loopback() {
            return Err(GatewayError::Open(config.listen));
        }
        let listener = TcpListener::bind(config.listen).await.map_err(|source| GatewayError::Listen { addr: config.listen, source })?;
        let listen = listener.local_addr().map_err(|source| GatewayError::Listen { addr: config.listen, source })?;
        let config = Arc::new(config);
        let common =
            worker::Common { config: Arc::clone(&config), listen, stats: Arc::default(), cursors: Arc::default(), clock: Arc::new(clock::EventClock::new()) };
        let stats = Arc::clone(&common.stats);
        let starting: Vec<_> = (0..config.threads.max(1)).map(|index| worker::spawn(index, common.clone())).collect::<Result<_, _>>()?;
        let mut workers = Vec::with_capacity(starting.len());
        for worker in starting {
            // An error drops the workers started so far, which stops them.
            workers.push(worker.ready().await?);
        }
        if let Some(addr) = config.metrics_listen {
            let stats = Arc::clone(&stats);
            vasto_metrics::serve(addr, move |s| stats.collect(s))?;
        }
        Ok(Gateway { config, listen, listener, stats, workers })
    }

    /// The address clients connect to.
    pub fn local_addr(&self) -> SocketAddr {
        self.listen
    }

    /// Accepts clients and hands them to the worker threads in turn, each connection served by
    /// one task of its worker, until the process ends or a worker thread stops.
    pub async fn serve(self) -> Result<(), GatewayError> {
        let Gateway { config, listen, listener, stats, workers } = self;
        tracing::info!(%listen, keyspace = %config.keyspace, master = %config.master, threads = workers.len(), "RESP gateway ready");
        let mut next_id: u64 = 1;
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
            if stats.connected_clients.load(Relaxed) >= config.max_clients as u64 {
                stats.rejected_connections.fetch_add(1, Relaxed);
                tokio::spawn(async move {
                    let mut stream = stream;
                    let _ = tokio::io::AsyncWriteExt::write_all(&mut stream, b"-ERR max number of clients reached\r\n").await;
                });
                continue;
            }
            stats.connections_received.fetch_add(1, Relaxed);
            let gauge = Connected::new(Arc::clone(&stats));
            let id = next_id;
            next_id += 1;
            let index = (id % workers.len() as u64) as usize;
            let Ok(stream) = stream.into_std() else { continue };
            if workers[index].hand(stream, id, gauge).is_err() {
                return Err(GatewayError::WorkerStopped(index));
            }
        }
    }
}

/// One connected client in the connected-clients gauge, from its accept until its connection
/// ends, however it ends.
pub(crate) struct Connected(Arc<stats::Stats>);

impl Connected {
    fn new(stats: Arc<stats::Stats>) -> Self {
        stats.connected_clients.fetch_add(1, Relaxed);
        Self(stats)
    }
}

impl Drop for Connected {
    fn drop(&mut self) {
        self.0.connected_clients.fetch_sub(1, Relaxed);
    }
}
