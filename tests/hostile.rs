//! Clients and surroundings that try to break the daemon: urgent data, a shutdown while
//! out of descriptors, absurd flag values. Each test drives the real binary.

mod util;

use std::io::Write;
use std::net::TcpStream;
use std::time::Duration;

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
    let limit = libc::rlimit {
        rlim_cur: 40,
        rlim_max: 40,
    };
    // SAFETY: plain syscall on our own child, with a valid struct and a null old value.
    let rc = unsafe {
        libc::prlimit(
            echod.pid() as libc::pid_t,
            libc::RLIMIT_NOFILE,
            &limit,
            std::ptr::null_mut(),
        )
    };
    assert_eq!(rc, 0, "prlimit: {}", std::io::Error::last_os_error());
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
