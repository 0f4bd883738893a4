//! Randomized sequences of topology operations on one keyspace, on real processes.
//!
//! Each sequence starts 5 stores and a master, creates a keyspace of 1-4 shards x 2 replicas,
//! and runs a writer, a reader and an incrementer of counters (through any replica) throughout. It then draws 8-15 steps from: grow, shrink,
//! replace a live store, replace a dead store (which then comes back), kill -9 and restart a
//! store, kill -9 and restart the master, import a file, cancel a running operation, and kill
//! the master or a store in the middle of an operation. After every step it waits for the
//! cluster to settle and checks that every request that failed did so while a process was down
//! (plus the failover slack), that every acknowledged write reads back through the client and
//! from every replica of its shard, that the replicas of each shard hold the same keys, and that
//! every counter shows on every replica at least its acknowledged increments and at most those
//! plus the increments of unknown outcome; at the end, that every replica directory on disk
//! holds only the keys its shard owns.
//!
//! Seeds are printed. `VASTO_SEQ_SEEDS=1,2,3` picks seeds (default: the fixed CI seeds),
//! `VASTO_SEQ_STEPS=N` the number of steps (default: 8-15 drawn from the seed). The soak script
//! (`scripts/soak.sh`) runs many random seeds.
#[path = "../common/mod.rs"]
mod common;
mod steps;
mod world;

use rand::{RngExt, SeedableRng};

/// The seeds CI runs.
const CI_SEEDS: [u64; 3] = [1, 2, 3];
/// Steps per CI sequence.
const CI_STEPS: usize = 8;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_operation_sequences_lose_nothing() {
    let seeds: Vec<u64> = match std::env::var("VASTO_SEQ_SEEDS") {
        Ok(list) => list.split(',').map(|s| s.trim().parse().unwrap_or_else(|_| panic!("VASTO_SEQ_SEEDS: {s:?} is not a number"))).collect(),
        Err(_) => CI_SEEDS.to_vec(),
    };
    let fixed_steps: Option<usize> = std::env::var("VASTO_SEQ_STEPS").ok().map(|s| s.parse().expect("VASTO_SEQ_STEPS must be a number"));
    let default_steps = if std::env::var("VASTO_SEQ_SEEDS").is_ok() { None } else { Some(CI_STEPS) };
    for seed in seeds {
        let steps = fixed_steps.or(default_steps).unwrap_or_else(|| rand_xorshift::XorShiftRng::seed_from_u64(seed ^ 0x57e9).random_range(8..=15));
        run_sequence(seed, steps).await;
    }
}

async fn run_sequence(seed: u64, count: usize) {
    eprintln!("=== sequence seed={seed} steps={count} (re-run it with VASTO_SEQ_SEEDS={seed} VASTO_SEQ_STEPS={count}) ===");
    let mut world = world::World::start(seed).await;
    let mut done = Vec::new();
    for i in 0..count {
        let step = steps::draw(&mut world);
        let started = std::time::Instant::now();
        let outcome = steps::run(&mut world, &step).await;
        eprintln!("seed {seed} step {i}: {step:?} -> {outcome} ({:.1} s)", started.elapsed().as_secs_f64());
        done.push(format!("{step:?}"));
        tokio::task::block_in_place(|| world.settle());
        world.check(&format!("{i} ({step:?}) of [{}]", done.join(", "))).await;
    }
    world.finish(count).await;
}
