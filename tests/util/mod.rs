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
        Echod::start_timed(args, "")
    }

    /// Starts `echod` like [`Echod::start`], with the loop's fixed delays shortened as
    /// `timings` says (`ECHOD_TEST_TIMINGS`, e.g. `scrape=500`), so that a test of a
    /// 10 s timeout need not wait 10 s.
    pub fn start_timed(args: &[&str], timings: &str) -> Echod {
        let mut cmd = Command::new(echod_bin());
        cmd.args(args);
        if !args.contains(&"--listen") {
            cmd.args(["--listen", "127.0.0.1:0"]);
        }
        if !timings.is_empty() {
            cmd.env("ECHOD_TEST_TIMINGS", timings);
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
            .map(|a| {
                a.trim()
                    .parse()
                    .expect("a socket address after 'listening on'")
            })
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

    /// Lowers the running server's descriptor limit to `n` (soft and hard), as an
    /// operator's `prlimit` would: the server runs out of descriptors under our eyes.
    pub fn limit_fds(&self, n: u64) {
        let limit = libc::rlimit {
            rlim_cur: n,
            rlim_max: n,
        };
        // SAFETY: plain syscall on our own child, with a valid struct and a null old value.
        let rc = unsafe {
            libc::prlimit(
                self.pid() as libc::pid_t,
                libc::RLIMIT_NOFILE,
                &limit,
                std::ptr::null_mut(),
            )
        };
        assert_eq!(rc, 0, "prlimit: {}", std::io::Error::last_os_error());
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
    read_until_closed(s, true)
}

/// Sends `data` and checks that exactly `want` comes back (read with the timeout).
pub fn send_expect(s: &mut TcpStream, data: &[u8], want: &[u8]) {
    s.write_all(data).unwrap();
    assert_eq!(read_n(s, want.len()), want);
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

// ---------------------------------------------------------------------------------------
// Helpers added for the integration suite (protocol, backpressure, limits, lifecycle).
// ---------------------------------------------------------------------------------------

/// The path of the `echod` binary under test: the one cargo built for this test run,
/// or the one `ECHOD_TEST_BINARY` names (e.g. the static musl build, which `.ci/run`
/// checks with the protocol tests).
pub fn echod_bin() -> String {
    std::env::var("ECHOD_TEST_BINARY").unwrap_or_else(|_| env!("CARGO_BIN_EXE_echod").to_string())
}

impl Echod {
    /// Waits until `n` listeners are logged and returns their addresses. (`start` reads
    /// the log as soon as the first `listening on` line arrives, so with several
    /// listeners `addrs` may not hold them all yet.)
    pub fn wait_listen_addrs(&self, n: usize) -> Vec<SocketAddr> {
        let deadline = Instant::now() + TIMEOUT;
        while self.count_log("listening on") < n {
            let left = deadline
                .checked_duration_since(Instant::now())
                .unwrap_or_else(|| panic!("fewer than {n} listeners logged:\n{}", self.log()));
            std::thread::sleep(left.min(Duration::from_millis(10)));
        }
        self.log()
            .lines()
            .filter_map(|l| l.split("listening on ").nth(1))
            .map(|a| a.trim().parse().expect("a socket address"))
            .collect()
    }

    /// The process state letter from `/proc/PID/stat` (`S` sleeping, `T` stopped, …).
    pub fn proc_state(&self) -> char {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).unwrap();
        stat[stat.rfind(')').unwrap() + 2..].chars().next().unwrap()
    }

    /// Waits until the process state letter is `state`; false on timeout.
    pub fn wait_proc_state(&self, state: char, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.proc_state() == state {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Voluntary plus involuntary context switches of the (single) server thread.
    pub fn ctxt_switches(&self) -> u64 {
        self.proc_status("voluntary_ctxt_switches") + self.proc_status("nonvoluntary_ctxt_switches")
    }

    /// Asserts the process is still running, showing the log if it is not.
    pub fn assert_alive(&mut self) {
        if let Some(status) = self.child.try_wait().expect("try_wait") {
            panic!("echod exited ({status}); log:\n{}", self.log());
        }
    }
}

/// Reads until the peer's FIN (a read of 0). Unlike [`read_to_end`], a reset is a
/// failure: it shows that the peer's last bytes could have been destroyed.
pub fn read_to_fin(s: &mut TcpStream) -> Vec<u8> {
    read_until_closed(s, false)
}

/// Reads until the peer closes; a reset ends the read when `reset_ok`, else fails.
fn read_until_closed(s: &mut TcpStream, reset_ok: bool) -> Vec<u8> {
    let mut all = Vec::new();
    let mut buf = [0; 64 * 1024];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return all,
            Ok(n) => all.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) if reset_ok && e.kind() == std::io::ErrorKind::ConnectionReset => return all,
            Err(e) => panic!(
                "expected data then a clean EOF, got {e} after {} bytes: {:?}",
                all.len(),
                String::from_utf8_lossy(&all[all.len().saturating_sub(200)..])
            ),
        }
    }
}

/// Asserts that nothing arrives on `s` for `quiet` (and that it is not closed).
pub fn assert_silent(s: &mut TcpStream, quiet: Duration) {
    s.set_read_timeout(Some(quiet)).unwrap();
    let mut buf = [0; 256];
    match s.read(&mut buf) {
        Ok(0) => panic!("the server closed the connection"),
        Ok(n) => panic!("unexpected bytes: {:?}", String::from_utf8_lossy(&buf[..n])),
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) => {}
        Err(e) => panic!("read failed: {e}"),
    }
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
}

/// Makes the next close of `s` send a RST instead of a FIN (SO_LINGER 0).
pub fn set_linger_zero(s: &TcpStream) {
    socket2::SockRef::from(s)
        .set_linger(Some(Duration::ZERO))
        .expect("SO_LINGER 0");
}

/// True when an IPv6 loopback socket can be bound here.
pub fn ipv6_loopback() -> bool {
    std::net::TcpListener::bind("[::1]:0").is_ok()
}

/// Runs `cmd` with `input` on its stdin (then closed), collecting stdout and stderr;
/// kills it and panics if it runs longer than `timeout`.
pub fn run_with_input(mut cmd: Command, input: &[u8], timeout: Duration) -> std::process::Output {
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn");
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
        // Dropping stdin closes it: the program sees EOF.
    });
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let out_reader = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out.read_to_end(&mut v);
        v
    });
    let err_reader = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = err.read_to_end(&mut v);
        v
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            let stdout = out_reader.join().unwrap();
            let stderr = err_reader.join().unwrap();
            panic!(
                "{cmd:?} did not finish within {timeout:?}\nstdout: {}\nstderr: {}",
                String::from_utf8_lossy(&stdout),
                String::from_utf8_lossy(&stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let _ = writer.join();
    std::process::Output {
        status,
        stdout: out_reader.join().unwrap(),
        stderr: err_reader.join().unwrap(),
    }
}

/// Runs `echod` with `args` to completion (for flags that make it exit at once).
pub fn run_echod(args: &[&str]) -> std::process::Output {
    let mut cmd = Command::new(echod_bin());
    cmd.args(args);
    run_with_input(cmd, b"", TIMEOUT)
}

/// Every flood line is 8 digits and a newline.
pub const FLOOD_LINE_LEN: u64 = 9;

/// The `j`-th line of a flood (see [`flood`]).
pub fn flood_line(j: u64) -> String {
    format!("{j:08}\n")
}

/// What [`flood`] managed to send.
#[derive(Debug, Clone, Copy)]
pub struct Flooded {
    /// Bytes the kernel accepted: `bytes / FLOOD_LINE_LEN` complete lines, then a
    /// fragment of the next one.
    pub bytes: u64,
    /// A write made no progress for the whole stall time (the peer stopped taking data).
    pub blocked: bool,
}

/// Writes the flood lines `00000000\n`, `00000001\n`, … to `s` without reading, until a
/// write makes no progress for `stall` or `cap` bytes are sent. `sent` (if given) is kept
/// up to date so another thread can watch. Never hangs: each write is bounded by `stall`.
pub fn flood(
    s: &mut TcpStream,
    stall: Duration,
    cap: u64,
    sent: Option<&std::sync::atomic::AtomicU64>,
) -> Flooded {
    const LINES_PER_CHUNK: u64 = 7000;
    s.set_write_timeout(Some(stall)).unwrap();
    let chunk_of = |first: u64| -> Vec<u8> {
        (first..first + LINES_PER_CHUNK)
            .flat_map(|j| flood_line(j).into_bytes())
            .collect()
    };
    let mut first = 0;
    let mut chunk = chunk_of(first);
    let mut off = 0;
    let mut bytes = 0;
    let mut blocked = false;
    while bytes < cap {
        match s.write(&chunk[off..]) {
            Ok(0) => panic!("write returned 0 after {bytes} bytes"),
            Ok(n) => {
                off += n;
                bytes += n as u64;
                if let Some(sent) = sent {
                    sent.store(bytes, std::sync::atomic::Ordering::SeqCst);
                }
                if off == chunk.len() {
                    first += LINES_PER_CHUNK;
                    chunk = chunk_of(first);
                    off = 0;
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                blocked = true;
                break;
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => panic!("flood write failed after {bytes} bytes: {e}"),
        }
    }
    s.set_write_timeout(Some(TIMEOUT)).unwrap();
    Flooded { bytes, blocked }
}

/// Sends `lines` (each gets a `\n`) and checks the replies, exactly: a quick "this client
/// is still served" probe.
pub fn assert_echoes(s: &mut TcpStream, lines: &[&str]) {
    let data: Vec<u8> = lines
        .iter()
        .flat_map(|l| format!("{l}\n").into_bytes())
        .collect();
    s.write_all(&data).unwrap();
    let want = replies(lines);
    assert_eq!(
        String::from_utf8_lossy(&read_n(s, want.len())),
        String::from_utf8_lossy(&want)
    );
}

impl Echod {
    /// Waits (up to [`TIMEOUT`]) for a log line containing `needle` and returns it; fails
    /// showing the whole log otherwise. Use this rather than `log().contains(…)`: the log
    /// is read by another thread and may lag behind the process, even after it exited.
    pub fn expect_log(&self, needle: &str) -> String {
        self.wait_for_log(needle, TIMEOUT)
            .unwrap_or_else(|| panic!("no log line contains {needle:?}; log:\n{}", self.log()))
    }
}

impl Echod {
    /// Waits (up to [`TIMEOUT`]) until at least `n` log lines contain `needle`; fails
    /// showing the log otherwise. Returns the count reached.
    pub fn expect_log_count(&self, needle: &str, n: usize) -> usize {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let count = self.count_log(needle);
            if count >= n {
                return count;
            }
            if Instant::now() >= deadline {
                panic!(
                    "{count} log lines contain {needle:?}, expected {n}; log:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Echod {
    /// The `loop_wakeups` counter, read from a SIGUSR1 summary: waits until the loop is
    /// back asleep in `poll` (so that every signal costs the same), signals, and waits
    /// for the new `stats:` line.
    pub fn usr1_wakeups(&self) -> u64 {
        let n = self.count_log("stats: accepted=") + 1;
        assert!(self.wait_proc_state('S', TIMEOUT), "echod never slept");
        self.signal("USR1");
        self.expect_log_count("stats: accepted=", n);
        let log = self.log();
        let line = log
            .lines()
            .filter(|l| l.contains("stats: accepted="))
            .nth(n - 1)
            .expect("the new stats line");
        line.split_whitespace()
            .find_map(|w| w.strip_prefix("loop_wakeups="))
            .unwrap_or_else(|| panic!("no loop_wakeups in {line}"))
            .parse()
            .expect("a number")
    }

    /// How often the loop woke during `span` with nothing to do from the outside,
    /// not counting the SIGUSR1s that read the counter: one pair of summaries measures
    /// what a signal costs (on Linux 2: `epoll_wait` returns EINTR, then the signal's
    /// event), a third comes after the span.
    pub fn idle_wakeups(&self, span: Duration) -> u64 {
        let first = self.usr1_wakeups();
        let before = self.usr1_wakeups();
        let cost = before - first;
        assert!((1..=2).contains(&cost), "one SIGUSR1 cost {cost} wakeups");
        std::thread::sleep(span); // The span in which nothing may happen.
        let after = self.usr1_wakeups();
        after - before - cost
    }
}
