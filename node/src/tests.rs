//! Handler and framing tests without sockets: frames in, frames out, real RocksDB underneath.
use crate::handler::{Handler, Next};
use crate::registry::Registry;
use crate::server::{process, After};
use std::sync::Arc;
use vasto_engine::{Engine, EngineOptions};
use vasto_wire::{frame_len, parse_frame, FrameEncoder, Role, ShardInfo, Status, DEFAULT_MAX_FRAME, LEN_PREFIX};

pub(crate) fn registry(dir: &std::path::Path) -> Arc<Registry> {
    let reg = Registry::open(Engine::new(dir, &EngineOptions::default()).unwrap(), false, 0).unwrap();
    reg.create(&ShardInfo { keyspace: "ks".into(), shard: 0, shards: 1, replica: 0, replicas: 1, committed: 1, committed_at_ms: 1, ..Default::default() })
        .unwrap();
    Arc::new(reg)
}

/// Splits an output buffer into (id, status, value) per response frame.
pub(crate) fn responses(mut out: &[u8]) -> Vec<(u64, Status, Option<Vec<u8>>)> {
    let mut all = Vec::new();
    while let Some(n) = frame_len(out, DEFAULT_MAX_FRAME).unwrap() {
        let f = parse_frame(&out[LEN_PREFIX..n]).unwrap();
        let r = f.body_as_response().unwrap();
        all.push((f.id(), r.status(), r.value().map(<[u8]>::to_vec)));
        out = &out[n..];
    }
    all
}

/// A handler of an open store (no token) for a peer on loopback.
fn handler(registry: Arc<Registry>) -> Handler {
    Handler::new(registry, None, std::net::SocketAddr::from(([127, 0, 0, 1], 1)), 60_000_000_000)
}

/// A handler that has admitted a client (its hello answered), for request-by-request tests.
pub(crate) fn admitted(registry: Arc<Registry>) -> Handler {
    let mut h = handler(registry);
    let hello = hello_frame();
    assert!(matches!(h.admit(&hello[LEN_PREFIX..], &mut Vec::new()), Next::Continue) && h.admitted());
    h
}

fn hello_frame() -> Vec<u8> {
    let mut out = Vec::new();
    FrameEncoder::new().hello(&mut out, Role::Client, 0, &[0; 16]);
    out
}

#[test]
fn pipelined_frames_split_anywhere_are_answered_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let mut handler = handler(registry(dir.path()));
    let mut stream = hello_frame();
    let mut enc = FrameEncoder::new();
    enc.put(&mut stream, 1, "ks", 0, b"k", b"v", 10, 0);
    enc.get(&mut stream, 2, "ks", 0, b"k");
    enc.get(&mut stream, 3, "ks", 0, b"missing");
    enc.put(&mut stream, 4, "ks", 0, b"big", &vec![1u8; 200_000], 10, 0);
    enc.get(&mut stream, 5, "other", 0, b"k");
    // Feed the byte stream in uneven chunks, as reads would deliver it.
    for chunk in [1usize, 3, 7, 64, 4096] {
        let mut handler_out = Vec::new();
        let mut pending: Vec<u8> = Vec::new();
        for piece in stream.chunks(chunk) {
            pending.extend_from_slice(piece);
            let (consumed, after) = process(&mut handler, &pending, &mut handler_out, DEFAULT_MAX_FRAME);
            assert!(matches!(after, After::Read));
            pending.drain(..consumed);
        }
        assert!(pending.is_empty());
        let hello_len = frame_len(&handler_out, DEFAULT_MAX_FRAME).unwrap().unwrap();
        let got = responses(&handler_out[hello_len..]);
        let statuses: Vec<(u64, Status)> = got.iter().map(|(id, s, _)| (*id, *s)).collect();
        assert_eq!(statuses, vec![(1, Status::Ok), (2, Status::Ok), (3, Status::NotFound), (4, Status::Ok), (5, Status::UnknownKeyspace)], "chunk {chunk}");
        assert_eq!(got[1].2.as_deref(), Some(&b"v"[..]));
    }
}

#[test]
fn pipelined_writes_are_committed_in_groups_and_answered_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let reg = registry(dir.path());
    for shard in 0..2 {
        reg.create(&ShardInfo { keyspace: "two".into(), shard, shards: 2, replica: 0, replicas: 1, committed: 2, committed_at_ms: 1, ..Default::default() })
            .unwrap();
    }
    let mut handler = handler(Arc::clone(&reg));
    let key = |i: u64| format!("key-{i}").into_bytes();
    let shard_of = |k: &[u8]| vasto_hash::shard_of(k, 2);
    let mut enc = FrameEncoder::new();
    let mut stream = hello_frame();
    let mut expected = Vec::new();
    // More writes than one group holds, over both shards, with a refused one in the middle
    // and a delete; then reads of some of them.
    let n = crate::group::MAX_GROUP as u64 + 50;
    for i in 0..n {
        let k = key(i);
        if i == 100 {
            enc.put(&mut stream, i + 1, "two", 1 - shard_of(&k), &k, b"misrouted", 5, 0);
            expected.push((i + 1, Status::WrongShard));
        } else {
            enc.put(&mut stream, i + 1, "two", shard_of(&k), &k, format!("v{i}").as_bytes(), 5, 0);
            expected.push((i + 1, Status::Ok));
        }
    }
    let k7 = key(7);
    enc.delete(&mut stream, 1000, "two", shard_of(&k7), &k7, 6);
    expected.push((1000, Status::Ok));
    for (id, i) in [(1001, 7), (1002, 8), (1003, 100), (1004, n - 1)] {
        let k = key(i);
        enc.get(&mut stream, id, "two", shard_of(&k), &k);
        expected.push((id, if i == 7 || i == 100 { Status::NotFound } else { Status::Ok }));
    }
    let mut out = Vec::new();
    let (consumed, after) = process(&mut handler, &stream, &mut out, DEFAULT_MAX_FRAME);
    assert_eq!(consumed, stream.len());
    assert!(matches!(after, After::Read));
    let hello_len = frame_len(&out, DEFAULT_MAX_FRAME).unwrap().unwrap();
    let got = responses(&out[hello_len..]);
    assert_eq!(got.iter().map(|(id, s, _)| (*id, *s)).collect::<Vec<_>>(), expected, "one answer per request, in request order");
    assert_eq!(got[expected.len() - 3].2.as_deref(), Some(&b"v8"[..]), "a read sees the writes sent before it");
    assert_eq!(got[expected.len() - 1].2.as_deref(), Some(format!("v{}", n - 1).as_bytes()));
    for shard in 0..2 {
        let replica = reg.get("two", shard).unwrap();
        let held = (0..n).filter(|&i| i != 7 && i != 100 && shard_of(&key(i)) == shard).count();
        let mut found = 0;
        replica.shard.scan(b"key-", b"", 10_000, usize::MAX, |_, _| found += 1).unwrap();
        assert_eq!(found, held, "shard {shard} holds exactly its acknowledged writes");
    }
}

#[test]
fn oversize_frames_close_the_connection_with_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    let mut handler = handler(registry(dir.path()));
    let mut input = hello_frame();
    input.extend_from_slice(&1000u32.to_le_bytes());
    let mut out = Vec::new();
    let (consumed, after) = process(&mut handler, &input, &mut out, 999);
    assert!(matches!(after, After::Close));
    assert_eq!(consumed, input.len());
    let hello_len = frame_len(&out, DEFAULT_MAX_FRAME).unwrap().unwrap();
    assert_eq!(responses(&out[hello_len..])[0].1, Status::TooLarge);
}

#[test]
fn the_first_frame_must_be_a_hello() {
    let dir = tempfile::tempdir().unwrap();
    let mut handler = handler(registry(dir.path()));
    let mut out = Vec::new();
    let mut get = Vec::new();
    FrameEncoder::new().get(&mut get, 1, "ks", 0, b"k");
    assert!(matches!(handler.admit(&get[LEN_PREFIX..], &mut out), Next::Close));
    let reply = parse_frame(&out[LEN_PREFIX..]).unwrap().body_as_hello_reply().unwrap();
    assert_eq!(reply.status(), Status::BadRequest);
}

#[test]
fn batches_are_validated_before_anything_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let reg = registry(dir.path());
    reg.create(&ShardInfo { keyspace: "four".into(), shard: 0, shards: 4, replica: 0, replicas: 1, committed: 4, committed_at_ms: 1, ..Default::default() })
        .unwrap();
    let mut handler = admitted(Arc::clone(&reg));
    let mine = (0..).map(|i| format!("k{i}")).find(|k| vasto_hash::shard_of(k.as_bytes(), 4) == 0).unwrap();
    let other = (0..).map(|i| format!("k{i}")).find(|k| vasto_hash::shard_of(k.as_bytes(), 4) != 0).unwrap();
    let ops = [
        vasto_wire::BatchOpRef { kind: vasto_wire::OpKind::Put, key: mine.as_bytes(), value: b"v", event_time_ns: 1, ttl_ns: 0 },
        vasto_wire::BatchOpRef { kind: vasto_wire::OpKind::Put, key: other.as_bytes(), value: b"v", event_time_ns: 1, ttl_ns: 0 },
    ];
    let mut req = Vec::new();
    FrameEncoder::new().batch(&mut req, 7, "four", 0, &ops);
    let mut out = Vec::new();
    handler.request(&req[LEN_PREFIX..], &mut out);
    assert_eq!(responses(&out)[0].1, Status::WrongShard);
    let mut get = Vec::new();
    FrameEncoder::new().get(&mut get, 8, "four", 0, mine.as_bytes());
    out.clear();
    handler.request(&get[LEN_PREFIX..], &mut out);
    assert_eq!(responses(&out)[0].1, Status::NotFound, "nothing of a rejected batch is written");
    assert_eq!(reg.infos().len(), 2);
}

#[test]
fn re_creating_a_replica_updates_its_layout_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let reg = registry(dir.path());
    let held = reg.get("ks", 0).unwrap();
    held.set_frozen(true).unwrap();
    // Same replica, new shard count: the open handle takes the new layout, and is unfrozen.
    reg.create(&ShardInfo { keyspace: "ks".into(), shard: 0, shards: 3, replica: 0, replicas: 1, committed: 3, committed_at_ms: 1, ..Default::default() })
        .unwrap();
    assert_eq!(held.layout(), (0, 3));
    assert!(!held.frozen());
    assert_eq!(reg.infos()[0].shards, 3);
    assert!(
        reg.create(&ShardInfo { keyspace: "ks".into(), shard: 0, shards: 3, replica: 1, replicas: 2, committed: 3, committed_at_ms: 1, ..Default::default() })
            .is_err(),
        "another role is refused"
    );
    // Keys are checked against the layout.
    let mut handler = admitted(Arc::clone(&reg));
    let other = (0..).map(|i| format!("k{i}")).find(|k| vasto_hash::shard_of(k.as_bytes(), 3) != 0).unwrap();
    let mut req = Vec::new();
    FrameEncoder::new().put(&mut req, 1, "ks", 0, other.as_bytes(), b"v", 1, 0);
    let mut out = Vec::new();
    handler.request(&req[LEN_PREFIX..], &mut out);
    assert_eq!(responses(&out)[0].1, Status::WrongShard);
}

#[test]
fn a_frozen_replica_refuses_writes_but_serves_reads() {
    let dir = tempfile::tempdir().unwrap();
    let reg = registry(dir.path());
    let mut handler = admitted(Arc::clone(&reg));
    let mut enc = FrameEncoder::new();
    let mut req = Vec::new();
    enc.put(&mut req, 1, "ks", 0, b"k", b"v", 1, 0);
    let mut out = Vec::new();
    handler.request(&req[LEN_PREFIX..], &mut out);
    reg.get("ks", 0).unwrap().set_frozen(true).unwrap();
    let mut writes = Vec::new();
    enc.put(&mut writes, 2, "ks", 0, b"k", b"w", 2, 0);
    enc.delete(&mut writes, 3, "ks", 0, b"k", 3);
    enc.get(&mut writes, 4, "ks", 0, b"k");
    let mut first = 0;
    while let Some(n) = frame_len(&writes[first..], DEFAULT_MAX_FRAME).unwrap() {
        handler.request(&writes[first + LEN_PREFIX..first + n], &mut out);
        first += n;
    }
    let got: Vec<(u64, Status)> = responses(&out).iter().map(|(id, s, _)| (*id, *s)).collect();
    assert_eq!(got, vec![(1, Status::Ok), (2, Status::Unavailable), (3, Status::Unavailable), (4, Status::Ok)]);
    assert_eq!(responses(&out)[3].2.as_deref(), Some(&b"v"[..]));
}

#[test]
fn answers_are_sent_in_bounded_batches_whatever_the_requests_ask_for() {
    let dir = tempfile::tempdir().unwrap();
    let mut handler = admitted(registry(dir.path()));
    let mut enc = FrameEncoder::new();
    let mut put = Vec::new();
    enc.put(&mut put, 1, "ks", 0, b"big", &vec![9u8; 1 << 20], 10, 0);
    handler.request(&put[LEN_PREFIX..], &mut Vec::new());
    // 40 pipelined gets of a 1 MiB value: 40 MiB of answers from 2 KiB of requests.
    let mut input = Vec::new();
    for id in 0..40 {
        enc.get(&mut input, id, "ks", 0, b"big");
    }
    let (mut answered, mut rest, mut rounds) = (0, &input[..], 0);
    while !rest.is_empty() {
        let mut out = Vec::new();
        let (consumed, after) = process(&mut handler, rest, &mut out, DEFAULT_MAX_FRAME);
        assert!(matches!(after, After::Read));
        assert!(out.len() <= crate::server::OUTPUT_BOUND + (2 << 20), "one batch holds {} bytes", out.len());
        let got = responses(&out);
        for (i, (id, status, value)) in got.iter().enumerate() {
            assert_eq!((*id, *status), ((answered + i) as u64, Status::Ok), "answers in request order");
            assert_eq!(value.as_ref().map(Vec::len), Some(1 << 20));
        }
        answered += got.len();
        rest = &rest[consumed..];
        rounds += 1;
    }
    assert_eq!(answered, 40, "every request answered, in order");
    assert!(rounds >= 4, "the answers went out in bounded batches ({rounds})");
}

#[test]
fn pipelined_updates_are_grouped_yet_see_every_request_before_them() {
    use vasto_wire::{fb::UpdateKind, UpdateRequest};
    let dir = tempfile::tempdir().unwrap();
    let mut h = admitted(registry(dir.path()));
    let (mut input, mut enc) = (Vec::new(), FrameEncoder::new());
    let incr = |key: &'static [u8], delta, t| UpdateRequest { delta, ..UpdateRequest::new(UpdateKind::IncrInt, key, t) };
    enc.put(&mut input, 1, "ks", 0, b"a", b"x", 10, 0);
    enc.update(&mut input, 2, "ks", 0, &incr(b"c", 1, 11));
    enc.update(&mut input, 3, "ks", 0, &incr(b"c", 2, 12));
    enc.update(&mut input, 4, "ks", 0, &UpdateRequest { value: b" y", ..UpdateRequest::new(UpdateKind::Append, b"a", 13) });
    enc.update(&mut input, 5, "ks", 0, &incr(b"a", 1, 14));
    enc.update(&mut input, 6, "ks", 0, &incr(b"c", 3, 15));
    enc.get(&mut input, 7, "ks", 0, b"a");
    enc.update(&mut input, 8, "ks", 0, &UpdateRequest { value: b"new", return_old: true, ..UpdateRequest::new(UpdateKind::Set, b"c", 16) });
    enc.put(&mut input, 9, "ks", 0, b"c", b"last", 17, 0);
    enc.update(&mut input, 10, "ks", 0, &UpdateRequest { return_old: true, ..UpdateRequest::new(UpdateKind::Delete, b"c", 18) });
    let mut out = Vec::new();
    let (consumed, after) = process(&mut h, &input, &mut out, DEFAULT_MAX_FRAME);
    assert!(matches!(after, After::Read) && consumed == input.len());
    let mut answers = Vec::new();
    let mut rest = &out[..];
    while let Some(n) = frame_len(rest, DEFAULT_MAX_FRAME).unwrap() {
        let f = parse_frame(&rest[LEN_PREFIX..n]).unwrap();
        let r = f.body_as_response().unwrap();
        answers.push((f.id(), r.status(), r.number(), r.value().map(|v| String::from_utf8_lossy(v).into_owned())));
        rest = &rest[n..];
    }
    let s = |v: &str| Some(v.to_string());
    assert_eq!(
        answers,
        vec![
            (1, Status::Ok, 0, None),
            (2, Status::Ok, 1, None),
            (3, Status::Ok, 3, None),
            (4, Status::Ok, 3, None),
            (5, Status::Refused, 0, None),
            (6, Status::Ok, 6, None),
            (7, Status::Ok, 0, s("x y")),
            (8, Status::Ok, 0, s("6")),
            (9, Status::Ok, 0, None),
            (10, Status::Ok, 0, s("last")),
        ],
        "answers in request order, each update seeing the requests before it"
    );
}
