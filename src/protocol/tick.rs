//! Time as the state machines see it: a number the reactor hands them.
//!
//! The protocol core never reads a clock (that would make it untestable without
//! sleeping). The reactor reads the clock once per turn of its loop and passes the
//! result in; a connection answers with the [`Tick`] at which it next needs to be told
//! the time ([`crate::protocol::conn::Connection::poll_timeout`]).

use std::time::Duration;

/// A point in time, in whole milliseconds since the loop started.
///
/// A tick stands for the whole millisecond that starts at it, and the clock rounds down:
/// a deadline computed from a tick (`now.after(d)`) can lie up to 1 ms before the true
/// one. So a deadline counts as reached only once the clock reads a *later* tick
/// ([`Tick::has_passed`]): a timeout may fire up to a millisecond late, never early.
///
/// Half the size of an `Instant`, which matters because every connection keeps a few;
/// and [`Tick::NEVER`] means "no deadline" without the 8 bytes an `Option` would add.
/// Milliseconds are as fine as epoll's own timeout, and a `u64` of them lasts longer
/// than any process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Tick(u64);

impl Tick {
    /// No deadline: later than every real tick.
    pub const NEVER: Tick = Tick(u64::MAX);

    /// The tick `ms` milliseconds after the start (`u64::MAX` is [`Tick::NEVER`]).
    pub const fn from_millis(ms: u64) -> Tick {
        Tick(ms)
    }

    /// Milliseconds since the start.
    pub const fn as_millis(self) -> u64 {
        self.0
    }

    /// `d` after this tick, rounded up to the next millisecond (a timeout never fires
    /// early); `NEVER` stays `NEVER`.
    pub fn after(self, d: Duration) -> Tick {
        // Whole seconds and the rounded-up rest, in u64 arithmetic: this runs on every
        // visit of a busy connection, and `as_nanos` would divide in 128 bits.
        let rest = u64::from(d.subsec_nanos()).div_ceil(1_000_000);
        let ms = d.as_secs().saturating_mul(1000).saturating_add(rest);
        Tick(self.0.saturating_add(ms))
    }

    /// `d` after this tick when there is a `d`, else [`Tick::NEVER`] (a timeout that is off).
    pub fn after_opt(self, d: Option<Duration>) -> Tick {
        d.map_or(Tick::NEVER, |d| self.after(d))
    }

    /// True when the clock reading `now` is past this deadline: the deadline's whole
    /// millisecond is over, so however the tick was rounded, the true deadline has come.
    /// [`Tick::NEVER`] never passes.
    pub fn has_passed(self, now: Tick) -> bool {
        self < now
    }

    /// This tick, or `None` for [`Tick::NEVER`].
    pub fn get(self) -> Option<Tick> {
        (self != Tick::NEVER).then_some(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_round_deadlines_up_and_never_stays_never() {
        let t0 = Tick(5);
        assert_eq!(t0.after(Duration::from_micros(1)), Tick(6));
        assert_eq!(t0.after(Duration::from_secs(2)), Tick(2005));
        assert_eq!(t0.after(Duration::MAX), Tick::NEVER);
        assert_eq!(Tick::NEVER.after(Duration::from_secs(1)), Tick::NEVER);
        assert_eq!(t0.after_opt(None), Tick::NEVER);
        assert_eq!(Tick::NEVER.get(), None);
        assert_eq!(t0.get(), Some(t0));
    }

    #[test]
    fn a_deadline_passes_only_once_its_millisecond_is_over() {
        let deadline = Tick(2005);
        assert!(!deadline.has_passed(Tick(2004)));
        assert!(
            !deadline.has_passed(Tick(2005)),
            "the true deadline may be later in it"
        );
        assert!(deadline.has_passed(Tick(2006)));
        assert!(!Tick::NEVER.has_passed(Tick(u64::MAX - 1)));
    }
}
