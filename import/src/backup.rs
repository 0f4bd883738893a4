//! `vasto admin backup`: the master has one replica of every shard write a RocksDB checkpoint
//! into the backup directory (see the master's `backup` module for when each is taken); this
//! side then reads every checkpoint back (checking every block), and writes the manifest last,
//! so a directory without one is a backup that did not finish.
//!
//! The backup directory must be reachable under the same absolute path by every store holding
//! a chosen replica (the stores write the checkpoints) and by the machine running the command
//! (it writes the manifest): the local disk on a single machine, a shared mount otherwise.
//! RocksDB hard-links the checkpoint's files when the directory is on the store's data
//! filesystem, and copies them otherwise.
use crate::manifest::{list_files, BackupManifest, ShardBackup, FORMAT, MANIFEST_FILE};
use crate::{BackupError, ImportOptions};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// What the master answers once every checkpoint is written.
#[derive(Debug, Deserialize)]
struct Taken {
    keyspace: String,
    keyspace_incarnation: String,
    shards: u32,
    replicas: u32,
    routing_version: u64,
    started_at_ms: u64,
    finished_at_ms: u64,
    taken: Vec<ShardTaken>,
}

#[derive(Debug, Deserialize)]
struct ShardTaken {
    shard: u32,
    store: String,
    replica: u32,
    dir: String,
    log_incarnation: u64,
    log_position: u64,
    #[serde(default)]
    peers_down: Vec<String>,
}

/// What a backup wrote.
#[derive(Debug, Clone)]
pub struct BackupReport {
    /// The manifest, as written to `DIR/manifest.json`.
    pub manifest: BackupManifest,
    /// Bytes of every checkpoint's files (hard links count in full).
    pub bytes: u64,
    /// How long the whole backup took.
    pub took: Duration,
}

/// Backs up `keyspace` into `dir`, which must not exist or be empty (it is created). Returns
/// once every checkpoint has been read back and the manifest is on disk.
pub async fn backup(master: &str, keyspace: &str, dir: &Path, options: &ImportOptions) -> Result<BackupReport, BackupError> {
    let started = Instant::now();
    let target = prepare_target(dir)?;
    match take(master, keyspace, &target, options).await {
        Ok(manifest) => {
            let bytes = manifest.taken.iter().flat_map(|s| &s.files).map(|f| f.bytes).sum();
            Ok(BackupReport { manifest, bytes, took: started.elapsed() })
        }
        // The directory was empty: leave it so, or say that what is in it now is no backup.
        Err(e) if std::fs::remove_dir(&target).is_ok() => Err(e),
        Err(e) => Err(BackupError::Leftover { dir: target, source: Box::new(e) }),
    }
}

/// Has the master take the checkpoints into `target`, then reads them back and writes the
/// manifest.
async fn take(master: &str, keyspace: &str, target: &Path, options: &ImportOptions) -> Result<BackupManifest, BackupError> {
    let config = vasto_client::ClientConfig { timeout: Duration::from_secs(4 * 3600), ..options.client() };
    let mut admin = vasto_client::AdminClient::connect_with(master, &config).await?;
    let json = admin.backup_keyspace(keyspace, &target.to_string_lossy()).await?;
    let taken: Taken =
        serde_json::from_str(&json).map_err(|e| BackupError::Master(format!("the master's account of the backup is not understood: {e}: {json}")))?;
    let target = target.to_path_buf();
    tokio::task::spawn_blocking(move || verify_taken(&target, taken))
        .await
        .map_err(|e| BackupError::Master(format!("reading the checkpoints back stopped: {e}")))?
}

/// Creates `dir` (refusing one that holds anything) and returns its absolute path.
fn prepare_target(dir: &Path) -> Result<PathBuf, BackupError> {
    let io = |source| BackupError::Io { path: dir.to_path_buf(), source };
    if dir.exists() && std::fs::read_dir(dir).map_err(io)?.next().is_some() {
        return Err(BackupError::Target(format!("{} exists and is not empty; back up into a new directory", dir.display())));
    }
    std::fs::create_dir_all(dir).map_err(io)?;
    std::fs::canonicalize(dir).map_err(io)
}

/// Reads every checkpoint back and writes the manifest (blocking).
fn verify_taken(dir: &Path, taken: Taken) -> Result<BackupManifest, BackupError> {
    let mut shards = Vec::with_capacity(taken.taken.len());
    for t in taken.taken {
        let at = dir.join(&t.dir);
        if !at.is_dir() {
            return Err(BackupError::Target(format!(
                "store {} wrote the checkpoint of shard {} to {} on its own machine, which this machine does not see: DIR must be the same path on the stores and here (a shared mount); remove that directory on the store",
                t.store,
                t.shard,
                at.display()
            )));
        }
        let summary = vasto_engine::read_checkpoint(&at, |_, _| Ok(()))
            .map_err(|e| BackupError::Corrupt(format!("the checkpoint of shard {} in {} cannot be read back: {e}", t.shard, at.display())))?;
        let shard = ShardBackup {
            shard: t.shard,
            store: t.store,
            replica: t.replica,
            files: list_files(&at)?,
            dir: t.dir,
            log_incarnation: t.log_incarnation,
            log_position: t.log_position,
            peers_down: t.peers_down,
            entries: summary.entries,
            max_event_time_ns: summary.max_event_time_ns,
        };
        shard.check_identity(&summary, &taken.keyspace, &taken.keyspace_incarnation, taken.shards)?;
        shards.push(shard);
    }
    let manifest = BackupManifest {
        format: FORMAT,
        keyspace: taken.keyspace,
        keyspace_incarnation: taken.keyspace_incarnation,
        shards: taken.shards,
        replicas: taken.replicas,
        routing_version: taken.routing_version,
        started_at_ms: taken.started_at_ms,
        finished_at_ms: taken.finished_at_ms,
        taken: shards,
    };
    manifest.check_complete()?;
    write_manifest(dir, &manifest)?;
    Ok(manifest)
}

/// Writes `DIR/manifest.json` durably: a temporary file, synced, renamed into place, and the
/// directory synced.
fn write_manifest(dir: &Path, manifest: &BackupManifest) -> Result<(), BackupError> {
    use std::io::Write;
    let path = dir.join(MANIFEST_FILE);
    let tmp = dir.join(format!("{MANIFEST_FILE}.tmp"));
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| BackupError::Io { path, source }
    };
    let json = serde_json::to_vec_pretty(manifest).map_err(|e| BackupError::Master(format!("encoding the manifest: {e}")))?;
    let mut file = std::fs::File::create(&tmp).map_err(io(&tmp))?;
    file.write_all(&json).map_err(io(&tmp))?;
    file.sync_all().map_err(io(&tmp))?;
    std::fs::rename(&tmp, &path).map_err(io(&path))?;
    std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))
}
