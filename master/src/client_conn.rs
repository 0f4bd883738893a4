//! A client or admin connection: subscriptions to routing tables and admin requests.
use crate::admin::{create_keyspace, delete_keyspace};
use crate::hub::{write_loop, Frame, Outbox, Shared};
use crate::replace_run::replace_store;
use crate::resize_run::resize_keyspace;
use crate::MasterError;
use std::sync::Arc;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::mpsc;
use vasto_wire::{parse_frame, read_frame, FrameEncoder, Status, DEFAULT_MAX_FRAME};

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

/// Serves a connection whose hello said `Role::Client` or `Role::Admin`, until it closes.
pub(crate) async fn serve_client(shared: Arc<Shared>, mut rd: OwnedReadHalf, wr: OwnedWriteHalf, mut buf: Vec<u8>) -> Result<(), MasterError> {
    let conn = shared.conn_id();
    let (outbox, rx) = mpsc::unbounded_channel::<Frame>();
    // The writer ends once every sender is gone: this loop's and those of admin tasks in flight.
    tokio::spawn(write_loop(wr, rx));
    let mut imports = Vec::new();
    let result = client_loop(&shared, conn, &mut rd, &mut buf, &outbox, &mut imports).await;
    let mut hub = shared.lock();
    hub.unsubscribe_all(conn);
    for name in imports {
        tracing::info!(keyspace = %name, "import connection closed; the keyspace is free for other operations");
        hub.state.end(&name);
    }
    result
}

async fn client_loop(
    shared: &Arc<Shared>,
    conn: u64,
    rd: &mut OwnedReadHalf,
    buf: &mut Vec<u8>,
    outbox: &Outbox,
    imports: &mut Vec<String>,
) -> Result<(), MasterError> {
    let mut enc = FrameEncoder::new();
    loop {
        match read_frame(rd, buf, DEFAULT_MAX_FRAME).await {
            Ok(()) => {}
            Err(vasto_wire::WireError::Closed) => return Ok(()),
            Err(e) => return Err(e.into()),
        }
        let frame = parse_frame(buf)?;
        let id = frame.id();
        if let Some(sub) = frame.body_as_subscribe() {
            let name = sub.keyspace().unwrap_or_default();
            shared.lock().subscribe(conn, outbox, name);
        } else if let Some(req) = frame.body_as_create_keyspace() {
            let name = req.keyspace().unwrap_or_default().to_owned();
            let (shards, replicas) = (req.shards(), req.replicas());
            let (shared, outbox) = (Arc::clone(shared), outbox.clone());
            tokio::spawn(async move {
                let (status, message) = create_keyspace(&shared, &name, shards, replicas).await;
                reply(&outbox, &mut FrameEncoder::new(), id, status, &message, "");
            });
        } else if let Some(req) = frame.body_as_delete_keyspace() {
            let name = req.keyspace().unwrap_or_default().to_owned();
            let (shared, outbox) = (Arc::clone(shared), outbox.clone());
            tokio::spawn(async move {
                let (status, message) = delete_keyspace(&shared, &name).await;
                reply(&outbox, &mut FrameEncoder::new(), id, status, &message, "");
            });
        } else if let Some(req) = frame.body_as_replace_store() {
            let name = req.keyspace().unwrap_or_default().to_owned();
            let (from, to) = (req.from().unwrap_or_default().to_owned(), req.to().unwrap_or_default().to_owned());
            let (shared, outbox) = (Arc::clone(shared), outbox.clone());
            tokio::spawn(async move {
                let (status, message) = replace_store(&shared, &name, &from, &to).await;
                reply(&outbox, &mut FrameEncoder::new(), id, status, &message, "");
            });
        } else if let Some(req) = frame.body_as_resize_keyspace() {
            let (name, shards) = (req.keyspace().unwrap_or_default().to_owned(), req.shards());
            let (shared, outbox) = (Arc::clone(shared), outbox.clone());
            tokio::spawn(async move {
                let (status, message) = resize_keyspace(&shared, &name, shards).await;
                reply(&outbox, &mut FrameEncoder::new(), id, status, &message, "");
            });
        } else if let Some(req) = frame.body_as_begin_import() {
            let name = req.keyspace().unwrap_or_default().to_owned();
            match begin_import(shared, &name) {
                Ok(shards) => {
                    imports.push(name);
                    reply(outbox, &mut enc, id, Status::Ok, "", &format!("{{\"shards\":{shards}}}"));
                }
                Err((status, message)) => reply(outbox, &mut enc, id, status, &message, ""),
            }
        } else if let Some(req) = frame.body_as_end_import() {
            let name = req.keyspace().unwrap_or_default();
            if let Some(i) = imports.iter().position(|n| n == name) {
                imports.swap_remove(i);
                shared.lock().state.end(name);
                reply(outbox, &mut enc, id, Status::Ok, "", "");
            } else {
                reply(outbox, &mut enc, id, Status::BadRequest, &format!("no import into {name} was begun on this connection"), "");
            }
        } else if let Some(req) = frame.body_as_cancel_operation() {
            let name = req.keyspace().unwrap_or_default();
            if shared.lock().state.request_cancel(name) {
                reply(outbox, &mut enc, id, Status::Ok, &format!("cancelling the operation on {name}"), "");
            } else {
                reply(outbox, &mut enc, id, Status::BadRequest, &format!("no operation in progress on {name}"), "");
            }
        } else if frame.body_as_status_request().is_some() {
            let mut status = shared.lock().state.status(crate::state::unix_ms());
            status.cluster_id = format!("{:016x}", shared.cluster_id);
            match serde_json::to_string(&status) {
                Ok(json) => reply(outbox, &mut enc, id, Status::Ok, "", &json),
                Err(e) => reply(outbox, &mut enc, id, Status::Internal, &format!("encoding the status: {e}"), ""),
            }
        } else if frame.body_as_heartbeat().is_some() {
            // A keepalive from a client: nothing to do.
        } else {
            let what = frame.body_type().variant_name().unwrap_or("unknown");
            let message =
                format!("unexpected {what} message: the master accepts subscribe, create/delete/resize keyspace, replace store, cancel, import and status");
            reply(outbox, &mut enc, id, Status::BadRequest, &message, "");
        }
    }
}
