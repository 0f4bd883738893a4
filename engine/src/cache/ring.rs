//! One stripe's storage: a ring of records (FIFO with a second chance) and an open-addressing
//! index over them.
//!
//! Record (8-byte aligned): `u32` record length, `u32` key length with the flags in its top
//! byte, `u32` value length, `u32` low 24 bits of the hash, `u64` owner, key, stored value.
//!
//! Index word: the low 24 bits of the key's hash (the home bucket, since the index never has
//! more than 2^24 buckets, and a tag that rejects most other keys without touching their
//! record), and above them the record's offset / 8 + 1 (0 = empty). Linear probing with
//! backward-shift deletion, so no tombstones pile up.
//!
//! Both live in anonymous memory maps advised to use transparent huge pages (the ring from its
//! second huge page on, so a nearly empty ring takes little memory): a hit reads one index word
//! and one record at random places in a ring of megabytes, and with 4 KiB pages each of those
//! was also a TLB miss (perf showed the lookup as a third of a store's time). The kernel
//! provides the pages zeroed, on first touch, so memory is taken as the ring fills.

use memmap2::MmapMut;

/// Bytes in front of a record's key.
pub(super) const RECORD_HEADER: usize = 24;
const LIVE: u32 = 1 << 24;
const REFERENCED: u32 = 2 << 24;
const KEY_LEN_MASK: u32 = (1 << 24) - 1;
const LOW: u64 = (1 << 24) - 1;
const MIN_INDEX: usize = 256;
const MAX_INDEX: usize = 1 << 24;
/// Records given a second chance per insert at most, so one insert does bounded work.
const MAX_SECOND_CHANCES: usize = 8;
const HUGE_PAGE: usize = 2 << 20;

/// Zeroed anonymous memory of at least `len` bytes, on huge pages from byte `huge_from` on
/// where the kernel allows; `None` if the kernel refuses the mapping (the cache then holds
/// less, nothing fails).
fn map_zeroed(len: usize, huge_from: usize) -> Option<MmapMut> {
    // A whole number of huge pages makes the kernel align the mapping to one.
    let len = if len >= HUGE_PAGE { len.div_ceil(HUGE_PAGE) * HUGE_PAGE } else { len.max(1) };
    let map = MmapMut::map_anon(len).ok()?;
    #[cfg(target_os = "linux")]
    if len >= huge_from + HUGE_PAGE {
        let _ = map.advise_range(memmap2::Advice::HugePage, huge_from, len - huge_from);
    }
    Some(map)
}

/// The index: `u64` words in a memory map.
struct Words(MmapMut);

impl Words {
    fn zeroed(len: usize) -> Option<Self> {
        // The index is mapped whole when it grows, so all of it may be on huge pages.
        map_zeroed(len * 8, 0).map(Self)
    }

    fn len(&self) -> usize {
        self.0.len() / 8
    }

    #[inline]
    fn get(&self, i: usize) -> u64 {
        let b = &self.0[i * 8..i * 8 + 8];
        u64::from_ne_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])
    }

    #[inline]
    fn set(&mut self, i: usize, word: u64) {
        self.0[i * 8..i * 8 + 8].copy_from_slice(&word.to_ne_bytes());
    }
}

/// Where a found record is: its index bucket and its offset in the ring.
#[derive(Clone, Copy)]
pub(super) struct At {
    bucket: usize,
    offset: usize,
}

/// Records live in `buf[tail..head]` or, once the ring has wrapped, in `buf[tail..end]` and
/// `buf[..head]`; free space is what lies between.
pub(super) struct Ring {
    /// Mapped at the first insert, `cap` bytes used.
    buf: Option<MmapMut>,
    cap: usize,
    head: usize,
    tail: usize,
    end: usize,
    wrapped: bool,
    /// Records in the ring, live or dead.
    records: usize,
    /// Bytes of those records.
    used: usize,
    /// Mapped at the first insert; its length is a power of two.
    index: Option<Words>,
    /// Live records (index entries).
    live: usize,
}

impl Default for Ring {
    fn default() -> Self {
        Self::new(0)
    }
}

fn rounded(n: usize) -> usize {
    (n + 7) & !7
}

fn u32_at(buf: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]])
}

fn set_u32(buf: &mut [u8], at: usize, v: u32) {
    buf[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

fn word(offset: usize, low: u64) -> u64 {
    (((offset / 8) as u64 + 1) << 24) | low
}

impl Ring {
    /// A ring of about `budget` bytes, index included (nothing is mapped until used).
    pub fn new(budget: usize) -> Self {
        // The index takes about 16 bytes per entry (two words per entry at half load); keep
        // an eighth of the budget for it.
        let cap = (budget - budget / 8) & !7;
        Self { buf: None, cap, head: 0, tail: 0, end: 0, wrapped: false, records: 0, used: 0, index: None, live: 0 }
    }

    /// Live entries.
    pub fn entries(&self) -> usize {
        self.live
    }

    /// Bytes of records in the ring (live and not yet reclaimed).
    pub fn bytes(&self) -> usize {
        self.used
    }

    fn buf(&self) -> &[u8] {
        self.buf.as_deref().unwrap_or_default()
    }

    fn buf_mut(&mut self) -> &mut [u8] {
        self.buf.as_deref_mut().unwrap_or_default()
    }

    fn flags(&self, offset: usize) -> u32 {
        u32_at(self.buf(), offset + 4) & !KEY_LEN_MASK
    }

    fn set_flags(&mut self, offset: usize, flags: u32) {
        let key_len = u32_at(self.buf(), offset + 4) & KEY_LEN_MASK;
        set_u32(self.buf_mut(), offset + 4, key_len | flags);
    }

    fn record_len(&self, offset: usize) -> usize {
        u32_at(self.buf(), offset) as usize
    }

    fn value_range(&self, offset: usize) -> std::ops::Range<usize> {
        let key_len = (u32_at(self.buf(), offset + 4) & KEY_LEN_MASK) as usize;
        let value_len = u32_at(self.buf(), offset + 8) as usize;
        let start = offset + RECORD_HEADER + key_len;
        start..start + value_len
    }

    fn matches(&self, offset: usize, owner: u64, key: &[u8]) -> bool {
        let buf = self.buf();
        let head = &buf[offset..offset + RECORD_HEADER];
        let key_len = (u32::from_le_bytes([head[4], head[5], head[6], head[7]]) & KEY_LEN_MASK) as usize;
        key_len == key.len() && head[16..24] == owner.to_le_bytes() && &buf[offset + RECORD_HEADER..offset + RECORD_HEADER + key_len] == key
    }

    /// The live record of `key` of `owner`, if any.
    pub fn find(&self, hash: u64, owner: u64, key: &[u8]) -> Option<At> {
        let index = self.index.as_ref()?;
        let mask = index.len() - 1;
        let tag = hash & LOW;
        let mut bucket = tag as usize & mask;
        loop {
            let word = index.get(bucket);
            if word == 0 {
                return None;
            }
            if word & LOW == tag {
                let offset = ((word >> 24) - 1) as usize * 8;
                if self.matches(offset, owner, key) {
                    return Some(At { bucket, offset });
                }
            }
            bucket = (bucket + 1) & mask;
        }
    }

    /// Copies the stored value of `key` into `out` and marks it recently read; false if absent.
    pub fn read(&mut self, hash: u64, owner: u64, key: &[u8], out: &mut Vec<u8>) -> bool {
        let Some(at) = self.find(hash, owner, key) else { return false };
        let flags = self.flags(at.offset);
        if flags & REFERENCED == 0 {
            self.set_flags(at.offset, flags | REFERENCED);
        }
        out.clear();
        out.extend_from_slice(self.stored(at));
        true
    }

    /// The stored value of a found record.
    pub fn stored(&self, at: At) -> &[u8] {
        &self.buf()[self.value_range(at.offset)]
    }

    /// Adds a record for a key [`Ring::find`] did not find; a record too big, or one that finds
    /// no memory, is not added.
    pub fn insert(&mut self, hash: u64, owner: u64, key: &[u8], stored: &[u8]) {
        let len = rounded(RECORD_HEADER + key.len() + stored.len());
        if len > self.cap || key.len() > KEY_LEN_MASK as usize || self.live >= MAX_INDEX / 2 {
            return;
        }
        if self.buf.is_none() {
            // The ring is written from its start: its first huge page's worth stays on small
            // pages, so a cache that holds little also takes little memory.
            self.buf = map_zeroed(self.cap, HUGE_PAGE);
        }
        if self.buf.is_none() || !self.index_reserve() {
            return;
        }
        let offset = self.alloc(len);
        let buf = &mut self.buf_mut()[offset..offset + len];
        buf[0..4].copy_from_slice(&(len as u32).to_le_bytes());
        buf[4..8].copy_from_slice(&(key.len() as u32 | LIVE).to_le_bytes());
        buf[8..12].copy_from_slice(&(stored.len() as u32).to_le_bytes());
        buf[12..16].copy_from_slice(&((hash & LOW) as u32).to_le_bytes());
        buf[16..24].copy_from_slice(&owner.to_le_bytes());
        buf[RECORD_HEADER..RECORD_HEADER + key.len()].copy_from_slice(key);
        buf[RECORD_HEADER + key.len()..RECORD_HEADER + key.len() + stored.len()].copy_from_slice(stored);
        self.records += 1;
        self.used += len;
        self.place(word(offset, hash & LOW));
        self.live += 1;
    }

    /// Replaces the stored value of a found record: in place when it fits, else by a new record.
    pub fn replace(&mut self, at: At, hash: u64, owner: u64, key: &[u8], stored: &[u8]) {
        let room = self.record_len(at.offset) - RECORD_HEADER - key.len();
        if stored.len() <= room {
            let buf = self.buf_mut();
            set_u32(buf, at.offset + 8, stored.len() as u32);
            let start = at.offset + RECORD_HEADER + key.len();
            buf[start..start + stored.len()].copy_from_slice(stored);
        } else {
            self.remove(at);
            self.insert(hash, owner, key, stored);
        }
    }

    /// Drops a found record (its space is reclaimed when the ring's tail passes it).
    pub fn remove(&mut self, at: At) {
        self.set_flags(at.offset, 0);
        self.index_remove(at.bucket);
    }

    /// Space for a record of `len` bytes at the head, evicting from the tail as needed.
    fn alloc(&mut self, len: usize) -> usize {
        let mut chances = 0;
        loop {
            if self.records == 0 {
                (self.head, self.tail, self.wrapped) = (0, 0, false);
            }
            if !self.wrapped {
                if self.head + len <= self.cap {
                    self.head += len;
                    return self.head - len;
                }
                // No room before the end: continue from the start, behind the tail.
                (self.end, self.head, self.wrapped) = (self.head, 0, true);
                continue;
            }
            if self.head + len <= self.tail {
                self.head += len;
                return self.head - len;
            }
            self.pass_tail(&mut chances);
        }
    }

    /// Moves the tail past its record: a dead one is reclaimed, a live one read since it was
    /// written is moved to the head (while `chances` allow), any other is evicted.
    fn pass_tail(&mut self, chances: &mut usize) {
        let offset = self.tail;
        let len = self.record_len(offset);
        if len < RECORD_HEADER || offset + len > self.cap {
            // Cannot happen while the ring's invariants hold; if they were broken, forget
            // everything rather than loop or serve a wrong value.
            debug_assert!(false, "corrupt record at the tail");
            self.clear();
            return;
        }
        let flags = self.flags(offset);
        let mut moved_to = None;
        if flags & LIVE != 0 {
            let low = u64::from(u32_at(self.buf(), offset + 12));
            match self.bucket_of(word(offset, low)) {
                Some(bucket) if flags & REFERENCED != 0 && *chances < MAX_SECOND_CHANCES => {
                    *chances += 1;
                    // The head is at or before the tail, so the record fits there once the
                    // tail has passed it.
                    let head = self.head;
                    self.buf_mut().copy_within(offset..offset + len, head);
                    self.set_flags(head, LIVE);
                    if let Some(index) = &mut self.index {
                        index.set(bucket, word(head, low));
                    }
                    moved_to = Some(head);
                }
                Some(bucket) => self.index_remove(bucket),
                None => debug_assert!(false, "a live record missing from the index"),
            }
        }
        self.tail = offset + len;
        match moved_to {
            Some(at) => self.head = at + len,
            None => {
                self.records -= 1;
                self.used -= len;
            }
        }
        if self.wrapped && self.tail == self.end {
            (self.tail, self.wrapped) = (0, false);
        }
    }

    /// Forgets every record.
    fn clear(&mut self) {
        (self.head, self.tail, self.end, self.wrapped, self.records, self.used, self.live) = (0, 0, 0, false, 0, 0, 0);
        if let Some(index) = &mut self.index {
            index.0.fill(0);
        }
    }

    /// The index bucket holding `word`.
    fn bucket_of(&self, word: u64) -> Option<usize> {
        let index = self.index.as_ref()?;
        let mask = index.len() - 1;
        let mut bucket = (word & LOW) as usize & mask;
        for _ in 0..index.len() {
            match index.get(bucket) {
                w if w == word => return Some(bucket),
                0 => return None,
                _ => bucket = (bucket + 1) & mask,
            }
        }
        None
    }

    /// Makes room in the index for one more entry (at most half full); false if no memory.
    fn index_reserve(&mut self) -> bool {
        let len = self.index.as_ref().map_or(0, Words::len);
        if (self.live + 1) * 2 <= len {
            return true;
        }
        // Powers of two, so the mask works (and from 2 MiB on, whole huge pages).
        let Some(grown) = Words::zeroed((len * 2).max(MIN_INDEX)) else { return false };
        if let Some(old) = self.index.replace(grown) {
            for i in 0..old.len() {
                let w = old.get(i);
                if w != 0 {
                    self.place(w);
                }
            }
        }
        true
    }

    /// Puts `word` in the first free bucket from its home.
    fn place(&mut self, word: u64) {
        let Some(index) = &mut self.index else { return };
        let mask = index.len() - 1;
        let mut bucket = (word & LOW) as usize & mask;
        while index.get(bucket) != 0 {
            bucket = (bucket + 1) & mask;
        }
        index.set(bucket, word);
    }

    /// Empties `bucket`, shifting back the entries after it that would no longer be found.
    fn index_remove(&mut self, mut hole: usize) {
        let Some(index) = &mut self.index else { return };
        let mask = index.len() - 1;
        index.set(hole, 0);
        let mut next = hole;
        loop {
            next = (next + 1) & mask;
            let word = index.get(next);
            if word == 0 {
                break;
            }
            let home = (word & LOW) as usize & mask;
            // The entry may stay if its home lies cyclically in (hole, next].
            let stays = if hole <= next { hole < home && home <= next } else { hole < home || home <= next };
            if !stays {
                index.set(hole, word);
                index.set(next, 0);
                hole = next;
            }
        }
        self.live -= 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    #[derive(Debug, Clone)]
    enum Op {
        Insert(u16, u8),
        Replace(u16, u8),
        Remove(u16),
        Read(u16),
    }

    fn op() -> impl Strategy<Value = Op> {
        let key = 0u16..64;
        prop_oneof![
            4 => (key.clone(), any::<u8>()).prop_map(|(k, v)| Op::Insert(k, v)),
            2 => (key.clone(), any::<u8>()).prop_map(|(k, v)| Op::Replace(k, v)),
            1 => key.clone().prop_map(Op::Remove),
            3 => key.prop_map(Op::Read),
        ]
    }

    fn hash(k: u16) -> u64 {
        // Few distinct low bits, so keys share home buckets and probe chains get long.
        u64::from(k % 7) | (u64::from(k) << 32)
    }

    fn key(k: u16) -> Vec<u8> {
        format!("k{k}").into_bytes()
    }

    fn value(v: u8) -> Vec<u8> {
        vec![v; usize::from(v % 40)]
    }

    proptest! {
        /// Whatever it evicts, the ring never returns a value other than the last one given for
        /// a key, stays within its capacity, and every live record stays findable.
        #[test]
        fn ring_agrees_with_a_map(ops in proptest::collection::vec(op(), 1..400), budget in 300usize..2000) {
            let mut ring = Ring::new(budget);
            let mut model: HashMap<u16, Vec<u8>> = HashMap::new();
            for op in &ops {
                match *op {
                    Op::Insert(k, v) => {
                        if ring.find(hash(k), 1, &key(k)).is_none() {
                            ring.insert(hash(k), 1, &key(k), &value(v));
                            model.insert(k, value(v));
                        }
                    }
                    Op::Replace(k, v) => {
                        if let Some(at) = ring.find(hash(k), 1, &key(k)) {
                            ring.replace(at, hash(k), 1, &key(k), &value(v));
                            model.insert(k, value(v));
                        }
                    }
                    Op::Remove(k) => {
                        if let Some(at) = ring.find(hash(k), 1, &key(k)) {
                            ring.remove(at);
                        }
                        model.remove(&k);
                    }
                    Op::Read(k) => {
                        let mut out = Vec::new();
                        if ring.read(hash(k), 1, &key(k), &mut out) {
                            prop_assert_eq!(Some(&out), model.get(&k), "key {}", k);
                        }
                    }
                }
                prop_assert!(ring.bytes() <= ring.cap);
                let found = (0..64).filter(|&k| ring.find(hash(k), 1, &key(k)).is_some()).count();
                prop_assert_eq!(found, ring.entries(), "every indexed record is findable");
                for k in 0..64u16 {
                    if let Some(at) = ring.find(hash(k), 1, &key(k)) {
                        prop_assert_eq!(Some(&ring.stored(at).to_vec()), model.get(&k), "key {}", k);
                        prop_assert!(ring.find(hash(k), 2, &key(k)).is_none(), "owners are told apart");
                    }
                }
            }
        }
    }
}
