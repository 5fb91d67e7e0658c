//! The tuned framing path: the replies of [`line`](mod@line), built faster on the reads a
//! busy server sees most (many short lines at once).
//!
//! [`line`](mod@line) is the definition: find a line's end with `memchr`, append the
//! prefix and the line. Per line that is one search call and two copies of a length known
//! only at run time (two `memcpy` calls). On a 32-byte line the set-up of those calls
//! costs more than the work they do, and a 64 KiB read of such lines makes 2048 of each.
//! This module does the same work with two tricks:
//!
//! - **A block scan.** [`newlines`] looks at 64 bytes at a time and turns them into a bit
//!   mask of their `\n` bytes (four 16-byte vector compares); every line end in the block is
//!   then a `trailing_zeros` away. A block without a `\n` means a long line, and `memchr`
//!   jumps to its end.
//! - **Fixed-size copies.** A prefix of at most 16 bytes and a line of at most 64 are copied
//!   as exactly 16 and 64 bytes (register moves, no `memcpy` call) into room made once per
//!   read, and the write position moves on by their real lengths.
//!
//! [`push_replies`] answers lines only while that is all there is to it: it stops at the
//! first line that needs a decision (longer than `max_line`, or a reply that would end past
//! `max_out`) and leaves that line to the caller's plain path. Its tests prove it equal to
//! a loop of [`line::line_len`] and [`line::push_reply`] for every input: bytes that differ
//! from their neighbours, line lengths around 16, 64 and the block size, prefixes of 0 to
//! 40 bytes, partial lines, bytes already in the output, and limits at every byte.
//!
//! What it buys: `cargo bench --bench framing -- framer/` runs this path (`scan+reply`)
//! and the plain loop (`plain-reply`) on the same 64 KiB read.

use wide::u8x16;

use crate::protocol::line::{self, NEWLINE};
use crate::waypoint;

/// The positions of every `\n` in `buf`, in order: one pass over a whole read instead
/// of one search call per line.
///
/// ```
/// let ends: Vec<usize> = echod::protocol::fast::newlines(b"a\nbc\nd").collect();
/// assert_eq!(ends, [1, 4]);
/// ```
pub fn newlines(buf: &[u8]) -> Newlines<'_> {
    Newlines {
        buf,
        base: 0,
        next: 0,
        mask: 0,
    }
}

/// How many bytes [`Newlines`] classifies at a time: one bit each in a `u64`.
const BLOCK: usize = 64;

/// The iterator behind [`newlines`].
///
/// Short lines are the common case (a person typing, a load generator's 32-byte lines),
/// and for them a search call per line costs more than the search itself. So we look at
/// the input 64 bytes at a time and turn each block into a bit mask of its `\n` bytes
/// (four 16-byte vector compares, each turned into 16 bits by one move-mask
/// instruction); every line end in the block is then a `trailing_zeros` away. When a
/// whole block has no `\n` the line is long, and `memchr` jumps to its end (vectorised,
/// several times faster than blocks on long lines).
#[derive(Debug, Clone)]
pub struct Newlines<'a> {
    /// The bytes being scanned.
    buf: &'a [u8],
    /// Where the block that `mask` describes starts.
    base: usize,
    /// Where the next block starts.
    next: usize,
    /// One bit per `\n` of the current block not yet returned (bit `i` is `base + i`).
    mask: u64,
}

impl Newlines<'_> {
    /// Moves on to the next block, which has a `\n`; false at the end of the buffer.
    /// The common case, a whole block, is inline; the rest is kept out of line so that
    /// the loop it sits in stays small. (The out-of-line parts are free functions that
    /// take values and return values: were they to borrow `self`, the iterator would have
    /// to live in memory instead of in registers.)
    #[inline]
    fn next_block(&mut self) -> bool {
        while self.mask == 0 {
            let Some(block) = self
                .buf
                .get(self.next..)
                .and_then(|rest| rest.first_chunk())
            else {
                (self.base, self.mask) = (self.next, last_block(self.buf, self.next));
                self.next = self.buf.len();
                return self.mask != 0;
            };
            self.base = self.next;
            self.mask = newline_mask(block);
            self.next += BLOCK;
            if self.mask == 0 {
                // The block has no `\n`: the line is long, so let memchr find its end and
                // start the next block there.
                match skip_long_line(self.buf, self.base) {
                    Some(next) => self.next = next,
                    None => {
                        self.next = self.buf.len();
                        return false;
                    }
                }
            }
        }
        true
    }
}

/// Where the `\n` at or after `from` is, by memchr; `None` when there is none.
#[inline(never)]
fn skip_long_line(buf: &[u8], from: usize) -> Option<usize> {
    memchr::memchr(NEWLINE, &buf[from..]).map(|end| from + end)
}

/// The mask of the `\n` bytes in the last bytes of `buf` from `start`, fewer than a
/// block (maybe none); bit `i` is `start + i`.
#[inline(never)]
fn last_block(buf: &[u8], start: usize) -> u64 {
    let len = buf.len();
    if start >= len {
        return 0;
    }
    let tail = len - start;
    match buf.last_chunk::<BLOCK>() {
        // Scan the buffer's last 64 bytes, which overlap what was scanned already, and
        // drop the bits of those: cheaper than copying the tail anywhere.
        Some(block) => newline_mask(block) >> (BLOCK - tail),
        // A buffer shorter than a block: scan a zero-padded copy.
        None => {
            let mut padded = [0; BLOCK];
            padded[..tail].copy_from_slice(&buf[start..]);
            newline_mask(&padded)
        }
    }
}

impl Iterator for Newlines<'_> {
    type Item = usize;

    #[inline]
    fn next(&mut self) -> Option<usize> {
        if self.mask == 0 && !self.next_block() {
            return None;
        }
        let bit = self.mask.trailing_zeros() as usize;
        self.mask &= self.mask - 1; // Clear the lowest set bit.
        Some(self.base + bit)
    }
}

/// Bit `i` set when `block[i]` is a `\n`.
///
/// Four 16-byte vector compares, each turned into 16 bits with one "move mask"
/// instruction (SSE2 `pmovmskb` on x86-64, the baseline every x86-64 CPU has). The
/// `wide` crate gives us these as safe functions, so echod's own code stays safe Rust; on
/// other targets it falls back to plain code with the same result.
#[inline]
fn newline_mask(block: &[u8; BLOCK]) -> u64 {
    let newline = u8x16::splat(NEWLINE);
    let mut mask = 0;
    for (k, bytes) in block.chunks_exact(16).enumerate() {
        let bytes = u8x16::new(bytes.try_into().expect("16 bytes"));
        mask |= u64::from(bytes.simd_eq(newline).to_bitmask()) << (16 * k);
    }
    mask
}

/// A reply prefix ready to be copied many times: one whose length is at most 16 bytes
/// (the default `OK...` and any sensible one) is also kept in a fixed 16-byte array, and
/// copying a fixed size compiles to register moves where a copy of a length only known at
/// run time is a call to `memcpy`. It matters because every reply starts with it.
#[derive(Debug, Clone, Copy)]
pub struct Prefix<'a> {
    /// The prefix.
    bytes: &'a [u8],
    /// The same bytes, zero-padded to 16 when they fit.
    padded: Option<[u8; 16]>,
}

impl<'a> Prefix<'a> {
    /// Prepares `bytes` for [`push_replies`].
    pub fn new(bytes: &'a [u8]) -> Prefix<'a> {
        let padded = (bytes.len() <= 16).then(|| {
            let mut padded = [0; 16];
            padded[..bytes.len()].copy_from_slice(bytes);
            padded
        });
        Prefix { bytes, padded }
    }
}

/// What [`push_replies`] answers: no line longer than `max_line`, no reply past `max_out`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The longest line answered, not counting its `\n`: a longer one stops the loop.
    pub max_line: usize,
    /// The length `out` may reach: a reply that would end beyond it stops the loop.
    pub max_out: usize,
}

/// Appends to `out` the replies to the complete lines at the start of `buf`, as
/// [`line::push_reply`] would, up to the first line over `limits.max_line` or the first
/// reply that would make `out` longer than `limits.max_out`. Returns how many bytes of
/// `buf` were answered and how many lines. What is left (a partial line, or lines from the
/// one it stopped at) is the caller's.
///
/// This is the server's inner loop: one call per read, one iteration per line. The
/// replies are written at a position held in a register rather than appended, so a reply
/// costs two fixed-size copies and no length or capacity bookkeeping in memory: `out` is
/// first lengthened (zero-filled: one `memset` per read of up to 4 KiB of replies) to hold
/// the replies, then cut back to where they end.
///
/// ```
/// use echod::protocol::fast::{push_replies, Limits, Prefix};
/// let mut out = b"x".to_vec();
/// let limits = Limits { max_line: 100, max_out: 1000 };
/// let used = push_replies(&mut out, &Prefix::new(b"OK..."), b"hi\nthere\npart", limits);
/// assert_eq!(used, (9, 2));
/// assert_eq!(out, b"xOK...hi\nOK...there\n");
/// ```
#[inline]
pub fn push_replies(
    out: &mut Vec<u8>,
    prefix: &Prefix<'_>,
    buf: &[u8],
    limits: Limits,
) -> (usize, u64) {
    waypoint("push_replies");
    // (The block scan, not `line_len`: on the short reads of a person typing, memchr's
    // set-up costs more than the scan.)
    let mut ends = newlines(buf);
    let Some(first) = ends.next().map(|end| end + 1) else {
        return (0, 0); // A partial line: nothing to answer, nothing allocated.
    };
    if first == buf.len() {
        // The read is one line: a person typing, a ping-pong client. Nothing to win
        // from the loop's set-up here, so append the one reply.
        if !fits(out.len(), prefix.bytes.len(), first, limits) {
            return (0, 0);
        }
        line::push_reply(out, prefix.bytes, buf, false);
        return (first, 1);
    }
    // The fast loop is for short lines with a short prefix, all within `max_line`; a read
    // that starts with a long line goes the plain way (memchr jumps over long lines, the
    // loop would not), on from the first line end `ends` has found.
    let short_lines_allowed = limits.max_line >= LINE_COPY - 1;
    let Some(padded) = prefix
        .padded
        .filter(|_| first <= LINE_COPY && short_lines_allowed)
    else {
        let ends = std::iter::once(first - 1).chain(ends);
        return push_plain_replies(out, prefix.bytes, buf, ends, limits);
    };
    let (mut used, mut answered) = (0, 0);
    let mut at = out.len();
    // The room is zero-filled before the loop writes into it, the only per-byte cost the
    // loop adds, so it is kept near what is written: the replies to lines at least 4 times
    // as long as the prefix, in steps of at most 4 KiB (so a long line that stops the loop
    // wastes little), plus what the fixed-size copies of one reply may write beyond its
    // end. The loop writes a reply while it starts at or before `end`, so a reply (at most
    // that much) never passes `max_out`: the loop checks no limit per line, and the last
    // replies before it go the plain way. It ends saying whether lines are left for the
    // plain way: it stopped at a long line, or came within one reply of `max_out`.
    let plain = loop {
        let Some(end) = limits
            .max_out
            .checked_sub(REPLY_COPY)
            .filter(|&end| end >= at)
        else {
            break true;
        };
        let rest = buf.len() - used;
        let end = end.min(at + (rest + rest / 4).clamp(1, ROOM_STEP));
        out.resize(end + REPLY_COPY, 0);
        let done = put_short_replies(out, at, padded, prefix.bytes.len(), &buf[used..]);
        used += done.used;
        at = done.at;
        answered += done.answered;
        if done.stop != Stop::OutOfRoom {
            break done.stop == Stop::LongLine;
        }
    };
    out.truncate(at);
    if !plain {
        return (used, answered); // What is left is a partial line.
    }
    // The lines the loop left: from the first longer than 64 bytes on, or those close to
    // `max_out`.
    let rest = &buf[used..];
    let (more, lines) = push_plain_replies(out, prefix.bytes, rest, newlines(rest), limits);
    (used + more, answered + lines)
}

/// The plain part of [`push_replies`]: appends the replies to the lines of `buf` whose
/// `\n` positions `ends` gives, in order, while they fit `limits`.
fn push_plain_replies(
    out: &mut Vec<u8>,
    prefix: &[u8],
    buf: &[u8],
    ends: impl Iterator<Item = usize>,
    limits: Limits,
) -> (usize, u64) {
    let (mut used, mut answered) = (0, 0);
    for end in ends {
        let len = end + 1 - used;
        if !fits(out.len(), prefix.len(), len, limits) {
            break;
        }
        line::push_reply(out, prefix, &buf[used..=end], false);
        used = end + 1;
        answered += 1;
    }
    (used, answered)
}

/// Whether a line of `len` bytes (its `\n` included) is within `limits`, and so is its
/// reply once appended to `out_len` bytes of output.
#[inline]
fn fits(out_len: usize, prefix_len: usize, len: usize, limits: Limits) -> bool {
    len - 1 <= limits.max_line && out_len + prefix_len + len <= limits.max_out
}

/// The fast part of [`push_replies`]: writes into `out` from `at` the replies to the
/// lines of `buf` while each is short (at most 64 bytes) and `out` has room for a reply's
/// fixed-size copies ([`REPLY_COPY`]: 16 bytes of prefix, 64 of line) where it starts. A
/// line with 64 bytes of `buf` from its start is copied as exactly 64; the last lines of
/// `buf` are copied as they are.
///
/// Everything it needs is in a register: the two buffers, the two positions, the mask of
/// line ends in the current block. No length or capacity is stored back per reply.
#[inline]
fn put_short_replies(
    out: &mut [u8],
    at: usize,
    prefix: [u8; 16],
    prefix_len: usize,
    buf: &[u8],
) -> Done {
    let (mut used, mut answered) = (0, 0);
    // The free room after the last reply, as a slice: its start moves on by each reply.
    let total = out.len();
    let mut free = out.get_mut(at..).unwrap_or_default();
    let mut base = 0;
    let stop = 'scan: {
        while base < buf.len() {
            let mut mask = match buf[base..].first_chunk::<BLOCK>() {
                Some(block) => newline_mask(block),
                None => last_block(buf, base),
            };
            if mask == 0 && buf.len() - base >= BLOCK {
                // 64 bytes without a `\n`: the line that started at or before this block
                // is longer than 64 bytes; the caller skips to its end with memchr.
                break 'scan Stop::LongLine;
            }
            while mask != 0 {
                let end = base + mask.trailing_zeros() as usize;
                let len = end + 1 - used;
                let Some(room) = free.first_chunk_mut::<REPLY_COPY>() else {
                    break 'scan Stop::OutOfRoom;
                };
                if len > LINE_COPY {
                    break 'scan Stop::LongLine;
                }
                let reply = prefix_len + len;
                room[..16].copy_from_slice(&prefix);
                match buf[used..].first_chunk::<LINE_COPY>() {
                    Some(line) => room[prefix_len..prefix_len + LINE_COPY].copy_from_slice(line),
                    None => copy_exact(&mut room[prefix_len..reply], &buf[used..=end]),
                }
                free = &mut std::mem::take(&mut free)[reply..];
                used = end + 1;
                answered += 1;
                mask &= mask - 1;
            }
            base += BLOCK;
        }
        Stop::End
    };
    let at = total - free.len();
    Done {
        used,
        at,
        answered,
        stop,
    }
}

/// A copy of a length known only at run time, kept out of line: inlined next to the
/// fixed-size copies, the compiler merges them back into one `memcpy` call of a variable
/// length, which is what the fixed-size copies avoid.
#[inline(never)]
fn copy_exact(to: &mut [u8], from: &[u8]) {
    to.copy_from_slice(from);
}

/// Where [`put_short_replies`] stopped.
struct Done {
    /// Bytes of `buf` answered.
    used: usize,
    /// Where the replies end in `out`.
    at: usize,
    /// Lines answered.
    answered: u64,
    /// Why it stopped.
    stop: Stop,
}

/// Why [`put_short_replies`] stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    /// No complete line left.
    End,
    /// `out` is full.
    OutOfRoom,
    /// At a line longer than 64 bytes.
    LongLine,
}

/// The most room [`push_replies`] zero-fills at once.
const ROOM_STEP: usize = 4096;

/// The most [`put_short_replies`] writes for one reply: a 16-byte prefix and a 64-byte line.
const REPLY_COPY: usize = 16 + LINE_COPY;

/// A line of up to this many bytes is copied as exactly this many by [`put_short_replies`].
const LINE_COPY: usize = 64;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newlines_finds_every_line_end_at_every_offset() {
        // Line ends in and across 64-byte blocks, long lines that skip whole blocks,
        // a tail shorter than a block, and every alignment of all of it.
        let mut text = Vec::new();
        for len in [1, 2, 31, 63, 64, 65, 127, 128, 129, 300, 5] {
            text.extend(std::iter::repeat_n(b'x', len - 1));
            text.push(NEWLINE);
        }
        text.extend_from_slice(b"tail");
        for start in 0..text.len() {
            let buf = &text[start..];
            let want: Vec<usize> = memchr::memchr_iter(NEWLINE, buf).collect();
            assert_eq!(newlines(buf).collect::<Vec<_>>(), want, "from {start}");
        }
        assert_eq!(newlines(b"").count(), 0);
        assert_eq!(newlines(&[b'\n'; 200]).count(), 200);
    }

    proptest::proptest! {
        #[test]
        fn newlines_agrees_with_memchr(
            buf in proptest::collection::vec(
                proptest::prop_oneof![proptest::strategy::Just(NEWLINE), proptest::num::u8::ANY],
                0..600,
            )
        ) {
            let want: Vec<usize> = memchr::memchr_iter(NEWLINE, &buf).collect();
            proptest::prop_assert_eq!(newlines(&buf).collect::<Vec<_>>(), want);
        }
    }

    /// What [`push_replies`] must do, written the plain way: [`line::line_len`] and
    /// [`line::push_reply`] per line, stopping at the first line it may not answer.
    fn plain_replies(out: &mut Vec<u8>, prefix: &[u8], buf: &[u8], limits: Limits) -> (usize, u64) {
        let (mut used, mut lines) = (0, 0);
        while let Some(len) = line::line_len(&buf[used..]) {
            let too_long = len - 1 > limits.max_line;
            if too_long || out.len() + line::reply_len(prefix, len) > limits.max_out {
                break;
            }
            line::push_reply(out, prefix, &buf[used..used + len], false);
            used += len;
            lines += 1;
        }
        (used, lines)
    }

    /// Lines of the given lengths (plus their `\n`), then a partial line of `partial`
    /// bytes. Every byte differs from its neighbours (and only the terminators are `\n`),
    /// so a copy from the wrong place or of the wrong length shows in the output.
    fn text(lines: &[usize], partial: usize, fill: u8) -> Vec<u8> {
        let mut buf = Vec::new();
        let next = |buf: &mut Vec<u8>| {
            let byte = fill.wrapping_add(buf.len() as u8);
            buf.push(if byte == NEWLINE { b'x' } else { byte });
        };
        for &len in lines {
            for _ in 0..len {
                next(&mut buf);
            }
            buf.push(NEWLINE);
        }
        for _ in 0..partial {
            next(&mut buf);
        }
        buf
    }

    /// Runs [`push_replies`] and [`plain_replies`] on the same input and output start
    /// (`before` bytes, and room for `spare` more), and checks they agree on every byte.
    fn check_against_plain(
        buf: &[u8],
        prefix: &[u8],
        before: usize,
        spare: usize,
        limits: Limits,
    ) -> Result<(), proptest::test_runner::TestCaseError> {
        let start = || {
            let mut out = Vec::with_capacity(before + spare);
            out.extend((0..before).map(|i| b'#' ^ i as u8));
            out
        };
        let mut got = start();
        let done = push_replies(&mut got, &Prefix::new(prefix), buf, limits);
        let mut want = start();
        let want_done = plain_replies(&mut want, prefix, buf, limits);
        proptest::prop_assert_eq!(done, want_done, "{:?}", limits);
        proptest::prop_assert_eq!(got, want, "{:?}", limits);
        Ok(())
    }

    proptest::proptest! {
        /// Every mix of line lengths (empty, shorter and longer than the prefix, around
        /// the 16-byte prefix copy, the 64-byte line copy and block, long), prefix lengths
        /// (none, short, over the 16 bytes of the fast loop), a partial line or not, bytes
        /// already in `out` and room for more or not, and limits that stop it anywhere.
        #[test]
        fn push_replies_agrees_with_the_plain_loop(
            // Mostly lines the fast loop takes (at most 64 bytes), some it leaves.
            lines in proptest::collection::vec(
                proptest::prop_oneof![4 => 0usize..70, 1 => 0usize..200],
                0..40,
            ),
            fill in proptest::num::u8::ANY,
            partial in 0usize..80,
            prefix_len in proptest::prop_oneof![0usize..=17, 18usize..40],
            before in 0usize..20,
            spare in proptest::prop_oneof![proptest::strategy::Just(0usize), 0usize..5000],
            // The usual read (no limit near), a line limit around the 64-byte copy, and
            // an output limit anywhere, below what `out` already holds too.
            max_line in proptest::prop_oneof![2 => proptest::strategy::Just(65536usize), 1 => 0usize..130],
            max_out in proptest::prop_oneof![
                2 => proptest::strategy::Just(usize::MAX),
                2 => 0usize..3000,
                1 => 0usize..30,
            ],
        ) {
            let buf = text(&lines, partial, fill);
            let prefix: Vec<u8> = (0..prefix_len as u8).map(|i| b'A' + i).collect();
            check_against_plain(&buf, &prefix, before, spare, Limits { max_line, max_out })?;
        }
    }

    /// Both limits at every value across a read of short and long lines: every place the
    /// loop can stop, with the default prefix, none, and the longest the fast loop takes
    /// (whose reply to a 64-byte line fills all of its fixed-size copies).
    #[test]
    fn push_replies_stops_where_the_plain_loop_stops_at_every_limit() {
        let buf = text(&[3, 0, 62, 63, 64, 20, 63, 100, 5, 15, 16, 63], 7, 0x30);
        for prefix in [&b"OK..."[..], b"", b"0123456789abcdef"] {
            for max_out in 0..buf.len() * 2 {
                let limits = Limits {
                    max_line: 65536,
                    max_out,
                };
                check_against_plain(&buf, prefix, 3, 0, limits).unwrap();
            }
            for max_line in 0..110 {
                let limits = Limits {
                    max_line,
                    max_out: usize::MAX,
                };
                check_against_plain(&buf, prefix, 3, 0, limits).unwrap();
            }
        }
    }

    #[test]
    fn push_replies_allocates_nothing_for_a_partial_line() {
        let mut out = Vec::new();
        let limits = Limits {
            max_line: 65536,
            max_out: usize::MAX,
        };
        let prefix = Prefix::new(b"OK...");
        assert_eq!(
            push_replies(&mut out, &prefix, &[b'x'; 300], limits),
            (0, 0)
        );
        assert_eq!(out.capacity(), 0);
    }
}
