//! Resize copies share one export per source replica: the first receiving replica that asks
//! triggers one scan of a RocksDB snapshot that writes every moving key into SST files per
//! target shard; every receiving replica (each target shard, each of its replicas) is then sent
//! its own files from that export. Without this, each of them would scan the whole source.
use crate::registry::Replica;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use vasto_engine::{EngineError, SplitFiles};

/// An export is reused for this long (and while the change log still reaches back to it).
const REUSE_FOR: Duration = Duration::from_secs(120);
/// Target size of one exported SST file.
const FILE_BYTES: u64 = 64 << 20;

/// Heavy background work of this store (exports for copies, compaction after a resize) takes
/// turns: one at a time, so it never takes more than one core from the foreground.
static HEAVY_WORK: Mutex<()> = Mutex::new(());

/// Waits for this store's turn at heavy background work (see [`HEAVY_WORK`]); blocking, call
/// it from a helper thread.
pub fn heavy_work_turn() -> std::sync::MutexGuard<'static, ()> {
    HEAVY_WORK.lock().unwrap_or_else(|p| p.into_inner())
}

/// A replica estimated to hold fewer keys than this is exported without waiting for the turn:
/// its export costs next to nothing, and waiting only lets it grow. Measured: the new replicas
/// of a resize ask each other for a snapshot as they start, empty; those requests waited behind
/// the exports that fill them and then exported each new shard whole, 10-15 s after the commit.
pub const SMALL_EXPORT_KEYS: u64 = 10_000;

/// The turn for exporting a replica of about `keys` keys: `None`, at once, when it is small
/// (see [`SMALL_EXPORT_KEYS`]), else [`heavy_work_turn`].
pub fn export_turn(keys: u64) -> Option<std::sync::MutexGuard<'static, ()>> {
    (keys >= SMALL_EXPORT_KEYS).then(heavy_work_turn)
}

/// Runs `f` on a new named thread and waits for its result without blocking the calling
/// runtime (monoio or tokio), so a core keeps serving while RocksDB works.
pub async fn on_helper_thread<T: Send + 'static>(name: &str, f: impl FnOnce() -> Result<T, EngineError> + Send + 'static) -> Result<T, EngineError> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            let _ = tx.send(f());
        })
        .map_err(|source| EngineError::Io { path: PathBuf::from(format!("<thread {name}>")), source })?;
    rx.await.unwrap_or_else(|_| Err(EngineError::Corrupt(format!("the {name} thread died"))))
}

/// The moving keys of one source replica, split by target shard; the files are removed when
/// the last user lets go.
pub struct SplitExport {
    dir: PathBuf,
    split: SplitFiles,
}

impl SplitExport {
    /// The files for `shard` (empty when no key moves there).
    pub fn files_for(&self, shard: u32) -> &[PathBuf] {
        self.split.targets.iter().find(|(t, _)| *t == shard).map_or(&[], |(_, f)| f.as_slice())
    }

    /// The change-log position the files are consistent with: tail after it.
    pub fn position(&self) -> vasto_engine::LogPosition {
        self.split.position
    }
}

impl Drop for SplitExport {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.dir) {
            tracing::warn!(dir = %self.dir.display(), error = %e, "could not remove resize copy files");
        }
    }
}

type Cell = Arc<tokio::sync::OnceCell<Arc<SplitExport>>>;

/// The current shared export of a replica, if any.
#[derive(Default)]
pub struct SplitCache(Mutex<Option<(u32, Instant, Cell)>>);

impl SplitCache {
    /// Forgets the shared export (its files go once no transfer uses them); called when the
    /// replica's layout changes.
    pub fn clear(&self) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    /// The export of `replica`'s moving keys under `shards` shards: the shared one if it is
    /// recent and the change log still reaches back to it, else a new one (concurrent callers
    /// wait for the same export).
    /// Reads at the pace of `rate`.
    pub async fn get(&self, replica: &Arc<Replica>, shards: u32, rate: &vasto_engine::MoveRate) -> Result<Arc<SplitExport>, String> {
        let cell = {
            let mut slot = self.0.lock().unwrap_or_else(|p| p.into_inner());
            let fresh = slot
                .as_ref()
                .is_some_and(|(n, at, cell)| *n == shards && at.elapsed() < REUSE_FOR && cell.get().is_none_or(|e| replica.log_reaches(e.position())));
            if !fresh {
                *slot = Some((shards, Instant::now(), Arc::new(tokio::sync::OnceCell::new())));
            }
            slot.as_ref().map(|(_, _, cell)| Arc::clone(cell)).ok_or("no export slot")?
        };
        let export = cell
            .get_or_try_init(|| async {
                let dir = replica.dir().with_extension(format!("split-{shards}-{}", vasto_engine::now_ns()));
                let (source, out, rate) = (Arc::clone(replica), dir.clone(), rate.clone());
                let split = on_helper_thread("vasto-split", move || {
                    let _turn = export_turn(source.estimated_keys());
                    source.export_moving(&out, FILE_BYTES, shards, &rate)
                })
                .await;
                match split {
                    Ok(split) => {
                        tracing::info!(keyspace = %replica.meta().keyspace, shard = replica.meta().shard, shards, targets = split.targets.len(), "exported the keys a resize moves");
                        Ok(Arc::new(SplitExport { dir, split }))
                    }
                    Err(e) => {
                        let _ = std::fs::remove_dir_all(&dir);
                        Err(e.to_string())
                    }
                }
            })
            .await?;
        Ok(Arc::clone(export))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    #[test]
    fn a_small_export_does_not_wait_for_the_turn_and_a_large_one_does() {
        let held = heavy_work_turn();
        let (tx, rx) = mpsc::channel();
        let small = tx.clone();
        std::thread::spawn(move || small.send(("small", export_turn(SMALL_EXPORT_KEYS - 1).is_none())));
        assert_eq!(rx.recv_timeout(Duration::from_secs(30)), Ok(("small", true)), "a small export went ahead while the turn was held");
        std::thread::spawn(move || tx.send(("large", export_turn(SMALL_EXPORT_KEYS).is_some())));
        assert!(rx.recv_timeout(Duration::from_millis(200)).is_err(), "a large export went ahead while the turn was held");
        drop(held);
        assert_eq!(rx.recv_timeout(Duration::from_secs(30)), Ok(("large", true)), "the large export took the turn once it was free");
    }
}
