//! Shared master state behind one mutex: the soft state, the live store links (for commands),
//! and the routing-table subscribers. Critical sections are short and never span an `.await`.
use crate::catalog::{Catalog, CatalogDir, CatalogError};
use crate::state::{LogMark, State};
use crate::MasterConfig;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::io::{AsyncWriteExt, BufWriter};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::{mpsc, oneshot};
use vasto_wire::{FrameEncoder, Status};

/// A frame ready to write, shared by every connection it is sent to.
pub(crate) type Frame = Arc<Vec<u8>>;
/// The queue feeding one connection's writer task.
pub(crate) type Outbox = mpsc::UnboundedSender<Frame>;
/// Shard commands sent on a store connection and not yet answered, by frame id.
pub(crate) type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<Ack>>>>;

/// A store's answer to a shard command, with the replica's change-log position once the
/// command took effect (a freeze's final head, the head at a layout switch).
#[derive(Debug, Clone)]
pub(crate) struct Ack {
    pub status: Status,
    pub message: String,
    pub mark: LogMark,
}

/// The live connection of one store.
pub(crate) struct StoreLink {
    pub generation: u64,
    pub outbox: Outbox,
    pub pending: Pending,
}

struct Subscriber {
    conn: u64,
    outbox: Outbox,
}

/// Everything connections share.
pub(crate) struct Shared {
    pub config: MasterConfig,
    /// This cluster's id, sent in every hello reply.
    pub cluster_id: u64,
    catalog_dir: CatalogDir,
    hub: Mutex<Hub>,
    next_frame_id: AtomicU64,
    next_conn_id: AtomicU64,
}

impl Shared {
    pub fn new(config: MasterConfig, cluster_id: u64, catalog_dir: CatalogDir, catalog: Catalog) -> Self {
        let hub = Hub { state: State::from_catalog(catalog), links: HashMap::new(), subs: HashMap::new(), enc: FrameEncoder::new() };
        Self { config, cluster_id, catalog_dir, hub: Mutex::new(hub), next_frame_id: AtomicU64::new(1), next_conn_id: AtomicU64::new(1) }
    }

    /// Writes the catalog to disk if it changed. A failure is logged and retried at the next
    /// change; callers that must not go on without it (a create) check the result.
    pub fn persist(&self, hub: &mut Hub) -> Result<(), CatalogError> {
        if !hub.state.catalog_dirty {
            return Ok(());
        }
        match self.catalog_dir.save(&hub.state.catalog) {
            Ok(()) => {
                hub.state.catalog_dirty = false;
                Ok(())
            }
            Err(e) => {
                tracing::error!(error = %e, "could not write the catalog");
                Err(e)
            }
        }
    }

    /// Locks the hub (a panic elsewhere never makes the master unusable).
    pub fn lock(&self) -> MutexGuard<'_, Hub> {
        self.hub.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A fresh id for a frame the master originates.
    pub fn frame_id(&self) -> u64 {
        self.next_frame_id.fetch_add(1, Ordering::Relaxed)
    }

    /// A fresh id for a connection that may subscribe to routing tables (client or store).
    pub fn conn_id(&self) -> u64 {
        self.next_conn_id.fetch_add(1, Ordering::Relaxed)
    }
}

/// The state guarded by the mutex.
pub(crate) struct Hub {
    pub state: State,
    links: HashMap<String, StoreLink>,
    subs: HashMap<String, Vec<Subscriber>>,
    pub enc: FrameEncoder,
}

impl Hub {
    /// Sends the current table of each keyspace in `names` to its subscribers, encoding each
    /// table once. Subscribers whose connection is gone are dropped.
    pub fn push(&mut self, names: &[String]) {
        for name in names {
            let Some(subs) = self.subs.get_mut(name) else { continue };
            let mut out = Vec::new();
            self.enc.routing_table(&mut out, &self.state.table(name));
            let frame = Arc::new(out);
            subs.retain(|s| s.outbox.send(Arc::clone(&frame)).is_ok());
            if subs.is_empty() {
                self.subs.remove(name);
            }
        }
    }

    /// Subscribes connection `conn` to `name` and sends it the current table at once.
    pub fn subscribe(&mut self, conn: u64, outbox: &Outbox, name: &str) {
        let mut out = Vec::new();
        self.enc.routing_table(&mut out, &self.state.table(name));
        if outbox.send(Arc::new(out)).is_err() {
            return;
        }
        let subs = self.subs.entry(name.to_owned()).or_default();
        if !subs.iter().any(|s| s.conn == conn) {
            subs.push(Subscriber { conn, outbox: outbox.clone() });
        }
    }

    /// Removes every subscription of connection `conn`.
    pub fn unsubscribe_all(&mut self, conn: u64) {
        self.subs.retain(|_, subs| {
            subs.retain(|s| s.conn != conn);
            !subs.is_empty()
        });
    }

    /// Installs the live link of a store, replacing (and so disconnecting) an older one.
    pub fn attach_link(&mut self, store: &str, link: StoreLink) {
        if let Some(old) = self.links.insert(store.to_owned(), link) {
            fail_pending(&old.pending);
        }
    }

    /// Removes the link of `store` if it still belongs to connection `generation`.
    pub fn detach_link(&mut self, store: &str, generation: u64) {
        if self.links.get(store).is_some_and(|l| l.generation == generation) {
            self.links.remove(store);
        }
    }

    /// The live link of `store`, if it is connected.
    pub fn link(&self, store: &str) -> Option<&StoreLink> {
        self.links.get(store)
    }
}

/// Drops every pending command of a link, so their waiters see the connection as lost.
pub(crate) fn fail_pending(pending: &Pending) {
    pending.lock().unwrap_or_else(|p| p.into_inner()).clear();
}

/// Writes queued frames to a connection until the queue closes or the peer goes away, and a
/// keep-alive whenever nothing was sent for [`vasto_wire::MASTER_KEEPALIVE`].
pub(crate) async fn write_loop(wr: OwnedWriteHalf, mut rx: mpsc::UnboundedReceiver<Frame>) {
    let mut w = BufWriter::new(wr);
    let mut keepalive = Vec::new();
    FrameEncoder::new().heartbeat(&mut keepalive, "", &[], vasto_wire::DiskReport::default());
    loop {
        let frame = match tokio::time::timeout(vasto_wire::MASTER_KEEPALIVE, rx.recv()).await {
            Ok(Some(frame)) => frame,
            Ok(None) => break,
            Err(_) => {
                if w.write_all(&keepalive).await.is_err() || w.flush().await.is_err() {
                    return;
                }
                continue;
            }
        };
        if w.write_all(&frame).await.is_err() {
            return;
        }
        while let Ok(frame) = rx.try_recv() {
            if w.write_all(&frame).await.is_err() {
                return;
            }
        }
        if w.flush().await.is_err() {
            return;
        }
    }
    let _ = w.shutdown().await;
}
