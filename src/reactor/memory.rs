//! `--max-memory`: all connection buffers together stay bounded.
//!
//! Each connection's buffers are bounded on their own (about `--max-line` +
//! `--max-pending`), but ten thousand of them at once are gigabytes. So the loop keeps a
//! running total of every connection's buffer *capacity* (what the allocator really
//! gave it), updated after each visit, and acts when it passes the limit, the way
//! Redis's `maxmemory-clients` does:
//!
//! 1. **Pause.** The connections holding the most (together at least half the total)
//!    stop being read. Nothing more comes in from them, and what they hold drains as
//!    their clients read their replies. Everyone else is served as usual.
//! 2. **Evict.** If the total is still over the limit [`Timings::evict_after`](crate::config::Timings::evict_after) later, the largest
//!    connections are closed with `ERR out of memory` until the total is under it.
//!
//! When the total falls to 7/8 of the limit, the paused connections are read again
//! (the loop owes each a visit: their sockets may hold data that raised no new edge).

use std::time::{Duration, Instant};

use log::{info, warn};

use crate::protocol::conn::{CloseReason, ERR_OUT_OF_MEMORY};
use crate::reactor::server::Server;
use crate::waypoint;

/// The loop's memory bookkeeping.
#[derive(Debug)]
pub struct Memory {
    /// The sum of every live connection's charge (its buffers' capacity).
    pub total: usize,
    /// Over the limit since this instant: paused connections, eviction due at
    /// `since + evict_after`.
    pub pressure_since: Option<Instant>,
    /// How long paused connections have to drain before the largest are closed
    /// ([`Timings::evict_after`](crate::config::Timings::evict_after)).
    pub evict_after: Duration,
}

impl Server {
    /// Re-counts connection `key` after a visit: its buffers may have grown or shrunk.
    pub(super) fn recharge(&mut self, key: usize) {
        let Some(entry) = self.conns.get_mut(key) else {
            return;
        };
        let capacity = entry.conn.capacity();
        self.memory.total = self.memory.total - entry.charged + capacity;
        entry.charged = capacity;
    }

    /// Once per turn: pause, evict or resume as the total asks. Costs nothing (one
    /// comparison) while the total is under the limit.
    pub(super) fn enforce_memory_limit(&mut self) {
        waypoint("enforce_memory_limit");
        let limit = self.max_memory;
        match self.memory.pressure_since {
            None if self.memory.total > limit => {
                warn!(
                    "buffers hold {} bytes, over --max-memory {limit}: pausing the largest clients",
                    self.memory.total
                );
                self.memory.pressure_since = Some(self.now);
                self.pause_largest();
            }
            Some(since)
                if self.memory.total > limit && self.now >= since + self.memory.evict_after =>
            {
                self.evict_largest();
                self.memory.pressure_since = Some(self.now);
            }
            Some(_) if self.memory.total <= limit / 8 * 7 => {
                info!(
                    "buffers hold {} bytes: reading every client again",
                    self.memory.total
                );
                self.memory.pressure_since = None;
                self.resume_paused();
            }
            _ => {}
        }
    }

    /// When the loop must next look at memory (the eviction deadline), if under pressure.
    pub(super) fn memory_deadline(&self) -> Option<Instant> {
        let evict_after = self.memory.evict_after;
        self.memory.pressure_since.map(|since| since + evict_after)
    }

    /// Live connection keys, largest charge first.
    fn keys_by_charge(&mut self) -> Vec<(usize, usize)> {
        let mut keys: Vec<(usize, usize)> = self
            .conns
            .live_keys()
            .into_iter()
            .filter_map(|key| self.conns.get_mut(key).map(|e| (e.charged, key)))
            .collect();
        keys.sort_unstable_by(|a, b| b.cmp(a));
        keys
    }

    /// Stops reading from the largest connections, until they hold half the total.
    fn pause_largest(&mut self) {
        let mut paused = 0;
        for (charge, key) in self.keys_by_charge() {
            if paused >= self.memory.total / 2 || charge == 0 {
                break;
            }
            if let Some(entry) = self.conns.get_mut(key) {
                entry.paused = true;
                paused += charge;
            }
        }
    }

    /// Closes the largest connections, with `ERR out of memory`, until the total of the
    /// rest is under the limit.
    fn evict_largest(&mut self) {
        let mut total = self.memory.total;
        for (charge, key) in self.keys_by_charge() {
            if total <= self.max_memory {
                break;
            }
            let Some(entry) = self.conns.get_mut(key) else {
                continue;
            };
            warn!(
                "closing {}: it holds {charge} bytes (out of memory)",
                entry.peer
            );
            entry
                .conn
                .refuse(ERR_OUT_OF_MEMORY, CloseReason::OutOfMemory);
            total -= charge;
            // Send the message now; the visit also re-counts what it holds.
            entry.paused = false;
            self.visit(key);
        }
    }

    /// Reads every paused connection again: we owe each a visit.
    fn resume_paused(&mut self) {
        for key in self.conns.live_keys() {
            if let Some(entry) = self.conns.get_mut(key) {
                if std::mem::take(&mut entry.paused) && !entry.owed {
                    entry.owed = true;
                    self.owed.push(key);
                }
            }
        }
    }
}
