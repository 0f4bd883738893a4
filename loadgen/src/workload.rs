//! The request mix: parsing (`put`, `get`, `mixed:R`, `ycsb-a|b|c|f`) and per-request choice.
use crate::distribution::{Distribution, DEFAULT_THETA};
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
    /// One of YCSB's core workloads (zipfian keys unless `--distribution` says otherwise).
    Ycsb(Ycsb),
}

/// YCSB's core workloads that a key-value store without scans runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ycsb {
    /// Update heavy: 50% reads, 50% updates (puts).
    A,
    /// Read mostly: 95% reads, 5% updates.
    B,
    /// Read only.
    C,
    /// 50% reads, 50% read-modify-writes: a get, then a put of the same key, timed as one
    /// request from the start of the get to the end of the put.
    F,
}

/// One request the loop sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    Read,
    Write,
    ReadModifyWrite,
}

impl Workload {
    /// The request drawn with the random number `r`.
    #[inline]
    pub(crate) fn op(self, r: u64) -> Op {
        // The high bits of a SplitMix output are uniform; `% 100` bias is < 1e-17.
        let percent = (r >> 1) % 100;
        let read_or = |read_percent: u64, other: Op| if percent < read_percent { Op::Read } else { other };
        match self {
            Workload::Put => Op::Write,
            Workload::Get | Workload::Ycsb(Ycsb::C) => Op::Read,
            Workload::Mixed { read_percent } => read_or(u64::from(read_percent), Op::Write),
            Workload::Ycsb(Ycsb::A) => read_or(50, Op::Write),
            Workload::Ycsb(Ycsb::B) => read_or(95, Op::Write),
            Workload::Ycsb(Ycsb::F) => read_or(50, Op::ReadModifyWrite),
        }
    }

    /// The key distribution when none is given: zipfian (YCSB's default, theta 0.99) for the
    /// YCSB workloads, uniform for the others.
    pub fn default_distribution(self) -> Distribution {
        match self {
            Workload::Ycsb(_) => Distribution::Zipfian { theta: DEFAULT_THETA },
            _ => Distribution::Uniform,
        }
    }
}

impl FromStr for Workload {
    type Err = String;

    /// Parses `put`, `get`, `mixed:R` with `R` the percentage of gets (0 to 100), or one of
    /// `ycsb-a`, `ycsb-b`, `ycsb-c`, `ycsb-f`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let lower = s.trim().to_ascii_lowercase();
        match lower.as_str() {
            "put" => return Ok(Workload::Put),
            "get" => return Ok(Workload::Get),
            "ycsb-a" => return Ok(Workload::Ycsb(Ycsb::A)),
            "ycsb-b" => return Ok(Workload::Ycsb(Ycsb::B)),
            "ycsb-c" => return Ok(Workload::Ycsb(Ycsb::C)),
            "ycsb-f" => return Ok(Workload::Ycsb(Ycsb::F)),
            _ => {}
        }
        let bad = || {
            format!("invalid workload {s:?}: expected \"put\", \"get\", \"mixed:R\" with R the percentage of gets, 0 to 100, or ycsb-a, ycsb-b, ycsb-c, ycsb-f")
        };
        let Some(r) = lower.strip_prefix("mixed:") else { return Err(bad()) };
        match r.trim().parse::<u8>() {
            Ok(read_percent) if read_percent <= 100 => Ok(Workload::Mixed { read_percent }),
            _ => Err(bad()),
        }
    }
}

impl fmt::Display for Workload {
    /// The same text [`FromStr`] accepts: `put`, `get`, `mixed:R`, `ycsb-a` ...
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Workload::Put => f.write_str("put"),
            Workload::Get => f.write_str("get"),
            Workload::Mixed { read_percent } => write!(f, "mixed:{read_percent}"),
            Workload::Ycsb(y) => write!(
                f,
                "ycsb-{}",
                match y {
                    Ycsb::A => 'a',
                    Ycsb::B => 'b',
                    Ycsb::C => 'c',
                    Ycsb::F => 'f',
                }
            ),
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
        assert_eq!("YCSB-F".parse::<Workload>().unwrap(), Workload::Ycsb(Ycsb::F));
    }

    #[test]
    fn rejects_invalid_workloads_with_clear_text() {
        for bad in ["", "puts", "mixed", "mixed:", "mixed:101", "mixed:-1", "mixed:x", "mixed:50%", "scan", "ycsb-d", "ycsb-e", "ycsb"] {
            let err = bad.parse::<Workload>().unwrap_err();
            assert!(err.contains("invalid workload") && err.contains("mixed:R"), "{bad:?}: {err}");
        }
    }

    #[test]
    fn display_round_trips() {
        for w in [
            Workload::Put,
            Workload::Get,
            Workload::Mixed { read_percent: 7 },
            Workload::Ycsb(Ycsb::A),
            Workload::Ycsb(Ycsb::B),
            Workload::Ycsb(Ycsb::C),
            Workload::Ycsb(Ycsb::F),
        ] {
            assert_eq!(w.to_string().parse::<Workload>().unwrap(), w);
        }
    }

    #[test]
    fn op_choice_follows_the_mix() {
        let mut rng = crate::keys::SplitMix64::new(1);
        let mut share = |w: Workload, op: Op| (0..100_000).filter(|_| w.op(rng.next_u64()) == op).count();
        assert_eq!(share(Workload::Put, Op::Write), 100_000);
        assert_eq!(share(Workload::Get, Op::Read), 100_000);
        assert_eq!(share(Workload::Mixed { read_percent: 0 }, Op::Write), 100_000);
        assert_eq!(share(Workload::Mixed { read_percent: 100 }, Op::Read), 100_000);
        assert_eq!(share(Workload::Ycsb(Ycsb::C), Op::Read), 100_000);
        for (w, op, want) in [
            (Workload::Mixed { read_percent: 30 }, Op::Read, 30_000),
            (Workload::Ycsb(Ycsb::A), Op::Write, 50_000),
            (Workload::Ycsb(Ycsb::B), Op::Write, 5_000),
            (Workload::Ycsb(Ycsb::F), Op::ReadModifyWrite, 50_000),
            (Workload::Ycsb(Ycsb::F), Op::Write, 0),
        ] {
            let got = share(w, op);
            assert!(got.abs_diff(want) <= 2_000, "{w}: {got} {op:?} of 100000, expected about {want}");
        }
    }

    #[test]
    fn ycsb_defaults_to_zipfian_and_the_rest_to_uniform() {
        assert_eq!(Workload::Ycsb(Ycsb::B).default_distribution(), Distribution::Zipfian { theta: DEFAULT_THETA });
        assert_eq!(Workload::Mixed { read_percent: 9 }.default_distribution(), Distribution::Uniform);
    }
}
