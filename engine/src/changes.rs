//! The change log used by replication: a `log` column family of this replica's local writes,
//! keyed by a per-shard sequence number (u64 big-endian), written in the same batch as the data.
//!
//! Only local writes are logged; writes applied from a peer are not, so nothing is echoed back.
//! A follower asks for the entries after the last sequence number it applied and saves that
//! number (in `meta`) in the same batch as the applied data. The log keeps the newest
//! `change_log_entries` entries; a follower further behind gets [`EngineError::Trimmed`].
//!
//! (RocksDB's WAL read with `get_updates_since` was the first choice, but it finds a position by
//! reading the WAL file from its start: under load every wake-up of a tail cost O(WAL size).)
use crate::shard::Shard;
use crate::EngineError;
use rocksdb::WriteBatch;
use std::sync::atomic::Ordering;

thread_local! {
    /// The entries of the batch being applied, kept for the value cache until it is committed.
    static APPLIED: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Key prefix, in the `meta` column family, of the applied position per peer.
const POSITION_PREFIX: &[u8] = b"pos:";

/// What [`Shard::read_changes`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChangesRead {
    /// Pass this as `after` next time: the last sequence number read.
    pub position: u64,
    /// Entries passed to the callback.
    pub entries: usize,
}

/// A log entry: u32 LE key length, key, stored value.
pub(crate) fn encode_entry(out: &mut Vec<u8>, key: &[u8], stored: &[u8]) {
    out.clear();
    append_entry(out, key, stored);
}

/// Appends a log entry (see [`encode_entry`]) to `out`.
pub(crate) fn append_entry(out: &mut Vec<u8>, key: &[u8], stored: &[u8]) {
    out.extend_from_slice(&(key.len() as u32).to_le_bytes());
    out.extend_from_slice(key);
    out.extend_from_slice(stored);
}

pub(crate) fn decode_entry(raw: &[u8]) -> Option<(&[u8], &[u8])> {
    let (len, rest) = raw.split_at_checked(4)?;
    let len = u32::from_le_bytes(len.try_into().ok()?) as usize;
    rest.split_at_checked(len)
}

impl Shard {
    /// The sequence number of the newest local write (0 before the first).
    pub fn head_position(&self) -> u64 {
        self.log_head().load(Ordering::Acquire)
    }

    /// True when a tail can still resume after `position` (the log reaches back to it).
    pub fn log_reaches(&self, position: u64) -> bool {
        position >= self.head_position() || position + 1 >= self.log_first()
    }

    /// Calls `f(key, stored_value)` for the local writes after sequence number `after`, in order,
    /// until about `max_bytes` were passed. Returns [`EngineError::Trimmed`] when the log no
    /// longer holds the entry right after `after` (the follower must re-bootstrap).
    pub fn read_changes(&self, after: u64, max_bytes: usize, mut f: impl FnMut(&[u8], &[u8])) -> Result<ChangesRead, EngineError> {
        let mut read = ChangesRead { position: after, entries: 0 };
        if after >= self.head_position() {
            return Ok(read);
        }
        if !self.log_reaches(after) {
            return Err(EngineError::Trimmed { after });
        }
        let cf = self.log_cf()?;
        let mut it = self.db().raw_iterator_cf(cf);
        it.seek((after + 1).to_be_bytes());
        let mut bytes = 0usize;
        while let (Some(k), Some(v)) = (it.key(), it.value()) {
            let seq = k.try_into().map(u64::from_be_bytes).map_err(|_| EngineError::Corrupt(format!("{}: bad change-log key", self.dir().display())))?;
            if seq != read.position + 1 {
                // A hole means the entries were trimmed while we read.
                return Err(EngineError::Trimmed { after: read.position });
            }
            let (key, stored) = decode_entry(v).ok_or_else(|| EngineError::Corrupt(format!("{}: bad change-log entry {seq}", self.dir().display())))?;
            f(key, stored);
            read.position = seq;
            read.entries += 1;
            bytes += v.len();
            if bytes >= max_bytes {
                break;
            }
            it.next();
        }
        it.status()?;
        Ok(read)
    }

    /// Applies writes replicated from `peer` through the last-writer-wins merge (not logged, so
    /// never sent on), atomically with the new position, so a restarted follower resumes exactly
    /// after what it applied.
    pub fn apply_replicated<'a>(&self, peer: &str, entries: impl IntoIterator<Item = (&'a [u8], &'a [u8])>, position: u64) -> Result<(), EngineError> {
        let mut batch = WriteBatch::default();
        batch.put_cf(self.meta_cf()?, position_key(peer), position.to_le_bytes());
        APPLIED.with(|written| {
            let written = &mut *written.borrow_mut();
            written.clear();
            for (k, v) in entries {
                batch.merge(k, v);
                self.keep_written(written, k, v);
            }
            self.db().write_opt(batch, self.write_options())?;
            self.note_written(written);
            crate::shard::reset_scratch(written);
            Ok(())
        })
    }

    /// The position of `peer` this replica has applied up to; `None` until it has copied the
    /// peer's data once (a follower without a position must start from a snapshot: the peer's
    /// log holds only the peer's own writes, not what it received from others).
    pub fn peer_position(&self, peer: &str) -> Result<Option<u64>, EngineError> {
        let raw = self.db().get_cf(self.meta_cf()?, position_key(peer))?;
        Ok(raw.and_then(|r| r.as_slice().try_into().ok()).map(u64::from_le_bytes))
    }
}

fn position_key(peer: &str) -> Vec<u8> {
    [POSITION_PREFIX, peer.as_bytes()].concat()
}
