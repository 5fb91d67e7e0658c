//! Step 1: the classic tutorial's client, on blocking std sockets.
//!
//! Resolve the host, connect, send one request, half-close, print what comes back, close.
//! Every call here parks the thread until the kernel is done: connect waits for the
//! handshake, write for the send buffer, read for bytes. Pointed at echod (or any step
//! from 2 on), it prints the banner and one `OK...` reply per line we sent:
//!
//! ```text
//! cargo run --example step1_client -- 127.0.0.1 8888
//! ```

use std::env;
use std::error::Error;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream, ToSocketAddrs};
use std::process::ExitCode;

/// What the tutorial sends: an HTTP request head, which echod answers line by line.
const REQUEST: &[u8] = b"GET / HTTP/1.1\r\n\r\n";

fn main() -> ExitCode {
    let args: Vec<String> = env::args().skip(1).collect();
    let [host, port] = args.as_slice() else {
        eprintln!("usage: step1_client HOST PORT");
        return ExitCode::from(2);
    };
    match run(host, port) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("step1_client: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(host: &str, port: &str) -> Result<(), Box<dyn Error>> {
    let port: u16 = port.parse()?;
    // gethostbyname(): today getaddrinfo, which `ToSocketAddrs` calls. A name may have
    // several addresses (`localhost` is often ::1 first, then 127.0.0.1), so we keep them
    // all and try each in turn.
    let addrs: Vec<SocketAddr> = (host, port).to_socket_addrs()?.collect();
    let mut stream = connect_any(&addrs)?;

    // send(): `write_all` loops until the kernel has taken every byte.
    stream.write_all(REQUEST)?;
    // We have nothing more to say: shutdown(SHUT_WR) sends our FIN, and the server reads
    // the end of the stream. Our side stays open for reading, so we still get every reply.
    stream.shutdown(Shutdown::Write)?;

    // recv() until the server closes: each read returns whatever bytes have arrived (a
    // byte stream, not messages), and 0 once the server's FIN comes.
    let mut buf = [0; 4096];
    let mut stdout = io::stdout().lock();
    loop {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            break;
        }
        stdout.write_all(&buf[..n])?;
    }
    stdout.flush()?;
    // close(): dropping the stream closes the socket.
    Ok(())
}

/// socket() + connect() to each address until one answers. A blocking connect parks the
/// thread for the handshake: a round trip here, seconds of SYN retries to a dead host.
fn connect_any(addrs: &[SocketAddr]) -> io::Result<TcpStream> {
    let mut last = io::Error::new(io::ErrorKind::NotFound, "the name has no address");
    for addr in addrs {
        match TcpStream::connect(addr) {
            Ok(stream) => return Ok(stream),
            Err(e) => last = e,
        }
    }
    Err(last)
}
