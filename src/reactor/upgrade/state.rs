//! The saved state, format `echod-state-1`: what the old image writes and the new one
//! reads back.
//!
//! Everything is built from the codec of [`crate::protocol::state`] (little-endian
//! fixed-width integers, length-prefixed byte strings), in this order:
//!
//! ```text
//! magic "echodst\0"   8 bytes
//! version             u32 (1)
//! listeners           u32: echo listeners handed over (their descriptors travel apart)
//! metrics             bool; if set, u64 start time (the --metrics listener follows
//!                     the echo listeners)
//! connections         u32
//! counters            see Stats::encode
//! next serial         u64
//! per connection      address, bytes in/out, serial, flags, then its Connection
//! ```
//!
//! Descriptors are not in the file: they travel in the same order (listeners, the
//! metrics listener, connections) over the socket pair (see [`super::fds`]).
//! Deadlines are saved as milliseconds from now, because a [`Tick`] counts from the
//! start of the loop that made it, and the new image's loop starts again from zero.

use std::net::SocketAddr;

use crate::protocol::conn::Connection;
use crate::protocol::state::{Malformed, Read, Reader, Writer};
use crate::reactor::io::Entry;
use crate::reactor::server::Server;
use crate::reactor::stats::Stats;
use crate::reactor::timers::Tick;

/// The first bytes of every saved state.
pub const MAGIC: &[u8; 8] = b"echodst\0";

/// The layout version; `echod-state-1` names this one (see [`super::FORMAT`]).
pub const VERSION: u32 = 1;

/// The smallest saved connection (an IPv4 address and all-empty buffers): a bound for
/// the connection count, so that garbage cannot make us reserve a huge vector.
const MIN_ENTRY: usize = 40;

/// What the loop keeps about a connection besides its socket and its state machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Meta {
    /// The client's address (the PROXY header's, once it came).
    pub peer: SocketAddr,
    /// Bytes read from this client.
    pub bytes_in: u64,
    /// Bytes written to this client.
    pub bytes_out: u64,
    /// Its serial (unique for the life of the process, which the upgrade continues).
    pub serial: u64,
    /// Counted under its address for `--max-per-ip`.
    pub counted: bool,
    /// Our FIN is out.
    pub fin_sent: bool,
    /// The client's FIN was reported (reads must go on until they see it).
    pub fin_reported: bool,
    /// The client sent urgent data (a short read proves nothing).
    pub urgent: bool,
}

impl Meta {
    /// The part of `entry` to save.
    pub fn of(entry: &Entry) -> Meta {
        Meta {
            peer: entry.peer,
            bytes_in: entry.bytes_in,
            bytes_out: entry.bytes_out,
            serial: entry.serial,
            counted: entry.counted,
            fin_sent: entry.fin_sent,
            fin_reported: entry.fin_reported,
            urgent: entry.urgent,
        }
    }

    /// Writes it.
    fn save(&self, w: &mut Writer) {
        w.addr(self.peer);
        w.u64(self.bytes_in);
        w.u64(self.bytes_out);
        w.u64(self.serial);
        for flag in [self.counted, self.fin_sent, self.fin_reported, self.urgent] {
            w.bool(flag);
        }
    }

    /// Reads it back.
    fn load(r: &mut Reader<'_>) -> Read<Meta> {
        Ok(Meta {
            peer: r.addr()?,
            bytes_in: r.u64()?,
            bytes_out: r.u64()?,
            serial: r.u64()?,
            counted: r.bool()?,
            fin_sent: r.bool()?,
            fin_reported: r.bool()?,
            urgent: r.bool()?,
        })
    }
}

/// A saved state, read back.
#[derive(Debug)]
pub struct Saved {
    /// Echo listeners whose descriptors follow.
    pub listeners: usize,
    /// `--metrics` was on: when the process started (its listener follows the echo
    /// listeners).
    pub metrics_started: Option<u64>,
    /// The counters.
    pub stats: Stats,
    /// The serial for the next connection.
    pub next_serial: u64,
    /// Every connection, in the order its descriptor comes.
    pub conns: Vec<(Meta, Connection)>,
}

impl Saved {
    /// How many descriptors follow the memory file.
    pub fn descriptors(&self) -> usize {
        self.listeners + usize::from(self.metrics_started.is_some()) + self.conns.len()
    }
}

/// Writes the server's state. Called between two turns of the loop, when no
/// connection is half visited (none holds the shared reply buffer).
pub fn save(server: &Server) -> Vec<u8> {
    let mut w = Writer::new();
    write_header(
        &mut w,
        server.listeners.len(),
        server.metrics.as_ref().map(|m| m.start_time_seconds()),
        server.conns.live().count(),
        &server.stats,
        server.next_serial,
    );
    for entry in server.conns.live() {
        write_connection(&mut w, &Meta::of(entry), &entry.conn, server.tick);
    }
    w.into_bytes()
}

/// Writes the start of a saved state, everything before its connections: `listeners`
/// echo listeners, the metrics listener's start time if there is one, the counters and
/// the next serial. Exactly `connections` connections must follow, each written by
/// [`write_connection`]. [`save`] writes the server's this way; tests and the fuzz
/// target write states of their own making with the same two functions.
pub fn write_header(
    w: &mut Writer,
    listeners: usize,
    metrics_started: Option<u64>,
    connections: usize,
    stats: &Stats,
    next_serial: u64,
) {
    w.raw(MAGIC);
    w.u32(VERSION);
    w.length(listeners);
    w.bool(metrics_started.is_some());
    if let Some(started) = metrics_started {
        w.u64(started);
    }
    w.length(connections);
    stats.encode(w);
    w.u64(next_serial);
}

/// Writes one connection of a saved state: what the loop keeps about it, then its
/// state machine, with deadlines relative to `now`.
pub fn write_connection(w: &mut Writer, meta: &Meta, conn: &Connection, now: Tick) {
    meta.save(w);
    conn.save(w, now);
}

/// Reads a saved state; deadlines come back relative to `now`.
pub fn load(bytes: &[u8], now: Tick) -> Read<Saved> {
    let mut r = Reader::new(bytes);
    if r.raw(MAGIC.len())? != MAGIC {
        return Err(Malformed("not an echod saved state"));
    }
    if r.u32()? != VERSION {
        return Err(Malformed("a format version this image cannot read"));
    }
    let listeners = r.length()?;
    let metrics_started = if r.bool()? { Some(r.u64()?) } else { None };
    let count = r.count(MIN_ENTRY)?;
    let stats = Stats::decode(&mut r)?;
    let next_serial = r.u64()?;
    let mut conns = Vec::with_capacity(count);
    for _ in 0..count {
        let meta = Meta::load(&mut r)?;
        conns.push((meta, Connection::load(&mut r, now)?));
    }
    r.finish()?;
    Ok(Saved {
        listeners,
        metrics_started,
        stats,
        next_serial,
        conns,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::conn::Rules;
    use proptest::prelude::*;

    fn meta(peer: &str) -> Meta {
        Meta {
            peer: peer.parse().unwrap(),
            bytes_in: 12,
            bytes_out: 345,
            serial: 6789,
            counted: true,
            fin_sent: false,
            fin_reported: true,
            urgent: false,
        }
    }

    /// A state with two connections, as `save` would write it (without a `Server`,
    /// which needs sockets).
    fn sample(now: Tick) -> Vec<u8> {
        let p = Rules::default();
        let mut w = Writer::new();
        let stats = Stats {
            accepted: 5,
            lines: 9,
            ..Stats::default()
        };
        write_header(&mut w, 2, Some(1_700_000_000), 2, &stats, 6);
        for peer in ["192.0.2.1:4000", "[2001:db8::1]:5000"] {
            let mut conn = Connection::new(&p);
            conn.handle_activity(&p, now);
            conn.handle_input(&p, b"one\ntw");
            write_connection(&mut w, &meta(peer), &conn, now);
        }
        w.into_bytes()
    }

    #[test]
    fn a_saved_state_comes_back() {
        let now = Tick::from_millis(10_000);
        let bytes = sample(now);
        let saved = load(&bytes, Tick::from_millis(0)).unwrap();
        assert_eq!(
            (saved.listeners, saved.metrics_started),
            (2, Some(1_700_000_000))
        );
        assert_eq!((saved.stats.accepted, saved.stats.lines), (5, 9));
        assert_eq!(saved.next_serial, 6);
        assert_eq!(saved.descriptors(), 5);
        assert_eq!(saved.conns[0].0, meta("192.0.2.1:4000"));
        assert_eq!(saved.conns[1].0, meta("[2001:db8::1]:5000"));
        // The idle deadline was 300 s after `now`; it is 300 s after the new zero.
        assert_eq!(
            saved.conns[1].1.poll_timeout(),
            Some(Tick::from_millis(300_000))
        );
    }

    #[test]
    fn every_truncation_is_an_error() {
        let bytes = sample(Tick::from_millis(0));
        for cut in 0..bytes.len() {
            assert!(
                load(&bytes[..cut], Tick::from_millis(0)).is_err(),
                "cut at {cut}"
            );
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(
            load(&longer, Tick::from_millis(0)).unwrap_err(),
            Malformed("trailing bytes")
        );
    }

    #[test]
    fn another_version_is_refused() {
        let mut bytes = sample(Tick::from_millis(0));
        bytes[8] = 2;
        assert!(load(&bytes, Tick::from_millis(0)).is_err());
    }

    proptest! {
        /// Garbage, or a real state with bytes overwritten, never panics the reader.
        #[test]
        fn garbage_never_panics(
            junk in proptest::collection::vec(any::<u8>(), 0..512),
            flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8),
        ) {
            let _ = load(&junk, Tick::from_millis(0));
            let mut bytes = sample(Tick::from_millis(0));
            for (at, value) in flips {
                let at = at % bytes.len();
                bytes[at] = value;
            }
            let _ = load(&bytes, Tick::from_millis(0));
        }
    }
}
