//! `echoc` against the real `echod`, and against small servers the tests
//! start themselves (an HTTP responder, servers that answer wrongly).
//!
//! Every wait is bounded: processes run under `util::run_with_input`, which
//! kills them after a timeout, and test servers use socket timeouts.

mod util;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Output};
use std::time::Duration;

use util::{run_with_input, Echod, BANNER, TIMEOUT};

/// The `echoc` binary built with these tests.
fn echoc(args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_echoc"));
    cmd.args(args);
    cmd
}

/// Runs `echoc` with `args` and `input` on stdin, within `limit`.
fn run(args: &[&str], input: &[u8], limit: Duration) -> Output {
    run_with_input(echoc(args), input, limit)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Host and port arguments for `addr`.
fn host_port(addr: SocketAddr) -> (String, String) {
    (addr.ip().to_string(), addr.port().to_string())
}

/// The number after `"key":` in a flat-enough JSON text (our own output).
fn json_number(json: &str, key: &str) -> f64 {
    let needle = format!("\"{key}\":");
    let at = json
        .find(&needle)
        .unwrap_or_else(|| panic!("no {key} in {json}"))
        + needle.len();
    let end = json[at..].find([',', '}']).map_or(json.len(), |i| at + i);
    json[at..end]
        .parse()
        .unwrap_or_else(|_| panic!("{key} is not a number in {json}"))
}

/// The last line of stdout, which `--json` promises is the JSON summary.
fn json_line(out: &Output) -> String {
    let stdout = text(&out.stdout);
    let last = stdout.lines().last().unwrap_or_default().to_string();
    assert!(
        last.starts_with('{') && last.ends_with('}'),
        "last line is not JSON:\n{stdout}\nstderr:\n{}",
        text(&out.stderr)
    );
    last
}

/// A port on 127.0.0.1 where nothing listens (bound, then released).
fn closed_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// Starts a server on 127.0.0.1:0 that runs `serve` for each connection on
/// its own thread, forever (the threads end with the test process).
fn test_server(serve: fn(TcpStream)) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            stream.set_read_timeout(Some(TIMEOUT)).unwrap();
            stream.set_write_timeout(Some(TIMEOUT)).unwrap();
            std::thread::spawn(move || serve(stream));
        }
    });
    addr
}

#[test]
fn one_shot_reply_is_exact() {
    let echod = Echod::start(&[]);
    let (host, port) = host_port(echod.addr);
    let out = run(&[&host, &port, "--send", r"hello\n"], b"", TIMEOUT);
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    assert_eq!(text(&out.stdout), text(&[BANNER, b"OK...hello\n"].concat()));
    assert_eq!(text(&out.stderr), "", "quiet without -v");
}

#[test]
fn one_shot_answers_a_final_unterminated_fragment() {
    let echod = Echod::start(&[]);
    let (host, port) = host_port(echod.addr);
    let out = run(&[&host, &port, "--send", r"a\nb"], b"", TIMEOUT);
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        text(&[BANNER, b"OK...a\nOK...b"].concat())
    );
}

#[test]
fn verbose_narrates_the_steps() {
    let echod = Echod::start(&[]);
    let (host, port) = host_port(echod.addr);
    let out = run(&[&host, &port, "--send", r"hello\n", "-v"], b"", TIMEOUT);
    assert!(out.status.success());
    let story = text(&out.stderr);
    for step in [
        format!("resolved {host} to {}", echod.addr),
        format!("connected to {}", echod.addr),
        "sent 6 bytes".to_string(),
        "half-closed".to_string(),
        "received ".to_string(),
        format!(
            "server closed the connection; received {} bytes",
            BANNER.len() + 11
        ),
    ] {
        assert!(story.contains(&step), "no '{step}' in:\n{story}");
    }
}

/// Answers one HTTP request (read up to the blank line) with "hi", then closes.
fn tiny_http(mut stream: TcpStream) {
    let mut request = Vec::new();
    let mut buf = [0; 1024];
    while !request.ends_with(b"\r\n\r\n") {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => request.extend_from_slice(&buf[..n]),
        }
    }
    if request == b"GET / HTTP/1.1\r\n\r\n" {
        let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi");
    } else {
        let _ = stream.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n");
    }
}

#[test]
fn the_tutorials_http_request() {
    let (host, port) = host_port(test_server(tiny_http));
    let out = run(
        &[&host, &port, "--send", r"GET / HTTP/1.1\r\n\r\n"],
        b"",
        TIMEOUT,
    );
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi"
    );
}

#[test]
fn unresolvable_host_is_named() {
    // A resolver without network may take a while to give up: allow for it.
    let out = run(&["nosuch.invalid", "8888", "--send", "x"], b"", 3 * TIMEOUT);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.starts_with("echoc: cannot resolve host 'nosuch.invalid': "),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(out.stdout.is_empty());
}

#[test]
fn refused_port_says_so() {
    let port = closed_port().to_string();
    let out = run(&["127.0.0.1", &port, "--send", "x"], b"", TIMEOUT);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr),
        format!("echoc: connect to 127.0.0.1:{port}: Connection refused\n")
    );
}

#[test]
fn bad_command_line_exits_2() {
    let out = run(&["--send", r"\q"], b"", TIMEOUT);
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(err.starts_with("echoc: --send: bad escape '\\q'"), "{err}");
    assert_eq!(err.lines().count(), 1);
    let out = run(&["load", "127.0.0.1:1", "--pipeline", "0"], b"", TIMEOUT);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn interactive_through_a_pipe() {
    let echod = Echod::start(&[]);
    let (host, port) = host_port(echod.addr);
    let out = run(&[&host, &port], b"one\ntwo\nthree\n", TIMEOUT);
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    let want = [BANNER, b"OK...one\nOK...two\nOK...three\n"].concat();
    assert_eq!(text(&out.stdout), text(&want));
}

#[test]
fn interactive_with_more_input_than_one_read() {
    // Several reads' worth of stdin (a pipe holds 64 KiB): nothing may be
    // lost or left stranded between readiness events.
    let echod = Echod::start(&[]);
    let (host, port) = host_port(echod.addr);
    let lines: Vec<String> = (0..20_000).map(|i| format!("line {i:05}")).collect();
    let input: String = lines.iter().map(|l| format!("{l}\n")).collect();
    let out = run(&[&host, &port], input.as_bytes(), 3 * TIMEOUT);
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
    let want = [BANNER, &util::replies(&refs)].concat();
    assert!(
        out.stdout == want,
        "{} bytes, expected {}",
        out.stdout.len(),
        want.len()
    );
}

#[test]
fn load_200_connections_for_2s_has_no_errors() {
    let echod = Echod::start(&[]);
    let addr = echod.addr.to_string();
    let out = run(
        &[
            "load",
            &addr,
            "--connections",
            "200",
            "--duration",
            "2",
            "--json",
        ],
        b"",
        6 * TIMEOUT,
    );
    let json = json_line(&out);
    let report = format!("{}\n{}", text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{report}");
    assert_eq!(json_number(&json, "errors"), 0.0, "{report}");
    assert_eq!(json_number(&json, "connections"), 200.0);
    assert_eq!(json_number(&json, "connected_peak"), 200.0, "{report}");
    assert!(json_number(&json, "replies") > 0.0, "{report}");
    assert!(json_number(&json, "replies_per_s") > 0.0);
    let duration = json_number(&json, "duration_s");
    assert!((2.0..10.0).contains(&duration), "{duration}");
    let p50 = json_number(&json, "p50");
    let p99 = json_number(&json, "p99");
    let p999 = json_number(&json, "p999");
    let max = json_number(&json, "max");
    assert!(
        0.0 < p50 && p50 <= p99 && p99 <= p999 && p999 <= max,
        "{json}"
    );
    assert!(text(&out.stdout).contains("Errors       0"), "{report}");
}

#[test]
fn load_pipelined_raw_and_paced() {
    let echod = Echod::start(&["--raw"]);
    let addr = echod.addr.to_string();
    let args = [
        "load",
        &addr,
        "--raw",
        "-c",
        "20",
        "-d",
        "1",
        "--pipeline",
        "8",
        "--line-bytes",
        "300",
        "--rate",
        "2000",
        "--json",
    ];
    let out = run(&args, b"", 6 * TIMEOUT);
    let json = json_line(&out);
    assert!(out.status.success(), "{}", text(&out.stdout));
    assert_eq!(json_number(&json, "errors"), 0.0);
    // The open loop plans 2,000 lines/s for one second, dealt over the 20
    // connections, and sends and checks every one of them.
    let replies = json_number(&json, "replies");
    assert!((1999.0..=2001.0).contains(&replies), "{json}");
    assert_eq!(json_number(&json, "planned"), replies, "{json}");
    assert_eq!(json_number(&json, "sent"), replies, "{json}");
}

#[test]
fn load_idle_holds_connections_over_several_sources() {
    let echod = Echod::start(&[]);
    let addr = echod.addr.to_string();
    let args = [
        "load",
        &addr,
        "--idle",
        "-c",
        "60",
        "-d",
        "1",
        "--source",
        "127.0.0.1-127.0.0.3",
        "--json",
    ];
    let out = run(&args, b"", 6 * TIMEOUT);
    let json = json_line(&out);
    assert!(out.status.success(), "{}", text(&out.stdout));
    assert_eq!(json_number(&json, "errors"), 0.0);
    assert_eq!(json_number(&json, "connected_peak"), 60.0);
    assert_eq!(json_number(&json, "replies"), 0.0);
}

/// Sends the banner, then answers every line with the wrong bytes.
fn wrong_echo(stream: TcpStream) {
    let mut writer = stream.try_clone().unwrap();
    if writer.write_all(BANNER).is_err() {
        return;
    }
    for line in BufReader::new(stream).lines() {
        let Ok(line) = line else { return };
        if writer
            .write_all(format!("OK...{line}!\n").as_bytes())
            .is_err()
        {
            return;
        }
    }
}

/// Sends the banner, answers one line correctly, then hangs up (a FIN, and
/// it keeps reading, so that the client sees a clean close, not a reset).
fn early_close(stream: TcpStream) {
    let mut writer = stream.try_clone().unwrap();
    let _ = writer.write_all(BANNER);
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    if reader.read_line(&mut line).is_ok() {
        let _ = writer.write_all(format!("OK...{line}").as_bytes());
    }
    let _ = writer.shutdown(std::net::Shutdown::Write);
    let _ = std::io::copy(&mut reader, &mut std::io::sink());
}

#[test]
fn load_against_a_wrong_server_reports_mismatches() {
    let addr = test_server(wrong_echo).to_string();
    let out = run(
        &["load", &addr, "-c", "5", "-d", "1", "--json"],
        b"",
        6 * TIMEOUT,
    );
    let json = json_line(&out);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    assert_eq!(json_number(&json, "mismatch"), 5.0, "{json}");
    assert_eq!(json_number(&json, "replies"), 0.0);
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains(r#"expected "OK...0.0:abcdefghijk\n", got "OK...0.0:abcdefghijk!\n""#)
            || stdout.contains("first mismatch: conn "),
        "{stdout}"
    );
}

#[test]
fn load_against_a_server_that_hangs_up_reports_early_closes() {
    let addr = test_server(early_close).to_string();
    let out = run(
        &[
            "load",
            &addr,
            "-c",
            "4",
            "-d",
            "1",
            "--pipeline",
            "2",
            "--json",
        ],
        b"",
        6 * TIMEOUT,
    );
    let json = json_line(&out);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    assert_eq!(json_number(&json, "early_close"), 4.0, "{json}");
    assert_eq!(
        json_number(&json, "replies"),
        4.0,
        "one good reply each: {json}"
    );
}

#[test]
fn load_with_nothing_listening_counts_connect_errors() {
    let addr = format!("127.0.0.1:{}", closed_port());
    let out = run(
        &["load", &addr, "-c", "3", "-d", "1", "--json"],
        b"",
        6 * TIMEOUT,
    );
    let json = json_line(&out);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(json_number(&json, "connect"), 3.0, "{json}");
    assert!(text(&out.stdout).contains("Connection refused"));
}
