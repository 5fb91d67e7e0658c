//! Clients and surroundings that try to break the daemon: urgent data, a shutdown while
//! out of descriptors, absurd flag values. Each test drives the real binary.

mod util;

use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use util::*;

/// TCP urgent data stops a read at its mark. Both segments are queued while the server
/// is stopped, so its first read returns only the bytes before the mark: the rest must
/// not wait for an event that will never come. Every byte is echoed, the urgent one
/// too (it stays in the stream).
#[test]
fn urgent_data_does_not_strand_the_bytes_after_it() {
    let echod = Echod::start(&[]);
    let mut s = echod.connect_greeted();
    echod.signal("STOP");
    socket2::SockRef::from(&s)
        .send_out_of_band(b"a\nX")
        .expect("send urgent");
    // Give the urgent segment a head start, so the two are separate segments.
    std::thread::sleep(Duration::from_millis(50));
    s.write_all(b"b\n").unwrap();
    std::thread::sleep(Duration::from_millis(50));
    echod.signal("CONT");
    let want = b"OK...a\nOK...Xb\n";
    assert_eq!(read_n(&mut s, want.len()), want);
}

/// SIGTERM while out of file descriptors: clients waiting in the accept queue have
/// sent their lines too, and are answered, not reset.
#[test]
fn shutdown_while_out_of_fds_answers_the_queued_clients() {
    let mut echod = Echod::start(&["--log-level", "debug"]);
    echod.limit_fds(40);
    let mut clients: Vec<TcpStream> = (0..60).map(|_| echod.connect()).collect();
    echod.expect_log("out of file descriptors");
    for (i, s) in clients.iter_mut().enumerate() {
        s.write_all(format!("line {i}\n").as_bytes()).unwrap();
    }
    echod.signal("TERM");
    // Each client reads everything up to the server's FIN, then closes, which frees a
    // descriptor for the next one in the queue.
    for (i, s) in clients.iter_mut().enumerate() {
        let got = read_to_fin(s);
        let want = [BANNER, format!("OK...line {i}\n").as_bytes()].concat();
        assert_eq!(
            String::from_utf8_lossy(&got),
            String::from_utf8_lossy(&want),
            "client {i}"
        );
    }
    drop(clients);
    let status = echod.wait_exit(TIMEOUT).expect("echod exits");
    assert_eq!(status.code(), Some(0), "{}", echod.log());
}

/// Values that would overflow a deadline or a limit are refused at start-up with exit
/// code 2 and the flag's name, instead of a panic later.
#[test]
fn absurd_flag_values_are_refused_with_exit_2() {
    for flag in [
        "--drain-timeout",
        "--idle-timeout",
        "--max-line",
        "--max-pending",
    ] {
        let out = run_echod(&[flag, "18446744073709551615"]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{flag}: {err}");
        assert!(err.contains(flag), "{flag}: {err}");
    }
}

/// `--max-per-ip 2`: a third connection from the same address is told why and closed;
/// when one of the first two leaves, the address may connect again.
#[test]
fn max_per_ip_refuses_the_extra_connection_from_one_address() {
    let echod = Echod::start(&["--max-per-ip", "2", "--log-level", "debug"]);
    let mut a = echod.connect_greeted();
    let _b = echod.connect_greeted();
    let mut c = echod.connect();
    assert_eq!(
        read_to_fin(&mut c),
        b"ERR too many connections from your address\n"
    );
    assert_echoes(&mut a, &["still served"]);
    drop(a);
    echod.expect_log("closed 127.0.0.1");
    let mut d = echod.connect_greeted();
    assert_echoes(&mut d, &["welcome back"]);
}

/// Behind a proxy the limit counts the address the PROXY header names, not the
/// proxy's: two clients from one address through one proxy, and the second is refused,
/// while a client from another address is served.
#[test]
fn max_per_ip_counts_the_proxied_client_address() {
    let echod = Echod::start(&[
        "--proxy-protocol",
        "--max-per-ip",
        "1",
        "--log-level",
        "debug",
    ]);
    let header = |ip: &str| format!("PROXY TCP4 {ip} 192.0.2.99 5000 8888\r\n");
    let mut a = echod.connect();
    a.write_all(header("192.0.2.1").as_bytes()).unwrap();
    assert_eq!(read_n(&mut a, BANNER.len()), BANNER);
    let mut b = echod.connect();
    b.write_all(header("192.0.2.1").as_bytes()).unwrap();
    let got = read_to_fin(&mut b);
    assert!(
        got.ends_with(b"ERR too many connections from your address\n"),
        "{:?}",
        String::from_utf8_lossy(&got)
    );
    let mut c = echod.connect();
    c.write_all(header("192.0.2.2").as_bytes()).unwrap();
    assert_eq!(read_n(&mut c, BANNER.len()), BANNER);
    assert_echoes(&mut a, &["first from .1"]);
    assert_echoes(&mut c, &["first from .2"]);
}

/// `--send-timeout 1`: a client that sends and never reads its replies is closed once
/// its output has made no progress for a second; a reading client is not.
#[test]
fn send_timeout_closes_a_client_that_never_reads() {
    let echod = Echod::start(&["--send-timeout", "1", "--log-level", "debug"]);
    let mut good = echod.connect_greeted();
    // Small buffers from before the connect: the window it advertises stays small, so
    // once it stops reading the server's output makes no progress at all.
    let mut bad = connect_small(echod.addr);
    // Write until the server stops reading us (the kernel buffers fill up): then our
    // writes block, and the server's replies sit unsent.
    bad.set_write_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let line = [b'x'; 1023]
        .iter()
        .chain(b"\n")
        .copied()
        .collect::<Vec<u8>>();
    let mut sent = 0;
    while sent < 64 << 20 {
        match bad.write(&line) {
            Ok(n) => sent += n,
            Err(_) => break,
        }
    }
    echod.expect_log("send_timeout");
    assert_echoes(&mut good, &["unaffected"]);
}

/// `--max-memory 1 MiB` with clients that send far more than they read: the largest
/// are paused, then closed with `ERR out of memory` (after every reply they had
/// queued), while a well-behaved client keeps being served. (Paused clients have 1 s to
/// drain before the eviction; the test shortens that to 200 ms.)
#[test]
fn max_memory_pauses_then_evicts_the_largest_clients() {
    let echod = Echod::start_timed(
        &["--max-memory", "1048576", "--log-level", "debug"],
        "evict-after=200",
    );
    let mut good = echod.connect_greeted();
    let line = [b'y'; 1023]
        .iter()
        .chain(b"\n")
        .copied()
        .collect::<Vec<u8>>();
    let mut hogs: Vec<TcpStream> = (0..24).map(|_| connect_small(echod.addr)).collect();
    for hog in &hogs {
        hog.set_nonblocking(true).unwrap();
    }
    // Until the server stops reading us: our replies fill its buffers. Each round
    // writes what the kernel takes, then waits a little for the server's word.
    let deadline = Instant::now() + TIMEOUT;
    while echod
        .wait_for_log("over --max-memory", Duration::from_millis(10))
        .is_none()
    {
        assert!(
            Instant::now() < deadline,
            "never over --max-memory:\n{}",
            echod.log()
        );
        for hog in &mut hogs {
            while hog.write(&line).is_ok_and(|n| n > 0) {}
        }
    }
    assert_echoes(&mut good, &["served while others are paused"]);
    echod.expect_log("(out of memory)");
    assert_echoes(&mut good, &["served after the eviction"]);
    // The evicted ones get the replies they had queued, then the error, then a FIN.
    let log = echod.log();
    let mut evicted = 0;
    for hog in &mut hogs {
        let me = hog.local_addr().unwrap();
        if !log.contains(&format!("closing {me}: it holds")) {
            continue;
        }
        hog.set_nonblocking(false).unwrap();
        let got = read_to_fin(hog);
        assert!(got.ends_with(b"ERR out of memory\n"), "{me} got no error");
        evicted += 1;
    }
    assert!(evicted > 0, "no client was told it was out of memory");
    let rss_kb = echod.proc_status("VmRSS");
    assert!(rss_kb < 64 * 1024, "RSS {rss_kb} kB");
}

/// A client with tiny socket buffers, so that what it does not read backs up into the
/// server's own buffers quickly instead of into the kernel's.
fn connect_small(addr: std::net::SocketAddr) -> TcpStream {
    let socket = socket2::Socket::new(
        socket2::Domain::IPV4,
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )
    .unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.set_send_buffer_size(4096).unwrap();
    socket.connect(&addr.into()).unwrap();
    socket.into()
}
