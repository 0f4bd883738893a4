//! Structure-aware fuzzing of the master: hostile registrations, re-registrations, heartbeats,
//! disconnects and creates applied to the state in any order (the routing tables and the status
//! are computed after each), and hostile frames through the opening and the command decoder.
//! Nothing may panic or grow without bound. `scripts/fuzz.sh` runs many more cases than CI.
use crate::command::Command;
use crate::state::{CreatePlan, State};
use proptest::collection::vec;
use proptest::prelude::*;
use std::time::Instant;
use vasto_wire::{hostile, parse_frame, Admission, ClusterToken, Doorman, FrameEncoder, ReplicaLag, ShardInfo, LEN_PREFIX};

#[derive(Debug, Clone)]
enum Event {
    Register(u8, Vec<ShardInfo>),
    Resync(u8, Vec<ShardInfo>),
    Heartbeat(u8, Vec<ReplicaLag>),
    Down(u8),
    Create(String, u32, u32),
}

fn event() -> impl Strategy<Value = Event> {
    prop_oneof![
        3 => (0u8..4, vec(hostile::shard_info(), 0..6)).prop_map(|(s, r)| Event::Register(s, r)),
        2 => (0u8..4, vec(hostile::shard_info(), 0..6)).prop_map(|(s, r)| Event::Resync(s, r)),
        2 => (0u8..4, vec(hostile::lag(), 0..6)).prop_map(|(s, l)| Event::Heartbeat(s, l)),
        1 => (0u8..4).prop_map(Event::Down),
        2 => (hostile::keyspace(), hostile::number(), hostile::number()).prop_map(|(k, s, r)| Event::Create(k, s, r)),
    ]
}

fn apply(st: &mut State, event: Event, now: u64) {
    let id = |s: u8| format!("store-{s}");
    let generation = |st: &State, s: u8| st.stores.get(&id(s)).map_or(0, |r| r.generation);
    match event {
        Event::Register(s, reports) => drop(st.register(&id(s), &format!("127.0.0.1:{s}"), &reports, now)),
        Event::Resync(s, reports) => drop(st.resync(&id(s), generation(st, s), &format!("127.0.0.1:{s}"), &reports, now)),
        Event::Heartbeat(s, lags) => drop(st.heartbeat(&id(s), generation(st, s), lags, now)),
        Event::Down(s) => drop(st.store_down(&id(s), generation(st, s), now)),
        Event::Create(name, shards, replicas) => {
            if let Ok(CreatePlan::New(placement)) = st.plan_create(&name, shards, replicas) {
                st.commit_create(&name, now, shards, replicas, placement, now);
            }
        }
    }
}

fn on_a_roomy_stack(f: fn()) {
    // The strategy trees are deep: build and run them on a roomy stack.
    let fuzz = std::thread::Builder::new().stack_size(64 << 20).spawn(f).expect("fuzz thread");
    if let Err(panic) = fuzz.join() {
        std::panic::resume_unwind(panic);
    }
}

#[test]
fn hostile_reports_in_any_order_never_crash_the_master_state() {
    on_a_roomy_stack(|| {
        let (mut runner, seed, cases) = hostile::runner(400);
        eprintln!("master state fuzz: seed {seed}, {cases} cases (re-run with VASTO_FUZZ_SEED={seed} VASTO_FUZZ_CASES={cases})");
        let started = Instant::now();
        let result = runner.run(&vec(event(), 1..16), |events| {
            let mut st = State::default();
            for (i, e) in events.into_iter().enumerate() {
                apply(&mut st, e, 1_000 + i as u64);
                let names: Vec<String> = st.keyspaces.keys().cloned().collect();
                for name in &names {
                    let table = st.table(name);
                    prop_assert!(table.routes.len() <= crate::MAX_SHARDS as usize, "{} rows", table.routes.len());
                }
                let _ = st.status(2_000);
            }
            Ok(())
        });
        let secs = started.elapsed().as_secs_f64();
        eprintln!("master state fuzz: {cases} cases in {secs:.1} s ({:.0} cases/s)", f64::from(cases) / secs.max(1e-9));
        if let Err(e) = result {
            panic!("seed {seed}: {e}");
        }
    });
}

#[test]
fn hostile_frames_never_crash_the_opening_or_the_command_decoder() {
    on_a_roomy_stack(|| {
        let (mut runner, seed, cases) = hostile::runner(2000);
        eprintln!("master frame fuzz: seed {seed}, {cases} cases (re-run with VASTO_FUZZ_SEED={seed} VASTO_FUZZ_CASES={cases})");
        let token = ClusterToken::from_bytes(b"fuzzing-token-0123456789").expect("token");
        let started = Instant::now();
        let result = runner.run(&(any::<bool>(), vec(hostile::frame_or_mutation(), 1..5)), |(secured, frames)| {
            let mut door = Doorman::new("master", secured.then(|| token.clone()));
            let (mut enc, mut out) = (FrameEncoder::new(), Vec::new());
            let mut role = None;
            for f in &frames {
                let body = f.get(LEN_PREFIX..).unwrap_or_default();
                match role {
                    None => match door.on_frame(body, 7, &mut enc, &mut out) {
                        Admission::Admitted(r) => role = Some(r),
                        Admission::Wait => {}
                        Admission::Refused(_) => break,
                    },
                    Some(r) => {
                        if let Ok(frame) = parse_frame(body) {
                            if let Some(command) = Command::of(&frame) {
                                let _ = (command.permitted(r), command.name());
                            }
                        }
                    }
                }
            }
            // Nobody gets in without the token on a secured master.
            prop_assert!(!secured || role.is_none(), "admitted without proving the token: {role:?}");
            Ok(())
        });
        let secs = started.elapsed().as_secs_f64();
        eprintln!("master frame fuzz: {cases} cases in {secs:.1} s ({:.0} cases/s)", f64::from(cases) / secs.max(1e-9));
        if let Err(e) = result {
            panic!("seed {seed}: {e}");
        }
    });
}
