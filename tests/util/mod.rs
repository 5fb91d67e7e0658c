//! Shared test helpers: start the real `echod` binary on an ephemeral loopback port,
//! connect to it, and read with timeouts so that a bug fails fast instead of hanging.
#![allow(dead_code)] // Each test file uses a different subset.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// The default banner, as the client sees it.
pub const BANNER: &[u8] = b"Welcome to the server. Type something and hit enter\n";

/// How long any single wait in a test may take before the test fails.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// The daemon's stderr, collected line by line by a reader thread.
#[derive(Default)]
struct LogBook {
    lines: Mutex<Vec<String>>,
    changed: Condvar,
}

/// A running `echod`, killed when dropped.
pub struct Echod {
    /// The child process.
    pub child: Child,
    /// The first address it listens on (the real port, learned from its log).
    pub addr: SocketAddr,
    /// Every address it listens on.
    pub addrs: Vec<SocketAddr>,
    log: Arc<LogBook>,
}

impl Echod {
    /// Starts `echod` with `args`, adding `--listen 127.0.0.1:0` unless the args name a
    /// listen address, and waits until it logs where it listens.
    pub fn start(args: &[&str]) -> Echod {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_echod"));
        cmd.args(args);
        if !args.contains(&"--listen") {
            cmd.args(["--listen", "127.0.0.1:0"]);
        }
        Echod::spawn(cmd)
    }

    /// Starts a prepared command (e.g. wrapped in `sh -c 'ulimit -n 64; exec …'`).
    pub fn spawn(mut cmd: Command) -> Echod {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if std::env::var_os("RUST_LOG").is_none() {
            cmd.env("RUST_LOG", "info");
        }
        let mut child = cmd.spawn().expect("spawn echod");
        let stderr = child.stderr.take().expect("stderr is piped");
        let log = Arc::new(LogBook::default());
        let book = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if std::env::var_os("ECHOD_TEST_LOG").is_some() {
                    eprintln!("echod| {line}");
                }
                book.lines.lock().unwrap().push(line);
                book.changed.notify_all();
            }
        });
        let mut echod = Echod {
            child,
            addr: "0.0.0.0:0".parse().unwrap(),
            addrs: Vec::new(),
            log,
        };
        echod
            .wait_for_log("listening on", TIMEOUT)
            .unwrap_or_else(|| panic!("echod did not start; log:\n{}", echod.log()));
        // Give the other listeners (if several) the same chance to be logged: they are
        // logged together, before the loop starts.
        echod.addrs = echod
            .log()
            .lines()
            .filter_map(|l| l.split("listening on ").nth(1))
            .map(|a| a.trim().parse().expect("a socket address after 'listening on'"))
            .collect();
        echod.addr = echod.addrs[0];
        echod
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything logged so far.
    pub fn log(&self) -> String {
        self.log.lines.lock().unwrap().join("\n")
    }

    /// Waits until a log line contains `needle`; returns that line, or `None` on timeout.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> Option<String> {
        let deadline = Instant::now() + timeout;
        let mut lines = self.log.lines.lock().unwrap();
        loop {
            if let Some(line) = lines.iter().find(|l| l.contains(needle)) {
                return Some(line.clone());
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            lines = self.log.changed.wait_timeout(lines, left).unwrap().0;
        }
    }

    /// Counts the log lines that contain `needle`.
    pub fn count_log(&self, needle: &str) -> usize {
        let lines = self.log.lines.lock().unwrap();
        lines.iter().filter(|l| l.contains(needle)).count()
    }

    /// Connects with read and write timeouts set.
    pub fn connect(&self) -> TcpStream {
        connect(self.addr)
    }

    /// Connects and reads the banner.
    pub fn connect_greeted(&self) -> TcpStream {
        let mut s = self.connect();
        assert_eq!(read_n(&mut s, BANNER.len()), BANNER);
        s
    }

    /// Sends a signal by name (`TERM`, `INT`, `STOP`, `CONT`, `USR1`, `HUP`).
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args(["-s", name, &self.pid().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -s {name} failed");
    }

    /// Waits for the process to exit; `None` if it is still running after `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// A field of `/proc/PID/status` (e.g. `Threads`, `VmRSS`), as its first number.
    pub fn proc_status(&self, field: &str) -> u64 {
        proc_status(self.pid(), field)
    }

    /// User + system CPU time used so far, in clock ticks (`/proc/PID/stat`).
    pub fn cpu_ticks(&self) -> u64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).unwrap();
        // Fields after the ")" that ends the command name; utime and stime are 14 and 15.
        let rest = &stat[stat.rfind(')').unwrap() + 2..];
        let fields: Vec<&str> = rest.split_whitespace().collect();
        fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
    }
}

impl Drop for Echod {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A field of `/proc/PID/status`, as its first number.
pub fn proc_status(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with(&format!("{field}:")))
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"));
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Connects to `addr` with read and write timeouts set.
pub fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect_timeout(&addr, TIMEOUT).expect("connect to echod");
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    s.set_write_timeout(Some(TIMEOUT)).unwrap();
    s
}

/// Reads exactly `n` bytes (panics on EOF or timeout, showing what did arrive).
pub fn read_n(s: &mut TcpStream, n: usize) -> Vec<u8> {
    let mut buf = vec![0; n];
    let mut got = 0;
    while got < n {
        match s.read(&mut buf[got..]) {
            Ok(0) => panic!(
                "EOF after {got} of {n} bytes: {:?}",
                String::from_utf8_lossy(&buf[..got])
            ),
            Ok(k) => got += k,
            Err(e) => panic!(
                "read failed after {got} of {n} bytes ({e}): {:?}",
                String::from_utf8_lossy(&buf[..got])
            ),
        }
    }
    buf
}

/// Reads until the server closes; panics on timeout. A reset counts as the end too
/// (returned bytes are what arrived before it).
pub fn read_to_end(s: &mut TcpStream) -> Vec<u8> {
    let mut all = Vec::new();
    let mut buf = [0; 64 * 1024];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return all,
            Ok(n) => all.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return all,
            Err(e) => panic!(
                "read failed ({e}) after {} bytes: {:?}",
                all.len(),
                String::from_utf8_lossy(&all[all.len().saturating_sub(200)..])
            ),
        }
    }
}

/// Sends `data` and half-closes.
pub fn send_and_close(s: &mut TcpStream, data: &[u8]) {
    s.write_all(data).unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
}

/// The replies the default protocol gives to `lines` (each without its newline).
pub fn replies(lines: &[&str]) -> Vec<u8> {
    lines
        .iter()
        .flat_map(|l| format!("OK...{l}\n").into_bytes())
        .collect()
}

/// True when `tool` is on PATH. When it is missing: prints that the test is skipped,
/// and fails the test if `ECHOD_REQUIRE_TOOLS=1` (as CI sets after installing them).
pub fn have_tool(tool: &str) -> bool {
    let found = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|dir| dir.join(tool).is_file()))
        .unwrap_or(false)
        || Path::new(tool).is_file();
    if !found {
        if std::env::var("ECHOD_REQUIRE_TOOLS").as_deref() == Ok("1") {
            panic!("{tool} is required (ECHOD_REQUIRE_TOOLS=1) but not installed");
        }
        eprintln!("SKIPPED: {tool} is not installed (set ECHOD_REQUIRE_TOOLS=1 to fail instead)");
    }
    found
}

/// Runs `f` on a thread and fails the test if it takes longer than `timeout`.
pub fn within<T: Send + 'static>(timeout: Duration, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(timeout)
        .unwrap_or_else(|_| panic!("did not finish within {timeout:?}"))
}
