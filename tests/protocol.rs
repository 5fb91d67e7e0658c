//! The wire protocol, byte for byte, against the real binary.

mod util;

use std::io::Write;
use util::*;

/// A client gets the banner first, then one `OK...` reply per line, terminator kept.
#[test]
fn banner_then_one_reply_per_line() {
    let echod = Echod::start(&[]);
    let mut s = echod.connect_greeted();
    s.write_all(b"hi\nthere\r\n\n").unwrap();
    let want = b"OK...hi\nOK...there\r\nOK...\n";
    assert_eq!(read_n(&mut s, want.len()), want);
}

/// Half-close: every line is answered, the fragment too (no newline added), then EOF.
#[test]
fn half_close_answers_the_fragment_then_closes() {
    let echod = Echod::start(&[]);
    let mut s = echod.connect_greeted();
    send_and_close(&mut s, b"one\ntwo");
    assert_eq!(read_to_end(&mut s), b"OK...one\nOK...two");
}
