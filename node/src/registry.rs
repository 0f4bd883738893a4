//! The shard replicas a store holds, shared by every core.
use crate::NodeError;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use vasto_engine::{Engine, LayoutRecord, Shard, ShardMeta};
use vasto_wire::ShardInfo;

/// An open shard replica plus the signal its change-log tailers wait on.
pub struct Replica {
    /// The storage.
    pub shard: Shard,
    appended: tokio::sync::Notify,
    frozen: std::sync::atomic::AtomicBool,
    /// The export resize copies share (see `split`).
    pub split: crate::split::SplitCache,
}

impl Replica {
    fn new(shard: Shard) -> Self {
        Self { shard, appended: tokio::sync::Notify::new(), frozen: Default::default(), split: Default::default() }
    }

    /// True while the replica refuses writes (it is being retired and drains to its peers).
    #[inline]
    pub fn frozen(&self) -> bool {
        self.frozen.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Starts or stops refusing writes.
    pub fn set_frozen(&self, frozen: bool) {
        self.frozen.store(frozen, std::sync::atomic::Ordering::Release);
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

/// Keyspace -> shard -> open replica. Reads take a shared lock just long enough to clone an `Arc`.
pub struct Registry {
    engine: Engine,
    shards: RwLock<HashMap<String, HashMap<u32, Arc<Replica>>>>,
}

impl Registry {
    /// The value cache's counters (`None` when the store runs without one).
    pub fn cache_stats(&self) -> Option<vasto_engine::CacheStats> {
        self.engine.cache_stats()
    }

    /// Opens every shard already on disk under the engine's directory.
    pub fn open(engine: Engine) -> Result<Self, NodeError> {
        let mut map: HashMap<String, HashMap<u32, Arc<Replica>>> = HashMap::new();
        for shard in engine.open_all()? {
            let meta = shard.meta().clone();
            tracing::info!(keyspace = %meta.keyspace, shard = meta.shard, replica = meta.replica, "opened shard");
            map.entry(meta.keyspace).or_default().insert(meta.shard, Arc::new(Replica::new(shard)));
        }
        Ok(Self { engine, shards: RwLock::new(map) })
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

    /// Every shard replica held, as reported to the master.
    pub fn infos(&self) -> Vec<ShardInfo> {
        let map = self.shards.read().unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut out: Vec<ShardInfo> = map.values().flat_map(|m| m.values()).map(|s| to_info(s.meta(), s.layout_record())).collect();
        out.sort();
        out
    }

    /// Creates (or re-opens) a shard replica with the layout `info` gives (serving `shards`,
    /// keeping also the keys of `committed`). Idempotent: an already open replica with the same
    /// metadata is left as is.
    pub fn create(&self, info: &ShardInfo) -> Result<(), NodeError> {
        let meta = ShardMeta { keyspace: info.keyspace.clone(), shard: info.shard, shards: info.shards, replica: info.replica, replicas: info.replicas };
        let layout = LayoutRecord { serving: info.shards, committed: info.committed, committed_at_ms: info.committed_at_ms };
        let mut map = self.shards.write().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(existing) = map.get(&meta.keyspace).and_then(|m| m.get(&meta.shard)) {
            let held = existing.meta();
            if (held.replica, held.replicas) != (meta.replica, meta.replicas) {
                return Err(NodeError::Master(format!(
                    "{}/{} is already held here as replica {} of {}, not {} of {}",
                    meta.keyspace, meta.shard, held.replica, held.replicas, meta.replica, meta.replicas
                )));
            }
            // An existing replica is re-activated (a freeze is undone) and takes the layout it is
            // given, without re-opening: tails and requests in flight keep their handle.
            if existing.layout_record() != layout {
                existing.set_layout(layout)?;
                existing.split.clear();
            }
            existing.set_frozen(false);
            return Ok(());
        }
        let shard = self.engine.create_shard(&meta)?;
        if shard.layout_record() != layout {
            shard.set_layout(layout)?;
        }
        map.entry(meta.keyspace).or_default().insert(meta.shard, Arc::new(Replica::new(shard)));
        Ok(())
    }

    /// Puts a resize in force on a held replica: it serves and keeps only the keys of
    /// `info.shards` shards from now on, and a background compaction drops the others.
    pub fn commit(&self, info: &ShardInfo) -> Result<(), NodeError> {
        let replica = self.get(&info.keyspace, info.shard).ok_or_else(|| NodeError::Master(format!("no replica of {}/{} here", info.keyspace, info.shard)))?;
        let layout = LayoutRecord { serving: info.shards, committed: info.shards, committed_at_ms: info.committed_at_ms };
        if replica.layout_record() == layout {
            return Ok(());
        }
        replica.set_layout(layout)?;
        replica.split.clear();
        let name = format!("{}/{}", info.keyspace, info.shard);
        std::thread::Builder::new()
            .name("vasto-compact".into())
            .spawn(move || {
                let _turn = crate::split::heavy_work_turn();
                let started = std::time::Instant::now();
                match replica.compact() {
                    Ok(()) => tracing::info!(shard = %name, took_ms = started.elapsed().as_millis() as u64, "compacted away the keys a resize moved"),
                    Err(e) => tracing::warn!(shard = %name, error = %e, "compaction after a resize failed; background compactions will drop the moved keys"),
                }
            })
            .map_err(|e| NodeError::Master(format!("cannot start a compaction thread: {e}")))?;
        Ok(())
    }

    /// Drops a shard replica and deletes its data once in-flight requests release it. Idempotent.
    pub fn drop_shard(&self, keyspace: &str, shard: u32) {
        let mut map = self.shards.write().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(m) = map.get_mut(keyspace) {
            if let Some(s) = m.remove(&shard) {
                s.remove_on_drop();
            }
            if m.is_empty() {
                map.remove(keyspace);
                let dir = self.engine.root().join(keyspace);
                // Only succeeds once every shard directory under it is gone; leftovers are harmless.
                let _ = std::fs::remove_dir(dir);
            }
        }
    }
}

/// What the master is told about a replica: its identity and its current layout.
fn to_info(m: &ShardMeta, layout: LayoutRecord) -> ShardInfo {
    ShardInfo {
        keyspace: m.keyspace.clone(),
        shard: m.shard,
        shards: layout.serving,
        replica: m.replica,
        replicas: m.replicas,
        committed: layout.committed,
        committed_at_ms: layout.committed_at_ms,
    }
}
