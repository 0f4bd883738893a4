//! The client's subscription to the master: one connection, re-established forever, that keeps
//! the latest routing table of every keyspace the client uses.
use crate::dial::{dial, master_error};
use crate::{ClientConfig, ClientError};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use vasto_wire::{parse_frame, read_frame, FrameEncoder, Role, RoutingTable, DEFAULT_MAX_FRAME, MASTER_SILENCE};

/// The latest table of one keyspace; `None` until the master has answered the subscription.
pub(crate) type TableWatch = watch::Receiver<Option<Arc<RoutingTable>>>;

const RECONNECT_DELAY: Duration = Duration::from_millis(250);

/// Shared between the handles and the subscription task.
pub(crate) struct Routing {
    tables: Mutex<HashMap<String, watch::Sender<Option<Arc<RoutingTable>>>>>,
    subscribe: mpsc::UnboundedSender<String>,
}

impl Routing {
    /// Connects to the master (failing if it cannot be reached within `timeout`), then keeps the
    /// subscription alive in a background task, reconnecting after any failure.
    pub async fn start(master: String, config: ClientConfig) -> Result<Arc<Routing>, ClientError> {
        let first = connect(&master, &config).await?;
        let (tx, rx) = mpsc::unbounded_channel();
        let routing = Arc::new(Routing { tables: Mutex::new(HashMap::new()), subscribe: tx });
        tokio::spawn(run(Arc::downgrade(&routing), master, config, first, rx));
        Ok(routing)
    }

    /// Subscribes to `keyspace` (once per client) and returns a watch on its table.
    pub fn watch(&self, keyspace: &str) -> TableWatch {
        let mut tables = self.tables.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(tx) = tables.get(keyspace) {
            return tx.subscribe();
        }
        let (tx, rx) = watch::channel(None);
        tables.insert(keyspace.to_owned(), tx);
        let _ = self.subscribe.send(keyspace.to_owned());
        rx
    }

    fn keyspaces(&self) -> Vec<String> {
        self.tables.lock().unwrap_or_else(|p| p.into_inner()).keys().cloned().collect()
    }

    fn publish(&self, table: RoutingTable) {
        let tables = self.tables.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(tx) = tables.get(&table.keyspace) {
            tx.send_if_modified(|cur| {
                if cur.as_ref().is_some_and(|c| c.version > table.version) {
                    return false; // never go back to an older table
                }
                *cur = Some(Arc::new(table));
                true
            });
        }
    }
}

async fn connect(master: &str, config: &ClientConfig) -> Result<TcpStream, ClientError> {
    dial(master, Role::Client, config).await.map_err(|e| master_error(master, e))
}

async fn run(routing: std::sync::Weak<Routing>, master: String, config: ClientConfig, first: TcpStream, mut new_subs: mpsc::UnboundedReceiver<String>) {
    let mut stream = Some(first);
    loop {
        let conn = match stream.take() {
            Some(s) => s,
            None => match connect(&master, &config).await {
                Ok(s) => s,
                Err(e) => {
                    tracing::debug!(error = %e, "master unreachable; keeping the last routing tables");
                    tokio::time::sleep(RECONNECT_DELAY).await;
                    if routing.strong_count() == 0 {
                        return;
                    }
                    continue;
                }
            },
        };
        let Some(r) = routing.upgrade() else { return };
        let (read, mut write) = conn.into_split();
        let mut enc = FrameEncoder::new();
        let mut out = Vec::new();
        for ks in r.keyspaces() {
            enc.subscribe(&mut out, &ks);
        }
        drop(r);
        if write.write_all(&out).await.is_err() {
            continue;
        }
        let mut reader = tokio::spawn(read_tables(routing.clone(), read));
        loop {
            tokio::select! {
                sub = new_subs.recv() => {
                    let Some(ks) = sub else { reader.abort(); return };
                    out.clear();
                    enc.subscribe(&mut out, &ks);
                    if write.write_all(&out).await.is_err() {
                        reader.abort();
                        break;
                    }
                }
                _ = &mut reader => break,
            }
        }
        tokio::time::sleep(RECONNECT_DELAY).await;
    }
}

async fn read_tables(routing: std::sync::Weak<Routing>, read: tokio::net::tcp::OwnedReadHalf) {
    let mut read = BufReader::new(read);
    let mut buf = Vec::new();
    // The master sends a keep-alive every 500 ms: a longer silence means it is gone, and
    // returning makes the caller dial it again.
    while let Ok(Ok(())) = tokio::time::timeout(MASTER_SILENCE, read_frame(&mut read, &mut buf, DEFAULT_MAX_FRAME)).await {
        let Ok(frame) = parse_frame(&buf) else { return };
        let Some(table) = frame.body_as_routing_table() else { continue };
        let Some(r) = routing.upgrade() else { return };
        r.publish(RoutingTable::from_fb(table));
    }
}
