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
//! operation, no syscall). When a heap entry comes due, the loop compares it with the
//! connection's current deadline and either fires or re-inserts it once. So each
//! connection costs at most one heap operation per timeout period, however busy it is.
//!
//! A heap entry can outlive its connection, and the slab key may be reused by a new
//! one; the `serial` (unique per connection for the life of the process) tells the
//! loop that such an entry is stale.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

/// A point in time, in whole milliseconds since the loop started.
///
/// Half the size of an `Instant`, which matters because every connection keeps two of
/// them (its deadline and its armed timer); and [`Tick::NEVER`] means "no deadline"
/// without the 8 bytes an `Option` would add. Milliseconds are as fine as epoll's own
/// timeout, and a `u64` of them lasts longer than any process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Tick(u64);

impl Tick {
    /// No deadline: later than every real tick.
    pub const NEVER: Tick = Tick(u64::MAX);

    /// `d` after this tick, rounded up to the next millisecond (a timeout never fires
    /// early); `NEVER` stays `NEVER`.
    pub fn after(self, d: Duration) -> Tick {
        // Whole seconds and the rounded-up rest, in u64 arithmetic: this runs on every
        // read and write (the idle deadline moves), and `as_nanos` would divide in 128 bits.
        let rest = u64::from(d.subsec_nanos()).div_ceil(1_000_000);
        let ms = d.as_secs().saturating_mul(1000).saturating_add(rest);
        Tick(self.0.saturating_add(ms))
    }

    /// This tick, or `None` for [`Tick::NEVER`].
    pub fn get(self) -> Option<Tick> {
        (self != Tick::NEVER).then_some(self)
    }
}

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
        Tick(u64::try_from(ms).unwrap_or(u64::MAX - 1))
    }

    /// The instant of `tick` (for the alarm).
    pub fn instant(&self, tick: Tick) -> Instant {
        self.start + Duration::from_millis(tick.0)
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

    /// The earliest scheduled deadline, if any: when the loop's alarm must ring.
    pub fn next_deadline(&self) -> Option<Tick> {
        self.heap.peek().map(|Reverse(t)| t.at)
    }

    /// Removes and returns one timer that is due at `now`, earliest first.
    pub fn pop_due(&mut self, now: Tick) -> Option<Timer> {
        match self.heap.peek() {
            Some(Reverse(t)) if t.at <= now => self.heap.pop().map(|Reverse(t)| t),
            _ => None,
        }
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
    fn ticks_round_deadlines_up_and_never_stays_never() {
        let clock = Clock::new();
        let t0 = clock.tick(clock.instant(Tick(5)));
        assert_eq!(t0, Tick(5));
        assert_eq!(t0.after(Duration::from_micros(1)), Tick(6));
        assert_eq!(t0.after(Duration::from_secs(2)), Tick(2005));
        assert_eq!(Tick::NEVER.after(Duration::from_secs(1)), Tick::NEVER);
        assert_eq!(Tick::NEVER.get(), None);
        assert_eq!(t0.get(), Some(t0));
    }

    #[test]
    fn due_timers_come_out_earliest_first_and_not_before_time() {
        let t0 = Tick(1000);
        let s = 1000;
        let mut timers = Timers::new();
        let at = |n: u64| Tick(t0.0 + n * s);
        timers.schedule(at(3), 3, 30);
        timers.schedule(at(1), 1, 10);
        timers.schedule(at(2), 2, 20);
        assert_eq!(timers.next_deadline(), Some(at(1)));
        assert_eq!(timers.pop_due(t0), None);
        let due: Vec<usize> = std::iter::from_fn(|| timers.pop_due(at(2)))
            .map(|t| t.key)
            .collect();
        assert_eq!(due, [1, 2]);
        assert_eq!(timers.len(), 1);
        assert_eq!(timers.next_deadline(), Some(at(3)));
    }
}
