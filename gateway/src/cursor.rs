//! SCAN cursors: clients expect integer cursors, a Vasto scan continues after a key. The
//! gateway keeps one table, shared by all connections, from random nonzero `u64` ids to the
//! last key a page returned. It is bounded in entries and in key bytes; when full, the oldest
//! cursors are forgotten, and a forgotten or made-up cursor is answered `ERR invalid cursor`
//! (starting over instead would make a client's iteration silently repeat keys).
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

/// Cursors kept by default.
pub const DEFAULT_CURSORS: usize = 100_000;
/// Key bytes kept by default, all cursors together (keys may be up to 64 KiB each).
pub const DEFAULT_CURSOR_BYTES: usize = 64 << 20;

/// A bounded map from cursor ids to continuation keys; safe to share between threads.
pub struct CursorTable {
    inner: Mutex<Inner>,
    max_entries: usize,
    max_bytes: usize,
}

struct Inner {
    map: HashMap<u64, Vec<u8>>,
    /// Ids in insertion order, for oldest-first eviction.
    order: VecDeque<u64>,
    bytes: usize,
    /// SplitMix64 state, seeded from the OS: ids are not guessable from one another.
    rng: u64,
}

impl CursorTable {
    /// A table of at most `max_entries` cursors holding at most `max_bytes` of keys (each at
    /// least one cursor is kept, whatever its size).
    pub fn new(max_entries: usize, max_bytes: usize) -> Self {
        let mut seed = [0u8; 8];
        // Without OS randomness the ids are still unique, only predictable.
        let _ = getrandom::getrandom(&mut seed);
        let rng = u64::from_le_bytes(seed) ^ (std::process::id() as u64).rotate_left(32);
        let inner = Inner { map: HashMap::new(), order: VecDeque::new(), bytes: 0, rng };
        Self { inner: Mutex::new(inner), max_entries: max_entries.max(1), max_bytes }
    }

    /// Stores `after` under a fresh nonzero id and returns the id, evicting the oldest cursors
    /// beyond the bounds.
    pub fn insert(&self, after: Vec<u8>) -> u64 {
        let mut t = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let id = loop {
            let id = splitmix(&mut t.rng);
            if id != 0 && !t.map.contains_key(&id) {
                break id;
            }
        };
        t.bytes += after.len();
        t.map.insert(id, after);
        t.order.push_back(id);
        while t.map.len() > self.max_entries || (t.bytes > self.max_bytes && t.map.len() > 1) {
            let Some(old) = t.order.pop_front() else { break };
            if let Some(key) = t.map.remove(&old) {
                t.bytes -= key.len();
            }
        }
        id
    }

    /// The key cursor `id` continues after, if the table still has it. Looking a cursor up
    /// does not consume it: a client may repeat a SCAN call (a retry gets the same page).
    pub fn get(&self, id: u64) -> Option<Vec<u8>> {
        let t = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        t.map.get(&id).cloned()
    }

    /// How many cursors are held.
    pub fn len(&self) -> usize {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).map.len()
    }
}

impl Default for CursorTable {
    /// [`DEFAULT_CURSORS`] cursors, [`DEFAULT_CURSOR_BYTES`] of keys.
    fn default() -> Self {
        Self::new(DEFAULT_CURSORS, DEFAULT_CURSOR_BYTES)
    }
}

fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_map_to_their_keys_and_are_nonzero_and_distinct() {
        let t = CursorTable::new(10, 1 << 20);
        let a = t.insert(b"k1".to_vec());
        let b = t.insert(b"k2".to_vec());
        assert!(a != 0 && b != 0 && a != b);
        assert_eq!(t.get(a).as_deref(), Some(&b"k1"[..]));
        assert_eq!(t.get(a).as_deref(), Some(&b"k1"[..]), "a lookup does not consume");
        assert_eq!(t.get(b).as_deref(), Some(&b"k2"[..]));
        assert_eq!(t.get(12345), None);
    }

    #[test]
    fn the_oldest_cursors_are_evicted_by_count_and_by_bytes() {
        let t = CursorTable::new(3, 1 << 20);
        let ids: Vec<u64> = (0..5u8).map(|i| t.insert(vec![i])).collect();
        assert_eq!(t.len(), 3);
        assert_eq!(t.get(ids[0]), None);
        assert_eq!(t.get(ids[1]), None);
        assert_eq!(t.get(ids[4]), Some(vec![4]));
        let t = CursorTable::new(100, 10);
        let big = t.insert(vec![0; 8]);
        let next = t.insert(vec![1; 8]);
        assert_eq!((t.get(big), t.get(next).map(|k| k.len())), (None, Some(8)), "16 bytes > 10: the older goes");
        let huge = t.insert(vec![2; 100]);
        assert_eq!(t.get(huge).map(|k| k.len()), Some(100), "the newest is kept, however large");
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn many_cursors_stay_unique() {
        let t = CursorTable::new(100_000, 1 << 30);
        let mut ids: Vec<u64> = (0..50_000u32).map(|i| t.insert(i.to_le_bytes().to_vec())).collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), 50_000);
        assert_eq!(t.len(), 50_000);
    }
}
