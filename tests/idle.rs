//! Idle means idle: once its clients are gone, the loop sleeps in `poll` with no alarm
//! set, whatever closed before; and a deadline never fires before its time.

mod util;

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use util::*;

/// Five clients come and go, each leaving the timer of its idle deadline behind (due
/// one second after it closed).
fn churn(echod: &Echod) {
    for i in 0..5 {
        let mut s = echod.connect_greeted();
        send_and_close(&mut s, format!("client {i}\n").as_bytes());
        assert_eq!(read_to_fin(&mut s), format!("OK...client {i}\n").as_bytes());
    }
}

/// After clients have come and gone under a short idle timeout, the loop does not wake
/// for 5 s with nothing open. (A timer left by a closed connection would ring in there.)
#[test]
fn after_churn_the_idle_loop_wakes_for_nothing() {
    let echod = Echod::start(&["--idle-timeout", "1"]);
    churn(&echod);
    let woke = echod.idle_wakeups(Duration::from_secs(5));
    assert_eq!(
        woke, 0,
        "the loop woke {woke} times in 5 s with no connection open"
    );
}

/// With 100 silent clients connected and `--idle-timeout 0`, the loop does not wake
/// either: nothing is scheduled.
#[test]
fn idle_clients_without_a_timeout_never_wake_the_loop() {
    let echod = Echod::start(&["--idle-timeout", "0"]);
    let clients: Vec<_> = (0..100).map(|_| echod.connect_greeted()).collect();
    let woke = echod.idle_wakeups(Duration::from_secs(3));
    assert_eq!(woke, 0, "woke {woke} times while idle");
    drop(clients);
}

/// The same as an operator checks it: the real `strace` attached to the idle server
/// after the churn sees one `epoll_wait`, the one it is sleeping in.
#[test]
fn after_churn_strace_sees_one_sleeping_epoll_wait() {
    if !have_tool("strace") {
        return;
    }
    let echod = Echod::start(&["--idle-timeout", "1"]);
    churn(&echod);
    let mut strace = Command::new("strace")
        .args(["-f", "-e", "trace=epoll_wait,epoll_pwait,epoll_pwait2"])
        .args(["-p", &echod.pid().to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run strace");
    // Watch for 4 s: the closed clients' deadlines all fall in this span.
    let started = Instant::now();
    std::thread::sleep(Duration::from_secs(4));
    let _ = strace.kill();
    let mut trace = String::new();
    strace
        .stderr
        .take()
        .expect("piped")
        .read_to_string(&mut trace)
        .expect("read strace's output");
    let _ = strace.wait();
    assert!(
        !trace.contains("Operation not permitted"),
        "strace could not attach:\n{trace}"
    );
    let calls = trace.matches("epoll_wait(").count() + trace.matches("epoll_pwait").count();
    assert_eq!(
        calls,
        1,
        "epoll_wait calls seen in {:?} of an idle server:\n{trace}",
        started.elapsed()
    );
    assert_echoes(&mut echod.connect_greeted(), &["still serving"]);
}

/// A deadline never fires early: `ERR idle timeout` comes at least the idle timeout after
/// the server last wrote to the client (which was after we started connecting).
#[test]
fn the_idle_timeout_never_fires_early() {
    let echod = Echod::start(&["--idle-timeout", "1"]);
    let clients: Vec<_> = (0..5)
        .map(|i| {
            let addr = echod.addr;
            std::thread::spawn(move || {
                // Spread the connects over a millisecond's phases.
                std::thread::sleep(Duration::from_micros(230 * i));
                let started = Instant::now();
                let mut s = connect(addr);
                assert_eq!(read_n(&mut s, BANNER.len()), BANNER);
                assert_eq!(read_to_fin(&mut s), b"ERR idle timeout\n");
                started.elapsed()
            })
        })
        .collect();
    for client in clients {
        let took = client.join().expect("a client failed");
        assert!(took >= Duration::from_secs(1), "timed out after {took:?}");
    }
}
