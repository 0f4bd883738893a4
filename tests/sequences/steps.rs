//! The steps a sequence draws from, and how each is carried out on real processes. A step may
//! fail (an operation refused, rolled back, cancelled): only the invariants checked after it
//! must hold.
use crate::common::{run_bounded, vasto};
use crate::world::{World, NAME};
use rand::RngExt;
use std::io::Write;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// One step of a sequence.
#[derive(Debug, Clone)]
pub enum Step {
    /// Grow to this many shards.
    Grow(u32),
    /// Shrink to this many shards.
    Shrink(u32),
    /// Replace a live store holding replicas by one holding none.
    ReplaceLive { from: usize, to: usize },
    /// Kill a store holding replicas, replace it by one holding none, then restart it (its old
    /// replicas come back as strays to retire).
    ReplaceDead { from: usize, to: usize },
    /// kill -9 a store and restart it after a pause.
    BounceStore { store: usize, pause_ms: u64 },
    /// kill -9 the master and restart it after a pause.
    BounceMaster { pause_ms: u64 },
    /// Import this many new records with `vasto import`.
    Import { records: usize },
    /// Start a resize (or a replace) and cancel it after a pause.
    Cancel { op: Op, after_ms: u64 },
    /// Start an operation, kill -9 the master after a pause, restart it.
    KillMasterDuring { op: Op, after_ms: u64, pause_ms: u64 },
    /// Start an operation, kill -9 a store after a pause, restart it.
    KillStoreDuring { op: Op, store: usize, after_ms: u64, pause_ms: u64 },
}

/// An operation started in the background by a compound step.
#[derive(Debug, Clone)]
pub enum Op {
    Resize(u32),
    Replace { from: usize, to: usize },
}

impl Op {
    fn args(&self, world: &World) -> Vec<String> {
        match self {
            Op::Resize(n) => vec!["resize".into(), NAME.into(), "--shards".into(), n.to_string()],
            Op::Replace { from, to } => {
                let addrs = &world.cluster.store_addrs;
                vec!["replace-store".into(), NAME.into(), "--from".into(), addrs[*from].clone(), "--to".into(), addrs[*to].clone()]
            }
        }
    }
}

/// Draws a step that is possible in the cluster as it stands.
pub fn draw(world: &mut World) -> Step {
    let (shards, rows) = world.placement();
    let ids: Vec<Option<String>> = (0..world.cluster.stores.len()).map(|i| world.store_id(i)).collect();
    let holds = |i: usize| ids[i].as_ref().is_some_and(|id| rows.iter().flatten().any(|s| s == id));
    let holders: Vec<usize> = (0..ids.len()).filter(|&i| holds(i)).collect();
    let spares: Vec<usize> = (0..ids.len()).filter(|&i| !holds(i)).collect();
    let stores = world.cluster.stores.len();
    let rng = &mut world.rng;
    let pick = |rng: &mut rand_xorshift::XorShiftRng, v: &[usize]| v[rng.random_range(0..v.len())];
    let resize = |rng: &mut rand_xorshift::XorShiftRng| {
        let grow = shards <= 1 || (shards < 6 && rng.random_bool(0.5));
        if grow {
            shards + rng.random_range(1..=2u32.min(6 - shards))
        } else {
            shards - rng.random_range(1..=2u32.min(shards - 1))
        }
    };
    let op = |rng: &mut rand_xorshift::XorShiftRng| {
        if !spares.is_empty() && !holders.is_empty() && rng.random_bool(0.4) {
            Op::Replace { from: pick(rng, &holders), to: pick(rng, &spares) }
        } else {
            Op::Resize(resize(rng))
        }
    };
    loop {
        let step = match rng.random_range(0..10) {
            0 => {
                let n = resize(rng);
                if n > shards {
                    Step::Grow(n)
                } else {
                    Step::Shrink(n)
                }
            }
            1 if !spares.is_empty() && !holders.is_empty() => Step::ReplaceLive { from: pick(rng, &holders), to: pick(rng, &spares) },
            2 if !spares.is_empty() && !holders.is_empty() => Step::ReplaceDead { from: pick(rng, &holders), to: pick(rng, &spares) },
            3 => Step::BounceStore { store: rng.random_range(0..stores), pause_ms: rng.random_range(100..2500) },
            4 => Step::BounceMaster { pause_ms: rng.random_range(100..2500) },
            5 => Step::Import { records: rng.random_range(100..600) },
            6 => Step::Cancel { op: op(rng), after_ms: rng.random_range(0..2000) },
            7 => Step::KillMasterDuring { op: op(rng), after_ms: rng.random_range(0..4000), pause_ms: rng.random_range(100..2000) },
            8 => Step::KillStoreDuring {
                op: op(rng),
                store: rng.random_range(0..stores),
                after_ms: rng.random_range(0..4000),
                pause_ms: rng.random_range(100..2000),
            },
            9 => {
                let n = resize(rng);
                if n > shards {
                    Step::Grow(n)
                } else {
                    Step::Shrink(n)
                }
            }
            _ => continue,
        };
        return step;
    }
}

/// Carries out `step`; returns a line saying what happened.
pub async fn run(world: &mut World, step: &Step) -> String {
    match step.clone() {
        Step::Grow(n) | Step::Shrink(n) => outcome(&admin(world, Op::Resize(n).args(world)).await),
        Step::ReplaceLive { from, to } => outcome(&admin(world, Op::Replace { from, to }.args(world)).await),
        Step::ReplaceDead { from, to } => {
            let killed = Instant::now();
            world.cluster.kill_store(from);
            let id = world.store_id(from).unwrap_or_default();
            tokio::task::block_in_place(|| {
                crate::common::wait_for("the killed store to be down", Duration::from_secs(30), || {
                    let s = world.status();
                    s["stores"].as_array()?.iter().find(|st| st["id"] == id.as_str()).filter(|st| st["up"] == false).map(drop)
                })
            });
            let out = admin(world, Op::Replace { from, to }.args(world)).await;
            world.cluster.start_store(from);
            world.allow_failures_since(killed);
            outcome(&out)
        }
        Step::BounceStore { store, pause_ms } => {
            let killed = Instant::now();
            world.cluster.kill_store(store);
            tokio::time::sleep(Duration::from_millis(pause_ms)).await;
            world.cluster.start_store(store);
            world.allow_failures_since(killed);
            "bounced".into()
        }
        Step::BounceMaster { pause_ms } => {
            let killed = Instant::now();
            world.cluster.kill_master();
            tokio::time::sleep(Duration::from_millis(pause_ms)).await;
            tokio::task::block_in_place(|| world.cluster.start_master_and_wait());
            world.allow_failures_since(killed);
            "bounced".into()
        }
        Step::Import { records } => import(world, records).await,
        Step::Cancel { op, after_ms } => {
            let running = background(world, op.args(world));
            tokio::time::sleep(Duration::from_millis(after_ms)).await;
            let cancel = admin(world, vec!["cancel".into(), NAME.into()]).await;
            let out = running.await.expect("operation thread");
            format!("{}; cancel: {}", outcome(&out), outcome(&cancel))
        }
        Step::KillMasterDuring { op, after_ms, pause_ms } => {
            let running = background(world, op.args(world));
            tokio::time::sleep(Duration::from_millis(after_ms)).await;
            let killed = Instant::now();
            world.cluster.kill_master();
            let out = running.await.expect("operation thread");
            tokio::time::sleep(Duration::from_millis(pause_ms)).await;
            tokio::task::block_in_place(|| world.cluster.start_master_and_wait());
            world.allow_failures_since(killed);
            outcome(&out)
        }
        Step::KillStoreDuring { op, store, after_ms, pause_ms } => {
            let running = background(world, op.args(world));
            tokio::time::sleep(Duration::from_millis(after_ms)).await;
            let killed = Instant::now();
            world.cluster.kill_store(store);
            tokio::time::sleep(Duration::from_millis(pause_ms)).await;
            world.cluster.start_store(store);
            let out = running.await.expect("operation thread");
            world.allow_failures_since(killed);
            outcome(&out)
        }
    }
}

/// Runs `vasto admin ARGS` (bounded).
async fn admin(world: &World, args: Vec<String>) -> Output {
    background(world, args).await.expect("admin thread")
}

/// Starts `vasto admin ARGS` on a blocking thread (bounded to 5 minutes).
fn background(world: &World, args: Vec<String>) -> tokio::task::JoinHandle<Output> {
    let mut all = vec!["admin".to_owned(), "--master".to_owned(), world.cluster.master_addr.clone()];
    all.extend(args);
    tokio::task::spawn_blocking(move || run_bounded(Command::new(vasto()).args(&all), Duration::from_secs(300)))
}

fn outcome(out: &Output) -> String {
    if out.status.success() {
        format!("ok: {}", String::from_utf8_lossy(&out.stdout).trim())
    } else {
        format!("refused/failed: {}", String::from_utf8_lossy(&out.stderr).trim())
    }
}

/// Imports `records` new keys; on success they join what must read back.
async fn import(world: &mut World, records: usize) -> String {
    world.imports += 1;
    let tag = world.imports;
    let path = world.cluster.dir.path().join(format!("import-{tag}.tsv"));
    let pairs: Vec<(Vec<u8>, Vec<u8>)> = (0..records).map(|i| (format!("i{tag}:{i:06}").into_bytes(), format!("imported-{tag}-{i}").into_bytes())).collect();
    let mut file = std::io::BufWriter::new(std::fs::File::create(&path).expect("import file"));
    for (k, v) in &pairs {
        file.write_all(k)
            .and_then(|()| file.write_all(b"\t"))
            .and_then(|()| file.write_all(v))
            .and_then(|()| file.write_all(b"\n"))
            .expect("write import file");
    }
    drop(file);
    let master = world.cluster.master_addr.clone();
    let out = tokio::task::spawn_blocking(move || {
        run_bounded(Command::new(vasto()).args(["import", "--master", &master, "--keyspace", NAME, "--input"]).arg(&path), Duration::from_secs(300))
    })
    .await
    .expect("import thread");
    if out.status.success() {
        world.acknowledge(pairs);
    }
    outcome(&out)
}
