//! Vasto's storage engine: shard replicas on RocksDB with last-writer-wins values.
//!
//! Every write is a RocksDB merge of a stored value (see [`header`]); the merge operator keeps the
//! value with the greatest event time, so writes apply without read-before-write and every
//! replica converges whatever order writes arrive in. Deletes are tombstones with event times.
//! A compaction filter drops expired values, tombstones older than the grace period, and keys a
//! resize moved to other shards.
//! This crate knows nothing of the network.

mod backup;
mod cache;
mod census;
mod changelog;
mod changes;
pub mod counter;
mod filter;
pub mod header;
mod import;
mod layout;
mod meta;
mod pace;
mod shard;
mod snapshot;
mod unkept;
mod update;

pub use backup::{read_checkpoint, CheckpointSummary};
pub use cache::{CacheStats, ValueCache};
pub use census::ShardCensus;
pub use changelog::LogPosition;
pub use changes::ChangesRead;
pub use import::ImportWriter;
pub use layout::{LayoutRecord, MAX_LAYOUT_SHARDS};
pub use meta::{valid_keyspace_name, ShardMeta};
pub use pace::{MoveRate, Pacer};
pub use shard::{Closing, Shard, ShardStats, Write, WritesHeld};
pub use snapshot::{SnapshotFiles, SplitFiles};
pub use update::{ExpireCondition, ExpiryChange, KeyUpdate, SetCondition, UpdateOp, Updated};

use rocksdb::{BlockBasedOptions, Cache, Options};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use thiserror::Error;

/// Errors from the storage engine.
#[derive(Debug, Error)]
pub enum EngineError {
    /// RocksDB refused an operation (I/O error, full disk, corruption...).
    #[error("rocksdb: {0}")]
    Rocks(#[from] rocksdb::Error),
    /// A file or directory operation failed.
    #[error("i/o on {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    /// On-disk state that cannot be understood.
    #[error("corrupt shard: {0}")]
    Corrupt(String),
    /// The change log no longer holds the entries after this position: the follower must re-bootstrap.
    #[error("the change log no longer reaches back to position {after}")]
    Trimmed { after: u64 },
    /// The position belongs to another incarnation of the change log (the replica was
    /// re-created, or restarted after losing its log's tail) or lies beyond its head: the
    /// follower must re-bootstrap from a snapshot, never skip.
    #[error("position {after} of change-log incarnation {incarnation:x} does not belong to this log")]
    Diverged { incarnation: u64, after: u64 },
    /// The replica is frozen (being retired): it takes no local write.
    #[error("the replica is frozen: it takes no writes while it is retired")]
    Frozen,
    /// A key of the write does not belong to the shard under its serving layout.
    #[error("the key does not belong to this shard")]
    NotOwned,
    /// An ingest was partitioned for another shard count than the replica serves and keeps.
    #[error("the replica serves {serving} shards (committed {committed}), not the {expected} the data was partitioned for")]
    LayoutChanged { serving: u32, committed: u32, expected: u32 },
    /// The replica is being dropped: the export or read was abandoned.
    #[error("the replica is being dropped")]
    Retired,
    /// A read-modify-write does not apply to the stored value (an increment of a value that is
    /// not a number, or one that would overflow); the text is Redis's.
    #[error("{0}")]
    Refused(&'static str),
    /// A keyspace name that cannot be used as a directory name.
    #[error("invalid keyspace name {0:?}: use 1-64 characters from [A-Za-z0-9_.-], not starting with '.'")]
    InvalidKeyspace(String),
}

/// A copy for each of the requests one failure fails (a group commit's writes): the same
/// variant and text; an I/O error is copied as its kind and message.
impl EngineError {
    /// True when the disk refused the operation (full, or an I/O error): the replica cannot
    /// take writes now, though it may still serve reads, so a client should use another.
    pub fn is_disk_failure(&self) -> bool {
        match self {
            EngineError::Rocks(e) => e.kind() == rocksdb::ErrorKind::IOError,
            EngineError::Io { .. } => true,
            _ => false,
        }
    }
}

impl Clone for EngineError {
    fn clone(&self) -> Self {
        match self {
            EngineError::Rocks(e) => EngineError::Rocks(e.clone()),
            EngineError::Io { path, source } => EngineError::Io { path: path.clone(), source: std::io::Error::new(source.kind(), source.to_string()) },
            EngineError::Corrupt(why) => EngineError::Corrupt(why.clone()),
            EngineError::Trimmed { after } => EngineError::Trimmed { after: *after },
            EngineError::Diverged { incarnation, after } => EngineError::Diverged { incarnation: *incarnation, after: *after },
            EngineError::Frozen => EngineError::Frozen,
            EngineError::NotOwned => EngineError::NotOwned,
            EngineError::LayoutChanged { serving, committed, expected } => {
                EngineError::LayoutChanged { serving: *serving, committed: *committed, expected: *expected }
            }
            EngineError::Retired => EngineError::Retired,
            EngineError::Refused(why) => EngineError::Refused(why),
            EngineError::InvalidKeyspace(name) => EngineError::InvalidKeyspace(name.clone()),
        }
    }
}

/// When acknowledged writes reach the disk (the WAL's fsync), and so what a power failure of
/// the machine can lose (a process crash loses nothing in any mode: the WAL is written to the
/// operating system before a write is acknowledged).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SyncMode {
    /// Never synced by the store: a power failure loses what the operating system had not
    /// written back yet (by default up to about 30 s of writes).
    None,
    /// Synced in the background once a second (like Redis's `appendfsync everysec`): a power
    /// failure loses at most about the last second of writes.
    #[default]
    EverySec,
    /// Synced before a write (a group commit) is acknowledged: a power failure loses nothing
    /// acknowledged. Costs an fsync per group commit.
    Always,
}

impl SyncMode {
    /// The mode's name as the `--sync` flag spells it.
    pub fn name(self) -> &'static str {
        match self {
            SyncMode::None => "none",
            SyncMode::EverySec => "everysec",
            SyncMode::Always => "always",
        }
    }

    /// Parses a name written by [`SyncMode::name`].
    pub fn from_name(name: &str) -> Option<Self> {
        [SyncMode::None, SyncMode::EverySec, SyncMode::Always].into_iter().find(|m| m.name() == name)
    }
}

/// Tunables shared by every shard of a store.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// Shared block cache size in bytes.
    pub block_cache_bytes: usize,
    /// Value cache size in bytes (0 = none): the newest value of recently read keys, shared by
    /// every shard, answering gets without a RocksDB lookup (see `cache`).
    pub value_cache_bytes: usize,
    /// Tombstones whose event time is older than this are dropped by compaction. Replicated
    /// writes older than this grace period could resurrect a deleted key, so keep it well above
    /// any replication delay.
    pub tombstone_grace: Duration,
    /// Local writes kept in each shard's change log for replication; a follower further behind
    /// than this re-bootstraps from a snapshot.
    pub change_log_entries: u64,
    /// When writes are synced to disk.
    pub sync: SyncMode,
}

impl Default for EngineOptions {
    fn default() -> Self {
        Self {
            block_cache_bytes: 256 << 20,
            value_cache_bytes: 256 << 20,
            tombstone_grace: Duration::from_secs(24 * 3600),
            change_log_entries: 4_000_000,
            sync: SyncMode::default(),
        }
    }
}

/// Nanoseconds since the Unix epoch by this machine's clock (0 if the clock is before 1970).
pub fn now_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0)
}

/// Uncompressed size of a data block (RocksDB's default), also the block cache's entry estimate.
const DATA_BLOCK_BYTES: usize = 4 << 10;
/// Memtable size of a shard's data (RocksDB's `write_buffer_size`; see [`Engine::new`]).
const DATA_MEMTABLE_BYTES: usize = 8 << 20;

/// The table format of every shard and of the SST files written for them (exports, imports):
/// bloom filters, and a hash index inside data blocks so a point lookup skips the in-block
/// binary search.
pub(crate) fn block_table() -> BlockBasedOptions {
    let mut table = BlockBasedOptions::default();
    table.set_block_size(DATA_BLOCK_BYTES);
    table.set_bloom_filter(10.0, false);
    table.set_data_block_index_type(rocksdb::DataBlockIndexType::BinaryAndHash);
    table.set_data_block_hash_ratio(0.75);
    table
}

/// The options every SST file of a shard is written with, by the shard itself or for it
/// (imports): the table format, LZ4, and the last-writer-wins merge operator.
pub(crate) fn sst_options(table: &BlockBasedOptions) -> Options {
    let mut opts = Options::default();
    opts.set_block_based_table_factory(table);
    opts.set_compression_type(rocksdb::DBCompressionType::Lz4);
    opts.set_merge_operator_associative("vasto-lww", shard::lww_merge);
    opts
}

/// Opens and creates shards under one data directory: `DIR/<keyspace>/<shard>/`.
pub struct Engine {
    root: PathBuf,
    db_opts: Options,
    tuning: ShardTuning,
    cache: Option<Arc<ValueCache>>,
}

/// Per-shard settings derived from [`EngineOptions`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct ShardTuning {
    pub log_retention: u64,
    pub tombstone_grace_ns: u64,
    pub sync: SyncMode,
}

impl Engine {
    /// Prepares `root` (created if missing). No shard is opened yet.
    pub fn new(root: &Path, options: &EngineOptions) -> Result<Self, EngineError> {
        std::fs::create_dir_all(root).map_err(|source| EngineError::Io { path: root.to_path_buf(), source })?;
        // HyperClockCache: lock-free lookups. With an LRU cache, its shard mutexes and hash
        // chains were the largest part of a point read under load (perf). The entry-charge
        // estimate is the data block size, as RocksDB advises.
        let cache = Cache::new_hyper_clock_cache(options.block_cache_bytes, DATA_BLOCK_BYTES);
        let mut table = block_table();
        table.set_block_cache(&cache);
        table.set_cache_index_and_filter_blocks(true);
        table.set_pin_l0_filter_and_index_blocks_in_cache(true);
        let mut db_opts = sst_options(&table);
        db_opts.set_max_background_jobs(2);
        db_opts.set_bytes_per_sync(1 << 20);
        // Small memtables: a put's cost is mostly the skip-list search of its insert, one cache
        // miss per level, and an 8 MB memtable stays in the last-level cache where a 64 MB one
        // (RocksDB's default) does not. Measured on 2 cores, put c64 P16 over 1M keys: faster
        // in each of 8 alternating rounds (+3% to +70%, noisy), gets unchanged (ARCHITECTURE.md).
        db_opts.set_write_buffer_size(DATA_MEMTABLE_BYTES);
        // Re-compact every file at least daily so expired values and old tombstones that have
        // settled in the last level (where nothing else rewrites them) are filtered out too.
        db_opts.set_periodic_compaction_seconds(24 * 3600);
        // Every write is a merge: bound the operands a key collects in the memtable, or reads
        // of a hot key walk and merge all of them (a write past the bound merges them first).
        // The bound costs each write a memtable seek: without it puts ran about 10% faster, but
        // YCSB A on zipfian keys with the value cache off fell to a third.
        db_opts.set_max_successive_merges(2);
        // A bloom filter over the memtable's keys: a get of a key not written recently skips
        // the skip-list search, which perf showed as a quarter of a store's CPU for gets that
        // follow a burst of writes.
        db_opts.set_memtable_whole_key_filtering(true);
        db_opts.set_memtable_prefix_bloom_ratio(0.1);
        let tombstone_grace_ns = options.tombstone_grace.as_nanos().min(u128::from(u64::MAX)) as u64;
        let cache = ValueCache::new(options.value_cache_bytes).map(Arc::new);
        Ok(Self {
            root: root.to_path_buf(),
            db_opts,
            tuning: ShardTuning { log_retention: options.change_log_entries, tombstone_grace_ns, sync: options.sync },
            cache,
        })
    }

    /// The value cache's counters (`None` without a cache).
    pub fn cache_stats(&self) -> Option<CacheStats> {
        self.cache.as_ref().map(|c| c.stats())
    }

    /// The data directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn shard_dir(&self, keyspace: &str, shard: u32) -> PathBuf {
        self.root.join(keyspace).join(shard.to_string())
    }

    /// Opens every shard found under the data directory, and deletes what a crash left behind
    /// (directories of dropped shards, received snapshots and imports, exports). With
    /// `after_unclean_stop` (the store may have lost the tail of its writes in a power failure),
    /// every change log gets a new incarnation and every saved peer position is forgotten, see
    /// [`Shard`]'s `open`.
    pub fn open_all(&self, after_unclean_stop: bool) -> Result<Vec<Shard>, EngineError> {
        let mut shards = Vec::new();
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| EngineError::Io { path, source }
        };
        for ks in std::fs::read_dir(&self.root).map_err(io(&self.root))? {
            let ks = ks.map_err(io(&self.root))?;
            if !ks.file_type().map_err(io(&ks.path()))?.is_dir() || !valid_keyspace_name(&ks.file_name().to_string_lossy()) {
                continue;
            }
            for entry in std::fs::read_dir(ks.path()).map_err(io(&ks.path()))? {
                let entry = entry.map_err(io(&ks.path()))?;
                let name = entry.file_name().to_string_lossy().into_owned();
                if name.parse::<u32>().is_ok() && entry.path().join(CREATING_MARKER).exists() {
                    // A crash in the middle of creating this replica: it never served (the
                    // create is acknowledged only after the marker is gone), so nothing is lost.
                    tracing::warn!(path = %entry.path().display(), "removing a replica whose creation a crash interrupted");
                    std::fs::remove_dir_all(entry.path()).map_err(io(&entry.path()))?;
                } else if name.parse::<u32>().is_ok() && entry.path().join("CURRENT").exists() {
                    shards.push(Shard::open(&entry.path(), &self.db_opts, None, self.tuning, self.cache.clone(), after_unclean_stop)?);
                } else if is_leftover(&name) {
                    if let Err(e) = std::fs::remove_dir_all(entry.path()) {
                        tracing::warn!(path = %entry.path().display(), error = %e, "could not remove a leftover directory");
                    }
                }
            }
        }
        Ok(shards)
    }

    /// Creates the shard replica described by `meta`, or opens it if it already exists with the
    /// same keyspace incarnation (its metadata is then updated to `meta`, keeping its creation
    /// time); a directory holding another keyspace's replica is refused. Idempotent.
    pub fn create_shard(&self, meta: &ShardMeta) -> Result<Shard, EngineError> {
        if !valid_keyspace_name(&meta.keyspace) {
            return Err(EngineError::InvalidKeyspace(meta.keyspace.clone()));
        }
        let dir = self.shard_dir(&meta.keyspace, meta.shard);
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| EngineError::Io { path, source }
        };
        // A new replica is marked until its metadata is durable, so that a crash in between
        // leaves a directory the next start recognises and removes instead of refusing to start.
        let marker = dir.join(CREATING_MARKER);
        let fresh = !dir.exists();
        if fresh {
            std::fs::create_dir_all(&dir).map_err(io(&dir))?;
            std::fs::File::create(&marker).and_then(|f| f.sync_all()).map_err(io(&marker))?;
            sync_dir(dir.parent().unwrap_or(&dir)).map_err(io(&dir))?;
        }
        let shard = match Shard::open(&dir, &self.db_opts, Some(meta), self.tuning, self.cache.clone(), false) {
            Ok(shard) => shard,
            Err(e) => {
                // A replica this call began holds nothing yet: leave no half-made directory.
                if fresh {
                    let _ = std::fs::remove_dir_all(&dir);
                }
                return Err(e);
            }
        };
        if fresh || marker.exists() {
            std::fs::remove_file(&marker).map_err(io(&marker))?;
            sync_dir(&dir).map_err(io(&dir))?;
        }
        Ok(shard)
    }
}

/// Present in a replica's directory while the replica is being created (see
/// [`Engine::create_shard`]).
const CREATING_MARKER: &str = "VASTO-CREATING";

/// Makes the entries of `dir` (files created or removed in it) durable.
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// True for the names of directories a store makes next to a shard's and deletes when done
/// (`<shard>.<kind>-<digits>`): left behind only by a crash.
fn is_leftover(name: &str) -> bool {
    let Some((shard, rest)) = name.split_once('.') else { return false };
    let Some((kind, stamp)) = rest.rsplit_once('-') else { return false };
    let kinds = [shard::DROPPED_SUFFIX, "snapshot-in", "snapshot-out", "ingest", "split"];
    shard.parse::<u32>().is_ok() && stamp.parse::<u64>().is_ok() && (kinds.contains(&kind) || kind.starts_with("split-"))
}

#[cfg(test)]
mod cache_tests;
#[cfg(test)]
mod counter_shard_tests;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod update_many_tests;
