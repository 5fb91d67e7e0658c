//! The line code both Rust peers share (each includes this file with `#[path]`), so that
//! the tokio and the thread-per-client peers differ only in how they wait.

use std::io::{self, BufRead};
use std::net::SocketAddr;

/// The greeting sent on connect.
pub const BANNER: &[u8] = b"Welcome to the server. Type something and hit enter\n";
/// Before every echoed line.
pub const PREFIX: &[u8] = b"OK...";
/// Sent when a line is over `MAX_LINE`, before closing.
pub const ERR_LONG: &[u8] = b"ERR line too long\n";
/// The longest line, without its newline (echod's default `--max-line`).
pub const MAX_LINE: usize = 65536;
/// A connection's first read buffer.
pub const IN_INITIAL: usize = 4096;

/// Appends `OK...` + line for every complete line of `input`; returns the bytes used.
/// `BufRead::read_until` on a byte slice finds each `\n` with std's word-at-a-time
/// `memchr` and copies the line straight into `output`.
pub fn push_replies(input: &[u8], output: &mut Vec<u8>) -> usize {
    let mut rest = input;
    loop {
        let (mark, left) = (output.len(), rest.len());
        output.extend_from_slice(PREFIX);
        let n = rest
            .read_until(b'\n', output)
            .expect("reading a byte slice cannot fail");
        if n == 0 || output.last() != Some(&b'\n') {
            // No complete line left: take back the prefix and the partial line.
            output.truncate(mark);
            return input.len() - left;
        }
    }
}

/// The address to listen on, from the first argument: `HOST:PORT`, or a bare port on
/// 127.0.0.1 [127.0.0.1:8888]. Parsed here, not resolved (tokio would resolve a name on
/// its blocking pool).
pub fn listen_addr() -> io::Result<SocketAddr> {
    let arg = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8888".into());
    let arg = if arg.contains(':') {
        arg
    } else {
        format!("127.0.0.1:{arg}")
    };
    arg.parse().map_err(io::Error::other)
}
