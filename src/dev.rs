//! `vasto dev`: the embedded default. Starts a master and N stores as child processes on
//! loopback with data under one directory, creates keyspace `default`, and stops everything on
//! Ctrl-C (or SIGTERM).
use anyhow::{bail, Context};
use clap::Args;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use vasto_client::{AdminClient, ClientConfig};
use vasto_master::ClusterStatus;

/// `vasto dev` flags.
#[derive(Args)]
pub struct DevArgs {
    /// Number of stores.
    #[arg(long, default_value_t = 3)]
    stores: u32,
    /// Data directory (one sub-directory per store, plus logs).
    #[arg(long, default_value = "./vasto-data")]
    dir: PathBuf,
    /// Master port; stores use the following ports.
    #[arg(long, default_value_t = 8278)]
    port: u16,
    /// Shards of keyspace `default`.
    #[arg(long, default_value_t = 6)]
    shards: u32,
    /// Replicas of keyspace `default`.
    #[arg(long, default_value_t = 1)]
    replicas: u32,
    /// Core threads per store.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    #[command(flatten)]
    token: crate::token_arg::TokenArg,
}

/// Child processes, terminated (SIGTERM, then SIGKILL) when dropped.
struct Children(Vec<(String, Child)>);

impl Drop for Children {
    fn drop(&mut self) {
        for (_, c) in &self.0 {
            // SAFETY: plain kill(2) on the PID of a child we spawned and have not reaped.
            unsafe { libc::kill(c.id() as libc::pid_t, libc::SIGTERM) };
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        for (name, c) in &mut self.0 {
            while Instant::now() < deadline && matches!(c.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(20));
            }
            if matches!(c.try_wait(), Ok(None)) {
                let _ = c.kill();
            }
            let _ = c.wait();
            eprintln!("stopped {name}");
        }
    }
}

fn spawn(name: &str, args: &[String], log: &Path) -> anyhow::Result<Child> {
    let exe = std::env::current_exe().context("locating the vasto binary")?;
    let log = std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
    let mut cmd = Command::new(exe);
    cmd.args(args).stdin(Stdio::null()).stdout(log.try_clone()?).stderr(log);
    // Children die with us even if we are killed without a chance to clean up.
    // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
    unsafe {
        use std::os::unix::process::CommandExt;
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
            Ok(())
        });
    }
    cmd.spawn().with_context(|| format!("starting {name}"))
}

async fn wait_for_stores(master: &str, client: &ClientConfig, stores: usize, children: &mut Children) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        for (name, c) in &mut children.0 {
            if let Ok(Some(status)) = c.try_wait() {
                bail!("{name} exited during start-up ({status}); see its log");
            }
        }
        if let Ok(mut admin) =
            AdminClient::connect_with(master, &ClientConfig { timeout: Duration::from_secs(2), connect_timeout: Duration::from_secs(2), ..client.clone() })
                .await
        {
            if let Ok(doc) = admin.status_json().await {
                let status: ClusterStatus = serde_json::from_str(&doc)?;
                if status.stores.iter().filter(|s| s.up).count() >= stores {
                    return Ok(());
                }
            }
        }
        if Instant::now() > deadline {
            bail!("the stores did not all register with the master within 30 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub async fn run(a: DevArgs) -> anyhow::Result<()> {
    if a.stores == 0 {
        bail!("--stores must be at least 1");
    }
    std::fs::create_dir_all(&a.dir).with_context(|| format!("creating {}", a.dir.display()))?;
    let dir = a.dir.canonicalize()?;
    let master = format!("127.0.0.1:{}", a.port);
    let client = a.token.client(Duration::from_secs(10))?;
    // Every child proves the same token (given by flag or by VASTO_TOKEN_FILE).
    let token_args: Vec<String> = match &a.token.path {
        Some(path) => vec!["--token-file".into(), path.canonicalize().with_context(|| format!("--token-file {}", path.display()))?.display().to_string()],
        None => Vec::new(),
    };
    let mut children = Children(Vec::new());
    let mut master_args = vec!["master".into(), "--listen".into(), master.clone(), "--dir".into(), dir.join("master").display().to_string()];
    master_args.extend(token_args.iter().cloned());
    children.0.push(("master".into(), spawn("master", &master_args, &dir.join("master.log"))?));
    let mut store_addrs = Vec::new();
    for i in 0..a.stores {
        let port = a.port.checked_add(1 + i as u16).context("--port too high for that many stores")?;
        let addr = format!("127.0.0.1:{port}");
        let store_dir = dir.join(format!("store-{i}"));
        let args = vec![
            "store".into(),
            "--master".into(),
            master.clone(),
            "--listen".into(),
            addr.clone(),
            "--dir".into(),
            store_dir.display().to_string(),
            "--threads".into(),
            a.threads.to_string(),
        ];
        let args: Vec<String> = args.into_iter().chain(token_args.iter().cloned()).collect();
        children.0.push((format!("store-{i}"), spawn("store", &args, &dir.join(format!("store-{i}.log")))?));
        store_addrs.push(addr);
    }
    wait_for_stores(&master, &client, a.stores as usize, &mut children).await?;
    let mut admin = AdminClient::connect_with(&master, &client).await?;
    match admin.create_keyspace("default", a.shards, a.replicas).await {
        Ok(()) => {}
        Err(e) => eprintln!("note: keyspace default was not (re)created: {e}"),
    }
    println!("vasto dev cluster is up (data and logs under {})", dir.display());
    println!("  master:   {master}");
    println!("  stores:   {}", store_addrs.join(", "));
    println!("  keyspace: default ({} shards x {} replicas)", a.shards, a.replicas);
    println!("try:");
    println!("  vasto put --master {master} --keyspace default hello world");
    println!("  vasto get --master {master} --keyspace default hello");
    println!("  vasto admin --master {master} status");
    println!("Ctrl-C stops the cluster.");
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut watch = tokio::time::interval(Duration::from_millis(500));
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = term.recv() => break,
            _ = watch.tick() => {
                for (name, c) in &mut children.0 {
                    if let Ok(Some(status)) = c.try_wait() {
                        eprintln!("{name} exited ({status}); see {}/{name}.log", dir.display());
                    }
                }
            }
        }
    }
    eprintln!("stopping the cluster...");
    drop(children);
    Ok(())
}
