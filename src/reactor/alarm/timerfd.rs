//! The Linux alarm: a `timerfd`, registered with the poll like a socket, that becomes
//! readable when the loop's next deadline comes.
//!
//! The textbook way to wait for a deadline is `poll`'s timeout ([`super::PollTimeout`]). But
//! `epoll_wait` with a timeout starts a kernel timer every time it goes to sleep and
//! cancels it when an event wakes it first, which, for a busy connection, is every time:
//! one timer start and one cancel per reply, for a deadline minutes away. The timerfd is
//! set once for that deadline and left alone while it stays the earliest; `epoll_wait`
//! then sleeps with no timeout at all. It is re-set only when the earliest deadline
//! changes (a due timer fired, a shorter deadline such as a linger was added), not when a
//! connection's activity pushes its own deadline back: that moves no timer at all (see
//! [`crate::reactor::timers`]).
//!
//! The timer counts on `CLOCK_MONOTONIC`, the clock `Instant` reads on Linux, and never
//! fires early: when its event comes, `Instant::now()` has reached the deadline.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

use mio::event::Source;
use mio::unix::SourceFd;
use mio::{Interest, Registry, Token};
use rustix::time::{
    timerfd_create, timerfd_settime, Itimerspec, TimerfdClockId, TimerfdFlags, TimerfdTimerFlags,
    Timespec,
};

/// A one-shot timer that wakes the poll at one chosen instant.
#[derive(Debug)]
pub struct TimerFd {
    /// The timerfd: non-blocking, closed on exec.
    fd: OwnedFd,
    /// What the kernel's timer is set to now (`None`: disarmed, or it already rang).
    set_for: Option<Instant>,
    /// How many times the kernel's timer was (re)set or disarmed: a system call each.
    changes: u64,
}

impl TimerFd {
    /// A disarmed alarm.
    pub fn new() -> io::Result<TimerFd> {
        let fd = timerfd_create(
            TimerfdClockId::Monotonic,
            TimerfdFlags::NONBLOCK | TimerfdFlags::CLOEXEC,
        )?;
        Ok(TimerFd {
            fd,
            set_for: None,
            changes: 0,
        })
    }

    /// Makes the alarm ring at `at` (`None`: never). `now` is the time of the current
    /// loop turn. Nothing is asked of the kernel when the alarm is already set for `at`,
    /// which, for a busy server whose earliest deadline stays put, is nearly always.
    pub fn set(&mut self, at: Option<Instant>, now: Instant) -> io::Result<()> {
        if at == self.set_for {
            return Ok(());
        }
        // Relative to `now`, the start of this turn: the kernel counts from the moment of
        // this call, a little later, so the alarm rings a little late, never early. An
        // all-zero value disarms, so a deadline already due waits one nanosecond instead.
        let value = match at {
            Some(at) => at
                .saturating_duration_since(now)
                .max(Duration::from_nanos(1)),
            None => Duration::ZERO,
        };
        let spec = Itimerspec {
            it_interval: timespec(Duration::ZERO),
            it_value: timespec(value),
        };
        timerfd_settime(&self.fd, TimerfdTimerFlags::empty(), &spec)?;
        self.set_for = at;
        self.changes += 1;
        Ok(())
    }

    /// The alarm's event came: consume it. The timer is one-shot, so it is now
    /// disarmed, and the next [`TimerFd::set`] sets it again whatever the instant.
    pub fn rang(&mut self) {
        // Read the expiry count until WouldBlock, as for any edge-triggered source; one
        // read empties it, the second only confirms.
        let mut count = [0u8; 8];
        while rustix::io::read(&self.fd, &mut count).is_ok() {}
        self.set_for = None;
    }

    /// Registers the timerfd with the poll: it is readable when it rings.
    pub fn register(&mut self, registry: &Registry, token: Token) -> io::Result<()> {
        registry.register(self, token, Interest::READABLE)
    }

    /// The timeout `poll` needs: none, the timerfd wakes it.
    pub fn poll_timeout(&self) -> Option<Duration> {
        None
    }

    /// The instant the alarm is set for, if any.
    pub fn set_for(&self) -> Option<Instant> {
        self.set_for
    }

    /// How many times the kernel's timer was changed (each one a `timerfd_settime`).
    pub fn changes(&self) -> u64 {
        self.changes
    }
}

/// A `Duration` as the kernel's `timespec`.
fn timespec(d: Duration) -> Timespec {
    Timespec {
        tv_sec: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        tv_nsec: d.subsec_nanos().into(),
    }
}

/// Registered like any socket: readable when it rings.
impl Source for TimerFd {
    fn register(
        &mut self,
        registry: &Registry,
        token: Token,
        interests: Interest,
    ) -> io::Result<()> {
        SourceFd(&self.fd.as_raw_fd()).register(registry, token, interests)
    }

    fn reregister(
        &mut self,
        registry: &Registry,
        token: Token,
        interests: Interest,
    ) -> io::Result<()> {
        SourceFd(&self.fd.as_raw_fd()).reregister(registry, token, interests)
    }

    fn deregister(&mut self, registry: &Registry) -> io::Result<()> {
        SourceFd(&self.fd.as_raw_fd()).deregister(registry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mio::{Events, Poll};

    const ALARM: Token = Token(7);

    fn poll_with_alarm() -> (Poll, TimerFd, Events) {
        let poll = Poll::new().unwrap();
        let mut alarm = TimerFd::new().unwrap();
        alarm.register(poll.registry(), ALARM).unwrap();
        (poll, alarm, Events::with_capacity(4))
    }

    /// Waits up to `limit` for the alarm's event; returns when it came, if it did.
    fn wait_for_ring(poll: &mut Poll, events: &mut Events, limit: Duration) -> Option<Instant> {
        let start = Instant::now();
        while start.elapsed() < limit {
            poll.poll(events, Some(limit - start.elapsed())).unwrap();
            if events.iter().any(|e| e.token() == ALARM && e.is_readable()) {
                return Some(Instant::now());
            }
        }
        None
    }

    #[test]
    fn rings_at_the_instant_never_before() {
        let (mut poll, mut alarm, mut events) = poll_with_alarm();
        let now = Instant::now();
        let at = now + Duration::from_millis(30);
        alarm.set(Some(at), now).unwrap();
        let rang = wait_for_ring(&mut poll, &mut events, Duration::from_secs(5)).unwrap();
        assert!(rang >= at, "rang {:?} before its instant", at - rang);
        alarm.rang();
        assert_eq!(alarm.set_for(), None, "one-shot: spent once it rang");
    }

    #[test]
    fn setting_the_same_instant_again_asks_nothing_of_the_kernel() {
        let (_poll, mut alarm, _events) = poll_with_alarm();
        let now = Instant::now();
        let at = now + Duration::from_secs(60);
        for _ in 0..1000 {
            alarm.set(Some(at), now).unwrap();
        }
        assert_eq!(alarm.changes(), 1);
        alarm.set(Some(at + Duration::from_secs(1)), now).unwrap();
        alarm.set(None, now).unwrap();
        alarm.set(None, now).unwrap();
        assert_eq!(alarm.changes(), 3);
    }

    #[test]
    fn a_later_instant_or_none_replaces_the_old_one() {
        let (mut poll, mut alarm, mut events) = poll_with_alarm();
        let now = Instant::now();
        alarm
            .set(Some(now + Duration::from_millis(10)), now)
            .unwrap();
        alarm.set(None, now).unwrap();
        // Disarmed: nothing within well past the old instant.
        assert_eq!(
            wait_for_ring(&mut poll, &mut events, Duration::from_millis(100)),
            None
        );
        let now = Instant::now();
        let at = now + Duration::from_millis(20);
        alarm.set(Some(at), now).unwrap();
        let rang = wait_for_ring(&mut poll, &mut events, Duration::from_secs(5)).unwrap();
        assert!(rang >= at);
    }

    #[test]
    fn a_deadline_already_past_rings_at_once() {
        let (mut poll, mut alarm, mut events) = poll_with_alarm();
        let past = Instant::now();
        let now = past + Duration::from_millis(5);
        alarm.set(Some(past), now).unwrap();
        assert!(wait_for_ring(&mut poll, &mut events, Duration::from_secs(5)).is_some());
        // Consumed: the next poll does not report it again.
        alarm.rang();
        poll.poll(&mut events, Some(Duration::ZERO)).unwrap();
        assert!(events.is_empty());
    }
}
