//! A slab whose removals wait for the end of the event batch.
//!
//! The slab key is the `mio::Token` of a connection. One call to `poll` returns a batch
//! of events, and closing a connection does not take its other events out of that batch.
//! If we freed the slot at once and a new connection were accepted into it later in the
//! same batch, the old connection's leftover event would be delivered to the new one.
//!
//! So closing only *retires* a slot: lookups stop finding it, but the key stays taken.
//! The loop calls [`Slots::reap`] once the batch is done; only then are keys reused.
//! (The other cure is a generation counter in the token; deferring is simpler and also
//! gives the loop one single place where connections are really closed.)

use crate::waypoint;
use slab::Slab;

/// A value and whether it has been retired.
#[derive(Debug)]
struct Slot<T> {
    /// The connection (or any value).
    value: T,
    /// Closed during this batch; removed by the next [`Slots::reap`].
    retired: bool,
}

/// Connections by key, with deferred removal. See the module docs.
#[derive(Debug)]
pub struct Slots<T> {
    /// Live and retired values; a retired key is never handed out again before reaping.
    slab: Slab<Slot<T>>,
    /// Keys retired since the last reap.
    retired: Vec<usize>,
}

impl<T> Default for Slots<T> {
    fn default() -> Slots<T> {
        Slots {
            slab: Slab::new(),
            retired: Vec::new(),
        }
    }
}

impl<T> Slots<T> {
    /// An empty set of slots.
    pub fn new() -> Slots<T> {
        Slots::default()
    }

    /// The key the next [`Slots::insert`] will use (to register a socket under it first).
    pub fn vacant_key(&self) -> usize {
        waypoint("vacant_key");
        self.slab.vacant_key()
    }

    /// Stores `value` and returns its key.
    pub fn insert(&mut self, value: T) -> usize {
        waypoint("insert");
        self.slab.insert(Slot {
            value,
            retired: false,
        })
    }

    /// The live value at `key`; `None` when the key is vacant or retired.
    pub fn get_mut(&mut self, key: usize) -> Option<&mut T> {
        match self.slab.get_mut(key) {
            Some(slot) if !slot.retired => Some(&mut slot.value),
            _ => None,
        }
    }

    /// Marks `key` closed: invisible from now on, freed at the next [`Slots::reap`].
    pub fn retire(&mut self, key: usize) {
        waypoint("retire");
        if let Some(slot) = self.slab.get_mut(key) {
            if !slot.retired {
                slot.retired = true;
                self.retired.push(key);
            }
        }
    }

    /// Frees every retired slot, giving each value to `close` (the one place where the
    /// loop really closes connections).
    pub fn reap(&mut self, mut close: impl FnMut(usize, T)) {
        waypoint("reap");
        for key in self.retired.drain(..) {
            close(key, self.slab.remove(key).value);
        }
    }

    /// Keys of live (not retired) values.
    pub fn live_keys(&self) -> Vec<usize> {
        self.slab
            .iter()
            .filter(|(_, slot)| !slot.retired)
            .map(|(key, _)| key)
            .collect()
    }

    /// Live (not retired) values in key order, for a walk that only looks.
    pub fn live(&self) -> impl Iterator<Item = &T> {
        self.slab
            .iter()
            .filter(|(_, slot)| !slot.retired)
            .map(|(_, slot)| &slot.value)
    }

    /// How many slots are taken, retired ones included (they still hold a socket).
    pub fn len(&self) -> usize {
        self.slab.len()
    }

    /// True when no slot is taken.
    pub fn is_empty(&self) -> bool {
        self.slab.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The sequence the reactor must survive: in one batch, connection A closes, a new
    /// connection B is accepted, then A's stale event arrives. B must not receive it.
    #[test]
    fn a_key_retired_in_a_batch_is_not_reused_in_that_batch() {
        let mut slots = Slots::new();
        let a = slots.insert("A");
        slots.retire(a);
        let b = slots.insert("B");
        assert_ne!(a, b, "B must not take A's key before the batch ends");
        assert_eq!(slots.get_mut(a), None, "A's stale event finds nobody");
        assert_eq!(slots.get_mut(b), Some(&mut "B"));

        let mut closed = Vec::new();
        slots.reap(|key, value| closed.push((key, value)));
        assert_eq!(closed, [(a, "A")]);
        // Next batch: the key is free again, and its old events are long gone.
        let c = slots.insert("C");
        assert_eq!(c, a);
        assert_eq!(slots.get_mut(c), Some(&mut "C"));
    }

    #[test]
    fn retiring_twice_closes_once() {
        let mut slots = Slots::new();
        let a = slots.insert(1);
        slots.retire(a);
        slots.retire(a);
        let mut n = 0;
        slots.reap(|_, _| n += 1);
        assert_eq!(n, 1);
        assert!(slots.is_empty());
    }

    #[test]
    fn live_keys_skip_retired_ones() {
        let mut slots = Slots::new();
        let a = slots.insert(1);
        let b = slots.insert(2);
        slots.retire(a);
        assert_eq!(slots.live_keys(), [b]);
        assert_eq!(slots.len(), 2);
    }
}
