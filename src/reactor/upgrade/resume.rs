//! The new image's side of an upgrade: adopt what the old image handed over, and go on.
//!
//! Every connection comes back as a socket (a new descriptor from `SCM_RIGHTS`) and a
//! value (its [`Connection`](crate::protocol::conn::Connection), read from the memory
//! file). We register each socket with a new poll, as `accept` would, and mark it
//! readable, writable and owed a visit: a new registration does report what is ready
//! already, but being sure costs one read that says `WouldBlock`, while a missed edge
//! would strand a client for good.
//!
//! Nothing here can fall back: the old image is gone. Any error is returned, and the
//! caller logs it and exits 1.

use std::fs::File;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;

use log::info;
use mio::net::{TcpListener, TcpStream};
use mio::{Poll, Token};

use super::fds;
use super::state::{self, Meta, Saved};
use crate::config::Config;
use crate::protocol::conn::Connection;
use crate::reactor::accept::CONNECTION_INTEREST;
use crate::reactor::io::Entry;
use crate::reactor::metrics::Metrics;
use crate::reactor::server::{arm_timer, Server};
use crate::reactor::timers::Tick;

impl Server {
    /// Starts the loop from the state the previous image of this process handed over
    /// (`ECHOD_RESUME=1`; see [`crate::reactor::upgrade`]), instead of binding.
    pub fn resume(config: &Config) -> io::Result<Server> {
        let channel = adopt_channel()?;
        let mut fds = fds::receive_chunk(&channel)?.into_iter();
        let memory = File::from(fds.next().ok_or_else(|| invalid("no saved state"))?);
        let bytes = fds::read_memory_file(&memory)?;
        drop(memory);
        // Deadlines come back relative to tick 0 of the new loop, whose clock starts
        // a moment later: a timeout may fire a few milliseconds late, never early.
        // `load` reads and checks the whole state before we adopt a single descriptor
        // or build any part of the server: a state it refuses leaves nothing half done.
        let saved = state::load(&bytes, Tick::from_millis(0))?;
        let mut received: Vec<OwnedFd> = fds.collect();
        while received.len() < saved.descriptors() {
            received.extend(fds::receive_chunk(&channel)?);
        }
        if received.len() != saved.descriptors() {
            return Err(invalid("more descriptors than the saved state names"));
        }
        Server::rebuild(config, saved, received)
    }

    /// The loop around what was received: listeners first, then the metrics listener,
    /// then the connections, in the order they were sent.
    fn rebuild(config: &Config, saved: Saved, received: Vec<OwnedFd>) -> io::Result<Server> {
        let mut fds = received.into_iter();
        let listeners: Vec<TcpListener> = fds
            .by_ref()
            .take(saved.listeners)
            .map(listener_from)
            .collect::<io::Result<_>>()?;
        let poll = Poll::new()?;
        let metrics = match saved.metrics_started {
            Some(started) => {
                let fd = fds.next().ok_or_else(|| invalid("no metrics listener"))?;
                match config.metrics {
                    Some(_) => Some(Metrics::adopt(
                        listener_from(fd)?,
                        started,
                        config.timings.scrape,
                        poll.registry(),
                    )?),
                    None => None, // Dropping it closes it: this image serves no metrics.
                }
            }
            None => Metrics::open(config.metrics, config.timings.scrape, poll.registry())?,
        };
        let n_listeners = listeners.len();
        let mut server = Server::assemble(config, poll, listeners, metrics)?;
        server.stats = saved.stats;
        server.next_serial = saved.next_serial;
        let n_conns = saved.conns.len();
        for ((meta, conn), fd) in saved.conns.into_iter().zip(fds) {
            server.adopt(meta, conn, fd)?;
        }
        // A client may be waiting in a listener's queue since the old image's last
        // turn: look at every listener once, as we look at every connection.
        server.listeners_owed = (0..n_listeners).collect();
        info!(
            "resumed {n_conns} connections and {n_listeners} listeners (echod {})",
            env!("CARGO_PKG_VERSION")
        );
        Ok(server)
    }

    /// Registers one handed-over connection and gives it back its slot's bookkeeping.
    fn adopt(&mut self, meta: Meta, conn: Connection, fd: OwnedFd) -> io::Result<()> {
        // Non-blocking already: O_NONBLOCK belongs to the open file, not to the
        // descriptor, and the descriptor we received refers to the very open file the
        // old image accepted non-blocking. (We skip the `ioctl` that would say so again:
        // with 10,000 connections it is 10,000 system calls in the pause.)
        let mut stream = TcpStream::from_std(std::net::TcpStream::from(fd));
        let key = self.conns.vacant_key();
        self.poll
            .registry()
            .register(&mut stream, Token(key), CONNECTION_INTEREST)?;
        if meta.counted {
            // Same arguments, same limit: this cannot refuse what the old image held.
            self.count_address(meta.peer.ip());
        }
        let inserted = self.conns.insert(Entry {
            stream,
            conn,
            can_read: true,
            fin_reported: meta.fin_reported,
            urgent: meta.urgent,
            can_write: true,
            owed: true,
            fin_sent: meta.fin_sent,
            counted: meta.counted,
            paused: false,
            charged: 0,
            serial: meta.serial,
            armed: Tick::NEVER,
            peer: meta.peer,
            bytes_in: meta.bytes_in,
            bytes_out: meta.bytes_out,
        });
        debug_assert_eq!(inserted, key);
        self.owed.push(key);
        if let Some(entry) = self.conns.get_mut(key) {
            arm_timer(&mut self.timers, key, entry);
        }
        self.recharge(key);
        Ok(())
    }
}

/// Takes the upgrade channel the old image left open for us, the way socket
/// activation passes sockets (`LISTEN_FDS=1`, `LISTEN_PID`, `LISTEN_FDS_FIRST_FD`).
/// `listenfd` checks the number is a Unix stream socket before adopting it, and
/// removes those variables, so the socket-activation code never sees them.
fn adopt_channel() -> io::Result<UnixStream> {
    listenfd::ListenFd::from_env()
        .take_custom::<UnixStream>(0, libc::AF_UNIX, libc::SOCK_STREAM, "upgrade channel")?
        .ok_or_else(|| invalid("ECHOD_RESUME=1 but no upgrade channel (LISTEN_FDS)"))
}

/// A listener from a handed-over descriptor.
fn listener_from(fd: OwnedFd) -> io::Result<TcpListener> {
    let listener = std::net::TcpListener::from(fd);
    listener.set_nonblocking(true)?;
    Ok(TcpListener::from_std(listener))
}

/// An error for a handover that does not add up.
fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("upgrade: {what}"))
}
