//! `vasto put|get|delete|scan|loadgen`: data commands through the native client.
use anyhow::Context;
use clap::Args;
use std::io::{Read, Write};
use std::time::Duration;
use vasto_client::{Client, PutOptions};

/// Marker error: the key does not exist (the CLI prints "not found" and exits 1).
#[derive(Debug, thiserror::Error)]
#[error("not found")]
pub struct NotFound;

/// Where to send a data command.
#[derive(Args)]
pub struct Target {
    /// Master address.
    #[arg(long, default_value = "127.0.0.1:8278")]
    master: String,
    /// Keyspace name.
    #[arg(long, default_value = "default")]
    keyspace: String,
    #[command(flatten)]
    token: crate::token_arg::TokenArg,
}

/// `vasto put`.
#[derive(Args)]
pub struct PutArgs {
    #[command(flatten)]
    target: Target,
    /// The key.
    key: String,
    /// The value; `-` reads it from standard input.
    value: String,
    /// Expire the value after this many seconds.
    #[arg(long)]
    ttl: Option<f64>,
    /// Event time in ns since the Unix epoch (default: now).
    #[arg(long)]
    event_time: Option<u64>,
}

/// `vasto get` / `vasto delete`.
#[derive(Args)]
pub struct KeyArgs {
    #[command(flatten)]
    target: Target,
    /// The key.
    key: String,
}

/// `vasto scan`.
#[derive(Args)]
pub struct ScanArgs {
    #[command(flatten)]
    target: Target,
    /// Key prefix (empty: every key).
    #[arg(default_value = "")]
    prefix: String,
    /// Stop after this many keys.
    #[arg(long, default_value_t = 100)]
    limit: u64,
    /// Start strictly after this key (continuation).
    #[arg(long, default_value = "")]
    after: String,
    /// Print only the keys, one per line. Without it each line is the key, a tab and the value
    /// as stored (invalid UTF-8 replaced), so a value holding a newline spans lines.
    #[arg(long)]
    keys_only: bool,
}

/// `vasto loadgen`.
#[derive(Args)]
pub struct LoadgenArgs {
    #[command(flatten)]
    target: Target,
    /// put | get | mixed:R (R = percent reads) | ycsb-a (50% reads, 50% puts) | ycsb-b (95%
    /// reads) | ycsb-c (reads only) | ycsb-f (50% reads, 50% read-modify-writes).
    #[arg(long, default_value = "mixed:50")]
    workload: vasto_loadgen::Workload,
    /// Which keys requests touch: uniform | zipfian[:THETA] (0 < THETA < 1, default 0.99,
    /// hot keys scattered over the key space) | latest (reads favour the keys written most
    /// recently). Default: zipfian for the ycsb workloads, uniform otherwise.
    #[arg(long)]
    distribution: Option<vasto_loadgen::Distribution>,
    /// Size of the key space.
    #[arg(long, default_value_t = 100_000)]
    keys: u64,
    /// Value size in bytes.
    #[arg(long, default_value_t = 100)]
    value_size: usize,
    /// Connections (independent clients).
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Requests in flight per connection.
    #[arg(long, default_value_t = 1)]
    pipeline: usize,
    /// Load threads, each driving its share of the connections on its own single-threaded
    /// runtime (0 = one per CPU).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// Run time, e.g. 10s, 500ms, 2m. Ctrl-C (SIGINT) ends the run early; the report covers
    /// the time run.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    duration: Duration,
    /// Also write the report as JSON to this file.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let (num, unit) = s.find(|c: char| !c.is_ascii_digit() && c != '.').map(|i| s.split_at(i)).unwrap_or((s, "s"));
    let n: f64 = num.parse().map_err(|_| format!("bad duration {s:?}: use e.g. 10s, 500ms, 2m"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        _ => return Err(format!("bad duration unit in {s:?}: use ms, s or m")),
    };
    Duration::try_from_secs_f64(secs).map_err(|e| format!("bad duration {s:?}: {e}"))
}

async fn keyspace(t: &Target) -> anyhow::Result<vasto_client::Keyspace> {
    let config = t.token.client(vasto_client::ClientConfig::default().timeout)?;
    let client = Client::connect_with(&t.master, config).await.context("connecting to the master")?;
    Ok(client.keyspace(&t.keyspace).await?)
}

pub async fn put(a: PutArgs) -> anyhow::Result<()> {
    let value = if a.value == "-" {
        let mut v = Vec::new();
        std::io::stdin().read_to_end(&mut v).context("reading the value from stdin")?;
        v
    } else {
        a.value.into_bytes()
    };
    let ttl = a.ttl.map(Duration::try_from_secs_f64).transpose().context("--ttl must be a positive number of seconds")?;
    keyspace(&a.target).await?.put_with(a.key.as_bytes(), &value, PutOptions { ttl, event_time_ns: a.event_time }).await?;
    Ok(())
}

pub async fn get(a: KeyArgs) -> anyhow::Result<()> {
    match keyspace(&a.target).await?.get(a.key.as_bytes()).await? {
        Some(v) => {
            let mut out = std::io::stdout().lock();
            out.write_all(&v)?;
            // Raw bytes for pipes and files; a terminal also gets the newline its prompt needs.
            if std::io::IsTerminal::is_terminal(&out) && !v.ends_with(b"\n") {
                out.write_all(b"\n")?;
            }
            out.flush()?;
            Ok(())
        }
        None => Err(NotFound.into()),
    }
}

pub async fn delete(a: KeyArgs) -> anyhow::Result<()> {
    Ok(keyspace(&a.target).await?.delete(a.key.as_bytes()).await?)
}

pub async fn scan(a: ScanArgs) -> anyhow::Result<()> {
    let ks = keyspace(&a.target).await?;
    let mut after = a.after.into_bytes();
    let mut left = a.limit;
    let mut out = std::io::stdout().lock();
    while left > 0 {
        let page = ks.scan_prefix(a.prefix.as_bytes(), &after, left.min(1000) as u32).await?;
        for (k, v) in &page.entries {
            if a.keys_only {
                writeln!(out, "{}", String::from_utf8_lossy(k))?;
            } else {
                writeln!(out, "{}\t{}", String::from_utf8_lossy(k), String::from_utf8_lossy(v))?;
            }
        }
        left -= page.entries.len() as u64;
        match page.next {
            Some(next) => after = next,
            None => break,
        }
    }
    Ok(())
}

/// A stop signal that turns `true` on Ctrl-C (SIGINT): the run ends early and still reports.
fn stop_on_ctrl_c() -> tokio::sync::watch::Receiver<bool> {
    let (tx, rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            let _ = tx.send(true);
            // Keep the sender alive so the receivers see the stop rather than a closed channel.
            std::future::pending::<()>().await;
        }
    });
    rx
}

pub async fn loadgen(a: LoadgenArgs) -> anyhow::Result<()> {
    let config = vasto_loadgen::LoadgenConfig {
        master: a.target.master,
        keyspace: a.target.keyspace,
        workload: a.workload,
        distribution: a.distribution,
        keys: a.keys,
        value_size: a.value_size,
        concurrency: a.concurrency,
        pipeline: a.pipeline,
        threads: a.threads,
        duration: a.duration,
        progress: true,
        stop: Some(stop_on_ctrl_c()),
        token: a.target.token.load()?,
    };
    let report = vasto_loadgen::run(&config).await?;
    println!("{}", report.human());
    if let Some(path) = a.json {
        std::fs::write(&path, serde_json::to_string_pretty(&report)?).with_context(|| format!("writing {}", path.display()))?;
    }
    if report.errors > 0 {
        anyhow::bail!("{} requests failed (first: {})", report.errors, report.first_error.as_deref().unwrap_or("?"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::parse_duration;
    use std::time::Duration;

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert!(parse_duration("ten").is_err());
        assert!(parse_duration("5h").is_err());
    }
}
