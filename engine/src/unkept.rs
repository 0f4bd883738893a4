//! Keys a replica's layout does not keep that reach it after the compaction that followed its
//! layout change.
//!
//! After a resize is committed, a replica compacts away the keys that moved. A peer replica of
//! the same shard may still send it writes of such keys afterwards: writes the peer took before
//! the commit, which reach a follower that was behind (killed, restarted, partitioned) only
//! once it has compacted. Nothing would compact them away until RocksDB happens to compact
//! their files, so they linger, never served, in the memtable and L0. The follower notes their
//! arrival here, and once none has arrived for a while the store compacts the replica again.
//!
//! The follower drops nothing itself: the layout it would judge by may be older than the
//! peer's (a replica takes a resize's layout a moment after its peers), and a compaction only
//! drops what the layout at that time does not keep, as every compaction does.
use crate::shard::{Shard, COMPACTION_OWED_KEY};
use crate::EngineError;
use std::sync::atomic::Ordering;
use std::time::Duration;

impl Shard {
    /// Records that keys the layout does not keep arrived from a peer. The first arrival since
    /// the last compaction also persists that a compaction is owed, so a restart runs it.
    pub fn note_unkept_keys(&self) -> Result<(), EngineError> {
        let now = now_ms();
        if self.unkept_at_ms().swap(now, Ordering::AcqRel) == 0 {
            self.db().put_cf_opt(self.meta_cf()?, COMPACTION_OWED_KEY, b"", &crate::changelog::synced())?;
        }
        Ok(())
    }

    /// True, once, when keys the layout does not keep have arrived and none has for `quiet`:
    /// the caller then runs [`Shard::compact`]. A key arriving later starts another round.
    pub fn take_unkept_keys_after(&self, quiet: Duration) -> bool {
        let at = self.unkept_at_ms().load(Ordering::Acquire);
        let quiet_ms = u64::try_from(quiet.as_millis()).unwrap_or(u64::MAX);
        at != 0 && now_ms().saturating_sub(at) >= quiet_ms && self.unkept_at_ms().compare_exchange(at, 0, Ordering::AcqRel, Ordering::Acquire).is_ok()
    }
}

fn now_ms() -> u64 {
    (crate::now_ns() / 1_000_000).max(1)
}

#[cfg(test)]
mod tests {
    use crate::{Engine, EngineOptions, LayoutRecord, LogPosition, Shard, ShardMeta};
    use std::path::Path;
    use std::time::Duration;

    type Entries = Vec<(Vec<u8>, Vec<u8>)>;

    /// Replica `replica` of shard 0 of keyspace `u` with `shards` shards, in its own engine.
    fn replica(dir: &Path, shards: u32, replica: u32) -> Shard {
        let meta = ShardMeta { keyspace: "u".into(), shard: 0, shards, replica, replicas: 2, ..Default::default() };
        Engine::new(dir, &EngineOptions::default()).unwrap().create_shard(&meta).unwrap()
    }

    /// 400 writes taken by a peer that still served one shard (keys of both halves of two
    /// shards), as its change log sends them, and the position after them.
    fn writes_of_a_peer_with_one_shard(dir: &Path) -> (Entries, LogPosition) {
        let peer = replica(dir, 1, 0);
        for i in 0..400u32 {
            peer.put(format!("k{i}").as_bytes(), b"v", crate::now_ns(), 0).unwrap();
        }
        let mut entries = Vec::new();
        let from = LogPosition { incarnation: peer.log_mark().incarnation, seq: 0 };
        let read = peer.read_changes(from, usize::MAX, |k, v| entries.push((k.to_vec(), v.to_vec()))).unwrap();
        (entries, read.position)
    }

    fn apply(shard: &Shard, (entries, position): &(Entries, LogPosition)) {
        shard.apply_replicated("peer", entries.iter().map(|(k, v)| (k.as_slice(), v.as_slice())), *position).unwrap();
    }

    #[test]
    fn keys_a_peer_sends_after_the_commit_are_compacted_away_once_they_stop_arriving() {
        let dir = tempfile::tempdir().unwrap();
        let writes = writes_of_a_peer_with_one_shard(&dir.path().join("peer"));
        let here = replica(&dir.path().join("here"), 2, 1);
        here.set_layout(LayoutRecord { serving: 2, committed: 2, committed_at_ms: 1 }).unwrap();
        here.compact().unwrap();
        assert!(!here.compaction_owed().unwrap());
        assert!(!here.take_unkept_keys_after(Duration::ZERO), "nothing arrived yet");
        apply(&here, &writes);
        let unkept = writes.0.iter().filter(|(k, _)| !here.keeps(k)).count();
        assert!(unkept > 100 && unkept < 300, "about half the keys moved: {unkept}");
        here.note_unkept_keys().unwrap();
        assert!(here.compaction_owed().unwrap(), "a restart runs the compaction too");
        assert!(!here.take_unkept_keys_after(Duration::from_secs(3600)), "not quiet for that long yet");
        assert!(here.take_unkept_keys_after(Duration::ZERO));
        assert!(!here.take_unkept_keys_after(Duration::ZERO), "taken once");
        assert_eq!(here.raw_entry_count().unwrap(), writes.0.len() as u64, "still on disk until compacted");
        here.compact().unwrap();
        assert_eq!(here.raw_entry_count().unwrap(), (writes.0.len() - unkept) as u64);
        assert!(!here.compaction_owed().unwrap());
    }

    #[test]
    fn a_snapshot_leaves_out_the_keys_its_layout_does_not_keep() {
        let dir = tempfile::tempdir().unwrap();
        let writes = writes_of_a_peer_with_one_shard(&dir.path().join("peer"));
        let source = replica(&dir.path().join("source"), 2, 1);
        apply(&source, &writes);
        let kept = writes.0.iter().filter(|(k, _)| source.keeps(k)).count();
        assert!(kept < writes.0.len());
        let snap = source.export_snapshot(&dir.path().join("snap"), 1 << 20, &crate::MoveRate::new(0)).unwrap();
        let target = replica(&dir.path().join("target"), 2, 0);
        target.ingest_snapshot("source", &snap.files, snap.position).unwrap();
        assert_eq!(target.raw_entry_count().unwrap(), kept as u64, "only the keys the source keeps travel");
    }
}
