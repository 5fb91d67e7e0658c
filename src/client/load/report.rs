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

/// A histogram of microseconds: 1 µs to 1 hour, three significant digits.
pub type Micros = Histogram<u64>;

/// An empty [`Micros`] histogram.
pub fn micros_histogram() -> Micros {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid bounds")
}

/// Records `d` in microseconds (at least 1, at most the histogram's top).
pub fn record(h: &mut Micros, d: Duration) {
    let micros = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
    h.saturating_record(micros.max(1));
}

/// A line counts as sent late when it left more than this after its intended
/// time: well above the alarm's resolution and the loop's turn, well below any
/// stall worth reporting.
pub const LATE: Duration = Duration::from_millis(5);

/// What a run (or several merged) adds up to: counters and histograms. This
/// is what `--hdr-log` writes at the end of the log and `echoc merge` adds up.
#[derive(Debug, Clone)]
pub struct Totals {
    /// Connections opened (connect started), reconnections included.
    pub opened: u64,
    /// The most connections that were up at once.
    pub peak_up: u64,
    /// Replies received and verified.
    pub replies: u64,
    /// Errors by kind, in [`ErrorKind::ALL`] order.
    pub errors: [u64; 7],
    /// With `--rate`: lines the plan had.
    pub planned: u64,
    /// With `--rate`: lines sent.
    pub sent: u64,
    /// With `--rate`: lines sent more than [`LATE`] after their time.
    pub late: u64,
    /// Latency of every reply: from its intended send time with `--rate`,
    /// from its real send time otherwise (`latency_us`).
    pub latency: Micros,
    /// With `--rate`: latency from the real send time (`latency_uncorrected_us`).
    pub uncorrected: Option<Micros>,
    /// With `--rate`: how long after its intended time each line was sent.
    pub send_delay: Micros,
    /// Connect times, SYN to established (`connect_us`).
    pub connect: Micros,
}

impl Totals {
    /// Nothing counted yet; `open_loop` for a `--rate` run.
    pub fn new(open_loop: bool) -> Totals {
        Totals {
            opened: 0,
            peak_up: 0,
            replies: 0,
            errors: [0; 7],
            planned: 0,
            sent: 0,
            late: 0,
            latency: micros_histogram(),
            uncorrected: open_loop.then(micros_histogram),
            send_delay: micros_histogram(),
            connect: micros_histogram(),
        }
    }

    /// Errors of all kinds.
    pub fn total_errors(&self) -> u64 {
        self.errors.iter().sum()
    }

    /// Adds another run's totals to these (`echoc merge`): counters add up,
    /// the peak is the sum (the runs were at the same time, from different
    /// hosts), histograms add. An open-loop run merged with a closed-loop one
    /// keeps only what both have.
    pub fn add(&mut self, other: &Totals) {
        self.opened += other.opened;
        self.peak_up += other.peak_up;
        self.replies += other.replies;
        for (a, b) in self.errors.iter_mut().zip(other.errors) {
            *a += b;
        }
        self.planned += other.planned;
        self.sent += other.sent;
        self.late += other.late;
        add_histogram(&mut self.latency, &other.latency);
        self.uncorrected = match (self.uncorrected.take(), &other.uncorrected) {
            (Some(mut a), Some(b)) => {
                add_histogram(&mut a, b);
                Some(a)
            }
            _ => None,
        };
        add_histogram(&mut self.send_delay, &other.send_delay);
        add_histogram(&mut self.connect, &other.connect);
    }
}

/// Adds `b` into `a`. Both have the same bounds, so nothing can be refused;
/// values above the top (which `record` never makes) would be clamped.
pub fn add_histogram(a: &mut Micros, b: &Micros) {
    if a.add(b).is_err() {
        for v in b.iter_recorded() {
            a.saturating_record_n(v.value_iterated_to(), v.count_at_value());
        }
    }
}

/// One second of a run, for `--interval-json` and `--hdr-log`.
#[derive(Debug, Clone)]
pub struct Interval {
    /// Seconds since the start of the run at which it began.
    pub start: Duration,
    /// How long it lasted (a second, or less for the last).
    pub length: Duration,
    /// Replies in it.
    pub replies: u64,
    /// Errors in it, by kind.
    pub errors: [u64; 7],
    /// Latency of its replies (as `latency_us`).
    pub latency: Micros,
}

impl Interval {
    /// The `--interval-json` line.
    pub fn json(&self) -> String {
        let q = |q: f64| quantile(&self.latency, q);
        format!(
            concat!(
                "{{\"t\":{:.3},\"interval_s\":{:.3},\"replies\":{},\"errors\":{},",
                "\"errors_by_kind\":{},\"latency_us\":{{\"p50\":{},\"p99\":{},\"max\":{}}}}}"
            ),
            self.start.as_secs_f64(),
            self.length.as_secs_f64(),
            self.replies,
            self.errors.iter().sum::<u64>(),
            errors_json(&self.errors),
            q(0.5),
            q(0.99),
            max_of(&self.latency),
        )
    }
}

/// Everything counted during a run.
#[derive(Debug)]
pub struct Stats {
    /// The run's totals, up to the last finished interval.
    pub totals: Totals,
    /// The first error of each kind, described, to show what went wrong.
    first: [Option<String>; 7],
    /// Replies received and verified (all of them, for the progress line).
    pub replies: u64,
    /// Connections up now (connected, banner read).
    pub up: u64,
    /// The interval being counted: replies, errors, latency. Each reply is
    /// recorded here only, and the interval is added to the totals when it
    /// ends, so a reply costs one histogram record, not two.
    interval: Interval,
    /// Uncorrected latency of the interval's replies (`--rate`).
    interval_uncorrected: Micros,
}

impl Stats {
    /// Empty counters; `open_loop` for a `--rate` run.
    pub fn new(open_loop: bool) -> Stats {
        Stats {
            totals: Totals::new(open_loop),
            first: Default::default(),
            replies: 0,
            up: 0,
            interval: Interval {
                start: Duration::ZERO,
                length: Duration::ZERO,
                replies: 0,
                errors: [0; 7],
                latency: micros_histogram(),
            },
            interval_uncorrected: micros_histogram(),
        }
    }

    /// Counts `count` errors of `kind`, keeping the first description.
    pub fn error(&mut self, kind: ErrorKind, count: u64, describe: impl FnOnce() -> String) {
        self.interval.errors[kind.index()] += count;
        let first = &mut self.first[kind.index()];
        if first.is_none() {
            *first = Some(describe());
        }
    }

    /// Errors of all kinds, so far.
    pub fn total_errors(&self) -> u64 {
        self.totals.total_errors() + self.interval.errors.iter().sum::<u64>()
    }

    /// Records one verified reply: its latency from the intended send time
    /// and from the real one (the same in a closed loop).
    pub fn reply(&mut self, corrected: Duration, uncorrected: Duration) {
        self.replies += 1;
        self.interval.replies += 1;
        record(&mut self.interval.latency, corrected);
        if self.totals.uncorrected.is_some() {
            record(&mut self.interval_uncorrected, uncorrected);
        }
    }

    /// With `--rate`: a line was sent `delay` after its intended time.
    pub fn sent(&mut self, delay: Duration) {
        self.totals.sent += 1;
        if delay > LATE {
            self.totals.late += 1;
        }
        record(&mut self.totals.send_delay, delay);
    }

    /// A connection came up (connected and banner read).
    pub fn conn_up(&mut self) {
        self.up += 1;
        self.totals.peak_up = self.totals.peak_up.max(self.up);
    }

    /// Ends the interval at `at` (time since the start of the run): adds it
    /// to the totals, returns it, and starts the next one.
    pub fn end_interval(&mut self, at: Duration) -> Interval {
        let next = Interval {
            start: at,
            length: Duration::ZERO,
            replies: 0,
            errors: [0; 7],
            latency: micros_histogram(),
        };
        let mut done = std::mem::replace(&mut self.interval, next);
        done.length = at.saturating_sub(done.start);
        let t = &mut self.totals;
        t.replies += done.replies;
        for (a, b) in t.errors.iter_mut().zip(done.errors) {
            *a += b;
        }
        add_histogram(&mut t.latency, &done.latency);
        if let Some(u) = &mut t.uncorrected {
            add_histogram(u, &self.interval_uncorrected);
            self.interval_uncorrected.reset();
        }
        done
    }

    /// Freezes the counters into the final summary (call [`Stats::end_interval`]
    /// first: the interval in progress is not in the totals).
    pub fn summary(&self, setup: Setup, elapsed: Duration) -> Summary {
        Summary {
            setup,
            elapsed,
            totals: self.totals.clone(),
            first: self.first.clone(),
            attack: None,
        }
    }
}

/// The value at quantile `q`, 0 for an empty histogram.
fn quantile(h: &Micros, q: f64) -> u64 {
    if h.is_empty() {
        0
    } else {
        h.value_at_quantile(q)
    }
}

/// The largest value (its bucket's highest equivalent), 0 for none.
fn max_of(h: &Micros) -> u64 {
    if h.is_empty() {
        0
    } else {
        h.max()
    }
}

/// The quantiles the summary shows, with their JSON keys and text labels.
const QUANTILES: [(f64, &str, &str); 5] = [
    (0.5, "p50", "p50"),
    (0.9, "p90", "p90"),
    (0.99, "p99", "p99"),
    (0.999, "p999", "p99.9"),
    (0.9999, "p9999", "p99.99"),
];

/// `{"p50":..,"p90":..,"p99":..,"p999":..,"p9999":..,"max":..}`.
fn percentiles_json(h: &Micros) -> String {
    let mut out = String::from("{");
    for (q, key, _) in QUANTILES {
        let _ = write!(out, "\"{key}\":{},", quantile(h, q));
    }
    let _ = write!(out, "\"max\":{}}}", max_of(h));
    out
}

/// `p50 17us  p90 ...  max 2.00s`.
fn percentiles_text(h: &Micros) -> String {
    let mut out = String::new();
    for (q, _, label) in QUANTILES {
        let _ = write!(out, "{label} {}  ", micros(quantile(h, q)));
    }
    let _ = write!(out, "max {}", micros(max_of(h)));
    out
}

/// `{"connect":0,...}` in [`ErrorKind::ALL`] order.
fn errors_json(errors: &[u64; 7]) -> String {
    let kinds: Vec<String> = ErrorKind::ALL
        .iter()
        .map(|k| format!("\"{}\":{}", k.name(), errors[k.index()]))
        .collect();
    format!("{{{}}}", kinds.join(","))
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
    /// `--rate`: lines per second in all (open loop).
    pub rate: Option<f64>,
}

/// The outcome of a run, ready to print.
#[derive(Debug, Clone)]
pub struct Summary {
    setup: Setup,
    elapsed: Duration,
    totals: Totals,
    first: [Option<String>; 7],
    attack: Option<AttackSummary>,
}

impl Summary {
    /// A summary of totals added up from logs (`echoc merge`).
    pub fn merged(setup: Setup, elapsed: Duration, totals: Totals) -> Summary {
        Summary {
            setup,
            elapsed,
            totals,
            first: Default::default(),
            attack: None,
        }
    }

    /// Adds the attack's lines (`--attack`); the measured clients' part,
    /// and the exit code, stay as they are.
    pub fn with_attack(mut self, attack: AttackSummary) -> Summary {
        self.attack = Some(attack);
        self
    }

    /// The counters and histograms.
    pub fn totals(&self) -> &Totals {
        &self.totals
    }

    /// Errors of all kinds; non-zero makes the exit code 1.
    pub fn total_errors(&self) -> u64 {
        self.totals.total_errors()
    }

    fn replies_per_s(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            self.totals.replies as f64 / secs
        } else {
            0.0
        }
    }

    /// The human-readable report, in the spirit of wrk's.
    pub fn text(&self) -> String {
        let s = &self.setup;
        let t = &self.totals;
        let mut out = String::new();
        let what = if s.idle {
            "idle connections held".to_string()
        } else {
            let rate = match s.rate {
                Some(r) => format!(", {r} lines/s planned"),
                None => String::new(),
            };
            format!("{}-byte lines, pipeline {}{rate}", s.line_bytes, s.pipeline)
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
            t.opened, t.peak_up
        );
        if !t.connect.is_empty() {
            let _ = writeln!(out, "  Connect      {}", percentiles_text(&t.connect));
        }
        if t.replies == 0 && !s.idle {
            let _ = writeln!(out, "  Latency      (no replies)");
        } else if !s.idle {
            let _ = writeln!(out, "  Latency      {}", percentiles_text(&t.latency));
            if let Some(u) = &t.uncorrected {
                let _ = writeln!(out, "  Uncorrected  {}", percentiles_text(u));
            }
        }
        if t.uncorrected.is_some() {
            let _ = writeln!(
                out,
                "  Sent         {} of {} planned lines, {} late (over {}) by up to {}",
                t.sent,
                t.planned,
                t.late,
                micros(LATE.as_micros() as u64),
                micros(max_of(&t.send_delay))
            );
        }
        let _ = writeln!(
            out,
            "  {} replies in {:.2}s, {:.0} replies/s",
            t.replies,
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
        let errors = &self.totals.errors;
        let parts: Vec<String> = ErrorKind::ALL
            .iter()
            .filter(|k| errors[k.index()] > 0)
            .map(|k| format!("{} {}", k.name(), errors[k.index()]))
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
        let t = &self.totals;
        let mut out = format!(
            concat!(
                "{{\"connections\":{},\"connected_peak\":{},\"opened\":{},",
                "\"duration_s\":{:.3},\"replies\":{},\"replies_per_s\":{:.1},",
                "\"errors\":{},\"errors_by_kind\":{},\"latency_us\":{}"
            ),
            self.setup.connections,
            t.peak_up,
            t.opened,
            self.elapsed.as_secs_f64(),
            t.replies,
            self.replies_per_s(),
            self.total_errors(),
            errors_json(&t.errors),
            percentiles_json(&t.latency),
        );
        if let Some(u) = &t.uncorrected {
            let _ = write!(
                out,
                concat!(
                    ",\"latency_uncorrected_us\":{},\"planned\":{},\"sent\":{},",
                    "\"sent_late\":{},\"send_delay_us\":{}"
                ),
                percentiles_json(u),
                t.planned,
                t.sent,
                t.late,
                percentiles_json(&t.send_delay)
            );
        }
        let _ = write!(out, ",\"connect_us\":{}", percentiles_json(&t.connect));
        if let Some(a) = &self.attack {
            let _ = write!(out, ",\"attack\":{}", a.json());
        }
        out.push('}');
        out
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

    fn setup(rate: Option<f64>) -> Setup {
        Setup {
            target: "127.0.0.1:8888".into(),
            connections: 2,
            duration: Duration::from_secs(2),
            line_bytes: 16,
            pipeline: 1,
            idle: false,
            rate,
        }
    }

    fn summary(stats: &mut Stats) -> Summary {
        stats.end_interval(Duration::from_secs(2));
        stats.summary(setup(None), Duration::from_secs(2))
    }

    #[test]
    fn json_has_the_promised_fields() {
        let mut stats = Stats::new(false);
        for _ in 0..10 {
            stats.reply(Duration::from_micros(250), Duration::from_micros(250));
        }
        stats.error(ErrorKind::EarlyClose, 1, || "conn 1 closed".into());
        let json = summary(&mut stats).json();
        for field in [
            "\"connections\":2",
            "\"duration_s\":2.000",
            "\"replies\":10",
            "\"replies_per_s\":5.0",
            "\"errors\":1",
            "\"early_close\":1",
            "\"latency_us\":{\"p50\":250,\"p90\":250,\"p99\":250,\"p999\":250,\"p9999\":250,\"max\":250}",
            "\"connect_us\":{\"p50\":0,",
        ] {
            assert!(json.contains(field), "{field} missing from {json}");
        }
        assert!(
            !json.contains("uncorrected"),
            "closed loop: measured latency only"
        );
        assert!(json.starts_with('{') && json.ends_with('}'));
        assert_eq!(json.matches('{').count(), json.matches('}').count());
    }

    #[test]
    fn open_loop_gives_both_latencies_and_the_send_counts() {
        let mut stats = Stats::new(true);
        stats.totals.planned = 3;
        stats.sent(Duration::from_micros(100));
        stats.sent(Duration::from_millis(6));
        stats.reply(Duration::from_millis(2000), Duration::from_micros(100));
        stats.end_interval(Duration::from_secs(1));
        let s = stats.summary(setup(Some(1000.0)), Duration::from_secs(2));
        let json = s.json();
        for field in [
            "\"latency_us\":{\"p50\":2000895,",
            "\"latency_uncorrected_us\":{\"p50\":100,",
            "\"planned\":3,\"sent\":2,\"sent_late\":1,",
        ] {
            assert!(json.contains(field), "{field} missing from {json}");
        }
        let text = s.text();
        assert!(
            text.contains(
                "  Sent         2 of 3 planned lines, 1 late (over 5.00ms) by up to 6.00ms"
            ),
            "{text}"
        );
        assert!(text.contains("  Uncorrected  p50 100us"), "{text}");
    }

    #[test]
    fn intervals_add_up_to_the_totals() {
        let mut stats = Stats::new(false);
        stats.reply(Duration::from_micros(10), Duration::from_micros(10));
        stats.error(ErrorKind::Io, 1, || "reset".into());
        let first = stats.end_interval(Duration::from_secs(1));
        stats.reply(Duration::from_micros(30), Duration::from_micros(30));
        stats.reply(Duration::from_micros(40), Duration::from_micros(40));
        let second = stats.end_interval(Duration::from_millis(1500));
        assert_eq!((first.replies, second.replies), (1, 2));
        assert_eq!(second.length, Duration::from_millis(500));
        assert_eq!((stats.totals.replies, stats.totals.total_errors()), (3, 1));
        assert_eq!(stats.totals.latency.len(), 3);
        assert_eq!(
            second.json(),
            "{\"t\":1.000,\"interval_s\":0.500,\"replies\":2,\"errors\":0,\"errors_by_kind\":{\"connect\":0,\"banner\":0,\"mismatch\":0,\"server_err\":0,\"early_close\":0,\"io\":0,\"unanswered\":0},\"latency_us\":{\"p50\":30,\"p99\":40,\"max\":40}}"
        );
    }

    #[test]
    fn text_names_error_kinds_and_first_examples() {
        let mut stats = Stats::new(false);
        stats.error(ErrorKind::Mismatch, 2, || "first one".into());
        stats.error(ErrorKind::Mismatch, 1, || "second one".into());
        let text = summary(&mut stats).text();
        assert!(text.contains("Errors       3 (mismatch 3)"), "{text}");
        assert!(text.contains("first mismatch: first one"), "{text}");
        assert!(!text.contains("second one"));
    }

    #[test]
    fn no_latency_samples_give_zeroes() {
        let json = summary(&mut Stats::new(false)).json();
        assert!(json.contains(
            "\"latency_us\":{\"p50\":0,\"p90\":0,\"p99\":0,\"p999\":0,\"p9999\":0,\"max\":0}"
        ));
    }

    #[test]
    fn latencies_read_well() {
        assert_eq!(micros(85), "85us");
        assert_eq!(micros(1_500), "1.50ms");
        assert_eq!(micros(2_000_000), "2.00s");
    }
}
