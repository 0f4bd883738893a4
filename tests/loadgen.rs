//! End-to-end: `vasto loadgen`'s key distributions and YCSB mixes against a real cluster. What
//! the keys were is read back from the cluster (a scan of the keyspace), so the test sees what
//! the stores saw.
mod common;

use common::Cluster;
use std::collections::BTreeSet;

const KEYS: u64 = 1_000_000;

/// Runs loadgen on `keyspace` over `keys` keys and returns its JSON report.
fn loadgen(cluster: &Cluster, keyspace: &str, keys: u64, extra: &[&str]) -> serde_json::Value {
    let json = cluster.dir.path().join(format!("{keyspace}-{}.json", extra.join("_").replace([':', '.'], "")));
    let json_arg = json.display().to_string();
    let keys = keys.to_string();
    let mut args = vec!["loadgen", "--master", &cluster.master_addr, "--keyspace", keyspace, "--keys", &keys, "--value-size", "16"];
    args.extend_from_slice(&["--concurrency", "2", "--threads", "2", "--pipeline", "4", "--json", &json_arg]);
    args.extend_from_slice(extra);
    let out = cluster.vasto(&args);
    assert!(out.status.success(), "{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).expect("the JSON report")).expect("JSON");
    assert_eq!(report["errors"], 0, "{report}");
    report
}

/// Every key index stored in `keyspace`, read back by scanning its keys (only the keys: the
/// one random value a loadgen run writes may hold a newline).
fn stored_indexes(cluster: &Cluster, keyspace: &str) -> BTreeSet<u64> {
    let out = cluster.vasto(&["scan", "--master", &cluster.master_addr, "--keyspace", keyspace, "--limit", "10000000", "--keys-only", "key:"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.strip_prefix("key:").and_then(|i| i.parse().ok()).unwrap_or_else(|| panic!("a loadgen key: {l:?}")))
        .collect()
}

#[test]
fn distributions_shape_the_keys_written_and_ycsb_mixes_run() {
    let cluster = Cluster::start(1);
    for ks in ["uniform", "zipfian", "latest", "recent"] {
        cluster.create_keyspace(ks, 2, 1);
    }

    // Uniform over a million keys: almost every put writes a new key.
    let report = loadgen(&cluster, "uniform", KEYS, &["--workload", "put", "--duration", "1s"]);
    assert_eq!(report["distribution"], "uniform");
    let puts = report["ops"].as_u64().unwrap();
    let distinct = stored_indexes(&cluster, "uniform").len() as u64;
    assert!(puts > 1000 && distinct > puts * 95 / 100, "{distinct} keys from {puts} uniform puts");

    // Zipfian: the same number of puts lands on far fewer keys (the hot ones again and again).
    let report = loadgen(&cluster, "zipfian", KEYS, &["--workload", "put", "--distribution", "zipfian:0.99", "--duration", "1s"]);
    assert_eq!(report["distribution"], "zipfian:0.99");
    let puts = report["ops"].as_u64().unwrap();
    let distinct = stored_indexes(&cluster, "zipfian").len() as u64;
    assert!(puts > 1000 && distinct < puts * 70 / 100, "{distinct} keys from {puts} zipfian puts");

    // Latest: each of the two load threads writes consecutive keys from its own offset (0 and
    // half the key space), so the keys written are exactly two runs.
    let report = loadgen(&cluster, "latest", KEYS, &["--workload", "put", "--distribution", "latest", "--duration", "1s"]);
    let puts = report["ops"].as_u64().unwrap();
    let stored = stored_indexes(&cluster, "latest");
    let runs: Vec<(u64, u64)> = stored.iter().fold(Vec::new(), |mut runs: Vec<(u64, u64)>, &i| {
        match runs.last_mut() {
            Some((_, end)) if *end + 1 == i => *end = i,
            _ => runs.push((i, i)),
        }
        runs
    });
    // Puts still in flight at the end (2 connections x 4) are written but not counted.
    let stored_count = stored.len() as u64;
    assert!((puts..=puts + 8).contains(&stored_count), "{stored_count} keys from {puts} latest puts: they never repeat a key before wrapping");
    assert_eq!(runs.len(), 2, "{runs:?}");
    assert_eq!((runs[0].0, runs[1].0), (0, KEYS / 2), "{runs:?}");

    // Over a small key space the threads wrap around and write every key. A fresh run starts
    // again from the offsets, reading what lies just before them first (the previous run's
    // writes, as YCSB reads the end of the loaded records): every read finds a value.
    let small = 400;
    let report = loadgen(&cluster, "recent", small, &["--workload", "put", "--distribution", "latest", "--duration", "1s"]);
    assert!(report["ops"].as_u64().unwrap() > small, "{report}");
    assert_eq!(stored_indexes(&cluster, "recent"), (0..small).collect::<BTreeSet<u64>>());
    let report = loadgen(&cluster, "recent", small, &["--workload", "ycsb-b", "--distribution", "latest", "--duration", "1s"]);
    assert_eq!((report["workload"].as_str(), report["distribution"].as_str()), (Some("ycsb-b"), Some("latest")));
    assert!(report["ops"].as_u64().unwrap() > 100 && report["not_found"] == 0, "{report}");

    // YCSB F (read-modify-write) and C default to zipfian keys. After F, the keys it read are
    // stored: a read-only C pass over the same keys finds nearly all of them.
    let report = loadgen(&cluster, "zipfian", KEYS, &["--workload", "ycsb-f", "--duration", "1s"]);
    assert_eq!(report["distribution"], "zipfian:0.99");
    assert!(report["ops"].as_u64().unwrap() > 100, "{report}");
    let report = loadgen(&cluster, "zipfian", KEYS, &["--workload", "ycsb-c", "--duration", "1s"]);
    let (ops, missed) = (report["ops"].as_u64().unwrap(), report["not_found"].as_u64().unwrap());
    assert!(ops > 100 && missed < ops / 2, "{missed} of {ops} zipfian reads missed after the zipfian writes");

    let bad = cluster.vasto(&["loadgen", "--master", &cluster.master_addr, "--keyspace", "zipfian", "--distribution", "zipfian:1.5"]);
    assert!(!bad.status.success() && String::from_utf8_lossy(&bad.stderr).contains("0 < THETA < 1"), "{}", String::from_utf8_lossy(&bad.stderr));
}
