//! The daemon against real programs: OpenBSD `nc` and the real `telnet` in a terminal.
//!
//! Each test is skipped (with a printed notice) when its tool is missing, and fails
//! instead when `ECHOD_REQUIRE_TOOLS=1`.

mod util;

use std::process::Command;
use util::*;

/// `printf 'a\nb\n' | nc -N 127.0.0.1 PORT` prints the banner and both replies, and
/// exits 0 once the server has answered and closed (nc's half-close is honoured).
#[test]
fn nc_pipes_lines_and_gets_every_reply() {
    if !have_tool("nc") {
        return;
    }
    let echod = Echod::start(&[]);
    let mut nc = Command::new("nc");
    nc.args(["-N", "127.0.0.1", &echod.addr.port().to_string()]);
    let out = run_with_input(nc, b"a\nb\n", TIMEOUT);
    let mut want = BANNER.to_vec();
    want.extend_from_slice(b"OK...a\nOK...b\n");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&want),
        "nc stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "nc exited {}; stderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `nc -N` with a final line that has no newline: the fragment is answered too.
#[test]
fn nc_final_fragment_is_answered() {
    if !have_tool("nc") {
        return;
    }
    let echod = Echod::start(&[]);
    let mut nc = Command::new("nc");
    nc.args(["-N", "127.0.0.1", &echod.addr.port().to_string()]);
    let out = run_with_input(nc, b"x\ny", TIMEOUT);
    let mut want = BANNER.to_vec();
    want.extend_from_slice(b"OK...x\nOK...y");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&want)
    );
    assert!(out.status.success(), "nc exited {}", out.status);
}

/// The real `telnet`, driven through a pseudo-terminal by `expect`: it shows the banner,
/// each typed line is answered, and `^]` + `quit` leaves cleanly (the server sees the
/// close and logs it).
#[test]
fn telnet_in_a_terminal_types_lines_and_quits() {
    if !have_tool("telnet") || !have_tool("expect") {
        return;
    }
    let echod = Echod::start(&["--log-level", "debug"]);
    // Each step has its own exit code, so a failure says where it stuck.
    let script = format!(
        r#"
set timeout 10
log_user 1
spawn telnet 127.0.0.1 {port}
expect {{
    timeout {{ puts "\nSTEP: no banner"; exit 11 }}
    eof {{ puts "\nSTEP: telnet ended before the banner"; exit 12 }}
    "Welcome to the server. Type something and hit enter"
}}
send "hello there\r"
expect {{
    timeout {{ puts "\nSTEP: no reply to the first line"; exit 13 }}
    eof {{ exit 14 }}
    "OK...hello there"
}}
send "second line\r"
expect {{
    timeout {{ puts "\nSTEP: no reply to the second line"; exit 15 }}
    eof {{ exit 16 }}
    "OK...second line"
}}
send "\035"
expect {{
    timeout {{ puts "\nSTEP: no telnet> prompt after ^]"; exit 17 }}
    eof {{ exit 18 }}
    "telnet>"
}}
send "quit\r"
expect {{
    timeout {{ puts "\nSTEP: telnet did not exit after quit"; exit 19 }}
    eof
}}
lassign [wait] pid spawn_id os_error status
exit $status
"#,
        port = echod.addr.port()
    );
    let mut expect = Command::new("expect");
    expect.args(["-c", &script]);
    let out = run_with_input(expect, b"", std::time::Duration::from_secs(40));
    let transcript = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "expect exited {}\ntranscript:\n{transcript}\nstderr: {}\nserver log:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        echod.log()
    );
    // The replies really came from the server, CRLF kept (telnet sends \r\n).
    assert!(
        transcript.contains("OK...hello there\r"),
        "transcript:\n{transcript}"
    );
    let closed = echod.expect_log("closed 127.0.0.1:");
    assert!(closed.contains("client_closed"), "{closed}");
    assert_eq!(echod.count_log("Connected with"), 1);
}
