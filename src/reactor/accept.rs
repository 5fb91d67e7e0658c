//! Accepting: the listener is readable, so we accept until `WouldBlock` (at most
//! [`ACCEPTS_PER_TURN`] per turn), turn away clients over the limit, and register the rest
//! with the poll.
//!
//! This is the tutorial's `accept()` loop, turned inside out: instead of blocking in
//! `accept()` and handing each socket to a new thread, the loop is told the listener is
//! ready, takes every waiting connection at once, and gives each a state machine.

use std::io::{Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr};
use std::time::Duration;

use log::{debug, error, info, trace, warn};
use mio::net::TcpStream;
use mio::{Interest, Token};

use crate::io_errors::{accept_aborted, accept_must_wait, interrupted, out_of_fds, would_block};
use crate::protocol::conn::{Connection, ERR_SERVER_BUSY, ERR_TOO_MANY_FROM_ADDRESS};
use crate::reactor::io::Entry;
use crate::reactor::server::Server;
use crate::reactor::timers::Tick;
use crate::waypoint;

/// While out of file descriptors (or kernel memory) we retry `accept` this often (and
/// whenever one of our own connections closes). See [`Server::accept_all`].
const ACCEPT_RETRY: Duration = Duration::from_millis(250);

/// At most this many accepts per listener per turn of the loop (Redis takes 1,000 per
/// call too). A connect flood then waits its turn behind the clients already served,
/// instead of holding the loop in `accept` while their replies wait. With the budget
/// used up and the queue maybe not empty, the loop owes the listener a visit (no new
/// edge will come for connections already queued).
pub const ACCEPTS_PER_TURN: usize = 1000;

/// File descriptors kept free for the listeners, the poll, signal and alarm descriptors,
/// stdio, and the short-lived socket we accept to tell a client it is refused.
const FD_RESERVE: u64 = 32;

impl Server {
    /// A listener is readable: accept the waiting connections, up to
    /// [`ACCEPTS_PER_TURN`].
    ///
    /// Out of file descriptors, `accept` fails with EMFILE and the connection stays in
    /// the kernel's queue (ENFILE, ENOMEM, ENOBUFS and EPERM behave the same). Edge-triggered,
    /// the listener will not be reported again for it, so we must come back ourselves.
    /// Trying again at once would only fail again (a spin), so we set a retry deadline.
    /// We chose that over the classic "spare descriptor" trick: the spare trick accepts
    /// and closes the waiting client (it is turned away), while a retry lets it wait in
    /// the queue and be served as soon as a descriptor is free. We retry when one of our
    /// connections closes, and every [`ACCEPT_RETRY`] in case descriptors were freed
    /// elsewhere. The warning is logged once per episode, not once per attempt.
    pub(super) fn accept_all(&mut self, index: usize) {
        waypoint("accept_all");
        for _ in 0..ACCEPTS_PER_TURN {
            let Some(listener) = self.listeners.get(index) else {
                return;
            };
            match listener.accept() {
                Ok((stream, peer)) => self.admit(stream, peer),
                Err(e) if would_block(&e) => {
                    trace!("accept: WouldBlock");
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
                Err(e) if accept_must_wait(&e) => {
                    if self.accept_retry.is_none() {
                        self.stats.out_of_fds_episodes += 1;
                        let what = if out_of_fds(&e) {
                            "out of file descriptors"
                        } else {
                            "cannot accept"
                        };
                        warn!(
                            "{what} ({e}) with {} connections: new clients wait in the queue",
                            self.conns.len()
                        );
                    }
                    self.accept_retry = Some(self.now + ACCEPT_RETRY);
                    return;
                }
                Err(e) if accept_aborted(&e) => debug!("accept: {e}"),
                Err(e) => {
                    // Unknown: do not spin on it; the next new connection retries.
                    error!("accept failed: {e}");
                    return;
                }
            }
        }
        // The budget is used up and the queue may hold more: come back next turn.
        trace!("accept: {ACCEPTS_PER_TURN} this turn; the rest wait for the next");
        if !self.listeners_owed.contains(&index) {
            self.listeners_owed.push(index);
        }
    }

    /// Accepts on the listeners whose budget ran out last turn.
    pub(super) fn serve_owed_listeners(&mut self, owed: Vec<usize>) {
        waypoint("serve_owed_listeners");
        for index in owed {
            self.accept_all(index);
        }
    }

    /// Stops accepting: deregisters and closes every listener. Connections still in the
    /// kernel's queue are reset, so the drain calls this only once the queue is empty.
    pub(super) fn close_listeners(&mut self) {
        waypoint("close_listeners");
        for mut listener in std::mem::take(&mut self.listeners) {
            let _ = self.poll.registry().deregister(&mut listener);
        }
        self.listeners_owed.clear();
        self.accept_retry = None;
    }

    /// Retries accepting after EMFILE when its deadline is due.
    pub(super) fn retry_accept_if_due(&mut self) {
        waypoint("retry_accept_if_due");
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
        waypoint("admit");
        if self.conns.len() >= self.max_connections {
            self.stats.refused_busy += 1;
            info!(
                "refused {peer}: server busy ({} connections)",
                self.conns.len()
            );
            self.refuse(stream, ERR_SERVER_BUSY);
            return;
        }
        // Behind a proxy the socket's address is the proxy's: we count the client once
        // its PROXY header names it (see `Server::count_address`).
        let counted = !self.rules.proxy_protocol && self.max_per_ip.is_some();
        if counted && !self.count_address(peer.ip()) {
            self.stats.refused_per_ip += 1;
            info!("refused {peer}: too many connections from its address");
            self.refuse(stream, ERR_TOO_MANY_FROM_ADDRESS);
            return;
        }
        set_socket_options(&stream, peer);
        let key = self.conns.vacant_key();
        if let Err(e) = self
            .poll
            .registry()
            .register(&mut stream, Token(key), CONNECTION_INTEREST)
        {
            warn!("cannot register {peer}: {e}");
            return;
        }
        if self.rules.proxy_protocol {
            debug!("accepted {peer}; waiting for its PROXY header");
        } else {
            info!("Connected with {peer}");
        }
        trace!("{peer}: registered as token {key} for {CONNECTION_INTEREST:?}");
        self.stats.accepted += 1;
        self.status_changed();
        self.next_serial += 1;
        let mut conn = Connection::new(&self.rules);
        // Being accepted starts the connection's clocks (idle, or the PROXY header's).
        conn.handle_activity(&self.rules, self.tick);
        let inserted = self.conns.insert(Entry {
            stream,
            conn,
            // Accepted during the drain's first sweep: read what it sent, then finish.
            can_read: self.drain_deadline.is_some(),
            fin_reported: false,
            urgent: false,
            can_write: true,
            owed: false,
            fin_sent: false,
            counted,
            paused: false,
            charged: 0,
            serial: self.next_serial,
            armed: Tick::NEVER,
            peer,
            bytes_in: 0,
            bytes_out: 0,
        });
        debug_assert_eq!(inserted, key);
        self.stats.count_open(self.conns.len());
        self.visit(key);
    }

    /// One more connection from `ip`, if `--max-per-ip` allows it: true when counted.
    pub(super) fn count_address(&mut self, ip: IpAddr) -> bool {
        let Some(max) = self.max_per_ip else {
            return true;
        };
        let n = self.per_ip.entry(ip).or_insert(0);
        if *n >= max {
            return false;
        }
        *n += 1;
        true
    }

    /// A counted connection from `ip` closed.
    pub(super) fn uncount_address(&mut self, ip: IpAddr) {
        if let Some(n) = self.per_ip.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                // Forget the address: the map holds only addresses with connections.
                self.per_ip.remove(&ip);
            }
        }
    }

    /// Tells a client why it is turned away and closes, without giving it a slot.
    fn refuse(&mut self, mut stream: TcpStream, message: &[u8]) {
        // A fresh socket's send buffer is empty, so this short write cannot block.
        // Then FIN, and close. Closing with unread input would send a RST instead,
        // which can destroy the message before the client reads it, so we first
        // drop whatever the client already sent (one read; a slot for a proper
        // linger is exactly what we do not have).
        let _ = stream.write(message);
        let _ = stream.shutdown(Shutdown::Write);
        let _ = stream.read(&mut self.scratch);
    }
}

/// What every connection is registered for, once: READABLE and WRITABLE (edges make the
/// second free: no `epoll_ctl` when output starts or stops), and on Linux PRIORITY, so
/// that urgent data, which a read stops at, is reported (see [`crate::reactor::io`]).
#[cfg(any(target_os = "linux", target_os = "android"))]
pub(super) const CONNECTION_INTEREST: Interest = Interest::READABLE
    .add(Interest::WRITABLE)
    .add(Interest::PRIORITY);

/// What every connection is registered for, once: READABLE and WRITABLE (edges make the
/// second free: no `epoll_ctl` when output starts or stops).
#[cfg(not(any(target_os = "linux", target_os = "android")))]
pub(super) const CONNECTION_INTEREST: Interest = Interest::READABLE.add(Interest::WRITABLE);

/// How long a connection may be silent before the kernel starts probing it, and how
/// often it probes: a peer that vanished (power cut, cable pulled, NAT forgot us) is
/// noticed in minutes even with `--idle-timeout 0`.
const KEEPALIVE_IDLE: Duration = Duration::from_secs(60);
/// The interval between keepalive probes; after a few unanswered ones the socket fails.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);

/// Per-socket options for a new client. Each failure is logged and otherwise ignored:
/// the connection works without them.
fn set_socket_options(stream: &TcpStream, peer: SocketAddr) {
    waypoint("set_socket_options");
    let socket = socket2::SockRef::from(stream);
    // Lines are answered one write at a time; Nagle would hold small replies back.
    if let Err(e) = socket.set_nodelay(true) {
        debug!("TCP_NODELAY on {peer}: {e}");
    }
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(KEEPALIVE_IDLE)
        .with_interval(KEEPALIVE_INTERVAL);
    if let Err(e) = socket.set_tcp_keepalive(&keepalive) {
        debug!("SO_KEEPALIVE on {peer}: {e}");
    }
    // Urgent data stays in the byte stream (bytes are opaque: every byte is echoed)
    // instead of being taken out of band, where nobody would read it.
    if let Err(e) = socket.set_out_of_band_inline(true) {
        debug!("SO_OOBINLINE on {peer}: {e}");
    }
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit and caps `wanted` connections to
/// what it allows, keeping [`FD_RESERVE`] descriptors for everything else.
pub(super) fn clamp_to_fd_limit(wanted: usize) -> usize {
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
