//! Key placement: which shard of a keyspace owns a key.
//!
//! `shard_of(key, shards) = jump_consistent_hash(xxh3_64(key), shards)`, identical in the client,
//! the store (which rejects keys that are not its own) and the engine (which drops keys that moved
//! away after a resize). Growing from m to n shards only moves keys whose new shard is in [m, n).
//! It also draws the random identities ([`random_id`]) that name a cluster, a keyspace and a
//! change log, so that none is ever mistaken for an earlier one of the same name.

/// The xxh3-64 hash of a key, the input of [`jump_consistent_hash`].
#[inline]
pub fn key_hash(key: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(key)
}

/// A random, non-zero 64-bit identity from the operating system's generator (0 means "none"
/// on the wire and on disk). Falls back to a hash of the clock and the process id if the
/// generator is unavailable, which is still unique enough to tell incarnations apart.
pub fn random_id() -> u64 {
    let mut raw = [0u8; 8];
    let id = match getrandom::getrandom(&mut raw) {
        Ok(()) => u64::from_le_bytes(raw),
        Err(_) => {
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
            key_hash(format!("{now}-{}", std::process::id()).as_bytes())
        }
    };
    id.max(1)
}

/// Lamping & Veach jump consistent hash: maps `key` to a bucket in `0..buckets`.
///
/// Returns 0 when `buckets` is 0 or 1, so callers never index out of range.
#[inline]
pub fn jump_consistent_hash(mut key: u64, buckets: u32) -> u32 {
    let mut bucket: i64 = -1;
    let mut next: i64 = 0;
    while next < i64::from(buckets) {
        bucket = next;
        key = key.wrapping_mul(2_862_933_555_777_941_757).wrapping_add(1);
        let divisor = ((key >> 33) + 1) as f64;
        next = ((bucket + 1) as f64 * ((1u64 << 31) as f64 / divisor)) as i64;
    }
    bucket.max(0) as u32
}

/// The shard of `key` in a keyspace of `shards` shards.
#[inline]
pub fn shard_of(key: &[u8], shards: u32) -> u32 {
    jump_consistent_hash(key_hash(key), shards)
}

/// The keys of one shard under a given shard count: `shard_of(key, shards) == shard`. Used to
/// copy, during a resize, only the keys a receiving shard will own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShardSelector {
    /// The shard selected.
    pub shard: u32,
    /// The shard count the keys are hashed by.
    pub shards: u32,
}

impl ShardSelector {
    /// True when `key` hashes to the selected shard.
    #[inline]
    pub fn contains(&self, key: &[u8]) -> bool {
        shard_of(key, self.shards) == self.shard
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Reference values generated from the paper's C++ code (as published with dgryski/go-jump):
    /// bucket for 1, 2, ... buckets.
    #[test]
    fn matches_reference_implementation() {
        let cases: [(u64, &[u32]); 4] = [
            (0, &[0; 20]),
            (1, &[0, 0, 0, 0, 0, 0, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 17, 17]),
            (0xdead_beef, &[0, 1, 2, 3, 3, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 16, 16, 16]),
            (0x0ddc_0ffe_ebad_f00d, &[0, 1, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 15, 15, 15, 15]),
        ];
        for (key, expected) in cases {
            for (i, want) in expected.iter().enumerate() {
                assert_eq!(jump_consistent_hash(key, i as u32 + 1), *want, "key {key:#x} buckets {}", i + 1);
            }
        }
        // Published with the Python `jump` package: hash(256, 1024) == 520.
        assert_eq!(jump_consistent_hash(256, 1024), 520);
    }

    #[test]
    fn zero_buckets_is_bucket_zero() {
        assert_eq!(jump_consistent_hash(42, 0), 0);
    }

    proptest! {
        #[test]
        fn in_range_and_only_moves_to_new_buckets(key in any::<u64>(), m in 1u32..200, extra in 1u32..50) {
            let n = m + extra;
            let before = jump_consistent_hash(key, m);
            let after = jump_consistent_hash(key, n);
            prop_assert!(before < m);
            prop_assert!(after < n);
            // Growing only ever moves a key into one of the new buckets.
            prop_assert!(after == before || after >= m);
        }
    }

    #[test]
    fn keys_spread_evenly() {
        let shards = 6;
        let mut counts = [0u32; 6];
        for i in 0..60_000u32 {
            counts[shard_of(format!("key-{i}").as_bytes(), shards) as usize] += 1;
        }
        for c in counts {
            assert!((9_000..11_000).contains(&c), "uneven spread {counts:?}");
        }
    }
}
