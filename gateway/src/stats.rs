//! Gateway-wide counters for INFO and Prometheus: per command (calls, time, failures,
//! rejections, a latency histogram) and per gateway (connections, commands, errors). Plain
//! relaxed atomics: a few adds per command.
use crate::command::{Cmd, SPECS};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Instant;
use vasto_metrics::{labels, Histogram, Scrape};

/// Counters of one command.
#[derive(Default)]
pub struct CommandStats {
    /// Calls that ran (rejected ones excluded).
    pub calls: AtomicU64,
    /// Microseconds spent in them.
    pub usec: AtomicU64,
    /// Calls that answered an error.
    pub failed: AtomicU64,
    /// Calls refused before they ran (wrong arity, not authenticated).
    pub rejected: AtomicU64,
    /// Latency of the calls that ran; unlike the counters above, CONFIG RESETSTAT leaves it.
    pub latency: Histogram,
}

/// Everything INFO reports.
pub struct Stats {
    /// Per command, indexed by [`Cmd`].
    pub commands: Vec<CommandStats>,
    /// Connections open now.
    pub connected_clients: AtomicU64,
    /// Connections accepted since the start.
    pub connections_received: AtomicU64,
    /// Connections refused because `max_clients` were open.
    pub rejected_connections: AtomicU64,
    /// Commands handled since the start (every request, errors included).
    pub commands_processed: AtomicU64,
    /// Error replies since the start.
    pub error_replies: AtomicU64,
    /// When the gateway started.
    pub started: Instant,
}

impl Default for Stats {
    fn default() -> Self {
        Self {
            commands: SPECS.iter().map(|_| CommandStats::default()).collect(),
            connected_clients: AtomicU64::new(0),
            connections_received: AtomicU64::new(0),
            rejected_connections: AtomicU64::new(0),
            commands_processed: AtomicU64::new(0),
            error_replies: AtomicU64::new(0),
            started: Instant::now(),
        }
    }
}

impl Stats {
    /// Counts one call of `cmd` that took `usec` and failed or not.
    pub fn record(&self, cmd: Cmd, usec: u64, failed: bool) {
        if let Some(s) = self.commands.get(cmd as usize) {
            s.calls.fetch_add(1, Relaxed);
            s.usec.fetch_add(usec, Relaxed);
            s.latency.observe_ns(usec.saturating_mul(1000), 1);
            if failed {
                s.failed.fetch_add(1, Relaxed);
            }
        }
    }

    /// Counts one refused call of `cmd`.
    pub fn reject(&self, cmd: Cmd) {
        if let Some(s) = self.commands.get(cmd as usize) {
            s.rejected.fetch_add(1, Relaxed);
        }
    }

    /// CONFIG RESETSTAT: zeroes the command and error counters (not the connection gauges).
    pub fn reset(&self) {
        for s in &self.commands {
            for c in [&s.calls, &s.usec, &s.failed, &s.rejected] {
                c.store(0, Relaxed);
            }
        }
        for c in [&self.connections_received, &self.rejected_connections, &self.commands_processed, &self.error_replies] {
            c.store(0, Relaxed);
        }
    }

    /// The `# Commandstats` lines, Redis's format, for commands called at least once.
    pub fn commandstats(&self, out: &mut String) {
        use std::fmt::Write;
        for (spec, s) in SPECS.iter().zip(&self.commands) {
            let (calls, usec, failed, rejected) = (s.calls.load(Relaxed), s.usec.load(Relaxed), s.failed.load(Relaxed), s.rejected.load(Relaxed));
            if calls + rejected == 0 {
                continue;
            }
            let per_call = if calls == 0 { 0.0 } else { usec as f64 / calls as f64 };
            let _ =
                write!(out, "cmdstat_{}:calls={calls},usec={usec},usec_per_call={per_call:.2},rejected_calls={rejected},failed_calls={failed}\r\n", spec.name);
        }
    }
}

impl Stats {
    /// Writes the gateway's Prometheus families. The command counters are INFO's, so CONFIG
    /// RESETSTAT resets them (Prometheus' `rate` takes a reset as a restart).
    pub fn collect(&self, s: &mut Scrape<'_>) -> std::fmt::Result {
        let called = || SPECS.iter().zip(&self.commands).filter(|(_, c)| c.calls.load(Relaxed) + c.rejected.load(Relaxed) > 0);
        s.counter(
            "vasto_gateway_commands",
            "Commands by name and result: ok, error (answered an error), rejected (refused before running).",
            called().flat_map(|(spec, c)| {
                let (calls, failed) = (c.calls.load(Relaxed), c.failed.load(Relaxed));
                [("ok", calls.saturating_sub(failed)), ("error", failed), ("rejected", c.rejected.load(Relaxed))]
                    .map(|(result, n)| (labels(&[("command", spec.name), ("result", result)]), n))
            }),
        )?;
        s.histogram(
            "vasto_gateway_command_duration_seconds",
            "Time from a command's parse to its reply, by command.",
            called().map(|(spec, c)| (labels(&[("command", spec.name)]), c.latency.totals())).filter(|(_, t)| t.count() > 0),
        )?;
        s.gauge_one("vasto_gateway_connections", "Client connections open.", self.connected_clients.load(Relaxed) as f64)?;
        s.counter(
            "vasto_gateway_connections_accepted",
            "Client connections accepted.",
            [(vasto_metrics::Labels::new(), self.connections_received.load(Relaxed))],
        )?;
        s.counter(
            "vasto_gateway_connections_rejected",
            "Client connections refused because max-clients were open.",
            [(vasto_metrics::Labels::new(), self.rejected_connections.load(Relaxed))],
        )?;
        s.counter("vasto_gateway_error_replies", "Error replies sent.", [(vasto_metrics::Labels::new(), self.error_replies.load(Relaxed))])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commandstats_lines_follow_redis() {
        let s = Stats::default();
        s.record(Cmd::Get, 10, false);
        s.record(Cmd::Get, 5, true);
        s.reject(Cmd::Set);
        let mut out = String::new();
        s.commandstats(&mut out);
        assert_eq!(
            out,
            "cmdstat_get:calls=2,usec=15,usec_per_call=7.50,rejected_calls=0,failed_calls=1\r\n\
             cmdstat_set:calls=0,usec=0,usec_per_call=0.00,rejected_calls=1,failed_calls=0\r\n"
        );
        let text = vasto_metrics::render(move |m| s.collect(m)).expect("render");
        for line in [
            "vasto_gateway_commands_total{command=\"get\",result=\"ok\"} 1",
            "vasto_gateway_commands_total{command=\"get\",result=\"error\"} 1",
            "vasto_gateway_commands_total{command=\"set\",result=\"rejected\"} 1",
            "vasto_gateway_command_duration_seconds_count{command=\"get\"} 2",
            "vasto_gateway_command_duration_seconds_bucket{le=\"0.000025\",command=\"get\"} 2",
        ] {
            assert!(text.contains(&format!("{line}\n")), "{line} in {text}");
        }
    }

    #[test]
    fn resetstat_clears_the_command_counters() {
        let s = Stats::default();
        s.record(Cmd::Get, 10, false);
        let mut out = String::new();
        s.reset();
        s.commandstats(&mut out);
        assert_eq!(out, "");
    }
}
