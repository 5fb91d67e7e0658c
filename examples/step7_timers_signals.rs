//! Step 7: time and signals. Step 6 waits forever: a silent client holds its slot for
//! good, and SIGTERM kills every conversation mid-line. Here each `Conn` owns a deadline
//! (`poll_timeout`, `handle_timeout`), the loop keeps one heap entry per client and sleeps
//! in `poll` until the nearest live one (none: no wakeups at all while idle), and SIGTERM
//! arrives as one more event (signal-hook-mio) and starts a drain: stop accepting, answer
//! what each client sent, close, exit 0. Run: `step7_timers_signals [ADDR [IDLE_SECS]]`.

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook_mio::v1_0::Signals;
use slab::Slab;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::env;
use std::error::Error;
use std::io::ErrorKind::{Interrupted, WouldBlock};
use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::time::{Duration, Instant};

const BANNER: &[u8] = b"Welcome to the server. Type something and hit enter\n";
const LISTENER: Token = Token(usize::MAX);
const SIGNALS: Token = Token(usize::MAX - 1);
const MAX_LINE: usize = 64 * 1024;
const MAX_PENDING: usize = 64 * 1024;
const READS_PER_VISIT: usize = 16;
/// After SIGTERM, how long the clients get to take their replies.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, PartialEq)]
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
    /// When this conversation next needs the clock; we are told the time, never read it.
    deadline: Instant,
    idle: Duration,
}

impl Conn {
    pub(crate) fn new(now: Instant, idle: Duration) -> Conn {
        let (input, output, state) = (Vec::new(), BANNER.to_vec(), State::Open);
        Conn {
            input,
            output,
            state,
            deadline: now + idle,
            idle,
        }
    }

    pub(crate) fn handle_input(&mut self, bytes: &[u8], now: Instant) {
        self.handle_activity(now);
        match self.state {
            State::Open if bytes.is_empty() => {
                if !self.input.is_empty() {
                    reply(&mut self.output, &self.input);
                }
                (self.input, self.state) = (Vec::new(), State::Done);
            }
            State::Open => {
                self.input.extend_from_slice(bytes);
                self.answer_lines();
            }
            _ if bytes.is_empty() => self.state = State::Done,
            _ => {}
        }
    }

    /// Bytes moved: the idle deadline moves on (not once we end it: a client cannot keep
    /// a closing conversation alive by talking).
    fn handle_activity(&mut self, now: Instant) {
        if !matches!(self.state, State::Closing | State::Lingering) {
            self.deadline = now + self.idle;
        }
    }

    pub(crate) fn poll_timeout(&self) -> Instant {
        self.deadline
    }

    /// The deadline may have moved since it was armed: only a passed one counts.
    pub(crate) fn handle_timeout(&mut self, now: Instant) {
        if now < self.deadline {
        } else if self.state == State::Open {
            self.output.extend_from_slice(b"ERR idle timeout\n");
            (self.input, self.state, self.deadline) = (Vec::new(), State::Closing, now + self.idle);
        } else {
            (self.output, self.state) = (Vec::new(), State::Done); // stuck: we give up
        }
    }

    /// SIGTERM, once we have read what the client sent: input ends, as at its FIN, but
    /// we close first.
    pub(crate) fn handle_shutdown(&mut self) {
        if self.state == State::Open {
            if !self.input.is_empty() {
                reply(&mut self.output, &self.input);
            }
            (self.input, self.state) = (Vec::new(), State::Closing);
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

    fn answer_lines(&mut self) {
        let input = &mut self.input;
        let complete = input.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        let mut too_long = input.len() - complete > MAX_LINE;
        for line in input[..complete].split_inclusive(|&b| b == b'\n') {
            if line.len() > MAX_LINE + 1 {
                too_long = true;
                break;
            }
            reply(&mut self.output, line);
        }
        input.drain(..complete);
        if too_long {
            self.output.extend_from_slice(b"ERR line too long\n");
            (self.input, self.state) = (Vec::new(), State::Closing);
        }
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
    /// The deadline of this client's one live heap entry.
    armed: Option<Instant>,
}

fn main() -> Result<(), Box<dyn Error>> {
    let arg = env::args().nth(1);
    let addr = arg.as_deref().unwrap_or("127.0.0.1:8888").parse()?;
    let idle = Duration::from_secs_f64(env::args().nth(2).as_deref().unwrap_or("300").parse()?);
    let mut listener = Some(TcpListener::bind(addr)?);
    let mut poll = Poll::new()?;
    if let Some(listener) = &mut listener {
        eprintln!("listening on {}", listener.local_addr()?);
        poll.registry()
            .register(listener, LISTENER, Interest::READABLE)?;
    }
    // The handler only writes a byte to a pipe that the loop polls like a socket.
    let mut signals = Signals::new([SIGINT, SIGTERM])?;
    poll.registry()
        .register(&mut signals, SIGNALS, Interest::READABLE)?;
    let mut clients = Slab::new();
    let mut events = Events::with_capacity(1024);
    let mut scratch = vec![0; 64 * 1024];
    let (mut ready, mut owed) = (Vec::new(), Vec::new());
    let mut timers = BinaryHeap::new(); // Reverse((deadline, key)): the nearest on top
    let mut drain: Option<Instant> = None; // set by SIGTERM: when we exit anyway
    loop {
        // An entry whose client closed, or was re-armed earlier, must not wake us.
        while let Some(&Reverse((at, key))) = timers.peek() {
            if clients
                .get(key)
                .is_some_and(|c: &Client| c.armed == Some(at))
            {
                break;
            }
            timers.pop();
        }
        let next = timers
            .peek()
            .map(|&Reverse((at, _))| at)
            .into_iter()
            .chain(drain)
            .min();
        let timeout = next.map(|at| at.saturating_duration_since(Instant::now()));
        let timeout = if owed.is_empty() {
            timeout
        } else {
            Some(Duration::ZERO)
        };
        match poll.poll(&mut events, timeout) {
            Err(e) if e.kind() == Interrupted => continue,
            result => result?,
        }
        let now = Instant::now();
        for event in events.iter() {
            match event.token() {
                LISTENER => {
                    let listener = listener.as_ref().expect("registered while it exists");
                    if let Err(e) = accept_all(listener, &poll, &mut clients, now, idle) {
                        eprintln!("accept: {e}");
                    }
                }
                SIGNALS if signals.pending().count() > 0 && drain.is_some() => return Ok(()),
                SIGNALS => {
                    eprintln!("draining {} clients", clients.len());
                    drain = Some(now + DRAIN_TIMEOUT);
                    listener = None; // closed: new clients are refused
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
        while let Some(&Reverse((at, key))) = timers.peek().filter(|Reverse((at, _))| *at <= now) {
            timers.pop();
            if let Some(client) = clients.get_mut(key).filter(|c| c.armed == Some(at)) {
                client.armed = None;
                client.conn.handle_timeout(now);
                ready.push(key);
            }
        }
        ready.append(&mut owed);
        ready.sort_unstable();
        ready.dedup();
        for key in ready.drain(..) {
            let client = &mut clients[key];
            match serve(client, &mut scratch, now, drain.is_some()) {
                Ok(false) => {
                    if client.can_read && client.conn.wants_read() {
                        owed.push(key);
                    }
                    // Lazy: activity moves deadlines later, and the old entry stays. We push
                    // only an earlier one; a later one is found when the old entry comes due.
                    let at = client.conn.poll_timeout();
                    if client.armed.is_none_or(|armed| at < armed) {
                        (client.armed, ()) = (Some(at), timers.push(Reverse((at, key))));
                    }
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

fn accept_all(
    listener: &TcpListener,
    poll: &Poll,
    clients: &mut Slab<Client>,
    now: Instant,
    idle: Duration,
) -> io::Result<()> {
    loop {
        let (mut stream, peer) = match listener.accept() {
            Ok(accepted) => accepted,
            Err(e) if e.kind() == WouldBlock => return Ok(()),
            Err(e) => return Err(e),
        };
        eprintln!("Connected with {peer}");
        let entry = clients.vacant_entry();
        let interest = Interest::READABLE | Interest::WRITABLE;
        poll.registry()
            .register(&mut stream, Token(entry.key()), interest)?;
        let conn = Conn::new(now, idle);
        entry.insert(Client {
            stream,
            can_read: false,
            conn,
            armed: None,
        });
    }
}

fn serve(
    client: &mut Client,
    scratch: &mut [u8],
    now: Instant,
    draining: bool,
) -> io::Result<bool> {
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
    if draining && !client.can_read {
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
