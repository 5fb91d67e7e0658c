//! `echoc load --attack KIND` against the real `echod`: hostile connections run beside the
//! measured ones, are counted apart, and the measured clients' report stays clean.
//!
//! The tests run one at a time (a lock): each puts two busy processes on the machine, and
//! run side by side they would only measure each other. Every process runs under
//! `util::run_with_input`, which kills it after a timeout.

mod util;

use std::process::{Command, Output};
use std::sync::Mutex;

use util::{run_with_input, Echod, TIMEOUT};

/// One attack test at a time.
static SERIAL: Mutex<()> = Mutex::new(());

/// What one `echoc load --json` run printed.
struct Run {
    /// The whole stdout and stderr, to show when an assertion fails.
    report: String,
    /// The human-readable summary (stdout without the JSON line), each line ending in `\n`.
    text: String,
    /// The measured clients' part of the JSON line.
    json: String,
    /// The attack's object in the JSON line.
    attack: String,
}

impl Run {
    /// A number of the measured clients' summary.
    fn good(&self, key: &str) -> f64 {
        json_number(&self.json, key)
            .unwrap_or_else(|| panic!("no {key} in the summary:\n{}", self.report))
    }

    /// A number of the attack's summary (a key of its `reasons` too).
    fn attack(&self, key: &str) -> f64 {
        json_number(&self.attack, key)
            .unwrap_or_else(|| panic!("no {key} in the attack:\n{}", self.report))
    }
}

/// Runs `echoc load ADDR ARGS --json` to completion (at most 6 × [`TIMEOUT`]) and splits
/// its report. Asserts that it exited 0: attackers never make the run fail.
fn load(echod: &Echod, args: &[&str]) -> Run {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_echoc"));
    cmd.args(["load", &echod.addr.to_string(), "--json"])
        .args(args);
    let out: Output = run_with_input(cmd, b"", 6 * TIMEOUT);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let report = format!(
        "{stdout}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(0), "{report}");
    let (text, last) = stdout.trim_end().rsplit_once('\n').expect("a JSON line");
    let (json, attack) = last
        .split_once("\"attack\":")
        .unwrap_or_else(|| panic!("no attack in the JSON line:\n{report}"));
    Run {
        text: format!("{text}\n"),
        json: json.to_string(),
        attack: attack.to_string(),
        report,
    }
}

/// The number after `"key":` in our own flat-enough JSON.
fn json_number(json: &str, key: &str) -> Option<f64> {
    let needle = format!("\"{key}\":");
    let at = json.find(&needle)? + needle.len();
    let end = json[at..].find([',', '}']).map_or(json.len(), |i| at + i);
    json[at..end].parse().ok()
}

/// The measured clients come through an attack with nothing missing or wrong.
fn assert_good_clients_clean(run: &Run, connections: f64) {
    assert_eq!(run.good("errors"), 0.0, "{}", run.report);
    assert_eq!(run.good("unanswered"), 0.0, "{}", run.report);
    assert_eq!(run.good("connected_peak"), connections, "{}", run.report);
    assert!(run.good("replies") > 0.0, "{}", run.report);
    assert!(run.text.contains("  Errors       0\n"), "{}", run.report);
}

/// Slowloris attackers are held until the idle timeout refuses them, and are replaced.
#[test]
fn slowloris_attackers_get_idle_timeouts_and_come_back() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let echod = Echod::start(&["--idle-timeout", "1"]);
    let run = load(
        &echod,
        &[
            "-c",
            "5",
            "-d",
            "3",
            "--attack",
            "slowloris",
            "--attackers",
            "50",
        ],
    );
    assert_good_clients_clean(&run, 5.0);
    assert!(run
        .text
        .contains("  Attack       slowloris: 50 attackers, a byte every 10.0s\n"));
    assert_eq!(run.attack("peak_up"), 50.0, "{}", run.report);
    assert_eq!(run.attack("connect_failures"), 0.0, "{}", run.report);
    let refused = run.attack("refused");
    assert!(
        refused >= 50.0,
        "every first attacker timed out:\n{}",
        run.report
    );
    assert_eq!(run.attack("idle timeout"), refused, "{}", run.report);
    assert_eq!(run.attack("closed_by_server"), refused, "{}", run.report);
    assert_eq!(
        run.attack("opened"),
        refused + 50.0,
        "each one replaced:\n{}",
        run.report
    );
    assert!(run
        .text
        .contains(&format!("refused    {refused} (idle timeout {refused})")));
}

/// Slow readers fill their sockets and stay: nobody closes them by default.
#[test]
fn slow_readers_push_until_blocked_and_stay() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let echod = Echod::start(&[]);
    let run = load(
        &echod,
        &[
            "-c",
            "5",
            "-d",
            "1",
            "--attack",
            "slow-reader",
            "--attackers",
            "20",
        ],
    );
    assert_good_clients_clean(&run, 5.0);
    assert_eq!(run.attack("opened"), 20.0, "{}", run.report);
    assert_eq!(run.attack("peak_up"), 20.0, "{}", run.report);
    assert_eq!(run.attack("up_at_end"), 20.0, "{}", run.report);
    assert_eq!(run.attack("closed_by_server"), 0.0, "{}", run.report);
    // More than the server may hold for one client (its 64 KiB of pending output) went
    // into each connection: the kernel's buffers took the rest.
    assert!(run.attack("bytes_sent") > 20.0 * 65536.0, "{}", run.report);
    assert!(run.text.contains("    refused    0\n"), "{}", run.report);
}

/// Churn opens and closes connections in a loop; each cycle reads its banner first.
#[test]
fn churn_cycles_through_connections() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let echod = Echod::start(&[]);
    let run = load(
        &echod,
        &[
            "-c",
            "5",
            "-d",
            "1",
            "--attack",
            "churn",
            "--attackers",
            "10",
        ],
    );
    assert_good_clients_clean(&run, 5.0);
    let cycles = run.attack("closed_by_us");
    assert!(cycles >= 10.0, "{}", run.report);
    assert!(run.attack("peak_up") <= 10.0, "{}", run.report);
    assert_eq!(run.attack("connect_failures"), 0.0, "{}", run.report);
    assert_eq!(run.attack("refused"), 0.0, "{}", run.report);
    // Every connect became a finished cycle, or was still in one when the run ended.
    let opened = run.attack("opened");
    assert!((cycles..=cycles + 10.0).contains(&opened), "{}", run.report);
}

/// A flood fills the server's connection limit: the clients already served keep being
/// served, and the surplus attackers get `ERR server busy`, again and again.
#[test]
fn flood_over_max_connections_is_refused_busy() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let echod = Echod::start(&["--max-connections", "30"]);
    let run = load(
        &echod,
        &[
            "-c",
            "5",
            "-d",
            "1",
            "--attack",
            "flood",
            "--attackers",
            "50",
        ],
    );
    assert_good_clients_clean(&run, 5.0);
    let refused = run.attack("refused");
    assert!(refused >= 25.0, "{}", run.report);
    assert_eq!(run.attack("server busy"), refused, "{}", run.report);
    assert!(run.attack("opened") >= 50.0, "{}", run.report);
    assert!(run.attack("up_at_end") <= 50.0, "{}", run.report);
}

/// Each oversized line gets `ERR line too long`, and the next one comes on a new
/// connection.
#[test]
fn oversized_lines_get_line_too_long() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let echod = Echod::start(&[]);
    let run = load(
        &echod,
        &[
            "-c",
            "5",
            "-d",
            "1",
            "--attack",
            "oversized",
            "--attackers",
            "10",
        ],
    );
    assert_good_clients_clean(&run, 5.0);
    let refused = run.attack("refused");
    assert!(refused >= 10.0, "{}", run.report);
    assert_eq!(run.attack("line too long"), refused, "{}", run.report);
    assert!(run.attack("opened") >= refused, "{}", run.report);
    assert!(run
        .text
        .contains("  Attack       oversized: 10 attackers, 70000-byte lines\n"));
}

/// Attacks go to loopback addresses only; anything else is refused before a connect.
#[test]
fn attacks_on_other_hosts_are_refused() {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_echoc"));
    cmd.args(["load", "192.0.2.1:8888", "--attack", "flood"]);
    let out = run_with_input(cmd, b"", TIMEOUT);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "echoc: --attack runs against a loopback address only (127.0.0.0/8, ::1), \
         not 192.0.2.1:8888\n"
    );
    assert!(out.stdout.is_empty());
}
