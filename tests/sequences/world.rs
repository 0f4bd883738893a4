//! The world a sequence runs in: a cluster of real processes, a writer and a reader running
//! throughout, the record of what was acknowledged and of every failed request, and the checks
//! run after every step.
use crate::common::{wait_for, Cluster, Raw};
use rand::{RngExt, SeedableRng};
use rand_xorshift::XorShiftRng;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use vasto_client::{Client, ClientError, Keyspace, WriteTo};

/// The keyspace every sequence works on.
pub const NAME: &str = "seq";
/// Replicas per shard.
pub const REPLICAS: u32 = 2;
/// Stores in the cluster.
pub const STORES: usize = 5;
/// How long after a process comes back requests may still fail (the client's failover and
/// table refresh on a loaded 2-core machine; ARCHITECTURE documents the window).
pub const FAILOVER_SLACK: Duration = Duration::from_secs(5);
/// How long the cluster may take to settle after a step.
const SETTLE: Duration = Duration::from_secs(180);
/// Counters incremented throughout, through any replica.
const COUNTERS: usize = 8;

fn counter_key(i: usize) -> Vec<u8> {
    format!("c:{i}").into_bytes()
}

/// Per counter: the increments acknowledged, and those of unknown outcome (a timeout or a lost
/// connection: applied or not).
#[derive(Default, Clone, Copy)]
struct Counts {
    acked: [i64; COUNTERS],
    unknown: [i64; COUNTERS],
}

/// What the writer and reader share with the checks.
#[derive(Default)]
struct Record {
    /// Acknowledged writes (and imported records): each key once, with its value.
    acked: Mutex<Vec<(Vec<u8>, Vec<u8>)>>,
    /// Failed requests: when, and what.
    failures: Mutex<Vec<(Instant, String)>>,
    /// Reads that returned something else than the acknowledged value (async replication read
    /// from a replica that had not applied it yet); every such key is checked at the next check.
    stale_reads: Mutex<u64>,
    /// The writer holds off while set (so the replicas' key counts can be compared).
    paused: AtomicBool,
    /// Set by the writer while a write is in flight.
    writing: AtomicBool,
    /// What the incrementer did.
    counts: Mutex<Counts>,
    /// Set by the incrementer while an increment is in flight.
    counting: AtomicBool,
    stop: AtomicBool,
}

/// The cluster and the load running against it.
pub struct World {
    pub cluster: Cluster,
    pub ks: Keyspace,
    pub rng: XorShiftRng,
    pub seed: u64,
    record: Arc<Record>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    /// Periods in which requests may fail (a process was down), as (start, end).
    windows: Vec<(Instant, Instant)>,
    /// Failures already judged.
    judged: usize,
    /// Sequence number for the names of imported keys.
    pub imports: usize,
}

impl World {
    /// Starts the cluster, creates the keyspace with a random shard count, and starts the load.
    pub async fn start(seed: u64) -> World {
        let mut rng = XorShiftRng::seed_from_u64(seed);
        let cluster = tokio::task::block_in_place(|| Cluster::start(STORES));
        let shards = rng.random_range(1..=4u32);
        cluster.create_keyspace(NAME, shards, REPLICAS);
        let ks = Client::connect(&cluster.master_addr).await.expect("client").keyspace(NAME).await.expect("keyspace");
        let record = Arc::new(Record::default());
        let tasks = vec![
            tokio::spawn(write_loop(ks.clone(), Arc::clone(&record))),
            tokio::spawn(read_loop(ks.clone(), Arc::clone(&record), seed)),
            tokio::spawn(increment_loop(ks.with_write_to(WriteTo::AnyReplica), Arc::clone(&record), seed)),
        ];
        World { cluster, ks, rng, seed, record, tasks, windows: Vec::new(), judged: 0, imports: 0 }
    }

    /// Records that requests may fail from `start` until [`FAILOVER_SLACK`] after now.
    pub fn allow_failures_since(&mut self, start: Instant) {
        self.windows.push((start, Instant::now() + FAILOVER_SLACK));
    }

    /// Adds imported records to what must be read back.
    pub fn acknowledge(&self, records: impl IntoIterator<Item = (Vec<u8>, Vec<u8>)>) {
        self.record.acked.lock().unwrap().extend(records);
    }

    /// Acknowledged writes so far.
    pub fn acked(&self) -> usize {
        self.record.acked.lock().unwrap().len()
    }

    /// The current status document.
    pub fn status(&self) -> serde_json::Value {
        self.cluster.status().unwrap_or_default()
    }

    /// The keyspace's shard count and, per shard, the store ids of its replicas.
    pub fn placement(&self) -> (u32, Vec<Vec<String>>) {
        let s = self.status();
        let Some(ks) = s["keyspaces"].as_array().and_then(|k| k.iter().find(|k| k["name"] == NAME)).cloned() else { return (0, Vec::new()) };
        let rows = ks["routes"].as_array().map(|rows| {
            rows.iter()
                .map(|r| r.as_array().map(|r| r.iter().map(|x| x["store_id"].as_str().unwrap_or_default().to_owned()).collect()).unwrap_or_default())
                .collect()
        });
        (ks["shards"].as_u64().unwrap_or(0) as u32, rows.unwrap_or_default())
    }

    /// The store id of store process `i` (from the status, by address).
    pub fn store_id(&self, i: usize) -> Option<String> {
        let s = self.status();
        let stores = s["stores"].as_array()?.clone();
        stores.iter().find(|st| st["address"] == self.cluster.store_addrs[i].as_str()).and_then(|st| st["id"].as_str().map(str::to_owned))
    }

    /// Waits until the cluster is settled: every store process that runs is up, the keyspace
    /// has no operation in progress and nothing waiting, every shard has exactly its replicas,
    /// all up and caught up, and the client routes by the same shard count.
    pub fn settle(&self) {
        let running = self.cluster.stores.iter().filter(|s| s.is_some()).count();
        let deadline = Instant::now() + SETTLE;
        loop {
            let s = self.status();
            let up = s["stores"].as_array().map(|a| a.iter().filter(|st| st["up"] == true).count()).unwrap_or(0);
            let ks = s["keyspaces"].as_array().and_then(|k| k.iter().find(|k| k["name"] == NAME)).cloned().unwrap_or_default();
            let rows = ks["routes"].as_array().cloned().unwrap_or_default();
            let routes_ok = !rows.is_empty()
                && rows.iter().all(|r| {
                    let r = r.as_array().cloned().unwrap_or_default();
                    r.len() == REPLICAS as usize && r.iter().all(|x| x["up"] == true && x["catching_up"] == false)
                });
            let client_shards = self.ks.routing_table().map(|t| (t.shards, t.resizing_to));
            let settled = up == running
                && ks["operation"].is_null()
                && ks["waiting"].is_null()
                && ks["repairs"] == 0
                && routes_ok
                && rows.len() as u64 == ks["shards"].as_u64().unwrap_or(0)
                && client_shards == Some((rows.len() as u32, 0));
            if settled {
                return;
            }
            assert!(Instant::now() < deadline, "seed {}: the cluster did not settle within {SETTLE:?}; last status: {s:#}", self.seed);
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The checks after a step: every request that failed did so inside a failover window;
    /// every acknowledged write reads back through the client and from every replica of its
    /// shard; the replicas of each shard hold the same keys.
    pub async fn check(&mut self, step: &str) {
        let failures: Vec<(Instant, String)> = self.record.failures.lock().unwrap()[self.judged..].to_vec();
        self.judged += failures.len();
        for (at, what) in &failures {
            let covered = self.windows.iter().any(|(from, to)| *at >= *from && *at <= *to);
            assert!(covered, "seed {}: after step {step}: a request failed outside any failover window: {what}", self.seed);
        }
        let acked = self.record.acked.lock().unwrap().clone();
        for chunk in acked.chunks(500) {
            let keys: Vec<&[u8]> = chunk.iter().map(|(k, _)| k.as_slice()).collect();
            let got = self.ks.get_many(&keys).await.unwrap_or_else(|e| panic!("seed {}: after step {step}: reading back failed: {e}", self.seed));
            for ((k, v), g) in chunk.iter().zip(got) {
                assert_eq!(
                    g.as_deref(),
                    Some(v.as_slice()),
                    "seed {}: after step {step}: {} lost (read through the client)",
                    self.seed,
                    String::from_utf8_lossy(k)
                );
            }
        }
        // Compare the replicas with the writer holding off, so they can all be caught up at once.
        self.record.paused.store(true, Ordering::Release);
        while self.record.writing.load(Ordering::Acquire) || self.record.counting.load(Ordering::Acquire) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let acked = self.record.acked.lock().unwrap().clone();
        let counts = *self.record.counts.lock().unwrap();
        tokio::task::block_in_place(|| {
            self.check_replicas(step, &acked);
            self.check_counters(step, &counts);
        });
        for (i, total) in self
            .ks
            .get_many(&(0..COUNTERS).map(counter_key).collect::<Vec<_>>().iter().map(Vec::as_slice).collect::<Vec<_>>())
            .await
            .expect("read counters")
            .into_iter()
            .enumerate()
        {
            let total = total.map_or(0, |t| String::from_utf8_lossy(&t).parse::<i64>().expect("a counter shows an integer"));
            assert!(
                total >= counts.acked[i] && total <= counts.acked[i] + counts.unknown[i],
                "seed {}: after step {step}: counter {i} reads {total} through the client, {} acknowledged (+ up to {} unknown)",
                self.seed,
                counts.acked[i],
                counts.unknown[i]
            );
        }
        self.record.paused.store(false, Ordering::Release);
        let stale = *self.record.stale_reads.lock().unwrap();
        eprintln!(
            "seed {}: after {step}: {} acknowledged, all read back; {} failed requests, all in windows; {stale} stale reads so far",
            self.seed,
            acked.len(),
            failures.len()
        );
    }

    /// Every replica of every shard holds every acknowledged write of the shard, and the same
    /// number of live keys as its peers (writes that failed may have landed, but everywhere).
    fn check_replicas(&self, step: &str, acked: &[(Vec<u8>, Vec<u8>)]) {
        let (shards, table) = self.cluster.routes(NAME);
        for (shard, addrs) in table.iter().enumerate() {
            let (keys, values) = crate::common::shard_writes(acked, shards, shard as u32);
            wait_for(
                &format!("seed {}: after step {step}: every replica of shard {shard} to hold its {} keys", self.seed, keys.len()),
                Duration::from_secs(60),
                || {
                    let mut counts = Vec::new();
                    for addr in addrs {
                        if let Some(why) = crate::common::replica_differs(addr, None, NAME, shard as u32, &keys, &values) {
                            eprintln!("{why}");
                            return None;
                        }
                        counts.push(Raw::connect(addr).count_keys(NAME, shard as u32));
                    }
                    if counts.windows(2).any(|w| w[0] != w[1]) {
                        eprintln!("shard {shard}: replicas hold {counts:?} keys");
                        return None;
                    }
                    Some(())
                },
            );
        }
    }

    /// Every replica of each counter's shard shows the same total, at least the acknowledged
    /// increments and at most those plus the ones of unknown outcome.
    fn check_counters(&self, step: &str, counts: &Counts) {
        let (shards, table) = self.cluster.routes(NAME);
        for i in 0..COUNTERS {
            let key = counter_key(i);
            let shard = vasto_hash::shard_of(&key, shards);
            let (acked, unknown) = (counts.acked[i], counts.unknown[i]);
            let read = |addr: &String| {
                let got = Raw::connect(addr).get_many(NAME, shard, std::slice::from_ref(&key)).remove(0);
                got.map_or(0, |t| String::from_utf8_lossy(&t).parse::<i64>().expect("a counter shows an integer"))
            };
            let total = wait_for(
                &format!("seed {}: after step {step}: the replicas of shard {shard} to agree on counter {i}", self.seed),
                Duration::from_secs(60),
                || {
                    let totals: Vec<i64> = table[shard as usize].iter().map(read).collect();
                    if totals.windows(2).any(|w| w[0] != w[1]) {
                        eprintln!("counter {i}: replicas show {totals:?}");
                        return None;
                    }
                    Some(totals[0])
                },
            );
            assert!(
                total >= acked && total <= acked + unknown,
                "seed {}: after step {step}: counter {i} is {total} on every replica, {acked} increments acknowledged (+ up to {unknown} unknown)",
                self.seed
            );
        }
    }

    /// Stops the load and checks once more, then checks on disk that every replica directory
    /// holds only its own keys, the same number as its peers.
    pub async fn finish(mut self, steps: usize) {
        self.record.stop.store(true, Ordering::Release);
        for t in std::mem::take(&mut self.tasks) {
            let _ = t.await;
        }
        tokio::task::block_in_place(|| self.settle());
        self.check("the end").await;
        let (shards, _) = self.placement();
        let dirs = tokio::task::block_in_place(|| crate::common::wait_only_owned_keys(&self.cluster, NAME, shards));
        assert_eq!(dirs.len() as u32, shards * REPLICAS, "seed {}: one directory per replica: {dirs:?}", self.seed);
        println!("SEQUENCE seed={} steps={steps} acknowledged={} result=ok", self.seed, self.acked());
    }
}

/// Waits out a pause of the load, then marks `in_flight`; false when the loop should look
/// again (it was paused, or got paused meanwhile).
async fn start_request(record: &Record, in_flight: &AtomicBool) -> bool {
    if record.paused.load(Ordering::Acquire) {
        tokio::time::sleep(Duration::from_millis(10)).await;
        return false;
    }
    in_flight.store(true, Ordering::Release);
    if record.paused.load(Ordering::Acquire) {
        in_flight.store(false, Ordering::Release);
        return false;
    }
    true
}

/// Writes `w:N` keys one after another until stopped, recording what was acknowledged.
async fn write_loop(ks: Keyspace, record: Arc<Record>) {
    let mut n = 0u64;
    while !record.stop.load(Ordering::Acquire) {
        if !start_request(&record, &record.writing).await {
            continue;
        }
        let (k, v) = (format!("w:{n:08}").into_bytes(), format!("v{n}").into_bytes());
        let result = ks.put(&k, &v).await;
        record.writing.store(false, Ordering::Release);
        match result {
            Ok(()) => record.acked.lock().unwrap().push((k, v)),
            Err(e) => record.failures.lock().unwrap().push((Instant::now(), format!("write of w:{n:08}: {e}"))),
        }
        n += 1;
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
}

/// Increments random counters by one through any replica until stopped, recording what was
/// acknowledged and what failed.
async fn increment_loop(ks: Keyspace, record: Arc<Record>, seed: u64) {
    let mut rng = XorShiftRng::seed_from_u64(seed ^ 0xc0_417e);
    while !record.stop.load(Ordering::Acquire) {
        if !start_request(&record, &record.counting).await {
            continue;
        }
        let i = rng.random_range(0..COUNTERS);
        let result = ks.incr_by(&counter_key(i), 1).await;
        {
            let mut counts = record.counts.lock().unwrap();
            match &result {
                Ok(_) => counts.acked[i] += 1,
                Err(ClientError::Timeout | ClientError::ConnectionLost) => counts.unknown[i] += 1,
                Err(_) => {}
            }
        }
        record.counting.store(false, Ordering::Release);
        if let Err(e) = result {
            record.failures.lock().unwrap().push((Instant::now(), format!("increment of c:{i}: {e}")));
        }
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
}

/// Reads random acknowledged keys until stopped, recording failures and stale answers.
async fn read_loop(ks: Keyspace, record: Arc<Record>, seed: u64) {
    let mut rng = XorShiftRng::seed_from_u64(seed ^ 0x5eed);
    while !record.stop.load(Ordering::Acquire) {
        let pick = {
            let acked = record.acked.lock().unwrap();
            (!acked.is_empty()).then(|| acked[rng.random_range(0..acked.len())].clone())
        };
        if let Some((k, v)) = pick {
            match ks.get(&k).await {
                Ok(Some(got)) if got == v => {}
                Ok(_) => *record.stale_reads.lock().unwrap() += 1,
                Err(e) => record.failures.lock().unwrap().push((Instant::now(), format!("read of {}: {e}", String::from_utf8_lossy(&k)))),
            }
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}
