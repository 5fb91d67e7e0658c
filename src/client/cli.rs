//! The command line: `echoc [HOST] [PORT] [--send TEXT]` or `echoc load HOST:PORT`.
//!
//! Parsing is kept apart from running so that it can be tested, and so that
//! every mistake becomes one line on stderr and exit code 2 before anything
//! touches the network.

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::str::FromStr;
use std::time::Duration;

use lexopt::prelude::*;

use super::escape::unescape;
use super::load::attack::{AttackKind, AttackOptions};
use super::load::source::SourceRange;
use super::load::LoadOptions;
use super::session::SessionOptions;

/// The usage text for `--help`.
pub const USAGE: &str = "\
echoc: client for the echod line-echo server

Usage:
  echoc [HOST] [PORT] --send TEXT   send TEXT, print the reply (one-shot)
  echoc [HOST] [PORT]               stdin to the server, replies to stdout
  echoc load HOST:PORT [OPTIONS]    many verified connections
  echoc merge FILE... [--json]      one report from several runs' --hdr-log files

HOST defaults to localhost, PORT to 8888; a lone number is a PORT.

One-shot and interactive options:
  --send TEXT             text to send; escapes \\n \\r \\t \\\\ \\xNN understood
  --timeout SECS          stop after SECS without data from the server
                          (one-shot default 5; interactive: none)
  --connect-timeout SECS  give up on an address after SECS [10]
  -v, --verbose           narrate each step on stderr

Load options:
  -c, --connections N     connections to open [10]
  -d, --duration SECS     how long to send (or to hold, with --idle) [10]
  --line-bytes L          bytes per line, newline included [16]
  --pipeline K            lines in flight per connection [1]
  --rate R                open loop: R lines/s in all on a fixed schedule;
                          latency counted from each line's intended time
  --connect-rate R        at most R new connections/s
  --idle                  read banners, then hold the connections silent
  --source A[-B]          bind to local addresses A..B, round-robin
  --prefix TEXT           what the server puts before each line [OK...]
  --raw                   plain echo server: no banner, no prefix
  --banner-lines N        banner lines sent on connect [1]
  --banner TEXT           require this exact banner (escapes understood)
  --connect-timeout SECS  give up on a handshake after SECS [10]
  --drain SECS            wait for last replies after the run [2]
  --json                  end stdout with a one-line JSON summary
  --interval-json         one JSON line per second on stdout, before the summary
  --hdr-log FILE          write an HdrHistogram interval log (V2) to FILE
  --hdr-tag TAG           tag the log's intervals (a host name, say)
  --start-at UNIX_TIME    start at this time (runs on several hosts together)

Attack options (loopback targets only; attackers never count as errors):
  --attack KIND           run hostile connections beside the measured ones:
                          slowloris    a byte every interval, a line that never ends
                          slow-reader  lines as fast as taken, replies never read
                          churn        connect, read the banner, close, again
                          flood        all at once, held silent, re-opened if closed
                          oversized    one line over the server's max-line each
  --attackers N           hostile connections (churn: cycles in flight) [100]
  --attack-interval SECS  slowloris: time between two bytes [10]
  --attack-line-bytes L   oversized: bytes per line [70000]
  --attack-no-banner      churn: close at connect, without the banner
  --attack-source A[-B]   bind the attackers to local addresses A..B

Exit status: 0 ok, 1 runtime error (or load errors), 2 bad command line.";

/// What the command line asks for.
#[derive(Debug)]
pub enum Command {
    /// One-shot (`send` is set) or interactive.
    Session(SessionOptions),
    /// `echoc load` (boxed: it is much larger than the others).
    Load(Box<LoadOptions>),
    /// `echoc merge FILE...`: the files, and whether to print JSON too.
    Merge(Vec<std::path::PathBuf>, bool),
    /// `--help`.
    Help,
}

/// One-shot mode stops after this long without data by default: a server
/// that keeps the connection open after answering (HTTP keep-alive) would
/// otherwise keep us waiting forever.
const ONE_SHOT_TIMEOUT: Duration = Duration::from_secs(5);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Parses the arguments (without the program name). `Err` is the one-line
/// reason for stderr.
pub fn parse(args: Vec<OsString>) -> Result<Command, String> {
    let result = match args.first().and_then(|a| a.to_str()) {
        Some("load") => parse_load(args.into_iter().skip(1)),
        Some("merge") => parse_merge(args.into_iter().skip(1)),
        _ => parse_session(args),
    };
    result.map_err(|e| e.to_string())
}

fn parse_session(args: Vec<OsString>) -> Result<Command, lexopt::Error> {
    let mut parser = lexopt::Parser::from_args(args);
    let mut positional = Vec::new();
    let mut send = None;
    let mut verbose = false;
    let mut timeout = None;
    let mut connect_timeout = CONNECT_TIMEOUT;
    while let Some(arg) = parser.next()? {
        match arg {
            Long("send") => send = Some(escaped(parser.value()?, "--send")?),
            Long("timeout") => timeout = Some(seconds(parser.value()?, "--timeout")?),
            Long("connect-timeout") => {
                connect_timeout = seconds(parser.value()?, "--connect-timeout")?;
            }
            Short('v') | Long("verbose") => verbose = true,
            Short('h') | Long("help") => return Ok(Command::Help),
            Value(value) if positional.len() < 2 => positional.push(value.string()?),
            _ => return Err(arg.unexpected()),
        }
    }
    // `echoc 9000` means port 9000 on localhost: a lone number is far more
    // likely a port than a host (getaddrinfo would read it as 0.0.35.40).
    if positional.len() == 1 && positional[0].bytes().all(|b| b.is_ascii_digit()) {
        positional.insert(0, "localhost".to_string());
    }
    let mut positional = positional.into_iter();
    let host = positional.next().unwrap_or_else(|| "localhost".to_string());
    let port = match positional.next() {
        Some(port) => number(&port, "PORT")?,
        None => 8888,
    };
    if send.is_some() && timeout.is_none() {
        timeout = Some(ONE_SHOT_TIMEOUT);
    }
    Ok(Command::Session(SessionOptions {
        host,
        port,
        send,
        verbose,
        connect_timeout: Some(connect_timeout).filter(|t| !t.is_zero()),
        timeout: timeout.filter(|t| !t.is_zero()),
    }))
}

fn parse_merge(args: impl Iterator<Item = OsString>) -> Result<Command, lexopt::Error> {
    let mut parser = lexopt::Parser::from_args(args);
    let (mut files, mut json) = (Vec::new(), false);
    while let Some(arg) = parser.next()? {
        match arg {
            Long("json") => json = true,
            Short('h') | Long("help") => return Ok(Command::Help),
            Value(value) => files.push(value.into()),
            _ => return Err(arg.unexpected()),
        }
    }
    if files.is_empty() {
        return Err("merge needs the --hdr-log files of the runs".into());
    }
    Ok(Command::Merge(files, json))
}

fn parse_load(args: impl Iterator<Item = OsString>) -> Result<Command, lexopt::Error> {
    let mut parser = lexopt::Parser::from_args(args);
    let mut o = LoadOptions::default();
    let mut target = None;
    // The attack's options may come before `--attack` names the kind.
    let mut attack = AttackOptions::new(AttackKind::Slowloris);
    let (mut kind, mut attack_flag) = (None, None);
    while let Some(arg) = parser.next()? {
        if let Long(name) = arg {
            if name.starts_with("attack") && name != "attack" {
                attack_flag = Some(format!("--{name}"));
            }
        }
        match arg {
            Short('c') | Long("connections") => o.connections = num(&mut parser, "--connections")?,
            Short('d') | Long("duration") => o.duration = seconds(parser.value()?, "--duration")?,
            Long("line-bytes") => o.line_bytes = num(&mut parser, "--line-bytes")?,
            Long("pipeline") => o.pipeline = num(&mut parser, "--pipeline")?,
            Long("rate") => o.rate = Some(rate(&mut parser, "--rate")?),
            Long("connect-rate") => o.connect_rate = Some(rate(&mut parser, "--connect-rate")?),
            Long("idle") => o.idle = true,
            Long("source") => {
                let text = parser.value()?.string()?;
                let range = SourceRange::parse(&text).map_err(|e| format!("--source: {e}"))?;
                o.source = Some(range);
            }
            Long("prefix") => o.prefix = parser.value()?.into_vec(),
            Long("raw") => {
                o.prefix.clear();
                o.banner_lines = 0;
            }
            Long("banner-lines") => o.banner_lines = num(&mut parser, "--banner-lines")?,
            Long("banner") => o.banner = Some(banner(parser.value()?)?),
            Long("connect-timeout") => {
                o.connect_timeout = seconds(parser.value()?, "--connect-timeout")?;
            }
            Long("drain") => o.drain = seconds(parser.value()?, "--drain")?,
            Long("json") => o.json = true,
            Long("interval-json") => o.interval_json = true,
            Long("hdr-log") => o.hdr_log = Some(parser.value()?.into()),
            Long("hdr-tag") => o.hdr_tag = Some(parser.value()?.string()?),
            Long("start-at") => {
                let at: f64 = num(&mut parser, "--start-at")?;
                if !(at.is_finite() && at > 0.0) {
                    return Err("--start-at must be a Unix time in seconds".into());
                }
                o.start_at = Some(at);
            }
            Long("attack") => kind = Some(AttackKind::parse(&parser.value()?.string()?)?),
            Long("attackers") => attack.attackers = num(&mut parser, "--attackers")?,
            Long("attack-interval") => {
                attack.interval = seconds(parser.value()?, "--attack-interval")?;
            }
            Long("attack-line-bytes") => {
                attack.line_bytes = num(&mut parser, "--attack-line-bytes")?;
            }
            Long("attack-no-banner") => attack.no_banner = true,
            Long("attack-source") => {
                let text = parser.value()?.string()?;
                let range =
                    SourceRange::parse(&text).map_err(|e| format!("--attack-source: {e}"))?;
                attack.source = Some(range);
            }
            Short('h') | Long("help") => return Ok(Command::Help),
            Value(value) if target.is_none() => target = Some(value.string()?),
            _ => return Err(arg.unexpected()),
        }
    }
    o.target = target.ok_or("load needs the server address, HOST:PORT")?;
    match (kind, attack_flag) {
        (Some(kind), _) => o.attack = Some(Box::new(AttackOptions { kind, ..attack })),
        (None, Some(flag)) => return Err(format!("{flag} needs --attack KIND").into()),
        (None, None) => {}
    }
    check_load(&o)?;
    Ok(Command::Load(Box::new(o)))
}

/// Rejects combinations that cannot work, before the run starts.
fn check_load(o: &LoadOptions) -> Result<(), String> {
    if o.connections == 0 {
        return Err("--connections must be at least 1".into());
    }
    if o.line_bytes == 0 {
        return Err("--line-bytes must be at least 1 (the newline)".into());
    }
    if o.pipeline == 0 {
        return Err("--pipeline must be at least 1".into());
    }
    if o.prefix.contains(&b'\n') {
        return Err("--prefix must not contain a newline".into());
    }
    if o.rate.is_some() && o.idle {
        return Err("--rate and --idle do not go together (idle connections send nothing)".into());
    }
    if o.connect_timeout.is_zero() {
        return Err("--connect-timeout must be more than 0".into());
    }
    if let Some(attack) = &o.attack {
        if attack.attackers == 0 {
            return Err("--attackers must be at least 1".into());
        }
        if attack.interval.is_zero() {
            return Err("--attack-interval must be more than 0".into());
        }
        if attack.line_bytes == 0 {
            return Err("--attack-line-bytes must be at least 1 (the newline)".into());
        }
    }
    Ok(())
}

/// `--banner TEXT`: escapes decoded, and a final newline added if missing
/// (the banner is a line).
fn banner(value: OsString) -> Result<Vec<u8>, String> {
    let mut text = escaped(value, "--banner")?;
    if !text.ends_with(b"\n") {
        text.push(b'\n');
    }
    Ok(text)
}

fn escaped(value: OsString, option: &str) -> Result<Vec<u8>, String> {
    unescape(&value.into_vec()).map_err(|e| format!("{option}: {e}"))
}

fn num<T: FromStr>(parser: &mut lexopt::Parser, option: &str) -> Result<T, lexopt::Error> {
    let text = parser.value()?.string()?;
    Ok(number(&text, option)?)
}

fn number<T: FromStr>(text: &str, what: &str) -> Result<T, String> {
    text.parse()
        .map_err(|_| format!("{what}: '{text}' is not a valid number"))
}

fn rate(parser: &mut lexopt::Parser, option: &str) -> Result<f64, lexopt::Error> {
    let rate: f64 = num(parser, option)?;
    if !(rate.is_finite() && rate > 0.0) {
        return Err(format!("{option} must be more than 0").into());
    }
    Ok(rate)
}

/// A length of time: `2`, `0.5`, `2s` or `500ms`.
fn seconds(value: OsString, option: &str) -> Result<Duration, String> {
    let text = value.to_string_lossy();
    let (number, scale) = match text.strip_suffix("ms") {
        Some(ms) => (ms, 1e-3),
        None => (text.strip_suffix('s').unwrap_or(&text), 1.0),
    };
    number
        .parse::<f64>()
        .ok()
        .map(|n| n * scale)
        .filter(|secs| secs.is_finite() && *secs >= 0.0 && *secs < 1e9)
        .map(Duration::from_secs_f64)
        .ok_or_else(|| format!("{option}: '{text}' is not a number of seconds"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<OsString> {
        list.iter().map(OsString::from).collect()
    }

    fn session(list: &[&str]) -> SessionOptions {
        match parse(args(list)) {
            Ok(Command::Session(opts)) => opts,
            other => panic!("{other:?}"),
        }
    }

    fn load(list: &[&str]) -> LoadOptions {
        match parse(args(list)) {
            Ok(Command::Load(opts)) => *opts,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn defaults_are_the_tutorials() {
        let opts = session(&[]);
        assert_eq!((opts.host.as_str(), opts.port), ("localhost", 8888));
        assert_eq!(opts.send, None);
        assert_eq!(opts.timeout, None, "interactive waits as long as it takes");
    }

    #[test]
    fn a_lone_number_is_a_port() {
        let opts = session(&["9000"]);
        assert_eq!((opts.host.as_str(), opts.port), ("localhost", 9000));
        let opts = session(&["::1"]);
        assert_eq!((opts.host.as_str(), opts.port), ("::1", 8888));
    }

    #[test]
    fn one_shot_with_escapes() {
        let opts = session(&[
            "example.org",
            "80",
            "--send",
            r"GET / HTTP/1.1\r\n\r\n",
            "-v",
        ]);
        assert_eq!(opts.host, "example.org");
        assert_eq!(opts.port, 80);
        assert_eq!(opts.send.as_deref(), Some(&b"GET / HTTP/1.1\r\n\r\n"[..]));
        assert!(opts.verbose);
        assert_eq!(opts.timeout, Some(ONE_SHOT_TIMEOUT));
    }

    #[test]
    fn times_in_several_spellings() {
        let s = |t: &str| seconds(OsString::from(t), "--x");
        assert_eq!(s("2"), Ok(Duration::from_secs(2)));
        assert_eq!(s("0.5"), Ok(Duration::from_millis(500)));
        assert_eq!(s("3s"), Ok(Duration::from_secs(3)));
        assert_eq!(s("250ms"), Ok(Duration::from_millis(250)));
        assert!(s("-1").is_err());
        assert!(s("soon").is_err());
        assert_eq!(session(&["--send", "x", "--timeout", "0"]).timeout, None);
    }

    #[test]
    fn bad_command_lines_are_one_line_reasons() {
        for bad in [
            &["--nope"][..],
            &["host", "port"],
            &["a", "1", "extra"],
            &["--send", r"\q"],
            &["--timeout"],
            &["load"],
            &["load", "127.0.0.1:1", "--connections", "many"],
            &["load", "127.0.0.1:1", "--pipeline", "0"],
            &["load", "127.0.0.1:1", "--source", "1.2.3.4-::1"],
            &["load", "127.0.0.1:1", "--rate", "0"],
            &["load", "127.0.0.1:1", "--attack", "ddos"],
            &["load", "127.0.0.1:1", "--attackers", "5"],
            &[
                "load",
                "127.0.0.1:1",
                "--attack",
                "flood",
                "--attackers",
                "0",
            ],
            &[
                "load",
                "127.0.0.1:1",
                "--attack",
                "slowloris",
                "--attack-interval",
                "0",
            ],
        ] {
            let err = parse(args(bad)).expect_err(&format!("{bad:?}"));
            assert!(!err.is_empty() && !err.contains('\n'), "{bad:?}: {err}");
        }
    }

    #[test]
    fn load_options() {
        let o = load(&[
            "load",
            "127.0.0.1:8888",
            "-c",
            "200",
            "-d",
            "2",
            "--pipeline",
            "4",
            "--line-bytes",
            "64",
            "--rate",
            "1000",
            "--source",
            "127.0.0.1-127.0.0.20",
            "--json",
            "--banner",
            r"Hi\n",
        ]);
        assert_eq!(o.target, "127.0.0.1:8888");
        assert_eq!((o.connections, o.pipeline, o.line_bytes), (200, 4, 64));
        assert_eq!(o.duration, Duration::from_secs(2));
        assert_eq!(o.rate, Some(1000.0));
        assert_eq!(o.source.unwrap().len(), 20);
        assert!(o.json);
        assert_eq!(o.banner.as_deref(), Some(&b"Hi\n"[..]));
        assert_eq!(o.prefix, b"OK...");
    }

    #[test]
    fn attack_options() {
        assert!(load(&["load", "127.0.0.1:1"]).attack.is_none());
        let o = load(&[
            "load",
            "127.0.0.1:8888",
            "--attackers",
            "5000",
            "--attack",
            "slowloris",
            "--attack-interval",
            "2.5",
            "--attack-source",
            "127.0.0.2",
        ]);
        let a = o.attack.expect("an attack");
        assert_eq!((a.kind, a.attackers), (AttackKind::Slowloris, 5000));
        assert_eq!(a.interval, Duration::from_millis(2500));
        assert_eq!(a.source.unwrap().nth(0).to_string(), "127.0.0.2");
        let a = load(&["load", "127.0.0.1:1", "--attack", "oversized"]).attack;
        let a = a.expect("an attack");
        assert_eq!(
            (a.attackers, a.line_bytes, a.no_banner),
            (100, 70_000, false)
        );
        let a = load(&["load", "[::1]:1", "--attack", "churn", "--attack-no-banner"]).attack;
        assert!(a.expect("an attack").no_banner);
    }

    #[test]
    fn raw_means_no_banner_no_prefix() {
        let o = load(&["load", "127.0.0.1:7", "--raw"]);
        assert_eq!((o.prefix.len(), o.banner_lines), (0, 0));
    }

    #[test]
    fn help() {
        assert!(matches!(parse(args(&["--help"])), Ok(Command::Help)));
        assert!(matches!(parse(args(&["load", "-h"])), Ok(Command::Help)));
    }
}
