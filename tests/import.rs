//! End-to-end: `vasto import` bulk-loads files into a running cluster through SST ingestion.
mod common;

use common::{run_bounded, vasto, Cluster, Raw};
use std::io::Write;
use std::process::Command;
use std::time::Duration;
use vasto_client::{Client, PutOptions};

const RECORDS: usize = 1_000_000;

fn key(i: usize) -> String {
    format!("user:{i:07}")
}

fn value(i: usize) -> String {
    format!("profile-{i}-{}", "x".repeat(i % 40))
}

fn import(cluster: &Cluster, keyspace: &str, input: &std::path::Path, extra: &[&str]) -> std::process::Output {
    let mut cmd = Command::new(vasto());
    cmd.args(["import", "--master", &cluster.master_addr, "--keyspace", keyspace, "--input"]).arg(input).args(extra);
    run_bounded(&mut cmd, Duration::from_secs(300))
}

/// Keys served by every replica of every shard, compared with what the keys hash to.
fn assert_counts(cluster: &Cluster, keyspace: &str, keys: impl Iterator<Item = String>) {
    let (shards, table) = cluster.routes(keyspace);
    let mut expected = vec![0usize; shards as usize];
    for k in keys {
        expected[vasto_hash::shard_of(k.as_bytes(), shards) as usize] += 1;
    }
    for (shard, addrs) in table.iter().enumerate() {
        for addr in addrs {
            assert_eq!(Raw::connect(addr).count_keys(keyspace, shard as u32), expected[shard], "{addr} shard {shard}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_million_records_are_imported_to_every_replica_without_overwriting_newer_writes() {
    let cluster = Cluster::start(3);
    cluster.create_keyspace("imp", 4, 2);
    let input = cluster.dir.path().join("users.tsv");
    let mut file = std::io::BufWriter::new(std::fs::File::create(&input).unwrap());
    for i in 0..RECORDS {
        writeln!(file, "{}\t{}", key(i), value(i)).unwrap();
    }
    file.into_inner().unwrap().sync_all().unwrap();
    // A live write newer than the import's event time must survive it.
    let ks = Client::connect(&cluster.master_addr).await.unwrap().keyspace("imp").await.unwrap();
    let import_time = vasto_client::now_ns() - 3_600_000_000_000;
    ks.put_with(key(5).as_bytes(), b"live", PutOptions { event_time_ns: Some(import_time + 1), ..Default::default() }).await.unwrap();

    let out = tokio::task::block_in_place(|| import(&cluster, "imp", &input, &["--event-time", &import_time.to_string()]));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "import failed: {}{stdout}", String::from_utf8_lossy(&out.stderr));
    eprintln!("{stdout}");
    assert!(stdout.contains(&format!("imported {RECORDS} records")), "{stdout}");

    tokio::task::block_in_place(|| assert_counts(&cluster, "imp", (0..RECORDS).map(key)));
    for i in (0..RECORDS).step_by(RECORDS / 10_000) {
        let want = if i == 5 { "live".to_owned() } else { value(i) };
        assert_eq!(ks.get(key(i).as_bytes()).await.unwrap(), Some(want.into_bytes()), "{}", key(i));
    }
    assert_eq!(ks.get(key(5).as_bytes()).await.unwrap().as_deref(), Some(&b"live"[..]), "the newer live write wins");
    // Importing the same file again changes nothing.
    let again = tokio::task::block_in_place(|| import(&cluster, "imp", &input, &["--event-time", &import_time.to_string()]));
    assert!(again.status.success(), "{}", String::from_utf8_lossy(&again.stderr));
    tokio::task::block_in_place(|| assert_counts(&cluster, "imp", (0..RECORDS).map(key)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_lines_stop_the_import_unless_skipped() {
    let cluster = Cluster::start(2);
    cluster.create_keyspace("bad", 2, 2);
    let input = cluster.dir.path().join("mixed.csv");
    std::fs::write(&input, "a,1\nb,2\nonly-a-key\n\"c,d\",\"quoted, value\"\n,empty-key\ne,5\n").unwrap();

    let out = tokio::task::block_in_place(|| import(&cluster, "bad", &input, &[]));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "malformed lines must stop the import");
    assert!(stderr.contains("2 malformed line(s)") && stderr.contains("line 3") && stderr.contains("nothing was imported"), "{stderr}");
    tokio::task::block_in_place(|| assert_counts(&cluster, "bad", std::iter::empty()));

    let out = tokio::task::block_in_place(|| import(&cluster, "bad", &input, &["--skip-bad"]));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("skipped line 3") && stderr.contains("skipped line 5: empty key"), "{stderr}");
    tokio::task::block_in_place(|| assert_counts(&cluster, "bad", ["a", "b", "c,d", "e"].map(String::from).into_iter()));
    let ks = Client::connect(&cluster.master_addr).await.unwrap().keyspace("bad").await.unwrap();
    assert_eq!(ks.get(b"c,d").await.unwrap().as_deref(), Some(&b"quoted, value"[..]));

    // An unknown keyspace and a missing file are clear errors.
    let out = tokio::task::block_in_place(|| import(&cluster, "nope", &input, &[]));
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("nope"), "{}", String::from_utf8_lossy(&out.stderr));
    let out = tokio::task::block_in_place(|| import(&cluster, "bad", &cluster.dir.path().join("missing.tsv"), &[]));
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("missing.tsv"), "{}", String::from_utf8_lossy(&out.stderr));
}
