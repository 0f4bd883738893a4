//! Re-bootstrapping a replica that is too far behind its peer's change log: the peer exports a
//! consistent copy of its user data as SST files, the follower ingests them. Entries are written
//! as merge operands, so ingesting them goes through the last-writer-wins merge and never
//! overwrites a newer write the follower already holds.
use crate::shard::Shard;
use crate::EngineError;
use rocksdb::SstFileWriter;
use std::path::{Path, PathBuf};
use vasto_hash::ShardSelector;

/// The files of an exported snapshot and the change-log position to tail from afterwards.
#[derive(Debug)]
pub struct SnapshotFiles {
    /// SST files, in key order; empty when the shard holds no data.
    pub files: Vec<PathBuf>,
    /// Every local write up to this position is in the files; tail after it.
    pub position: u64,
}

impl Shard {
    /// Writes the user data, as of now, to SST files of about `max_file_bytes` each in `dir`
    /// (created if missing). With `only`, just the keys it selects: a resize copies to a new
    /// shard only the keys that move there.
    pub fn export_snapshot(&self, dir: &Path, max_file_bytes: u64, only: Option<ShardSelector>) -> Result<SnapshotFiles, EngineError> {
        std::fs::create_dir_all(dir).map_err(|source| EngineError::Io { path: dir.to_path_buf(), source })?;
        // Read the position first: writes between it and the snapshot are both in the files and
        // re-sent by the tail, which is harmless (merging the same write twice changes nothing).
        let position = self.head_position();
        let snapshot = self.db().snapshot();
        let mut it = snapshot.raw_iterator();
        it.seek_to_first();
        let mut files = Vec::new();
        let mut writer: Option<SstFileWriter<'_>> = None;
        while let (Some(k), Some(v)) = (it.key(), it.value()) {
            if only.is_some_and(|sel| !sel.contains(k)) {
                it.next();
                continue;
            }
            if writer.is_none() {
                let path = dir.join(format!("{:06}.sst", files.len()));
                let w = SstFileWriter::create(self.options());
                w.open(&path)?;
                files.push(path);
                writer = Some(w);
            }
            let Some(w) = writer.as_mut() else { break };
            w.merge(k, v)?;
            if w.file_size() >= max_file_bytes {
                w.finish()?;
                writer = None;
            }
            it.next();
        }
        it.status()?;
        if let Some(mut w) = writer {
            w.finish()?;
        }
        Ok(SnapshotFiles { files, position })
    }

    /// Ingests SST files made by [`Shard::export_snapshot`] and records `position` as the point
    /// after which `peer`'s changes are still to be applied.
    pub fn ingest_snapshot(&self, peer: &str, files: &[PathBuf], position: u64) -> Result<(), EngineError> {
        if !files.is_empty() {
            self.db().ingest_external_file(files.to_vec())?;
        }
        self.apply_replicated(peer, std::iter::empty(), position)
    }
}
