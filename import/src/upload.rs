//! Sending one shard's SST files to one replica: a dedicated connection, the files in `Ingest`
//! pieces, then a `done` frame the store answers once it has ingested them.
use crate::{ImportError, Progress};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use vasto_wire::{parse_frame, read_frame, FrameEncoder, Status, DEFAULT_MAX_FRAME};

/// Size of the pieces files are sent in.
const PIECE: usize = 4 << 20;
/// How long the store may take to ingest after the last piece.
const INGEST_TIMEOUT: Duration = Duration::from_secs(600);
/// Connect and hello timeout.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Where one shard's files go.
#[derive(Debug, Clone)]
pub(crate) struct Upload {
    pub keyspace: String,
    pub shard: u32,
    pub shards: u32,
    pub address: String,
    pub files: Vec<PathBuf>,
    /// The connection settings (connect timeout replaced by [`CONNECT_TIMEOUT`]) and token.
    pub client: vasto_client::ClientConfig,
}

impl Upload {
    fn fail(&self, message: impl Into<String>) -> ImportError {
        ImportError::Upload { shard: self.shard, address: self.address.clone(), message: message.into() }
    }

    /// Streams the files and waits for the store's answer.
    pub(crate) async fn run(self, progress: &Progress) -> Result<(), ImportError> {
        let config = vasto_client::ClientConfig { connect_timeout: CONNECT_TIMEOUT, ..self.client.clone() };
        let mut stream = vasto_client::connect_store(&self.address, vasto_client::Role::Importer, &config).await.map_err(|e| match e {
            e @ vasto_client::ClientError::Unauthenticated(_) => ImportError::Client(e),
            e => self.fail(e.to_string()),
        })?;
        let mut enc = FrameEncoder::new();
        let mut piece = vec![0u8; PIECE];
        let mut out = Vec::with_capacity(PIECE + 4096);
        for (index, path) in self.files.iter().enumerate() {
            let mut file = tokio::fs::File::open(path).await.map_err(|e| self.fail(format!("{}: {e}", path.display())))?;
            loop {
                let n = file.read(&mut piece).await.map_err(|e| self.fail(format!("{}: {e}", path.display())))?;
                if n == 0 {
                    break;
                }
                out.clear();
                enc.ingest(&mut out, 0, &self.keyspace, self.shard, self.shards, index as u32, &piece[..n], false);
                stream.write_all(&out).await.map_err(|e| self.fail(format!("sending: {e} (the store may have refused the import; see its log)")))?;
                progress.upload_bytes.fetch_add(n as u64, Ordering::Relaxed);
            }
        }
        out.clear();
        enc.ingest(&mut out, 1, &self.keyspace, self.shard, self.shards, self.files.len() as u32, b"", true);
        stream.write_all(&out).await.map_err(|e| self.fail(format!("sending: {e}")))?;
        let mut buf = Vec::new();
        tokio::time::timeout(INGEST_TIMEOUT, read_frame(&mut stream, &mut buf, DEFAULT_MAX_FRAME))
            .await
            .map_err(|_| self.fail("no answer within 10 minutes of the last piece"))?
            .map_err(|e| self.fail(format!("waiting for the answer: {e}")))?;
        let response = parse_frame(&buf).ok().and_then(|f| f.body_as_response()).ok_or_else(|| self.fail("the store answered something else"))?;
        match response.status() {
            Status::Ok => Ok(()),
            status => Err(self.fail(format!("{}: {}", vasto_wire::status_name(status), response.message().unwrap_or_default()))),
        }
    }
}
