//! `vasto admin backup` and `vasto admin restore`.
use anyhow::Context;
use clap::Args;
use indicatif::ProgressBar;
use std::path::PathBuf;
use std::sync::Arc;
use vasto_import::{Format, ImportOptions, Progress, RestoreOptions};

/// Flags of `vasto admin restore`.
#[derive(Args)]
pub struct RestoreArgs {
    /// The backup directory (written by `vasto admin backup`).
    pub dir: PathBuf,
    /// The keyspace to load it into (created when it does not exist).
    #[arg(long)]
    pub keyspace: String,
    /// Shards of the keyspace to create (default: the backup's). Any count works: entries are
    /// partitioned again.
    #[arg(long)]
    pub shards: Option<u32>,
    /// Replicas per shard of the keyspace to create (default: the backup's).
    #[arg(long)]
    pub replicas: Option<u32>,
    /// Memory for sorting, in MiB; larger backups are sorted in runs on disk.
    #[arg(long, default_value_t = 512)]
    pub memory_mb: usize,
    /// Directory for the SST files (default: the system temp directory).
    #[arg(long)]
    pub work_dir: Option<PathBuf>,
}

fn import_options(token: &crate::token_arg::TokenArg, memory_mb: usize, work_dir: Option<PathBuf>) -> anyhow::Result<ImportOptions> {
    if memory_mb == 0 {
        anyhow::bail!("--memory-mb must be at least 1");
    }
    // Format, event time and skip_bad concern parsed input only; a restore keeps each entry's own.
    Ok(ImportOptions {
        format: Format::Tsv,
        event_time_ns: 0,
        skip_bad: false,
        memory_bytes: memory_mb.saturating_mul(1 << 20),
        work_dir,
        token: token.load()?,
    })
}

/// Backs `keyspace` up into `to` and prints what the manifest records.
pub async fn backup(master: &str, token: &crate::token_arg::TokenArg, keyspace: &str, to: PathBuf) -> anyhow::Result<()> {
    let options = import_options(token, 1, None)?;
    let report = vasto_import::backup(master, keyspace, &to, &options).await.with_context(|| format!("backing up {keyspace} into {}", to.display()))?;
    let m = &report.manifest;
    let entries: u64 = m.taken.iter().map(|s| s.entries).sum();
    println!(
        "backed up {keyspace} ({} shards, {entries} entries, {:.1} MB of files) into {} in {:.2} s",
        m.shards,
        report.bytes as f64 / 1e6,
        to.display(),
        report.took.as_secs_f64()
    );
    for s in m.taken.iter().filter(|s| !s.peers_down.is_empty()) {
        eprintln!("warning: shard {}: {} down; writes only they took and had not replicated are not in the backup", s.shard, s.peers_down.join(", "));
    }
    Ok(())
}

/// Restores a backup and prints a summary line.
pub async fn restore(master: &str, token: &crate::token_arg::TokenArg, args: RestoreArgs) -> anyhow::Result<()> {
    let options = RestoreOptions { shards: args.shards, replicas: args.replicas, import: import_options(token, args.memory_mb, args.work_dir)? };
    if options.shards == Some(0) || options.replicas == Some(0) {
        anyhow::bail!("--shards and --replicas must be at least 1");
    }
    let progress = Arc::new(Progress::default());
    let bar = ProgressBar::new(0);
    let watcher = tokio::spawn(crate::import_cmd::show_progress(Arc::clone(&progress), bar.clone(), "entries"));
    let result = vasto_import::restore(master, &args.dir, &args.keyspace, &options, Arc::clone(&progress)).await;
    watcher.abort();
    bar.finish_and_clear();
    let r = result.with_context(|| format!("restoring {} into {}", args.dir.display(), args.keyspace))?;
    println!(
        "restored {} entries of {} (backed up with {} shards) into {}{} ({} shards x {} replicas) in {:.2} s (read {:.2} s, send and ingest {:.2} s, {:.1} MB)",
        r.entries,
        r.manifest.keyspace,
        r.manifest.shards,
        args.keyspace,
        if r.created { ", created" } else { "" },
        r.shards,
        r.replicas,
        (r.prepare + r.upload).as_secs_f64(),
        r.prepare.as_secs_f64(),
        r.upload.as_secs_f64(),
        r.sst_bytes as f64 / 1e6
    );
    Ok(())
}
