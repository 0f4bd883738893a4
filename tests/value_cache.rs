//! End-to-end: a store's value cache never serves a value older than what reached the store by
//! any path: a replicated write, a replicated delete, a bulk import.
mod common;

use common::{run_bounded, vasto, wait_for, Cluster, Raw};
use std::process::Command;
use std::time::Duration;

/// What `raw` (one replica) answers for `key` of shard 0.
fn read(raw: &mut Raw, key: &[u8]) -> Option<Vec<u8>> {
    raw.get_many("vc", 0, &[key.to_vec()]).pop().flatten()
}

/// Reads `key` on `raw` until it answers `expected` (the change has to replicate first).
fn wait_value(raw: &mut Raw, key: &[u8], expected: Option<&[u8]>, what: &str) {
    wait_for(what, Duration::from_secs(10), || (read(raw, key).as_deref() == expected).then_some(()));
}

#[test]
fn cached_values_follow_replicated_writes_deletes_and_imports() {
    let cluster = Cluster::start(2);
    cluster.create_keyspace("vc", 1, 2);
    let replicas = cluster.routes("vc").1;
    let (mut a, mut b) = (Raw::connect(&replicas[0][0]), Raw::connect(&replicas[0][1]));
    let t = vasto_client::now_ns();

    // Written on A; B reads it (and so caches it) once it has replicated.
    a.put("vc", 0, b"k", b"one", t);
    wait_value(&mut b, b"k", Some(b"one"), "the first write on B");
    for _ in 0..5 {
        assert_eq!(read(&mut b, b"k").as_deref(), Some(&b"one"[..]));
    }

    // A newer write on A must replace B's cached value; an older one on A must not.
    a.put("vc", 0, b"k", b"two", t + 10);
    wait_value(&mut b, b"k", Some(b"two"), "the replicated newer write on B");
    a.put("vc", 0, b"k", b"stale", t + 5);
    // Let the stale write replicate (a later marker write shows it has), then check B.
    a.put("vc", 0, b"marker", b"m", t);
    wait_value(&mut b, b"marker", Some(b"m"), "the marker on B");
    assert_eq!(read(&mut b, b"k").as_deref(), Some(&b"two"[..]), "an older replicated write must not win on B");

    // A delete through the client (to the primary) must make B answer not found.
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let client = vasto_client::Client::connect(&cluster.master_addr).await.unwrap();
        let ks = client.keyspace("vc").await.unwrap();
        ks.delete_at(b"k", t + 20).await.unwrap();
    });
    wait_value(&mut b, b"k", None, "the replicated delete on B");

    // A cached value on B, then an import with a newer event time: B serves the import.
    a.put("vc", 0, b"imp", b"live", t);
    wait_value(&mut b, b"imp", Some(b"live"), "the write to be replaced by an import on B");
    assert_eq!(read(&mut a, b"imp").as_deref(), Some(&b"live"[..]));
    let input = cluster.dir.path().join("import.tsv");
    std::fs::write(&input, "imp\timported\n").unwrap();
    let mut cmd = Command::new(vasto());
    cmd.args(["import", "--master", &cluster.master_addr, "--keyspace", "vc", "--event-time", &(t + 30).to_string(), "--input"]).arg(&input);
    let out = run_bounded(&mut cmd, Duration::from_secs(60));
    assert!(out.status.success(), "import failed: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(read(&mut a, b"imp").as_deref(), Some(&b"imported"[..]), "A serves the import, not its cached value");
    assert_eq!(read(&mut b, b"imp").as_deref(), Some(&b"imported"[..]), "B serves the import, not its cached value");
}
