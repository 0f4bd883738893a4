//! `vasto`: one binary for the master, the store, the admin tool, data commands, the local dev
//! cluster and the load generator. Parses flags and calls the crates; no logic of its own beyond
//! presentation.
mod admin_cmd;
mod backup_cmd;
mod data_cmd;
mod dev;
mod gateway_cmd;
mod import_cmd;
mod token_arg;

use clap::{Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

/// Vasto: a distributed, on-disk key-value store.
#[derive(Parser)]
#[command(name = "vasto", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the master (its directory holds only the cluster id and the keyspace catalog; the
    /// rest is rebuilt from the stores' reports after a restart).
    Master {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:8278")]
        listen: SocketAddr,
        /// Directory of the cluster id and the catalog of keyspaces (created if missing).
        #[arg(long, default_value = "./vasto-master")]
        dir: PathBuf,
        /// Cluster id (hex) to use when the directory has none: restores a master whose
        /// directory was lost, so the stores (which refuse any other cluster) accept it again.
        /// `vasto admin status` and every store's `cluster-id` file show it.
        #[arg(long, value_parser = parse_cluster_id)]
        cluster_id: Option<u64>,
        /// A store that sends nothing for this many milliseconds is marked down (stores
        /// heartbeat every 250 ms; a store whose connection closes is marked down at once).
        #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(500..=600_000))]
        heartbeat_timeout_ms: u64,
        /// Milliseconds a resize or replace waits, once the old shards stopped taking writes,
        /// before trusting the replicas' reports that they applied everything.
        #[arg(long, default_value_t = 1200, value_parser = clap::value_parser!(u64).range(1000..=600_000))]
        drain_settle_ms: u64,
        /// Milliseconds a store taking part in a resize or replace may be down (a network
        /// blip, a restart) before the operation rolls back; meanwhile the operation waits.
        #[arg(long, default_value_t = 5_000, value_parser = clap::value_parser!(u64).range(0..=3_600_000))]
        operation_grace_ms: u64,
        /// Connections served at once (stores, clients, admins); one more is refused at its
        /// hello with `Unavailable`.
        #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
        max_connections: u64,
        /// Serve Prometheus metrics at http://ADDR/metrics.
        #[arg(long)]
        metrics_listen: Option<SocketAddr>,
        #[command(flatten)]
        token: token_arg::TokenArg,
    },
    /// Run a store node.
    Store {
        /// Master address.
        #[arg(long, default_value = "127.0.0.1:8278")]
        master: String,
        /// Data address to listen on.
        #[arg(long, default_value = "127.0.0.1:8279")]
        listen: SocketAddr,
        /// Address announced to clients (default: the listen address).
        #[arg(long)]
        advertise: Option<String>,
        /// Data directory.
        #[arg(long)]
        dir: PathBuf,
        /// Core threads (default: one per CPU).
        #[arg(long, default_value_t = 0)]
        threads: usize,
        /// Reader threads for gets that need a file read (data not in memory), so that those
        /// never hold up a core thread and many reads reach the disk at once; 0 reads files on
        /// the core threads.
        #[arg(long, default_value_t = 16)]
        read_threads: usize,
        /// Fewest gets handed to one reader thread at a time: a connection's gets that need
        /// files are split into parts of at least this many (at most one per reader). Each
        /// part costs two cross-thread wake-ups; smaller parts put more reads at the disk at
        /// once, larger ones spend less CPU per get.
        #[arg(long, default_value_t = 4, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=64))]
        read_part_gets: usize,
        /// Largest accepted frame in bytes.
        #[arg(long, default_value_t = vasto_wire::DEFAULT_MAX_FRAME)]
        max_frame: usize,
        /// Local writes kept per shard for replicas to catch up from; a replica further behind
        /// is re-bootstrapped from a snapshot.
        #[arg(long, default_value_t = 4_000_000)]
        change_log_entries: u64,
        /// Cap, in MB/s, on data this store moves for other replicas: each snapshot or resize
        /// export reads at most this, and each snapshot or resize-copy stream sends at most
        /// this (re-bootstrap, replace-store, resize); 0 means no cap. Under it, the pace
        /// follows this store's foreground latency: halved while requests are slower than 1.5x
        /// their p99 before the movement, raised while they are not.
        #[arg(long, default_value_t = 0)]
        max_mbps: u64,
        /// Move data at exactly --max-mbps (0: as fast as possible), whatever the foreground
        /// latency.
        #[arg(long)]
        fixed_pace: bool,
        /// Memory, in MB, for the newest values of recently read keys, shared by all shards:
        /// a get of a cached key costs no RocksDB lookup. 0 turns it off.
        #[arg(long, default_value_t = 256)]
        value_cache_mb: u64,
        /// Memory, in MB, for RocksDB's block cache (data, index and filter blocks), shared by
        /// all shards. A get whose blocks are cached is answered on its core; one that needs a
        /// block outside it goes to a reader thread, even when the OS page cache holds the
        /// block (on 11 GB under a 2 GiB limit, 1024 against 256 changed zipfian gets by less
        /// than the run-to-run noise).
        #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u64).range(1..))]
        block_cache_mb: u64,
        /// When acknowledged writes are synced to disk: `none` (a power failure loses what the
        /// OS had not written back, up to ~30 s), `everysec` (synced once a second: a power
        /// failure loses at most ~1 s), `always` (synced before each write is acknowledged:
        /// nothing acknowledged is lost). A process crash loses nothing in any mode.
        #[arg(long, default_value = "everysec", value_parser = parse_sync)]
        sync: vasto_node::SyncMode,
        /// Where the current boot id is read from, to tell a process crash (nothing lost) from a
        /// reboot (unsynced writes may be lost). For tests.
        #[arg(long, hide = true, default_value_os_t = vasto_node::default_boot_id_path())]
        boot_id_file: PathBuf,
        /// Refuse writes whose event time is more than this many milliseconds ahead of the
        /// store's clock: under last-writer-wins such a write would beat every later write
        /// until the clocks caught up.
        #[arg(long, default_value_t = 60_000, value_parser = clap::value_parser!(u64).range(1..=86_400_000))]
        max_clock_skew_ms: u64,
        /// Connections served at once (clients, peers, importers); one more is refused with
        /// `Unavailable`, so clients use another replica.
        #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
        max_connections: u64,
        /// Milliseconds a peer may take for its whole opening (hello and token proof), and may go
        /// without sending a byte while a frame it started is unfinished, before it is
        /// disconnected (a stalled or malicious peer holds its connection no longer).
        #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(100..=3_600_000))]
        read_timeout_ms: u64,
        /// Seconds a data connection may stay without any request before it is closed (clients
        /// dial again when they need it).
        #[arg(long, default_value_t = 900, value_parser = clap::value_parser!(u64).range(1..=86_400))]
        idle_timeout_secs: u64,
        /// Milliseconds one attempt to connect to the master may take (a master that drops
        /// packets instead of refusing them is tried again after this).
        #[arg(long, default_value_t = 3_000, value_parser = clap::value_parser!(u64).range(100..=600_000))]
        master_connect_timeout_ms: u64,
        /// The failure domain this store runs in (a rack or availability zone): the master puts
        /// the replicas of a shard in distinct zones first.
        #[arg(long, default_value = "", value_parser = parse_zone)]
        zone: String,
        /// Free space, in MB, below which the data disk counts as full: the store then takes no
        /// new replicas (it still serves and takes writes until the disk itself refuses them).
        /// Default: 5% of the filesystem, at most 1024 MB.
        #[arg(long)]
        min_free_mb: Option<u64>,
        /// Serve Prometheus metrics at http://ADDR/metrics.
        #[arg(long)]
        metrics_listen: Option<SocketAddr>,
        #[command(flatten)]
        token: token_arg::TokenArg,
    },
    /// Administer the cluster through the master.
    Admin {
        /// Master address.
        #[arg(long, default_value = "127.0.0.1:8278")]
        master: String,
        #[command(flatten)]
        token: token_arg::TokenArg,
        #[command(subcommand)]
        action: admin_cmd::AdminAction,
    },
    /// Store a value.
    Put(data_cmd::PutArgs),
    /// Print a value (raw bytes); exits 1 with "not found" if the key is missing.
    Get(data_cmd::KeyArgs),
    /// Delete a key.
    Delete(data_cmd::KeyArgs),
    /// List keys with a prefix, in key order.
    Scan(data_cmd::ScanArgs),
    /// Start a local cluster (master + stores + keyspace `default`) on loopback; Ctrl-C stops it.
    Dev(dev::DevArgs),
    /// Generate load against a keyspace and report throughput and latency percentiles.
    Loadgen(data_cmd::LoadgenArgs),
    /// Bulk-load a TSV, CSV or JSON-lines file into a keyspace as SST files.
    Import(import_cmd::ImportArgs),
    /// Serve a keyspace over RESP (the Redis protocol) for redis-cli, redis-py,
    /// redis-benchmark and other Redis clients.
    Gateway(gateway_cmd::GatewayArgs),
}

/// Parses a cluster id as `vasto admin status` prints it (hex, non-zero).
fn parse_cluster_id(text: &str) -> Result<u64, String> {
    u64::from_str_radix(text.trim_start_matches("0x"), 16).ok().filter(|&id| id != 0).ok_or_else(|| format!("{text:?} is not a cluster id (16 hex digits)"))
}

/// `mb` megabytes in bytes, or an error naming `flag` when that does not fit in memory.
fn megabytes(flag: &str, mb: u64) -> anyhow::Result<usize> {
    usize::try_from(mb).ok().and_then(|mb| mb.checked_mul(1 << 20)).ok_or_else(|| anyhow::anyhow!("{flag} {mb} is too large"))
}

/// Parses `--sync`.
fn parse_sync(text: &str) -> Result<vasto_node::SyncMode, String> {
    vasto_node::SyncMode::from_name(text).ok_or_else(|| format!("{text:?}: use none, everysec or always"))
}

/// A zone name: up to 64 of [A-Za-z0-9_.-] (it is shown in status and metrics labels).
fn parse_zone(text: &str) -> Result<String, String> {
    let ok = text.len() <= 64 && text.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
    if ok {
        Ok(text.to_owned())
    } else {
        Err(format!("{text:?}: use up to 64 of [A-Za-z0-9_.-]"))
    }
}

fn init_logs(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_ansi(ansi).with_writer(std::io::stderr).try_init();
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().enable_all().build()?)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Master { listen, dir, cluster_id, heartbeat_timeout_ms, drain_settle_ms, operation_grace_ms, max_connections, metrics_listen, token } => {
            init_logs("info");
            token.load().and_then(|token| {
                let rt = runtime()?;
                let config = vasto_master::MasterConfig {
                    token,
                    max_connections: usize::try_from(max_connections).unwrap_or(usize::MAX),
                    listen,
                    dir,
                    cluster_id,
                    heartbeat_timeout: std::time::Duration::from_millis(heartbeat_timeout_ms),
                    drain_settle: std::time::Duration::from_millis(drain_settle_ms),
                    operation_grace: std::time::Duration::from_millis(operation_grace_ms),
                    metrics_listen,
                    ..Default::default()
                };
                Ok(rt.block_on(vasto_master::run(config))?)
            })
        }
        Command::Store {
            master,
            listen,
            advertise,
            dir,
            threads,
            read_threads,
            read_part_gets,
            max_frame,
            change_log_entries,
            max_mbps,
            fixed_pace,
            value_cache_mb,
            block_cache_mb,
            sync,
            boot_id_file,
            max_clock_skew_ms,
            max_connections,
            read_timeout_ms,
            idle_timeout_secs,
            master_connect_timeout_ms,
            zone,
            min_free_mb,
            metrics_listen,
            token,
        } => {
            init_logs("info");
            let engine = (|| {
                let value_cache_bytes = megabytes("--value-cache-mb", value_cache_mb)?;
                let block_cache_bytes = megabytes("--block-cache-mb", block_cache_mb)?;
                anyhow::Ok(vasto_node::EngineOptions { change_log_entries, value_cache_bytes, block_cache_bytes, sync, ..Default::default() })
            })();
            engine.and_then(|engine| {
                let token = token.load()?;
                let config = vasto_node::NodeConfig {
                    listen,
                    advertise,
                    master,
                    dir,
                    threads,
                    read_threads,
                    read_part_gets,
                    max_frame,
                    max_move_mbps: max_mbps,
                    fixed_pace,
                    engine,
                    boot_id_path: boot_id_file,
                    token,
                    max_clock_skew: std::time::Duration::from_millis(max_clock_skew_ms),
                    max_connections: usize::try_from(max_connections).unwrap_or(usize::MAX),
                    read_timeout: std::time::Duration::from_millis(read_timeout_ms),
                    idle_timeout: std::time::Duration::from_secs(idle_timeout_secs),
                    master_connect_timeout: std::time::Duration::from_millis(master_connect_timeout_ms),
                    zone,
                    min_free_bytes: min_free_mb.map(|mb| mb.saturating_mul(1 << 20)),
                    metrics_listen,
                };
                let node = vasto_node::start(config)?;
                Ok(node.run_until_stopped()?)
            })
        }
        Command::Admin { master, token, action } => {
            init_logs("warn");
            runtime().and_then(|rt| rt.block_on(admin_cmd::run(&master, &token, action)))
        }
        Command::Put(args) => run_data(|rt| rt.block_on(data_cmd::put(args))),
        Command::Get(args) => run_data(|rt| rt.block_on(data_cmd::get(args))),
        Command::Delete(args) => run_data(|rt| rt.block_on(data_cmd::delete(args))),
        Command::Scan(args) => run_data(|rt| rt.block_on(data_cmd::scan(args))),
        Command::Loadgen(args) => run_data(|rt| rt.block_on(data_cmd::loadgen(args))),
        Command::Import(args) => run_data(|rt| rt.block_on(import_cmd::run(args))),
        Command::Gateway(args) => {
            init_logs("info");
            runtime().and_then(|rt| rt.block_on(gateway_cmd::run(args)))
        }
        Command::Dev(args) => {
            init_logs("info");
            runtime().and_then(|rt| rt.block_on(dev::run(args)))
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.downcast_ref::<data_cmd::NotFound>().is_some() => {
            eprintln!("not found");
            ExitCode::FAILURE
        }
        Err(e) if token_arg::is_authentication_failure(&e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run_data(f: impl FnOnce(&tokio::runtime::Runtime) -> anyhow::Result<()>) -> anyhow::Result<()> {
    init_logs("warn");
    f(&runtime()?)
}
