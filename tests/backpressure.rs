//! Many clients on one thread, and clients that do not read: memory stays bounded and
//! nobody else is held up.

mod util;

use std::io::{BufRead, BufReader, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};
use util::*;

/// 300 clients connected at once are all answered correctly, each with its own lines,
/// while the server runs exactly one thread.
#[test]
fn three_hundred_clients_on_one_thread() {
    let echod = Echod::start(&[]);
    let mut clients: Vec<TcpStream> = (0..300).map(|_| echod.connect_greeted()).collect();
    assert_eq!(echod.proc_status("Threads"), 1);
    let lines =
        |i: usize| -> Vec<String> { (0..5).map(|j| format!("client {i} line {j}")).collect() };
    for (i, c) in clients.iter_mut().enumerate() {
        let input: String = lines(i).iter().map(|l| format!("{l}\n")).collect();
        c.write_all(input.as_bytes()).unwrap();
    }
    for (i, c) in clients.iter_mut().enumerate() {
        let mine = lines(i);
        let refs: Vec<&str> = mine.iter().map(String::as_str).collect();
        let want = replies(&refs);
        assert_eq!(
            String::from_utf8_lossy(&read_n(c, want.len())),
            String::from_utf8_lossy(&want),
            "client {i}"
        );
    }
    assert_eq!(echod.proc_status("Threads"), 1);
    for (i, c) in clients.iter_mut().enumerate() {
        send_and_close(c, format!("bye {i}").as_bytes());
    }
    for (i, c) in clients.iter_mut().enumerate() {
        assert_eq!(
            read_to_fin(c),
            format!("OK...bye {i}").into_bytes(),
            "client {i}"
        );
    }
    assert_eq!(echod.proc_status("Threads"), 1);
}

/// 500 clients connecting at the same instant (one thread each, released by a barrier)
/// all get the banner, and all 500 are then served at once.
#[test]
fn five_hundred_simultaneous_connects_all_get_the_banner() {
    const N: usize = 500;
    let echod = Echod::start(&[]);
    let addr = echod.addr;
    let barrier = Arc::new(Barrier::new(N));
    let handles: Vec<_> = (0..N)
        .map(|_| {
            let barrier = Arc::clone(&barrier);
            std::thread::Builder::new()
                .stack_size(128 * 1024)
                .spawn(move || -> Result<TcpStream, String> {
                    barrier.wait();
                    let mut s = TcpStream::connect_timeout(&addr, TIMEOUT)
                        .map_err(|e| format!("connect: {e}"))?;
                    s.set_read_timeout(Some(TIMEOUT)).unwrap();
                    s.set_write_timeout(Some(TIMEOUT)).unwrap();
                    let mut got = vec![0; BANNER.len()];
                    std::io::Read::read_exact(&mut s, &mut got)
                        .map_err(|e| format!("banner: {e}"))?;
                    if got != BANNER {
                        return Err(format!("banner: {:?}", String::from_utf8_lossy(&got)));
                    }
                    Ok(s)
                })
                .expect("spawn a client thread")
        })
        .collect();
    let mut clients = Vec::new();
    let mut failures = Vec::new();
    for h in handles {
        match h.join().expect("client thread") {
            Ok(s) => clients.push(s),
            Err(e) => failures.push(e),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {N} clients failed, e.g. {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert_eq!(echod.expect_log_count("Connected with", N), N);
    assert_eq!(echod.proc_status("Threads"), 1);
    for (i, c) in clients.iter_mut().enumerate() {
        c.write_all(format!("{i}\n").as_bytes()).unwrap();
    }
    for (i, c) in clients.iter_mut().enumerate() {
        let want = format!("OK...{i}\n");
        assert_eq!(read_n(c, want.len()), want.as_bytes(), "client {i}");
    }
}

/// Reads the replies to a flood of `bytes` bytes after a half-close: one reply per flood
/// line, in order, then the reply to the final fragment, then EOF. Returns the number of
/// line replies checked.
fn verify_flood_replies(s: TcpStream, bytes: u64) -> u64 {
    let full = bytes / FLOOD_LINE_LEN;
    let frag = (bytes % FLOOD_LINE_LEN) as usize;
    let mut r = BufReader::with_capacity(256 * 1024, s);
    let mut got = Vec::with_capacity(32);
    for j in 0..full {
        got.clear();
        r.read_until(b'\n', &mut got)
            .unwrap_or_else(|e| panic!("reading reply {j} of {full}: {e}"));
        let want = format!("OK...{}", flood_line(j));
        if got != want.as_bytes() {
            panic!(
                "reply {j} of {full}: got {:?}, want {want:?}",
                String::from_utf8_lossy(&got)
            );
        }
    }
    got.clear();
    std::io::Read::read_to_end(&mut r, &mut got)
        .unwrap_or_else(|e| panic!("reading the fragment reply: {e}"));
    let mut want = b"OK...".to_vec();
    want.extend_from_slice(&flood_line(full).as_bytes()[..frag]);
    if frag == 0 {
        want.clear();
    }
    assert_eq!(
        String::from_utf8_lossy(&got),
        String::from_utf8_lossy(&want),
        "after {full} replies"
    );
    full
}

/// A client that writes megabytes and never reads: its writes end up blocking (the
/// server stops reading it instead of buffering), the server's memory stays bounded,
/// other clients are served meanwhile, and when it finally reads, every line it sent is
/// answered, in order.
#[test]
fn a_client_that_never_reads_is_pushed_back_not_buffered() {
    let echod = Echod::start(&[]);
    let rss_before = echod.proc_status("VmRSS");
    let hog = echod.connect_greeted();
    let sent = Arc::new(AtomicU64::new(0));
    let mut writer_side = hog.try_clone().unwrap();
    let writer = {
        let sent = Arc::clone(&sent);
        std::thread::spawn(move || {
            flood(
                &mut writer_side,
                Duration::from_secs(1),
                256 << 20,
                Some(&sent),
            )
        })
    };
    // While the hog is still pouring data in, another client is served.
    let deadline = Instant::now() + TIMEOUT;
    while sent.load(Ordering::SeqCst) < 1 << 20 && !writer.is_finished() {
        assert!(Instant::now() < deadline, "the flood did not reach 1 MB");
        std::thread::sleep(Duration::from_millis(5));
    }
    let mut other = echod.connect_greeted();
    assert_echoes(&mut other, &["served during the flood"]);

    let flooded = writer.join().expect("flood thread");
    assert!(
        flooded.blocked,
        "256 MB went in without the writes ever blocking: the server is not pushing back"
    );
    assert!(
        flooded.bytes > 1 << 20,
        "only {} bytes before blocking",
        flooded.bytes
    );
    let rss_blocked = echod.proc_status("VmRSS");
    eprintln!(
        "flooded {} bytes before blocking; server VmRSS {rss_before} kB -> {rss_blocked} kB",
        flooded.bytes
    );
    assert!(
        rss_blocked < rss_before + 20 * 1024,
        "server RSS grew from {rss_before} kB to {rss_blocked} kB"
    );
    // Still blocked, still serving everybody else, still one thread.
    assert_echoes(&mut other, &["served while the hog is stuck"]);
    let mut third = echod.connect_greeted();
    assert_echoes(&mut third, &["a newcomer too"]);
    assert_eq!(echod.proc_status("Threads"), 1);

    // Now the hog reads: every line is answered, in order, then its fragment, then EOF.
    hog.shutdown(Shutdown::Write).unwrap();
    let checked = verify_flood_replies(hog, flooded.bytes);
    assert_eq!(checked, flooded.bytes / FLOOD_LINE_LEN);
    let peak = echod.proc_status("VmHWM");
    assert!(
        peak < rss_before + 20 * 1024,
        "server peak RSS {peak} kB (started at {rss_before} kB)"
    );
    assert_echoes(&mut other, &["still fine"]);
}

/// A client that resets its connection (SO_LINGER 0) in the middle of a stream of
/// replies disturbs nobody: the server logs the error close, stays up, and another
/// client, connected all along, is still answered; newcomers are greeted.
#[test]
fn a_reset_in_the_middle_of_replies_disturbs_nobody() {
    let mut echod = Echod::start(&["--log-level", "debug"]);
    let mut bystander = echod.connect_greeted();
    let mut hog = echod.connect_greeted();
    let hog_addr = hog.local_addr().unwrap();
    let flooded = flood(&mut hog, Duration::from_millis(300), 64 << 20, None);
    assert!(flooded.bytes > 100 * FLOOD_LINE_LEN);
    // Take a few replies, so the reset lands mid-stream.
    let first: Vec<u8> = (0..100)
        .flat_map(|j| format!("OK...{}", flood_line(j)).into_bytes())
        .collect();
    assert_eq!(read_n(&mut hog, first.len()), first);
    set_linger_zero(&hog);
    drop(hog);
    let closed = echod
        .wait_for_log(&format!("closed {hog_addr}:"), TIMEOUT)
        .unwrap_or_else(|| panic!("no close logged for {hog_addr}; log:\n{}", echod.log()));
    assert!(closed.contains(": error"), "{closed}");
    echod.assert_alive();
    assert_echoes(&mut bystander, &["still here", "after the reset"]);
    let mut newcomer = echod.connect_greeted();
    assert_echoes(&mut newcomer, &["hello"]);
}

/// Dropping a socket with unread replies (std only: Linux then sends a RST) while the
/// server is still writing to it: same outcome, nobody else notices.
#[test]
fn closing_with_unread_replies_disturbs_nobody() {
    let mut echod = Echod::start(&["--log-level", "debug"]);
    let mut bystander = echod.connect_greeted();
    let mut hog = echod.connect_greeted();
    let hog_addr = hog.local_addr().unwrap();
    flood(&mut hog, Duration::from_millis(300), 64 << 20, None);
    drop(hog);
    echod
        .wait_for_log(&format!("closed {hog_addr}:"), TIMEOUT)
        .unwrap_or_else(|| panic!("no close logged for {hog_addr}; log:\n{}", echod.log()));
    echod.assert_alive();
    assert_echoes(&mut bystander, &["unaffected"]);
}
