//! End-to-end regressions of the bugs identities fixed: sequences of topology operations on one
//! keyspace, a replica re-created under the same name, a store whose disk went back, a store
//! pointed at another cluster, a keyspace re-created while an old replica was away.
mod common;

use common::{assert_all_replicas_hold, put_numbered, wait_for, Acked, Cluster};
use std::time::Duration;
use vasto_client::Client;

async fn keyspace(cluster: &Cluster, name: &str) -> vasto_client::Keyspace {
    Client::connect(&cluster.master_addr).await.unwrap().keyspace(name).await.unwrap()
}

/// Runs `vasto admin ARGS` while writing `{tag}:N` keys; the command and every write must succeed.
async fn admin_while_writing(cluster: &Cluster, ks: &vasto_client::Keyspace, tag: &str, args: &[&str], acked: &mut Acked) {
    let mut all = vec!["admin".to_owned(), "--master".to_owned(), cluster.master_addr.clone()];
    all.extend(args.iter().map(|a| (*a).to_owned()));
    let (out, n) = common::while_writing(all, ks, tag, acked).await;
    assert!(out.status.success(), "{args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    eprintln!("{args:?}: {n} writes acknowledged meanwhile");
}

/// Every acknowledged write is on every replica (once they converge) and reads back through
/// the client. The client reads after the replicas converge: right after a write, a read may
/// go to another replica than the write did (the routing changed in between, as it does while
/// a returning store catches up) and miss it by the replication lag.
async fn check_all(cluster: &Cluster, ks: &vasto_client::Keyspace, name: &str, acked: &[(Vec<u8>, Vec<u8>)]) {
    tokio::task::block_in_place(|| assert_all_replicas_hold(cluster, name, acked));
    for (k, v) in acked {
        assert_eq!(ks.get(k).await.unwrap().as_deref(), Some(v.as_slice()), "{}", String::from_utf8_lossy(k));
    }
}

/// The first reproduction: shrinking 3 -> 2, growing back to 3 and shrinking to 2 again
/// lost every key of the final shard 2 (the second shrink's copies resumed from positions saved
/// by the first, in the change log of a shard that had since been re-created).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shrinking_growing_and_shrinking_again_loses_nothing() {
    let cluster = Cluster::start(3);
    cluster.create_keyspace("sgs", 3, 2);
    let ks = keyspace(&cluster, "sgs").await;
    let mut acked = Vec::new();
    put_numbered(&ks, "start", 600, &mut acked).await;
    for (step, shards) in [2u32, 3, 2].into_iter().enumerate() {
        admin_while_writing(&cluster, &ks, &format!("during{step}"), &["resize", "sgs", "--shards", &shards.to_string()], &mut acked).await;
        put_numbered(&ks, &format!("after{step}"), 300, &mut acked).await;
        assert_eq!(cluster.routes("sgs").0, shards);
        check_all(&cluster, &ks, "sgs", &acked).await;
    }
    let held = tokio::task::block_in_place(|| common::wait_only_owned_keys(&cluster, "sgs", 2));
    assert_eq!(held.len(), 4, "2 shards x 2 replicas: {held:?}");
    assert_eq!(held.iter().map(|(_, n)| n).sum::<u64>(), 2 * acked.len() as u64, "each key once per replica");
}

/// The second reproduction: replacing A by B and then B by A either failed on the shard
/// directory's lock (A's dropped replica was still open) or left A's peers with positions of
/// A's earlier replica, so they never received what A took afterwards: lost once A died.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replacing_a_store_and_back_then_losing_it_loses_nothing() {
    let mut cluster = Cluster::start(3);
    cluster.create_keyspace("aba", 4, 2);
    let ks = keyspace(&cluster, "aba").await;
    let mut acked = Vec::new();
    put_numbered(&ks, "start", 500, &mut acked).await;
    let b = cluster.add_store(4);
    let (a_addr, b_addr) = (cluster.store_addrs[0].clone(), cluster.store_addrs[b].clone());
    admin_while_writing(&cluster, &ks, "there", &["replace-store", "aba", "--from", &a_addr, "--to", &b_addr], &mut acked).await;
    put_numbered(&ks, "between", 300, &mut acked).await;
    admin_while_writing(&cluster, &ks, "back", &["replace-store", "aba", "--from", &b_addr, "--to", &a_addr], &mut acked).await;
    put_numbered(&ks, "after", 500, &mut acked).await;
    check_all(&cluster, &ks, "aba", &acked).await;
    // No replica keeps a position for a replica that is gone.
    let engine = vasto_engine::Engine::new(&cluster.dir.path().join("census"), &vasto_engine::EngineOptions::default()).unwrap();
    let b_id =
        cluster.status().unwrap()["stores"].as_array().unwrap().iter().find(|s| s["address"] == b_addr.as_str()).unwrap()["id"].as_str().unwrap().to_owned();
    tokio::task::block_in_place(|| {
        wait_for("positions of the retired replicas to be deleted", Duration::from_secs(30), || {
            let dirs = (0..3).flat_map(|i| std::fs::read_dir(cluster.dir.path().join(format!("store-{i}")).join("aba")).into_iter().flatten().flatten());
            let censuses: Option<Vec<_>> = dirs.filter(|d| d.path().join("CURRENT").exists()).map(|d| engine.census(&d.path()).ok()).collect();
            censuses?.iter().all(|c| !c.followed.contains(&b_id)).then_some(())
        })
    });
    // A dies: everything it took after coming back is on its peers.
    cluster.kill_store(0);
    for (k, v) in &acked {
        assert_eq!(ks.get(k).await.unwrap().as_deref(), Some(v.as_slice()), "{} lost with A", String::from_utf8_lossy(k));
    }
}

/// A store whose disk went back (its last writes and its change log's tail lost, as after a
/// power failure with `--sync everysec`) and whose machine rebooted: its change logs start new
/// incarnations, so its peers re-copy it instead of skipping the sequence numbers it reuses, and
/// it copies back from them what it lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_whose_disk_went_back_after_a_reboot_is_copied_again_both_ways() {
    let mut cluster = Cluster::start(3);
    let boot: Vec<String> = (0..3).map(|i| cluster.dir.path().join(format!("boot-{i}")).display().to_string()).collect();
    for (i, path) in boot.iter().enumerate() {
        std::fs::write(path, "boot-1\n").unwrap();
        cluster.kill_store(i);
        cluster.start_store_with(i, &["--boot-id-file", path]);
    }
    cluster.wait_stores_up(3);
    cluster.create_keyspace("back", 2, 2);
    let ks = keyspace(&cluster, "back").await;
    let mut acked = Vec::new();
    put_numbered(&ks, "first", 300, &mut acked).await;
    tokio::task::block_in_place(|| assert_all_replicas_hold(&cluster, "back", &acked));
    // The disk as it was at this point.
    cluster.kill_store(0);
    let dir = cluster.dir.path().join("store-0");
    let saved = cluster.dir.path().join("store-0-saved");
    copy_dir(&dir, &saved);
    cluster.start_store_with(0, &["--boot-id-file", &boot[0]]);
    cluster.wait_stores_up(3);
    put_numbered(&ks, "lost-locally", 300, &mut acked).await;
    tokio::task::block_in_place(|| assert_all_replicas_hold(&cluster, "back", &acked));
    // Power failure: the disk goes back, the machine reboots.
    cluster.kill_store(0);
    std::fs::remove_dir_all(&dir).unwrap();
    std::fs::rename(&saved, &dir).unwrap();
    std::fs::write(&boot[0], "boot-2\n").unwrap();
    cluster.start_store_with(0, &["--boot-id-file", &boot[0]]);
    cluster.wait_stores_up(3);
    // New writes reuse the sequence numbers the lost ones had on store 0.
    put_numbered(&ks, "after", 300, &mut acked).await;
    check_all(&cluster, &ks, "back", &acked).await;
    let log = std::fs::read_to_string(cluster.dir.path().join("store-0.log")).unwrap();
    assert!(log.contains("did not stop cleanly"), "the restarted store knew it may have lost writes");
    let peers = [1, 2].map(|i| std::fs::read_to_string(cluster.dir.path().join(format!("store-{i}.log"))).unwrap());
    assert!(peers.iter().any(|l| l.contains("not in the peer's change log")), "a peer re-bootstrapped instead of resuming");
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    let out = std::process::Command::new("cp").arg("-a").arg(from).arg(to).output().unwrap();
    assert!(out.status.success(), "cp: {}", String::from_utf8_lossy(&out.stderr));
}

/// A store that belongs to one cluster is refused by another cluster's master (and a fresh
/// store joins whichever master it meets first).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_never_joins_another_cluster() {
    let mut cluster = Cluster::start(2);
    cluster.create_keyspace("mine", 2, 1);
    let ks = keyspace(&cluster, "mine").await;
    let mut acked = Vec::new();
    put_numbered(&ks, "k", 100, &mut acked).await;
    let mut other = Cluster::start(1);
    // Store 0 of the first cluster is pointed at the other master.
    cluster.kill_store(0);
    let dir = cluster.dir.path().join("store-0").display().to_string();
    let log = cluster.dir.path().join("store-0-elsewhere.log");
    let args = ["store", "--master", &other.master_addr, "--listen", &cluster.store_addrs[0], "--dir", &dir, "--threads", "1"];
    let stray = common::Proc::spawn("store-0-elsewhere", &args, &log);
    wait_for("the other master to refuse the store", Duration::from_secs(20), || {
        std::fs::read_to_string(&log).ok().filter(|l| l.contains("belongs to cluster")).map(drop)
    });
    let status = other.status().unwrap();
    assert_eq!(status["stores"].as_array().unwrap().len(), 1, "only the other cluster's own store: {status}");
    assert!(status["keyspaces"].as_array().unwrap().is_empty(), "the keyspace did not leak into the other cluster");
    drop(stray);
    other.kill_master();
    cluster.start_store(0);
    cluster.wait_stores_up(2);
    check_all(&cluster, &ks, "mine", &acked).await;
}

/// A keyspace deleted while a store holding one of its replicas was down, then created again
/// under the same name: the returning store's old replica is dropped, never adopted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recreated_keyspace_never_adopts_an_old_ones_replica() {
    let mut cluster = Cluster::start(3);
    cluster.create_keyspace("again", 3, 1);
    let ks = keyspace(&cluster, "again").await;
    let mut old = Vec::new();
    put_numbered(&ks, "old", 300, &mut old).await;
    cluster.kill_store(2);
    let out = cluster.admin(&["delete-keyspace", "again"]);
    assert!(out.status.success(), "delete with a store down: {}", String::from_utf8_lossy(&out.stderr));
    cluster.create_keyspace("again", 3, 1);
    let ks = keyspace(&cluster, "again").await;
    let mut new = Vec::new();
    put_numbered(&ks, "new", 300, &mut new).await;
    cluster.start_store(2);
    cluster.wait_stores_up(3);
    let dir = cluster.dir.path().join("store-2").join("again");
    tokio::task::block_in_place(|| {
        wait_for("the old replica to be dropped", Duration::from_secs(30), || {
            let left = std::fs::read_dir(&dir).map(|d| d.flatten().filter(|e| e.path().join("CURRENT").exists()).count()).unwrap_or(0);
            (left == 0).then_some(())
        })
    });
    check_all(&cluster, &ks, "again", &new).await;
    let (shards, routes) = cluster.routes("again");
    assert_eq!(shards, 3);
    assert!(routes.iter().flatten().all(|a| *a != cluster.store_addrs[2]), "the new keyspace lives on the stores that were up: {routes:?}");
    for (k, _) in old.iter().filter(|(k, _)| !new.iter().any(|(n, _)| n == k)) {
        assert_eq!(ks.get(k).await.unwrap(), None, "an old key leaked into the new keyspace");
    }
}

/// After a master restart with every store down, a create of the same name finds the keyspace
/// in the master's catalog instead of forking a second one; the stores then bring it back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_create_after_a_master_restart_never_forks_the_keyspace() {
    let mut cluster = Cluster::start(2);
    cluster.create_keyspace("fork", 2, 1);
    let ks = keyspace(&cluster, "fork").await;
    let mut acked = Vec::new();
    put_numbered(&ks, "k", 200, &mut acked).await;
    cluster.kill_store(0);
    cluster.kill_store(1);
    cluster.kill_master();
    cluster.start_master_and_wait();
    let out = cluster.admin(&["create-keyspace", "fork", "--shards", "4", "--replicas", "1"]);
    assert!(!out.status.success(), "a create with another shape is refused");
    assert!(String::from_utf8_lossy(&out.stderr).contains("already exists"), "{}", String::from_utf8_lossy(&out.stderr));
    let out = cluster.admin(&["create-keyspace", "fork", "--shards", "2", "--replicas", "1"]);
    assert!(out.status.success(), "the same shape is the keyspace that exists: {}", String::from_utf8_lossy(&out.stderr));
    cluster.start_store(0);
    cluster.start_store(1);
    cluster.wait_stores_up(2);
    let ks = keyspace(&cluster, "fork").await;
    check_all(&cluster, &ks, "fork", &acked).await;
}

/// Three replicas P, X, Y; P takes a write w while Y is down, X applies it; then P loses its
/// disk's tail in a power failure (its directory goes back, the machine reboots). w is now on X
/// alone, in nobody's change log (X applied it, it did not take it). When P comes back with a
/// new log incarnation, Y must not only re-copy P (whose own re-copy from X, slowed down here,
/// has not brought w back yet): it copies every peer again, and gets w from X's snapshot.
/// (Found in review: Y re-copied P alone and never got w.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_its_store_lost_reaches_every_replica_from_the_one_that_had_it() {
    let mut cluster = Cluster::start(3);
    let boot: Vec<String> = (0..3).map(|i| cluster.dir.path().join(format!("boot-{i}")).display().to_string()).collect();
    for path in &boot {
        std::fs::write(path, "boot-1\n").unwrap();
    }
    let start = |cluster: &mut Cluster, i: usize, slow: bool| {
        let mut flags = vec!["--boot-id-file", boot[i].as_str()];
        if slow {
            flags.extend(["--max-mbps", "1"]);
        }
        cluster.kill_store(i);
        cluster.start_store_with(i, &flags);
    };
    for i in 0..3 {
        start(&mut cluster, i, false);
    }
    cluster.wait_stores_up(3);
    cluster.create_keyspace("lost", 1, 3);
    let ks = keyspace(&cluster, "lost").await;
    let (_, routes) = cluster.routes("lost");
    let index = |addr: &String| cluster.store_addrs.iter().position(|a| a == addr).unwrap();
    let (p, x, y) = (index(&routes[0][0]), index(&routes[0][1]), index(&routes[0][2]));
    // X sends snapshots at 1 MB/s, and holds a few MB: P's re-copy from X will take seconds.
    start(&mut cluster, x, true);
    cluster.wait_stores_up(3);
    let mut acked = Vec::new();
    let value = vec![b'v'; 1000];
    for i in 0..4000 {
        let k = format!("bulk:{i}").into_bytes();
        ks.put(&k, &value).await.unwrap();
        acked.push((k, value.clone()));
    }
    tokio::task::block_in_place(|| assert_all_replicas_hold(&cluster, "lost", &acked));
    // P's disk as it is now.
    cluster.kill_store(p);
    let (dir, saved) = (cluster.dir.path().join(format!("store-{p}")), cluster.dir.path().join("saved"));
    copy_dir(&dir, &saved);
    start(&mut cluster, p, false);
    cluster.wait_stores_up(3);
    // Y is down; P takes w; X applies it.
    cluster.kill_store(y);
    let w = (b"w".to_vec(), b"only-p-and-x".to_vec());
    common::Raw::connect(&cluster.store_addrs[p]).put("lost", 0, &w.0, &w.1, vasto_client::now_ns());
    tokio::task::block_in_place(|| {
        wait_for("X to apply w", Duration::from_secs(20), || {
            (common::Raw::connect(&cluster.store_addrs[x]).get_many("lost", 0, std::slice::from_ref(&w.0))[0].as_deref() == Some(w.1.as_slice())).then_some(())
        })
    });
    // Power failure on P: its disk goes back to before w, the machine reboots.
    cluster.kill_store(p);
    std::fs::remove_dir_all(&dir).unwrap();
    std::fs::rename(&saved, &dir).unwrap();
    std::fs::write(&boot[p], "boot-2\n").unwrap();
    // Y comes back first (P is still down), then P.
    start(&mut cluster, y, false);
    cluster.wait_stores_up(2);
    tokio::time::sleep(Duration::from_secs(1)).await;
    start(&mut cluster, p, false);
    cluster.wait_stores_up(3);
    acked.push(w);
    put_numbered(&ks, "after", 100, &mut acked).await;
    check_all(&cluster, &ks, "lost", &acked).await;
    let y_log = std::fs::read_to_string(cluster.dir.path().join(format!("store-{y}.log"))).unwrap();
    assert!(y_log.contains("copying every peer again"), "Y re-copied every peer");
}
