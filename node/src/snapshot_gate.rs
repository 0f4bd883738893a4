//! Full snapshots are rate-limited. Each one is an export of a whole replica (read everything,
//! write SST files, send them), so a follower that fails to ingest again and again, or many
//! followers at once, must not keep a store exporting:
//!
//! * one follower gets full snapshots of one replica in bursts of at most [`BURST`], then one
//!   per [`REFILL`] (a token bucket: a re-copy right after a snapshot is normal, one every
//!   250 ms forever is a follower stuck in a loop);
//! * at most [`MAX_AT_ONCE`] full snapshots are exported or sent by a store at once.
//!
//! A request over either limit is answered `Unavailable` with the reason, and the follower backs
//! off (`follower::Backoff`). Resize copies are not gated here: they share one export per
//! source replica (`split`).
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Full snapshots of one replica one follower may have in a row.
pub const BURST: u32 = 3;
/// One more snapshot is allowed after this long, up to [`BURST`].
pub const REFILL: Duration = Duration::from_secs(10);
/// Full snapshots a store exports or sends at once.
pub const MAX_AT_ONCE: usize = 4;

#[derive(Default)]
struct GateState {
    /// Snapshots admitted and not finished.
    running: usize,
    /// The bucket of each (replica, follower): snapshots it may have now, as of when.
    buckets: HashMap<(String, String), Bucket>,
}

/// Snapshots one follower may have of one replica: `tokens` as of `at`, one more per [`REFILL`].
#[derive(Clone, Copy)]
struct Bucket {
    tokens: u32,
    at: Instant,
}

impl Bucket {
    /// The bucket as of `now`, refilled for the time passed (whole refills only).
    fn refilled(self, now: Instant) -> Bucket {
        let refills = now.saturating_duration_since(self.at).as_nanos() / REFILL.as_nanos();
        if refills == 0 {
            return self;
        }
        let tokens = u32::try_from(refills).unwrap_or(u32::MAX).saturating_add(self.tokens).min(BURST);
        let at = if tokens == BURST { now } else { self.at + REFILL * u32::try_from(refills).unwrap_or(u32::MAX) };
        Bucket { tokens, at }
    }
}

/// The admission of full snapshots on one store (see the module docs).
#[derive(Clone, Default)]
pub struct SnapshotGate {
    state: Arc<Mutex<GateState>>,
}

/// One admitted snapshot; dropping it frees its place.
pub struct SnapshotPermit {
    state: Arc<Mutex<GateState>>,
}

impl Drop for SnapshotPermit {
    fn drop(&mut self) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        s.running = s.running.saturating_sub(1);
    }
}

impl SnapshotGate {
    /// Admits a full snapshot of `replica` for `follower` at `now`, or says why not.
    pub fn admit(&self, replica: &str, follower: &str, now: Instant) -> Result<SnapshotPermit, String> {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if s.running >= MAX_AT_ONCE {
            return Err(format!("this store is already sending {MAX_AT_ONCE} snapshots; try again later"));
        }
        let key = (replica.to_owned(), follower.to_owned());
        let full = Bucket { tokens: BURST, at: now };
        let bucket = s.buckets.get(&key).map_or(full, |b| b.refilled(now));
        if bucket.tokens == 0 {
            let wait = REFILL.saturating_sub(now.saturating_duration_since(bucket.at));
            return Err(format!(
                "{follower} had {BURST} snapshots of this replica within {} s; try again in {} ms",
                REFILL.as_secs() * u64::from(BURST),
                wait.as_millis()
            ));
        }
        // Forget full buckets, so the map stays as small as the followers still copying.
        s.buckets.retain(|_, b| b.refilled(now).tokens < BURST);
        s.buckets.insert(key, Bucket { tokens: bucket.tokens - 1, at: bucket.at });
        s.running += 1;
        Ok(SnapshotPermit { state: Arc::clone(&self.state) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_follower_gets_a_burst_of_snapshots_of_one_replica_then_one_per_refill() {
        let gate = SnapshotGate::default();
        let t0 = Instant::now();
        for _ in 0..BURST {
            drop(gate.admit("ks/0", "b", t0).unwrap());
        }
        let err = gate.admit("ks/0", "b", t0 + Duration::from_secs(1)).err().unwrap();
        assert!(err.contains("try again in 9000 ms"), "{err}");
        // Another follower, or another replica, is not held up.
        drop(gate.admit("ks/0", "c", t0 + Duration::from_secs(1)).unwrap());
        drop(gate.admit("ks/1", "b", t0 + Duration::from_secs(1)).unwrap());
        // One more per refill, and no more.
        drop(gate.admit("ks/0", "b", t0 + REFILL).unwrap());
        assert!(gate.admit("ks/0", "b", t0 + REFILL).is_err());
        // A long pause refills the whole burst, not more.
        let later = t0 + REFILL * 100;
        for _ in 0..BURST {
            drop(gate.admit("ks/0", "b", later).unwrap());
        }
        assert!(gate.admit("ks/0", "b", later).is_err());
    }

    #[test]
    fn at_most_a_few_snapshots_run_at_once_and_a_finished_one_frees_its_place() {
        let gate = SnapshotGate::default();
        let now = Instant::now();
        let mut held: Vec<SnapshotPermit> = (0..MAX_AT_ONCE).map(|i| gate.admit("ks/0", &format!("f{i}"), now).unwrap()).collect();
        let err = gate.admit("ks/0", "late", now).err().unwrap();
        assert!(err.contains("already sending"), "{err}");
        held.pop();
        assert!(gate.admit("ks/0", "late", now).is_ok());
    }
}
