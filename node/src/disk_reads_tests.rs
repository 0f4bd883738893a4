//! Deferred gets through the handler, the framing loop and real reader threads, on real RocksDB
//! files that are not in memory.
use crate::disk_reads::ReadPool;
use crate::handler::Handler;
use crate::metrics::Tally;
use crate::registry::Registry;
use crate::server::{process, After};
use crate::tests::responses;
use std::sync::Arc;
use vasto_engine::{Engine, EngineOptions};
use vasto_wire::{FrameEncoder, Status, DEFAULT_MAX_FRAME};

fn admitted(registry: Arc<Registry>) -> Handler {
    crate::tests::admitted(registry).deferring_reads(true)
}

/// Gets of data only in files are deferred, in order, up to the first request that is not a
/// get; a reader thread answers them in order; the put after them is handled only then, and the
/// get after the put sees it. Nothing is answered twice or out of order.
#[test]
fn gets_needing_files_are_deferred_in_order_and_later_requests_wait() {
    let dir = tempfile::tempdir().unwrap();
    {
        let reg = crate::tests::registry(dir.path());
        let replica = reg.get("ks", 0).unwrap();
        for (k, v) in [(&b"a"[..], &b"va"[..]), (b"b", b"vb")] {
            replica.shard.put(k, v, 10, 0).unwrap();
        }
        replica.shard.compact().unwrap();
    }
    // Reopened: the data is in files and nothing of them is cached.
    let reg = Arc::new(Registry::open(Engine::new(dir.path(), &EngineOptions::default()).unwrap(), false, 0).unwrap());
    let mut handler = admitted(Arc::clone(&reg));
    let mut input = Vec::new();
    let mut enc = FrameEncoder::new();
    enc.get(&mut input, 1, "ks", 0, b"a");
    enc.get(&mut input, 2, "ks", 0, b"b");
    let two_gets = input.len();
    enc.put(&mut input, 3, "ks", 0, b"a", b"v2", 20, 0);
    enc.get(&mut input, 4, "ks", 0, b"a");
    enc.get(&mut input, 5, "other", 0, b"a");

    let mut out = Vec::new();
    let (consumed, after) = process(&mut handler, &input, &mut out, DEFAULT_MAX_FRAME);
    assert!(matches!(after, After::Read));
    assert_eq!(consumed, two_gets, "the put waits for the deferred gets");
    assert!(out.is_empty(), "nothing answered ahead of the deferred gets");
    assert!(handler.reads.pending());

    let pool = ReadPool::start(2, 1).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let mut batch = std::mem::take(&mut handler.reads);
    let mut tally = Tally::default();
    assert!(rt.block_on(pool.run(&mut batch, &input, &mut out, &mut FrameEncoder::new(), &mut tally)));
    handler.reads = batch;
    assert!(!handler.reads.pending());
    assert_eq!(responses(&out), vec![(1, Status::Ok, Some(b"va".to_vec())), (2, Status::Ok, Some(b"vb".to_vec()))]);

    out.clear();
    let (rest, _) = process(&mut handler, &input[consumed..], &mut out, DEFAULT_MAX_FRAME);
    assert_eq!(consumed + rest, input.len());
    let got = responses(&out);
    assert_eq!(got, vec![(3, Status::Ok, None), (4, Status::Ok, Some(b"v2".to_vec())), (5, Status::UnknownKeyspace, None)]);
}

/// A refused get behind a deferred one waits (its refusal must not overtake the deferred
/// answer), and without a pool the deferred gets are answered on the calling thread.
#[test]
fn a_refused_get_waits_behind_a_deferred_one() {
    let dir = tempfile::tempdir().unwrap();
    {
        let reg = crate::tests::registry(dir.path());
        let replica = reg.get("ks", 0).unwrap();
        replica.shard.put(b"a", b"va", 10, 0).unwrap();
        replica.shard.compact().unwrap();
    }
    let reg = Arc::new(Registry::open(Engine::new(dir.path(), &EngineOptions::default()).unwrap(), false, 0).unwrap());
    let mut handler = admitted(reg);
    let mut input = Vec::new();
    let mut enc = FrameEncoder::new();
    enc.get(&mut input, 1, "ks", 0, b"a");
    let one = input.len();
    enc.get(&mut input, 2, "ks", 0, b"");
    let mut out = Vec::new();
    let (consumed, _) = process(&mut handler, &input, &mut out, DEFAULT_MAX_FRAME);
    assert_eq!((consumed, out.len()), (one, 0));
    let pool = ReadPool::start(0, 1).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let mut batch = std::mem::take(&mut handler.reads);
    assert!(rt.block_on(pool.run(&mut batch, &input, &mut out, &mut FrameEncoder::new(), &mut Tally::default())));
    handler.reads = batch;
    let (rest, _) = process(&mut handler, &input[consumed..], &mut out, DEFAULT_MAX_FRAME);
    assert_eq!(consumed + rest, input.len());
    let got: Vec<(u64, Status)> = responses(&out).into_iter().map(|(id, s, _)| (id, s)).collect();
    assert_eq!(got, vec![(1, Status::Ok), (2, Status::BadRequest)]);
}

/// The store reopened on `dir` with nothing in memory (and no value cache): every get of data
/// in files is deferred.
fn cold(dir: &std::path::Path) -> Arc<Registry> {
    Arc::new(Registry::open(Engine::new(dir, &EngineOptions { value_cache_bytes: 0, ..EngineOptions::default() }).unwrap(), false, 0).unwrap())
}

/// Deferred gets of large values stop at the output bound: the rest stay pending until the
/// connection has sent what the output holds, then come in order. The same with one reader
/// and with the batch split across several.
#[test]
fn deferred_answers_stop_at_the_output_bound() {
    let dir = tempfile::tempdir().unwrap();
    let big = vec![7u8; 5 << 20];
    {
        let reg = crate::tests::registry(dir.path());
        let replica = reg.get("ks", 0).unwrap();
        for k in [&b"a"[..], b"b", b"c"] {
            replica.shard.put(k, &big, 10, 0).unwrap();
        }
        replica.shard.compact().unwrap();
    }
    let mut input = Vec::new();
    let mut enc = FrameEncoder::new();
    for (id, k) in [(1, &b"a"[..]), (2, b"b"), (3, b"c")] {
        enc.get(&mut input, id, "ks", 0, k);
    }
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    for threads in [1, 4] {
        let mut handler = admitted(cold(dir.path()));
        let mut out = Vec::new();
        let (consumed, _) = process(&mut handler, &input, &mut out, DEFAULT_MAX_FRAME);
        assert_eq!((consumed, out.len()), (input.len(), 0));
        let pool = ReadPool::start(threads, 1).unwrap();
        let mut ids = Vec::new();
        let mut runs = 0;
        while handler.reads.pending() {
            let mut batch = std::mem::take(&mut handler.reads);
            assert!(rt.block_on(pool.run(&mut batch, &input, &mut out, &mut FrameEncoder::new(), &mut Tally::default())));
            handler.reads = batch;
            assert!(out.len() < crate::server::OUTPUT_BOUND + big.len() + 4096, "one answer past the bound at most: {}", out.len());
            ids.extend(responses(&out).into_iter().map(|(id, status, value)| (id, status, value.map(|v| v.len()))));
            out.clear();
            runs += 1;
        }
        assert_eq!(runs, 2, "{threads} readers: the bound split the answers");
        assert_eq!(ids, vec![(1, Status::Ok, Some(big.len())), (2, Status::Ok, Some(big.len())), (3, Status::Ok, Some(big.len()))], "{threads} readers");
    }
}

/// A full batch of gets, found and not found, split across readers that answer at their own
/// pace, comes back in request order with each key's own answer, round after round on the
/// same pool.
#[test]
fn a_batch_split_across_readers_is_answered_in_request_order() {
    let dir = tempfile::tempdir().unwrap();
    let value = |i: usize| format!("value-{i}-").repeat(1 + i % 7).into_bytes();
    {
        let reg = crate::tests::registry(dir.path());
        let replica = reg.get("ks", 0).unwrap();
        for i in 0..200 {
            replica.shard.put(format!("k{i:03}").as_bytes(), &value(i), 10, 0).unwrap();
        }
        replica.shard.compact().unwrap();
    }
    let pool = ReadPool::start(5, 1).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    for round in 0..3 {
        // Reopened each round, so that nothing the last round read is cached.
        let mut handler = admitted(cold(dir.path()));
        // 64 gets (a full batch): keys in a scrambled order, every fifth one absent.
        let mut input = Vec::new();
        let mut expected = Vec::new();
        let mut enc = FrameEncoder::new();
        for n in 0..crate::disk_reads::MAX_DEFERRED {
            let i = (n * 37 + round * 11) % 200;
            let id = (round * 1000 + n) as u64;
            if n % 5 == 4 {
                enc.get(&mut input, id, "ks", 0, format!("absent{i}").as_bytes());
                expected.push((id, Status::NotFound, None));
            } else {
                enc.get(&mut input, id, "ks", 0, format!("k{i:03}").as_bytes());
                expected.push((id, Status::Ok, Some(value(i))));
            }
        }
        let mut out = Vec::new();
        let (consumed, _) = process(&mut handler, &input, &mut out, DEFAULT_MAX_FRAME);
        assert_eq!((consumed, out.len()), (input.len(), 0), "round {round}: every get deferred");
        let mut batch = std::mem::take(&mut handler.reads);
        let mut tally = Tally::default();
        assert!(rt.block_on(pool.run(&mut batch, &input, &mut out, &mut FrameEncoder::new(), &mut tally)));
        handler.reads = batch;
        assert!(!handler.reads.pending(), "round {round}: all answered in one run");
        assert_eq!(responses(&out), expected, "round {round}");
    }
}
