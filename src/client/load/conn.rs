//! One load connection: its socket, its phase, the lines it has in flight.
//!
//! A connection moves through four phases:
//!
//! ```text
//! Connecting --writable, connected--> Banner --banner read--> Running
//!     Running --run over: half-close--> Draining --server closes--> (done)
//! ```
//!
//! Any error ends it early. The connection does its own reading and writing
//! (always until `WouldBlock`, as edge-triggered readiness demands) and
//! leaves counting and scheduling to the generator in [`super`].

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::time::{Duration, Instant};

use mio::net::TcpStream;

use super::checker::{Fed, Mismatch, ReplyChecker};
use super::schedule::Plan;
use crate::client::connect::{interrupted, would_block};

/// Where a connection is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// The handshake is in flight.
    Connecting,
    /// Connected; waiting for the banner before sending anything.
    Banner,
    /// Sending lines and checking replies.
    Running,
    /// Half-closed: collecting the last replies until the server closes.
    Draining,
}

/// How a round of reading ended, if it ended the connection.
#[derive(Debug)]
pub enum End {
    /// The server closed its side (read returned 0).
    Closed,
    /// The server sent something wrong.
    Mismatch(Mismatch),
    /// The socket failed (reset, ...).
    Io(io::Error),
}

/// What a round of reading found.
#[derive(Debug, Default)]
pub struct ReadReport {
    /// The banner arrived in this round.
    pub banner_done: bool,
    /// Replies completed in this round.
    pub replies: usize,
    /// Set when the connection is over.
    pub end: Option<End>,
}

/// One connection of the load generator.
#[derive(Debug)]
pub struct Conn {
    /// Unique for the run; part of every line this connection sends.
    pub id: u64,
    /// When its connect started (for `connect_us`).
    pub opened_at: Instant,
    /// Where the connection is in its life.
    pub phase: Phase,
    /// With `--rate`: this connection's share of the plan (set when it comes up).
    pub plan: Option<Plan>,
    /// With `--rate`: the generator's timer heap holds this connection's next
    /// send time (so it is never queued twice).
    pub scheduled: bool,
    stream: TcpStream,
    checker: ReplyChecker,
    /// Bytes to send; `out[out_pos..]` are not written yet.
    out: Vec<u8>,
    out_pos: usize,
    /// For each outstanding line, oldest first: when it was meant to be sent
    /// (with `--rate`; else when it was sent) and when it was sent.
    sent_at: VecDeque<(Instant, Instant)>,
    /// Sequence number of the next line.
    next_seq: u64,
    /// Shut down our sending side once `out` is written.
    half_close_when_sent: bool,
}

impl Conn {
    /// A connection whose connect has been started.
    pub fn new(id: u64, stream: TcpStream, checker: ReplyChecker, now: Instant) -> Conn {
        Conn {
            id,
            opened_at: now,
            phase: Phase::Connecting,
            plan: None,
            scheduled: false,
            stream,
            checker,
            out: Vec::new(),
            out_pos: 0,
            sent_at: VecDeque::new(),
            next_seq: 0,
            half_close_when_sent: false,
        }
    }

    /// The socket, to register it and to ask how its connect went.
    pub fn stream(&mut self) -> &mut TcpStream {
        &mut self.stream
    }

    /// Lines sent whose replies have not (completely) arrived.
    pub fn outstanding(&self) -> usize {
        self.checker.outstanding()
    }

    /// Whether a close by the server now would be a clean end.
    pub fn is_settled(&self) -> bool {
        self.checker.is_settled()
    }

    /// The handshake completed: from now on we wait for the banner (or,
    /// with no banner expected, run at once). Returns the new phase.
    pub fn connected(&mut self) -> Phase {
        self.phase = if self.checker.banner_done() {
            Phase::Running
        } else {
            Phase::Banner
        };
        self.phase
    }

    /// Queues the next line (`line_bytes` long, newline included) and tells
    /// the checker its reply, `prefix` + line, is due. The line counts as
    /// sent now (we write right after queueing); it was meant to be sent at
    /// `intended` (`now` in a closed loop).
    pub fn queue_line(
        &mut self,
        line_bytes: usize,
        prefix: &[u8],
        intended: Instant,
        now: Instant,
    ) {
        let start = self.out.len();
        write_line(&mut self.out, self.id, self.next_seq, line_bytes);
        self.next_seq += 1;
        self.checker.expect(prefix, &self.out[start..]);
        self.sent_at.push_back((intended, now));
    }

    /// Stops sending: half-close as soon as everything queued is written.
    pub fn start_draining(&mut self) -> io::Result<()> {
        self.phase = Phase::Draining;
        self.half_close_when_sent = true;
        self.flush()
    }

    /// Writes queued bytes until done or `WouldBlock` (the next writable
    /// event brings us back), then half-closes if asked to.
    pub fn flush(&mut self) -> io::Result<()> {
        while self.out_pos < self.out.len() {
            match self.stream.write(&self.out[self.out_pos..]) {
                Ok(n) => self.out_pos += n,
                Err(e) if would_block(&e) => return Ok(()),
                Err(e) if interrupted(&e) => {}
                Err(e) => return Err(e),
            }
        }
        self.out.clear();
        self.out_pos = 0;
        if self.half_close_when_sent {
            self.half_close_when_sent = false;
            self.stream.shutdown(Shutdown::Write)?;
        }
        Ok(())
    }

    /// Reads until `WouldBlock`, checking every byte, and calls `latency`
    /// for each completed reply with its time from the intended send time and
    /// from the real one (the same in a closed loop). `buf` is scratch space
    /// shared by all connections.
    pub fn read_ready(
        &mut self,
        buf: &mut [u8],
        now: Instant,
        mut latency: impl FnMut(Duration, Duration),
    ) -> ReadReport {
        let mut report = ReadReport::default();
        loop {
            let n = match self.stream.read(buf) {
                Ok(0) => {
                    report.end = Some(match self.checker.take_unfinished_mismatch() {
                        Some(mismatch) => End::Mismatch(mismatch),
                        None => End::Closed,
                    });
                    return report;
                }
                Ok(n) => n,
                Err(e) if would_block(&e) => return report,
                Err(e) if interrupted(&e) => continue,
                Err(e) => {
                    report.end = Some(End::Io(e));
                    return report;
                }
            };
            let fed: Fed = self.checker.feed(&buf[..n]);
            report.banner_done |= fed.banner_done;
            report.replies += fed.replies;
            for _ in 0..fed.replies {
                if let Some((intended, sent)) = self.sent_at.pop_front() {
                    latency(
                        now.saturating_duration_since(intended),
                        now.saturating_duration_since(sent),
                    );
                }
            }
            if let Some(mismatch) = fed.mismatch {
                report.end = Some(End::Mismatch(mismatch));
                return report;
            }
        }
    }
}

/// Appends line number `seq` of connection `conn`: `line_bytes` bytes in all,
/// the last one the newline.
///
/// The line starts with `conn.seq:` so that every line of the run is
/// different (a server that mixed up connections, or repeated or dropped a
/// line, cannot go unnoticed), padded with letters to the length asked for.
/// If the length is too short for the tag, we keep its end, where the
/// sequence number changes fastest.
pub fn write_line(out: &mut Vec<u8>, conn: u64, seq: u64, line_bytes: usize) {
    const PAD: &[u8] = b"abcdefghijklmnopqrstuvwxyz";
    let body = line_bytes.saturating_sub(1);
    let tag = format!("{conn}.{seq}:");
    let tag = &tag.as_bytes()[tag.len().saturating_sub(body)..];
    out.extend_from_slice(tag);
    let mut left = body - tag.len();
    while left > 0 {
        let n = left.min(PAD.len());
        out.extend_from_slice(&PAD[..n]);
        left -= n;
    }
    out.push(b'\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(conn: u64, seq: u64, len: usize) -> String {
        let mut out = Vec::new();
        write_line(&mut out, conn, seq, len);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn lines_have_the_asked_length_and_one_newline() {
        for len in 1..100 {
            let text = line(12, 345, len);
            assert_eq!(text.len(), len);
            assert!(text.ends_with('\n'));
            assert_eq!(text.matches('\n').count(), 1);
        }
    }

    #[test]
    fn lines_are_tagged_and_padded() {
        assert_eq!(line(7, 3, 16), "7.3:abcdefghijk\n");
        assert_eq!(line(7, 3, 5), "7.3:\n");
        assert_eq!(
            line(7, 31, 4),
            "31:\n",
            "short lines keep the fast-changing end"
        );
        assert_eq!(line(7, 3, 1), "\n");
        assert_eq!(line(1, 2, 40).len(), 40);
    }

    #[test]
    fn lines_are_unique_when_long_enough() {
        let mut seen = std::collections::HashSet::new();
        for conn in 0..30 {
            for seq in 0..30 {
                assert!(seen.insert(line(conn, seq, 16)));
            }
        }
    }
}
