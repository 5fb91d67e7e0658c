//! Fuzzes the PROXY protocol header parser (`echod::protocol::proxy::parse`).
//!
//! Two independent checks, chosen by the low two bits of the first input byte:
//!
//! **Prefix monotonicity**, for any buffer (raw bytes, or raw bytes after a fixed start such as
//! `PROXY TCP4 ` or the v2 signature, so that the fuzzer spends its time past the first
//! bytes). The caller calls `parse` again after each read on everything received so far, so
//! the answers for the growing prefixes of one stream must tell one consistent story:
//! - every prefix is `Incomplete` until the first one that is not; call that one's length
//!   `n`. From there on every longer prefix, and every other buffer that starts with the same
//!   `n` bytes, gets exactly the same answer: a header once `Done` stays the same `Done`
//!   (the parser never reads past the header), and a buffer once `Invalid` stays `Invalid`
//!   for the same reason (no more bytes can make it valid);
//! - a `Done` comes exactly when its last byte arrives: `len == n`;
//! - the documented limits: `Incomplete` never once the buffer holds `MAX_HEADER` bytes, a
//!   header is never longer than `MAX_HEADER`, and a v1 line (`PROXY ` …) never longer than
//!   107 bytes, so a v1 buffer is decided by its 107th byte.
//!
//! **Generated headers**: the fuzz input drives a generator of structured fields (v1 TCP4,
//! TCP6 in several text forms, UNKNOWN with ignored text; v2 PROXY or LOCAL, every defined
//! family, TLVs of fuzzer-chosen lengths), which our own serializer writes out. With the
//! fuzzer's trailing bytes appended, `parse` must return exactly the generated addresses and
//! ports (or `Unknown`) and the header's own length. The generator also builds headers just
//! over the limits (a v1 `UNKNOWN` line over 107 bytes, a v2 length over `MAX_HEADER`), which
//! must be `Invalid` at exactly the byte that crosses the limit. Each generated buffer then
//! goes through the monotonicity check as well.
#![no_main]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use echod::protocol::proxy::{parse, Parse, Source, MAX_HEADER};
use libfuzzer_sys::arbitrary::Unstructured;
use libfuzzer_sys::fuzz_target;

/// The longest v1 line the spec allows, CRLF included (proxy-protocol.txt, section 2.1).
const V1_MAX: usize = 107;

/// The v2 signature, written out from the spec (section 2.2).
const V2_SIG: [u8; 12] = [
    0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A,
];

/// Fixed starts for the raw-bytes mode, so that mutations explore what follows them.
const STARTS: [&[u8]; 8] = [
    b"",
    b"PROXY ",
    b"PROXY TCP4 ",
    b"PROXY TCP6 ",
    b"PROXY UNKNOWN",
    &V2_SIG,
    &[
        0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A, 0x21, 0x11,
    ],
    &[
        0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A, 0x21, 0x21,
    ],
];

fuzz_target!(|input: &[u8]| {
    let Some((&control, rest)) = input.split_first() else {
        return;
    };
    if control & 3 < 2 {
        let mut buf = STARTS[usize::from(control >> 2) % STARTS.len()].to_vec();
        buf.extend_from_slice(rest);
        check_monotonic(&buf, rest);
    } else {
        let mut u = Unstructured::new(rest);
        let generated = generate(&mut u);
        let mut buf = generated.header.clone();
        let trailing = u.take_rest();
        buf.extend_from_slice(trailing);
        check_generated(&generated, &buf);
        check_monotonic(&buf, trailing);
    }
});

// ---------------------------------------------------------------------------------------
// Prefix monotonicity.
// ---------------------------------------------------------------------------------------

/// Checks the consistency of `parse` over every prefix of `buf`, and over buffers that share
/// its deciding prefix but continue with other bytes (built from `other`).
fn check_monotonic(buf: &[u8], other: &[u8]) {
    let mut decided: Option<(usize, Parse)> = None;
    for n in 0..=buf.len() {
        let got = parse(&buf[..n]);
        check_limits(&buf[..n], got);
        match decided {
            None if got == Parse::Incomplete => {}
            None => decided = Some((n, got)),
            Some((at, first)) => assert_eq!(got, first, "decided at {at}, changed at {n}"),
        }
    }
    let Some((n, first)) = decided else { return };
    if let Parse::Done { len, .. } = first {
        assert_eq!(
            len, n,
            "a header is Done exactly when its last byte arrives"
        );
    }
    // Other continuations of the deciding prefix: the bytes complemented, the input again
    // (a second header right behind the first), and a bare CRLF.
    let flipped: Vec<u8> = other.iter().map(|b| !b).collect();
    for tail in [&flipped[..], other, b"\r\n", buf] {
        let mut longer = buf[..n].to_vec();
        longer.extend_from_slice(tail);
        assert_eq!(
            parse(&longer),
            first,
            "another continuation changed the answer"
        );
    }
}

/// The limits the parser documents, for one buffer and its answer.
fn check_limits(buf: &[u8], got: Parse) {
    let v1 = buf.starts_with(b"PROXY ");
    match got {
        Parse::Incomplete => {
            assert!(buf.len() < MAX_HEADER, "Incomplete at {} bytes", buf.len());
            assert!(
                !v1 || buf.len() < V1_MAX,
                "v1 Incomplete at {} bytes",
                buf.len()
            );
        }
        Parse::Done { len, .. } => {
            assert!(len <= buf.len() && len <= MAX_HEADER, "len {len}");
            assert!(!v1 || len <= V1_MAX, "v1 header of {len} bytes");
            if v1 {
                assert_eq!(&buf[len - 2..len], b"\r\n", "a v1 header ends with CRLF");
            } else {
                assert!(
                    buf.starts_with(&V2_SIG) && len >= 16,
                    "a v2 header has 16 fixed bytes"
                );
            }
        }
        Parse::Invalid(reason) => assert!(!reason.is_empty(), "an Invalid says why"),
    }
}

// ---------------------------------------------------------------------------------------
// The generator and its serializer.
// ---------------------------------------------------------------------------------------

/// A header the generator built, and what `parse` must say about it.
struct Generated {
    /// The serialized header.
    header: Vec<u8>,
    /// The expected answer for `header` followed by anything.
    want: Want,
}

/// What `parse` must answer for a generated header.
enum Want {
    /// `Done` with this source and `len == header.len()`.
    Done(Source),
    /// `Invalid`, decided exactly when the buffer reaches this many bytes.
    InvalidAt(usize),
}

/// Checks `parse` on the generated header followed by trailing bytes (`buf`).
fn check_generated(generated: &Generated, buf: &[u8]) {
    let got = parse(buf);
    match generated.want {
        Want::Done(source) => {
            let want = Parse::Done {
                source,
                len: generated.header.len(),
            };
            assert_eq!(got, want, "generated header {:02X?}", generated.header);
        }
        Want::InvalidAt(at) => {
            assert!(matches!(got, Parse::Invalid(_)), "over the limit: {got:?}");
            assert_eq!(parse(&buf[..at - 1]), Parse::Incomplete, "before the limit");
            assert!(
                matches!(parse(&buf[..at]), Parse::Invalid(_)),
                "at the limit"
            );
        }
    }
}

/// Builds a header from the fuzzer's fields. Once the input runs out, every field reads as
/// zero, which still gives a valid header.
fn generate(u: &mut Unstructured<'_>) -> Generated {
    match byte(u) % 8 {
        0 => v1_tcp4(u),
        1 | 2 => v1_tcp6(u),
        3 => v1_unknown(u),
        7 => v2_too_long(u),
        _ => v2(u),
    }
}

/// The next fuzzer byte (zero once the input runs out).
fn byte(u: &mut Unstructured<'_>) -> u8 {
    u.arbitrary().unwrap_or_default()
}

/// The next fuzzer `u16` (zero once the input runs out).
fn word(u: &mut Unstructured<'_>) -> u16 {
    u.arbitrary().unwrap_or_default()
}

/// `PROXY TCP4 <client> <server> <client port> <server port>\r\n`.
fn v1_tcp4(u: &mut Unstructured<'_>) -> Generated {
    let client = SocketAddr::new(Ipv4Addr::from(quad(u)).into(), word(u));
    let server = SocketAddr::new(Ipv4Addr::from(quad(u)).into(), word(u));
    let text = |a: SocketAddr| match a.ip() {
        IpAddr::V4(ip) => dotted(ip.octets()),
        IpAddr::V6(_) => unreachable!("built as IPv4"),
    };
    v1_line("TCP4", text(client), text(server), client, server)
}

/// `PROXY TCP6 …`, the addresses written in a text form the fuzzer picks.
fn v1_tcp6(u: &mut Unstructured<'_>) -> Generated {
    let (client_groups, client_text) = ipv6_text(u);
    let (server_groups, server_text) = ipv6_text(u);
    let client = SocketAddr::new(Ipv6Addr::from(client_groups).into(), word(u));
    let server = SocketAddr::new(Ipv6Addr::from(server_groups).into(), word(u));
    v1_line("TCP6", client_text, server_text, client, server)
}

/// Writes a v1 TCP line: ports in plain decimal, fields separated by one space. The spec's
/// 107 bytes fit the longest canonical line, but not two 45-character addresses (4-digit
/// groups and a dotted tail, which no `inet_ntop` writes): a longer line must be refused
/// when its 107th byte arrives without the CRLF.
fn v1_line(
    protocol: &str,
    client_text: String,
    server_text: String,
    client: SocketAddr,
    server: SocketAddr,
) -> Generated {
    let line = format!(
        "PROXY {protocol} {client_text} {server_text} {} {}\r\n",
        client.port(),
        server.port()
    );
    let want = if line.len() <= V1_MAX {
        Want::Done(Source::Tcp { client, server })
    } else {
        Want::InvalidAt(V1_MAX)
    };
    Generated {
        header: line.into_bytes(),
        want,
    }
}

/// Four octets for an IPv4 address.
fn quad(u: &mut Unstructured<'_>) -> [u8; 4] {
    [byte(u), byte(u), byte(u), byte(u)]
}

/// An IPv4 address in dotted decimal, without leading zeros (the spec's only form).
fn dotted(octets: [u8; 4]) -> String {
    let parts: Vec<String> = octets.iter().map(|o| o.to_string()).collect();
    parts.join(".")
}

/// An IPv6 address (its eight groups) and a text for it. A flags byte picks the form: each
/// group zero or fuzzer-chosen (so that runs of zeros occur), 4-digit padded groups or not,
/// upper or lower case, the longest zero run written as `::` or not, and the last 32 bits as
/// a dotted quad or not (as `inet_ntop` writes mapped addresses).
fn ipv6_text(u: &mut Unstructured<'_>) -> ([u16; 8], String) {
    let zeros = byte(u);
    let flags = byte(u);
    let mut groups = [0u16; 8];
    for (i, group) in groups.iter_mut().enumerate() {
        if zeros >> i & 1 == 0 {
            *group = word(u);
        }
    }
    let (pad, upper, compress, tail) = (
        flags & 1 != 0,
        flags & 2 != 0,
        flags & 4 != 0,
        flags & 8 != 0,
    );
    let hex = |g: u16| match (pad, upper) {
        (true, true) => format!("{g:04X}"),
        (true, false) => format!("{g:04x}"),
        (false, true) => format!("{g:X}"),
        (false, false) => format!("{g:x}"),
    };
    let hex_groups = if tail { 6 } else { 8 };
    let mut items: Vec<String> = groups[..hex_groups].iter().map(|&g| hex(g)).collect();
    if tail {
        let [a, b] = groups[6].to_be_bytes();
        let [c, d] = groups[7].to_be_bytes();
        items.push(dotted([a, b, c, d]));
    }
    let text = match longest_zero_run(&groups[..hex_groups]) {
        Some((start, end)) if compress => {
            format!("{}::{}", items[..start].join(":"), items[end..].join(":"))
        }
        _ => items.join(":"),
    };
    (groups, text)
}

/// The first longest run of zero groups, as `start..end`, if there is one.
fn longest_zero_run(groups: &[u16]) -> Option<(usize, usize)> {
    let mut best: Option<(usize, usize)> = None;
    let mut start = None;
    for i in 0..=groups.len() {
        match (groups.get(i), start) {
            (Some(0), None) => start = Some(i),
            (Some(0), Some(_)) => {}
            (_, Some(s)) => {
                if best.is_none_or(|(bs, be)| i - s > be - bs) {
                    best = Some((s, i));
                }
                start = None;
            }
            (_, None) => {}
        }
    }
    best
}

/// `PROXY UNKNOWN`, optionally followed by a space and text the receiver must ignore (any
/// bytes but a CRLF pair, a lone CR or LF included), then CRLF. The text may push the line
/// past 107 bytes: then it must be refused when the 107th byte arrives without a CRLF.
fn v1_unknown(u: &mut Unstructured<'_>) -> Generated {
    let mut line = b"PROXY UNKNOWN".to_vec();
    let extra = usize::from(byte(u));
    if extra > 0 {
        line.push(b' ');
        let text = u.bytes(extra.min(u.len())).unwrap_or_default();
        for &b in text {
            // Break every CRLF pair: the first CRLF ends the line.
            let b = if b == b'\n' && line.last() == Some(&b'\r') {
                b'x'
            } else {
                b
            };
            line.push(b);
        }
    }
    line.extend_from_slice(b"\r\n");
    let want = if line.len() <= V1_MAX {
        Want::Done(Source::Unknown)
    } else {
        Want::InvalidAt(V1_MAX)
    };
    Generated { header: line, want }
}

/// A v2 header: PROXY or LOCAL, a family, its address block, then TLVs, all within
/// `MAX_HEADER`.
fn v2(u: &mut Unstructured<'_>) -> Generated {
    const FAMILIES: [u8; 7] = [0x00, 0x11, 0x21, 0x12, 0x22, 0x31, 0x32];
    let choice = byte(u);
    let local = choice & 0x80 != 0;
    // LOCAL: the receiver ignores the family byte, so any value goes.
    let family = if local {
        byte(u)
    } else {
        FAMILIES[usize::from(choice) % FAMILIES.len()]
    };
    let mut block = Vec::new();
    let mut source = Source::Unknown;
    match (local, family) {
        (false, 0x11) => {
            let (a, b) = (quad(u), quad(u));
            let (pa, pb) = (word(u), word(u));
            block.extend(a);
            block.extend(b);
            block.extend(pa.to_be_bytes());
            block.extend(pb.to_be_bytes());
            source = Source::Tcp {
                client: SocketAddr::new(Ipv4Addr::from(a).into(), pa),
                server: SocketAddr::new(Ipv4Addr::from(b).into(), pb),
            };
        }
        (false, 0x21) => {
            let mut a = [0u8; 16];
            let mut b = [0u8; 16];
            a.iter_mut().chain(b.iter_mut()).for_each(|x| *x = byte(u));
            let (pa, pb) = (word(u), word(u));
            block.extend(a);
            block.extend(b);
            block.extend(pa.to_be_bytes());
            block.extend(pb.to_be_bytes());
            source = Source::Tcp {
                client: SocketAddr::new(Ipv6Addr::from(a).into(), pa),
                server: SocketAddr::new(Ipv6Addr::from(b).into(), pb),
            };
        }
        // Families reported as Unknown still need their whole address block: UDP over
        // IPv4 12 bytes, UDP over IPv6 36, UNIX 216, UNSPEC none; LOCAL none.
        (false, 0x12) => block.resize(12, byte(u)),
        (false, 0x22) => block.resize(36, byte(u)),
        (false, 0x31 | 0x32) => block.resize(216, byte(u)),
        _ => {}
    }
    push_tlvs(u, &mut block);
    let mut header = V2_SIG.to_vec();
    header.push(if local { 0x20 } else { 0x21 });
    header.push(family);
    let len = u16::try_from(block.len()).expect("the block is kept under MAX_HEADER");
    header.extend(len.to_be_bytes());
    header.extend(block);
    Generated {
        header,
        want: Want::Done(source),
    }
}

/// Appends TLVs (type, 2-byte big-endian length, value) of fuzzer-chosen types and lengths,
/// as many as the fuzzer asks for and `MAX_HEADER` leaves room for. The last one may be cut
/// to fill the header to exactly `MAX_HEADER`, the largest size accepted.
fn push_tlvs(u: &mut Unstructured<'_>, block: &mut Vec<u8>) {
    let room = MAX_HEADER - 16;
    for _ in 0..byte(u) % 8 {
        if block.len() + 3 > room {
            break;
        }
        let kind = byte(u);
        let len = usize::from(word(u)).min(room - block.len() - 3);
        block.push(kind);
        block.extend(u16::try_from(len).expect("under MAX_HEADER").to_be_bytes());
        let fill = byte(u);
        block.extend(std::iter::repeat_n(fill, len));
    }
}

/// A v2 header whose length field announces more than `MAX_HEADER` allows: refused as soon
/// as the length's second byte (the 16th) arrives.
fn v2_too_long(u: &mut Unstructured<'_>) -> Generated {
    let over = u16::try_from(MAX_HEADER - 16 + 1).expect("fits");
    let len = over.saturating_add(word(u) % (u16::MAX - over + 1));
    let mut header = V2_SIG.to_vec();
    header.push(if byte(u) & 1 == 0 { 0x20 } else { 0x21 });
    header.push(0x11);
    header.extend(len.to_be_bytes());
    Generated {
        header,
        want: Want::InvalidAt(16),
    }
}
