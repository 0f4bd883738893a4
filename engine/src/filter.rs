//! The compaction filter of the user data: drops expired values, tombstones older than the grace
//! period, and keys that no longer belong to the shard (after a resize changed its layout).
use crate::header::Header;
use crate::layout::Layout;
use crate::now_ns;
use rocksdb::compaction_filter::Decision;
use rocksdb::Options;
use std::sync::Arc;

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
