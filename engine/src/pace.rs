//! Keeping a stream of bytes under a rate: data movement (snapshot and resize exports, copy
//! streams) must leave room for foreground traffic.
use std::time::{Duration, Instant};

/// Counts the bytes of one stream and says how long to pause to stay at `bytes_per_sec`.
#[derive(Debug, Clone)]
pub struct Pacer {
    bytes_per_sec: u64,
    started: Instant,
    sent: u64,
}

impl Pacer {
    /// A pacer starting now; `bytes_per_sec` 0 means unlimited (it never asks for a pause).
    pub fn new(bytes_per_sec: u64) -> Self {
        Self { bytes_per_sec, started: Instant::now(), sent: 0 }
    }

    /// Records `bytes` more and returns the pause that keeps the total at the rate, if any.
    pub fn after(&mut self, bytes: u64) -> Option<Duration> {
        self.sent += bytes;
        delay(self.sent, self.bytes_per_sec, self.started.elapsed())
    }
}

/// How long to pause so that `sent` bytes take at least `sent / bytes_per_sec` (None: no pause).
fn delay(sent: u64, bytes_per_sec: u64, elapsed: Duration) -> Option<Duration> {
    if bytes_per_sec == 0 {
        return None;
    }
    let due = Duration::from_secs_f64(sent as f64 / bytes_per_sec as f64);
    due.checked_sub(elapsed).filter(|d| !d.is_zero())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pacing_holds_the_rate() {
        assert_eq!(delay(10 << 20, 0, Duration::ZERO), None, "0 means unlimited");
        assert_eq!(delay(10 << 20, 10 << 20, Duration::from_millis(250)), Some(Duration::from_millis(750)));
        assert_eq!(delay(10 << 20, 10 << 20, Duration::from_secs(2)), None, "already slower than the limit");
        assert_eq!(Pacer::new(0).after(1 << 30), None);
        assert!(Pacer::new(1 << 20).after(10 << 20).is_some_and(|d| d > Duration::from_secs(9)));
    }
}
