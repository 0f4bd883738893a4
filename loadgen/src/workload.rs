//! The request mix: parsing (`put`, `get`, `mixed:R`) and per-request choice.
use std::fmt;
use std::str::FromStr;

/// Which requests the load generator sends.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Workload {
    /// Only puts.
    Put,
    /// Only gets.
    Get,
    /// Gets and puts chosen at random per request.
    Mixed {
        /// Percentage of requests that are gets (0..=100); the rest are puts.
        read_percent: u8,
    },
}

impl Workload {
    /// Whether the request drawn with the random number `r` is a get.
    #[inline]
    pub(crate) fn is_read(self, r: u64) -> bool {
        match self {
            Workload::Put => false,
            Workload::Get => true,
            // The high bits of a SplitMix output are uniform; `% 100` bias is < 1e-17.
            Workload::Mixed { read_percent } => ((r >> 1) % 100) < u64::from(read_percent),
        }
    }
}

impl FromStr for Workload {
    type Err = String;

    /// Parses `put`, `get` or `mixed:R` with `R` the percentage of gets, 0 to 100.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let lower = s.trim().to_ascii_lowercase();
        match lower.as_str() {
            "put" => return Ok(Workload::Put),
            "get" => return Ok(Workload::Get),
            _ => {}
        }
        let bad = || format!("invalid workload {s:?}: expected \"put\", \"get\" or \"mixed:R\" with R the percentage of gets, 0 to 100");
        let Some(r) = lower.strip_prefix("mixed:") else { return Err(bad()) };
        match r.trim().parse::<u8>() {
            Ok(read_percent) if read_percent <= 100 => Ok(Workload::Mixed { read_percent }),
            _ => Err(bad()),
        }
    }
}

impl fmt::Display for Workload {
    /// The same text [`FromStr`] accepts: `put`, `get`, `mixed:R`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Workload::Put => f.write_str("put"),
            Workload::Get => f.write_str("get"),
            Workload::Mixed { read_percent } => write!(f, "mixed:{read_percent}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_valid_workloads() {
        assert_eq!("put".parse::<Workload>().unwrap(), Workload::Put);
        assert_eq!("get".parse::<Workload>().unwrap(), Workload::Get);
        assert_eq!(" GET ".parse::<Workload>().unwrap(), Workload::Get);
        assert_eq!("mixed:0".parse::<Workload>().unwrap(), Workload::Mixed { read_percent: 0 });
        assert_eq!("mixed:50".parse::<Workload>().unwrap(), Workload::Mixed { read_percent: 50 });
        assert_eq!("mixed:100".parse::<Workload>().unwrap(), Workload::Mixed { read_percent: 100 });
    }

    #[test]
    fn rejects_invalid_workloads_with_clear_text() {
        for bad in ["", "puts", "mixed", "mixed:", "mixed:101", "mixed:-1", "mixed:x", "mixed:50%", "scan"] {
            let err = bad.parse::<Workload>().unwrap_err();
            assert!(err.contains("invalid workload") && err.contains("mixed:R"), "{bad:?}: {err}");
        }
    }

    #[test]
    fn display_round_trips() {
        for w in [Workload::Put, Workload::Get, Workload::Mixed { read_percent: 7 }] {
            assert_eq!(w.to_string().parse::<Workload>().unwrap(), w);
        }
    }

    #[test]
    fn read_choice_follows_the_mix() {
        let mut rng = crate::keys::SplitMix64::new(1);
        assert!(!(0..1000).any(|_| Workload::Put.is_read(rng.next_u64())));
        assert!((0..1000).all(|_| Workload::Get.is_read(rng.next_u64())));
        assert!(!(0..1000).any(|_| Workload::Mixed { read_percent: 0 }.is_read(rng.next_u64())));
        assert!((0..1000).all(|_| Workload::Mixed { read_percent: 100 }.is_read(rng.next_u64())));
        let mix = Workload::Mixed { read_percent: 30 };
        let reads = (0..100_000).filter(|_| mix.is_read(rng.next_u64())).count();
        assert!((28_000..32_000).contains(&reads), "{reads} reads of 100000");
    }
}
