//! A connection saved and loaded is the same connection: every state the unit tests
//! reach, saved at any point, behaves afterwards exactly as the original does.

use super::*;
use crate::config::{Mode, Telnet};
use crate::protocol::conn::Rules;
use proptest::prelude::*;

/// One thing that can happen to a connection.
#[derive(Debug, Clone, Copy)]
enum Step {
    Input(&'static [u8]),
    ReadClosed,
    Shutdown,
    /// The clock says this tick (handle_timeout, after the activity of `Active`).
    Timeout(u64),
    Active(u64),
    FinSent(u64),
    Progress(u64),
    DrainTimeout,
    Error,
    Refuse,
    SendAll,
    SendOne,
}

/// Steps chosen to reach every state and limit with the small rules below (the same
/// inputs `tests/docs.rs` explores the state diagram with, a read that ends in an IAC
/// that may start a command, and the clock).
const STEPS: [Step; 20] = [
    Step::Input(b"hi\n"),
    Step::Input(b"frag"),
    Step::Input(b"a line that is far too long\n"),
    Step::Input(b"aaaaaa\nbbbbbb\ncccccc\ndddddd\n"),
    Step::Input(b"PROXY TCP4 192.0.2.1 198.51.100.7 56324 8888\r\nhi\n"),
    Step::Input(b"PROXY UNKNOWN\r\nhi\n"),
    Step::Input(b"GET / HTTP/1.0\r\n"),
    Step::Input(b"x\xff\xf4\xff\xfd\x06\xff\xfb\x01y\xff"),
    Step::Input(b"ab\xff"),
    Step::ReadClosed,
    Step::Shutdown,
    Step::Timeout(400_000),
    Step::Active(12_000),
    Step::FinSent(14_000),
    Step::Progress(16_000),
    Step::DrainTimeout,
    Step::Error,
    Step::Refuse,
    Step::SendAll,
    Step::SendOne,
];

fn apply(c: &mut Connection, p: &Rules, step: Step) {
    match step {
        Step::Input(bytes) => c.handle_input(p, bytes),
        Step::ReadClosed => c.handle_read_closed(p),
        Step::Shutdown => c.handle_shutdown(p),
        Step::Timeout(t) => c.handle_timeout(p, Tick::from_millis(t)),
        Step::Active(t) => c.handle_activity(p, Tick::from_millis(t)),
        Step::FinSent(t) => c.handle_fin_sent(p, Tick::from_millis(t)),
        Step::Progress(t) => c.handle_output_progress(p, Tick::from_millis(t), false),
        Step::DrainTimeout => c.handle_drain_timeout(),
        Step::Error => c.handle_error(),
        Step::Refuse => c.refuse(b"ERR go away\n", CloseReason::OutOfMemory),
        Step::SendAll => {
            let n = c.poll_output().len();
            c.advance_output(p, n);
        }
        Step::SendOne => {
            if !c.poll_output().is_empty() {
                c.advance_output(p, 1);
            }
        }
    }
}

/// The rules the explorer runs under: small limits, so that few steps reach them; every
/// `--telnet` mode (the default is `auto`).
fn protocols() -> Vec<Rules> {
    let small = Rules {
        max_line: 8,
        max_pending: 16,
        ..Rules::default()
    };
    assert_eq!(small.telnet, Telnet::Auto);
    vec![
        small.clone(),
        Rules {
            telnet: Telnet::Off,
            ..small.clone()
        },
        Rules {
            proxy_protocol: true,
            ..small.clone()
        },
        Rules {
            mode: Mode::Raw,
            banner: Vec::new(),
            prefix: Vec::new(),
            telnet: Telnet::Off,
            ..small.clone()
        },
        Rules {
            telnet: Telnet::On,
            ..small
        },
    ]
}

/// `c` saved at `now` and loaded at `then`: the new loop's clock reads differently.
fn round_trip(c: &Connection, now: Tick, then: Tick) -> Connection {
    let mut w = Writer::new();
    c.save(&mut w, now);
    let bytes = w.into_bytes();
    let mut r = Reader::new(&bytes);
    let copy = Connection::load(&mut r, then).expect("a saved connection loads");
    r.finish().expect("nothing left over");
    copy
}

/// Everything the reactor can see of a connection. Deadlines are shown relative to
/// the clock of the loop the connection lives in.
fn observe(c: &Connection, p: &Rules, clock: u64) -> String {
    let timeout = c
        .poll_timeout()
        .map(|t| t.as_millis().saturating_sub(clock));
    format!(
        "{:?} {:?} out={:?} lines={} buffered={} wants_read={} peer_closed={} timeout={:?}",
        c.state(),
        c.close_reason(),
        c.poll_output(),
        c.lines(),
        c.buffered(),
        c.wants_read(p),
        c.peer_closed(),
        timeout,
    )
}

/// Plays `prefix`, saves and loads; then plays `rest` on both and compares what the
/// reactor would see after every step. The copy's clock runs 7 s behind the
/// original's, as a new loop's clock starts from zero.
fn check(p: &Rules, prefix: &[Step], rest: &[Step]) {
    const SHIFT: u64 = 7_000;
    let now = Tick::from_millis(10_000);
    let mut original = Connection::new(p);
    original.handle_activity(p, Tick::from_millis(0));
    for &s in prefix {
        apply(&mut original, p, s);
    }
    let mut copy = round_trip(&original, now, Tick::from_millis(now.as_millis() - SHIFT));
    let context = || format!("after {prefix:?}, then {rest:?}");
    assert_eq!(
        observe(&original, p, now.as_millis()),
        observe(&copy, p, now.as_millis() - SHIFT),
        "{}",
        context()
    );
    for &s in rest {
        apply(&mut original, p, s);
        apply(&mut copy, p, shifted(s, SHIFT));
        assert_eq!(
            observe(&original, p, now.as_millis()),
            observe(&copy, p, now.as_millis() - SHIFT),
            "{}",
            context()
        );
    }
    assert_eq!(
        original.take_proxied_source(),
        copy.take_proxied_source(),
        "{}",
        context()
    );
}

/// A step as the copy sees it: the same moment, on a clock `shift` behind.
fn shifted(step: Step, shift: u64) -> Step {
    match step {
        Step::Timeout(t) => Step::Timeout(t.saturating_sub(shift)),
        Step::Active(t) => Step::Active(t.saturating_sub(shift)),
        Step::FinSent(t) => Step::FinSent(t.saturating_sub(shift)),
        Step::Progress(t) => Step::Progress(t.saturating_sub(shift)),
        other => other,
    }
}

/// Every sequence of up to three steps, saved at the end; then what follows the save
/// is played on both (every single step, up to two steps deep; two long runs at three).
#[test]
fn every_reachable_state_survives_a_save() {
    for p in protocols() {
        let mut prefix = Vec::new();
        explore(&p, 3, &mut prefix);
    }
}

/// After the save: more input (a line, a telnet command, a fragment), then the end.
const GO_ON: [Step; 8] = [
    Step::SendOne,
    Step::Input(b"hi\n"),
    Step::Input(b"x\xff\xf4\xff\xfd\x06\xff\xfb\x01y\xff"),
    Step::SendAll,
    Step::Input(b"frag"),
    Step::Active(12_000),
    Step::ReadClosed,
    Step::SendAll,
];

/// After the save: the clock runs out.
const TIME_OUT: [Step; 5] = [
    Step::Progress(16_000),
    Step::FinSent(14_000),
    Step::Timeout(400_000),
    Step::SendAll,
    Step::Timeout(800_000),
];

fn explore(p: &Rules, depth: usize, prefix: &mut Vec<Step>) {
    check(p, prefix, &GO_ON);
    check(p, prefix, &TIME_OUT);
    if prefix.len() == depth {
        return;
    }
    for step in STEPS {
        check(
            p,
            prefix,
            &[step, Step::SendAll, Step::ReadClosed, Step::SendAll],
        );
    }
    for step in STEPS {
        prefix.push(step);
        explore(p, depth, prefix);
        prefix.pop();
    }
}

#[test]
fn a_proxied_source_not_yet_taken_survives() {
    let p = &protocols()[2];
    let mut c = Connection::new(p);
    c.handle_input(p, b"PROXY TCP6 2001:db8::1 2001:db8::2 4000 8888\r\nab");
    let mut copy = round_trip(&c, Tick::from_millis(0), Tick::from_millis(0));
    assert_eq!(copy.take_proxied_source(), c.take_proxied_source());
    assert_eq!(copy.poll_output(), c.poll_output());
}

#[test]
fn every_state_and_reason_has_a_code() {
    for code in 0..6 {
        assert_eq!(state_code(state_of(code).unwrap()), code);
    }
    assert!(state_of(6).is_err());
    for reason in CloseReason::ALL {
        assert_ne!(reason_code(reason), 0, "{reason:?}");
    }
}

/// A saved connection with a partial line, pending output, a telnet decoder in the
/// middle of a command and a PROXY source: the richest sample for the garbage tests.
fn rich_sample() -> Vec<u8> {
    let p = Rules {
        telnet: Telnet::On,
        max_pending: 4,
        ..Rules::default()
    };
    let mut c = Connection::new(&p);
    c.handle_activity(&p, Tick::from_millis(5));
    c.handle_input(&p, b"one\ntwo\nthr\xff\xfb");
    let mut w = Writer::new();
    c.save(&mut w, Tick::from_millis(5));
    w.into_bytes()
}

#[test]
fn a_truncated_connection_is_an_error() {
    let bytes = rich_sample();
    for cut in 0..bytes.len() {
        let mut r = Reader::new(&bytes[..cut]);
        assert!(
            Connection::load(&mut r, Tick::from_millis(0)).is_err(),
            "cut at {cut}"
        );
    }
}

/// A connection in `state` with lines waiting or not and no output, as bytes.
fn without_output(state: State, waiting: bool) -> Vec<u8> {
    let mut w = Writer::new();
    w.u8(state_code(state));
    w.u8(0); // No close reason.
    w.bool(false); // No FIN from the peer.
    w.bool(waiting);
    w.bytes(b"one\n");
    w.bytes(b""); // No output.
    w.u64(0);
    telnet::Filter::Off.save(&mut w);
    w.u8(0); // No PROXY source.
    w.deadline(Tick::NEVER, Tick::from_millis(0));
    w.deadline(Tick::NEVER, Tick::from_millis(0));
    w.into_bytes()
}

/// A connection waiting for its output to drain, with no output, would never move again
/// in the new image: refused, with a reason. The same with output, or in a state that
/// reads, loads.
#[test]
fn a_connection_that_could_never_move_is_refused() {
    let load = |bytes: Vec<u8>| Connection::load(&mut Reader::new(&bytes), Tick::from_millis(0));
    let never = Err(Malformed("a connection that could never move again"));
    for (state, waiting) in [
        (State::Open, true),
        (State::Finishing, false),
        (State::Finishing, true),
        (State::Flushing, false),
    ] {
        assert_eq!(
            load(without_output(state, waiting)).map(|_| ()),
            never,
            "{state}"
        );
    }
    for state in [
        State::Open,
        State::ProxyHeader,
        State::Lingering,
        State::Closed,
    ] {
        assert!(load(without_output(state, false)).is_ok(), "{state}");
    }
    // Waiting behind output is the normal case.
    let p = Rules {
        max_pending: 4,
        telnet: Telnet::Off,
        ..Rules::default()
    };
    let mut c = Connection::new(&p);
    c.handle_input(&p, b"one\ntwo\nthree\n");
    assert!(!c.wants_read(&p), "lines wait for room");
    let mut w = Writer::new();
    c.save(&mut w, Tick::from_millis(0));
    assert!(load(w.into_bytes()).is_ok());
}

proptest! {
    /// Garbage, or a saved connection with bytes overwritten, gives an error or a
    /// connection, never a panic.
    #[test]
    fn garbage_never_panics(
        junk in proptest::collection::vec(any::<u8>(), 0..256),
        flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..6),
    ) {
        let _ = Connection::load(&mut Reader::new(&junk), Tick::from_millis(0));
        let mut bytes = rich_sample();
        for (at, value) in flips {
            let at = at % bytes.len();
            bytes[at] = value;
        }
        let _ = Connection::load(&mut Reader::new(&bytes), Tick::from_millis(0));
    }
}
