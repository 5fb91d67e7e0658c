//! `echoc load --attack KIND`: hostile connections beside the measured ones.
//!
//! A server's limits (`--max-line`, `--idle-timeout`, `--max-connections`,
//! ...) exist for clients that misbehave. To see what they are worth we run
//! such clients *while* the normal load runs, and read the normal clients'
//! report: if the server is hardened well, their replies/s and p99 barely
//! move. The attackers live in the generator's loop, not on threads of their
//! own: they are just more sockets in the same `poll`, with tokens from
//! [`TOKEN_BASE`] up so the loop can tell them from measured connections.
//!
//! Each kind is one way a client can cost a server something:
//!
//! - **slowloris**: one byte every `--attack-interval` (10 s), a line that
//!   never ends: the connection costs a slot and its partial-line buffer for
//!   as long as the server lets it stay;
//! - **slow-reader**: lines as fast as the socket takes them, replies never
//!   read: the server's output backs up until its backpressure (or
//!   `--send-timeout`) acts;
//! - **churn**: connect, read the banner, close, again and again, with
//!   `--attackers` cycles in flight: accept and close work, and log lines;
//! - **flood**: `--attackers` connections opened at once and held silent:
//!   slots and descriptors;
//! - **oversized**: a line of `--attack-line-bytes` (70000, over the default
//!   65536 `--max-line`) on each new connection: buffer growth up to the limit.
//!
//! Whatever happens to attackers is counted here and only here: an attacker
//! the server refuses or closes is the hardening working, never an error of
//! the run. Every kind replaces an attacker that is gone, so the pressure
//! stays on for the whole run. Every kind but slow-reader reads what
//! the server sends (a few bytes of banner, which fit in any socket buffer, so
//! the server cannot tell), to learn its first `ERR` line: that is how we
//! count refusals (`ERR server busy`, `ERR line too long`, `ERR idle timeout`,
//! `ERR too many connections from your address`).
//!
//! The attack starts once every measured connection is up (or has failed),
//! so the report shows how the server treats clients it already serves, and
//! it ends when the run's sending time ends, before the drain.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mio::event::Event;
use mio::net::TcpStream;
use mio::{Interest, Registry, Token};
use slab::Slab;
use socket2::{Domain, Protocol, SockAddr, SockRef, Socket, Type};

use super::source::SourceRange;
use super::MAX_CONNECTING;
use crate::client::connect::{connect_outcome, describe, interrupted, would_block};

/// Attackers' tokens are `TOKEN_BASE + slab key`. The measured connections'
/// tokens are their own slab keys, which never come near half of `usize`.
pub const TOKEN_BASE: usize = 1 << (usize::BITS - 1);

/// After a connect fails we open no new attacker for this long, so that a
/// server that is down (or a local limit such as `EADDRNOTAVAIL`) costs us a
/// hundred tries a second, not a spinning loop.
const RETRY_PAUSE: Duration = Duration::from_millis(10);

/// A slow reader asks for a tiny receive buffer, so the server's replies back
/// up sooner, and a small send buffer, so the bytes it has sent wait in the
/// server's buffers rather than in its own: the attack costs the attacker
/// little. (Linux doubles these values and applies its own minimum; without
/// them, loopback's autotuning gives each socket megabytes.)
const SLOW_READER_RCVBUF: usize = 4096;
/// See [`SLOW_READER_RCVBUF`].
const SLOW_READER_SNDBUF: usize = 16 * 1024;

/// A slow reader's segment size: Ethernet's. Loopback's own (about 64 KiB)
/// makes the kernel grow each socket's buffers to megabytes, so a few hundred
/// slow readers would fill the whole machine's TCP memory (`tcp_mem`) with
/// bytes no remote attacker could have parked there; with the segments of a
/// real network path the server's buffers grow as they would for a remote
/// client.
const SLOW_READER_MSS: u32 = 1460;

/// We keep this much of a line the server sent: enough for any `ERR` text.
const LINE_KEPT: usize = 80;

/// At most this many different `ERR` texts are told apart; more go to `other`.
const MAX_REASONS: usize = 8;

/// The ways to misbehave (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttackKind {
    /// A byte every interval, a line that never ends.
    Slowloris,
    /// Lines as fast as the socket takes them, replies never read.
    SlowReader,
    /// Connect, read the banner, close; again.
    Churn,
    /// Many connections at once, held silent.
    Flood,
    /// One line longer than the server's `--max-line` per connection.
    Oversized,
}

impl AttackKind {
    /// Every kind, in the order the docs and the bench list them.
    pub const ALL: [AttackKind; 5] = [
        AttackKind::Slowloris,
        AttackKind::SlowReader,
        AttackKind::Churn,
        AttackKind::Flood,
        AttackKind::Oversized,
    ];

    /// The name on the command line and in the report.
    pub fn name(self) -> &'static str {
        match self {
            AttackKind::Slowloris => "slowloris",
            AttackKind::SlowReader => "slow-reader",
            AttackKind::Churn => "churn",
            AttackKind::Flood => "flood",
            AttackKind::Oversized => "oversized",
        }
    }

    /// The kind named `text`, or the one-line reason it is not one.
    pub fn parse(text: &str) -> Result<AttackKind, String> {
        AttackKind::ALL
            .into_iter()
            .find(|k| k.name() == text)
            .ok_or_else(|| {
                let names: Vec<&str> = AttackKind::ALL.iter().map(|k| k.name()).collect();
                format!("--attack: '{text}' is not one of {}", names.join(", "))
            })
    }

    /// Whether attackers of this kind read what the server sends.
    fn reads(self) -> bool {
        self != AttackKind::SlowReader
    }

    /// Handshakes in flight at most. Flood and churn are *about* connecting,
    /// so theirs is the attacker count; the others only want their
    /// connections up, and go no faster than the measured ones do.
    fn max_connecting(self, attackers: usize) -> usize {
        match self {
            AttackKind::Flood | AttackKind::Churn => attackers,
            _ => MAX_CONNECTING,
        }
    }
}

/// Everything `--attack` and its companions say.
#[derive(Debug, Clone)]
pub struct AttackOptions {
    /// What the attackers do.
    pub kind: AttackKind,
    /// How many attackers (for churn: cycles in flight).
    pub attackers: usize,
    /// Slowloris: time between two bytes.
    pub interval: Duration,
    /// Oversized: bytes per line, the newline included.
    pub line_bytes: usize,
    /// Churn: close as soon as connected, without waiting for the banner.
    pub no_banner: bool,
    /// Local addresses for the attackers, round-robin (e.g. `127.0.0.2`, so
    /// that a per-address limit can tell them from the measured clients).
    pub source: Option<SourceRange>,
}

impl AttackOptions {
    /// The defaults for `kind`.
    pub fn new(kind: AttackKind) -> AttackOptions {
        AttackOptions {
            kind,
            attackers: 100,
            interval: Duration::from_secs(10),
            line_bytes: 70_000,
            no_banner: false,
            source: None,
        }
    }
}

/// One hostile connection.
#[derive(Debug)]
struct Attacker {
    /// Unique for the run: a slab key is reused once its attacker is gone,
    /// and the timer queues must not mistake the newcomer for it.
    id: u64,
    stream: TcpStream,
    /// The handshake is still in flight.
    connecting: bool,
    /// Payload bytes written: slow-reader's place in its cycle of lines,
    /// oversized's progress through its one line.
    sent: usize,
    /// The start of the line being read, to spot an `ERR`.
    line: Vec<u8>,
    /// Complete lines read (churn closes after the first).
    lines: u64,
    /// An `ERR` line came and was counted.
    refused: bool,
}

/// What happened to the attackers, for the report.
#[derive(Debug, Clone, Default)]
pub struct AttackStats {
    /// Connects started.
    pub opened: u64,
    /// Handshakes that completed.
    pub connected: u64,
    /// Attackers connected now.
    pub up: u64,
    /// The most attackers connected at once.
    pub peak_up: u64,
    /// Attackers the server ended: a close, a reset, a write that failed.
    pub closed_by_server: u64,
    /// Attackers that saw an `ERR` line (most of them then closed by the server).
    pub refused: u64,
    /// The `ERR` texts (without `ERR `) and how often each was first.
    pub reasons: Vec<(String, u64)>,
    /// Attackers we ended ourselves: churn's completed cycles.
    pub closed_by_us: u64,
    /// Connects that failed, timed out, or (churn) got no banner in time.
    pub connect_failures: u64,
    /// The first connect failure, described.
    pub first_connect_failure: Option<String>,
    /// Bytes our attackers' sockets took from us (written, not necessarily read
    /// by the server yet).
    pub bytes_sent: u64,
}

impl AttackStats {
    fn refusal(&mut self, line: &[u8]) {
        self.refused += 1;
        let text = String::from_utf8_lossy(line);
        let text = text.trim_start_matches("ERR ").trim_end();
        let key = if self.reasons.len() < MAX_REASONS || self.reasons.iter().any(|r| r.0 == text) {
            text
        } else {
            "other"
        };
        match self.reasons.iter_mut().find(|r| r.0 == key) {
            Some(reason) => reason.1 += 1,
            None => self.reasons.push((key.to_string(), 1)),
        }
    }

    fn connect_failure(&mut self, why: impl FnOnce() -> String) {
        self.connect_failures += 1;
        if self.first_connect_failure.is_none() {
            self.first_connect_failure = Some(why());
        }
    }
}

/// The attack's part of the summary.
#[derive(Debug, Clone)]
pub struct AttackSummary {
    /// What was asked.
    pub opts: AttackOptions,
    /// Attackers asked for before the fd limit had its say.
    pub asked: usize,
    /// The counters at the end of the attack.
    pub stats: AttackStats,
    /// Attackers still connected when the attack ended.
    pub up_at_end: u64,
}

/// The attack's state: its attackers and their timers.
#[derive(Debug)]
pub struct Attack {
    opts: AttackOptions,
    asked: usize,
    addr: SocketAddr,
    /// Give up on a handshake (and, for churn, on the banner) after this long.
    connect_timeout: Duration,
    attackers: Slab<Attacker>,
    next_id: u64,
    /// Handshakes in flight.
    connecting: usize,
    /// Opening has begun (the measured connections are up).
    started: bool,
    /// The run is over: nothing more is opened.
    stopped: bool,
    /// No new connects before this, after a failed one.
    pause_until: Option<Instant>,
    /// `(deadline, key, id)` of handshakes (and churn's banner waits), in
    /// time order since every one is `now + connect_timeout`.
    deadlines: VecDeque<(Instant, usize, u64)>,
    /// Slowloris: `(when, key, id)` of each attacker's next byte, in time
    /// order for the same reason.
    drips: VecDeque<(Instant, usize, u64)>,
    /// What slow-reader and oversized send: a cycle of short lines, or the
    /// one long line.
    payload: Vec<u8>,
    /// Whatever happened so far.
    stats: AttackStats,
    up_at_end: u64,
}

impl Attack {
    /// An attack on `addr` that has not begun. `allowed` is how many
    /// attackers the fd limit leaves room for (at most `opts.attackers`).
    pub fn new(
        opts: &AttackOptions,
        allowed: usize,
        addr: SocketAddr,
        connect_timeout: Duration,
    ) -> Attack {
        let mut opts = opts.clone();
        let asked = opts.attackers;
        opts.attackers = allowed.min(asked);
        Attack {
            payload: payload(opts.kind, opts.line_bytes),
            attackers: Slab::with_capacity(opts.attackers.min(1 << 20)),
            opts,
            asked,
            addr,
            connect_timeout,
            next_id: 0,
            connecting: 0,
            started: false,
            stopped: false,
            pause_until: None,
            deadlines: VecDeque::new(),
            drips: VecDeque::new(),
            stats: AttackStats::default(),
            up_at_end: 0,
        }
    }

    /// Lets the attack begin (called on every turn once the measured
    /// connections are up; only the first call matters).
    pub fn start(&mut self) {
        self.started = true;
    }

    /// The loop's turn: fail overdue handshakes, send slowloris' bytes, and
    /// open attackers up to the count.
    pub fn tick(&mut self, registry: &Registry, buf: &mut [u8], now: Instant) {
        if !self.started || self.stopped {
            return;
        }
        self.expire(now);
        self.drip(buf, now);
        self.open(registry, now);
    }

    /// When the loop must wake up for the attack even without events.
    pub fn next_wake(&self) -> Option<Instant> {
        if !self.started || self.stopped {
            return None;
        }
        let deadline = self.deadlines.front().map(|d| d.0);
        let drip = self.drips.front().map(|d| d.0);
        let wants_more = self.attackers.len() < self.opts.attackers;
        let pause = self.pause_until.filter(|_| wants_more);
        [deadline, drip, pause].into_iter().flatten().min()
    }

    /// The run is over: close every attacker, with a reset (see `close`).
    pub fn stop(&mut self) {
        self.stopped = true;
        self.up_at_end = self.stats.up;
        for attacker in self.attackers.drain() {
            close(&attacker.stream);
        }
        self.stats.up = 0;
        self.connecting = 0;
        self.deadlines.clear();
        self.drips.clear();
    }

    /// The report's part.
    pub fn summary(&self) -> AttackSummary {
        AttackSummary {
            opts: self.opts.clone(),
            asked: self.asked,
            stats: self.stats.clone(),
            up_at_end: self.up_at_end,
        }
    }

    /// Opens attackers until there are enough, as the in-flight cap allows.
    fn open(&mut self, registry: &Registry, now: Instant) {
        if self.pause_until.is_some_and(|t| now < t) {
            return;
        }
        self.pause_until = None;
        let cap = self.opts.kind.max_connecting(self.opts.attackers);
        while self.attackers.len() < self.opts.attackers && self.connecting < cap {
            if let Err(e) = self.open_one(registry, now) {
                let addr = self.addr;
                self.stats
                    .connect_failure(|| format!("connect to {addr}: {}", describe(&e)));
                self.pause_until = Some(now + RETRY_PAUSE);
                return;
            }
        }
    }

    fn open_one(&mut self, registry: &Registry, now: Instant) -> io::Result<()> {
        let id = self.next_id;
        self.next_id += 1;
        let source = self.opts.source.map(|s| s.nth(id));
        let mut stream = start_connect(self.addr, source, self.opts.kind)?;
        let entry = self.attackers.vacant_entry();
        let key = entry.key();
        let interest = Interest::READABLE | Interest::WRITABLE;
        registry.register(&mut stream, Token(TOKEN_BASE + key), interest)?;
        entry.insert(Attacker {
            id,
            stream,
            connecting: true,
            sent: 0,
            line: Vec::new(),
            lines: 0,
            refused: false,
        });
        self.stats.opened += 1;
        self.connecting += 1;
        self.deadlines
            .push_back((now + self.connect_timeout, key, id));
        Ok(())
    }

    /// Fails the handshakes (and churn's banner waits) that are overdue.
    fn expire(&mut self, now: Instant) {
        while let Some(&(deadline, key, id)) = self.deadlines.front() {
            let waiting = self.attackers.get(key).is_some_and(|a| {
                a.id == id
                    && (a.connecting || (self.opts.kind == AttackKind::Churn && a.lines == 0))
            });
            if waiting && deadline > now {
                return;
            }
            self.deadlines.pop_front();
            if waiting {
                let secs = self.connect_timeout.as_secs_f64();
                let what = match self.attackers[key].connecting {
                    true => "connect",
                    false => "banner",
                };
                self.stats
                    .connect_failure(|| format!("attacker {id}: no {what} within {secs} s"));
                self.remove(key);
            }
        }
    }

    /// Slowloris: each attacker whose time has come sends its next byte.
    fn drip(&mut self, buf: &mut [u8], now: Instant) {
        while let Some(&(when, key, id)) = self.drips.front() {
            if when > now {
                return;
            }
            self.drips.pop_front();
            if self.attackers.get(key).is_some_and(|a| a.id == id) {
                self.send_byte(key, buf, now);
            }
        }
    }

    /// One byte of the line that never ends, and the next one booked.
    fn send_byte(&mut self, key: usize, buf: &mut [u8], now: Instant) {
        let attacker = &mut self.attackers[key];
        match (&attacker.stream).write(b"x") {
            Ok(n) => self.stats.bytes_sent += n as u64,
            // A full socket or a signal: this byte is skipped, the next
            // comes on time.
            Err(e) if would_block(&e) || interrupted(&e) => {}
            Err(_) => return self.ended_by_server(key, buf),
        }
        let id = attacker.id;
        self.drips.push_back((now + self.opts.interval, key, id));
    }

    /// Readiness for one attacker (its token is `TOKEN_BASE + key`). Events
    /// may be stale, as in the generator: a gone attacker is skipped.
    pub fn on_event(&mut self, event: &Event, buf: &mut [u8], now: Instant) {
        let key = event.token().0 - TOKEN_BASE;
        let Some(attacker) = self.attackers.get(key) else {
            return;
        };
        if attacker.connecting {
            match connect_outcome(&attacker.stream) {
                None => return,
                Some(Err(e)) => return self.connect_failed(key, &e, now),
                Some(Ok(())) => self.on_connected(key, buf, now),
            }
        }
        let readable = event.is_readable() || event.is_read_closed() || event.is_error();
        if readable && self.attackers.contains(key) {
            if self.opts.kind.reads() {
                self.read(key, buf);
            } else if event.is_read_closed() || event.is_error() {
                // A slow reader never reads, but the poll still says when
                // the server has closed (FIN) or reset the connection.
                self.ended_by_server(key, buf);
            }
        }
        if event.is_writable() && self.attackers.contains(key) {
            self.write(key, buf);
        }
    }

    fn connect_failed(&mut self, key: usize, e: &io::Error, now: Instant) {
        let (id, addr) = (self.attackers[key].id, self.addr);
        self.stats
            .connect_failure(|| format!("attacker {id}: connect to {addr}: {}", describe(e)));
        self.remove(key);
        self.pause_until = Some(now + RETRY_PAUSE);
    }

    /// The handshake is done: each kind makes its first move.
    fn on_connected(&mut self, key: usize, buf: &mut [u8], now: Instant) {
        self.connecting -= 1;
        self.attackers[key].connecting = false;
        self.stats.connected += 1;
        self.stats.up += 1;
        self.stats.peak_up = self.stats.peak_up.max(self.stats.up);
        match self.opts.kind {
            AttackKind::Slowloris => self.send_byte(key, buf, now),
            AttackKind::Churn if self.opts.no_banner => self.close_ourselves(key),
            // Writing waits for the writable event that comes with this one.
            AttackKind::SlowReader | AttackKind::Oversized => {}
            AttackKind::Churn | AttackKind::Flood => {}
        }
    }

    /// Slow-reader and oversized push their payload until `WouldBlock`.
    fn write(&mut self, key: usize, buf: &mut [u8]) {
        let attacker = &mut self.attackers[key];
        let cycle = match self.opts.kind {
            AttackKind::SlowReader => true,
            AttackKind::Oversized => false,
            _ => return,
        };
        while attacker.sent < self.payload.len() {
            match (&attacker.stream).write(&self.payload[attacker.sent..]) {
                Ok(n) => {
                    attacker.sent += n;
                    self.stats.bytes_sent += n as u64;
                    if cycle && attacker.sent == self.payload.len() {
                        attacker.sent = 0;
                    }
                }
                Err(e) if would_block(&e) => return,
                Err(e) if interrupted(&e) => {}
                Err(_) => return self.ended_by_server(key, buf),
            }
        }
    }

    /// Reads until `WouldBlock`, watching for the first `ERR` line.
    fn read(&mut self, key: usize, buf: &mut [u8]) {
        loop {
            let attacker = &mut self.attackers[key];
            let n = match (&attacker.stream).read(buf) {
                Ok(0) => return self.server_closed(key),
                Ok(n) => n,
                Err(e) if would_block(&e) => return,
                Err(e) if interrupted(&e) => continue,
                Err(_) => return self.server_closed(key),
            };
            for line in scan_lines(&mut attacker.line, &buf[..n]) {
                attacker.lines += 1;
                if line.starts_with(b"ERR ") && !attacker.refused {
                    attacker.refused = true;
                    self.stats.refusal(&line);
                }
            }
            if self.opts.kind == AttackKind::Churn && attacker.lines > 0 {
                return self.close_ourselves(key);
            }
        }
    }

    /// A write failed: the server has closed or reset the connection. An
    /// attacker that reads first reads what is left, so that an `ERR` line
    /// that came just before the reset still counts.
    fn ended_by_server(&mut self, key: usize, buf: &mut [u8]) {
        match self.opts.kind.reads() {
            true => self.read(key, buf),
            false => self.server_closed(key),
        }
        // read() ends at WouldBlock if the socket is, oddly, still open;
        // the write failed all the same, so the attacker is done.
        if self.attackers.contains(key) {
            self.server_closed(key);
        }
    }

    fn server_closed(&mut self, key: usize) {
        self.stats.closed_by_server += 1;
        self.remove(key);
    }

    /// Churn's end of a cycle.
    fn close_ourselves(&mut self, key: usize) {
        self.stats.closed_by_us += 1;
        close(&self.attackers[key].stream);
        self.remove(key);
    }

    /// Forgets an attacker; dropping the socket closes it and takes it out
    /// of the poll. The next [`Attack::tick`] opens its replacement.
    fn remove(&mut self, key: usize) {
        let attacker = self.attackers.remove(key);
        match attacker.connecting {
            true => self.connecting -= 1,
            false => self.stats.up -= 1,
        }
    }
}

/// Makes the coming close a reset (`SO_LINGER` 0). A normal close, with a
/// FIN, would leave our side of each connection in `TIME_WAIT` for a minute,
/// holding its port: churn, and a few runs of ten thousand attackers, would
/// soon use up the 28,000 ephemeral ports of an address. A failure here
/// only means a FIN after all, so it is ignored.
fn close(stream: &TcpStream) {
    let _ = SockRef::from(stream).set_linger(Some(Duration::ZERO));
}

/// Starts a non-blocking connect, bound to `source` if given, with a small
/// receive buffer for a slow reader (it must be set before the handshake,
/// which announces the window).
fn start_connect(
    addr: SocketAddr,
    source: Option<std::net::IpAddr>,
    kind: AttackKind,
) -> io::Result<TcpStream> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_nonblocking(true)?;
    if kind == AttackKind::SlowReader {
        socket.set_recv_buffer_size(SLOW_READER_RCVBUF)?;
        socket.set_send_buffer_size(SLOW_READER_SNDBUF)?;
        socket.set_mss(SLOW_READER_MSS)?;
    }
    if let Some(source) = source {
        socket.bind(&SockAddr::from(SocketAddr::new(source, 0)))?;
    }
    match socket.connect(&SockAddr::from(addr)) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(e),
    }
    Ok(TcpStream::from_std(socket.into()))
}

/// What slow-reader and oversized send.
///
/// A slow reader cycles through 64 KiB of 16-byte lines (the cycle is whole
/// lines, so restarting it keeps the lines whole). Oversized sends one line
/// of `line_bytes`, the newline last: the server should give up long before
/// the newline.
fn payload(kind: AttackKind, line_bytes: usize) -> Vec<u8> {
    match kind {
        AttackKind::SlowReader => b"never-read-me..\n".repeat(4096),
        AttackKind::Oversized => {
            let mut line = vec![b'x'; line_bytes.saturating_sub(1)];
            line.push(b'\n');
            line
        }
        _ => Vec::new(),
    }
}

/// Splits incoming bytes into lines: returns the lines completed by `data`,
/// each cut to its first [`LINE_KEPT`] bytes (enough to know an `ERR`);
/// `partial` carries the start of an unfinished line between calls.
fn scan_lines(partial: &mut Vec<u8>, data: &[u8]) -> Vec<Vec<u8>> {
    let mut lines = Vec::new();
    for piece in data.split_inclusive(|&b| b == b'\n') {
        let room = LINE_KEPT.saturating_sub(partial.len());
        partial.extend_from_slice(&piece[..piece.len().min(room)]);
        if piece.ends_with(b"\n") {
            lines.push(std::mem::take(partial));
        }
    }
    lines
}

impl AttackSummary {
    /// The report's lines for the attack.
    pub fn text(&self) -> String {
        let (o, s) = (&self.opts, &self.stats);
        let mut out = String::new();
        let what = match o.kind {
            AttackKind::Slowloris => format!(", a byte every {:.1}s", o.interval.as_secs_f64()),
            AttackKind::Oversized => format!(", {}-byte lines", o.line_bytes),
            AttackKind::Churn if o.no_banner => ", closing at connect".to_string(),
            _ => String::new(),
        };
        let capped = match self.asked > o.attackers {
            true => format!(" (of {} asked: fd limit)", self.asked),
            false => String::new(),
        };
        let _ = writeln!(
            out,
            "  Attack       {}: {} attackers{capped}{what}",
            o.kind.name(),
            o.attackers
        );
        let _ = writeln!(
            out,
            "    attackers  {} opened, {} connected, {} up at peak, {} up at the end, {} bytes sent",
            s.opened, s.connected, s.peak_up, self.up_at_end, s.bytes_sent
        );
        let _ = writeln!(
            out,
            "    ended      {} closed by server, {} closed by us, {} connect failures",
            s.closed_by_server, s.closed_by_us, s.connect_failures
        );
        let _ = writeln!(out, "    refused    {}", self.reasons_text());
        if let Some(first) = &s.first_connect_failure {
            let _ = writeln!(out, "    first connect failure: {first}");
        }
        out
    }

    /// `0`, or `12 (line too long 12)`.
    fn reasons_text(&self) -> String {
        let s = &self.stats;
        if s.refused == 0 {
            return "0".to_string();
        }
        let parts: Vec<String> = s.reasons.iter().map(|(r, n)| format!("{r} {n}")).collect();
        format!("{} ({})", s.refused, parts.join(", "))
    }

    /// The attack as a JSON object, for the `--json` line. The `ERR` texts
    /// are ours (`line too long`, ...) but they are escaped anyway, in case a
    /// server sends something else.
    pub fn json(&self) -> String {
        let (o, s) = (&self.opts, &self.stats);
        let reasons: Vec<String> = s
            .reasons
            .iter()
            .map(|(r, n)| format!("\"{}\":{n}", json_escape(r)))
            .collect();
        format!(
            concat!(
                "{{\"kind\":\"{}\",\"attackers\":{},\"asked\":{},\"opened\":{},",
                "\"connected\":{},\"peak_up\":{},\"up_at_end\":{},\"closed_by_server\":{},",
                "\"closed_by_us\":{},\"refused\":{},\"connect_failures\":{},",
                "\"bytes_sent\":{},\"reasons\":{{{}}}}}"
            ),
            o.kind.name(),
            o.attackers,
            self.asked,
            s.opened,
            s.connected,
            s.peak_up,
            self.up_at_end,
            s.closed_by_server,
            s.closed_by_us,
            s.refused,
            s.connect_failures,
            s.bytes_sent,
            reasons.join(",")
        )
    }
}

/// `text` as the inside of a JSON string: quotes, backslashes and control characters
/// escaped.
fn json_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if u32::from(c) < 0x20 => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_parse_by_name() {
        for kind in AttackKind::ALL {
            assert_eq!(AttackKind::parse(kind.name()), Ok(kind));
        }
        let err = AttackKind::parse("ddos").unwrap_err();
        assert!(
            err.contains("slowloris, slow-reader, churn, flood, oversized"),
            "{err}"
        );
    }

    #[test]
    fn lines_are_found_across_reads_and_kept_short() {
        let mut partial = Vec::new();
        assert!(scan_lines(&mut partial, b"Welcome").is_empty());
        let lines = scan_lines(&mut partial, b" here\nERR line too long\nOK");
        assert_eq!(
            lines,
            vec![b"Welcome here\n".to_vec(), b"ERR line too long\n".to_vec()]
        );
        assert_eq!(partial, b"OK");
        let long = vec![b'y'; 500];
        assert!(scan_lines(&mut partial, &long).is_empty());
        let lines = scan_lines(&mut partial, b"\n");
        assert_eq!(lines[0].len(), LINE_KEPT, "long lines are cut");
    }

    #[test]
    fn refusals_are_counted_by_text() {
        let mut stats = AttackStats::default();
        stats.refusal(b"ERR server busy\n");
        stats.refusal(b"ERR line too long\r\n");
        stats.refusal(b"ERR server busy\n");
        assert_eq!(stats.refused, 3);
        assert_eq!(
            stats.reasons,
            vec![
                ("server busy".to_string(), 2),
                ("line too long".to_string(), 1)
            ]
        );
        for i in 0..20 {
            stats.refusal(format!("ERR reason {i}\n").as_bytes());
        }
        assert_eq!(stats.reasons.len(), MAX_REASONS + 1, "the rest are 'other'");
        assert_eq!(stats.reasons.last().unwrap(), &("other".to_string(), 14));
    }

    #[test]
    fn payloads() {
        let line = payload(AttackKind::Oversized, 70_000);
        assert_eq!(line.len(), 70_000);
        assert_eq!(line.iter().filter(|&&b| b == b'\n').count(), 1);
        assert!(line.ends_with(b"\n"));
        let cycle = payload(AttackKind::SlowReader, 0);
        assert_eq!(cycle.len(), 64 * 1024);
        assert!(cycle.chunks(16).all(|l| l.ends_with(b"\n")));
    }

    #[test]
    fn the_summary_reads_and_parses() {
        let mut stats = AttackStats {
            opened: 12,
            connected: 11,
            peak_up: 10,
            closed_by_server: 2,
            connect_failures: 1,
            ..AttackStats::default()
        };
        stats.refusal(b"ERR line too long\n");
        let summary = AttackSummary {
            opts: AttackOptions::new(AttackKind::Oversized),
            asked: 100,
            stats,
            up_at_end: 9,
        };
        let text = summary.text();
        assert!(text.contains("Attack       oversized: 100 attackers, 70000-byte lines"));
        assert!(text.contains("12 opened, 11 connected, 10 up at peak, 9 up at the end"));
        assert!(text.contains("2 closed by server, 0 closed by us, 1 connect failures"));
        assert!(text.contains("refused    1 (line too long 1)"), "{text}");
        let json = summary.json();
        assert!(json.starts_with("{\"kind\":\"oversized\",\"attackers\":100,"));
        assert!(
            json.ends_with("\"reasons\":{\"line too long\":1}}"),
            "{json}"
        );
    }

    #[test]
    fn reasons_are_escaped_for_json() {
        assert_eq!(
            json_escape("a \"b\" \\ c\nd\u{1}"),
            "a \\\"b\\\" \\\\ c\\u000ad\\u0001"
        );
    }
}
