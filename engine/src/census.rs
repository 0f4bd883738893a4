//! Counting what a shard directory physically holds, without disturbing the store that has it
//! open: operators and tests check that a resize left every key only on its owning shard.
use crate::layout::LayoutRecord;
use crate::shard::{LOG_CF, META_CF};
use crate::{Engine, EngineError, ShardMeta};
use rocksdb::{ColumnFamilyDescriptor, Options, DB};
use std::path::Path;

/// What one shard directory holds, read from a read-only view of its files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardCensus {
    /// The replica's identity.
    pub meta: ShardMeta,
    /// Its layout.
    pub layout: LayoutRecord,
    /// Raw entries in the user data (tombstones and expired values included).
    pub entries: u64,
    /// Entries whose key does not hash to this shard under the committed shard count: keys a
    /// resize moved away that compaction has not dropped yet.
    pub not_owned: u64,
    /// The peers this replica holds a saved replication position for (store ids, `store#shard`
    /// for resize copies).
    pub followed: Vec<String>,
}

impl Engine {
    /// Counts the entries of the shard replica in `dir` through a read-only open (allowed while
    /// a store has the shard open; it sees the files as of this call).
    pub fn census(&self, dir: &Path) -> Result<ShardCensus, EngineError> {
        let ReadOnlyShard { db, meta, layout } = ReadOnlyShard::open(dir, &Options::default(), &self.db_opts)?;
        let mut it = db.raw_iterator();
        it.seek_to_first();
        let (mut entries, mut not_owned) = (0, 0);
        while let Some(key) = it.key() {
            entries += 1;
            not_owned += u64::from(vasto_hash::shard_of(key, layout.committed) != meta.shard);
            it.next();
        }
        it.status()?;
        drop(it);
        let cf = db.cf_handle(META_CF).ok_or_else(|| EngineError::Corrupt(format!("{}: no meta column family", dir.display())))?;
        let followed = crate::changes::positions_held(&db, cf)?;
        Ok(ShardCensus { meta, layout, entries, not_owned, followed })
    }
}

/// A shard replica's directory opened read-only (a live store's, or a backup's checkpoint),
/// with the identity and layout it records.
pub(crate) struct ReadOnlyShard {
    pub db: DB,
    pub meta: ShardMeta,
    pub layout: LayoutRecord,
}

impl ReadOnlyShard {
    /// Opens `dir` read-only with `db_opts`, the user data with `data_opts` (which must carry
    /// the last-writer-wins merge operator), the metadata and change log as a shard opens them.
    pub fn open(dir: &Path, db_opts: &Options, data_opts: &Options) -> Result<Self, EngineError> {
        let cfs = [
            ColumnFamilyDescriptor::new(rocksdb::DEFAULT_COLUMN_FAMILY_NAME, data_opts.clone()),
            ColumnFamilyDescriptor::new(META_CF, Options::default()),
            ColumnFamilyDescriptor::new(LOG_CF, Options::default()),
        ];
        let db = DB::open_cf_descriptors_read_only(db_opts, dir, cfs, false)?;
        let corrupt = |what: &str| EngineError::Corrupt(format!("{}: {what}", dir.display()));
        let cf = db.cf_handle(META_CF).ok_or_else(|| corrupt("no meta column family"))?;
        let meta = ShardMeta::read(&db, cf, dir)?.ok_or_else(|| corrupt("no shard metadata"))?;
        let layout = LayoutRecord::read(&db, cf, &meta, dir)?;
        Ok(Self { db, meta, layout })
    }
}
