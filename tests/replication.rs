//! End-to-end replication: 3 stores, keyspace of 4 shards x 2 replicas, real processes.
mod common;

use common::{assert_all_replicas_hold, wait_for, Acked, Cluster, Raw};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use vasto_client::Client;

const SHARDS: u32 = 4;

struct Writer {
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<Acked>>,
    errors: Arc<Mutex<Vec<(Instant, String)>>>,
    task: tokio::task::JoinHandle<()>,
}

fn start_writer(ks: vasto_client::Keyspace, tag: &'static str) -> Writer {
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(Vec::new()));
    let errors = Arc::new(Mutex::new(Vec::new()));
    let (s, a, e) = (Arc::clone(&stop), Arc::clone(&acked), Arc::clone(&errors));
    let task = tokio::spawn(async move {
        let mut i = 0u64;
        while !s.load(Ordering::Relaxed) {
            let (k, v) = (format!("{tag}:{i}").into_bytes(), format!("v{i}").into_bytes());
            match ks.put(&k, &v).await {
                Ok(()) => a.lock().unwrap().push((k, v)),
                Err(err) => e.lock().unwrap().push((Instant::now(), err.to_string())),
            }
            i += 1;
        }
    });
    Writer { stop, acked, errors, task }
}

impl Writer {
    async fn finish(self) -> (Acked, Vec<(Instant, String)>) {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.unwrap();
        (self.acked.lock().unwrap().clone(), self.errors.lock().unwrap().clone())
    }
    fn count(&self) -> usize {
        self.acked.lock().unwrap().len()
    }
}

/// Reads, over and over with `get_each`, the last 300 writes `writer` acknowledged and 30 keys
/// nobody writes, until stopped: every value read must be the acknowledged one (each key is
/// written once), every key never written missing. Returns the batches read and when reads
/// failed.
fn start_reader(ks: vasto_client::Keyspace, writer: &Writer) -> (Arc<AtomicBool>, tokio::task::JoinHandle<(usize, Failures)>) {
    let stop = Arc::new(AtomicBool::new(false));
    let (s, acked) = (Arc::clone(&stop), Arc::clone(&writer.acked));
    let task = tokio::spawn(async move {
        let (mut batches, mut errors, mut results) = (0, Vec::new(), Vec::new());
        let missing: Vec<Vec<u8>> = (0..30).map(|i| format!("never:{i}").into_bytes()).collect();
        while !s.load(Ordering::Relaxed) {
            let sample: Acked = {
                let acked = acked.lock().unwrap();
                acked[acked.len().saturating_sub(300)..].to_vec()
            };
            let keys: Vec<&[u8]> = sample.iter().map(|(k, _)| k.as_slice()).chain(missing.iter().map(Vec::as_slice)).collect();
            ks.get_each(&keys, &mut results).await;
            assert_eq!(results.len(), keys.len());
            for (i, outcome) in results.iter().enumerate() {
                match (outcome, sample.get(i)) {
                    (Ok(Some(v)), Some((_, want))) => assert_eq!(v, want, "key {:?}", String::from_utf8_lossy(keys[i])),
                    // A write acknowledged by the killed store and not yet replicated is out of
                    // reach until it is back (the final read checks it is not lost).
                    (Ok(None), _) => {}
                    (Ok(Some(v)), None) => panic!("key {:?}, never written, read {v:?}", String::from_utf8_lossy(keys[i])),
                    (Err(e), _) => errors.push((Instant::now(), e.to_string())),
                }
            }
            batches += 1;
        }
        (batches, errors)
    });
    (stop, task)
}

/// When requests failed, and why.
type Failures = Vec<(Instant, String)>;

async fn pause(d: Duration) {
    tokio::time::sleep(d).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_store_fails_over_catches_up_and_loses_nothing() {
    let mut cluster = Cluster::start(3);
    cluster.create_keyspace("rep", SHARDS, 2);
    let ks = Client::connect(&cluster.master_addr).await.unwrap().keyspace("rep").await.unwrap();
    let writer = start_writer(ks.clone(), "a");
    wait_for("writes before the kill", Duration::from_secs(10), || (writer.count() > 200).then_some(()));
    let (stop_reader, reader) = start_reader(ks.clone(), &writer);

    cluster.stores[0].take().unwrap().kill();
    let killed_at = Instant::now();
    let before = writer.count();
    pause(Duration::from_secs(3)).await;
    assert!(writer.count() > before + 100, "writes go on with a store down");
    // While it is down the master shows its replicas down.
    let status = cluster.status().unwrap();
    let down = status["stores"].as_array().unwrap().iter().filter(|s| s["up"] == false).count();
    assert_eq!(down, 1);

    cluster.start_store(0);
    cluster.wait_stores_up(3);
    pause(Duration::from_secs(2)).await;
    let (acked, errors) = writer.finish().await;
    let window = errors.iter().map(|(t, _)| t.duration_since(killed_at)).max();
    eprintln!("{} writes acknowledged, {} failed; failover window {:?}", acked.len(), errors.len(), window);
    assert!(errors.iter().all(|(t, _)| t.duration_since(killed_at) < Duration::from_secs(2)), "errors after the failover window: {errors:?}");
    stop_reader.store(true, Ordering::Relaxed);
    let (batches, read_errors) = reader.await.unwrap();
    eprintln!("{batches} batches of reads, {} keys failed", read_errors.len());
    assert!(batches > 10, "the reader went on through the kill and the restart");
    assert!(read_errors.iter().all(|(t, _)| t.duration_since(killed_at) < Duration::from_secs(2)), "reads failed after the failover window: {read_errors:?}");
    assert_all_replicas_hold(&cluster, "rep", &acked);
    // Read together, every acknowledged write comes back, in order.
    let keys: Vec<&[u8]> = acked.iter().map(|(k, _)| k.as_slice()).collect();
    let mut results = Vec::new();
    ks.get_each(&keys, &mut results).await;
    for ((k, v), got) in acked.iter().zip(&results) {
        assert_eq!(got.as_ref().ok().and_then(Option::as_deref), Some(v.as_slice()), "key {:?}: {got:?}", String::from_utf8_lossy(k));
    }

    // Status reports replication lag per replica, and nothing is left catching up.
    wait_for("every replica caught up", Duration::from_secs(20), || {
        let s = cluster.status()?;
        let ks = s["keyspaces"].as_array()?.iter().find(|k| k["name"] == "rep")?.clone();
        let routes = ks["routes"].as_array()?.clone();
        routes.iter().flat_map(|r| r.as_array().cloned().unwrap_or_default()).all(|r| r["catching_up"] == false && r["lags"].is_array()).then_some(())
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_master_dead_clients_fail_over_on_their_own() {
    let mut cluster = Cluster::start(3);
    cluster.create_keyspace("solo", SHARDS, 2);
    let ks = Client::connect(&cluster.master_addr).await.unwrap().keyspace("solo").await.unwrap();
    let writer = start_writer(ks.clone(), "m");
    wait_for("writes", Duration::from_secs(10), || (writer.count() > 200).then_some(()));
    cluster.kill_master();
    pause(Duration::from_millis(500)).await;
    cluster.stores[1].take().unwrap().kill();
    let killed_at = Instant::now();
    let before = writer.count();
    pause(Duration::from_secs(3)).await;
    assert!(writer.count() > before + 100, "no master to push a table: the client must fail over by itself");
    cluster.start_master();
    cluster.start_store(1);
    cluster.wait_stores_up(3);
    pause(Duration::from_secs(1)).await;
    let (acked, errors) = writer.finish().await;
    assert!(errors.iter().all(|(t, _)| t.duration_since(killed_at) < Duration::from_secs(2)), "errors after the failover window: {errors:?}");
    assert_all_replicas_hold(&cluster, "solo", &acked);
}

#[test]
fn concurrent_writes_to_different_replicas_converge() {
    let cluster = Cluster::start(2);
    cluster.create_keyspace("conv", SHARDS, 2);
    let replicas = cluster.routes("conv").1;
    let base = vasto_client::now_ns();
    let mut expected = Vec::new();
    // For each key, three writes with shuffled event times, each sent to a different replica.
    let mut conns: Vec<Vec<Raw>> = replicas.iter().map(|addrs| addrs.iter().map(|a| Raw::connect(a)).collect()).collect();
    for i in 0..300u64 {
        let key = format!("c{i}").into_bytes();
        let shard = vasto_hash::shard_of(&key, SHARDS) as usize;
        let times = [base + (i * 7) % 3, base + (i * 7 + 1) % 3, base + (i * 7 + 2) % 3];
        for (j, t) in times.iter().enumerate() {
            let value = format!("t{}", t - base).into_bytes();
            conns[shard][(i as usize + j) % 2].put("conv", shard as u32, &key, &value, *t);
        }
        expected.push((key, format!("t{}", 2).into_bytes()));
    }
    assert_all_replicas_hold(&cluster, "conv", &expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_too_far_behind_rebootstraps_from_a_snapshot() {
    let mut cluster = Cluster::start(2);
    // Tiny change logs, so a replica that misses 2,000 writes is beyond them.
    for i in 0..2 {
        cluster.stores[i].take().unwrap().kill();
        cluster.start_store_with(i, &["--change-log-entries", "100"]);
    }
    cluster.wait_stores_up(2);
    cluster.create_keyspace("boot", SHARDS, 2);
    let ks = Client::connect(&cluster.master_addr).await.unwrap().keyspace("boot").await.unwrap();
    // Writes on every shard, replicated before the kill: each follower has a saved position,
    // so the returning replica finds that position trimmed (rather than starting afresh).
    let mut acked = Vec::new();
    for i in 0..40 {
        let (k, v) = (format!("before{i}").into_bytes(), b"1".to_vec());
        ks.put(&k, &v).await.unwrap();
        acked.push((k, v));
    }
    assert_all_replicas_hold(&cluster, "boot", &acked);
    cluster.stores[1].take().unwrap().kill();
    for i in 0..2000 {
        let (k, v) = (format!("b{i}").into_bytes(), format!("v{i}").into_bytes());
        ks.put(&k, &v).await.unwrap();
        acked.push((k, v));
    }
    cluster.start_store_with(1, &["--change-log-entries", "100"]);
    cluster.wait_stores_up(2);
    assert_all_replicas_hold(&cluster, "boot", &acked);
    let log = std::fs::read_to_string(cluster.dir.path().join("store-1.log")).unwrap();
    assert!(log.contains("too far behind the peer's change log"), "the returning replica must have found its position trimmed");
    assert!(log.contains("snapshot ingested"), "and re-bootstrapped from a snapshot");
}
