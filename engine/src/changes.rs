//! The change log used by replication: RocksDB's own WAL, read with `get_updates_since`.
//!
//! Local writes are single merges into the data column family. Replicated writes are applied as
//! one batch that also records the sender's position in the `meta` column family, so a batch that
//! touches `meta` is never sent on (no echo). Positions are RocksDB sequence numbers of the
//! sender: a follower asks for the batches after the last one it applied.
use crate::shard::Shard;
use crate::EngineError;
use rocksdb::{WriteBatch, WriteBatchIteratorCf};

/// Key prefix, in the `meta` column family, of the applied position per peer.
const POSITION_PREFIX: &[u8] = b"pos:";

/// What [`Shard::read_changes`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChangesRead {
    /// Pass this as `after` next time: the sequence number of the last batch examined.
    pub position: u64,
    /// Locally-originated entries passed to the callback.
    pub entries: usize,
}

/// Passes on the data-column-family merges of a batch unless the batch is foreign. Replicated
/// batches start with their position put (see [`Shard::apply_replicated`]), so they are
/// recognised before any of their merges is seen.
struct BatchScan<'f, F: FnMut(&[u8], &[u8])> {
    f: &'f mut F,
    foreign: bool,
    entries: usize,
    bytes: usize,
}

impl<F: FnMut(&[u8], &[u8])> WriteBatchIteratorCf for BatchScan<'_, F> {
    fn put_cf(&mut self, _cf_id: u32, _key: &[u8], _value: &[u8]) {
        // User data is only ever merged; a put is metadata or a replication position.
        self.foreign = true;
    }
    fn delete_cf(&mut self, _cf_id: u32, _key: &[u8]) {
        self.foreign = true;
    }
    fn merge_cf(&mut self, cf_id: u32, key: &[u8], value: &[u8]) {
        if cf_id == 0 && !self.foreign {
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
            let mut scan = BatchScan { f: &mut f, foreign: false, entries: 0, bytes: 0 };
            batch.iterate_cf(&mut scan);
            read.entries += scan.entries;
            bytes += scan.bytes;
            read.position = seq;
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

    /// Applies writes replicated from `peer` through the last-writer-wins merge, atomically with
    /// the new position, so a restarted follower resumes exactly after what it applied.
    pub fn apply_replicated<'a>(&self, peer: &str, entries: impl IntoIterator<Item = (&'a [u8], &'a [u8])>, position: u64) -> Result<(), EngineError> {
        let mut batch = WriteBatch::default();
        // The position goes first: it marks the batch as replicated for anyone reading the WAL.
        batch.put_cf(self.meta_cf()?, position_key(peer), position.to_le_bytes());
        for (k, v) in entries {
            batch.merge(k, v);
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
