//! End-to-end: a master and three stores as real processes, the native client over real sockets.
mod common;

use common::{wait_for, Cluster, Raw};
use std::io::{Read, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use vasto_client::{Client, PutOptions};
use vasto_wire::{frame_len, parse_frame, Status, DEFAULT_MAX_FRAME, LEN_PREFIX};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_keys_round_trip_and_spread_over_all_shards() {
    let cluster = Cluster::start(3);
    cluster.create_keyspace("users", 6, 1);
    let client = Client::connect(&cluster.master_addr).await.unwrap();
    let ks = client.keyspace("users").await.unwrap();

    let mut writers = tokio::task::JoinSet::new();
    for w in 0..20 {
        let ks = ks.clone();
        writers.spawn(async move {
            for i in (w..10_000).step_by(20) {
                ks.put(format!("user:{i:05}").as_bytes(), format!("value-{i}").as_bytes()).await.unwrap();
            }
        });
    }
    while let Some(r) = writers.join_next().await {
        r.unwrap();
    }
    for i in 0..10_000 {
        let v = ks.get(format!("user:{i:05}").as_bytes()).await.unwrap();
        assert_eq!(v.as_deref(), Some(format!("value-{i}").as_bytes()), "key {i}");
    }

    // Every shard physically holds its share, on the store the routing table names.
    let table: Vec<String> = cluster.routes("users").1.into_iter().map(|row| row[0].clone()).collect();
    assert_eq!(table.len(), 6);
    let mut total = 0;
    for (shard, addr) in table.iter().enumerate() {
        let (status, n) = Raw::connect(addr).scan_all("users", shard as u32);
        assert_eq!(status, Status::Ok);
        assert!(n > 1_000, "shard {shard} holds only {n} keys");
        total += n;
    }
    assert_eq!(total, 10_000);
    let stores_used: std::collections::HashSet<_> = table.iter().collect();
    assert_eq!(stores_used.len(), 3, "6 shards are spread over the 3 stores");

    // A scan through the client pages over all shards in key order.
    let mut seen = Vec::new();
    let mut after = Vec::new();
    loop {
        let page = ks.scan_prefix(b"user:001", &after, 30).await.unwrap();
        assert!(page.entries.len() <= 30);
        seen.extend(page.entries.into_iter().map(|(k, _)| String::from_utf8(k).unwrap()));
        match page.next {
            Some(n) => after = n,
            None => break,
        }
    }
    let expected: Vec<String> = (100..200).map(|i| format!("user:{i:05}")).collect();
    assert_eq!(seen.len(), expected.len());
    assert!(seen == expected, "scan returned keys out of order or wrong keys");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn master_restart_never_stops_data_traffic() {
    let mut cluster = Cluster::start(3);
    cluster.create_keyspace("orders", 6, 1);
    let client = Client::connect(&cluster.master_addr).await.unwrap();
    let ks = client.keyspace("orders").await.unwrap();

    let written = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (ks, written, stop) = (ks.clone(), Arc::clone(&written), Arc::clone(&stop));
        tokio::spawn(async move {
            let mut errors = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let i = written.load(Ordering::Relaxed);
                match ks.put(format!("order:{i}").as_bytes(), b"x").await {
                    Ok(()) => {
                        written.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => errors.push(e.to_string()),
                }
            }
            errors
        })
    };
    wait_for("writes before the restart", Duration::from_secs(10), || (written.load(Ordering::Relaxed) > 100).then_some(()));
    cluster.kill_master();
    let during = written.load(Ordering::Relaxed);
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(2) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(written.load(Ordering::Relaxed) > during + 50, "writes must go on while the master is down");
    cluster.start_master();
    // The new master rebuilds the keyspace from the stores' reports.
    wait_for("keyspace rebuilt by the new master", Duration::from_secs(20), || {
        let s = cluster.status()?;
        let ks = s["keyspaces"].as_array()?.iter().find(|k| k["name"] == "orders")?.clone();
        let all_up = ks["routes"].as_array()?.iter().all(|r| r[0]["up"] == true);
        (ks["shards"] == 6 && all_up).then_some(())
    });
    stop.store(true, Ordering::Relaxed);
    let errors = writer.await.unwrap();
    assert!(errors.is_empty(), "writes failed during the master restart: {errors:?}");
    let n = written.load(Ordering::Relaxed);
    // A fresh client learns the table from the new master and reads everything back.
    let fresh = Client::connect(&cluster.master_addr).await.unwrap().keyspace("orders").await.unwrap();
    for i in 0..n {
        assert_eq!(fresh.get(format!("order:{i}").as_bytes()).await.unwrap().as_deref(), Some(&b"x"[..]), "order {i}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_ttl_and_last_writer_wins_through_the_cluster() {
    let cluster = Cluster::start(1);
    cluster.create_keyspace("kv", 2, 1);
    let ks = Client::connect(&cluster.master_addr).await.unwrap().keyspace("kv").await.unwrap();

    ks.put(b"empty", b"").await.unwrap();
    assert_eq!(ks.get(b"empty").await.unwrap(), Some(Vec::new()), "an empty value round-trips");
    let big = vec![7u8; 1 << 20];
    ks.put(b"big", &big).await.unwrap();
    assert_eq!(ks.get(b"big").await.unwrap().as_deref(), Some(&big[..]), "a 1 MiB value round-trips");

    let t = vasto_client::now_ns();
    ks.put_with(b"lww", b"new", PutOptions { event_time_ns: Some(t + 2_000), ..Default::default() }).await.unwrap();
    ks.put_with(b"lww", b"old", PutOptions { event_time_ns: Some(t + 1_000), ..Default::default() }).await.unwrap();
    assert_eq!(ks.get(b"lww").await.unwrap().as_deref(), Some(&b"new"[..]));
    ks.delete_at(b"lww", t + 3_000).await.unwrap();
    ks.put_with(b"lww", b"zombie", PutOptions { event_time_ns: Some(t + 2_500), ..Default::default() }).await.unwrap();
    assert_eq!(ks.get(b"lww").await.unwrap(), None, "an older put never resurrects a deleted key");

    let put_at = std::time::Instant::now();
    ks.put_with(b"ttl", b"soon gone", PutOptions { ttl: Some(Duration::from_secs(3)), ..Default::default() }).await.unwrap();
    assert_eq!(ks.get(b"ttl").await.unwrap().as_deref(), Some(&b"soon gone"[..]));
    tokio::time::sleep(Duration::from_millis(3500).saturating_sub(put_at.elapsed())).await;
    assert_eq!(ks.get(b"ttl").await.unwrap(), None, "expired after its TTL in real time");

    let keys: Vec<&[u8]> = vec![b"big", b"missing", b"empty"];
    let got = ks.get_many(&keys).await.unwrap();
    assert_eq!(got, vec![Some(big.clone()), None, Some(Vec::new())], "batch get answers in request order");
    ks.batch(&[vasto_client::BatchOp::Put { key: b"b1", value: b"1" }, vasto_client::BatchOp::Delete { key: b"big" }]).await.unwrap();
    assert_eq!(ks.get(b"b1").await.unwrap().as_deref(), Some(&b"1"[..]));
    assert_eq!(ks.get(b"big").await.unwrap(), None);
}

#[test]
fn raw_frames_reach_the_store_and_misrouted_keys_are_refused() {
    let cluster = Cluster::start(1);
    cluster.create_keyspace("raw", 4, 1);
    let mut raw = Raw::connect(&cluster.store_addrs[0]);
    // Find a key that is not in shard 0 and send it there anyway.
    let key = (0..).map(|i| format!("k{i}")).find(|k| vasto_hash::shard_of(k.as_bytes(), 4) != 0).unwrap();
    let mut out = Vec::new();
    raw.enc.put(&mut out, 5, "raw", 0, key.as_bytes(), b"v", 1, 0);
    raw.stream.write_all(&out).unwrap();
    let frame = parse_frame(raw.read_frame()).unwrap();
    assert_eq!(frame.id(), 5);
    assert_eq!(frame.body_as_response().unwrap().status(), Status::WrongShard);
    // Pipelining: three requests in one write, three answers in order.
    out.clear();
    for id in 10..13 {
        raw.enc.get(&mut out, id, "raw", vasto_hash::shard_of(b"nope", 4), b"nope");
    }
    raw.stream.write_all(&out).unwrap();
    let mut all = Vec::new();
    raw.buf.clear();
    while all.len() < 3 {
        let mut chunk = [0u8; 4096];
        let n = raw.stream.read(&mut chunk).unwrap();
        assert!(n > 0);
        raw.buf.extend_from_slice(&chunk[..n]);
        while let Ok(Some(len)) = frame_len(&raw.buf, DEFAULT_MAX_FRAME) {
            let f = parse_frame(&raw.buf[LEN_PREFIX..len]).unwrap();
            all.push((f.id(), f.body_as_response().unwrap().status()));
            raw.buf.drain(..len);
        }
    }
    assert_eq!(all, vec![(10, Status::NotFound), (11, Status::NotFound), (12, Status::NotFound)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scan_pages_are_capped_by_bytes_and_continuing_visits_every_key_once() {
    let cluster = Cluster::start(1);
    cluster.create_keyspace("wide", 3, 1);
    let ks = Client::connect(&cluster.master_addr).await.unwrap().keyspace("wide").await.unwrap();
    // 30 values of 1 MiB: a page of at most 4 MiB per shard cannot carry them all.
    let keys: Vec<String> = (0..30).map(|i| format!("blob:{i:02}")).collect();
    for (i, k) in keys.iter().enumerate() {
        ks.put(k.as_bytes(), &vec![i as u8; 1 << 20]).await.unwrap();
    }
    let (mut seen, mut after, mut pages) = (Vec::new(), Vec::new(), 0);
    loop {
        let page = ks.scan_prefix(b"blob:", &after, 1000).await.unwrap();
        pages += 1;
        assert!(!page.entries.is_empty() || page.next.is_none(), "an empty page ends the scan");
        for (k, v) in &page.entries {
            let i: usize = String::from_utf8_lossy(&k[5..]).parse().unwrap();
            assert_eq!(v.len(), 1 << 20);
            assert!(v.iter().all(|b| *b == i as u8), "value of {i}");
            seen.push(String::from_utf8_lossy(k).into_owned());
        }
        match page.next {
            Some(next) => after = next,
            None => break,
        }
    }
    assert_eq!(seen, keys, "every key once, in order");
    assert!(pages > 2, "the byte cap split the scan into pages ({pages})");
}
