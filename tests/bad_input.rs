//! End-to-end: malformed input gets a clear error and the store keeps serving everyone else.
mod common;

use common::Cluster;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;
use vasto_client::{Client, ClientError, PutOptions, Status};
use vasto_wire::{parse_frame, read_frame_blocking, FrameEncoder, Role, WireError, DEFAULT_MAX_FRAME};

fn connect(addr: &str) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

fn hello(s: &mut TcpStream) {
    let mut out = Vec::new();
    FrameEncoder::new().hello(&mut out, Role::Client, 0, &[0; 16]);
    s.write_all(&out).unwrap();
    let mut buf = Vec::new();
    read_frame_blocking(s, &mut buf, DEFAULT_MAX_FRAME).unwrap();
    assert_eq!(parse_frame(&buf).unwrap().body_as_hello_reply().unwrap().status(), Status::Ok);
}

/// Reads one response; returns its status and message.
fn response(s: &mut TcpStream) -> (Status, String) {
    let mut buf = Vec::new();
    read_frame_blocking(s, &mut buf, DEFAULT_MAX_FRAME).unwrap();
    let r = parse_frame(&buf).unwrap().body_as_response().unwrap();
    (r.status(), r.message().unwrap_or_default().to_owned())
}

/// True once the peer has closed the connection.
fn closed(s: &mut TcpStream) -> bool {
    let mut b = [0u8; 256];
    loop {
        match s.read(&mut b) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(_) => return false,
        }
    }
}

/// A healthy client on another connection still gets answers.
fn still_serving(store: &str) {
    let mut s = connect(store);
    hello(&mut s);
    let mut out = Vec::new();
    FrameEncoder::new().get(&mut out, 9, "ks", vasto_hash::shard_of(b"probe", 2), b"probe");
    s.write_all(&out).unwrap();
    assert_eq!(response(&mut s).0, Status::NotFound);
}

#[test]
fn malformed_frames_get_errors_and_the_store_keeps_serving() {
    let cluster = Cluster::start(1);
    cluster.create_keyspace("ks", 2, 1);
    let store = cluster.store_addrs[0].as_str();

    // Garbage instead of a hello: the store answers and closes.
    let mut s = connect(store);
    s.write_all(b"\x05\x00\x00\x00GARBAGE and more garbage").unwrap();
    assert!(closed(&mut s));
    still_serving(store);

    // A hello with another protocol version is refused with a clear message.
    let mut s = connect(store);
    let mut fbb = vasto_schema::flatbuffers::FlatBufferBuilder::new();
    let h = vasto_wire::fb::Hello::create(&mut fbb, &vasto_wire::fb::HelloArgs { protocol_version: 99, role: Role::Client, cluster_id: 0, nonce: None });
    let f = vasto_wire::fb::Frame::create(&mut fbb, &vasto_wire::fb::FrameArgs { id: 0, body_type: vasto_wire::Body::Hello, body: Some(h.as_union_value()) });
    fbb.finish(f, None);
    let mut out = (fbb.finished_data().len() as u32).to_le_bytes().to_vec();
    out.extend_from_slice(fbb.finished_data());
    s.write_all(&out).unwrap();
    let mut buf = Vec::new();
    read_frame_blocking(&mut s, &mut buf, DEFAULT_MAX_FRAME).unwrap();
    let reply = parse_frame(&buf).unwrap().body_as_hello_reply().unwrap();
    assert_eq!(reply.status(), Status::VersionMismatch);
    assert!(reply.message().unwrap().contains("protocol version 99"));

    // An unverifiable FlatBuffer after the hello: BadRequest, and the connection stays usable.
    let mut s = connect(store);
    hello(&mut s);
    let junk = [0xffu8; 32];
    s.write_all(&(junk.len() as u32).to_le_bytes()).unwrap();
    s.write_all(&junk).unwrap();
    let (status, message) = response(&mut s);
    assert_eq!(status, Status::BadRequest);
    assert!(message.contains("malformed"), "{message}");
    let mut out = Vec::new();
    FrameEncoder::new().get(&mut out, 3, "ks", vasto_hash::shard_of(b"a", 2), b"a");
    s.write_all(&out).unwrap();
    assert_eq!(response(&mut s).0, Status::NotFound);

    // A frame over the size limit: TooLarge, then the connection is closed.
    let mut s = connect(store);
    hello(&mut s);
    s.write_all(&(200u32 << 20).to_le_bytes()).unwrap();
    let (status, message) = response(&mut s);
    assert_eq!(status, Status::TooLarge);
    assert!(message.contains("exceeds the limit"), "{message}");
    assert!(closed(&mut s));

    // A truncated frame followed by a hang-up must not disturb anything.
    let mut s = connect(store);
    hello(&mut s);
    let mut out = Vec::new();
    FrameEncoder::new().put(&mut out, 4, "ks", 0, b"k", b"v", 1, 0);
    s.write_all(&out[..out.len() / 2]).unwrap();
    drop(s);

    // Unknown keyspace and an empty key, sent directly to the store.
    let mut s = connect(store);
    hello(&mut s);
    let mut out = Vec::new();
    let mut enc = FrameEncoder::new();
    enc.get(&mut out, 1, "nope", 0, b"k");
    enc.put(&mut out, 2, "ks", 0, b"", b"v", 1, 0);
    s.write_all(&out).unwrap();
    assert_eq!(response(&mut s).0, Status::UnknownKeyspace);
    let (status, message) = response(&mut s);
    assert_eq!((status, message.as_str()), (Status::BadRequest, "empty key"));

    still_serving(store);
    assert!(matches!(read_frame_blocking(&mut &[][..], &mut Vec::new(), 1), Err(WireError::Closed)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_errors_are_clear() {
    let cluster = Cluster::start(2);
    cluster.create_keyspace("ks", 2, 1);
    let client = Client::connect(&cluster.master_addr).await.unwrap();
    match client.keyspace("missing").await {
        Err(ClientError::UnknownKeyspace(name)) => assert_eq!(name, "missing"),
        other => panic!("expected UnknownKeyspace, got {:?}", other.map(|_| ())),
    }
    let ks = client.keyspace("ks").await.unwrap();
    match ks.put(b"", b"v").await {
        Err(ClientError::Server { status: Status::BadRequest, message }) => assert_eq!(message, "empty key"),
        other => panic!("expected BadRequest, got {other:?}"),
    }
    let too_big = vec![0u8; vasto_node::MAX_VALUE_BYTES + 1];
    match ks.put(b"k", &too_big).await {
        Err(ClientError::Server { status: Status::TooLarge, .. }) => {}
        other => panic!("expected TooLarge, got {other:?}"),
    }
    assert!(Client::connect("127.0.0.1:1").await.is_err(), "no master there");

    // A writer whose clock runs ahead by more than a minute is refused (it would win over every
    // later write); a few seconds ahead is fine.
    let now = vasto_client::now_ns();
    let ahead = PutOptions { event_time_ns: Some(now + 600_000_000_000), ..Default::default() };
    match ks.put_with(b"future", b"v", ahead).await {
        Err(ClientError::Server { status: Status::BadRequest, message }) => assert!(message.contains("ahead of this store's clock"), "{message}"),
        other => panic!("expected BadRequest, got {other:?}"),
    }
    match ks.delete_at(b"future", now + 600_000_000_000).await {
        Err(ClientError::Server { status: Status::BadRequest, .. }) => {}
        other => panic!("expected BadRequest for the delete, got {other:?}"),
    }
    assert_eq!(ks.get(b"future").await.unwrap(), None, "nothing was written");
    ks.put_with(b"future", b"soon", PutOptions { event_time_ns: Some(now + 5_000_000_000), ..Default::default() }).await.unwrap();
    assert_eq!(ks.get(b"future").await.unwrap().as_deref(), Some(&b"soon"[..]));

    // More replicas than stores: refused with the reason.
    let out = cluster.vasto(&["admin", "--master", &cluster.master_addr, "create-keyspace", "wide", "--shards", "2", "--replicas", "3"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("needs 3 distinct stores but only 2 are alive"), "{err}");
}
