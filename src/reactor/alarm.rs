//! The loop's alarm clock: how the loop wakes up when its nearest deadline comes.
//!
//! The textbook way, and the one that works everywhere mio does (epoll, kqueue, …), is
//! `poll`'s own timeout: before sleeping, the loop asks "how long until the nearest
//! deadline?" and passes that to `poll`. That is [`PollTimeout`], the alarm a reader
//! should learn first; on macOS and the BSDs it is the one echod uses.
//!
//! On Linux echod uses a `timerfd` instead ([`timerfd::TimerFd`]): a timer the kernel
//! keeps as a file descriptor, registered with the poll like a socket. It is set once
//! per deadline instead of once per sleep, which saves a kernel timer start and cancel
//! per reply on a busy connection. Building with `--features portable` selects
//! [`PollTimeout`] on Linux too; the test suite runs both ways.
//!
//! Both have the same small interface: `register` with the poll, `set` the instant,
//! `poll_timeout` for the sleep, `rang` when the event came.

use std::io;
use std::time::{Duration, Instant};

use mio::{Registry, Token};

#[cfg(all(target_os = "linux", not(feature = "portable")))]
pub mod timerfd;

/// The alarm this build uses: a timerfd on Linux, `poll`'s timeout elsewhere.
#[cfg(all(target_os = "linux", not(feature = "portable")))]
pub type Alarm = timerfd::TimerFd;

/// The alarm this build uses: a timerfd on Linux, `poll`'s timeout elsewhere.
#[cfg(not(all(target_os = "linux", not(feature = "portable"))))]
pub type Alarm = PollTimeout;

/// The portable alarm: remembers the instant and turns it into `poll`'s timeout.
#[derive(Debug, Default)]
pub struct PollTimeout {
    /// When the loop must wake (`None`: only for events).
    at: Option<Instant>,
}

impl PollTimeout {
    /// An alarm set for nothing.
    pub fn new() -> io::Result<PollTimeout> {
        Ok(PollTimeout::default())
    }

    /// Nothing to register: the alarm is `poll`'s timeout, not a descriptor.
    pub fn register(&mut self, _registry: &Registry, _token: Token) -> io::Result<()> {
        Ok(())
    }

    /// Makes the loop wake at `at` (`None`: never).
    pub fn set(&mut self, at: Option<Instant>, _now: Instant) -> io::Result<()> {
        self.at = at;
        Ok(())
    }

    /// How long `poll` may sleep: until the instant, or for ever. mio rounds a timeout
    /// up to the poller's resolution, so the loop wakes at the instant or just after,
    /// never before it.
    pub fn poll_timeout(&self) -> Option<Duration> {
        self.at
            .map(|at| at.saturating_duration_since(Instant::now()))
    }

    /// Never called: this alarm has no event of its own.
    pub fn rang(&mut self) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use mio::{Events, Poll};

    #[test]
    fn the_portable_alarm_is_polls_timeout() {
        let mut alarm = PollTimeout::new().unwrap();
        assert_eq!(
            alarm.poll_timeout(),
            None,
            "set for nothing: sleep until an event"
        );
        let now = Instant::now();
        let at = now + Duration::from_millis(30);
        alarm.set(Some(at), now).unwrap();
        let mut poll = Poll::new().unwrap();
        let mut events = Events::with_capacity(1);
        poll.poll(&mut events, alarm.poll_timeout()).unwrap();
        assert!(Instant::now() >= at, "woke before the instant");
        assert_eq!(
            alarm.poll_timeout(),
            Some(Duration::ZERO),
            "due: do not sleep"
        );
    }
}
