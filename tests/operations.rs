//! End-to-end: what operators rely on. Replicas of a shard go to distinct zones; a store whose
//! disk is nearly full takes no new replicas, and one whose disk is full answers writes with
//! `Unavailable` and keeps serving reads; `admin compact` compacts every replica.
mod common;

use common::{wait_for, Cluster};
use std::collections::HashMap;
use std::time::Duration;
use vasto_client::{Client, ClientError};
use vasto_wire::Status;

/// Zone of every store address, as `admin status` shows it.
fn zones(cluster: &Cluster) -> HashMap<String, String> {
    let status = cluster.status().expect("status");
    let stores = status["stores"].as_array().expect("stores").clone();
    stores.iter().map(|s| (s["address"].as_str().unwrap_or_default().to_owned(), s["zone"].as_str().unwrap_or_default().to_owned())).collect()
}

fn text(out: &std::process::Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

fn create(cluster: &Cluster, name: &str, shards: u32, replicas: u32, extra: &[&str]) -> std::process::Output {
    let (shards, replicas) = (shards.to_string(), replicas.to_string());
    let mut args = vec!["create-keyspace", name, "--shards", &shards, "--replicas", &replicas];
    args.extend_from_slice(extra);
    cluster.admin(&args)
}

#[test]
fn replicas_spread_over_zones_full_disks_take_none_and_compaction_reaches_every_replica() {
    let mut cluster = Cluster::start(0);
    for (i, zone) in ["east", "east", "west"].iter().enumerate() {
        cluster.add_store_with(i + 1, &["--zone", zone]);
    }
    // A store whose reserve is more than any disk has free: full from the start.
    let full = cluster.add_store_with(4, &["--zone", "west", "--min-free-mb", "1000000000"]);
    let full_addr = cluster.store_addrs[full].clone();
    let status = cluster.status().expect("status");
    let full_row = status["stores"].as_array().expect("stores").iter().find(|s| s["address"] == full_addr.as_str()).expect("full store").clone();
    assert_eq!(full_row["disk_full"], true, "{full_row}");
    assert!(full_row["free_bytes"].as_u64().unwrap_or(0) > 0 && full_row["capacity_bytes"].as_u64() > full_row["free_bytes"].as_u64());
    let table = cluster.admin(&["status"]);
    assert!(text(&table).contains("DISK FULL") && text(&table).contains("west"), "{}", text(&table));

    // Two replicas, two zones: every shard has one in each, none on the full store.
    let out = create(&cluster, "zoned", 6, 2, &["--require-zones"]);
    assert!(out.status.success() && !text(&out).contains("warning"), "{}", text(&out));
    let zone_of = zones(&cluster);
    let (_, routes) = cluster.routes("zoned");
    for row in &routes {
        let mut in_zones: Vec<&str> = row.iter().map(|a| zone_of[a].as_str()).collect();
        in_zones.sort_unstable();
        assert_eq!(in_zones, ["east", "west"], "{routes:?}");
        assert!(!row.contains(&full_addr), "a full store got a replica: {routes:?}");
    }

    // Three replicas cannot be spread over two zones: refused with --require-zones, created
    // with a warning without it.
    let refused = create(&cluster, "crowded", 2, 3, &["--require-zones"]);
    assert!(!refused.status.success() && text(&refused).contains("share a zone"), "{}", text(&refused));
    let warned = create(&cluster, "crowded", 2, 3, &[]);
    assert!(warned.status.success(), "{}", text(&warned));
    assert!(String::from_utf8_lossy(&warned.stderr).contains("warning: replicas of shard(s) 0, 1 share a zone"), "{}", text(&warned));
    // Four replicas need the full store: refused, saying why.
    let short = create(&cluster, "wide", 1, 4, &[]);
    assert!(!short.status.success() && text(&short).contains("has a full disk"), "{}", text(&short));

    // Compaction reaches all 12 replicas of `zoned` and runs on each store that holds one.
    let out = cluster.admin(&["compact", "zoned"]);
    assert!(out.status.success() && text(&out).contains("compacting 12 replicas of zoned"), "{}", text(&out));
    wait_for("every replica to be compacted", Duration::from_secs(60), || {
        let done: usize = (0..3)
            .map(|i| std::fs::read_to_string(cluster.dir.path().join(format!("store-{i}.log"))).unwrap_or_default())
            .map(|log| log.lines().filter(|l| l.contains("compacted at an operator's request") && l.contains("zoned/")).count())
            .sum();
        (done == 12).then_some(())
    });
    let unknown = cluster.admin(&["compact", "nope"]);
    assert!(!unknown.status.success() && text(&unknown).contains("does not exist"), "{}", text(&unknown));
    cluster.kill_store(0);
    let partial = cluster.admin(&["compact", "zoned"]);
    assert!(!partial.status.success() && text(&partial).contains("which are down"), "{}", text(&partial));
}

/// A tmpfs of `bytes` mounted at `dir`, unmounted on drop.
struct SmallDisk(std::path::PathBuf);

impl SmallDisk {
    fn mount(dir: &std::path::Path, bytes: u64) -> Result<SmallDisk, String> {
        std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
        let out =
            std::process::Command::new("mount").args(["-t", "tmpfs", "-o", &format!("size={bytes}"), "tmpfs"]).arg(dir).output().map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(SmallDisk(dir.to_path_buf()))
        } else {
            Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
        }
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_writes_with_unavailable_and_keeps_serving_reads() {
    let mut cluster = Cluster::start(0);
    // The store's data directory is a 24 MiB filesystem of its own.
    let disk = match SmallDisk::mount(&cluster.dir.path().join("store-0"), 24 << 20) {
        Ok(disk) => disk,
        Err(why) => {
            eprintln!("skipping: cannot mount a small filesystem here ({why}); run the tests as root");
            return;
        }
    };
    cluster.add_store(1);
    cluster.create_keyspace("tiny", 1, 1);
    let ks = Client::connect_with(&cluster.master_addr, cluster.client_config()).await.expect("client").keyspace("tiny").await.expect("keyspace");
    let value = vec![b'v'; 32 << 10];
    let mut acked = Vec::new();
    let refusal = loop {
        let key = format!("key-{:05}", acked.len());
        match ks.put(key.as_bytes(), &value).await {
            Ok(()) => acked.push(key),
            Err(e) => break e,
        }
        assert!(acked.len() < 2000, "24 MiB took {} values of 32 KiB", acked.len());
    };
    // The client got the store's `Unavailable` (it would have gone to another replica).
    let said = refusal.to_string();
    eprintln!("{} writes of 32 KiB acknowledged, then: {said}", acked.len());
    assert!(matches!(refusal, ClientError::Server { status: Status::Unavailable, .. } | ClientError::Unavailable(_)), "{said}");
    assert!(said.contains("disk"), "{said}");
    assert!(acked.len() > 100, "only {} writes before the disk was full", acked.len());
    // Every acknowledged write still reads back, and the store still counts as up.
    for key in &acked {
        assert_eq!(ks.get(key.as_bytes()).await.expect("read on a full disk").as_deref(), Some(&value[..]), "{key}");
    }
    wait_for("the master to see the full disk", Duration::from_secs(30), || {
        let status = cluster.status()?;
        let store = status["stores"].as_array()?.first()?.clone();
        (store["up"] == true && store["disk_full"] == true).then_some(())
    });
    cluster.kill_store(0);
    drop(disk);
}
