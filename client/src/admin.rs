//! Administrative requests to the master (create/delete keyspace, cluster status).
use crate::dial::{dial, master_error};
use crate::{ClientConfig, ClientError};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use vasto_wire::{parse_frame, read_frame, FrameEncoder, Role, Status, DEFAULT_MAX_FRAME};

/// A connection to the master for administrative requests. Requests are sent one at a time.
pub struct AdminClient {
    stream: TcpStream,
    enc: FrameEncoder,
    buf: Vec<u8>,
    next_id: u64,
    timeout: Duration,
}

impl AdminClient {
    /// Connects to the master at `master` (`host:port`) of an open cluster (no token).
    pub async fn connect(master: &str, timeout: Duration) -> Result<Self, ClientError> {
        Self::connect_with(master, &ClientConfig { timeout, ..Default::default() }).await
    }

    /// Connects to the master with explicit settings (the token among them).
    pub async fn connect_with(master: &str, config: &ClientConfig) -> Result<Self, ClientError> {
        let stream = dial(master, Role::Admin, config).await.map_err(|e| master_error(master, e))?;
        let (enc, buf) = (FrameEncoder::new(), Vec::new());
        Ok(Self { stream, enc, buf, next_id: 1, timeout: config.timeout })
    }

    async fn request(&mut self, encode: impl FnOnce(&mut FrameEncoder, &mut Vec<u8>, u64)) -> Result<String, ClientError> {
        let id = self.next_id;
        self.next_id += 1;
        self.buf.clear();
        encode(&mut self.enc, &mut self.buf, id);
        let lost = |e: String| ClientError::Master(format!("master connection: {e}"));
        self.stream.write_all(&self.buf).await.map_err(|e| lost(e.to_string()))?;
        // One deadline for the answer: the master's keep-alives in between do not extend it.
        let deadline = tokio::time::Instant::now() + self.timeout;
        loop {
            tokio::time::timeout_at(deadline, read_frame(&mut self.stream, &mut self.buf, DEFAULT_MAX_FRAME))
                .await
                .map_err(|_| ClientError::Timeout)?
                .map_err(|e| lost(e.to_string()))?;
            let frame = parse_frame(&self.buf).map_err(|e| lost(e.to_string()))?;
            let Some(reply) = frame.body_as_admin_reply().filter(|_| frame.id() == id) else { continue };
            return match reply.status() {
                // A document when the request asked for one, else what the master said it did.
                Status::Ok => Ok(reply.json().filter(|j| !j.is_empty()).or(reply.message()).unwrap_or_default().to_owned()),
                status => Err(ClientError::Server { status, message: reply.message().unwrap_or_default().to_owned() }),
            };
        }
    }

    /// Creates a keyspace of `shards` shards with `replicas` copies each (idempotent).
    pub async fn create_keyspace(&mut self, name: &str, shards: u32, replicas: u32) -> Result<(), ClientError> {
        self.create_keyspace_placed(name, shards, replicas, false).await.map(drop)
    }

    /// [`AdminClient::create_keyspace`], returning what the master said: a warning when the
    /// replicas of some shard could not be spread over distinct zones. With `require_zones`
    /// such a keyspace is refused instead (`BadRequest`).
    pub async fn create_keyspace_placed(&mut self, name: &str, shards: u32, replicas: u32, require_zones: bool) -> Result<String, ClientError> {
        self.request(|enc, out, id| enc.create_keyspace(out, id, name, shards, replicas, require_zones)).await
    }

    /// Starts a full compaction of every replica of `name` (each runs in its store's
    /// background); returns once all have started. `Unavailable` if a store holding some of it
    /// is down.
    pub async fn compact_keyspace(&mut self, name: &str) -> Result<String, ClientError> {
        self.request(|enc, out, id| enc.compact_keyspace(out, id, name)).await
    }

    /// Has one replica of every shard of `name` write a RocksDB checkpoint under `dir` (an
    /// absolute path each store can write; see `vasto admin backup`), each once it holds every
    /// write its live peers had logged when the backup began. Returns the master's account of
    /// the checkpoints (JSON); the caller writes the backup's manifest.
    pub async fn backup_keyspace(&mut self, name: &str, dir: &str) -> Result<String, ClientError> {
        self.request(|enc, out, id| enc.backup_keyspace(out, id, name, dir)).await
    }

    /// Deletes a keyspace and all its data.
    pub async fn delete_keyspace(&mut self, name: &str) -> Result<(), ClientError> {
        self.request(|enc, out, id| enc.delete_keyspace(out, id, name)).await.map(drop)
    }

    /// Moves every replica of `name` on store `from` to store `to` (store ids or addresses):
    /// `to` copies the data from the live replicas, catches up, then takes `from`'s place, and
    /// `from`'s copy is dropped. Returns once done. Idempotent.
    pub async fn replace_store(&mut self, name: &str, from: &str, to: &str) -> Result<String, ClientError> {
        self.request(|enc, out, id| enc.replace_store(out, id, name, from, to)).await
    }

    /// Grows or shrinks `name` to `shards` shards while clients keep working; returns once done.
    pub async fn resize_keyspace(&mut self, name: &str, shards: u32) -> Result<String, ClientError> {
        self.request(|enc, out, id| enc.resize_keyspace(out, id, name, shards)).await
    }

    /// Cancels the replace or resize in progress on `name`: it rolls back and its caller gets an
    /// error.
    pub async fn cancel(&mut self, name: &str) -> Result<String, ClientError> {
        self.request(|enc, out, id| enc.cancel_operation(out, id, name)).await
    }

    /// Starts an import into `name`: until [`AdminClient::end_import`] or until this connection
    /// closes, no resize or replace of `name` can start (and this is refused while one runs).
    /// Returns the keyspace's shard count, which the import must be partitioned for.
    pub async fn begin_import(&mut self, name: &str) -> Result<u32, ClientError> {
        let json = self.request(|enc, out, id| enc.begin_import(out, id, name)).await?;
        let shards = serde_json::from_str::<serde_json::Value>(&json).ok().and_then(|v| v["shards"].as_u64()).and_then(|n| u32::try_from(n).ok());
        shards.ok_or_else(|| ClientError::Master(format!("the master's answer to an import of {name} has no shard count: {json:?}")))
    }

    /// Waits until the master closes this connection, it breaks, or the master falls silent
    /// for [`vasto_wire::MASTER_SILENCE`] (an import's lease is lost with it). Nothing else is
    /// read: call it only while no request is in flight.
    pub async fn closed(&mut self) {
        let silence = vasto_wire::MASTER_SILENCE;
        while let Ok(Ok(())) = tokio::time::timeout(silence, read_frame(&mut self.stream, &mut self.buf, DEFAULT_MAX_FRAME)).await {}
    }

    /// Ends the import begun with [`AdminClient::begin_import`].
    pub async fn end_import(&mut self, name: &str) -> Result<(), ClientError> {
        self.request(|enc, out, id| enc.end_import(out, id, name)).await.map(drop)
    }

    /// The cluster status document (JSON, see `vasto_master::ClusterStatus`).
    pub async fn status_json(&mut self) -> Result<String, ClientError> {
        self.request(|enc, out, id| enc.status_request(out, id)).await
    }
}
