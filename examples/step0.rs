//! Step 0: the smallest correct edge-triggered echo server, on `mio` and `slab` alone.
//! Run `cargo run --example step0 [ADDR]` (ADDR defaults to 127.0.0.1:8888), then
//! `printf 'hi\n' | nc -N 127.0.0.1 8888`. Each readiness step below stands in for a
//! blocking call of the thread-per-client server in docs/TUTORIAL.md.
//!
//! What it leaves out, and where echod does it: limits on both buffers (`--max-line`,
//! `--max-pending`: src/protocol/conn.rs, and reading again once writes made room:
//! src/reactor/io.rs); a budget per visit so that one client cannot starve the others
//! (src/reactor/io.rs, and the owed list in src/reactor/server.rs); retrying `accept` after
//! EMFILE and `--max-connections` (src/reactor/accept.rs); idle timeouts, signals and a
//! clean drain (src/reactor/server.rs); the protocol kept apart from the sockets and tested
//! byte by byte (src/protocol/conn.rs).

use std::env;
use std::error::Error;
use std::io::{self, Read, Write};

use mio::event::Event;
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Registry, Token};
use slab::Slab;

/// Sent to every client first, as the blocking server does.
const BANNER: &[u8] = b"Welcome to the server. Type something and hit enter\n";

/// Client tokens are slab keys, counted up from 0; the listener takes one from the top.
const LISTENER: Token = Token(usize::MAX);

/// What a blocking thread kept on its stack, kept here between events instead.
struct Client {
    /// The non-blocking socket, registered once for READABLE | WRITABLE.
    stream: TcpStream,
    /// Received bytes of a line whose `\n` has not arrived yet. Without limit, like
    /// `output`: a line that never ends grows it forever (echod stops at `--max-line`).
    input: Vec<u8>,
    /// Replies the kernel has not taken yet. Without limit: a client that sends but never
    /// reads grows it until memory runs out (echod stops reading at `--max-pending`).
    output: Vec<u8>,
    /// The client half-closed (read returned 0): we close once `output` is sent.
    read_closed: bool,
}

fn main() -> Result<(), Box<dyn Error>> {
    let arg = env::args().nth(1);
    let addr = arg.as_deref().unwrap_or("127.0.0.1:8888").parse()?;
    // socket + bind + listen in one call. Port 0 asks for any free port: print the real one.
    let mut listener = TcpListener::bind(addr)?;
    eprintln!("listening on {}", listener.local_addr()?);

    let mut poll = Poll::new()?;
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)?;
    let mut clients = Slab::new();
    let mut events = Events::with_capacity(1024);
    // One read buffer for everyone: bytes move out of it before the next client reads.
    let mut scratch = vec![0; 64 * 1024];

    loop {
        // The only place this thread waits, instead of one thread parked in each call.
        match poll.poll(&mut events, None) {
            Err(e) if interrupted(&e) => continue,
            result => result?,
        }
        for event in events.iter() {
            match event.token() {
                LISTENER => accept_all(&listener, poll.registry(), &mut clients),
                Token(key) => {
                    // No client: a spurious event, which mio says can happen. One that hits
                    // a newer client reusing the key is harmless too: serve() trusts only
                    // what read and write report.
                    let Some(client) = clients.get_mut(key) else {
                        continue;
                    };
                    let done = serve(client, event, &mut scratch).unwrap_or_else(|e| {
                        eprintln!("dropping client {key}: {e}");
                        true
                    });
                    if done {
                        // close(): deregister (mio then forgets the socket), then drop, which
                        // closes the fd; if the deregister fails, the close removes it anyway.
                        let mut client = clients.remove(key);
                        let _ = poll.registry().deregister(&mut client.stream);
                    }
                }
            }
        }
    }
}

/// READABLE on the listener replaces `accept()`: connections wait in the queue. We accept
/// until `WouldBlock`, because the edge came once and will not come again for these.
fn accept_all(listener: &TcpListener, registry: &Registry, clients: &mut Slab<Client>) {
    loop {
        match listener.accept() {
            Ok((mut stream, peer)) => {
                eprintln!("Connected with {peer}");
                let entry = clients.vacant_entry();
                // Both interests, once, never changed: with edge triggering an idle
                // WRITABLE costs nothing, so there is no reason to re-register.
                let interest = Interest::READABLE | Interest::WRITABLE;
                if let Err(e) = registry.register(&mut stream, Token(entry.key()), interest) {
                    eprintln!("dropping {peer}: {e}");
                    continue;
                }
                // send(banner) becomes "queue the banner": a fresh registration reports
                // the socket writable at once, and that first event sends it.
                entry.insert(Client {
                    stream,
                    input: Vec::new(),
                    output: BANNER.to_vec(),
                    read_closed: false,
                });
            }
            Err(e) if would_block(&e) => return,
            Err(e) if interrupted(&e) => continue,
            // EMFILE and friends: we stop here, and the next client to connect raises a
            // new edge. echod retries on a deadline (`Server::accept_all`).
            Err(e) => {
                eprintln!("accept: {e}");
                return;
            }
        }
    }
}

/// One event for one client: read what arrived, answer it, send what the kernel takes.
/// Returns whether the connection is finished.
fn serve(client: &mut Client, event: &Event, scratch: &mut [u8]) -> io::Result<bool> {
    if event.is_readable() && !client.read_closed {
        receive(client, scratch)?;
    }
    // WRITABLE replaces the blocking send(). We act on it only while replies are pending;
    // an idle socket is writable nearly always. Replies just made go out now, too.
    if !client.output.is_empty() {
        send(client)?;
    }
    // close() once the client is done sending and has everything we owe it. Closing
    // earlier, while its bytes still arrive, would make the kernel answer with a RST.
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
            Err(e) if would_block(&e) => return Ok(()),
            Err(e) if interrupted(&e) => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Writes until `output` is empty or `WouldBlock`; then the next WRITABLE edge (room in
/// the send buffer) brings us back. A short write is normal: the rest stays queued.
fn send(client: &mut Client) -> io::Result<()> {
    while !client.output.is_empty() {
        match client.stream.write(&client.output) {
            Ok(n) => drop(client.output.drain(..n)),
            Err(e) if would_block(&e) => return Ok(()),
            Err(e) if interrupted(&e) => continue,
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

/// The readiness we acted on is used up: the only signal that we may wait for the next.
fn would_block(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::WouldBlock
}

/// A signal arrived during the call: just try again.
fn interrupted(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::Interrupted
}
