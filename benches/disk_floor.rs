//! The floor `benches/disk.sh` compares a store with: the storage engine in-process (RocksDB,
//! no value cache, no network, no protocol) opened on the store's own data directory after the
//! store stopped, driven with exactly `vasto loadgen`'s request mix and key distribution
//! (`vasto_loadgen::RequestSampler`), so both read the same files under the same memory limit.
//!
//! Prints one JSON object per line: `{"system","workload","distribution","threads","ops_per_sec",
//! "p50_us","p99_us","p999_us","not_found"}`. Usage: `cargo bench --bench disk_floor -- --dir DIR
//! --keyspace KS --keys N --value-size B --workload W [--distribution D] [--threads T]
//! [--secs S] [--warmup S]`.
use hdrhistogram::Histogram;
use std::io::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use vasto_engine::{Engine, EngineOptions, Shard};
use vasto_loadgen::{Distribution, Request, RequestSampler, Workload};

struct Args {
    dir: std::path::PathBuf,
    keyspace: String,
    keys: u64,
    value_size: usize,
    workload: Workload,
    distribution: Option<Distribution>,
    threads: usize,
    secs: f64,
    warmup: f64,
}

fn args() -> Result<Args, String> {
    let mut a = Args {
        dir: std::path::PathBuf::new(),
        keyspace: "disk".into(),
        keys: 0,
        value_size: 1000,
        workload: Workload::Get,
        distribution: None,
        threads: 2,
        secs: 20.0,
        warmup: 5.0,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        let number = |v: String| v.parse::<f64>().map_err(|_| format!("bad number {v:?}"));
        match flag.as_str() {
            "--dir" => a.dir = value()?.into(),
            "--keyspace" => a.keyspace = value()?,
            "--keys" => a.keys = number(value()?)? as u64,
            "--value-size" => a.value_size = number(value()?)? as usize,
            "--workload" => a.workload = value()?.parse()?,
            "--distribution" => a.distribution = Some(value()?.parse()?),
            "--threads" => a.threads = (number(value()?)? as usize).max(1),
            "--secs" => a.secs = number(value()?)?,
            "--warmup" => a.warmup = number(value()?)?,
            // `cargo bench` passes `--bench`.
            _ => {}
        }
    }
    if a.dir.as_os_str().is_empty() || a.keys == 0 {
        return Err("--dir and --keys are required".into());
    }
    Ok(a)
}

/// The keyspace's shards, indexed by shard number.
fn open(a: &Args) -> Result<Vec<Shard>, String> {
    let engine = Engine::new(&a.dir, &EngineOptions { value_cache_bytes: 0, ..EngineOptions::default() }).map_err(|e| e.to_string())?;
    let mut shards: Vec<Shard> = engine.open_all(false).map_err(|e| e.to_string())?.into_iter().filter(|s| s.meta().keyspace == a.keyspace).collect();
    shards.sort_by_key(|s| s.meta().shard);
    let count = shards.first().map(|s| s.meta().shards).ok_or_else(|| format!("no shard of keyspace {} under {}", a.keyspace, a.dir.display()))?;
    if shards.len() != count as usize || shards.iter().enumerate().any(|(i, s)| s.meta().shard as usize != i) {
        return Err(format!("{} holds {} of the {count} shards of {}: the floor needs them all", a.dir.display(), shards.len(), a.keyspace));
    }
    Ok(shards)
}

/// Runs the mix on `threads` threads for `secs` seconds; returns ops, elapsed time, latencies
/// (ns) and gets that found nothing.
fn run(a: &Args, shards: &[Shard], secs: f64, seed: u64) -> (u64, Duration, Histogram<u64>, u64) {
    let stop = AtomicBool::new(false);
    let not_found = AtomicU64::new(0);
    let value = vec![b'v'; a.value_size];
    let started = Instant::now();
    let results: Vec<(u64, Histogram<u64>)> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..a.threads)
            .map(|t| {
                let (stop, not_found, value) = (&stop, &not_found, &value);
                s.spawn(move || {
                    let mut sampler =
                        RequestSampler::new(a.workload, a.distribution, a.keys, t, a.threads, seed ^ (t as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15))
                            .expect("keys > 0");
                    let mut hist = Histogram::<u64>::new(3).expect("valid precision");
                    let mut key = Vec::with_capacity(32);
                    let mut ops = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        let (request, index) = sampler.next_request();
                        key.clear();
                        // Into the reused buffer: no allocation per request.
                        let _ = write!(key, "key:{index:012}");
                        let shard = &shards[vasto_hash::shard_of(&key, shards.len() as u32) as usize];
                        let t0 = Instant::now();
                        let get = || shard.get(&key, |v| v.is_some()).expect("get");
                        let put = || shard.put(&key, value, vasto_engine::now_ns(), 0).expect("put");
                        let found = match request {
                            Request::Get => get(),
                            Request::Put => {
                                put();
                                true
                            }
                            Request::ReadModifyWrite => {
                                let found = get();
                                put();
                                found
                            }
                        };
                        let _ = hist.record(t0.elapsed().as_nanos() as u64);
                        if !found {
                            not_found.fetch_add(1, Ordering::Relaxed);
                        }
                        ops += 1;
                    }
                    (ops, hist)
                })
            })
            .collect();
        std::thread::sleep(Duration::from_secs_f64(secs));
        stop.store(true, Ordering::Relaxed);
        workers.into_iter().map(|w| w.join().expect("worker")).collect()
    });
    let elapsed = started.elapsed();
    let mut all = Histogram::<u64>::new(3).expect("valid precision");
    let mut ops = 0;
    for (n, h) in &results {
        ops += n;
        let _ = all.add(h);
    }
    (ops, elapsed, all, not_found.load(Ordering::Relaxed))
}

fn main() {
    let a = match args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("disk_floor: {e}");
            std::process::exit(2);
        }
    };
    let shards = match open(&a) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("disk_floor: {e}");
            std::process::exit(1);
        }
    };
    let seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64);
    if a.warmup > 0.0 {
        run(&a, &shards, a.warmup, seed);
    }
    let (ops, elapsed, hist, not_found) = run(&a, &shards, a.secs, seed.rotate_left(17));
    let us = |q: f64| hist.value_at_quantile(q) as f64 / 1000.0;
    println!(
        "{{\"system\":\"rocksdb-embedded\",\"workload\":\"{}\",\"distribution\":\"{}\",\"threads\":{},\"ops_per_sec\":{:.0},\"p50_us\":{:.1},\"p99_us\":{:.1},\"p999_us\":{:.1},\"not_found\":{not_found}}}",
        a.workload,
        a.distribution.unwrap_or(a.workload.default_distribution()),
        a.threads,
        ops as f64 / elapsed.as_secs_f64(),
        us(0.5),
        us(0.99),
        us(0.999)
    );
}
