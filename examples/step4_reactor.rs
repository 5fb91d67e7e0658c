//! Step 4: the reactor. Step 3 parks a thread in each blocking call; here one thread asks
//! the kernel which sockets are ready (`Poll`: epoll, kqueue) and does on each the work it
//! allows now. Sockets are non-blocking and edge-triggered: an event says what *changed*,
//! once, so after one we read or write until `WouldBlock`. What a thread kept on its
//! stack, a `Client` in the slab keeps between events.
//! Run: `cargo run --example step4_reactor [ADDR]` (ADDR defaults to 127.0.0.1:8888).

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use slab::Slab;
use std::env;
use std::error::Error;
use std::io::ErrorKind::{Interrupted, WouldBlock};
use std::io::{self, Read, Write};

/// Sent to every client first.
const BANNER: &[u8] = b"Welcome to the server. Type something and hit enter\n";
/// Client tokens are slab keys, counted up from 0; the listener takes one from the top.
const LISTENER: Token = Token(usize::MAX);

/// What a thread of step 3 kept on its stack, kept here between events instead.
struct Client {
    /// The non-blocking socket, registered once for READABLE | WRITABLE.
    stream: TcpStream,
    /// Received bytes of a line whose `\n` has not arrived yet. Without limit: a line
    /// that never ends grows it forever.
    input: Vec<u8>,
    /// Replies the kernel has not taken yet. Without limit: a client that sends but
    /// never reads grows it until memory runs out.
    output: Vec<u8>,
    /// The client half-closed (read returned 0): we close once `output` is sent.
    read_closed: bool,
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
    // One read buffer for everyone: bytes move out of it before the next client reads.
    let mut scratch = vec![0; 64 * 1024];

    loop {
        // The only place this thread waits. A signal may interrupt the wait: wait again.
        // (The non-blocking calls below never wait, so nothing interrupts them.)
        match poll.poll(&mut events, None) {
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
                    // No client: a spurious event, which mio says can happen.
                    let Some(client) = clients.get_mut(key) else {
                        continue;
                    };
                    let done = serve(client, &mut scratch).unwrap_or_else(|e| {
                        eprintln!("dropping client {key}: {e}");
                        true
                    });
                    if done {
                        // close(): deregister, then drop, which closes the socket.
                        let mut client = clients.remove(key);
                        let _ = poll.registry().deregister(&mut client.stream);
                    }
                }
            }
        }
    }
}

/// READABLE on the listener replaces `accept()`: clients wait in the queue. We accept
/// until `WouldBlock`, because the edge came once and will not come again for these.
/// On an error (out of descriptors: EMFILE) we stop, and the next client raises an edge.
fn accept_all(listener: &TcpListener, poll: &Poll, clients: &mut Slab<Client>) -> io::Result<()> {
    loop {
        let (mut stream, peer) = match listener.accept() {
            Ok(accepted) => accepted,
            Err(e) if e.kind() == WouldBlock => return Ok(()),
            Err(e) => return Err(e),
        };
        eprintln!("Connected with {peer}");
        let entry = clients.vacant_entry();
        // Both interests, once, never changed: with edge triggering an idle WRITABLE
        // costs nothing, so there is no reason to re-register.
        let interest = Interest::READABLE | Interest::WRITABLE;
        poll.registry().register(&mut stream, Token(entry.key()), interest)?;
        // send(banner) becomes "queue the banner": a fresh registration reports the
        // socket writable at once, and that first event sends it.
        entry.insert(Client {
            stream,
            input: Vec::new(),
            output: BANNER.to_vec(),
            read_closed: false,
        });
    }
}

/// One event for one client: read what arrived, answer it, send what the kernel takes,
/// and say whether we are done. We do not ask which readiness the event reported: a
/// read or write that cannot proceed says `WouldBlock`, and costs one system call.
fn serve(client: &mut Client, scratch: &mut [u8]) -> io::Result<bool> {
    if !client.read_closed {
        receive(client, scratch)?;
    }
    send(client)?;
    // close() once the client is done sending and has everything we owe it.
    Ok(client.read_closed && client.output.is_empty())
}

/// READABLE replaces the blocking `recv()`: bytes or the FIN arrived. We read until
/// `WouldBlock`, because bytes left in the kernel would raise no new edge.
fn receive(client: &mut Client, scratch: &mut [u8]) -> io::Result<()> {
    loop {
        match client.stream.read(scratch) {
            Ok(0) => {
                // The FIN: answer the fragment left without `\n`, as read_until would.
                if !client.input.is_empty() {
                    reply(&mut client.output, &client.input);
                }
                client.read_closed = true;
                return Ok(());
            }
            Ok(n) => {
                client.input.extend_from_slice(&scratch[..n]);
                answer_lines(&mut client.input, &mut client.output);
            }
            Err(e) if e.kind() == WouldBlock => return Ok(()),
            Err(e) => return Err(e),
        }
    }
}

/// WRITABLE replaces the blocking `send()`. We write until `output` is empty or
/// `WouldBlock`; the next WRITABLE edge (room in the send buffer) brings us back.
fn send(client: &mut Client) -> io::Result<()> {
    while !client.output.is_empty() {
        match client.stream.write(&client.output) {
            // A short write is normal: the rest stays queued.
            Ok(n) => drop(client.output.drain(..n)),
            Err(e) if e.kind() == WouldBlock => return Ok(()),
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Answers every complete line in `input` and keeps only the unfinished rest.
fn answer_lines(input: &mut Vec<u8>, output: &mut Vec<u8>) {
    let complete = input.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    for line in input[..complete].split_inclusive(|&b| b == b'\n') {
        reply(output, line);
    }
    input.drain(..complete);
}

/// Queues `OK...` + `line`, its terminator (`\n`, `\r\n` or none) kept as received.
fn reply(output: &mut Vec<u8>, line: &[u8]) {
    output.extend_from_slice(b"OK...");
    output.extend_from_slice(line);
}
