//! Deadlines owned by the loop: which connection times out next, and when.
//!
//! We keep one min-heap of `(deadline, key, serial)`, ordered by deadline. The poll
//! timeout is the earliest deadline, so with nothing due the process sleeps: no ticks,
//! no wakeups while idle.
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
use std::time::Instant;

/// One scheduled check of a connection's deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Timer {
    /// When to look at the connection again.
    pub at: Instant,
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
    pub fn schedule(&mut self, at: Instant, key: usize, serial: u64) {
        self.heap.push(Reverse(Timer { at, key, serial }));
    }

    /// The earliest scheduled deadline, if any: the loop's poll timeout.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse(t)| t.at)
    }

    /// Removes and returns one timer that is due at `now`, earliest first.
    pub fn pop_due(&mut self, now: Instant) -> Option<Timer> {
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
    use std::time::Duration;

    #[test]
    fn due_timers_come_out_earliest_first_and_not_before_time() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let mut timers = Timers::new();
        timers.schedule(t0 + 3 * s, 3, 30);
        timers.schedule(t0 + s, 1, 10);
        timers.schedule(t0 + 2 * s, 2, 20);
        assert_eq!(timers.next_deadline(), Some(t0 + s));
        assert_eq!(timers.pop_due(t0), None);
        let due: Vec<usize> = std::iter::from_fn(|| timers.pop_due(t0 + 2 * s))
            .map(|t| t.key)
            .collect();
        assert_eq!(due, [1, 2]);
        assert_eq!(timers.len(), 1);
        assert_eq!(timers.next_deadline(), Some(t0 + 3 * s));
    }
}
