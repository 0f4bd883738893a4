//! A shard replica's reads: point gets through the value cache (from every tier, or from memory
//! only) and scans, which show only live values of keys the replica's layout owns.
use super::Shard;
use crate::cache::Probe;
use crate::header::Header;
use crate::{now_ns, EngineError};
use std::cell::RefCell;
use std::sync::atomic::Ordering;

thread_local! {
    /// Per-thread buffer a cached value is copied into for a get.
    static CACHED: RefCell<Vec<u8>> = RefCell::new(Vec::with_capacity(4096));
    /// Per-thread buffer a counter's total is rendered into for a get.
    static RENDERED: RefCell<Vec<u8>> = RefCell::new(Vec::with_capacity(64));
}

impl Shard {
    /// Reads `key` and calls `f` with the value a read shows (`None` when missing, deleted or
    /// expired; a counter's total in decimal). The slice is the value cache's copy (a per-thread
    /// buffer), RocksDB's pinned buffer or, for a counter, a per-thread rendering: nothing is
    /// allocated once warm.
    pub fn get<R>(&self, key: &[u8], f: impl FnOnce(Option<&[u8]>) -> R) -> Result<R, EngineError> {
        self.get_with_expiry(key, |v| f(v.map(|(value, _)| value)))
    }

    /// Like [`Shard::get`], with the value's expiry (ns since the Unix epoch, 0 = never).
    pub fn get_with_expiry<R>(&self, key: &[u8], f: impl FnOnce(Option<(&[u8], u64)>) -> R) -> Result<R, EngineError> {
        match self.get_stored(key, false, |stored| shown(stored, f))? {
            Some(answer) => Ok(answer),
            None => Err(EngineError::Corrupt(format!("{}: a read of every tier came back incomplete", self.dir.display()))),
        }
    }

    /// Like [`Shard::get_with_expiry`], but reads only memory (the value cache, the memtables and
    /// RocksDB's block cache): `Ok(None)`, without calling `f`, when the answer needs a read of
    /// a file, so a thread that must not block on the disk can hand the read to one that may.
    pub fn get_with_expiry_in_memory<R>(&self, key: &[u8], f: impl FnOnce(Option<(&[u8], u64)>) -> R) -> Result<Option<R>, EngineError> {
        self.get_stored(key, true, |stored| shown(stored, f))
    }

    /// Calls `f` with the stored value of `key` (header and user bytes), through the value
    /// cache; with `memory_only`, returns `None` instead when RocksDB would have to read a file.
    fn get_stored<R>(&self, key: &[u8], memory_only: bool, f: impl FnOnce(Option<&[u8]>) -> R) -> Result<Option<R>, EngineError> {
        let Some(cache) = &self.cache else {
            return Ok(self.read_pinned(key, memory_only)?.map(|pinned| f(pinned.as_deref())));
        };
        let owner = self.cache_owner.load(Ordering::Acquire);
        CACHED.with(|buf| {
            let buf = &mut *buf.borrow_mut();
            match cache.get(owner, key, buf) {
                Probe::Hit => Ok(Some(f(Some(buf)))),
                Probe::Miss(ticket) => {
                    // A memory-only read that needs a file is handed on and probed again there,
                    // so only a read RocksDB answered counts as a miss.
                    let Some(pinned) = self.read_pinned(key, memory_only)? else { return Ok(None) };
                    cache.fill(ticket, owner, key, pinned.as_deref());
                    Ok(Some(f(pinned.as_deref())))
                }
            }
        })
    }

    /// RocksDB's read of `key`; with `memory_only`, `None` when that needs a read of a file.
    fn read_pinned(&self, key: &[u8], memory_only: bool) -> Result<Option<Option<rocksdb::DBPinnableSlice<'_>>>, EngineError> {
        if !memory_only {
            return Ok(Some(self.db.get_pinned(key)?));
        }
        match self.db.get_pinned_opt(key, &self.memory_only) {
            Ok(pinned) => Ok(Some(pinned)),
            Err(e) if e.kind() == rocksdb::ErrorKind::Incomplete => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Calls `f(key, value)` for up to `limit` live keys starting with `prefix`, in key order,
    /// strictly after `start_after` when it is non-empty. Returns true when more keys follow.
    pub fn scan(&self, prefix: &[u8], start_after: &[u8], limit: usize, max_bytes: usize, mut f: impl FnMut(&[u8], &[u8])) -> Result<bool, EngineError> {
        let mut it = self.db.raw_iterator();
        if start_after > prefix {
            it.seek(start_after);
            if it.key() == Some(start_after) {
                it.next();
            }
        } else {
            it.seek(prefix);
        }
        let now = now_ns();
        let (mut emitted, mut bytes) = (0usize, 0usize);
        let mut rendered = Vec::new();
        while let (Some(k), Some(v)) = (it.key(), it.value()) {
            if !k.starts_with(prefix) {
                break;
            }
            if let Some((h, mut user)) = Header::split(v) {
                // Keys copied in by a resize snapshot that belong elsewhere are never served.
                if !h.tombstone && !h.expired(now) && self.layout.owns(k) {
                    if h.counter {
                        rendered.clear();
                        crate::update::shown(h, user, &mut rendered);
                        user = &rendered;
                    }
                    let size = k.len() + user.len();
                    if emitted == limit || (emitted > 0 && bytes + size > max_bytes) {
                        return Ok(true);
                    }
                    f(k, user);
                    emitted += 1;
                    bytes += size;
                }
            }
            it.next();
        }
        it.status()?;
        Ok(false)
    }
}

/// The user bytes of a stored value that is neither a tombstone nor expired (the clock is read
/// only for values with an expiry).
fn live(stored: Option<&[u8]>) -> Option<(Header, &[u8])> {
    stored.and_then(Header::split).filter(|(h, _)| !h.tombstone && (h.expires_at_ns == 0 || !h.expired(now_ns())))
}

/// Calls `f` with what a read of `stored` shows and its expiry: a live plain value's bytes, a
/// live counter's total (rendered into a per-thread buffer), or `None`.
fn shown<R>(stored: Option<&[u8]>, f: impl FnOnce(Option<(&[u8], u64)>) -> R) -> R {
    match live(stored) {
        Some((h, user)) if h.counter => RENDERED.with(|buf| {
            let buf = &mut *buf.borrow_mut();
            buf.clear();
            crate::update::shown(h, user, buf);
            f(Some((buf, h.expires_at_ns)))
        }),
        Some((h, user)) => f(Some((user, h.expires_at_ns))),
        None => f(None),
    }
}
