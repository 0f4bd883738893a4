//! Which keys a shard replica serves and keeps: the in-memory [`Layout`] every request and
//! compaction checks, and its persisted form [`LayoutRecord`] in the `meta` column family.
use crate::{EngineError, ShardMeta};
use rocksdb::DB;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

/// Key, in `meta`, of the layout: serving and committed shard counts.
pub(crate) const LAYOUT_KEY: &[u8] = b"layout";

/// Largest shard count a layout can hold (three counts are packed in one atomic word).
pub const MAX_LAYOUT_SHARDS: u32 = (1 << 21) - 1;

/// Which keys a shard serves and keeps, packed in one atomic so it can change while requests
/// and compactions run: `shard` (fixed), `serving` (requests are checked against
/// `shard_of(key, serving) == shard`) and `committed` (the shard count clients route by, as this
/// replica last learnt it). During a resize the serving count changes first; compaction keeps a
/// key owned under either count, so a resize can be rolled back until it is committed.
#[derive(Debug)]
pub(crate) struct Layout(AtomicU64);

impl Layout {
    pub fn new(shard: u32, serving: u32, committed: u32) -> Self {
        Self(AtomicU64::new(pack(shard, serving, committed)))
    }

    pub fn set(&self, shard: u32, serving: u32, committed: u32) {
        self.0.store(pack(shard, serving, committed), Ordering::Release);
    }

    /// `(shard, serving, committed)`.
    pub fn get(&self) -> (u32, u32, u32) {
        let v = self.0.load(Ordering::Acquire);
        ((v >> 42) as u32 & MAX_LAYOUT_SHARDS, (v >> 21) as u32 & MAX_LAYOUT_SHARDS, v as u32 & MAX_LAYOUT_SHARDS)
    }

    /// True when `key` belongs to the shard under the serving count.
    #[inline]
    pub fn owns(&self, key: &[u8]) -> bool {
        let (shard, serving, _) = self.get();
        vasto_hash::shard_of(key, serving) == shard
    }

    /// True when compaction must keep `key`: owned under the serving or the committed count.
    pub fn keeps(&self, key: &[u8]) -> bool {
        let (shard, serving, committed) = self.get();
        vasto_hash::shard_of(key, serving) == shard || (shard < committed && vasto_hash::shard_of(key, committed) == shard)
    }
}

/// Packs three counts of at most [`MAX_LAYOUT_SHARDS`] (callers check) into 63 bits.
fn pack(shard: u32, serving: u32, committed: u32) -> u64 {
    let m = u64::from(MAX_LAYOUT_SHARDS);
    ((u64::from(shard) & m) << 42) | ((u64::from(serving) & m) << 21) | (u64::from(committed) & m)
}

/// The persisted layout of a shard replica (see [`Shard::set_layout`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LayoutRecord {
    /// Shard count requests are checked against.
    pub serving: u32,
    /// Shard count clients route by, as this replica last learnt it.
    pub committed: u32,
    /// When that count was put in force (ms since the Unix epoch, set by the master): after a
    /// master restart, the newest report tells which count is in force.
    pub committed_at_ms: u64,
}

impl LayoutRecord {
    /// Encodes as serving, committed (u32 LE) and committed_at_ms (u64 LE).
    pub(crate) fn encode(&self) -> [u8; 16] {
        let mut raw = [0u8; 16];
        raw[0..4].copy_from_slice(&self.serving.to_le_bytes());
        raw[4..8].copy_from_slice(&self.committed.to_le_bytes());
        raw[8..16].copy_from_slice(&self.committed_at_ms.to_le_bytes());
        raw
    }

    /// Decodes what [`LayoutRecord::encode`] wrote, or the 8-byte `(shard, shards)` record of
    /// earlier versions (read as serving and committed `shards`); `None` for anything else or
    /// invalid counts.
    pub(crate) fn decode(raw: &[u8]) -> Option<Self> {
        if raw.len() == 8 {
            let shards = u32::from_le_bytes(raw.get(4..8)?.try_into().ok()?);
            let record = Self { serving: shards, committed: shards, committed_at_ms: 0 };
            return record.valid().then_some(record);
        }
        let serving = u32::from_le_bytes(raw.get(0..4)?.try_into().ok()?);
        let committed = u32::from_le_bytes(raw.get(4..8)?.try_into().ok()?);
        let committed_at_ms = u64::from_le_bytes(raw.get(8..16)?.try_into().ok()?);
        let record = Self { serving, committed, committed_at_ms };
        record.valid().then_some(record)
    }

    /// Reads the record of the shard `meta` describes from its `meta` column family; a shard
    /// never given a layout keeps the one it was created with.
    pub(crate) fn read(db: &DB, meta_cf: &rocksdb::ColumnFamily, meta: &ShardMeta, dir: &Path) -> Result<Self, EngineError> {
        match db.get_cf(meta_cf, LAYOUT_KEY)? {
            Some(raw) => Self::decode(&raw).ok_or_else(|| EngineError::Corrupt(format!("{}: unreadable layout", dir.display()))),
            None => Ok(Self { serving: meta.shards, committed: meta.shards, committed_at_ms: 0 }),
        }
    }

    pub(crate) fn valid(&self) -> bool {
        (1..=MAX_LAYOUT_SHARDS).contains(&self.serving) && (1..=MAX_LAYOUT_SHARDS).contains(&self.committed)
    }
}
