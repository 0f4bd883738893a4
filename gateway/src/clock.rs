//! The gateway's event-time clock: every write the gateway sends carries an event time from it,
//! taken in pipeline order, so two writes of one key keep their order under last-writer-wins
//! whatever order the store applies them in.
use std::sync::atomic::{AtomicU64, Ordering};

/// A gateway-wide clock of nanoseconds since the Unix epoch that never repeats a value: each
/// tick is `max(now, last + 1)`.
#[derive(Debug, Default)]
pub struct EventClock {
    last: AtomicU64,
}

impl EventClock {
    /// A clock that has handed out nothing yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Reserves `n` (at least 1) consecutive event times and returns the first: strictly
    /// greater than every time handed out before, by any thread, and not behind the system clock.
    pub fn reserve(&self, n: u64) -> u64 {
        let n = n.max(1);
        let now = vasto_client::now_ns();
        let mut last = self.last.load(Ordering::Relaxed);
        loop {
            let first = now.max(last.saturating_add(1));
            match self.last.compare_exchange_weak(last, first.saturating_add(n - 1), Ordering::AcqRel, Ordering::Relaxed) {
                Ok(_) => return first,
                Err(seen) => last = seen,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn ticks_strictly_increase_across_threads() {
        let clock = Arc::new(EventClock::new());
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let clock = Arc::clone(&clock);
                std::thread::spawn(move || {
                    let mut mine = Vec::new();
                    let mut last = 0;
                    for i in 0..10_000u64 {
                        let n = i % 3 + 1;
                        let first = clock.reserve(n);
                        assert!(first > last, "increasing within a thread");
                        last = first + n - 1;
                        mine.extend(first..first + n);
                    }
                    mine
                })
            })
            .collect();
        let mut all: Vec<u64> = threads.into_iter().flat_map(|t| t.join().expect("thread")).collect();
        let len = all.len();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), len, "no time handed out twice");
        assert!(all[0] >= vasto_client::now_ns() - 60_000_000_000, "close to the system clock");
    }
}
