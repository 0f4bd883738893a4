//! One shard replica: a RocksDB instance with the user data (default column family), its
//! metadata and replication positions (`meta`), and its change log (`log`, see `changelog`).
use crate::cache::{new_owner, ValueCache};
use crate::changelog::{synced, ChangeLog, LogPosition};
use crate::counter;
use crate::header::{self, encode_value, expiry_for, Header};
use crate::layout::{Layout, LayoutRecord, LAYOUT_KEY, MAX_LAYOUT_SHARDS};

/// Present in a replica's metadata from a layout change until the full compaction after it.
pub(crate) const COMPACTION_OWED_KEY: &[u8] = b"compaction-owed";
use crate::meta::META_KEY;
use crate::{now_ns, EngineError, ShardMeta, ShardTuning, SyncMode};
use rocksdb::{ColumnFamilyDescriptor, Options, WriteBatch, WriteOptions, DB};
use std::cell::RefCell;
use std::mem::ManuallyDrop;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

#[path = "shard_reads.rs"]
mod shard_reads;
#[path = "shard_stats.rs"]
mod shard_stats;
pub use shard_stats::ShardStats;

pub(crate) const META_CF: &str = "meta";
pub(crate) const LOG_CF: &str = "log";
/// Suffix of a dropped replica's directory while it is being deleted (`<shard>.dropped-<ns>`).
pub(crate) const DROPPED_SUFFIX: &str = "dropped";

thread_local! {
    /// Per-thread scratch for encoding stored values and log entries, and for the writes of a
    /// batch kept for the value cache until the batch is committed, so writes do not allocate
    /// on the Rust side once warm.
    pub(crate) static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

#[derive(Default)]
pub(crate) struct Scratch {
    pub(crate) value: Vec<u8>,
    pub(crate) entry: Vec<u8>,
    pub(crate) written: Vec<u8>,
}

/// A write inside a batch.
#[derive(Debug, Clone, Copy)]
pub enum Write<'a> {
    /// Put `value` under `key`; `ttl_ns` 0 means forever.
    Put { key: &'a [u8], value: &'a [u8], event_time_ns: u64, ttl_ns: u64 },
    /// Delete `key` with a tombstone at `event_time_ns`.
    Delete { key: &'a [u8], event_time_ns: u64 },
}

/// Signalled once a dropped shard's RocksDB is closed and its directory is gone (see
/// [`Shard::remove_on_drop`]).
#[derive(Debug, Default)]
pub struct Closing {
    done: Mutex<bool>,
    signal: Condvar,
}

impl Closing {
    fn finish(&self) {
        *self.done.lock().unwrap_or_else(|p| p.into_inner()) = true;
        self.signal.notify_all();
    }

    /// True once the shard is closed and its directory gone.
    pub fn is_done(&self) -> bool {
        *self.done.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits up to `timeout` for the shard to be closed and its directory gone; true if it is.
    pub fn wait(&self, timeout: Duration) -> bool {
        let done = self.done.lock().unwrap_or_else(|p| p.into_inner());
        let (done, _) = self.signal.wait_timeout_while(done, timeout, |done| !*done).unwrap_or_else(|p| p.into_inner());
        *done
    }
}

/// Local writes of a replica held back (see [`Shard::sync_and_hold_writes`]).
pub struct WritesHeld<'a> {
    _held: std::sync::MutexGuard<'a, ()>,
}

/// An open shard replica. Dropping it closes RocksDB; [`Shard::remove_on_drop`] also deletes its
/// directory once the last user has let go.
pub struct Shard {
    db: ManuallyDrop<DB>,
    meta: ShardMeta,
    dir: PathBuf,
    write_opts: WriteOptions,
    /// Reads that may touch only the memtables and the block cache (see `read_pinned`).
    memory_only: rocksdb::ReadOptions,
    opts: Options,
    pub(crate) layout: Arc<Layout>,
    committed_at_ms: AtomicU64,
    /// Held while the layout changes, and by an ingest that must see one layout throughout.
    layout_change: Mutex<()>,
    /// The change log: order, identity, freeze and retention of local writes.
    log: ChangeLog,
    /// Set once the shard is being dropped: long-running readers (tails, exports) stop.
    retired: AtomicBool,
    /// Set by [`Shard::remove_on_drop`]: the directory goes when the last user lets go.
    closing: Mutex<Option<Arc<Closing>>>,
    /// The store's value cache, if it has one, and this shard's current owner id in it.
    cache: Option<Arc<ValueCache>>,
    cache_owner: AtomicU64,
    /// When keys the layout does not keep last came from a same-shard peer (see `unkept`).
    unkept_at_ms: AtomicU64,
}

impl Shard {
    /// Opens (or with `create`, creates) the replica in `dir`. With `renew_log` the change log
    /// gets a new incarnation and every saved peer position is forgotten: the store stopped
    /// uncleanly and may have lost the tail of its writes, so its followers must re-bootstrap and
    /// it must copy again from its peers what they hold.
    pub(crate) fn open(
        dir: &Path,
        opts: &Options,
        create: Option<&ShardMeta>,
        tuning: ShardTuning,
        cache: Option<Arc<ValueCache>>,
        renew_log: bool,
    ) -> Result<Self, EngineError> {
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
        db_opts.create_if_missing(create.is_some());
        db_opts.create_missing_column_families(true);
        let db = DB::open_cf_descriptors(&db_opts, dir, cfs)?;
        let cf = db.cf_handle(META_CF).ok_or_else(|| EngineError::Corrupt(format!("{}: no meta column family", dir.display())))?;
        let held = ShardMeta::read(&db, cf, dir)?;
        let meta = match (create, held) {
            (Some(m), Some(held)) if held.keyspace_incarnation != m.keyspace_incarnation || held.keyspace != m.keyspace => {
                return Err(EngineError::Corrupt(format!(
                    "{}: holds a replica of keyspace {} incarnation {:x}, not {} incarnation {:x}",
                    dir.display(),
                    held.keyspace,
                    held.keyspace_incarnation,
                    m.keyspace,
                    m.keyspace_incarnation
                )));
            }
            (Some(m), held) => {
                // The creation time is the replica's: an existing one keeps its own.
                let meta = ShardMeta { created_at_ms: held.map_or(m.created_at_ms, |h| h.created_at_ms), ..m.clone() };
                db.put_cf_opt(cf, META_KEY, meta.encode(), &synced())?;
                meta
            }
            (None, Some(held)) => held,
            (None, None) => return Err(EngineError::Corrupt(format!("{}: no shard metadata", dir.display()))),
        };
        if meta.shard >= meta.shards || meta.shards > MAX_LAYOUT_SHARDS {
            return Err(EngineError::Corrupt(format!("{}: shard {} of {} is not a valid layout", dir.display(), meta.shard, meta.shards)));
        }
        let record = LayoutRecord::read(&db, cf, &meta, dir)?;
        layout.set(meta.shard, record.serving, record.committed);
        let log_cf = db.cf_handle(LOG_CF).ok_or_else(|| EngineError::Corrupt(format!("{}: no log column family", dir.display())))?;
        let log = ChangeLog::open(&db, cf, log_cf, dir, tuning.log_retention, renew_log)?;
        if renew_log {
            crate::changes::forget_all_positions(&db, cf)?;
        }
        let mut write_opts = WriteOptions::default();
        write_opts.set_sync(tuning.sync == SyncMode::Always);
        Ok(Self {
            db: ManuallyDrop::new(db),
            meta,
            dir: dir.to_path_buf(),
            write_opts,
            memory_only: {
                let mut read = rocksdb::ReadOptions::default();
                read.set_read_tier(rocksdb::ReadTier::BlockCache);
                read
            },
            opts: data_opts,
            layout,
            committed_at_ms: AtomicU64::new(record.committed_at_ms),
            layout_change: Mutex::new(()),
            log,
            retired: AtomicBool::new(false),
            closing: Mutex::new(None),
            cache,
            cache_owner: AtomicU64::new(new_owner()),
            unkept_at_ms: AtomicU64::new(0),
        })
    }

    pub(crate) fn log_cf(&self) -> Result<&rocksdb::ColumnFamily, EngineError> {
        self.db.cf_handle(LOG_CF).ok_or_else(|| EngineError::Corrupt(format!("{}: no log column family", self.dir.display())))
    }

    pub(crate) fn log(&self) -> &ChangeLog {
        &self.log
    }

    /// When keys the layout does not keep last arrived from a peer (ms since the Unix epoch,
    /// 0: none since the compaction that followed the last arrival).
    pub(crate) fn unkept_at_ms(&self) -> &AtomicU64 {
        &self.unkept_at_ms
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

    /// True when compactions keep `key`: owned under the serving or the committed count.
    #[inline]
    pub fn keeps(&self, key: &[u8]) -> bool {
        self.layout.keeps(key)
    }

    /// Changes (and persists, synced) the layout. From now on writes of keys that do not hash
    /// to this shard under `serving` shards are refused, and compactions drop every key owned
    /// neither under `serving` nor under `committed` shards. A resize changes `serving` first and
    /// `committed` once the new count is in force, so until then nothing a rollback needs is
    /// lost. Shard counts above [`MAX_LAYOUT_SHARDS`] are refused.
    ///
    /// Returns the change log's position at the switch: every local write accepted under the
    /// old layout is at or below it, and every later one is owned under the new layout (the
    /// check runs under the log's append lock). A resize drains its copies up to it.
    pub fn set_layout(&self, record: LayoutRecord) -> Result<LogPosition, EngineError> {
        if !record.valid() {
            return Err(EngineError::Corrupt(format!("{}: invalid layout {record:?}", self.dir.display())));
        }
        let _change = self.layout_change.lock().unwrap_or_else(|p| p.into_inner());
        self.log.quiesced(|| {
            // The new layout may leave keys the replica no longer keeps: a compaction is owed
            // until `compact` has run, even if the store is killed first.
            let meta = self.meta_cf()?;
            let mut batch = WriteBatch::default();
            batch.put_cf(meta, LAYOUT_KEY, record.encode());
            batch.put_cf(meta, COMPACTION_OWED_KEY, b"");
            self.db.write_opt(batch, &synced())?;
            self.layout.set(self.meta.shard, record.serving, record.committed);
            self.committed_at_ms.store(record.committed_at_ms, Ordering::Release);
            Ok(())
        })
    }

    /// Runs `f` while the layout cannot change (an ingest that must land under one layout).
    pub(crate) fn with_layout_fixed<R>(&self, f: impl FnOnce(LayoutRecord) -> R) -> R {
        let _change = self.layout_change.lock().unwrap_or_else(|p| p.into_inner());
        f(self.layout_record())
    }

    /// Starts (`true`) or stops refusing local writes ([`EngineError::Frozen`]), persisted so a
    /// restarted store keeps it. Returns the change log's position at that instant; while frozen
    /// it is final: every local write this replica ever accepted is at or below it.
    pub fn set_frozen(&self, frozen: bool) -> Result<LogPosition, EngineError> {
        self.log.set_frozen(&self.db, self.meta_cf()?, frozen)
    }

    /// True while local writes are refused (see [`Shard::set_frozen`]).
    #[inline]
    pub fn frozen(&self) -> bool {
        self.log.frozen()
    }

    /// The change log's incarnation and newest position.
    pub fn log_mark(&self) -> LogPosition {
        self.log.mark()
    }

    /// Which keyspace/shard/replica this is.
    pub fn meta(&self) -> &ShardMeta {
        &self.meta
    }

    /// The shard's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
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
        let header = Header { event_time_ns, expires_at_ns: expiry_for(event_time_ns, ttl_ns), tombstone: false, counter: false };
        self.merge(key, header, value)
    }

    /// Records a tombstone for `key` at `event_time_ns`; older puts can never resurrect it.
    pub fn delete(&self, key: &[u8], event_time_ns: u64) -> Result<(), EngineError> {
        self.merge(key, Header { event_time_ns, expires_at_ns: 0, tombstone: true, counter: false }, b"")
    }

    fn merge(&self, key: &[u8], header: Header, user: &[u8]) -> Result<(), EngineError> {
        self.write_local([(key, header, user)])
    }

    /// Applies all writes atomically, each with last-writer-wins semantics.
    pub fn write_batch<'a>(&self, writes: impl IntoIterator<Item = Write<'a>>) -> Result<(), EngineError> {
        self.write_local(writes.into_iter().map(|w| match w {
            Write::Put { key, value, event_time_ns, ttl_ns } => {
                (key, Header { event_time_ns, expires_at_ns: expiry_for(event_time_ns, ttl_ns), tombstone: false, counter: false }, value)
            }
            Write::Delete { key, event_time_ns } => (key, Header { event_time_ns, expires_at_ns: 0, tombstone: true, counter: false }, &b""[..]),
        }))
    }

    /// Writes local changes: each is merged into the data and appended to the change log, in one
    /// atomic batch, under the log's append lock so sequence numbers follow commit order. All or
    /// nothing: refused with [`EngineError::Frozen`] while frozen, and with
    /// [`EngineError::NotOwned`] if a key does not belong to the shard's serving layout (checked
    /// under the same lock, so no write of a key a layout change moved away slips in after it).
    fn write_local<'a>(&self, writes: impl IntoIterator<Item = (&'a [u8], Header, &'a [u8])>) -> Result<(), EngineError> {
        let log_cf = self.log_cf()?;
        let mut batch = WriteBatch::default();
        let append = self.log.begin_append()?;
        let mut seq = append.next_seq() - 1;
        SCRATCH.with(|s| {
            let Scratch { value, entry, written } = &mut *s.borrow_mut();
            written.clear();
            for (key, header, user) in writes {
                if !self.layout.owns(key) {
                    return Err(EngineError::NotOwned);
                }
                seq += 1;
                encode_value(value, header, user);
                self.add_local(&mut batch, log_cf, seq, key, value, entry, written);
            }
            append.commit(&self.db, &self.write_opts, batch, seq)?;
            self.note_written(written);
            reset_scratch(written);
            Ok::<_, EngineError>(())
        })?;
        self.log.trim(&self.db, log_cf, &self.write_opts)
    }

    /// Adds one local write to `batch`: the stored value merged into the data and its change-log
    /// entry at `seq` (encoded in `entry`), and notes it in `written` for the value cache.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn add_local(
        &self,
        batch: &mut WriteBatch,
        log_cf: &rocksdb::ColumnFamily,
        seq: u64,
        key: &[u8],
        stored: &[u8],
        entry: &mut Vec<u8>,
        written: &mut Vec<u8>,
    ) {
        batch.merge(key, stored);
        crate::changes::encode_entry(entry, key, stored);
        batch.put_cf(log_cf, seq.to_be_bytes(), entry.as_slice());
        self.keep_written(written, key, stored);
    }

    /// Makes every write acknowledged so far durable (an fsync of the WAL): what
    /// `SyncMode::EverySec` does once a second.
    pub fn sync_wal(&self) -> Result<(), EngineError> {
        Ok(self.db.flush_wal(true)?)
    }

    /// For a clean stop: stops local writes (they wait while the guard lives) and then syncs
    /// the WAL, so every write this replica ever acknowledged is durable.
    pub fn sync_and_hold_writes(&self) -> Result<WritesHeld<'_>, EngineError> {
        let held = self.log.hold();
        self.db.flush_wal(true)?;
        Ok(WritesHeld { _held: held })
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
        self.db.delete_cf_opt(self.meta_cf()?, COMPACTION_OWED_KEY, &synced())?;
        Ok(())
    }

    /// True when a layout change was not yet followed by a full [`Shard::compact`] (a store
    /// killed in between must run it after its restart, or the keys the layout no longer keeps
    /// stay on disk).
    pub fn compaction_owed(&self) -> Result<bool, EngineError> {
        Ok(self.db.get_cf(self.meta_cf()?, COMPACTION_OWED_KEY)?.is_some())
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

    /// Marks the shard as being dropped: long-running readers ([`Shard::retired`]: tails,
    /// snapshot and resize exports) stop, and RocksDB's background work (a compaction after a
    /// resize included) is cancelled, so the last users let go soon.
    pub fn retire(&self) {
        self.retired.store(true, Ordering::Release);
        self.db.cancel_all_background_work(false);
    }

    /// True once [`Shard::retire`] was called.
    #[inline]
    pub fn retired(&self) -> bool {
        self.retired.load(Ordering::Acquire)
    }

    /// Deletes the shard's directory when the last reference is dropped; the returned signal
    /// tells when RocksDB is closed and the directory is gone (renamed aside, then deleted), so
    /// the same shard can be created again.
    pub fn remove_on_drop(&self) -> Arc<Closing> {
        let mut closing = self.closing.lock().unwrap_or_else(|p| p.into_inner());
        Arc::clone(closing.get_or_insert_with(Default::default))
    }
}

impl Drop for Shard {
    fn drop(&mut self) {
        // SAFETY: `db` is never used again after this point; it must close before the directory goes.
        unsafe { ManuallyDrop::drop(&mut self.db) };
        let Some(closing) = self.closing.get_mut().unwrap_or_else(|p| p.into_inner()).take() else { return };
        // Rename first (instant), so the shard's directory is gone at once and the same shard can
        // be created again while the files are deleted.
        let trash = self.dir.with_extension(format!("{DROPPED_SUFFIX}-{}", now_ns()));
        let remove = |doomed: &Path| {
            if let Err(e) = std::fs::remove_dir_all(doomed) {
                tracing::warn!(dir = %doomed.display(), error = %e, "could not remove a dropped shard's files");
            }
        };
        match std::fs::rename(&self.dir, &trash) {
            Ok(()) => {
                closing.finish();
                // Deleting many files can take a while: not on the thread that let go last
                // (possibly a core serving requests).
                let spawned = std::thread::Builder::new().name("vasto-remove".into()).spawn({
                    let trash = trash.clone();
                    move || remove(&trash)
                });
                if spawned.is_err() {
                    remove(&trash);
                }
            }
            Err(e) => {
                tracing::warn!(dir = %self.dir.display(), error = %e, "could not rename a dropped shard aside; deleting it in place");
                remove(&self.dir);
                closing.finish();
            }
        }
    }
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

/// The merge operator: keeps the last writer's value, and joins counters (see `counter`).
pub(crate) fn lww_merge(_key: &[u8], existing: Option<&[u8]>, operands: &rocksdb::MergeOperands) -> Option<Vec<u8>> {
    let counters = existing.is_some_and(counter::is_counter) || operands.iter().any(counter::is_counter);
    if !counters {
        return header::winner(existing, operands.iter()).map(<[u8]>::to_vec);
    }
    let mut values = existing.into_iter().chain(operands.iter());
    let mut joined = values.next()?.to_vec();
    let mut scratch = Vec::with_capacity(joined.len());
    for value in values {
        counter::join(&joined, value, &mut scratch);
        std::mem::swap(&mut joined, &mut scratch);
    }
    Some(joined)
}
