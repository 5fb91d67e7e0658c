//! The idiomatic tokio line-echo server: what a Rust user would write instead of echod.
//!
//! A `current_thread` runtime, a `TcpListener`, one task per connection, a `BufReader`
//! with `read_until(b'\n')`, and one `write_all` per reply. It speaks the echod protocol
//! (banner, `OK...` + line with its terminator, the final fragment answered on
//! half-close, then close). Deliberately nothing clever: no batching of replies, no
//! buffer reuse tricks beyond reusing the line `Vec`, no line limit.
//!
//! Usage: `echo-tokio-peer [ADDR:]PORT` (e.g. `127.0.0.1:0`); prints
//! `listening on 127.0.0.1:PORT` to stderr.

use std::net::SocketAddr;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

const BANNER: &[u8] = b"Welcome to the server. Type something and hit enter\n";
const PREFIX: &[u8] = b"OK...";

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::io::Result<()> {
    let arg = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8888".into());
    let arg = if arg.contains(':') {
        arg
    } else {
        format!("127.0.0.1:{arg}")
    };
    // A parsed address: binding a string would resolve it on tokio's blocking pool.
    let addr: SocketAddr = arg.parse().map_err(std::io::Error::other)?;
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
    let (reader, mut writer) = socket.split();
    let mut reader = BufReader::new(reader);
    writer.write_all(BANNER).await?;
    let mut line = Vec::new();
    let mut reply = Vec::new();
    loop {
        line.clear();
        // Returns a line with its `\n`, or the final fragment without one, or 0 at EOF.
        if reader.read_until(b'\n', &mut line).await? == 0 {
            break;
        }
        reply.clear();
        reply.extend_from_slice(PREFIX);
        reply.extend_from_slice(&line);
        writer.write_all(&reply).await?;
    }
    writer.shutdown().await
}
