//! Limits: too many clients, too few file descriptors, idle clients, slow and rude
//! clients. Each must be handled without disturbing anybody else.

mod util;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};
use util::*;

/// Reads what a client got first: the banner, or `ERR server busy` followed by EOF.
/// Panics on anything else.
fn greeted_or_busy(s: &mut TcpStream) -> bool {
    let mut first = vec![0; BANNER.len()];
    let mut got = 0;
    while got < first.len() {
        match s.read(&mut first[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) => panic!(
                "read failed ({e}) after {:?}",
                String::from_utf8_lossy(&first[..got])
            ),
        }
    }
    match &first[..got] {
        b if b == BANNER => true,
        b"ERR server busy\n" => {
            assert_eq!(read_to_fin(s), b"", "bytes after ERR server busy");
            false
        }
        other => panic!("unexpected greeting {:?}", String::from_utf8_lossy(other)),
    }
}

/// `--max-connections 5`: the sixth client gets `ERR server busy` and a clean EOF, the
/// five keep working, and once one leaves (its close logged) a new client is greeted.
#[test]
fn sixth_client_is_refused_busy_until_a_slot_frees() {
    let echod = Echod::start(&["--max-connections", "5", "--log-level", "debug"]);
    let mut five: Vec<TcpStream> = (0..5).map(|_| echod.connect_greeted()).collect();
    let mut sixth = echod.connect();
    assert_eq!(read_to_fin(&mut sixth), b"ERR server busy\n");
    assert!(echod.wait_for_log("refused", TIMEOUT).is_some());
    for (i, s) in five.iter_mut().enumerate() {
        assert_echoes(s, &[&format!("client {i} still served")]);
    }
    let leaving = five.remove(0);
    let addr = leaving.local_addr().unwrap();
    drop(leaving);
    echod
        .wait_for_log(&format!("closed {addr}:"), TIMEOUT)
        .unwrap_or_else(|| panic!("close of {addr} not logged:\n{}", echod.log()));
    let mut newcomer = echod.connect_greeted();
    assert_echoes(&mut newcomer, &["took the free slot"]);
    // Full again: the next one is refused.
    let mut seventh = echod.connect();
    assert_eq!(read_to_fin(&mut seventh), b"ERR server busy\n");
}

/// Started under `ulimit -n 64`, the server caps itself to what the descriptors allow
/// (64 - 32 reserved), refuses the rest of 120 clients with `ERR server busy`, stays up
/// and asleep while saturated, and greets a new client once the others are gone.
#[test]
fn fd_limit_caps_connections_and_refuses_the_rest() {
    let mut cmd = Command::new("sh");
    cmd.args([
        "-c",
        r#"ulimit -n 64; exec "$0" "$@""#,
        &echod_bin(),
        "--listen",
        "127.0.0.1:0",
        "--log-level",
        "debug",
    ]);
    let mut echod = Echod::spawn(cmd);
    assert!(
        echod
            .wait_for_log("file descriptor limit 64: serving at most 32", TIMEOUT)
            .is_some(),
        "{}",
        echod.log()
    );
    let mut clients: Vec<TcpStream> = (0..120).map(|_| echod.connect()).collect();
    // Every client has been either admitted or refused once the log says so.
    let deadline = Instant::now() + TIMEOUT;
    while echod.count_log("Connected with") + echod.count_log("refused") < 120 {
        assert!(
            Instant::now() < deadline,
            "not all handled:\n{}",
            echod.log()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let served: Vec<bool> = clients.iter_mut().map(greeted_or_busy).collect();
    let n_served = served.iter().filter(|s| **s).count();
    assert_eq!(n_served, 32, "served {n_served}");
    echod.assert_alive();

    // Saturated and quiet, the loop sleeps: nothing wakes it.
    let woke = echod.idle_wakeups(Duration::from_millis(500));
    assert_eq!(woke, 0, "{woke} wakeups in 500 ms while saturated");

    for (s, ok) in clients.iter_mut().zip(&served) {
        if *ok {
            assert_echoes(s, &["still served"]);
        }
    }
    drop(clients);
    echod.expect_log_count("closed 127.0.0.1:", 32);
    let mut newcomer = echod.connect_greeted();
    assert_echoes(&mut newcomer, &["room again"]);
    echod.assert_alive();
}

/// Really out of file descriptors (the limit lowered under the running server with
/// prlimit): clients beyond it wait in the listen queue, the server does not spin (it
/// wakes only to retry the accept), and as clients leave, every waiting one is greeted in turn.
#[test]
fn out_of_fds_clients_wait_without_spinning() {
    let mut echod = Echod::start(&["--log-level", "debug"]);
    echod.limit_fds(40);
    let mut clients: Vec<TcpStream> = (0..120).map(|_| echod.connect()).collect();
    echod
        .wait_for_log("out of file descriptors", TIMEOUT)
        .unwrap_or_else(|| panic!("never ran out of fds:\n{}", echod.log()));
    let admitted = echod.count_log("Connected with");
    assert!(
        (10..120).contains(&admitted),
        "admitted {admitted}:\n{}",
        echod.log()
    );
    // The accept queue is FIFO: the first `admitted` clients are the ones served.
    for s in &mut clients[..admitted] {
        assert_eq!(read_n(s, BANNER.len()), BANNER);
    }
    echod.assert_alive();

    // Not spinning: the loop wakes only for the accept retry, every 250 ms.
    let woke = echod.idle_wakeups(Duration::from_millis(1000));
    assert!(woke <= 6, "{woke} wakeups in 1 s while out of fds");
    assert_eq!(
        echod.count_log("out of file descriptors"),
        1,
        "the warning should be logged once per episode"
    );
    assert_echoes(&mut clients[0], &["served while out of fds"]);
    assert_silent(&mut clients[admitted], Duration::from_millis(200));

    // Leaving frees descriptors: every waiting client is then greeted, in order.
    let waiting = clients.split_off(admitted);
    drop(clients);
    for (i, mut s) in waiting.into_iter().enumerate() {
        assert_eq!(read_n(&mut s, BANNER.len()), BANNER, "waiting client {i}");
    }
    echod.expect_log("file descriptors available again");
    let mut newcomer = echod.connect_greeted();
    assert_echoes(&mut newcomer, &["all good"]);
    echod.assert_alive();
}

/// `--idle-timeout 1`: a silent client is told `ERR idle timeout` and closed (clean EOF)
/// about a second after its last activity, while a client sending a line every 300 ms
/// for 2 s is never reaped.
#[test]
fn idle_timeout_reaps_silent_clients_only() {
    let echod = Echod::start(&["--idle-timeout", "1"]);
    let mut silent = echod.connect_greeted();
    let t0 = Instant::now();
    let mut active = echod.connect_greeted();
    let chatter = std::thread::spawn(move || {
        for i in 0..7 {
            assert_echoes(&mut active, &[&format!("tick {i}")]);
            std::thread::sleep(Duration::from_millis(300));
        }
        active
    });
    assert_eq!(read_to_fin(&mut silent), b"ERR idle timeout\n");
    let took = t0.elapsed();
    eprintln!("silent client reaped after {took:?}");
    assert!(
        took >= Duration::from_millis(500) && took <= Duration::from_secs(5),
        "reaped after {took:?}"
    );
    let mut active = chatter.join().expect("the active client was disturbed");
    assert_echoes(&mut active, &["still here after 2 s"]);
    echod.expect_log("Connected with");
}

/// Slowloris: 20 clients each sending one byte every 100 ms and never a newline do not
/// slow anyone else down, and each is answered once its line ends.
#[test]
fn slowloris_does_not_disturb_others() {
    let echod = Echod::start(&[]);
    let mut slow: Vec<TcpStream> = (0..20).map(|_| echod.connect_greeted()).collect();
    for s in &slow {
        s.set_nodelay(true).unwrap();
    }
    let mut other = echod.connect_greeted();
    let mut worst = Duration::ZERO;
    for round in 0..15 {
        for s in &mut slow {
            s.write_all(b"z").unwrap();
        }
        let t = Instant::now();
        assert_echoes(&mut other, &[&format!("round {round}")]);
        worst = worst.max(t.elapsed());
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!("slowest round trip beside the slowloris clients: {worst:?}");
    assert!(
        worst < Duration::from_secs(3),
        "a round trip took {worst:?}"
    );
    for s in &mut slow {
        s.write_all(b"\n").unwrap();
    }
    for s in &mut slow {
        assert_eq!(read_n(s, 21), b"OK...zzzzzzzzzzzzzzz\n");
    }
}

/// Clients that reset (SO_LINGER 0) right after connecting, or with half a line sent,
/// do not disturb others: the server stays up and keeps serving.
#[test]
fn reset_clients_do_not_disturb_others() {
    let mut echod = Echod::start(&["--log-level", "debug"]);
    let mut other = echod.connect_greeted();
    let mut addrs = Vec::new();
    for i in 0..10 {
        let s = echod.connect();
        if i % 2 == 1 {
            // Half a line in the server's buffer, banner unread.
            (&s).write_all(b"half a li").unwrap();
        }
        addrs.push(s.local_addr().unwrap());
        set_linger_zero(&s);
        drop(s);
    }
    for addr in &addrs {
        echod
            .wait_for_log(&format!("closed {addr}:"), TIMEOUT)
            .unwrap_or_else(|| panic!("close of {addr} not logged:\n{}", echod.log()));
    }
    echod.assert_alive();
    assert_echoes(&mut other, &["unaffected", "by resets"]);
    let mut newcomer = echod.connect_greeted();
    assert_echoes(&mut newcomer, &["hello"]);
}
