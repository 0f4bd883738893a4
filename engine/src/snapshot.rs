//! Re-bootstrapping a replica that is too far behind its peer's change log: the peer exports a
//! consistent copy of its user data as SST files, the follower ingests them. Entries are written
//! as merge operands, so ingesting them goes through the last-writer-wins merge and never
//! overwrites a newer write the follower already holds.
use crate::changelog::LogPosition;
use crate::pace::{MoveRate, Pacer};
use crate::shard::Shard;
use crate::EngineError;
use rocksdb::SstFileWriter;
use std::path::{Path, PathBuf};

/// How often (in bytes read) a paced export checks its pace.
const PACE_CHECK_BYTES: u64 = 1 << 20;

/// A shard's keys split by the shard a new shard count puts them on (see
/// [`Shard::export_moving`]).
#[derive(Debug)]
pub struct SplitFiles {
    /// `(target shard, files)` for every target that receives keys, files in key order.
    pub targets: Vec<(u32, Vec<PathBuf>)>,
    /// Every local write up to this position is in the files; tail after it.
    pub position: LogPosition,
}

/// The files of an exported snapshot and the change-log position to tail from afterwards.
#[derive(Debug)]
pub struct SnapshotFiles {
    /// SST files, in key order; empty when the shard holds no data.
    pub files: Vec<PathBuf>,
    /// Every local write up to this position is in the files; tail after it.
    pub position: LogPosition,
}

impl Shard {
    /// Writes the user data, as of now, to SST files of about `max_file_bytes` each in `dir`
    /// (created if missing), reading at the pace of `rate` (the calling thread sleeps to keep
    /// it; the rate may change during the export). Keys the layout does not keep (moved away by a resize,
    /// not yet compacted) are left out: the follower's replica must not keep them either.
    pub fn export_snapshot(&self, dir: &Path, max_file_bytes: u64, rate: &MoveRate) -> Result<SnapshotFiles, EngineError> {
        let split = self.export_by_shard(dir, max_file_bytes, rate, |key| self.keeps(key).then_some(0))?;
        Ok(SnapshotFiles { files: split.targets.into_iter().next().map(|(_, f)| f).unwrap_or_default(), position: split.position })
    }

    /// Writes, from one RocksDB snapshot, every key that `shards` shards would place on another
    /// shard than this one, into SST files per target shard under `dir`: one scan serves every
    /// receiving shard of a resize. Paced like [`Shard::export_snapshot`].
    pub fn export_moving(&self, dir: &Path, max_file_bytes: u64, shards: u32, rate: &MoveRate) -> Result<SplitFiles, EngineError> {
        let own = self.meta().shard;
        self.export_by_shard(dir, max_file_bytes, rate, |key| Some(vasto_hash::shard_of(key, shards)).filter(|&t| t != own))
    }

    /// One scan of a snapshot, each key written to the files of the target `target_of` names
    /// (skipped when `None`); each target's files are in key order.
    fn export_by_shard(&self, dir: &Path, max_file_bytes: u64, rate: &MoveRate, target_of: impl Fn(&[u8]) -> Option<u32>) -> Result<SplitFiles, EngineError> {
        std::fs::create_dir_all(dir).map_err(|source| EngineError::Io { path: dir.to_path_buf(), source })?;
        // Read the position first: writes between it and the snapshot are both in the files and
        // re-sent by the tail, which is harmless (merging the same write twice changes nothing).
        let position = self.log_mark();
        let snapshot = self.db().snapshot();
        let mut it = snapshot.raw_iterator();
        it.seek_to_first();
        let mut targets: Vec<(u32, Vec<PathBuf>)> = Vec::new();
        // One open writer per target (index into `targets`).
        let mut writers: Vec<Option<SstFileWriter<'_>>> = Vec::new();
        let mut pacer = Pacer::new(rate);
        let mut unpaced = 0u64;
        while let (Some(k), Some(v)) = (it.key(), it.value()) {
            unpaced += (k.len() + v.len()) as u64;
            if unpaced >= PACE_CHECK_BYTES {
                if self.retired() {
                    return Err(EngineError::Retired);
                }
                if let Some(wait) = pacer.after(std::mem::take(&mut unpaced)) {
                    std::thread::sleep(wait);
                }
            }
            if let Some(target) = target_of(k) {
                let slot = match targets.iter().position(|(t, _)| *t == target) {
                    Some(i) => i,
                    None => {
                        targets.push((target, Vec::new()));
                        writers.push(None);
                        targets.len() - 1
                    }
                };
                if writers[slot].is_none() {
                    let files = &mut targets[slot].1;
                    let path = dir.join(format!("{target:05}-{:06}.sst", files.len()));
                    let w = SstFileWriter::create(self.options());
                    w.open(&path)?;
                    files.push(path);
                    writers[slot] = Some(w);
                }
                if let Some(w) = writers[slot].as_mut() {
                    w.merge(k, v)?;
                    if w.file_size() >= max_file_bytes {
                        w.finish()?;
                        writers[slot] = None;
                    }
                }
            }
            it.next();
        }
        it.status()?;
        for mut w in writers.into_iter().flatten() {
            w.finish()?;
        }
        targets.sort_by_key(|(t, _)| *t);
        Ok(SplitFiles { targets, position })
    }

    /// Ingests SST files made by [`Shard::export_snapshot`] and records `position` (of the
    /// peer's log) as the point after which `peer`'s changes are still to be applied.
    pub fn ingest_snapshot(&self, peer: &str, files: &[PathBuf], position: LogPosition) -> Result<(), EngineError> {
        if !files.is_empty() {
            self.db().ingest_external_file(files.to_vec())?;
            self.renew_cache_owner();
        }
        self.apply_replicated(peer, std::iter::empty(), position)
    }
}
