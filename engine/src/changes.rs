//! The change log used by replication: RocksDB's own WAL, read with `get_updates_since`.
//!
//! Every user write is a merge into the data column family. Values applied from a peer carry the
//! "replicated" header bit, so they are never sent on (no echo); the bit is set per value because
//! RocksDB's group commit may put a local and a replicated write in one WAL record. A replicated
//! batch also records the sender's position in the `meta` column family. Positions are RocksDB
//! sequence numbers of the sender: a follower asks for everything after the last one it applied.
use crate::header::{is_replicated, mark_replicated};
use crate::shard::Shard;
use crate::EngineError;
use rocksdb::{WriteBatch, WriteBatchIteratorCf};

/// Key prefix, in the `meta` column family, of the applied position per peer.
const POSITION_PREFIX: &[u8] = b"pos:";

/// What [`Shard::read_changes`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChangesRead {
    /// Pass this as `after` next time: the last sequence number examined.
    pub position: u64,
    /// Locally-originated entries passed to the callback.
    pub entries: usize,
}

/// Passes on the locally-originated merges into the data column family (id 0) of a batch.
struct BatchScan<'f, F: FnMut(&[u8], &[u8])> {
    f: &'f mut F,
    entries: usize,
    bytes: usize,
}

impl<F: FnMut(&[u8], &[u8])> WriteBatchIteratorCf for BatchScan<'_, F> {
    fn put_cf(&mut self, _cf_id: u32, _key: &[u8], _value: &[u8]) {
        // User data is only ever merged; puts are metadata and replication positions.
    }
    fn delete_cf(&mut self, _cf_id: u32, _key: &[u8]) {}
    fn merge_cf(&mut self, cf_id: u32, key: &[u8], value: &[u8]) {
        if cf_id == 0 && !is_replicated(value) {
            self.entries += 1;
            self.bytes += key.len() + value.len();
            (self.f)(key, value);
        }
    }
}

impl Shard {
    /// The latest sequence number written to this shard (local or replicated).
    pub fn head_position(&self) -> u64 {
        self.db().latest_sequence_number()
    }

    /// Calls `f(key, stored_value)` for every locally-originated write in batches after position
    /// `after`, in order, until about `max_bytes` were passed. Returns [`EngineError::Trimmed`]
    /// if the WAL no longer reaches back to `after` (the caller must re-bootstrap).
    pub fn read_changes(&self, after: u64, max_bytes: usize, mut f: impl FnMut(&[u8], &[u8])) -> Result<ChangesRead, EngineError> {
        let head = self.head_position();
        if after >= head {
            return Ok(ChangesRead { position: after, entries: 0 });
        }
        let iter = self.db().get_updates_since(after).map_err(|_| EngineError::Trimmed { after })?;
        let mut read = ChangesRead { position: after, entries: 0 };
        let mut bytes = 0usize;
        let mut first = true;
        for item in iter {
            let (seq, batch) = item?;
            if first && seq > after + 1 && self.earliest_logged()? > after + 1 {
                return Err(EngineError::Trimmed { after });
            }
            first = false;
            let mut scan = BatchScan { f: &mut f, entries: 0, bytes: 0 };
            batch.iterate_cf(&mut scan);
            read.entries += scan.entries;
            bytes += scan.bytes;
            // A batch of n operations holds sequence numbers seq..seq+n-1.
            read.position = seq + (batch.len() as u64).max(1) - 1;
            if bytes >= max_bytes {
                break;
            }
        }
        Ok(read)
    }

    /// The sequence number of the oldest batch still in the WAL.
    fn earliest_logged(&self) -> Result<u64, EngineError> {
        let mut iter = self.db().get_updates_since(0)?;
        Ok(iter.next().transpose()?.map(|(seq, _)| seq).unwrap_or(u64::MAX))
    }

    /// Applies writes replicated from `peer` through the last-writer-wins merge (each value
    /// marked as replicated), atomically with the new position, so a restarted follower resumes
    /// exactly after what it applied.
    pub fn apply_replicated<'a>(&self, peer: &str, entries: impl IntoIterator<Item = (&'a [u8], &'a [u8])>, position: u64) -> Result<(), EngineError> {
        let mut batch = WriteBatch::default();
        batch.put_cf(self.meta_cf()?, position_key(peer), position.to_le_bytes());
        let mut marked = Vec::new();
        for (k, v) in entries {
            mark_replicated(v, &mut marked);
            batch.merge(k, &marked);
        }
        self.db().write_opt(batch, self.write_options())?;
        Ok(())
    }

    /// The position of `peer` this replica has applied up to (0 if never).
    pub fn peer_position(&self, peer: &str) -> Result<u64, EngineError> {
        let raw = self.db().get_cf(self.meta_cf()?, position_key(peer))?;
        Ok(raw.and_then(|r| r.as_slice().try_into().ok()).map(u64::from_le_bytes).unwrap_or(0))
    }
}

fn position_key(peer: &str) -> Vec<u8> {
    [POSITION_PREFIX, peer.as_bytes()].concat()
}
