//! The floors `benches/run.sh` compares the cluster with, measured in the same run:
//! * the storage engine in-process without its value cache (RocksDB, `rocksdb-embedded`): the
//!   same keys (`key:{i:012}`, as `vasto loadgen` names them) and values written to and read
//!   from two shards the way a store does (RocksDB merge with the stored-value header and the
//!   change log), with no network and no protocol;
//! * the same with the store's default value cache (`engine-cache-embedded`, gets only);
//! * a plain loopback TCP round trip of a request-sized message.
//!
//! Prints one JSON object per line. Usage:
//! `cargo bench --bench embedded -- [--keys N] [--value-size B] [--secs S] [--only tcp]`.
use hdrhistogram::Histogram;
use std::io::{Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use vasto_engine::{Engine, EngineOptions, Shard, ShardMeta, Write as BatchWrite};

struct Args {
    keys: u64,
    value_size: usize,
    secs: u64,
    /// Only the TCP round trip (`--only tcp`), for measuring it beside another run.
    tcp_only: bool,
}

fn args() -> Args {
    let mut a = Args { keys: 1_000_000, value_size: 100, secs: 10, tcp_only: false };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().and_then(|v| v.parse::<u64>().ok());
        match flag.as_str() {
            "--keys" => a.keys = value().unwrap_or(a.keys),
            "--value-size" => a.value_size = value().map_or(a.value_size, |v| v as usize),
            "--secs" => a.secs = value().unwrap_or(a.secs),
            "--only" => a.tcp_only = it.next().as_deref() == Some("tcp"),
            // `cargo bench` passes `--bench`; ignore anything else.
            _ => {}
        }
    }
    a
}

fn key(i: u64) -> Vec<u8> {
    format!("key:{i:012}").into_bytes()
}

/// xorshift64*: cheap, good enough to spread keys.
fn next(state: &mut u64) -> u64 {
    *state ^= *state >> 12;
    *state ^= *state << 25;
    *state ^= *state >> 27;
    state.wrapping_mul(0x2545_f491_4f6c_dd1d)
}

fn report(system: &str, op: &str, threads: usize, ops: u64, elapsed: Duration, hist: &Histogram<u64>) {
    println!(
        "{{\"system\":\"{system}\",\"op\":\"{op}\",\"threads\":{threads},\"ops_per_sec\":{:.0},\"p50_us\":{:.1},\"p99_us\":{:.1},\"p999_us\":{:.1}}}",
        ops as f64 / elapsed.as_secs_f64(),
        hist.value_at_quantile(0.5) as f64 / 1000.0,
        hist.value_at_quantile(0.99) as f64 / 1000.0,
        hist.value_at_quantile(0.999) as f64 / 1000.0
    );
}

/// Runs `op` back to back on `threads` threads for `secs`; latencies in nanoseconds.
fn run(threads: usize, secs: u64, op: impl Fn(&mut u64) + Sync) -> (u64, Duration, Histogram<u64>) {
    let stop = AtomicBool::new(false);
    let started = Instant::now();
    let hists: Vec<(u64, Histogram<u64>)> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|t| {
                let (op, stop) = (&op, &stop);
                s.spawn(move || {
                    let mut hist = Histogram::<u64>::new(3).expect("valid precision");
                    let (mut rng, mut ops) = (0x9e37_79b9_7f4a_7c15u64 ^ (t as u64 + 1), 0u64);
                    while !stop.load(Ordering::Relaxed) {
                        let t0 = Instant::now();
                        op(&mut rng);
                        let _ = hist.record(t0.elapsed().as_nanos() as u64);
                        ops += 1;
                    }
                    (ops, hist)
                })
            })
            .collect();
        std::thread::sleep(Duration::from_secs(secs));
        stop.store(true, Ordering::Relaxed);
        workers.into_iter().map(|w| w.join().expect("worker")).collect()
    });
    let elapsed = started.elapsed();
    let mut all = Histogram::<u64>::new(3).expect("valid precision");
    let mut ops = 0;
    for (n, h) in &hists {
        ops += n;
        let _ = all.add(h);
    }
    (ops, elapsed, all)
}

/// Loads every key into an engine with a value cache of `cache_bytes` (0 = none), then measures
/// the operations `ops` names, reported as `system`.
fn engine_floor(a: &Args, system: &str, cache_bytes: usize, ops: &[&str]) {
    let dir = tempfile::tempdir().expect("temp dir");
    let engine = Engine::new(dir.path(), &EngineOptions { value_cache_bytes: cache_bytes, ..EngineOptions::default() }).expect("engine");
    let shards: Vec<Shard> = (0..2)
        .map(|shard| {
            engine.create_shard(&ShardMeta { keyspace: "floor".into(), shard, shards: 2, replica: 0, replicas: 1, ..Default::default() }).expect("shard")
        })
        .collect();
    let shard_of = |k: &[u8]| &shards[vasto_hash::shard_of(k, 2) as usize];
    let value = vec![b'v'; a.value_size];
    // Load every key so gets hit, in batches.
    let now = vasto_engine::now_ns();
    for chunk in (0..a.keys).collect::<Vec<_>>().chunks(10_000) {
        let keys: Vec<Vec<u8>> = chunk.iter().map(|&i| key(i)).collect();
        for (s, shard) in shards.iter().enumerate() {
            let writes = keys.iter().filter(|k| vasto_hash::shard_of(k, 2) as usize == s).map(|k| BatchWrite::Put {
                key: k,
                value: &value,
                event_time_ns: now,
                ttl_ns: 0,
            });
            shard.write_batch(writes).expect("load");
        }
    }
    for threads in [1, 2] {
        if ops.contains(&"put") {
            let (n, elapsed, hist) = run(threads, a.secs, |rng| {
                let k = key(next(rng) % a.keys);
                shard_of(&k).put(&k, &value, vasto_engine::now_ns(), 0).expect("put");
            });
            report(system, "put", threads, n, elapsed, &hist);
        }
        if ops.contains(&"get") {
            let (n, elapsed, hist) = run(threads, a.secs, |rng| {
                let k = key(next(rng) % a.keys);
                let found = shard_of(&k).get(&k, |v| v.is_some()).expect("get");
                assert!(found, "every key was loaded");
            });
            report(system, "get", threads, n, elapsed, &hist);
        }
    }
}

/// Round trips of a 64-byte message to an echo thread over 127.0.0.1 (Nagle off).
fn tcp_floor(a: &Args) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    std::thread::spawn(move || {
        if let Ok((mut s, _)) = listener.accept() {
            let _ = s.set_nodelay(true);
            let mut buf = [0u8; 64];
            while s.read_exact(&mut buf).is_ok() && s.write_all(&buf).is_ok() {}
        }
    });
    let mut client = std::net::TcpStream::connect(addr).expect("connect");
    client.set_nodelay(true).expect("nodelay");
    let mut buf = [7u8; 64];
    let mut hist = Histogram::<u64>::new(3).expect("valid precision");
    let started = Instant::now();
    let mut ops = 0u64;
    while started.elapsed() < Duration::from_secs(a.secs.min(5)) {
        let t0 = Instant::now();
        client.write_all(&buf).expect("send");
        client.read_exact(&mut buf).expect("receive");
        let _ = hist.record(t0.elapsed().as_nanos() as u64);
        ops += 1;
    }
    report("tcp-loopback-echo", "round-trip", 1, ops, started.elapsed(), &hist);
}

fn main() {
    let a = args();
    tcp_floor(&a);
    if a.tcp_only {
        return;
    }
    engine_floor(&a, "rocksdb-embedded", 0, &["put", "get"]);
    engine_floor(&a, "engine-cache-embedded", EngineOptions::default().value_cache_bytes, &["get"]);
}
