//! Backups of shard replicas: a RocksDB checkpoint of a live replica (hard links when the
//! target is on the data's filesystem, copies otherwise), and reading one back, entry by entry,
//! for a restore. A checkpoint is an openable copy of the whole replica (data, metadata, change
//! log) as of one instant; reading it back yields the stored values (headers included) of the
//! keys the replica owned, verifying every block's checksum on the way.
use crate::census::ReadOnlyShard;
use crate::changelog::LogPosition;
use crate::header::Header;
use crate::layout::LayoutRecord;
use crate::shard::Shard;
use crate::{EngineError, ShardMeta};
use std::path::Path;

impl Shard {
    /// Writes a checkpoint of the replica into `dir`, which must not exist yet (its parent is
    /// created if missing). Returns the change-log position it covers: every local write up to it
    /// is in the checkpoint (later ones may be too). The memtables are flushed first, so the
    /// checkpoint needs no WAL replay to hold every acknowledged write.
    pub fn checkpoint_into(&self, dir: &Path) -> Result<LogPosition, EngineError> {
        if self.retired() {
            return Err(EngineError::Retired);
        }
        if dir.exists() {
            let source = std::io::Error::new(std::io::ErrorKind::AlreadyExists, "a backup directory already exists there");
            return Err(EngineError::Io { path: dir.to_path_buf(), source });
        }
        if let Some(parent) = dir.parent() {
            std::fs::create_dir_all(parent).map_err(|source| EngineError::Io { path: parent.to_path_buf(), source })?;
        }
        let position = self.log_mark();
        rocksdb::checkpoint::Checkpoint::new(self.db())?.create_checkpoint(dir)?;
        Ok(position)
    }
}

/// What [`read_checkpoint`] found in a checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointSummary {
    /// The replica the checkpoint was taken of.
    pub meta: ShardMeta,
    /// Its layout at the time (serving and committed counts agree: see [`read_checkpoint`]).
    pub layout: LayoutRecord,
    /// Entries visited: the keys the shard owned, tombstones and expired values included.
    pub entries: u64,
    /// The greatest event time among them (0 when there is none).
    pub max_event_time_ns: u64,
}

/// Opens the checkpoint in `dir` read-only and calls `visit(key, stored value)`, in key order,
/// for every key the replica owned under its committed shard count (keys a resize had moved
/// away but compaction had not dropped yet are skipped). Every block read is checked against
/// its checksum: a damaged file fails the read with [`EngineError::Rocks`] instead of yielding
/// wrong data. A checkpoint taken while a resize was in progress (serving and committed counts
/// differ) is refused as [`EngineError::Corrupt`], as is a value too short to hold a header.
/// An error from `visit` stops the read and is returned as it is.
pub fn read_checkpoint(dir: &Path, mut visit: impl FnMut(&[u8], &[u8]) -> Result<(), EngineError>) -> Result<CheckpointSummary, EngineError> {
    let corrupt = |what: String| EngineError::Corrupt(format!("{}: {what}", dir.display()));
    if !dir.join("CURRENT").is_file() {
        return Err(corrupt("not a shard checkpoint (no CURRENT file)".into()));
    }
    let data_opts = crate::sst_options(&crate::block_table());
    let mut db_opts = data_opts.clone();
    db_opts.set_paranoid_checks(true);
    // A damaged WAL record fails the open instead of ending the replay early (which would
    // silently yield older values).
    db_opts.set_wal_recovery_mode(rocksdb::DBRecoveryMode::AbsoluteConsistency);
    let ReadOnlyShard { db, meta, layout } = ReadOnlyShard::open(dir, &db_opts, &data_opts)?;
    if layout.serving != layout.committed {
        return Err(corrupt(format!("taken during a resize ({} shards serving, {} committed)", layout.serving, layout.committed)));
    }
    let mut read = rocksdb::ReadOptions::default();
    read.set_verify_checksums(true);
    read.fill_cache(false);
    let mut it = db.raw_iterator_opt(read);
    it.seek_to_first();
    let (mut entries, mut max_event_time_ns) = (0u64, 0u64);
    while let (Some(key), Some(value)) = (it.key(), it.value()) {
        if vasto_hash::shard_of(key, layout.committed) == meta.shard {
            let (header, _) = Header::split(value).ok_or_else(|| corrupt(format!("a value of {} bytes has no header", value.len())))?;
            max_event_time_ns = max_event_time_ns.max(header.event_time_ns);
            entries += 1;
            visit(key, value)?;
        }
        it.next();
    }
    it.status()?;
    Ok(CheckpointSummary { meta, layout, entries, max_event_time_ns })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Engine, EngineOptions};

    fn shard(engine: &Engine, shards: u32) -> Shard {
        engine.create_shard(&ShardMeta { keyspace: "bk".into(), keyspace_incarnation: 7, shard: 0, shards, replica: 0, replicas: 1, created_at_ms: 1 }).unwrap()
    }

    #[test]
    fn a_checkpoint_reads_back_every_owned_entry_with_its_header() {
        let dir = tempfile::tempdir().unwrap();
        let engine = Engine::new(&dir.path().join("data"), &EngineOptions::default()).unwrap();
        let db = shard(&engine, 1);
        for i in 0..500u64 {
            db.put(format!("k{i:04}").as_bytes(), b"v", 1_000 + i, 0).unwrap();
        }
        db.delete(b"k0001", 5_000).unwrap();
        let at = dir.path().join("backup/shard-00000");
        let position = db.checkpoint_into(&at).unwrap();
        assert!(position.seq >= 501, "the position covers every write: {position:?}");
        // Writes after the checkpoint are not in it.
        db.put(b"later", b"v", 9_000, 0).unwrap();
        let mut keys = Vec::new();
        let summary = read_checkpoint(&at, |k, v| {
            keys.push((k.to_vec(), Header::split(v).map(|(h, _)| h)));
            Ok(())
        })
        .unwrap();
        assert_eq!(summary.entries, 500);
        assert_eq!(summary.max_event_time_ns, 5_000, "the tombstone is the newest entry");
        assert_eq!((summary.meta.keyspace.as_str(), summary.meta.keyspace_incarnation), ("bk", 7));
        assert!(keys.windows(2).all(|w| w[0].0 < w[1].0), "key order");
        assert!(keys.iter().any(|(k, h)| k == b"k0001" && h.is_some_and(|h| h.tombstone)), "tombstones are kept");
        assert!(db.checkpoint_into(&at).is_err(), "an existing directory is never overwritten");
    }

    #[test]
    fn a_damaged_checkpoint_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let engine = Engine::new(&dir.path().join("data"), &EngineOptions::default()).unwrap();
        let db = shard(&engine, 1);
        let value = vec![b'x'; 200];
        for i in 0..5_000u64 {
            db.put(format!("k{i:05}").as_bytes(), &value, 1 + i, 0).unwrap();
        }
        let at = dir.path().join("cp");
        db.checkpoint_into(&at).unwrap();
        // Every SST file (the data's among them, whichever it is); each hard link is broken
        // first, so the live shard's files stay intact.
        for sst in std::fs::read_dir(&at).unwrap().map(|e| e.unwrap().path()).filter(|p| p.extension().is_some_and(|e| e == "sst")) {
            let mut bytes = std::fs::read(&sst).unwrap();
            std::fs::remove_file(&sst).unwrap();
            let end = bytes.len().min(4_000);
            for b in &mut bytes[100..end] {
                *b ^= 0x5a;
            }
            std::fs::write(&sst, &bytes).unwrap();
        }
        let err = read_checkpoint(&at, |_, _| Ok(())).unwrap_err();
        assert!(err.to_string().to_lowercase().contains("corrupt") || err.to_string().contains("checksum"), "{err}");
        assert_eq!(db.raw_entry_count().unwrap(), 5_000, "the live shard is untouched");
        assert!(read_checkpoint(&dir.path().join("nothing"), |_, _| Ok(())).is_err());
    }
}
