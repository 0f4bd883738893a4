//! Re-bootstrapping a replica that is too far behind its peer's change log: the peer exports a
//! consistent copy of its user data as SST files, the follower ingests them. Entries are written
//! as merge operands, so ingesting them goes through the last-writer-wins merge and never
//! overwrites a newer write the follower already holds.
use crate::shard::Shard;
use crate::EngineError;
use rocksdb::SstFileWriter;
use std::path::{Path, PathBuf};

/// The keys of a shard that a new layout moves elsewhere, as SST files per target shard.
#[derive(Debug)]
pub struct MovingFiles {
    /// `(target shard, files)` for every target that receives keys, files in key order.
    pub targets: Vec<(u32, Vec<PathBuf>)>,
    /// Every local write up to this position is in the files; tail after it (filtered by the
    /// new layout) to catch the moved keys up.
    pub position: u64,
}

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
    /// (created if missing).
    pub fn export_snapshot(&self, dir: &Path, max_file_bytes: u64) -> Result<SnapshotFiles, EngineError> {
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

    /// Writes, from one snapshot, every key that would live on another shard if the keyspace had
    /// `new_shards` shards, into SST files per target shard under `dir` (for a resize: the
    /// targets ingest them with [`Shard::ingest_snapshot`]). Keys that stay are not written.
    pub fn export_moving(&self, dir: &Path, new_shards: u32, max_file_bytes: u64) -> Result<MovingFiles, EngineError> {
        std::fs::create_dir_all(dir).map_err(|source| EngineError::Io { path: dir.to_path_buf(), source })?;
        let own = self.layout().0;
        let position = self.head_position();
        let snapshot = self.db().snapshot();
        let mut it = snapshot.raw_iterator();
        it.seek_to_first();
        let mut targets: Vec<(u32, Vec<PathBuf>)> = Vec::new();
        // One open writer per target; keys arrive in order, so each target's file is sorted.
        let mut writers: Vec<(u32, SstFileWriter<'_>)> = Vec::new();
        while let (Some(k), Some(v)) = (it.key(), it.value()) {
            let target = vasto_hash::shard_of(k, new_shards);
            if target != own {
                let slot = match writers.iter().position(|(t, _)| *t == target) {
                    Some(i) => i,
                    None => {
                        let files = match targets.iter().position(|(t, _)| *t == target) {
                            Some(i) => &mut targets[i].1,
                            None => {
                                targets.push((target, Vec::new()));
                                let last = targets.len() - 1;
                                &mut targets[last].1
                            }
                        };
                        let path = dir.join(format!("{target:05}-{:06}.sst", files.len()));
                        let w = SstFileWriter::create(self.options());
                        w.open(&path)?;
                        files.push(path);
                        writers.push((target, w));
                        writers.len() - 1
                    }
                };
                let w = &mut writers[slot].1;
                w.merge(k, v)?;
                if w.file_size() >= max_file_bytes {
                    let (_, mut done) = writers.swap_remove(slot);
                    done.finish()?;
                }
            }
            it.next();
        }
        it.status()?;
        for (_, mut w) in writers {
            w.finish()?;
        }
        targets.sort_by_key(|(t, _)| *t);
        Ok(MovingFiles { targets, position })
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
