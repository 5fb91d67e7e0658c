//! The reactor: the only module that touches mio. One `Poll`, one thread, one loop.
//!
//! Where the blocking tutorial has `accept()` in a loop and a thread per client that sits
//! in `recv()`, we ask the kernel one question, "which sockets are ready?" (`poll`), and
//! for each ready socket do as much work as it allows without waiting:
//!
//! - a **listener** is readable: accept connections until `WouldBlock`;
//! - a **connection** is readable: read into the shared scratch buffer until `WouldBlock`
//!   and hand the bytes to its [`Connection`] state machine;
//! - a connection has output: write it until `WouldBlock` or until it is all sent;
//! - the **signal** pipe is readable: start the drain, log the counters, …;
//! - the **alarm** rang (a timerfd, see [`crate::reactor::alarm`]): a deadline is due.
//!
//! Each connection is registered once, for READABLE and WRITABLE, edge-triggered: the kernel
//! reports a change of readiness once, and it is our job to use it up. That costs no
//! `epoll_ctl` calls while the connection lives, but it sets a trap: if we stop reading
//! *before* `WouldBlock` (because the client's replies pile up, or because it used its
//! fair share of this turn), no new event will ever come for the bytes already waiting.
//! We remember that in `Entry::can_read` and come back to the connection ourselves.
//!
//! Connections close in exactly one place, `Server::reap`, at the end of an event batch
//! (see [`crate::reactor::slots`] for why not earlier).

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::time::{Duration, Instant};

use log::{debug, error, info, warn};
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM, SIGUSR1};
use signal_hook_mio::v1_0::Signals;

use crate::config::Config;
use crate::io_errors::{accept_transient, interrupted, out_of_fds, would_block};
use crate::protocol::conn::{CloseReason, Connection, Rules, State, ERR_SERVER_BUSY};
use crate::protocol::proxy::Source;
use crate::reactor::alarm::Alarm;
use crate::reactor::listen;
use crate::reactor::slots::Slots;
use crate::reactor::stats::Stats;
use crate::reactor::timers::{Clock, Tick, Timers};

/// The signal source's token (signal-hook-mio's self-pipe, a Unix socket pair).
/// Connection tokens are slab keys, counted up from 0, so the top of the token space is
/// free for the few non-connection sources.
const SIGNALS: Token = Token(usize::MAX - 1);

/// The alarm's token.
const ALARM: Token = Token(usize::MAX - 2);

/// Listener `i` has token `LISTENER_BASE - i`.
const LISTENER_BASE: usize = usize::MAX - 3;

/// One read buffer for all connections. A read fills it, the state machine copies out
/// only what it must keep (a partial line), and the next connection reuses it. 64 KiB
/// matches the default socket buffer, so one read usually empties the socket.
const SCRATCH_SIZE: usize = 64 * 1024;

/// Fairness: at most this many reads per connection per turn of the loop, so that one
/// client sending at full speed cannot starve the others. The connection then goes on
/// the `ready` list and is served again after the others had their turn.
const READS_PER_TURN: usize = 16;

/// How long we wait for a client's FIN after sending ours (see [`State::Lingering`]).
const LINGER: Duration = Duration::from_secs(2);

/// While out of file descriptors we retry `accept` this often (and whenever one of our
/// own connections closes). See [`Server::accept_all`].
const ACCEPT_RETRY: Duration = Duration::from_millis(250);

/// With `--proxy-protocol`, how long a new connection may take to send its PROXY header.
/// Short: a proxy sends it at once, and a client that does not is not talking to us right.
const PROXY_HEADER_TIMEOUT: Duration = Duration::from_secs(3);

/// Under systemd we report the connection count in `STATUS=` at most this often, and
/// only after it changed: an idle daemon still never wakes up.
const STATUS_EVERY: Duration = Duration::from_secs(1);

/// File descriptors kept free for the listeners, the poll, signal and alarm descriptors,
/// stdio, and the short-lived socket we accept to tell a client it is refused.
const FD_RESERVE: u64 = 32;

/// A connection as the loop sees it: the socket, the protocol state, and the readiness
/// and deadline bookkeeping that only the loop needs.
#[derive(Debug)]
struct Entry {
    /// The socket, non-blocking, registered once for READABLE | WRITABLE.
    stream: TcpStream,
    /// The protocol state machine and its buffers.
    conn: Connection,
    /// The socket may hold unread bytes: set by a readable event, cleared only by a read
    /// that says `WouldBlock` (or implies it, see [`read_some`]). While this is
    /// set and we are not reading, *we* owe the connection a visit: no event will come.
    can_read: bool,
    /// The client's FIN has been reported, so a short read does not prove the socket is
    /// empty: the EOF is still waiting to be read.
    fin_reported: bool,
    /// The socket may take more bytes: set by a writable event, cleared by `WouldBlock`
    /// or a short write. Saves a `write` that would only fail while the client is slow.
    can_write: bool,
    /// Already on the `ready` list.
    queued: bool,
    /// `shutdown(Write)` done (we entered `Lingering`).
    write_shut: bool,
    /// Unique for the life of the process, to tell a reused slab key from the old one.
    serial: u64,
    /// When this connection times out, unless activity pushes it back (`NEVER`: no
    /// idle timeout).
    deadline: Tick,
    /// The deadline of this connection's one live entry in [`Timers`] (`NEVER`: none).
    armed: Tick,
    /// The client's address, for the logs.
    peer: SocketAddr,
    /// Bytes read from this client.
    bytes_in: u64,
    /// Bytes written to this client.
    bytes_out: u64,
}

/// The daemon: listeners, signals, connections, deadlines and counters, all owned by
/// one loop.
pub struct Server {
    /// The kernel's readiness queue (epoll on Linux).
    poll: Poll,
    /// Open listeners (emptied when the drain starts).
    listeners: Vec<TcpListener>,
    /// SIGINT, SIGTERM, SIGHUP and SIGUSR1, delivered as readiness of a socket pair: the
    /// signal handler only writes a byte to it (the self-pipe trick).
    signals: Signals,
    /// Every connection, by token.
    conns: Slots<Entry>,
    /// The rules all connections share.
    rules: Rules,
    /// Clients served at once (after clamping to the fd limit).
    max_connections: usize,
    /// `--idle-timeout`.
    idle_timeout: Option<Duration>,
    /// `--drain-timeout`.
    drain_timeout: Duration,
    /// The shared read buffer.
    scratch: Box<[u8]>,
    /// The shared reply buffer, lent to the connection being served (see
    /// [`Connection::lend_output`]): replies are built in it and usually all written at
    /// once, so a batch of replies costs no allocation. Its capacity grows to the
    /// largest batch, at most `--max-pending` plus one reply.
    replies: Vec<u8>,
    /// Connection deadlines.
    timers: Timers,
    /// Wakes the poll at the earliest of all deadlines (connections', drain, accept
    /// retry, status report), so that `poll` itself never needs a timeout.
    alarm: Alarm,
    /// Connections we owe a visit: readable data left unread by the fairness budget.
    ready: Vec<usize>,
    /// Counters.
    stats: Stats,
    /// Set when SIGINT/SIGTERM started the drain: when it must end.
    drain_deadline: Option<Instant>,
    /// A second SIGINT/SIGTERM: leave now.
    exit_now: bool,
    /// Out of file descriptors: accepting resumes at this time (or on a close).
    accept_retry: Option<Instant>,
    /// The serial for the next connection.
    next_serial: u64,
    /// The time of the current loop turn (one clock read per batch, not per event).
    now: Instant,
    /// The same, as a [`Tick`] of `clock`.
    tick: Tick,
    /// Converts between `Instant`s and the compact ticks connections store.
    clock: Clock,
    /// Started by systemd with `NOTIFY_SOCKET`: send READY/STATUS/STOPPING.
    systemd: bool,
    /// When to send the next `STATUS=` (set when the connection count changes).
    status_due: Option<Instant>,
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
        let poll = Poll::new()?;
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
        for (i, listener) in listeners.iter_mut().enumerate() {
            poll.registry()
                .register(listener, Token(LISTENER_BASE - i), Interest::READABLE)?;
        }
        let mut signals = Signals::new([SIGINT, SIGTERM, SIGHUP, SIGUSR1])?;
        let clock = Clock::new();
        poll.registry()
            .register(&mut signals, SIGNALS, Interest::READABLE)?;
        let mut alarm = Alarm::new()?;
        poll.registry()
            .register(&mut alarm, ALARM, Interest::READABLE)?;
        Ok(Server {
            poll,
            listeners,
            signals,
            conns: Slots::new(),
            rules: Rules::from_config(config),
            max_connections: clamp_to_fd_limit(config.max_connections),
            idle_timeout: config.idle_timeout,
            drain_timeout: config.drain_timeout,
            scratch: vec![0; SCRATCH_SIZE].into_boxed_slice(),
            replies: Vec::new(),
            timers: Timers::new(),
            alarm,
            ready: Vec::new(),
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
        while !self.turn(&mut events, None)? {}
        info!("{}", self.stats.summary(self.conns.len()));
        Ok(self.stats)
    }

    /// One turn of the loop: sleep until something is ready, do all the work it
    /// allows, close what closed. True when the loop is over (a drain completed, or a
    /// second signal). `longest` caps the sleep, for tests that turn the loop by hand;
    /// the daemon passes `None` and lets the alarm wake it.
    fn turn(&mut self, events: &mut Events, longest: Option<Duration>) -> io::Result<bool> {
        self.alarm.set(self.next_deadline(), self.now)?;
        // Sleep until an event (the alarm is one), unless we owe a connection a visit:
        // then only collect what is ready and come straight back.
        let timeout = if self.ready.is_empty() {
            longest
        } else {
            Some(Duration::ZERO)
        };
        if let Err(e) = self.poll.poll(events, timeout) {
            if interrupted(&e) {
                // A signal landed during epoll_wait; its handler already wrote to the
                // signal socket, so the next poll reports it. Not an error.
                return Ok(false);
            }
            return Err(e);
        }
        self.now = Instant::now();
        self.tick = self.clock.tick(self.now);
        for event in events.iter() {
            match event.token() {
                SIGNALS => self.handle_signals(),
                // The deadlines it stands for are checked below, every turn.
                ALARM => self.alarm.rang(),
                Token(t) if t > LISTENER_BASE - self.listeners.len() => {
                    self.accept_all(LISTENER_BASE - t)
                }
                Token(key) => self.handle_event(key, event),
            }
        }
        self.serve_ready();
        self.expire_timers();
        self.retry_accept_if_due();
        self.reap();
        self.send_status_if_due();
        Ok(self.exit_now || (self.drain_deadline.is_some() && self.conns.is_empty()))
    }

    /// When the alarm must ring: the earliest of the connections' deadlines, the drain
    /// deadline, the accept retry and the status report. `None` when nothing is due, so
    /// an idle server makes no wakeups at all.
    fn next_deadline(&self) -> Option<Instant> {
        [
            self.timers.next_deadline().map(|t| self.clock.instant(t)),
            self.drain_deadline,
            self.accept_retry,
            self.status_due,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// A connection's socket changed readiness.
    fn handle_event(&mut self, key: usize, event: &mio::event::Event) {
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
        if event.is_writable() || event.is_write_closed() || event.is_error() {
            entry.can_write = true;
        }
        self.drive(key);
    }

    /// Does all the work a connection's readiness allows (see [`pump`]), then applies
    /// the state machine's decisions: log a proxied client, send our FIN, retire the
    /// connection, or re-arm its timer.
    fn drive(&mut self, key: usize) {
        // Where activity during this visit moves the idle deadline: computed once here,
        // not at every read and write.
        let idle_deadline = self.idle_deadline();
        let Some(entry) = self.conns.get_mut(key) else {
            return;
        };
        let lines_before = entry.conn.lines();
        let draining = self.drain_deadline.is_some();
        entry.conn.lend_output(&mut self.replies);
        let more = pump(
            entry,
            &self.rules,
            &mut self.scratch,
            &mut self.stats,
            idle_deadline,
            draining,
        );
        entry.conn.return_output(&mut self.replies);
        if more && !entry.queued {
            // Used its fair share with data still waiting: come back after the others.
            entry.queued = true;
            self.ready.push(key);
        }
        self.stats.lines += entry.conn.lines() - lines_before;
        if let Some(source) = entry.conn.take_proxied_source() {
            log_proxied_client(entry, source);
            // From now on it times out like any other client.
            entry.deadline = idle_deadline;
        }
        if entry.conn.state() == State::Lingering && !entry.write_shut {
            // All replies are out: send our FIN now, then wait (bounded) for theirs.
            entry.write_shut = true;
            if entry.stream.shutdown(Shutdown::Write).is_err() {
                entry.conn.handle_error();
            }
            entry.deadline = entry.deadline.min(self.tick.after(LINGER));
        }
        if entry.conn.is_closed() {
            self.conns.retire(key);
        } else {
            arm_timer(&mut self.timers, key, entry);
        }
    }

    /// Serves the connections that were left with unread data by the fairness budget.
    fn serve_ready(&mut self) {
        for key in std::mem::take(&mut self.ready) {
            if let Some(entry) = self.conns.get_mut(key) {
                entry.queued = false;
                self.drive(key);
            }
        }
    }

    /// Fires the deadlines that are due.
    fn expire_timers(&mut self) {
        if let Some(deadline) = self.drain_deadline {
            if self.now >= deadline {
                warn!("drain timeout: closing {} connections", self.conns.len());
                for key in self.conns.live_keys() {
                    if let Some(entry) = self.conns.get_mut(key) {
                        entry.conn.handle_drain_timeout();
                    }
                    self.conns.retire(key);
                }
                return;
            }
        }
        let idle_deadline = self.idle_deadline();
        while let Some(timer) = self.timers.pop_due(self.tick) {
            let Some(entry) = self.conns.get_mut(timer.key) else {
                continue;
            };
            if entry.serial != timer.serial || entry.armed != timer.at {
                continue; // A stale entry: its connection is gone or re-armed since.
            }
            entry.armed = Tick::NEVER;
            if entry.deadline <= self.tick {
                entry.deadline = idle_deadline;
                entry.conn.handle_timeout();
                self.drive(timer.key);
            } else {
                // Activity pushed the deadline back since this entry was scheduled.
                arm_timer(&mut self.timers, timer.key, entry);
            }
        }
    }

    /// A listener is readable: accept every waiting connection.
    ///
    /// Out of file descriptors, `accept` fails with EMFILE and the connection stays in
    /// the kernel's queue. Edge-triggered, the listener will not be reported again for
    /// it, so we must come back ourselves. We chose a retry deadline over the classic
    /// "spare descriptor" trick: the spare trick accepts and closes the waiting client
    /// (it is turned away), while a retry lets it wait in the queue and be served as
    /// soon as a descriptor is free. We retry when one of our connections closes, and
    /// every [`ACCEPT_RETRY`] in case descriptors were freed elsewhere (ENFILE). The
    /// warning is logged once per episode, not once per attempt.
    fn accept_all(&mut self, index: usize) {
        loop {
            let Some(listener) = self.listeners.get(index) else {
                return;
            };
            match listener.accept() {
                Ok((stream, peer)) => self.admit(stream, peer),
                Err(e) if would_block(&e) => {
                    // The queue is empty. At the fd limit Linux says EMFILE even then (it
                    // takes the descriptor before it looks at the queue), so WouldBlock
                    // also proves descriptors are available again: the episode is over.
                    // (A successful accept alone proves nothing: the next may fail again,
                    // and one warning per episode is enough.)
                    if self.accept_retry.take().is_some() {
                        info!("file descriptors available again: the accept queue is empty");
                    }
                    return;
                }
                Err(e) if interrupted(&e) => continue,
                Err(e) if out_of_fds(&e) => {
                    if self.accept_retry.is_none() {
                        warn!(
                            "out of file descriptors ({e}) with {} connections: \
                             new clients wait in the queue",
                            self.conns.len()
                        );
                    }
                    self.accept_retry = Some(self.now + ACCEPT_RETRY);
                    return;
                }
                Err(e) if accept_transient(&e) => debug!("accept: {e}"),
                Err(e) => {
                    // Unknown: do not spin on it; the next new connection retries.
                    error!("accept failed: {e}");
                    return;
                }
            }
        }
    }

    /// Retries accepting after EMFILE when its deadline is due.
    fn retry_accept_if_due(&mut self) {
        if self.accept_retry.is_some_and(|t| t <= self.now) {
            self.accept_retry = Some(self.now + ACCEPT_RETRY);
            for i in 0..self.listeners.len() {
                self.accept_all(i);
            }
        }
    }

    /// Takes a freshly accepted socket: refuse it if we are full, else register it and
    /// send the banner at once (a new socket is writable; no need to wait for the event).
    fn admit(&mut self, mut stream: TcpStream, peer: SocketAddr) {
        if self.conns.len() >= self.max_connections {
            self.stats.refused_busy += 1;
            info!(
                "refused {peer}: server busy ({} connections)",
                self.conns.len()
            );
            // A fresh socket's send buffer is empty, so this short write cannot block.
            // Then FIN, and close. Closing with unread input would send a RST instead,
            // which can destroy the message before the client reads it, so we first
            // drop whatever the client already sent (one read; a slot for a proper
            // linger is exactly what we do not have).
            let _ = stream.write(ERR_SERVER_BUSY);
            let _ = stream.shutdown(Shutdown::Write);
            let _ = stream.read(&mut self.scratch);
            return;
        }
        // Lines are answered one write at a time; Nagle would hold small replies back.
        if let Err(e) = stream.set_nodelay(true) {
            debug!("TCP_NODELAY on {peer}: {e}");
        }
        let key = self.conns.vacant_key();
        if let Err(e) = self.poll.registry().register(
            &mut stream,
            Token(key),
            Interest::READABLE | Interest::WRITABLE,
        ) {
            warn!("cannot register {peer}: {e}");
            return;
        }
        if self.rules.proxy_protocol {
            debug!("accepted {peer}; waiting for its PROXY header");
        } else {
            info!("Connected with {peer}");
        }
        self.stats.accepted += 1;
        self.status_changed();
        self.next_serial += 1;
        let entry = Entry {
            stream,
            conn: Connection::new(&self.rules),
            can_read: false,
            fin_reported: false,
            can_write: true,
            queued: false,
            write_shut: false,
            serial: self.next_serial,
            deadline: if self.rules.proxy_protocol {
                self.tick.after(PROXY_HEADER_TIMEOUT)
            } else {
                self.idle_deadline()
            },
            armed: Tick::NEVER,
            peer,
            bytes_in: 0,
            bytes_out: 0,
        };
        let inserted = self.conns.insert(entry);
        debug_assert_eq!(inserted, key);
        if self.drain_deadline.is_some() {
            // Accepted during the drain's first sweep: read what it sent, then finish.
            if let Some(entry) = self.conns.get_mut(key) {
                entry.can_read = true;
            }
        }
        self.drive(key);
    }

    /// When a connection that is active now goes idle.
    fn idle_deadline(&self) -> Tick {
        self.idle_timeout
            .map_or(Tick::NEVER, |timeout| self.tick.after(timeout))
    }

    /// Handles every pending signal.
    fn handle_signals(&mut self) {
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
                _ => {}
            }
        }
    }

    /// SIGINT/SIGTERM: stop accepting, answer what every client already sent, close
    /// each connection cleanly, and let `run` return once all are gone (or the drain
    /// timeout passes).
    fn start_drain(&mut self, signal: i32) {
        let name = if signal == SIGINT {
            "SIGINT"
        } else {
            "SIGTERM"
        };
        self.drain_deadline = Some(self.now + self.drain_timeout);
        // Clients whose connection is complete but not yet accepted have sent their lines
        // to us too: take them before closing the listeners, or they would be reset.
        for i in 0..self.listeners.len() {
            self.accept_all(i);
        }
        for mut listener in std::mem::take(&mut self.listeners) {
            let _ = self.poll.registry().deregister(&mut listener);
        }
        self.accept_retry = None;
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
            self.drive(key);
        }
    }

    /// Sends a state to systemd's notify socket (a no-op outside systemd). A failure is
    /// logged and otherwise ignored: serving clients matters more than reporting.
    fn notify_systemd(&self, states: &[sd_notify::NotifyState<'_>]) {
        if self.systemd {
            if let Err(e) = sd_notify::notify(states) {
                warn!("systemd notify: {e}");
            }
        }
    }

    /// The connection count changed: schedule a `STATUS=` (under systemd only).
    fn status_changed(&mut self) {
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
        let mut closed = 0;
        let (poll, stats) = (&self.poll, &mut self.stats);
        self.conns.reap(|_, mut entry| {
            closed += 1;
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
        if closed > 0 {
            self.status_changed();
        }
        if closed > 0 && self.accept_retry.is_some() {
            // A descriptor was just freed: a client may be waiting in the queue.
            for i in 0..self.listeners.len() {
                self.accept_all(i);
            }
        }
    }
}

/// Reads, answers and writes until the socket or the state machine says stop: read
/// while the connection wants input and the socket may have some, write what it has to
/// send, and read again if writing made room. Returns true when the fairness budget ran
/// out with data still waiting (the caller must come back: no event will).
fn pump(
    entry: &mut Entry,
    p: &Rules,
    scratch: &mut [u8],
    stats: &mut Stats,
    idle_deadline: Tick,
    draining: bool,
) -> bool {
    let mut reads = 0;
    loop {
        while entry.can_read && entry.conn.wants_read(p) && reads < READS_PER_TURN {
            reads += 1;
            read_some(entry, p, scratch, stats, idle_deadline);
        }
        if draining && !entry.can_read {
            // Draining: everything the client had sent is read; answer it and end.
            entry.conn.handle_shutdown(p);
        }
        if entry.conn.is_closed() {
            return false; // A read failed: nothing more can be sent.
        }
        write_all(entry, p, stats, idle_deadline);
        let more = entry.can_read && entry.conn.wants_read(p);
        if !more || reads >= READS_PER_TURN {
            return more;
        }
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

/// Reads once from the socket into the scratch buffer and feeds the state machine.
///
/// The short-read rule: if the read returned less than the buffer could hold, the socket
/// was emptied, so the next read would only say `WouldBlock`, and we skip it. That is
/// safe with edge-triggered epoll because every new segment that arrives after this read
/// raises a new edge. The exception is a FIN that was already reported: it raises no
/// new edge, so then we keep reading until we see the EOF (a read of 0).
fn read_some(
    entry: &mut Entry,
    p: &Rules,
    scratch: &mut [u8],
    stats: &mut Stats,
    idle_deadline: Tick,
) {
    match entry.stream.read(scratch) {
        Ok(0) => {
            entry.can_read = false;
            entry.conn.handle_read_closed(p);
        }
        Ok(n) => {
            entry.bytes_in += n as u64;
            stats.bytes_in += n as u64;
            touch(entry, idle_deadline);
            if n < scratch.len() && !entry.fin_reported {
                entry.can_read = false;
            }
            entry.conn.handle_input(p, &scratch[..n]);
        }
        Err(e) if would_block(&e) => entry.can_read = false,
        Err(e) if interrupted(&e) => {}
        // Reset, or another error: the connection is dead; nobody else notices.
        Err(_) => {
            entry.can_read = false;
            entry.conn.handle_error();
        }
    }
}

/// Writes pending output until it is all sent or the socket is full.
fn write_all(entry: &mut Entry, p: &Rules, stats: &mut Stats, idle_deadline: Tick) {
    while entry.can_write {
        let out = entry.conn.poll_output();
        if out.is_empty() {
            return;
        }
        let len = out.len();
        match entry.stream.write(out) {
            Ok(n) => {
                entry.bytes_out += n as u64;
                stats.bytes_out += n as u64;
                touch(entry, idle_deadline);
                // A short write means the send buffer is full: the next write would
                // fail, and a writable edge will come when there is room again.
                if n < len {
                    entry.can_write = false;
                }
                entry.conn.advance_output(p, n);
            }
            Err(e) if would_block(&e) => entry.can_write = false,
            Err(e) if interrupted(&e) => {}
            Err(_) => {
                entry.can_write = false;
                entry.conn.handle_error();
            }
        }
    }
}

/// Activity: pushes the idle deadline back. Just a field write; the timer heap is only
/// touched when the old deadline comes due (see [`crate::reactor::timers`]). A lingering
/// connection keeps its short linger deadline whatever it sends, and so does one that
/// has not finished its PROXY header.
fn touch(entry: &mut Entry, idle_deadline: Tick) {
    if !matches!(entry.conn.state(), State::Lingering | State::ProxyHeader) {
        entry.deadline = idle_deadline;
    }
}

/// Makes sure the connection's deadline has a live timer at or before it.
fn arm_timer(timers: &mut Timers, key: usize, entry: &mut Entry) {
    // NEVER sorts after every real tick, so "no deadline" never arms, and "no timer
    // armed" (armed == NEVER) arms any real deadline.
    if entry.deadline < entry.armed {
        timers.schedule(entry.deadline, key, entry.serial);
        entry.armed = entry.deadline;
    }
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit and caps `wanted` connections to
/// what it allows, keeping [`FD_RESERVE`] descriptors for everything else.
fn clamp_to_fd_limit(wanted: usize) -> usize {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => {
            let allowed =
                usize::try_from(limit.saturating_sub(FD_RESERVE).max(1)).unwrap_or(usize::MAX);
            info!(
                "file descriptor limit {limit}: serving at most {} connections",
                wanted.min(allowed)
            );
            if wanted > allowed {
                warn!(
                    "--max-connections {wanted} lowered to {allowed} by the file descriptor limit"
                );
            }
            wanted.min(allowed)
        }
        Err(e) => {
            warn!("cannot read the file descriptor limit: {e}");
            wanted
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
                .turn(&mut events, Some(Duration::from_millis(20)))
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
}
