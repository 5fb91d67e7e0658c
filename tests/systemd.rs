//! Running under systemd without systemd: socket activation, readiness notification,
//! and several `--reuse-port` processes sharing one port.

mod util;

use std::os::unix::net::UnixDatagram;
use std::process::Command;
use std::time::Duration;
use util::*;

/// Reads one datagram from the notify socket, failing the test on timeout.
fn next_notification(sock: &UnixDatagram) -> String {
    let mut buf = [0; 4096];
    let n = sock
        .recv(&mut buf)
        .expect("a notification from echod within the timeout");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

/// Waits for a notification containing `want`, skipping others (e.g. STATUS=).
fn wait_notification(sock: &UnixDatagram, want: &str) -> String {
    for _ in 0..20 {
        let msg = next_notification(sock);
        if msg.contains(want) {
            return msg;
        }
    }
    panic!("no {want} among 20 notifications");
}

/// Socket activation: the listener is created by someone else (here a tiny python3
/// stand-in for systemd), passed as descriptor 3 with `LISTEN_FDS=1` and `LISTEN_PID`
/// naming echod; echod serves on it and ignores `--listen`. `NOTIFY_SOCKET` gets
/// `READY=1` once echod is serving and `STOPPING=1` when the drain starts.
#[test]
fn socket_activation_and_readiness_notification() {
    if !have_tool("python3") {
        return;
    }
    let dir = std::env::temp_dir().join(format!("echod-sd-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let notify_path = dir.join("notify.sock");
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    notify.set_read_timeout(Some(TIMEOUT)).unwrap();

    // The stand-in binds, makes the socket fd 3, sets LISTEN_PID to its own pid (which
    // exec keeps) and becomes echod. --listen names a port that must NOT be used.
    let stand_in = r#"
import os, socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.bind(("127.0.0.1", 0))
s.listen(128)
if s.fileno() != 3:
    os.dup2(s.fileno(), 3)
os.set_inheritable(3, True)  # dup2 onto itself would keep close-on-exec
os.environ["LISTEN_FDS"] = "1"
os.environ["LISTEN_PID"] = str(os.getpid())
os.execv(sys.argv[1], sys.argv[1:])
"#;
    let mut cmd = Command::new("python3");
    cmd.args(["-c", stand_in, env!("CARGO_BIN_EXE_echod")])
        .args(["--listen", "127.0.0.1:1"])
        .env("NOTIFY_SOCKET", &notify_path);
    let mut echod = Echod::spawn(cmd);
    assert_ne!(
        echod.addr.port(),
        1,
        "the inherited socket is used, not --listen"
    );
    assert!(echod
        .log()
        .contains("socket activation: 1 inherited listeners"));
    assert_eq!(wait_notification(&notify, "READY=1").trim(), "READY=1");

    let mut s = echod.connect_greeted();
    send_and_close(&mut s, b"activated\n");
    assert_eq!(read_to_end(&mut s), replies(&["activated"]));

    echod.signal("TERM");
    wait_notification(&notify, "STOPPING=1");
    let status = echod.wait_exit(TIMEOUT).expect("echod exits after SIGTERM");
    assert_eq!(status.code(), Some(0));
    let _ = std::fs::remove_dir_all(&dir);
}

/// Outside systemd nothing is sent and nothing breaks (no NOTIFY_SOCKET, no LISTEN_FDS).
#[test]
fn without_systemd_the_notifications_are_a_no_op() {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_echod"));
    cmd.args(["--listen", "127.0.0.1:0"])
        .env_remove("NOTIFY_SOCKET")
        .env_remove("LISTEN_FDS");
    let echod = Echod::spawn(cmd);
    let mut s = echod.connect_greeted();
    send_and_close(&mut s, b"x\n");
    assert_eq!(read_to_end(&mut s), replies(&["x"]));
    assert!(!echod.log().contains("systemd notify"));
}

/// Two `--reuse-port` processes bind the same port and the kernel spreads connections
/// over both; without the flag the second bind fails with exit 1.
#[test]
fn reuse_port_processes_share_one_port() {
    let a = Echod::start(&["--reuse-port", "--listen", "127.0.0.1:0"]);
    let port_arg = a.addr.to_string();
    let b = Echod::start(&["--reuse-port", "--listen", &port_arg]);
    assert_eq!(b.addr, a.addr);
    for i in 0..40 {
        let mut s = connect(a.addr);
        assert_eq!(read_n(&mut s, BANNER.len()), BANNER);
        send_and_close(&mut s, format!("c{i}\n").as_bytes());
        assert_eq!(read_to_end(&mut s), replies(&[&format!("c{i}")]));
    }
    // Each process logs its accepts; the log readers may lag a little behind.
    let deadline = std::time::Instant::now() + TIMEOUT;
    let (mut served_a, mut served_b) = (0, 0);
    while std::time::Instant::now() < deadline {
        served_a = a.count_log("Connected with");
        served_b = b.count_log("Connected with");
        if served_a + served_b == 40 {
            break;
        }
        let _ = a.wait_for_log("never logged", Duration::from_millis(20));
    }
    assert_eq!(served_a + served_b, 40);
    // With 40 connections hashed over two listeners, all on one side has odds 2^-39.
    assert!(served_a > 0 && served_b > 0, "a={served_a} b={served_b}");

    let out = within(Duration::from_secs(10), move || {
        Command::new(env!("CARGO_BIN_EXE_echod"))
            .args(["--listen", &port_arg])
            .output()
            .unwrap()
    });
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot listen on"));
}
