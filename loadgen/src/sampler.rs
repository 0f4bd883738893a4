//! The requests of a load thread drawn one by one, outside a run: for benchmarks that drive
//! another system (the embedded floor of `benches/disk.sh`) with exactly loadgen's mix and keys.
use crate::distribution::{KeyChooser, Recency};
use crate::keys::SplitMix64;
use crate::workload::Op;
use crate::{Distribution, LoadgenError, Workload};

/// Draws what one load thread would send: the request kind and the key index, in the same
/// proportions and with the same key distribution as `vasto loadgen` (a thread's `latest`
/// cursor included).
#[derive(Debug)]
pub struct RequestSampler {
    workload: Workload,
    chooser: KeyChooser,
    recency: Recency,
    rng: SplitMix64,
}

/// One request a [`RequestSampler`] drew.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    /// A get of the key.
    Get,
    /// A put of the key.
    Put,
    /// A get of the key, then a put of it (YCSB F).
    ReadModifyWrite,
}

impl RequestSampler {
    /// The sampler of thread `thread` of `threads` over `0..keys`, seeded with `seed`
    /// (`distribution` `None`: the workload's default). Fails if `keys` is 0.
    pub fn new(workload: Workload, distribution: Option<Distribution>, keys: u64, thread: usize, threads: usize, seed: u64) -> Result<Self, LoadgenError> {
        if keys == 0 {
            return Err(LoadgenError::Config("keys must be greater than 0".into()));
        }
        let chooser = KeyChooser::new(distribution.unwrap_or(workload.default_distribution()), keys);
        Ok(Self { workload, chooser, recency: Recency::new(thread, threads, keys), rng: SplitMix64::new(seed) })
    }

    /// The next request and the index of its key (in `0..keys`).
    #[inline]
    pub fn next_request(&mut self) -> (Request, u64) {
        let (op, key) = draw(self.workload, &self.chooser, &mut self.rng, &self.recency);
        let request = match op {
            Op::Read => Request::Get,
            Op::Write => Request::Put,
            Op::ReadModifyWrite => Request::ReadModifyWrite,
        };
        (request, key)
    }
}

/// The next request of a loop: its kind from the workload, its key from the chooser (writes
/// advance the thread's `latest` cursor).
#[inline]
pub(crate) fn draw(workload: Workload, chooser: &KeyChooser, rng: &mut SplitMix64, recency: &Recency) -> (Op, u64) {
    let op = workload.op(rng.next_u64());
    let key = match op {
        Op::Write => chooser.write_key(rng, recency),
        Op::Read | Op::ReadModifyWrite => chooser.read_key(rng, recency),
    };
    (op, key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_the_workload_mix_over_the_key_space() {
        let mut s = RequestSampler::new(Workload::Ycsb(crate::Ycsb::F), None, 1000, 0, 1, 5).unwrap();
        let draws: Vec<(Request, u64)> = (0..20_000).map(|_| s.next_request()).collect();
        assert!(draws.iter().all(|&(_, k)| k < 1000));
        let rmw = draws.iter().filter(|(r, _)| *r == Request::ReadModifyWrite).count();
        assert!((9_000..11_000).contains(&rmw), "{rmw}");
        assert!(!draws.iter().any(|(r, _)| *r == Request::Put));
        assert!(RequestSampler::new(Workload::Get, None, 0, 0, 1, 1).is_err());
    }
}
