//! Criterion benches of the hot code paths that need no I/O: frame encoding and verification
//! (`vasto-wire`) and key placement (`vasto-hash`).
//!
//! Run with `cargo bench --bench codec`; for a quick pass add
//! `-- --warm-up-time 1 --measurement-time 2`.
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::hint::black_box;
use vasto_wire::{parse_frame, FrameEncoder, LEN_PREFIX};

/// Keyspace name carried in every request frame.
const KEYSPACE: &str = "bench";
/// A 16-byte key.
const KEY: &[u8; 16] = b"user:0000000042!";
/// Event time written into puts (fixed so every frame is identical).
const EVENT_TIME_NS: u64 = 1_700_000_000_000_000_000;

/// A 100-byte value with varied bytes.
fn value() -> Vec<u8> {
    (0..100u8).map(|i| i.wrapping_mul(37).wrapping_add(11)).collect()
}

/// Encoding and verification of data frames.
fn wire(c: &mut Criterion) {
    let value = value();
    let mut group = c.benchmark_group("wire");

    // Encode a put with a warmed-up encoder into a reused buffer (the client's hot path).
    let mut enc = FrameEncoder::new();
    let mut out = Vec::with_capacity(4096);
    let mut id = 0u64;
    group.throughput(Throughput::Elements(1));
    group.bench_function("encode_put_16B_key_100B_value", |b| {
        b.iter(|| {
            out.clear();
            id = id.wrapping_add(1);
            enc.put(&mut out, id, KEYSPACE, 3, black_box(KEY), black_box(&value), EVENT_TIME_NS, 0);
            black_box(out.len())
        })
    });

    // Verify that frame and read its key and value (the store's hot path).
    out.clear();
    enc.put(&mut out, 7, KEYSPACE, 3, KEY, &value, EVENT_TIME_NS, 0);
    let put_frame = out.clone();
    let body = &put_frame[LEN_PREFIX..];
    group.bench_function("parse_put", |b| {
        b.iter(|| {
            let frame = parse_frame(black_box(body)).expect("the encoded put verifies");
            let put = frame.body_as_put().expect("the frame is a put");
            let (k, v) = (put.key().unwrap_or_default(), put.value().unwrap_or_default());
            black_box((k.len(), v.len(), put.event_time_ns()))
        })
    });

    // A get response with a 100-byte value: store encodes it, client verifies and reads it.
    group.bench_function("get_response_encode_parse_100B", |b| {
        b.iter(|| {
            out.clear();
            id = id.wrapping_add(1);
            enc.value(&mut out, id, black_box(&value));
            let frame = parse_frame(&out[LEN_PREFIX..]).expect("the encoded response verifies");
            let resp = frame.body_as_response().expect("the frame is a response");
            black_box((frame.id(), resp.status(), resp.value().map(<[u8]>::len)))
        })
    });
    group.finish();
}

/// Key placement: xxh3 + jump hash, and jump hash alone.
fn hash(c: &mut Criterion) {
    let mut group = c.benchmark_group("hash");
    group.throughput(Throughput::Elements(1));
    for shards in [6u32, 1024] {
        group.bench_function(format!("shard_of_16B_key/{shards}_shards"), |b| b.iter(|| vasto_hash::shard_of(black_box(KEY), black_box(shards))));
    }
    let key_hash = vasto_hash::key_hash(KEY);
    for shards in [6u32, 1024] {
        group.bench_function(format!("jump_consistent_hash/{shards}_buckets"), |b| {
            b.iter(|| vasto_hash::jump_consistent_hash(black_box(key_hash), black_box(shards)))
        });
    }
    group.finish();
}

criterion_group!(benches, wire, hash);
criterion_main!(benches);
