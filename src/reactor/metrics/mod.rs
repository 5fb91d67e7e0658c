//! `--metrics ADDR`: Prometheus scrapes `GET /metrics`, served by the same loop.
//!
//! No thread and no timer: the metrics listener is one more source in the loop's `Poll`,
//! and a scrape connection is one more socket in it, read and written edge-triggered like
//! an echo client (read until `WouldBlock`, write until `WouldBlock` or done, registered
//! once for READABLE | WRITABLE). While nobody scrapes, the listener costs one descriptor
//! and no wakeup at all.
//!
//! A scrape lives three steps: read the request head ([`http::parse`]), send the response
//! ([`http::respond`], with the exposition from [`exposition::render`]), then shut down
//! our side and read until the scraper closes, so that unread request bytes cannot turn
//! our close into a reset that destroys the response (the same linger the echo
//! connections do). Then the loop closes it.
//!
//! # Why scrapes have their own slab
//!
//! Scrape connections are kept in their own [`Slots`], not among the echo connections:
//!
//! - `--max-connections`, the idle timeout, the PROXY header and every other per-client
//!   rule are about echo clients. A scrape must not be refused with `ERR server busy`
//!   because echo clients filled the server, and that is exactly when an operator wants
//!   to look.
//! - The echo counters (accepted, closed, lines, bytes) count echo clients only; a
//!   scrape every 15 s must not show up in them.
//! - A scrape is a different state machine (HTTP, not lines); keeping it apart keeps
//!   [`Entry`] and [`transfer`](crate::reactor::io::transfer) about one protocol.
//!
//! Scrapes have their own small limits instead: [`MAX_SCRAPES`] at once (one more gets
//! 503), a request head of at most [`http::MAX_HEAD`] bytes (431), and [`Timings::scrape`](crate::config::Timings::scrape)
//! for the whole exchange. The deadline feeds the loop's alarm only while a scrape is
//! open, so an idle daemon still sleeps.
//!
//! # Tokens
//!
//! Echo connection tokens are slab keys counted up from 0, and the loop's own sources
//! (signals, alarm, upgrade check, listeners) count down from `usize::MAX` (see
//! [`server`](crate::reactor::server)). Metrics take a range in the middle, far from both:
//! the listener is [`LISTENER`], scrape `key` is `SCRAPE_BASE + key`.

pub mod exposition;
pub mod http;

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use log::{debug, info, trace, warn};
use mio::net::{TcpListener, TcpStream};
use mio::{Interest, Registry, Token};

use crate::io_errors::{accept_aborted, interrupted, would_block};
use crate::reactor::io::Entry;
use crate::reactor::listen;
use crate::reactor::server::Server;
use crate::reactor::slots::Slots;
use exposition::Snapshot;
use http::Answer;

/// The metrics listener's token: the middle of the token space (see the module docs).
pub const LISTENER: Token = Token(usize::MAX / 2);

/// Scrape `key` has token `SCRAPE_BASE + key`.
const SCRAPE_BASE: usize = usize::MAX / 2 + 1;

/// Most scrape connections at once. One Prometheus server holds one at a time; a few
/// servers, a `curl` or two and a health check fit easily.
pub const MAX_SCRAPES: usize = 64;

/// The metrics listener's `listen()` backlog: scrapers come one at a time.
const BACKLOG: u32 = 64;

/// Request bytes we read and drop after the response, at most: a scraper sends none, so
/// past this we close at once rather than read for someone else's benefit.
const LINGER_LIMIT: usize = 64 * 1024;

/// True for the tokens of the metrics listener and its scrape connections.
pub fn owns(token: Token) -> bool {
    (LISTENER.0..SCRAPE_BASE + MAX_SCRAPES).contains(&token.0)
}

/// The metrics listener and its scrape connections.
#[derive(Debug)]
pub struct Metrics {
    /// Where scrapers connect, registered as [`LISTENER`].
    listener: TcpListener,
    /// Open scrape connections; closed ones are removed at the end of the event batch
    /// (see [`Slots`] for why not at once).
    scrapes: Slots<Scrape>,
    /// The earliest scrape deadline, recomputed at the end of every loop turn (scrapes
    /// are only added during the turn, so it is current when the loop next sleeps).
    next_deadline: Option<Instant>,
    /// When the process started, in seconds since the Unix epoch.
    start_time_seconds: u64,
    /// A scrape connection is closed this long after it was accepted, whatever step it
    /// is in ([`Timings::scrape`](crate::config::Timings::scrape)).
    scrape_timeout: Duration,
}

/// Where a scrape connection is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// Reading the request head.
    Request,
    /// Sending the response.
    Response,
    /// Response sent and our FIN out: reading (and dropping) until the scraper's FIN.
    Linger,
    /// Finished or failed: the loop closes it.
    Done,
}

/// One scrape connection.
#[derive(Debug)]
struct Scrape {
    /// The socket, non-blocking, registered once for READABLE | WRITABLE.
    stream: TcpStream,
    /// The scraper's address, for the logs.
    peer: SocketAddr,
    /// Where it is in its life.
    step: Step,
    /// The request head received so far, at most [`http::MAX_HEAD`] bytes.
    request: Vec<u8>,
    /// The response; the bytes from `sent` on are still to be written.
    response: Vec<u8>,
    /// How much of `response` the socket took.
    sent: usize,
    /// Bytes read and dropped while lingering.
    lingered: usize,
    /// When the loop closes it, done or not (`scrape_timeout` after the accept).
    deadline: Instant,
}

impl Metrics {
    /// Binds and registers the metrics listener when `addr` is set (`--metrics`).
    pub fn open(
        addr: Option<SocketAddr>,
        scrape_timeout: Duration,
        registry: &Registry,
    ) -> io::Result<Option<Metrics>> {
        let Some(addr) = addr else {
            return Ok(None);
        };
        let mut listener = listen::listen(addr, BACKLOG, false).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot listen on {addr} for --metrics: {e}"),
            )
        })?;
        registry.register(&mut listener, LISTENER, Interest::READABLE)?;
        let local = listener.local_addr()?;
        info!("metrics: serving http://{local}/metrics");
        let start_time_seconds = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        Ok(Some(Metrics {
            listener,
            scrapes: Slots::new(),
            next_deadline: None,
            start_time_seconds,
            scrape_timeout,
        }))
    }

    /// The new image of an upgrade in place (SIGUSR2): serves on the listener the old
    /// image handed over, keeping the process's start time.
    pub fn adopt(
        mut listener: TcpListener,
        start_time_seconds: u64,
        scrape_timeout: Duration,
        registry: &Registry,
    ) -> io::Result<Metrics> {
        registry.register(&mut listener, LISTENER, Interest::READABLE)?;
        info!("metrics: serving http://{}/metrics", listener.local_addr()?);
        Ok(Metrics {
            listener,
            scrapes: Slots::new(),
            next_deadline: None,
            start_time_seconds,
            scrape_timeout,
        })
    }

    /// The listener, to hand over on an upgrade in place.
    pub fn listener(&self) -> &TcpListener {
        &self.listener
    }

    /// When the process started, in seconds since the Unix epoch.
    pub fn start_time_seconds(&self) -> u64 {
        self.start_time_seconds
    }

    /// When the loop must wake for a scrape's deadline; `None` while no scrape is open.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.next_deadline
    }

    /// The listener is readable: accept every waiting scraper.
    ///
    /// Out of file descriptors we simply stop: unlike an echo client, a scraper that
    /// waits in the queue is taken with the next scraper's connection (a new connection
    /// is a new edge) or times out and retries on its own.
    fn accept_all(&mut self, registry: &Registry, now: Instant) {
        loop {
            match self.listener.accept() {
                Ok((stream, peer)) => self.admit(stream, peer, registry, now),
                Err(e) if would_block(&e) => return,
                Err(e) if interrupted(&e) => {}
                Err(e) if accept_aborted(&e) => debug!("metrics: accept: {e}"),
                Err(e) => {
                    warn!("metrics: accept failed: {e}");
                    return;
                }
            }
        }
    }

    /// Registers a new scrape connection, or answers 503 if there are too many.
    fn admit(
        &mut self,
        mut stream: TcpStream,
        peer: SocketAddr,
        registry: &Registry,
        now: Instant,
    ) {
        if self.scrapes.len() >= MAX_SCRAPES {
            debug!("metrics: refused {peer}: {MAX_SCRAPES} scrapes already open");
            refuse_busy(stream);
            return;
        }
        let key = self.scrapes.vacant_key();
        let token = Token(SCRAPE_BASE + key);
        if let Err(e) =
            registry.register(&mut stream, token, Interest::READABLE | Interest::WRITABLE)
        {
            warn!("metrics: cannot register {peer}: {e}");
            return;
        }
        trace!("metrics: {peer}: registered as token {}", token.0);
        // Nothing to do until it is readable: the request comes first.
        self.scrapes.insert(Scrape {
            stream,
            peer,
            step: Step::Request,
            request: Vec::new(),
            response: Vec::new(),
            sent: 0,
            lingered: 0,
            deadline: now + self.scrape_timeout,
        });
    }
}

/// Over [`MAX_SCRAPES`]: a 503 and close, without a slot. A fresh socket's send buffer is
/// empty, so the short write cannot block; we read once before closing so that a request
/// already here does not turn the close into a reset (as `Server::refuse` does for echo).
fn refuse_busy(mut stream: TcpStream) {
    let mut response = Vec::new();
    http::respond(Answer::Busy, &mut response, |_| {});
    let _ = stream.write(&response);
    let _ = stream.shutdown(Shutdown::Write);
    let _ = stream.read(&mut [0; 1024]);
}

impl Scrape {
    /// Does every step the socket allows now. `exposition` renders the metrics; it is
    /// called at most once, when a `GET`/`HEAD /metrics` head is complete.
    fn drive(&mut self, exposition: impl FnOnce(&mut Vec<u8>)) {
        if self.step == Step::Request {
            self.read_request(exposition);
        }
        if self.step == Step::Response {
            self.write_response();
        }
        if self.step == Step::Linger {
            self.linger();
        }
    }

    /// Reads until the head is complete, too large, or the socket is empty.
    fn read_request(&mut self, exposition: impl FnOnce(&mut Vec<u8>)) {
        let mut buf = [0; 2048];
        loop {
            // Never past MAX_HEAD: `parse` answers HeadTooLarge once we are there.
            let room = (http::MAX_HEAD - self.request.len()).min(buf.len());
            match self.stream.read(&mut buf[..room]) {
                Ok(0) => {
                    debug!("metrics: {} closed before a whole request", self.peer);
                    self.step = Step::Done;
                    return;
                }
                Ok(n) => {
                    self.request.extend_from_slice(&buf[..n]);
                    if let Some(answer) = http::parse(&self.request) {
                        debug!("metrics: {}: {answer:?}", self.peer);
                        http::respond(answer, &mut self.response, exposition);
                        self.request = Vec::new();
                        self.step = Step::Response;
                        return;
                    }
                }
                Err(e) if would_block(&e) => return,
                Err(e) if interrupted(&e) => {}
                Err(e) => return self.fail(&e),
            }
        }
    }

    /// Writes the response until it is all sent or the socket is full; then our FIN.
    fn write_response(&mut self) {
        while self.sent < self.response.len() {
            match self.stream.write(&self.response[self.sent..]) {
                Ok(n) => self.sent += n,
                Err(e) if would_block(&e) => return,
                Err(e) if interrupted(&e) => {}
                Err(e) => return self.fail(&e),
            }
        }
        if let Err(e) = self.stream.shutdown(Shutdown::Write) {
            return self.fail(&e);
        }
        self.response = Vec::new();
        self.step = Step::Linger;
    }

    /// Reads and drops until the scraper's FIN (then done), the socket is empty, or
    /// [`LINGER_LIMIT`] bytes were dropped.
    fn linger(&mut self) {
        let mut buf = [0; 2048];
        while self.lingered <= LINGER_LIMIT {
            match self.stream.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => self.lingered += n,
                Err(e) if would_block(&e) => return,
                Err(e) if interrupted(&e) => {}
                Err(e) => return self.fail(&e),
            }
        }
        self.step = Step::Done;
    }

    /// The socket failed (a reset, usually): nothing more can be done with it.
    fn fail(&mut self, e: &io::Error) {
        debug!("metrics: {}: {e}", self.peer);
        self.step = Step::Done;
    }
}

/// Counts the live echo connections by state, with the bytes they hold.
fn snapshot(conns: &mut Slots<Entry>, max_connections: usize, start: u64) -> Snapshot {
    let mut snapshot = Snapshot {
        max_connections: max_connections as u64,
        log_lines_dropped: crate::logging::dropped_lines(),
        start_time_seconds: start,
        ..Snapshot::default()
    };
    for key in conns.live_keys() {
        if let Some(entry) = conns.get_mut(key) {
            snapshot.count(entry.conn.state(), entry.conn.buffered());
        }
    }
    snapshot
}

/// The loop's side: what `Server::run_once` calls for metrics.
impl Server {
    /// An event for the metrics listener or a scrape connection ([`owns`] said so).
    pub(super) fn metrics_event(&mut self, token: Token) {
        let Some(metrics) = self.metrics.as_mut() else {
            return;
        };
        if token == LISTENER {
            metrics.accept_all(self.poll.registry(), self.now);
            return;
        }
        // `owns` put the token in LISTENER..SCRAPE_BASE + MAX_SCRAPES and it is not the
        // listener, so it is at least SCRAPE_BASE: the subtraction cannot wrap.
        let key = token.0 - SCRAPE_BASE;
        // A retired or vacant key: the scrape closed earlier in this batch.
        let Some(scrape) = metrics.scrapes.get_mut(key) else {
            return;
        };
        let (stats, conns) = (&self.stats, &mut self.conns);
        let (max, start) = (self.max_connections, metrics.start_time_seconds);
        scrape.drive(|out| exposition::render(stats, &snapshot(conns, max, start), out));
        if scrape.step == Step::Done {
            metrics.scrapes.retire(key);
        }
    }

    /// When the loop must wake for a scrape; `None` with metrics off or no scrape open.
    pub(super) fn metrics_deadline(&self) -> Option<Instant> {
        self.metrics.as_ref()?.next_deadline()
    }

    /// End of a loop turn: close the scrapes that are done or past their deadline, and
    /// note the next deadline.
    pub(super) fn metrics_turn(&mut self) {
        let Some(metrics) = self.metrics.as_mut() else {
            return;
        };
        let mut next = None;
        for key in metrics.scrapes.live_keys() {
            let Some(scrape) = metrics.scrapes.get_mut(key) else {
                continue;
            };
            if scrape.deadline <= self.now {
                debug!(
                    "metrics: {}: timed out in step {:?}",
                    scrape.peer, scrape.step
                );
                metrics.scrapes.retire(key);
            } else {
                next = Some(next.map_or(scrape.deadline, |n: Instant| n.min(scrape.deadline)));
            }
        }
        metrics.next_deadline = next;
        let registry = self.poll.registry();
        metrics.scrapes.reap(|_, mut scrape| {
            trace!("metrics: {}: closed", scrape.peer);
            let _ = registry.deregister(&mut scrape.stream);
            // Dropping the stream closes the socket.
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_tokens_sit_between_connections_and_the_loops_own_sources() {
        assert!(owns(LISTENER));
        assert!(owns(Token(SCRAPE_BASE)));
        assert!(owns(Token(SCRAPE_BASE + MAX_SCRAPES - 1)));
        assert!(!owns(Token(SCRAPE_BASE + MAX_SCRAPES)));
        assert!(!owns(Token(1_000_000_000)), "an echo connection's key");
        assert!(!owns(Token(usize::MAX - 4)), "the first echo listener");
    }
}
