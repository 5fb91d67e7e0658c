//! One connection, driven by one poll loop: the tutorial's client.
//!
//! Both small modes live here, because they differ only in where outgoing
//! bytes come from:
//!
//! - **one-shot** (`--send TEXT`): the bytes are known up front;
//! - **interactive**: the bytes come from stdin, as they arrive (see
//!   [`super::stdin`] for how stdin joins the loop without threads).
//!
//! Either way the loop is the same as the server's: wait for readiness, then
//! read the socket until `WouldBlock` (printing what arrives), write pending
//! bytes until `WouldBlock` or done. When the input is finished and sent, we
//! *half-close* (shut down our sending side) so the server sees end of input
//! while we keep reading its answers, and we stop when the server closes.
//!
//! stdout is written with ordinary blocking writes: if whoever reads our
//! output is slow, we wait for them, which is the behaviour a pipe expects.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Poll, Token};

use super::connect::{self, describe, interrupted, would_block, Narrator};
use super::stdin::{Stdin, StdinRead};
use super::Fatal;

/// Everything the one-shot and interactive modes need to know.
#[derive(Debug, Clone)]
pub struct SessionOptions {
    /// Host name or address to connect to.
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// `Some(bytes)` for one-shot mode (escapes already decoded), `None` to
    /// forward stdin.
    pub send: Option<Vec<u8>>,
    /// Narrate the steps on stderr.
    pub verbose: bool,
    /// Give up connecting to one address after this long.
    pub connect_timeout: Option<Duration>,
    /// Stop after this long without hearing from the server.
    pub timeout: Option<Duration>,
}

const SOCKET: Token = Token(0);
const STDIN: Token = Token(1);

/// We stop reading stdin while this much is still waiting to be sent, so a
/// fast producer cannot make us buffer without bound.
const MAX_PENDING: usize = 256 * 1024;

/// Where the bytes we send come from.
#[derive(Debug)]
enum Input {
    /// One-shot: everything was handed over at the start.
    Text,
    /// Interactive: read as it arrives.
    Stdin(Stdin),
}

/// How a session ended without a runtime error.
enum Ended {
    /// The server closed the connection.
    ServerClosed,
    /// `--timeout` passed without a byte from the server.
    Silence,
}

/// The state of our one connection.
struct Session {
    stream: TcpStream,
    peer: SocketAddr,
    input: Input,
    /// Bytes not yet accepted by the socket.
    pending: Vec<u8>,
    /// Whether we have shut down our sending side.
    half_closed: bool,
    /// A send failed (the server went away); we keep reading what it said.
    send_error: Option<io::Error>,
    sent: u64,
    received: u64,
    narrator: Narrator,
}

/// Runs one-shot or interactive mode to the end.
pub fn run(opts: &SessionOptions) -> Result<(), Fatal> {
    let narrator = Narrator {
        verbose: opts.verbose,
    };
    let addrs = connect::resolve(&opts.host, opts.port)?;
    let list: Vec<String> = addrs.iter().map(|a| a.to_string()).collect();
    narrator.say(format_args!(
        "resolved {} to {}",
        opts.host,
        list.join(", ")
    ));

    let mut poll = Poll::new().map_err(|e| Fatal(format!("poll: {}", describe(&e))))?;
    let stream = connect::connect_any(&mut poll, SOCKET, &addrs, opts.connect_timeout, narrator)?;
    let peer = stream.peer_addr().unwrap_or(addrs[0]);
    let (input, pending) = match &opts.send {
        Some(text) => (Input::Text, text.clone()),
        None => (
            Input::Stdin(Stdin::open(poll.registry(), STDIN)),
            Vec::new(),
        ),
    };
    let mut session = Session {
        stream,
        peer,
        input,
        pending,
        half_closed: false,
        send_error: None,
        sent: 0,
        received: 0,
        narrator,
    };
    let ended = session.run_loop(&mut poll, opts.timeout)?;
    session.finish(ended, opts.timeout)
}

impl Session {
    /// The readiness loop. Returns how it ended, or the first fatal error.
    fn run_loop(&mut self, poll: &mut Poll, timeout: Option<Duration>) -> Result<Ended, Fatal> {
        let mut events = Events::with_capacity(16);
        let mut last_heard = Instant::now();
        // The socket was registered while connecting and is writable now, so
        // we start by sending instead of waiting for an event.
        let mut writable = true;
        loop {
            self.pump_input(poll)?;
            if writable {
                writable = self.send_pending()?;
            }
            let silence_left = timeout.map(|t| t.saturating_sub(last_heard.elapsed()));
            if silence_left == Some(Duration::ZERO) {
                return Ok(Ended::Silence);
            }
            let wait = if self.can_read_stdin_now(writable) {
                Some(Duration::ZERO)
            } else {
                silence_left
            };
            match poll.poll(&mut events, wait) {
                Ok(()) => {}
                Err(e) if interrupted(&e) => continue,
                Err(e) => return Err(Fatal(format!("poll: {}", describe(&e)))),
            }
            for event in events.iter() {
                match event.token() {
                    SOCKET => {
                        if event.is_writable() {
                            writable = true;
                        }
                        let readable =
                            event.is_readable() || event.is_read_closed() || event.is_error();
                        if readable && self.receive(&mut last_heard)? {
                            return Ok(Ended::ServerClosed);
                        }
                    }
                    STDIN => {
                        if let Input::Stdin(stdin) = &mut self.input {
                            stdin.on_event();
                        }
                    }
                    _ => {}
                }
            }
        }
    }

    /// Whether the next turn can read stdin without waiting: then `poll`
    /// must not sleep, since an always-ready stdin sends no events. We also
    /// need room for what it gives us, and a way to move it on (a writable
    /// socket, or nothing queued yet).
    fn can_read_stdin_now(&self, writable: bool) -> bool {
        let stdin_ready = matches!(&self.input, Input::Stdin(stdin) if stdin.is_ready());
        let room = self.pending.len() < MAX_PENDING && self.send_error.is_none();
        stdin_ready && room && (writable || self.pending.is_empty())
    }

    /// Moves what stdin has into `pending`, at most one read per turn (see
    /// [`super::stdin`] for why one), and only while there is room.
    fn pump_input(&mut self, poll: &Poll) -> Result<(), Fatal> {
        let Input::Stdin(stdin) = &mut self.input else {
            return Ok(());
        };
        if self.pending.len() >= MAX_PENDING || self.send_error.is_some() {
            return Ok(());
        }
        match stdin.read_into(poll.registry(), &mut self.pending) {
            Ok(StdinRead::Eof) => self.narrator.say("end of input (stdin)"),
            Ok(StdinRead::Data(_) | StdinRead::NotReady) => {}
            Err(e) => return Err(Fatal(format!("read stdin: {}", describe(&e)))),
        }
        Ok(())
    }

    /// Whether all our input has been read (it may not be sent yet).
    fn input_done(&self) -> bool {
        match &self.input {
            Input::Text => true,
            Input::Stdin(stdin) => stdin.at_eof(),
        }
    }

    /// Writes pending bytes until done or `WouldBlock`, then half-closes if
    /// the input is over. Returns whether the socket may still be writable.
    fn send_pending(&mut self) -> Result<bool, Fatal> {
        let mut written = 0;
        let mut writable = true;
        while written < self.pending.len() && self.send_error.is_none() {
            match self.stream.write(&self.pending[written..]) {
                Ok(n) => written += n,
                Err(e) if would_block(&e) => {
                    writable = false;
                    break;
                }
                Err(e) if interrupted(&e) => {}
                // The server is gone for writing (it may have said why);
                // stop sending but keep reading until it closes.
                Err(e) => self.send_error = Some(e),
            }
        }
        self.pending.drain(..written);
        if written > 0 {
            self.sent += written as u64;
            self.narrator.say(format_args!("sent {written} bytes"));
        }
        if self.input_done() && self.pending.is_empty() && !self.half_closed {
            self.half_close();
        }
        Ok(writable)
    }

    /// Tells the server we will send nothing more (TCP FIN), while we keep
    /// reading: this is how it knows to answer the last line and close.
    fn half_close(&mut self) {
        self.half_closed = true;
        match self.stream.shutdown(Shutdown::Write) {
            Ok(()) => self.narrator.say(format_args!(
                "half-closed our side after sending {} bytes; waiting for the server to close",
                self.sent
            )),
            // Already disconnected: reading will tell us how.
            Err(e) => self
                .narrator
                .say(format_args!("half-close: {}", describe(&e))),
        }
    }

    /// Reads until `WouldBlock`, copying everything to stdout. Returns true
    /// when the server has closed the connection.
    fn receive(&mut self, last_heard: &mut Instant) -> Result<bool, Fatal> {
        let mut buf = [0u8; 16 * 1024];
        let mut stdout = io::stdout().lock();
        let mut got = 0;
        let closed = loop {
            match self.stream.read(&mut buf) {
                Ok(0) => break true,
                Ok(n) => {
                    got += n;
                    if let Err(e) = stdout.write_all(&buf[..n]).and_then(|()| stdout.flush()) {
                        return Err(stdout_error(&e));
                    }
                }
                Err(e) if would_block(&e) => break false,
                Err(e) if interrupted(&e) => {}
                Err(e) => {
                    return Err(Fatal(format!("read from {}: {}", self.peer, describe(&e))));
                }
            }
        };
        if got > 0 {
            *last_heard = Instant::now();
            self.received += got as u64;
            self.narrator.say(format_args!("received {got} bytes"));
        }
        Ok(closed)
    }

    /// Reports how the session ended: `Ok` for a normal end, or the send
    /// error that cut it short.
    fn finish(self, ended: Ended, timeout: Option<Duration>) -> Result<(), Fatal> {
        match ended {
            Ended::ServerClosed => self.narrator.say(format_args!(
                "server closed the connection; received {} bytes in all",
                self.received
            )),
            Ended::Silence => self.narrator.say(format_args!(
                "no data from the server for {} s; closing (received {} bytes in all)",
                timeout.unwrap_or_default().as_secs_f64(),
                self.received
            )),
        }
        match self.send_error {
            Some(e) => Err(Fatal(format!("write to {}: {}", self.peer, describe(&e)))),
            None => Ok(()),
        }
    }
}

/// An error writing to stdout (for instance `Broken pipe` when the reader of
/// a pipe went away): one line, like any other runtime error.
fn stdout_error(e: &io::Error) -> Fatal {
    Fatal(format!("write to stdout: {}", describe(e)))
}
