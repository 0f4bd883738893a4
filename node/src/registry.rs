//! The shard replicas a store holds, shared by every core.
use crate::NodeError;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use vasto_engine::{Closing, Engine, LayoutRecord, LogPosition, Shard, ShardMeta};
use vasto_wire::ShardInfo;

/// How long dropping a replica waits for its last users (tails, exports) to let go, and how
/// long creating one waits for an earlier replica of the same shard to be gone.
pub const CLOSE_TIMEOUT: Duration = Duration::from_secs(30);

/// An open shard replica plus the signal its change-log tailers wait on.
pub struct Replica {
    /// The storage.
    pub shard: Shard,
    appended: tokio::sync::Notify,
    /// The export resize copies share (see `split`).
    pub split: crate::split::SplitCache,
    /// Bumped when every follower of this replica must copy its peer again from a snapshot
    /// (see [`Replica::recopy_from_every_peer`]); a follower's session ends when it changes.
    recopy: std::sync::atomic::AtomicU64,
    /// An operator's compaction is queued or running (a second request is not queued again).
    compaction_requested: std::sync::atomic::AtomicBool,
}

impl Replica {
    fn new(shard: Shard) -> Self {
        Self { shard, appended: tokio::sync::Notify::new(), split: Default::default(), recopy: Default::default(), compaction_requested: Default::default() }
    }

    /// Data reached the replica outside its change log (an import, a snapshot): a resize
    /// export made before it is not reused.
    pub fn received_outside_the_log(&self) {
        self.split.clear();
    }

    /// Makes every follower of this replica copy its peer again, from a snapshot: called when
    /// a peer's change log turns out to be another incarnation (the peer lost writes in an
    /// unclean stop, or was re-created). Writes that peer took may now exist only on the
    /// replicas that had applied them, and are in none of their change logs: only their
    /// snapshots carry them here.
    pub fn recopy_from_every_peer(&self) -> Result<(), vasto_engine::EngineError> {
        self.shard.forget_all_peers()?;
        self.recopy.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        Ok(())
    }

    /// Changes whenever [`Replica::recopy_from_every_peer`] is called.
    pub fn recopy_epoch(&self) -> u64 {
        self.recopy.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Wakes every tailer waiting for new local writes; call after each successful local write.
    #[inline]
    pub fn appended(&self) {
        self.appended.notify_waiters();
    }

    /// A future that completes at the next [`Replica::appended`]; enable it before checking for
    /// changes so that no write in between is missed.
    pub fn next_append(&self) -> tokio::sync::futures::Notified<'_> {
        self.appended.notified()
    }
}

impl std::ops::Deref for Replica {
    type Target = Shard;
    fn deref(&self) -> &Shard {
        &self.shard
    }
}

/// Result of looking up a shard for a request.
pub enum Lookup {
    /// The store holds this shard replica.
    Found(Arc<Replica>),
    /// The store holds no shard of this keyspace.
    UnknownKeyspace,
    /// The store holds the keyspace but not this shard.
    WrongShard,
}

type ShardKey = (String, u32);

/// Keyspace -> shard -> open replica. Reads take a shared lock just long enough to clone an `Arc`.
pub struct Registry {
    engine: Engine,
    shards: RwLock<HashMap<String, HashMap<u32, Arc<Replica>>>>,
    /// Dropped replicas whose RocksDB may still be open (a tail or an export still holds them).
    closing: Mutex<HashMap<ShardKey, Arc<Closing>>>,
    /// The cluster this store belongs to (0 until it first registered with a master).
    cluster_id: AtomicU64,
    /// Admission of full snapshots for followers (see `snapshot_gate`).
    pub snapshots: crate::snapshot_gate::SnapshotGate,
}

impl Registry {
    /// The value cache's counters (`None` when the store runs without one).
    pub fn cache_stats(&self) -> Option<vasto_engine::CacheStats> {
        self.engine.cache_stats()
    }

    /// Opens every shard already on disk under the engine's directory (see
    /// [`Engine::open_all`] for `after_unclean_stop`).
    pub fn open(engine: Engine, after_unclean_stop: bool, cluster_id: u64) -> Result<Self, NodeError> {
        let mut map: HashMap<String, HashMap<u32, Arc<Replica>>> = HashMap::new();
        for shard in engine.open_all(after_unclean_stop)? {
            let meta = shard.meta().clone();
            let mark = shard.log_mark();
            tracing::info!(keyspace = %meta.keyspace, shard = meta.shard, replica = meta.replica, log_incarnation = %format!("{:x}", mark.incarnation), head = mark.seq, frozen = shard.frozen(), "opened shard");
            let owed = shard.compaction_owed()?;
            let replica = Arc::new(Replica::new(shard));
            if owed {
                // Killed after a layout change and before the compaction that followed it.
                compact_in_background(Arc::clone(&replica), format!("{}/{}", meta.keyspace, meta.shard), "finished the compaction a restart interrupted")?;
            }
            map.entry(meta.keyspace).or_default().insert(meta.shard, replica);
        }
        Ok(Self {
            engine,
            shards: RwLock::new(map),
            closing: Mutex::new(HashMap::new()),
            cluster_id: AtomicU64::new(cluster_id),
            snapshots: Default::default(),
        })
    }

    /// The cluster id this store belongs to (0: not known yet).
    pub fn cluster_id(&self) -> u64 {
        self.cluster_id.load(Ordering::Acquire)
    }

    /// Records the cluster id adopted from the master.
    pub fn set_cluster_id(&self, id: u64) {
        self.cluster_id.store(id, Ordering::Release);
    }

    /// Finds the replica of `shard` in `keyspace`.
    #[inline]
    pub fn lookup(&self, keyspace: &str, shard: u32) -> Lookup {
        let map = self.shards.read().unwrap_or_else(|poisoned| poisoned.into_inner());
        match map.get(keyspace) {
            None => Lookup::UnknownKeyspace,
            Some(shards) => match shards.get(&shard) {
                Some(s) => Lookup::Found(Arc::clone(s)),
                None => Lookup::WrongShard,
            },
        }
    }

    /// The replica of `shard` in `keyspace`, if held.
    pub fn get(&self, keyspace: &str, shard: u32) -> Option<Arc<Replica>> {
        match self.lookup(keyspace, shard) {
            Lookup::Found(r) => Some(r),
            _ => None,
        }
    }

    /// Every replica held.
    pub fn all(&self) -> Vec<Arc<Replica>> {
        let map = self.shards.read().unwrap_or_else(|poisoned| poisoned.into_inner());
        map.values().flat_map(|m| m.values()).cloned().collect()
    }

    /// Every shard replica held, as reported to the master.
    pub fn infos(&self) -> Vec<ShardInfo> {
        let mut out: Vec<ShardInfo> = self.all().iter().map(|s| to_info(s)).collect();
        out.sort();
        out
    }

    /// Creates (or re-activates) a shard replica with the layout `info` gives (serving
    /// `shards`, keeping also the keys of `committed`). Idempotent: an already open replica of
    /// the same keyspace incarnation is unfrozen and takes the layout, without re-opening (tails
    /// and requests in flight keep their handle). Returns the change log's position once the
    /// layout is in place (see [`Shard::set_layout`]).
    pub fn create(&self, info: &ShardInfo) -> Result<LogPosition, NodeError> {
        let meta = ShardMeta {
            keyspace: info.keyspace.clone(),
            keyspace_incarnation: info.keyspace_incarnation,
            shard: info.shard,
            shards: info.shards,
            replica: info.replica,
            replicas: info.replicas,
            created_at_ms: info.created_at_ms,
        };
        let layout = LayoutRecord { serving: info.shards, committed: info.committed, committed_at_ms: info.committed_at_ms };
        if let Some(existing) = self.get(&meta.keyspace, meta.shard) {
            let held = existing.meta();
            if held.keyspace_incarnation != meta.keyspace_incarnation {
                return Err(NodeError::Master(format!(
                    "{}/{} is held here for keyspace incarnation {:x}, not {:x}: drop it first",
                    meta.keyspace, meta.shard, held.keyspace_incarnation, meta.keyspace_incarnation
                )));
            }
            if (held.replica, held.replicas) != (meta.replica, meta.replicas) {
                return Err(NodeError::Master(format!(
                    "{}/{} is already held here as replica {} of {}, not {} of {}",
                    meta.keyspace, meta.shard, held.replica, held.replicas, meta.replica, meta.replicas
                )));
            }
            let mut mark = existing.log_mark();
            let before = existing.layout_record();
            // A create of a held replica starts or ends a resize, or re-activates it: an export
            // shared by an earlier resize attempt must not serve the next one.
            existing.split.clear();
            if before != layout {
                mark = existing.set_layout(layout)?;
                if layout.serving == layout.committed && (before.serving, before.committed) != (layout.serving, layout.committed) {
                    // Back to one shard count (a resize rolled back): drop the copies of keys
                    // the replica received for the count it no longer serves.
                    compact_in_background(
                        Arc::clone(&existing),
                        format!("{}/{}", meta.keyspace, meta.shard),
                        "compacted away the copies a rolled-back resize left",
                    )?;
                }
            }
            if existing.frozen() {
                mark = existing.set_frozen(false)?;
            }
            return Ok(mark);
        }
        self.wait_closed(&meta.keyspace, meta.shard)?;
        // Opened outside the registry's lock, so lookups on the cores never wait for RocksDB
        // to open (shard commands come one at a time from the master link).
        let shard = self.engine.create_shard(&meta)?;
        let mark = if shard.layout_record() != layout { shard.set_layout(layout)? } else { shard.log_mark() };
        let mut map = self.shards.write().unwrap_or_else(|poisoned| poisoned.into_inner());
        map.entry(meta.keyspace).or_default().insert(meta.shard, Arc::new(Replica::new(shard)));
        Ok(mark)
    }

    /// Stops local writes on a held replica (persisted); returns its final change-log position.
    pub fn freeze(&self, keyspace: &str, shard: u32) -> Result<LogPosition, NodeError> {
        let replica = self.get(keyspace, shard).ok_or_else(|| NodeError::Master(format!("no replica of {keyspace}/{shard} here")))?;
        Ok(replica.set_frozen(true)?)
    }

    /// Puts a resize in force on a held replica: it serves and keeps only the keys of
    /// `info.shards` shards from now on, and a background compaction drops the others.
    pub fn commit(&self, info: &ShardInfo) -> Result<LogPosition, NodeError> {
        let replica = self.get(&info.keyspace, info.shard).ok_or_else(|| NodeError::Master(format!("no replica of {}/{} here", info.keyspace, info.shard)))?;
        let layout = LayoutRecord { serving: info.shards, committed: info.shards, committed_at_ms: info.committed_at_ms };
        if replica.layout_record() == layout {
            return Ok(replica.log_mark());
        }
        let mark = replica.set_layout(layout)?;
        replica.split.clear();
        compact_in_background(replica, format!("{}/{}", info.keyspace, info.shard), "compacted away the keys a resize moved")?;
        Ok(mark)
    }

    /// Starts a full compaction of a held replica in the background (`vasto admin compact`);
    /// a request while one asked for earlier is queued or running starts nothing more.
    /// Returns whether it started one.
    pub fn compact_on_request(&self, keyspace: &str, shard: u32) -> Result<bool, NodeError> {
        use std::sync::atomic::Ordering;
        let replica = self.get(keyspace, shard).ok_or_else(|| NodeError::Master(format!("no replica of {keyspace}/{shard} here")))?;
        if replica.compaction_requested.swap(true, Ordering::AcqRel) {
            return Ok(false);
        }
        let name = format!("{keyspace}/{shard}");
        let started = compact_in_background(Arc::clone(&replica), name, "compacted at an operator's request");
        if started.is_err() {
            replica.compaction_requested.store(false, Ordering::Release);
        }
        started.map(|()| true)
    }

    /// Drops a shard replica: it leaves the registry at once (new requests get wrong-shard), its
    /// tails, exports and background work are told to stop, and this returns once its RocksDB is
    /// closed and its directory gone (or fails after [`CLOSE_TIMEOUT`]; dropping again waits
    /// again). Idempotent.
    pub fn drop_shard(&self, keyspace: &str, shard: u32) -> Result<(), NodeError> {
        let removed = {
            let mut map = self.shards.write().unwrap_or_else(|poisoned| poisoned.into_inner());
            let removed = map.get_mut(keyspace).and_then(|m| m.remove(&shard));
            if map.get(keyspace).is_some_and(HashMap::is_empty) {
                map.remove(keyspace);
            }
            removed
        };
        if let Some(replica) = removed {
            let closing = replica.remove_on_drop();
            replica.retire();
            replica.appended();
            replica.split.clear();
            self.closing.lock().unwrap_or_else(|p| p.into_inner()).insert((keyspace.to_owned(), shard), closing);
        }
        self.wait_closed(keyspace, shard)?;
        if self.get(keyspace, shard).is_none() && !self.shards.read().unwrap_or_else(|p| p.into_inner()).contains_key(keyspace) {
            // Only succeeds once every shard directory under it is gone; leftovers are harmless.
            let _ = std::fs::remove_dir(self.engine.root().join(keyspace));
        }
        Ok(())
    }

    /// Waits until a dropped replica of `shard` is closed and its directory gone.
    fn wait_closed(&self, keyspace: &str, shard: u32) -> Result<(), NodeError> {
        let key = (keyspace.to_owned(), shard);
        let Some(closing) = self.closing.lock().unwrap_or_else(|p| p.into_inner()).get(&key).cloned() else { return Ok(()) };
        if !closing.wait(CLOSE_TIMEOUT) {
            return Err(NodeError::Master(format!("{keyspace}/{shard} was dropped but is still in use after {CLOSE_TIMEOUT:?}; try again")));
        }
        let mut closing_map = self.closing.lock().unwrap_or_else(|p| p.into_inner());
        if closing_map.get(&key).is_some_and(|c| c.is_done()) {
            closing_map.remove(&key);
        }
        Ok(())
    }

    /// Compacts, in the background, every replica that received keys its layout does not keep
    /// (from a peer that was ahead of it through a resize) and none for `quiet`, so they do not
    /// linger on disk until RocksDB happens to compact them.
    pub fn compact_where_unkept_keys_arrived(&self, quiet: std::time::Duration) {
        for replica in self.all().into_iter().filter(|r| r.take_unkept_keys_after(quiet)) {
            let name = format!("{}/{}", replica.meta().keyspace, replica.meta().shard);
            if let Err(e) = compact_in_background(replica, name.clone(), "compacted away keys a peer sent after the resize that moved them") {
                tracing::warn!(shard = %name, error = %e, "could not start a compaction; background compactions will drop the keys");
            }
        }
    }

    /// Syncs every replica's WAL (`--sync everysec` does it once a second).
    pub fn sync_all(&self) {
        for replica in self.all() {
            if let Err(e) = replica.sync_wal() {
                tracing::error!(keyspace = %replica.meta().keyspace, shard = replica.meta().shard, error = %e, "syncing the WAL failed");
            }
        }
    }
}

/// Compacts `replica` on a helper thread (one heavy job at a time per store), so keys its
/// layout no longer keeps are dropped now rather than by some later compaction.
fn compact_in_background(replica: Arc<Replica>, name: String, done: &'static str) -> Result<(), NodeError> {
    std::thread::Builder::new()
        .name("vasto-compact".into())
        .spawn(move || {
            let _turn = crate::split::heavy_work_turn();
            if replica.retired() {
                replica.compaction_requested.store(false, std::sync::atomic::Ordering::Release);
                return;
            }
            let started = std::time::Instant::now();
            let outcome = replica.compact();
            // Any full compaction that finishes answers the operator's request too.
            replica.compaction_requested.store(false, std::sync::atomic::Ordering::Release);
            match outcome {
                Ok(()) => tracing::info!(shard = %name, took_ms = started.elapsed().as_millis() as u64, "{done}"),
                Err(e) => tracing::warn!(shard = %name, error = %e, "full compaction failed; background compactions will catch up"),
            }
        })
        .map(drop)
        .map_err(|e| NodeError::Master(format!("cannot start a compaction thread: {e}")))
}

/// What the master is told about a replica: its identity, layout and whether it is frozen.
fn to_info(replica: &Replica) -> ShardInfo {
    let (m, layout) = (replica.meta(), replica.layout_record());
    ShardInfo {
        keyspace: m.keyspace.clone(),
        shard: m.shard,
        shards: layout.serving,
        replica: m.replica,
        replicas: m.replicas,
        committed: layout.committed,
        committed_at_ms: layout.committed_at_ms,
        keyspace_incarnation: m.keyspace_incarnation,
        frozen: replica.frozen(),
        created_at_ms: m.created_at_ms,
    }
}
