//! End-to-end: a store bounds what one peer can hold (a connection that never finishes its
//! opening, a frame that never completes, a huge frame declared by a stranger, more connections
//! than allowed) and keeps serving everyone else meanwhile.
mod common;

use common::{wait_for, Cluster, Raw};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;
use vasto_client::Client;
use vasto_wire::{HandshakeError, Role, Status};

/// True once the store closed `s` (end of stream or reset), waiting at most 10 s.
fn closed_by_the_store(s: &mut TcpStream) -> bool {
    s.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    let mut sink = [0u8; 4096];
    loop {
        match s.read(&mut sink) {
            Ok(0) => return true,
            Ok(_) => continue, // an error answer before the close
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock || e.kind() == std::io::ErrorKind::TimedOut => return false,
            Err(_) => return true,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_peers_and_extra_connections_are_cut_off_while_others_are_served() {
    let mut cluster = Cluster::start(0);
    cluster.store_addrs.push(format!("127.0.0.1:{}", common::free_port()));
    cluster.stores.push(None);
    cluster.start_store_with(0, &["--read-timeout-ms", "500", "--max-connections", "4"]);
    cluster.wait_stores_up(1);
    cluster.create_keyspace("lim", 1, 1);
    let store = cluster.store_addrs[0].clone();
    let ks = Client::connect(&cluster.master_addr).await.unwrap().keyspace("lim").await.unwrap();
    ks.put(b"k", b"v").await.unwrap();

    // A peer that connects and says nothing.
    let mut silent = TcpStream::connect(&store).expect("connect");
    // A peer that declares a 1 MiB frame before it is admitted (only a hello may come first).
    let mut stranger = TcpStream::connect(&store).expect("connect");
    stranger.write_all(&(1u32 << 20).to_le_bytes()).expect("write");
    // An admitted peer that starts a frame and never finishes it.
    let mut partial = Raw::connect_as(&store, Role::Client, None).expect("admitted");
    partial.stream.write_all(&1000u32.to_le_bytes()).and_then(|()| partial.stream.write_all(&[0; 10])).expect("write");
    // Meanwhile the store serves the client.
    assert_eq!(ks.get(b"k").await.unwrap().as_deref(), Some(&b"v"[..]));
    assert!(closed_by_the_store(&mut silent), "a connection that never says hello is closed");
    assert!(closed_by_the_store(&mut stranger), "a stranger's huge frame is refused");
    assert!(closed_by_the_store(&mut partial.stream), "a frame that never completes is cut off");
    ks.put(b"k", b"v2").await.unwrap();

    // At most 4 connections: the client's and three more; the fifth is refused at its hello.
    let held: Vec<Raw> = wait_for("three more connections to be admitted", Duration::from_secs(10), || {
        (0..3).map(|_| Raw::connect_as(&store, Role::Client, None).ok()).collect()
    });
    match Raw::connect_as(&store, Role::Client, None) {
        Err(HandshakeError::Refused { status: Status::Unavailable, message }) => assert!(message.contains("at most 4 connections"), "{message}"),
        other => panic!("expected a refusal, got {:?}", other.map(|_| ())),
    }
    assert_eq!(ks.get(b"k").await.unwrap().as_deref(), Some(&b"v2"[..]), "the connections admitted are served");
    drop(held);
    wait_for("a slot to free once a connection closes", Duration::from_secs(10), || Raw::connect_as(&store, Role::Client, None).ok().map(drop));
}

#[test]
fn a_second_store_on_the_same_address_refuses_to_start() {
    // The cores share their port with SO_REUSEPORT, which would also let another store bind it
    // and take half of the connections (found by the soak, seed 9033, with a port handed out
    // twice): the second store must fail instead.
    let mut cluster = Cluster::start(1);
    let i = cluster.store_addrs.len();
    cluster.store_addrs.push(cluster.store_addrs[0].clone());
    cluster.stores.push(None);
    let log = cluster.dir.path().join(format!("store-{i}.log"));
    cluster.start_store(i);
    wait_for("the second store to refuse the address", Duration::from_secs(30), || {
        std::fs::read_to_string(&log).ok().filter(|l| l.contains("is another store running on this address")).map(drop)
    });
    cluster.wait_stores_up(1);
    let s = cluster.status().expect("status");
    assert_eq!(s["stores"].as_array().map(Vec::len), Some(1), "only the first store registered: {s}");
}

/// A full snapshot is a whole export: one follower gets three of a replica in a row, then one
/// per 10 s; one more is refused with `Unavailable` (the follower backs off), and clients are
/// served meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_requests_are_rate_limited_while_clients_are_served() {
    let cluster = Cluster::start(1);
    cluster.create_keyspace("snap", 1, 1);
    let ks = Client::connect(&cluster.master_addr).await.unwrap().keyspace("snap").await.unwrap();
    ks.put(b"k", b"v").await.unwrap();
    let store = cluster.store_addrs[0].clone();
    let ask = |follower: &str| -> (Status, String) {
        let mut raw = Raw::connect_as(&store, Role::Store, None).expect("admitted as a store");
        let mut out = Vec::new();
        raw.enc.snapshot_request(&mut out, "snap", 0, follower, None);
        raw.stream.write_all(&out).expect("send the request");
        let frame = vasto_wire::parse_frame(raw.read_frame()).expect("a frame");
        let chunk = frame.body_as_snapshot_chunk().expect("a snapshot chunk");
        (chunk.status(), chunk.message().unwrap_or_default().to_owned())
    };
    for n in 1..=3 {
        let (status, message) = tokio::task::block_in_place(|| ask("follower-a"));
        assert_eq!(status, Status::Ok, "snapshot {n} is sent: {message}");
    }
    let (status, message) = tokio::task::block_in_place(|| ask("follower-a"));
    assert_eq!(status, Status::Unavailable, "{message}");
    assert!(message.contains("try again in"), "the refusal says when: {message}");
    assert_eq!(ks.get(b"k").await.unwrap().as_deref(), Some(&b"v"[..]), "clients are served meanwhile");
    let other = tokio::task::block_in_place(|| ask("follower-b"));
    assert_eq!(other.0, Status::Ok, "another follower is not held up: {}", other.1);
}
