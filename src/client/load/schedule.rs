//! `--rate R`: the open-loop plan, one fixed send time for every line.
//!
//! A closed-loop generator sends the next line when the last reply came. When the
//! server stalls, it stops sending, so the stall shows up in only the few lines that
//! were in flight: the generator has *coordinated* with the server, and the lines
//! that should have been sent during the stall are missing from the measurement
//! (coordinated omission). A tester's users do not wait for the server before they
//! type.
//!
//! With `--rate` we therefore fix, before the run, when every line is *meant* to be
//! sent: line `k` of the whole run at `k / R` seconds, the lines dealt to the
//! connections in turn, so connection `i` of `C` sends at `(i + j·C) / R` for
//! `j = 0, 1, …` from the moment it came up, for the run's `--duration`. A line whose
//! time has come is sent as soon as its connection may send (it has fewer than
//! `--pipeline` lines in flight); a line that fell behind is sent late, never
//! dropped; and its latency is counted from its intended time, so the time it spent
//! waiting to be sent counts as latency, as a user would feel it (wrk2's `-R`).
//!
//! Like the checker, the plan never reads the clock: the caller passes the times.

use std::time::{Duration, Instant};

/// One connection's share of the plan.
#[derive(Debug, Clone)]
pub struct Plan {
    /// When this connection's first line is due.
    first: Instant,
    /// Seconds between two of its lines: connections / rate.
    period: f64,
    /// Index of its next line.
    next: u64,
    /// How many lines it is planned to send in all.
    lines: u64,
}

impl Plan {
    /// The plan of connection number `id` of `connections`, up at `up`, sending
    /// `rate` lines a second in all (with the others) until `end`.
    pub fn new(id: u64, connections: u64, rate: f64, up: Instant, end: Instant) -> Plan {
        let connections = connections.max(1);
        let first = up + Duration::from_secs_f64((id % connections) as f64 / rate);
        let period = connections as f64 / rate;
        let lines = match end.checked_duration_since(first) {
            Some(span) if !span.is_zero() => (span.as_secs_f64() / period).ceil() as u64,
            _ => 0,
        };
        Plan {
            first,
            period,
            next: 0,
            lines,
        }
    }

    /// How many lines this connection is planned to send in all.
    pub fn lines(&self) -> u64 {
        self.lines
    }

    /// Lines of the plan not sent yet.
    pub fn left(&self) -> u64 {
        self.lines - self.next
    }

    /// When the next line is meant to be sent; `None` when the plan is done.
    pub fn next_due(&self) -> Option<Instant> {
        (self.next < self.lines)
            .then(|| self.first + Duration::from_secs_f64(self.next as f64 * self.period))
    }

    /// The next line was sent.
    pub fn advance(&mut self) {
        self.next = (self.next + 1).min(self.lines);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_dealt_to_the_connections_in_turn() {
        let t0 = Instant::now();
        let end = t0 + Duration::from_secs(1);
        // 10 connections, 1000 lines/s: connection 3's lines at 3 ms, 13 ms, 23 ms, ...
        let mut plan = Plan::new(3, 10, 1000.0, t0, end);
        assert_eq!(plan.lines(), 100);
        assert_eq!(plan.next_due(), Some(t0 + Duration::from_millis(3)));
        plan.advance();
        assert_eq!(plan.next_due(), Some(t0 + Duration::from_millis(13)));
        for _ in 1..100 {
            plan.advance();
        }
        assert_eq!((plan.next_due(), plan.left()), (None, 0));
        plan.advance();
        assert_eq!(plan.left(), 0, "advancing past the end stays at the end");
    }

    #[test]
    fn all_connections_together_plan_rate_times_duration() {
        let t0 = Instant::now();
        for (conns, rate, secs) in [(10, 1000.0, 10), (7, 333.0, 3), (1, 50.0, 2), (64, 10.0, 1)] {
            let end = t0 + Duration::from_secs(secs);
            let total: u64 = (0..conns)
                .map(|id| Plan::new(id, conns, rate, t0, end).lines())
                .sum();
            let want = rate * secs as f64;
            assert!(
                (total as f64 - want).abs() <= 1.0,
                "{conns} {rate} {secs}: {total}"
            );
        }
    }

    #[test]
    fn a_connection_up_after_the_end_plans_nothing() {
        let t0 = Instant::now();
        let plan = Plan::new(0, 1, 100.0, t0 + Duration::from_secs(2), t0);
        assert_eq!((plan.lines(), plan.next_due()), (0, None));
        let at_end = Plan::new(0, 1, 100.0, t0, t0);
        assert_eq!(at_end.lines(), 0);
    }
}
