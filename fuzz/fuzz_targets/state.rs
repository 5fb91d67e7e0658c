//! Fuzzes the saved-state decoder a new image reads at an upgrade in place
//! (`echod::reactor::upgrade::state::load`, with the codec of `echod::protocol::state`).
//!
//! `load` runs before the new image touches a socket: it must give back the whole state or
//! an error, never a panic, never an allocation a length field asks for but the input
//! cannot hold, and never a state that breaks the connections that resume from it. The low
//! two bits of the first input byte choose among three checks.
//!
//! **Generated states** (0, 1). The input drives the loop's side of a few connections:
//! `Rules` of any mode, telnet setting and small limits (PROXY header or not, idle and send
//! timeouts or not), and per connection an address, counters and flags, and a run of the
//! events the reactor feeds a connection (input, partial writes, time passing and its
//! timeouts, the client's FIN, shutdown, the drain timeout, a socket error). Together with
//! any listener count, metrics start time, counters and serial, this is written with the
//! encoder `save` uses and read back with `load`. Then:
//! - the state comes back exactly: the same counts, counters, serial and per-connection
//!   metadata; each connection in the same state, with the same close reason, line
//!   count, pending output, buffered bytes, read interest and deadline (a deadline already
//!   past comes back as "now", which fires the same);
//! - writing the copy again gives the same bytes;
//! - the copy and the original, fed the same further events, send the same bytes and stay
//!   in the same state: the copy *is* the connection;
//! - every strict prefix of the bytes (at fuzzer-chosen cuts, one byte short, and empty)
//!   is refused with a reason.
//!
//! **Corrupted states** (2). A generated state with up to eight bytes overwritten, and cut
//! or extended: whatever `load` says must hold up (see the next check).
//!
//! **Any bytes** (3), after the magic number and version or not. An error must say why; a
//! state that loads must write back to bytes that load again to the same bytes (a fixed
//! point; the first write may differ only where a shorter list of close-reason counters
//! is filled up to this image's length), its descriptor count must add up, and each
//! connection must survive a run of events under any `Rules` (the new image's limits may
//! differ from the old one's) without a panic or a debug assertion, and never be stuck: it
//! always reads, has output to send, or is closed (a state holding a connection that waits
//! for its output to drain and has none is refused).
#![no_main]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6};
use std::time::Duration;

use echod::config::{Config, Mode, Telnet};
use echod::protocol::conn::{CloseReason, Connection, Rules, State};
use echod::protocol::state::Writer;
use echod::protocol::tick::Tick;
use echod::reactor::stats::Stats;
use echod::reactor::upgrade::state::{
    load, write_connection, write_header, Meta, Saved, MAGIC, VERSION,
};
use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    let Some((&control, rest)) = input.split_first() else {
        return;
    };
    let mut u = Unstructured::new(rest);
    match control & 3 {
        0 | 1 => {
            let _ = check_generated(&mut u);
        }
        2 => {
            let _ = check_corrupted(&mut u);
        }
        _ => {
            let mut bytes = Vec::new();
            if control & 4 != 0 {
                bytes.extend_from_slice(MAGIC);
                bytes.extend_from_slice(&VERSION.to_le_bytes());
            }
            let now = Tick::from_millis(u64::from(control >> 3));
            let Ok(rules) = rules(&mut u) else { return };
            let Ok(ops) = ops(&mut u) else { return };
            bytes.extend_from_slice(u.take_rest());
            check_any(&bytes, now, &rules, &ops);
        }
    }
});

// ---------------------------------------------------------------------------------------
// Generated states.
// ---------------------------------------------------------------------------------------

/// A state as the old image holds it, before it is written.
struct Original {
    listeners: usize,
    metrics_started: Option<u64>,
    stats: Stats,
    next_serial: u64,
    conns: Vec<(Meta, Connection)>,
    /// The rules the connections ran under.
    rules: Rules,
    /// When the state is written (and read back).
    now: Tick,
}

impl Original {
    /// Writes it with the encoder `save` uses.
    fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        write_header(
            &mut w,
            self.listeners,
            self.metrics_started,
            self.conns.len(),
            &self.stats,
            self.next_serial,
        );
        for (meta, conn) in &self.conns {
            write_connection(&mut w, meta, conn, self.now);
        }
        w.into_bytes()
    }
}

/// Writes a state read back, as the next upgrade would.
fn encode_saved(saved: &Saved, now: Tick) -> Vec<u8> {
    let mut w = Writer::new();
    write_header(
        &mut w,
        saved.listeners,
        saved.metrics_started,
        saved.conns.len(),
        &saved.stats,
        saved.next_serial,
    );
    for (meta, conn) in &saved.conns {
        write_connection(&mut w, meta, conn, now);
    }
    w.into_bytes()
}

/// Rules of any mode and telnet setting, with small limits so that every limit runs.
fn rules(u: &mut Unstructured<'_>) -> Result<Rules> {
    let mode = if u.arbitrary()? {
        Mode::Raw
    } else {
        Mode::Line
    };
    let telnet = *u.choose(&[Telnet::Off, Telnet::On, Telnet::Auto])?;
    let timeout = |u: &mut Unstructured<'_>| -> Result<Option<Duration>> {
        Ok(if u.arbitrary()? {
            Some(Duration::from_millis(u64::from(u.arbitrary::<u16>()?)))
        } else {
            None
        })
    };
    Ok(Rules::from_config(&Config {
        mode,
        telnet,
        max_line: 1 + usize::from(u.arbitrary::<u8>()? % 64),
        max_pending: 1 + usize::from(u.arbitrary::<u8>()? % 64),
        proxy_protocol: u.ratio(1, 4)?,
        idle_timeout: timeout(u)?,
        send_timeout: timeout(u)?,
        ..Config::default()
    }))
}

/// Any socket address, IPv6 with its flow info and scope id.
fn addr(u: &mut Unstructured<'_>) -> Result<SocketAddr> {
    Ok(if u.arbitrary()? {
        SocketAddr::new(
            IpAddr::V4(Ipv4Addr::from(u.arbitrary::<u32>()?)),
            u.arbitrary()?,
        )
    } else {
        SocketAddr::V6(SocketAddrV6::new(
            Ipv6Addr::from(u.arbitrary::<u128>()?),
            u.arbitrary()?,
            u.arbitrary()?,
            u.arbitrary()?,
        ))
    })
}

/// What the loop keeps about a connection: any values.
fn meta(u: &mut Unstructured<'_>) -> Result<Meta> {
    Ok(Meta {
        peer: addr(u)?,
        bytes_in: u.arbitrary()?,
        bytes_out: u.arbitrary()?,
        serial: u.arbitrary()?,
        counted: u.arbitrary()?,
        fin_sent: u.arbitrary()?,
        fin_reported: u.arbitrary()?,
        urgent: u.arbitrary()?,
    })
}

/// Counters of any values (those this target does not name stay 0).
fn stats(u: &mut Unstructured<'_>) -> Result<Stats> {
    Ok(Stats {
        accepted: u.arbitrary()?,
        refused_busy: u.arbitrary()?,
        refused_per_ip: u.arbitrary()?,
        peak_connections: u.arbitrary()?,
        out_of_fds_episodes: u.arbitrary()?,
        closed: u.arbitrary()?,
        lines: u.arbitrary()?,
        bytes_in: u.arbitrary()?,
        bytes_out: u.arbitrary()?,
        ..Stats::default()
    })
}

/// One event the reactor feeds a connection.
#[derive(Debug, Clone)]
enum Op {
    /// The socket delivered these bytes (only read while the connection wants to read).
    Input(Vec<u8>),
    /// The socket took up to this many bytes of the pending output.
    Write(usize),
    /// Time passes by this many milliseconds; a due deadline fires.
    Wait(u32),
    /// A read returned 0: the client's FIN (only read while the connection wants to read).
    ReadClosed,
    /// SIGTERM.
    Shutdown,
    /// The drain timeout of a shutdown ran out.
    DrainTimeout,
    /// The socket failed.
    Error,
}

/// Up to 24 events.
fn ops(u: &mut Unstructured<'_>) -> Result<Vec<Op>> {
    let n = u.int_in_range(0..=24)?;
    (0..n)
        .map(|_| {
            Ok(match u.int_in_range(0..=15)? {
                0..=4 => {
                    let len = u.int_in_range(0..=24)?;
                    let mut bytes = u.bytes(len)?.to_vec();
                    // Lines and telnet commands, more often than chance gives them.
                    for b in &mut bytes {
                        match *b {
                            0xE0..=0xE7 => *b = b'\n',
                            0xE8..=0xEB => *b = 0xFF,
                            _ => {}
                        }
                    }
                    Op::Input(bytes)
                }
                5..=8 => Op::Write(u.int_in_range(0..=80)?),
                9..=11 => Op::Wait(if u.arbitrary()? {
                    u32::from(u.arbitrary::<u16>()?)
                } else {
                    u.arbitrary()?
                }),
                12 => Op::ReadClosed,
                13 => Op::Shutdown,
                14 => Op::DrainTimeout,
                _ => Op::Error,
            })
        })
        .collect()
}

/// A connection being driven, with the clock it is driven by and what it sent.
struct Driven<'a> {
    conn: &'a mut Connection,
    now: Tick,
    sent: Vec<u8>,
}

impl Driven<'_> {
    /// Applies `op` the way the reactor would.
    fn apply(&mut self, p: &Rules, op: &Op) {
        let c = &mut *self.conn;
        match op {
            Op::Input(bytes) if c.wants_read(p) => {
                c.handle_input(p, bytes);
                c.handle_activity(p, self.now);
            }
            Op::Input(_) => {}
            Op::Write(k) => {
                let n = (*k).min(c.poll_output().len());
                self.sent.extend_from_slice(&c.poll_output()[..n]);
                c.advance_output(p, n);
                if n > 0 {
                    c.handle_activity(p, self.now);
                }
                c.handle_output_progress(p, self.now, n > 0);
            }
            Op::Wait(ms) => {
                self.now = Tick::from_millis(self.now.as_millis().saturating_add(u64::from(*ms)));
                if c.poll_timeout().is_some_and(|t| t <= self.now) {
                    c.handle_timeout(p, self.now);
                }
            }
            Op::ReadClosed if c.wants_read(p) => c.handle_read_closed(p),
            Op::ReadClosed => {}
            Op::Shutdown => c.handle_shutdown(p),
            Op::DrainTimeout => c.handle_drain_timeout(),
            Op::Error => c.handle_error(),
        }
    }
}

/// Runs `ops` on `conn` from `now`; returns what it sent. A closed connection is done.
fn drive(conn: &mut Connection, p: &Rules, now: Tick, ops: &[Op]) -> Vec<u8> {
    let mut d = Driven {
        conn,
        now,
        sent: Vec::new(),
    };
    for op in ops {
        assert_movable(d.conn, p);
        if d.conn.is_closed() {
            break;
        }
        d.apply(p, op);
    }
    assert_movable(d.conn, p);
    d.sent
}

/// A connection the reactor holds can always move: it reads, has output to send (which
/// moves it on), or is closed. One that cannot would hold its slot until a timeout.
fn assert_movable(c: &Connection, p: &Rules) {
    assert!(
        c.is_closed() || !c.poll_output().is_empty() || c.wants_read(p),
        "a connection that can never move again: {:?}",
        c.state()
    );
}

/// What can be seen of a connection from outside. Deadlines are taken as no earlier than
/// `since` (the time of the save), because one already past comes back as "now".
#[derive(Debug, PartialEq, Eq)]
struct Seen {
    state: State,
    reason: Option<CloseReason>,
    lines: u64,
    peer_closed: bool,
    output: Vec<u8>,
    buffered: usize,
    timeout: Option<Tick>,
    wants_read: bool,
}

fn seen(c: &Connection, p: &Rules, since: Tick) -> Seen {
    Seen {
        state: c.state(),
        reason: c.close_reason(),
        lines: c.lines(),
        peer_closed: c.peer_closed(),
        output: c.poll_output().to_vec(),
        buffered: c.buffered(),
        timeout: c.poll_timeout().map(|t| t.max(since)),
        wants_read: c.wants_read(p),
    }
}

/// A state of fuzzer-chosen connections and values.
fn generate(u: &mut Unstructured<'_>) -> Result<Original> {
    let rules = rules(u)?;
    let start = Tick::from_millis(u64::from(u.arbitrary::<u32>()?));
    let listeners = if u.ratio(1, 8)? {
        u.arbitrary::<u32>()? as usize
    } else {
        u.int_in_range(0..=4)?
    };
    let metrics_started = u.arbitrary()?;
    let stats = stats(u)?;
    let next_serial = u.arbitrary()?;
    let mut now = start;
    let mut conns = Vec::new();
    for _ in 0..u.int_in_range(0..=3)? {
        let meta = meta(u)?;
        let mut conn = Connection::new(&rules);
        conn.handle_activity(&rules, now);
        let ops = ops(u)?;
        let mut d = Driven {
            conn: &mut conn,
            now,
            sent: Vec::new(),
        };
        for op in &ops {
            if d.conn.is_closed() {
                break;
            }
            d.apply(&rules, op);
        }
        now = now.max(d.now);
        conns.push((meta, conn));
    }
    Ok(Original {
        listeners,
        metrics_started,
        stats,
        next_serial,
        conns,
        rules,
        now,
    })
}

/// Round trip, equivalence, and refused prefixes of a generated state.
fn check_generated(u: &mut Unstructured<'_>) -> Result<()> {
    let mut original = generate(u)?;
    let (p, now) = (original.rules.clone(), original.now);
    let bytes = original.encode();
    let mut saved = match load(&bytes, now) {
        Ok(saved) => saved,
        Err(e) => panic!("a state just written does not load: {e}"),
    };
    assert_eq!(saved.listeners, original.listeners);
    assert_eq!(saved.metrics_started, original.metrics_started);
    assert_eq!(saved.stats, original.stats);
    assert_eq!(saved.next_serial, original.next_serial);
    assert_eq!(saved.conns.len(), original.conns.len());
    assert_eq!(
        saved.descriptors(),
        original.listeners + usize::from(original.metrics_started.is_some()) + original.conns.len()
    );
    for ((meta, conn), (copy_meta, copy)) in original.conns.iter().zip(&saved.conns) {
        assert_eq!(meta, copy_meta);
        assert_eq!(
            seen(conn, &p, now),
            seen(copy, &p, now),
            "straight after loading"
        );
    }
    assert_eq!(
        encode_saved(&saved, now),
        bytes,
        "written again, the copy differs"
    );

    // Every strict prefix is refused, with a reason.
    let mut cuts = vec![0, bytes.len() - 1];
    for _ in 0..u.int_in_range(0..=6)? {
        cuts.push(usize::from(u.arbitrary::<u16>()?) % bytes.len());
    }
    for cut in cuts {
        match load(&bytes[..cut], now) {
            Ok(_) => panic!("a prefix of {cut} of {} bytes loads", bytes.len()),
            Err(e) => assert!(!e.0.is_empty(), "an error without a reason"),
        }
    }

    // The copy behaves as the original: the same events, the same bytes out.
    let more = ops(u)?;
    for ((_, conn), (_, copy)) in original.conns.iter_mut().zip(&mut saved.conns) {
        let mut a = Driven {
            conn,
            now,
            sent: Vec::new(),
        };
        let mut b = Driven {
            conn: copy,
            now,
            sent: Vec::new(),
        };
        for op in &more {
            if a.conn.is_closed() {
                break;
            }
            a.apply(&p, op);
            b.apply(&p, op);
            assert_eq!(a.sent, b.sent, "after {op:?}");
            assert_eq!(seen(a.conn, &p, now), seen(b.conn, &p, now), "after {op:?}");
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Corrupted states and any bytes.
// ---------------------------------------------------------------------------------------

/// A generated state, damaged.
fn check_corrupted(u: &mut Unstructured<'_>) -> Result<()> {
    let original = generate(u)?;
    let mut bytes = original.encode();
    for _ in 0..u.int_in_range(1..=8)? {
        let at = usize::from(u.arbitrary::<u16>()?) % bytes.len();
        bytes[at] = u.arbitrary()?;
    }
    match u.int_in_range(0..=3)? {
        0 => bytes.truncate(usize::from(u.arbitrary::<u16>()?) % (bytes.len() + 1)),
        1 => {
            let n = u.int_in_range(1..=8)?;
            bytes.extend_from_slice(u.bytes(n)?);
        }
        _ => {}
    }
    let rules = rules(u)?;
    let ops = ops(u)?;
    check_any(&bytes, original.now, &rules, &ops);
    Ok(())
}

/// Whatever `load` makes of `bytes` holds up.
fn check_any(bytes: &[u8], now: Tick, p: &Rules, ops: &[Op]) {
    let mut saved = match load(bytes, now) {
        Ok(saved) => saved,
        Err(e) => {
            assert!(!e.0.is_empty(), "an error without a reason");
            assert!(e.to_string().starts_with("malformed saved state: "));
            return;
        }
    };
    assert_eq!(
        saved.descriptors(),
        saved.listeners + usize::from(saved.metrics_started.is_some()) + saved.conns.len()
    );
    // No length field made us hold more than the input: every connection takes bytes.
    assert!(
        saved.conns.len() <= bytes.len() / 40,
        "{} connections",
        saved.conns.len()
    );
    let again = encode_saved(&saved, now);
    let reread = match load(&again, now) {
        Ok(reread) => reread,
        Err(e) => panic!("a loaded state, written again, does not load: {e}"),
    };
    assert_eq!(encode_saved(&reread, now), again, "not a fixed point");
    for (_, conn) in &mut saved.conns {
        drive(conn, p, now, ops);
    }
}
