//! A client or admin connection: subscriptions to routing tables and admin requests.
use crate::admin::{compact_keyspace, create_keyspace, delete_keyspace};
use crate::command::Command;
use crate::hub::{write_loop, Frame, Outbox, Shared};
use crate::replace_run::replace_store;
use crate::resize_run::resize_keyspace;
use crate::MasterError;
use std::sync::Arc;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::mpsc;
use vasto_wire::{parse_frame, read_frame, FrameEncoder, Role, Status};

/// Starts an import into `name`: the keyspace is busy (no resize, replace or repair starts)
/// until the importer ends it or its connection closes. Refused while another operation runs.
/// Returns the shard count the import must be partitioned for.
fn begin_import(shared: &Shared, name: &str) -> Result<u32, (Status, String)> {
    let mut hub = shared.lock();
    let Some(shards) = hub.state.keyspaces.get(name).map(|ks| ks.shards) else {
        return Err((Status::UnknownKeyspace, format!("keyspace {name} does not exist")));
    };
    if !hub.state.begin(name, Vec::new()) {
        let what = hub.state.operation_kind(name).unwrap_or_else(|| "another operation".into());
        return Err((Status::Unavailable, format!("keyspace {name} is busy ({what}); import once it is over")));
    }
    hub.state.set_phase(name, "import", "loading", crate::state::unix_ms());
    Ok(shards)
}

/// Encodes an admin reply and queues it.
fn reply(outbox: &Outbox, enc: &mut FrameEncoder, id: u64, status: Status, message: &str, json: &str) {
    let mut out = Vec::new();
    enc.admin_reply(&mut out, id, status, message, json);
    let _ = outbox.send(Arc::new(out));
}

/// Answers request `id` once `work` is done, without holding up the connection's other
/// requests (admin operations can take minutes).
fn reply_later(outbox: &Outbox, id: u64, work: impl std::future::Future<Output = (Status, String)> + Send + 'static) {
    reply_later_with_json(outbox, id, async move {
        let (status, message) = work.await;
        (status, message, String::new())
    });
}

/// [`reply_later`] for work that answers with a JSON document too.
fn reply_later_with_json(outbox: &Outbox, id: u64, work: impl std::future::Future<Output = (Status, String, String)> + Send + 'static) {
    let outbox = outbox.clone();
    tokio::spawn(async move {
        let (status, message, json) = work.await;
        reply(&outbox, &mut FrameEncoder::new(), id, status, &message, &json);
    });
}

/// Serves a connection admitted as a client, admin or importer (`role`), until it closes.
pub(crate) async fn serve_client(
    shared: Arc<Shared>,
    role: Role,
    peer: String,
    mut rd: OwnedReadHalf,
    wr: OwnedWriteHalf,
    mut buf: Vec<u8>,
) -> Result<(), MasterError> {
    let conn = shared.conn_id();
    let (outbox, rx) = mpsc::unbounded_channel::<Frame>();
    // The writer ends once every sender is gone: this loop's and those of admin tasks in flight.
    tokio::spawn(write_loop(wr, rx));
    let mut imports = Vec::new();
    let mut peer = Peer { role, address: peer, outbox, imports: &mut imports };
    let result = client_loop(&shared, conn, &mut rd, &mut buf, &mut peer).await;
    let mut hub = shared.lock();
    hub.unsubscribe_all(conn);
    for name in imports {
        tracing::info!(keyspace = %name, "import connection closed; the keyspace is free for other operations");
        hub.state.end(&name);
    }
    result
}

/// One connection's peer: what it was admitted as, where its answers go, the imports it holds.
struct Peer<'i> {
    role: Role,
    address: String,
    outbox: Outbox,
    imports: &'i mut Vec<String>,
}

async fn client_loop(shared: &Arc<Shared>, conn: u64, rd: &mut OwnedReadHalf, buf: &mut Vec<u8>, peer: &mut Peer<'_>) -> Result<(), MasterError> {
    let mut enc = FrameEncoder::new();
    loop {
        match read_frame(rd, buf, crate::CLIENT_MAX_FRAME).await {
            Ok(()) => {}
            Err(vasto_wire::WireError::Closed) => return Ok(()),
            Err(e) => return Err(e.into()),
        }
        let frame = parse_frame(buf)?;
        let id = frame.id();
        let Some(command) = Command::of(&frame) else {
            let what = frame.body_type().variant_name().unwrap_or("unknown");
            let message = format!(
                "unexpected {what} message: the master accepts subscribe, create/delete/resize/compact/backup keyspace, replace store, cancel, import and status"
            );
            reply(&peer.outbox, &mut enc, id, Status::BadRequest, &message, "");
            continue;
        };
        if !command.permitted(peer.role) {
            let (role, what) = (peer.role, command.name());
            tracing::warn!(peer = %peer.address, ?role, command = what, "refused a command the peer's role may not send");
            reply(&peer.outbox, &mut enc, id, Status::Unauthorized, &format!("a {role:?} connection may not send {what}; connect as an admin"), "");
            continue;
        }
        serve_command(shared, conn, peer, &mut enc, id, command);
    }
}

/// Executes one permitted command; every answer goes through [`reply`].
fn serve_command(shared: &Arc<Shared>, conn: u64, peer: &mut Peer<'_>, enc: &mut FrameEncoder, id: u64, command: Command<'_>) {
    let outbox = &peer.outbox;
    match command {
        Command::Subscribe(sub) => shared.lock().subscribe(conn, outbox, sub.keyspace().unwrap_or_default()),
        Command::KeepAlive => {}
        Command::Create(req) => {
            let (shared, name, shards, replicas) = (Arc::clone(shared), req.keyspace().unwrap_or_default().to_owned(), req.shards(), req.replicas());
            let require_zones = req.require_zones();
            reply_later(outbox, id, async move { create_keyspace(&shared, &name, shards, replicas, require_zones).await });
        }
        Command::Delete(req) => {
            let (shared, name) = (Arc::clone(shared), req.keyspace().unwrap_or_default().to_owned());
            reply_later(outbox, id, async move { delete_keyspace(&shared, &name).await });
        }
        Command::Replace(req) => {
            let (shared, name) = (Arc::clone(shared), req.keyspace().unwrap_or_default().to_owned());
            let (from, to) = (req.from().unwrap_or_default().to_owned(), req.to().unwrap_or_default().to_owned());
            reply_later(outbox, id, async move { replace_store(&shared, &name, &from, &to).await });
        }
        Command::Compact(req) => {
            let (shared, name) = (Arc::clone(shared), req.keyspace().unwrap_or_default().to_owned());
            reply_later(outbox, id, async move { compact_keyspace(&shared, &name).await });
        }
        Command::Backup(req) => {
            let (shared, name, dir) = (Arc::clone(shared), req.keyspace().unwrap_or_default().to_owned(), req.dir().unwrap_or_default().to_owned());
            reply_later_with_json(outbox, id, async move { crate::backup::backup_keyspace(&shared, &name, &dir).await });
        }
        Command::Resize(req) => {
            let (shared, name, shards) = (Arc::clone(shared), req.keyspace().unwrap_or_default().to_owned(), req.shards());
            reply_later(outbox, id, async move { resize_keyspace(&shared, &name, shards).await });
        }
        Command::BeginImport(req) => {
            let name = req.keyspace().unwrap_or_default().to_owned();
            match begin_import(shared, &name) {
                Ok(shards) => {
                    peer.imports.push(name);
                    reply(outbox, enc, id, Status::Ok, "", &format!("{{\"shards\":{shards}}}"));
                }
                Err((status, message)) => reply(outbox, enc, id, status, &message, ""),
            }
        }
        Command::EndImport(req) => {
            let name = req.keyspace().unwrap_or_default();
            if let Some(i) = peer.imports.iter().position(|n| n == name) {
                peer.imports.swap_remove(i);
                shared.lock().state.end(name);
                reply(outbox, enc, id, Status::Ok, "", "");
            } else {
                reply(outbox, enc, id, Status::BadRequest, &format!("no import into {name} was begun on this connection"), "");
            }
        }
        Command::Cancel(req) => {
            let name = req.keyspace().unwrap_or_default();
            if shared.lock().state.request_cancel(name) {
                reply(outbox, enc, id, Status::Ok, &format!("cancelling the operation on {name}"), "");
            } else {
                reply(outbox, enc, id, Status::BadRequest, &format!("no operation in progress on {name}"), "");
            }
        }
        Command::Status => {
            let mut status = shared.lock().state.status(crate::state::unix_ms());
            status.cluster_id = format!("{:016x}", shared.cluster_id);
            match serde_json::to_string(&status) {
                Ok(json) => reply(outbox, enc, id, Status::Ok, "", &json),
                Err(e) => reply(outbox, enc, id, Status::Internal, &format!("encoding the status: {e}"), ""),
            }
        }
    }
}
