//! Listening sockets: built with a real `listen()` backlog, or inherited from systemd.

use std::io;
use std::net::SocketAddr;

use socket2::{Domain, Protocol, Socket, Type};

/// Opens a non-blocking listening socket on `addr` with a real `listen(backlog)`.
///
/// We build the socket with `socket2` rather than `mio::net::TcpListener::bind` for two
/// reasons. mio's `bind` always listens with a backlog of 128: a tester's burst of a
/// thousand connects then overflows the queue and the extra SYNs are retried a second
/// later, which looks like a one-second stall. And an IPv6 socket must get
/// `IPV6_V6ONLY` *before* `bind`, so that `[::]:8888` and `0.0.0.0:8888` can be bound
/// side by side (otherwise the IPv6 one also claims the IPv4 port).
///
/// With `reuse_port`, `SO_REUSEPORT` lets several processes bind the same address; the
/// kernel then spreads incoming connections over their listeners (one process per core,
/// each still one thread).
pub fn listen(
    addr: SocketAddr,
    backlog: u32,
    reuse_port: bool,
) -> io::Result<mio::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    // A restarted daemon must be able to bind while old connections sit in TIME_WAIT.
    socket.set_reuse_address(true)?;
    if reuse_port {
        socket.set_reuse_port(true)?;
    }
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    let backlog = i32::try_from(backlog).unwrap_or(i32::MAX);
    socket.listen(backlog)?;
    Ok(mio::net::TcpListener::from_std(socket.into()))
}

/// Listening sockets passed by systemd socket activation (`LISTEN_FDS`/`LISTEN_PID`), made
/// non-blocking (inherited sockets arrive blocking, and one blocking `accept` would stall
/// the whole loop). Empty when we were not socket-activated.
///
/// We use the `listenfd` crate because adopting a raw descriptor (`FromRawFd`) cannot be done
/// in safe Rust; it also checks that `LISTEN_PID` names us and that each descriptor really
/// is a TCP listener.
pub fn inherited_listeners() -> io::Result<Vec<mio::net::TcpListener>> {
    let mut fds = listenfd::ListenFd::from_env();
    let mut listeners = Vec::new();
    for i in 0..fds.len() {
        let listener = fds.take_tcp_listener(i)?.ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "socket activation: descriptor {} is not a TCP listener",
                    3 + i
                ),
            )
        })?;
        listener.set_nonblocking(true)?;
        listeners.push(mio::net::TcpListener::from_std(listener));
    }
    Ok(listeners)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_and_ipv6_wildcards_bind_side_by_side() {
        let v4 = listen("127.0.0.1:0".parse().unwrap(), 16, false).unwrap();
        let port = v4.local_addr().unwrap().port();
        // ::1 may be missing in some sandboxes; only check when it exists.
        if let Ok(v6) = listen(format!("[::1]:{port}").parse().unwrap(), 16, false) {
            assert_eq!(v6.local_addr().unwrap().port(), port);
        }
    }
}
