//! End-to-end at the scale: 1,000,000 keys in 2 shards x 2 replicas on 4 stores, grown
//! to 5 shards and shrunk to 3 while a writer and a reader run. No client request may fail,
//! every acknowledged write must be served by every replica of its owning shard, and after the
//! post-resize compaction every shard directory holds only keys it owns.
mod common;

use common::{wait_for, Acked, Cluster, Raw};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use vasto_client::{BatchOp, Client, Keyspace};

const KEYS: usize = 1_000_000;
const BATCH: usize = 2_000;

fn key(i: usize) -> Vec<u8> {
    format!("k{i:07}").into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_million_keys_grow_to_five_and_shrink_to_three_under_load() {
    let cluster = Cluster::start(4);
    cluster.create_keyspace("big", 2, 2);
    let ks = Client::connect(&cluster.master_addr).await.unwrap().keyspace("big").await.unwrap();
    let started = Instant::now();
    load(&ks).await;
    eprintln!("loaded {KEYS} keys in {:?}", started.elapsed());
    let mut acked: Acked = Vec::new();
    for shards in [5, 3] {
        resize_under_load(&cluster, &ks, shards, &mut acked).await;
        check(&cluster, &ks, shards, &acked).await;
    }
}

/// Loads `KEYS` keys (value: the decimal index) in batches, four batches in flight.
async fn load(ks: &Keyspace) {
    let chunks: Vec<std::ops::Range<usize>> = (0..KEYS).step_by(BATCH).map(|s| s..(s + BATCH).min(KEYS)).collect();
    let next = Arc::new(AtomicU64::new(0));
    let chunks = Arc::new(chunks);
    let workers: Vec<_> = (0..4)
        .map(|_| {
            let (ks, next, chunks) = (ks.clone(), Arc::clone(&next), Arc::clone(&chunks));
            tokio::spawn(async move {
                while let Some(range) = chunks.get(next.fetch_add(1, Ordering::Relaxed) as usize) {
                    let pairs: Vec<(Vec<u8>, Vec<u8>)> = range.clone().map(|i| (key(i), i.to_string().into_bytes())).collect();
                    let ops: Vec<BatchOp<'_>> = pairs.iter().map(|(k, v)| BatchOp::Put { key: k, value: v }).collect();
                    ks.batch(&ops).await.unwrap_or_else(|e| panic!("loading keys {range:?} failed: {e}"));
                }
            })
        })
        .collect();
    for w in workers {
        w.await.expect("loader");
    }
}

/// Resizes `big` to `shards` with the CLI while one task writes new keys and another reads
/// loaded ones; every request must succeed and every read must see the loaded value.
async fn resize_under_load(cluster: &Cluster, ks: &Keyspace, shards: u32, acked: &mut Acked) {
    let reads = Arc::new(AtomicU64::new(0));
    let reader = {
        let (ks, reads) = (ks.clone(), Arc::clone(&reads));
        tokio::spawn(async move {
            let mut i = 0usize;
            loop {
                // A stride that visits every shard and changes key every time.
                i = (i + 7_919) % KEYS;
                let got = ks.get(&key(i)).await.unwrap_or_else(|e| panic!("read of {i} failed during the resize to {shards}: {e}"));
                assert_eq!(got, Some(i.to_string().into_bytes()), "read of key {i} during the resize to {shards}");
                reads.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    let started = Instant::now();
    let args = ["admin", "--master", &cluster.master_addr, "resize", "big", "--shards", &shards.to_string()].map(String::from).to_vec();
    let (out, written) = common::while_writing(args, ks, &format!("during-{shards}"), acked).await;
    let took = started.elapsed();
    assert!(!reader.is_finished(), "the reader stopped: {:?}", reader.await);
    reader.abort();
    assert!(out.status.success(), "resize to {shards} failed: {}", String::from_utf8_lossy(&out.stderr));
    eprintln!("resized to {shards} in {took:?}; meanwhile {written} writes and {} reads, none failed", reads.load(Ordering::Relaxed));
}

/// Every replica of every shard serves exactly the keys it owns (scans see only owned keys,
/// so equal counts mean equal sets), sampled values and every write made during the resizes
/// read back through the client, and on disk nothing else is left after compaction.
async fn check(cluster: &Cluster, ks: &Keyspace, shards: u32, acked: &Acked) {
    let (listed, table) = cluster.routes("big");
    assert_eq!((listed, table.len()), (shards, shards as usize));
    let mut expected = vec![0usize; shards as usize];
    for k in (0..KEYS).map(key).chain(acked.iter().map(|(k, _)| k.clone())) {
        expected[vasto_hash::shard_of(&k, shards) as usize] += 1;
    }
    for (shard, addrs) in table.iter().enumerate() {
        for addr in addrs {
            // Replication is asynchronous: the writes made last may still be on their way.
            tokio::task::block_in_place(|| {
                wait_for(&format!("{addr} to serve all {} keys of shard {shard} of {shards}", expected[shard]), Duration::from_secs(30), || {
                    let count = Raw::connect(addr).count_keys("big", shard as u32);
                    (count == expected[shard]).then_some(()).or_else(|| {
                        eprintln!("{addr} shard {shard}: {count} keys, expected {}", expected[shard]);
                        None
                    })
                })
            });
        }
    }
    for i in (0..KEYS).step_by(KEYS / 10_000) {
        assert_eq!(ks.get(&key(i)).await.unwrap(), Some(i.to_string().into_bytes()), "key {i} after the resize to {shards}");
    }
    for (k, v) in acked {
        assert_eq!(ks.get(k).await.unwrap().as_deref(), Some(v.as_slice()), "{}", String::from_utf8_lossy(k));
    }
    let held = tokio::task::block_in_place(|| common::wait_only_owned_keys(cluster, "big", shards));
    let total: u64 = held.iter().map(|(_, n)| n).sum();
    assert_eq!(held.len(), shards as usize * 2, "one directory per replica: {held:?}");
    assert_eq!(total, 2 * (KEYS + acked.len()) as u64, "each key exactly once per replica on disk");
}
