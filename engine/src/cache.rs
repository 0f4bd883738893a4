//! The value cache: the newest stored value (header + user bytes) of recently read keys, in
//! memory, in front of RocksDB. A hit costs a hash, an uncontended lock, one index word and one
//! contiguous record; a RocksDB point lookup walks the memtable, per-level filters, an index
//! block and a data block.
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
//!
//! A fill can therefore never install a value older than a committed write: either the write's
//! generation bump came first (the fill is refused) or it comes after the fill and merges the
//! write into the filled entry.
//!
//! Layout, chosen for few cache misses per hit (the first version, a hash map of slots owning
//! heap buffers, spent a microsecond per hit in four dependent misses): each stripe has an
//! open-addressing index of `u64` words (low 24 bits of the hash, record offset) and a ring of
//! records, each holding its key and value inline. Eviction is FIFO over the ring with a second
//! chance: a record read since it was written is moved to the head once instead of dropped.
//! Nothing is allocated once the ring and index have reached their size.
use crate::header::{self, Header};
use std::sync::Mutex;
use xxhash_rust::xxh3::xxh3_64_with_seed;

mod ring;
use ring::Ring;

/// Stripes per CPU: independent locks, so cores rarely meet on one; few enough that each
/// stripe's ring and index are megabytes, which huge pages then cover.
const STRIPES_PER_CPU: usize = 4;
/// Bounds on the stripe count.
const MIN_STRIPES: usize = 8;
const MAX_STRIPES: usize = 64;
/// Largest entry cached, whatever the budget: big values are better served by RocksDB's own
/// block cache than by pushing many small hot ones out.
const MAX_ENTRY_BYTES: usize = 64 << 10;

static NEXT_OWNER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// A new owner id, never handed out before in this process.
pub(crate) fn new_owner() -> u64 {
    NEXT_OWNER.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// Hit and miss counts since the store started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Reads answered from the cache.
    pub hits: u64,
    /// Reads that RocksDB answered (counted once it has, so a memory-only read handed on to a
    /// thread that may read files counts once, there).
    pub misses: u64,
    /// Bytes of the record rings in use (live and not yet reclaimed records).
    pub bytes: u64,
    /// Entries held now.
    pub entries: u64,
}

/// What a read found.
pub(crate) enum Probe {
    /// The stored value was copied into the caller's buffer.
    Hit,
    /// Not cached; read RocksDB, then give its answer to [`ValueCache::fill`] with this (which
    /// counts the miss; a read that gave up without an answer is not counted).
    Miss(Ticket),
}

/// Permission to fill one key, valid while its stripe sees no write.
pub(crate) struct Ticket {
    hash: u64,
    generation: u64,
}

#[derive(Default)]
struct Stripe {
    ring: Ring,
    generation: u64,
    hits: u64,
    misses: u64,
}

/// A store-wide cache of stored values (see the module documentation).
pub struct ValueCache {
    stripes: Box<[Mutex<Stripe>]>,
    max_entry: usize,
}

impl ValueCache {
    /// A cache holding about `bytes` of keys and values; `None` when `bytes` is too small to
    /// hold anything useful (0 turns the cache off).
    pub fn new(bytes: usize) -> Option<Self> {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let stripes = (cpus * STRIPES_PER_CPU).next_power_of_two().clamp(MIN_STRIPES, MAX_STRIPES);
        let stripe_budget = bytes / stripes;
        let max_entry = MAX_ENTRY_BYTES.min(stripe_budget / 16);
        if max_entry <= ring::RECORD_HEADER {
            return None;
        }
        let stripes = (0..stripes).map(|_| Mutex::new(Stripe { ring: Ring::new(stripe_budget), ..Stripe::default() })).collect();
        Some(Self { stripes, max_entry })
    }

    fn stripe(&self, hash: u64) -> std::sync::MutexGuard<'_, Stripe> {
        // The ring's index uses the low bits of the hash, so the stripe comes from higher ones.
        let stripe = &self.stripes[(hash >> 40) as usize % self.stripes.len()];
        // A panic while holding a stripe cannot leave it inconsistent enough to matter for a
        // cache whose every entry is also in RocksDB; keep serving.
        stripe.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn cacheable(&self, key: &[u8], stored: &[u8]) -> bool {
        ring::RECORD_HEADER + key.len() + stored.len() <= self.max_entry && Header::split(stored).is_some_and(|(h, _)| !h.tombstone)
    }

    /// Looks `key` of shard `owner` up; on a hit its stored value replaces `out`'s contents.
    pub(crate) fn get(&self, owner: u64, key: &[u8], out: &mut Vec<u8>) -> Probe {
        let hash = xxh3_64_with_seed(key, owner);
        let mut stripe = self.stripe(hash);
        if stripe.ring.read(hash, owner, key, out) {
            stripe.hits += 1;
            Probe::Hit
        } else {
            Probe::Miss(Ticket { hash, generation: stripe.generation })
        }
    }

    /// Counts the miss `ticket` was taken for and caches `stored`, what RocksDB returned for
    /// `key` after that (`None`: no such key), unless a write reached the key's stripe in
    /// between. Missing keys, tombstones and oversize values are not cached.
    pub(crate) fn fill(&self, ticket: Ticket, owner: u64, key: &[u8], stored: Option<&[u8]>) {
        let cached = stored.filter(|stored| self.cacheable(key, stored));
        let mut stripe = self.stripe(ticket.hash);
        stripe.misses += 1;
        if let Some(stored) = cached {
            if stripe.generation == ticket.generation && stripe.ring.find(ticket.hash, owner, key).is_none() {
                stripe.ring.insert(ticket.hash, owner, key, stored);
            }
        }
    }

    /// Records that `stored` was committed for `key` of shard `owner`: refuses fills that
    /// started before, and merges it into a cached value (last writer wins; a winning tombstone,
    /// a value too big to cache, or a counter on either side drops the entry).
    pub(crate) fn written(&self, owner: u64, key: &[u8], stored: &[u8]) {
        let hash = xxh3_64_with_seed(key, owner);
        let mut stripe = self.stripe(hash);
        stripe.generation += 1;
        let Some(at) = stripe.ring.find(hash, owner, key) else { return };
        let cached = stripe.ring.stored(at);
        // A counter joins rather than replaces: the next read takes the joined value from RocksDB.
        let counters = crate::counter::is_counter(stored) || crate::counter::is_counter(cached);
        if !counters && !header::newer(stored, cached) {
            return;
        }
        if !counters && self.cacheable(key, stored) {
            stripe.ring.replace(at, hash, owner, key, stored);
        } else {
            stripe.ring.remove(at);
        }
    }

    /// Hit and miss counts and current size, summed over the stripes.
    pub fn stats(&self) -> CacheStats {
        let mut stats = CacheStats::default();
        for stripe in self.stripes.iter() {
            let s = stripe.lock().unwrap_or_else(|p| p.into_inner());
            stats.hits += s.hits;
            stats.misses += s.misses;
            stats.bytes += s.ring.bytes() as u64;
            stats.entries += s.ring.entries() as u64;
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
        encode_value(&mut v, Header { event_time_ns: t, expires_at_ns: 0, tombstone, counter: false }, user);
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
            cache.fill(ticket, owner, key, Some(value));
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
        cache.fill(ticket, 1, b"k", Some(&stored(3, false, b"old")));
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
        cache.written(1, b"k", &stored(7, false, b"b"));
        assert_eq!(read(&cache, 1, b"k"), Some(stored(7, false, b"b")), "same time, greater bytes win, shorter value in place");
        cache.written(1, b"k", &stored(8, true, b""));
        assert!(read(&cache, 1, b"k").is_none(), "a newer delete drops the entry");
        cache.written(1, b"x", &stored(1, false, b"not cached"));
        assert!(read(&cache, 1, b"x").is_none(), "a write does not insert: the stored winner is unknown");
        fill(&cache, 1, b"t", &stored(4, true, b""));
        assert!(read(&cache, 1, b"t").is_none(), "tombstones are not cached");
        assert_eq!(cache.stats().entries, 0);
    }

    #[test]
    fn stays_within_its_budget_and_keeps_recently_read_keys() {
        let budget = 64 * (16 << 10);
        let cache = ValueCache::new(budget).unwrap();
        let value = stored(1, false, &[7u8; 200]);
        let key = |i: u32| format!("key-{i:08}").into_bytes();
        fill(&cache, 1, &key(0), &value);
        for i in 1..20_000 {
            fill(&cache, 1, &key(i), &value);
            // Key 0 is read all the time: it gets a second chance every time the ring comes round.
            assert!(read(&cache, 1, &key(0)).is_some(), "hot key evicted after {i} fills");
        }
        let stats = cache.stats();
        assert!(stats.bytes as usize <= budget, "{stats:?}");
        assert!(stats.entries > 1000 && stats.entries < 20_000, "{stats:?}");
        // The most recent fills are still there, the oldest cold ones are gone.
        assert!(read(&cache, 1, &key(19_999)).is_some());
        assert!(read(&cache, 1, &key(1)).is_none());
        assert!(ValueCache::new(0).is_none());
    }
}
