//! The wire protocol, byte for byte, against the real binary.

mod util;

use std::io::Write;
use util::*;

/// A client gets the banner first, then one `OK...` reply per line, terminator kept.
#[test]
fn banner_then_one_reply_per_line() {
    let echod = Echod::start(&[]);
    let mut s = echod.connect_greeted();
    send_expect(
        &mut s,
        b"hi\nthere\r\n\n",
        b"OK...hi\nOK...there\r\nOK...\n",
    );
}

/// Half-close: every line is answered, the fragment too (no newline added), then EOF.
#[test]
fn half_close_answers_the_fragment_then_closes() {
    let echod = Echod::start(&[]);
    let mut s = echod.connect_greeted();
    send_and_close(&mut s, b"one\ntwo");
    assert_eq!(read_to_end(&mut s), b"OK...one\nOK...two");
}

/// The default banner arrives on connect, exactly, before the client sends anything,
/// and nothing follows it until the client speaks.
#[test]
fn banner_is_sent_on_connect_and_nothing_else() {
    let echod = Echod::start(&[]);
    let mut s = echod.connect();
    assert_eq!(
        read_n(&mut s, BANNER.len()),
        b"Welcome to the server. Type something and hit enter\n"
    );
    assert_silent(&mut s, std::time::Duration::from_millis(300));
}

/// Replies are exact: prefix + the line's bytes + its `\n`, nothing more, nothing less.
#[test]
fn replies_are_exact() {
    let echod = Echod::start(&[]);
    let mut s = echod.connect_greeted();
    s.write_all(b"hello world\n").unwrap();
    assert_eq!(read_n(&mut s, 17), b"OK...hello world\n");
    s.write_all(b"  spaces  \tand tab \n").unwrap();
    assert_eq!(read_n(&mut s, 25), b"OK...  spaces  \tand tab \n");
    assert_silent(&mut s, std::time::Duration::from_millis(200));
}

/// A CRLF line is answered with its `\r\n` kept; a lone `\r` does not end a line.
#[test]
fn crlf_is_kept() {
    let echod = Echod::start(&[]);
    let mut s = echod.connect_greeted();
    send_expect(
        &mut s,
        b"dos\r\nmid\rline\n",
        b"OK...dos\r\nOK...mid\rline\n",
    );
}

/// An empty line is a line: it is answered with the bare prefix and `\n`.
#[test]
fn empty_line_is_answered() {
    let echod = Echod::start(&[]);
    let mut s = echod.connect_greeted();
    s.write_all(b"\n\n").unwrap();
    assert_eq!(read_n(&mut s, 12), b"OK...\nOK...\n");
}

/// Bytes are opaque: NUL, 0xFF and invalid UTF-8 come back unchanged (with the default
/// `--telnet auto`, until a telnet command: 0xFF then 0xF0..=0xFE, see tests/telnet.rs).
#[test]
fn nul_and_0xff_pass_through() {
    let echod = Echod::start(&[]);
    let mut s = echod.connect_greeted();
    let line = b"a\0b\xff\xef\xfe\xc3(\x00\xff\n";
    s.write_all(line).unwrap();
    let mut want = b"OK...".to_vec();
    want.extend_from_slice(line);
    assert_eq!(read_n(&mut s, want.len()), want);
}

/// Several lines in one write, and a line split across writes, are all answered in
/// order, whatever the segmentation.
#[test]
fn pipelined_lines_are_answered_in_order() {
    let echod = Echod::start(&[]);
    let mut s = echod.connect_greeted();
    send_expect(&mut s, b"one\ntwo\nthr", &replies(&["one", "two"]));
    s.write_all(b"ee\nfour\nfi").unwrap();
    send_expect(&mut s, b"ve\n", &replies(&["three", "four", "five"]));
}

/// Input arriving one byte per segment (TCP_NODELAY, one write per byte) is framed
/// into the same lines as a single write would be.
#[test]
fn byte_by_byte_input_is_framed_correctly() {
    let echod = Echod::start(&[]);
    let mut s = echod.connect_greeted();
    s.set_nodelay(true).unwrap();
    let input = b"first line\nsecond\r\n\nlast one\n";
    for b in input {
        s.write_all(&[*b]).unwrap();
    }
    let want = b"OK...first line\nOK...second\r\nOK...\nOK...last one\n";
    assert_eq!(read_n(&mut s, want.len()), want);
}

/// One write of 200 lines gets 200 replies, in order.
#[test]
fn two_hundred_lines_in_one_write() {
    let echod = Echod::start(&[]);
    let mut s = echod.connect_greeted();
    let lines: Vec<String> = (0..200).map(|i| format!("line number {i}")).collect();
    let input: String = lines.iter().map(|l| format!("{l}\n")).collect();
    s.write_all(input.as_bytes()).unwrap();
    let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
    let want = replies(&refs);
    let got = read_n(&mut s, want.len());
    assert_eq!(
        String::from_utf8_lossy(&got),
        String::from_utf8_lossy(&want)
    );
    assert_silent(&mut s, std::time::Duration::from_millis(200));
}

/// Half-close after complete lines only: every reply, then EOF (nothing invented).
#[test]
fn half_close_without_fragment() {
    let echod = Echod::start(&[]);
    let mut s = echod.connect_greeted();
    send_and_close(&mut s, b"a\nb\n");
    assert_eq!(read_to_fin(&mut s), b"OK...a\nOK...b\n");
}

/// Half-close right away (no data): a clean EOF and nothing else.
#[test]
fn half_close_with_nothing_sent() {
    let echod = Echod::start(&[]);
    let mut s = echod.connect_greeted();
    send_and_close(&mut s, b"");
    assert_eq!(read_to_fin(&mut s), b"");
}

/// `--banner ''` sends no banner: the first bytes a client sees are its first reply.
#[test]
fn empty_banner_means_none() {
    let echod = Echod::start(&["--banner", ""]);
    let mut s = echod.connect();
    s.write_all(b"x\n").unwrap();
    assert_eq!(read_n(&mut s, 7), b"OK...x\n");
}

/// A custom `--banner` (newline added) and `--prefix` are used verbatim.
#[test]
fn custom_banner_and_prefix() {
    let echod = Echod::start(&["--banner", "hello there", "--prefix", "> "]);
    let mut s = echod.connect();
    assert_eq!(read_n(&mut s, 12), b"hello there\n");
    s.write_all(b"a\nbc\n").unwrap();
    assert_eq!(read_n(&mut s, 9), b"> a\n> bc\n");
    send_and_close(&mut s, b"frag");
    assert_eq!(read_to_fin(&mut s), b"> frag");
}

/// Raw mode: no banner, no prefix; bytes come back as sent, even without a newline,
/// and a half-close gets the rest then EOF.
#[test]
fn raw_mode_echoes_bytes_as_sent() {
    let echod = Echod::start(&["--raw"]);
    let mut s = echod.connect();
    s.write_all(b"abc").unwrap();
    assert_eq!(read_n(&mut s, 3), b"abc");
    s.write_all(b"de\nf\0\xff").unwrap();
    assert_eq!(read_n(&mut s, 6), b"de\nf\0\xff");
    send_and_close(&mut s, b"tail\r\nend");
    assert_eq!(read_to_fin(&mut s), b"tail\r\nend");
}

/// `--max-line 16`: an earlier short line is answered, then `ERR line too long`, then a
/// clean EOF (the client reads the error: no reset destroys it).
#[test]
fn max_line_answers_earlier_lines_then_errors_and_closes() {
    let echod = Echod::start(&["--max-line", "16"]);
    let mut s = echod.connect_greeted();
    s.write_all(b"short\n").unwrap();
    s.write_all(b"seventeen-bytes!!\nnever answered\n").unwrap();
    assert_eq!(read_to_fin(&mut s), b"OK...short\nERR line too long\n");
}

/// Same, with the overlong line and the short one in a single write.
#[test]
fn max_line_in_one_write() {
    let echod = Echod::start(&["--max-line", "16"]);
    let mut s = echod.connect_greeted();
    s.write_all(b"ok\n01234567890123456\nnext\n").unwrap();
    assert_eq!(read_to_fin(&mut s), b"OK...ok\nERR line too long\n");
}

/// An overlong line with no newline at all also errors (the server does not wait for
/// the end of a line it will never accept), even when it arrives in pieces.
#[test]
fn max_line_without_newline_errors() {
    let echod = Echod::start(&["--max-line", "16"]);
    let mut s = echod.connect_greeted();
    s.set_nodelay(true).unwrap();
    s.write_all(b"0123456789").unwrap();
    s.write_all(b"abcdefg").unwrap(); // 17 bytes, no newline
    assert_eq!(read_to_fin(&mut s), b"ERR line too long\n");
}

/// A line of exactly `--max-line` bytes (without its `\n`) is accepted, with or without
/// a `\r` counted in it; 16 bytes without a newline are not an error either.
#[test]
fn max_line_exactly_is_ok() {
    let echod = Echod::start(&["--max-line", "16"]);
    let mut s = echod.connect_greeted();
    s.write_all(b"0123456789abcdef\n").unwrap();
    assert_eq!(read_n(&mut s, 22), b"OK...0123456789abcdef\n");
    s.write_all(b"0123456789abcde\r\n").unwrap();
    assert_eq!(read_n(&mut s, 22), b"OK...0123456789abcde\r\n");
    send_and_close(&mut s, b"0123456789abcdef");
    assert_eq!(read_to_fin(&mut s), b"OK...0123456789abcdef");
}

/// `--listen [::1]:0` serves over IPv6 (skipped when ::1 is unavailable here).
#[test]
fn ipv6_listen_works() {
    if !ipv6_loopback() {
        eprintln!("SKIPPED: ::1 is not available on this machine");
        return;
    }
    let echod = Echod::start(&["--listen", "[::1]:0"]);
    assert!(echod.addr.is_ipv6(), "listening on {}", echod.addr);
    let mut s = connect(echod.addr);
    assert_eq!(read_n(&mut s, BANNER.len()), BANNER);
    send_and_close(&mut s, b"six\nfrag");
    assert_eq!(read_to_fin(&mut s), b"OK...six\nOK...frag");
}

/// Two `--listen` addresses both serve (IPv4 + IPv6 when ::1 exists, else two IPv4 ports).
#[test]
fn two_listen_addresses_both_serve() {
    let second = if ipv6_loopback() {
        "[::1]:0"
    } else {
        "127.0.0.1:0"
    };
    let echod = Echod::start(&["--listen", "127.0.0.1:0", "--listen", second]);
    let addrs = echod.wait_listen_addrs(2);
    assert_eq!(addrs.len(), 2, "{addrs:?}");
    assert_ne!(addrs[0], addrs[1]);
    for (i, addr) in addrs.iter().enumerate() {
        let mut s = connect(*addr);
        assert_eq!(read_n(&mut s, BANNER.len()), BANNER, "listener {addr}");
        let line = format!("via listener {i}");
        assert_echoes(&mut s, &[&line]);
    }
}
