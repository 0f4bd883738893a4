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
    check(&cluster, &ks, 5, &acked).await;
    resize_under_load(&cluster, &ks, 3, "shrink", &mut acked).await;
    check(&cluster, &ks, 3, &acked).await;
    // The retired shards' data is gone from disk.
    for i in 0..3 {
        wait_for("retired shards dropped", Duration::from_secs(10), || {
            let dir = cluster.dir.path().join(format!("store-{i}")).join("gr");
            let retired = [3, 4].iter().filter(|s| dir.join(s.to_string()).join("CURRENT").exists()).count();
            (retired == 0).then_some(())
        });
    }
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
async fn check(cluster: &Cluster, ks: &vasto_client::Keyspace, shards: u32, acked: &[(Vec<u8>, Vec<u8>)]) {
    let (listed, table) = cluster.routes("gr");
    assert_eq!((listed, table.len()), (shards, shards as usize));
    assert_eq!(ks.routing_table().unwrap().shards, shards, "the client has the new table");
    for (k, v) in acked {
        assert_eq!(ks.get(k).await.unwrap().as_deref(), Some(v.as_slice()), "{}", String::from_utf8_lossy(k));
    }
    for (shard, addrs) in table.iter().enumerate() {
        let (keys, values): (Vec<Vec<u8>>, Vec<Vec<u8>>) = acked.iter().filter(|(k, _)| vasto_hash::shard_of(k, shards) == shard as u32).cloned().unzip();
        for addr in addrs {
            wait_for(&format!("{addr} to hold every key of shard {shard}"), Duration::from_secs(30), || {
                let got = Raw::connect(addr).get_many("gr", shard as u32, &keys);
                got.iter().zip(&values).all(|(g, v)| g.as_deref() == Some(v.as_slice())).then_some(())
            });
        }
    }
    let other = acked.iter().map(|(k, _)| k).find(|k| vasto_hash::shard_of(k, shards) != 0).unwrap();
    let mut raw = Raw::connect(&table[0][0]);
    let mut out = Vec::new();
    raw.enc.get(&mut out, 1, "gr", 0, other);
    std::io::Write::write_all(&mut raw.stream, &out).unwrap();
    let resp = vasto_wire::parse_frame(raw.read_frame()).unwrap().body_as_response().unwrap();
    assert_eq!(resp.status(), Status::WrongShard, "shard 0 does not serve another shard's key");
}
