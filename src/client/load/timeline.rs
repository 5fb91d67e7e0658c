//! Results over time: `--interval-json` lines and the `--hdr-log` file.
//!
//! Every second the generator ends an [`Interval`] (its replies, errors and
//! latency histogram) and hands it here. `--interval-json` prints it as one
//! JSON object on stdout; `--hdr-log FILE` appends it to an HdrHistogram
//! interval log, the standard V2 format other HdrHistogram tools read
//! (HdrHistogram's `HistogramLogReader` in Java or Python, `hdr-plot`, …):
//!
//! ```text
//! #echoc load 127.0.0.1:8888 connections=10 duration_s=10 line_bytes=16 pipeline=1 rate=1000
//! #[StartTime: 1765123456.789 (seconds since epoch)]
//! #[BaseTime: 1765123456.789 (seconds since epoch)]
//! Tag=host-a,0.000,1.000,85.000,HISTFAAAA...
//! Tag=host-a,1.000,1.000,91.000,HISTFAAAA...
//! ...
//! #echoc totals opened=10 peak_up=10 replies=10000 connect=0 ... elapsed_s=10.003
//! #echoc histogram latency_uncorrected_us HISTFAAAA...
//! ```
//!
//! The interval lines hold `latency_us` (microseconds; corrected with `--rate`),
//! so any reader adds them up to the run's latency histogram. What a latency
//! histogram cannot say, the counters (replies, errors by kind, connections,
//! the `--rate` plan) and the other histograms (uncorrected latency, send
//! delay, connect time), travels in `#echoc` comment lines at the end: the
//! format's readers skip comments, and `echoc merge` ([`super::merge`]) reads
//! them back. A log without its `#echoc totals` line is from a run that did
//! not finish, and merge refuses it.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hdrhistogram::serialization::interval_log::{IntervalLogWriterBuilder, Tag};
use hdrhistogram::serialization::V2DeflateSerializer;

use super::report::{ErrorKind, Interval, Micros, Setup, Totals};
use crate::client::Fatal;

/// Where the intervals go.
#[derive(Debug)]
pub struct Timeline {
    /// Print each interval as a JSON line on stdout.
    json: bool,
    log: Option<HdrLog>,
}

impl Timeline {
    /// A timeline printing JSON lines if `json`, writing `hdr_log` if given
    /// (created now: a path we cannot write is refused before the run).
    pub fn new(
        json: bool,
        hdr_log: Option<&Path>,
        tag: Option<&str>,
        setup: &Setup,
        start: SystemTime,
    ) -> Result<Timeline, Fatal> {
        let log = match hdr_log {
            Some(path) => Some(HdrLog::create(path, tag, setup, start)?),
            None => None,
        };
        Ok(Timeline { json, log })
    }

    /// A timeline that keeps nothing.
    pub fn none() -> Timeline {
        Timeline {
            json: false,
            log: None,
        }
    }

    /// One interval is over.
    pub fn push(&mut self, interval: Interval) -> Result<(), Fatal> {
        if self.json {
            let mut out = io::stdout().lock();
            let _ = writeln!(out, "{}", interval.json());
            let _ = out.flush();
        }
        if let Some(log) = &mut self.log {
            log.interval(&interval)?;
        }
        Ok(())
    }

    /// The run is over: the log gets its totals.
    pub fn finish(&mut self, totals: &Totals, elapsed: Duration) -> Result<(), Fatal> {
        match &mut self.log {
            Some(log) => log.finish(totals, elapsed),
            None => Ok(()),
        }
    }
}

/// An HdrHistogram V2 interval log being written.
struct HdrLog {
    path: PathBuf,
    file: BufWriter<File>,
    tag: Option<String>,
    serializer: V2DeflateSerializer,
    /// One encoded line, reused.
    line: Vec<u8>,
}

impl std::fmt::Debug for HdrLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HdrLog").field("path", &self.path).finish()
    }
}

impl HdrLog {
    fn create(
        path: &Path,
        tag: Option<&str>,
        setup: &Setup,
        start: SystemTime,
    ) -> Result<HdrLog, Fatal> {
        if let Some(tag) = tag {
            if Tag::new(tag).is_none() || tag.contains(char::is_whitespace) {
                return Err(Fatal(format!(
                    "--hdr-tag '{tag}': a tag has no ',', space or newline"
                )));
            }
        }
        let fail = |e: io::Error| Fatal(format!("--hdr-log {}: {e}", path.display()));
        let file = File::create(path).map_err(fail)?;
        let mut log = HdrLog {
            path: path.to_path_buf(),
            file: BufWriter::new(file),
            tag: tag.map(str::to_string),
            serializer: V2DeflateSerializer::new(),
            line: Vec::new(),
        };
        let mut header = Vec::new();
        IntervalLogWriterBuilder::new()
            .add_comment(&setup_comment(setup))
            .with_start_time(start)
            .with_base_time(start)
            .begin_log_with(&mut header, &mut log.serializer)
            .map_err(fail)?;
        log.file.write_all(&header).map_err(fail)?;
        Ok(log)
    }

    fn fail(&self, e: impl std::fmt::Display) -> Fatal {
        Fatal(format!("--hdr-log {}: {e}", self.path.display()))
    }

    /// Encodes one histogram as an interval line into `self.line`.
    fn encode(&mut self, h: &Micros, start: Duration, length: Duration) -> Result<(), Fatal> {
        self.line.clear();
        let tag = self.tag.as_deref().and_then(Tag::new);
        let written = IntervalLogWriterBuilder::new()
            .begin_log_with(&mut self.line, &mut self.serializer)
            .map_err(|e| e.to_string())
            .and_then(|mut w| {
                w.write_histogram(h, start, length, tag)
                    .map_err(|e| e.to_string())
            });
        written.map_err(|e| self.fail(e))
    }

    fn interval(&mut self, interval: &Interval) -> Result<(), Fatal> {
        self.encode(&interval.latency, interval.start, interval.length)?;
        self.file.write_all(&self.line).map_err(|e| self.fail(e))
    }

    fn finish(&mut self, totals: &Totals, elapsed: Duration) -> Result<(), Fatal> {
        let mut out = format!("#echoc totals {}\n", totals_fields(totals, elapsed));
        let mut extra = vec![
            ("send_delay_us", &totals.send_delay),
            ("connect_us", &totals.connect),
        ];
        if let Some(u) = &totals.uncorrected {
            extra.insert(0, ("latency_uncorrected_us", u));
        }
        for (name, h) in extra {
            self.encode(h, Duration::ZERO, elapsed)?;
            let line = String::from_utf8_lossy(&self.line);
            let encoded = line.trim_end().rsplit(',').next().unwrap_or_default();
            out.push_str(&format!("#echoc histogram {name} {encoded}\n"));
        }
        self.file
            .write_all(out.as_bytes())
            .and_then(|()| self.file.flush())
            .map_err(|e| self.fail(e))
    }
}

/// `echoc load TARGET connections=.. duration_s=.. line_bytes=.. pipeline=.. [rate=..]`.
fn setup_comment(s: &Setup) -> String {
    let mut out = format!(
        "echoc load {} connections={} duration_s={} line_bytes={} pipeline={}",
        s.target,
        s.connections,
        s.duration.as_secs_f64(),
        s.line_bytes,
        s.pipeline
    );
    if let Some(rate) = s.rate {
        out.push_str(&format!(" rate={rate}"));
    }
    out
}

/// The counters as `name=value` pairs, errors under their kinds' names.
fn totals_fields(t: &Totals, elapsed: Duration) -> String {
    let mut out = format!(
        "opened={} peak_up={} replies={}",
        t.opened, t.peak_up, t.replies
    );
    for kind in ErrorKind::ALL {
        out.push_str(&format!(" {}={}", kind.name(), t.errors[kind as usize]));
    }
    out.push_str(&format!(
        " planned={} sent={} late={} elapsed_s={:.6}",
        t.planned,
        t.sent,
        t.late,
        elapsed.as_secs_f64()
    ));
    out
}

/// Seconds since the epoch, for `--start-at` and the log's headers.
pub fn unix_seconds(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}
