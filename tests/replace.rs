//! End-to-end: replace a store while a writer runs; nothing acknowledged is lost.
mod common;

use common::{assert_all_replicas_hold, wait_for, Cluster};
use std::time::Duration;
use vasto_client::Client;

const SHARDS: u32 = 4;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replacing_a_store_under_load_loses_nothing() {
    let mut cluster = Cluster::start(3);
    cluster.create_keyspace("rp", SHARDS, 2);
    let ks = Client::connect(&cluster.master_addr).await.unwrap().keyspace("rp").await.unwrap();
    // Data written before, during and after the replace.
    let mut acked = Vec::new();
    common::put_numbered(&ks, "before", 500, &mut acked).await;
    // A fourth store joins the cluster, empty.
    cluster.store_addrs.push(format!("127.0.0.1:{}", common::free_port()));
    cluster.stores.push(None);
    cluster.start_store(3);
    cluster.wait_stores_up(4);
    let (from, to) = (cluster.store_addrs[0].clone(), cluster.store_addrs[3].clone());
    let args = ["admin", "--master", &cluster.master_addr, "replace-store", "rp", "--from", &from, "--to", &to].map(String::from).to_vec();
    let (out, i) = common::while_writing(args, &ks, "during", &mut acked).await;
    assert!(out.status.success(), "replace-store failed: {}", String::from_utf8_lossy(&out.stderr));
    assert!(i > 0);
    eprintln!("{i} writes acknowledged while the replace ran");
    common::put_numbered(&ks, "after", 200, &mut acked).await;
    let table = cluster.routes("rp").1;
    assert!(table.iter().flatten().all(|a| *a != cluster.store_addrs[0]), "the old store holds no replica: {table:?}");
    assert!(table.iter().flatten().any(|a| *a == cluster.store_addrs[3]), "the new store took over: {table:?}");
    assert!(table.iter().all(|row| row.len() == 2), "back to 2 replicas per shard: {table:?}");
    assert_all_replicas_hold(&cluster, "rp", &acked);
    // The old store's copies are gone.
    wait_for("old copies dropped", Duration::from_secs(10), || {
        let dir = cluster.dir.path().join("store-0").join("rp");
        let left = std::fs::read_dir(&dir).map(|d| d.flatten().filter(|e| e.path().join("CURRENT").exists()).count()).unwrap_or(0);
        (left == 0).then_some(())
    });
    // Running it again is a no-op.
    let out =
        cluster.vasto(&["admin", "--master", &cluster.master_addr, "replace-store", "rp", "--from", &cluster.store_addrs[0], "--to", &cluster.store_addrs[3]]);
    assert!(out.status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_replace_rolls_back() {
    let mut cluster = Cluster::start(3);
    // Short change logs force the joining store to copy snapshots, and --max-mbps slows them
    // down enough for the cancel to arrive while it copies.
    for i in 0..3 {
        cluster.stores[i].take().unwrap().kill();
        cluster.start_store_with(i, &["--change-log-entries", "10", "--max-mbps", "1"]);
    }
    cluster.wait_stores_up(3);
    cluster.create_keyspace("cx", SHARDS, 2);
    let ks = Client::connect(&cluster.master_addr).await.unwrap().keyspace("cx").await.unwrap();
    let value = vec![b'x'; 1000];
    for i in 0..8000 {
        ks.put(format!("k{i}").as_bytes(), &value).await.unwrap();
    }
    cluster.store_addrs.push(format!("127.0.0.1:{}", common::free_port()));
    cluster.stores.push(None);
    cluster.start_store(3);
    cluster.wait_stores_up(4);
    let (from, to, master) = (cluster.store_addrs[0].clone(), cluster.store_addrs[3].clone(), cluster.master_addr.clone());
    let replace = tokio::task::spawn_blocking(move || {
        common::run_bounded(
            std::process::Command::new(common::vasto()).args(["admin", "--master", &master, "replace-store", "cx", "--from", &from, "--to", &to]),
            Duration::from_secs(120),
        )
    });
    // Cancel as soon as the join shows in the routing table.
    wait_for("the join to start", Duration::from_secs(20), || cluster.routes("cx").1.iter().any(|row| row.len() == 3).then_some(()));
    let out = cluster.vasto(&["admin", "--master", &cluster.master_addr, "cancel", "cx"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = replace.await.unwrap();
    assert!(!out.status.success(), "a cancelled replace reports failure");
    assert!(String::from_utf8_lossy(&out.stderr).contains("cancelled"), "{}", String::from_utf8_lossy(&out.stderr));
    let table = cluster.routes("cx").1;
    assert!(table.iter().all(|row| row.len() == 2), "back to 2 replicas per shard: {table:?}");
    assert!(table.iter().flatten().all(|a| *a != cluster.store_addrs[3]), "the new store holds nothing: {table:?}");
    assert_eq!(ks.get(b"k7999").await.unwrap().as_deref(), Some(&value[..]));
}

/// A store dies; a new one takes its place while a writer and a reader run: no request fails,
/// and every shard is back to two live replicas holding every acknowledged write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_store_replaces_a_dead_one_under_load() {
    let mut cluster = Cluster::start(3);
    cluster.create_keyspace("dead", SHARDS, 2);
    let ks = Client::connect(&cluster.master_addr).await.unwrap().keyspace("dead").await.unwrap();
    let mut acked = Vec::new();
    common::put_numbered(&ks, "before", 500, &mut acked).await;
    // Replication is asynchronous: a store that dies for good takes with it what it had not
    // yet sent (milliseconds of writes). Let it send everything first.
    assert_all_replicas_hold(&cluster, "dead", &acked);
    cluster.stores[0].take().unwrap().kill();
    cluster.store_addrs.push(format!("127.0.0.1:{}", common::free_port()));
    cluster.stores.push(None);
    cluster.start_store(3);
    let new_store = cluster.store_addrs[3].clone();
    wait_for("the new store to register and the dead one to be down", Duration::from_secs(30), || {
        let stores = cluster.status()?["stores"].as_array()?.clone();
        let up = |addr: &str| stores.iter().any(|s| s["address"] == addr && s["up"] == true);
        (up(&new_store) && !up(&cluster.store_addrs[0])).then_some(())
    });
    let reader = {
        let (ks, keys) = (ks.clone(), acked.clone());
        tokio::spawn(async move {
            let mut reads = 0usize;
            loop {
                let (k, v) = &keys[reads % keys.len()];
                let got = ks.get(k).await.unwrap_or_else(|e| panic!("read failed during the replace: {e}"));
                assert_eq!(got.as_deref(), Some(v.as_slice()));
                reads += 1;
                tokio::task::yield_now().await;
            }
        })
    };
    let (from, to) = (cluster.store_addrs[0].clone(), cluster.store_addrs[3].clone());
    let args = ["admin", "--master", &cluster.master_addr, "replace-store", "dead", "--from", &from, "--to", &to].map(String::from).to_vec();
    let (out, i) = common::while_writing(args, &ks, "during", &mut acked).await;
    assert!(!reader.is_finished(), "the reader stopped: {:?}", reader.await);
    reader.abort();
    assert!(out.status.success(), "replace-store failed: {}", String::from_utf8_lossy(&out.stderr));
    eprintln!("{i} writes acknowledged while a dead store was replaced");
    let status = cluster.status().unwrap();
    let routes = &status["keyspaces"][0]["routes"];
    for (shard, row) in routes.as_array().unwrap().iter().enumerate() {
        let row = row.as_array().unwrap();
        assert_eq!(row.len(), 2, "shard {shard}: {row:?}");
        assert!(row.iter().all(|r| r["up"] == true && r["address"] != from.as_str()), "shard {shard}: {row:?}");
    }
    assert_all_replicas_hold(&cluster, "dead", &acked);
}
