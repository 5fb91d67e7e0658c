//! `echoc merge FILE...`: one report from the `--hdr-log` files of several runs.
//!
//! Percentiles cannot be averaged: the p99 of two runs is not the mean of their
//! p99s. Histograms can be added, though, and the p99 of the sum is the p99 of
//! all the replies together. So each run writes its histograms to its log
//! ([`super::timeline`] describes the file), and merge adds them up: the
//! interval histograms (`latency_us`, read as any HdrHistogram tool reads
//! them), the `#echoc histogram` lines, and the `#echoc totals` counters. The
//! runs are taken to have run side by side (on several hosts, started with
//! the same `--start-at`): connections, peaks and rates add up, the duration
//! is the longest run's.

use std::path::Path;
use std::time::Duration;

use base64::Engine as _;
use hdrhistogram::serialization::interval_log::{IntervalLogIterator, LogEntry};
use hdrhistogram::serialization::Deserializer;

use super::report::{add_histogram, micros_histogram, ErrorKind, Micros, Setup, Summary, Totals};
use crate::client::Fatal;

/// One run, as read back from its log.
#[derive(Debug)]
pub struct Run {
    /// What it was asked to do.
    pub setup: Setup,
    /// Start to last reply.
    pub elapsed: Duration,
    /// Its counters and histograms.
    pub totals: Totals,
}

/// Reads the logs and adds them up into one summary.
pub fn merge(paths: &[impl AsRef<Path>]) -> Result<Summary, Fatal> {
    let mut merged: Option<Run> = None;
    for path in paths {
        let path = path.as_ref();
        let text =
            std::fs::read_to_string(path).map_err(|e| Fatal(format!("{}: {e}", path.display())))?;
        let run = read_log(&text).map_err(|e| Fatal(format!("{}: {e}", path.display())))?;
        merged = Some(match merged {
            None => run,
            Some(mut all) => {
                add_setup(&mut all.setup, &run.setup);
                all.elapsed = all.elapsed.max(run.elapsed);
                all.totals.add(&run.totals);
                all
            }
        });
    }
    let all = merged.ok_or_else(|| Fatal("merge needs at least one log file".into()))?;
    Ok(Summary::merged(all.setup, all.elapsed, all.totals))
}

/// Runs side by side: their connections and rates add up.
fn add_setup(a: &mut Setup, b: &Setup) {
    if a.target != b.target {
        a.target = format!("{} + {}", a.target, b.target);
    }
    a.connections += b.connections;
    a.duration = a.duration.max(b.duration);
    a.rate = match (a.rate, b.rate) {
        (Some(x), Some(y)) => Some(x + y),
        _ => None,
    };
}

/// Reads one `--hdr-log` file.
pub fn read_log(text: &str) -> Result<Run, String> {
    let mut setup = None;
    let mut totals = None;
    let mut extra: Vec<(String, Micros)> = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("#echoc load ") {
            setup = Some(parse_setup(rest)?);
        } else if let Some(rest) = line.strip_prefix("#echoc totals ") {
            totals = Some(parse_totals(rest)?);
        } else if let Some(rest) = line.strip_prefix("#echoc histogram ") {
            let (name, encoded) = rest
                .split_once(' ')
                .ok_or_else(|| format!("bad line '{line}'"))?;
            extra.push((name.to_string(), decode(encoded)?));
        }
    }
    let setup = setup.ok_or("no '#echoc load' line: not a log from echoc load --hdr-log")?;
    let (mut totals, elapsed) = totals.ok_or("no '#echoc totals' line: the run did not finish")?;
    for entry in IntervalLogIterator::new(text.as_bytes()) {
        match entry {
            Ok(LogEntry::Interval(h)) => {
                add_histogram(&mut totals.latency, &decode(h.encoded_histogram())?);
            }
            Ok(_) => {}
            Err(e) => return Err(format!("not an HdrHistogram interval log: {e:?}")),
        }
    }
    if totals.latency.len() != totals.replies {
        return Err(format!(
            "its intervals hold {} latencies but its totals say {} replies",
            totals.latency.len(),
            totals.replies
        ));
    }
    for (name, h) in extra {
        match name.as_str() {
            "latency_uncorrected_us" => totals.uncorrected = Some(h),
            "send_delay_us" => totals.send_delay = h,
            "connect_us" => totals.connect = h,
            _ => {} // from a later echoc: not ours to add
        }
    }
    Ok(Run {
        setup,
        elapsed,
        totals,
    })
}

/// A base64 V2 (compressed or not) histogram.
fn decode(encoded: &str) -> Result<Micros, String> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .map_err(|e| format!("bad histogram: {e}"))?;
    let h: Micros = Deserializer::new()
        .deserialize(&mut &bytes[..])
        .map_err(|e| format!("bad histogram: {e:?}"))?;
    // Into our own bounds, so that histograms from several logs always add.
    let mut ours = micros_histogram();
    add_histogram(&mut ours, &h);
    Ok(ours)
}

/// `name=value` pairs after a fixed first word.
fn fields(text: &str) -> impl Iterator<Item = (&str, &str)> {
    text.split_whitespace().filter_map(|kv| kv.split_once('='))
}

fn parse_setup(text: &str) -> Result<Setup, String> {
    let target = text
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string();
    let mut setup = Setup {
        target,
        connections: 0,
        duration: Duration::ZERO,
        line_bytes: 0,
        pipeline: 0,
        idle: false,
        rate: None,
    };
    for (key, value) in fields(text) {
        let bad = || format!("bad '{key}={value}' in the '#echoc load' line");
        match key {
            "connections" => setup.connections = value.parse().map_err(|_| bad())?,
            "duration_s" => {
                let secs: f64 = value.parse().map_err(|_| bad())?;
                setup.duration = Duration::try_from_secs_f64(secs).map_err(|_| bad())?;
            }
            "line_bytes" => setup.line_bytes = value.parse().map_err(|_| bad())?,
            "pipeline" => setup.pipeline = value.parse().map_err(|_| bad())?,
            "rate" => setup.rate = Some(value.parse().map_err(|_| bad())?),
            _ => {}
        }
    }
    Ok(setup)
}

fn parse_totals(text: &str) -> Result<(Totals, Duration), String> {
    let mut totals = Totals::new(false);
    let mut elapsed = None;
    for (key, value) in fields(text) {
        let bad = || format!("bad '{key}={value}' in the '#echoc totals' line");
        if key == "elapsed_s" {
            let secs: f64 = value.parse().map_err(|_| bad())?;
            elapsed = Some(Duration::try_from_secs_f64(secs).map_err(|_| bad())?);
            continue;
        }
        let n: u64 = value.parse().map_err(|_| bad())?;
        match key {
            "opened" => totals.opened = n,
            "peak_up" => totals.peak_up = n,
            "replies" => totals.replies = n,
            "planned" => totals.planned = n,
            "sent" => totals.sent = n,
            "late" => totals.late = n,
            _ => {
                if let Some(kind) = ErrorKind::ALL.iter().find(|k| k.name() == key) {
                    totals.errors[*kind as usize] = n;
                }
            }
        }
    }
    let elapsed = elapsed.ok_or("no elapsed_s in the '#echoc totals' line")?;
    Ok((totals, elapsed))
}
