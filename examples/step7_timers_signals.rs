//! Step 7: time and signals. Step 6 waits forever: a silent client holds its slot for
//! good, and SIGTERM kills every conversation mid-line. Here each `Conn` owns a deadline
//! (`poll_timeout`, `handle_timeout`); the loop keeps the deadlines in order and sleeps in
//! `poll` until the nearest one (none: no wakeups at all while idle). SIGTERM comes as one
//! more event (signal-hook-mio) and drains: stop accepting, answer what each client sent,
//! close, exit 0. The idle timeout is `IDLE_TIMEOUT` in the environment (seconds; 300).

use mio::{net::TcpListener, net::TcpStream, Events, Interest, Poll, Token};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook_mio::v1_0::Signals;
use slab::Slab;
use std::io::{self, ErrorKind::Interrupted, ErrorKind::WouldBlock, Read, Write};
use std::time::{Duration, Instant};
use std::{collections::BTreeSet, env, error::Error, net::Shutdown};

const BANNER: &[u8] = b"Welcome to the server. Type something and hit enter\n";
const LISTENER: Token = Token(usize::MAX);
const SIGNALS: Token = Token(usize::MAX - 1);
const MAX_LINE: usize = 64 * 1024;
const MAX_PENDING: usize = 64 * 1024;
const READS_PER_VISIT: usize = 16;
/// After SIGTERM, how long the clients get to take their replies.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(PartialEq)]
enum State {
    Open,
    Closing,
    Lingering,
    Done,
}

pub(crate) struct Conn {
    input: Vec<u8>,
    output: Vec<u8>,
    state: State,
    /// When this conversation next needs the clock; it is told the time, never reads it.
    deadline: Instant,
    idle: Duration,
}

impl Conn {
    pub(crate) fn new(now: Instant, idle: Duration) -> Conn {
        let (input, output, state) = (Vec::new(), BANNER.to_vec(), State::Open);
        Conn { input, output, state, deadline: now + idle, idle }
    }

    pub(crate) fn handle_input(&mut self, bytes: &[u8], now: Instant) {
        self.handle_activity(now);
        match self.state {
            State::Open if bytes.is_empty() => self.end_input(State::Done, b""),
            State::Open => self.answer_lines(bytes),
            _ if bytes.is_empty() => self.state = State::Done,
            _ => {}
        }
    }

    /// Bytes moved: the idle deadline moves on, but not once we end the conversation (a
    /// client cannot keep it alive by talking).
    fn handle_activity(&mut self, now: Instant) {
        if !matches!(self.state, State::Closing | State::Lingering) {
            self.deadline = now + self.idle;
        }
    }

    pub(crate) fn poll_timeout(&self) -> Instant {
        self.deadline
    }

    /// A passed deadline ends the conversation with `ERR idle timeout`; a second one gives
    /// up on a client that does not take it.
    pub(crate) fn handle_timeout(&mut self, now: Instant) {
        if now < self.deadline {
        } else if self.state == State::Open {
            self.end_input(State::Closing, b"ERR idle timeout\n");
            self.deadline = now + self.idle;
        } else {
            (self.output, self.state) = (Vec::new(), State::Done);
        }
    }

    /// SIGTERM, once what the client sent is read: its input ends as at its FIN, but we
    /// close first.
    pub(crate) fn handle_shutdown(&mut self) {
        if self.state == State::Open {
            self.end_input(State::Closing, b"");
        }
    }

    pub(crate) fn wants_read(&self) -> bool {
        let open = self.state == State::Open && self.output.len() < MAX_PENDING;
        open || matches!(self.state, State::Closing | State::Lingering)
    }

    pub(crate) fn poll_output(&self) -> &[u8] {
        &self.output
    }

    pub(crate) fn advance_output(&mut self, sent: usize, now: Instant) {
        self.output.drain(..sent);
        self.handle_activity(now);
    }

    pub(crate) fn poll_fin(&mut self) -> bool {
        let due = self.state == State::Closing && self.output.is_empty();
        if due {
            self.state = State::Lingering;
        }
        due
    }

    pub(crate) fn is_finished(&self) -> bool {
        self.state == State::Done && self.output.is_empty()
    }

    fn answer_lines(&mut self, bytes: &[u8]) {
        self.input.extend_from_slice(bytes);
        let complete = self.input.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        let lines: Vec<u8> = self.input.drain(..complete).collect();
        for line in lines.split_inclusive(|&b| b == b'\n') {
            if line.len() > MAX_LINE + 1 {
                return self.end_input(State::Closing, b"ERR line too long\n");
            }
            reply(&mut self.output, line);
        }
        if self.input.len() > MAX_LINE {
            self.end_input(State::Closing, b"ERR line too long\n");
        }
    }

    /// No more input: a fragment left is answered, unless we end with an error.
    fn end_input(&mut self, next: State, error: &[u8]) {
        if error.is_empty() && !self.input.is_empty() {
            reply(&mut self.output, &self.input);
        }
        self.output.extend_from_slice(error);
        (self.input, self.state) = (Vec::new(), next);
    }
}

fn reply(output: &mut Vec<u8>, line: &[u8]) {
    output.extend_from_slice(b"OK...");
    output.extend_from_slice(line);
}

struct Client {
    stream: TcpStream,
    can_read: bool,
    conn: Conn,
    /// The deadline this client is filed under in `timers`.
    filed: Instant,
}

fn main() -> Result<(), Box<dyn Error>> {
    let addr = env::args().nth(1).unwrap_or("127.0.0.1:8888".into()).parse()?;
    let idle = env::var("IDLE_TIMEOUT").map_or(Ok(300.0), |secs| secs.parse())?;
    let idle = Duration::try_from_secs_f64(idle)?;
    let mut listener = TcpListener::bind(addr)?;
    eprintln!("listening on {}", listener.local_addr()?);
    let mut poll = Poll::new()?;
    poll.registry().register(&mut listener, LISTENER, Interest::READABLE)?;
    // The signal handler only writes to a pipe, which the loop polls like a socket.
    let mut signals = Signals::new([SIGINT, SIGTERM])?;
    poll.registry().register(&mut signals, SIGNALS, Interest::READABLE)?;
    let mut listener = Some(listener); // dropped at SIGTERM: new clients are refused
    let (mut clients, mut events) = (Slab::new(), Events::with_capacity(1024));
    let (mut ready, mut owed, mut scratch) = (Vec::new(), Vec::new(), vec![0; 64 * 1024]);
    // Each client's deadline with its key, in order: the first is the next to come. Closed
    // clients leave none, so with no client the loop sleeps for good.
    let (mut timers, mut drain) = (BTreeSet::new(), None);
    loop {
        let next = timers.first().map(|&(at, _)| at).into_iter().chain(drain).min();
        let timeout = next.map(|at: Instant| at.saturating_duration_since(Instant::now()));
        let timeout = if owed.is_empty() { timeout } else { Some(Duration::ZERO) };
        match poll.poll(&mut events, timeout) {
            Err(e) if e.kind() == Interrupted => continue,
            result => result?,
        }
        let now = Instant::now();
        for event in events.iter() {
            match event.token() {
                LISTENER => {
                    let Some(listener) = &listener else { continue };
                    accept_all(listener, &poll, &mut clients, &mut ready, || Conn::new(now, idle));
                }
                SIGNALS if signals.pending().count() == 0 => {}
                SIGNALS if drain.is_some() => return Ok(()), // a second signal: exit now
                SIGNALS => {
                    eprintln!("draining {} clients", clients.len());
                    (listener, drain) = (None, Some(now + DRAIN_TIMEOUT));
                    for (key, client) in clients.iter_mut() {
                        client.can_read = true; // bytes may have come since the last read
                        ready.push(key);
                    }
                }
                Token(key) => {
                    if let Some(client) = clients.get_mut(key) {
                        client.can_read |= event.is_readable();
                        ready.push(key);
                    }
                }
            }
        }
        // The deadlines that came: each conversation decides what its timeout means.
        while let Some(&(at, key)) = timers.first().filter(|&&(at, _)| at <= now) {
            timers.remove(&(at, key));
            clients[key].conn.handle_timeout(now);
            ready.push(key);
        }
        ready.append(&mut owed);
        ready.sort_unstable();
        ready.dedup();
        for key in ready.drain(..) {
            let client = &mut clients[key];
            timers.remove(&(client.filed, key));
            match serve(client, &mut scratch, now, drain.is_some()) {
                Ok(false) => {
                    if client.can_read && client.conn.wants_read() {
                        owed.push(key);
                    }
                    client.filed = client.conn.poll_timeout(); // activity moves it on
                    timers.insert((client.filed, key));
                }
                Ok(true) | Err(_) => {
                    let mut client = clients.remove(key);
                    let _ = poll.registry().deregister(&mut client.stream);
                }
            }
        }
        if drain.is_some_and(|at| clients.is_empty() || now >= at) {
            return Ok(()); // the drain is over, or its time is: exit 0
        }
    }
}

/// Accepts what is queued; each new client is visited this turn, to file its deadline.
fn accept_all(
    listener: &TcpListener,
    poll: &Poll,
    clients: &mut Slab<Client>,
    ready: &mut Vec<usize>,
    new: impl Fn() -> Conn,
) {
    loop {
        let (mut stream, peer) = match listener.accept() {
            Ok(accepted) => accepted,
            Err(e) if e.kind() == WouldBlock => return,
            Err(e) => return eprintln!("accept: {e}"),
        };
        eprintln!("Connected with {peer}");
        let (entry, interest) = (clients.vacant_entry(), Interest::READABLE | Interest::WRITABLE);
        match poll.registry().register(&mut stream, Token(entry.key()), interest) {
            Ok(()) => {
                let conn = new();
                ready.push(entry.key());
                entry.insert(Client { stream, can_read: false, filed: conn.poll_timeout(), conn });
            }
            Err(e) => eprintln!("register: {e}"),
        }
    }
}

/// The loop's part: move bytes between the socket and the `Conn`, and act on its answers.
fn serve(client: &mut Client, scratch: &mut [u8], now: Instant, drain: bool) -> io::Result<bool> {
    send(client, now)?;
    for _ in 0..READS_PER_VISIT {
        if !(client.can_read && client.conn.wants_read()) {
            break;
        }
        match client.stream.read(scratch) {
            Ok(n) => client.conn.handle_input(&scratch[..n], now),
            Err(e) if e.kind() == WouldBlock => client.can_read = false,
            Err(e) => return Err(e),
        }
        send(client, now)?;
    }
    if drain && !client.can_read {
        client.conn.handle_shutdown(); // all it sent before is read: its input ends here
        send(client, now)?;
    }
    if client.conn.poll_fin() {
        client.stream.shutdown(Shutdown::Write)?;
    }
    Ok(client.conn.is_finished())
}

fn send(client: &mut Client, now: Instant) -> io::Result<()> {
    while !client.conn.poll_output().is_empty() {
        match client.stream.write(client.conn.poll_output()) {
            Ok(n) => client.conn.advance_output(n, now),
            Err(e) if e.kind() == WouldBlock => return Ok(()),
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
