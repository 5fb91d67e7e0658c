//! Step 5: bounded. Step 4 trusts its clients: one that never reads grows `output` without
//! end, an endless line grows `input`, a fast sender keeps the loop reading it while the
//! others wait. Here each gets a limit and a defined action. (Comments are on what is new.)

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use slab::Slab;
use std::env;
use std::error::Error;
use std::io::ErrorKind::{Interrupted, WouldBlock};
use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::time::Duration;

const BANNER: &[u8] = b"Welcome to the server. Type something and hit enter\n";
const LISTENER: Token = Token(usize::MAX);
/// The longest line we answer, without its `\n`; a longer one ends the conversation.
const MAX_LINE: usize = 64 * 1024;
/// Backpressure: with this many reply bytes queued we stop reading the client; its bytes
/// wait in the kernel, the buffers fill, and TCP slows the sender down.
const MAX_PENDING: usize = 64 * 1024;
/// Fairness: reads per visit (1 MiB at most); then the client waits for the next turn.
const READS_PER_VISIT: usize = 16;
/// Step 4 knew "open" and "half-closed"; ending a conversation ourselves takes two more.
#[derive(PartialEq)]
enum State {
    Open,
    /// We end it (a line too long): we send `output`, then our FIN.
    Closing,
    /// Our FIN is out: we drop what the client sends until its FIN (closing with unread
    /// input would send a RST, which can destroy the replies still in flight).
    Lingering,
    /// The client's FIN came: we send `output`, then close.
    Done,
}

struct Client {
    stream: TcpStream,
    input: Vec<u8>,  // at most MAX_LINE + one read
    output: Vec<u8>, // at most MAX_PENDING + the replies to one read
    state: State,
    /// The socket may hold unread bytes: set by READABLE, cleared only by `WouldBlock` or
    /// the end of the stream. The edge-triggered trap: if we stop reading while it is set,
    /// no new edge will come for those bytes; *we* owe the client a visit.
    can_read: bool,
}

impl Client {
    /// Bytes may wait and we may take them: not while replies back up (backpressure).
    fn may_read(&self) -> bool {
        let open = self.state == State::Open && self.output.len() < MAX_PENDING;
        self.can_read && (open || matches!(self.state, State::Closing | State::Lingering))
    }
}

fn main() -> Result<(), Box<dyn Error>> {
    let arg = env::args().nth(1);
    let addr = arg.as_deref().unwrap_or("127.0.0.1:8888").parse()?;
    let mut listener = TcpListener::bind(addr)?;
    eprintln!("listening on {}", listener.local_addr()?);
    let mut poll = Poll::new()?;
    poll.registry().register(&mut listener, LISTENER, Interest::READABLE)?;
    let mut clients = Slab::new();
    let mut events = Events::with_capacity(1024);
    let mut scratch = vec![0; 64 * 1024];
    // The clients to visit this turn, and those owed a visit (no event will say so).
    let (mut ready, mut owed) = (Vec::new(), Vec::new());
    loop {
        // Owing visits, we must not sleep: we collect what is new, then pay them.
        let timeout = (!owed.is_empty()).then_some(Duration::ZERO);
        match poll.poll(&mut events, timeout) {
            Err(e) if e.kind() == Interrupted => continue,
            result => result?,
        }
        for event in events.iter() {
            match event.token() {
                LISTENER => {
                    if let Err(e) = accept_all(&listener, &poll, &mut clients) {
                        eprintln!("accept: {e}");
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
        // One visit per client per turn, for an event, a debt, or both.
        ready.append(&mut owed);
        ready.sort_unstable();
        ready.dedup();
        for key in ready.drain(..) {
            let client = &mut clients[key];
            match serve(client, &mut scratch) {
                // It used its reads, and bytes may wait: we owe it a visit.
                Ok(false) if client.may_read() => owed.push(key),
                Ok(false) => {}
                // Finished, or an error (a reset, usually): the client goes.
                Ok(true) | Err(_) => {
                    let mut client = clients.remove(key);
                    let _ = poll.registry().deregister(&mut client.stream);
                }
            }
        }
    }
}

fn accept_all(listener: &TcpListener, poll: &Poll, clients: &mut Slab<Client>) -> io::Result<()> {
    loop {
        let (mut stream, peer) = match listener.accept() {
            Ok(accepted) => accepted,
            Err(e) if e.kind() == WouldBlock => return Ok(()),
            Err(e) => return Err(e),
        };
        eprintln!("Connected with {peer}");
        let entry = clients.vacant_entry();
        let interest = Interest::READABLE | Interest::WRITABLE;
        poll.registry().register(&mut stream, Token(entry.key()), interest)?;
        entry.insert(Client {
            stream,
            input: Vec::new(),
            output: BANNER.to_vec(),
            state: State::Open,
            can_read: false,
        });
    }
}

/// Sends, then reads and sends while we may, `READS_PER_VISIT` times at most: sending
/// makes room, so the visit that drains a backlog resumes reading too.
fn serve(client: &mut Client, scratch: &mut [u8]) -> io::Result<bool> {
    send(client)?;
    for _ in 0..READS_PER_VISIT {
        if !client.may_read() {
            break;
        }
        match client.stream.read(scratch) {
            Ok(0) => {
                if client.state == State::Open && !client.input.is_empty() {
                    reply(&mut client.output, &client.input);
                }
                (client.input, client.can_read) = (Vec::new(), false);
                client.state = State::Done;
            }
            Ok(n) if client.state == State::Open => {
                client.input.extend_from_slice(&scratch[..n]);
                answer_lines(client);
            }
            Ok(_) => {} // Closing or Lingering: read and dropped.
            Err(e) if e.kind() == WouldBlock => client.can_read = false,
            Err(e) => return Err(e),
        }
        send(client)?;
    }
    if client.state == State::Closing && client.output.is_empty() {
        client.stream.shutdown(Shutdown::Write)?; // our FIN, after the last reply
        client.state = State::Lingering;
    }
    Ok(client.state == State::Done && client.output.is_empty())
}

fn send(client: &mut Client) -> io::Result<()> {
    while !client.output.is_empty() {
        match client.stream.write(&client.output) {
            Ok(n) => drop(client.output.drain(..n)),
            Err(e) if e.kind() == WouldBlock => return Ok(()),
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Answers every complete line; a line over `MAX_LINE`, ended or not, gets
/// `ERR line too long` after the replies to the lines before it.
fn answer_lines(client: &mut Client) {
    let input = &mut client.input;
    let complete = input.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    let mut too_long = input.len() - complete > MAX_LINE;
    for line in input[..complete].split_inclusive(|&b| b == b'\n') {
        if line.len() > MAX_LINE + 1 {
            too_long = true;
            break;
        }
        reply(&mut client.output, line);
    }
    input.drain(..complete);
    if too_long {
        client.output.extend_from_slice(b"ERR line too long\n");
        (client.input, client.state) = (Vec::new(), State::Closing);
    }
}

fn reply(output: &mut Vec<u8>, line: &[u8]) {
    output.extend_from_slice(b"OK...");
    output.extend_from_slice(line);
}
