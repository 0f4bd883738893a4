//! Structure-aware fuzzing of the store's request path: valid frames of every message type with
//! hostile field values, and mutations of them, through the framing and the handler over a real
//! RocksDB, admitted as every role. Nothing may panic (the connection loop would answer
//! `Internal`, which is looked for) and every answer must be a valid frame.
//! `scripts/fuzz.sh` runs many more cases than CI.
use crate::handler::{Handler, Next};
use crate::server::process;
use crate::tests::registry;
use proptest::collection::vec;
use std::sync::Arc;
use std::time::Instant;
use vasto_wire::{frame_len, hostile, parse_frame, FrameEncoder, Role, ShardInfo, DEFAULT_MAX_FRAME, LEN_PREFIX};

#[test]
fn hostile_frames_never_crash_the_store_and_every_answer_is_a_valid_frame() {
    // The strategy tree of every message type is deep: build and run it on a roomy stack.
    let fuzz = std::thread::Builder::new().stack_size(64 << 20).spawn(fuzz_store).expect("fuzz thread");
    if let Err(panic) = fuzz.join() {
        std::panic::resume_unwind(panic);
    }
}

fn fuzz_store() {
    let dir = tempfile::tempdir().expect("temp dir");
    let reg = registry(dir.path());
    for shard in 0..4 {
        let info = ShardInfo { keyspace: "four".into(), shard, shards: 4, replica: 0, replicas: 1, committed: 4, committed_at_ms: 1, ..Default::default() };
        reg.create(&info).expect("shard of four");
    }
    let (mut runner, seed, cases) = hostile::runner(1500);
    eprintln!("store fuzz: seed {seed}, {cases} cases (re-run with VASTO_FUZZ_SEED={seed} VASTO_FUZZ_CASES={cases})");
    let started = Instant::now();
    let result = runner.run(&(0u8..4, vec(hostile::frame_or_mutation(), 1..6)), |(role, frames)| {
        let mut handler = Handler::new(Arc::clone(&reg), None, std::net::SocketAddr::from(([127, 0, 0, 1], 1)), 60_000_000_000);
        let mut hello = Vec::new();
        FrameEncoder::new().hello(&mut hello, Role(role), 0, &[0; 16]);
        assert!(matches!(handler.admit(&hello[LEN_PREFIX..], &mut Vec::new()), Next::Continue));
        let input: Vec<u8> = frames.concat();
        let mut out = Vec::new();
        let _ = process(&mut handler, &input, &mut out, DEFAULT_MAX_FRAME);
        let mut rest = &out[..];
        while let Some(n) = frame_len(rest, DEFAULT_MAX_FRAME).map_err(|e| proptest::test_runner::TestCaseError::fail(format!("unframed answer: {e}")))? {
            let frame = parse_frame(&rest[LEN_PREFIX..n]).map_err(|e| proptest::test_runner::TestCaseError::fail(format!("invalid answer: {e}")))?;
            if let Some(r) = frame.body_as_response() {
                let message = r.message().unwrap_or_default();
                proptest::prop_assert!(!message.contains("internal error while handling"), "the handler panicked");
            }
            rest = &rest[n..];
        }
        Ok(())
    });
    let secs = started.elapsed().as_secs_f64();
    eprintln!("store fuzz: {cases} cases in {secs:.1} s ({:.0} cases/s)", f64::from(cases) / secs.max(1e-9));
    if let Err(e) = result {
        panic!("seed {seed}: {e}");
    }
}
