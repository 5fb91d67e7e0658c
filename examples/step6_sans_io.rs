//! Step 6: socket-free. In step 5 what to say and how to move bytes are tangled: the
//! protocol can be tested only over sockets. Here a `Conn` takes bytes and says what to
//! send and when to close, with no socket, like echod's `src/protocol`; the loop only
//! moves bytes. `tests/ladder.rs` tests `Conn` without a network. (Comments: what is new.)

use mio::{net::TcpListener, net::TcpStream, Events, Interest, Poll, Token};
use slab::Slab;
use std::io::{self, ErrorKind::Interrupted, ErrorKind::WouldBlock, Read, Write};
use std::{env, error::Error, net::Shutdown, time::Duration};

const BANNER: &[u8] = b"Welcome to the server. Type something and hit enter\n";
const LISTENER: Token = Token(usize::MAX);
const MAX_LINE: usize = 64 * 1024;
const MAX_PENDING: usize = 64 * 1024;
const READS_PER_VISIT: usize = 16;

#[derive(PartialEq)]
enum State {
    Open,
    Closing,
    Lingering,
    Done,
}

/// One conversation as a state machine: bytes in; bytes to send and decisions out.
pub(crate) struct Conn {
    input: Vec<u8>,
    output: Vec<u8>,
    state: State,
}

impl Conn {
    pub(crate) fn new() -> Conn {
        Conn { input: Vec::new(), output: BANNER.to_vec(), state: State::Open }
    }

    /// What a read returned; the end of the stream is `&[]`, as `read` says `Ok(0)`.
    pub(crate) fn handle_input(&mut self, bytes: &[u8]) {
        match self.state {
            State::Open if bytes.is_empty() => self.end_input(State::Done, b""),
            State::Open => self.answer_lines(bytes),
            _ if bytes.is_empty() => self.state = State::Done,
            _ => {} // Closing or Lingering: dropped. Done: nothing is read.
        }
    }

    /// Whether the loop should read: the backpressure rule of step 5.
    pub(crate) fn wants_read(&self) -> bool {
        let open = self.state == State::Open && self.output.len() < MAX_PENDING;
        open || matches!(self.state, State::Closing | State::Lingering)
    }

    /// What to send now; then the loop tells us how much the socket took.
    pub(crate) fn poll_output(&self) -> &[u8] {
        &self.output
    }

    pub(crate) fn advance_output(&mut self, sent: usize) {
        self.output.drain(..sent);
    }

    /// True once: when our FIN should follow the last reply.
    pub(crate) fn poll_fin(&mut self) -> bool {
        let due = self.state == State::Closing && self.output.is_empty();
        if due {
            self.state = State::Lingering;
        }
        due
    }

    /// Nothing left to read or send: the loop closes the socket.
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

/// What only the loop needs: the socket and its readiness, around the conversation.
struct Client {
    stream: TcpStream,
    can_read: bool,
    conn: Conn,
}

fn main() -> Result<(), Box<dyn Error>> {
    let addr = env::args().nth(1).unwrap_or("127.0.0.1:8888".into()).parse()?;
    let mut listener = TcpListener::bind(addr)?;
    eprintln!("listening on {}", listener.local_addr()?);
    let mut poll = Poll::new()?;
    poll.registry().register(&mut listener, LISTENER, Interest::READABLE)?;
    let (mut clients, mut events) = (Slab::new(), Events::with_capacity(1024));
    let (mut ready, mut owed, mut scratch) = (Vec::new(), Vec::new(), vec![0; 64 * 1024]);
    loop {
        let timeout = (!owed.is_empty()).then_some(Duration::ZERO);
        match poll.poll(&mut events, timeout) {
            Err(e) if e.kind() == Interrupted => continue,
            result => result?,
        }
        for event in events.iter() {
            match event.token() {
                LISTENER => accept_all(&listener, &poll, &mut clients),
                Token(key) => {
                    if let Some(client) = clients.get_mut(key) {
                        client.can_read |= event.is_readable();
                        ready.push(key);
                    }
                }
            }
        }
        ready.append(&mut owed);
        ready.sort_unstable();
        ready.dedup();
        for key in ready.drain(..) {
            let client = &mut clients[key];
            match serve(client, &mut scratch) {
                Ok(false) if client.can_read && client.conn.wants_read() => owed.push(key),
                Ok(false) => {}
                Ok(true) | Err(_) => {
                    let mut client = clients.remove(key);
                    let _ = poll.registry().deregister(&mut client.stream);
                }
            }
        }
    }
}

fn accept_all(listener: &TcpListener, poll: &Poll, clients: &mut Slab<Client>) {
    loop {
        let (mut stream, peer) = match listener.accept() {
            Ok(accepted) => accepted,
            Err(e) if e.kind() == WouldBlock => return,
            Err(e) => return eprintln!("accept: {e}"),
        };
        eprintln!("Connected with {peer}");
        let (entry, interest) = (clients.vacant_entry(), Interest::READABLE | Interest::WRITABLE);
        match poll.registry().register(&mut stream, Token(entry.key()), interest) {
            Ok(()) => _ = entry.insert(Client { stream, can_read: false, conn: Conn::new() }),
            Err(e) => eprintln!("register: {e}"),
        }
    }
}

/// The loop's part: move bytes between the socket and the `Conn`, and act on its answers.
fn serve(client: &mut Client, scratch: &mut [u8]) -> io::Result<bool> {
    send(client)?;
    for _ in 0..READS_PER_VISIT {
        if !(client.can_read && client.conn.wants_read()) {
            break;
        }
        match client.stream.read(scratch) {
            Ok(n) => client.conn.handle_input(&scratch[..n]),
            Err(e) if e.kind() == WouldBlock => client.can_read = false,
            Err(e) => return Err(e),
        }
        send(client)?;
    }
    if client.conn.poll_fin() {
        client.stream.shutdown(Shutdown::Write)?;
    }
    Ok(client.conn.is_finished())
}

fn send(client: &mut Client) -> io::Result<()> {
    while !client.conn.poll_output().is_empty() {
        match client.stream.write(client.conn.poll_output()) {
            Ok(n) => client.conn.advance_output(n),
            Err(e) if e.kind() == WouldBlock => return Ok(()),
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
