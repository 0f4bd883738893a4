//! Network faults between real hosts: the master and every store in its own network namespace
//! (see `common::netns`), a writer and a reader running throughout, and the network failing the
//! way real ones do: packets dropped without FIN or RST, a store cut off from the master only,
//! the master gone silent, delay and loss, a blip during a resize. After healing: no
//! acknowledged write is lost, every replica holds the same data, no request failed (a silent
//! replica costs a request one attempt timeout, then it goes to the next replica), and the
//! cluster takes admin operations again.
//!
//! Needs root (namespaces); elsewhere each test says why it skips.
mod common;

use common::{assert_all_replicas_hold, wait_for, Acked, Cluster};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use vasto_client::{Client, Keyspace};

/// Starts a cluster of `stores` stores on hosts, or prints why it cannot and returns `None`.
fn hosts_or_skip(test: &str, stores: usize, heartbeat_ms: u64, flags: &[&str]) -> Option<Cluster> {
    match Cluster::start_on_hosts(stores, heartbeat_ms, flags) {
        Ok(c) => Some(c),
        Err(why) => {
            eprintln!("SKIPPED {test}: {why}");
            None
        }
    }
}

/// What a writer and a reader saw while they ran.
struct Seen {
    acked: Acked,
    failures: Vec<String>,
    reads: usize,
    /// The longest time between two successful writes.
    longest_stall: Duration,
}

/// A writer (keys `{tag}:{i}` one after another) and a reader (of keys already acknowledged)
/// running against one keyspace until stopped.
struct Load {
    stop: Arc<AtomicBool>,
    writer: tokio::task::JoinHandle<(Acked, Vec<String>, Duration)>,
    reader: tokio::task::JoinHandle<(usize, Vec<String>)>,
}

impl Load {
    fn start(ks: Keyspace, tag: &'static str) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let written: Arc<Mutex<Vec<usize>>> = Arc::default();
        let writer = {
            let (stop, written, ks) = (Arc::clone(&stop), Arc::clone(&written), ks.clone());
            tokio::spawn(async move {
                let (mut acked, mut failures, mut longest, mut last_ok) = (Vec::new(), Vec::new(), Duration::ZERO, Instant::now());
                let mut i = 0usize;
                while !stop.load(Ordering::Relaxed) {
                    let (k, v) = (format!("{tag}:{i}").into_bytes(), format!("v{i}").into_bytes());
                    match ks.put(&k, &v).await {
                        Ok(()) => {
                            longest = longest.max(last_ok.elapsed());
                            last_ok = Instant::now();
                            acked.push((k, v));
                            written.lock().unwrap().push(i);
                        }
                        Err(e) => failures.push(format!("write {tag}:{i}: {e}")),
                    }
                    i += 1;
                }
                (acked, failures, longest)
            })
        };
        let reader = {
            let stop = Arc::clone(&stop);
            tokio::spawn(async move {
                let (mut reads, mut failures, mut n) = (0usize, Vec::new(), 0usize);
                while !stop.load(Ordering::Relaxed) {
                    let pick = {
                        let w = written.lock().unwrap();
                        (!w.is_empty()).then(|| w[(n * 7919) % w.len()])
                    };
                    n += 1;
                    let Some(i) = pick else {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    };
                    // A replica that took over may not have a write of the last moments yet
                    // (replication is asynchronous): only errors count here; losses are checked
                    // once the network is healed.
                    match ks.get(format!("{tag}:{i}").as_bytes()).await {
                        Ok(_) => reads += 1,
                        Err(e) => failures.push(format!("read {tag}:{i}: {e}")),
                    }
                }
                (reads, failures)
            })
        };
        Load { stop, writer, reader }
    }

    async fn finish(self) -> Seen {
        self.stop.store(true, Ordering::Relaxed);
        let (acked, mut failures, longest_stall) = self.writer.await.expect("writer");
        let (reads, read_failures) = self.reader.await.expect("reader");
        failures.extend(read_failures);
        Seen { acked, failures, reads, longest_stall }
    }
}

/// Every acknowledged write reads back through the client and from every replica, and nothing
/// failed.
async fn check(cluster: &Cluster, ks: &Keyspace, seen: &Seen, fault: &str) {
    eprintln!(
        "{fault}: {} writes acknowledged, {} reads, longest write stall {:?}, {} failures",
        seen.acked.len(),
        seen.reads,
        seen.longest_stall,
        seen.failures.len()
    );
    assert!(seen.failures.is_empty(), "requests failed during {fault}: {:?}", &seen.failures[..seen.failures.len().min(5)]);
    assert!(seen.acked.len() > 50, "the writer got through during {fault}: {} writes", seen.acked.len());
    for (k, v) in &seen.acked {
        assert_eq!(ks.get(k).await.unwrap().as_deref(), Some(v.as_slice()), "{} lost after {fault}", String::from_utf8_lossy(k));
    }
    tokio::task::block_in_place(|| assert_all_replicas_hold(cluster, "net", &seen.acked));
}

/// A cluster of 3 stores on hosts with keyspace `net` (4 shards x 2 replicas), a client, and
/// the index of the host of the store holding the primary of shard 0.
async fn three_stores(test: &str, heartbeat_ms: u64, flags: &[&str]) -> Option<(Cluster, Client, Keyspace)> {
    let cluster = hosts_or_skip(test, 3, heartbeat_ms, flags)?;
    cluster.create_keyspace("net", 4, 2);
    let client = Client::connect_with(&cluster.master_addr, cluster.client_config()).await.expect("client");
    let ks = client.keyspace("net").await.expect("keyspace");
    Some((cluster, client, ks))
}

/// The store index whose address is the primary of shard 0 of `net`.
fn primary_of_shard_0(cluster: &Cluster) -> usize {
    let (_, routes) = cluster.routes("net");
    cluster.store_addrs.iter().position(|a| *a == routes[0][0]).expect("the primary is one of the stores")
}

/// Waits until every store is up again and every replica has caught up (status shows none
/// catching up).
fn wait_recovered(cluster: &Cluster, stores: usize) {
    cluster.wait_stores_up(stores);
    wait_for("every replica to catch up", Duration::from_secs(60), || {
        let s = cluster.status()?;
        let ks = s["keyspaces"].as_array()?.iter().find(|k| k["name"] == "net")?.clone();
        let lagging =
            ks["routes"].as_array()?.iter().flat_map(|r| r.as_array().cloned().unwrap_or_default()).any(|r| r["catching_up"] == true || r["up"] == false);
        (!lagging).then_some(())
    });
}

/// Runs a writer and a reader (keys `{tag}:i`); 2 s in, applies `fault`; 8 s later lets
/// `while_cut` look at the cluster, heals host `host`, and waits until every store is up and
/// every replica has caught up. Returns what the writer and the reader saw.
async fn fault_then_heal(
    cluster: &Cluster,
    ks: &Keyspace,
    tag: &'static str,
    host: usize,
    fault: impl FnOnce(&common::netns::Net),
    while_cut: impl FnOnce(&Cluster),
) -> Seen {
    let load = Load::start(ks.clone(), tag);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let net = cluster.net.as_ref().expect("hosts");
    fault(net);
    // Longer than the heartbeat timeout and every silence timeout (3 s), so the master, the
    // stores and the client give up on their connections and keep dialling.
    tokio::time::sleep(Duration::from_secs(8)).await;
    tokio::task::block_in_place(|| while_cut(cluster));
    net.heal(host);
    eprintln!("healed");
    tokio::task::block_in_place(|| wait_recovered(cluster, 3));
    tokio::time::sleep(Duration::from_secs(1)).await;
    load.finish().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_cut_off_from_everyone_without_a_fin_fails_over_and_catches_up_when_healed() {
    let Some((cluster, _client, ks)) = three_stores("partition from everyone", 2000, &[]).await else { return };
    let victim = primary_of_shard_0(&cluster);
    let cut = |net: &common::netns::Net| {
        net.isolate(victim + 1);
        eprintln!("store {victim} cut off from everyone");
    };
    let marked_down = |cluster: &Cluster| {
        let status = cluster.status().expect("status");
        let down = status["stores"].as_array().expect("stores").iter().filter(|s| s["up"] == false).count();
        assert_eq!(down, 1, "the master marked the silent store down: {status}");
    };
    let seen = fault_then_heal(&cluster, &ks, "all", victim + 1, cut, marked_down).await;
    check(&cluster, &ks, &seen, "a partition of one store").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_cut_off_from_the_master_only_keeps_its_data_and_rejoins() {
    let Some((cluster, _client, ks)) = three_stores("partition from the master", 2000, &[]).await else { return };
    let victim = primary_of_shard_0(&cluster);
    let cut = |net: &common::netns::Net| {
        net.cut(0, victim + 1);
        eprintln!("store {victim} cut off from the master");
    };
    let seen = fault_then_heal(&cluster, &ks, "master-only", victim + 1, cut, |_| {}).await;
    check(&cluster, &ks, &seen, "a partition between a store and the master").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_master_leaves_clients_working_and_everyone_reconnects_when_it_is_back() {
    let Some((cluster, client, ks)) = three_stores("silent master", 2000, &[]).await else { return };
    let cut = |net: &common::netns::Net| {
        net.isolate(0);
        eprintln!("master cut off from everyone");
    };
    let seen = fault_then_heal(&cluster, &ks, "masterless", 0, cut, |_| {}).await;
    // Not stuck: the master takes an operation, and the same client sees its result.
    cluster.create_keyspace("after", 2, 2);
    let after = tokio::time::timeout(Duration::from_secs(30), client.keyspace("after")).await.expect("the client's master link is back").expect("keyspace");
    after.put(b"k", b"v").await.expect("a write to the new keyspace");
    check(&cluster, &ks, &seen, "a silent master").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delay_with_jitter_and_loss_on_one_store_slows_it_but_loses_nothing() {
    let Some((cluster, _client, ks)) = three_stores("netem", 2000, &[]).await else { return };
    let victim = primary_of_shard_0(&cluster);
    let net = cluster.net.as_ref().expect("hosts");
    let impairment = common::impair::Impairment { delay: Duration::from_millis(200), jitter: Duration::from_millis(50), loss: 0.05 };
    let seed = std::env::var("VASTO_NET_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| u64::from(std::process::id()) ^ 0x5eed);
    eprintln!("impairment seed {seed} (re-run with VASTO_NET_SEED={seed})");
    match net.impair(victim + 1, impairment, seed) {
        Ok(how) => eprintln!("200 ms +- 50 ms delay and 5% loss on store {victim} with {how}"),
        Err(why) => {
            eprintln!("SKIPPED delay and loss: neither netem nor a userspace shaper works here ({why})");
            return;
        }
    }
    let load = Load::start(ks.clone(), "slow");
    tokio::time::sleep(Duration::from_secs(10)).await;
    let [sent, lost, received] = net.unimpair(victim + 1);
    eprintln!("impaired store {victim}: {sent} frames forwarded from it, {lost} dropped, {received} forwarded to it");
    if sent + lost + received > 0 {
        assert!(sent > 0 && lost > 0 && received > 0, "the shaper carried the store's traffic and dropped some of it");
    }
    tokio::task::block_in_place(|| wait_recovered(&cluster, 3));
    let seen = load.finish().await;
    check(&cluster, &ks, &seen, "200 ms delay and 5% loss").await;
}

/// With the default heartbeat timeout (1 s), a blip of 2.5 s marks a store down in the middle of
/// a resize's drain. The resize waits for it (the operation grace) instead of rolling back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blip_longer_than_the_heartbeat_timeout_does_not_roll_back_a_resize() {
    let Some((cluster, _client, ks)) = three_stores("blip during a resize", 1000, &[]).await else { return };
    let mut acked = Vec::new();
    common::put_numbered(&ks, "before", 2000, &mut acked).await;
    let victim = primary_of_shard_0(&cluster);
    let load = Load::start(ks.clone(), "resizing");
    let args: Vec<String> = ["admin", "--master", &cluster.master_addr, "resize", "net", "--shards", "8"].iter().map(|s| (*s).to_owned()).collect();
    let token = cluster.token_file.clone().expect("a token");
    let resize = tokio::task::spawn_blocking(move || {
        common::run_bounded(std::process::Command::new(common::vasto()).args(&args).env("VASTO_TOKEN_FILE", token), Duration::from_secs(120))
    });
    tokio::task::block_in_place(|| {
        wait_for("the resize to drain", Duration::from_secs(60), || (cluster.operation("net")["phase"] == "draining").then_some(()))
    });
    let net = cluster.net.as_ref().expect("hosts");
    net.isolate(victim + 1);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    net.heal(victim + 1);
    let out = resize.await.expect("resize thread");
    let log = std::fs::read_to_string(cluster.dir.path().join("master.log")).unwrap_or_default();
    assert!(log.contains("a store taking part is down; waiting for it"), "the blip was long enough to mark the store down");
    assert!(out.status.success(), "the resize survived the blip: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    tokio::task::block_in_place(|| wait_recovered(&cluster, 3));
    let mut seen = load.finish().await;
    assert_eq!(cluster.routes("net").0, 8, "the keyspace has its new shard count");
    seen.acked.extend(acked);
    check(&cluster, &ks, &seen, "a blip during a resize").await;
}
