//! The compaction filter of the user data: drops expired values, tombstones older than the grace
//! period, and keys that no longer belong to the shard (after a resize changed its layout).
use crate::header::Header;
use crate::now_ns;
use rocksdb::compaction_filter::Decision;
use rocksdb::Options;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Which keys a shard owns: `shard_of(key, shards) == shard`, packed in one atomic so the layout
/// can change while compactions run.
#[derive(Debug)]
pub(crate) struct Layout(AtomicU64);

impl Layout {
    pub fn new(shard: u32, shards: u32) -> Self {
        Self(AtomicU64::new(pack(shard, shards)))
    }

    pub fn set(&self, shard: u32, shards: u32) {
        self.0.store(pack(shard, shards), Ordering::Release);
    }

    pub fn get(&self) -> (u32, u32) {
        let v = self.0.load(Ordering::Acquire);
        ((v >> 32) as u32, v as u32)
    }

    /// True when `key` belongs to the shard under the current layout.
    #[inline]
    pub fn owns(&self, key: &[u8]) -> bool {
        let (shard, shards) = self.get();
        vasto_hash::shard_of(key, shards) == shard
    }
}

fn pack(shard: u32, shards: u32) -> u64 {
    (u64::from(shard) << 32) | u64::from(shards)
}

/// Installs the filter on the options of a shard's user-data column family.
pub(crate) fn install(opts: &mut Options, tombstone_grace_ns: u64, layout: Arc<Layout>) {
    opts.set_compaction_filter("vasto-expiry-ownership", move |_level: u32, key: &[u8], value: &[u8]| {
        if !layout.owns(key) {
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
