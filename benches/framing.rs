//! Micro-benchmarks of the two pieces of echod that do per-byte and per-line work, with
//! no network: the framer ([`echod::protocol::fast`], the tuned path of
//! [`echod::protocol::line`]) and the connection state machine
//! ([`echod::protocol::conn::Connection`]). They catch a regression of the CPU per line without the
//! noise of sockets and a shared machine (`benches/compare/` measures the whole server).
//!
//! `cargo bench --bench framing` (all), `cargo bench --bench framing -- conn/` (a
//! subset), `cargo bench --bench framing -- --save-baseline before` then
//! `-- --baseline before` to compare two versions.
//!
//! - `framer/*`: bytes/s for a 64 KiB read (the reactor's scratch size) made of 32-byte or
//!   4 KiB lines: `scan` finds the line ends only, `scan+reply` also builds the replies,
//!   as the server does (`fast::push_replies`), and `plain-reply` builds them the plain
//!   way (`line::line_len` and `line::push_reply` per line), which is what the tuned path
//!   is measured against.
//! - `conn/*`: ns per line through [`Connection::handle_input`], then the output taken as
//!   a socket would take it (`poll_output` + `advance_output`), in a reply buffer lent
//!   and returned as the reactor does (`lend_output`/`return_output`), with the shapes of the
//!   comparison workloads: ping-pong (one line per read), 64 lines per read (the pipelined
//!   workload), a full 64 KiB read, a line split across two reads, 4 KiB lines (all with
//!   the default `--telnet auto`), and the 64-line read again with `--telnet on`;
//!   `telnet-off-*` repeat some with `--telnet off`, to show what `auto`'s look-out for
//!   telnet commands costs.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use echod::config::Telnet;
use echod::protocol::conn::{Connection, Rules, State};
use echod::protocol::{fast, line};

/// The reactor's read buffer size: the most one read hands to a connection.
const READ_SIZE: usize = 64 * 1024;

/// `count` lines of `len` bytes each, the `\n` included, with varied printable bytes.
fn lines(len: usize, count: usize) -> Vec<u8> {
    assert!(len >= 1);
    let mut buf = Vec::with_capacity(len * count);
    for i in 0..count {
        buf.extend((0..len - 1).map(|j| b'a' + ((i + j) % 26) as u8));
        buf.push(b'\n');
    }
    buf
}

fn framer(c: &mut Criterion) {
    let mut group = c.benchmark_group("framer");
    group
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    for len in [32, 4096] {
        let input = lines(len, READ_SIZE / len);
        let label = if len < 1024 {
            format!("{len}B")
        } else {
            format!("{}KiB", len / 1024)
        };
        group.throughput(Throughput::Bytes(input.len() as u64));
        group.bench_with_input(BenchmarkId::new("scan", &label), &input, |b, input| {
            b.iter(|| fast::newlines(black_box(&input[..])).count())
        });
        let mut out = Vec::with_capacity(input.len() * 2);
        group.bench_with_input(
            BenchmarkId::new("scan+reply", &label),
            &input,
            |b, input| {
                b.iter(|| {
                    out.clear();
                    let input = black_box(&input[..]);
                    let prefix = fast::Prefix::new(b"OK...");
                    let limits = fast::Limits {
                        max_line: READ_SIZE,
                        max_out: usize::MAX,
                    };
                    fast::push_replies(&mut out, &prefix, input, limits);
                    black_box(out.len())
                })
            },
        );
        group.bench_with_input(
            BenchmarkId::new("plain-reply", &label),
            &input,
            |b, input| {
                b.iter(|| {
                    out.clear();
                    let input = black_box(&input[..]);
                    let mut used = 0;
                    while let Some(len) = line::line_len(&input[used..]) {
                        line::push_reply(&mut out, b"OK...", &input[used..used + len], false);
                        used += len;
                    }
                    black_box(out.len())
                })
            },
        );
    }
    group.finish();
}

/// A connection past its banner, ready for lines.
fn open_connection(p: &Rules) -> Connection {
    let mut conn = Connection::new(p);
    let banner = conn.poll_output().len();
    conn.advance_output(p, banner);
    assert!(conn.poll_output().is_empty());
    conn
}

/// Feeds `reads` one after the other, each time taking all output as a socket that
/// always has room would, with the reply buffer lent as the reactor lends it. Returns
/// the reply bytes, so nothing is optimised away.
fn feed(conn: &mut Connection, p: &Rules, shared: &mut Vec<u8>, reads: &[&[u8]]) -> usize {
    let mut sent = 0;
    for read in reads {
        conn.lend_output(shared);
        conn.handle_input(p, black_box(read));
        // Taking output can free room for backlogged lines (a 64 KiB read of short
        // lines makes more replies than `--max-pending`): take until none is left.
        loop {
            let n = conn.poll_output().len();
            if n == 0 {
                break;
            }
            sent += n;
            conn.advance_output(p, n);
        }
        conn.return_output(shared);
    }
    sent
}

fn connection(c: &mut Criterion) {
    let mut group = c.benchmark_group("conn");
    group
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    let plain = Rules::default();
    let off = Rules {
        telnet: Telnet::Off,
        ..Rules::default()
    };
    let telnet = Rules {
        telnet: Telnet::On,
        ..Rules::default()
    };

    let one = lines(32, 1);
    let batch = lines(32, 64);
    let full = lines(32, READ_SIZE / 32);
    let long = lines(4096, READ_SIZE / 4096);
    let (head, tail) = one.split_at(16);
    let cases: [(&str, &Rules, Vec<&[u8]>, u64); 9] = [
        ("pingpong/32B", &plain, vec![&one[..]], 1),
        ("telnet-off-pingpong/32B", &off, vec![&one[..]], 1),
        ("batch64/32B", &plain, vec![&batch[..]], 64),
        ("telnet-off-batch64/32B", &off, vec![&batch[..]], 64),
        (
            "read64KiB/32B",
            &plain,
            vec![&full[..]],
            (READ_SIZE / 32) as u64,
        ),
        ("split/32B", &plain, vec![head, tail], 1),
        (
            "read64KiB/4KiB",
            &plain,
            vec![&long[..]],
            (READ_SIZE / 4096) as u64,
        ),
        (
            "telnet-off-read64KiB/4KiB",
            &off,
            vec![&long[..]],
            (READ_SIZE / 4096) as u64,
        ),
        ("telnet-batch64/32B", &telnet, vec![&batch[..]], 64),
    ];
    for (name, p, reads, count) in cases {
        group.throughput(Throughput::Elements(count));
        let mut conn = open_connection(p);
        let mut shared = Vec::new();
        let expected =
            reads.iter().map(|r| r.len()).sum::<usize>() + p.prefix.len() * count as usize;
        assert_eq!(
            feed(&mut conn, p, &mut shared, &reads),
            expected,
            "{name}: replies"
        );
        group.bench_function(name, |b| {
            b.iter(|| feed(&mut conn, p, &mut shared, &reads));
        });
        assert_eq!(conn.state(), State::Open, "{name}");
        assert_eq!(conn.buffered(), 0, "{name}: nothing left over");
    }
    group.finish();
}

criterion_group!(benches, framer, connection);
criterion_main!(benches);
