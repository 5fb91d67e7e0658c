//! A line-echo server in the classic socket tutorial's design: a thread per client with
//! blocking std I/O. A peer of echod in benches/compare; no dependencies.
//!
//! The main thread accepts in a loop and spawns one thread per connection, with the
//! default stack size of `std::thread` (2 MiB reserved; `RUST_MIN_STACK` or
//! `thread::Builder::stack_size` change it). Each thread blocks in `read` on its own
//! buffer (4 KiB, grown up to the line limit for a longer line), appends the replies of
//! every complete line in it to an output buffer, and writes that buffer with one
//! `write_all`: one write per read, however many lines the read brought. It speaks the
//! same protocol subset as the C peer (line mode, defaults only):
//!
//! - banner `Welcome to the server. Type something and hit enter\n` on accept;
//! - each line, terminator included, is answered `OK...` + line;
//! - on the client's half-close, complete lines are answered, then the unterminated
//!   fragment as `OK...` + fragment, then everything is sent and the socket closed;
//! - a line over 65536 bytes gets `ERR line too long\n` and a close.
//!
//! Backpressure comes with the design: a thread does not read again until its replies
//! are written, so at most one read's replies are queued per client.
//!
//! When `spawn` returns an error (the kernel's thread or memory limits), the new
//! connection is closed and the failure printed once per second at most; connections
//! already served keep their threads. When the new thread is created but cannot map its
//! signal stack (out of memory maps: each thread takes four, `vm.max_map_count` caps
//! them), std panics in it and the process aborts.
//!
//! Usage: `echo-threads-peer [ADDR:]PORT` (e.g. `127.0.0.1:0`); prints
//! `listening on 127.0.0.1:PORT` to stderr.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

#[path = "../../peer_lines.rs"]
mod peer_lines;
use peer_lines::{listen_addr, push_replies, BANNER, ERR_LONG, IN_INITIAL, MAX_LINE, PREFIX};

fn main() -> io::Result<()> {
    let addr = listen_addr()?;
    let listener = TcpListener::bind(addr)?;
    eprintln!("listening on {}", listener.local_addr()?);
    let mut last_report: Option<Instant> = None;
    let mut failed = 0u64;
    for stream in listener.incoming() {
        let stream = match stream {
            Ok(stream) => stream,
            Err(e) => {
                // EMFILE and friends: wait a little for descriptors to come back
                // instead of spinning on the failing accept.
                report(&mut last_report, &mut failed, "accept", &e);
                thread::sleep(Duration::from_millis(10));
                continue;
            }
        };
        if let Err(e) = thread::Builder::new().spawn(move || serve(stream)) {
            // The stream moved into the closure is dropped with it: the client is closed.
            report(&mut last_report, &mut failed, "spawn", &e);
        }
    }
    Ok(())
}

/// Prints a failure, at most once per second, with the count since the last print.
fn report(last: &mut Option<Instant>, failed: &mut u64, what: &str, e: &io::Error) {
    *failed += 1;
    if last.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
        eprintln!("{what}: {e} ({failed} failures)");
        *last = Some(Instant::now());
    }
}

fn serve(mut stream: TcpStream) -> io::Result<()> {
    stream.set_nodelay(true)?;
    stream.write_all(BANNER)?;
    let mut input = vec![0u8; IN_INITIAL];
    let mut len = 0;
    let mut output: Vec<u8> = Vec::new();
    loop {
        if len == input.len() {
            // A long line: grow the buffer, up to one byte over the limit.
            let cap = (input.len() * 2).min(MAX_LINE + 1);
            input.resize(cap, 0);
        }
        let n = match stream.read(&mut input[len..]) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        let eof = n == 0;
        len += n;
        let (kept, close) = answer(&mut input[..len], &mut output, eof);
        len = kept;
        if !output.is_empty() {
            stream.write_all(&output)?;
            output.clear();
        }
        if close {
            return stream.shutdown(Shutdown::Write);
        }
    }
}

/// Appends to `output` the reply of every complete line in `input` and moves the
/// unterminated rest to its start. At `eof` the rest is answered too. Returns the length
/// of the rest kept, and whether the connection is done (end of input, or a line over
/// the limit).
fn answer(input: &mut [u8], output: &mut Vec<u8>, eof: bool) -> (usize, bool) {
    let start = push_replies(input, output);
    let rest = input.len() - start;
    if rest > MAX_LINE {
        output.extend_from_slice(ERR_LONG);
        return (0, true);
    }
    if eof {
        if rest > 0 {
            output.extend_from_slice(PREFIX);
            output.extend_from_slice(&input[start..]);
        }
        return (0, true);
    }
    input.copy_within(start.., 0);
    (rest, false)
}
