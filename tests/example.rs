//! `examples/step4_reactor.rs`, the smallest reactor, keeps the protocol's core promises: the
//! banner, one `OK...` reply per line wherever the writes split it, the final fragment
//! on half-close, many clients at once, and bursts larger than the socket buffers.

mod util;

use std::io::Write;
use std::net::Shutdown;
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;
use util::*;

/// Builds the example once per test run (examples are not built for `cargo test --test
/// example`) and returns its path, in the profile directory these tests were built into.
fn step0_bin() -> &'static PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        // .../target/<profile>/deps/example-HASH → .../target/<profile>
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
            .args(["build", "--quiet", "--example", "step4_reactor"])
            .args(["--profile", profile])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .expect("run cargo build");
        let stderr = String::from_utf8_lossy(&built.stderr);
        assert!(
            built.status.success(),
            "cargo build --example step4_reactor:\n{stderr}"
        );
        profile_dir
            .join("examples")
            .join(format!("step4_reactor{}", std::env::consts::EXE_SUFFIX))
    })
}

/// Starts the example on a free port; the guard kills it when dropped.
fn start() -> Echod {
    let mut cmd = Command::new(step0_bin());
    cmd.arg("127.0.0.1:0");
    Echod::spawn(cmd)
}

/// Lines split across writes in odd places are answered whole, `\r\n` kept, nothing more.
#[test]
fn replies_to_lines_split_across_writes() {
    let server = start();
    let mut s = server.connect_greeted();
    s.set_nodelay(true).unwrap();
    s.write_all(b"hel").unwrap();
    send_expect(&mut s, b"lo\nwor", b"OK...hello\n");
    send_expect(&mut s, b"ld\r\n", b"OK...world\r\n");
    s.shutdown(Shutdown::Write).unwrap();
    assert_eq!(read_to_fin(&mut s), b"");
}

/// Half-close: the lines, then the final fragment without a newline added, then FIN.
#[test]
fn half_close_answers_the_final_fragment() {
    let server = start();
    let mut s = server.connect_greeted();
    send_and_close(&mut s, b"one\nfrag");
    assert_eq!(read_to_fin(&mut s), b"OK...one\nOK...frag");
}

/// A client that half-closes at once gets the banner, then FIN.
#[test]
fn silent_client_gets_the_banner_then_fin() {
    let server = start();
    let mut s = server.connect();
    s.shutdown(Shutdown::Write).unwrap();
    assert_eq!(read_to_fin(&mut s), BANNER);
}

/// 50 clients open at once each get their own replies, in order; a second wave reuses
/// the slab keys the first wave freed. They all connect before any is greeted, so that
/// several wait in the accept queue behind one READABLE edge.
#[test]
fn fifty_concurrent_clients_get_their_own_replies() {
    let server = start();
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

/// 2 MB of lines, written in chunks that cut lines anywhere while we read concurrently,
/// are answered completely and in order. Our 4 KiB receive buffer makes the server's
/// writes hit `WouldBlock` over and over; and we half-close only after the last reply,
/// so the replies still queued when our lines stop can go out on WRITABLE edges alone.
#[test]
fn large_burst_is_answered_completely_and_in_order() {
    let server = start();
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    sock.connect_timeout(&server.addr.into(), TIMEOUT).unwrap();
    let mut s: std::net::TcpStream = sock.into();
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    s.set_write_timeout(Some(TIMEOUT)).unwrap();

    let lines: Vec<String> = (0..160_000).map(|i| format!("line {i:07}")).collect();
    let input: Vec<u8> = lines
        .iter()
        .flat_map(|l| format!("{l}\n").into_bytes())
        .collect();
    assert!(input.len() >= 2_000_000);
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
