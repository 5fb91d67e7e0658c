//! The loop's fixed delays: how long it gives a PROXY header, a lingering close, a
//! scrape, an upgrade check, and paused clients under `--max-memory`.
//!
//! They are not flags: the defaults suit every deployment, and each is explained where it
//! is used. But a test of "the scrape is closed after 10 s" should not wait 10 s, so the
//! test suite shortens them through one environment variable, `ECHOD_TEST_TIMINGS`, a
//! comma-separated list of `NAME=MILLISECONDS`:
//!
//! ```text
//! ECHOD_TEST_TIMINGS=scrape=300,upgrade-check=500 echod --metrics 127.0.0.1:9100
//! ```
//!
//! Names: `proxy-header`, `linger`, `evict-after`, `scrape`, `upgrade-check`. An unknown
//! name or a value that is not a whole number of milliseconds from 1 to 3,600,000 is
//! refused at start (exit 2), like a bad flag.

use std::time::Duration;

/// The environment variable that shortens the delays for tests.
pub const ENV: &str = "ECHOD_TEST_TIMINGS";

/// The loop's fixed delays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timings {
    /// How long a new connection may take to send its PROXY header (`--proxy-protocol`).
    /// Short: a proxy sends it at once, and a client that does not is not talking to us
    /// right. [3 s]
    pub proxy_header: Duration,
    /// How long we wait for a client's FIN after sending ours. Long enough for a client
    /// that is reading its last replies, short enough that one that never closes costs
    /// little. [2 s]
    pub linger: Duration,
    /// How long clients paused by `--max-memory` have to drain before the largest are
    /// closed: a client that is merely slow gets a chance to catch up. [1 s]
    pub evict_after: Duration,
    /// A scrape connection (`--metrics`) is closed this long after it was accepted,
    /// whatever step it is in, so a scraper that connects and says nothing cannot keep its
    /// slot. Prometheus's own scrape timeout defaults to 10 s too. [10 s]
    pub scrape: Duration,
    /// How long the new binary may take to answer `--resume-formats` before an upgrade
    /// (SIGUSR2) gives up and kills it. [5 s]
    pub upgrade_check: Duration,
}

impl Default for Timings {
    fn default() -> Timings {
        Timings {
            proxy_header: Duration::from_secs(3),
            linger: Duration::from_secs(2),
            evict_after: Duration::from_secs(1),
            scrape: Duration::from_secs(10),
            upgrade_check: Duration::from_secs(5),
        }
    }
}

impl Timings {
    /// The defaults, with what `spec` (the value of [`ENV`]) changes; the error names
    /// the part that is wrong.
    pub fn parse(spec: &str) -> Result<Timings, String> {
        let mut t = Timings::default();
        for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, value) = part
                .split_once('=')
                .ok_or_else(|| format!("{ENV}: '{part}' is not NAME=MILLISECONDS"))?;
            let ms: u64 = value
                .trim()
                .parse()
                .ok()
                .filter(|ms| (1..=3_600_000).contains(ms))
                .ok_or_else(|| format!("{ENV}: '{part}': milliseconds from 1 to 3600000"))?;
            let d = Duration::from_millis(ms);
            match name.trim() {
                "proxy-header" => t.proxy_header = d,
                "linger" => t.linger = d,
                "evict-after" => t.evict_after = d,
                "scrape" => t.scrape = d,
                "upgrade-check" => t.upgrade_check = d,
                other => return Err(format!("{ENV}: unknown delay '{other}'")),
            }
        }
        Ok(t)
    }

    /// The delays the environment asks for: the defaults when [`ENV`] is not set.
    pub fn from_env() -> Result<Timings, String> {
        match std::env::var(ENV) {
            Ok(spec) => Timings::parse(&spec),
            Err(std::env::VarError::NotPresent) => Ok(Timings::default()),
            Err(std::env::VarError::NotUnicode(_)) => Err(format!("{ENV} is not UTF-8")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_delay_can_be_shortened_and_the_rest_keep_their_defaults() {
        let t = Timings::parse("scrape=300, upgrade-check=500,evict-after=50").unwrap();
        assert_eq!(t.scrape, Duration::from_millis(300));
        assert_eq!(t.upgrade_check, Duration::from_millis(500));
        assert_eq!(t.evict_after, Duration::from_millis(50));
        assert_eq!(t.linger, Timings::default().linger);
        assert_eq!(Timings::parse("").unwrap(), Timings::default());
        let t = Timings::parse("linger=7,proxy-header=9").unwrap();
        assert_eq!(
            (t.linger, t.proxy_header),
            (Duration::from_millis(7), Duration::from_millis(9))
        );
    }

    #[test]
    fn bad_specs_are_refused_with_the_part_named() {
        for (spec, says) in [
            ("scrape", "'scrape' is not NAME=MILLISECONDS"),
            ("scrape=0", "'scrape=0': milliseconds"),
            ("scrape=1.5", "'scrape=1.5'"),
            ("scrape=3600001", "'scrape=3600001'"),
            ("nap=10", "unknown delay 'nap'"),
        ] {
            let err = Timings::parse(spec).unwrap_err();
            assert!(err.contains(says), "{spec}: {err}");
        }
    }
}
