use super::*;
use proptest::prelude::*;

fn body(out: &[u8]) -> &[u8] {
    let n = frame_len(out, DEFAULT_MAX_FRAME).expect("valid prefix").expect("whole frame");
    assert_eq!(n, out.len());
    &out[LEN_PREFIX..]
}

proptest! {
    #[test]
    fn put_round_trips(id in any::<u64>(), ks in "[a-z]{0,12}", shard in any::<u32>(),
                       key in proptest::collection::vec(any::<u8>(), 0..64),
                       value in proptest::collection::vec(any::<u8>(), 0..512),
                       t in any::<u64>(), ttl in any::<u64>()) {
        let mut enc = FrameEncoder::new();
        let mut out = Vec::new();
        enc.put(&mut out, id, &ks, shard, &key, &value, t, ttl);
        let frame = parse_frame(body(&out)).unwrap();
        prop_assert_eq!(frame.id(), id);
        let put = frame.body_as_put().unwrap();
        prop_assert_eq!(put.keyspace().unwrap(), ks.as_str());
        prop_assert_eq!(put.shard(), shard);
        prop_assert_eq!(put.key().unwrap(), &key[..]);
        prop_assert_eq!(put.value().unwrap(), &value[..]);
        prop_assert_eq!(put.event_time_ns(), t);
        prop_assert_eq!(put.ttl_ns(), ttl);
    }

    #[test]
    fn scan_page_round_trips(entries in proptest::collection::vec((proptest::collection::vec(any::<u8>(), 0..16), proptest::collection::vec(any::<u8>(), 0..32)), 0..20), more in any::<bool>()) {
        let mut enc = FrameEncoder::new();
        let mut out = Vec::new();
        enc.scan_page(&mut out, 7, entries.iter().map(|(k, v)| (k, v)), more);
        let frame = parse_frame(body(&out)).unwrap();
        let resp = frame.body_as_response().unwrap();
        prop_assert_eq!(resp.more(), more);
        let got: Vec<(Vec<u8>, Vec<u8>)> = resp.entries().unwrap().iter()
            .map(|kv| (kv.key().unwrap().to_vec(), kv.value().unwrap().to_vec())).collect();
        prop_assert_eq!(got, entries);
    }

    #[test]
    fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = parse_frame(&bytes);
        let _ = frame_len(&bytes, 1024);
    }
}

#[test]
fn several_frames_share_one_buffer() {
    let mut enc = FrameEncoder::new();
    let mut out = Vec::new();
    enc.get(&mut out, 1, "ks", 0, b"a");
    enc.value(&mut out, 2, b"");
    let first = frame_len(&out, DEFAULT_MAX_FRAME).unwrap().unwrap();
    let second = frame_len(&out[first..], DEFAULT_MAX_FRAME).unwrap().unwrap();
    assert_eq!(first + second, out.len());
    let resp = parse_frame(&out[first + LEN_PREFIX..]).unwrap().body_as_response().unwrap();
    assert_eq!(resp.status(), Status::Ok);
    assert_eq!(resp.value().unwrap(), b"", "an empty value must round-trip as present and empty");
}

#[test]
fn oversize_and_empty_prefixes_are_refused() {
    let mut buf = (100u32).to_le_bytes().to_vec();
    assert!(matches!(frame_len(&buf, 99), Err(WireError::TooLarge { len: 100, max: 99 })));
    assert!(matches!(frame_len(&buf, 100), Ok(None)));
    buf.resize(104, 0);
    assert!(matches!(frame_len(&buf, 100), Ok(Some(104))));
    assert!(matches!(frame_len(&0u32.to_le_bytes(), 100), Err(WireError::Empty)));
    assert!(matches!(frame_len(&[1, 0], 100), Ok(None)));
}

#[test]
fn routing_table_round_trips() {
    let table = RoutingTable {
        keyspace: "ks".into(),
        exists: true,
        version: 9,
        shards: 2,
        resizing_to: 0,
        replicas: 1,
        routes: vec![
            vec![ReplicaRoute { store_id: "s1".into(), address: "127.0.0.1:1".into(), up: true, catching_up: false }],
            vec![ReplicaRoute { store_id: "s2".into(), address: "127.0.0.1:2".into(), up: false, catching_up: true }],
        ],
    };
    let mut out = Vec::new();
    FrameEncoder::new().routing_table(&mut out, &table);
    let frame = parse_frame(body(&out)).unwrap();
    assert_eq!(RoutingTable::from_fb(frame.body_as_routing_table().unwrap()), table);
}

#[test]
fn blocking_reader_reports_truncation() {
    let mut out = Vec::new();
    FrameEncoder::new().heartbeat(&mut out, "s1", &[], crate::DiskReport::default());
    let mut buf = Vec::new();
    let mut whole = &out[..];
    read_frame_blocking(&mut whole, &mut buf, DEFAULT_MAX_FRAME).unwrap();
    assert!(parse_frame(&buf).unwrap().body_as_heartbeat().is_some());
    let mut cut = &out[..out.len() - 1];
    assert!(matches!(read_frame_blocking(&mut cut, &mut buf, DEFAULT_MAX_FRAME), Err(WireError::Truncated)));
    let mut nothing: &[u8] = &[];
    assert!(matches!(read_frame_blocking(&mut nothing, &mut buf, DEFAULT_MAX_FRAME), Err(WireError::Closed)));
}

#[test]
fn a_declared_frame_is_buffered_only_as_its_bytes_arrive() {
    // 64 MiB declared, 10 bytes sent: the reader reports truncation having grown its buffer
    // only to the first step, not to the declared size.
    let mut stream = (64u32 << 20).to_le_bytes().to_vec();
    stream.extend_from_slice(&[1; 10]);
    let mut buf = Vec::new();
    assert!(matches!(read_frame_blocking(&mut &stream[..], &mut buf, DEFAULT_MAX_FRAME), Err(WireError::Truncated)));
    assert!(buf.capacity() < 1 << 20, "grew to {} bytes", buf.capacity());
    // A whole large frame still arrives intact.
    let mut out = Vec::new();
    let value = vec![7u8; 3 << 20];
    FrameEncoder::new().put(&mut out, 1, "ks", 0, b"k", &value, 1, 0);
    read_frame_blocking(&mut &out[..], &mut buf, DEFAULT_MAX_FRAME).expect("frame");
    assert_eq!(parse_frame(&buf).expect("parse").body_as_put().expect("put").value(), Some(&value[..]));
}

#[test]
fn shard_reports_and_commands_are_bounded() {
    let ok = ShardInfo { keyspace: "ks".into(), shard: 3, shards: 2, committed: 4, replica: 1, replicas: 2, ..Default::default() };
    assert!(ok.check_counts().is_ok(), "a retiring shard of a shrink: beyond the serving count, within the committed one");
    for bad in [
        ShardInfo { replicas: u32::MAX, ..ok.clone() },
        ShardInfo { replicas: MAX_REPLICAS + 1, ..ok.clone() },
        ShardInfo { replica: 2, ..ok.clone() },
        ShardInfo { shards: MAX_SHARDS + 1, ..ok.clone() },
        ShardInfo { committed: 0, ..ok.clone() },
        ShardInfo { shard: 4, ..ok.clone() },
        ShardInfo { shard: u32::MAX, ..ok.clone() },
    ] {
        assert!(bad.check_counts().is_err(), "{bad:?}");
    }
}
