//! The value cache: the newest stored value (header + user bytes) of recently read keys, in
//! memory, in front of RocksDB. A hit costs a hash, an uncontended lock and a copy of the value;
//! a RocksDB point lookup walks the memtable, per-level filters, an index block and a data block.
//!
//! One cache serves every shard of a store within one byte budget. Entries are keyed by the
//! shard's *owner id* and the key: a shard gets a fresh owner id whenever its data changes other
//! than by a write (an SST ingest), so entries of the old id are never read again and age out.
//!
//! Coherence with RocksDB, without holding any lock across a RocksDB call:
//! * A read that misses takes a [`Ticket`] (its stripe's generation), reads RocksDB, and then
//!   [`ValueCache::fill`]s only if the stripe's generation has not moved since the ticket.
//! * A write, once committed to RocksDB, calls [`ValueCache::written`]: it bumps the stripe's
//!   generation and merges the written value into a cached one by the same last-writer-wins
//!   order the merge operator uses (a tombstone just drops the entry).
//! A fill can therefore never install a value older than a committed write: either the write's
//! generation bump came first (the fill is refused) or it comes after the fill and merges the
//! write into the filled entry.
//!
//! Eviction is CLOCK (second chance) per stripe. Slots and their buffers are reused, so once
//! warm a hit, a fill and an update allocate nothing.
use crate::header::{self, Header};
use hashbrown::HashTable;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use xxhash_rust::xxh3::xxh3_64_with_seed;

/// Stripes per cache: independent locks, so two cores rarely meet on one.
const STRIPES: usize = 64;
/// Bytes charged per entry on top of its key and value (slot, table entry, allocator slack).
const ENTRY_OVERHEAD: usize = 64;
/// Largest entry cached, whatever the budget: big values are better served by RocksDB's own
/// block cache than by pushing many small hot ones out.
const MAX_ENTRY_BYTES: usize = 64 << 10;

static NEXT_OWNER: AtomicU64 = AtomicU64::new(1);

/// A new owner id, never handed out before in this process.
pub(crate) fn new_owner() -> u64 {
    NEXT_OWNER.fetch_add(1, Ordering::Relaxed)
}

/// Hit and miss counts since the store started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Reads answered from the cache.
    pub hits: u64,
    /// Reads that went to RocksDB.
    pub misses: u64,
    /// Bytes charged to the entries held now.
    pub bytes: u64,
    /// Entries held now.
    pub entries: u64,
}

/// What a read found.
pub(crate) enum Probe {
    /// The stored value was copied into the caller's buffer.
    Hit,
    /// Not cached; read RocksDB, then offer the result to [`ValueCache::fill`] with this.
    Miss(Ticket),
}

/// Permission to fill one key, valid while its stripe sees no write.
pub(crate) struct Ticket {
    hash: u64,
    generation: u64,
}

struct Slot {
    hash: u64,
    owner: u64,
    key_len: usize,
    /// Key followed by the stored value.
    data: Vec<u8>,
    referenced: bool,
    live: bool,
}

impl Slot {
    fn matches(&self, owner: u64, key: &[u8]) -> bool {
        self.live && self.owner == owner && &self.data[..self.key_len] == key
    }

    fn stored(&self) -> &[u8] {
        &self.data[self.key_len..]
    }

    fn charge(&self) -> usize {
        self.data.capacity() + ENTRY_OVERHEAD
    }
}

#[derive(Default)]
struct Stripe {
    table: HashTable<u32>,
    slots: Vec<Slot>,
    free: Vec<u32>,
    hand: usize,
    bytes: usize,
    generation: u64,
    hits: u64,
    misses: u64,
}

impl Stripe {
    fn find(&self, hash: u64, owner: u64, key: &[u8]) -> Option<u32> {
        let slots = &self.slots;
        self.table.find(hash, |&i| slots[i as usize].matches(owner, key)).copied()
    }

    fn remove(&mut self, index: u32) {
        let slot = &mut self.slots[index as usize];
        let hash = slot.hash;
        slot.live = false;
        self.bytes -= slot.charge();
        if let Ok(entry) = self.table.find_entry(hash, |&i| i == index) {
            entry.remove();
        }
        self.free.push(index);
    }

    /// Evicts entries (second chance for recently read ones) until `needed` more bytes fit.
    fn make_room(&mut self, needed: usize, budget: usize) {
        let mut steps = 2 * self.slots.len();
        while self.bytes + needed > budget && steps > 0 && !self.slots.is_empty() {
            steps -= 1;
            self.hand = (self.hand + 1) % self.slots.len();
            let slot = &mut self.slots[self.hand];
            if !slot.live {
                continue;
            }
            if slot.referenced {
                slot.referenced = false;
            } else {
                self.remove(self.hand as u32);
            }
        }
    }

    fn insert(&mut self, hash: u64, owner: u64, key: &[u8], stored: &[u8], budget: usize) {
        let needed = key.len() + stored.len() + ENTRY_OVERHEAD;
        self.make_room(needed, budget);
        if self.bytes + needed > budget {
            return;
        }
        let index = match self.free.pop() {
            Some(i) => i,
            None => {
                self.slots.push(Slot { hash, owner, key_len: 0, data: Vec::new(), referenced: false, live: false });
                (self.slots.len() - 1) as u32
            }
        };
        let slot = &mut self.slots[index as usize];
        if slot.data.capacity() > 4 * needed {
            slot.data = Vec::new();
        }
        slot.data.clear();
        slot.data.extend_from_slice(key);
        slot.data.extend_from_slice(stored);
        (slot.hash, slot.owner, slot.key_len, slot.referenced, slot.live) = (hash, owner, key.len(), false, true);
        self.bytes += slot.charge();
        let slots = &self.slots;
        self.table.insert_unique(hash, index, |&i| slots[i as usize].hash);
    }

    /// Replaces the stored value of a live slot, keeping its key.
    fn replace(&mut self, index: u32, stored: &[u8]) {
        let slot = &mut self.slots[index as usize];
        let before = slot.charge();
        slot.data.truncate(slot.key_len);
        slot.data.extend_from_slice(stored);
        self.bytes = self.bytes - before + slot.charge();
    }
}

/// A store-wide cache of stored values (see the module documentation).
pub struct ValueCache {
    stripes: Box<[Mutex<Stripe>]>,
    stripe_budget: usize,
    max_entry: usize,
}

impl ValueCache {
    /// A cache holding about `bytes` of keys and values; `None` when `bytes` is too small to
    /// hold anything useful (0 turns the cache off).
    pub fn new(bytes: usize) -> Option<Self> {
        let stripe_budget = bytes / STRIPES;
        let max_entry = MAX_ENTRY_BYTES.min(stripe_budget / 16);
        if max_entry <= ENTRY_OVERHEAD {
            return None;
        }
        Some(Self { stripes: (0..STRIPES).map(|_| Mutex::new(Stripe::default())).collect(), stripe_budget, max_entry })
    }

    fn stripe(&self, hash: u64) -> std::sync::MutexGuard<'_, Stripe> {
        // hashbrown uses the low bits for the bucket and the top 7 for its control bytes, so
        // the stripe comes from bits in between.
        let stripe = &self.stripes[(hash >> 40) as usize % STRIPES];
        // A panic while holding a stripe cannot leave it inconsistent enough to matter for a
        // cache whose every entry is also in RocksDB; keep serving.
        stripe.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Looks `key` of shard `owner` up; on a hit its stored value replaces `out`'s contents.
    pub(crate) fn get(&self, owner: u64, key: &[u8], out: &mut Vec<u8>) -> Probe {
        let hash = xxh3_64_with_seed(key, owner);
        let mut stripe = self.stripe(hash);
        match stripe.find(hash, owner, key) {
            Some(index) => {
                stripe.hits += 1;
                let slot = &mut stripe.slots[index as usize];
                slot.referenced = true;
                out.clear();
                out.extend_from_slice(slot.stored());
                Probe::Hit
            }
            None => {
                stripe.misses += 1;
                Probe::Miss(Ticket { hash, generation: stripe.generation })
            }
        }
    }

    /// Caches `stored`, the value RocksDB returned for `key` after `ticket` was taken, unless a
    /// write reached the key's stripe in between. Tombstones and oversize values are not cached.
    pub(crate) fn fill(&self, ticket: Ticket, owner: u64, key: &[u8], stored: &[u8]) {
        if key.len() + stored.len() + ENTRY_OVERHEAD > self.max_entry || Header::split(stored).is_none_or(|(h, _)| h.tombstone) {
            return;
        }
        let mut stripe = self.stripe(ticket.hash);
        if stripe.generation != ticket.generation || stripe.find(ticket.hash, owner, key).is_some() {
            return;
        }
        stripe.insert(ticket.hash, owner, key, stored, self.stripe_budget);
    }

    /// Records that `stored` was committed for `key` of shard `owner`: refuses fills that
    /// started before, and merges it into a cached value (last writer wins; a winning tombstone,
    /// or a value too big to cache, drops the entry).
    pub(crate) fn written(&self, owner: u64, key: &[u8], stored: &[u8]) {
        let hash = xxh3_64_with_seed(key, owner);
        let mut stripe = self.stripe(hash);
        stripe.generation += 1;
        let Some(index) = stripe.find(hash, owner, key) else { return };
        if !header::newer(stored, stripe.slots[index as usize].stored()) {
            return;
        }
        let droppable = key.len() + stored.len() + ENTRY_OVERHEAD > self.max_entry || Header::split(stored).is_none_or(|(h, _)| h.tombstone);
        if droppable {
            stripe.remove(index);
        } else {
            stripe.replace(index, stored);
        }
    }

    /// Hit and miss counts and current size, summed over the stripes.
    pub fn stats(&self) -> CacheStats {
        let mut stats = CacheStats::default();
        for stripe in self.stripes.iter() {
            let s = stripe.lock().unwrap_or_else(|p| p.into_inner());
            stats.hits += s.hits;
            stats.misses += s.misses;
            stats.bytes += s.bytes as u64;
            stats.entries += (s.slots.len() - s.free.len()) as u64;
        }
        stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::header::encode_value;

    fn stored(t: u64, tombstone: bool, user: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        encode_value(&mut v, Header { event_time_ns: t, expires_at_ns: 0, tombstone }, user);
        v
    }

    fn read(cache: &ValueCache, owner: u64, key: &[u8]) -> Option<Vec<u8>> {
        let mut out = Vec::new();
        match cache.get(owner, key, &mut out) {
            Probe::Hit => Some(out),
            Probe::Miss(_) => None,
        }
    }

    fn fill(cache: &ValueCache, owner: u64, key: &[u8], value: &[u8]) {
        if let Probe::Miss(ticket) = cache.get(owner, key, &mut Vec::new()) {
            cache.fill(ticket, owner, key, value);
        }
    }

    #[test]
    fn fills_hit_and_are_told_apart_by_owner() {
        let cache = ValueCache::new(1 << 20).unwrap();
        let v = stored(5, false, b"hello");
        assert!(read(&cache, 1, b"k").is_none());
        fill(&cache, 1, b"k", &v);
        assert_eq!(read(&cache, 1, b"k").as_deref(), Some(&v[..]));
        assert!(read(&cache, 2, b"k").is_none(), "another shard's key of the same name");
        let empty = stored(6, false, b"");
        fill(&cache, 1, b"e", &empty);
        assert_eq!(read(&cache, 1, b"e").as_deref(), Some(&empty[..]), "an empty value is cached too");
        let stats = cache.stats();
        assert_eq!((stats.entries, stats.hits), (2, 2));
    }

    #[test]
    fn a_write_between_miss_and_fill_refuses_the_stale_fill() {
        let cache = ValueCache::new(1 << 20).unwrap();
        let Probe::Miss(ticket) = cache.get(1, b"k", &mut Vec::new()) else { panic!("empty cache hit") };
        // RocksDB returned the old value, then a newer write committed before the fill.
        cache.written(1, b"k", &stored(9, false, b"new"));
        cache.fill(ticket, 1, b"k", &stored(3, false, b"old"));
        assert!(read(&cache, 1, b"k").is_none(), "the stale value must not be cached");
    }

    #[test]
    fn writes_merge_by_last_writer_wins_and_tombstones_drop() {
        let cache = ValueCache::new(1 << 20).unwrap();
        fill(&cache, 1, b"k", &stored(5, false, b"five"));
        cache.written(1, b"k", &stored(3, false, b"older"));
        assert_eq!(read(&cache, 1, b"k"), Some(stored(5, false, b"five")), "an older write loses");
        cache.written(1, b"k", &stored(7, false, b"a longer seven"));
        assert_eq!(read(&cache, 1, b"k"), Some(stored(7, false, b"a longer seven")));
        cache.written(1, b"k", &stored(8, true, b""));
        assert!(read(&cache, 1, b"k").is_none(), "a newer delete drops the entry");
        cache.written(1, b"x", &stored(1, false, b"not cached"));
        assert!(read(&cache, 1, b"x").is_none(), "a write does not insert: the stored winner is unknown");
        fill(&cache, 1, b"t", &stored(4, true, b""));
        assert!(read(&cache, 1, b"t").is_none(), "tombstones are not cached");
    }

    #[test]
    fn stays_within_its_budget_and_keeps_recently_read_keys() {
        let budget = 64 * 16 << 10;
        let cache = ValueCache::new(budget).unwrap();
        let value = stored(1, false, &[7u8; 200]);
        let key = |i: u32| format!("key-{i:08}").into_bytes();
        fill(&cache, 1, &key(0), &value);
        for i in 1..20_000 {
            fill(&cache, 1, &key(i), &value);
            // Key 0 is read all the time: CLOCK gives it a second chance at every sweep.
            assert!(read(&cache, 1, &key(0)).is_some(), "hot key evicted after {i} fills");
        }
        let stats = cache.stats();
        assert!(stats.bytes as usize <= budget, "{stats:?}");
        assert!(stats.entries > 1000 && stats.entries < 20_000, "{stats:?}");
        assert!(ValueCache::new(0).is_none());
    }
}
