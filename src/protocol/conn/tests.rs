//! The connection state machine driven by hand: no sockets, every split offset.

use super::*;
use proptest::prelude::*;

const BANNER: &[u8] = b"Welcome to the server. Type something and hit enter\n";

/// The default rules (`--telnet auto`).
fn proto() -> Rules {
    Rules::default()
}

/// Byte-exact rules (`--telnet off`) with small limits.
fn small(max_line: usize, max_pending: usize) -> Rules {
    Rules {
        max_line,
        max_pending,
        telnet: Telnet::Off,
        ..proto()
    }
}

/// Takes everything the connection wants to send, as a client that always reads would.
fn drain(p: &Rules, c: &mut Connection) -> Vec<u8> {
    let mut got = Vec::new();
    loop {
        let out = c.poll_output();
        if out.is_empty() {
            return got;
        }
        got.extend_from_slice(out);
        let n = out.len();
        c.advance_output(p, n);
    }
}

/// Feeds `chunks` one by one (draining after each), then EOF if asked; returns all output.
fn run(p: &Rules, chunks: &[&[u8]], eof: bool) -> (Vec<u8>, Connection) {
    let mut c = Connection::new(p);
    let mut got = drain(p, &mut c);
    for chunk in chunks {
        c.handle_input(p, chunk);
        got.extend(drain(p, &mut c));
    }
    if eof {
        c.handle_read_closed(p);
        got.extend(drain(p, &mut c));
    }
    (got, c)
}

/// What the protocol says the output must be for `input` in line mode: a reply per line,
/// and at the first line over `max_line` (complete or not) the error, and nothing after.
fn expected(p: &Rules, input: &[u8], eof: bool) -> Vec<u8> {
    let mut want = p.banner.clone();
    let mut rest = input;
    while let Some(len) = line::line_len(rest) {
        if len - 1 > p.max_line {
            break;
        }
        want.extend_from_slice(&p.prefix);
        want.extend_from_slice(&rest[..len]);
        rest = &rest[len..];
    }
    if line::line_len(rest).unwrap_or(rest.len() + 1) - 1 > p.max_line {
        want.extend_from_slice(ERR_LINE_TOO_LONG);
        return want;
    }
    if eof && !rest.is_empty() {
        want.extend_from_slice(&p.prefix);
        want.extend_from_slice(rest);
    }
    want
}

mod open {
    use super::*;

    #[test]
    fn banner_comes_first_then_one_reply_per_line() {
        let p = proto();
        let (got, c) = run(&p, &[b"hi\n"], false);
        assert_eq!(got, [BANNER, b"OK...hi\n"].concat());
        assert_eq!(c.state(), State::Open);
        assert!(c.wants_read(&p));
        assert_eq!(c.lines(), 1);
    }

    #[test]
    fn crlf_empty_lines_and_odd_bytes_are_echoed_exactly() {
        // (`--telnet off`: with `auto`, FF FE would be a telnet command.)
        let p = small(65536, 65536);
        let (got, _) = run(&p, &[b"hi\r\n\n\0\xff\xfe bin\n"], false);
        assert_eq!(
            got,
            [BANNER, b"OK...hi\r\nOK...\nOK...\0\xff\xfe bin\n"].concat()
        );
    }

    #[test]
    fn no_banner_when_it_is_empty() {
        let p = Rules {
            banner: Vec::new(),
            ..proto()
        };
        assert_eq!(run(&p, &[b"x\n"], false).0, b"OK...x\n");
    }

    #[test]
    fn every_split_offset_gives_the_same_replies() {
        let p = proto();
        let inputs: [&[u8]; 5] = [
            b"hello\nworld\r\n\nlast",
            b"\n\n\n",
            b"a\0b\xff\nc",
            b"one line only\n",
            b"",
        ];
        for input in inputs {
            for eof in [false, true] {
                let want = expected(&p, input, eof);
                for i in 0..=input.len() {
                    let (a, b) = input.split_at(i);
                    assert_eq!(run(&p, &[a, b], eof).0, want, "{input:?} split at {i}");
                    for j in i..=input.len() {
                        let parts = [&input[..i], &input[i..j], &input[j..]];
                        assert_eq!(run(&p, &parts, eof).0, want, "{input:?} at {i},{j}");
                    }
                }
                let bytes: Vec<&[u8]> = input.chunks(1).collect();
                assert_eq!(run(&p, &bytes, eof).0, want, "{input:?} byte by byte");
            }
        }
    }

    #[test]
    fn a_partial_line_costs_only_its_bytes_and_is_freed_when_answered() {
        let p = proto();
        let (_, mut c) = run(&p, &[b"abc"], false);
        assert_eq!(c.buffered(), 3);
        c.handle_input(&p, b"\n");
        drain(&p, &mut c);
        assert_eq!(c.buffered(), 0);
        assert_eq!(c.input.capacity(), 0, "input buffer freed");
        assert_eq!(c.output.capacity(), 0, "output buffer freed");
    }
}

mod limits {
    use super::*;

    #[test]
    fn a_line_of_exactly_max_line_is_fine() {
        let p = small(4, 1024);
        let (got, c) = run(&p, &[b"abcd\n"], false);
        assert_eq!(got, [BANNER, b"OK...abcd\n"].concat());
        assert_eq!(c.state(), State::Open);
    }

    #[test]
    fn a_longer_line_gets_earlier_replies_then_the_error() {
        let p = small(4, 1024);
        for input in [&b"ok\nabcde\nnever\n"[..], b"ok\nabcde", b"ok\nabcdefghij"] {
            for i in 0..=input.len() {
                let (a, b) = input.split_at(i);
                let (got, c) = run(&p, &[a, b], false);
                assert_eq!(got, [BANNER, b"OK...ok\n", ERR_LINE_TOO_LONG].concat());
                assert_eq!(c.state(), State::Lingering, "{input:?} at {i}");
                assert_eq!(c.close_reason(), Some(CloseReason::LineTooLong));
                assert!(c.wants_read(&p), "lingering reads (and drops) until FIN");
            }
        }
    }

    #[test]
    fn an_overlong_partial_line_is_refused_before_its_newline_arrives() {
        let p = small(4, 1024);
        let (got, c) = run(&p, &[b"abc", b"de"], false);
        assert_eq!(got, [BANNER, ERR_LINE_TOO_LONG].concat());
        assert_eq!(c.buffered(), 0);
    }

    #[test]
    fn after_the_error_input_is_dropped_and_fin_closes() {
        let p = small(4, 1024);
        let (_, mut c) = run(&p, &[b"toolong\n"], false);
        c.handle_input(&p, b"more\n");
        assert!(c.poll_output().is_empty());
        c.handle_read_closed(&p);
        assert!(c.is_closed());
        assert_eq!(c.close_reason(), Some(CloseReason::LineTooLong));
    }
}

mod backpressure {
    use super::*;

    /// A client that sends but never reads: output stops at the limit, reads stop,
    /// and nothing is lost once it reads again.
    #[test]
    fn reads_stop_at_the_limit_and_resume_below_it() {
        let p = Rules {
            banner: Vec::new(),
            ..small(64, 32)
        };
        let mut c = Connection::new(&p);
        let input: Vec<u8> = (0..100)
            .flat_map(|i| format!("line{i:03}\n").into_bytes())
            .collect();
        let mut fed = 0;
        while c.wants_read(&p) && fed < input.len() {
            let end = (fed + 10).min(input.len());
            c.handle_input(&p, &input[fed..end]);
            fed = end;
            assert!(
                c.poll_output().len() <= 32,
                "output stays under max_pending"
            );
        }
        assert!(
            fed < input.len(),
            "reads stopped before all input was taken"
        );
        assert!(!c.wants_read(&p));
        // The client reads a little: room opens, queued lines are answered, reads resume.
        let mut got = Vec::new();
        while fed < input.len() || !c.poll_output().is_empty() {
            let out = c.poll_output();
            let n = out.len().min(7);
            got.extend_from_slice(&out[..n]);
            c.advance_output(&p, n);
            assert!(c.poll_output().len() <= 32);
            if c.wants_read(&p) && fed < input.len() {
                let end = (fed + 10).min(input.len());
                c.handle_input(&p, &input[fed..end]);
                fed = end;
            }
        }
        assert_eq!(got, expected(&p, &input, false));
    }

    #[test]
    fn one_reply_bigger_than_the_limit_still_goes_out() {
        let p = small(100, 8);
        let (got, _) = run(&p, &[b"a line longer than eight\n"], false);
        assert_eq!(got, [BANNER, b"OK...a line longer than eight\n"].concat());
    }

    #[test]
    fn eof_with_a_backlog_answers_everything_then_closes() {
        let p = Rules {
            banner: Vec::new(),
            ..small(64, 8)
        };
        let mut c = Connection::new(&p);
        c.handle_input(&p, b"a\nb\nc\nfrag");
        assert!(!c.wants_read(&p));
        c.handle_read_closed(&p);
        assert_eq!(c.state(), State::Finishing);
        let got = drain(&p, &mut c);
        assert_eq!(got, b"OK...a\nOK...b\nOK...c\nOK...frag");
        assert!(c.is_closed());
        assert_eq!(c.close_reason(), Some(CloseReason::ClientClosed));
    }
}

mod finishing {
    use super::*;

    #[test]
    fn eof_answers_the_fragment_without_adding_a_newline() {
        let p = proto();
        let (got, c) = run(&p, &[b"a\nfrag"], true);
        assert_eq!(got, [BANNER, b"OK...a\nOK...frag"].concat());
        assert!(c.is_closed(), "peer FIN seen: no lingering");
    }

    #[test]
    fn eof_without_a_fragment_just_closes() {
        let p = proto();
        let (got, c) = run(&p, &[b"a\n"], true);
        assert_eq!(got, [BANNER, b"OK...a\n"].concat());
        assert!(c.is_closed());
        assert_eq!(c.close_reason(), Some(CloseReason::ClientClosed));
    }

    #[test]
    fn shutdown_answers_everything_then_lingers_for_the_fin() {
        let p = proto();
        let mut c = Connection::new(&p);
        c.handle_input(&p, b"one\ntwo");
        c.handle_shutdown(&p);
        assert!(!c.wants_read(&p) || c.state() == State::Lingering);
        let got = drain(&p, &mut c);
        assert_eq!(got, [BANNER, b"OK...one\nOK...two"].concat());
        assert_eq!(c.state(), State::Lingering);
        c.handle_read_closed(&p);
        assert!(c.is_closed());
        assert_eq!(c.close_reason(), Some(CloseReason::Shutdown));
    }

    #[test]
    fn the_drain_timeout_closes_a_client_that_does_not_read() {
        let p = small(64, 8);
        let mut c = Connection::new(&p);
        c.handle_input(&p, b"a\nb\n");
        c.handle_shutdown(&p);
        c.handle_drain_timeout();
        assert!(c.is_closed());
        assert_eq!(c.close_reason(), Some(CloseReason::DrainTimeout));
    }
}

mod timeouts {
    use super::*;
    use crate::protocol::tick::Tick;
    use std::time::Duration;

    /// The first clock reading past the deadline `at` (when a timer armed for it fires).
    pub(super) fn past(at: Tick) -> Tick {
        at.after(Duration::from_millis(1))
    }

    /// The connection's deadline comes: what the reactor does when its timer fires.
    pub(super) fn time_out(p: &Rules, c: &mut Connection) {
        if c.poll_timeout().is_none() {
            c.handle_activity(p, Tick::from_millis(0));
        }
        let at = c.poll_timeout().expect("a deadline");
        c.handle_timeout(p, past(at));
    }

    #[test]
    fn activity_pushes_the_idle_deadline_back() {
        let p = proto();
        let idle = p.idle_timeout.unwrap();
        let mut c = Connection::new(&p);
        assert_eq!(
            c.poll_timeout(),
            None,
            "no clock until the reactor gives one"
        );
        let t0 = Tick::from_millis(1000);
        c.handle_activity(&p, t0);
        assert_eq!(c.poll_timeout(), Some(t0.after(idle)));
        let t1 = t0.after(Duration::from_secs(10));
        c.handle_activity(&p, t1);
        assert_eq!(c.poll_timeout(), Some(t1.after(idle)));
        // A timer armed for the old deadline fires early: nothing happens.
        c.handle_timeout(&p, past(t0.after(idle)));
        assert_eq!(c.state(), State::Open);
        // At the deadline's own tick it may not have come yet: nothing happens either.
        c.handle_timeout(&p, t1.after(idle));
        assert_eq!(c.state(), State::Open);
        c.handle_timeout(&p, past(t1.after(idle)));
        assert_eq!(c.state(), State::Flushing);
    }

    #[test]
    fn without_an_idle_timeout_an_open_connection_needs_no_clock() {
        let p = Rules {
            idle_timeout: None,
            ..proto()
        };
        let mut c = Connection::new(&p);
        c.handle_activity(&p, Tick::from_millis(5));
        assert_eq!(c.poll_timeout(), None);
    }

    #[test]
    fn the_proxy_header_clock_starts_at_accept_and_is_never_pushed_back() {
        let p = super::proxy_header::proxied();
        let mut c = Connection::new(&p);
        let t0 = Tick::from_millis(0);
        c.handle_activity(&p, t0);
        c.handle_input(&p, b"PROXY TCP4 ");
        c.handle_activity(&p, t0.after(Duration::from_secs(2)));
        assert_eq!(c.poll_timeout(), Some(t0.after(p.proxy_header_timeout)));
    }

    #[test]
    fn after_our_fin_the_client_has_the_linger_time_whatever_it_sends() {
        let p = proto();
        let (_, mut c) = run(&p, &[b"partial"], false);
        let t0 = Tick::from_millis(0);
        c.handle_activity(&p, t0);
        let t1 = past(t0.after(p.idle_timeout.unwrap()));
        c.handle_timeout(&p, t1);
        assert_eq!(drain(&p, &mut c), ERR_IDLE_TIMEOUT);
        assert_eq!(c.state(), State::Lingering);
        c.handle_fin_sent(&p, t1);
        c.handle_activity(&p, t1.after(Duration::from_secs(1)));
        assert_eq!(c.poll_timeout(), Some(t1.after(p.linger)));
        c.handle_timeout(&p, past(t1.after(p.linger)));
        assert!(c.is_closed());
    }

    #[test]
    fn idle_timeout_says_why_then_lingers() {
        let p = proto();
        let (_, mut c) = run(&p, &[b"partial"], false);
        time_out(&p, &mut c);
        assert_eq!(c.state(), State::Flushing);
        assert_eq!(drain(&p, &mut c), ERR_IDLE_TIMEOUT);
        assert_eq!(c.state(), State::Lingering);
        time_out(&p, &mut c);
        assert!(c.is_closed());
        assert_eq!(c.close_reason(), Some(CloseReason::IdleTimeout));
    }

    #[test]
    fn a_client_stuck_while_flushing_is_closed_on_the_next_timeout() {
        let p = small(4, 1024);
        let (_, mut c) = run(&p, &[], false);
        c.handle_input(&p, b"toolong");
        assert_eq!(c.state(), State::Flushing);
        time_out(&p, &mut c);
        assert!(c.is_closed());
    }

    #[test]
    fn errors_close_at_once() {
        let p = proto();
        let mut c = Connection::new(&p);
        c.handle_error();
        assert!(c.is_closed());
        assert_eq!(c.close_reason(), Some(CloseReason::Error));
    }
}

mod raw {
    use super::*;

    fn raw(max_pending: usize) -> Rules {
        Rules::from_config(&Config {
            mode: Mode::Raw,
            banner: Vec::new(),
            max_pending,
            ..Config::default()
        })
    }

    #[test]
    fn bytes_come_back_as_they_are_without_banner_or_prefix() {
        let p = raw(1024);
        let (got, c) = run(&p, &[b"no newline", b"\xff\0\n"], true);
        assert_eq!(got, b"no newline\xff\0\n");
        assert!(c.is_closed());
    }

    #[test]
    fn raw_mode_obeys_the_pending_limit() {
        let p = raw(4);
        let mut c = Connection::new(&p);
        c.handle_input(&p, b"0123456789");
        assert_eq!(c.poll_output(), b"0123");
        assert!(!c.wants_read(&p));
        assert_eq!(drain(&p, &mut c), b"0123456789");
        assert!(c.wants_read(&p));
    }
}

mod telnet_mode {
    use super::*;

    fn telnet() -> Rules {
        Rules::from_config(&Config {
            telnet: Telnet::On,
            banner: Vec::new(),
            ..Config::default()
        })
    }

    fn all_splits_give(p: &Rules, input: &[u8], want: &[u8]) {
        for i in 0..=input.len() {
            let (a, b) = input.split_at(i);
            assert_eq!(run(p, &[a, b], false).0, want, "{input:?} split at {i}");
        }
        let bytes: Vec<&[u8]> = input.chunks(1).collect();
        assert_eq!(run(p, &bytes, false).0, want, "{input:?} byte by byte");
    }

    #[test]
    fn crlf_lines_keep_their_terminator() {
        all_splits_give(&telnet(), b"hi\r\n", b"OK...hi\r\n");
    }

    /// Ctrl-C in telnet: the partial line is dropped, DO TIMING-MARK is refused, and the
    /// next line is answered normally.
    #[test]
    fn ctrl_c_discards_the_partial_line_and_answers_the_timing_mark() {
        let input = b"abc\xff\xf4\xff\xfd\x06def\r\n";
        all_splits_give(&telnet(), input, b"\xff\xfc\x06OK...def\r\n");
    }

    #[test]
    fn ctrl_c_keeps_complete_lines_queued_behind_backpressure() {
        let p = Rules {
            max_pending: 4,
            ..telnet()
        };
        let mut c = Connection::new(&p);
        c.handle_input(&p, b"one\ntwo\nthr\xff\xf4");
        assert_eq!(drain(&p, &mut c), b"OK...one\nOK...two\n");
        c.handle_input(&p, b"ee\n");
        assert_eq!(drain(&p, &mut c), b"OK...ee\n");
    }

    #[test]
    fn negotiation_is_refused_and_never_echoed() {
        let input = b"\xff\xfb\x01\xff\xfd\x03\xff\xfa\x18\x01\xff\xf0x\n";
        all_splits_give(&telnet(), input, b"\xff\xfe\x01\xff\xfc\x03OK...x\n");
    }

    #[test]
    fn a_literal_0xff_comes_back_escaped() {
        all_splits_give(&telnet(), b"a\xff\xffb\n", b"OK...a\xff\xffb\n");
    }
}

/// `--telnet auto`: byte-exact until the first telnet command, telnet-aware from it on.
mod telnet_auto {
    use super::*;

    fn auto() -> Rules {
        Rules {
            banner: Vec::new(),
            ..proto()
        }
    }

    fn all_splits_give(p: &Rules, input: &[u8], eof: bool, want: &[u8]) {
        for i in 0..=input.len() {
            let (a, b) = input.split_at(i);
            assert_eq!(run(p, &[a, b], eof).0, want, "{input:?} split at {i}");
            for j in i..=input.len() {
                let parts = [&input[..i], &input[i..j], &input[j..]];
                assert_eq!(run(p, &parts, eof).0, want, "{input:?} split at {i},{j}");
            }
        }
        let bytes: Vec<&[u8]> = input.chunks(1).collect();
        assert_eq!(run(p, &bytes, eof).0, want, "{input:?} byte by byte");
    }

    /// Ctrl-C after plain lines: the line before it is answered as it was, the command is
    /// decoded (the partial line dropped, TIMING-MARK refused) and the session goes on.
    #[test]
    fn ctrl_c_switches_to_telnet_and_the_session_goes_on() {
        let input = b"first\r\nabc\xff\xf4\xff\xfd\x06def\r\n";
        let want = b"OK...first\r\n\xff\xfc\x06OK...def\r\n";
        all_splits_give(&auto(), input, false, want);
        all_splits_give(&auto(), input, true, want);
    }

    /// Before a command, 0xFF followed by anything but a command byte is data, `FF FF`
    /// included, and replies are not escaped.
    #[test]
    fn ff_without_a_command_byte_is_data() {
        let input = b"a\xff\xffb\n\xff\x41\n\xff\n\xff\xef\n\xff\xff\xfd\n";
        let want = b"OK...a\xff\xffb\nOK...\xff\x41\nOK...\xff\nOK...\xff\xef\nOK...\xff\xff\xfd\n";
        all_splits_give(&auto(), input, false, want);
        let (_, c) = run(&auto(), &[input], false);
        assert!(!c.telnet.is_decoding());
    }

    /// Every byte from 0xF0 to 0xFE after an IAC is a command, and switches.
    #[test]
    fn every_command_byte_switches() {
        for cmd in telnet::SE..=telnet::DONT {
            let (got, c) = run(&auto(), &[b"a\n", &[0xff, cmd, 1], b"\xff\xffb\n"], false);
            assert!(c.telnet.is_decoding(), "{cmd:02X}");
            // After the switch, IAC IAC is one 0xFF, sent back doubled.
            let answer: &[u8] = match cmd {
                telnet::DO => b"\xff\xfc\x01",
                telnet::WILL => b"\xff\xfe\x01",
                _ => b"",
            };
            // A two-byte command leaves its next byte (1) as data; SB swallows the rest.
            let line: &[u8] = match cmd {
                telnet::DO | telnet::WILL | telnet::WONT | telnet::DONT => b"OK...\xff\xffb\n",
                telnet::SB => b"",
                _ => b"OK...\x01\xff\xffb\n",
            };
            assert_eq!(got, [b"OK...a\n", answer, line].concat(), "{cmd:02X}");
        }
    }

    /// A line begun before the switch and ended after it is answered after it: escaped.
    #[test]
    fn replies_after_the_switch_are_escaped() {
        let input = b"a\xff\x41\xff\xf1b\n\xff\x41c\n";
        // The first FF was data (no command after it); after IAC NOP, IAC 0x41 is a
        // two-byte command and is dropped.
        all_splits_give(&auto(), input, false, b"OK...a\xff\xff\x41b\nOK...c\n");
    }

    /// An IAC at the end of the input waits for the next byte; if the input ends there,
    /// it was data.
    #[test]
    fn a_final_iac_is_held_until_the_next_byte_or_the_end() {
        all_splits_give(&auto(), b"a\nfrag\xff", true, b"OK...a\nOK...frag\xff");
        all_splits_give(&auto(), b"a\nfrag\xff", false, b"OK...a\n");
        let (_, c) = run(&auto(), &[b"a\nfrag\xff"], false);
        assert_eq!(c.buffered(), 4, "the partial line without the held IAC");
        // Over the limit only once the held byte turns out to be data.
        let p = Rules {
            max_line: 4,
            ..auto()
        };
        all_splits_give(&p, b"abcd\xff", false, b"");
        all_splits_give(&p, b"abcd\xff", true, ERR_LINE_TOO_LONG);
        all_splits_give(&p, b"abcd\xff\xf1\n", false, b"OK...abcd\n");
    }

    /// Negotiation answers keep their place in the stream: after the replies to the lines
    /// before them, even when those wait for room.
    #[test]
    fn answers_follow_the_replies_to_earlier_lines() {
        let input = b"one\ntwo\n\xff\xfd\x18three\n";
        all_splits_give(
            &auto(),
            input,
            false,
            b"OK...one\nOK...two\n\xff\xfc\x18OK...three\n",
        );
        let p = Rules {
            max_pending: 4,
            ..auto()
        };
        let mut c = Connection::new(&p);
        c.handle_input(&p, b"one\ntwo\n");
        assert!(!c.wants_read(&p), "backlog: two waits for room");
        assert_eq!(drain(&p, &mut c), b"OK...one\nOK...two\n");
        c.handle_input(&p, b"\xff\xfd\x18three\n");
        assert_eq!(drain(&p, &mut c), b"\xff\xfc\x18OK...three\n");
    }

    /// The banner goes out before we know what the client speaks: only `--telnet on`
    /// escapes it.
    #[test]
    fn the_banner_is_escaped_only_with_telnet_on() {
        let banner = |telnet| {
            let config = Config {
                banner: "hi\u{ff}".into(),
                telnet,
                ..Config::default()
            };
            Rules::from_config(&config).banner
        };
        assert_eq!(banner(Telnet::Auto), "hi\u{ff}".as_bytes());
        assert_eq!(banner(Telnet::Off), "hi\u{ff}".as_bytes());
        assert_eq!(banner(Telnet::On), b"hi\xc3\xbf");
        let on = Config {
            banner: vec![b'x', 0xff],
            telnet: Telnet::On,
            ..Config::default()
        };
        assert_eq!(Rules::from_config(&on).banner, b"x\xff\xff");
    }

    /// `--telnet off`: the bytes of a Ctrl-C are a line's data like any other.
    #[test]
    fn off_never_switches() {
        let p = Rules {
            telnet: Telnet::Off,
            ..auto()
        };
        let input = b"abc\xff\xf4\xff\xfd\x06\n";
        all_splits_give(&p, input, false, b"OK...abc\xff\xf4\xff\xfd\x06\n");
    }

    /// `input` with every telnet command defused (the command byte after a lone IAC made
    /// 0xEF), so that `--telnet auto` must treat all of it as data.
    fn without_commands(mut input: Vec<u8>) -> Vec<u8> {
        let mut i = 0;
        while i + 1 < input.len() {
            if input[i] != telnet::IAC {
                i += 1;
                continue;
            }
            if telnet::is_command(input[i + 1]) {
                input[i + 1] = 0xEF;
            }
            i += if input[i + 1] == telnet::IAC { 2 } else { 1 };
        }
        input
    }

    /// What of `input` (free of commands) is data for sure: all of it at EOF; before it,
    /// all but a final lone IAC, which the next byte could still make a command.
    fn surely_data(input: &[u8], eof: bool) -> &[u8] {
        let run = input
            .iter()
            .rev()
            .take_while(|&&b| b == telnet::IAC)
            .count();
        if !eof && run % 2 == 1 {
            &input[..input.len() - 1]
        } else {
            input
        }
    }

    /// Bytes with many IACs and command bytes, lines and carriage returns.
    fn telnetish() -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(
            prop_oneof![
                3 => any::<u8>(),
                2 => Just(telnet::IAC),
                1 => telnet::SE..=telnet::DONT,
                1 => Just(b'\n'),
                1 => Just(b'\r'),
            ],
            0..120,
        )
    }

    proptest! {
        /// Without a telnet command, `auto` is byte-exact: the replies of `--telnet off`,
        /// however the bytes are cut and taken, under every limit.
        #[test]
        fn without_a_command_auto_is_byte_exact(
            input in telnetish().prop_map(without_commands),
            cuts in proptest::collection::vec(1usize..40, 1..50),
            takes in proptest::collection::vec(1usize..50, 1..50),
            eof in any::<bool>(),
            lends in proptest::collection::vec(any::<bool>(), 1..50),
            limits in some_limits(),
        ) {
            let p = Rules { telnet: Telnet::Auto, ..small(limits.0, limits.1) };
            let got = segmented_run(&p, &input, &cuts, &takes, eof, &lends)?;
            let off = small(limits.0, limits.1);
            prop_assert_eq!(got, expected(&off, surely_data(&input, eof), eof));
        }

        /// Bytes free of 0xFF, then a telnet command and anything: split at every offset
        /// they give what one read gives, and that is what `--telnet on` gives (nothing
        /// before the command needed escaping).
        #[test]
        fn from_a_command_on_auto_is_telnet_at_every_split(
            before in proptest::collection::vec(
                prop_oneof![any::<u8>().prop_filter("no IAC", |&b| b != telnet::IAC), Just(b'\n')],
                0..40,
            ),
            command in telnet::SE..=telnet::DONT,
            after in telnetish(),
            eof in any::<bool>(),
            limits in some_limits(),
        ) {
            let input = [&before[..], &[telnet::IAC, command], &after[..]].concat();
            let auto = Rules { telnet: Telnet::Auto, ..small(limits.0, limits.1) };
            let on = Rules { telnet: Telnet::On, ..auto.clone() };
            let whole = run(&auto, &[&input], eof).0;
            prop_assert_eq!(&whole, &run(&on, &[&input], eof).0);
            for at in 0..=input.len() {
                let (a, b) = input.split_at(at);
                prop_assert_eq!(&run(&auto, &[a, b], eof).0, &whole, "split at {}", at);
            }
        }

        /// Any bytes, cut anywhere and taken a little at a time (so lines wait for room,
        /// and the filter pauses and goes on), in `auto` and in `on`: what one read gives.
        #[test]
        fn telnet_segmentation_and_partial_writes_never_change_the_replies(
            input in telnetish(),
            on in any::<bool>(),
            cuts in proptest::collection::vec(1usize..40, 1..50),
            takes in proptest::collection::vec(1usize..50, 1..50),
            eof in any::<bool>(),
            lends in proptest::collection::vec(any::<bool>(), 1..50),
            limits in some_limits(),
        ) {
            let telnet = if on { Telnet::On } else { Telnet::Auto };
            let p = Rules { telnet, ..small(limits.0, limits.1) };
            let got = segmented_run(&p, &input, &cuts, &takes, eof, &lends)?;
            prop_assert_eq!(got, run(&p, &[&input], eof).0);
        }

        /// Any bytes at all, `FF F0..FE` or not: every split offset gives what one read gives.
        #[test]
        fn auto_gives_the_same_replies_at_every_split(
            input in telnetish(),
            eof in any::<bool>(),
            limits in some_limits(),
        ) {
            let p = Rules { telnet: Telnet::Auto, ..small(limits.0, limits.1) };
            let whole = run(&p, &[&input], eof).0;
            for at in 0..=input.len() {
                let (a, b) = input.split_at(at);
                prop_assert_eq!(&run(&p, &[a, b], eof).0, &whole, "split at {}", at);
            }
        }
    }
}

mod proxy_header {
    use super::*;

    pub(super) fn proxied() -> Rules {
        Rules {
            proxy_protocol: true,
            ..proto()
        }
    }

    const V1: &[u8] = b"PROXY TCP4 192.0.2.1 198.51.100.1 56324 8888\r\n";

    #[test]
    fn the_banner_waits_for_the_header_and_bytes_after_it_are_lines() {
        let p = proxied();
        let input = [V1, b"hi\nfrag"].concat();
        for i in 0..=input.len() {
            let (a, b) = input.split_at(i);
            let (got, mut c) = run(&p, &[a, b], true);
            assert_eq!(
                got,
                [BANNER, b"OK...hi\nOK...frag"].concat(),
                "split at {i}"
            );
            assert!(c.is_closed());
            assert!(c.take_proxied_source().is_some());
        }
    }

    #[test]
    fn the_source_is_reported_once() {
        let p = proxied();
        let mut c = Connection::new(&p);
        assert_eq!(c.state(), State::ProxyHeader);
        assert!(c.poll_output().is_empty(), "no banner before the header");
        c.handle_input(&p, V1);
        let Some(proxy::Source::Tcp { client, .. }) = c.take_proxied_source() else {
            panic!("a TCP source");
        };
        assert_eq!(client, "192.0.2.1:56324".parse().unwrap());
        assert_eq!(c.take_proxied_source(), None);
        assert_eq!(c.poll_output(), BANNER);
    }

    #[test]
    fn a_plain_client_is_refused_at_once() {
        let p = proxied();
        let (got, c) = run(&p, &[b"hello\n"], false);
        assert_eq!(got, ERR_BAD_PROXY_HEADER);
        assert_eq!(c.state(), State::Lingering);
        assert_eq!(c.close_reason(), Some(CloseReason::BadProxyHeader));
    }

    #[test]
    fn a_missing_header_is_refused_on_timeout_or_eof() {
        let p = proxied();
        let (_, mut c) = run(&p, &[b"PROXY TCP4"], false);
        super::timeouts::time_out(&p, &mut c);
        assert_eq!(drain(&p, &mut c), ERR_BAD_PROXY_HEADER);
        let (got, c) = run(&p, &[], true);
        assert_eq!(got, ERR_BAD_PROXY_HEADER);
        assert!(c.is_closed());
    }
}

mod lent_output {
    use super::*;

    #[test]
    fn replies_are_built_in_the_lent_buffer_and_it_comes_back_with_its_memory() {
        let p = proto();
        let (_, mut c) = run(&p, &[], false);
        let mut shared = Vec::with_capacity(4096);
        let memory = shared.as_ptr();
        c.lend_output(&mut shared);
        assert_eq!(shared.capacity(), 0, "the connection has it now");
        c.handle_input(&p, b"one\ntwo\n");
        assert_eq!(drain(&p, &mut c), b"OK...one\nOK...two\n");
        c.return_output(&mut shared);
        assert_eq!(
            (shared.as_ptr(), shared.capacity(), shared.len()),
            (memory, 4096, 0)
        );
        assert_eq!(c.output.capacity(), 0, "an idle connection owns no buffer");
    }

    #[test]
    fn what_the_socket_did_not_take_moves_into_a_buffer_of_its_own() {
        let p = proto();
        let (_, mut c) = run(&p, &[], false);
        let mut shared = Vec::with_capacity(4096);
        c.lend_output(&mut shared);
        c.handle_input(&p, b"one\ntwo\n");
        c.advance_output(&p, 4); // The socket took "OK.." only.
        c.return_output(&mut shared);
        assert_eq!((shared.capacity(), shared.len()), (4096, 0));
        assert_eq!(c.poll_output(), b".one\nOK...two\n");
        assert_eq!(c.output.capacity(), c.output.len(), "sized to what is left");
        // With output pending, nothing is lent: new replies queue behind the old ones.
        c.lend_output(&mut shared);
        assert_eq!(shared.capacity(), 4096);
        c.handle_input(&p, b"3\n");
        assert_eq!(drain(&p, &mut c), b".one\nOK...two\nOK...3\n");
        c.return_output(&mut shared);
        assert_eq!(c.output.capacity(), 0);
    }
}

/// The per-connection struct is what an idle client costs: keep it small.
#[test]
fn an_idle_connection_is_small() {
    assert!(
        std::mem::size_of::<Connection>() <= 112,
        "Connection grew to {} bytes",
        std::mem::size_of::<Connection>()
    );
}

/// Feeds `input` cut at `cuts` (cycled) to a connection whose output is taken by a client
/// that reads `takes` bytes at a time (cycled), with the reply buffer lent on the visits
/// `lends` says, then EOF if asked; checks the bounds on the way and returns all output.
fn segmented_run(
    p: &Rules,
    input: &[u8],
    cuts: &[usize],
    takes: &[usize],
    eof: bool,
    lends: &[bool],
) -> Result<Vec<u8>, TestCaseError> {
    let mut c = Connection::new(p);
    let (mut fed, mut cut, mut take) = (0, 0, 0);
    let mut got = Vec::new();
    // Like the reactor, lend a shared reply buffer for some visits (not others).
    let mut shared = Vec::with_capacity(64);
    // Telnet answers are queued whatever the room: three bytes per byte of input at most.
    let answers = if p.telnet == Telnet::Off {
        0
    } else {
        3 * input.len()
    };
    for step in 0.. {
        let lend = lends[step % lends.len()];
        if lend {
            c.lend_output(&mut shared);
        }
        let out = c.poll_output();
        let bound = p.max_pending.max(p.prefix.len() + p.max_line + 1);
        prop_assert!(out.len() <= bound + BANNER.len() + ERR_LINE_TOO_LONG.len() + answers);
        if !out.is_empty() {
            let n = out.len().min(takes[take % takes.len()]);
            take += 1;
            got.extend_from_slice(&out[..n]);
            c.advance_output(p, n);
        } else if fed < input.len() && c.wants_read(p) {
            let end = (fed + cuts[cut % cuts.len()]).min(input.len());
            cut += 1;
            c.handle_input(p, &input[fed..end]);
            fed = end;
        } else if fed < input.len() {
            prop_assert!(false, "stalled: nothing to send and not reading");
        } else {
            c.return_output(&mut shared);
            break;
        }
        if fed < input.len() && c.wants_read(p) && take % 3 == 0 {
            let end = (fed + cuts[cut % cuts.len()]).min(input.len());
            cut += 1;
            c.handle_input(p, &input[fed..end]);
            fed = end;
        }
        c.return_output(&mut shared);
        prop_assert!(shared.is_empty());
        prop_assert_eq!(
            c.output.capacity() > 0,
            c.pending() > 0,
            "owns memory only while it has output"
        );
    }
    if eof {
        c.handle_read_closed(p);
        got.extend(drain(p, &mut c));
        prop_assert!(c.is_closed());
    }
    Ok(got)
}

/// (max_line, max_pending): backpressure on every line; roomy output with short lines
/// that break the limit; the defaults (where most reads take the tuned path all the way);
/// and both limits tiny.
fn some_limits() -> impl Strategy<Value = (usize, usize)> {
    prop_oneof![
        Just((1000, 24)),
        Just((40, 4096)),
        Just((65536, 65536)),
        Just((8, 30))
    ]
}

proptest! {
    /// Random input (`--telnet off`), cut into random segments and read by a client that
    /// takes random amounts, gives exactly the replies of one big read (with small limits,
    /// so that backpressure and backlog paths run too).
    #[test]
    fn segmentation_and_partial_writes_never_change_the_replies(
        input in proptest::collection::vec(prop_oneof![Just(b'\n'), Just(b'\r'), any::<u8>()], 0..400),
        cuts in proptest::collection::vec(1usize..40, 1..50),
        takes in proptest::collection::vec(1usize..50, 1..50),
        eof in any::<bool>(),
        lends in proptest::collection::vec(any::<bool>(), 1..50),
        limits in some_limits(),
    ) {
        let p = small(limits.0, limits.1);
        let got = segmented_run(&p, &input, &cuts, &takes, eof, &lends)?;
        prop_assert_eq!(got, expected(&p, &input, eof));
    }
}

mod send_timeout {
    use super::*;
    use crate::protocol::tick::Tick;
    use std::time::Duration;

    /// Pending output starts the send clock; progress restarts it; a client that takes
    /// nothing for the send timeout is closed, however active its input.
    #[test]
    fn output_that_makes_no_progress_closes_the_connection() {
        let p = Rules {
            send_timeout: Some(Duration::from_secs(60)),
            ..proto()
        };
        let t0 = Tick::from_millis(0);
        let (_, mut c) = run(&p, &[], false);
        c.handle_output_progress(&p, t0, false);
        assert_eq!(c.poll_timeout(), None, "nothing pending: no send clock");
        c.handle_input(&p, b"hello\n");
        c.handle_output_progress(&p, t0, false);
        let t1 = t0.after(Duration::from_secs(30));
        c.handle_activity(&p, t1); // reads do not count as progress
        c.handle_output_progress(&p, t1, false);
        assert_eq!(c.poll_timeout(), Some(t0.after(Duration::from_secs(60))));
        // Progress: the socket took a byte.
        c.advance_output(&p, 1);
        c.handle_output_progress(&p, t1, true);
        let due = t1.after(Duration::from_secs(60));
        assert_eq!(c.poll_timeout(), Some(due));
        c.handle_timeout(&p, due);
        assert!(
            !c.is_closed(),
            "not before the deadline's millisecond is over"
        );
        c.handle_timeout(&p, timeouts::past(due));
        assert!(c.is_closed());
        assert_eq!(c.close_reason(), Some(CloseReason::SendTimeout));
    }

    /// The reactor's refusal (per-address limit, memory) queues its message behind what
    /// is pending and then closes.
    #[test]
    fn a_refusal_is_queued_behind_pending_output() {
        let p = proto();
        let (_, mut c) = run(&p, &[], false);
        c.handle_input(&p, b"a\nb");
        c.refuse(ERR_OUT_OF_MEMORY, CloseReason::OutOfMemory);
        assert_eq!(
            drain(&p, &mut c),
            [&b"OK...a\n"[..], ERR_OUT_OF_MEMORY].concat()
        );
        assert_eq!(c.state(), State::Lingering);
        assert_eq!(c.close_reason(), Some(CloseReason::OutOfMemory));
    }
}

mod output_capacity {
    use super::*;

    /// A client that keeps sending while its socket takes only a fraction of the
    /// pending output each time, for 100 MB: the output buffer's capacity stays under
    /// 2 × (max-pending + one reply), and its input under max-line plus one read.
    #[test]
    fn slow_partial_writes_never_grow_the_buffers() {
        let p = small(256, 4096);
        let mut c = Connection::new(&p);
        let line: Vec<u8> = (0..99u8).map(|i| b'a' + i % 26).chain([b'\n']).collect();
        let reply = p.prefix.len() + line.len();
        let bound = 2 * (p.max_pending + reply);
        let mut fed = 0usize;
        let mut sent = 0usize;
        let mut peak = 0;
        let mut step = 0usize;
        while fed < 100 << 20 {
            while c.wants_read(&p) {
                c.handle_input(&p, &line.repeat(7));
                fed += 7 * line.len();
            }
            // The socket takes a third of what is pending, rounded by a varying amount.
            let pending = c.poll_output().len();
            step += 1;
            let n = (pending / 3 + step % 17).min(pending);
            sent += n;
            c.advance_output(&p, n);
            peak = peak.max(c.capacity());
        }
        assert!(peak < bound, "capacity {peak} >= {bound}");
        assert!(sent > 90 << 20);
    }
}

mod memory_bound {
    use super::*;
    use crate::protocol::conn::READ_SIZE;

    /// A tiny deterministic generator (xorshift), so that a failure names its seed.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
        fn byte(&mut self) -> u8 {
            match self.below(10) {
                0 => b'\n',
                1 => 0xFF,
                2 => b'\r',
                3 => 0xF4, // after an IAC: interrupt process
                _ => b'a' + self.below(26) as u8,
            }
        }
    }

    /// The documented bound on what one connection's buffers may hold, in capacity:
    /// input at most a partial line plus one read; output under twice (max-pending +
    /// the largest reply + a little for messages and telnet answers).
    fn bounds(p: &Rules) -> (usize, usize) {
        let largest_reply = 2 * (p.prefix.len() + p.max_line + 2);
        let input = p.max_line + 1 + READ_SIZE;
        let output = 2 * (p.max_pending + largest_reply + 4096);
        (input, output)
    }

    /// Random rules, random input (split anywhere, with telnet commands and 0xFF bytes),
    /// a socket that takes random amounts: at every step both buffers stay within the
    /// formula in docs/OPERATIONS.md.
    #[test]
    fn buffer_capacities_stay_within_the_documented_formula() {
        for seed in 1..=400u64 {
            let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15));
            let telnet = [Telnet::Off, Telnet::On, Telnet::Auto][rng.below(3)];
            let p = Rules {
                telnet,
                prefix: (0..rng.below(12)).map(|_| rng.byte()).collect(),
                ..small([8, 64, 300][rng.below(3)], [16, 100, 2000][rng.below(3)])
            };
            let (max_in, max_out) = bounds(&p);
            let mut c = Connection::new(&p);
            for step in 0..300 {
                match rng.below(4) {
                    0 | 1 => {
                        let most = if rng.below(8) == 0 { 5000 } else { 40 };
                        let len = rng.below(most);
                        let chunk: Vec<u8> = (0..len).map(|_| rng.byte()).collect();
                        if c.wants_read(&p) {
                            c.handle_input(&p, &chunk);
                        }
                    }
                    2 => {
                        let pending = c.poll_output().len();
                        c.advance_output(&p, rng.below(pending + 1));
                    }
                    _ if rng.below(50) == 0 => c.handle_read_closed(&p),
                    _ => {}
                }
                let (input, output) = c.capacities();
                assert!(
                    input <= max_in && output <= max_out,
                    "seed {seed} step {step}: input {input} (max {max_in}), \
                     output {output} (max {max_out})"
                );
            }
        }
    }
}

mod telnet_room {
    use super::*;

    /// Telnet escaping doubles every 0xFF of a reply; the room check counts the escaped
    /// bytes, so the queue never exceeds max(max-pending, one reply).
    #[test]
    fn escaped_replies_are_counted_at_their_escaped_length() {
        let p = Rules {
            telnet: Telnet::On,
            prefix: Vec::new(),
            ..small(1000, 100)
        };
        let (_, mut c) = run(&p, &[], false);
        // 29 literal 0xFF bytes (IAC IAC each on the wire) and a newline: 30 bytes of
        // line, 59 bytes of escaped reply.
        let mut line = [0xFF, 0xFF].repeat(29);
        line.push(b'\n');
        for _ in 0..3 {
            c.handle_input(&p, &line);
        }
        let pending = c.poll_output().len();
        assert!(
            pending <= 100,
            "{pending} bytes queued, over --max-pending 100"
        );
        assert_eq!(pending, 59, "one reply queued, the others wait for room");
        assert_eq!(drain(&p, &mut c).len(), 3 * 59);
    }
}
