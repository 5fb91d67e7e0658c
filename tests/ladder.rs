//! The ladder in `examples/`: every server step holds one shared conversation (the
//! banner, replies byte-exact however the writes are split, the final fragment on
//! half-close, many clients at once, a burst larger than the socket buffers), except
//! where a step's lesson is that it fails (step 2 serves one client at a time). Step 5's
//! limits, step 7's idle timeout and drain, and the step 1 client against the real echod
//! are tested here too, and step 6's and step 7's state machines without a network.

mod util;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};
use util::*;

/// Step 6's `Conn`, tested below without a socket (the example's `main` is not run).
#[allow(dead_code)]
#[rustfmt::skip] // formatted as an example, by examples/rustfmt.toml
#[path = "../examples/step6_sans_io.rs"]
mod sans_io6;

/// Step 7's `Conn`, with its deadline.
#[allow(dead_code)]
#[rustfmt::skip]
#[path = "../examples/step7_timers_signals.rs"]
mod timers7;

/// Builds the examples once per test run (`cargo test --test ladder` does not build
/// them) into the profile directory these tests were built into; returns that directory.
fn examples_dir() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        // .../target/<profile>/deps/ladder-HASH → .../target/<profile>
        let test_exe = std::env::current_exe().expect("the test's own path");
        let profile_dir = test_exe
            .parent()
            .and_then(|d| d.parent())
            .expect("target/<profile>");
        let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
            Some("debug") => "dev",
            Some(other) => other,
            None => panic!("no profile directory above {}", test_exe.display()),
        };
        let built = Command::new(env!("CARGO"))
            .args(["build", "--quiet", "--examples", "--profile", profile])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .expect("run cargo build");
        let stderr = String::from_utf8_lossy(&built.stderr);
        assert!(built.status.success(), "cargo build --examples:\n{stderr}");
        profile_dir.join("examples")
    })
}

fn example(name: &str) -> Command {
    Command::new(examples_dir().join(format!("{name}{}", std::env::consts::EXE_SUFFIX)))
}

/// Starts a server step on a free port (learned from its `listening on` line); the guard
/// kills it when dropped.
fn start(step: &str) -> Echod {
    let mut cmd = example(step);
    cmd.arg("127.0.0.1:0");
    Echod::spawn(cmd)
}

/// Starts step 7 with an idle timeout of `secs` seconds.
fn start_step7(secs: &str) -> Echod {
    let mut cmd = example("step7_timers_signals");
    cmd.arg("127.0.0.1:0").env("IDLE_TIMEOUT", secs);
    Echod::spawn(cmd)
}

// ---- the shared conversation -----------------------------------------------------------

/// Lines split across writes in odd places are answered whole, `\r\n` kept, nothing more.
fn replies_to_lines_split_across_writes(server: &Echod) {
    let mut s = server.connect_greeted();
    s.set_nodelay(true).unwrap();
    s.write_all(b"hel").unwrap();
    send_expect(&mut s, b"lo\nwor", b"OK...hello\n");
    send_expect(&mut s, b"ld\r\n", b"OK...world\r\n");
    send_expect(&mut s, b"\n", b"OK...\n");
    s.write_all(b"a\nb").unwrap();
    send_expect(&mut s, b"\nc\n", b"OK...a\nOK...b\nOK...c\n");
    s.shutdown(Shutdown::Write).unwrap();
    assert_eq!(read_to_fin(&mut s), b"");
}

/// Half-close: the lines, then the final fragment without a newline added, then FIN.
fn half_close_answers_the_final_fragment(server: &Echod) {
    let mut s = server.connect_greeted();
    send_and_close(&mut s, b"one\nfrag");
    assert_eq!(read_to_fin(&mut s), b"OK...one\nOK...frag");
}

/// A client that half-closes at once gets the banner, then FIN.
fn silent_client_gets_the_banner_then_fin(server: &Echod) {
    let mut s = server.connect();
    s.shutdown(Shutdown::Write).unwrap();
    assert_eq!(read_to_fin(&mut s), BANNER);
}

/// 50 clients open at once each get their own replies, in order; a second wave reuses
/// the slab keys the first freed. They all connect before any is greeted, so several
/// wait in the accept queue behind one READABLE edge.
fn fifty_concurrent_clients_get_their_own_replies(server: &Echod) {
    for wave in 0..2 {
        let mut clients: Vec<_> = (0..50).map(|_| server.connect()).collect();
        for s in &mut clients {
            assert_eq!(read_n(s, BANNER.len()), BANNER);
        }
        for round in 0..3 {
            for (i, s) in clients.iter_mut().enumerate() {
                s.write_all(format!("w{wave} c{i} r{round}\n").as_bytes())
                    .unwrap();
            }
        }
        for s in &clients {
            s.shutdown(Shutdown::Write).unwrap();
        }
        for (i, s) in clients.iter_mut().enumerate() {
            let lines: Vec<String> = (0..3).map(|r| format!("w{wave} c{i} r{r}")).collect();
            let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
            assert_eq!(read_to_fin(s), replies(&lines), "client {i} of wave {wave}");
        }
    }
}

/// A client with a 4 KiB receive buffer.
fn small_buffered_client(server: &Echod) -> TcpStream {
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    sock.connect_timeout(&server.addr.into(), TIMEOUT).unwrap();
    let s: TcpStream = sock.into();
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    s.set_write_timeout(Some(TIMEOUT)).unwrap();
    s
}

/// 1 MB of lines, written in chunks that cut lines anywhere while we read concurrently,
/// are answered completely and in order. Our small receive buffer makes the server's
/// writes hit `WouldBlock` over and over; we half-close only after the last reply, so
/// the replies still queued when our lines stop go out on WRITABLE edges alone.
fn large_burst_is_answered_completely_and_in_order(server: &Echod) {
    let mut s = small_buffered_client(server);
    let lines: Vec<String> = (0..100_000).map(|i| format!("line {i:05}")).collect();
    let input: Vec<u8> = lines
        .iter()
        .flat_map(|l| format!("{l}\n").into_bytes())
        .collect();
    let mut writer = s.try_clone().unwrap();
    let sender = std::thread::spawn(move || {
        for chunk in input.chunks(65_537) {
            writer.write_all(chunk).unwrap();
        }
    });
    let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
    let want = [BANNER, &replies(&lines)].concat();
    let got = read_n(&mut s, want.len());
    sender.join().expect("the writer thread");
    assert!(got == want, "the replies differ from the lines sent");
    s.shutdown(Shutdown::Write).unwrap();
    assert_eq!(read_to_fin(&mut s), b"");
}

/// The conversation every server step holds with one client at a time.
fn one_client_conversation(step: &str) {
    let server = start(step);
    replies_to_lines_split_across_writes(&server);
    half_close_answers_the_final_fragment(&server);
    silent_client_gets_the_banner_then_fin(&server);
    large_burst_is_answered_completely_and_in_order(&server);
}

/// One test per step and part, so that a failure names both.
macro_rules! conversation {
    ($($name:ident: $step:literal;)*) => {$(
        mod $name {
            use super::*;
            #[test]
            fn holds_the_conversation() {
                one_client_conversation($step);
            }
            #[test]
            fn serves_many_clients_at_once() {
                fifty_concurrent_clients_get_their_own_replies(&start($step));
            }
        }
    )*};
}

conversation! {
    step3: "step3_threads";
    step4: "step4_reactor";
    step5: "step5_bounded";
    step6: "step6_sans_io";
    step7: "step7_timers_signals";
}

/// Step 2 holds the conversation with one client at a time; many at once is below.
#[test]
fn step2_holds_the_conversation() {
    one_client_conversation("step2_blocking");
}

/// Step 2's lesson: while it serves one client, a second is connected (the kernel
/// completed its handshake) and hears nothing, not even the banner, until the first
/// leaves.
#[test]
fn step2_cannot_serve_two_clients_at_once() {
    let server = start("step2_blocking");
    let mut first = server.connect_greeted();
    let mut second = server.connect();
    second.write_all(b"hello?\n").unwrap();
    assert_silent(&mut second, Duration::from_millis(300));
    send_expect(&mut first, b"still here\n", b"OK...still here\n");
    assert_silent(&mut second, Duration::from_millis(100));
    send_and_close(&mut first, b"bye\n");
    assert_eq!(read_to_fin(&mut first), b"OK...bye\n");
    // Only now is the second accepted: its banner, then the reply to what it sent.
    assert_eq!(read_n(&mut second, BANNER.len()), BANNER);
    assert_eq!(read_n(&mut second, 12), b"OK...hello?\n");
}

// ---- step 5's limits (and steps 6 and 7, which keep them) ------------------------------

const MAX_LINE: usize = 64 * 1024;

/// A line of exactly `MAX_LINE` bytes is answered; one byte more gets `ERR line too
/// long` after the replies to the lines before it, then our FIN, and a clean close.
fn max_line(step: &str) {
    let server = start(step);
    let mut s = server.connect_greeted();
    let longest = [vec![b'x'; MAX_LINE], b"\n".to_vec()].concat();
    send_expect(&mut s, &longest, &[b"OK...", &longest[..]].concat());
    s.write_all(b"ok\n").unwrap();
    s.write_all(&vec![b'y'; MAX_LINE + 1]).unwrap();
    assert_eq!(read_n(&mut s, 26), b"OK...ok\nERR line too long\n");
    // Our FIN came; what we still send is read and dropped until our own FIN.
    assert_eq!(read_to_fin(&mut s), b"");
    send_and_close(&mut s, b"dropped\n");
}

/// Backpressure: a client that sends without reading is stopped (its writes block)
/// after a few megabytes at most, sitting in kernel buffers while the server holds at
/// most `MAX_PENDING` of replies; once it reads, every reply arrives, in order, and the
/// final fragment too: the server resumed reading by itself, with no new edge.
fn backpressure(step: &str) {
    let server = start(step);
    let mut s = server.connect_greeted();
    let flooded = flood(&mut s, Duration::from_millis(300), 64 << 20, None);
    assert!(
        flooded.blocked,
        "never blocked after {} bytes",
        flooded.bytes
    );
    let rss_kib = server.proc_status("VmRSS");
    assert!(rss_kib < 32 * 1024, "the server's RSS is {rss_kib} KiB");
    s.shutdown(Shutdown::Write).unwrap();
    let got = read_to_fin(&mut s);
    let lines = flooded.bytes / FLOOD_LINE_LEN;
    let mut want = Vec::new();
    for j in 0..lines {
        want.extend_from_slice(b"OK...");
        want.extend_from_slice(flood_line(j).as_bytes());
    }
    let fragment = &flood_line(lines)[..(flooded.bytes % FLOOD_LINE_LEN) as usize];
    if !fragment.is_empty() {
        want.extend_from_slice(format!("OK...{fragment}").as_bytes());
    }
    assert!(
        got == want,
        "{} bytes of replies, {} expected",
        got.len(),
        want.len()
    );
}

/// Fairness: while one client sends as fast as it can (and reads its replies), another
/// is answered.
fn fairness(step: &str) {
    let server = start(step);
    let hog = server.connect_greeted();
    let stop = Arc::new(AtomicBool::new(false));
    let mut reader = hog.try_clone().unwrap();
    let drain = std::thread::spawn(move || {
        let mut buf = vec![0; 1 << 16];
        while reader.read(&mut buf).is_ok_and(|n| n > 0) {}
    });
    let chunk: Vec<u8> = (0..7000u64)
        .flat_map(|j| flood_line(j).into_bytes())
        .collect();
    let flag = Arc::clone(&stop);
    let mut writer = hog.try_clone().unwrap();
    let flooder = std::thread::spawn(move || {
        while !flag.load(Ordering::Relaxed) {
            writer.write_all(&chunk).unwrap();
        }
    });
    let mut probe = server.connect_greeted();
    let started = Instant::now();
    send_expect(&mut probe, b"probe\n", b"OK...probe\n");
    stop.store(true, Ordering::Relaxed);
    flooder.join().unwrap();
    hog.shutdown(Shutdown::Write).unwrap();
    drain.join().unwrap();
    assert!(started.elapsed() < TIMEOUT);
}

macro_rules! limits {
    ($($name:ident: $step:literal;)*) => {$(
        mod $name {
            use super::*;
            #[test]
            fn max_line_ends_the_conversation() {
                max_line($step);
            }
            #[test]
            fn backpressure_stops_reading_and_resumes() {
                backpressure($step);
            }
            #[test]
            fn a_fast_sender_does_not_starve_the_others() {
                fairness($step);
            }
        }
    )*};
}

limits! {
    step5_limits: "step5_bounded";
    step6_limits: "step6_sans_io";
    step7_limits: "step7_timers_signals";
}

// ---- step 7: time and signals ----------------------------------------------------------

/// A silent client gets `ERR idle timeout` after the idle time, then our FIN.
#[test]
fn step7_idle_timeout() {
    let server = start_step7("0.3");
    let started = Instant::now();
    let mut s = server.connect_greeted();
    assert_eq!(read_to_fin(&mut s), b"ERR idle timeout\n");
    assert!(started.elapsed() >= Duration::from_millis(300));
}

/// Idle means no wakeups: once its only client has gone, the loop sleeps in `poll` with
/// no timeout, even though that client's deadline is still in the heap.
#[test]
fn step7_a_closed_client_leaves_no_wakeup() {
    let server = start_step7("0.2");
    let mut s = server.connect();
    send_and_close(&mut s, b"bye");
    assert_eq!(read_to_fin(&mut s), [BANNER, b"OK...bye"].concat());
    drop(s);
    // Back asleep in `poll`; from now on it must not wake up, though the dead client's
    // deadline (0.2 s after it connected) falls in the window below.
    assert!(server.wait_proc_state('S', TIMEOUT));
    let before = server.ctxt_switches();
    assert_silent_for(&server, Duration::from_millis(500));
    assert_eq!(server.ctxt_switches(), before, "the idle loop woke up");
}

/// Waits `d` (observing that nothing happens is the point of the test).
fn assert_silent_for(server: &Echod, d: Duration) {
    assert!(server.wait_for_log("never logged", d).is_none());
}

/// SIGTERM: what a client already sent is answered, the final fragment too, then our
/// FIN; once the client closes, the server exits 0. New clients are refused meanwhile.
#[test]
fn step7_sigterm_drains_and_exits_0() {
    let mut server = start("step7_timers_signals");
    let mut s = server.connect_greeted();
    send_expect(&mut s, b"pending\npartial", b"OK...pending\n");
    server.signal("TERM");
    server.expect_log("draining 1 clients");
    assert_eq!(read_to_fin(&mut s), b"OK...partial");
    assert!(
        TcpStream::connect(server.addr).is_err(),
        "the listener is closed"
    );
    drop(s);
    let status = server.wait_exit(TIMEOUT).expect("exits after the drain");
    assert_eq!(status.code(), Some(0));
}

// ---- step 1: the blocking client, against the real daemon ------------------------------

/// Step 1 sends `GET / HTTP/1.1\r\n\r\n`, half-closes and prints what echod answers.
#[test]
fn step1_client_talks_to_echod() {
    let echod = Echod::start(&[]);
    let mut cmd = example("step1_client");
    cmd.args(["127.0.0.1", &echod.addr.port().to_string()]);
    let out = run_with_input(cmd, b"", TIMEOUT);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let want = [BANNER, b"OK...GET / HTTP/1.1\r\nOK...\r\n"].concat();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&want)
    );
}

/// Without HOST and PORT it says how to call it and exits 2.
#[test]
fn step1_client_usage() {
    let out = run_with_input(example("step1_client"), b"", TIMEOUT);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("usage: step1_client HOST PORT"));
}

// ---- steps 6 and 7: the state machine, without a network -------------------------------

/// Feeds `chunks` to a step 6 `Conn`, then the end of the stream; returns all it said.
/// Empty chunks are left out: a read returns at least one byte, or 0 at the end.
fn talk6(conn: &mut sans_io6::Conn, chunks: &[&[u8]]) -> Vec<u8> {
    for chunk in chunks.iter().filter(|c| !c.is_empty()) {
        conn.handle_input(chunk);
    }
    conn.handle_input(b"");
    let out = conn.poll_output().to_vec();
    conn.advance_output(out.len());
    out
}

/// However the bytes are cut, at every pair of offsets, the replies are the same.
#[test]
fn step6_replies_do_not_depend_on_how_the_bytes_are_split() {
    let input = b"hello\nwor\r\nld\n\nfrag";
    let want = [BANNER, b"OK...hello\nOK...wor\r\nOK...ld\nOK...\nOK...frag"].concat();
    for i in 0..=input.len() {
        for j in i..=input.len() {
            let chunks = [&input[..i], &input[i..j], &input[j..]];
            let got = talk6(&mut sans_io6::Conn::new(), &chunks);
            assert_eq!(got, want, "split at {i} and {j}");
        }
    }
}

/// A line too long: the earlier replies, the error, our FIN once (after the output),
/// then what the client sends is dropped until its FIN finishes the conversation.
#[test]
fn step6_a_line_too_long_ends_the_conversation() {
    let mut conn = sans_io6::Conn::new();
    conn.handle_input(b"ok\n");
    conn.handle_input(&vec![b'x'; MAX_LINE + 1]);
    assert!(conn
        .poll_output()
        .ends_with(b"OK...ok\nERR line too long\n"));
    assert!(!conn.poll_fin(), "the FIN waits for the replies");
    conn.advance_output(conn.poll_output().len());
    assert!(conn.poll_fin() && !conn.poll_fin(), "then comes once");
    assert!(
        conn.wants_read(),
        "we read on, to drop, until the client's FIN"
    );
    assert_eq!(talk6(&mut conn, &[b"dropped\n"]), b"");
    assert!(conn.is_finished());
}

/// Backpressure: no reading with `MAX_PENDING` queued, reading again once it drained.
#[test]
fn step6_backpressure_stops_reading_until_the_replies_drain() {
    let mut conn = sans_io6::Conn::new();
    while conn.wants_read() {
        conn.handle_input(b"a line\n");
    }
    assert!(conn.poll_output().len() >= 64 * 1024);
    conn.advance_output(conn.poll_output().len());
    assert!(conn.wants_read());
    assert!(!conn.is_finished());
}

/// Step 7's deadline: activity pushes it back, a passed one sends `ERR idle timeout`
/// and ends the conversation, and a second one gives up on a client that never closes.
#[test]
fn step7_idle_deadline() {
    let (t0, idle) = (Instant::now(), Duration::from_secs(10));
    let mut conn = timers7::Conn::new(t0, idle);
    assert_eq!(conn.poll_timeout(), t0 + idle);
    conn.handle_input(b"hi\n", t0 + Duration::from_secs(4));
    assert_eq!(conn.poll_timeout(), t0 + Duration::from_secs(14));
    conn.handle_timeout(t0 + idle); // armed earlier, but the deadline moved: nothing
    assert!(conn.wants_read());
    let late = t0 + Duration::from_secs(14);
    conn.handle_timeout(late);
    assert!(conn.poll_output().ends_with(b"OK...hi\nERR idle timeout\n"));
    let sent = conn.poll_output().len();
    conn.advance_output(sent, late);
    assert!(conn.poll_fin());
    assert_eq!(
        conn.poll_timeout(),
        late + idle,
        "talking does not keep it alive"
    );
    conn.handle_timeout(late + idle);
    assert!(conn.is_finished());
}

/// SIGTERM: the final fragment is answered, then we close first (our FIN).
#[test]
fn step7_shutdown_answers_the_fragment_and_closes_first() {
    let t0 = Instant::now();
    let mut conn = timers7::Conn::new(t0, Duration::from_secs(300));
    conn.handle_input(b"line\nfrag", t0);
    conn.handle_shutdown();
    let out = conn.poll_output().to_vec();
    assert!(out.ends_with(b"OK...line\nOK...frag"));
    conn.advance_output(out.len(), t0);
    assert!(conn.poll_fin());
    conn.handle_input(b"", t0);
    assert!(conn.is_finished());
}
