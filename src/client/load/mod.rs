//! `echoc load HOST:PORT`: many verified connections from one thread.
//!
//! The generator is the server's loop turned around. Where the server keeps a
//! slab of accepted connections, we keep a slab of connections we opened;
//! each is a small state machine ([`conn`]) and its slab key is its mio
//! token. One `poll` waits for all of them, plus the timers we need (the
//! progress line, pacing, connect timeouts, the end of the run), which become
//! the `poll` timeout rather than threads.
//!
//! A run goes like this:
//!
//! 1. open connections, at most [`MAX_CONNECTING`] handshakes at a time (so
//!    the server's listen backlog is not overrun) and no faster than
//!    `--connect-rate`;
//! 2. each reads the banner, then keeps `--pipeline` lines in flight, every
//!    reply checked byte for byte ([`checker`]) and timed;
//! 3. when `--duration` is over we stop sending and half-close; the server
//!    answers what it has and closes, and we wait for that (at most
//!    `--drain`);
//! 4. print the summary ([`report`]).
//!
//! With `--idle` the connections read their banner and then say nothing; the
//! hold time starts once every connection is up (or has failed).
//!
//! With `--attack KIND` hostile connections ([`attack`]) run in the same loop
//! beside the measured ones, from the moment those are up until the sending
//! time is over; they are counted apart and never make the run fail.

pub mod attack;
pub mod checker;
pub mod conn;
pub mod merge;
pub mod pace;
pub mod report;
pub mod schedule;
pub mod source;
pub mod timeline;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mio::event::Event;
use mio::{Events, Interest, Poll, Token};
use slab::Slab;

use self::attack::{Attack, AttackOptions, TOKEN_BASE};
use self::checker::{Mismatch, ReplyChecker, Where};
use self::conn::{Conn, End, Phase};
use self::pace::TokenBucket;
use self::report::{ErrorKind, Progress, Setup, Stats, Summary};
use self::schedule::Plan;
use self::source::SourceRange;
use self::timeline::Timeline;
use super::connect::{self, connect_outcome, describe, interrupted, out_of_fds};
use super::escape::escape;
use super::Fatal;
use crate::reactor::alarm::Alarm;

/// At most this many handshakes in flight: a burst of thousands of SYNs would
/// overflow the server's listen backlog and turn into slow SYN retries.
pub const MAX_CONNECTING: usize = 256;

/// Everything `echoc load` can be told.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// `HOST:PORT` of the server.
    pub target: String,
    /// How many connections to open.
    pub connections: usize,
    /// How long to send (or, with `idle`, to hold the connections).
    pub duration: Duration,
    /// Bytes per line, the newline included.
    pub line_bytes: usize,
    /// Lines in flight per connection (1 = ping-pong).
    pub pipeline: usize,
    /// Open loop: lines per second, all connections together, each on a
    /// fixed schedule ([`schedule`]).
    pub rate: Option<f64>,
    /// Cap on connections opened per second.
    pub connect_rate: Option<f64>,
    /// Hold the connections silent instead of sending.
    pub idle: bool,
    /// Local addresses to bind to, round-robin.
    pub source: Option<SourceRange>,
    /// What the server puts before each echoed line.
    pub prefix: Vec<u8>,
    /// Lines of banner the server sends first.
    pub banner_lines: usize,
    /// The exact banner, if it should be checked.
    pub banner: Option<Vec<u8>>,
    /// Give up on a handshake after this long.
    pub connect_timeout: Duration,
    /// How long to wait for the last replies after the run.
    pub drain: Duration,
    /// Print the JSON summary line.
    pub json: bool,
    /// Print one JSON line per second before the summary.
    pub interval_json: bool,
    /// Write an HdrHistogram interval log here.
    pub hdr_log: Option<PathBuf>,
    /// The log's tag (a host name, say).
    pub hdr_tag: Option<String>,
    /// Start at this Unix time (seconds), so that runs on several hosts ramp
    /// together.
    pub start_at: Option<f64>,
    /// Hostile connections to run beside the measured ones (boxed: they are
    /// rarely asked for, and would double the size of every `LoadOptions`).
    pub attack: Option<Box<AttackOptions>>,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            target: String::new(),
            connections: 10,
            duration: Duration::from_secs(10),
            line_bytes: 16,
            pipeline: 1,
            rate: None,
            connect_rate: None,
            idle: false,
            source: None,
            prefix: b"OK...".to_vec(),
            banner_lines: 1,
            banner: None,
            connect_timeout: Duration::from_secs(10),
            drain: Duration::from_secs(2),
            json: false,
            interval_json: false,
            hdr_log: None,
            hdr_tag: None,
            start_at: None,
            attack: None,
        }
    }
}

/// Runs the load and returns its summary. `Err` only for failures that stop
/// the run from starting (the target does not resolve, ...); everything that
/// goes wrong on connections is counted in the summary instead.
pub fn run(opts: &LoadOptions) -> Result<Summary, Fatal> {
    let addr = connect::resolve_target(&opts.target)?;
    if let Some(source) = &opts.source {
        if source.is_ipv4() != addr.is_ipv4() {
            return Err(Fatal(format!(
                "--source and {} are not the same address family",
                opts.target
            )));
        }
    }
    if let Some(attack) = &opts.attack {
        check_attack_target(attack, addr)?;
    }
    let attackers = opts.attack.as_ref().map_or(0, |a| a.attackers);
    raise_fd_limit(opts.connections + attackers);
    let setup = Setup {
        target: opts.target.clone(),
        connections: opts.connections as u64,
        duration: opts.duration,
        line_bytes: opts.line_bytes,
        pipeline: opts.pipeline,
        idle: opts.idle,
        rate: opts.rate,
    };
    let start = wait_for_start(opts.start_at)?;
    let mut generator = Generator::new(opts, addr)?;
    generator.intervals = Timeline::new(
        opts.interval_json,
        opts.hdr_log.as_deref(),
        opts.hdr_tag.as_deref(),
        &setup,
        start,
    )?;
    if let Some(attack) = &opts.attack {
        let allowed = attackers_allowed(opts.connections, attackers);
        generator.attack = Some(Attack::new(attack, allowed, addr, opts.connect_timeout));
    }
    let elapsed = generator.run()?;
    generator
        .intervals
        .finish(&generator.stats.totals, elapsed)?;
    let summary = generator.stats.summary(setup, elapsed);
    Ok(match &generator.attack {
        Some(attack) => summary.with_attack(attack.summary()),
        None => summary,
    })
}

/// `--start-at T`: sleeps until Unix time `T` (runs on several hosts then
/// start together, as far as their clocks agree), and returns the start time
/// for the log's headers. A time already past starts at once.
fn wait_for_start(start_at: Option<f64>) -> Result<SystemTime, Fatal> {
    if let Some(at) = start_at {
        let at = UNIX_EPOCH + Duration::from_secs_f64(at);
        if let Ok(wait) = at.duration_since(SystemTime::now()) {
            if wait > Duration::from_secs(24 * 3600) {
                return Err(Fatal("--start-at is more than a day away".into()));
            }
            std::thread::sleep(wait);
        }
    }
    Ok(SystemTime::now())
}

/// Attacks go to this machine only: the point is to measure our own server,
/// and a tool that opened ten thousand hostile connections to any address it
/// was given would be a weapon, not a measuring instrument.
fn check_attack_target(attack: &AttackOptions, addr: SocketAddr) -> Result<(), Fatal> {
    if !addr.ip().is_loopback() {
        return Err(Fatal(format!(
            "--attack runs against a loopback address only (127.0.0.0/8, ::1), not {addr}"
        )));
    }
    if let Some(source) = &attack.source {
        let (first, last) = (source.nth(0), source.nth(source.len() as u64 - 1));
        if source.is_ipv4() != addr.is_ipv4() || !first.is_loopback() || !last.is_loopback() {
            return Err(Fatal(format!(
                "--attack-source must be loopback addresses of the target's family ({addr})"
            )));
        }
    }
    Ok(())
}

/// How many attackers the open-file limit leaves room for, beside the
/// measured connections and a few descriptors of our own. When that is
/// fewer than asked we say so now, and the report shows both numbers.
fn attackers_allowed(connections: usize, attackers: usize) -> usize {
    let limit = rlimit::getrlimit(rlimit::Resource::NOFILE).map_or(u64::MAX, |(soft, _)| soft);
    let room = usize::try_from(limit)
        .unwrap_or(usize::MAX)
        .saturating_sub(connections + 64);
    if room < attackers {
        eprintln!(
            "echoc: open file limit {limit}: {room} attackers instead of {attackers} (raise it with ulimit -n)"
        );
    }
    room.min(attackers)
}

/// Each connection needs a file descriptor, and the usual soft limit (1024)
/// is far below what a C10K test needs. The hard limit is often much higher
/// and raising the soft one up to it needs no privilege, so we try; if it is
/// still too low, the connects that fail with `EMFILE` say so.
fn raise_fd_limit(connections: usize) {
    let wanted = connections as u64 + 64;
    let _ = rlimit::increase_nofile_limit(wanted);
}

/// The load generator's state: the connections and the loop's bookkeeping.
struct Generator<'o> {
    opts: &'o LoadOptions,
    addr: SocketAddr,
    poll: Poll,
    conns: Slab<Conn>,
    stats: Stats,
    /// One read buffer for every connection: we finish with the bytes of a
    /// read before the next read, so there is no need for one each.
    buf: Vec<u8>,
    banner: Option<Rc<[u8]>>,
    /// Connections not opened yet.
    to_open: usize,
    next_id: u64,
    /// Handshakes in flight.
    connecting: usize,
    /// Connect deadlines in opening order, hence in time order:
    /// `(deadline, key, id)`.
    connect_deadlines: VecDeque<(Instant, usize, u64)>,
    connect_pace: Option<TokenBucket>,
    /// With `--rate`: the next send time of each connection that is waiting
    /// for one, `(time, key, id)`, earliest on top.
    timers: BinaryHeap<Reverse<(Instant, usize, u64)>>,
    /// When the run's sending ends (set once known; for `--idle`, once all
    /// connections are up).
    stop_at: Option<Instant>,
    /// Wakes the loop at its next deadline: a timerfd on Linux, so that a line
    /// due in 300 µs is sent then, not at the next whole millisecond (which is
    /// all `poll`'s timeout can do), and its corrected latency is not inflated.
    alarm: Alarm,
    /// The run is over: no more lines, no more connections.
    draining: bool,
    /// The hostile connections, with `--attack`.
    attack: Option<Attack>,
    /// Where each second's results go (`--interval-json`, `--hdr-log`).
    intervals: Timeline,
}

/// The alarm's token: just below the attackers' (a slab never gets that big).
const ALARM: Token = Token(TOKEN_BASE - 1);

/// A connection's mio token is its slab key. Slab keys are reused once a
/// connection is gone, so whatever remembers a connection across loop turns
/// (the wait list, the connect deadlines) also remembers its id and checks it.
fn token_of(key: usize) -> Token {
    Token(key)
}

impl<'o> Generator<'o> {
    fn new(opts: &'o LoadOptions, addr: SocketAddr) -> Result<Generator<'o>, Fatal> {
        let poll = Poll::new().map_err(|e| Fatal(format!("poll: {}", describe(&e))))?;
        let mut alarm = Alarm::new().map_err(|e| Fatal(format!("alarm: {}", describe(&e))))?;
        alarm
            .register(poll.registry(), ALARM)
            .map_err(|e| Fatal(format!("alarm: {}", describe(&e))))?;
        let now = Instant::now();
        Ok(Generator {
            opts,
            addr,
            poll,
            conns: Slab::with_capacity(opts.connections.min(1 << 20)),
            stats: Stats::new(opts.rate.is_some()),
            buf: vec![0; 64 * 1024],
            banner: opts.banner.as_deref().map(Rc::from),
            to_open: opts.connections,
            next_id: 0,
            connecting: 0,
            connect_deadlines: VecDeque::new(),
            connect_pace: opts.connect_rate.map(|r| TokenBucket::new(r, now)),
            timers: BinaryHeap::new(),
            stop_at: None,
            alarm,
            draining: false,
            attack: None,
            intervals: Timeline::none(),
        })
    }

    /// The loop. Returns how long the run took, start to last reply.
    fn run(&mut self) -> Result<Duration, Fatal> {
        let start = Instant::now();
        let mut progress = Progress::new(start);
        let mut events = Events::with_capacity(1024);
        // When sending stops; for --idle, set once all connections are up.
        self.stop_at = (!self.opts.idle).then(|| start + self.opts.duration);
        let mut drain_until = None;
        let mut next_interval = start + Duration::from_secs(1);
        loop {
            let now = Instant::now();
            self.open_connections(now);
            self.expire_connects(now);
            self.send_due(now);
            let all_up = self.to_open == 0 && self.connecting == 0;
            if self.stop_at.is_none() && all_up {
                self.stop_at = Some(now + self.opts.duration);
            }
            if let Some(attack) = &mut self.attack {
                if all_up {
                    attack.start();
                }
                attack.tick(self.poll.registry(), &mut self.buf, now);
            }
            // Every connection has failed and none are left to open: there
            // is nothing to wait for.
            let all_gone = self.to_open == 0 && self.conns.is_empty();
            if !self.draining && (all_gone || self.stop_at.is_some_and(|t| now >= t)) {
                self.stop();
                drain_until = Some(now + self.opts.drain);
            }
            if self.draining && (self.conns.is_empty() || drain_until.is_some_and(|t| now >= t)) {
                self.give_up_on_rest();
                progress.finish();
                let elapsed = now.duration_since(start);
                let last = self.stats.end_interval(elapsed);
                self.intervals.push(last)?;
                return Ok(elapsed);
            }
            if now >= next_interval {
                // The interval ends on the second, even if this turn came late.
                while next_interval <= now {
                    next_interval += Duration::from_secs(1);
                }
                let at = (next_interval - Duration::from_secs(1)).duration_since(start);
                let interval = self.stats.end_interval(at);
                self.intervals.push(interval)?;
            }
            progress.tick(now, &self.stats, self.opts.connections as u64);
            let timers = [Some(next_interval), self.stop_at, drain_until];
            let wake = self.next_wake(now, timers);
            if let Err(e) = self.alarm.set(Some(wake), now) {
                return Err(Fatal(format!("alarm: {}", describe(&e))));
            }
            let timeout = self.alarm.poll_timeout();
            match self.poll.poll(&mut events, timeout) {
                Ok(()) => {}
                Err(e) if interrupted(&e) => continue,
                Err(e) => return Err(Fatal(format!("poll: {}", describe(&e)))),
            }
            let now = Instant::now();
            for event in events.iter() {
                self.on_event(event, now);
            }
        }
    }

    /// The earliest moment the loop must wake up even without events.
    fn next_wake(&mut self, now: Instant, timers: [Option<Instant>; 3]) -> Instant {
        let mut wake = timers
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(now + Duration::from_secs(1));
        if let Some(&(deadline, _, _)) = self.connect_deadlines.front() {
            wake = wake.min(deadline);
        }
        if self.to_open > 0 && self.connecting < MAX_CONNECTING {
            if let Some(pace) = &mut self.connect_pace {
                wake = wake.min(now + pace.wait(now));
            }
        }
        if let Some(Reverse((due, _, _))) = self.timers.peek() {
            wake = wake.min(*due);
        }
        if let Some(attack_wake) = self.attack.as_ref().and_then(Attack::next_wake) {
            wake = wake.min(attack_wake);
        }
        wake
    }

    /// Opens connections while we may: some are left, few enough
    /// handshakes are in flight, and the connect rate allows.
    fn open_connections(&mut self, now: Instant) {
        while self.to_open > 0 && !self.draining && self.connecting < MAX_CONNECTING {
            if let Some(pace) = &mut self.connect_pace {
                if !pace.take(now) {
                    break;
                }
            }
            self.to_open -= 1;
            self.open_one(now);
        }
    }

    /// Starts one connect and registers the socket for both directions: it
    /// becomes writable when the handshake ends, then readable with data.
    fn open_one(&mut self, now: Instant) {
        let id = self.next_id;
        self.next_id += 1;
        let source = self.opts.source.map(|range| range.nth(id));
        let mut stream = match connect::start_connect(self.addr, source) {
            Ok(stream) => stream,
            Err(e) => return self.connect_failed_at_once(id, &e),
        };
        let entry = self.conns.vacant_entry();
        let key = entry.key();
        let interest = Interest::READABLE | Interest::WRITABLE;
        if let Err(e) = self
            .poll
            .registry()
            .register(&mut stream, token_of(key), interest)
        {
            return self.connect_failed_at_once(id, &e);
        }
        let checker = ReplyChecker::new(self.opts.banner_lines, self.banner.clone());
        entry.insert(Conn::new(id, stream, checker, now));
        self.stats.totals.opened += 1;
        self.connecting += 1;
        self.connect_deadlines
            .push_back((now + self.opts.connect_timeout, key, id));
    }

    /// A connect that failed before it started. Out of file descriptors, the
    /// rest would fail the same way: count them all now rather than spin.
    fn connect_failed_at_once(&mut self, id: u64, e: &std::io::Error) {
        let addr = self.addr;
        if out_of_fds(e) {
            let limit = rlimit::getrlimit(rlimit::Resource::NOFILE).map_or(0, |(soft, _)| soft);
            let count = 1 + self.to_open as u64;
            self.to_open = 0;
            self.stats.error(ErrorKind::Connect, count, || {
                format!(
                    "conn {id}: {} (open file limit {limit}; raise it with ulimit -n)",
                    describe(e)
                )
            });
        } else {
            self.stats.error(ErrorKind::Connect, 1, || {
                format!("conn {id}: connect to {addr}: {}", describe(e))
            });
        }
    }

    /// Fails handshakes that have taken longer than `--connect-timeout`, and
    /// forgets deadlines of connections no longer connecting.
    fn expire_connects(&mut self, now: Instant) {
        while let Some(&(deadline, key, id)) = self.connect_deadlines.front() {
            let still_connecting = self
                .conns
                .get(key)
                .is_some_and(|c| c.id == id && c.phase == Phase::Connecting);
            if still_connecting && deadline > now {
                break;
            }
            self.connect_deadlines.pop_front();
            if still_connecting {
                let secs = self.opts.connect_timeout.as_secs_f64();
                self.fail(
                    key,
                    ErrorKind::Connect,
                    format!("connect timed out after {secs} s"),
                );
            }
        }
    }

    /// Readiness for one connection. Events may be stale (the connection
    /// failed earlier in this batch): its key then holds nothing, since keys
    /// are reused only when connections are opened, between batches, and the
    /// event is skipped. A spurious readiness only costs a `WouldBlock`.
    fn on_event(&mut self, event: &Event, now: Instant) {
        if event.token() == ALARM {
            return self.alarm.rang();
        }
        if event.token().0 >= TOKEN_BASE {
            if let Some(attack) = &mut self.attack {
                attack.on_event(event, &mut self.buf, now);
            }
            return;
        }
        let key = event.token().0;
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        if conn.phase == Phase::Connecting {
            match connect_outcome(conn.stream()) {
                None => return,
                Some(Err(e)) => {
                    let why = format!("connect to {}: {}", self.addr, describe(&e));
                    return self.fail(key, ErrorKind::Connect, why);
                }
                Some(Ok(())) => self.on_connected(key, now),
            }
        }
        // Each step may have ended the connection, so look again before the
        // next one.
        let readable = event.is_readable() || event.is_read_closed() || event.is_error();
        if readable && self.conns.contains(key) {
            self.on_readable(key, now);
        }
        if event.is_writable() && self.conns.contains(key) {
            self.flush(key);
        }
    }

    fn on_connected(&mut self, key: usize, now: Instant) {
        self.connecting -= 1;
        let conn = &mut self.conns[key];
        report::record(
            &mut self.stats.totals.connect,
            now.saturating_duration_since(conn.opened_at),
        );
        if conn.connected() == Phase::Running {
            self.came_up(key, now);
        }
    }

    /// A connection is up (connected, banner read): with `--rate` it gets its
    /// share of the plan, then it starts sending.
    fn came_up(&mut self, key: usize, now: Instant) {
        self.stats.conn_up();
        if let (Some(rate), Some(stop_at)) = (self.opts.rate, self.stop_at) {
            // Its share spans the run's length from the moment it is up, so a
            // slow handshake shifts the share instead of shrinking it; one up
            // after the run is over has no share.
            let end = if now < stop_at {
                now + self.opts.duration
            } else {
                now
            };
            let conn = &mut self.conns[key];
            let connections = self.opts.connections as u64;
            let plan = Plan::new(conn.id, connections, rate, now, end);
            self.stats.totals.planned += plan.lines();
            conn.plan = Some(plan);
        }
        self.send_lines(key, now);
    }

    /// Reads and checks what arrived, then tops the pipeline back up.
    fn on_readable(&mut self, key: usize, now: Instant) {
        let conn = &mut self.conns[key];
        let stats = &mut self.stats;
        let report = conn.read_ready(&mut self.buf, now, |corrected, uncorrected| {
            stats.reply(corrected, uncorrected)
        });
        if report.banner_done && conn.phase == Phase::Banner {
            conn.phase = Phase::Running;
            if report.end.is_none() {
                return self.came_up(key, now);
            }
            self.stats.conn_up();
        }
        match report.end {
            None => self.send_lines(key, now),
            Some(End::Closed) => self.server_closed(key),
            Some(End::Mismatch(mismatch)) => self.mismatch(key, &mismatch),
            Some(End::Io(e)) => self.fail(key, ErrorKind::Io, describe(&e)),
        }
    }

    /// Keeps `--pipeline` lines in flight: at once in a closed loop; with
    /// `--rate`, each line once its time has come.
    fn send_lines(&mut self, key: usize, now: Instant) {
        let conn = &mut self.conns[key];
        if conn.phase != Phase::Running || self.opts.idle {
            return;
        }
        if conn.plan.is_none() {
            if self.draining {
                return;
            }
            while conn.outstanding() < self.opts.pipeline {
                conn.queue_line(self.opts.line_bytes, &self.opts.prefix, now, now);
            }
            return self.flush(key);
        }
        while conn.outstanding() < self.opts.pipeline {
            match conn.plan.as_ref().and_then(Plan::next_due) {
                // Its share of the plan is sent: half-close, as at the end of
                // a closed-loop run.
                None => {
                    if let Err(e) = conn.start_draining() {
                        self.fail(key, ErrorKind::Io, describe(&e));
                    }
                    return;
                }
                Some(due) if due > now => {
                    if !conn.scheduled {
                        conn.scheduled = true;
                        self.timers.push(Reverse((due, key, conn.id)));
                    }
                    break;
                }
                Some(due) => {
                    if let Some(plan) = &mut conn.plan {
                        plan.advance();
                    }
                    conn.queue_line(self.opts.line_bytes, &self.opts.prefix, due, now);
                    self.stats.sent(now.saturating_duration_since(due));
                }
            }
        }
        self.flush(key);
    }

    /// With `--rate`: lets the connections whose next line has come due send.
    fn send_due(&mut self, now: Instant) {
        while let Some(&Reverse((due, key, id))) = self.timers.peek() {
            if due > now {
                return;
            }
            self.timers.pop();
            if let Some(conn) = self.conns.get_mut(key).filter(|c| c.id == id) {
                conn.scheduled = false;
                self.send_lines(key, now);
            }
        }
    }

    fn flush(&mut self, key: usize) {
        if let Err(e) = self.conns[key].flush() {
            self.fail(key, ErrorKind::Io, describe(&e));
        }
    }

    /// The server closed its side: the expected end when draining with
    /// nothing owed, an early close otherwise.
    fn server_closed(&mut self, key: usize) {
        let conn = &self.conns[key];
        if conn.phase == Phase::Draining && conn.is_settled() {
            return self.remove(key);
        }
        let why = match conn.phase {
            Phase::Banner => "server closed before sending the banner".to_string(),
            _ => format!(
                "server closed with {} replies outstanding",
                conn.outstanding()
            ),
        };
        self.fail(key, ErrorKind::EarlyClose, why);
    }

    /// A wrong line: count it by what it was, and show it.
    fn mismatch(&mut self, key: usize, m: &Mismatch) {
        let kind = match m.at {
            _ if m.is_server_error() => ErrorKind::ServerErr,
            Where::Banner => ErrorKind::Banner,
            Where::Reply | Where::Unexpected => ErrorKind::Mismatch,
        };
        let (expected, got) = (quote(&m.expected), quote(&m.got));
        let why = match m.at {
            Where::Banner if m.expected.is_empty() => {
                format!("banner line {}: got {got}", m.index + 1)
            }
            Where::Banner => format!("banner: expected {expected}, got {got}"),
            Where::Reply if m.skipped > 0 => format!(
                "reply {} from byte {}: expected ...{expected}, got ...{got}",
                m.index + 1,
                m.skipped
            ),
            Where::Reply => format!("reply {}: expected {expected}, got {got}", m.index + 1),
            Where::Unexpected => format!("unexpected data {got}"),
        };
        self.fail(key, kind, why);
    }

    /// Counts an error against a connection and closes it.
    fn fail(&mut self, key: usize, kind: ErrorKind, why: String) {
        let id = self.conns[key].id;
        self.stats.error(kind, 1, || format!("conn {id}: {why}"));
        self.remove(key);
    }

    /// Forgets a connection; dropping the socket closes it, which also takes
    /// it out of the poll.
    fn remove(&mut self, key: usize) {
        let conn = self.conns.remove(key);
        match conn.phase {
            Phase::Connecting => self.connecting -= 1,
            Phase::Banner => {}
            Phase::Running | Phase::Draining => self.stats.up -= 1,
        }
    }

    /// The run is over: stop opening and sending, and half-close every live
    /// connection so the server answers what it has and closes.
    fn stop(&mut self) {
        if let Some(attack) = &mut self.attack {
            attack.stop();
        }
        self.draining = true;
        self.to_open = 0;
        let keys: Vec<usize> = self.conns.iter().map(|(key, _)| key).collect();
        for key in keys {
            let conn = &mut self.conns[key];
            match conn.phase {
                Phase::Connecting => self.fail(
                    key,
                    ErrorKind::Connect,
                    "still connecting when the run ended".into(),
                ),
                Phase::Banner => self.fail(
                    key,
                    ErrorKind::Banner,
                    "no banner by the end of the run".into(),
                ),
                // With `--rate`, lines that fell behind are still sent, as
                // fast as the server takes them (within --drain); the
                // connection half-closes when its share is sent.
                Phase::Running if conn.plan.as_ref().is_some_and(|p| p.left() > 0) => {}
                Phase::Draining => {}
                Phase::Running => {
                    if let Err(e) = conn.start_draining() {
                        self.fail(key, ErrorKind::Io, describe(&e));
                    }
                }
            }
        }
    }

    /// The drain time is up: lines still unanswered are errors (a healthy
    /// server answers within it); connections owing nothing are just closed.
    fn give_up_on_rest(&mut self) {
        let keys: Vec<usize> = self.conns.iter().map(|(key, _)| key).collect();
        for key in keys {
            let owed = self.conns[key].outstanding();
            if owed > 0 {
                let secs = self.opts.drain.as_secs_f64();
                let why = format!("{owed} replies still missing {secs} s after the run");
                self.fail(key, ErrorKind::Unanswered, why);
            } else {
                self.remove(key);
            }
        }
    }
}

/// Bytes from a line, quoted and escaped for the report; `...` after the
/// quote when the line goes on beyond what is shown.
fn quote(bytes: &[u8]) -> String {
    let more = match bytes.last() {
        None | Some(b'\n') => "",
        Some(_) => "...",
    };
    format!("\"{}\"{more}", escape(bytes))
}
