//! End-to-end: `vasto admin backup` under a writer and `vasto admin restore` into keyspaces of
//! other shard counts; damaged and incomplete backups are refused before anything is loaded.
mod common;

use common::{seed, Cluster, Raw};
use rand::{RngExt, SeedableRng};
use std::collections::BTreeMap;
use std::path::Path;
use vasto_client::{Client, Keyspace, PutOptions, WriteTo};

fn ok(out: &std::process::Output, what: &str) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{what} failed: {}{stdout}", String::from_utf8_lossy(&out.stderr));
    stdout
}

fn refused(out: &std::process::Output, what: &str) -> String {
    assert!(!out.status.success(), "{what} should have been refused: {}", String::from_utf8_lossy(&out.stdout));
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Random puts (some with a far TTL), overwrites and deletes of `keys` keys, through whichever
/// replica the rotation picks; returns what each key must read as (None: deleted).
async fn random_writes(ks: &Keyspace, seed: u64, ops: usize, keys: usize) -> BTreeMap<String, Option<Vec<u8>>> {
    let mut rng = rand_xorshift::XorShiftRng::seed_from_u64(seed);
    let mut model = BTreeMap::new();
    for op in 0..ops {
        let key = format!("pre:{:05}", rng.random_range(0..keys));
        if rng.random_range(0..10) == 0 {
            ks.delete(key.as_bytes()).await.unwrap_or_else(|e| panic!("delete {key}: {e}"));
            model.insert(key, None);
        } else {
            let value = format!("{op}-{}", "v".repeat(rng.random_range(0..300))).into_bytes();
            let ttl = if rng.random_range(0..5) == 0 { Some(std::time::Duration::from_secs(3600)) } else { None };
            ks.put_with(key.as_bytes(), &value, PutOptions { ttl, ..Default::default() }).await.unwrap_or_else(|e| panic!("put {key}: {e}"));
            model.insert(key, Some(value));
        }
    }
    model
}

async fn keyspace(cluster: &Cluster, name: &str) -> Keyspace {
    Client::connect_with(&cluster.master_addr, cluster.client_config()).await.unwrap().keyspace(name).await.unwrap()
}

/// Every replica of every shard of `name` serves the same number of keys.
fn replicas_agree(cluster: &Cluster, name: &str) -> usize {
    let (_, table) = cluster.routes(name);
    let mut total = 0;
    for (shard, addrs) in table.iter().enumerate() {
        let counts: Vec<usize> = addrs.iter().map(|a| Raw::connect(a).count_keys(name, shard as u32)).collect();
        assert!(counts.windows(2).all(|w| w[0] == w[1]), "replicas of {name}/{shard} disagree: {counts:?}");
        total += counts[0];
    }
    total
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_under_a_writer_restores_every_acknowledged_key_into_other_shard_counts() {
    let seed = seed("VASTO_BACKUP_SEED", "backup");
    let mut cluster = Cluster::start(3);
    cluster.create_keyspace("src", 3, 2);
    let ks = keyspace(&cluster, "src").await.with_write_to(WriteTo::AnyReplica);
    let model = random_writes(&ks, seed, 4_000, 2_500).await;

    // The backup runs while a writer keeps going: what it wrote meanwhile may or may not be in
    // the backup, but everything acknowledged before it began must be.
    let dir = cluster.dir.path().join("backups/src-1");
    let args: Vec<String> =
        ["admin", "--master", &cluster.master_addr, "backup", "src", "--to"].iter().map(|s| s.to_string()).chain([dir.display().to_string()]).collect();
    let mut during = Vec::new();
    let (out, written) = common::while_writing(args, &ks, "during", &mut during).await;
    let said = ok(&out, "backup");
    eprintln!("{said}({written} writes during the backup)");
    assert!(said.contains("backed up src (3 shards"), "{said}");
    let manifest: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["taken"].as_array().map(Vec::len), Some(3), "{manifest}");

    for (name, shards) in [("dst5", "5"), ("dst1", "1")] {
        let out = tokio::task::block_in_place(|| cluster.admin(&["restore", &dir.display().to_string(), "--keyspace", name, "--shards", shards]));
        eprintln!("{}", ok(&out, "restore"));
        let restored = keyspace(&cluster, name).await;
        for (key, want) in &model {
            assert_eq!(&restored.get(key.as_bytes()).await.unwrap(), want, "{key} in {name}");
        }
        for (key, value) in &during {
            let got = restored.get(key).await.unwrap();
            assert!(got.is_none() || got.as_ref() == Some(value), "{} in {name}: {got:?}", String::from_utf8_lossy(key));
        }
        let live = model.values().filter(|v| v.is_some()).count();
        let total = tokio::task::block_in_place(|| replicas_agree(&cluster, name));
        assert!(total >= live && total <= live + during.len(), "{name} serves {total} keys, {live} live before the backup");
    }
    // Restoring again changes nothing; a shard count the existing keyspace does not have is
    // refused with the reason.
    let before = tokio::task::block_in_place(|| replicas_agree(&cluster, "dst5"));
    ok(&tokio::task::block_in_place(|| cluster.admin(&["restore", &dir.display().to_string(), "--keyspace", "dst5"])), "second restore");
    assert_eq!(tokio::task::block_in_place(|| replicas_agree(&cluster, "dst5")), before);
    let err =
        refused(&tokio::task::block_in_place(|| cluster.admin(&["restore", &dir.display().to_string(), "--keyspace", "dst5", "--shards", "2"])), "restore");
    assert!(err.contains("exists with 5 shards"), "{err}");
    let err =
        refused(&tokio::task::block_in_place(|| cluster.admin(&["restore", &dir.display().to_string(), "--keyspace", "dst5", "--replicas", "3"])), "restore");
    assert!(err.contains("exists with 2 replicas per shard"), "{err}");
    // A newer write is never overwritten by a restore of older data.
    let (key, _) = model.iter().find(|(_, v)| v.is_some()).unwrap();
    let dst = keyspace(&cluster, "dst5").await;
    dst.put(key.as_bytes(), b"newer").await.unwrap();
    ok(&tokio::task::block_in_place(|| cluster.admin(&["restore", &dir.display().to_string(), "--keyspace", "dst5"])), "third restore");
    assert_eq!(dst.get(key.as_bytes()).await.unwrap().as_deref(), Some(&b"newer"[..]));

    // With a store down, the backup still takes every shard from a live replica, and says which
    // shards' down peers may hold writes it could not include.
    tokio::task::block_in_place(|| cluster.kill_store(0));
    let degraded = cluster.dir.path().join("backups/src-2");
    let out = tokio::task::block_in_place(|| cluster.admin(&["backup", "src", "--to", &degraded.display().to_string()]));
    ok(&out, "backup with a store down");
    let warned = String::from_utf8_lossy(&out.stderr);
    assert!(warned.contains("warning: shard") && warned.contains("down"), "{warned}");
    ok(
        &tokio::task::block_in_place(|| cluster.admin(&["restore", &degraded.display().to_string(), "--keyspace", "dst2", "--shards", "2", "--replicas", "1"])),
        "restore",
    );
    let restored = keyspace(&cluster, "dst2").await;
    for (key, want) in &model {
        assert_eq!(&restored.get(key.as_bytes()).await.unwrap(), want, "{key} in dst2 (replicated long before store 0 went down)");
    }
}

/// Copies a directory tree file by file (no hard links: damaging the copy leaves the original).
fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

fn largest_sst(dir: &Path) -> std::path::PathBuf {
    let files = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).filter(|p| p.extension().is_some_and(|e| e == "sst"));
    files.max_by_key(|p| std::fs::metadata(p).unwrap().len()).expect("an SST file")
}

/// A copy's name, the error a restore of it must give, and how it is damaged.
type Damage = (&'static str, &'static str, fn(&Path));

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_or_incomplete_backup_is_refused_before_anything_is_loaded() {
    use std::os::unix::fs::MetadataExt;
    let mut cluster = Cluster::start(1);
    cluster.create_keyspace("ks", 2, 1);
    let ks = keyspace(&cluster, "ks").await;
    let value = vec![b'x'; 200];
    for i in 0..3_000 {
        ks.put(format!("k{i:05}").as_bytes(), &value).await.unwrap();
    }
    let good = cluster.dir.path().join("good");
    let said = ok(&tokio::task::block_in_place(|| cluster.admin(&["backup", "ks", "--to", &good.display().to_string()])), "backup");
    assert!(said.contains("3000 entries"), "{said}");
    let linked = (0..2).any(|s| std::fs::metadata(largest_sst(&good.join(format!("shard-{s:05}")))).unwrap().nlink() >= 2);
    assert!(linked, "on the stores' filesystem, checkpoint files are hard links");
    let err = refused(&tokio::task::block_in_place(|| cluster.admin(&["backup", "ks", "--to", &good.display().to_string()])), "backup into a used directory");
    assert!(err.contains("not empty"), "{err}");
    let err = refused(&tokio::task::block_in_place(|| cluster.admin(&["backup", "nope", "--to", "/tmp/never-written"])), "backup of an unknown keyspace");
    assert!(err.contains("does not exist"), "{err}");
    // While an import holds the keyspace a backup is refused (one shard count per backup), and
    // the busy mark is soft state: after a master restart, backups work again.
    let mut importer = vasto_client::AdminClient::connect_with(&cluster.master_addr, &cluster.client_config()).await.unwrap();
    importer.begin_import("ks").await.unwrap();
    let held = cluster.dir.path().join("held");
    let err = refused(&tokio::task::block_in_place(|| cluster.admin(&["backup", "ks", "--to", &held.display().to_string()])), "backup during an import");
    assert!(err.contains("busy"), "{err}");
    importer.end_import("ks").await.unwrap();
    tokio::task::block_in_place(|| {
        cluster.kill_master();
        cluster.start_master_and_wait();
        cluster.wait_stores_up(1);
    });
    let again = cluster.dir.path().join("after-restart");
    let backed_up = common::wait_for("a backup after the master restart", std::time::Duration::from_secs(30), || {
        let _ = std::fs::remove_dir_all(&again);
        let out = cluster.admin(&["backup", "ks", "--to", &again.display().to_string()]);
        out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    });
    assert!(backed_up.contains("3000 entries"), "{backed_up}");

    let damages: [Damage; 5] = [
        ("no-manifest", "incomplete backup", |d| std::fs::remove_file(d.join("manifest.json")).unwrap()),
        ("no-shard", "incomplete backup", |d| std::fs::remove_dir_all(d.join("shard-00001")).unwrap()),
        ("truncated", "corrupt backup", |d| {
            let sst = largest_sst(&d.join("shard-00000"));
            let len = std::fs::metadata(&sst).unwrap().len();
            std::fs::OpenOptions::new().write(true).open(&sst).unwrap().set_len(len / 2).unwrap();
        }),
        // Sizes unchanged, contents not: every SST file of shard 1 (the data's among them).
        ("flipped", "corrupt backup", |d| {
            for sst in std::fs::read_dir(d.join("shard-00001")).unwrap().map(|e| e.unwrap().path()).filter(|p| p.extension().is_some_and(|e| e == "sst")) {
                let mut bytes = std::fs::read(&sst).unwrap();
                let end = bytes.len().min(4_000);
                for b in &mut bytes[100..end] {
                    *b ^= 0x5a;
                }
                std::fs::write(&sst, bytes).unwrap();
            }
        }),
        ("miscounted", "corrupt backup", |d| {
            let path = d.join("manifest.json");
            let mut m: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
            m["taken"][0]["entries"] = serde_json::json!(m["taken"][0]["entries"].as_u64().unwrap() + 1);
            std::fs::write(&path, serde_json::to_vec(&m).unwrap()).unwrap();
        }),
    ];
    for (name, expected, damage) in damages {
        let copy = cluster.dir.path().join(name);
        copy_tree(&good, &copy);
        damage(&copy);
        let target = format!("r-{name}");
        let err = refused(&tokio::task::block_in_place(|| cluster.admin(&["restore", &copy.display().to_string(), "--keyspace", &target])), name);
        assert!(err.contains(expected), "{name}: {err}");
        let status = tokio::task::block_in_place(|| cluster.status()).unwrap();
        assert!(!status["keyspaces"].as_array().unwrap().iter().any(|k| k["name"] == target.as_str()), "{name}: {target} was created");
    }
    // The intact backup restores every key (onto 3 shards).
    ok(&tokio::task::block_in_place(|| cluster.admin(&["restore", &good.display().to_string(), "--keyspace", "whole", "--shards", "3"])), "restore");
    let whole = keyspace(&cluster, "whole").await;
    for i in 0..3_000 {
        assert_eq!(whole.get(format!("k{i:05}").as_bytes()).await.unwrap().as_deref(), Some(&value[..]), "k{i:05}");
    }
}
