//! Which keys the requests touch: `uniform`, `zipfian[:THETA]` or `latest`, as in YCSB.
//!
//! * `uniform`: every key in `0..keys` equally likely.
//! * `zipfian:THETA` (default 0.99, YCSB's constant): the key of popularity rank `r` is drawn
//!   with probability proportional to `1 / (r + 1)^THETA`, by the method of Gray et al.
//!   ("Quickly generating billion-record synthetic databases", SIGMOD 1994), one `powf` per
//!   draw (like YCSB's generator, it gives ranks 2 to 5 up to a fifth more than their exact
//!   share, and is within a few percent from rank 10 on). Ranks are scrambled into key indexes by a hash (YCSB's "scrambled zipfian"), so the
//!   hot keys are spread over the key space and its shards instead of being `0, 1, 2, ...`.
//! * `latest`: each load thread writes keys in sequence (wrapping within `0..keys`, threads
//!   starting at different offsets), and reads are zipfian over how recently the thread wrote
//!   them: the newest key is the hottest (YCSB's workload D). A thread that has written nothing
//!   yet reads the keys just below its starting offset.
use crate::keys::SplitMix64;
use std::fmt;
use std::str::FromStr;

/// YCSB's default zipfian constant.
pub const DEFAULT_THETA: f64 = 0.99;
/// Key ranks summed exactly into the zipfian normalisation constant; the rest is integrated.
const EXACT_ZETA_TERMS: u64 = 1 << 20;

/// How keys are chosen, as given on the command line.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Distribution {
    /// Every key equally likely.
    Uniform,
    /// Zipfian with skew `theta` (0 < theta < 1), hot keys scattered over the key space.
    Zipfian {
        /// The skew: larger is more skewed.
        theta: f64,
    },
    /// Zipfian over recency: the most recently written keys are the hottest.
    Latest,
}

impl FromStr for Distribution {
    type Err = String;

    /// Parses `uniform`, `zipfian`, `zipfian:THETA` (0 < THETA < 1) or `latest`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let lower = s.trim().to_ascii_lowercase();
        let bad = || format!("invalid distribution {s:?}: expected \"uniform\", \"zipfian\", \"zipfian:THETA\" with 0 < THETA < 1, or \"latest\"");
        match lower.as_str() {
            "uniform" => Ok(Distribution::Uniform),
            "zipfian" => Ok(Distribution::Zipfian { theta: DEFAULT_THETA }),
            "latest" => Ok(Distribution::Latest),
            other => {
                let theta: f64 = other.strip_prefix("zipfian:").ok_or_else(bad)?.trim().parse().map_err(|_| bad())?;
                if theta > 0.0 && theta < 1.0 {
                    Ok(Distribution::Zipfian { theta })
                } else {
                    Err(bad())
                }
            }
        }
    }
}

impl fmt::Display for Distribution {
    /// The same text [`FromStr`] accepts.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Distribution::Uniform => f.write_str("uniform"),
            Distribution::Zipfian { theta } => write!(f, "zipfian:{theta}"),
            Distribution::Latest => f.write_str("latest"),
        }
    }
}

/// The constants of a zipfian over `0..n`, computed once per run and copied to every task.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Zipfian {
    n: u64,
    #[cfg(test)]
    theta: f64,
    alpha: f64,
    zeta_n: f64,
    eta: f64,
    /// `1 + 0.5^theta`: below it (times `zeta_n`) the draw is rank 1.
    second: f64,
}

impl Zipfian {
    /// A zipfian over ranks `0..n` (`n` > 0) with skew `theta` in (0, 1).
    pub(crate) fn new(n: u64, theta: f64) -> Self {
        let zeta_n = zeta(n, theta);
        let zeta_2 = zeta(2.min(n), theta);
        let alpha = 1.0 / (1.0 - theta);
        let eta = if n > 2 { (1.0 - (2.0 / n as f64).powf(1.0 - theta)) / (1.0 - zeta_2 / zeta_n) } else { 1.0 };
        Self {
            n,
            #[cfg(test)]
            theta,
            alpha,
            zeta_n,
            eta,
            second: 1.0 + 0.5f64.powf(theta),
        }
    }

    /// A rank in `0..n`; rank 0 is the most likely.
    #[inline]
    pub(crate) fn rank(&self, rng: &mut SplitMix64) -> u64 {
        // 53 random bits: a uniform double in [0, 1).
        let u = (rng.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64);
        let uz = u * self.zeta_n;
        if uz < 1.0 {
            return 0;
        }
        if uz < self.second {
            return 1.min(self.n - 1);
        }
        let rank = (self.n as f64 * (self.eta * u - self.eta + 1.0).powf(self.alpha)) as u64;
        rank.min(self.n - 1)
    }

    /// The probability of rank `r`.
    #[cfg(test)]
    pub(crate) fn probability(&self, r: u64) -> f64 {
        1.0 / ((r + 1) as f64).powf(self.theta) / self.zeta_n
    }
}

/// `sum over i in 1..=n of 1 / i^theta`: exact for the first [`EXACT_ZETA_TERMS`] terms, the
/// rest by the midpoint rule (relative error far below 1e-9 there), so a key space of billions
/// costs what one of a million does.
fn zeta(n: u64, theta: f64) -> f64 {
    let exact = n.min(EXACT_ZETA_TERMS);
    let mut sum: f64 = (1..=exact).map(|i| 1.0 / (i as f64).powf(theta)).sum();
    if n > exact {
        let integral = |x: f64| x.powf(1.0 - theta) / (1.0 - theta);
        sum += integral(n as f64 + 0.5) - integral(exact as f64 + 0.5);
    }
    sum
}

/// A key chooser for one request loop, built from a [`Distribution`] for a key space.
#[derive(Debug, Clone, Copy)]
pub(crate) enum KeyChooser {
    Uniform { keys: u64 },
    Zipfian { keys: u64, zipf: Zipfian },
    Latest { keys: u64, zipf: Zipfian },
}

impl KeyChooser {
    /// The chooser of `distribution` over `0..keys` (`keys` > 0).
    pub(crate) fn new(distribution: Distribution, keys: u64) -> Self {
        match distribution {
            Distribution::Uniform => KeyChooser::Uniform { keys },
            Distribution::Zipfian { theta } => KeyChooser::Zipfian { keys, zipf: Zipfian::new(keys, theta) },
            Distribution::Latest => KeyChooser::Latest { keys, zipf: Zipfian::new(keys, DEFAULT_THETA) },
        }
    }

    /// The key a read touches. `recency` is the thread's write cursor (see [`Recency`]).
    #[inline]
    pub(crate) fn read_key(&self, rng: &mut SplitMix64, recency: &Recency) -> u64 {
        match *self {
            KeyChooser::Uniform { keys } => rng.below(keys),
            KeyChooser::Zipfian { keys, zipf } => scramble(zipf.rank(rng), keys),
            // Rank 0 is the newest key written, rank 1 the one before, and so on.
            KeyChooser::Latest { keys, zipf } => (recency.newest() + keys - zipf.rank(rng)) % keys,
        }
    }

    /// The key a write touches; under `latest`, the next key after the thread's newest.
    #[inline]
    pub(crate) fn write_key(&self, rng: &mut SplitMix64, recency: &Recency) -> u64 {
        match *self {
            KeyChooser::Latest { keys, .. } => recency.advance(keys),
            _ => self.read_key(rng, recency),
        }
    }
}

/// Where one thread's `latest` writes have got to: only that thread touches it.
#[derive(Debug)]
pub(crate) struct Recency {
    newest: std::cell::Cell<u64>,
}

impl Recency {
    /// Thread `thread` of `threads` starts its writes at its own slice of `0..keys`; its
    /// "newest" key is the one just before.
    pub(crate) fn new(thread: usize, threads: usize, keys: u64) -> Self {
        let start = (u128::from(keys) * thread as u128 / threads.max(1) as u128) as u64;
        Self { newest: std::cell::Cell::new((start + keys - 1) % keys) }
    }

    fn newest(&self) -> u64 {
        self.newest.get()
    }

    /// Moves to the next key and returns it.
    fn advance(&self, keys: u64) -> u64 {
        let next = (self.newest.get() + 1) % keys;
        self.newest.set(next);
        next
    }
}

/// Spreads rank `r` over `0..keys`: a SplitMix64 finalizer, then Lemire's reduction. Distinct
/// ranks may share a key (as in YCSB); the hottest ones almost never do.
#[inline]
fn scramble(r: u64, keys: u64) -> u64 {
    let mut z = r.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    ((u128::from(z) * u128::from(keys)) >> 64) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_round_trips() {
        assert_eq!("uniform".parse::<Distribution>().unwrap(), Distribution::Uniform);
        assert_eq!(" Zipfian ".parse::<Distribution>().unwrap(), Distribution::Zipfian { theta: DEFAULT_THETA });
        assert_eq!("zipfian:0.5".parse::<Distribution>().unwrap(), Distribution::Zipfian { theta: 0.5 });
        assert_eq!("latest".parse::<Distribution>().unwrap(), Distribution::Latest);
        for d in [Distribution::Uniform, Distribution::Zipfian { theta: 0.8 }, Distribution::Latest] {
            assert_eq!(d.to_string().parse::<Distribution>().unwrap(), d);
        }
        for bad in ["", "zipf", "zipfian:", "zipfian:0", "zipfian:1", "zipfian:1.5", "zipfian:-0.2", "zipfian:x", "hotspot"] {
            let err = bad.parse::<Distribution>().unwrap_err();
            assert!(err.contains("invalid distribution") && err.contains("THETA"), "{bad:?}: {err}");
        }
    }

    #[test]
    fn zeta_matches_the_exact_sum_past_the_exact_terms() {
        let n = EXACT_ZETA_TERMS * 3;
        let exact: f64 = (1..=n).map(|i| 1.0 / (i as f64).powf(0.99)).sum();
        let approx = zeta(n, 0.99);
        assert!(((approx - exact) / exact).abs() < 1e-9, "{approx} vs {exact}");
    }

    /// The drawn frequency of each of the hottest ranks matches its probability, and the
    /// draws are as skewed as a zipfian is: for theta 0.99 over 10,000 keys, the top 1% of
    /// ranks take about half of the draws.
    #[test]
    fn zipfian_ranks_follow_their_probabilities() {
        let seed = crate::seed();
        println!("seed {seed}");
        let (n, draws) = (10_000u64, 2_000_000usize);
        let zipf = Zipfian::new(n, 0.99);
        let mut rng = SplitMix64::new(seed);
        let mut counts = vec![0u32; n as usize];
        for _ in 0..draws {
            counts[zipf.rank(&mut rng) as usize] += 1;
        }
        // Ranks 0 and 1 are exact; Gray's continuous approximation gives ranks 2 to 5 up to a
        // fifth more than their share (so does YCSB, which uses it), and is within a few percent
        // from rank 10 on.
        for (r, tolerance) in [(0u64, 0.01), (1, 0.01), (2, 0.25), (3, 0.2), (5, 0.1), (10, 0.05), (20, 0.05), (100, 0.05)] {
            let want = zipf.probability(r) * draws as f64;
            let got = f64::from(counts[r as usize]);
            assert!((got - want).abs() < tolerance * want + 4.0 * want.sqrt(), "rank {r}: {got} draws, expected about {want:.0} (seed {seed})");
        }
        let top: u64 = counts[..(n / 100) as usize].iter().map(|&c| u64::from(c)).sum();
        let share = top as f64 / draws as f64;
        let want: f64 = (0..n / 100).map(|r| zipf.probability(r)).sum();
        assert!((share - want).abs() < 0.03, "top 1% share {share:.3}, expected {want:.3} (seed {seed})");
    }

    #[test]
    fn zipfian_keys_stay_in_range_and_spread_hot_keys() {
        let mut rng = SplitMix64::new(7);
        for keys in [1u64, 2, 3, 1000] {
            let chooser = KeyChooser::new(Distribution::Zipfian { theta: 0.99 }, keys);
            let recency = Recency::new(0, 1, keys);
            assert!((0..10_000).all(|_| chooser.read_key(&mut rng, &recency) < keys));
        }
        // The ten hottest ranks do not land next to each other.
        let hot: Vec<u64> = (0..10).map(|r| scramble(r, 1_000_000)).collect();
        assert!(hot.windows(2).all(|w| w[0].abs_diff(w[1]) > 1), "{hot:?}");
    }

    #[test]
    fn latest_reads_favour_the_newest_writes() {
        let keys = 1_000u64;
        let chooser = KeyChooser::new(Distribution::Latest, keys);
        let recency = Recency::new(1, 2, keys);
        let mut rng = SplitMix64::new(3);
        // Thread 1 of 2 starts writing at 500 and wraps at the end of the key space.
        let written: Vec<u64> = (0..600).map(|_| chooser.write_key(&mut rng, &recency)).collect();
        assert_eq!(written[0], 500);
        assert_eq!(written[499], 999);
        assert_eq!(written[500], 0);
        let newest = *written.last().unwrap();
        let reads: Vec<u64> = (0..10_000).map(|_| chooser.read_key(&mut rng, &recency)).collect();
        let newest_share = reads.iter().filter(|&&k| k == newest).count() as f64 / reads.len() as f64;
        // The newest key is rank 0: about 1 / zeta(1000, 0.99) = 13% of reads.
        assert!((0.10..0.17).contains(&newest_share), "{newest_share}");
        let within_100 = reads.iter().filter(|&&k| (newest + keys - k) % keys < 100).count();
        assert!(within_100 > 6_000, "{within_100} of 10000 reads in the 100 newest keys");
    }

    #[test]
    fn a_thread_that_wrote_nothing_reads_below_its_start() {
        let chooser = KeyChooser::new(Distribution::Latest, 100);
        let recency = Recency::new(0, 4, 100);
        let mut rng = SplitMix64::new(11);
        // Thread 0 starts at 0, so its newest is 99 (wrapped), and rank 0 reads it.
        let hits = (0..1000).filter(|_| chooser.read_key(&mut rng, &recency) == 99).count();
        assert!(hits > 100, "{hits}");
    }
}
