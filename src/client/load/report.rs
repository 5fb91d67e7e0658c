//! Counting and telling: error kinds, latency, the live progress line, the
//! final summary (after wrk's) and the `--json` line.

use std::fmt::Write as _;
use std::io::{self, IsTerminal, Write};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use super::attack::AttackSummary;

/// The kinds of error the load generator tells apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// A connect failed or timed out (or we ran out of file descriptors).
    Connect,
    /// The banner was missing, wrong, or too long.
    Banner,
    /// A reply differed from the line sent, or came when none was due.
    Mismatch,
    /// The server answered `ERR ...` (busy, line too long, idle timeout).
    ServerErr,
    /// The server closed while replies were outstanding, or mid-run.
    EarlyClose,
    /// The socket failed: reset, broken pipe, ...
    Io,
    /// Replies still missing when the drain time after the run ran out.
    Unanswered,
}

impl ErrorKind {
    /// Every kind, in report order.
    pub const ALL: [ErrorKind; 7] = [
        ErrorKind::Connect,
        ErrorKind::Banner,
        ErrorKind::Mismatch,
        ErrorKind::ServerErr,
        ErrorKind::EarlyClose,
        ErrorKind::Io,
        ErrorKind::Unanswered,
    ];

    /// The name used in the summary and as the JSON key.
    pub fn name(self) -> &'static str {
        match self {
            ErrorKind::Connect => "connect",
            ErrorKind::Banner => "banner",
            ErrorKind::Mismatch => "mismatch",
            ErrorKind::ServerErr => "server_err",
            ErrorKind::EarlyClose => "early_close",
            ErrorKind::Io => "io",
            ErrorKind::Unanswered => "unanswered",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Everything counted during a run.
#[derive(Debug)]
pub struct Stats {
    errors: [u64; 7],
    /// The first error of each kind, described, to show what went wrong.
    first: [Option<String>; 7],
    /// Replies received and verified.
    pub replies: u64,
    /// Connections opened (connect started).
    pub opened: u64,
    /// Connections up now (connected, banner read).
    pub up: u64,
    /// The most connections that were up at once.
    pub peak_up: u64,
    latency: Histogram<u64>,
}

impl Default for Stats {
    fn default() -> Self {
        Self::new()
    }
}

impl Stats {
    /// Empty counters.
    pub fn new() -> Stats {
        Stats {
            errors: [0; 7],
            first: Default::default(),
            replies: 0,
            opened: 0,
            up: 0,
            peak_up: 0,
            // 1 µs to 1 hour, three significant digits.
            latency: Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid bounds"),
        }
    }

    /// Counts `count` errors of `kind`, keeping the first description.
    pub fn error(&mut self, kind: ErrorKind, count: u64, describe: impl FnOnce() -> String) {
        self.errors[kind.index()] += count;
        let first = &mut self.first[kind.index()];
        if first.is_none() {
            *first = Some(describe());
        }
    }

    /// Errors of all kinds.
    pub fn total_errors(&self) -> u64 {
        self.errors.iter().sum()
    }

    /// Records one reply's round-trip time.
    pub fn record_latency(&mut self, latency: Duration) {
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.latency.saturating_record(micros.max(1));
    }

    /// A connection came up (connected and banner read).
    pub fn conn_up(&mut self) {
        self.up += 1;
        self.peak_up = self.peak_up.max(self.up);
    }

    /// Freezes the counters into the final summary.
    pub fn summary(&self, setup: Setup, elapsed: Duration) -> Summary {
        let quantile = |q: f64| {
            if self.latency.is_empty() {
                0
            } else {
                self.latency.value_at_quantile(q)
            }
        };
        Summary {
            setup,
            elapsed,
            opened: self.opened,
            peak_up: self.peak_up,
            replies: self.replies,
            errors: self.errors,
            first: self.first.clone(),
            p50: quantile(0.5),
            p99: quantile(0.99),
            p999: quantile(0.999),
            max: if self.latency.is_empty() {
                0
            } else {
                self.latency.max()
            },
            attack: None,
        }
    }
}

/// What the run was asked to do, for the report.
#[derive(Debug, Clone)]
pub struct Setup {
    /// The target as given.
    pub target: String,
    /// Connections asked for.
    pub connections: u64,
    /// The run's length (sending, or holding for `--idle`).
    pub duration: Duration,
    /// Bytes per line, newline included.
    pub line_bytes: usize,
    /// Lines in flight per connection.
    pub pipeline: usize,
    /// `--idle`: connections held silent.
    pub idle: bool,
}

/// The outcome of a run, ready to print.
#[derive(Debug, Clone)]
pub struct Summary {
    setup: Setup,
    elapsed: Duration,
    opened: u64,
    peak_up: u64,
    replies: u64,
    errors: [u64; 7],
    first: [Option<String>; 7],
    p50: u64,
    p99: u64,
    p999: u64,
    max: u64,
    attack: Option<AttackSummary>,
}

impl Summary {
    /// Adds the attack's lines (`--attack`); the measured clients' part,
    /// and the exit code, stay as they are.
    pub fn with_attack(mut self, attack: AttackSummary) -> Summary {
        self.attack = Some(attack);
        self
    }

    /// Errors of all kinds; non-zero makes the exit code 1.
    pub fn total_errors(&self) -> u64 {
        self.errors.iter().sum()
    }

    fn replies_per_s(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            self.replies as f64 / secs
        } else {
            0.0
        }
    }

    /// The human-readable report, in the spirit of wrk's.
    pub fn text(&self) -> String {
        let s = &self.setup;
        let mut out = String::new();
        let what = if s.idle {
            "idle connections held".to_string()
        } else {
            format!("{}-byte lines, pipeline {}", s.line_bytes, s.pipeline)
        };
        let _ = writeln!(
            out,
            "Load test @ {} for {:.1}s: {} connections, {what}",
            s.target,
            s.duration.as_secs_f64(),
            s.connections
        );
        let _ = writeln!(
            out,
            "  Connections  {} opened, {} up at peak",
            self.opened, self.peak_up
        );
        if self.replies == 0 && !s.idle {
            let _ = writeln!(out, "  Latency      (no replies)");
        } else if !s.idle {
            let _ = writeln!(
                out,
                "  Latency      p50 {}  p99 {}  p99.9 {}  max {}",
                micros(self.p50),
                micros(self.p99),
                micros(self.p999),
                micros(self.max)
            );
        }
        let _ = writeln!(
            out,
            "  {} replies in {:.2}s, {:.0} replies/s",
            self.replies,
            self.elapsed.as_secs_f64(),
            self.replies_per_s()
        );
        let _ = writeln!(out, "  Errors       {}", self.errors_text());
        for kind in ErrorKind::ALL {
            if let Some(first) = &self.first[kind.index()] {
                let _ = writeln!(out, "    first {}: {first}", kind.name());
            }
        }
        if let Some(attack) = &self.attack {
            out.push_str(&attack.text());
        }
        out
    }

    /// `0`, or `3 (mismatch 2, early_close 1)`.
    fn errors_text(&self) -> String {
        let parts: Vec<String> = ErrorKind::ALL
            .iter()
            .filter(|k| self.errors[k.index()] > 0)
            .map(|k| format!("{} {}", k.name(), self.errors[k.index()]))
            .collect();
        match parts.is_empty() {
            true => "0".to_string(),
            false => format!("{} ({})", self.total_errors(), parts.join(", ")),
        }
    }

    /// The one-line JSON object for `--json`. Written by hand: fixed keys,
    /// numbers and small objects of numbers, plus (with `--attack`) the
    /// attack's part, whose kind and `ERR` texts are strings; it needs no
    /// serialisation library.
    pub fn json(&self) -> String {
        let kinds: Vec<String> = ErrorKind::ALL
            .iter()
            .map(|k| format!("\"{}\":{}", k.name(), self.errors[k.index()]))
            .collect();
        format!(
            concat!(
                "{{\"connections\":{},\"connected_peak\":{},\"opened\":{},",
                "\"duration_s\":{:.3},\"replies\":{},\"replies_per_s\":{:.1},",
                "\"errors\":{},\"errors_by_kind\":{{{}}},",
                "\"latency_us\":{{\"p50\":{},\"p99\":{},\"p999\":{},\"max\":{}}}{}}}"
            ),
            self.setup.connections,
            self.peak_up,
            self.opened,
            self.elapsed.as_secs_f64(),
            self.replies,
            self.replies_per_s(),
            self.total_errors(),
            kinds.join(","),
            self.p50,
            self.p99,
            self.p999,
            self.max,
            self.attack
                .as_ref()
                .map_or(String::new(), |a| format!(",\"attack\":{}", a.json()))
        )
    }
}

/// A latency in microseconds, shown in the unit that reads best.
fn micros(us: u64) -> String {
    match us {
        0..=999 => format!("{us}us"),
        1_000..=999_999 => format!("{:.2}ms", us as f64 / 1e3),
        _ => format!("{:.2}s", us as f64 / 1e6),
    }
}

/// The live progress line on stderr, once a second.
#[derive(Debug)]
pub struct Progress {
    start: Instant,
    next: Instant,
    replies_before: u64,
    /// On a terminal we redraw one line in place; otherwise (a log file, a
    /// CI run) we print a new line each time, which reads better there.
    in_place: bool,
    printed: bool,
}

impl Progress {
    /// Starts the clock; the first line comes one second from `start`.
    pub fn new(start: Instant) -> Progress {
        Progress {
            start,
            next: start + Duration::from_secs(1),
            replies_before: 0,
            in_place: io::stderr().is_terminal(),
            printed: false,
        }
    }

    /// When the next line is due (for the poll timeout).
    pub fn due(&self) -> Instant {
        self.next
    }

    /// Prints the line if it is due.
    pub fn tick(&mut self, now: Instant, stats: &Stats, wanted: u64) {
        if now < self.next {
            return;
        }
        let secs = now.duration_since(self.start).as_secs();
        let per_s = stats.replies - self.replies_before;
        self.replies_before = stats.replies;
        let line = format!(
            "{secs:>4}s  up {}/{wanted}  replies/s {per_s}  errors {}",
            stats.up,
            stats.total_errors()
        );
        let mut err = io::stderr().lock();
        let _ = match self.in_place {
            true => write!(err, "\r{line}\x1b[K"),
            false => writeln!(err, "{line}"),
        };
        self.printed = true;
        // The next whole second after now, even if this turn came late.
        while self.next <= now {
            self.next += Duration::from_secs(1);
        }
    }

    /// Ends an in-place line so the summary starts on a fresh one.
    pub fn finish(&self) {
        if self.in_place && self.printed {
            eprintln!();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(stats: &Stats) -> Summary {
        let setup = Setup {
            target: "127.0.0.1:8888".into(),
            connections: 2,
            duration: Duration::from_secs(2),
            line_bytes: 16,
            pipeline: 1,
            idle: false,
        };
        stats.summary(setup, Duration::from_secs(2))
    }

    #[test]
    fn json_has_the_promised_fields() {
        let mut stats = Stats::new();
        stats.replies = 10;
        stats.record_latency(Duration::from_micros(250));
        stats.error(ErrorKind::EarlyClose, 1, || "conn 1 closed".into());
        let json = summary(&stats).json();
        for field in [
            "\"connections\":2",
            "\"duration_s\":2.000",
            "\"replies\":10",
            "\"replies_per_s\":5.0",
            "\"errors\":1",
            "\"early_close\":1",
            "\"latency_us\":{\"p50\":250,",
            "\"p999\":250",
            "\"max\":250}",
        ] {
            assert!(json.contains(field), "{field} missing from {json}");
        }
        assert!(json.starts_with('{') && json.ends_with('}'));
        assert_eq!(json.matches('{').count(), json.matches('}').count());
    }

    #[test]
    fn text_names_error_kinds_and_first_examples() {
        let mut stats = Stats::new();
        stats.error(ErrorKind::Mismatch, 2, || "first one".into());
        stats.error(ErrorKind::Mismatch, 1, || "second one".into());
        let text = summary(&stats).text();
        assert!(text.contains("Errors       3 (mismatch 3)"), "{text}");
        assert!(text.contains("first mismatch: first one"), "{text}");
        assert!(!text.contains("second one"));
    }

    #[test]
    fn no_latency_samples_give_zeroes() {
        let json = summary(&Stats::new()).json();
        assert!(json.contains("\"latency_us\":{\"p50\":0,\"p99\":0,\"p999\":0,\"max\":0}"));
    }

    #[test]
    fn latencies_read_well() {
        assert_eq!(micros(85), "85us");
        assert_eq!(micros(1_500), "1.50ms");
        assert_eq!(micros(2_000_000), "2.00s");
    }
}
