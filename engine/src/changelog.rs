//! A shard replica's change log: its local writes in order, for replication. One type owns every
//! ordering rule of the log, so they hold in one place:
//!
//! * **Order.** Appends run under one lock, so sequence numbers follow commit order; a write and
//!   its log entry are one RocksDB batch.
//! * **Identity.** The log has an *incarnation*, a random id kept in `meta`. A position means
//!   something only together with its incarnation: a re-created replica starts a new log, and so
//!   does a replica restarted after an unclean stop that may have lost its log's tail (its head
//!   may have gone back, and the sequence numbers after it would be reused for other writes). A
//!   reader whose position belongs to another incarnation, or lies beyond the head, gets
//!   [`EngineError::Diverged`] and must re-bootstrap from a snapshot; it never skips.
//! * **Freeze.** A frozen log takes no local write. [`ChangeLog::freeze`] and every layout change
//!   run under the append lock and return the head at that instant: no local write accepted
//!   before it is later than that head, none after it is accepted (freeze) or owned by the old
//!   layout (layout change). Frozen is persisted, so a restarted store stays frozen.
//! * **Retention.** The newest `retention` entries are kept; older ones are range-deleted (in
//!   steps of an eighth, so trimming is rare) and a reader behind them gets
//!   [`EngineError::Trimmed`].
//!
//! Writes applied from a peer are not logged here (so nothing is echoed back).
use crate::EngineError;
use rocksdb::{ColumnFamily, WriteBatch, WriteOptions, DB};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

/// Key, in `meta`, of the log's incarnation (u64 LE).
const INCARNATION_KEY: &[u8] = b"log-incarnation";
/// Key, in `meta`, of the frozen flag (one byte, 1 = frozen; absent = not frozen).
const FROZEN_KEY: &[u8] = b"frozen";

/// A point in a change log: a sequence number of one incarnation of the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct LogPosition {
    /// The incarnation of the log the sequence number belongs to (0: none, never matches).
    pub incarnation: u64,
    /// The sequence number: every entry up to it is included.
    pub seq: u64,
}

impl LogPosition {
    /// Encodes as incarnation and sequence number, both u64 LE (16 bytes).
    pub fn encode(&self) -> [u8; 16] {
        let mut raw = [0u8; 16];
        raw[..8].copy_from_slice(&self.incarnation.to_le_bytes());
        raw[8..].copy_from_slice(&self.seq.to_le_bytes());
        raw
    }

    /// Decodes what [`LogPosition::encode`] wrote, or the 8-byte bare sequence number of earlier
    /// versions (incarnation 0, which matches no log: its reader re-bootstraps); `None` otherwise.
    pub fn decode(raw: &[u8]) -> Option<Self> {
        match raw.len() {
            8 => Some(Self { incarnation: 0, seq: u64::from_le_bytes(raw.try_into().ok()?) }),
            16 => Some(Self { incarnation: u64::from_le_bytes(raw[..8].try_into().ok()?), seq: u64::from_le_bytes(raw[8..].try_into().ok()?) }),
            _ => None,
        }
    }
}

/// The change log of one shard replica (see the module docs).
pub(crate) struct ChangeLog {
    /// Held while appending, freezing or changing the layout.
    lock: Mutex<()>,
    head: AtomicU64,
    first: AtomicU64,
    retention: u64,
    incarnation: u64,
    frozen: AtomicBool,
}

/// The right to append: held under the log lock, so positions follow commit order.
pub(crate) struct Appending<'a> {
    log: &'a ChangeLog,
    _serial: MutexGuard<'a, ()>,
}

impl Appending<'_> {
    /// The position the first entry of this append gets.
    pub fn next_seq(&self) -> u64 {
        self.log.head.load(Ordering::Acquire) + 1
    }

    /// Writes `batch` (data and log entries up to `last_seq`) and publishes the new head; may
    /// be called again for the next batch while the right is held.
    pub fn commit(&self, db: &DB, opts: &WriteOptions, batch: WriteBatch, last_seq: u64) -> Result<(), EngineError> {
        db.write_opt(batch, opts)?;
        self.log.head.store(last_seq, Ordering::Release);
        Ok(())
    }
}

impl ChangeLog {
    /// Opens the log kept in `log` with its identity in `meta`. A log without an incarnation
    /// (a new replica, or one from before incarnations), or one opened with `renew` (the store
    /// stopped uncleanly and may have lost the log's tail), gets a new incarnation, persisted
    /// and synced before anything is read from it.
    pub fn open(db: &DB, meta: &ColumnFamily, log: &ColumnFamily, dir: &Path, retention: u64, renew: bool) -> Result<Self, EngineError> {
        let mut it = db.raw_iterator_cf(log);
        let seq = |k: Option<&[u8]>| k.and_then(|k| k.try_into().ok()).map(u64::from_be_bytes);
        it.seek_to_last();
        let head = seq(it.key()).unwrap_or(0);
        it.seek_to_first();
        let first = seq(it.key()).unwrap_or(head + 1);
        it.status()?;
        drop(it);
        let stored = match db.get_cf(meta, INCARNATION_KEY)? {
            Some(raw) => Some(
                raw.as_slice()
                    .try_into()
                    .map(u64::from_le_bytes)
                    .map_err(|_| EngineError::Corrupt(format!("{}: unreadable change-log incarnation", dir.display())))?,
            ),
            None => None,
        };
        let incarnation = match stored {
            Some(id) if id != 0 && !renew => id,
            _ => {
                let id = vasto_hash::random_id();
                db.put_cf_opt(meta, INCARNATION_KEY, id.to_le_bytes(), &synced())?;
                id
            }
        };
        let frozen = db.get_cf(meta, FROZEN_KEY)?.is_some_and(|v| v.first() == Some(&1));
        Ok(Self {
            lock: Mutex::new(()),
            head: AtomicU64::new(head),
            first: AtomicU64::new(first),
            retention: retention.max(1),
            incarnation,
            frozen: AtomicBool::new(frozen),
        })
    }

    /// The incarnation and the newest position.
    pub fn mark(&self) -> LogPosition {
        LogPosition { incarnation: self.incarnation, seq: self.head() }
    }

    /// The sequence number of the newest entry (0 before the first).
    pub fn head(&self) -> u64 {
        self.head.load(Ordering::Acquire)
    }

    /// The first sequence number still held.
    pub fn first(&self) -> u64 {
        self.first.load(Ordering::Acquire)
    }

    /// True while local writes are refused.
    #[inline]
    pub fn frozen(&self) -> bool {
        self.frozen.load(Ordering::Acquire)
    }

    /// Takes the append lock whatever the frozen state: no local write can happen while the
    /// guard lives (a clean stop holds it until the process exits).
    pub fn hold(&self) -> MutexGuard<'_, ()> {
        self.serial()
    }

    fn serial(&self) -> MutexGuard<'_, ()> {
        self.lock.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes the append lock; refused with [`EngineError::Frozen`] while the log is frozen.
    pub fn begin_append(&self) -> Result<Appending<'_>, EngineError> {
        let serial = self.serial();
        if self.frozen() {
            return Err(EngineError::Frozen);
        }
        Ok(Appending { log: self, _serial: serial })
    }

    /// Runs `change` with no append in progress, and returns the position reached at that
    /// instant: every local write accepted before is at or below it, every later one above it
    /// (and checked against whatever `change` changed).
    pub fn quiesced(&self, change: impl FnOnce() -> Result<(), EngineError>) -> Result<LogPosition, EngineError> {
        let _serial = self.serial();
        change()?;
        Ok(self.mark())
    }

    /// Starts (`true`) or stops refusing local writes, persisted (synced) so a restarted store
    /// keeps it; returns the head at that instant: a frozen log's head is final.
    pub fn set_frozen(&self, db: &DB, meta: &ColumnFamily, frozen: bool) -> Result<LogPosition, EngineError> {
        self.quiesced(|| {
            if frozen {
                db.put_cf_opt(meta, FROZEN_KEY, [1u8], &synced())?;
            } else {
                db.delete_cf_opt(meta, FROZEN_KEY, &synced())?;
            }
            self.frozen.store(frozen, Ordering::Release);
            Ok(())
        })
    }

    /// Drops the oldest entries once the log is an eighth over its retention.
    pub fn trim(&self, db: &DB, log: &ColumnFamily, opts: &WriteOptions) -> Result<(), EngineError> {
        let (first, head) = (self.first(), self.head());
        let kept = head.saturating_sub(first) + 1;
        if kept > self.retention + self.retention / 8 {
            let new_first = head + 1 - self.retention;
            // Readers check `first` before seeking, so publish it before the entries go.
            self.first.store(new_first, Ordering::Release);
            db.delete_range_cf_opt(log, first.to_be_bytes(), new_first.to_be_bytes(), opts)?;
        }
        Ok(())
    }

    /// Why a reader at `from` cannot resume: [`EngineError::Diverged`] when `from` belongs to
    /// another incarnation or lies beyond the head, [`EngineError::Trimmed`] when the entries
    /// right after it are gone; `Ok` when it can.
    pub fn check_resume(&self, from: LogPosition) -> Result<(), EngineError> {
        if from.incarnation != self.incarnation || from.seq > self.head() {
            return Err(EngineError::Diverged { incarnation: from.incarnation, after: from.seq });
        }
        if from.seq < self.head() && from.seq + 1 < self.first() {
            return Err(EngineError::Trimmed { after: from.seq });
        }
        Ok(())
    }

    /// True when a reader at `from` can still resume.
    pub fn reaches(&self, from: LogPosition) -> bool {
        self.check_resume(from).is_ok()
    }
}

/// Write options that sync the WAL: for the few records whose loss would mislead a restarted
/// store (the log's identity, the frozen flag).
pub(crate) fn synced() -> WriteOptions {
    let mut opts = WriteOptions::default();
    opts.set_sync(true);
    opts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_encoded_byte_for_byte() {
        let p = LogPosition { incarnation: 0x0102_0304_0506_0708, seq: 42 };
        assert_eq!(p.encode(), [8, 7, 6, 5, 4, 3, 2, 1, 42, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(LogPosition::decode(&p.encode()), Some(p));
        assert_eq!(LogPosition::decode(&7u64.to_le_bytes()), Some(LogPosition { incarnation: 0, seq: 7 }), "a position saved before incarnations");
        assert_eq!(LogPosition::decode(&[1, 2, 3]), None);
    }
}
