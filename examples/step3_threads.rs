//! Step 3: a thread per client: the classic tutorial's final server.
//!
//! Step 2 served one client at a time. Here each accepted client gets a thread of its
//! own that runs step 2's `serve`, unchanged, while the main thread goes back to
//! `accept`. Every client is served at once, and each costs a thread: a stack (2 MiB
//! reserved, a few KiB touched), a kernel task, and scheduler work, even while it sleeps
//! in `read_until`. Ten thousand idle clients are ten thousand sleeping threads.
//!
//! ```text
//! cargo run --example step3_threads [ADDR]      # ADDR defaults to 127.0.0.1:8888
//! ```

use std::env;
use std::error::Error;
use std::io::{self, BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::thread;

/// Sent to every client first.
const BANNER: &[u8] = b"Welcome to the server. Type something and hit enter\n";

fn main() -> Result<(), Box<dyn Error>> {
    let arg = env::args().nth(1);
    let addr: SocketAddr = arg.as_deref().unwrap_or("127.0.0.1:8888").parse()?;
    // socket + bind + listen in one call. Port 0 asks for any free port: print the real one.
    let listener = TcpListener::bind(addr)?;
    eprintln!("listening on {}", listener.local_addr()?);

    // accept(), forever: each call parks until a client has connected.
    for stream in listener.incoming() {
        match stream {
            // The conversation moves to a new thread; this one accepts the next client.
            // (Out of threads or memory, `spawn` panics: nothing here bounds the count.)
            Ok(stream) => {
                thread::spawn(move || {
                    if let Err(e) = serve(stream) {
                        eprintln!("client: {e}");
                    }
                });
            }
            // A client that reset while it waited in the queue: the next one is fine.
            Err(e) => eprintln!("accept: {e}"),
        }
    }
    Ok(())
}

/// One client, start to end, as straight-line code: its progress lives on our stack.
fn serve(mut stream: TcpStream) -> io::Result<()> {
    eprintln!("Connected with {}", stream.peer_addr()?);
    stream.write_all(BANNER)?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut line = Vec::new();
    // recv() until a whole line, or the end of the stream: then `read_until` returns what
    // is left, a final fragment without `\n`, and then 0.
    while reader.read_until(b'\n', &mut line)? > 0 {
        // One write per reply: two small writes would meet Nagle's algorithm, which holds
        // the second back until the first is acknowledged.
        let mut reply = b"OK...".to_vec();
        reply.extend_from_slice(&line);
        // send(): parks until the kernel has taken it all.
        stream.write_all(&reply)?;
        line.clear();
    }
    // The client half-closed and has every reply: dropping the stream closes ours.
    Ok(())
}
