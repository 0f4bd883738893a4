//! Which commands of a pipeline may run at once.
//!
//! The commands of one read run concurrently in *waves*; replies are still sent in request
//! order. A command joins the current wave unless one of its keys was touched by an earlier
//! command of the wave and either of the two reads it or reads and writes it
//! ([`Access::Read`] with [`Access::Write`], or [`Access::Modify`] with anything): then the wave
//! is finished first, so the later command sees the earlier one's effect. Reads of the same key
//! may share a wave, and so may plain overwrites ([`Access::Write`]): each write carries an
//! event time from the gateway clock, strictly increasing in pipeline order, so last-writer-wins
//! keeps the later one whichever the store applies last. Barriers and local commands are
//! handled by the connection, not here.
//!
//! Keys are tracked by a 64-bit hash; two keys with the same hash only split a wave that did
//! not need splitting, never the other way round. A wave also ends at [`MAX_WAVE_KEYS`] keys,
//! which bounds the requests in flight for one connection.
use crate::command::Access;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// Keys (summed over its commands) after which a wave is finished before another joins.
pub const MAX_WAVE_KEYS: usize = 1024;

const READ: u8 = 1;
const WRITE: u8 = 2;
const MODIFY: u8 = 4;

/// The keys the current wave touches and how.
#[derive(Default)]
pub struct WavePlan {
    touched: HashMap<u64, u8, BuildHasherDefault<Identity>>,
    keys: usize,
    commands: usize,
}

impl WavePlan {
    /// Whether a command with `access` on `keys` (`count` of them) can join the wave. An empty
    /// wave takes any command.
    pub fn admits<'k>(&self, access: Access, count: usize, keys: impl IntoIterator<Item = &'k [u8]>) -> bool {
        if self.commands == 0 {
            return true;
        }
        if self.keys + count > MAX_WAVE_KEYS {
            return false;
        }
        let allowed = match access {
            Access::Read => READ,
            Access::Write => WRITE,
            _ => 0,
        };
        keys.into_iter().all(|k| self.touched.get(&hash(k)).is_none_or(|&seen| allowed != 0 && seen & !allowed == 0))
    }

    /// Records a command that joined the wave.
    pub fn add<'k>(&mut self, access: Access, keys: impl IntoIterator<Item = &'k [u8]>) {
        let flag = match access {
            Access::Read => READ,
            Access::Write => WRITE,
            _ => MODIFY,
        };
        for k in keys {
            *self.touched.entry(hash(k)).or_insert(0) |= flag;
            self.keys += 1;
        }
        self.commands += 1;
    }

    /// Starts a new wave (keeps the allocation).
    pub fn clear(&mut self) {
        self.touched.clear();
        self.keys = 0;
        self.commands = 0;
    }
}

/// FNV-1a over the key, then a final mix so the hash map's low bits are spread.
fn hash(key: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in key {
        h = (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
    }
    (h ^ (h >> 33)).wrapping_mul(0xff51_afd7_ed55_8ccd)
}

/// The hash map's keys are hashes already.
#[derive(Default)]
struct Identity(u64);

impl Hasher for Identity {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8) | u64::from(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Access::*;

    /// Splits a pipeline of (access, keys) into waves the way the connection does.
    fn waves(cmds: &[(Access, &[&str])]) -> Vec<Vec<usize>> {
        let mut plan = WavePlan::default();
        let mut out: Vec<Vec<usize>> = vec![Vec::new()];
        for (i, (access, keys)) in cmds.iter().enumerate() {
            let keys = || keys.iter().map(|k| k.as_bytes());
            if !plan.admits(*access, keys().len(), keys()) {
                plan.clear();
                out.push(Vec::new());
            }
            plan.add(*access, keys());
            out.last_mut().expect("a wave").push(i);
        }
        out
    }

    #[test]
    fn reads_share_writes_share_mixed_and_modifies_split() {
        assert_eq!(waves(&[(Read, &["a"]), (Read, &["a"]), (Read, &["b"])]), vec![vec![0, 1, 2]]);
        assert_eq!(waves(&[(Write, &["a"]), (Write, &["a"]), (Write, &["a", "b"])]), vec![vec![0, 1, 2]], "plain writes are ordered by event time");
        assert_eq!(waves(&[(Write, &["a"]), (Read, &["a"])]), vec![vec![0], vec![1]], "a read sees the write before it");
        assert_eq!(waves(&[(Read, &["a"]), (Write, &["a"])]), vec![vec![0], vec![1]], "a read does not see the write after it");
        assert_eq!(waves(&[(Modify, &["a"]), (Modify, &["a"]), (Modify, &["b"])]), vec![vec![0], vec![1, 2]]);
        assert_eq!(waves(&[(Write, &["a"]), (Modify, &["a"])]), vec![vec![0], vec![1]]);
        assert_eq!(waves(&[(Modify, &["a"]), (Read, &["a"])]), vec![vec![0], vec![1]]);
        assert_eq!(waves(&[(Read, &["a"]), (Write, &["b"]), (Modify, &["c"]), (Read, &["d", "a"])]), vec![vec![0, 1, 2, 3]]);
        assert_eq!(waves(&[(Read, &["x", "a"]), (Write, &["b", "a"])]), vec![vec![0], vec![1]], "any shared key counts");
    }

    #[test]
    fn a_wave_is_bounded_in_keys() {
        let many: Vec<String> = (0..MAX_WAVE_KEYS).map(|i| format!("k{i}")).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        assert_eq!(waves(&[(Read, &many), (Read, &["z"])]), vec![vec![0], vec![1]]);
        let huge: Vec<&str> = many.iter().chain(many.iter()).copied().collect();
        assert_eq!(waves(&[(Read, &["z"]), (Read, &huge), (Read, &["y"])]), vec![vec![0], vec![1], vec![2]], "a big command runs alone");
    }
}
