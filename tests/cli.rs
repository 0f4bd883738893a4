//! End-to-end: the `vasto` CLI against a real cluster, and `vasto dev`.
mod common;

use common::{free_port, run_bounded, vasto, wait_for, Cluster};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn put_get_delete_scan_and_status() {
    let cluster = Cluster::start(2);
    let m = cluster.master_addr.as_str();
    cluster.create_keyspace("cli", 3, 1);
    // Creating it again with the same parameters is fine (idempotent).
    cluster.create_keyspace("cli", 3, 1);
    let ks = ["--master", m, "--keyspace", "cli"];
    let run = |args: &[&str]| cluster.vasto(args);

    for (k, v) in [("fruit:apple", "red"), ("fruit:banana", "yellow"), ("veg:kale", "green")] {
        let out = run(&[&["put"], &ks[..], &[k, v]].concat());
        assert!(out.status.success(), "{}", text(&out.stderr));
    }
    let out = run(&[&["get"], &ks[..], &["fruit:apple"]].concat());
    assert!(out.status.success());
    assert_eq!(out.stdout, b"red", "get prints the raw value");

    let out = run(&[&["scan"], &ks[..], &["fruit:"]].concat());
    assert_eq!(text(&out.stdout), "fruit:apple\tred\nfruit:banana\tyellow\n");
    let out = run(&[&["scan"], &ks[..], &["--keys-only", "fruit:"]].concat());
    assert_eq!(text(&out.stdout), "fruit:apple\nfruit:banana\n");

    let out = run(&[&["delete"], &ks[..], &["fruit:apple"]].concat());
    assert!(out.status.success());
    let out = run(&[&["get"], &ks[..], &["fruit:apple"]].concat());
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(text(&out.stderr).trim(), "not found");

    // TTL in real seconds.
    // Long enough for the first get to land inside it on a stalled machine.
    let put_at = std::time::Instant::now();
    let out = run(&[&["put"], &ks[..], &["--ttl", "3", "session", "abc"]].concat());
    assert!(out.status.success());
    assert_eq!(run(&[&["get"], &ks[..], &["session"]].concat()).stdout, b"abc");
    std::thread::sleep(Duration::from_millis(3500).saturating_sub(put_at.elapsed()));
    assert_eq!(run(&[&["get"], &ks[..], &["session"]].concat()).status.code(), Some(1));

    let out = run(&["admin", "--master", m, "status"]);
    let table = text(&out.stdout);
    assert!(table.contains("STORES (2)") && table.contains("cli - 3 shards x 1 replicas"), "{table}");

    let out = run(&["admin", "--master", m, "create-keyspace", "cli", "--shards", "5"]);
    assert!(!out.status.success(), "re-creating with other parameters must fail");

    let out = run(&["admin", "--master", m, "delete-keyspace", "cli"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = run(&[&["get"], &ks[..], &["veg:kale"]].concat());
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("unknown keyspace"), "{}", text(&out.stderr));

    let out = run(&["admin", "--master", m, "create-keyspace", "../bad", "--shards", "1"]);
    assert!(!out.status.success());
    let out = run(&["get", "--master", "127.0.0.1:1", "k"]);
    assert!(!out.status.success() && text(&out.stderr).contains("master"), "{}", text(&out.stderr));
}

#[test]
fn loadgen_reports_percentiles_and_no_errors() {
    let cluster = Cluster::start(1);
    cluster.create_keyspace("bench", 2, 1);
    let json = cluster.dir.path().join("report.json");
    let json_arg = json.display().to_string();
    let out = cluster.vasto(&[
        "loadgen",
        "--master",
        &cluster.master_addr,
        "--keyspace",
        "bench",
        "--workload",
        "mixed:50",
        "--keys",
        "1000",
        "--value-size",
        "100",
        "--concurrency",
        "4",
        "--pipeline",
        "4",
        "--duration",
        "2s",
        "--json",
        &json_arg,
    ]);
    assert!(out.status.success(), "{}\n{}", text(&out.stdout), text(&out.stderr));
    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert!(report["ops"].as_u64().unwrap() > 100, "{report}");
    assert_eq!(report["errors"], 0);
    assert!(report["p99_us"].as_f64().unwrap() > 0.0);

    let out = cluster.vasto(&["loadgen", "--master", &cluster.master_addr, "--keyspace", "bench", "--workload", "sideways"]);
    assert!(!out.status.success(), "a bad workload is refused");

    // Ctrl-C ends a long run early, and the report is still written.
    std::fs::remove_file(&json).unwrap();
    let progress = cluster.dir.path().join("loadgen.stderr");
    let child = Command::new(vasto())
        .args(["loadgen", "--master", &cluster.master_addr, "--keyspace", "bench", "--keys", "1000", "--duration", "10m", "--json", &json_arg])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&progress).unwrap())
        .spawn()
        .unwrap();
    let mut run = common::Proc { name: "loadgen".into(), child, log: progress.clone() };
    // Interrupt only once the load runs: the first progress line comes a second after it started.
    wait_for("loadgen's first progress line", Duration::from_secs(30), || {
        std::fs::read_to_string(&progress).ok().filter(|s| s.lines().any(|l| l.starts_with('['))).map(drop)
    });
    // SAFETY: kill(2) on the PID of our own child.
    unsafe { libc::kill(run.pid() as libc::pid_t, libc::SIGINT) };
    let status = wait_for("loadgen to stop on Ctrl-C", Duration::from_secs(20), || run.child.try_wait().ok().flatten());
    assert!(status.success());
    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert!(report["ops"].as_u64().unwrap() > 0 && report["duration_secs"].as_f64().unwrap() < 60.0, "{report}");
}

#[test]
fn dev_starts_a_cluster_and_stops_it_on_ctrl_c() {
    let dir = tempfile::tempdir().unwrap();
    // `vasto dev` uses the port and the two after it: find three free in a row.
    let port = wait_for("three free ports in a row", Duration::from_secs(10), || {
        let p = free_port();
        let free = |q: u16| std::net::TcpListener::bind(("127.0.0.1", q)).is_ok();
        (p < u16::MAX - 2 && free(p + 1) && free(p + 2)).then_some(p)
    });
    let data = dir.path().join("data");
    let stderr_log = dir.path().join("dev.stderr");
    let mut child = Command::new(vasto())
        .args(["dev", "--stores", "2", "--port", &port.to_string(), "--dir", &data.display().to_string()])
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&stderr_log).unwrap())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    // Killed by PID if the test fails; its children follow it (parent-death signal).
    let mut dev = common::Proc { name: "dev".into(), child, log: data.clone() };
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let up = (0..).map_while(|_| rx.recv_timeout(Duration::from_secs(60)).ok()).any(|l| l.contains("cluster is up"));
    assert!(up, "vasto dev did not come up: {}", std::fs::read_to_string(&stderr_log).unwrap_or_default());
    let master = format!("127.0.0.1:{port}");
    let out = run_bounded(Command::new(vasto()).args(["put", "--master", &master, "hello", "world"]), Duration::from_secs(30));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = run_bounded(Command::new(vasto()).args(["get", "--master", &master, "hello"]), Duration::from_secs(30));
    assert_eq!(out.stdout, b"world");
    // Ctrl-C: everything stops, and the ports are free again.
    // SAFETY: kill(2) on the PID of our own child.
    unsafe { libc::kill(dev.pid() as libc::pid_t, libc::SIGINT) };
    let status = wait_for("vasto dev to exit", Duration::from_secs(20), || dev.child.try_wait().ok().flatten());
    assert!(status.success());
    for p in [port, port + 1, port + 2] {
        wait_for("port released", Duration::from_secs(10), || std::net::TcpStream::connect(("127.0.0.1", p)).is_err().then_some(()));
    }
    assert!(data.join("store-0").exists() && data.join("store-1").exists(), "data lives under one directory");
}

/// Every `--sync` mode serves and survives a kill -9 with every acknowledged write; a bad mode
/// is refused with a clear message. (What each mode keeps across a power failure is in
/// ARCHITECTURE.md; a test cannot cut the power.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_sync_mode_serves_and_a_bad_one_is_refused() {
    let out = run_bounded(Command::new(vasto()).args(["store", "--dir", "/nonexistent", "--sync", "sometimes"]), Duration::from_secs(30));
    assert!(!out.status.success() && text(&out.stderr).contains("use none, everysec or always"), "{}", text(&out.stderr));
    let mut cluster = Cluster::start(3);
    for (i, mode) in ["none", "everysec", "always"].into_iter().enumerate() {
        cluster.kill_store(i);
        cluster.start_store_with(i, &["--sync", mode]);
    }
    cluster.wait_stores_up(3);
    cluster.create_keyspace("sync", 3, 1);
    let ks = vasto_client::Client::connect(&cluster.master_addr).await.unwrap().keyspace("sync").await.unwrap();
    let mut acked = Vec::new();
    common::put_numbered(&ks, "k", 300, &mut acked).await;
    for i in 0..3 {
        cluster.kill_store(i);
        cluster.start_store_with(i, &["--sync", ["none", "everysec", "always"][i]]);
    }
    cluster.wait_stores_up(3);
    for (i, mode) in ["none", "everysec", "always"].into_iter().enumerate() {
        let log = std::fs::read_to_string(cluster.dir.path().join(format!("store-{i}.log"))).unwrap();
        assert!(log.contains(&format!("sync=\"{mode}\"")) || log.contains(&format!("sync={mode}")), "store {i} runs with --sync {mode}");
    }
    for (k, v) in &acked {
        assert_eq!(ks.get(k).await.unwrap().as_deref(), Some(v.as_slice()), "{}", String::from_utf8_lossy(k));
    }
}

/// The cache sizes are taken as given (the store's start line shows them, and it serves with
/// the block cache at its smallest and the value cache off); sizes the store cannot have (and
/// reader parts of no gets) are refused with a message naming the flag.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_sizes_are_applied_and_impossible_ones_refused() {
    for (flag, value, says) in [
        ("--block-cache-mb", "0", "invalid value '0' for '--block-cache-mb"),
        ("--value-cache-mb", "99999999999999999", "--value-cache-mb 99999999999999999 is too large"),
        ("--block-cache-mb", "-1", "invalid value '-1' for '--block-cache-mb"),
        ("--read-part-gets", "0", "invalid value '0' for '--read-part-gets"),
        ("--read-part-gets", "65", "invalid value '65' for '--read-part-gets"),
    ] {
        let out = run_bounded(Command::new(vasto()).args(["store", "--dir", "/nonexistent", &format!("{flag}={value}")]), Duration::from_secs(30));
        assert!(!out.status.success() && text(&out.stderr).contains(says), "{flag} {value}: {}", text(&out.stderr));
    }
    let mut cluster = Cluster::start(1);
    // Restarted once it is up: a store killed during its very first start is another case.
    cluster.wait_stores_up(1);
    cluster.kill_store(0);
    cluster.start_store_with(0, &["--block-cache-mb", "1", "--value-cache-mb", "0"]);
    cluster.wait_stores_up(1);
    cluster.create_keyspace("caches", 2, 1);
    let ks = vasto_client::Client::connect(&cluster.master_addr).await.unwrap().keyspace("caches").await.unwrap();
    let mut acked = Vec::new();
    common::put_numbered(&ks, "k", 200, &mut acked).await;
    for (k, v) in &acked {
        assert_eq!(ks.get(k).await.unwrap().as_deref(), Some(v.as_slice()), "{}", String::from_utf8_lossy(k));
    }
    let log = std::fs::read_to_string(cluster.dir.path().join("store-0.log")).unwrap();
    let started = log.lines().rfind(|l| l.contains("store listening")).unwrap_or_default();
    assert!(started.contains("block_cache_mb=1") && started.contains("value_cache_mb=0"), "{started}");
}
