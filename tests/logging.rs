//! A log sink that fails or blocks costs log lines, never the service: the server keeps
//! serving when its stderr reader goes away (`echod 2>&1 | head -1`) or stops reading (a
//! full pipe), and counts the lines it had to drop. The last tests drive the logger's
//! write path ([`Sink`]) on a pipe directly.

mod util;

use std::io::{BufRead, BufReader, ErrorKind, Read};
use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use echod::logging::{NonBlockingGuard, Sink};
use rustix::fs::OFlags;
use util::{connect, echod_bin, read_to_fin, send_and_close, send_expect, within, BANNER, TIMEOUT};

/// A running `echod` whose stderr the test wires itself; killed when dropped.
struct Daemon {
    /// The child process.
    child: Child,
    /// Where it listens (learned from its `listening on` line).
    addr: SocketAddr,
}

impl Daemon {
    /// Starts `echod` on 127.0.0.1:0 with `args` and `stderr`, and reads `log` (the other
    /// end of that stderr) up to the `listening on` line. Returns the reader, positioned
    /// just after that line, for the test to read on, stop reading, or close.
    fn start<R: Read + Send + 'static>(
        args: &[&str],
        stderr: impl Into<Stdio>,
        log: impl FnOnce(&mut Child) -> R,
    ) -> (Daemon, BufReader<R>) {
        let mut child = Command::new(echod_bin())
            .args(["--listen", "127.0.0.1:0"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("spawn echod");
        let reader = BufReader::new(log(&mut child));
        let (reader, addr) = within(TIMEOUT, move || read_listen_addr(reader));
        (Daemon { child, addr }, reader)
    }

    /// Sends a signal by name (`TERM`, `USR1`).
    fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args(["-s", name, &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -s {name} failed");
    }

    /// Sends SIGTERM and waits (up to [`TIMEOUT`]) for the exit status.
    fn terminate(&mut self) -> ExitStatus {
        self.signal("TERM");
        let deadline = Instant::now() + TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "echod did not exit after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Reads log lines until `listening on ADDR`; panics if the log ends first.
fn read_listen_addr<R: Read>(mut reader: BufReader<R>) -> (BufReader<R>, SocketAddr) {
    let mut line = String::new();
    loop {
        line.clear();
        let n = reader.read_line(&mut line).expect("read echod's stderr");
        assert!(n > 0, "echod's log ended before a `listening on` line");
        if let Some(addr) = line.split("listening on ").nth(1) {
            return (reader, addr.trim().parse().expect("an address"));
        }
    }
}

/// One client's whole session: banner, one line and its reply, half-close, FIN. The
/// reads time out after `patience`.
fn one_session(addr: SocketAddr, patience: Duration) {
    let mut s = connect(addr);
    s.set_read_timeout(Some(patience)).unwrap();
    send_expect(&mut s, b"", BANNER);
    send_expect(&mut s, b"hi\n", b"OK...hi\n");
    send_and_close(&mut s, b"");
    assert_eq!(read_to_fin(&mut s), b"");
}

/// The bug this file is about: `echod 2>&1 | head -1`. The reader of stderr exits after
/// the first line; every later log line meets EPIPE. The server must keep serving, and
/// still shut down cleanly (exit 0) on SIGTERM.
#[test]
fn a_closed_log_pipe_does_not_stop_the_server() {
    let (mut echod, reader) = Daemon::start(&[], Stdio::piped(), |child| {
        child.stderr.take().expect("stderr is piped")
    });
    drop(reader); // `head -1` exits: the pipe has no reader any more.
    for _ in 0..3 {
        // Each accept logs `Connected with …`, which now fails with EPIPE.
        one_session(echod.addr, TIMEOUT);
    }
    let status = echod.terminate();
    assert_eq!(status.code(), Some(0), "{status}");
}

/// A reader that stops reading: stderr is a pipe that fills up and stays full, with trace
/// logging (about 450 bytes per client, so 300 clients log twice a 64 KiB pipe). Every
/// client is still served at once; the dropped lines are counted, and once the pipe is
/// read again, SIGUSR1 and the shutdown summary show that count.
#[test]
fn a_full_log_pipe_does_not_stall_the_server() {
    const CLIENTS: usize = 300;
    let (pipe_reader, pipe_writer) = std::io::pipe().expect("pipe");
    let (mut echod, reader) =
        Daemon::start(&["--log-level", "trace"], pipe_writer, |_| pipe_reader);
    // Nobody reads the pipe while the clients come and go. A blocked log write would
    // stall the one server thread, and the client waiting on it would time out.
    for _ in 0..CLIENTS {
        one_session(echod.addr, Duration::from_secs(3));
    }

    // Now read the log again; ask for the counters until a stats line gets through (the
    // first SIGUSR1 can come while our reader is still emptying the full pipe).
    let lines = read_lines_on_a_thread(reader);
    let stats = (0..5)
        .find_map(|_| {
            echod.signal("USR1");
            next_line_with(&lines, "stats: accepted=", Duration::from_secs(2))
        })
        .expect("no stats line after SIGUSR1");
    assert!(stats.contains(&format!("accepted={CLIENTS} ")), "{stats}");
    let dropped_then = log_lines_dropped(&stats);
    assert!(dropped_then > 0, "a full pipe dropped nothing? {stats}");

    let status = echod.terminate();
    assert_eq!(status.code(), Some(0), "{status}");
    let summary = next_line_with(&lines, "stats: accepted=", TIMEOUT).expect("no exit summary");
    assert!(log_lines_dropped(&summary) >= dropped_then, "{summary}");
}

/// Sends each line `reader` yields to the returned channel, from a thread of its own.
fn read_lines_on_a_thread<R: Read + Send + 'static>(reader: BufReader<R>) -> Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in reader.lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// The next line from `lines` that contains `needle`, or `None` after `timeout`.
fn next_line_with(lines: &Receiver<String>, needle: &str, timeout: Duration) -> Option<String> {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.checked_duration_since(Instant::now())?;
        let line = lines.recv_timeout(left).ok()?;
        if line.contains(needle) {
            return Some(line);
        }
    }
}

/// The `log_lines_dropped=N` of a stats line.
fn log_lines_dropped(stats: &str) -> u64 {
    stats
        .split("log_lines_dropped=")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no log_lines_dropped=N in {stats:?}"))
}

/// True when `fd` has `O_NONBLOCK` set.
fn is_nonblocking(fd: impl AsFd) -> bool {
    rustix::fs::fcntl_getfl(fd)
        .expect("F_GETFL")
        .contains(OFlags::NONBLOCK)
}

/// A line of 64 bytes, `\n` included.
const LINE: &[u8] = b"2024-05-01T12:00:00.123Z INFO  [echod] one log line of 64 bytes\n";

/// The write path on a full pipe: the write that does not fit returns at once, the line is
/// dropped and counted, and nothing half-written lands in the pipe. Once the pipe is read,
/// lines go through again.
#[test]
fn a_full_pipe_drops_and_counts_the_line() {
    assert_eq!(LINE.len(), 64);
    let (mut reader, writer) = std::io::pipe().expect("pipe");
    let guard = NonBlockingGuard::new(&writer);
    assert!(guard.set_here() && is_nonblocking(&writer));
    // Bounded: were the pipe left blocking, the write that does not fit would never return.
    // A second descriptor for the same pipe (and the same non-blocking flag), for the thread.
    let writer = writer.try_clone().unwrap();
    let (sink, written) = within(TIMEOUT, move || {
        let sink = Sink::new(writer);
        let mut written = 0;
        while sink.write_line(LINE) {
            written += 1;
        }
        (sink, written)
    });
    assert!(written > 0);
    assert_eq!(sink.dropped(), 1);
    // Exactly `written` whole lines are in the pipe.
    let mut held = vec![0; written * LINE.len()];
    reader.read_exact(&mut held).unwrap();
    assert!(held.chunks(LINE.len()).all(|line| line == LINE));
    assert!(sink.write_line(LINE));
    assert_eq!(sink.dropped(), 1);
    let mut next = [0; 64];
    reader.read_exact(&mut next).unwrap();
    assert_eq!(next, LINE);
}

/// The write path on a pipe whose reader is gone: EPIPE drops and counts the line; no
/// panic, no signal (Rust programs start with SIGPIPE ignored).
#[test]
fn a_pipe_without_reader_drops_and_counts_the_line() {
    let (reader, writer) = std::io::pipe().expect("pipe");
    drop(reader);
    let sink = Sink::new(writer);
    assert!(!sink.write_line(LINE));
    assert!(!sink.write_line(LINE));
    assert_eq!(sink.dropped(), 2);
}

/// A line longer than the pipe holds goes out in part. It counts as dropped, and the
/// next line starts with the `\n` that ends the torn one, so the two never run together.
#[test]
fn a_torn_line_is_ended_before_the_next_one() {
    let (reader, writer) = std::io::pipe().expect("pipe");
    let _writer_mode = NonBlockingGuard::new(&writer);
    let _reader_mode = NonBlockingGuard::new(&reader);
    let sink = Sink::new(&writer);
    let mut long = vec![b'x'; 1 << 20];
    long.push(b'\n');
    assert!(!sink.write_line(&long));
    assert_eq!(sink.dropped(), 1);
    let torn = drain(&reader);
    assert!(
        !torn.is_empty() && torn.len() < long.len(),
        "{}",
        torn.len()
    );
    assert!(torn.iter().all(|&b| b == b'x'));
    assert!(sink.write_line(b"next\n"));
    assert_eq!(drain(&reader), b"\nnext\n");
    assert!(sink.write_line(b"after\n"));
    assert_eq!(drain(&reader), b"after\n");
    assert_eq!(sink.dropped(), 1);
}

/// Reads a non-blocking pipe until it is empty.
fn drain(mut reader: &std::io::PipeReader) -> Vec<u8> {
    let mut all = Vec::new();
    let mut buf = [0; 64 * 1024];
    loop {
        match reader.read(&mut buf) {
            Ok(0) => return all,
            Ok(n) => all.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::WouldBlock => return all,
            Err(e) => panic!("read: {e}"),
        }
    }
}

/// Only pipes and sockets are made non-blocking, and only for as long as the guard
/// lives; regular files and character devices (a terminal, `/dev/null`) are left alone.
#[test]
fn only_pipes_and_sockets_are_made_nonblocking() {
    let (_reader, writer) = std::io::pipe().expect("pipe");
    let guard = NonBlockingGuard::new(&writer);
    assert!(guard.set_here() && is_nonblocking(&writer));
    drop(guard);
    assert!(
        !is_nonblocking(&writer),
        "the guard did not restore blocking mode"
    );

    let (socket, _peer) = std::os::unix::net::UnixStream::pair().expect("socketpair");
    let guard = NonBlockingGuard::new(&socket);
    assert!(guard.set_here() && is_nonblocking(&socket));
    drop(guard);
    assert!(!is_nonblocking(&socket));

    let null = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/null")
        .unwrap();
    assert!(!NonBlockingGuard::new(&null).set_here());
    assert!(!is_nonblocking(&null));

    let path = std::env::temp_dir().join(format!("echod-logging-{}", std::process::id()));
    let file = std::fs::File::create(&path).unwrap();
    let _ = std::fs::remove_file(&path);
    assert!(!NonBlockingGuard::new(&file).set_here());
    assert!(!is_nonblocking(&file));
}
