//! One shard replica: a RocksDB instance with the user data (default column family), its
//! metadata and replication positions (`meta`), and its change log (`log`, see `changes`).
use crate::cache::{new_owner, Probe, ValueCache};
use crate::filter::{Layout, MAX_LAYOUT_SHARDS};
use crate::header::{self, encode_value, expiry_for, Header};
use crate::{now_ns, EngineError, ShardMeta, ShardTuning};
use rocksdb::{ColumnFamilyDescriptor, Options, WriteBatch, WriteOptions, DB};
use std::cell::RefCell;
use std::mem::ManuallyDrop;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

pub(crate) const META_CF: &str = "meta";
pub(crate) const LOG_CF: &str = "log";
/// Key, in `meta`, of the layout: serving and committed shard counts (see `filter::Layout`).
pub(crate) const LAYOUT_KEY: &[u8] = b"layout";
pub(crate) const META_KEY: &[u8] = b"shard";

thread_local! {
    /// Per-thread scratch for encoding stored values and log entries, and for the writes of a
    /// batch kept for the value cache until the batch is committed, so writes do not allocate
    /// on the Rust side once warm.
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
    /// Per-thread buffer a cached value is copied into for a get.
    static CACHED: RefCell<Vec<u8>> = RefCell::new(Vec::with_capacity(4096));
}

#[derive(Default)]
struct Scratch {
    value: Vec<u8>,
    entry: Vec<u8>,
    written: Vec<u8>,
}

/// The persisted layout of a shard replica (see [`Shard::set_layout`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LayoutRecord {
    /// Shard count requests are checked against.
    pub serving: u32,
    /// Shard count clients route by, as this replica last learnt it.
    pub committed: u32,
    /// When that count was put in force (ms since the Unix epoch, set by the master): after a
    /// master restart, the newest report tells which count is in force.
    pub committed_at_ms: u64,
}

impl LayoutRecord {
    /// Encodes as serving, committed (u32 LE) and committed_at_ms (u64 LE).
    fn encode(&self) -> [u8; 16] {
        let mut raw = [0u8; 16];
        raw[0..4].copy_from_slice(&self.serving.to_le_bytes());
        raw[4..8].copy_from_slice(&self.committed.to_le_bytes());
        raw[8..16].copy_from_slice(&self.committed_at_ms.to_le_bytes());
        raw
    }

    /// Decodes what [`LayoutRecord::encode`] wrote, or the 8-byte `(shard, shards)` record of
    /// earlier versions (read as serving and committed `shards`); `None` for anything else or
    /// invalid counts.
    pub(crate) fn decode(raw: &[u8]) -> Option<Self> {
        if raw.len() == 8 {
            let shards = u32::from_le_bytes(raw.get(4..8)?.try_into().ok()?);
            let record = Self { serving: shards, committed: shards, committed_at_ms: 0 };
            return record.valid().then_some(record);
        }
        let serving = u32::from_le_bytes(raw.get(0..4)?.try_into().ok()?);
        let committed = u32::from_le_bytes(raw.get(4..8)?.try_into().ok()?);
        let committed_at_ms = u64::from_le_bytes(raw.get(8..16)?.try_into().ok()?);
        let record = Self { serving, committed, committed_at_ms };
        record.valid().then_some(record)
    }

    /// Reads the record of the shard `meta` describes from its `meta` column family; a shard
    /// never given a layout keeps the one it was created with.
    pub(crate) fn read(db: &DB, meta_cf: &rocksdb::ColumnFamily, meta: &ShardMeta, dir: &Path) -> Result<Self, EngineError> {
        match db.get_cf(meta_cf, LAYOUT_KEY)? {
            Some(raw) => Self::decode(&raw).ok_or_else(|| EngineError::Corrupt(format!("{}: unreadable layout", dir.display()))),
            None => Ok(Self { serving: meta.shards, committed: meta.shards, committed_at_ms: 0 }),
        }
    }

    fn valid(&self) -> bool {
        (1..=MAX_LAYOUT_SHARDS).contains(&self.serving) && (1..=MAX_LAYOUT_SHARDS).contains(&self.committed)
    }
}

/// A write inside a batch.
#[derive(Debug, Clone, Copy)]
pub enum Write<'a> {
    /// Put `value` under `key`; `ttl_ns` 0 means forever.
    Put { key: &'a [u8], value: &'a [u8], event_time_ns: u64, ttl_ns: u64 },
    /// Delete `key` with a tombstone at `event_time_ns`.
    Delete { key: &'a [u8], event_time_ns: u64 },
}

/// An open shard replica. Dropping it closes RocksDB; [`Shard::remove_on_drop`] also deletes its
/// directory once the last user has let go.
pub struct Shard {
    db: ManuallyDrop<DB>,
    meta: ShardMeta,
    dir: PathBuf,
    write_opts: WriteOptions,
    opts: Options,
    layout: Arc<Layout>,
    committed_at_ms: AtomicU64,
    remove: AtomicBool,
    /// Serializes local writes so change-log sequence numbers follow commit order.
    log_lock: Mutex<()>,
    log_head: AtomicU64,
    log_first: AtomicU64,
    log_retention: u64,
    /// The store's value cache, if it has one, and this shard's current owner id in it.
    cache: Option<Arc<ValueCache>>,
    cache_owner: AtomicU64,
}

impl Shard {
    pub(crate) fn open(dir: &Path, opts: &Options, meta: Option<&ShardMeta>, tuning: ShardTuning, cache: Option<Arc<ValueCache>>) -> Result<Self, EngineError> {
        // The layout is fixed up below once the metadata is known; until then the shard owns all.
        let layout = Arc::new(Layout::new(0, 1, 1));
        let mut data_opts = opts.clone();
        crate::filter::install(&mut data_opts, tuning.tombstone_grace_ns, Arc::clone(&layout));
        let cfs = vec![
            ColumnFamilyDescriptor::new(rocksdb::DEFAULT_COLUMN_FAMILY_NAME, data_opts.clone()),
            ColumnFamilyDescriptor::new(META_CF, Options::default()),
            ColumnFamilyDescriptor::new(LOG_CF, Options::default()),
        ];
        let mut db_opts = data_opts.clone();
        db_opts.create_if_missing(meta.is_some());
        db_opts.create_missing_column_families(true);
        let db = DB::open_cf_descriptors(&db_opts, dir, cfs)?;
        let cf = db.cf_handle(META_CF).ok_or_else(|| EngineError::Corrupt(format!("{}: no meta column family", dir.display())))?;
        let meta = match meta {
            Some(m) => {
                db.put_cf(cf, META_KEY, m.encode())?;
                db.flush_cf(cf)?;
                m.clone()
            }
            None => {
                let raw = db.get_cf(cf, META_KEY)?.ok_or_else(|| EngineError::Corrupt(format!("{}: no shard metadata", dir.display())))?;
                ShardMeta::decode(&raw).ok_or_else(|| EngineError::Corrupt(format!("{}: unreadable shard metadata", dir.display())))?
            }
        };
        if meta.shard >= meta.shards || meta.shards > MAX_LAYOUT_SHARDS {
            return Err(EngineError::Corrupt(format!("{}: shard {} of {} is not a valid layout", dir.display(), meta.shard, meta.shards)));
        }
        let record = LayoutRecord::read(&db, cf, &meta, dir)?;
        layout.set(meta.shard, record.serving, record.committed);
        let (log_first, log_head) = {
            let log = db.cf_handle(LOG_CF).ok_or_else(|| EngineError::Corrupt(format!("{}: no log column family", dir.display())))?;
            let mut it = db.raw_iterator_cf(log);
            let seq = |k: Option<&[u8]>| k.and_then(|k| k.try_into().ok()).map(u64::from_be_bytes);
            it.seek_to_last();
            let head = seq(it.key()).unwrap_or(0);
            it.seek_to_first();
            let first = seq(it.key()).unwrap_or(head + 1);
            it.status()?;
            (first, head)
        };
        let mut write_opts = WriteOptions::default();
        write_opts.set_sync(false);
        Ok(Self {
            db: ManuallyDrop::new(db),
            meta,
            dir: dir.to_path_buf(),
            write_opts,
            opts: data_opts,
            layout,
            committed_at_ms: AtomicU64::new(record.committed_at_ms),
            remove: AtomicBool::new(false),
            log_lock: Mutex::new(()),
            log_head: AtomicU64::new(log_head),
            log_first: AtomicU64::new(log_first),
            log_retention: tuning.log_retention.max(1),
            cache,
            cache_owner: AtomicU64::new(new_owner()),
        })
    }

    pub(crate) fn log_cf(&self) -> Result<&rocksdb::ColumnFamily, EngineError> {
        self.db.cf_handle(LOG_CF).ok_or_else(|| EngineError::Corrupt(format!("{}: no log column family", self.dir.display())))
    }

    pub(crate) fn log_head(&self) -> &AtomicU64 {
        &self.log_head
    }

    pub(crate) fn log_first(&self) -> u64 {
        self.log_first.load(Ordering::Acquire)
    }

    pub(crate) fn db(&self) -> &DB {
        &self.db
    }

    pub(crate) fn options(&self) -> &Options {
        &self.opts
    }

    pub(crate) fn write_options(&self) -> &WriteOptions {
        &self.write_opts
    }

    pub(crate) fn meta_cf(&self) -> Result<&rocksdb::ColumnFamily, EngineError> {
        self.db.cf_handle(META_CF).ok_or_else(|| EngineError::Corrupt(format!("{}: no meta column family", self.dir.display())))
    }

    /// The layout requests are checked against: `(shard, serving shard count)`. Starts as the
    /// shard's own metadata.
    pub fn layout(&self) -> (u32, u32) {
        let (shard, serving, _) = self.layout.get();
        (shard, serving)
    }

    /// The whole layout record (see [`Shard::set_layout`]).
    pub fn layout_record(&self) -> LayoutRecord {
        let (_, serving, committed) = self.layout.get();
        LayoutRecord { serving, committed, committed_at_ms: self.committed_at_ms.load(Ordering::Acquire) }
    }

    /// True when `key` belongs to this shard under its serving layout.
    #[inline]
    pub fn owns(&self, key: &[u8]) -> bool {
        self.layout.owns(key)
    }

    /// Changes (and persists) the layout. From now on requests for keys that do not hash to this
    /// shard under `serving` shards are refused, and compactions drop every key owned neither
    /// under `serving` nor under `committed` shards. A resize changes `serving` first and
    /// `committed` once the new count is in force, so until then nothing a rollback needs is
    /// lost. Shard counts above [`MAX_LAYOUT_SHARDS`] are refused.
    pub fn set_layout(&self, record: LayoutRecord) -> Result<(), EngineError> {
        if !record.valid() {
            return Err(EngineError::Corrupt(format!("{}: invalid layout {record:?}", self.dir.display())));
        }
        self.db.put_cf_opt(self.meta_cf()?, LAYOUT_KEY, record.encode(), &self.write_opts)?;
        self.layout.set(self.meta.shard, record.serving, record.committed);
        self.committed_at_ms.store(record.committed_at_ms, Ordering::Release);
        Ok(())
    }

    /// Which keyspace/shard/replica this is.
    pub fn meta(&self) -> &ShardMeta {
        &self.meta
    }

    /// The shard's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Reads `key` and calls `f` with the live user value (`None` when missing, deleted or
    /// expired). The slice is the value cache's copy (a per-thread buffer) or RocksDB's pinned
    /// buffer: nothing is allocated.
    pub fn get<R>(&self, key: &[u8], f: impl FnOnce(Option<&[u8]>) -> R) -> Result<R, EngineError> {
        let Some(cache) = &self.cache else {
            let pinned = self.db.get_pinned(key)?;
            return Ok(f(live(pinned.as_deref())));
        };
        let owner = self.cache_owner.load(Ordering::Acquire);
        CACHED.with(|buf| {
            let buf = &mut *buf.borrow_mut();
            match cache.get(owner, key, buf) {
                Probe::Hit => Ok(f(live(Some(buf)))),
                Probe::Miss(ticket) => {
                    let pinned = self.db.get_pinned(key)?;
                    if let Some(stored) = pinned.as_deref() {
                        cache.fill(ticket, owner, key, stored);
                    }
                    Ok(f(live(pinned.as_deref())))
                }
            }
        })
    }

    /// Tells the value cache about committed writes: `written` holds, for each, its length as
    /// u32 LE and a change-log entry (key length, key, stored value).
    pub(crate) fn note_written(&self, written: &[u8]) {
        let Some(cache) = &self.cache else { return };
        let owner = self.cache_owner.load(Ordering::Acquire);
        let mut rest = written;
        while let Some((len, tail)) = rest.split_at_checked(4) {
            let len = u32::from_le_bytes([len[0], len[1], len[2], len[3]]) as usize;
            let Some((entry, tail)) = tail.split_at_checked(len) else { break };
            if let Some((key, stored)) = crate::changes::decode_entry(entry) {
                cache.written(owner, key, stored);
            }
            rest = tail;
        }
    }

    /// Appends one write to a `written` list for [`Shard::note_written`] (only with a cache).
    pub(crate) fn keep_written(&self, written: &mut Vec<u8>, key: &[u8], stored: &[u8]) {
        if self.cache.is_some() {
            written.extend_from_slice(&((4 + key.len() + stored.len()) as u32).to_le_bytes());
            crate::changes::append_entry(written, key, stored);
        }
    }

    /// Forgets everything the value cache holds for this shard: called after data arrived
    /// other than by a write (an SST ingest), which the cache cannot merge in.
    pub(crate) fn renew_cache_owner(&self) {
        self.cache_owner.store(new_owner(), Ordering::Release);
    }

    /// Writes `value` under `key` unless a write with a later event time is already stored.
    pub fn put(&self, key: &[u8], value: &[u8], event_time_ns: u64, ttl_ns: u64) -> Result<(), EngineError> {
        let header = Header { event_time_ns, expires_at_ns: expiry_for(event_time_ns, ttl_ns), tombstone: false };
        self.merge(key, header, value)
    }

    /// Records a tombstone for `key` at `event_time_ns`; older puts can never resurrect it.
    pub fn delete(&self, key: &[u8], event_time_ns: u64) -> Result<(), EngineError> {
        self.merge(key, Header { event_time_ns, expires_at_ns: 0, tombstone: true }, b"")
    }

    fn merge(&self, key: &[u8], header: Header, user: &[u8]) -> Result<(), EngineError> {
        self.write_local([(key, header, user)])
    }

    /// Applies all writes atomically, each with last-writer-wins semantics.
    pub fn write_batch<'a>(&self, writes: impl IntoIterator<Item = Write<'a>>) -> Result<(), EngineError> {
        self.write_local(writes.into_iter().map(|w| match w {
            Write::Put { key, value, event_time_ns, ttl_ns } => {
                (key, Header { event_time_ns, expires_at_ns: expiry_for(event_time_ns, ttl_ns), tombstone: false }, value)
            }
            Write::Delete { key, event_time_ns } => (key, Header { event_time_ns, expires_at_ns: 0, tombstone: true }, &b""[..]),
        }))
    }

    /// Writes local changes: each is merged into the data and appended to the change log, in one
    /// atomic batch, under the log lock so sequence numbers follow commit order.
    fn write_local<'a>(&self, writes: impl IntoIterator<Item = (&'a [u8], Header, &'a [u8])>) -> Result<(), EngineError> {
        let log_cf = self.log_cf()?;
        let mut batch = WriteBatch::default();
        let _serial = self.log_lock.lock().unwrap_or_else(|p| p.into_inner());
        let mut seq = self.log_head.load(Ordering::Acquire);
        SCRATCH.with(|s| {
            let Scratch { value, entry, written } = &mut *s.borrow_mut();
            written.clear();
            for (key, header, user) in writes {
                seq += 1;
                encode_value(value, header, user);
                batch.merge(key, value.as_slice());
                crate::changes::encode_entry(entry, key, value);
                batch.put_cf(log_cf, seq.to_be_bytes(), entry.as_slice());
                self.keep_written(written, key, value);
            }
            self.db.write_opt(batch, &self.write_opts)?;
            self.log_head.store(seq, Ordering::Release);
            self.note_written(written);
            reset_scratch(written);
            Ok::<_, EngineError>(())
        })?;
        self.trim_log(seq)
    }

    /// Drops the oldest log entries once the log is an eighth over its retention.
    fn trim_log(&self, head: u64) -> Result<(), EngineError> {
        let first = self.log_first.load(Ordering::Acquire);
        let kept = head.saturating_sub(first) + 1;
        if kept > self.log_retention + self.log_retention / 8 {
            let new_first = head + 1 - self.log_retention;
            // Readers check `first` before seeking, so publish it before the entries go.
            self.log_first.store(new_first, Ordering::Release);
            self.db.delete_range_cf_opt(self.log_cf()?, first.to_be_bytes(), new_first.to_be_bytes(), &self.write_opts)?;
        }
        Ok(())
    }

    /// Calls `f(key, value)` for up to `limit` live keys starting with `prefix`, in key order,
    /// strictly after `start_after` when it is non-empty. Returns true when more keys follow.
    pub fn scan(&self, prefix: &[u8], start_after: &[u8], limit: usize, mut f: impl FnMut(&[u8], &[u8])) -> Result<bool, EngineError> {
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
        let mut emitted = 0usize;
        while let (Some(k), Some(v)) = (it.key(), it.value()) {
            if !k.starts_with(prefix) {
                break;
            }
            if let Some((h, user)) = Header::split(v) {
                // Keys copied in by a resize snapshot that belong elsewhere are never served.
                if !h.tombstone && !h.expired(now) && self.layout.owns(k) {
                    if emitted == limit {
                        return Ok(true);
                    }
                    f(k, user);
                    emitted += 1;
                }
            }
            it.next();
        }
        it.status()?;
        Ok(false)
    }

    /// Forces a full compaction that runs the expiry/tombstone filter over every key.
    ///
    /// RocksDB applies compaction filters to values, not to merge operands: the first pass folds
    /// each key's operands into one value, the second filters those values.
    pub fn compact(&self) -> Result<(), EngineError> {
        self.db.flush()?;
        for _ in 0..2 {
            self.db.compact_range(None::<&[u8]>, None::<&[u8]>);
        }
        Ok(())
    }

    /// Counts the raw entries RocksDB holds, tombstones and expired values included (tests and status).
    pub fn raw_entry_count(&self) -> Result<u64, EngineError> {
        let mut it = self.db.raw_iterator();
        it.seek_to_first();
        let mut n = 0;
        while it.valid() {
            n += 1;
            it.next();
        }
        it.status()?;
        Ok(n)
    }

    /// RocksDB's estimate of live keys, for status reports.
    pub fn estimated_keys(&self) -> u64 {
        self.db.property_int_value("rocksdb.estimate-num-keys").ok().flatten().unwrap_or(0)
    }

    /// Deletes the shard's directory when the last reference is dropped.
    pub fn remove_on_drop(&self) {
        self.remove.store(true, Ordering::Release);
    }
}

impl Drop for Shard {
    fn drop(&mut self) {
        // SAFETY: `db` is never used again after this point; it must close before the directory goes.
        unsafe { ManuallyDrop::drop(&mut self.db) };
        if self.remove.load(Ordering::Acquire) {
            if let Err(e) = std::fs::remove_dir_all(&self.dir) {
                eprintln!("vasto-engine: could not remove {}: {e}", self.dir.display());
            }
        }
    }
}

/// The user bytes of a stored value that is neither a tombstone nor expired (the clock is read
/// only for values with an expiry).
fn live(stored: Option<&[u8]>) -> Option<&[u8]> {
    stored.and_then(Header::split).and_then(|(h, user)| (!h.tombstone && (h.expires_at_ns == 0 || !h.expired(now_ns()))).then_some(user))
}

/// Scratch buffers grown past this by a large batch are released after it.
const KEEP_SCRATCH: usize = 1 << 20;

/// Empties `buf`, releasing its memory if a large batch grew it.
pub(crate) fn reset_scratch(buf: &mut Vec<u8>) {
    if buf.capacity() > KEEP_SCRATCH {
        *buf = Vec::new();
    } else {
        buf.clear();
    }
}

/// The merge operator: keeps the last writer's value.
pub(crate) fn lww_merge(_key: &[u8], existing: Option<&[u8]>, operands: &rocksdb::MergeOperands) -> Option<Vec<u8>> {
    header::winner(existing, operands.iter()).map(<[u8]>::to_vec)
}
