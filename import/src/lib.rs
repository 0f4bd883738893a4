//! Bulk import of a key-value file into a keyspace, bypassing the write path.
//!
//! The input is memory-mapped and parsed (TSV, CSV or JSON lines); records are partitioned by
//! the keyspace's jump hash, sorted within a memory budget (spilling sorted runs: an external
//! sort) and written as SST files holding stored values (header included) as merge operands;
//! the files of each shard are streamed to every replica of the shard, which ingests them.
//! Ingestion goes through the last-writer-wins merge, so an import never overwrites a newer live
//! write, and importing the same file twice changes nothing. Malformed lines are collected with
//! their line numbers; unless told to skip them, the import stops before anything is sent.

#![warn(missing_docs)]

mod backup;
pub mod manifest;
pub mod parse;
mod partition;
mod restore;
mod upload;

pub use backup::{backup, BackupReport};
pub use manifest::BackupManifest;
pub use parse::{BadLine, Format};
pub use restore::{restore, RestoreOptions, RestoreReport};

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use thiserror::Error;
use vasto_client::{Client, ClientConfig, ClientError, ClusterToken};

/// Bad lines kept (with their line numbers) for the report and the error.
pub const BAD_LINES_KEPT: usize = 20;
/// Replica uploads in flight at once.
const PARALLEL_UPLOADS: usize = 4;

/// Why an import failed.
#[derive(Debug, Error)]
pub enum ImportError {
    /// The master or the keyspace could not be reached.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The input file could not be opened or mapped.
    #[error("cannot read {path}: {source}")]
    Input {
        /// The input file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// Malformed lines and no `skip_bad`: nothing was sent to any store.
    #[error("{count} malformed line(s), first: {}; nothing was imported (fix them, or skip them with --skip-bad)", describe(.first))]
    BadInput {
        /// How many lines are malformed.
        count: u64,
        /// The first of them.
        first: Vec<BadLine>,
    },
    /// The keyspace is being resized: its shard count is about to change.
    #[error("keyspace {0} is being resized; import once the resize is over")]
    Resizing(String),
    /// Another operation (a resize, a replace, a repair, another import) runs on the keyspace.
    #[error("{0}")]
    Busy(String),
    /// The connection to the master, which held the import's lease, was lost: the import
    /// stopped. Shards already ingested keep the data; running the same import again is safe.
    #[error("the connection to the master was lost during the import, so it stopped; running the same import again is safe")]
    LeaseLost,
    /// A replica that must receive the files is down.
    #[error("replica {replica} of shard {shard} is down (every replica must receive the import); nothing was imported")]
    ReplicaDown {
        /// The shard.
        shard: u32,
        /// The replica index.
        replica: usize,
    },
    /// The work directory could not be used.
    #[error("work directory {path}: {source}")]
    WorkDir {
        /// The directory.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// An SST file could not be written (disk full, ...).
    #[error("writing {0}: {1}")]
    Sst(PathBuf, vasto_engine::EngineError),
    /// Sending to, or ingesting on, a replica failed. Shards already ingested keep the data;
    /// running the same import again is safe (it changes nothing where it already landed).
    #[error("shard {shard} on {address}: {message} (running the same import again is safe)")]
    Upload {
        /// The shard.
        shard: u32,
        /// The store's address.
        address: String,
        /// What went wrong.
        message: String,
    },
}

/// Why a backup or a restore failed.
#[derive(Debug, Error)]
pub enum BackupError {
    /// The master or the keyspace could not be reached, or the master refused.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// Loading the backup into the keyspace failed (see [`ImportError`]).
    #[error(transparent)]
    Import(#[from] ImportError),
    /// A file or directory of the backup could not be used.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The target cannot take the backup or the restore as asked.
    #[error("{0}")]
    Target(String),
    /// A backup failed after writing into its directory, which therefore holds no backup.
    #[error("{source} ({dir} holds what the failed backup wrote, which is not a backup: remove it)")]
    Leftover {
        /// The backup directory.
        dir: PathBuf,
        /// Why the backup failed.
        source: Box<BackupError>,
    },
    /// The restore created the keyspace, then loading it failed: it holds part of the backup.
    #[error(
        "{source}; keyspace {keyspace} was created and holds part of the backup: run the same restore again to finish it (it is safe), or delete the keyspace"
    )]
    Unfinished {
        /// The keyspace created.
        keyspace: String,
        /// Why loading it failed.
        source: ImportError,
    },
    /// The backup is incomplete (no manifest, a shard or file missing): nothing was restored.
    #[error("incomplete backup: {0}")]
    Partial(String),
    /// The backup is damaged (a file's size or contents do not match): nothing was restored.
    #[error("corrupt backup: {0}")]
    Corrupt(String),
    /// The master's answer was not understood, or a helper task stopped.
    #[error("{0}")]
    Master(String),
}

fn describe(lines: &[BadLine]) -> String {
    lines.first().map_or_else(String::new, |b| format!("line {}: {}", b.line, b.reason))
}

/// How to import.
#[derive(Debug, Clone)]
pub struct ImportOptions {
    /// Input format.
    pub format: Format,
    /// Event time of every imported record (ns since the Unix epoch); a live write with a later
    /// event time is never overwritten.
    pub event_time_ns: u64,
    /// Import the valid lines and report the malformed ones instead of stopping.
    pub skip_bad: bool,
    /// Records buffered before a sorted run is written (the external sort's memory budget).
    pub memory_bytes: usize,
    /// Where the SST files are written (default: the system's temp directory).
    pub work_dir: Option<PathBuf>,
    /// The cluster token proven to the master and the stores (`None`: an open cluster).
    pub token: Option<ClusterToken>,
}

impl ImportOptions {
    /// The client settings of the import's connections.
    fn client(&self) -> ClientConfig {
        ClientConfig { token: self.token.clone(), ..ClientConfig::default() }
    }
}

/// Counters the caller may watch (e.g. for a progress bar) while an import runs.
#[derive(Debug, Default)]
pub struct Progress {
    /// Input bytes parsed so far, out of `input_total`.
    pub input_bytes: AtomicU64,
    /// Size of the input.
    pub input_total: AtomicU64,
    /// Valid records read so far.
    pub records: AtomicU64,
    /// Malformed lines so far.
    pub bad_lines: AtomicU64,
    /// SST bytes sent so far, out of `upload_total` (known once every file is written).
    pub upload_bytes: AtomicU64,
    /// SST bytes to send, counting every replica.
    pub upload_total: AtomicU64,
}

/// What an import did.
#[derive(Debug, Clone)]
pub struct ImportReport {
    /// Records imported.
    pub records: u64,
    /// Malformed lines skipped.
    pub bad_lines: u64,
    /// The first of them.
    pub first_bad: Vec<BadLine>,
    /// Size of the input file.
    pub input_bytes: u64,
    /// Size of the SST files of all shards (each sent to every replica of its shard).
    pub sst_bytes: u64,
    /// Shards and replicas of the keyspace.
    pub shards: u32,
    /// Replicas per shard.
    pub replicas: u32,
    /// Time spent parsing, sorting and writing SST files.
    pub prepare: Duration,
    /// Time spent sending and ingesting.
    pub upload: Duration,
}

/// How long the importer waits for its routing table to show the shard count the master gave.
const TABLE_WAIT: Duration = Duration::from_secs(10);

/// Imports `input` into `keyspace` through the master at `master`. The master is told first
/// (`BeginImport`): no resize or replace of the keyspace can start until the import is over,
/// and the import is refused while one runs; each store checks the layout again as it ingests.
pub async fn import(master: &str, keyspace: &str, input: &Path, options: &ImportOptions, progress: Arc<Progress>) -> Result<ImportReport, ImportError> {
    leased(master, keyspace, options, |shards| import_leased(master, keyspace, shards, input, options, progress)).await
}

/// Runs `work` with the shard count the master gave while holding the import lease on
/// `keyspace` (see [`import`]); stops it with [`ImportError::LeaseLost`] if the lease is lost.
pub(crate) async fn leased<T, F>(master: &str, keyspace: &str, options: &ImportOptions, work: impl FnOnce(u32) -> F) -> Result<T, ImportError>
where
    F: std::future::Future<Output = Result<T, ImportError>>,
{
    let mut lease = vasto_client::AdminClient::connect_with(master, &options.client()).await?;
    let shards = lease.begin_import(keyspace).await.map_err(|e| match e {
        ClientError::Server { status: vasto_wire::Status::Unavailable, message } => ImportError::Busy(message),
        other => other.into(),
    })?;
    // Uploading without the lease could race a replace started by a restarted master (its new
    // replicas would copy snapshots taken before the ingest): stop if the lease is lost.
    let result = tokio::select! {
        result = work(shards) => result,
        () = lease.closed() => Err(ImportError::LeaseLost),
    };
    if let Err(e) = lease.end_import(keyspace).await {
        // Closing the connection ends the lease too.
        tracing::debug!(error = %e, "ending the import lease");
    }
    result
}

async fn import_leased(
    master: &str,
    keyspace: &str,
    shards: u32,
    input: &Path,
    options: &ImportOptions,
    progress: Arc<Progress>,
) -> Result<ImportReport, ImportError> {
    let table = routing_for(master, keyspace, shards, options).await?;
    let started = Instant::now();
    let (runs, prepared) = {
        let (input, options, progress) = (input.to_path_buf(), options.clone(), Arc::clone(&progress));
        let shards = table.shards;
        tokio::task::spawn_blocking(move || prepare(&input, shards, &options, &progress))
            .await
            .map_err(|e| ImportError::Input { path: PathBuf::new(), source: std::io::Error::other(e.to_string()) })??
    };
    if prepared.bad_lines > 0 && !options.skip_bad {
        return Err(ImportError::BadInput { count: prepared.bad_lines, first: prepared.first_bad });
    }
    let prepare_time = started.elapsed();
    let uploading = Instant::now();
    let sst_bytes = send_runs(keyspace, &table, runs, options, &progress).await?;
    Ok(ImportReport {
        records: prepared.records,
        bad_lines: prepared.bad_lines,
        first_bad: prepared.first_bad,
        input_bytes: prepared.input_bytes,
        sst_bytes,
        shards: table.shards,
        replicas: table.replicas,
        prepare: prepare_time,
        upload: uploading.elapsed(),
    })
}

/// The routing table of `keyspace` once it shows the `shards` the master gave the lease for,
/// with every replica up (each must receive the files).
pub(crate) async fn routing_for(master: &str, keyspace: &str, shards: u32, options: &ImportOptions) -> Result<Arc<vasto_client::RoutingTable>, ImportError> {
    let client = Client::connect_with(master, options.client()).await?;
    let ks = client.keyspace(keyspace).await?;
    let deadline = Instant::now() + TABLE_WAIT;
    let table = loop {
        let table = ks.routing_table().ok_or_else(|| ClientError::UnknownKeyspace(keyspace.to_owned()))?;
        if table.shards == shards && table.resizing_to == 0 {
            break table;
        }
        if Instant::now() > deadline {
            return Err(ImportError::Resizing(keyspace.to_owned()));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    for (shard, replicas) in table.routes.iter().enumerate() {
        if let Some(replica) = replicas.iter().position(|r| !r.up || r.address.is_empty()) {
            return Err(ImportError::ReplicaDown { shard: shard as u32, replica });
        }
    }
    Ok(table)
}

/// Sends each shard's files to every replica of it (a few at a time) and waits until all have
/// ingested them; returns the bytes of the files (counted once per shard). The work directory
/// is removed once every upload is over.
pub(crate) async fn send_runs(
    keyspace: &str,
    table: &vasto_client::RoutingTable,
    runs: Runs,
    options: &ImportOptions,
    progress: &Arc<Progress>,
) -> Result<u64, ImportError> {
    let sst_bytes: u64 = runs.bytes.iter().sum();
    progress.upload_total.store(sst_bytes * u64::from(table.replicas), Ordering::Relaxed);
    let shards = table.shards;
    let uploads: Vec<upload::Upload> = table
        .routes
        .iter()
        .enumerate()
        .filter(|(shard, _)| runs.files.get(*shard).is_some_and(|f| !f.is_empty()))
        .flat_map(|(shard, replicas)| {
            let files = runs.files[shard].clone();
            replicas.iter().map(move |r| upload::Upload {
                keyspace: keyspace.to_owned(),
                shard: shard as u32,
                shards,
                address: r.address.clone(),
                files: files.clone(),
                client: options.client(),
            })
        })
        .collect();
    let limit = Arc::new(tokio::sync::Semaphore::new(PARALLEL_UPLOADS));
    // A JoinSet: if the import is abandoned (its lease lost), dropping it aborts every upload.
    let mut tasks = tokio::task::JoinSet::new();
    for u in uploads {
        let (limit, progress) = (Arc::clone(&limit), Arc::clone(progress));
        tasks.spawn(async move {
            let _permit = limit.acquire_owned().await;
            u.run(&progress).await
        });
    }
    let mut first_err = None;
    while let Some(joined) = tasks.join_next().await {
        let result = joined.unwrap_or_else(|e| Err(ImportError::Upload { shard: 0, address: String::new(), message: e.to_string() }));
        if let Err(e) = result {
            first_err.get_or_insert(e);
        }
    }
    drop(runs.dir);
    first_err.map_or(Ok(sst_bytes), Err)
}

/// The SST files of every shard, in a work directory removed when this is dropped.
pub(crate) struct Runs {
    pub dir: tempfile::TempDir,
    pub files: Vec<Vec<PathBuf>>,
    /// Bytes of each shard's files.
    pub bytes: Vec<u64>,
}

/// What parsing found.
struct Prepared {
    records: u64,
    bad_lines: u64,
    first_bad: Vec<BadLine>,
    input_bytes: u64,
}

/// A new work directory for SST files under the options' (or the system's temp) directory.
pub(crate) fn work_dir(options: &ImportOptions) -> Result<tempfile::TempDir, ImportError> {
    let base = options.work_dir.clone().unwrap_or_else(std::env::temp_dir);
    tempfile::Builder::new().prefix("vasto-import-").tempdir_in(&base).map_err(|source| ImportError::WorkDir { path: base.clone(), source })
}

/// Maps, parses, partitions and writes the SST files (blocking).
fn prepare(input: &Path, shards: u32, options: &ImportOptions, progress: &Progress) -> Result<(Runs, Prepared), ImportError> {
    let input_err = |source| ImportError::Input { path: input.to_path_buf(), source };
    let file = std::fs::File::open(input).map_err(input_err)?;
    let len = file.metadata().map_err(input_err)?.len();
    progress.input_total.store(len, Ordering::Relaxed);
    // SAFETY: the map is only read; the input file must not be truncated while the import runs
    // (the same contract as any reader of a file another process could change).
    let map = if len == 0 { None } else { Some(unsafe { memmap2::Mmap::map(&file) }.map_err(input_err)?) };
    let data: &[u8] = map.as_deref().unwrap_or_default();
    if let Some(map) = &map {
        let _ = map.advise(memmap2::Advice::Sequential);
    }
    let dir = work_dir(options)?;
    let mut partitioner = partition::Partitioner::new(shards, options.memory_bytes, dir.path(), options.event_time_ns);
    let (records, bad_lines) = (std::cell::Cell::new(0u64), std::cell::Cell::new(0u64));
    let (mut first_bad, mut failed) = (Vec::new(), None);
    parse::parse(
        options.format,
        data,
        |key, value| {
            if failed.is_none() {
                match partitioner.push(key, value) {
                    Ok(()) => records.set(records.get() + 1),
                    Err(e) => failed = Some(e),
                }
            }
        },
        |bad| {
            bad_lines.set(bad_lines.get() + 1);
            if first_bad.len() < BAD_LINES_KEPT {
                first_bad.push(bad);
            }
        },
        |bytes| {
            progress.input_bytes.store(bytes, Ordering::Relaxed);
            progress.records.store(records.get(), Ordering::Relaxed);
            progress.bad_lines.store(bad_lines.get(), Ordering::Relaxed);
        },
    );
    if let Some(e) = failed {
        return Err(e);
    }
    let (records, bad_lines) = (records.get(), bad_lines.get());
    progress.records.store(records, Ordering::Relaxed);
    progress.bad_lines.store(bad_lines, Ordering::Relaxed);
    let prepared = Prepared { records, bad_lines, first_bad, input_bytes: len };
    if bad_lines > 0 && !options.skip_bad {
        // Nothing will be sent: do not spend time writing the files.
        return Ok((Runs { dir, files: vec![Vec::new(); shards as usize], bytes: Vec::new() }, prepared));
    }
    let (files, bytes) = partitioner.finish()?;
    Ok((Runs { dir, files, bytes }, prepared))
}
