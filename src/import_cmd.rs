//! `vasto import`: bulk-load a file into a keyspace as SST files, with a progress bar.
use anyhow::Context;
use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use vasto_import::{Format, ImportOptions, Progress};

/// Input formats on the command line.
#[derive(Clone, Copy, ValueEnum)]
pub enum FormatArg {
    /// `key<TAB>value` per line.
    Tsv,
    /// `key,value` records with RFC 4180 quoting.
    Csv,
    /// `{"key": "...", "value": ...}` per line.
    Jsonl,
}

/// Flags of `vasto import`.
#[derive(Args)]
pub struct ImportArgs {
    /// Master address.
    #[arg(long, default_value = "127.0.0.1:8278")]
    master: String,
    /// Keyspace to load into (it must exist).
    #[arg(long)]
    keyspace: String,
    /// Input file.
    #[arg(long)]
    input: PathBuf,
    /// Input format (default: from the file extension, else tsv).
    #[arg(long, value_enum)]
    format: Option<FormatArg>,
    /// Event time of the imported records, in nanoseconds since the Unix epoch (default: now).
    /// A live write with a later event time is never overwritten.
    #[arg(long)]
    event_time: Option<u64>,
    /// Import the valid lines and report the malformed ones (default: stop before importing).
    #[arg(long)]
    skip_bad: bool,
    /// Memory for sorting, in MiB; larger inputs are sorted in runs on disk.
    #[arg(long, default_value_t = 512)]
    memory_mb: usize,
    /// Directory for the SST files (default: the system temp directory).
    #[arg(long)]
    work_dir: Option<PathBuf>,
    #[command(flatten)]
    token: crate::token_arg::TokenArg,
}

/// Runs the import and prints a summary line.
pub async fn run(args: ImportArgs) -> anyhow::Result<()> {
    let format = match args.format {
        Some(FormatArg::Tsv) => Format::Tsv,
        Some(FormatArg::Csv) => Format::Csv,
        Some(FormatArg::Jsonl) => Format::Jsonl,
        None => Format::from_extension(&args.input).unwrap_or(Format::Tsv),
    };
    if args.memory_mb == 0 {
        anyhow::bail!("--memory-mb must be at least 1");
    }
    let options = ImportOptions {
        format,
        event_time_ns: args.event_time.unwrap_or_else(vasto_client::now_ns),
        skip_bad: args.skip_bad,
        memory_bytes: args.memory_mb.saturating_mul(1 << 20),
        work_dir: args.work_dir,
        token: args.token.load()?,
    };
    let progress = Arc::new(Progress::default());
    let bar = ProgressBar::new(0);
    let watcher = tokio::spawn(show_progress(Arc::clone(&progress), bar.clone(), "records"));
    let result = vasto_import::import(&args.master, &args.keyspace, &args.input, &options, Arc::clone(&progress)).await;
    watcher.abort();
    bar.finish_and_clear();
    let report = result.with_context(|| format!("importing {} into {}", args.input.display(), args.keyspace))?;
    for bad in &report.first_bad {
        eprintln!("skipped line {}: {}", bad.line, bad.reason);
    }
    if report.bad_lines > report.first_bad.len() as u64 {
        eprintln!("... and {} more malformed lines", report.bad_lines - report.first_bad.len() as u64);
    }
    let total = report.prepare + report.upload;
    let mb = report.input_bytes as f64 / 1e6;
    println!(
        "imported {} records ({:.1} MB) into {} ({} shards x {} replicas) in {:.2} s: {:.1} MB/s, {:.0} records/s (prepare {:.2} s, send and ingest {:.2} s); {} malformed lines skipped",
        report.records,
        mb,
        args.keyspace,
        report.shards,
        report.replicas,
        total.as_secs_f64(),
        mb / total.as_secs_f64().max(1e-9),
        report.records as f64 / total.as_secs_f64().max(1e-9),
        report.prepare.as_secs_f64(),
        report.upload.as_secs_f64(),
        report.bad_lines
    );
    Ok(())
}

/// Redraws the bar from the import's counters: input bytes while preparing, then bytes sent;
/// `unit` names what `records` counts.
pub(crate) async fn show_progress(progress: Arc<Progress>, bar: ProgressBar, unit: &'static str) {
    let style = |template: &str| ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style("{prefix} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta} {msg}"));
    let mut sending = false;
    loop {
        let upload_total = progress.upload_total.load(Ordering::Relaxed);
        if upload_total > 0 && !sending {
            sending = true;
            bar.set_length(upload_total);
            bar.set_position(0);
            bar.reset_eta();
        }
        if sending {
            bar.set_prefix("sending");
            bar.set_position(progress.upload_bytes.load(Ordering::Relaxed));
        } else {
            bar.set_prefix("reading");
            bar.set_length(progress.input_total.load(Ordering::Relaxed));
            bar.set_position(progress.input_bytes.load(Ordering::Relaxed));
            let records = progress.records.load(Ordering::Relaxed);
            let elapsed = bar.elapsed().as_secs_f64().max(1e-3);
            bar.set_message(format!("{records} {unit} ({:.0}/s), {} malformed", records as f64 / elapsed, progress.bad_lines.load(Ordering::Relaxed)));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
