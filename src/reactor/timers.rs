//! Deadlines owned by the loop: which connection times out next, and when.
//!
//! We keep one min-heap of `(deadline, key, serial)`, ordered by deadline. The loop's
//! alarm ([`crate::reactor::alarm`]) is set to the earliest deadline, so with nothing due the
//! process sleeps: no ticks, no wakeups while idle.
//!
//! Why a heap and not a hashed timing wheel: a wheel wakes up every tick to turn, even
//! when nothing is due, which is exactly what an idle daemon must not do. A heap costs
//! O(log n) per insert, and we insert rarely, because deadlines are pushed back *lazily*:
//! activity on a connection only moves a number in the connection's entry (no heap
//! operation, no syscall). So each connection costs at most one heap operation per
//! timeout period, however busy it is.
//!
//! Lazy means a heap entry can be out of date: its connection's deadline was pushed
//! back, or the connection is gone (and its slab key perhaps reused by a new one; the
//! `serial`, unique per connection for the life of the process, tells them apart). Such
//! an entry must never wake the loop: an idle server with no connection open has to
//! sleep with no alarm set, whatever closed before. So before the loop sets its alarm it
//! looks at the earliest entry ([`Timers::peek`]) and, while that one is out of date,
//! drops it ([`Timers::pop`]) or re-inserts it at the connection's real deadline
//! (see `Server::earliest_deadline`). Entries out of date deeper in the heap cost only
//! memory, and would pile up under connection churn (every short-lived connection
//! leaves one), so the loop sweeps them out with [`Timers::retain`] once the heap holds
//! more than twice the live connections plus a slack of 1024: it stays within a
//! constant factor of the live connections, and each sweep is paid for by the closes
//! that made it necessary.
//!
//! A deadline is due once the clock's tick is past it ([`Tick::has_passed`]), and the
//! alarm for it rings at the first instant that is so ([`Clock::passed_at`]): ticks are
//! rounded down, so this is what keeps a timeout from firing early.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

pub use crate::protocol::tick::Tick;

/// Turns `Instant`s into [`Tick`]s and back, counting from the loop's start.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    /// Tick 0.
    start: Instant,
}

impl Clock {
    /// A clock whose tick 0 is now.
    pub fn new() -> Clock {
        Clock {
            start: Instant::now(),
        }
    }

    /// The tick of `at` (whole milliseconds since the start, rounded down).
    pub fn tick(&self, at: Instant) -> Tick {
        let ms = at.saturating_duration_since(self.start).as_millis();
        Tick::from_millis(u64::try_from(ms).unwrap_or(u64::MAX - 1))
    }

    /// The first instant at which the deadline `tick` has passed (for the alarm): the
    /// end of its millisecond, when [`Clock::tick`] reads the next one.
    pub fn passed_at(&self, tick: Tick) -> Instant {
        self.start + Duration::from_millis(tick.as_millis().saturating_add(1))
    }
}

impl Default for Clock {
    fn default() -> Clock {
        Clock::new()
    }
}

/// One scheduled check of a connection's deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Timer {
    /// When to look at the connection again.
    pub at: Tick,
    /// The connection's slab key.
    pub key: usize,
    /// The connection's serial, to recognise a reused key.
    pub serial: u64,
}

/// The loop's deadlines, earliest first.
#[derive(Debug, Default)]
pub struct Timers {
    /// A min-heap (`Reverse` turns std's max-heap around).
    heap: BinaryHeap<Reverse<Timer>>,
}

impl Timers {
    /// No deadlines yet.
    pub fn new() -> Timers {
        Timers::default()
    }

    /// Schedules a check of connection `key` at `at`.
    pub fn schedule(&mut self, at: Tick, key: usize, serial: u64) {
        self.heap.push(Reverse(Timer { at, key, serial }));
    }

    /// The earliest scheduled timer, if any (live or out of date: the caller checks).
    pub fn peek(&self) -> Option<Timer> {
        self.heap.peek().map(|Reverse(t)| *t)
    }

    /// Removes the earliest scheduled timer.
    pub fn pop(&mut self) -> Option<Timer> {
        self.heap.pop().map(|Reverse(t)| t)
    }

    /// Removes and returns one timer whose deadline has passed at `now`, earliest first.
    pub fn pop_due(&mut self, now: Tick) -> Option<Timer> {
        match self.heap.peek() {
            Some(Reverse(t)) if t.at.has_passed(now) => self.pop(),
            _ => None,
        }
    }

    /// Keeps only the timers for which `live` is true (a linear rebuild of the heap).
    pub fn retain(&mut self, mut live: impl FnMut(&Timer) -> bool) {
        self.heap.retain(|Reverse(t)| live(t));
    }

    /// How many timers are scheduled (live and stale).
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    /// True when no timer is scheduled.
    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_alarm_for_a_tick_rings_when_the_clock_reads_the_next() {
        let clock = Clock::new();
        let t = Tick::from_millis(5);
        assert_eq!(clock.tick(clock.passed_at(t)), Tick::from_millis(6));
        assert!(t.has_passed(clock.tick(clock.passed_at(t))));
    }

    /// A deadline `d` after any instant, computed from that instant's tick as the
    /// connections do, is never reached before `d` has really gone by.
    #[test]
    fn a_deadline_never_passes_before_its_time() {
        let clock = Clock::new();
        let d = Duration::from_millis(3);
        for micros in (0..5_000).step_by(37) {
            let activity = clock.start + Duration::from_micros(micros);
            let deadline = clock.tick(activity).after(d);
            let rings = clock.passed_at(deadline);
            assert!(
                rings >= activity + d,
                "{micros} µs: rings {:?} early",
                activity + d - rings
            );
            assert!(
                rings < activity + d + Duration::from_millis(2),
                "{micros} µs: late"
            );
            // Any instant before the true deadline reads a tick the deadline has not passed.
            let just_before = activity + d - Duration::from_micros(1);
            assert!(!deadline.has_passed(clock.tick(just_before)), "{micros} µs");
        }
    }

    #[test]
    fn due_timers_come_out_earliest_first_and_not_before_time() {
        let t0 = Tick::from_millis(1000);
        let s = 1000;
        let mut timers = Timers::new();
        let at = |n: u64| Tick::from_millis(t0.as_millis() + n * s);
        timers.schedule(at(3), 3, 30);
        timers.schedule(at(1), 1, 10);
        timers.schedule(at(2), 2, 20);
        assert_eq!(timers.peek().map(|t| t.at), Some(at(1)));
        assert_eq!(timers.pop_due(t0), None);
        assert_eq!(
            timers.pop_due(at(1)),
            None,
            "not within its own millisecond"
        );
        let due: Vec<usize> =
            std::iter::from_fn(|| timers.pop_due(at(2).after(Duration::from_millis(1))))
                .map(|t| t.key)
                .collect();
        assert_eq!(due, [1, 2]);
        assert_eq!(timers.len(), 1);
        assert_eq!(timers.peek().map(|t| t.key), Some(3));
    }
}
