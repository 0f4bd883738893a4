//! What a store knows about itself across restarts, in small files of its data directory:
//!
//! * `store-id`: its stable id, created on first start.
//! * `cluster-id`: the cluster it belongs to, adopted from the first master it registers with and
//!   checked on every hello afterwards, so a store pointed at another cluster's master (or
//!   tailed by another cluster's store) is refused instead of mixing same-named keyspaces.
//! * `last-run` and `clean-stop`: whether the previous run may have lost acknowledged writes.
//!   A process crash loses nothing (the WAL was written to the operating system before each
//!   write was acknowledged); a power failure loses what was not synced yet, unless the store
//!   ran with `--sync always` or stopped cleanly. A power failure means a reboot, which changes
//!   the kernel's boot id, so: the previous run may have lost writes when the boot id differs
//!   from the one it recorded, it did not stop cleanly, and it did not sync every write.
use crate::NodeError;
use std::io::Write;
use std::path::{Path, PathBuf};
use vasto_engine::SyncMode;

const STORE_ID_FILE: &str = "store-id";
const CLUSTER_ID_FILE: &str = "cluster-id";
const LAST_RUN_FILE: &str = "last-run";
const CLEAN_STOP_FILE: &str = "clean-stop";
/// Where Linux publishes the id of the current boot.
pub const BOOT_ID_PATH: &str = "/proc/sys/kernel/random/boot_id";

fn io_error(path: &Path, e: std::io::Error) -> NodeError {
    NodeError::Io(std::io::Error::new(e.kind(), format!("{}: {e}", path.display())))
}

/// Reads a small text file; `None` when it does not exist.
fn read_text(path: &Path) -> Result<Option<String>, NodeError> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_error(path, e)),
    }
}

/// Replaces `path` with `text` durably: written to a temporary file, synced, renamed over it, and
/// the directory synced, so a crash leaves either the old or the new content.
pub(crate) fn write_durably(path: &Path, text: &str) -> Result<(), NodeError> {
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::File::create(&tmp).map_err(|e| io_error(&tmp, e))?;
    file.write_all(text.as_bytes()).and_then(|()| file.sync_all()).map_err(|e| io_error(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| io_error(path, e))?;
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(|e| io_error(dir, e))
}

/// The store's stable id, created on first start in `DIR/store-id`.
pub fn load_or_create_store_id(dir: &Path) -> Result<String, NodeError> {
    let path = dir.join(STORE_ID_FILE);
    if let Some(id) = read_text(&path)?.filter(|id| !id.trim().is_empty()) {
        return Ok(id.trim().to_owned());
    }
    let id = format!("store-{:012x}", vasto_hash::random_id() >> 16);
    write_durably(&path, &id)?;
    Ok(id)
}

/// The cluster id recorded in `DIR/cluster-id` (`None` before the store first registered).
pub fn load_cluster_id(dir: &Path) -> Result<Option<u64>, NodeError> {
    let path = dir.join(CLUSTER_ID_FILE);
    match read_text(&path)? {
        None => Ok(None),
        Some(text) => u64::from_str_radix(text.trim(), 16)
            .ok()
            .filter(|&id| id != 0)
            .map(Some)
            .ok_or_else(|| NodeError::Master(format!("{}: not a cluster id: {:?}", path.display(), text.trim()))),
    }
}

/// Records `id` as the store's cluster (durably, before the store registers under it).
pub fn save_cluster_id(dir: &Path, id: u64) -> Result<(), NodeError> {
    write_durably(&dir.join(CLUSTER_ID_FILE), &format!("{id:016x}\n"))
}

/// Reads the current boot id from `boot_id_path` (`None` if it cannot be read: every start is
/// then treated as possibly after a power failure unless the last stop was clean).
fn boot_id(boot_id_path: &Path) -> Option<String> {
    std::fs::read_to_string(boot_id_path).ok().map(|s| s.trim().to_owned()).filter(|s| !s.is_empty())
}

/// True when the previous run may have lost acknowledged writes (see the module docs).
/// `holds_data`: the directory holds shards (a first start has nothing to lose).
pub fn previous_run_lost_writes(dir: &Path, boot_id_path: &Path, holds_data: bool) -> Result<bool, NodeError> {
    let current = boot_id(boot_id_path);
    let last = read_text(&dir.join(LAST_RUN_FILE))?;
    let clean = dir.join(CLEAN_STOP_FILE).exists();
    let field = |name: &str| last.as_deref().and_then(|t| t.lines().find_map(|l| l.strip_prefix(name)).map(str::to_owned));
    let same_boot = current.is_some() && field("boot_id=") == current;
    let synced_every_write = field("sync=").as_deref() == Some(SyncMode::Always.name());
    Ok(holds_data && !clean && !same_boot && !synced_every_write)
}

/// Records this run (boot id and sync mode) and clears the clean-stop mark: call once every
/// shard is open (with new log incarnations if [`previous_run_lost_writes`] said so), so a
/// crash before that decides the same way again.
pub fn record_run(dir: &Path, boot_id_path: &Path, sync: SyncMode) -> Result<(), NodeError> {
    let current = boot_id(boot_id_path).unwrap_or_default();
    write_durably(&dir.join(LAST_RUN_FILE), &format!("boot_id={current}\nsync={}\n", sync.name()))?;
    let path = dir.join(CLEAN_STOP_FILE);
    match std::fs::remove_file(&path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_error(&path, e)),
    }
}

/// Records that every acknowledged write was synced and the store stopped (call last).
pub fn mark_clean_stop(dir: &Path) -> Result<(), NodeError> {
    write_durably(&dir.join(CLEAN_STOP_FILE), "clean\n")
}

/// The default place the current boot id is read from.
pub fn default_boot_id_path() -> PathBuf {
    PathBuf::from(BOOT_ID_PATH)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_start_after_a_reboot_without_a_clean_stop_may_have_lost_writes() {
        let dir = tempfile::tempdir().unwrap();
        let boot = dir.path().join("boot_id");
        std::fs::write(&boot, "boot-1\n").unwrap();
        let run = |sync| {
            let lost = previous_run_lost_writes(dir.path(), &boot, true).unwrap();
            record_run(dir.path(), &boot, sync).unwrap();
            lost
        };
        assert!(run(SyncMode::EverySec), "no record of the previous run: assume the worst");
        assert!(!run(SyncMode::EverySec), "same boot: a process crash loses nothing");
        std::fs::write(&boot, "boot-2\n").unwrap();
        assert!(run(SyncMode::Always), "rebooted; the previous run synced only every second");
        std::fs::write(&boot, "boot-3\n").unwrap();
        assert!(!run(SyncMode::EverySec), "rebooted, but the previous run synced every write");
        mark_clean_stop(dir.path()).unwrap();
        std::fs::write(&boot, "boot-4\n").unwrap();
        assert!(!run(SyncMode::EverySec), "rebooted after a clean stop");
        std::fs::write(&boot, "boot-5\n").unwrap();
        assert!(run(SyncMode::None), "the clean-stop mark is used once");
        assert!(!previous_run_lost_writes(dir.path(), &dir.path().join("none"), false).unwrap(), "a store without data has nothing to lose");
    }

    #[test]
    fn ids_persist() {
        let dir = tempfile::tempdir().unwrap();
        let id = load_or_create_store_id(dir.path()).unwrap();
        assert_eq!(load_or_create_store_id(dir.path()).unwrap(), id);
        assert_eq!(load_cluster_id(dir.path()).unwrap(), None);
        save_cluster_id(dir.path(), 0xabc).unwrap();
        assert_eq!(load_cluster_id(dir.path()).unwrap(), Some(0xabc));
        std::fs::write(dir.path().join(CLUSTER_ID_FILE), "zz").unwrap();
        assert!(load_cluster_id(dir.path()).is_err(), "an unreadable cluster id is an error, not a fresh start");
    }
}
