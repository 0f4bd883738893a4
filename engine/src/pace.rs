//! Keeping data movement (snapshot and resize exports, copy streams) under a rate that leaves
//! room for foreground traffic. The rate is shared by every stream of a store and may change
//! while they run: the store's pace governor lowers it when foreground latency rises.
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The rate every paced stream of a store keeps to, in bytes per second per stream (0:
/// unlimited), and how many paced streams run now. Clones share it.
#[derive(Debug, Clone, Default)]
pub struct MoveRate(Arc<RateState>);

#[derive(Debug, Default)]
struct RateState {
    bytes_per_sec: AtomicU64,
    streams: AtomicUsize,
}

impl MoveRate {
    /// A rate of `bytes_per_sec` per stream (0: unlimited).
    pub fn new(bytes_per_sec: u64) -> Self {
        let rate = Self::default();
        rate.set(bytes_per_sec);
        rate
    }

    /// Changes the rate; running streams keep to it from their next piece.
    pub fn set(&self, bytes_per_sec: u64) {
        self.0.bytes_per_sec.store(bytes_per_sec, Ordering::Relaxed);
    }

    /// The rate now, in bytes per second per stream (0: unlimited).
    pub fn get(&self) -> u64 {
        self.0.bytes_per_sec.load(Ordering::Relaxed)
    }

    /// Paced streams running now (live [`Pacer`]s).
    pub fn streams(&self) -> usize {
        self.0.streams.load(Ordering::Relaxed)
    }
}

/// Paces one stream: counts its bytes and says how long to pause to keep to its [`MoveRate`]
/// as that rate is now. Counted in [`MoveRate::streams`] while it lives.
#[derive(Debug)]
pub struct Pacer {
    rate: MoveRate,
    /// When the bytes counted so far are paid for at the rates they were counted at.
    paid_until: Option<Instant>,
}

impl Pacer {
    /// A pacer of one stream keeping to `rate`.
    pub fn new(rate: &MoveRate) -> Self {
        rate.0.streams.fetch_add(1, Ordering::Relaxed);
        Self { rate: rate.clone(), paid_until: None }
    }

    /// Records `bytes` more and returns the pause that keeps the stream at the rate, if any.
    /// Time the stream spent idle is not saved up for a burst later.
    pub fn after(&mut self, bytes: u64) -> Option<Duration> {
        let now = Instant::now();
        let (paid_until, pause) = pay(self.paid_until, now, bytes, self.rate.get());
        self.paid_until = paid_until;
        pause
    }
}

impl Drop for Pacer {
    fn drop(&mut self) {
        self.rate.0.streams.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Pays for `bytes` at `bytes_per_sec` from `paid_until` (or from `now` if that has passed):
/// returns the new time paid until and the pause until then (None: no pause, or unlimited).
fn pay(paid_until: Option<Instant>, now: Instant, bytes: u64, bytes_per_sec: u64) -> (Option<Instant>, Option<Duration>) {
    if bytes_per_sec == 0 {
        return (None, None);
    }
    let from = paid_until.filter(|&t| t > now).unwrap_or(now);
    let until = from + Duration::from_secs_f64(bytes as f64 / bytes_per_sec as f64);
    (Some(until), Some(until - now).filter(|d| !d.is_zero()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pacing_holds_the_rate_and_follows_changes() {
        let now = Instant::now();
        assert_eq!(pay(None, now, 10 << 20, 0), (None, None), "0 means unlimited");
        let (until, pause) = pay(None, now, 10 << 20, 10 << 20);
        assert_eq!(pause, Some(Duration::from_secs(1)));
        // The next piece queues behind the first.
        let (_, pause) = pay(until, now + Duration::from_millis(250), 10 << 20, 10 << 20);
        assert_eq!(pause, Some(Duration::from_millis(1750)));
        // Idle time is not credit: a stream that paused long pays from now.
        let (_, pause) = pay(until, now + Duration::from_secs(60), 1 << 20, 1 << 20);
        assert_eq!(pause, Some(Duration::from_secs(1)));

        let rate = MoveRate::new(0);
        let mut pacer = Pacer::new(&rate);
        assert_eq!((pacer.after(1 << 30), rate.streams()), (None, 1));
        rate.set(1 << 20);
        assert!(pacer.after(10 << 20).is_some_and(|d| d > Duration::from_secs(9)), "a lower rate applies to the running stream");
        drop(pacer);
        assert_eq!(rate.streams(), 0);
    }
}
