//! `vasto admin restore`: loads a backup into a keyspace of any shard count, on this cluster or
//! another, through the import path. Every checkpoint is read back (each block checked, every
//! shard's entry count and newest event time compared with the manifest) and its entries are
//! partitioned by the target's shard count into SST runs, before anything is created or sent;
//! then the runs go to every replica like an import's. Values keep their own event times,
//! expiries and tombstones, and ingesting goes through the last-writer-wins merge: restoring
//! into a keyspace that has newer writes never overwrites them, and restoring twice changes
//! nothing.
use crate::manifest::BackupManifest;
use crate::partition::Partitioner;
use crate::{leased, routing_for, send_runs, work_dir, BackupError, ImportError, ImportOptions, Progress, Runs};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use vasto_client::{AdminClient, Client, ClientError};

/// How to restore.
#[derive(Debug, Clone)]
pub struct RestoreOptions {
    /// Shard count of the keyspace to create (default: the backup's). For a keyspace that
    /// exists, its own count is used, and a different one asked for is refused.
    pub shards: Option<u32>,
    /// Replicas per shard of the keyspace to create (default: the backup's).
    pub replicas: Option<u32>,
    /// The import settings (memory budget, work directory, token).
    pub import: ImportOptions,
}

/// What a restore did.
#[derive(Debug, Clone)]
pub struct RestoreReport {
    /// The backup's manifest.
    pub manifest: BackupManifest,
    /// Entries loaded (tombstones included).
    pub entries: u64,
    /// Bytes of the SST files sent (once per shard; each went to every replica).
    pub sst_bytes: u64,
    /// The keyspace's shard count and replicas.
    pub shards: u32,
    /// See `shards`.
    pub replicas: u32,
    /// Whether the restore created the keyspace.
    pub created: bool,
    /// Time spent reading the backup and writing SST runs.
    pub prepare: Duration,
    /// Time spent sending and ingesting.
    pub upload: Duration,
}

/// Restores the backup in `dir` into `keyspace` (created when it does not exist).
pub async fn restore(master: &str, dir: &Path, keyspace: &str, options: &RestoreOptions, progress: Arc<Progress>) -> Result<RestoreReport, BackupError> {
    let manifest = BackupManifest::load(dir)?;
    manifest.check_files(dir)?;
    let client = Client::connect_with(master, options.import.client()).await?;
    let existing = match client.keyspace(keyspace).await {
        Ok(ks) => ks.routing_table().map(|t| (t.shards, t.replicas)),
        Err(ClientError::UnknownKeyspace(_)) => None,
        Err(e) => return Err(e.into()),
    };
    let (shards, replicas) = match existing {
        Some((have, _)) if options.shards.is_some_and(|want| want != have) => {
            return Err(BackupError::Target(format!(
                "keyspace {keyspace} exists with {have} shards, not the {} asked for: resize it, or restore into a new keyspace",
                options.shards.unwrap_or_default()
            )));
        }
        Some((_, have)) if options.replicas.is_some_and(|want| want != have) => {
            return Err(BackupError::Target(format!(
                "keyspace {keyspace} exists with {have} replicas per shard, not the {} asked for: restore into a new keyspace",
                options.replicas.unwrap_or_default()
            )));
        }
        Some(counts) => counts,
        None => (options.shards.unwrap_or(manifest.shards), options.replicas.unwrap_or(manifest.replicas)),
    };
    let started = Instant::now();
    let (runs, entries) = {
        let (dir, manifest, import, progress) = (dir.to_path_buf(), manifest.clone(), options.import.clone(), Arc::clone(&progress));
        tokio::task::spawn_blocking(move || read_backup(&dir, &manifest, shards, &import, &progress))
            .await
            .map_err(|e| BackupError::Master(format!("reading the backup stopped: {e}")))??
    };
    let prepare = started.elapsed();
    let mut created = false;
    if existing.is_none() {
        let mut admin = AdminClient::connect_with(master, &options.import.client()).await?;
        // "already exists": someone created it since it was looked up; it is loaded all the same.
        created = !admin.create_keyspace_placed(keyspace, shards, replicas, false).await?.contains("already exists");
    }
    let uploading = Instant::now();
    let import = &options.import;
    let sent = leased(master, keyspace, import, |given| async move {
        if given != shards {
            return Err(ImportError::Busy(format!(
                "keyspace {keyspace} now has {given} shards, not the {shards} the backup was partitioned for; restore again"
            )));
        }
        let table = routing_for(master, keyspace, given, import).await?;
        send_runs(keyspace, &table, runs, import, &progress).await
    })
    .await;
    let sst_bytes = match sent {
        Ok(bytes) => bytes,
        Err(e) if created => return Err(BackupError::Unfinished { keyspace: keyspace.to_owned(), source: e }),
        Err(e) => return Err(e.into()),
    };
    Ok(RestoreReport { manifest, entries, sst_bytes, shards, replicas, created, prepare, upload: uploading.elapsed() })
}

/// Reads every shard's checkpoint, checking it against the manifest, into SST runs for
/// `shards` shards (blocking). Returns the runs and the entries read.
fn read_backup(dir: &Path, manifest: &BackupManifest, shards: u32, options: &ImportOptions, progress: &Progress) -> Result<(Runs, u64), BackupError> {
    let work = work_dir(options)?;
    let mut partitioner = Partitioner::for_stored_values(shards, options.memory_bytes, work.path());
    let files_bytes = |s: &crate::manifest::ShardBackup| s.files.iter().map(|f| f.bytes).sum::<u64>();
    progress.input_total.store(manifest.taken.iter().map(files_bytes).sum(), Ordering::Relaxed);
    let mut entries = 0u64;
    for shard in &manifest.taken {
        let at: PathBuf = dir.join(&shard.dir);
        let mut failed = None;
        let summary = vasto_engine::read_checkpoint(&at, |key, stored| match partitioner.push(key, stored) {
            Ok(()) => {
                entries += 1;
                progress.records.store(entries, Ordering::Relaxed);
                Ok(())
            }
            Err(e) => {
                failed = Some(e);
                Err(vasto_engine::EngineError::Retired)
            }
        });
        if let Some(e) = failed {
            return Err(e.into());
        }
        let summary = summary.map_err(|e| BackupError::Corrupt(format!("shard {} in {}: {e}", shard.shard, at.display())))?;
        shard.check_identity(&summary, &manifest.keyspace, &manifest.keyspace_incarnation, manifest.shards)?;
        shard.check_contents(&summary)?;
        progress.input_bytes.fetch_add(files_bytes(shard), Ordering::Relaxed);
    }
    let (files, bytes) = partitioner.finish()?;
    Ok((Runs { dir: work, files, bytes }, entries))
}
