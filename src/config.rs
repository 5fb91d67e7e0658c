//! Options and limits, with their defaults and the reason for each.
//!
//! Everything the daemon can be told lives in [`Config`]. Every limit has a default
//! that is safe on a small machine and a defined behaviour when a client reaches it
//! (see `docs/PROTOCOL.md`). [`parse_args`] turns a command line into a [`Command`];
//! it never exits the process itself, so it can be unit-tested.

use std::ffi::OsString;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use lexopt::ValueExt;

pub mod timings;
pub use timings::Timings;

/// The address we listen on when no `--listen` is given: loopback only, because
/// binding all interfaces should always be an explicit choice.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8888";

/// The greeting sent to every client in line mode.
pub const DEFAULT_BANNER: &str = "Welcome to the server. Type something and hit enter";

/// The bytes put in front of every echoed line.
pub const DEFAULT_PREFIX: &str = "OK...";

/// How the daemon treats the bytes a client sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Split input on `\n` and answer each line with prefix + line (the tutorial protocol).
    Line,
    /// Plain echo (RFC 862): no banner, no prefix, no framing.
    Raw,
}

/// Whether a connection speaks telnet (`--telnet`): then telnet commands are removed from
/// its input, negotiation is refused, and 0xFF in its replies is doubled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Telnet {
    /// Byte-exact until the client sends a telnet command (IAC, then a byte from 0xF0 to
    /// 0xFE), telnet-aware from that command on. The default: a telnet client works with
    /// no flag, and every other client gets its bytes back exactly.
    Auto,
    /// Telnet-aware from the first byte.
    On,
    /// Byte-exact always: for binary clients that may send what looks like a command.
    Off,
}

/// Everything the server needs to run. Built by [`parse_args`] or by hand in tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Addresses to listen on. Several may be given (IPv4 and IPv6 side by side).
    pub listen: Vec<SocketAddr>,
    /// The real `listen()` backlog. mio's own `bind` uses 128, which makes a burst of
    /// connects stall for a second on SYN retransmits; 1024 absorbs a tester's burst.
    pub backlog: u32,
    /// Bytes sent first to every client (line mode only). Empty means no banner.
    pub banner: Vec<u8>,
    /// Bytes put before every echoed line.
    pub prefix: Vec<u8>,
    /// Line protocol or plain echo.
    pub mode: Mode,
    /// When to strip telnet commands from the input and answer negotiation (`--telnet`).
    /// Raw mode is always byte-exact.
    pub telnet: Telnet,
    /// Longest line we buffer, in bytes, not counting its `\n`. A longer line ends the
    /// connection with `ERR line too long`: it bounds the input buffer of each client.
    pub max_line: usize,
    /// Most reply bytes we hold for a client that is not reading. At the limit we stop
    /// reading from it, so TCP flow control pushes back on the sender instead of our memory.
    pub max_pending: usize,
    /// Most clients served at once. One more gets `ERR server busy` and is closed.
    /// Clamped at start-up to what the file descriptor limit allows.
    pub max_connections: usize,
    /// Close a client that neither sent nor received a byte for this long (`None` = never).
    pub idle_timeout: Option<Duration>,
    /// How long a shutdown waits for clients to take their last replies.
    pub drain_timeout: Duration,
    /// Close a client whose pending output made no progress this long (`None`: never).
    pub send_timeout: Option<Duration>,
    /// At most this many connections from one address (`None`: no limit).
    pub max_per_ip: Option<usize>,
    /// All connection buffers together, in bytes (see `reactor::memory`).
    pub max_memory: usize,
    /// Log level from `--log-level`; `None` means "use `RUST_LOG`, else info".
    pub log_level: Option<log::LevelFilter>,
    /// Set `SO_REUSEPORT` so several echod processes share a port (`--reuse-port`).
    pub reuse_port: bool,
    /// Expect a HAProxy PROXY protocol header first on every connection (`--proxy-protocol`).
    pub proxy_protocol: bool,
    /// Serve `GET /metrics` (Prometheus text format) on this address (`--metrics`); `None`
    /// (the default) opens no port. Off by default because a port is an exposure: where
    /// it listens should be an explicit choice, like `--listen`.
    pub metrics: Option<SocketAddr>,
    /// The binary SIGUSR2 replaces us with (`--upgrade-binary`); `None`: the one we were
    /// started from, as resolved at start-up (see `reactor::upgrade`).
    pub upgrade_binary: Option<PathBuf>,
    /// The loop's fixed delays (not flags; see [`timings`]).
    pub timings: Timings,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            listen: vec![DEFAULT_LISTEN.parse().expect("the default address parses")],
            backlog: 1024,
            banner: line_with_newline(DEFAULT_BANNER),
            prefix: DEFAULT_PREFIX.as_bytes().to_vec(),
            mode: Mode::Line,
            telnet: Telnet::Auto,
            max_line: 65536,
            max_pending: 65536,
            max_connections: 10_000,
            idle_timeout: Some(Duration::from_secs(300)),
            drain_timeout: Duration::from_secs(5),
            send_timeout: Some(Duration::from_secs(60)),
            max_per_ip: None,
            max_memory: 256 << 20,
            log_level: None,
            reuse_port: false,
            proxy_protocol: false,
            metrics: None,
            upgrade_binary: None,
            timings: Timings::default(),
        }
    }
}

/// What the command line asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Run the daemon with this configuration.
    Run(Box<Config>),
    /// Print [`usage`] and exit 0.
    Help,
    /// Print the version and exit 0.
    Version,
    /// Print the saved-state formats this binary can resume from, one per line, and
    /// exit 0 (`--resume-formats`: what a running echod asks before it upgrades to us).
    ResumeFormats,
}

/// A command line we cannot use, with a one-line reason (the caller exits 2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArgError(pub String);

impl fmt::Display for ArgError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<lexopt::Error> for ArgError {
    fn from(e: lexopt::Error) -> ArgError {
        ArgError(e.to_string())
    }
}

/// The largest `--max-line` or `--max-pending`: 1 GiB. Far above any sane setting, and
/// small enough that adding a line to it, or doubling it, can never overflow.
pub const MAX_BUFFER: usize = 1 << 30;

/// The smallest `--max-memory`: 1 MiB, a few clients' worth.
pub const MIN_MEMORY: usize = 1 << 20;

/// The largest `--max-memory`: 1 TiB.
pub const MAX_MEMORY: usize = 1 << 40;

/// The largest `--max-connections`. The fd limit lowers it further at start-up.
pub const MAX_CONNECTIONS: usize = 10_000_000;

/// The largest `--backlog`: `listen()` takes an `int`, and the kernel caps it at
/// `net.core.somaxconn` anyway.
pub const MAX_BACKLOG: u32 = 65_535;

/// The largest timeout in seconds (30 days): any deadline computed from it fits in an
/// `Instant` and in a millisecond tick with room to spare.
pub const MAX_TIMEOUT_SECS: u64 = 30 * 24 * 3600;

/// The `--help` text: every flag with its default.
pub fn usage() -> String {
    let d = Config::default();
    format!(
        "echod {version}: a line-echo TCP daemon on one readiness loop

Usage: echod [OPTIONS]

Options:
  --listen ADDR          address to listen on, repeatable; IPv6 in brackets [{listen}]
  --backlog N            listen() backlog [{backlog}]
  --banner TEXT          greeting sent on connect, a newline is added; empty = none
                         [{banner}]
  --prefix TEXT          bytes before every echoed line [{prefix}]
  --raw                  plain echo (RFC 862): no banner, no prefix, no framing
  --telnet auto|on|off   strip telnet commands, refuse negotiation, escape 0xFF: from a
                         client's first telnet command, always, or never [auto]
  --max-line BYTES       longest line, without its newline [{max_line}]
  --max-pending BYTES    reply bytes held per client before we stop reading it [{max_pending}]
  --max-connections N    clients served at once, capped by the fd limit [{max_conn}]
  --idle-timeout SECS    close clients silent this long, 0 = never [{idle}]
  --drain-timeout SECS   longest wait for clients on SIGINT/SIGTERM [{drain}]
  --send-timeout SECS    close clients whose replies make no progress this long,
                         0 = never [{send}]
  --max-per-ip N         connections from one address, 0 = no limit [0]
  --max-memory BYTES     all client buffers together; over it the largest clients
                         stop being read, then are closed [{max_memory}]
  --reuse-port           SO_REUSEPORT: several echod processes share the port
  --proxy-protocol       expect a PROXY protocol v1/v2 header first (behind HAProxy)
  --metrics ADDR         serve Prometheus metrics at http://ADDR/metrics [off]
  --upgrade-binary PATH  what SIGUSR2 upgrades to in place [the binary started]
  --resume-formats       print the saved-state formats this binary resumes from
  --log-level LEVEL      error|warn|info|debug|trace [info, or RUST_LOG]
  -h, --help             print this help
  -V, --version          print the version
",
        version = env!("CARGO_PKG_VERSION"),
        listen = DEFAULT_LISTEN,
        backlog = d.backlog,
        banner = DEFAULT_BANNER,
        prefix = DEFAULT_PREFIX,
        max_line = d.max_line,
        max_pending = d.max_pending,
        max_conn = d.max_connections,
        idle = d.idle_timeout.map_or(0, |t| t.as_secs()),
        drain = d.drain_timeout.as_secs(),
        send = d.send_timeout.map_or(0, |t| t.as_secs()),
        max_memory = d.max_memory,
    )
}

/// Parses the daemon's arguments (without the program name).
pub fn parse_args<I>(args: I) -> Result<Command, ArgError>
where
    I: IntoIterator,
    I::Item: Into<OsString>,
{
    use lexopt::prelude::*;

    let mut config = Config::default();
    let mut listen = Vec::new();
    let mut banner_given = false;
    let mut parser = lexopt::Parser::from_args(args);
    while let Some(arg) = parser.next()? {
        match arg {
            Short('h') | Long("help") => return Ok(Command::Help),
            Short('V') | Long("version") => return Ok(Command::Version),
            Long("resume-formats") => return Ok(Command::ResumeFormats),
            Long("upgrade-binary") => {
                config.upgrade_binary = Some(PathBuf::from(parser.value()?));
            }
            Long("listen") => listen.push(parse_addr("--listen", &text(&mut parser)?)?),
            Long("metrics") => config.metrics = Some(parse_addr("--metrics", &text(&mut parser)?)?),
            Long("backlog") => config.backlog = number(&mut parser, "--backlog", 1..=MAX_BACKLOG)?,
            Long("banner") => {
                config.banner = line_with_newline(&text(&mut parser)?);
                banner_given = true;
            }
            Long("prefix") => config.prefix = text(&mut parser)?.into_bytes(),
            Long("raw") => config.mode = Mode::Raw,
            Long("telnet") => config.telnet = telnet_mode(&mut parser)?,
            Long("reuse-port") => config.reuse_port = true,
            Long("proxy-protocol") => config.proxy_protocol = true,
            Long("max-line") => {
                config.max_line = number(&mut parser, "--max-line", 1..=MAX_BUFFER)?
            }
            Long("max-pending") => {
                config.max_pending = number(&mut parser, "--max-pending", 1..=MAX_BUFFER)?
            }
            Long("max-connections") => {
                config.max_connections =
                    number(&mut parser, "--max-connections", 1..=MAX_CONNECTIONS)?
            }
            Long("idle-timeout") => {
                let secs: u64 = number(&mut parser, "--idle-timeout", 0..=MAX_TIMEOUT_SECS)?;
                config.idle_timeout = (secs > 0).then(|| Duration::from_secs(secs));
            }
            Long("drain-timeout") => {
                config.drain_timeout = Duration::from_secs(number(
                    &mut parser,
                    "--drain-timeout",
                    0..=MAX_TIMEOUT_SECS,
                )?)
            }
            Long("send-timeout") => {
                let secs: u64 = number(&mut parser, "--send-timeout", 0..=MAX_TIMEOUT_SECS)?;
                config.send_timeout = (secs > 0).then(|| Duration::from_secs(secs));
            }
            Long("max-memory") => {
                config.max_memory = number(&mut parser, "--max-memory", MIN_MEMORY..=MAX_MEMORY)?
            }
            Long("max-per-ip") => {
                let n: usize = number(&mut parser, "--max-per-ip", 0..=MAX_CONNECTIONS)?;
                config.max_per_ip = (n > 0).then_some(n);
            }
            Long("log-level") => {
                let level = text(&mut parser)?;
                config.log_level = Some(level.parse().map_err(|_| {
                    ArgError(format!(
                        "invalid --log-level '{level}': expected error, warn, info, debug or trace"
                    ))
                })?);
            }
            _ => return Err(arg.unexpected().into()),
        }
    }
    if !listen.is_empty() {
        config.listen = listen;
    }
    if config.mode == Mode::Raw {
        if banner_given {
            return Err(ArgError("--banner makes no sense with --raw".into()));
        }
        // Raw mode is RFC 862 echo: the client gets back exactly what it sent.
        config.banner.clear();
    }
    if config.mode == Mode::Raw {
        if config.telnet == Telnet::On {
            return Err(ArgError("--telnet on and --raw cannot be combined".into()));
        }
        // Raw mode is byte-exact, whatever the bytes look like.
        config.telnet = Telnet::Off;
    }
    Ok(Command::Run(Box::new(config)))
}

/// The banner is given as text; on the wire it is a line, so it ends in `\n`.
fn line_with_newline(text: &str) -> Vec<u8> {
    if text.is_empty() {
        return Vec::new();
    }
    let mut line = text.as_bytes().to_vec();
    line.push(b'\n');
    line
}

/// The value of `--telnet`: `--telnet=MODE`, `--telnet MODE`, or a bare `--telnet`,
/// which means `on` (what the flag meant before it took a value).
fn telnet_mode(parser: &mut lexopt::Parser) -> Result<Telnet, ArgError> {
    const MODES: [(&str, Telnet); 3] = [
        ("auto", Telnet::Auto),
        ("on", Telnet::On),
        ("off", Telnet::Off),
    ];
    let value = match parser.optional_value() {
        Some(value) => value.string()?,
        None => {
            let is_mode = |arg: &std::ffi::OsStr| MODES.iter().any(|(name, _)| arg == *name);
            match parser.raw_args()?.next_if(is_mode) {
                Some(value) => value.string()?,
                None => return Ok(Telnet::On),
            }
        }
    };
    MODES
        .iter()
        .find(|(name, _)| *name == value)
        .map(|&(_, mode)| mode)
        .ok_or_else(|| {
            ArgError(format!(
                "invalid value '{value}' for --telnet: expected auto, on or off"
            ))
        })
}

/// The value of the option just seen, as UTF-8 text.
fn text(parser: &mut lexopt::Parser) -> Result<String, ArgError> {
    Ok(parser.value()?.string()?)
}

/// The value of the option just seen, as a number within `range`. Every number has a
/// maximum: a value past it is a typo or an attack on our arithmetic (a deadline that
/// overflows `Instant`, a limit that wraps when one is added), and a clear refusal at
/// start-up beats a panic or a silent wrap hours later.
fn number<T>(
    parser: &mut lexopt::Parser,
    flag: &str,
    range: std::ops::RangeInclusive<T>,
) -> Result<T, ArgError>
where
    T: std::str::FromStr + PartialOrd + fmt::Display,
{
    let value = text(parser)?;
    match value.parse::<T>() {
        Ok(n) if range.contains(&n) => Ok(n),
        _ => Err(ArgError(format!(
            "invalid value '{value}' for {flag}: expected a whole number from {} to {}",
            range.start(),
            range.end()
        ))),
    }
}

/// `IP:PORT`, with IPv6 addresses in brackets. Names are refused on purpose: what a
/// name resolves to can change, and the address we bind should be an explicit choice.
fn parse_addr(flag: &str, value: &str) -> Result<SocketAddr, ArgError> {
    value.parse().map_err(|_| {
        ArgError(format!(
            "invalid {flag} address '{value}': expected IP:PORT, e.g. 127.0.0.1:8888 or [::1]:8888"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str]) -> Result<Config, ArgError> {
        match parse_args(args.iter().copied())? {
            Command::Run(config) => Ok(*config),
            other => panic!("expected Run, got {other:?}"),
        }
    }

    #[test]
    fn defaults_match_the_protocol() {
        let c = run(&[]).unwrap();
        assert_eq!(c.listen, vec!["127.0.0.1:8888".parse().unwrap()]);
        assert_eq!(
            c.banner,
            b"Welcome to the server. Type something and hit enter\n"
        );
        assert_eq!(c.prefix, b"OK...");
        assert_eq!((c.max_line, c.max_pending, c.backlog), (65536, 65536, 1024));
        assert_eq!(c.max_connections, 10_000);
        assert_eq!(c.idle_timeout, Some(Duration::from_secs(300)));
        assert_eq!(c.drain_timeout, Duration::from_secs(5));
        assert_eq!(c.mode, Mode::Line);
        assert_eq!(c.telnet, Telnet::Auto);
    }

    #[test]
    fn telnet_takes_a_mode_and_alone_means_on() {
        for (args, want) in [
            (&["--telnet", "off"][..], Telnet::Off),
            (&["--telnet=auto"], Telnet::Auto),
            (&["--telnet", "on", "--max-line", "9"], Telnet::On),
            (&["--telnet"], Telnet::On),
            (&["--telnet", "--max-line", "9"], Telnet::On),
            (&["--max-line", "9", "--telnet", "auto"], Telnet::Auto),
        ] {
            assert_eq!(run(args).unwrap().telnet, want, "{args:?}");
        }
        // Raw mode is byte-exact: auto (the default) and off mean the same there.
        assert_eq!(run(&["--raw"]).unwrap().telnet, Telnet::Off);
        assert_eq!(
            run(&["--raw", "--telnet", "auto"]).unwrap().telnet,
            Telnet::Off
        );
    }

    #[test]
    fn listen_is_repeatable_and_takes_ipv6() {
        let c = run(&["--listen", "127.0.0.1:0", "--listen", "[::1]:9000"]).unwrap();
        assert_eq!(c.listen.len(), 2);
        assert!(c.listen[1].is_ipv6());
    }

    #[test]
    fn every_flag_is_parsed() {
        let c = run(&[
            "--backlog=7",
            "--banner",
            "hello",
            "--prefix",
            ">",
            "--telnet",
            "--max-line",
            "10",
            "--max-pending",
            "20",
            "--max-connections",
            "5",
            "--idle-timeout",
            "0",
            "--drain-timeout",
            "1",
            "--log-level",
            "debug",
            "--reuse-port",
            "--proxy-protocol",
        ])
        .unwrap();
        assert_eq!(c.backlog, 7);
        assert_eq!(c.banner, b"hello\n");
        assert_eq!(c.prefix, b">");
        assert_eq!(c.telnet, Telnet::On);
        assert_eq!((c.max_line, c.max_pending, c.max_connections), (10, 20, 5));
        assert_eq!(c.idle_timeout, None);
        assert_eq!(c.drain_timeout, Duration::from_secs(1));
        assert_eq!(c.log_level, Some(log::LevelFilter::Debug));
        assert!(c.reuse_port && c.proxy_protocol);
    }

    #[test]
    fn metrics_is_off_by_default_and_takes_an_address() {
        assert_eq!(run(&[]).unwrap().metrics, None);
        let c = run(&["--metrics", "127.0.0.1:9100"]).unwrap();
        assert_eq!(c.metrics, Some("127.0.0.1:9100".parse().unwrap()));
        let c = run(&["--metrics=[::1]:0"]).unwrap();
        assert_eq!(c.metrics, Some("[::1]:0".parse().unwrap()));
        let err = run(&["--metrics", "localhost:9100"]).unwrap_err();
        assert!(err.0.starts_with("invalid --metrics address"), "{err}");
        assert!(run(&["--metrics"]).is_err());
    }

    #[test]
    fn empty_banner_means_none_and_raw_has_none() {
        assert!(run(&["--banner", ""]).unwrap().banner.is_empty());
        let raw = run(&["--raw"]).unwrap();
        assert_eq!(raw.mode, Mode::Raw);
        assert!(raw.banner.is_empty());
    }

    #[test]
    fn bad_flags_give_one_line_reasons() {
        for bad in [
            &["--listen", "localhost:80"][..],
            &["--listen", "1.2.3.4"],
            &["--max-line", "0"],
            &["--max-line", "-3"],
            &["--backlog", "many"],
            &["--log-level", "loud"],
            &["--nope"],
            &["--listen"],
            &["--raw", "--telnet"],
            &["--raw", "--telnet", "on"],
            &["--telnet=yes"],
            &["--telnet", "yes"],
            &["--raw", "--banner", "x"],
        ] {
            let err = run(bad).expect_err(&format!("{bad:?} should fail"));
            assert!(!err.0.is_empty() && !err.0.contains('\n'), "{bad:?}: {err}");
        }
    }

    /// Values that would overflow arithmetic later are refused at start-up, by name.
    #[test]
    fn every_number_has_a_maximum() {
        let huge = u64::MAX.to_string();
        for flag in [
            "--max-line",
            "--max-pending",
            "--max-connections",
            "--backlog",
            "--idle-timeout",
            "--drain-timeout",
        ] {
            let err = run(&[flag, &huge]).expect_err(flag);
            assert!(err.0.contains(flag) && err.0.contains(" to "), "{err}");
        }
        let max = MAX_TIMEOUT_SECS.to_string();
        let c = run(&["--idle-timeout", &max, "--drain-timeout", &max]).unwrap();
        assert_eq!(c.idle_timeout, Some(Duration::from_secs(MAX_TIMEOUT_SECS)));
        let max = MAX_BUFFER.to_string();
        let c = run(&["--max-line", &max, "--max-pending", &max]).unwrap();
        assert_eq!((c.max_line, c.max_pending), (MAX_BUFFER, MAX_BUFFER));
    }

    #[test]
    fn help_and_version() {
        assert_eq!(parse_args(["--help"]).unwrap(), Command::Help);
        assert_eq!(parse_args(["-V"]).unwrap(), Command::Version);
        // Every flag is listed: tests/lifecycle.rs checks `--help` against each
        // `Long(..)` arm of the parser, so here we only check the defaults are shown.
        let help = usage();
        assert!(help.contains("[127.0.0.1:8888]") && help.contains("[65536]"));
    }

    #[test]
    fn upgrade_flags() {
        assert_eq!(run(&[]).unwrap().upgrade_binary, None);
        let c = run(&["--upgrade-binary", "/opt/echod/bin/echod"]).unwrap();
        assert_eq!(
            c.upgrade_binary,
            Some(PathBuf::from("/opt/echod/bin/echod"))
        );
        assert!(run(&["--upgrade-binary"]).is_err());
        assert_eq!(
            parse_args(["--resume-formats"]).unwrap(),
            Command::ResumeFormats
        );
    }
}
