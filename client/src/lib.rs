//! Native Rust client for Vasto.
//!
//! The client subscribes to the master for the routing table of each keyspace it uses (the master
//! pushes a new table on every change), hashes each key to its shard
//! (`jump_consistent_hash(xxh3_64(key), shards)`), and sends the request straight to a store over
//! one pooled, fully pipelined connection per store. If the master goes away the client keeps
//! working with the last tables it received and re-subscribes when the master is back.
//!
//! ```no_run
//! # async fn demo() -> Result<(), vasto_client::ClientError> {
//! use vasto_client::{Client, PutOptions};
//! use std::time::Duration;
//!
//! let client = Client::connect("127.0.0.1:8278").await?;
//! let users = client.keyspace("default").await?;
//! users.put(b"user:1", b"alice").await?;
//! users.put_with(b"session:9", b"token", PutOptions { ttl: Some(Duration::from_secs(60)), ..Default::default() }).await?;
//! assert_eq!(users.get(b"user:1").await?, Some(b"alice".to_vec()));
//! let page = users.scan_prefix(b"user:", b"", 100).await?;
//! for (key, value) in page.entries { println!("{:?} = {:?}", key, value); }
//! users.delete(b"user:1").await?;
//! # Ok(()) }
//! ```
//!
//! From synchronous code, use [`blocking::Client`], which owns a small tokio runtime.
//! `client/examples/quickstart.rs` is the same tour as a program to run against `vasto dev`:
//! `cargo run -p vasto-client --example quickstart -- 127.0.0.1:8278`.

mod admin;
pub mod blocking;
mod conn;
mod dial;
mod keyspace;
mod pool;
mod read_many;
mod routing;
mod update;

pub use admin::AdminClient;
pub use keyspace::{now_ns, BatchOp, Keyspace, PutOptions, ReadFrom, ScanPage, WriteTo};
pub use read_many::GetResult;
pub use update::{Condition, ExpireCondition, ExpiryChange, SetExpiry, SetOptions, SetOutcome};
pub use vasto_wire::{ClusterToken, ReplicaRoute, Role, RoutingTable, Status, TokenError};

use std::sync::Arc;
use std::time::Duration;
use thiserror::Error;

/// Everything a client call can fail with.
#[derive(Debug, Error)]
pub enum ClientError {
    /// The master could not be reached or answered unexpectedly.
    #[error("master: {0}")]
    Master(String),
    /// The keyspace does not exist (according to the master's routing table).
    #[error("unknown keyspace {0:?}")]
    UnknownKeyspace(String),
    /// No replica of the shard could be reached.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// The store answered with an error status.
    #[error("{}: {message}", vasto_wire::status_name(*.status))]
    Server {
        /// The status code.
        status: Status,
        /// The store's explanation.
        message: String,
    },
    /// The connection broke before the answer arrived.
    #[error("connection lost")]
    ConnectionLost,
    /// No answer within the configured timeout.
    #[error("request timed out")]
    Timeout,
    /// The cluster token was missing or wrong, or a node could not prove it.
    #[error("authentication failed: {0}")]
    Unauthenticated(String),
}

/// Opens a dedicated connection to the store at `addr` as `role` (proving the configured token),
/// for streaming work that does not fit the pooled request connections (bulk import uses
/// [`Role::Importer`]).
pub async fn connect_store(addr: &str, role: Role, config: &ClientConfig) -> Result<tokio::net::TcpStream, ClientError> {
    dial::dial(addr, role, config).await.map_err(|e| e.store_error(addr))
}

/// Client tunables. The defaults fit a data-centre network: a store that stops answering
/// without closing its connections (a partition, a hung host) costs a request one attempt
/// timeout before it goes to the next replica, and the master's table stops routing there
/// within its heartbeat timeout (1 s by default).
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// A request's whole budget, every attempt and wait for a newer table included (and how
    /// long `Client::keyspace` waits for the first table).
    pub timeout: Duration,
    /// How long one attempt at one replica may take before the request goes to the next
    /// replica (a write is resent with its event time, so a repeat is a no-op).
    pub attempt_timeout: Duration,
    /// TCP connect plus the opening (hello and token proof) of one connection.
    pub connect_timeout: Duration,
    /// The cluster token, proven on every connection; `None` for an open cluster. A client
    /// with a token refuses nodes that cannot prove it.
    pub token: Option<ClusterToken>,
}

impl Default for ClientConfig {
    /// A 10 s request budget, 5 s per attempt, 3 s to connect, and no token.
    fn default() -> Self {
        Self { timeout: Duration::from_secs(10), attempt_timeout: Duration::from_secs(5), connect_timeout: Duration::from_secs(3), token: None }
    }
}

pub(crate) struct Inner {
    pub config: ClientConfig,
    pub pool: pool::Pool,
    pub routing: Arc<routing::Routing>,
}

/// A connection to a Vasto cluster. Cheap to clone; must be used inside a tokio runtime.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

impl Client {
    /// Connects to the master at `master` (`host:port`) with default settings.
    pub async fn connect(master: &str) -> Result<Self, ClientError> {
        Self::connect_with(master, ClientConfig::default()).await
    }

    /// Connects to the master with explicit settings. Fails if the master cannot be reached.
    pub async fn connect_with(master: &str, config: ClientConfig) -> Result<Self, ClientError> {
        let routing = routing::Routing::start(master.to_owned(), config.clone()).await?;
        let pool = pool::Pool::new(config.clone());
        Ok(Self { inner: Arc::new(Inner { config, pool, routing }) })
    }

    /// A handle on `name`, once its routing table has arrived. Errors with
    /// [`ClientError::UnknownKeyspace`] if the master does not know it.
    pub async fn keyspace(&self, name: &str) -> Result<Keyspace, ClientError> {
        let ks = Keyspace {
            inner: Arc::clone(&self.inner),
            name: Arc::from(name),
            table: self.inner.routing.watch(name),
            read_from: ReadFrom::Primary,
            write_to: WriteTo::Primary,
            next_replica: Default::default(),
        };
        ks.routing_table_ready().await?;
        Ok(ks)
    }
}
