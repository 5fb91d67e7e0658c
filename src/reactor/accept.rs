//! Accepting: the listener is readable, so we accept until `WouldBlock`, turn away
//! clients over the limit, and register the rest with the poll.
//!
//! This is the tutorial's `accept()` loop, turned inside out: instead of blocking in
//! `accept()` and handing each socket to a new thread, the loop is told the listener is
//! ready, takes every waiting connection at once, and gives each a state machine.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::time::Duration;

use log::{debug, error, info, trace, warn};
use mio::net::TcpStream;
use mio::{Interest, Token};

use crate::io_errors::{accept_transient, interrupted, out_of_fds, would_block};
use crate::protocol::conn::{Connection, ERR_SERVER_BUSY};
use crate::reactor::io::Entry;
use crate::reactor::server::Server;
use crate::reactor::timers::Tick;

/// While out of file descriptors we retry `accept` this often (and whenever one of our
/// own connections closes). See [`Server::accept_all`].
const ACCEPT_RETRY: Duration = Duration::from_millis(250);

/// File descriptors kept free for the listeners, the poll, signal and alarm descriptors,
/// stdio, and the short-lived socket we accept to tell a client it is refused.
const FD_RESERVE: u64 = 32;

impl Server {
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
    pub(super) fn accept_all(&mut self, index: usize) {
        loop {
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
                Err(e) if out_of_fds(&e) => {
                    if self.accept_retry.is_none() {
                        self.stats.out_of_fds_episodes += 1;
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
    pub(super) fn retry_accept_if_due(&mut self) {
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
            self.refuse_busy(stream, peer);
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
        trace!("{peer}: registered as token {key} for READABLE | WRITABLE");
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
            can_write: true,
            owed: false,
            fin_sent: false,
            active: false,
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

    /// Over `--max-connections`: tell the client and close, without giving it a slot.
    fn refuse_busy(&mut self, mut stream: TcpStream, peer: SocketAddr) {
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
