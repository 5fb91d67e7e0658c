//! `--telnet auto|on|off`: Ctrl-C in a real telnet client must not freeze the session, with
//! no flag at all, and every other client's bytes come back exactly.

mod util;

use std::process::Command;
use std::time::Duration;
use util::*;

/// The bytes telnet sends for Ctrl-C are filtered out, the timing mark is refused, and
/// the partial line typed before Ctrl-C is dropped.
#[test]
fn ctrl_c_bytes_get_a_refusal_and_the_next_line_is_answered() {
    let echod = Echod::start(&["--telnet"]);
    let mut s = echod.connect_greeted();
    send_expect(
        &mut s,
        b"abc\xff\xf4\xff\xfd\x06second\r\n",
        b"\xff\xfc\x06OK...second\r\n",
    );
}

/// A literal 0xFF (sent as IAC IAC) comes back escaped the same way.
#[test]
fn a_literal_0xff_round_trips_escaped() {
    let echod = Echod::start(&["--telnet"]);
    let mut s = echod.connect_greeted();
    send_expect(&mut s, b"a\xff\xffb\r\n", b"OK...a\xff\xffb\r\n");
}

/// With `--telnet off` the protocol stays byte-exact: the same bytes are echoed as data.
#[test]
fn telnet_off_stays_byte_exact() {
    let echod = Echod::start(&["--telnet", "off"]);
    let mut s = echod.connect_greeted();
    send_expect(
        &mut s,
        b"\xff\xf4\xff\xfd\x06x\n",
        b"OK...\xff\xf4\xff\xfd\x06x\n",
    );
}

/// With no flag (`--telnet auto`) a connection is byte-exact until it sends a telnet
/// command: 0xFF followed by anything else, `FF FF` included, is data and comes back as
/// it was sent. Ctrl-C's bytes then make it telnet-aware: the partial line is dropped, the
/// timing mark refused, and the next line answered.
#[test]
fn telnet_auto_is_byte_exact_until_a_command() {
    let echod = Echod::start(&[]);
    let mut s = echod.connect_greeted();
    send_expect(
        &mut s,
        b"a\xff\xffb\xff\x41\n",
        b"OK...a\xff\xffb\xff\x41\n",
    );
    send_expect(
        &mut s,
        b"abc\xff\xf4\xff\xfd\x06second\r\n",
        b"\xff\xfc\x06OK...second\r\n",
    );
    // Telnet-aware now: IAC IAC is one 0xFF, sent back doubled.
    send_expect(&mut s, b"a\xff\xffb\r\n", b"OK...a\xff\xffb\r\n");
}

/// The real `telnet` in a pseudo-terminal (driven by `expect`), with no flag: type a line,
/// press Ctrl-C in the middle of another (telnet sends `IAC IP IAC DO TIMING-MARK`), type a
/// third: its reply appears, and no 0xFF junk reaches the screen.
#[test]
fn real_telnet_survives_ctrl_c_with_no_flag() {
    real_telnet_survives_ctrl_c(&[]);
}

/// The same with `--telnet on`.
#[test]
fn real_telnet_survives_ctrl_c_with_telnet_on() {
    real_telnet_survives_ctrl_c(&["--telnet", "on"]);
}

/// Drives the real `telnet` through `expect` against echod started with `args`.
fn real_telnet_survives_ctrl_c(args: &[&str]) {
    if !have_tool("telnet") || !have_tool("expect") {
        return;
    }
    let echod = Echod::start(args);
    let dir = std::env::temp_dir().join(format!(
        "echod-telnet-{}-{}",
        std::process::id(),
        args.len()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let screen = dir.join("screen.log");
    let script = format!(
        // Patterns and actions go as separate arguments: expect reads a single braced
        // argument as a pattern list only when it spans several lines.
        r#"set timeout 5
log_file -noappend {screen}
spawn telnet {ip} {port}
expect "hit enter" {{}} timeout {{exit 10}}
send "first\r"
expect "OK...first" {{}} timeout {{exit 11}}
send "abc\003"
send "second\r"
expect "OK...second" {{}} timeout {{exit 12}}
send "\035"
expect "telnet>" {{}} timeout {{exit 13}}
send "quit\r"
expect eof
"#,
        screen = screen.display(),
        ip = echod.addr.ip(),
        port = echod.addr.port(),
    );
    let output = within(Duration::from_secs(30), move || {
        Command::new("expect")
            .arg("-c")
            .arg(script)
            .output()
            .unwrap()
    });
    let seen = std::fs::read(&screen).unwrap_or_default();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        output.status.success(),
        "expect exited {:?} (10 banner, 11 first reply, 12 reply after Ctrl-C, 13 quit); screen:\n{}",
        output.status.code(),
        String::from_utf8_lossy(&seen)
    );
    assert!(!seen.contains(&0xFF), "0xFF junk on the screen");
}
