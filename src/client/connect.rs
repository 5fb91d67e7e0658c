//! The network steps every client mode shares: resolving a name, starting a
//! non-blocking connect, and learning from the poll loop how it ended.
//!
//! A non-blocking `connect` returns at once with the handshake still in
//! flight. The socket becomes *writable* when the handshake is over, whether
//! it succeeded or failed; [`connect_outcome`] then tells which. This is the
//! client-side twin of the server's "accept when readable".

use std::io;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use super::Fatal;
pub use crate::io_errors::{interrupted, out_of_fds, would_block};

/// `EINPROGRESS`: a non-blocking connect has started and will finish later.
/// std has no stable `ErrorKind` for it yet (`io_error_inprogress` is unstable).
const EINPROGRESS: i32 = libc::EINPROGRESS;

/// An error as a person wants to read it: `Connection refused`, without
/// Rust's ` (os error 111)` suffix.
pub fn describe(e: &io::Error) -> String {
    let text = e.to_string();
    match text.find(" (os error ") {
        Some(at) => text[..at].to_string(),
        None => text,
    }
}

/// Resolves `host` (a name, an IPv4 address, or an IPv6 address with or
/// without brackets) into every address it has, in the resolver's order.
///
/// `getaddrinfo` blocks and has no readiness interface, so we resolve once,
/// before the poll loop starts, rather than inside it.
pub fn resolve(host: &str, port: u16) -> Result<Vec<SocketAddr>, Fatal> {
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    let cannot = |why: String| Fatal(format!("cannot resolve host '{host}': {why}"));
    let addrs: Vec<SocketAddr> = (bare, port)
        .to_socket_addrs()
        .map_err(|e| cannot(describe(&e)))?
        .collect();
    if addrs.is_empty() {
        return Err(cannot("no addresses".to_string()));
    }
    Ok(addrs)
}

/// Resolves `HOST:PORT` (`[::1]:8888` for IPv6) and returns its first address.
pub fn resolve_target(target: &str) -> Result<SocketAddr, Fatal> {
    let (host, port) = target
        .rsplit_once(':')
        .ok_or_else(|| Fatal(format!("'{target}' is not HOST:PORT")))?;
    let port = port
        .parse()
        .map_err(|_| Fatal(format!("'{port}' in '{target}' is not a port number")))?;
    Ok(resolve(host, port)?[0])
}

/// Starts a non-blocking connect to `addr`, first binding the socket to
/// `source` (port chosen by the kernel) when one is given.
///
/// Without a source address we let mio do it all. With one we build the
/// socket by hand with socket2, because the bind has to happen between
/// creating the socket and connecting it.
pub fn start_connect(addr: SocketAddr, source: Option<IpAddr>) -> io::Result<TcpStream> {
    let Some(source) = source else {
        return TcpStream::connect(addr);
    };
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_nonblocking(true)?;
    socket.bind(&SockAddr::from(SocketAddr::new(source, 0)))?;
    match socket.connect(&SockAddr::from(addr)) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(EINPROGRESS) => {}
        Err(e) => return Err(e),
    }
    Ok(TcpStream::from_std(socket.into()))
}

/// After a writable (or error) event on a connecting socket: `None` while the
/// handshake is still going (a spurious wake-up), `Some(Ok)` once connected,
/// `Some(Err)` with the reason it failed (refused, unreachable, ...).
///
/// This is the recipe mio documents for `TcpStream::connect`: first the
/// socket's pending error (`SO_ERROR`), then whether it has a peer.
pub fn connect_outcome(stream: &TcpStream) -> Option<io::Result<()>> {
    match stream.take_error() {
        Ok(Some(e)) | Err(e) => return Some(Err(e)),
        Ok(None) => {}
    }
    match stream.peer_addr() {
        Ok(_) => Some(Ok(())),
        Err(e) if e.kind() == io::ErrorKind::NotConnected => None,
        Err(e) if e.raw_os_error() == Some(EINPROGRESS) => None,
        Err(e) => Some(Err(e)),
    }
}

/// Says what the client is doing on stderr, when `-v` asked for it. These are
/// the steps the tutorial walks through, so they are worded for a learner.
#[derive(Debug, Clone, Copy)]
pub struct Narrator {
    /// Whether to say anything at all.
    pub verbose: bool,
}

impl Narrator {
    /// Prints `echoc: MESSAGE` on stderr when verbose.
    pub fn say(&self, message: impl std::fmt::Display) {
        if self.verbose {
            eprintln!("echoc: {message}");
        }
    }
}

/// Connects to the first of `addrs` that accepts, trying them in order, each
/// within `timeout`, and registers the connected stream with `poll` under
/// `token` for reading and writing.
///
/// Trying every address matters: `localhost` often resolves to `::1` first
/// while a server listens on 127.0.0.1 only, so the first attempt is refused
/// and the second one works.
pub fn connect_any(
    poll: &mut Poll,
    token: Token,
    addrs: &[SocketAddr],
    timeout: Option<Duration>,
    narrator: Narrator,
) -> Result<TcpStream, Fatal> {
    let mut failures = Vec::new();
    for (i, &addr) in addrs.iter().enumerate() {
        narrator.say(format_args!("connecting to {addr}"));
        match connect_one(poll, token, addr, timeout) {
            Ok(stream) => {
                let local = stream
                    .local_addr()
                    .map_or_else(|_| "?".to_string(), |a| a.to_string());
                narrator.say(format_args!("connected to {addr} from {local}"));
                return Ok(stream);
            }
            Err(why) => {
                if i + 1 < addrs.len() {
                    narrator.say(format_args!("{addr}: {why}; trying the next address"));
                }
                failures.push(format!("{addr}: {why}"));
            }
        }
    }
    Err(Fatal(format!("connect to {}", failures.join("; "))))
}

/// One connect attempt: start it, then wait in `poll` for its outcome. On
/// failure, the reason (already described for humans).
fn connect_one(
    poll: &mut Poll,
    token: Token,
    addr: SocketAddr,
    timeout: Option<Duration>,
) -> Result<TcpStream, String> {
    let mut stream = start_connect(addr, None).map_err(|e| describe(&e))?;
    poll.registry()
        .register(&mut stream, token, Interest::READABLE | Interest::WRITABLE)
        .map_err(|e| describe(&e))?;
    let deadline = timeout.map(|t| Instant::now() + t);
    let mut events = Events::with_capacity(8);
    loop {
        let wait = deadline.map(|d| d.saturating_duration_since(Instant::now()));
        if wait == Some(Duration::ZERO) {
            let secs = timeout.unwrap_or_default().as_secs_f64();
            return Err(format!("timed out after {secs} s"));
        }
        match poll.poll(&mut events, wait) {
            Ok(()) => {}
            Err(e) if interrupted(&e) => continue,
            Err(e) => return Err(describe(&e)),
        }
        // Only our socket is registered, so any event is about it. The
        // event may be spurious; connect_outcome tells.
        if events.is_empty() {
            continue;
        }
        match connect_outcome(&stream) {
            None => continue,
            Some(Ok(())) => return Ok(stream),
            Some(Err(e)) => {
                // Leave the poll clean for the next attempt.
                let _ = poll.registry().deregister(&mut stream);
                return Err(describe(&e));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describe_drops_the_os_error_suffix() {
        let e = io::Error::from_raw_os_error(111);
        assert_eq!(describe(&e), "Connection refused");
        let custom = io::Error::other("plain words");
        assert_eq!(describe(&custom), "plain words");
    }

    #[test]
    fn resolve_accepts_literals() {
        assert_eq!(
            resolve("127.0.0.1", 80).unwrap()[0].to_string(),
            "127.0.0.1:80"
        );
        assert_eq!(resolve("[::1]", 80).unwrap()[0].to_string(), "[::1]:80");
        assert_eq!(resolve("::1", 80).unwrap()[0].to_string(), "[::1]:80");
    }

    #[test]
    fn resolve_target_splits_host_and_port() {
        assert_eq!(resolve_target("127.0.0.1:8888").unwrap().port(), 8888);
        assert!(resolve_target("[::1]:9").unwrap().is_ipv6());
        assert!(resolve_target("127.0.0.1").is_err());
        assert!(resolve_target("127.0.0.1:http").is_err());
    }

    /// A port on 127.0.0.1 where nothing listens.
    fn refused_addr() -> SocketAddr {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    }

    #[test]
    fn connect_any_tries_the_next_address_when_one_is_refused() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let open = listener.local_addr().unwrap();
        let mut poll = Poll::new().unwrap();
        let quiet = Narrator { verbose: false };
        let timeout = Some(Duration::from_secs(10));
        let stream = connect_any(&mut poll, Token(0), &[refused_addr(), open], timeout, quiet);
        assert_eq!(stream.unwrap().peer_addr().unwrap(), open);
    }

    #[test]
    fn connect_any_reports_every_failure_on_one_line() {
        let (a, b) = (refused_addr(), refused_addr());
        let mut poll = Poll::new().unwrap();
        let quiet = Narrator { verbose: false };
        let err = connect_any(&mut poll, Token(0), &[a, b], None, quiet).unwrap_err();
        assert_eq!(
            err.0,
            format!("connect to {a}: Connection refused; {b}: Connection refused")
        );
    }

    #[test]
    fn start_connect_binds_the_source_address() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let source: IpAddr = "127.0.0.7".parse().unwrap();
        let mut stream = start_connect(listener.local_addr().unwrap(), Some(source)).unwrap();
        // Wait (bounded) for the handshake, so that accept will not block.
        let mut poll = Poll::new().unwrap();
        poll.registry()
            .register(&mut stream, Token(0), Interest::WRITABLE)
            .unwrap();
        let mut events = Events::with_capacity(4);
        let deadline = Instant::now() + Duration::from_secs(10);
        while connect_outcome(&stream).is_none() && Instant::now() < deadline {
            poll.poll(&mut events, Some(Duration::from_millis(100)))
                .unwrap();
        }
        assert!(matches!(connect_outcome(&stream), Some(Ok(()))));
        let (_, peer) = listener.accept().unwrap();
        assert_eq!(peer.ip(), source);
    }

    #[test]
    fn the_einprogress_constant_is_right() {
        // The number we named must mean "operation now in progress".
        let text = io::Error::from_raw_os_error(EINPROGRESS).to_string();
        assert!(text.to_lowercase().contains("in progress"), "{text}");
    }
}
