//! The loop: one `Poll`, one thread, every connection.
//!
//! Where the blocking tutorial has `accept()` in a loop and a thread per client that sits
//! in `recv()`, we ask the kernel one question, "which sockets are ready?" (`poll`), and
//! for each ready socket do as much work as it allows without waiting:
//!
//! - a **listener** is readable: accept connections until `WouldBlock`;
//! - a **connection** is readable: read into the shared scratch buffer until the socket is
//!   empty (see [`crate::reactor::io`]) and hand the bytes to its
//!   [`Connection`](crate::protocol::conn::Connection) state machine;
//! - a connection has output: write it until `WouldBlock` or until it is all sent;
//! - the **signal** pipe is readable: start the drain, log the counters, …;
//! - the **alarm** rang (see [`crate::reactor::alarm`]): a deadline is due;
//! - the **upgrade check** answered (SIGUSR2, see [`crate::reactor::upgrade`]).
//!
//! Each connection is registered once, for READABLE and WRITABLE (and PRIORITY on Linux,
//! for urgent data), edge-triggered: the kernel reports a change of readiness once, and it
//! is our job to use it up. That costs no
//! `epoll_ctl` calls while the connection lives, but it sets a trap: if we stop reading
//! *before* `WouldBlock` (because the client's replies pile up, or because it used its
//! fair share of this turn), no new event will ever come for the bytes already waiting.
//! We remember that in `Entry::can_read` and come back to the connection ourselves.
//!
//! Accepting lives in [`crate::reactor::accept`], moving bytes between a socket and its
//! state machine in [`crate::reactor::io`].
//!
//! Connections close in exactly one place, `Server::reap`, at the end of an event batch
//! (see [`crate::reactor::slots`] for why not earlier).

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Shutdown, SocketAddr};
use std::time::{Duration, Instant};

use log::{debug, info, trace, warn};
use mio::net::TcpListener;
use mio::{Events, Interest, Poll, Token};
use signal_hook::consts::{SIGCHLD, SIGHUP, SIGINT, SIGTERM, SIGUSR1, SIGUSR2};
use signal_hook_mio::v1_0::Signals;

use crate::config::Config;
use crate::io_errors::interrupted;
use crate::protocol::conn::{CloseReason, Rules, State, ERR_TOO_MANY_FROM_ADDRESS};
use crate::protocol::proxy::Source;
use crate::reactor::alarm::Alarm;
use crate::reactor::io::{transfer, Entry};
use crate::reactor::listen;
use crate::reactor::memory::Memory;
use crate::reactor::metrics::{self, Metrics};
use crate::reactor::slots::Slots;
use crate::reactor::stats::Stats;
use crate::reactor::timers::{Clock, Tick, Timers};
#[cfg(target_os = "linux")]
use crate::reactor::upgrade::Upgrade;
use crate::waypoint;

/// The signal source's token (signal-hook-mio's self-pipe, a Unix socket pair).
/// Connection tokens are slab keys, counted up from 0, so the top of the token space is
/// free for the few non-connection sources.
const SIGNALS: Token = Token(usize::MAX - 1);

/// The alarm's token (used only by the timerfd alarm; `poll`'s timeout has no event).
const ALARM: Token = Token(usize::MAX - 2);

/// The upgrade check's token: the pipe from `NEW-BINARY --resume-formats` (SIGUSR2).
#[cfg(target_os = "linux")]
pub(super) const UPGRADE_CHECK: Token = Token(usize::MAX - 3);

/// Listener `i` has token `LISTENER_BASE - i`.
const LISTENER_BASE: usize = usize::MAX - 4;

/// One read buffer for all connections. A read fills it, the state machine copies out
/// only what it must keep (a partial line), and the next connection reuses it. Its size
/// is the state machine's [`READ_SIZE`](crate::protocol::conn::READ_SIZE) (64 KiB).
const SCRATCH_SIZE: usize = crate::protocol::conn::READ_SIZE;

/// Stale timers tolerated beyond twice the live connections before a sweep: enough that
/// a quiet server never sweeps, small enough to be a few KiB.
const STALE_TIMERS_SLACK: usize = 1024;

/// Under systemd we report the connection count in `STATUS=` at most this often, and
/// only after it changed: an idle daemon still never wakes up.
const STATUS_EVERY: Duration = Duration::from_secs(1);

/// The daemon: listeners, signals, connections, deadlines and counters, all owned by
/// one loop.
pub struct Server {
    /// The kernel's readiness queue (epoll on Linux, kqueue on macOS and the BSDs).
    pub(super) poll: Poll,
    /// Open listeners (emptied when the drain starts, once their queues are empty).
    pub(super) listeners: Vec<TcpListener>,
    /// Listeners whose accept budget ran out last turn: we owe them a visit.
    pub(super) listeners_owed: Vec<usize>,
    /// SIGINT, SIGTERM, SIGHUP, SIGUSR1, SIGUSR2 and SIGCHLD, delivered as readiness of
    /// a socket pair: the signal handler only writes a byte to it (the self-pipe trick).
    signals: Signals,
    /// Every connection, by token.
    pub(super) conns: Slots<Entry>,
    /// The rules all connections share.
    pub(super) rules: Rules,
    /// Clients served at once (after clamping to the fd limit).
    pub(super) max_connections: usize,
    /// `--max-per-ip`.
    pub(super) max_per_ip: Option<usize>,
    /// `--max-memory`.
    pub(super) max_memory: usize,
    /// All connection buffers together, and the pressure they are under.
    pub(super) memory: Memory,
    /// Connections per client address, with `--max-per-ip` (only addresses with some).
    pub(super) per_ip: HashMap<IpAddr, usize>,
    /// `--drain-timeout`.
    drain_timeout: Duration,
    /// The shared read buffer.
    pub(super) scratch: Box<[u8]>,
    /// The shared reply buffer, lent to the connection being visited (see
    /// [`Connection::lend_output`](crate::protocol::conn::Connection::lend_output)):
    /// replies are built in it and usually all written at once, so a batch of replies
    /// costs no allocation. Its capacity grows to the largest batch, at most
    /// `--max-pending` plus one reply.
    replies: Vec<u8>,
    /// Connection deadlines.
    pub(super) timers: Timers,
    /// Wakes the loop at the earliest of all deadlines (connections', drain, accept
    /// retry, memory eviction, status report, scrapes, upgrade check).
    alarm: Alarm,
    /// Connections we owe a visit next turn: the fairness budget stopped their reading
    /// with data still waiting, and no event will come for it.
    pub(super) owed: Vec<usize>,
    /// Counters.
    pub(super) stats: Stats,
    /// Set when SIGINT/SIGTERM started the drain: when it must end.
    pub(super) drain_deadline: Option<Instant>,
    /// A second SIGINT/SIGTERM: leave now.
    exit_now: bool,
    /// Out of file descriptors: accepting resumes at this time (or on a close).
    pub(super) accept_retry: Option<Instant>,
    /// The serial for the next connection.
    pub(super) next_serial: u64,
    /// The time of the current loop turn (one clock read per turn, not per event).
    pub(super) now: Instant,
    /// The same, as a [`Tick`] of `clock`.
    pub(super) tick: Tick,
    /// Converts between `Instant`s and the compact ticks connections store.
    clock: Clock,
    /// Started by systemd with `NOTIFY_SOCKET`: send READY/STATUS/STOPPING.
    systemd: bool,
    /// When to send the next `STATUS=` (set when the connection count changes).
    status_due: Option<Instant>,
    /// `--metrics`: the scrape listener and its connections (see [`crate::reactor::metrics`]).
    pub(super) metrics: Option<Metrics>,
    /// SIGUSR2: the binary to become, and the upgrade in progress, if any.
    #[cfg(target_os = "linux")]
    pub(super) upgrade: Upgrade,
}

impl std::fmt::Debug for Server {
    // Written by hand: the signal source does not implement Debug.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("listeners", &self.listeners)
            .field("connections", &self.conns.len())
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl Server {
    /// Binds every listener and prepares the loop; nothing is accepted until [`Server::run`].
    ///
    /// An error names the address that failed, for the operator.
    pub fn bind(config: &Config) -> io::Result<Server> {
        let mut listeners = listen::inherited_listeners()?;
        if listeners.is_empty() {
            for &addr in &config.listen {
                let listener =
                    listen::listen(addr, config.backlog, config.reuse_port).map_err(|e| {
                        io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}"))
                    })?;
                listeners.push(listener);
            }
        } else {
            info!("socket activation: {} inherited listeners", listeners.len());
        }
        let poll = Poll::new()?;
        let metrics = Metrics::open(config.metrics, config.timings.scrape, poll.registry())?;
        Server::assemble(config, poll, listeners, metrics)
    }

    /// The loop around `listeners` (bound at start-up, or handed over by the previous
    /// image on an upgrade): registers them, the signals and the alarm with `poll`.
    pub(super) fn assemble(
        config: &Config,
        poll: Poll,
        mut listeners: Vec<TcpListener>,
        metrics: Option<Metrics>,
    ) -> io::Result<Server> {
        for (i, listener) in listeners.iter_mut().enumerate() {
            poll.registry()
                .register(listener, Token(LISTENER_BASE - i), Interest::READABLE)?;
        }
        // SIGUSR2 is caught everywhere, even where upgrades are not supported: its
        // default action would end the process.
        let mut signals = Signals::new([SIGINT, SIGTERM, SIGHUP, SIGUSR1, SIGUSR2, SIGCHLD])?;
        poll.registry()
            .register(&mut signals, SIGNALS, Interest::READABLE)?;
        let mut alarm = Alarm::new()?;
        alarm.register(poll.registry(), ALARM)?;
        let clock = Clock::new();
        Ok(Server {
            poll,
            listeners,
            listeners_owed: Vec::new(),
            signals,
            conns: Slots::new(),
            rules: Rules::from_config(config),
            max_connections: super::accept::clamp_to_fd_limit(config.max_connections),
            max_per_ip: config.max_per_ip,
            max_memory: config.max_memory,
            memory: Memory {
                total: 0,
                pressure_since: None,
                evict_after: config.timings.evict_after,
            },
            per_ip: HashMap::new(),
            drain_timeout: config.drain_timeout,
            scratch: vec![0; SCRATCH_SIZE].into_boxed_slice(),
            replies: Vec::new(),
            timers: Timers::new(),
            alarm,
            owed: Vec::new(),
            stats: Stats::default(),
            drain_deadline: None,
            exit_now: false,
            accept_retry: None,
            next_serial: 0,
            now: Instant::now(),
            tick: clock.tick(Instant::now()),
            clock,
            systemd: std::env::var_os("NOTIFY_SOCKET").is_some(),
            status_due: None,
            metrics,
            #[cfg(target_os = "linux")]
            upgrade: Upgrade::new(config),
        })
    }

    /// The addresses really bound (port 0 replaced by the port the kernel chose).
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.listeners
            .iter()
            .filter_map(|l| l.local_addr().ok())
            .collect()
    }

    /// The most clients served at once, after clamping to the file descriptor limit.
    pub fn max_connections(&self) -> usize {
        self.max_connections
    }

    /// Runs the loop until a signal's drain completes. Returns the final counters.
    pub fn run(mut self) -> io::Result<Stats> {
        for addr in self.local_addrs() {
            info!("listening on {addr}");
        }
        // The listeners are registered: systemd may now start what depends on us.
        self.notify_systemd(&[sd_notify::NotifyState::Ready]);
        let mut events = Events::with_capacity(1024);
        while !self.run_once(&mut events, None)? {}
        info!("{}", self.stats.summary(self.conns.len()));
        Ok(self.stats)
    }

    /// One turn of the loop: sleep until something is ready, do all the work it
    /// allows, close what closed. True when the loop is over (a drain completed, or a
    /// second signal). `longest` caps the sleep, for tests that turn the loop by hand;
    /// the daemon passes `None` and lets the alarm wake it.
    pub(super) fn run_once(
        &mut self,
        events: &mut Events,
        longest: Option<Duration>,
    ) -> io::Result<bool> {
        waypoint("run_once");
        // 1. Sleep until an event or the alarm (not at all if we owe a visit).
        let (owed, listeners_owed) = self.sleep(events, longest)?;
        // 2. Do the work each event allows.
        for event in events.iter() {
            trace_event(event, self.listeners.len());
            match event.token() {
                SIGNALS => self.handle_signals(),
                // The deadlines it stands for are checked below, every turn.
                ALARM => self.alarm.rang(),
                #[cfg(target_os = "linux")]
                UPGRADE_CHECK => self.upgrade_check_readable(),
                Token(t) if t > LISTENER_BASE - self.listeners.len() => {
                    self.accept_all(LISTENER_BASE - t)
                }
                token if metrics::owns(token) => self.metrics_event(token),
                Token(key) => self.handle_event(key, event),
            }
        }
        // 3. The visits we owed, the deadlines that came, and the closes of this turn.
        self.serve_owed(owed);
        self.serve_owed_listeners(listeners_owed);
        self.expire_timers();
        #[cfg(target_os = "linux")]
        self.expire_upgrade_check();
        self.retry_accept_if_due();
        self.enforce_memory_limit();
        self.reap();
        if self.drain_deadline.is_some() {
            self.close_listeners_if_drained();
        }
        self.metrics_turn();
        self.send_status_if_due();
        // The turn's work is done: if an upgrade is due, this is where the process
        // becomes the new image (and returns here only if that failed).
        #[cfg(target_os = "linux")]
        self.hand_over_if_due();
        let drained = self.conns.is_empty() && self.listeners.is_empty();
        Ok(self.exit_now || (self.drain_deadline.is_some() && drained))
    }

    /// Sets the alarm for the nearest deadline and sleeps in `poll` until an event, or
    /// does not sleep at all when we owe connections or listeners a visit (no event
    /// will come for what they left unread). Returns what we owe, for this turn.
    fn sleep(
        &mut self,
        events: &mut Events,
        longest: Option<Duration>,
    ) -> io::Result<(Vec<usize>, Vec<usize>)> {
        waypoint("sleep");
        let next_deadline = self.next_deadline();
        self.alarm.set(next_deadline, self.now)?;
        let owed = std::mem::take(&mut self.owed);
        let listeners_owed = std::mem::take(&mut self.listeners_owed);
        let timeout = if owed.is_empty() && listeners_owed.is_empty() {
            [longest, self.alarm.poll_timeout()]
                .into_iter()
                .flatten()
                .min()
        } else {
            Some(Duration::ZERO)
        };
        trace_sleep(timeout, next_deadline, self.now);
        if let Err(e) = self.poll.poll(events, timeout) {
            if !interrupted(&e) {
                return Err(e);
            }
            // A signal landed during the sleep; its handler already wrote to the signal
            // socket, so the next poll reports it. Not an error.
        }
        self.now = Instant::now();
        self.tick = self.clock.tick(self.now);
        self.stats.loop_wakeups += 1;
        trace!("poll: woke with {} events", events.iter().count());
        Ok((owed, listeners_owed))
    }

    /// When the alarm must ring: the earliest of the connections' deadlines, the drain
    /// deadline, the accept retry, the `--max-memory` eviction, the status report, open
    /// scrapes (`--metrics`) and the upgrade check (SIGUSR2).
    /// `None` when nothing is due, so an idle server makes no wakeups at all.
    fn next_deadline(&mut self) -> Option<Instant> {
        waypoint("next_deadline");
        [
            self.earliest_deadline().map(|t| self.clock.passed_at(t)),
            self.drain_deadline,
            self.accept_retry,
            self.memory_deadline(),
            self.status_due,
            self.metrics_deadline(),
            #[cfg(target_os = "linux")]
            self.upgrade.check_deadline(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// The earliest live connection deadline. The heap is lazy (see
    /// [`crate::reactor::timers`]), so we first make its earliest timer true: a timer
    /// whose connection is gone (or has a newer timer) is dropped, and one whose
    /// connection's deadline was pushed back is moved to the real deadline. So the alarm
    /// is only ever set for a deadline that can fire, and with no connection open none
    /// is set, whatever closed before.
    fn earliest_deadline(&mut self) -> Option<Tick> {
        while let Some(timer) = self.timers.peek() {
            let entry = self.conns.get_mut(timer.key);
            let Some(entry) = entry.filter(|e| e.serial == timer.serial && e.armed == timer.at)
            else {
                self.timers.pop(); // Its connection is gone, or was re-armed since.
                continue;
            };
            if entry.conn.poll_timeout().is_some_and(|at| at <= timer.at) {
                return Some(timer.at);
            }
            // Activity pushed the deadline back (or removed it) since this timer was
            // armed: one heap operation now instead of a wakeup at the old time.
            self.timers.pop();
            entry.armed = Tick::NEVER;
            arm_timer(&mut self.timers, timer.key, entry);
        }
        None
    }

    /// A connection's socket changed readiness: note what it may do now, and visit it.
    fn handle_event(&mut self, key: usize, event: &mio::event::Event) {
        waypoint("handle_event");
        // A retired or vacant key: the connection closed earlier in this batch.
        let Some(entry) = self.conns.get_mut(key) else {
            return;
        };
        if event.is_readable() || event.is_read_closed() || event.is_error() {
            entry.can_read = true;
        }
        if event.is_read_closed() || event.is_error() {
            entry.fin_reported = true;
        }
        if event.is_priority() {
            // Urgent data: reads stop at its mark, so read until WouldBlock from now on.
            entry.urgent = true;
            entry.can_read = true;
        }
        if event.is_writable() || event.is_write_closed() || event.is_error() {
            entry.can_write = true;
        }
        if !entry.owed {
            // (An owed connection is visited once this turn, from the owed list, so that
            // it gets one fair share per turn and not two.)
            self.visit(key);
        }
    }

    /// Does all the work a connection's readiness allows (see [`transfer`]), then acts on
    /// what the state machine decided: log a proxied client, send our FIN, retire the
    /// connection, or arm its timer.
    pub(super) fn visit(&mut self, key: usize) {
        waypoint("visit");
        let Some(entry) = self.conns.get_mut(key) else {
            return;
        };
        let lines_before = entry.conn.lines();
        let draining = self.drain_deadline.is_some();
        entry.conn.lend_output(&mut self.replies);
        let moved = transfer(
            entry,
            &self.rules,
            &mut self.scratch,
            &mut self.stats,
            draining,
        );
        entry.conn.return_output(&mut self.replies);
        self.stats.lines += entry.conn.lines() - lines_before;
        // The state machine owns its deadlines: we only tell it what moved, and when.
        if moved.read || moved.wrote {
            entry.conn.handle_activity(&self.rules, self.tick);
        }
        entry
            .conn
            .handle_output_progress(&self.rules, self.tick, moved.wrote);
        if moved.more && !entry.owed {
            // Used its fair share with data still waiting: come back next turn.
            entry.owed = true;
            self.owed.push(key);
        }
        if let Some(source) = entry.conn.take_proxied_source() {
            log_proxied_client(entry, source);
            if self.max_per_ip.is_some() {
                self.count_proxied_client(key);
            }
        }
        self.settle(key);
    }

    /// After a visit, acts on what the state machine decided: our FIN once it is
    /// lingering, the slot once it is closed, else the timer for its next deadline; and
    /// re-counts the memory it holds.
    fn settle(&mut self, key: usize) {
        waypoint("settle");
        let Some(entry) = self.conns.get_mut(key) else {
            return;
        };
        if entry.conn.state() == State::Lingering && !entry.fin_sent {
            // All replies are out: send our FIN now, then wait (bounded) for theirs.
            entry.fin_sent = true;
            trace!("{}: shutdown(Write): our FIN is out", entry.peer);
            if entry.stream.shutdown(Shutdown::Write).is_err() {
                entry.conn.handle_error();
            }
            entry.conn.handle_fin_sent(&self.rules, self.tick);
        }
        if entry.conn.is_closed() {
            self.conns.retire(key);
        } else {
            arm_timer(&mut self.timers, key, entry);
        }
        self.recharge(key);
    }

    /// `--max-per-ip` behind a proxy: the PROXY header just named the client; count it
    /// under its real address, or refuse it.
    fn count_proxied_client(&mut self, key: usize) {
        let Some(ip) = self.conns.get_mut(key).map(|e| e.peer.ip()) else {
            return;
        };
        let counted = self.count_address(ip);
        let Some(entry) = self.conns.get_mut(key) else {
            return;
        };
        if counted {
            entry.counted = true;
        } else {
            info!(
                "refused {}: too many connections from its address",
                entry.peer
            );
            entry
                .conn
                .refuse(ERR_TOO_MANY_FROM_ADDRESS, CloseReason::TooManyFromAddress);
            // The refusal is queued: send it now (the socket is writable, or will say).
            transfer(
                entry,
                &self.rules,
                &mut self.scratch,
                &mut self.stats,
                false,
            );
        }
    }

    /// Visits the connections whose fairness budget ran out last turn with data unread.
    fn serve_owed(&mut self, owed: Vec<usize>) {
        waypoint("serve_owed");
        for key in owed {
            match self.conns.get_mut(key) {
                // Not owed any more: the key was closed and reused, or listed twice.
                Some(entry) if entry.owed => {
                    entry.owed = false;
                    self.visit(key);
                }
                _ => {}
            }
        }
    }

    /// Fires the deadlines that are due.
    fn expire_timers(&mut self) {
        waypoint("expire_timers");
        if self
            .drain_deadline
            .is_some_and(|deadline| self.now >= deadline)
        {
            warn!("drain timeout: closing {} connections", self.conns.len());
            self.close_listeners();
            for key in self.conns.live_keys() {
                if let Some(entry) = self.conns.get_mut(key) {
                    entry.conn.handle_drain_timeout();
                }
                self.conns.retire(key);
            }
            return;
        }
        while let Some(timer) = self.timers.pop_due(self.tick) {
            let Some(entry) = self.conns.get_mut(timer.key) else {
                continue;
            };
            if entry.serial != timer.serial || entry.armed != timer.at {
                continue; // A stale entry: its connection is gone or re-armed since.
            }
            entry.armed = Tick::NEVER;
            if entry
                .conn
                .poll_timeout()
                .is_some_and(|at| at.has_passed(self.tick))
            {
                trace!("{}: deadline reached", entry.peer);
                entry.conn.handle_timeout(&self.rules, self.tick);
                self.visit(timer.key);
            } else {
                // Activity pushed the deadline back since this timer was armed.
                arm_timer(&mut self.timers, timer.key, entry);
            }
        }
    }

    /// Handles every pending signal.
    fn handle_signals(&mut self) {
        waypoint("handle_signals");
        let signals: Vec<i32> = self.signals.pending().collect();
        for signal in signals {
            match signal {
                SIGINT | SIGTERM if self.drain_deadline.is_some() => {
                    warn!("second shutdown signal: exiting now");
                    self.exit_now = true;
                }
                SIGINT | SIGTERM => self.start_drain(signal),
                SIGHUP => info!("SIGHUP ignored (echod has no configuration to reload)"),
                SIGUSR1 => info!("{}", self.stats.summary(self.conns.len())),
                SIGUSR2 => self.start_upgrade(),
                // A child exited: the upgrade check's, the only children we have.
                #[cfg(target_os = "linux")]
                SIGCHLD => self.reap_upgrade_check(),
                _ => {}
            }
        }
    }

    /// SIGINT/SIGTERM: stop accepting, answer what every client already sent, close
    /// each connection cleanly, and let `run` return once all are gone (or the drain
    /// timeout passes).
    fn start_drain(&mut self, signal: i32) {
        waypoint("start_drain");
        let name = if signal == SIGINT {
            "SIGINT"
        } else {
            "SIGTERM"
        };
        self.drain_deadline = Some(self.now + self.drain_timeout);
        // Clients whose connection is complete but not yet accepted have sent their lines
        // to us too: take them before closing the listeners, or they would be reset.
        // Out of descriptors we cannot take them all now: the listeners stay open until
        // the queue is empty (the accept retry and every close go on accepting), bounded
        // by the drain timeout.
        for i in 0..self.listeners.len() {
            self.accept_all(i);
        }
        if !self.close_listeners_if_drained() {
            info!("{name}: clients still wait in the accept queue; taking them first");
        }
        self.notify_systemd(&[sd_notify::NotifyState::Stopping]);
        info!(
            "{name}: draining {} connections (timeout {}s)",
            self.conns.len(),
            self.drain_timeout.as_secs()
        );
        for key in self.conns.live_keys() {
            if let Some(entry) = self.conns.get_mut(key) {
                // Bytes may have arrived since the last short read: look once more.
                entry.can_read = true;
            }
            self.visit(key);
        }
    }

    /// Removes the timers of closed connections once the heap holds more than twice the
    /// live connections plus `STALE_TIMERS_SLACK`, so that connection churn cannot grow
    /// the heap (see [`crate::reactor::timers`]).
    fn sweep_stale_timers(&mut self) {
        if self.timers.len() > 2 * self.conns.len() + STALE_TIMERS_SLACK {
            let conns = &mut self.conns;
            self.timers.retain(|t| {
                conns
                    .get_mut(t.key)
                    .is_some_and(|e| e.serial == t.serial && e.armed == t.at)
            });
        }
    }

    /// Draining: closes the listeners once their queues are known to be empty (no accept
    /// waits for descriptors, none owes a visit). True when they are closed.
    fn close_listeners_if_drained(&mut self) -> bool {
        waypoint("close_listeners_if_drained");
        if self.accept_retry.is_none() && self.listeners_owed.is_empty() {
            self.close_listeners();
        }
        self.listeners.is_empty()
    }

    /// Sends a state to systemd's notify socket (a no-op outside systemd). A failure is
    /// logged and otherwise ignored: serving clients matters more than reporting.
    pub(super) fn notify_systemd(&self, states: &[sd_notify::NotifyState<'_>]) {
        if self.systemd {
            if let Err(e) = sd_notify::notify(states) {
                warn!("systemd notify: {e}");
            }
        }
    }

    /// The connection count changed: schedule a `STATUS=` (under systemd only).
    pub(super) fn status_changed(&mut self) {
        if self.systemd && self.status_due.is_none() {
            self.status_due = Some(self.now + STATUS_EVERY);
        }
    }

    /// Sends the scheduled `STATUS=` line.
    fn send_status_if_due(&mut self) {
        if self.status_due.is_some_and(|t| t <= self.now) {
            self.status_due = None;
            let status = format!(
                "{} connections, {} accepted, {} lines",
                self.conns.len(),
                self.stats.accepted,
                self.stats.lines
            );
            self.notify_systemd(&[sd_notify::NotifyState::Status(&status)]);
        }
    }

    /// Closes every connection retired during this batch: the one place where sockets
    /// are deregistered and dropped and slab keys are freed.
    fn reap(&mut self) {
        waypoint("reap");
        let mut closed = 0;
        let mut uncount = Vec::new();
        let (poll, stats, memory) = (&self.poll, &mut self.stats, &mut self.memory);
        self.conns.reap(|_, mut entry| {
            closed += 1;
            if entry.counted {
                uncount.push(entry.peer.ip());
            }
            memory.total -= entry.charged;
            let reason = entry.conn.close_reason().unwrap_or(CloseReason::Error);
            stats.count_close(reason);
            debug!(
                "closed {}: {}, {} bytes in, {} bytes out",
                entry.peer,
                reason.name(),
                entry.bytes_in,
                entry.bytes_out
            );
            let _ = poll.registry().deregister(&mut entry.stream);
            // Dropping the stream closes the socket.
        });
        for ip in uncount {
            self.uncount_address(ip);
        }
        if closed > 0 {
            self.status_changed();
            self.sweep_stale_timers();
        }
        if closed > 0 && self.accept_retry.is_some() {
            // A descriptor was just freed: a client may be waiting in the queue.
            for i in 0..self.listeners.len() {
                self.accept_all(i);
            }
        }
    }
}

/// `--log-level trace`: how long the loop is about to sleep, and why.
fn trace_sleep(timeout: Option<Duration>, alarm: Option<Instant>, now: Instant) {
    match alarm {
        _ if timeout == Some(Duration::ZERO) => trace!("poll: a visit is owed: no sleep"),
        Some(at) => trace!(
            "poll: sleeping until an event (the alarm rings in {:?})",
            at.saturating_duration_since(now)
        ),
        None => trace!("poll: sleeping until an event (no alarm set)"),
    }
}

/// `--log-level trace`: one line per readiness event, so a learner can watch the loop:
/// which source it is, and which readiness the kernel reported.
fn trace_event(event: &mio::event::Event, listeners: usize) {
    // The arguments are evaluated only when trace is on: off, this costs one compare.
    trace!(
        "event: {} is{}{}{}{}{}{}",
        token_name(event.token(), listeners),
        if event.is_readable() { " READABLE" } else { "" },
        if event.is_priority() { " PRIORITY" } else { "" },
        if event.is_writable() { " WRITABLE" } else { "" },
        if event.is_read_closed() {
            " READ_CLOSED"
        } else {
            ""
        },
        if event.is_write_closed() {
            " WRITE_CLOSED"
        } else {
            ""
        },
        if event.is_error() { " ERROR" } else { "" },
    );
}

/// What a token stands for, in words (for the trace log).
fn token_name(token: Token, listeners: usize) -> String {
    match token {
        SIGNALS => "the signal pipe".to_string(),
        ALARM => "the alarm".to_string(),
        Token(t) if t > LISTENER_BASE - listeners && t <= LISTENER_BASE => {
            format!("listener {}", LISTENER_BASE - t)
        }
        token if metrics::owns(token) => format!("metrics token {}", token.0),
        Token(key) => format!("connection {key}"),
    }
}

/// The PROXY header named the real client: log it, and use it in later log lines.
fn log_proxied_client(entry: &mut Entry, source: Source) {
    if let Source::Tcp { client, .. } = source {
        // An IPv6-mapped IPv4 address (`::ffff:192.0.2.1`) is logged as IPv4.
        let client = SocketAddr::new(client.ip().to_canonical(), client.port());
        info!("Connected with {client} (via proxy {})", entry.peer);
        entry.peer = client;
    } else {
        info!(
            "Connected with {} (proxy health check or local)",
            entry.peer
        );
    }
}

/// Makes sure the connection's deadline has a live timer at or before it.
pub(super) fn arm_timer(timers: &mut Timers, key: usize, entry: &mut Entry) {
    waypoint("arm_timer");
    // No deadline never arms; "no timer armed" (armed == NEVER) arms any real deadline.
    let deadline = entry.conn.poll_timeout().unwrap_or(Tick::NEVER);
    if deadline < entry.armed {
        timers.schedule(deadline, key, entry.serial);
        entry.armed = deadline;
    }
}

#[cfg(test)]
mod walkthroughs;

#[cfg(test)]
mod tests {
    use super::walkthroughs::test_server;
    use super::*;
    use crate::io_errors::would_block;
    use crate::protocol::conn::Connection;
    use std::io::{Read, Write};

    /// What one idle connection costs the loop: its entry (the slab slot) plus one timer.
    /// Buffers are not counted: an idle connection has none.
    #[test]
    fn an_idle_connection_costs_a_few_hundred_bytes() {
        let entry = std::mem::size_of::<Entry>();
        let timer = std::mem::size_of::<crate::reactor::timers::Timer>();
        eprintln!(
            "Entry {entry} B, Connection {} B, timer {timer} B",
            std::mem::size_of::<Connection>()
        );
        assert!(entry + timer <= 256, "{entry} + {timer} bytes");
    }

    /// Turns the loop until `client` has received `want` (in all), at most 5 s.
    fn serve_until(server: &mut Server, client: &mut std::net::TcpStream, want: &[u8]) {
        let mut events = Events::with_capacity(16);
        let mut got = Vec::new();
        let give_up = Instant::now() + Duration::from_secs(5);
        client.set_nonblocking(true).unwrap();
        while got.len() < want.len() && Instant::now() < give_up {
            server
                .run_once(&mut events, Some(Duration::from_millis(20)))
                .unwrap();
            let mut buf = [0; 256];
            match client.read(&mut buf) {
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) if would_block(&e) => {}
                Err(e) => panic!("client read: {e}"),
            }
        }
        assert_eq!(got, want);
    }

    /// The reactor lends its reply buffer to the connection it serves (the state
    /// machine's side is tested in `conn`): a served line leaves the buffer with the
    /// memory it was built in, and the connection with nothing left to send.
    #[test]
    fn replies_are_built_in_the_servers_lent_buffer() {
        let _signals = super::walkthroughs::sharing_signals();
        let config = Config {
            listen: vec!["127.0.0.1:0".parse().unwrap()],
            ..Config::default()
        };
        let mut server = Server::bind(&config).unwrap();
        let mut client = std::net::TcpStream::connect(server.local_addrs()[0]).unwrap();
        // The banner first: it is queued before any visit, in the connection's own buffer.
        serve_until(&mut server, &mut client, &config.banner);
        assert_eq!(server.replies.capacity(), 0, "nothing lent yet");
        client.write_all(b"hi\n").unwrap();
        serve_until(&mut server, &mut client, b"OK...hi\n");
        assert!(
            server.replies.capacity() > 0,
            "the reply was built in the shared buffer"
        );
        let key = server.conns.live_keys()[0];
        let entry = server.conns.get_mut(key).unwrap();
        assert_eq!(entry.conn.buffered(), 0);
    }

    /// Turns the loop until `done` holds, at most 10 s.
    fn turn_until(server: &mut Server, mut done: impl FnMut(&Server) -> bool) {
        let mut events = Events::with_capacity(1024);
        let give_up = Instant::now() + Duration::from_secs(10);
        while !done(server) {
            assert!(Instant::now() < give_up, "the loop never got there");
            server
                .run_once(&mut events, Some(Duration::from_millis(20)))
                .unwrap();
        }
    }

    /// Connection churn leaves a timer behind for every closed connection; the sweep
    /// keeps the heap within a constant factor of the live connections.
    #[test]
    fn churn_does_not_grow_the_timer_heap() {
        let _signals = super::walkthroughs::sharing_signals();
        let mut server = test_server(|_| {});
        let addr = server.local_addrs()[0];
        for _ in 0..30 {
            let clients: Vec<_> = (0..100)
                .map(|_| std::net::TcpStream::connect(addr).unwrap())
                .collect();
            turn_until(&mut server, |s| s.conns.len() == 100);
            drop(clients);
            turn_until(&mut server, |s| s.conns.is_empty());
            assert!(
                server.timers.len() <= 2 * 100 + STALE_TIMERS_SLACK,
                "{} timers",
                server.timers.len()
            );
        }
        assert_eq!(server.stats.accepted, 3000);
    }

    /// A connect flood is taken at most `ACCEPTS_PER_TURN` per turn; the rest are
    /// accepted next turn without a new event (the loop owes the listener a visit).
    #[test]
    fn accepts_are_capped_per_turn_and_the_rest_come_next_turn() {
        let _signals = super::walkthroughs::sharing_signals();
        use crate::reactor::accept::ACCEPTS_PER_TURN;
        let mut server = test_server(|c| c.backlog = 4096);
        let addr = server.local_addrs()[0];
        let n = ACCEPTS_PER_TURN + 200;
        let _clients: Vec<_> = (0..n)
            .map(|_| std::net::TcpStream::connect(addr).unwrap())
            .collect();
        let mut events = Events::with_capacity(1024);
        server
            .run_once(&mut events, Some(Duration::from_secs(5)))
            .unwrap();
        assert_eq!(server.conns.len(), ACCEPTS_PER_TURN);
        assert_eq!(server.listeners_owed, [0]);
        server
            .run_once(&mut events, Some(Duration::from_secs(5)))
            .unwrap();
        assert_eq!(server.conns.len(), n);
        assert!(server.listeners_owed.is_empty());
    }

    /// Accepted sockets probe silent peers (keepalive) and keep urgent data in the
    /// byte stream (OOBINLINE), and answer lines at once (no Nagle).
    #[test]
    fn accepted_sockets_get_keepalive_oobinline_and_nodelay() {
        let _signals = super::walkthroughs::sharing_signals();
        let mut server = test_server(|_| {});
        let _client = std::net::TcpStream::connect(server.local_addrs()[0]).unwrap();
        turn_until(&mut server, |s| s.conns.len() == 1);
        let key = server.conns.live_keys()[0];
        let socket = socket2::SockRef::from(&server.conns.get_mut(key).unwrap().stream);
        assert!(socket.keepalive().unwrap());
        assert!(socket.out_of_band_inline().unwrap());
        assert!(socket.nodelay().unwrap());
    }
}
