//! The Prometheus text exposition format (version 0.0.4), built from the loop's counters.
//!
//! The format is lines of text: for each metric family a `# HELP` line (what it means) and
//! a `# TYPE` line (`counter` or `gauge`), then one sample per line, `name{label="value"}
//! number`. A counter only goes up (Prometheus computes rates from it and detects restarts
//! when it goes down); a gauge is a value read now. Counter names end in `_total`, as the
//! Prometheus naming rules ask, and every name starts with `echod_`.
//!
//! [`render`] is a pure function of two values: the counters ([`Stats`], the same ones
//! SIGUSR1 logs) and a [`Snapshot`] of what is measured at scrape time (connections by
//! state, buffered bytes). No sockets, no clock: the tests below call it directly.

use std::io::Write;

use crate::protocol::conn::{CloseReason, State};
use crate::reactor::stats::Stats;

/// The `Content-Type` of the exposition.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The states a live connection can be in, in the order the `state` label lists them.
/// (`Closed` is missing on purpose: the loop retires a connection as soon as it is closed,
/// so a scrape never sees one.)
pub const STATES: [State; 5] = [
    State::ProxyHeader,
    State::Open,
    State::Finishing,
    State::Flushing,
    State::Lingering,
];

/// The `state` label of a live connection's state (`None` for `Closed`).
pub fn state_label(state: State) -> Option<&'static str> {
    match state {
        State::ProxyHeader => Some("proxy_header"),
        State::Open => Some("open"),
        State::Finishing => Some("finishing"),
        State::Flushing => Some("flushing"),
        State::Lingering => Some("lingering"),
        State::Closed => None,
    }
}

/// What a scrape measures at the moment it is answered, as opposed to the counters,
/// which the loop keeps as things happen.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// Echo connections open now, by state (indexed like [`STATES`]).
    pub by_state: [u64; STATES.len()],
    /// Bytes held for all echo connections: partial lines plus replies not yet sent.
    pub buffered_bytes: u64,
    /// `--max-connections`, after clamping to the file descriptor limit.
    pub max_connections: u64,
    /// Log lines dropped because stderr failed or was full
    /// ([`crate::logging::dropped_lines`]).
    pub log_lines_dropped: u64,
    /// When the process started, in seconds since the Unix epoch.
    pub start_time_seconds: u64,
}

impl Snapshot {
    /// Counts one live echo connection: its state and the bytes it holds.
    pub fn count(&mut self, state: State, buffered: usize) {
        if let Some(i) = STATES.iter().position(|s| *s == state) {
            self.by_state[i] += 1;
        }
        self.buffered_bytes += buffered as u64;
    }
}

/// A metric family: what its `# HELP` and `# TYPE` lines say.
#[derive(Debug, Clone, Copy)]
struct Family {
    /// The metric name, `echod_…`; a counter's ends in `_total`.
    name: &'static str,
    /// `counter` (only goes up) or `gauge` (a value read now).
    kind: &'static str,
    /// One line for the person reading the graph.
    help: &'static str,
}

/// A counter family.
const fn counter(name: &'static str, help: &'static str) -> Family {
    Family {
        name,
        kind: "counter",
        help,
    }
}

/// A gauge family.
const fn gauge(name: &'static str, help: &'static str) -> Family {
    Family {
        name,
        kind: "gauge",
        help,
    }
}

// Every family, in the order of the exposition (and of the table in OPERATIONS.md).
const CONNECTIONS: Family = gauge("echod_connections", "Echo connections open now, by state.");
const MAX: Family = gauge(
    "echod_connections_max",
    "Most echo connections served at once (--max-connections, capped by the fd limit).",
);
const PEAK: Family = gauge(
    "echod_connections_peak",
    "Most echo connections held at once since the start.",
);
const ACCEPTED: Family = counter(
    "echod_connections_accepted_total",
    "Echo connections accepted and served.",
);
const CLOSED: Family = counter(
    "echod_connections_closed_total",
    "Echo connections closed, by reason.",
);
const REFUSED: Family = counter(
    "echod_connections_refused_total",
    "Echo connections turned away, by reason (busy: over --max-connections; per_ip: over --max-per-ip).",
);
const LINES: Family = counter(
    "echod_lines_total",
    "Lines answered (raw mode: chunks echoed).",
);
const RECEIVED: Family = counter(
    "echod_bytes_received_total",
    "Bytes read from echo clients.",
);
const SENT: Family = counter("echod_bytes_sent_total", "Bytes written to echo clients.");
const BUFFERED: Family = gauge(
    "echod_buffered_bytes",
    "Bytes held for echo clients now: partial lines and replies not yet sent.",
);
const OUT_OF_FDS: Family = counter(
    "echod_out_of_fds_episodes_total",
    "Times accept had to wait: out of file descriptors or kernel memory (one per episode).",
);
const WAKEUPS: Family = counter(
    "echod_loop_wakeups_total",
    "Times the event loop returned from poll (0 more while idle with nothing scheduled).",
);
const LOG_DROPPED: Family = counter(
    "echod_log_lines_dropped_total",
    "Log lines dropped because stderr failed or was full.",
);
const STARTED: Family = gauge(
    "echod_process_start_time_seconds",
    "Start time of the process since the Unix epoch, in seconds.",
);
const BUILD: Family = gauge("echod_build_info", "Always 1; the labels name the build.");

/// Appends the whole exposition for `stats` and `snapshot` to `out`.
pub fn render(stats: &Stats, snapshot: &Snapshot, out: &mut Vec<u8>) {
    let s = snapshot;
    header(out, CONNECTIONS);
    for (state, n) in STATES.iter().zip(s.by_state) {
        let label = state_label(*state).unwrap_or("closed");
        labelled(out, CONNECTIONS, ("state", label), n);
    }
    single(out, MAX, s.max_connections);
    single(out, PEAK, stats.peak_connections);
    single(out, ACCEPTED, stats.accepted);
    header(out, CLOSED);
    for (reason, n) in CloseReason::ALL.iter().zip(stats.closed) {
        labelled(out, CLOSED, ("reason", reason.name()), n);
    }
    header(out, REFUSED);
    labelled(out, REFUSED, ("reason", "busy"), stats.refused_busy);
    labelled(out, REFUSED, ("reason", "per_ip"), stats.refused_per_ip);
    single(out, LINES, stats.lines);
    single(out, RECEIVED, stats.bytes_in);
    single(out, SENT, stats.bytes_out);
    single(out, BUFFERED, s.buffered_bytes);
    single(out, OUT_OF_FDS, stats.out_of_fds_episodes);
    single(out, WAKEUPS, stats.loop_wakeups);
    single(out, LOG_DROPPED, s.log_lines_dropped);
    single(out, STARTED, s.start_time_seconds);
    header(out, BUILD);
    labelled(out, BUILD, ("version", env!("CARGO_PKG_VERSION")), 1);
}

// The helpers write into a `Vec<u8>`, whose `io::Write` never fails: the `let _` drop a
// `Result` that is always `Ok`.

/// The `# HELP` and `# TYPE` lines that open a family.
fn header(out: &mut Vec<u8>, f: Family) {
    let _ = write!(
        out,
        "# HELP {} {}\n# TYPE {} {}\n",
        f.name, f.help, f.name, f.kind
    );
}

/// One sample with one label. Our label values are fixed identifiers and the crate
/// version, none of which holds a `"`, `\` or newline, so no escaping is needed.
fn labelled(out: &mut Vec<u8>, f: Family, (label, value): (&str, &str), n: u64) {
    let _ = writeln!(out, "{}{{{label}=\"{value}\"}} {n}", f.name);
}

/// A family of one unlabelled sample.
fn single(out: &mut Vec<u8>, f: Family, n: u64) {
    header(out, f);
    let _ = writeln!(out, "{} {n}", f.name);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn rendered(stats: &Stats, snapshot: &Snapshot) -> String {
        let mut out = Vec::new();
        render(stats, snapshot, &mut out);
        String::from_utf8(out).expect("the exposition is UTF-8")
    }

    /// Every sample belongs to a family announced by `# HELP` and `# TYPE` before it,
    /// names follow the rules (`echod_` prefix, counters end in `_total`), and every
    /// value is a number.
    #[test]
    fn every_sample_has_help_and_type_and_a_numeric_value() {
        let text = rendered(&Stats::default(), &Snapshot::default());
        let mut help = HashMap::new();
        let mut kind = HashMap::new();
        let mut samples = 0;
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let (name, text) = rest.split_once(' ').unwrap();
                assert!(!text.is_empty(), "{line}");
                assert!(
                    help.insert(name, text).is_none(),
                    "two HELP lines for {name}"
                );
            } else if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, t) = rest.split_once(' ').unwrap();
                assert!(help.contains_key(name), "TYPE before HELP: {line}");
                assert!(t == "counter" || t == "gauge", "{line}");
                assert_eq!(t == "counter", name.ends_with("_total"), "{line}");
                assert!(kind.insert(name, t).is_none(), "two TYPE lines for {name}");
            } else {
                let (series, value) = line.rsplit_once(' ').unwrap();
                let name = series.split('{').next().unwrap();
                assert!(name.starts_with("echod_"), "{line}");
                assert!(kind.contains_key(name), "no TYPE for {line}");
                assert!(value.parse::<f64>().is_ok(), "not a number: {line}");
                samples += 1;
            }
        }
        assert!(text.ends_with('\n'));
        assert_eq!(kind.len(), 15);
        assert_eq!(samples, 5 + CloseReason::ALL.len() + 14);
    }

    /// The counters and the snapshot land in the samples that name them, byte for byte.
    #[test]
    fn the_values_land_in_their_samples() {
        let mut stats = Stats {
            accepted: 9,
            refused_busy: 2,
            refused_per_ip: 5,
            peak_connections: 4,
            out_of_fds_episodes: 1,
            lines: 30,
            bytes_in: 300,
            bytes_out: 450,
            ..Stats::default()
        };
        stats.count_close(CloseReason::IdleTimeout);
        stats.count_close(CloseReason::IdleTimeout);
        let mut snapshot = Snapshot {
            max_connections: 100,
            log_lines_dropped: 3,
            start_time_seconds: 1_700_000_000,
            ..Snapshot::default()
        };
        snapshot.count(State::Open, 10);
        snapshot.count(State::Open, 0);
        snapshot.count(State::Lingering, 5);
        snapshot.count(State::Closed, 7);
        let text = rendered(&stats, &snapshot);
        for want in [
            "echod_connections{state=\"proxy_header\"} 0\n",
            "echod_connections{state=\"open\"} 2\n",
            "echod_connections{state=\"lingering\"} 1\n",
            "echod_connections_max 100\n",
            "echod_connections_peak 4\n",
            "echod_connections_accepted_total 9\n",
            "echod_connections_closed_total{reason=\"idle_timeout\"} 2\n",
            "echod_connections_closed_total{reason=\"error\"} 0\n",
            "echod_connections_refused_total{reason=\"busy\"} 2\n",
            "echod_connections_refused_total{reason=\"per_ip\"} 5\n",
            "echod_lines_total 30\n",
            "echod_bytes_received_total 300\n",
            "echod_bytes_sent_total 450\n",
            "echod_buffered_bytes 22\n",
            "echod_out_of_fds_episodes_total 1\n",
            "echod_log_lines_dropped_total 3\n",
            "echod_process_start_time_seconds 1700000000\n",
            concat!(
                "echod_build_info{version=\"",
                env!("CARGO_PKG_VERSION"),
                "\"} 1\n"
            ),
        ] {
            assert!(text.contains(want), "missing {want:?} in:\n{text}");
        }
    }

    /// A family starts with its HELP line, then TYPE, then its samples.
    #[test]
    fn a_family_reads_help_type_samples() {
        let text = rendered(&Stats::default(), &Snapshot::default());
        assert!(text.starts_with(
            "# HELP echod_connections Echo connections open now, by state.\n\
             # TYPE echod_connections gauge\n\
             echod_connections{state=\"proxy_header\"} 0\n\
             echod_connections{state=\"open\"} 0\n"
        ));
    }

    #[test]
    fn every_live_state_has_a_label_and_closed_has_none() {
        for state in STATES {
            assert!(state_label(state).is_some(), "{state}");
        }
        assert_eq!(state_label(State::Closed), None);
    }
}
