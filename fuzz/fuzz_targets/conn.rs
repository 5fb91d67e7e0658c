//! Fuzzes the connection state machine: arbitrary bytes, arbitrary segmentation, arbitrary
//! partial writes, in line and raw modes with `--telnet` off, on and auto, with small limits
//! so that every limit path runs. Checks the invariants the protocol promises:
//! - the output is exactly banner + prefix+line per complete line (+ the fragment on EOF),
//!   or that up to the first overlong line followed by `ERR line too long` (line/raw mode
//!   with telnet off, and with telnet auto while the input holds no telnet command);
//! - the pending output never exceeds `max(max_pending, one reply)` (plus the telnet answers
//!   and the error message, which are queued whatever the room);
//! - the input buffer never exceeds `max_line` + one segment;
//! - the machine never stalls: it always either has output, wants input, or is done.
#![no_main]

use echod::config::{Config, Mode, Telnet};
use echod::protocol::conn::{Connection, Rules, State, ERR_LINE_TOO_LONG};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() < 4 {
        return;
    }
    let (head, input) = data.split_at(4);
    let mode = if head[0] & 1 == 1 { Mode::Raw } else { Mode::Line };
    let telnet = match (head[0] >> 1) & 1 | (head[0] >> 2) & 2 {
        0 => Telnet::Off,
        1 => Telnet::On,
        _ => Telnet::Auto,
    };
    let eof = head[0] & 4 == 4;
    let p = Rules::from_config(&Config {
        mode,
        telnet,
        max_line: 1 + usize::from(head[1] % 64),
        max_pending: 1 + usize::from(head[2] % 64),
        ..Config::default()
    });
    let seed = head[3];
    let mut c = Connection::new(&p);
    let mut got = Vec::new();
    let (mut fed, mut step) = (0usize, 0usize);
    let bound = |p: &Rules| p.max_pending.max(p.prefix.len() + p.max_line + 1) + ERR_LINE_TOO_LONG.len() + p.banner.len();
    let mut answers_allowance = 0;
    // Like the reactor, lend a shared reply buffer for some visits (the seed decides).
    let mut shared = Vec::new();
    loop {
        step += 1;
        let k = usize::from(seed.wrapping_mul(step as u8).wrapping_add(step as u8)) % 17 + 1;
        let lend = (seed >> (step % 8)) & 1 == 1;
        if lend {
            c.lend_output(&mut shared);
        }
        let out_len = c.poll_output().len();
        assert!(out_len <= bound(&p) + answers_allowance, "output {out_len} over its bound");
        if out_len > 0 && (step % 3 != 0 || fed >= input.len() || !c.wants_read(&p)) {
            let n = out_len.min(k);
            got.extend_from_slice(&c.poll_output()[..n]);
            c.advance_output(&p, n);
            answers_allowance = 0;
        } else if fed < input.len() && c.wants_read(&p) {
            let end = (fed + k).min(input.len());
            c.handle_input(&p, &input[fed..end]);
            if telnet != Telnet::Off {
                answers_allowance += 3 * (end - fed);
            }
            fed = end;
            assert!(c.buffered() <= bound(&p) + answers_allowance + p.max_line + 17);
        } else if out_len == 0 {
            c.return_output(&mut shared);
            break;
        }
        c.return_output(&mut shared);
        assert!(shared.is_empty(), "the lent buffer comes back empty");
    }
    if fed < input.len() {
        // Stopped reading for good: only legitimate when closing for a reason.
        assert!(matches!(c.state(), State::Lingering | State::Closed));
    }
    if eof {
        c.handle_read_closed(&p);
        while !c.poll_output().is_empty() {
            let n = c.poll_output().len();
            got.extend_from_slice(c.poll_output());
            c.advance_output(&p, n);
        }
        assert!(c.is_closed(), "after EOF and a full drain the connection must close");
    }
    let exact = match p.telnet {
        Telnet::Off => Some(input),
        Telnet::On => None,
        Telnet::Auto => byte_exact_part(input, eof),
    };
    if let Some(exact) = exact {
        assert_eq!(got, expected(&p, exact, eof));
    }
});

/// With `--telnet auto`, the input the connection treats as data when `input` holds no
/// telnet command (0xFF, then 0xF0..=0xFE; `FF FF` is two data bytes): all of it, but a
/// final lone 0xFF only once the input has ended. `None` when there is a command.
fn byte_exact_part(input: &[u8], eof: bool) -> Option<&[u8]> {
    let mut i = 0;
    while i < input.len() {
        if input[i] != 0xFF {
            i += 1;
            continue;
        }
        match input.get(i + 1) {
            None if !eof => return Some(&input[..i]),
            None => break,
            Some(0xF0..=0xFE) => return None,
            Some(0xFF) => i += 2,
            Some(_) => i += 1,
        }
    }
    Some(input)
}

/// The protocol's answer to `input`, computed the simple way: in one piece.
fn expected(p: &Rules, input: &[u8], eof: bool) -> Vec<u8> {
    let mut want = p.banner.clone();
    if p.mode == Mode::Raw {
        want.extend_from_slice(input);
        return want;
    }
    let mut rest = input;
    while let Some(i) = rest.iter().position(|&b| b == b'\n') {
        if i > p.max_line {
            want.extend_from_slice(ERR_LINE_TOO_LONG);
            return want;
        }
        want.extend_from_slice(&p.prefix);
        want.extend_from_slice(&rest[..=i]);
        rest = &rest[i + 1..];
    }
    if rest.len() > p.max_line {
        want.extend_from_slice(ERR_LINE_TOO_LONG);
    } else if eof && !rest.is_empty() {
        want.extend_from_slice(&p.prefix);
        want.extend_from_slice(rest);
    }
    want
}
