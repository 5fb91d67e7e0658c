//! A line-echo server as a careful tokio user writes it: a peer of echod in
//! benches/compare.
//!
//! A `current_thread` runtime, a `TcpListener`, one task per connection. Each task reads
//! into its own buffer (4 KiB, grown up to the line limit for a longer line), appends the
//! replies of every complete line in it to an output buffer, and writes that buffer with
//! one `write_all` once no complete line is left: one write per read, however many lines
//! the read brought. It speaks the same protocol subset as the C peer (line mode,
//! defaults only):
//!
//! - banner `Welcome to the server. Type something and hit enter\n` on accept;
//! - each line, terminator included, is answered `OK...` + line;
//! - on the client's half-close, complete lines are answered, then the unterminated
//!   fragment as `OK...` + fragment, then everything is sent and the socket closed;
//! - a line over 65536 bytes gets `ERR line too long\n` and a close.
//!
//! Backpressure comes with the design: a task does not read again until its replies are
//! written, so at most one read's replies are queued per client.
//!
//! Usage: `echo-tokio-peer [ADDR:]PORT` (e.g. `127.0.0.1:0`); prints
//! `listening on 127.0.0.1:PORT` to stderr.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[path = "../../peer_lines.rs"]
mod peer_lines;
use peer_lines::{listen_addr, push_replies, BANNER, ERR_LONG, IN_INITIAL, MAX_LINE, PREFIX};

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::io::Result<()> {
    let addr = listen_addr()?;
    let listener = TcpListener::bind(addr).await?;
    eprintln!("listening on {}", listener.local_addr()?);
    loop {
        let (socket, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            // EMFILE and friends: skip this one, keep serving the others.
            Err(e) => {
                eprintln!("accept: {e}");
                continue;
            }
        };
        tokio::spawn(async move {
            let _ = serve(socket).await;
        });
    }
}

async fn serve(mut socket: TcpStream) -> std::io::Result<()> {
    socket.set_nodelay(true)?;
    socket.write_all(BANNER).await?;
    let mut input: Vec<u8> = Vec::with_capacity(IN_INITIAL);
    let mut output: Vec<u8> = Vec::new();
    loop {
        if input.len() == input.capacity() {
            // A long line: grow the buffer, up to one byte over the limit.
            let cap = (input.capacity() * 2).min(MAX_LINE + 1);
            input.reserve_exact(cap - input.len());
        }
        // Reads into the spare capacity: no zero-filling.
        let eof = socket.read_buf(&mut input).await? == 0;
        let close = answer(&mut input, &mut output, eof);
        if !output.is_empty() {
            socket.write_all(&output).await?;
            output.clear();
        }
        if close {
            return socket.shutdown().await;
        }
    }
}

/// Appends to `output` the reply of every complete line in `input` and keeps the
/// unterminated rest there. At `eof` the rest is answered too. Returns whether the
/// connection is done (end of input, or a line over the limit).
fn answer(input: &mut Vec<u8>, output: &mut Vec<u8>, eof: bool) -> bool {
    let used = push_replies(input, output);
    input.drain(..used);
    if input.len() > MAX_LINE {
        output.extend_from_slice(ERR_LONG);
        return true;
    }
    if eof {
        if !input.is_empty() {
            output.extend_from_slice(PREFIX);
            output.extend_from_slice(input);
        }
        return true;
    }
    false
}
