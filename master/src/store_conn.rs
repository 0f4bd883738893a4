//! A store's connection: registration, heartbeats (with replication lags), acks of shard
//! commands, routing-table subscriptions (a store follows its peers' tables), and marking the
//! store down when the connection breaks or falls silent.
use crate::hub::{fail_pending, write_loop, Ack, Frame, Outbox, Pending, Shared, StoreLink};
use crate::state::unix_ms;
use crate::state::LogMark;
use crate::MasterError;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::mpsc;
use vasto_wire::{fb, parse_frame, read_frame, DiskReport, FrameEncoder, ReplicaLag, ShardInfo, Status};

/// An owned copy of a `Register` frame.
struct Registration {
    store_id: String,
    address: String,
    zone: String,
    disk: DiskReport,
    shards: Vec<ShardInfo>,
    start_id: u64,
}

impl Registration {
    fn from_fb(reg: fb::Register<'_>) -> Result<Self, MasterError> {
        let store_id = reg.store_id().unwrap_or_default().to_owned();
        if store_id.is_empty() {
            return Err(MasterError::Protocol("register without a store id".into()));
        }
        Ok(Self {
            store_id,
            address: reg.address().unwrap_or_default().to_owned(),
            zone: reg.zone().unwrap_or_default().to_owned(),
            disk: DiskReport { capacity_bytes: reg.capacity_bytes(), free_bytes: reg.free_bytes(), full: reg.disk_full() },
            shards: reg.shards().iter().flat_map(|v| v.iter()).map(ShardInfo::from_fb).collect(),
            start_id: reg.start_id(),
        })
    }
}

/// Warns when the address a store advertises cannot be dialled from the master: clients and
/// peers would fail to reach it too (a wrong `--advertise`, a firewall).
async fn check_reachable(store: String, address: String) {
    let dial = tokio::time::timeout(std::time::Duration::from_secs(3), tokio::net::TcpStream::connect(&address)).await;
    match dial {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => {
            tracing::warn!(%store, %address, error = %e, "the master cannot reach the address this store advertises; clients and peers will not either")
        }
        Err(_) => {
            tracing::warn!(%store, %address, "the master cannot reach the address this store advertises (no answer in 3 s); clients and peers will not either")
        }
    }
}

/// Reads one frame, failing if none arrives within the heartbeat timeout.
async fn read_timed(shared: &Shared, rd: &mut OwnedReadHalf, buf: &mut Vec<u8>, store: &str) -> Result<(), MasterError> {
    let timeout = shared.config.heartbeat_timeout;
    match tokio::time::timeout(timeout, read_frame(rd, buf, crate::STORE_MAX_FRAME)).await {
        Ok(result) => Ok(result?),
        Err(_) => Err(MasterError::HeartbeatTimeout { store: store.to_owned(), timeout }),
    }
}

/// Serves a connection whose hello said `Role::Store`, until it breaks.
pub(crate) async fn serve_store(shared: Arc<Shared>, mut rd: OwnedReadHalf, wr: OwnedWriteHalf, mut buf: Vec<u8>) -> Result<(), MasterError> {
    read_timed(&shared, &mut rd, &mut buf, "(unregistered)").await?;
    let frame = parse_frame(&buf)?;
    let reg = frame.body_as_register().ok_or_else(|| MasterError::Protocol("a store must register right after its hello".into()))?;
    let reg = Registration::from_fb(reg)?;
    let store = reg.store_id.clone();
    tokio::spawn(check_reachable(store.clone(), reg.address.clone()));

    let (outbox, rx) = mpsc::unbounded_channel::<Frame>();
    let writer = tokio::spawn(write_loop(wr, rx));
    let pending: Pending = Arc::new(Mutex::new(HashMap::new()));
    // Identifies this connection's routing-table subscriptions.
    let conn = shared.conn_id();
    let generation = {
        let mut hub = shared.lock();
        let (generation, affected) = hub.state.register(&store, &reg.address, &reg.shards, unix_ms());
        hub.state.note_start(&store, reg.start_id);
        hub.state.note_zone(&store, &reg.zone);
        hub.state.note_disk(&store, reg.disk);
        let _ = shared.persist(&mut hub);
        hub.attach_link(&store, StoreLink { generation, outbox: outbox.clone(), pending: Arc::clone(&pending) });
        hub.push(&affected);
        generation
    };
    tracing::info!(store = %store, address = %reg.address, shards = reg.shards.len(), generation, "store registered");

    let link = Link { store: &store, generation, conn, outbox: &outbox, pending: &pending };
    let result = store_loop(&shared, &mut rd, &mut buf, &link).await;

    fail_pending(&pending);
    {
        let mut hub = shared.lock();
        hub.unsubscribe_all(conn);
        let affected = hub.state.store_down(&store, generation, unix_ms());
        hub.detach_link(&store, generation);
        hub.push(&affected);
        if !hub.state.stores.get(&store).is_some_and(|s| s.up) {
            tracing::warn!(store = %store, reason = %display_end(&result), keyspaces = affected.len(), "store is down");
        }
    }
    drop(outbox);
    writer.abort();
    result
}

fn display_end(result: &Result<(), MasterError>) -> String {
    match result {
        Ok(()) => "connection replaced".into(),
        Err(e) => e.to_string(),
    }
}

/// What the loop of one registered store connection needs to know about it.
struct Link<'a> {
    store: &'a str,
    generation: u64,
    /// Connection id of its subscriptions.
    conn: u64,
    outbox: &'a Outbox,
    pending: &'a Pending,
}

/// Handles frames from a registered store until the connection breaks, falls silent, or is
/// superseded by a newer connection of the same store.
async fn store_loop(shared: &Shared, rd: &mut OwnedReadHalf, buf: &mut Vec<u8>, link: &Link<'_>) -> Result<(), MasterError> {
    let Link { store, generation, conn, outbox, pending } = *link;
    let mut enc = FrameEncoder::new();
    loop {
        read_timed(shared, rd, buf, store).await?;
        let frame = parse_frame(buf)?;
        if let Some(resp) = frame.body_as_shard_command_ack() {
            let mark = LogMark { incarnation: resp.log_incarnation(), seq: resp.log_head() };
            let ack = Ack { status: resp.status(), message: resp.message().unwrap_or_default().to_owned(), mark };
            let waiter = pending.lock().unwrap_or_else(|p| p.into_inner()).remove(&frame.id());
            match waiter {
                Some(tx) => {
                    let _ = tx.send(ack);
                }
                None => tracing::debug!(store, id = frame.id(), "ack of an unknown or expired command"),
            }
        } else if let Some(hb) = frame.body_as_heartbeat() {
            let lags: Vec<ReplicaLag> = hb.lags().iter().flat_map(|v| v.iter()).map(ReplicaLag::from_fb).collect();
            let disk = DiskReport { capacity_bytes: hb.capacity_bytes(), free_bytes: hb.free_bytes(), full: hb.disk_full() };
            let mut hub = shared.lock();
            let Some(affected) = hub.state.heartbeat(store, generation, lags, unix_ms()) else { return Ok(()) };
            hub.state.note_disk(store, disk);
            hub.push(&affected);
        } else if let Some(sub) = frame.body_as_subscribe() {
            // The store follows the table to find its replication peers, like a client does.
            let name = sub.keyspace().unwrap_or_default();
            shared.lock().subscribe(conn, outbox, name);
        } else if let Some(reg) = frame.body_as_register() {
            let reg = Registration::from_fb(reg)?;
            if reg.store_id != store {
                return Err(MasterError::Protocol(format!("store {store} re-registered as {}", reg.store_id)));
            }
            let mut hub = shared.lock();
            let affected = hub.state.resync(store, generation, &reg.address, &reg.shards, unix_ms());
            let Some(affected) = affected else { return Ok(()) };
            hub.state.note_zone(store, &reg.zone);
            hub.state.note_disk(store, reg.disk);
            let _ = shared.persist(&mut hub);
            hub.push(&affected);
        } else {
            let what = frame.body_type().variant_name().unwrap_or("unknown");
            tracing::debug!(store, what, "unexpected message on a store connection");
            let mut out = Vec::new();
            let message = format!("unexpected {what} message on a store connection");
            enc.status(&mut out, frame.id(), Status::BadRequest, &message, 0);
            let _ = outbox.send(Arc::new(out));
        }
    }
}
