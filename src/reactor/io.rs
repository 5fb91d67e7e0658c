//! Moving bytes between one socket and its state machine: read until the socket is empty
//! (`WouldBlock`, or on Linux a short read) or the fairness budget is used, write until
//! `WouldBlock`, a short write, or until nothing is left.
//!
//! These functions are the whole of the reactor's I/O for a connection. They know the
//! socket and the readiness flags the loop keeps for it ([`Entry`]); what the bytes mean
//! is the state machine's business ([`Connection`]).

use std::io::{Read, Write};
use std::net::SocketAddr;

use log::trace;
use mio::net::TcpStream;

use crate::io_errors::{interrupted, would_block};
use crate::protocol::conn::{Connection, Rules};
use crate::reactor::stats::Stats;
use crate::reactor::timers::Tick;
use crate::waypoint;

/// Fairness: at most this many reads per connection per visit, so that one client
/// sending at full speed cannot starve the others. A connection that used its budget
/// with data still waiting goes on the loop's `owed` list and is visited again after
/// every other ready connection had its turn, in the next turn of the loop.
pub const READS_PER_VISIT: usize = 16;

/// May a short read clear `can_read`? Only where epoll tells us about urgent data
/// (`Interest::PRIORITY`); see [`read_once`].
const SHORT_READ_PROVES_EMPTY: bool = cfg!(any(target_os = "linux", target_os = "android"));

/// A connection as the loop sees it: the socket, the protocol state, and the readiness
/// bookkeeping that only the loop needs.
#[derive(Debug)]
pub struct Entry {
    /// The socket, non-blocking, registered once for READABLE | WRITABLE (and PRIORITY
    /// on Linux).
    pub stream: TcpStream,
    /// The protocol state machine and its buffers.
    pub conn: Connection,
    /// The socket may hold unread bytes: set by a readable event, cleared only by a read
    /// that says `WouldBlock` (or implies it, see [`read_once`]). While this is
    /// set and we are not reading, *we* owe the connection a visit: no event will come.
    pub can_read: bool,
    /// The client's FIN has been reported, so a short read does not prove the socket is
    /// empty: the EOF is still waiting to be read.
    pub fin_reported: bool,
    /// The client sent TCP urgent data: a read stops at the urgent mark, so a short read
    /// does not prove the socket is empty either.
    pub urgent: bool,
    /// The socket may take more bytes: set by a writable event, cleared by `WouldBlock`
    /// or a short write. Saves a `write` that would only fail while the client is slow.
    pub can_write: bool,
    /// Already on the loop's `owed` list (visited again next turn).
    pub owed: bool,
    /// `shutdown(Write)` done: our FIN is out.
    pub fin_sent: bool,
    /// Counted under its address for `--max-per-ip` (uncounted when it closes).
    pub counted: bool,
    /// Not read from while all buffers together are over `--max-memory`.
    pub paused: bool,
    /// The buffer capacity this connection is counted for in the loop's memory total.
    pub charged: usize,
    /// Unique for the life of the process, to tell a reused slab key from the old one.
    pub serial: u64,
    /// The deadline of this connection's one live entry in the timer heap (`NEVER`: none).
    pub armed: Tick,
    /// The client's address, for the logs.
    pub peer: SocketAddr,
    /// Bytes read from this client.
    pub bytes_in: u64,
    /// Bytes written to this client.
    pub bytes_out: u64,
}

/// What one visit moved, for the state machine's clocks and the loop's fairness.
#[derive(Debug, Default, Clone, Copy)]
pub struct Moved {
    /// Bytes came in from the client (activity, for the idle timeout).
    pub read: bool,
    /// The socket took some of our output (progress, for `--send-timeout`).
    pub wrote: bool,
    /// The fairness budget ran out with data still waiting: the loop owes a visit.
    pub more: bool,
}

/// Reads, answers and writes until the socket or the state machine says stop: read
/// while the connection wants input and the socket may have some, write what it has to
/// send, and read again if writing made room. `more` in the answer means the fairness
/// budget ran out with data still waiting (the caller must come back: no event will).
pub fn transfer(
    entry: &mut Entry,
    rules: &Rules,
    scratch: &mut [u8],
    stats: &mut Stats,
    draining: bool,
) -> Moved {
    waypoint("transfer");
    let mut moved = Moved::default();
    let mut reads = 0;
    loop {
        while entry.can_read && wants_read(entry, rules) && reads < READS_PER_VISIT {
            reads += 1;
            moved.read |= read_once(entry, rules, scratch, stats);
        }
        if draining && !entry.can_read {
            // Draining: everything the client had sent is read; answer it and end.
            entry.conn.handle_shutdown(rules);
        }
        if entry.conn.is_closed() {
            return moved; // A read failed: nothing more can be sent.
        }
        moved.wrote |= write_out(entry, rules, stats);
        moved.more = entry.can_read && wants_read(entry, rules);
        if !moved.more || reads >= READS_PER_VISIT {
            return moved;
        }
    }
}

/// May we read for this connection now? Its state machine decides, unless the loop
/// paused it to stay under `--max-memory`.
fn wants_read(entry: &Entry, rules: &Rules) -> bool {
    !entry.paused && entry.conn.wants_read(rules)
}

/// Reads once from the socket into the scratch buffer and feeds the state machine.
///
/// The short-read rule (Linux): if the read returned less than the buffer could hold,
/// the socket was emptied, so the next read would only say `WouldBlock`, and we skip it.
/// That is safe with edge-triggered epoll because every new segment that arrives after
/// this read raises a new edge. There are two exceptions, where bytes can be left
/// behind a short read with no new edge to come: a FIN that was already reported (we
/// keep reading until we see the EOF, a read of 0), and TCP urgent data (a read stops
/// at the urgent mark; epoll reports it as PRIORITY, see [`Entry::urgent`]). Elsewhere
/// we read until `WouldBlock`, the textbook rule. True when bytes came in.
pub fn read_once(entry: &mut Entry, rules: &Rules, scratch: &mut [u8], stats: &mut Stats) -> bool {
    waypoint("read_once");
    match entry.stream.read(scratch) {
        Ok(0) => {
            trace!("{}: read: end of stream", entry.peer);
            entry.can_read = false;
            entry.conn.handle_read_closed(rules);
            false
        }
        Ok(n) => {
            trace!("{}: read {n} bytes", entry.peer);
            entry.bytes_in += n as u64;
            stats.bytes_in += n as u64;
            if SHORT_READ_PROVES_EMPTY && n < scratch.len() && !entry.fin_reported && !entry.urgent
            {
                trace!("{}: a short read: the socket is empty", entry.peer);
                entry.can_read = false;
            }
            entry.conn.handle_input(rules, &scratch[..n]);
            true
        }
        Err(e) if would_block(&e) => {
            trace!("{}: read: WouldBlock", entry.peer);
            entry.can_read = false;
            false
        }
        Err(e) if interrupted(&e) => false,
        // Reset, or another error: the connection is dead; nobody else notices.
        Err(e) => {
            trace!("{}: read: {e}", entry.peer);
            entry.can_read = false;
            entry.conn.handle_error();
            false
        }
    }
}

/// Writes pending output until it is all sent or the socket is full. True when the
/// socket took any of it.
pub fn write_out(entry: &mut Entry, rules: &Rules, stats: &mut Stats) -> bool {
    waypoint("write_out");
    let mut wrote = false;
    while entry.can_write {
        let out = entry.conn.poll_output();
        if out.is_empty() {
            break;
        }
        let len = out.len();
        match entry.stream.write(out) {
            Ok(n) => {
                trace!("{}: wrote {n} of {len} bytes", entry.peer);
                entry.bytes_out += n as u64;
                stats.bytes_out += n as u64;
                wrote |= n > 0;
                // A short write means the send buffer is full: the next write would
                // fail, and a writable edge will come when there is room again.
                if n < len {
                    entry.can_write = false;
                }
                entry.conn.advance_output(rules, n);
            }
            Err(e) if would_block(&e) => {
                trace!("{}: write: WouldBlock ({len} bytes wait)", entry.peer);
                entry.can_write = false;
            }
            Err(e) if interrupted(&e) => {}
            Err(e) => {
                trace!("{}: write: {e}", entry.peer);
                entry.can_write = false;
                entry.conn.handle_error();
            }
        }
    }
    wrote
}
