//! End-to-end: `--metrics-listen` on the master, the stores and the gateway serves Prometheus'
//! text format at `/metrics`. Every endpoint is scraped over HTTP while the cluster serves
//! writes, reads, a compaction and a resize, and every line of every answer is parsed.
mod common;

use common::{free_port, wait_for, Cluster, Proc};
use std::collections::{BTreeSet, HashMap};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::Duration;

/// One sample: the family's sample name, its labels, its value.
#[derive(Debug, Clone)]
struct Sample {
    name: String,
    labels: HashMap<String, String>,
    value: f64,
}

/// The status code and body of `METHOD PATH` on `addr`.
fn http(addr: &str, method: &str, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    write!(s, "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: */*\r\n\r\n").expect("send the request");
    let mut answer = String::new();
    s.read_to_string(&mut answer).expect("read the answer");
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or_else(|| panic!("no header end in {answer:?}"));
    let code = head.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or_else(|| panic!("status line of {head:?}"));
    // HEAD's Content-Length is the length GET's body would have.
    if let Some(len) = head.lines().find_map(|l| l.strip_prefix("Content-Length: ")).filter(|_| method != "HEAD") {
        assert_eq!(len.trim().parse::<usize>().ok(), Some(body.len()), "Content-Length of {head:?}");
    }
    (code, body.to_owned())
}

/// Parses an exposition: `# HELP`/`# TYPE`/`# UNIT` lines, `# EOF` last, and samples
/// `name{k="v",...} value` between; panics on any other line.
fn parse(text: &str) -> Vec<Sample> {
    assert!(text.ends_with("# EOF\n"), "no # EOF at the end: {text}");
    let mut samples = Vec::new();
    for line in text.lines() {
        if line == "# EOF" {
            continue;
        }
        if let Some(meta) = line.strip_prefix("# ") {
            assert!(["HELP ", "TYPE ", "UNIT "].iter().any(|p| meta.starts_with(p)), "comment line {line:?}");
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("sample without a value: {line:?}"));
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            v => v.parse().unwrap_or_else(|_| panic!("value of {line:?}")),
        };
        let (name, labels) = match series.split_once('{') {
            None => (series, HashMap::new()),
            Some((name, rest)) => {
                let body = rest.strip_suffix('}').unwrap_or_else(|| panic!("labels of {line:?}"));
                let labels = body
                    .split("\",")
                    .filter(|p| !p.is_empty())
                    .map(|pair| {
                        let (k, v) = pair.split_once("=\"").unwrap_or_else(|| panic!("label {pair:?} of {line:?}"));
                        (k.to_owned(), v.trim_end_matches('"').to_owned())
                    })
                    .collect();
                (name, labels)
            }
        };
        assert!(name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') && name.starts_with("vasto_"), "metric name {name:?}");
        samples.push(Sample { name: name.to_owned(), labels, value });
    }
    samples
}

/// Every sample name any scrape of this test has returned.
static SEEN: std::sync::Mutex<BTreeSet<String>> = std::sync::Mutex::new(BTreeSet::new());

fn scrape(addr: &str) -> Vec<Sample> {
    let (code, body) = http(addr, "GET", "/metrics");
    assert_eq!(code, 200, "{body}");
    let samples = parse(&body);
    SEEN.lock().unwrap_or_else(|p| p.into_inner()).extend(samples.iter().map(|s| s.name.clone()));
    samples
}

/// The sum of the samples named `name` whose labels include every pair of `with`.
fn total(samples: &[Sample], name: &str, with: &[(&str, &str)]) -> f64 {
    samples.iter().filter(|s| s.name == name && with.iter().all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))).map(|s| s.value).sum()
}

fn has(samples: &[Sample], name: &str) -> bool {
    samples.iter().any(|s| s.name == name)
}

/// A RESP command's reply, read until it is complete enough for these tests (one line, or a
/// bulk string).
fn resp(s: &mut TcpStream, args: &[&str]) -> String {
    let mut out = format!("*{}\r\n", args.len());
    for a in args {
        out += &format!("${}\r\n{a}\r\n", a.len());
    }
    s.write_all(out.as_bytes()).expect("send");
    let mut got = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        s.read_exact(&mut byte).expect("read reply");
        got.push(byte[0]);
        let text = String::from_utf8_lossy(&got);
        let complete = match text.strip_prefix('$') {
            Some(rest) => rest.split_once("\r\n").is_some_and(|(len, body)| len == "-1" || len.parse::<usize>().is_ok_and(|n| body.len() == n + 2)),
            None => text.ends_with("\r\n"),
        };
        if complete {
            return text.into_owned();
        }
    }
}

#[test]
fn every_endpoint_serves_what_the_cluster_does() {
    let master_metrics = format!("127.0.0.1:{}", free_port());
    let mut cluster = Cluster::start_with_master_flags(0, &["--metrics-listen", &master_metrics]);
    let store_metrics: Vec<String> = (0..2).map(|_| format!("127.0.0.1:{}", free_port())).collect();
    for (i, addr) in store_metrics.iter().enumerate() {
        cluster.add_store_with(i + 1, &["--metrics-listen", addr, "--zone", &format!("z{i}")]);
    }
    cluster.create_keyspace("watched", 2, 2);
    let client = vasto_client::blocking::Client::connect_with(&cluster.master_addr, cluster.client_config()).expect("client");
    let ks = client.keyspace("watched").expect("keyspace");
    for i in 0..300 {
        ks.put(format!("k{i}").as_bytes(), &[b'v'; 200]).expect("put");
    }
    for i in 0..350 {
        let _ = ks.get(format!("k{i}").as_bytes()).expect("get");
    }

    // Stores: requests by op and status, their latency, RocksDB, disks, replication, moves.
    wait_for("replication lags in the stores' metrics", Duration::from_secs(30), || {
        store_metrics.iter().all(|a| has(&scrape(a), "vasto_store_replication_lag_entries")).then_some(())
    });
    let stores: Vec<Vec<Sample>> = store_metrics.iter().map(|a| scrape(a)).collect();
    let sum = |name: &str, with: &[(&str, &str)]| stores.iter().map(|s| total(s, name, with)).sum::<f64>();
    assert_eq!(sum("vasto_store_requests_total", &[("op", "put"), ("status", "ok")]), 300.0);
    assert_eq!(sum("vasto_store_requests_total", &[("op", "get"), ("status", "ok")]), 300.0);
    assert_eq!(sum("vasto_store_requests_total", &[("op", "get"), ("status", "not_found")]), 50.0);
    assert_eq!(sum("vasto_store_request_duration_seconds_count", &[("op", "get")]), 350.0);
    assert_eq!(sum("vasto_store_request_duration_seconds_bucket", &[("op", "put"), ("le", "+Inf")]), 300.0);
    for name in ["vasto_store_memtable_bytes", "vasto_store_disk_free_bytes", "vasto_store_disk_capacity_bytes", "vasto_store_keys_estimate"] {
        assert!(sum(name, &[]) > 0.0, "{name} is 0 in {stores:?}");
    }
    for name in [
        "vasto_store_sst_bytes",
        "vasto_store_rocksdb_pending_compaction_bytes",
        "vasto_store_rocksdb_running_compactions",
        "vasto_store_rocksdb_write_stopped",
        "vasto_store_change_log_entries",
        "vasto_store_replication_lag_seconds",
        "vasto_store_value_cache_hits_total",
        "vasto_store_value_cache_misses_total",
        "vasto_store_value_cache_bytes",
        "vasto_store_moved_bytes_total",
        "vasto_store_disk_full",
        "vasto_store_connections",
    ] {
        assert!(stores.iter().all(|s| has(s, name)), "{name} missing in {stores:?}");
    }
    assert_eq!(sum("vasto_store_change_log_entries", &[("keyspace", "watched")]), 300.0, "each put is logged once, by the replica that took it");
    assert!(sum("vasto_store_memtable_bytes", &[("keyspace", "watched")]) > 0.0);

    // Master: stores, keyspaces, routing versions, replicas.
    let master = scrape(&master_metrics);
    assert_eq!(total(&master, "vasto_master_stores", &[("state", "up")]), 2.0);
    assert_eq!(total(&master, "vasto_master_store_up", &[("zone", "z1")]), 1.0);
    assert_eq!(total(&master, "vasto_master_keyspaces", &[]), 1.0);
    assert!(total(&master, "vasto_master_routing_version", &[("keyspace", "watched")]) > 0.0);
    wait_for("every replica to be serving in the master's metrics", Duration::from_secs(30), || {
        (total(&scrape(&master_metrics), "vasto_master_replicas", &[("keyspace", "watched"), ("state", "serving")]) == 4.0).then_some(())
    });
    assert!(total(&master, "vasto_master_connections", &[]) >= 3.0, "2 stores and a client");

    // A resize: the master shows it with its phase while it runs (the drain alone lasts the
    // 1.2 s drain settle), the sources count what they sent.
    let mut resize = Command::new(common::vasto());
    resize
        .args(["admin", "--master", &cluster.master_addr, "resize", "watched", "--shards", "3"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let resize = resize.spawn().expect("start the resize");
    let phase = wait_for("the resize in the master's metrics", Duration::from_secs(60), || {
        let m = scrape(&master_metrics);
        m.iter().find(|s| s.name == "vasto_master_operation" && s.labels.get("kind").map(String::as_str) == Some("resize")).map(|s| s.labels["phase"].clone())
    });
    assert!(["copying", "draining", "committing", "rolling back"].contains(&phase.as_str()), "{phase}");
    let out = common::wait_bounded(resize, "admin resize", Duration::from_secs(120));
    assert!(out.status.success(), "resize: {}", String::from_utf8_lossy(&out.stderr));
    wait_for("the operation to leave the master's metrics", Duration::from_secs(30), || {
        (!has(&scrape(&master_metrics), "vasto_master_operation")).then_some(())
    });
    let moved: f64 = store_metrics.iter().map(|a| total(&scrape(a), "vasto_store_moved_bytes_total", &[("kind", "resize_sent")])).sum();
    assert!(moved > 0.0, "a resize moved nothing");
    assert_eq!(total(&scrape(&master_metrics), "vasto_master_keyspace_shards", &[("keyspace", "watched")]), 3.0);

    // The gateway: commands by result and their latency, connections.
    let gateway_port = free_port();
    let gateway_metrics = format!("127.0.0.1:{}", free_port());
    let listen = format!("127.0.0.1:{gateway_port}");
    let args = ["gateway", "--master", &cluster.master_addr, "--listen", &listen, "--keyspace", "watched", "--metrics-listen", &gateway_metrics];
    let _gateway = Proc::spawn("gateway", &args, &cluster.dir.path().join("gateway.log"));
    let mut redis = wait_for("the gateway to listen", Duration::from_secs(30), || TcpStream::connect(&listen).ok());
    redis.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    assert_eq!(resp(&mut redis, &["SET", "g", "1"]), "+OK\r\n");
    assert_eq!(resp(&mut redis, &["GET", "g"]), "$1\r\n1\r\n");
    assert!(resp(&mut redis, &["INCR", "k1"]).starts_with('-'), "INCR of a non-number fails");
    assert!(resp(&mut redis, &["GET"]).starts_with("-ERR wrong number"), "arity");
    let gateway = scrape(&gateway_metrics);
    assert_eq!(total(&gateway, "vasto_gateway_commands_total", &[("command", "set"), ("result", "ok")]), 1.0);
    assert_eq!(total(&gateway, "vasto_gateway_commands_total", &[("command", "get"), ("result", "ok")]), 1.0);
    assert_eq!(total(&gateway, "vasto_gateway_commands_total", &[("command", "get"), ("result", "rejected")]), 1.0);
    assert_eq!(total(&gateway, "vasto_gateway_commands_total", &[("command", "incr"), ("result", "error")]), 1.0);
    assert_eq!(total(&gateway, "vasto_gateway_command_duration_seconds_count", &[("command", "set")]), 1.0);
    assert_eq!(total(&gateway, "vasto_gateway_connections", &[]), 1.0);

    // The endpoint answers nothing but GET /metrics.
    for addr in [&master_metrics, &store_metrics[0], &gateway_metrics] {
        assert_eq!(http(addr, "GET", "/").0, 404);
        assert_eq!(http(addr, "POST", "/metrics").0, 405);
        assert_eq!(http(addr, "HEAD", "/metrics").0, 200);
    }

    // The dashboard in deploy/ uses only names the endpoints serve.
    let dashboard = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/grafana-vasto.json")).expect("deploy/grafana-vasto.json");
    let seen = SEEN.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let mut used = BTreeSet::new();
    for (at, _) in dashboard.match_indices("vasto_") {
        let name: String = dashboard[at..].chars().take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_').collect();
        used.insert(name);
    }
    let unknown: Vec<&String> = used.iter().filter(|n| !seen.contains(*n)).collect();
    assert!(used.len() > 20 && unknown.is_empty(), "the dashboard uses names no endpoint served: {unknown:?} (served: {seen:?})");
}

/// Gets of imported data (in files only, nothing of it cached) are answered by the reader
/// threads with the imported values, many at once, and counted as disk gets, whether a reader
/// takes them one by one or at least 4 at a time; a store with `--read-threads 0` answers them
/// on its cores and counts none.
#[test]
fn gets_of_data_on_disk_go_to_reader_threads_and_answer_right() {
    let records = 20_000u64;
    for (read_threads, part_gets, deferred) in [("16", "4", true), ("16", "1", true), ("0", "4", false)] {
        let metrics = format!("127.0.0.1:{}", free_port());
        let mut cluster = Cluster::start(0);
        cluster.add_store_with(1, &["--metrics-listen", &metrics, "--read-threads", read_threads, "--read-part-gets", part_gets]);
        cluster.create_keyspace("cold", 2, 1);
        let input = cluster.dir.path().join("cold.tsv");
        let tsv: String = (0..records).map(|i| format!("key:{i:012}\tvalue-{i}\n")).collect();
        std::fs::write(&input, tsv).expect("write the records");
        let out = cluster.vasto(&["import", "--master", &cluster.master_addr, "--keyspace", "cold", "--input", &input.display().to_string()]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        // Keys spread over the key space, so most lie in blocks no earlier get brought in.
        for i in (0..records).step_by(997) {
            let key = format!("key:{i:012}");
            let out = cluster.vasto(&["get", "--master", &cluster.master_addr, "--keyspace", "cold", &key]);
            assert_eq!(String::from_utf8_lossy(&out.stdout), format!("value-{i}"), "{key}: {}", String::from_utf8_lossy(&out.stderr));
        }
        let json = cluster.dir.path().join("gets.json");
        let out = cluster.vasto(&[
            "loadgen",
            "--master",
            &cluster.master_addr,
            "--keyspace",
            "cold",
            "--workload",
            "get",
            "--keys",
            &records.to_string(),
            "--concurrency",
            "8",
            "--pipeline",
            "8",
            "--duration",
            "2s",
            "--json",
            &json.display().to_string(),
        ]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).expect("report")).expect("JSON");
        assert!(report["ops"].as_u64().unwrap() > 100 && report["errors"] == 0 && report["not_found"] == 0, "{report}");
        let disk_gets = total(&scrape(&metrics), "vasto_store_disk_gets_total", &[]);
        assert_eq!(disk_gets > 0.0, deferred, "--read-threads {read_threads} --read-part-gets {part_gets}: {disk_gets} disk gets");
    }
}
