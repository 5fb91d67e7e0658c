//! Fuzzes the `/metrics` request-head parser (`echod::reactor::metrics::http::parse`).
//!
//! The loop calls `parse` again on everything a scrape connection has sent after each read,
//! never with more than `MAX_HEAD` bytes, and answers the first time it returns `Some`. So
//! the answer a client gets must not depend on how its bytes were cut into reads, and each
//! answer must be the documented one. The low bit of the first input byte chooses between
//! two checks; both take up to eight read boundaries ("cuts") from the input first.
//!
//! **Any bytes** (after one of a few fixed starts such as `GET /metrics HTTP/1.1\r\n`,
//! optionally padded with a long header so that the input reaches `MAX_HEAD`). For the
//! prefixes at the cuts, in one piece, one byte short of one piece, and byte by byte for
//! short inputs:
//! - `None` comes only for a buffer shorter than `MAX_HEAD` (so the loop always has room to
//!   read into) that holds no blank line after its request line (so it really is
//!   incomplete: a head ends at its first blank line);
//! - the first `Some` is final: every longer prefix gets the same answer, and so does the
//!   deciding prefix followed by other bytes (a body, another request);
//! - so every way of cutting the stream gets the same answer;
//! - a 200, 404 or 405 comes only for a complete head, and is exactly what its request line
//!   asks for: the path (before any `?`) `/metrics` with `GET` or `HEAD` is a 200 (`HEAD`
//!   without a body), with any other method a 405; any other path a 404;
//! - a 431 comes only at `MAX_HEAD` bytes or with more than 32 header lines; a 503 never.
//!
//! **Generated heads.** The input drives a generator of valid HTTP/1.0 and 1.1 request
//! heads: empty lines before the request line (which servers skip), methods (`GET`, `HEAD`,
//! others, and any token), targets (`/metrics`, with a query of any visible characters,
//! near misses such as `/metrics/` and `/Metrics`, other paths, `*`, absolute form), CRLF
//! or bare LF line ends, 0 to 40 headers of any token name and any legal value bytes (tabs
//! and bytes over 0x7F included), and optionally one long header that takes the head
//! to around `MAX_HEAD`. The rest of the input follows as a body. Read at the cuts, in one
//! piece, and byte by byte, the answer must be the one the head asks for, or a 431 when it
//! has more than 32 headers or is longer than `MAX_HEAD`; no prefix shorter than the head
//! (and than `MAX_HEAD`) is answered. Every generated buffer then goes through the
//! any-bytes check too.
#![no_main]

use echod::reactor::metrics::http::{parse, Answer, MAX_HEAD};
use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;

/// Header lines a head may have (`http.rs` gives `httparse` this many slots).
const MAX_HEADERS: usize = 32;

/// Fixed starts for the any-bytes mode, so that mutations explore what follows them.
const STARTS: [&[u8]; 8] = [
    b"",
    b"GET /metrics HTTP/1.1\r\n",
    b"GET /metrics",
    b"HEAD /metrics?",
    b"POST /metrics HTTP/1.0\r\n",
    b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n",
    b"\r\n\nGET /metrics HTTP/1.1\n",
    b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1:9100\r\nAccept: */*\r\n",
];

fuzz_target!(|input: &[u8]| {
    let Some((&control, rest)) = input.split_first() else {
        return;
    };
    let mut u = Unstructured::new(rest);
    let Ok(cuts) = cuts(&mut u) else { return };
    if control & 1 == 0 {
        let mut buf = STARTS[usize::from(control >> 1) % STARTS.len()].to_vec();
        if control & 0x30 == 0x30 && buf.ends_with(b"\n") {
            // A long header that ends up to 255 bytes before MAX_HEAD, or just past it.
            let short = usize::from(u.arbitrary::<u8>().unwrap_or(0));
            let end = if control & 0x40 != 0 {
                MAX_HEAD + short % 4
            } else {
                MAX_HEAD - short
            };
            buf.extend_from_slice(b"X-Pad: ");
            let to = buf.len().max(end - 2);
            buf.resize(to, b'a');
            buf.extend_from_slice(b"\r\n");
        }
        buf.extend_from_slice(u.take_rest());
        check_any(&buf, &cuts);
    } else {
        let Ok(head) = generate(&mut u) else { return };
        let mut buf = head.bytes.clone();
        buf.extend_from_slice(u.take_rest());
        check_generated(&head, &buf, &cuts);
        check_any(&buf, &cuts);
    }
});

/// Up to eight read boundaries, as offsets to be taken modulo the buffer's length.
fn cuts(u: &mut Unstructured<'_>) -> Result<Vec<usize>> {
    let n = u.int_in_range(0..=8)?;
    (0..n)
        .map(|_| Ok(usize::from(u.arbitrary::<u16>()?)))
        .collect()
}

// ---------------------------------------------------------------------------------------
// What the loop sees.
// ---------------------------------------------------------------------------------------

/// The prefix lengths at which the loop calls `parse` when `len` bytes arrive cut at
/// `cuts`: each cut (modulo `len + 1`), then the whole, never past `MAX_HEAD`.
fn reads(len: usize, cuts: &[usize]) -> Vec<usize> {
    let len = len.min(MAX_HEAD);
    let mut ends: Vec<usize> = cuts.iter().map(|c| c % (len + 1)).collect();
    ends.push(len);
    ends.sort_unstable();
    ends.dedup();
    ends.retain(|&e| e > 0);
    ends
}

/// What the model knows about a buffer, worked out once (every prefix of it shares it).
struct Model<'a> {
    /// The buffer.
    buf: &'a [u8],
    /// Where its request line starts, after the empty lines servers skip.
    start: usize,
    /// Where its head ends (after its first blank line), if it does.
    end: Option<usize>,
}

impl Model<'_> {
    fn new(buf: &[u8]) -> Model<'_> {
        let start = skip_empty_lines(buf);
        let end = head_end(&buf[start..]).map(|e| start + e);
        Model { buf, start, end }
    }

    /// The head of the first `len` bytes is complete.
    fn complete(&self, len: usize) -> bool {
        self.end.is_some_and(|e| e <= len)
    }
}

/// Calls `parse` on the prefixes of `m.buf` ending at `ends` (increasing), checks each
/// answer against the model, and checks that the first `Some` is final. Returns the answer
/// the loop would send (`None`: it is still waiting for more) and the prefix that decided
/// it.
fn serve(m: &Model<'_>, ends: &[usize]) -> Option<(usize, Answer)> {
    let mut decided = None;
    for &end in ends {
        let got = parse(&m.buf[..end]);
        check_answer(m, end, got);
        match (decided, got) {
            (None, None) => {}
            (None, Some(answer)) => decided = Some((end, answer)),
            (Some((at, first)), got) => {
                assert_eq!(got, Some(first), "decided at {at}, changed at {end}");
            }
        }
    }
    decided
}

// ---------------------------------------------------------------------------------------
// Any bytes.
// ---------------------------------------------------------------------------------------

/// Checks every promise of `parse` that holds for any input.
fn check_any(buf: &[u8], cuts: &[usize]) {
    let m = Model::new(buf);
    let len = buf.len().min(MAX_HEAD);
    let at_cuts = serve(&m, &reads(len, cuts));
    // One read of everything, and one byte short of that then the last byte.
    let whole = serve(&m, &[len]);
    let answer = |d: Option<(usize, Answer)>| d.map(|(_, a)| a);
    assert_eq!(answer(at_cuts), answer(whole), "cut at {cuts:?}");
    if len > 1 {
        let last_apart = serve(&m, &[len - 1, len]);
        assert_eq!(answer(last_apart), answer(whole), "the last byte apart");
    }
    if len <= 24 {
        let each: Vec<usize> = (1..=len).collect();
        assert_eq!(answer(serve(&m, &each)), answer(whole), "byte by byte");
    }
    // Once decided, other bytes behind the deciding prefix change nothing.
    if let Some((at, first)) = at_cuts {
        if at < MAX_HEAD {
            let flipped: Vec<u8> = buf[at..].iter().take(64).map(|b| !b).collect();
            let again = if at <= 512 { buf } else { &[] };
            for tail in [&flipped[..], b"\r\n\r\n", again] {
                let mut longer = buf[..at].to_vec();
                longer.extend_from_slice(tail);
                longer.truncate(MAX_HEAD);
                assert_eq!(parse(&longer), Some(first), "another continuation");
            }
        }
    }
}

/// Checks the answer `got` of `parse` for the first `len` bytes of `m.buf`.
fn check_answer(m: &Model<'_>, len: usize, got: Option<Answer>) {
    match got {
        None => {
            assert!(len < MAX_HEAD, "None at {len} bytes");
            assert!(!m.complete(len), "None for a head that has its blank line");
        }
        Some(answer @ (Answer::Metrics { .. } | Answer::NotFound { .. })) => {
            check_routed(m, len, answer)
        }
        Some(Answer::MethodNotAllowed) => check_routed(m, len, Answer::MethodNotAllowed),
        Some(Answer::HeadTooLarge) => {
            let head = &m.buf[m.start.min(len)..len];
            let lines = memchr::memchr_iter(b'\n', head).count();
            assert!(
                len >= MAX_HEAD || lines > MAX_HEADERS,
                "431 for {len} bytes and {lines} lines"
            );
        }
        Some(Answer::BadRequest) => {}
        Some(Answer::Busy) => panic!("parse never answers Busy"),
    }
}

/// A 200, 404 or 405 for the first `len` bytes of `m.buf`: the head is complete, and the
/// answer is what its request line asks for.
fn check_routed(m: &Model<'_>, len: usize, answer: Answer) {
    assert!(m.complete(len), "{answer:?} for an incomplete head");
    let head = &m.buf[m.start..len];
    let line_end = memchr::memchr(b'\n', head).unwrap_or(head.len());
    let mut fields = head[..line_end].split(|&b| b == b' ');
    let method = fields.next().unwrap_or_default();
    let target = fields.next().unwrap_or_default();
    assert_eq!(
        answer,
        route(method, target),
        "request line {:?}",
        &head[..line_end]
    );
}

/// The documented routing: the path is the target up to any `?`; `/metrics` with `GET`
/// or `HEAD` is a 200 (`HEAD`: headers only), with another method a 405; any other path
/// a 404 (with `HEAD`: headers only).
fn route(method: &[u8], target: &[u8]) -> Answer {
    let path = target.split(|&b| b == b'?').next().unwrap_or_default();
    let head_only = method == b"HEAD";
    match (path == b"/metrics", method == b"GET" || head_only) {
        (true, true) => Answer::Metrics { head_only },
        (true, false) => Answer::MethodNotAllowed,
        (false, _) => Answer::NotFound { head_only },
    }
}

/// Where the request line starts: servers skip empty lines (CRLF or LF) before it
/// (RFC 9112, section 2.2).
fn skip_empty_lines(buf: &[u8]) -> usize {
    let mut at = 0;
    loop {
        match &buf[at..] {
            [b'\r', b'\n', ..] => at += 2,
            [b'\n', ..] => at += 1,
            _ => return at,
        }
    }
}

/// The length of the head that starts `head` (at its request line): up to and including
/// its first blank line, the first LF followed by LF or CRLF. `None`: not all there yet.
fn head_end(head: &[u8]) -> Option<usize> {
    // memchr's search, not a loop over every byte: this runs on every input, up to
    // MAX_HEAD bytes, and the fuzzer's instrumentation makes each comparison costly.
    let lf = memchr::memmem::find(head, b"\n\n").map(|i| i + 2);
    let crlf = memchr::memmem::find(head, b"\n\r\n").map(|i| i + 3);
    match (lf, crlf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

// ---------------------------------------------------------------------------------------
// Generated heads.
// ---------------------------------------------------------------------------------------

/// A generated request head and what it must be answered.
#[derive(Debug)]
struct Head {
    /// The head, blank line included.
    bytes: Vec<u8>,
    /// The documented answer.
    want: Answer,
}

/// Characters of a header name or method (`tchar`, RFC 9110 section 5.6.2).
const TCHAR: &[u8] =
    b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// `len` bytes, each one of `set`.
fn chars(u: &mut Unstructured<'_>, set: &[u8], len: usize) -> Result<Vec<u8>> {
    (0..len).map(|_| Ok(*u.choose(set)?)).collect()
}

/// Visible ASCII, which a request target may hold (and stay UTF-8).
fn visible(u: &mut Unstructured<'_>, len: usize) -> Result<Vec<u8>> {
    (0..len).map(|_| u.int_in_range(0x21..=0x7E)).collect()
}

/// A line end: CRLF, or the bare LF that servers accept.
fn eol(u: &mut Unstructured<'_>, out: &mut Vec<u8>) -> Result<()> {
    if u.ratio(1, 4)? {
        out.push(b'\n');
    } else {
        out.extend_from_slice(b"\r\n");
    }
    Ok(())
}

/// A valid request head of fuzzer-chosen parts.
fn generate(u: &mut Unstructured<'_>) -> Result<Head> {
    let mut bytes = Vec::new();
    for _ in 0..u.int_in_range(0..=2)? {
        eol(u, &mut bytes)?;
    }
    let method = match u.int_in_range(0..=7)? {
        0 | 1 => b"GET".to_vec(),
        2 => b"HEAD".to_vec(),
        3 => b"POST".to_vec(),
        4 => b"get".to_vec(),
        5 => b"GETS".to_vec(),
        _ => {
            let len = u.int_in_range(1..=8)?;
            chars(u, TCHAR, len)?
        }
    };
    let target = match u.int_in_range(0..=9)? {
        0..=2 => b"/metrics".to_vec(),
        3 | 4 => {
            let mut t = b"/metrics?".to_vec();
            let len = u.int_in_range(0..=40)?;
            t.extend(visible(u, len)?);
            t
        }
        5 => u
            .choose(&[
                &b"/metrics/"[..],
                b"/Metrics",
                b"/metric",
                b"/metricsx",
                b"//metrics",
            ])?
            .to_vec(),
        6 => u
            .choose(&[
                &b"/"[..],
                b"*",
                b"http://127.0.0.1:9100/metrics",
                b"/metrics#x",
            ])?
            .to_vec(),
        _ => {
            let mut t = b"/".to_vec();
            let len = u.int_in_range(0..=30)?;
            t.extend(visible(u, len)?);
            t
        }
    };
    bytes.extend_from_slice(&method);
    bytes.push(b' ');
    bytes.extend_from_slice(&target);
    bytes.extend_from_slice(if u.arbitrary()? {
        b" HTTP/1.1"
    } else {
        b" HTTP/1.0"
    });
    eol(u, &mut bytes)?;
    let mut headers = if u.ratio(1, 8)? {
        u.int_in_range(0..=40)?
    } else {
        u.int_in_range(0..=6)?
    };
    let long = u.ratio(1, 16)?;
    for _ in 0..headers {
        let len = u.int_in_range(1..=12)?;
        bytes.extend(chars(u, TCHAR, len)?);
        bytes.push(b':');
        for _ in 0..u.int_in_range(0..=2)? {
            bytes.push(*u.choose(b" \t")?);
        }
        for _ in 0..u.int_in_range(0..=24)? {
            bytes.push(match u.int_in_range(0..=15)? {
                0 => b'\t',
                1 => u.int_in_range(0x80..=0xFF)?,
                _ => u.int_in_range(0x20..=0x7E)?,
            });
        }
        eol(u, &mut bytes)?;
    }
    if long {
        // One more header whose value takes the head to around MAX_HEAD.
        let around = MAX_HEAD - 64 + usize::from(u.int_in_range(0..=127u8)?);
        bytes.extend_from_slice(b"X-Long: ");
        let to = bytes.len().max(around - 4);
        bytes.resize(to, b'z');
        eol(u, &mut bytes)?;
        headers += 1;
    }
    eol(u, &mut bytes)?;
    let want = if headers > MAX_HEADERS || bytes.len() > MAX_HEAD {
        Answer::HeadTooLarge
    } else {
        route(&method, &target)
    };
    Ok(Head { bytes, want })
}

/// Checks that a generated head, with `buf` its bytes and a body, is answered as it asks,
/// and not before its last byte.
fn check_generated(head: &Head, buf: &[u8], cuts: &[usize]) {
    let m = Model::new(buf);
    let len = buf.len().min(MAX_HEAD);
    let end = head.bytes.len();
    let answered_at = |ends: &[usize]| {
        let got = serve(&m, ends);
        assert_eq!(got.map(|(_, a)| a), Some(head.want), "{:?}", head.bytes);
        got.map_or(0, |(at, _)| at)
    };
    let at_cuts = answered_at(&reads(len, cuts));
    answered_at(&[len]);
    let at_end = answered_at(&reads(len, &[end - 1, end]));
    if head.want != Answer::HeadTooLarge {
        assert!(
            at_cuts >= end,
            "answered at {at_cuts}, before the head was all there"
        );
        assert_eq!(at_end, end, "not answered when the head was all there");
    } else if end > MAX_HEAD && !too_many_headers(&head.bytes) {
        assert_eq!(
            at_cuts, MAX_HEAD,
            "a head over MAX_HEAD is refused at MAX_HEAD"
        );
    }
    if end <= 40 {
        let each: Vec<usize> = (1..=len).collect();
        let at = answered_at(&each);
        if head.want != Answer::HeadTooLarge {
            assert_eq!(
                at, end,
                "byte by byte: answered at {at}, not at the head's end"
            );
        }
    }
}

/// More header lines than `parse` has slots for.
fn too_many_headers(head: &[u8]) -> bool {
    let head = &head[skip_empty_lines(head)..];
    memchr::memchr_iter(b'\n', head).count() > MAX_HEADERS + 2
}
