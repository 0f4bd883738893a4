//! Per-task randomness and key formatting, allocation-free in the request loop.

/// Prefix of every generated key.
const KEY_PREFIX: &[u8] = b"key:";
/// Minimum number of digits of a key index (`key:000000000042`).
const MIN_DIGITS: usize = 12;

/// SplitMix64 (Steele, Lea & Flood): tiny, fast, and good enough to pick keys and ops.
#[derive(Debug, Clone)]
pub(crate) struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    /// A generator starting from `seed`; different seeds give unrelated streams.
    pub(crate) fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    /// The next 64 random bits.
    #[inline]
    pub(crate) fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A uniform number in `0..n` (Lemire's multiply-shift; bias below 2^-64 * n). `n` must be > 0.
    #[inline]
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// Fills `buf` with random bytes.
    pub(crate) fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let bytes = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&bytes[..chunk.len()]);
        }
    }
}

/// A reusable key buffer: `key:` followed by a fixed-width, zero-padded decimal index, the same
/// bytes as `format!("key:{:012}", i)` (wider when the key space needs more than 12 digits).
#[derive(Debug, Clone)]
pub(crate) struct KeyBuf {
    buf: Vec<u8>,
}

impl KeyBuf {
    /// A buffer wide enough for every index in `0..keys`.
    pub(crate) fn new(keys: u64) -> Self {
        let digits = decimal_digits(keys.saturating_sub(1)).max(MIN_DIGITS);
        let mut buf = Vec::with_capacity(KEY_PREFIX.len() + digits);
        buf.extend_from_slice(KEY_PREFIX);
        buf.resize(KEY_PREFIX.len() + digits, b'0');
        Self { buf }
    }

    /// Writes key number `i` in place and returns it. Indexes too large for the width keep only
    /// their low digits (cannot happen for indexes below the `keys` given to [`KeyBuf::new`]).
    #[inline]
    pub(crate) fn set(&mut self, mut i: u64) -> &[u8] {
        for b in self.buf[KEY_PREFIX.len()..].iter_mut().rev() {
            *b = b'0' + (i % 10) as u8;
            i /= 10;
        }
        &self.buf
    }
}

/// Number of decimal digits of `n` (1 for 0).
fn decimal_digits(mut n: u64) -> usize {
    let mut d = 1;
    while n >= 10 {
        n /= 10;
        d += 1;
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitmix_matches_reference_values() {
        // Reference outputs of SplitMix64 seeded with 1234567 (from the original C code).
        let mut rng = SplitMix64::new(1_234_567);
        let expected = [6_457_827_717_110_365_317u64, 3_203_168_211_198_807_973, 9_817_491_932_198_370_423];
        for want in expected {
            assert_eq!(rng.next_u64(), want);
        }
    }

    #[test]
    fn below_stays_in_range_and_covers_it() {
        let mut rng = SplitMix64::new(42);
        let mut seen = [0u32; 10];
        for _ in 0..100_000 {
            let v = rng.below(10);
            assert!(v < 10);
            seen[v as usize] += 1;
        }
        assert!(seen.iter().all(|&c| (9_000..11_000).contains(&c)), "{seen:?}");
        assert_eq!(rng.below(1), 0);
    }

    #[test]
    fn different_seeds_give_different_streams() {
        let a: Vec<u64> = {
            let mut r = SplitMix64::new(1);
            (0..4).map(|_| r.next_u64()).collect()
        };
        let b: Vec<u64> = {
            let mut r = SplitMix64::new(2);
            (0..4).map(|_| r.next_u64()).collect()
        };
        assert_ne!(a, b);
    }

    #[test]
    fn fill_handles_partial_chunks() {
        let mut buf = [0u8; 13];
        SplitMix64::new(9).fill(&mut buf);
        assert!(buf[8..].iter().any(|&b| b != 0));
    }

    #[test]
    fn keys_match_format() {
        let mut kb = KeyBuf::new(100_000);
        for i in [0u64, 1, 9, 10, 42, 99_999, 123_456_789] {
            assert_eq!(kb.set(i), format!("key:{i:012}").as_bytes());
        }
        // Reuse after a longer number leaves no stale digits.
        assert_eq!(kb.set(7), b"key:000000000007");
    }

    #[test]
    fn wide_key_spaces_get_wider_keys() {
        let keys = 10_000_000_000_000u64; // indexes up to 13 digits
        let mut kb = KeyBuf::new(keys);
        assert_eq!(kb.set(keys - 1), format!("key:{:013}", keys - 1).as_bytes());
        assert_eq!(kb.set(5), b"key:0000000000005");
        let mut max = KeyBuf::new(u64::MAX);
        assert_eq!(max.set(u64::MAX - 1), format!("key:{}", u64::MAX - 1).as_bytes());
    }

    #[test]
    fn digit_counts() {
        assert_eq!(decimal_digits(0), 1);
        assert_eq!(decimal_digits(9), 1);
        assert_eq!(decimal_digits(10), 2);
        assert_eq!(decimal_digits(u64::MAX), 20);
    }
}
