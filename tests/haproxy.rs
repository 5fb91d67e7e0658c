//! echod behind the real HAProxy (TCP mode, PROXY protocol v1 and v2), on loopback.

mod util;

use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use util::*;

/// A running haproxy, killed when dropped; its stderr (health-check news) is collected.
struct Haproxy {
    child: Child,
    frontend: SocketAddr,
    log: Arc<Mutex<String>>,
    dir: std::path::PathBuf,
}

impl Haproxy {
    /// Starts haproxy in the foreground in front of `backends` (`send-proxy` for the first,
    /// `send-proxy-v2` for the second), with a health check that expects the banner.
    fn start(backends: &[SocketAddr]) -> Haproxy {
        let frontend = free_port();
        let dir = std::env::temp_dir().join(format!(
            "echod-haproxy-{}-{}",
            std::process::id(),
            frontend.port()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let mut servers = String::new();
        for (i, addr) in backends.iter().enumerate() {
            let proxy = if i % 2 == 0 {
                "send-proxy"
            } else {
                "send-proxy-v2"
            };
            servers += &format!(
                "  server e{i} {addr} {proxy} check check-send-proxy inter 200ms fall 2 rise 1\n"
            );
        }
        let config = format!(
            "global\n  maxconn 200\ndefaults\n  mode tcp\n  timeout connect 2s\n  timeout client 20s\n  timeout server 20s\n\
             frontend fe\n  bind {frontend}\n  default_backend be\n\
             backend be\n  balance roundrobin\n  option tcp-check\n  tcp-check expect string Welcome\n{servers}"
        );
        let path = dir.join("haproxy.cfg");
        std::fs::write(&path, config).unwrap();
        let mut child = Command::new("haproxy")
            .args(["-db", "-f"])
            .arg(&path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start haproxy");
        let log = Arc::new(Mutex::new(String::new()));
        let sink = Arc::clone(&log);
        let mut stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            let mut buf = [0; 4096];
            while let Ok(n) = std::io::Read::read(&mut stderr, &mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        let haproxy = Haproxy {
            child,
            frontend,
            log,
            dir,
        };
        haproxy.wait_until(|| TcpStream::connect(frontend).is_ok(), "haproxy to listen");
        haproxy
    }

    /// Polls `ready` (every 50 ms, for at most the test timeout).
    fn wait_until(&self, mut ready: impl FnMut() -> bool, what: &str) {
        let deadline = Instant::now() + TIMEOUT;
        while !ready() {
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; haproxy said:\n{}",
                self.log.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A loopback port that was free a moment ago.
fn free_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// One client session through haproxy: banner, a line, half-close, all replies.
/// Returns the client's own address (what echod must log).
fn session(frontend: SocketAddr, text: &str) -> SocketAddr {
    let mut s = connect(frontend);
    let me = s.local_addr().unwrap();
    assert_eq!(read_n(&mut s, BANNER.len()), BANNER);
    s.write_all(format!("{text}\n").as_bytes()).unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    assert_eq!(read_to_end(&mut s), replies(&[text]));
    me
}

/// Clients through haproxy (`send-proxy` to one echod, `send-proxy-v2` to the other) get
/// the banner and their replies, and each echod logs the clients' true addresses; when
/// one echod stops, haproxy's health check (connect, expect the banner) marks it down and
/// every client goes to the other.
#[test]
fn behind_haproxy_with_proxy_protocol_v1_and_v2() {
    if !have_tool("haproxy") {
        return;
    }
    let v1 = Echod::start(&["--proxy-protocol"]);
    let mut v2 = Echod::start(&["--proxy-protocol"]);
    let haproxy = Haproxy::start(&[v1.addr, v2.addr]);
    haproxy.wait_until(
        || v1.log().contains("via proxy") && v2.log().contains("proxy health check"),
        "health checks to reach both echods",
    );

    // Round robin: consecutive clients alternate between the two echods.
    let clients: Vec<SocketAddr> = (0..6)
        .map(|i| session(haproxy.frontend, &format!("hello {i}")))
        .collect();
    for client in &clients {
        // The session is over, so the echod that served it has logged it (the log line
        // comes before the banner); wait only for our reader of its log to catch up.
        let needle = format!("Connected with {client} (via proxy");
        let found = || {
            [&v1, &v2]
                .iter()
                .filter(|e| e.count_log(&needle) > 0)
                .count()
        };
        haproxy.wait_until(|| found() > 0, "echod to log the client");
        assert_eq!(found(), 1, "exactly one echod logs {client} as its client");
    }
    assert!(v1.count_log("Connected with 127.0.0.1") > 0);
    assert!(v2.count_log("Connected with 127.0.0.1") > 0);

    // Stop the v2 echod: the health check notices and marks it down.
    v2.signal("TERM");
    assert_eq!(v2.wait_exit(TIMEOUT).and_then(|s| s.code()), Some(0));
    haproxy.wait_until(
        || haproxy.log.lock().unwrap().contains("be/e1 is DOWN"),
        "haproxy to mark e1 down",
    );
    for i in 0..4 {
        session(haproxy.frontend, &format!("after {i}"));
    }
}

/// A client that skips the proxy and talks to a `--proxy-protocol` echod directly is told
/// why and closed, at once.
#[test]
fn a_direct_client_without_header_is_refused() {
    let echod = Echod::start(&["--proxy-protocol"]);
    let mut s = echod.connect();
    s.write_all(b"hello\n").unwrap();
    assert_eq!(read_to_end(&mut s), b"ERR bad proxy header\n");
}

/// A header sent by hand (v1) is accepted, and the address it names is the one logged.
#[test]
fn a_v1_header_by_hand_names_the_logged_client() {
    let echod = Echod::start(&["--proxy-protocol"]);
    let mut s = echod.connect();
    s.write_all(b"PROXY TCP4 192.0.2.7 127.0.0.1 4242 8888\r\nhi\n")
        .unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    assert_eq!(read_to_end(&mut s), [BANNER, b"OK...hi\n"].concat());
    assert!(echod
        .wait_for_log(
            "Connected with 192.0.2.7:4242 (via proxy 127.0.0.1:",
            TIMEOUT
        )
        .is_some());
}
