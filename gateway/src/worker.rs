//! The gateway's worker threads. Each runs a single-threaded tokio runtime with its own native
//! client (its own master subscription and store connections) and serves the connections the
//! acceptor hands it, one task each.
//!
//! Why threads of their own rather than one multi-threaded runtime: with one client shared by
//! every thread, each request took a store connection's lock three times (encode, reply, wake)
//! from two threads at once, and replies woke tasks across threads; lock contention and futex
//! wakes were a fifth of the gateway's profile. With a client per thread nothing a request
//! touches is shared but the atomic counters and the event-time clock.
use crate::{conn, cursor, stats, Connected, GatewayConfig, GatewayError, Shared};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};
use vasto_client::Client;

/// What every worker shares.
#[derive(Clone)]
pub(crate) struct Common {
    pub config: Arc<GatewayConfig>,
    pub listen: SocketAddr,
    pub stats: Arc<stats::Stats>,
    pub cursors: Arc<cursor::CursorTable>,
    pub clock: Arc<crate::clock::EventClock>,
}

/// An accepted connection on its way to a worker: the socket, the client id, and its place in
/// the connected-clients gauge.
type Handoff = (std::net::TcpStream, u64, Connected);

/// A worker thread that is starting.
pub(crate) struct Starting {
    handle: Handle,
    ready: oneshot::Receiver<Result<(), GatewayError>>,
}

impl Starting {
    /// Waits until the worker has its keyspace's routing table, or says why it cannot.
    pub async fn ready(self) -> Result<Handle, GatewayError> {
        match self.ready.await {
            Ok(Ok(())) => Ok(self.handle),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(GatewayError::WorkerStopped(self.handle.index)),
        }
    }
}

/// A running worker; dropping the handle stops the worker (its connections are closed).
pub(crate) struct Handle {
    index: usize,
    connections: mpsc::UnboundedSender<Handoff>,
}

impl Handle {
    /// Gives the worker a connection to serve; `Err` when the worker has stopped.
    pub fn hand(&self, stream: std::net::TcpStream, id: u64, gauge: Connected) -> Result<(), ()> {
        self.connections.send((stream, id, gauge)).map_err(|_| ())
    }
}

/// Starts worker `index` on a thread of its own.
pub(crate) fn spawn(index: usize, common: Common) -> Result<Starting, GatewayError> {
    let (ready_tx, ready) = oneshot::channel();
    let (connections, rx) = mpsc::unbounded_channel();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|source| GatewayError::Thread { index, source })?;
    std::thread::Builder::new()
        .name(format!("vasto-gateway-{index}"))
        .spawn(move || runtime.block_on(run(common, ready_tx, rx)))
        .map_err(|source| GatewayError::Thread { index, source })?;
    Ok(Starting { handle: Handle { index, connections }, ready })
}

/// The worker's life: connect, report, then serve what arrives until the gateway is dropped.
async fn run(common: Common, ready: oneshot::Sender<Result<(), GatewayError>>, mut connections: mpsc::UnboundedReceiver<Handoff>) {
    let Common { config, listen, stats, cursors, clock } = common;
    let client_err = |source| GatewayError::Client { master: config.master.clone(), keyspace: config.keyspace.clone(), source };
    let keyspace = match Client::connect_with(&config.master, config.client.clone()).await {
        Ok(client) => client.keyspace(&config.keyspace).await.map_err(client_err),
        Err(e) => Err(client_err(e)),
    };
    let keyspace = match keyspace {
        Ok(keyspace) => keyspace,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    if ready.send(Ok(())).is_err() {
        return; // The gateway gave up starting.
    }
    let shared = Arc::new(Shared { config, listen, keyspace, stats, cursors, clock });
    while let Some((stream, id, gauge)) = connections.recv().await {
        let stream = match tokio::net::TcpStream::from_std(stream) {
            Ok(stream) => stream,
            Err(e) => {
                tracing::warn!("taking over an accepted connection: {e}");
                continue;
            }
        };
        let shared = Arc::clone(&shared);
        tokio::spawn(async move {
            let _gauge = gauge;
            conn::serve(&shared, stream, id).await;
        });
    }
}
