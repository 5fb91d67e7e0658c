//! Counters kept by the loop, printed on SIGUSR1 and at shutdown, and served to
//! Prometheus by `--metrics` (see [`crate::reactor::metrics`]): one set of counters feeds
//! all three, so the log line and the scrape can never disagree.

use std::fmt;

use crate::protocol::conn::CloseReason;
use crate::protocol::state::{Malformed, Reader, Writer};

/// What the server has done since it started. Plain integers: the loop is the only
/// writer and the only reader, so no atomics are needed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Stats {
    /// Connections accepted and served.
    pub accepted: u64,
    /// Connections turned away with `ERR server busy`.
    pub refused_busy: u64,
    /// Connections turned away by `--max-per-ip` before they had a slot.
    pub refused_per_ip: u64,
    /// The most connections held at once since the start (slots taken, so a connection
    /// closed earlier in the same event batch still counts until the batch ends).
    pub peak_connections: u64,
    /// Times `accept` had to wait for descriptors or kernel memory (EMFILE, ENFILE,
    /// ENOMEM, ENOBUFS, EPERM): one per episode, from the first failure until the accept
    /// queue is empty again (one warning each).
    pub out_of_fds_episodes: u64,
    /// Connections closed, by reason (indexed like [`CloseReason::ALL`]).
    pub closed: [u64; CloseReason::ALL.len()],
    /// Lines answered (raw mode: chunks echoed).
    pub lines: u64,
    /// Bytes read from clients.
    pub bytes_in: u64,
    /// Bytes written to clients.
    pub bytes_out: u64,
    /// Times `poll` returned: for events, for the alarm, or at once because a visit was
    /// owed. An idle server with nothing scheduled adds none. It counts this image's
    /// loop, so unlike the others it is not handed over on an upgrade in place: a new
    /// image starts it at 0.
    pub loop_wakeups: u64,
}

impl Stats {
    /// Counts one closed connection.
    pub fn count_close(&mut self, reason: CloseReason) {
        let index = CloseReason::ALL
            .iter()
            .position(|r| *r == reason)
            .unwrap_or(0);
        self.closed[index] += 1;
    }

    /// A connection was admitted and `open` connections are held now: keeps the peak.
    pub fn count_open(&mut self, open: usize) {
        self.peak_connections = self.peak_connections.max(open as u64);
    }

    /// A one-line summary, with the number of connections open right now.
    pub fn summary(&self, active: usize) -> Summary<'_> {
        Summary {
            stats: self,
            active,
        }
    }
}

/// [`Stats`] with the live connection count, ready to log.
#[derive(Debug)]
pub struct Summary<'a> {
    /// The counters.
    stats: &'a Stats,
    /// Connections open now.
    active: usize,
}

impl fmt::Display for Summary<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.stats;
        write!(
            f,
            "stats: accepted={} active={} peak_connections={} refused_busy={} \
             refused_per_ip={} out_of_fds_episodes={} closed:",
            s.accepted,
            self.active,
            s.peak_connections,
            s.refused_busy,
            s.refused_per_ip,
            s.out_of_fds_episodes
        )?;
        for (reason, n) in CloseReason::ALL.iter().zip(s.closed) {
            write!(f, " {}={}", reason.name(), n)?;
        }
        write!(
            f,
            " lines={} bytes_in={} bytes_out={} loop_wakeups={}",
            s.lines, s.bytes_in, s.bytes_out, s.loop_wakeups
        )?;
        // Kept by the logger, not the loop: log lines can be dropped wherever we log.
        write!(f, " log_lines_dropped={}", crate::logging::dropped_lines())
    }
}

impl Stats {
    /// Saves the counters for the next image (SIGUSR2): they carry on counting there.
    pub fn encode(&self, w: &mut Writer) {
        // Taken apart field by field, so that a counter added to `Stats` without a
        // place in the saved state does not compile.
        let Stats {
            accepted,
            refused_busy,
            refused_per_ip,
            peak_connections,
            out_of_fds_episodes,
            closed,
            lines,
            bytes_in,
            bytes_out,
            loop_wakeups: _,
        } = self;
        for n in [
            accepted,
            refused_busy,
            refused_per_ip,
            peak_connections,
            out_of_fds_episodes,
            lines,
            bytes_in,
            bytes_out,
        ] {
            w.u64(*n);
        }
        w.length(closed.len());
        for n in closed {
            w.u64(*n);
        }
    }

    /// Reads counters saved by [`Stats::encode`]. Close reasons are matched by position;
    /// a saved list may be shorter than ours (a newer image knows more reasons), never
    /// longer.
    pub fn decode(r: &mut Reader<'_>) -> Result<Stats, Malformed> {
        let mut s = Stats {
            accepted: r.u64()?,
            refused_busy: r.u64()?,
            refused_per_ip: r.u64()?,
            peak_connections: r.u64()?,
            out_of_fds_episodes: r.u64()?,
            lines: r.u64()?,
            bytes_in: r.u64()?,
            bytes_out: r.u64()?,
            closed: [0; CloseReason::ALL.len()],
            loop_wakeups: 0,
        };
        let reasons = r.length()?;
        if reasons > s.closed.len() {
            return Err(Malformed("more close reasons than this image knows"));
        }
        for n in &mut s.closed[..reasons] {
            *n = r.u64()?;
        }
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_summary_is_one_line_with_every_counter() {
        let mut s = Stats {
            accepted: 3,
            lines: 7,
            ..Stats::default()
        };
        s.count_close(CloseReason::LineTooLong);
        s.count_open(2);
        s.count_open(1);
        let line = s.summary(2).to_string();
        assert!(!line.contains('\n'));
        assert!(line.contains(
            "accepted=3 active=2 peak_connections=2 refused_busy=0 refused_per_ip=0 out_of_fds_episodes=0 closed:"
        ));
        assert!(line.contains("line_too_long=1"));
        assert!(line.contains("lines=7 bytes_in=0 bytes_out=0 loop_wakeups=0 log_lines_dropped=0"));
    }

    #[test]
    fn counters_survive_encoding_and_garbage_does_not_panic() {
        let mut s = Stats {
            accepted: 1,
            refused_busy: 2,
            refused_per_ip: 3,
            peak_connections: 9,
            out_of_fds_episodes: 4,
            lines: 5,
            bytes_in: 6,
            bytes_out: 7,
            ..Stats::default()
        };
        s.count_close(CloseReason::Error);
        s.count_close(CloseReason::ClientClosed);
        let mut w = Writer::new();
        s.encode(&mut w);
        let bytes = w.into_bytes();
        let mut r = Reader::new(&bytes);
        assert_eq!(Stats::decode(&mut r), Ok(s));
        assert_eq!(r.finish(), Ok(()));
        for cut in 0..bytes.len() {
            assert!(Stats::decode(&mut Reader::new(&bytes[..cut])).is_err());
        }
    }
}
