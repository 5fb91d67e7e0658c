//! `echoc load --hdr-log` and `echoc merge`: the log read back by an independent
//! reader (the `hdrhistogram` package from PyPI), and two runs added into one report.

mod util;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

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

fn echoc(args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_echoc"));
    cmd.args(args);
    run_with_input(cmd, b"", 3 * TIMEOUT)
}

fn last_line(out: &Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout);
    stdout.lines().last().unwrap_or_default().to_string()
}

fn temp_path(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("echod-test-{}-{name}", std::process::id()))
}

/// True when python3 with the `hdrh` module (PyPI `hdrhistogram`) is here; prints
/// SKIPPED otherwise, or fails when `ECHOD_REQUIRE_TOOLS=1` (as CI sets).
fn have_python_hdrh() -> bool {
    let ok = Command::new("python3")
        .args(["-c", "import hdrh.log"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        if std::env::var("ECHOD_REQUIRE_TOOLS").as_deref() == Ok("1") {
            panic!("python3 -m pip install hdrhistogram is required (ECHOD_REQUIRE_TOOLS=1)");
        }
        eprintln!("SKIPPED: python3's hdrh module is not installed (pip install hdrhistogram)");
    }
    ok
}

/// Reads the logs with the Python reader, adds every interval into one histogram
/// and prints its total count, then p50 p90 p99 p99.9 p99.99 and max. Each percentile
/// comes as the values one sample below and one sample above it (`lo hi`): the two
/// libraries round a percentile's rank differently, and in the tail of a few thousand
/// samples one rank is a different bucket.
fn python_read(logs: &[&Path]) -> Vec<f64> {
    let script = r#"
import sys
from hdrh.log import HistogramLogReader
from hdrh.histogram import HdrHistogram
total = HdrHistogram(1, 3600000000, 3)
for name in sys.argv[1:]:
    reader = HistogramLogReader(name, HdrHistogram(1, 3600000000, 3))
    while True:
        h = reader.get_next_interval_histogram()
        if h is None:
            break
        total.add(h)
n = total.get_total_count()
step = 100.0 / n
qs = []
for p in (50, 90, 99, 99.9, 99.99):
    qs.append(total.get_value_at_percentile(max(p - step, 0.0)))
    qs.append(total.get_value_at_percentile(min(p + step, 100.0)))
print(n, *qs, total.get_max_value())
"#;
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .args(logs)
        .output()
        .expect("run python3");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text.split_whitespace()
        .map(|v| v.parse().unwrap())
        .collect()
}

/// Two histogram values are the same bucket (three significant digits).
fn same_bucket(a: f64, b: f64) -> bool {
    (a - b).abs() <= a.max(b) / 1000.0 + 1.0
}

/// Our `key` percentile agrees with the Python reader's (see [`python_read`]): it lies
/// between the values one sample either side, to within a bucket. `max` is exact.
fn agrees(py: &[f64], index: usize, ours: f64) -> bool {
    if index == 5 {
        return same_bucket(ours, py[11]);
    }
    let (lo, hi) = (py[1 + 2 * index], py[2 + 2 * index]);
    (same_bucket(ours, lo) || ours >= lo) && (same_bucket(ours, hi) || ours <= hi)
}

/// An open-loop run's log: the Python reader finds as many latencies in it as
/// echoc reported replies, and the same percentiles.
#[test]
fn the_hdr_log_reads_back_in_an_independent_reader() {
    if !have_python_hdrh() {
        return;
    }
    let echod = Echod::start(&[]);
    let log = temp_path("one.hlog");
    let addr = echod.addr.to_string();
    let out = echoc(&[
        "load",
        &addr,
        "-c",
        "4",
        "-d",
        "1.5",
        "--rate",
        "2000",
        "--json",
        "--hdr-log",
        log.to_str().unwrap(),
        "--hdr-tag",
        "host-a",
    ]);
    assert!(out.status.success());
    let json = last_line(&out);
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("\n#[StartTime: ") && text.contains("\n#[BaseTime: "),
        "{text}"
    );
    assert!(
        text.lines()
            .filter(|l| l.starts_with("Tag=host-a,"))
            .count()
            >= 2,
        "{text}"
    );
    assert!(
        text.contains("\n#echoc totals opened=4 peak_up=4 replies="),
        "{text}"
    );
    let py = python_read(&[&log]);
    assert_eq!(py[0], json_number(&json, "replies"), "{json}");
    assert_eq!(py[0], 3000.0, "{json}");
    for (i, key) in ["p50", "p90", "p99", "p999", "p9999", "max"]
        .iter()
        .enumerate()
    {
        let ours = json_number(&json, &format!("latency_us.{key}"));
        assert!(agrees(&py, i, ours), "{key}: {ours} vs {:?}", &py[1..]);
    }
    let _ = std::fs::remove_file(log);
}

/// Two runs, one of them with an error, merged: replies and errors add up, the
/// maximum is the larger maximum, and the percentiles are those of the two runs'
/// histograms added (as the Python reader adds them).
#[test]
fn merge_adds_the_runs() {
    let python = have_python_hdrh();
    // At most 2 connections: of run A's 3, one is refused with ERR server busy.
    let echod = Echod::start(&["--max-connections", "2"]);
    let addr = echod.addr.to_string();
    let (a, b) = (temp_path("a.hlog"), temp_path("b.hlog"));
    let run_a = echoc(&[
        "load",
        &addr,
        "-c",
        "3",
        "-d",
        "1",
        "--rate",
        "900",
        "--json",
        "--hdr-log",
        a.to_str().unwrap(),
    ]);
    assert_eq!(
        run_a.status.code(),
        Some(1),
        "the refused connection is an error"
    );
    let run_b = echoc(&[
        "load",
        &addr,
        "-c",
        "2",
        "-d",
        "1",
        "--pipeline",
        "4",
        "--json",
        "--hdr-log",
        b.to_str().unwrap(),
    ]);
    assert_eq!(run_b.status.code(), Some(0));
    let (ja, jb) = (last_line(&run_a), last_line(&run_b));
    assert_eq!(json_number(&ja, "errors_by_kind.server_err"), 1.0, "{ja}");

    let merged = echoc(&["merge", a.to_str().unwrap(), b.to_str().unwrap(), "--json"]);
    assert_eq!(merged.status.code(), Some(1), "the runs had an error");
    let jm = last_line(&merged);
    let sum = |key: &str| json_number(&ja, key) + json_number(&jb, key);
    assert_eq!(json_number(&jm, "replies"), sum("replies"), "{jm}");
    assert_eq!(json_number(&jm, "errors"), 1.0, "{jm}");
    assert_eq!(json_number(&jm, "errors_by_kind.server_err"), 1.0, "{jm}");
    assert_eq!(json_number(&jm, "connections"), 5.0, "{jm}");
    assert_eq!(json_number(&jm, "opened"), sum("opened"), "{jm}");
    let max = json_number(&ja, "latency_us.max").max(json_number(&jb, "latency_us.max"));
    assert_eq!(json_number(&jm, "latency_us.max"), max, "{jm}");
    // Run B is closed-loop: the merged report has no uncorrected latency.
    assert!(!jm.contains("latency_uncorrected_us"), "{jm}");
    let report = String::from_utf8_lossy(&merged.stdout);
    assert!(report.starts_with("Load test @ "), "{report}");
    assert!(
        report.contains("  Errors       1 (server_err 1)"),
        "{report}"
    );

    if python {
        let py = python_read(&[&a, &b]);
        assert_eq!(py[0], json_number(&jm, "replies"));
        for (i, key) in ["p50", "p90", "p99", "p999", "p9999", "max"]
            .iter()
            .enumerate()
        {
            let ours = json_number(&jm, &format!("latency_us.{key}"));
            assert!(agrees(&py, i, ours), "{key}: {ours} vs {:?}", &py[1..]);
        }
    }
    // A log of a run that did not finish (no totals) is refused, by name.
    let cut = temp_path("cut.hlog");
    let text = std::fs::read_to_string(&a).unwrap();
    std::fs::write(&cut, &text[..text.find("#echoc totals").unwrap()]).unwrap();
    let refused = echoc(&["merge", cut.to_str().unwrap()]);
    assert_eq!(refused.status.code(), Some(1));
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(err.contains("no '#echoc totals' line"), "{err}");
    for f in [a, b, cut] {
        let _ = std::fs::remove_file(f);
    }
}
