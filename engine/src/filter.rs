//! The compaction filter of the user data: drops expired values, tombstones older than the grace
//! period, and keys that no longer belong to the shard (after a resize changed its layout).
use crate::header::Header;
use crate::now_ns;
use rocksdb::compaction_filter::Decision;
use rocksdb::Options;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

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

/// Installs the filter on the options of a shard's user-data column family.
pub(crate) fn install(opts: &mut Options, tombstone_grace_ns: u64, layout: Arc<Layout>) {
    opts.set_compaction_filter("vasto-expiry-ownership", move |_level: u32, key: &[u8], value: &[u8]| {
        if !layout.keeps(key) {
            return Decision::Remove;
        }
        match Header::split(value) {
            Some((h, _)) => {
                let now = now_ns();
                if h.expired(now) || (h.tombstone && h.event_time_ns.saturating_add(tombstone_grace_ns) < now) {
                    Decision::Remove
                } else {
                    Decision::Keep
                }
            }
            None => Decision::Keep,
        }
    });
}
