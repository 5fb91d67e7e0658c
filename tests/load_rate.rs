//! `echoc load --rate`: the open loop, measured against a real `echod` that a real
//! SIGSTOP freezes in the middle of the run.
//!
//! A closed-loop generator waits with the server, so a stall shows in only the few
//! lines in flight (coordinated omission). With `--rate` every line has an intended
//! send time, lines that fell behind are sent late instead of being dropped, and
//! latency counts from the intended time: the stall shows in every line that was due
//! during it.

mod util;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use util::{run_with_input, Echod, TIMEOUT};

/// The number after `"key":` in our own flat-enough JSON; `key` may be a path of
/// objects, `latency_us.p99`.
fn json_number(json: &str, key: &str) -> f64 {
    let mut at = 0;
    for part in key.split('.') {
        let needle = format!("\"{part}\":");
        at += json[at..]
            .find(&needle)
            .unwrap_or_else(|| panic!("no {key} in {json}"))
            + needle.len();
    }
    let end = json[at..].find([',', '}']).map_or(json.len(), |i| at + i);
    json[at..end]
        .parse()
        .unwrap_or_else(|_| panic!("{key} is not a number in {json}"))
}

/// `echoc` with its stdout lines sent down a channel as they come, killed on drop.
struct Running {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Running {
    fn start(args: &[&str]) -> Running {
        let mut child = Command::new(env!("CARGO_BIN_EXE_echoc"))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn echoc");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Running { child, lines }
    }

    /// The next line of stdout, within `timeout`.
    fn line(&self, timeout: Duration) -> String {
        self.lines
            .recv_timeout(timeout)
            .unwrap_or_else(|e| panic!("no line from echoc within {timeout:?}: {e}"))
    }

    /// Every line until stdout closes, then the exit code; all within `timeout`.
    fn rest(mut self, timeout: Duration) -> (Vec<String>, i32) {
        let deadline = Instant::now() + timeout;
        let mut lines = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => lines.push(line),
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
                Err(e) => panic!("echoc still running after {timeout:?}: {e}; {lines:?}"),
            }
        }
        let status = self.child.wait().expect("wait for echoc");
        (lines, status.code().unwrap_or(-1))
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The reproduction, shortened: 10 connections at 1,000 lines/s for 5 s,
/// the server stopped with SIGSTOP for 1.5 s after the first second. About 1,500
/// lines fall due during the stop: the corrected p99 is over a second, the
/// uncorrected one is not, and (nearly) every planned line is still sent.
#[test]
fn a_stopped_server_shows_in_the_corrected_latency_and_no_line_is_dropped() {
    let echod = Echod::start(&[]);
    let addr = echod.addr.to_string();
    let args = [
        "load",
        &addr,
        "-c",
        "10",
        "-d",
        "5",
        "--rate",
        "1000",
        "--json",
        "--interval-json",
    ];
    let echoc = Running::start(&args);
    // The first second went by undisturbed: its interval line is out.
    let first = echoc.line(TIMEOUT);
    assert!(first.starts_with("{\"t\":0.000,"), "{first}");
    echod.signal("STOP");
    assert!(echod.wait_proc_state('T', TIMEOUT), "echod did not stop");
    let stopped = Instant::now();
    std::thread::sleep(Duration::from_millis(1500)); // the stall itself, not a wait
    echod.signal("CONT");
    let stall = stopped.elapsed();
    let (mut lines, code) = echoc.rest(3 * TIMEOUT);
    lines.insert(0, first);
    assert_eq!(code, 0, "{lines:#?}");
    let json = lines.last().unwrap().clone();
    let text = lines.join("\n");

    let planned = json_number(&json, "planned");
    let sent = json_number(&json, "sent");
    let replies = json_number(&json, "replies");
    assert!((4999.0..=5001.0).contains(&planned), "{json}");
    assert!(sent >= 0.98 * planned, "{json}");
    assert_eq!(replies, sent, "every line sent is answered: {json}");
    assert_eq!(json_number(&json, "errors"), 0.0, "{json}");
    // Corrected: the lines due during the stop waited for it.
    let p99 = json_number(&json, "latency_us.p99");
    assert!(p99 >= 1_000_000.0, "corrected p99 {p99} µs: {json}");
    assert!(json_number(&json, "latency_us.max") >= 0.9 * stall.as_micros() as f64);
    // Uncorrected: only the lines in flight (ten, one per connection) saw it.
    assert!(
        json_number(&json, "latency_uncorrected_us.p99") < 500_000.0,
        "{json}"
    );
    // The lines due during the stop were sent late, and the summary says so.
    assert!(json_number(&json, "sent_late") >= 1000.0, "{json}");
    assert!(text.contains("  Uncorrected  p50 "), "{text}");
    assert!(
        text.contains(" of 5000 planned lines, ") || planned != 5000.0,
        "{text}"
    );

    // One JSON line a second before the summary; together they count every reply.
    let intervals: Vec<&String> = lines.iter().filter(|l| l.starts_with("{\"t\":")).collect();
    assert!((5..=7).contains(&intervals.len()), "{text}");
    for (i, line) in intervals.iter().enumerate() {
        assert!(line.starts_with(&format!("{{\"t\":{i}.000,")), "{line}");
        for key in [
            "interval_s",
            "replies",
            "errors",
            "errors_by_kind",
            "latency_us",
        ] {
            assert!(line.contains(&format!("\"{key}\":")), "{key}: {line}");
        }
    }
    let sum: f64 = intervals.iter().map(|l| json_number(l, "replies")).sum();
    assert_eq!(sum, replies, "{text}");
    let worst = intervals
        .iter()
        .map(|l| json_number(l, "latency_us.max"))
        .fold(0.0, f64::max);
    assert!(worst >= 1_000_000.0, "{text}");
}

/// Without `--rate` the loop is closed: only the measured latency is given, since
/// no line has an intended time to correct it from.
#[test]
fn a_closed_loop_gives_only_the_measured_latency() {
    let echod = Echod::start(&[]);
    let addr = echod.addr.to_string();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_echoc"));
    cmd.args(["load", &addr, "-c", "2", "-d", "0.3", "--json"]);
    let out = run_with_input(cmd, b"", TIMEOUT);
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    let json = stdout.lines().last().unwrap();
    assert!(json_number(json, "latency_us.p9999") > 0.0, "{json}");
    for absent in [
        "latency_uncorrected_us",
        "planned",
        "sent_late",
        "Uncorrected",
    ] {
        assert!(!stdout.contains(absent), "{absent}: {stdout}");
    }
}
