//! The daemon's logger: one line per record on stderr, written so that the log can never
//! stop or stall the server.
//!
//! The loop is one thread. Whatever it waits for, every client waits for too, and whatever
//! kills it kills every session. A log line is the least important thing it does, so a log
//! sink that fails or fills up costs us the line, never the service:
//!
//! - **A reader that went away** (`echod 2>&1 | head -1`, a log shipper restarting): the
//!   write fails with `EPIPE`. Rust binaries start with `SIGPIPE` ignored, so this is an
//!   error we can look at, not a signal that ends the process. `eprintln!` would panic on
//!   it (and the release profile aborts on panic), which is why we do not use it, nor
//!   `simple_logger`, which writes every line with `eprintln!` and cannot be told otherwise.
//! - **A reader that stopped reading** (a full pipe): a blocking write would sleep until
//!   someone reads, with every client frozen. We make stderr non-blocking when it is a pipe
//!   or a socket (see [`NonBlockingGuard`]), so a full pipe answers `EAGAIN` at once.
//!
//! Either way [`Sink::write_line`] drops the line and counts it; the count is logged with
//! the other counters on SIGUSR1 and at shutdown (`log_lines_dropped=N`), where the sink
//! lets it through.
//!
//! The format is `simple_logger`'s, so whatever reads that format reads this one:
//!
//! ```text
//! 2024-05-01T12:00:00.123Z INFO  [echod::reactor::server] listening on 127.0.0.1:8888
//! ```

use std::fmt::{self, Write as _};
use std::io::Stderr;
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use log::{LevelFilter, Log, Metadata, Record};
use rustix::fs::{FileType, OFlags};
use rustix::io::Errno;

/// The installed logger. `log` keeps a `&'static dyn Log` and offers no way back to our
/// type, so we keep our own reference to read its drop counter. It is the daemon's one
/// global: the logger is global by nature.
static LOGGER: OnceLock<Logger> = OnceLock::new();

/// Installs the logger at `level` and makes stderr non-blocking if it is a pipe or a
/// socket. Keep the returned guard alive while the server runs: dropping it puts stderr
/// back the way we found it. A second call changes nothing (the first logger stays).
pub fn init(level: LevelFilter) -> NonBlockingGuard<Stderr> {
    let guard = NonBlockingGuard::new(std::io::stderr());
    let logger = LOGGER.get_or_init(|| Logger {
        level,
        // mio describes every registration at trace level; we keep it to warnings and
        // errors so that `--log-level trace` shows our events, not its bookkeeping.
        mio_level: level.min(LevelFilter::Warn),
        sink: Sink::new(std::io::stderr()),
    });
    if log::set_logger(logger).is_ok() {
        log::set_max_level(level);
    }
    guard
}

/// Log lines dropped (or cut short) because stderr failed or was full, since start.
pub fn dropped_lines() -> u64 {
    LOGGER.get().map_or(0, |logger| logger.sink.dropped())
}

/// The `log::Log` we install: a level filter in front of a [`Sink`] on stderr.
#[derive(Debug)]
struct Logger {
    /// The most detailed level logged (`--log-level`, else `RUST_LOG`, else info).
    level: LevelFilter,
    /// The same for records from `mio` itself: never more detailed than warnings.
    mio_level: LevelFilter,
    /// Where formatted lines go.
    sink: Sink<Stderr>,
}

impl Log for Logger {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        let target = metadata.target();
        let from_mio = target == "mio" || target.starts_with("mio::");
        metadata.level() <= if from_mio { self.mio_level } else { self.level }
    }

    fn log(&self, record: &Record<'_>) {
        if self.enabled(record.metadata()) {
            self.sink
                .write_line(format_line(SystemTime::now(), record).as_bytes());
        }
    }

    fn flush(&self) {}
}

/// One log line, `\n` included: UTC timestamp, level padded to 5, `[target]`, message.
pub fn format_line(now: SystemTime, record: &Record<'_>) -> String {
    let target = match record.target() {
        "" => record.module_path().unwrap_or_default(),
        target => target,
    };
    let mut line = String::with_capacity(96);
    // `write!` into a String, not `format!`: if some `Display` in the message returns an
    // error, `format!` panics, while `write!` hands the error back and we log what we have.
    let _ = writeln!(
        line,
        "{} {:<5} [{}] {}",
        Timestamp(now),
        record.level(),
        target,
        record.args()
    );
    if !line.ends_with('\n') {
        line.push('\n');
    }
    line
}

/// A wall-clock time shown as `YYYY-MM-DDTHH:MM:SS.mmmZ` (UTC, milliseconds).
#[derive(Debug, Clone, Copy)]
pub struct Timestamp(pub SystemTime);

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A clock set before 1970 is shown as 1970 rather than refused: a log line with a
        // wrong time is more useful than none.
        let since_epoch = self.0.duration_since(UNIX_EPOCH).unwrap_or_default();
        let secs = since_epoch.as_secs();
        let (year, month, day) = civil_from_days(secs / 86_400);
        let second_of_day = secs % 86_400;
        write!(
            f,
            "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
            second_of_day / 3600,
            second_of_day / 60 % 60,
            second_of_day % 60,
            since_epoch.subsec_millis()
        )
    }
}

/// The Gregorian (year, month, day) of the `days`-th day after 1970-01-01.
///
/// Howard Hinnant's `civil_from_days`: shift the calendar to start on 1 March, so the leap
/// day is the last day of its year, then count 400-year eras (146 097 days each), years in
/// the era, and days in the year. Dates before 1970 never reach here, so all of it is
/// unsigned. (A date crate would do this too; ten lines of arithmetic spare a dependency.)
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468; // days from 0000-03-01 to 1970-01-01
    let era = z / 146_097;
    let day_of_era = z % 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

/// A log destination that never blocks (given a non-blocking descriptor) and never fails:
/// a line it cannot write whole is dropped and counted.
#[derive(Debug)]
pub struct Sink<F> {
    /// The descriptor lines are written to: stderr in the daemon, a pipe in tests.
    out: F,
    /// Lines dropped or cut short so far.
    dropped: AtomicU64,
    /// The last write was partial: the descriptor ends in half a line, without its `\n`.
    torn: AtomicBool,
}

impl<F: AsFd> Sink<F> {
    /// A sink writing to `out`. Make `out` non-blocking first (see [`NonBlockingGuard`]),
    /// or a full pipe will block [`Sink::write_line`].
    pub fn new(out: F) -> Sink<F> {
        Sink {
            out,
            dropped: AtomicU64::new(0),
            torn: AtomicBool::new(false),
        }
    }

    /// Writes `line` (which ends in `\n`) with one `write(2)`; true when all of it went out.
    ///
    /// One call per line keeps concurrent writers to the same pipe from interleaving
    /// inside our lines: POSIX makes a pipe write of up to `PIPE_BUF` (4096 on Linux)
    /// bytes atomic, all or nothing, even when non-blocking. A longer line may go out in
    /// part; we do not queue the rest (that is a buffer to bound and a flush to schedule,
    /// for a log line). We count the line as dropped and start the next line with a `\n`,
    /// so the torn one ends there instead of running into it.
    pub fn write_line(&self, line: &[u8]) -> bool {
        let mended;
        let bytes = if self.torn.load(Ordering::Relaxed) {
            mended = [b"\n", line].concat();
            &mended[..]
        } else {
            line
        };
        loop {
            match rustix::io::write(&self.out, bytes) {
                Ok(n) if n == bytes.len() => {
                    self.torn.store(false, Ordering::Relaxed);
                    return true;
                }
                Ok(n) => {
                    if n > 0 {
                        self.torn.store(true, Ordering::Relaxed);
                    }
                    break;
                }
                // A signal arrived before anything was written: nothing went out yet.
                Err(Errno::INTR) => continue,
                // EAGAIN (full pipe), EPIPE (no reader), EIO, ENOSPC, EBADF...: the line
                // cannot be written now, and waiting for it is exactly what we must not do.
                Err(_) => break,
            }
        }
        self.dropped.fetch_add(1, Ordering::Relaxed);
        false
    }

    /// Lines dropped or cut short so far.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// Sets `O_NONBLOCK` on a pipe or socket for as long as it lives, and clears it when
/// dropped if it was clear before.
///
/// `O_NONBLOCK` belongs to the open file description, which every process holding a copy
/// of the descriptor shares. That is the price of the flag, and it decides where we pay it:
///
/// - **A pipe or a socket** (`| tee`, docker, journald's stream socket): this is where a
///   reader can stop and block us, so we set it. Whoever else writes to the same pipe
///   while we run sees `EAGAIN` instead of waiting when it is full; after a clean exit we
///   clear the flag so the next writer (`{ echod; echo done >&2; } 2>&1 | …`) finds the
///   pipe as it was. (After `kill -9` it stays set.)
/// - **A terminal**: shared with the interactive shell, which misbehaves on a non-blocking
///   terminal (reads fail with `EAGAIN`), and would stay so after a crash. We leave it
///   blocking: a terminal write blocks only while output is paused (Ctrl-S) or the
///   terminal is stuck, i.e. while someone is at the keyboard of a foreground run.
/// - **A regular file or `/dev/null`**: writes never wait for a reader, and `O_NONBLOCK`
///   changes nothing for them; we leave them alone.
///
/// The alternative that changes nothing shared, `poll()` with a zero timeout before each
/// write, still blocks when the pipe has some room but less than the line, and costs a
/// system call per line.
#[derive(Debug)]
pub struct NonBlockingGuard<F: AsFd> {
    /// The descriptor we may have changed.
    fd: F,
    /// We set `O_NONBLOCK` (it was clear) and clear it again on drop.
    set_here: bool,
}

impl<F: AsFd> NonBlockingGuard<F> {
    /// Makes `fd` non-blocking if it is a pipe or a socket that is not already so. Errors
    /// leave it as it was: the logger still works, only a full pipe would block it.
    pub fn new(fd: F) -> NonBlockingGuard<F> {
        let set_here = is_pipe_or_socket(&fd) && set_nonblocking(&fd).unwrap_or(false);
        NonBlockingGuard { fd, set_here }
    }

    /// True when this guard set `O_NONBLOCK` (and will clear it when dropped).
    pub fn set_here(&self) -> bool {
        self.set_here
    }
}

impl<F: AsFd> Drop for NonBlockingGuard<F> {
    fn drop(&mut self) {
        if self.set_here {
            if let Ok(flags) = rustix::fs::fcntl_getfl(&self.fd) {
                let _ = rustix::fs::fcntl_setfl(&self.fd, flags - OFlags::NONBLOCK);
            }
        }
    }
}

/// True for a FIFO (pipe) or a socket: the descriptors a stopped reader can fill.
fn is_pipe_or_socket(fd: impl AsFd) -> bool {
    rustix::fs::fstat(fd).is_ok_and(|stat| {
        matches!(
            FileType::from_raw_mode(stat.st_mode),
            FileType::Fifo | FileType::Socket
        )
    })
}

/// Sets `O_NONBLOCK`; `Ok(false)` when it was already set.
fn set_nonblocking(fd: impl AsFd) -> rustix::io::Result<bool> {
    let flags = rustix::fs::fcntl_getfl(&fd)?;
    if flags.contains(OFlags::NONBLOCK) {
        return Ok(false);
    }
    rustix::fs::fcntl_setfl(&fd, flags | OFlags::NONBLOCK)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn at(secs: u64, millis: u64) -> String {
        Timestamp(UNIX_EPOCH + Duration::from_millis(secs * 1000 + millis)).to_string()
    }

    /// Known instants (checked with `date -u -d @SECS`), leap days and century rules included.
    #[test]
    fn timestamps_are_utc_with_milliseconds() {
        assert_eq!(at(0, 0), "1970-01-01T00:00:00.000Z");
        assert_eq!(at(951_782_400, 7), "2000-02-29T00:00:00.007Z");
        assert_eq!(at(1_709_251_199, 999), "2024-02-29T23:59:59.999Z");
        assert_eq!(at(4_107_542_400, 0), "2100-03-01T00:00:00.000Z");
        assert_eq!(at(1_767_225_599, 120), "2025-12-31T23:59:59.120Z");
    }

    /// Every day for 1000 years after 1970 follows the day before it.
    #[test]
    fn days_follow_each_other() {
        let mut previous = civil_from_days(0);
        assert_eq!(previous, (1970, 1, 1));
        for days in 1..366_000 {
            let (y, m, d) = civil_from_days(days);
            let (py, pm, pd) = previous;
            let next_day = (y, m, d) == (py, pm, pd + 1);
            let next_month = (y, m, d) == (py, pm + 1, 1);
            let next_year = (y, m, d) == (py + 1, 1, 1) && (pm, pd) == (12, 31);
            assert!(
                next_day || next_month || next_year,
                "{previous:?} -> {y}-{m}-{d}"
            );
            assert!(pd <= 31 && (pm != 2 || pd <= 29));
            previous = (y, m, d);
        }
    }

    /// The line simple_logger wrote: timestamp, level padded to 5, target, message.
    #[test]
    fn lines_keep_the_simple_logger_format() {
        let addr = "127.0.0.1:8888";
        let line = format_line(
            UNIX_EPOCH + Duration::from_millis(1_500),
            &Record::builder()
                .level(log::Level::Info)
                .target("echod::reactor::server")
                .args(format_args!("listening on {addr}"))
                .build(),
        );
        assert_eq!(
            line,
            "1970-01-01T00:00:01.500Z INFO  [echod::reactor::server] listening on 127.0.0.1:8888\n"
        );
        let line = format_line(
            UNIX_EPOCH,
            &Record::builder()
                .level(log::Level::Debug)
                .target("")
                .module_path(Some("echod::x"))
                .args(format_args!("m"))
                .build(),
        );
        assert!(line.ends_with(" DEBUG [echod::x] m\n"), "{line:?}");
    }
}
