//! Receiving a bulk import (`vasto import`): the importer opens a connection of its own, sends
//! the SST files for one shard replica in `Ingest` pieces (no answer per piece), then a `done`
//! frame; the store ingests every file on a helper thread (so the core keeps serving), answers
//! that frame and closes. Files land in a directory next to the shard's and are removed
//! whatever happens.
use crate::registry::Replica;
use monoio::io::AsyncWriteRentExt;
use monoio::net::TcpStream;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use vasto_wire::{FrameEncoder, Status};

/// The files of one import being received for one shard replica.
pub struct IngestSession {
    replica: Arc<Replica>,
    keyspace: String,
    shard: u32,
    /// The shard count the importer partitioned for (checked again when ingesting).
    shards: u32,
    dir: PathBuf,
    files: Vec<PathBuf>,
    current: Option<std::fs::File>,
}

impl IngestSession {
    /// Starts receiving files for `replica`, partitioned by the importer for `shards` shards.
    /// Refused (wrong shard) when the replica serves or keeps another shard count: the keyspace
    /// was resized, or is being resized, since the importer read its routing table.
    pub fn start(replica: Arc<Replica>, shards: u32) -> Result<Self, (Status, String)> {
        let meta = replica.meta().clone();
        let layout = replica.layout_record();
        if (layout.serving, layout.committed) != (shards, shards) {
            let msg = format!(
                "{}/{} serves {} shards (committed {}), but the import was partitioned for {shards}: re-run the import once no resize is in progress",
                meta.keyspace, meta.shard, layout.serving, layout.committed
            );
            return Err((Status::WrongShard, msg));
        }
        let dir = replica.dir().with_extension(format!("ingest-{}", vasto_engine::now_ns()));
        std::fs::create_dir_all(&dir).map_err(|e| (Status::Internal, format!("{}: {e}", dir.display())))?;
        Ok(Self { replica, keyspace: meta.keyspace, shard: meta.shard, shards, dir, files: Vec::new(), current: None })
    }

    /// True when the session receives for this keyspace and shard.
    pub fn is_for(&self, keyspace: &str, shard: u32) -> bool {
        self.keyspace == keyspace && self.shard == shard
    }

    /// Appends a piece of file number `file` (the next file, or the current one).
    pub fn piece(&mut self, file: u32, data: &[u8]) -> Result<(), String> {
        if self.replica.retired() {
            return Err(format!("{}/{} was dropped during the import", self.keyspace, self.shard));
        }
        let index = file as usize;
        if index == self.files.len() {
            self.close_current()?;
            let path = self.dir.join(format!("{index:06}.sst"));
            self.current = Some(std::fs::File::create(&path).map_err(|e| format!("{}: {e}", path.display()))?);
            self.files.push(path);
        } else if index + 1 != self.files.len() {
            return Err(format!("import file {file} arrived out of order (expected {} or {})", self.files.len().saturating_sub(1), self.files.len()));
        }
        let file = self.current.as_mut().ok_or("import pieces out of order")?;
        file.write_all(data).map_err(|e| format!("writing the import for {}/{}: {e}", self.keyspace, self.shard))?;
        crate::metrics::MOVED.imported.fetch_add(data.len() as u64, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }

    fn close_current(&mut self) -> Result<(), String> {
        match self.current.take() {
            Some(f) => f.sync_all().map_err(|e| format!("writing the import for {}/{}: {e}", self.keyspace, self.shard)),
            None => Ok(()),
        }
    }
}

impl Drop for IngestSession {
    fn drop(&mut self) {
        self.current = None;
        if let Err(e) = std::fs::remove_dir_all(&self.dir) {
            tracing::warn!(dir = %self.dir.display(), error = %e, "could not remove the received import files");
        }
    }
}

/// Ingests the files of `session` on a helper thread, answers request `id` and returns (the
/// connection closes).
pub async fn finish(mut stream: TcpStream, mut session: IngestSession, id: u64) {
    let (status, message) = match session.close_current() {
        Err(e) => (Status::Internal, e),
        Ok(()) => {
            let (replica, files, shards) = (Arc::clone(&session.replica), session.files.clone(), session.shards);
            // The layout is checked again here, with layout changes held off while the files go
            // in: a resize that started after the first piece refuses the import.
            match crate::split::on_helper_thread("vasto-ingest", move || replica.ingest_import(&files, shards)).await {
                Ok(()) => {
                    session.replica.received_outside_the_log();
                    tracing::info!(keyspace = %session.keyspace, shard = session.shard, files = session.files.len(), "ingested an import");
                    (Status::Ok, String::new())
                }
                Err(e @ vasto_engine::EngineError::LayoutChanged { .. }) => {
                    (Status::WrongShard, format!("{}/{}: {e}: re-run the import once no resize is in progress", session.keyspace, session.shard))
                }
                Err(e) => (Status::Internal, format!("ingesting the import into {}/{}: {e}", session.keyspace, session.shard)),
            }
        }
    };
    if status != Status::Ok {
        tracing::warn!(keyspace = %session.keyspace, shard = session.shard, %message, "import not ingested");
    }
    let mut out = Vec::new();
    FrameEncoder::new().status(&mut out, id, status, &message, 0);
    let _ = stream.write_all(out).await;
}
