//! SIGUSR2: upgrade in place. The daemon `exec`s the binary at the path it was started
//! from, same PID, and every client carries on: half-typed lines, pending replies,
//! counters. A binary that cannot take over is refused and the old image serves on.
//!
//! Each test copies `echod` into a directory of its own and starts it from there, so
//! that it can put a different build (or a broken script) at that path, as an operator
//! installing a new version would.
#![cfg(target_os = "linux")]

mod util;

use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use util::*;

/// A directory holding the `echod` under test, at a path the test can overwrite.
struct Install {
    /// The directory (removed when dropped).
    dir: PathBuf,
    /// `DIR/echod`: what the daemon runs, and upgrades to.
    bin: PathBuf,
}

impl Install {
    /// A fresh directory with a copy of the `echod` built for these tests.
    fn new(name: &str) -> Install {
        let dir = std::env::temp_dir().join(format!("echod-upgrade-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let bin = dir.join("echod");
        let install = Install { dir, bin };
        install.put(&std::fs::read(echod_bin()).unwrap());
        install
    }

    /// Installs `bytes` as the binary the way package managers do: write a new file,
    /// then rename it over the old one (the running image keeps the old inode; writing
    /// into a running executable would fail with ETXTBSY).
    fn put(&self, bytes: &[u8]) {
        self.put_at(&self.bin, bytes);
    }

    /// The same at any path in the directory.
    ///
    /// The executable file is written by a `cp` process, never by this one: the tests
    /// run in threads that fork (nc, telnet, echod), and a child forked while we held a
    /// file open for writing keeps it open until its own `exec`; an `exec` of that file
    /// meanwhile (echod's upgrade, or our spawn) would fail with ETXTBSY.
    fn put_at(&self, path: &Path, bytes: &[u8]) {
        let source = self.dir.join("source");
        let tmp = self.dir.join("incoming");
        std::fs::write(&source, bytes).unwrap();
        let copied = Command::new("cp").arg(&source).arg(&tmp).status().unwrap();
        assert!(copied.success());
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::rename(&tmp, path).unwrap();
    }

    /// Installs a different build: the real one with `n` bytes appended (an ELF file
    /// runs the same with trailing bytes, but it is another file with another inode).
    fn put_changed_build(&self, n: usize) {
        let mut bytes = std::fs::read(echod_bin()).unwrap();
        bytes.extend(std::iter::repeat_n(b'\n', n));
        self.put(&bytes);
    }

    /// Starts `DIR/echod` with `args` on an ephemeral loopback port.
    fn start(&self, args: &[&str]) -> Echod {
        self.start_timed(args, "")
    }

    /// [`Install::start`], with the loop's fixed delays shortened (`ECHOD_TEST_TIMINGS`).
    fn start_timed(&self, args: &[&str], timings: &str) -> Echod {
        let mut cmd = Command::new(&self.bin);
        cmd.args(args).args(["--listen", "127.0.0.1:0"]);
        if !timings.is_empty() {
            cmd.env("ECHOD_TEST_TIMINGS", timings);
        }
        Echod::spawn(cmd)
    }
}

impl Drop for Install {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The inode of the program a process runs (`/proc/PID/exe` leads to it even after
/// the file was replaced).
fn exe_inode(pid: u32) -> u64 {
    std::fs::metadata(format!("/proc/{pid}/exe")).unwrap().ino()
}

/// How many descriptors a process holds.
fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

/// Waits until a process holds `n` descriptors again: a client that just closed may
/// not be reaped yet, but a leak never goes away.
fn wait_fds(pid: u32, n: usize) {
    let deadline = Instant::now() + TIMEOUT;
    while open_fds(pid) != n {
        assert!(
            Instant::now() < deadline,
            "{} descriptors, expected {n}",
            open_fds(pid)
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The processes whose parent is `pid` (zombies included).
fn children(pid: u32) -> Vec<u32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(child) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // Fields after the ")" that ends the command name: state, then the parent.
        let Some(rest) = stat.rfind(')').map(|i| &stat[i + 2..]) else {
            continue;
        };
        if rest.split_whitespace().nth(1) == Some(&pid.to_string()) {
            found.push(child);
        }
    }
    found
}

/// Waits until `pid` has no child process left (every check reaped, no zombie).
fn wait_no_children(pid: u32) {
    let deadline = Instant::now() + TIMEOUT;
    while !children(pid).is_empty() {
        assert!(
            Instant::now() < deadline,
            "children left: {:?}",
            children(pid)
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Sends SIGUSR2 and waits for the `n`-th `resumed` line.
fn upgrade(echod: &Echod, n: usize) -> String {
    echod.signal("USR2");
    echod.expect_log_count("resumed ", n);
    echod
        .log()
        .lines()
        .filter(|l| l.contains("resumed "))
        .nth(n - 1)
        .unwrap()
        .to_string()
}

/// A child's stdout, collected by a thread, so that the test can wait for bytes with
/// a timeout.
#[derive(Clone, Default)]
struct Transcript(Arc<Shared>);

/// What the collecting thread and the test share.
#[derive(Default)]
struct Shared {
    /// The bytes so far, and whether the stream ended.
    state: Mutex<(Vec<u8>, bool)>,
    /// Signalled on every change.
    changed: Condvar,
}

impl Transcript {
    /// Starts collecting `out` until its end.
    fn collect(mut out: impl Read + Send + 'static) -> Transcript {
        let transcript = Transcript::default();
        let t = transcript.clone();
        std::thread::spawn(move || {
            let mut buf = [0; 4096];
            loop {
                let n = out.read(&mut buf).unwrap_or(0);
                let mut state = t.0.state.lock().unwrap();
                if n == 0 {
                    state.1 = true;
                } else {
                    state.0.extend_from_slice(&buf[..n]);
                }
                t.0.changed.notify_all();
                if n == 0 {
                    return;
                }
            }
        });
        transcript
    }

    /// Waits until `done` holds for (bytes so far, ended); fails after [`TIMEOUT`].
    fn wait(&self, what: &str, done: impl Fn(&[u8], bool) -> bool) -> Vec<u8> {
        let deadline = Instant::now() + TIMEOUT;
        let mut state = self.0.state.lock().unwrap();
        while !done(&state.0, state.1) {
            let left = deadline
                .checked_duration_since(Instant::now())
                .unwrap_or_else(|| panic!("{what}: got {:?}", String::from_utf8_lossy(&state.0)));
            state = self.0.changed.wait_timeout(state, left).unwrap().0;
        }
        state.0.clone()
    }

    /// Waits until the transcript ends with `want`.
    fn wait_for_tail(&self, want: &[u8]) {
        self.wait(
            &format!("waiting for {:?}", String::from_utf8_lossy(want)),
            |b, _| b.ends_with(want),
        );
    }

    /// Waits for the end of the stream and returns everything.
    fn wait_end(&self) -> Vec<u8> {
        self.wait("waiting for the end", |_, ended| ended)
    }
}

/// A real `nc` session: its stdin is ours to type into, its stdout is collected.
struct Nc {
    child: Child,
    stdin: Option<ChildStdin>,
    out: Transcript,
}

impl Nc {
    /// `nc -N` (half-close when its stdin ends) to `addr`.
    fn connect(addr: std::net::SocketAddr) -> Nc {
        let mut child = Command::new("nc")
            .args(["-N", &addr.ip().to_string(), &addr.port().to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn nc");
        let stdin = child.stdin.take();
        let out = Transcript::collect(child.stdout.take().unwrap());
        Nc { child, stdin, out }
    }

    /// Types `bytes` (nc sends them as they come, newline or not).
    fn send(&mut self, bytes: &[u8]) {
        let stdin = self.stdin.as_mut().unwrap();
        stdin.write_all(bytes).unwrap();
        stdin.flush().unwrap();
    }

    /// Ends its input (nc half-closes) and returns everything it received.
    fn finish(mut self) -> Vec<u8> {
        drop(self.stdin.take());
        let all = self.out.wait_end();
        let _ = self.child.wait();
        all
    }
}

impl Drop for Nc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A real `telnet` session in a pseudo-terminal, driven by `expect`: it presses Ctrl-C
/// (telnet sends `IAC IP IAC DO TIMING-MARK`, which makes the connection telnet-aware),
/// types a line and sees its reply, then says READY and waits for a line on its stdin
/// (our cue that the upgrade happened), then does it all again.
struct Telnet {
    child: Child,
    out: Transcript,
}

impl Telnet {
    fn start(addr: std::net::SocketAddr, i: usize) -> Telnet {
        let script = format!(
            r#"set timeout 10
log_user 0
spawn telnet {ip} {port}
expect "hit enter" {{}} timeout {{exit 10}}
send "junk\003"
send "before {i}\r"
expect "OK...before {i}" {{}} timeout {{exit 11}}
puts "READY"
flush stdout
gets stdin
send "more junk\003"
send "after {i}\r"
expect "OK...after {i}" {{}} timeout {{exit 12}}
send "\035"
expect "telnet>" {{}} timeout {{exit 13}}
send "quit\r"
expect eof
puts "DONE"
"#,
            ip = addr.ip(),
            port = addr.port(),
        );
        let mut child = Command::new("expect")
            .arg("-c")
            .arg(script)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn expect");
        let out = Transcript::collect(child.stdout.take().unwrap());
        Telnet { child, out }
    }

    /// Lets the script go on, and waits for it to finish: `expect`'s exit code says
    /// which step failed (10 banner, 11 first reply, 12 reply after the upgrade).
    fn finish(mut self) {
        self.child.stdin.take().unwrap().write_all(b"go\n").unwrap();
        let out = self.out.wait_end();
        let status = self.child.wait().unwrap();
        assert!(
            status.success() && out.ends_with(b"DONE\n"),
            "telnet session: expect exited {:?}, said {:?}",
            status.code(),
            String::from_utf8_lossy(&out)
        );
    }
}

impl Drop for Telnet {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Connects a std client at a time, greets it and echoes a line, until `stop`; counts
/// the clients served. Runs while the daemon upgrades: none may fail.
fn keep_connecting(
    addr: std::net::SocketAddr,
    stop: Arc<AtomicBool>,
) -> (std::thread::JoinHandle<()>, Arc<AtomicUsize>) {
    let served = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&served);
    let handle = std::thread::spawn(move || {
        while !stop.load(Ordering::SeqCst) {
            let mut s = connect(addr);
            assert_eq!(read_n(&mut s, BANNER.len()), BANNER);
            assert_echoes(&mut s, &["during"]);
            count.fetch_add(1, Ordering::SeqCst);
        }
    });
    (handle, served)
}

/// The whole promise, with real clients: 200 `nc` sessions (half of them halfway
/// through a line) and 20 `telnet` sessions stay connected while the binary is
/// replaced by a different build; every half line, once finished, gets exactly one
/// reply; new lines get replies; clients connecting meanwhile are served; the PID and
/// the counters carry on, the program file is the new one, and no descriptor leaks.
#[test]
fn sessions_survive_an_upgrade_to_a_new_build() {
    if !have_tool("nc") || !have_tool("telnet") || !have_tool("expect") {
        return;
    }
    let install = Install::new("sessions");
    // The default `--telnet auto`: nc stays byte-exact, telnet becomes telnet-aware.
    let echod = install.start(&[]);
    let pid = echod.pid();
    let old_exe = exe_inode(pid);

    let mut ncs: Vec<Nc> = (0..200).map(|_| Nc::connect(echod.addr)).collect();
    for (i, nc) in ncs.iter_mut().enumerate() {
        nc.send(format!("hello {i}\n").as_bytes());
        if i % 2 == 0 {
            nc.send(format!("half {i}").as_bytes());
        }
    }
    for (i, nc) in ncs.iter().enumerate() {
        nc.out.wait_for_tail(format!("OK...hello {i}\n").as_bytes());
    }
    let telnets: Vec<Telnet> = (0..20).map(|i| Telnet::start(echod.addr, i)).collect();
    for t in &telnets {
        t.out.wait_for_tail(b"READY\n");
    }
    let fds_before = open_fds(pid);

    let stop = Arc::new(AtomicBool::new(false));
    let (connector, served) = keep_connecting(echod.addr, Arc::clone(&stop));
    install.put_changed_build(1);
    let new_exe = std::fs::metadata(&install.bin).unwrap().ino();
    assert_ne!(new_exe, old_exe);
    let resumed = upgrade(&echod, 1);
    stop.store(true, Ordering::SeqCst);
    connector
        .join()
        .expect("a client connecting during the upgrade failed");
    assert!(served.load(Ordering::SeqCst) > 0);

    assert!(resumed.contains("and 1 listeners"), "{resumed}");
    assert_eq!(echod.pid(), pid);
    assert_eq!(exe_inode(pid), new_exe, "the process runs the new file");
    wait_fds(pid, fds_before);

    for (i, nc) in ncs.iter_mut().enumerate() {
        if i % 2 == 0 {
            nc.send(b" done\n");
        }
        nc.send(format!("again {i}\n").as_bytes());
    }
    for t in telnets {
        t.finish();
    }
    for (i, nc) in ncs.into_iter().enumerate() {
        let mut want = BANNER.to_vec();
        want.extend_from_slice(format!("OK...hello {i}\n").as_bytes());
        if i % 2 == 0 {
            want.extend_from_slice(format!("OK...half {i} done\n").as_bytes());
        }
        want.extend_from_slice(format!("OK...again {i}\n").as_bytes());
        assert_eq!(
            String::from_utf8_lossy(&nc.finish()),
            String::from_utf8_lossy(&want),
            "nc session {i}"
        );
    }

    // The counters went on counting across the upgrade.
    echod.signal("USR1");
    let stats = echod.expect_log("stats: accepted=");
    let accepted = 200 + 20 + served.load(Ordering::SeqCst);
    assert!(stats.contains(&format!("accepted={accepted} ")), "{stats}");
    assert!(echod.log().contains("upgrading: exec "));
}

/// `echoc load` keeps 20 connections busy while the daemon upgrades five times in a
/// row (to a different build each time): not one error, not one reply missing.
#[test]
fn load_sees_no_error_across_five_upgrades() {
    let install = Install::new("load");
    let echod = install.start(&[]);
    let pid = echod.pid();
    let addr = echod.addr.to_string();
    let load = std::thread::spawn(move || {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_echoc"));
        cmd.args([
            "load",
            &addr,
            "--connections",
            "20",
            "--duration",
            "4",
            "--json",
        ]);
        run_with_input(cmd, b"", 6 * TIMEOUT)
    });
    echod.expect_log_count("Connected with", 20);
    let fds = open_fds(pid);
    for n in 1..=5 {
        install.put_changed_build(n);
        let resumed = upgrade(&echod, n);
        assert!(resumed.contains("resumed 20 connections"), "{resumed}");
        assert_eq!(echod.pid(), pid);
    }
    wait_fds(pid, fds);
    let out = load.join().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let json = stdout.lines().last().unwrap_or_default();
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(json.contains("\"errors\":0,"), "{json}");
    assert!(json.contains("\"unanswered\":0"), "{json}");
    assert!(!json.contains("\"replies\":0,"), "{json}");
}

/// Binaries that cannot take over are refused, each with its reason in the log, and
/// the running image serves on: same PID, same program, sessions intact, every check
/// process reaped. `--upgrade-binary` names the binary to check.
#[test]
fn a_binary_that_cannot_take_over_is_refused() {
    let install = Install::new("refused");
    let next = install.dir.join("next");
    let echod = install.start(&["--upgrade-binary", next.to_str().unwrap()]);
    let pid = echod.pid();
    let exe = exe_inode(pid);
    let mut half = echod.connect_greeted();
    half.write_all(b"a half").unwrap();
    let mut s = echod.connect_greeted();
    let fds = open_fds(pid);

    let attempts: [(&[u8], &str); 4] = [
        (b"", "upgrade refused: cannot run"),
        (b"#!/bin/sh\necho broken >&2\nexit 1\n", "exit status: 1"),
        (b"#!/bin/sh\nexit 0\n", "(it reads: none)"),
        (
            b"#!/bin/sh\necho echod-state-0\n",
            "(it reads: echod-state-0)",
        ),
    ];
    for (n, (script, why)) in attempts.into_iter().enumerate() {
        if !script.is_empty() {
            install.put_at(&next, script);
        }
        echod.signal("USR2");
        echod.expect_log_count("upgrade refused", n + 1);
        let line = echod.expect_log(why);
        assert!(line.contains("upgrade refused"), "{line}");
        wait_no_children(pid);
        assert_eq!(echod.pid(), pid);
        assert_eq!(exe_inode(pid), exe);
        wait_fds(pid, fds);
        assert_echoes(&mut s, &[&format!("line {n}")]);
    }
    assert_eq!(echod.count_log("resumed "), 0);
    assert_eq!(echod.count_log("upgrading: exec"), 0);

    // The real thing at that path: now it goes through, and the half line survives.
    install.put_at(&next, &std::fs::read(echod_bin()).unwrap());
    upgrade(&echod, 1);
    assert_eq!(echod.pid(), pid);
    send_expect(&mut half, b" line\n", b"OK...a half line\n");
    assert_echoes(&mut s, &["after"]);
}

/// A new binary that does not answer in time (5 s; here shortened to 800 ms) is killed
/// (and reaped), and the old image serves on.
#[test]
fn a_binary_that_hangs_is_killed_when_the_check_times_out() {
    let install = Install::new("hangs");
    let echod = install.start_timed(&[], "upgrade-check=800");
    let pid = echod.pid();
    let mut s = echod.connect_greeted();
    install.put(b"#!/bin/sh\nexec sleep 60\n");
    let asked = Instant::now();
    echod.signal("USR2");
    // Served while the check runs.
    echod.expect_log("SIGUSR2: asking");
    assert_echoes(&mut s, &["while it thinks"]);
    echod.signal("USR2");
    echod.expect_log("SIGUSR2 refused: an upgrade is already in progress");
    let line = echod.expect_log("did not answer within 800ms");
    assert!(asked.elapsed() >= Duration::from_millis(800), "{line}");
    wait_no_children(pid);
    assert_echoes(&mut s, &["still here"]);
    assert_eq!(echod.pid(), pid);
}

/// SIGUSR2 during the shutdown drain is refused: the drain goes on and ends with exit 0.
#[test]
fn sigusr2_during_a_drain_is_refused() {
    let install = Install::new("drain");
    let mut echod = install.start(&[]);
    let mut s = echod.connect_greeted();
    s.write_all(b"last\n").unwrap();
    echod.signal("TERM");
    echod.expect_log("draining 1 connections");
    echod.signal("USR2");
    echod.expect_log("SIGUSR2 refused: shutting down");
    assert_eq!(read_to_fin(&mut s), b"OK...last\n");
    drop(s);
    let status = echod
        .wait_exit(TIMEOUT)
        .expect("echod exits after the drain");
    assert_eq!(status.code(), Some(0));
    assert_eq!(echod.count_log("upgrading: exec"), 0);
}

/// Under systemd: the listener came by socket activation and is handed over like any
/// other, and systemd hears `RELOADING=1` (with the time, as systemd 253 wants it)
/// before the `exec` and `READY=1` once the new image serves.
#[test]
fn under_systemd_the_upgrade_is_a_reload() {
    if !have_tool("python3") {
        return;
    }
    let install = Install::new("systemd");
    let notify_path = install.dir.join("notify.sock");
    let notify = std::os::unix::net::UnixDatagram::bind(&notify_path).unwrap();
    notify.set_read_timeout(Some(TIMEOUT)).unwrap();
    let next = |want: &str| -> String {
        for _ in 0..20 {
            let mut buf = [0; 4096];
            let n = notify.recv(&mut buf).expect("a notification in time");
            let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
            if msg.contains(want) {
                return msg;
            }
        }
        panic!("no {want} among 20 notifications");
    };
    // A stand-in for systemd's socket activation (as in tests/systemd.rs): bind, make
    // the socket descriptor 3, name ourselves in LISTEN_PID, become echod.
    let stand_in = r#"
import os, socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.bind(("127.0.0.1", 0))
s.listen(128)
if s.fileno() != 3:
    os.dup2(s.fileno(), 3)
os.set_inheritable(3, True)
os.environ["LISTEN_FDS"] = "1"
os.environ["LISTEN_PID"] = str(os.getpid())
os.execv(sys.argv[1], sys.argv[1:])
"#;
    let mut cmd = Command::new("python3");
    cmd.args(["-c", stand_in])
        .arg(&install.bin)
        .env("NOTIFY_SOCKET", &notify_path);
    let echod = Echod::spawn(cmd);
    assert_eq!(next("READY=1").trim(), "READY=1");
    let mut s = echod.connect_greeted();
    s.write_all(b"before the re").unwrap();

    install.put_changed_build(1);
    echod.signal("USR2");
    let reloading = next("RELOADING=1");
    assert!(reloading.contains("MONOTONIC_USEC="), "{reloading}");
    assert_eq!(next("READY=1").trim(), "READY=1");
    echod.expect_log("resumed 1 connections and 1 listeners");
    send_expect(&mut s, b"load\n", b"OK...before the reload\n");
    let mut t = echod.connect_greeted();
    assert_echoes(&mut t, &["new client, same socket"]);
    assert_eq!(
        echod.count_log("socket activation: 1 inherited listeners"),
        1
    );
}

/// One metric line's value from a scrape of `--metrics` at `addr`.
fn scrape(addr: &str, series: &str) -> String {
    let mut s = connect(addr.parse().unwrap());
    s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
    let body = String::from_utf8(read_to_end(&mut s)).unwrap();
    assert!(body.starts_with("HTTP/1.1 200"), "{body}");
    body.lines()
        .find_map(|l| l.strip_prefix(&format!("{series} ")))
        .unwrap_or_else(|| panic!("no {series} in {body}"))
        .to_string()
}

/// `--metrics` goes on at the same address, and what it serves goes on counting: the
/// listener is handed over, the counters and the process start time too.
#[test]
fn metrics_carry_on_across_an_upgrade() {
    let install = Install::new("metrics");
    let echod = install.start(&["--metrics", "127.0.0.1:0"]);
    let line = echod.expect_log("metrics: serving http://");
    let addr = line
        .split("http://")
        .nth(1)
        .and_then(|rest| rest.strip_suffix("/metrics"))
        .unwrap()
        .to_string();
    let mut clients: Vec<_> = (0..3).map(|_| echod.connect_greeted()).collect();
    for c in &mut clients {
        assert_echoes(c, &["counted"]);
    }
    let started = scrape(&addr, "echod_process_start_time_seconds");
    assert_eq!(scrape(&addr, "echod_connections_accepted_total"), "3");
    upgrade(&echod, 1);
    assert_eq!(scrape(&addr, "echod_connections_accepted_total"), "3");
    assert_eq!(scrape(&addr, "echod_lines_total"), "3");
    assert_eq!(scrape(&addr, "echod_process_start_time_seconds"), started);
    assert_eq!(
        echod.count_log(&format!("serving http://{addr}/metrics")),
        2
    );
}

/// `--resume-formats` names the saved-state formats this build reads, one per line.
#[test]
fn resume_formats_lists_the_state_format() {
    let out = run_echod(&["--resume-formats"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(out.stdout, b"echod-state-1\n");
}

/// Told to resume with nothing handed over, the daemon says why and exits 1 (there is
/// no old image to fall back to).
#[test]
fn resuming_without_a_handover_exits_1() {
    let mut cmd = Command::new(echod_bin());
    cmd.args(["--listen", "127.0.0.1:0"])
        .env("ECHOD_RESUME", "1");
    let out = run_with_input(cmd, b"", TIMEOUT);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("cannot resume after an upgrade"),
        "{stderr}"
    );
}
