//! Replication through the change log (see `changelog` for the log itself): reading this
//! replica's local writes for a follower, and applying a peer's writes here with the peer's
//! position saved in the same batch.
//!
//! A follower asks for the entries after the last position it applied, a [`LogPosition`] of the
//! peer's log (incarnation and sequence number), and saves each new position (in `meta`, under
//! the peer's name) in the same batch as the applied data, so a restarted follower resumes
//! exactly where it stopped. A saved position of another incarnation than the peer's log, or
//! beyond its head, is refused ([`EngineError::Diverged`]): the follower re-bootstraps from a
//! snapshot instead of skipping what the peer's new log holds.
//!
//! (RocksDB's WAL read with `get_updates_since` was the first choice, but it finds a position by
//! reading the WAL file from its start: under load every wake-up of a tail cost O(WAL size).)
use crate::changelog::LogPosition;
use crate::shard::Shard;
use crate::EngineError;
use rocksdb::{ColumnFamily, WriteBatch, DB};

thread_local! {
    /// The entries of the batch being applied, kept for the value cache until it is committed.
    static APPLIED: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Key prefix, in the `meta` column family, of the applied position per peer.
const POSITION_PREFIX: &[u8] = b"pos:";

/// What [`Shard::read_changes`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChangesRead {
    /// Pass this as `after` next time: the last position read.
    pub position: LogPosition,
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
        self.log().head()
    }

    /// True when a tail can still resume after `position` (same incarnation, not beyond the
    /// head, and the log reaches back to it).
    pub fn log_reaches(&self, position: LogPosition) -> bool {
        self.log().reaches(position)
    }

    /// Calls `f(key, stored_value)` for the local writes after `after`, in order, until about
    /// `max_bytes` were passed. Returns [`EngineError::Diverged`] when `after` belongs to another
    /// incarnation of the log or lies beyond its head, and [`EngineError::Trimmed`] when the log
    /// no longer holds the entry right after it: the follower must re-bootstrap.
    pub fn read_changes(&self, after: LogPosition, max_bytes: usize, mut f: impl FnMut(&[u8], &[u8])) -> Result<ChangesRead, EngineError> {
        let log = self.log();
        log.check_resume(after)?;
        let mut read = ChangesRead { position: after, entries: 0 };
        if after.seq >= log.head() {
            return Ok(read);
        }
        let cf = self.log_cf()?;
        let mut it = self.db().raw_iterator_cf(cf);
        it.seek((after.seq + 1).to_be_bytes());
        let mut bytes = 0usize;
        while let (Some(k), Some(v)) = (it.key(), it.value()) {
            let seq = k.try_into().map(u64::from_be_bytes).map_err(|_| EngineError::Corrupt(format!("{}: bad change-log key", self.dir().display())))?;
            if seq != read.position.seq + 1 {
                // A hole means the entries were trimmed while we read.
                return Err(EngineError::Trimmed { after: read.position.seq });
            }
            let (key, stored) = decode_entry(v).ok_or_else(|| EngineError::Corrupt(format!("{}: bad change-log entry {seq}", self.dir().display())))?;
            f(key, stored);
            read.position.seq = seq;
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
    pub fn apply_replicated<'a>(&self, peer: &str, entries: impl IntoIterator<Item = (&'a [u8], &'a [u8])>, position: LogPosition) -> Result<(), EngineError> {
        let mut batch = WriteBatch::default();
        batch.put_cf(self.meta_cf()?, position_key(peer), position.encode());
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

    /// The position in `peer`'s log this replica has applied up to; `None` until it has copied
    /// the peer's data once (a follower without a position must start from a snapshot: the
    /// peer's log holds only the peer's own writes, not what it received from others).
    pub fn peer_position(&self, peer: &str) -> Result<Option<LogPosition>, EngineError> {
        let raw = self.db().get_cf(self.meta_cf()?, position_key(peer))?;
        Ok(raw.and_then(|r| LogPosition::decode(&r)))
    }

    /// Forgets the saved position of `peer` (the follower of it no longer exists): if that
    /// peer is ever followed again, it starts from a snapshot.
    pub fn forget_peer(&self, peer: &str) -> Result<(), EngineError> {
        Ok(self.db().delete_cf_opt(self.meta_cf()?, position_key(peer), self.write_options())?)
    }

    /// Forgets every saved peer position: each peer is copied again from a snapshot.
    pub fn forget_all_peers(&self) -> Result<(), EngineError> {
        forget_all_positions(self.db(), self.meta_cf()?)
    }

    /// The names of every peer this replica holds a saved position for.
    pub fn followed_peers(&self) -> Result<Vec<String>, EngineError> {
        positions_held(self.db(), self.meta_cf()?)
    }
}

/// The names of every peer a shard's `meta` holds a saved position for.
pub(crate) fn positions_held(db: &DB, meta: &ColumnFamily) -> Result<Vec<String>, EngineError> {
    let mut it = db.raw_iterator_cf(meta);
    it.seek(POSITION_PREFIX);
    let mut peers = Vec::new();
    while let Some(k) = it.key() {
        let Some(name) = k.strip_prefix(POSITION_PREFIX) else { break };
        peers.push(String::from_utf8_lossy(name).into_owned());
        it.next();
    }
    it.status()?;
    Ok(peers)
}

/// Deletes every saved peer position of a shard (after an unclean stop, see `Shard::open`).
pub(crate) fn forget_all_positions(db: &DB, meta: &ColumnFamily) -> Result<(), EngineError> {
    let mut end = POSITION_PREFIX.to_vec();
    if let Some(last) = end.last_mut() {
        *last += 1;
    }
    db.delete_range_cf_opt(meta, POSITION_PREFIX, end.as_slice(), &crate::changelog::synced())?;
    Ok(())
}

fn position_key(peer: &str) -> Vec<u8> {
    [POSITION_PREFIX, peer.as_bytes()].concat()
}
