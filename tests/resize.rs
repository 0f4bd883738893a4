//! End-to-end: grow a keyspace while a writer runs; nothing acknowledged is lost and every key
//! ends up served by its owning shard only.
mod common;

use common::{wait_for, Acked, Cluster, Raw};
use std::time::Duration;
use vasto_client::Client;
use vasto_wire::Status;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn growing_then_shrinking_under_load_loses_nothing() {
    let cluster = Cluster::start(3);
    cluster.create_keyspace("gr", 2, 2);
    let ks = Client::connect(&cluster.master_addr).await.unwrap().keyspace("gr").await.unwrap();
    let mut acked = Vec::new();
    common::put_numbered(&ks, "before", 3000, &mut acked).await;
    resize_under_load(&cluster, &ks, 5, "grow", &mut acked).await;
    check(&cluster, &ks, "gr", 5, &acked).await;
    resize_under_load(&cluster, &ks, 3, "shrink", &mut acked).await;
    check(&cluster, &ks, "gr", 3, &acked).await;
    // On disk: the retired shards are gone and compaction left each key only on its owner.
    let held = tokio::task::block_in_place(|| common::wait_only_owned_keys(&cluster, "gr", 3));
    assert_eq!(held.len(), 6, "3 shards x 2 replicas: {held:?}");
    assert_eq!(held.iter().map(|(_, n)| n).sum::<u64>(), 2 * acked.len() as u64, "each key once per replica");
}

/// Resizes `gr` to `shards` with the CLI while writing; every write must succeed.
async fn resize_under_load(cluster: &Cluster, ks: &vasto_client::Keyspace, shards: u32, tag: &str, acked: &mut Acked) {
    let args = ["admin", "--master", &cluster.master_addr, "resize", "gr", "--shards", &shards.to_string()].map(String::from).to_vec();
    let (out, i) = common::while_writing(args, ks, &format!("{tag}-during"), acked).await;
    assert!(out.status.success(), "resize to {shards} failed: {}", String::from_utf8_lossy(&out.stderr));
    eprintln!("{i} writes acknowledged while resizing to {shards}");
    common::put_numbered(ks, &format!("{tag}-after"), 300, acked).await;
}

/// Everything reads back through the client, every replica holds its shard's keys, and shard 0
/// refuses a key it does not own.
async fn check(cluster: &Cluster, ks: &vasto_client::Keyspace, name: &str, shards: u32, acked: &[(Vec<u8>, Vec<u8>)]) {
    let (listed, table) = cluster.routes(name);
    assert_eq!((listed, table.len()), (shards, shards as usize));
    assert_eq!(ks.routing_table().unwrap().shards, shards, "the client has the new table");
    for (k, v) in acked {
        assert_eq!(ks.get(k).await.unwrap().as_deref(), Some(v.as_slice()), "{}", String::from_utf8_lossy(k));
    }
    common::assert_all_replicas_hold(cluster, name, acked);
    let other = acked.iter().map(|(k, _)| k).find(|k| vasto_hash::shard_of(k, shards) != 0).unwrap();
    let mut raw = Raw::connect(&table[0][0]);
    let mut out = Vec::new();
    raw.enc.get(&mut out, 1, name, 0, other);
    std::io::Write::write_all(&mut raw.stream, &out).unwrap();
    let resp = vasto_wire::parse_frame(raw.read_frame()).unwrap().body_as_response().unwrap();
    assert_eq!(resp.status(), Status::WrongShard, "shard 0 does not serve another shard's key");
}

/// The master dies in the middle of a resize and comes back: the keyspace keeps serving
/// throughout (writes to keys that were moving wait for the restarted master), and the
/// restarted master settles every replica on one shard count (here the old one: the resize was
/// not committed anywhere), with nothing acknowledged lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_restart_in_the_middle_of_a_resize_settles_on_one_shard_count() {
    // A long drain, so the test sees the draining phase and kills the master inside it however
    // slowly this machine runs.
    let mut cluster = Cluster::start_with_master_flags(3, &["--drain-settle-ms", "20000"]);
    cluster.create_keyspace("mr", 2, 2);
    let ks = Client::connect(&cluster.master_addr).await.unwrap().keyspace("mr").await.unwrap();
    let mut acked = Vec::new();
    common::put_numbered(&ks, "before", 3000, &mut acked).await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (ks, stop) = (ks.clone(), std::sync::Arc::clone(&stop));
        tokio::spawn(async move {
            let mut acked = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let (k, v) = (format!("during:{}", acked.len()).into_bytes(), b"x".to_vec());
                ks.put(&k, &v).await.unwrap_or_else(|e| panic!("write {} failed around the master restart: {e}", acked.len()));
                acked.push((k, v));
            }
            acked
        })
    };
    let master = cluster.master_addr.clone();
    let resize = tokio::task::spawn_blocking(move || {
        common::run_bounded(
            std::process::Command::new(common::vasto()).args(["admin", "--master", &master, "resize", "mr", "--shards", "4"]),
            Duration::from_secs(60),
        )
    });
    // Kill it at the most delicate point: the old shards already refuse the keys that move, the
    // new count is not committed, and clients still route by the old one.
    let log = cluster.dir.path().join("master.log");
    tokio::task::block_in_place(|| {
        wait_for("the resize to reach its drain", Duration::from_secs(30), || {
            std::fs::read_to_string(&log).ok().filter(|l| l.contains("refuse the keys that move")).map(drop)
        })
    });
    let status = cluster.status().expect("status");
    let op = &status["keyspaces"][0]["operation"];
    assert_eq!((op["kind"].as_str(), op["phase"].as_str()), (Some("resize 2 -> 4 shards"), Some("draining")), "status shows the resize: {op}");
    // 2 new shards x 2 replicas, each copying from 2 old shards x 2 replicas; all caught up by now.
    assert_eq!((op["copies"].as_u64(), op["copies_caught_up"].as_u64()), (Some(16), Some(16)), "{op}");
    cluster.kill_master();
    let out = resize.await.unwrap();
    eprintln!("resize command: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    tokio::time::sleep(Duration::from_millis(500)).await;
    cluster.start_master();
    cluster.wait_stores_up(3);
    // Settled: every replica directory serves and keeps one shard count, and no other exists.
    let shards = 2;
    let dirs = tokio::task::block_in_place(|| {
        wait_for("the replicas to settle on one shard count", Duration::from_secs(60), || common::only_owned_keys_now(&cluster, "mr", 2))
    });
    eprintln!("rolled back to {shards} shards: {dirs:?}");
    assert_eq!(dirs.len(), shards as usize * 2, "one directory per replica");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    acked.extend(writer.await.expect("writer"));
    common::put_numbered(&ks, "after", 300, &mut acked).await;
    check(&cluster, &ks, "mr", shards, &acked).await;
}
