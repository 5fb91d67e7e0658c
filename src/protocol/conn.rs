//! One client's state machine: bytes in, reply bytes and decisions out. No sockets here.
//!
//! A [`Connection`] never touches the network and never reads a clock. The reactor
//! ([`crate::reactor::server`]) feeds it what a socket delivered ([`Connection::handle_input`],
//! [`Connection::handle_read_closed`]), asks what to send ([`Connection::poll_output`]),
//! tells it how much the socket took ([`Connection::advance_output`]), and asks whether it
//! may read more ([`Connection::wants_read`]) or should close ([`Connection::is_closed`]).
//! Because of that, every edge case below is tested with plain byte slices, split at every
//! offset, without a network.
//!
//! # Buffers and limits
//!
//! We keep two buffers, both empty (and unallocated) while there is nothing in them, so
//! that an idle connection costs only the size of this struct:
//! - `input`: bytes received but not yet answered. Normally just a partial line, at most
//!   [`Rules::max_line`] bytes. When replies cannot be queued (the client is not reading)
//!   it also holds the complete lines still waiting for room: the *waiting lines*. We stop reading
//!   while lines wait, so they are at most one read's worth. (A telnet-aware
//!   connection keeps the rest of that read undecoded in its telnet filter instead, so
//!   that a negotiation answer cannot overtake the replies to the lines before it.)
//! - `output`: reply bytes the socket has not taken yet. A reply is queued only while
//!   `output` is empty or the reply fits under [`Rules::max_pending`], so the replies in
//!   `output` never exceed `max(max_pending, one reply)`; an error message and telnet
//!   negotiation answers are queued whatever the room.
//!
//! Replies are usually written to the socket at once, so most batches of replies would
//! allocate a buffer only to free it a moment later. The reactor avoids that by lending
//! a connection with nothing pending one shared buffer for the visit
//! ([`Connection::lend_output`]) and taking it back afterwards
//! ([`Connection::return_output`]); the connection then keeps, in a buffer of its own,
//! only what the socket did not take.
//!
//! # States
//!
//! ```text
//! ProxyHeader ──header──▶ Open   (only with --proxy-protocol; a bad header ──▶ Flushing)
//! Open ──EOF / shutdown──▶ Finishing ──all answered──▶ Flushing ──output sent──▶ Closed
//!  │                                                      ▲  │  (peer's FIN already seen)
//!  └──line too long / idle timeout────────────────────────┘  └──▶ Lingering ──EOF──▶ Closed
//! any state ──I/O error──▶ Closed
//! ```
//!
//! That is the main road; every transition, timeouts included, is drawn in
//! `docs/ARCHITECTURE.md`, and `tests/docs.rs` checks the drawing against this code.

use std::fmt;
use std::time::Duration;

use crate::config::{Config, Mode, Telnet};
use crate::protocol::fast;
use crate::protocol::line;
use crate::protocol::proxy;
use crate::protocol::telnet;
use crate::protocol::tick::Tick;
use crate::waypoint;

/// The message sent before closing a client whose line exceeds `--max-line`.
pub const ERR_LINE_TOO_LONG: &[u8] = b"ERR line too long\n";
/// The message sent before closing a client that was silent for `--idle-timeout`.
pub const ERR_IDLE_TIMEOUT: &[u8] = b"ERR idle timeout\n";
/// The message sent (by the reactor, before any state exists) to a client over `--max-connections`.
pub const ERR_SERVER_BUSY: &[u8] = b"ERR server busy\n";
/// The most bytes one [`Connection::handle_input`] delivers: the reactor reads into a
/// buffer of this size. 64 KiB matches the default socket buffer, so one read usually
/// empties the socket. Part of the memory bound: `input` never holds more than a partial
/// line plus one read.
pub const READ_SIZE: usize = 64 * 1024;

/// The message sent to a client whose address already has `--max-per-ip` connections.
pub const ERR_TOO_MANY_FROM_ADDRESS: &[u8] = b"ERR too many connections from your address\n";
/// The message sent before closing the largest clients when `--max-memory` is exceeded.
pub const ERR_OUT_OF_MEMORY: &[u8] = b"ERR out of memory\n";
/// The message sent before closing a connection whose PROXY header is missing or malformed.
pub const ERR_BAD_PROXY_HEADER: &[u8] = b"ERR bad proxy header\n";

/// The room [`Connection::keep_partial_line`] leaves for the end of a partial line.
const PARTIAL_ROOM: usize = 64;

/// The rules every connection follows, shared by all of them.
///
/// We pass this to each call instead of storing it in every connection: the prefix and
/// the banner are the same for all clients, and per-connection memory is what limits
/// how many clients one process can hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rules {
    /// Line protocol or plain echo.
    pub mode: Mode,
    /// Sent once when the connection opens (telnet-escaped with `--telnet on`; with `auto`
    /// it goes out before we know what the client speaks, so as it is).
    pub banner: Vec<u8>,
    /// Put before every echoed line (escaped with the line, in telnet mode).
    pub prefix: Vec<u8>,
    /// When to filter telnet commands out of the input and escape 0xFF in replies.
    pub telnet: Telnet,
    /// The longest line we accept, not counting its `\n`.
    pub max_line: usize,
    /// The most reply bytes we queue before we stop reading from this client.
    pub max_pending: usize,
    /// Every connection starts with a PROXY protocol header (we sit behind HAProxy).
    pub proxy_protocol: bool,
    /// How long a connection may go without a byte read or written (`None`: for ever).
    pub idle_timeout: Option<Duration>,
    /// How long pending output may go without the socket taking a byte of it (`None`:
    /// for ever): a client that does not read its replies is closed after this.
    pub send_timeout: Option<Duration>,
    /// With `--proxy-protocol`, how long a new connection may take to send its header.
    pub proxy_header_timeout: Duration,
    /// How long we wait for the client's FIN after sending ours (see [`State::Lingering`]).
    pub linger: Duration,
}

impl Rules {
    /// The rules described by a [`Config`].
    pub fn from_config(config: &Config) -> Rules {
        let is_line = config.mode == Mode::Line;
        // Raw mode is byte-exact, whatever the bytes look like.
        let telnet = if is_line { config.telnet } else { Telnet::Off };
        let escape = |bytes: &[u8]| {
            if telnet == Telnet::On {
                let mut escaped = Vec::with_capacity(bytes.len());
                telnet::escape_iac(bytes, &mut escaped);
                escaped
            } else {
                bytes.to_vec()
            }
        };
        Rules {
            mode: config.mode,
            banner: if is_line {
                escape(&config.banner)
            } else {
                Vec::new()
            },
            prefix: if is_line {
                config.prefix.clone()
            } else {
                Vec::new()
            },
            telnet,
            max_line: config.max_line,
            max_pending: config.max_pending,
            proxy_protocol: config.proxy_protocol,
            idle_timeout: config.idle_timeout,
            send_timeout: config.send_timeout,
            proxy_header_timeout: config.timings.proxy_header,
            linger: config.timings.linger,
        }
    }
}

impl Default for Rules {
    fn default() -> Rules {
        Rules::from_config(&Config::default())
    }
}

/// Where a connection is in its life. See the module docs for the diagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Behind a proxy: waiting for the PROXY protocol header that names the real client.
    /// No banner yet; bytes are collected until the header is complete.
    ProxyHeader,
    /// Reading input and answering every complete line.
    Open,
    /// Input has ended (the client's FIN, or the server is shutting down): we answer what
    /// is still buffered, the final unterminated fragment too, and read nothing more.
    Finishing,
    /// Nothing more will be answered: we send the output that is left.
    Flushing,
    /// Our output is sent and our FIN is out; we read and discard until the client's FIN,
    /// so that closing with unread data does not turn our FIN into a RST (which could
    /// destroy the last replies before the client reads them).
    Lingering,
    /// Done: the reactor closes the socket and frees the slot.
    Closed,
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// Why a connection ended (for the logs and the counters).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// The client half-closed and got every reply.
    ClientClosed,
    /// A line exceeded `--max-line`.
    LineTooLong,
    /// The client was silent for `--idle-timeout`.
    IdleTimeout,
    /// The server shut down (SIGINT/SIGTERM) and answered everything first.
    Shutdown,
    /// The drain timeout expired before the client took its replies.
    DrainTimeout,
    /// The PROXY protocol header was missing, malformed, or too slow to arrive.
    BadProxyHeader,
    /// Pending output made no progress for `--send-timeout`: the client does not read.
    SendTimeout,
    /// Refused: its address already had `--max-per-ip` connections.
    TooManyFromAddress,
    /// Closed to keep all buffers under `--max-memory` (it had one of the largest).
    OutOfMemory,
    /// The socket failed: a reset, or another I/O error.
    Error,
}

impl CloseReason {
    /// Every reason, in the order the counters print them.
    pub const ALL: [CloseReason; 10] = [
        CloseReason::ClientClosed,
        CloseReason::LineTooLong,
        CloseReason::IdleTimeout,
        CloseReason::Shutdown,
        CloseReason::DrainTimeout,
        CloseReason::BadProxyHeader,
        CloseReason::SendTimeout,
        CloseReason::TooManyFromAddress,
        CloseReason::OutOfMemory,
        CloseReason::Error,
    ];

    /// A short name for logs and counters.
    pub fn name(self) -> &'static str {
        match self {
            CloseReason::ClientClosed => "client_closed",
            CloseReason::LineTooLong => "line_too_long",
            CloseReason::IdleTimeout => "idle_timeout",
            CloseReason::Shutdown => "shutdown",
            CloseReason::DrainTimeout => "drain_timeout",
            CloseReason::BadProxyHeader => "bad_proxy_header",
            CloseReason::SendTimeout => "send_timeout",
            CloseReason::TooManyFromAddress => "too_many_from_address",
            CloseReason::OutOfMemory => "out_of_memory",
            CloseReason::Error => "error",
        }
    }
}

/// One client's protocol state and buffers. See the module docs.
#[derive(Debug)]
pub struct Connection {
    /// Where we are in the connection's life.
    state: State,
    /// Why we are closing, once we know.
    reason: Option<CloseReason>,
    /// The client's FIN has been seen: after our own FIN we can close at once.
    peer_eof: bool,
    /// `output` is the reactor's shared buffer, lent for one visit.
    lent: bool,
    /// `input` holds complete lines that are waiting for room in `output`. While it does
    /// we stop reading, which is what bounds `input`.
    waiting: bool,
    /// Received bytes not yet answered: a partial line, plus the waiting lines if any.
    input: Vec<u8>,
    /// Reply bytes not yet taken by the socket start at `output[sent..]`.
    output: Vec<u8>,
    /// How much of `output` the socket has already taken.
    sent: usize,
    /// The telnet layer: byte-exact, watching for the first telnet command, or decoding.
    telnet: telnet::Filter,
    /// Lines answered so far.
    lines: u64,
    /// The client named by a PROXY header, until the reactor takes it for its logs.
    proxied: Option<Box<proxy::Source>>,
    /// When this connection next needs the clock ([`Tick::NEVER`]: not at all). What it
    /// means depends on the state: the idle timeout while open, the header timeout
    /// before the PROXY header, the end of the linger after our FIN.
    deadline: Tick,
    /// When pending output that makes no progress times out (`--send-timeout`);
    /// [`Tick::NEVER`] while nothing is pending.
    send_deadline: Tick,
}

impl Connection {
    /// A new connection with its banner queued.
    pub fn new(p: &Rules) -> Connection {
        waypoint("new");
        let (state, output) = if p.proxy_protocol {
            // The banner waits until the proxy has told us who the client is.
            (State::ProxyHeader, Vec::new())
        } else {
            (State::Open, p.banner.clone())
        };
        Connection {
            state,
            reason: None,
            peer_eof: false,
            lent: false,
            waiting: false,
            input: Vec::new(),
            output,
            sent: 0,
            telnet: telnet::Filter::new(p.telnet),
            lines: 0,
            proxied: None,
            deadline: Tick::NEVER,
            send_deadline: Tick::NEVER,
        }
    }

    /// The client a PROXY header named, once, as soon as the header is complete (the
    /// reactor logs it as the connection's real address).
    pub fn take_proxied_source(&mut self) -> Option<proxy::Source> {
        self.proxied.take().map(|source| *source)
    }

    /// Where the connection is in its life.
    pub fn state(&self) -> State {
        self.state
    }

    /// Why the connection is closing, once that is decided.
    pub fn close_reason(&self) -> Option<CloseReason> {
        self.reason
    }

    /// How many lines (or raw chunks) have been answered.
    pub fn lines(&self) -> u64 {
        self.lines
    }

    /// How many bytes are buffered in total (input, the telnet filter's held input, and
    /// unsent output): what this client holds beyond the fixed size of the struct.
    pub fn buffered(&self) -> usize {
        self.input.len() + self.telnet.held_len() + self.pending()
    }

    /// The heap memory this connection holds: the capacity of its buffers (what
    /// `--max-memory` counts; a buffer's capacity, not its length, is what it costs).
    pub fn capacity(&self) -> usize {
        self.input.capacity() + self.output.capacity()
    }

    /// The capacity of the input and of the output buffer, for the memory bound's tests.
    pub fn capacities(&self) -> (usize, usize) {
        (self.input.capacity(), self.output.capacity())
    }

    /// True when the reactor should read from the socket. False while replies pile up
    /// (backpressure) and once input has ended. Reading resumes when
    /// [`Connection::advance_output`] makes room: the reactor must then read on its own,
    /// since an edge-triggered poll will not report data that was already there.
    pub fn wants_read(&self, p: &Rules) -> bool {
        waypoint("wants_read");
        match self.state {
            State::Open => !self.waiting && self.pending() < p.max_pending,
            State::ProxyHeader | State::Lingering => true,
            _ => false,
        }
    }

    /// True when input has been read up to the client's FIN.
    pub fn peer_closed(&self) -> bool {
        self.peer_eof
    }

    /// True when the connection is done and the socket should be closed.
    pub fn is_closed(&self) -> bool {
        self.state == State::Closed
    }

    /// The bytes to send next (empty when there is nothing to send).
    pub fn poll_output(&self) -> &[u8] {
        waypoint("poll_output");
        &self.output[self.sent..]
    }

    /// Records that the socket took `n` bytes of [`Connection::poll_output`]. Freed room
    /// lets waiting lines be answered, so more output may appear.
    pub fn advance_output(&mut self, p: &Rules, n: usize) {
        waypoint("advance_output");
        debug_assert!(n <= self.pending());
        self.sent += n;
        if self.sent == self.output.len() {
            if self.lent {
                self.output.clear(); // Keep the shared buffer's memory for the next batch.
            } else {
                // Give the memory back: an idle connection should own no heap at all.
                self.output = Vec::new();
            }
            self.sent = 0;
        } else if !self.lent && n > 0 {
            // The socket took part of it: move the rest to the front. Without this, a
            // client that keeps sending while reading slowly, so that no write ever
            // empties the queue, would grow the buffer with every byte ever sent to it
            // (`--max-pending` bounds only the unsent part). Now the buffer holds only
            // unsent bytes, so its capacity stays under 2 × (max-pending + one reply).
            // (A lent buffer needs none of this: it goes back at the end of the visit.)
            self.output.drain(..self.sent);
            self.sent = 0;
        }
        // Only a connection that is still answering may answer its waiting lines: after an
        // error (Closed) or an error message (Flushing) the rest of the input is dropped.
        if self.is_answering() && (self.waiting || self.state == State::Finishing) {
            self.answer_buffered(p);
        }
        self.check_flushed();
    }

    /// Lends the connection `shared`, an empty buffer, to build its replies in during
    /// one visit of the reactor, if it has no output of its own pending (otherwise new
    /// replies must queue behind that output, and `shared` stays where it is). Every
    /// `lend_output` must be followed by a [`Connection::return_output`].
    pub fn lend_output(&mut self, shared: &mut Vec<u8>) {
        waypoint("lend_output");
        debug_assert!(shared.is_empty() && !self.lent);
        if self.output.capacity() == 0 {
            std::mem::swap(&mut self.output, shared);
            self.lent = true;
        }
    }

    /// Ends the visit [`Connection::lend_output`] started: puts the shared buffer back
    /// into `shared`, empty, after moving whatever the socket did not take into a buffer
    /// that the connection owns.
    pub fn return_output(&mut self, shared: &mut Vec<u8>) {
        waypoint("return_output");
        if !self.lent {
            return;
        }
        self.lent = false;
        let unsent = self.output[self.sent..].to_vec();
        self.sent = 0;
        *shared = std::mem::replace(&mut self.output, unsent);
        shared.clear();
    }

    /// Feeds bytes the socket delivered.
    pub fn handle_input(&mut self, p: &Rules, data: &[u8]) {
        waypoint("handle_input");
        match self.state {
            State::Open => {}
            State::ProxyHeader => return self.handle_proxy_header(p, data),
            // We are on our way out: input after that point is read only to be dropped.
            _ => return,
        }
        self.take_input(p, data);
        self.check_flushed();
    }

    /// Takes `data` down the layers once: the telnet filter splits it into data, line
    /// erasures and negotiation answers, in stream order; [`Connection::feed`] frames the
    /// data and queues the replies. Once a line is too long, the rest is dropped.
    fn take_input(&mut self, p: &Rules, data: &[u8]) {
        waypoint("take_input");
        let mut at = 0;
        while self.is_answering() {
            // While lines wait for room, the filter gives out data only, and keeps the
            // rest until they are answered (see `answer_buffered`).
            let Some(event) = self.telnet.next_event(data, &mut at, self.waiting) else {
                break;
            };
            match event {
                telnet::Event::Data(bytes) => self.feed(p, bytes),
                telnet::Event::EraseLine => self.erase_partial_line(),
                // Negotiation answers are queued whatever the room, after the replies to
                // the lines before them: they are few and small (one per option, see the
                // telnet module), and the client may show nothing until it has them.
                telnet::Event::Answer(bytes) => self.output.extend_from_slice(&bytes),
            }
        }
    }

    /// The client's FIN arrived (a read returned 0).
    pub fn handle_read_closed(&mut self, p: &Rules) {
        waypoint("handle_read_closed");
        self.peer_eof = true;
        match self.state {
            State::Open => self.finish_input(p, CloseReason::ClientClosed),
            // A proxy's plain TCP health check connects and closes without a header.
            State::ProxyHeader => self.refuse_proxy_header("no header before EOF"),
            State::Lingering => self.set_state(State::Closed),
            _ => {}
        }
    }

    /// The server is shutting down. The reactor has read everything the client already
    /// sent; we answer it all (and the final fragment) and then close.
    pub fn handle_shutdown(&mut self, p: &Rules) {
        waypoint("handle_shutdown");
        match self.state {
            State::Open => self.finish_input(p, CloseReason::Shutdown),
            // No line can have been sent yet: nothing to answer.
            State::ProxyHeader => {
                self.discard_input();
                self.reason = Some(CloseReason::Shutdown);
                self.set_state(State::Flushing);
                self.check_flushed();
            }
            _ => {}
        }
    }

    /// When the connection next needs to be told the time, if ever (the reactor arms a
    /// timer for it and calls [`Connection::handle_timeout`] then).
    pub fn poll_timeout(&self) -> Option<Tick> {
        self.deadline.min(self.send_deadline).get()
    }

    /// Bytes moved between the socket and this connection at `now` (or it was just
    /// accepted). What that means for the deadline is ours to decide: while open (or
    /// finishing) it pushes the idle timeout back; the PROXY header's clock starts at
    /// the first call and is never pushed back; a lingering connection keeps its short
    /// linger whatever the client sends.
    pub fn handle_activity(&mut self, p: &Rules, now: Tick) {
        waypoint("handle_activity");
        match self.state {
            State::ProxyHeader if self.deadline == Tick::NEVER => {
                self.deadline = now.after(p.proxy_header_timeout);
            }
            State::Open | State::Finishing | State::Flushing => {
                self.deadline = now.after_opt(p.idle_timeout);
            }
            State::ProxyHeader | State::Lingering | State::Closed => {}
        }
    }

    /// The reactor's visit ended at `now`; `wrote` says whether the socket took any of
    /// our output. Pending output starts (or, with progress, restarts) the send clock;
    /// nothing pending stops it.
    pub fn handle_output_progress(&mut self, p: &Rules, now: Tick, wrote: bool) {
        self.send_deadline = if self.pending() == 0 || self.state == State::Closed {
            Tick::NEVER
        } else if wrote || self.send_deadline == Tick::NEVER {
            now.after_opt(p.send_timeout)
        } else {
            self.send_deadline
        };
    }

    /// The reactor refuses this client for a reason of its own (`--max-per-ip` once a
    /// PROXY header named it, `--max-memory`): `message` is queued after what is already
    /// pending, the rest of the input is dropped, and the connection closes once the
    /// output is out.
    pub fn refuse(&mut self, message: &[u8], reason: CloseReason) {
        if matches!(self.state, State::Lingering | State::Closed) {
            return;
        }
        self.discard_input();
        self.output.extend_from_slice(message);
        self.reason = Some(reason);
        self.set_state(State::Flushing);
    }

    /// The reactor sent our FIN at `now` (we are [`State::Lingering`]): the client has
    /// [`Rules::linger`] to send its own.
    pub fn handle_fin_sent(&mut self, p: &Rules, now: Tick) {
        waypoint("handle_fin_sent");
        self.deadline = self.deadline.min(now.after(p.linger));
    }

    /// The clock says `now`. If our deadline has passed ([`Tick::has_passed`]), act on
    /// it: nothing was read or written for the idle timeout (or the PROXY header did
    /// not come, or, while lingering, the client never sent its FIN). Before that (a
    /// timer armed for an earlier deadline that activity has since pushed back) this
    /// does nothing.
    pub fn handle_timeout(&mut self, p: &Rules, now: Tick) {
        if self.send_deadline.has_passed(now) && self.pending() > 0 {
            // The client has not taken a byte of its replies for the send timeout. It
            // does not read, so there is no one to tell why.
            self.send_deadline = Tick::NEVER;
            self.reason = Some(CloseReason::SendTimeout);
            self.set_state(State::Closed);
            return;
        }
        if !self.deadline.has_passed(now) {
            return;
        }
        // Whatever happens next gets a fresh deadline, so that a client that does not
        // take even its error message cannot hold the connection for ever.
        self.deadline = now.after_opt(p.idle_timeout);
        match self.state {
            // The header did not come in time: it is missing.
            State::ProxyHeader => self.refuse_proxy_header("no header in time"),
            State::Open => {
                self.discard_input();
                self.output.extend_from_slice(ERR_IDLE_TIMEOUT);
                self.reason = Some(CloseReason::IdleTimeout);
                self.set_state(State::Flushing);
            }
            // On the way out and stuck: the client is not taking its replies.
            State::Finishing | State::Flushing => {
                self.reason = Some(CloseReason::IdleTimeout);
                self.set_state(State::Closed);
            }
            // Everything was sent; the missing FIN changes nothing for the client.
            State::Lingering => self.set_state(State::Closed),
            State::Closed => {}
        }
    }

    /// The shutdown's drain timeout passed: close now, whatever is left unsent.
    pub fn handle_drain_timeout(&mut self) {
        match self.state {
            State::Closed => {}
            // Lingering clients already have every reply: their reason stays `Shutdown`.
            State::Lingering => self.set_state(State::Closed),
            _ => {
                self.reason = Some(CloseReason::DrainTimeout);
                self.set_state(State::Closed);
            }
        }
    }

    /// The socket failed (reset, or another I/O error): nothing more can be sent.
    pub fn handle_error(&mut self) {
        self.reason = Some(CloseReason::Error);
        self.set_state(State::Closed);
    }

    /// Collects the PROXY header; once complete, greets the client and treats the bytes
    /// after the header as ordinary input.
    fn handle_proxy_header(&mut self, p: &Rules, data: &[u8]) {
        self.push_input(p, data);
        match proxy::parse(&self.input) {
            proxy::Parse::Incomplete => {}
            proxy::Parse::Invalid(why) => self.refuse_proxy_header(why),
            proxy::Parse::Done { source, len } => {
                self.proxied = Some(Box::new(source));
                let input = std::mem::take(&mut self.input);
                self.output.extend_from_slice(&p.banner);
                self.set_state(State::Open);
                self.handle_input(p, &input[len..]);
            }
        }
    }

    /// A missing or malformed PROXY header: say so and close.
    fn refuse_proxy_header(&mut self, why: &str) {
        log::debug!("bad PROXY header: {why}");
        self.discard_input();
        self.output.extend_from_slice(ERR_BAD_PROXY_HEADER);
        self.reason = Some(CloseReason::BadProxyHeader);
        self.set_state(State::Flushing);
        self.check_flushed();
    }

    /// Reply bytes waiting for the socket.
    fn pending(&self) -> usize {
        self.output.len() - self.sent
    }

    /// Is the connection still answering what it reads? (`Finishing` answers what it
    /// read before the end of input.)
    fn is_answering(&self) -> bool {
        matches!(self.state, State::Open | State::Finishing)
    }

    /// Appends received bytes to `input`, growing it by doubling but never past what the
    /// limits allow: a partial line (`--max-line` + its newline) plus one read. Plain
    /// doubling could reach about twice that; this keeps the documented bound exact.
    fn push_input(&mut self, p: &Rules, bytes: &[u8]) {
        let needed = self.input.len() + bytes.len();
        if needed > self.input.capacity() {
            let limit = (p.max_line + 1 + READ_SIZE).max(needed);
            let target = (2 * self.input.capacity()).clamp(needed, limit);
            self.input.reserve_exact(target - self.input.len());
        }
        self.input.extend_from_slice(bytes);
    }

    /// Can a reply of `len` bytes be queued now?
    fn has_room(&self, p: &Rules, len: usize) -> bool {
        waypoint("has_room");
        let pending = self.pending();
        pending == 0 || pending + len <= p.max_pending
    }

    /// Takes new plain input (after telnet filtering) and answers every line it completes.
    fn feed(&mut self, p: &Rules, mut data: &[u8]) {
        waypoint("feed");
        if !self.is_answering() || data.is_empty() {
            return;
        }
        if self.waiting {
            // No room for replies: keep the bytes in order behind the waiting lines.
            self.push_input(p, data);
            return;
        }
        if p.mode == Mode::Raw {
            // With nothing waiting, raw mode has nothing buffered: echo what fits straight
            // from `data` and keep only the rest.
            let used = self.answer_raw(p, data);
            self.push_input(p, &data[used..]);
            self.waiting = !self.input.is_empty();
            return;
        }
        if !self.input.is_empty() {
            // A partial line is buffered: `input` holds at most that, so the next `\n` can
            // only be in `data`. We never rescan the partial line, so a line trickling in
            // one byte at a time costs O(n), not O(n²).
            let Some(first) = line::line_len(data) else {
                if self.input.len() + data.len() > p.max_line {
                    return self.fail_line_too_long();
                }
                return self.push_input(p, data);
            };
            // Complete the line in `input` and answer it like any other.
            self.push_input(p, &data[..first]);
            let line = std::mem::take(&mut self.input);
            let used = self.answer_lines(p, &line);
            if !self.is_answering() {
                return; // The line was too long.
            }
            if used == 0 {
                // No room for its reply: it waits, and so does everything after it.
                self.input = line;
                self.push_input(p, &data[first..]);
                return;
            }
            data = &data[first..];
        }
        // The usual case: nothing is buffered, so every line is in `data`.
        let used = self.answer_lines(p, data);
        if self.is_answering() {
            self.keep_partial_line(p, &data[used..]);
        }
    }

    /// Keeps the bytes of a partial line in `input`. When `input` is empty we give it room
    /// for the end of a short line too: completing the line in `input` then costs no
    /// second allocation (and the usual line is short).
    fn keep_partial_line(&mut self, p: &Rules, partial: &[u8]) {
        waypoint("keep_partial_line");
        if partial.is_empty() {
            return;
        }
        if self.input.capacity() == 0 {
            // Within the memory bound, like every growth of `input` (see `push_input`).
            let limit = p.max_line + 1 + READ_SIZE;
            self.input
                .reserve_exact((partial.len() + PARTIAL_ROOM).min(limit.max(partial.len())));
        }
        self.push_input(p, partial);
    }

    /// Answers what `input` holds, as far as output room allows.
    fn answer_buffered(&mut self, p: &Rules) {
        waypoint("answer_buffered");
        let input = std::mem::take(&mut self.input);
        let used = match p.mode {
            Mode::Line => self.answer_lines(p, &input),
            Mode::Raw => {
                let used = self.answer_raw(p, &input);
                self.waiting = used < input.len();
                used
            }
        };
        if self.is_answering() {
            let rest = &input[used..];
            if used == input.len() {
                // Give the memory back as soon as nothing is waiting.
            } else if used == 0 {
                self.input = input;
            } else {
                self.input = rest.to_vec();
            }
        }
        if self.is_answering() && !self.waiting {
            // The lines that waited are answered: the input the telnet filter kept while
            // they did goes on (and may fill the room again).
            let paused = self.telnet.take_paused();
            if !paused.is_empty() {
                self.take_input(p, &paused);
            }
        }
        if self.state == State::Finishing && !self.waiting {
            self.answer_final_fragment(p);
        }
    }

    /// Answers complete lines from `buf` while there is room; returns the bytes used, and
    /// sets `waiting` when a complete line is left waiting for room. A partial line at
    /// the end is left for the caller (unless it is already too long).
    ///
    /// Each line takes the plain steps: find its end ([`line::line_len`]), check its
    /// length against `--max-line` and its reply against the room
    /// ([`Connection::has_room`]), queue the reply ([`line::push_reply`]). Before them,
    /// the tuned path ([`fast::push_replies`]) answers every line that needs no decision
    /// (within both limits, no telnet escaping): on the usual read, all of them. It stops
    /// at a line that does, and the plain steps decide that one.
    fn answer_lines(&mut self, p: &Rules, buf: &[u8]) -> usize {
        waypoint("answer_lines");
        let telnet = self.telnet.is_decoding();
        let prefix = fast::Prefix::new(&p.prefix);
        let mut used = 0;
        loop {
            if !telnet {
                let limits = fast::Limits {
                    max_line: p.max_line,
                    // What `has_room` allows when something is pending.
                    max_out: self.sent + p.max_pending,
                };
                let (n, lines) =
                    fast::push_replies(&mut self.output, &prefix, &buf[used..], limits);
                used += n;
                self.lines += lines;
            }
            let rest = &buf[used..];
            if rest.is_empty() {
                break; // (The usual end: no call to find nothing.)
            }
            let Some(len) = line::line_len(rest) else {
                break;
            };
            if len - 1 > p.max_line {
                self.fail_line_too_long();
                return buf.len();
            }
            let reply = line::escaped_reply_len(&p.prefix, &rest[..len], telnet);
            if !self.has_room(p, reply) {
                self.waiting = true;
                return used;
            }
            line::push_reply(&mut self.output, &p.prefix, &rest[..len], telnet);
            self.lines += 1;
            used += len;
        }
        // The rest is a partial line: too long already if it is over the limit.
        if buf.len() - used > p.max_line {
            self.fail_line_too_long();
            return buf.len();
        }
        self.waiting = false;
        used
    }

    /// Raw mode: echo as much of `buf` as fits; returns the bytes used.
    fn answer_raw(&mut self, p: &Rules, buf: &[u8]) -> usize {
        let room = if self.pending() == 0 {
            p.max_pending
        } else {
            p.max_pending.saturating_sub(self.pending())
        };
        let n = room.min(buf.len());
        if n > 0 {
            self.output.extend_from_slice(&buf[..n]);
            self.lines += 1;
        }
        n
    }

    /// Input has ended: answer what is buffered, then flush.
    fn finish_input(&mut self, p: &Rules, reason: CloseReason) {
        waypoint("finish_input");
        self.reason = Some(reason);
        self.set_state(State::Finishing);
        self.answer_buffered(p);
        self.check_flushed();
    }

    /// In `Finishing` with no complete line left: answer the unterminated fragment, if
    /// any, with no newline added ("nothing received is left unanswered").
    fn answer_final_fragment(&mut self, p: &Rules) {
        waypoint("answer_final_fragment");
        if let Some(iac) = self.telnet.end_of_input() {
            // An IAC that ended the input starts no command: it is data.
            self.feed(p, iac);
            if self.state != State::Finishing {
                return; // It made the line too long.
            }
        }
        if p.mode == Mode::Line && !self.input.is_empty() {
            let telnet = self.telnet.is_decoding();
            let reply = line::escaped_reply_len(&p.prefix, &self.input, telnet);
            if !self.has_room(p, reply) {
                self.waiting = true;
                return;
            }
            let fragment = std::mem::take(&mut self.input);
            line::push_reply(&mut self.output, &p.prefix, &fragment, telnet);
            self.lines += 1;
        }
        self.set_state(State::Flushing);
    }

    /// Telnet IP/AO/BRK: drop the partial line (complete lines stay answered or queued).
    fn erase_partial_line(&mut self) {
        let keep = line::complete_len(&self.input);
        self.input.truncate(keep);
        if self.input.is_empty() {
            self.input = Vec::new();
        }
    }

    /// A line is over the limit: earlier lines are already answered (or queued); we say
    /// why, stop reading, and close once the output is out.
    fn fail_line_too_long(&mut self) {
        self.discard_input();
        // The error goes after everything already queued, whatever the room: the client
        // must learn why it is being closed, and the message is tiny.
        self.output.extend_from_slice(ERR_LINE_TOO_LONG);
        self.reason = Some(CloseReason::LineTooLong);
        self.set_state(State::Flushing);
    }

    /// Drops unanswered input (we are closing for a reason of our own).
    fn discard_input(&mut self) {
        self.input = Vec::new();
        self.waiting = false;
    }

    /// In `Flushing` with nothing left to send: close, or linger for the client's FIN.
    fn check_flushed(&mut self) {
        waypoint("check_flushed");
        if self.state == State::Flushing && self.pending() == 0 {
            let next = if self.peer_eof {
                State::Closed
            } else {
                State::Lingering
            };
            self.set_state(next);
        }
    }

    /// Every transition goes through here, so a trace log shows the whole life.
    fn set_state(&mut self, next: State) {
        debug_assert!(
            self.state != State::Closed || next == State::Closed,
            "Closed is final (asked for {next})"
        );
        if self.state != next {
            log::trace!("connection state {} => {}", self.state, next);
            self.state = next;
        }
    }
}

// Saving and loading a connection for an upgrade in place.
mod state;

#[cfg(test)]
mod tests;
