//! What one replica's RocksDB and change log hold and are doing, read when metrics are scraped.
use super::{Shard, LOG_CF, META_CF};

/// One replica's storage now. RocksDB properties that cannot be read count as 0.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ShardStats {
    /// Bytes of live SST files, all column families.
    pub sst_bytes: u64,
    /// Bytes of memtables (active, immutable and pinned), all column families.
    pub memtable_bytes: u64,
    /// RocksDB's estimate of the bytes compaction must rewrite to settle every level.
    pub pending_compaction_bytes: u64,
    /// Compactions running now.
    pub running_compactions: u64,
    /// Writes are stopped (too many memtables, L0 files or pending bytes).
    pub write_stopped: bool,
    /// Writes are being slowed to this rate, in bytes per second (0: not slowed).
    pub delayed_write_rate: u64,
    /// Entries the change log holds for followers to catch up from.
    pub change_log_entries: u64,
    /// RocksDB's estimate of the keys of the data.
    pub estimated_keys: u64,
}

impl Shard {
    /// Reads the replica's RocksDB properties and change-log extent.
    pub fn stats(&self) -> ShardStats {
        let db_wide = |name: &str| self.db.property_int_value(name).ok().flatten().unwrap_or(0);
        // The data is in the default column family, which the DB-wide form reads.
        let others = [self.db.cf_handle(META_CF), self.db.cf_handle(LOG_CF)];
        let per_cf =
            |name: &str| db_wide(name) + others.iter().flatten().map(|cf| self.db.property_int_value_cf(cf, name).ok().flatten().unwrap_or(0)).sum::<u64>();
        ShardStats {
            sst_bytes: per_cf("rocksdb.total-sst-files-size"),
            memtable_bytes: per_cf("rocksdb.cur-size-all-mem-tables"),
            pending_compaction_bytes: per_cf("rocksdb.estimate-pending-compaction-bytes"),
            running_compactions: db_wide("rocksdb.num-running-compactions"),
            write_stopped: db_wide("rocksdb.is-write-stopped") != 0,
            delayed_write_rate: db_wide("rocksdb.actual-delayed-write-rate"),
            change_log_entries: self.log.head().saturating_sub(self.log.first().saturating_sub(1)),
            estimated_keys: self.estimated_keys(),
        }
    }
}
