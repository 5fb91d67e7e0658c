//! Start-up, command line, signals and the graceful drain, against the real binary.

mod util;

use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};
use util::*;

/// Every flag the daemon accepts, as `--help` must list it.
const FLAGS: &[&str] = &[
    "--listen",
    "--backlog",
    "--banner",
    "--prefix",
    "--raw",
    "--telnet",
    "--max-line",
    "--max-pending",
    "--max-connections",
    "--idle-timeout",
    "--drain-timeout",
    "--send-timeout",
    "--max-per-ip",
    "--max-memory",
    "--metrics",
    "--upgrade-binary",
    "--resume-formats",
    "--log-level",
    "--help",
    "--version",
];

/// Every `Long("…")` flag the parser in `src/config.rs` matches on, so a flag added
/// there without a `--help` line is caught.
fn parsed_flags() -> Vec<String> {
    let source = include_str!("../src/config.rs");
    source
        .split("Long(\"")
        .skip(1)
        .filter_map(|rest| rest.split('"').next())
        .map(|name| format!("--{name}"))
        .collect()
}

/// `--help` (and `-h`) lists every flag on stdout (the documented ones and every one the
/// parser accepts) and exits 0 without listening.
#[test]
fn help_lists_every_flag() {
    let parsed = parsed_flags();
    assert!(parsed.len() >= 12, "flags found in config.rs: {parsed:?}");
    for arg in ["--help", "-h"] {
        let out = run_echod(&[arg]);
        assert!(out.status.success(), "{arg}: {}", out.status);
        let help = String::from_utf8_lossy(&out.stdout);
        for flag in FLAGS
            .iter()
            .copied()
            .chain(parsed.iter().map(String::as_str))
        {
            assert!(help.contains(flag), "{arg} output lacks {flag}:\n{help}");
        }
        assert!(!String::from_utf8_lossy(&out.stderr).contains("listening"));
    }
}

/// `--version` (and `-V`) prints the name and version, exit 0.
#[test]
fn version_prints_the_version() {
    for arg in ["--version", "-V"] {
        let out = run_echod(&[arg]);
        assert!(out.status.success(), "{arg}: {}", out.status);
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            format!("echod {}\n", env!("CARGO_PKG_VERSION"))
        );
    }
}

/// A bad command line exits 2 with a one-line reason on stderr (naming the culprit),
/// and nothing on stdout.
#[test]
fn bad_flags_exit_2_with_one_line() {
    for (args, culprit) in [
        (&["--nope"][..], "--nope"),
        (&["--max-line", "0"], "--max-line"),
        (&["--listen", "localhost:80"], "localhost:80"),
        (&["--listen"], "--listen"),
        (&["--idle-timeout", "soon"], "--idle-timeout"),
        (&["--raw", "--banner", "x"], "--banner"),
    ] {
        let out = run_echod(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: stderr {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{args:?}: stderr {stderr:?}");
        assert!(stderr.ends_with('\n'), "{args:?}: {stderr:?}");
        assert!(stderr.contains(culprit), "{args:?}: {stderr:?}");
        assert!(out.stdout.is_empty(), "{args:?}: stdout {:?}", out.stdout);
    }
}

/// A port already taken: exit 1, and stderr names the address and the OS error.
#[test]
fn bind_failure_exits_1_naming_address_and_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = run_echod(&["--listen", &addr]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr: {stderr}");
    assert!(
        stderr.contains(&addr),
        "stderr does not name {addr}: {stderr}"
    );
    assert!(
        // glibc says "Address already in use", musl "Address in use".
        stderr.contains("in use") && stderr.contains("os error 98"),
        "stderr lacks the OS error: {stderr}"
    );
    assert!(!stderr.contains("listening on"), "{stderr}");
}

/// SIGTERM with no clients: exit 0, quickly, after logging the drain and the stats.
#[test]
fn sigterm_with_no_clients_exits_0_quickly() {
    let mut echod = Echod::start(&[]);
    let t0 = Instant::now();
    echod.signal("TERM");
    let status = echod
        .wait_exit(TIMEOUT)
        .unwrap_or_else(|| panic!("still running; log:\n{}", echod.log()));
    assert!(status.success(), "{status}; log:\n{}", echod.log());
    assert!(t0.elapsed() < Duration::from_secs(3), "{:?}", t0.elapsed());
    assert!(echod.wait_for_log("shut down cleanly", TIMEOUT).is_some());
}

/// SIGINT is a shutdown request too: exit 0.
#[test]
fn sigint_exits_0() {
    let mut echod = Echod::start(&[]);
    echod.signal("INT");
    let status = echod.wait_exit(TIMEOUT).expect("exit after SIGINT");
    assert!(status.success(), "{status}; log:\n{}", echod.log());
    echod.expect_log("SIGINT: draining");
}

/// SIGHUP is logged and ignored: a connected client and a new one are still served.
#[test]
fn sighup_is_ignored() {
    let mut echod = Echod::start(&[]);
    let mut before = echod.connect_greeted();
    echod.signal("HUP");
    assert!(
        echod.wait_for_log("SIGHUP", TIMEOUT).is_some(),
        "no SIGHUP log line:\n{}",
        echod.log()
    );
    echod.assert_alive();
    assert_echoes(&mut before, &["after hup"]);
    let mut after = echod.connect_greeted();
    assert_echoes(&mut after, &["new client"]);
}

/// SIGUSR1 logs a one-line `stats:` summary with the live counters, and changes nothing.
#[test]
fn sigusr1_logs_stats() {
    let mut echod = Echod::start(&[]);
    let mut s = echod.connect_greeted();
    assert_echoes(&mut s, &["one", "two"]);
    echod.signal("USR1");
    let line = echod
        .wait_for_log("stats: accepted=", TIMEOUT)
        .unwrap_or_else(|| panic!("no stats line:\n{}", echod.log()));
    assert!(line.contains("accepted=1 active=1"), "{line}");
    assert!(line.contains("lines=2"), "{line}");
    echod.assert_alive();
    assert_echoes(&mut s, &["three"]);
}

/// Nothing is lost on shutdown: 20 clients send 500 lines each while the server is
/// stopped (SIGSTOP), then SIGTERM + SIGCONT: every client gets all 500 replies in order
/// and then a clean EOF (not a reset), and the server exits 0.
#[test]
fn sigterm_drain_loses_nothing() {
    const CLIENTS: usize = 20;
    const LINES: usize = 500;
    let mut echod = Echod::start(&[]);
    let mut clients: Vec<TcpStream> = (0..CLIENTS).map(|_| echod.connect_greeted()).collect();
    echod.signal("STOP");
    assert!(
        echod.wait_proc_state('T', TIMEOUT),
        "echod did not stop (state {})",
        echod.proc_state()
    );
    let line = |c: usize, l: usize| format!("client {c:02} line {l:03}");
    for (c, s) in clients.iter_mut().enumerate() {
        let input: String = (0..LINES).map(|l| format!("{}\n", line(c, l))).collect();
        s.write_all(input.as_bytes()).unwrap();
    }
    echod.signal("TERM");
    echod.signal("CONT");
    for (c, s) in clients.iter_mut().enumerate() {
        let got = read_to_fin(s);
        let want: String = (0..LINES)
            .map(|l| format!("OK...{}\n", line(c, l)))
            .collect();
        assert_eq!(
            String::from_utf8_lossy(&got),
            want,
            "client {c}; log:\n{}",
            echod.log()
        );
    }
    drop(clients);
    let status = echod
        .wait_exit(TIMEOUT)
        .unwrap_or_else(|| panic!("no exit after the drain; log:\n{}", echod.log()));
    assert!(status.success(), "{status}; log:\n{}", echod.log());
    echod.expect_log("shutdown=20");
}

/// On SIGTERM a client's unterminated fragment is answered too (no newline added),
/// then FIN.
#[test]
fn sigterm_answers_the_fragment() {
    let mut echod = Echod::start(&[]);
    let mut s = echod.connect_greeted();
    assert_echoes(&mut s, &["whole"]);
    // On loopback the bytes are in the server's socket when `write` returns; the drain
    // must read them whether or not the loop has seen them yet.
    s.write_all(b"partial").unwrap();
    let mut probe = echod.connect_greeted();
    echod.signal("TERM");
    assert_eq!(read_to_fin(&mut s), b"OK...partial");
    assert_eq!(read_to_fin(&mut probe), b"");
    drop((s, probe));
    let status = echod.wait_exit(TIMEOUT).expect("exit");
    assert!(status.success(), "{status}");
}

/// After SIGTERM an idle client reads a clean EOF (`Ok(0)`), not a reset.
#[test]
fn sigterm_ends_idle_connections_with_fin() {
    let mut echod = Echod::start(&[]);
    let mut idle = echod.connect_greeted();
    echod.signal("TERM");
    assert_eq!(read_to_fin(&mut idle), b"");
    drop(idle);
    let status = echod.wait_exit(TIMEOUT).expect("exit");
    assert!(status.success(), "{status}; log:\n{}", echod.log());
}

/// `--drain-timeout 1`: a client that sent megabytes and never reads cannot hold the
/// shutdown: the server exits 0 about a second after SIGTERM.
#[test]
fn drain_timeout_bounds_the_shutdown() {
    let mut echod = Echod::start(&["--drain-timeout", "1"]);
    let mut hog = echod.connect_greeted();
    let flooded = flood(&mut hog, Duration::from_millis(300), 256 << 20, None);
    assert!(flooded.blocked, "the flood never blocked");
    let t0 = Instant::now();
    echod.signal("TERM");
    let status = echod
        .wait_exit(TIMEOUT)
        .unwrap_or_else(|| panic!("still running; log:\n{}", echod.log()));
    let took = t0.elapsed();
    assert!(status.success(), "{status}; log:\n{}", echod.log());
    assert!(
        took >= Duration::from_millis(900) && took <= Duration::from_secs(4),
        "exited {took:?} after SIGTERM; log:\n{}",
        echod.log()
    );
    echod.expect_log("drain timeout: closing 1 connections");
    drop(hog);
}

/// A second SIGTERM during a long drain exits at once.
#[test]
fn second_sigterm_exits_at_once() {
    let mut echod = Echod::start(&["--drain-timeout", "60"]);
    let mut hog = echod.connect_greeted();
    let flooded = flood(&mut hog, Duration::from_millis(300), 256 << 20, None);
    assert!(flooded.blocked, "the flood never blocked");
    echod.signal("TERM");
    assert!(
        echod.wait_for_log("draining", TIMEOUT).is_some(),
        "{}",
        echod.log()
    );
    // The drain is stuck on the hog: the server is still running.
    std::thread::sleep(Duration::from_millis(300));
    echod.assert_alive();
    let t0 = Instant::now();
    echod.signal("TERM");
    let status = echod
        .wait_exit(Duration::from_secs(5))
        .unwrap_or_else(|| panic!("second SIGTERM ignored; log:\n{}", echod.log()));
    assert!(t0.elapsed() < Duration::from_secs(3), "{:?}", t0.elapsed());
    assert!(status.success(), "{status}; log:\n{}", echod.log());
    echod.expect_log("second shutdown signal");
    drop(hog);
}

/// The drain also answers a client whose replies are stuck: with a tiny receive buffer,
/// a 4000-byte prefix and `--max-pending 1024`, the server has stopped reading it (its
/// lines wait in the server's socket, their replies would not fit anywhere) when SIGTERM
/// comes; once the client reads, every line and the final fragment are answered, then FIN.
#[test]
fn sigterm_drain_answers_a_backpressured_client() {
    let prefix = "P".repeat(4000);
    let mut echod = Echod::start(&[
        "--prefix",
        &prefix,
        "--max-pending",
        "1024",
        "--drain-timeout",
        "30",
    ]);
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    sock.connect_timeout(&echod.addr.into(), TIMEOUT).unwrap();
    let mut s: TcpStream = sock.into();
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    s.set_write_timeout(Some(TIMEOUT)).unwrap();
    assert_eq!(read_n(&mut s, BANNER.len()), BANNER);
    // 3000 lines (27 kB) sit in the server's receive buffer, while their 12 MB of
    // replies cannot fit in the socket buffers.
    const LINES: u64 = 3000;
    let input: String = (0..LINES).map(flood_line).collect();
    s.write_all(input.as_bytes()).unwrap();
    s.write_all(b"tail").unwrap();
    let mut bystander = echod.connect_greeted();
    let probe = format!("{prefix}probe\n");
    bystander.write_all(b"probe\n").unwrap();
    assert_eq!(read_n(&mut bystander, probe.len()), probe.as_bytes());
    echod.signal("TERM");
    echod.expect_log("draining");
    let got = read_to_fin(&mut s);
    let mut want: String = (0..LINES)
        .map(|j| format!("{prefix}{}", flood_line(j)))
        .collect();
    want.push_str(&prefix);
    want.push_str("tail");
    assert_eq!(got.len(), want.len(), "log:\n{}", echod.log());
    assert!(got == want.as_bytes(), "replies differ");
    assert_eq!(read_to_fin(&mut bystander), b"");
    drop((s, bystander));
    let status = echod.wait_exit(TIMEOUT).expect("exit after the drain");
    assert!(status.success(), "{status}; log:\n{}", echod.log());
    echod.expect_log("shutdown=2");
}
