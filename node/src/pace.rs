//! The pace governor: sets the rate of this store's snapshots and resize copies from its own
//! foreground latency (additive increase, multiplicative decrease).
//!
//! Every [`TICK`] it takes the p99 of the requests the store answered in that tick (all cores,
//! every data operation) and the p99 of how late the cores' canary timers woke (the wait a
//! request arriving then had before its core ran it: copying that steals the CPU lengthens it,
//! the requests' own service time does not show it). While no copy runs, both feed moving
//! baselines (the canaries' every tick, the requests' in ticks with enough of them). While
//! copies run, a tick with either over [`SLOW`] x its baseline halves the rate (down to
//! [`FLOOR`], so a resize always finishes), a tick under [`CALM`] x the baseline raises it by an
//! eighth and 0.5 MB/s (up to the ceiling: `--max-mbps`, or [`UNCAPPED`] without one), and a
//! tick in which no canary woke at all halves it. A tick with too few requests to judge is
//! judged by the canaries alone: a store without clients of its own still shares its machine
//! (measured: a replica no client read from, judged by nothing, copied at 270 MB/s while the
//! other store on the machine served every request). Each new movement starts at [`START`]. With
//! `--fixed-pace`, the rate is `--max-mbps` throughout, as before.
use crate::metrics::StoreMetrics;
use std::sync::Arc;
use std::time::Duration;
use vasto_engine::MoveRate;
use vasto_metrics::{HistogramTotals, LATENCY_BUCKETS};

/// How often the governor looks.
pub(crate) const TICK: Duration = Duration::from_millis(250);
/// The rate a movement starts at, bytes per second per stream.
pub(crate) const START: u64 = 4_000_000;
/// The lowest rate the governor sets.
pub(crate) const FLOOR: u64 = 2_000_000;
/// The ceiling without `--max-mbps`.
pub(crate) const UNCAPPED: u64 = 1_000_000_000;
/// Over this multiple of the baseline p99, the rate halves.
pub(crate) const SLOW: f64 = 1.5;
/// Under this multiple of the baseline p99, the rate grows.
pub(crate) const CALM: f64 = 1.2;
/// Requests a tick needs for its p99 to count.
const MIN_REQUESTS: u64 = 50;
/// Weight of a new calm tick in the baseline.
const BASELINE_WEIGHT: f64 = 0.25;

/// The governor's state between ticks.
#[derive(Debug, Clone)]
pub(crate) struct Governor {
    /// The highest rate it sets.
    ceiling: u64,
    /// Moving p99 of request latency in ticks without data movement, in seconds.
    baseline: Option<f64>,
    /// The same for the cores' canary lateness.
    baseline_late: Option<f64>,
}

/// One tick's foreground: requests answered, their p99, the canaries that woke, and the p99 of
/// their lateness (seconds).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Tick {
    pub requests: u64,
    pub p99: f64,
    pub canaries: u64,
    pub late_p99: f64,
}

/// Lateness under this is timer noise, whatever the baseline (seconds).
const LATE_FLOOR: f64 = 0.000_5;

impl Governor {
    /// A governor that never sets more than `ceiling` bytes per second per stream.
    pub fn new(ceiling: u64) -> Self {
        Self { ceiling: ceiling.max(FLOOR), baseline: None, baseline_late: None }
    }

    /// The baselines (request p99, canary lateness p99), in seconds, once known.
    pub fn baselines(&self) -> (Option<f64>, Option<f64>) {
        (self.baseline, self.baseline_late)
    }

    /// The rate for the next tick, from the current `rate`, whether copies run, and this
    /// tick's foreground.
    pub fn next_rate(&mut self, rate: u64, moving: bool, tick: Tick) -> u64 {
        let judged = tick.requests >= MIN_REQUESTS;
        let follow = |b: Option<f64>, x: f64| Some(b.map_or(x, |b| b + BASELINE_WEIGHT * (x - b)));
        if !moving {
            if tick.canaries > 0 {
                self.baseline_late = follow(self.baseline_late, tick.late_p99);
            }
            if judged {
                self.baseline = follow(self.baseline, tick.p99);
            }
            return START.min(self.ceiling);
        }
        if tick.canaries == 0 {
            // No core ran its canary in a whole tick: as slow as it gets.
            return (rate / 2).max(FLOOR);
        }
        let Some(late) = self.baseline_late else {
            // No tick without movement seen yet (copies started with the store): hold.
            return rate;
        };
        // How far over its baseline each signal is; requests count when there are enough.
        let lateness = tick.late_p99 / late.max(LATE_FLOOR);
        let slowest = match self.baseline {
            Some(base) if judged => lateness.max(tick.p99 / base),
            _ => lateness,
        };
        if slowest > SLOW {
            (rate / 2).max(FLOOR)
        } else if slowest < CALM {
            rate.saturating_add(rate / 8 + 500_000).min(self.ceiling)
        } else {
            rate
        }
    }
}

/// The `q` quantile of the observations in `h`, interpolated within its bucket (as
/// Prometheus's `histogram_quantile` does), in seconds; 0 without observations.
pub(crate) fn quantile(h: &HistogramTotals, q: f64) -> f64 {
    let count = h.count();
    if count == 0 {
        return 0.0;
    }
    let rank = q * count as f64;
    let mut below = 0u64;
    for (i, &n) in h.buckets.iter().enumerate() {
        if n > 0 && (below + n) as f64 >= rank {
            let low = if i == 0 { 0.0 } else { LATENCY_BUCKETS[i - 1] };
            let Some(&high) = LATENCY_BUCKETS.get(i) else { return low };
            return low + (high - low) * ((rank - below as f64) / n as f64).clamp(0.0, 1.0);
        }
        below += n;
    }
    LATENCY_BUCKETS[LATENCY_BUCKETS.len() - 1]
}

/// The observations of `now` that `then` had not counted.
fn since(now: &HistogramTotals, then: &HistogramTotals) -> HistogramTotals {
    let mut tick = HistogramTotals::default();
    for (t, (n, l)) in tick.buckets.iter_mut().zip(now.buckets.iter().zip(&then.buckets)) {
        *t = n.saturating_sub(*l);
    }
    tick
}

/// Sets `rate` every tick from the store's foreground latency, on a thread of its own, for as
/// long as the process runs.
pub(crate) fn spawn_governor(rate: MoveRate, ceiling: u64, metrics: Arc<StoreMetrics>) -> std::io::Result<()> {
    rate.set(START.min(ceiling.max(FLOOR)));
    std::thread::Builder::new().name("vasto-pace".into()).spawn(move || {
        let mut governor = Governor::new(ceiling);
        let mut last = metrics.foreground_latency();
        loop {
            std::thread::sleep(TICK);
            let now = metrics.foreground_latency();
            let (requests, lateness) = (since(&now.0, &last.0), since(&now.1, &last.1));
            last = now;
            let tick = Tick { requests: requests.count(), p99: quantile(&requests, 0.99), canaries: lateness.count(), late_p99: quantile(&lateness, 0.99) };
            let next = governor.next_rate(rate.get(), rate.streams() > 0, tick);
            if next != rate.get() {
                let (base, base_late) = governor.baselines();
                tracing::debug!(
                    bytes_per_sec = next,
                    streams = rate.streams(),
                    p99 = tick.p99,
                    late_p99 = tick.late_p99,
                    base,
                    base_late,
                    "data movement pace"
                );
            }
            rate.set(next);
        }
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_interpolate_within_buckets() {
        let mut h = HistogramTotals::default();
        assert_eq!(quantile(&h, 0.99), 0.0);
        // 100 observations in the 0.5-1 ms bucket.
        h.buckets[5] = 100;
        let p50 = quantile(&h, 0.5);
        assert!((p50 - 0.00075).abs() < 1e-9, "{p50}");
        // One slow request in a hundred moves p99 only within its bucket's share.
        h.buckets[5] = 99;
        h.buckets[10] = 1;
        assert!(quantile(&h, 0.99) <= 0.001 && quantile(&h, 0.999) > 0.025);
        h.buckets[18] = 1000;
        assert_eq!(quantile(&h, 0.99), 10.0, "above every bound: the last bound");
    }

    fn tick(requests: u64, p99: f64, late_p99: f64) -> Tick {
        Tick { requests, p99, canaries: 100, late_p99 }
    }

    #[test]
    fn slow_foreground_halves_the_pace_and_calm_raises_it() {
        let mut g = Governor::new(UNCAPPED);
        // Calm ticks without movement set a 1 ms baseline and hold the start rate.
        for _ in 0..10 {
            assert_eq!(g.next_rate(123, false, tick(1000, 0.001, 0.0002)), START);
        }
        // Copies run and the foreground slows to 3x: halve, down to the floor and no lower.
        let mut rate = START;
        for _ in 0..10 {
            rate = g.next_rate(rate, true, tick(1000, 0.003, 0.0002));
        }
        assert_eq!(rate, FLOOR);
        // Latency back to normal: the rate grows again, every tick.
        let grown = g.next_rate(rate, true, tick(1000, 0.001, 0.0002));
        assert!(grown > rate);
        // Requests fast but the cores wake late (the CPU is taken): halve too.
        assert_eq!(g.next_rate(grown, true, tick(1000, 0.001, 0.004)), (grown / 2).max(FLOOR));
        // Lateness within timer noise does not count.
        assert!(g.next_rate(grown, true, tick(1000, 0.001, 0.0004)) > grown);
        // Between calm and slow: hold.
        assert_eq!(g.next_rate(grown, true, tick(1000, 0.0013, 0.0002)), grown);
        // No requests to judge: the canaries alone decide. Calm cores: grow to the ceiling.
        let mut idle = grown;
        for _ in 0..200 {
            idle = g.next_rate(idle, true, tick(0, 0.0, 0.0002));
        }
        assert_eq!(idle, UNCAPPED);
        // Late cores halve it even without requests (another process takes the machine).
        assert_eq!(g.next_rate(idle, true, tick(10, 0.5, 0.004)), idle / 2);
        // A tick in which no canary woke halves it too.
        let stalled = Tick { canaries: 0, ..tick(1000, 0.001, 0.0) };
        assert_eq!(g.next_rate(grown, true, stalled), (grown / 2).max(FLOOR));
        // Movement over: the next one starts at START again.
        assert_eq!(g.next_rate(idle, false, tick(0, 0.0, 0.0)), START);
    }

    #[test]
    fn the_cap_bounds_everything_and_copies_at_start_hold_until_judged() {
        let cap = START - 1_000_000;
        let mut g = Governor::new(cap);
        // No baseline yet (copies started with the store): hold, with or without requests.
        assert_eq!(g.next_rate(cap - 500_000, true, tick(1000, 0.5, 0.0002)), cap - 500_000);
        assert_eq!(g.next_rate(cap - 100_000, true, tick(0, 0.0, 0.0002)), cap - 100_000);
        assert_eq!(g.next_rate(0, false, tick(0, 0.0, 0.0002)), cap, "a cap under START starts at the cap");
        // A lateness baseline forms without requests; requests without a baseline of their
        // own do not count yet.
        assert_eq!(g.next_rate(cap - 100_000, true, tick(1000, 0.5, 0.0002)), cap);
        assert_eq!(g.next_rate(cap, true, tick(0, 0.0, 0.0002)), cap, "never above the cap");
    }
}
