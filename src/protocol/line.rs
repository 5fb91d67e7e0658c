//! Line framing: pure functions, no state and no I/O.
//!
//! The protocol splits input on `\n` and answers each line with a prefix plus the line's
//! bytes *including* its terminator, exactly as received: `hi\n` becomes `OK...hi\n`, a telnet
//! `hi\r\n` becomes `OK...hi\r\n`. Bytes are opaque: NUL, 0xFF and invalid UTF-8 pass through.
//!
//! The per-connection bookkeeping (partial lines, limits, backpressure) lives in
//! [`crate::protocol::conn`]; this module only answers "where does the next line end?" and "what
//! are the reply bytes?".

use wide::u8x16;

/// The byte that ends a line. A `\r` before it is part of the line and is echoed back.
pub const NEWLINE: u8 = b'\n';

/// Returns the length of the first complete line in `buf`, including its `\n`, or
/// `None` when `buf` holds only part of a line ("need more bytes" is not an error).
///
/// We use `memchr`, which scans a word or a vector register at a time: the scan is the
/// only per-byte work the server does, and a naive loop is several times slower on long
/// lines.
///
/// ```
/// use echod::protocol::line::line_len;
/// assert_eq!(line_len(b"hi\r\nthere"), Some(4));
/// assert_eq!(line_len(b"no newline yet"), None);
/// ```
pub fn line_len(buf: &[u8]) -> Option<usize> {
    memchr::memchr(NEWLINE, buf).map(|i| i + 1)
}

/// The positions of every `\n` in `buf`, in order: one pass over a whole read instead
/// of one search call per line.
///
/// ```
/// let ends: Vec<usize> = echod::protocol::line::newlines(b"a\nbc\nd").collect();
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

/// Returns the length of the last complete line's end in `buf`: everything before it is
/// complete lines, everything after it is a partial line. `0` when `buf` has no `\n`.
pub fn complete_len(buf: &[u8]) -> usize {
    memchr::memrchr(NEWLINE, buf).map_or(0, |i| i + 1)
}

/// How many bytes the reply to a line of `line_len` bytes takes.
pub fn reply_len(prefix: &[u8], line_len: usize) -> usize {
    prefix.len() + line_len
}

/// A reply prefix ready to be copied many times: one whose length is at most 16 bytes
/// (the default `OK...` and any sensible one) is kept in a fixed 16-byte array, and
/// copying a fixed size compiles to two register moves where a copy of a length only
/// known at run time is a call to `memcpy`. It matters because every reply starts with it.
#[derive(Debug, Clone, Copy)]
pub struct Prefix<'a> {
    /// The prefix.
    bytes: &'a [u8],
    /// The same bytes, zero-padded to 16 when they fit.
    padded: Option<[u8; 16]>,
}

impl<'a> Prefix<'a> {
    /// Prepares `bytes` for [`Prefix::push`].
    pub fn new(bytes: &'a [u8]) -> Prefix<'a> {
        let padded = (bytes.len() <= 16).then(|| {
            let mut padded = [0; 16];
            padded[..bytes.len()].copy_from_slice(bytes);
            padded
        });
        Prefix { bytes, padded }
    }

    /// Appends the prefix to `out`.
    ///
    /// ```
    /// let mut out = b"x".to_vec();
    /// echod::protocol::line::Prefix::new(b"OK...").push(&mut out);
    /// assert_eq!(out, b"xOK...");
    /// ```
    #[inline]
    pub fn push(&self, out: &mut Vec<u8>) {
        match &self.padded {
            Some(padded) => {
                // Copy all 16 bytes, then drop the padding again.
                out.extend_from_slice(padded);
                out.truncate(out.len() - (16 - self.bytes.len()));
            }
            None => extend_exact(out, self.bytes),
        }
    }
}

/// Appends to `out` the reply to every complete line of `buf` (the prefix, then the
/// line with its `\n`), and returns how many bytes of `buf` those lines take and how many
/// lines there were. The partial line at the end, if any, is left alone. `out` grows as
/// needed; the fast loop's room (below) grows by at most `limit` bytes at a time.
///
/// This is the server's inner loop: one call per read, one iteration per line. The
/// replies are written at a position held in a register rather than appended, so a
/// reply costs two fixed-size copies and no length or capacity bookkeeping in memory:
/// `out` is first lengthened (zero-filled: one `memset` per read of up to 4 KiB of
/// replies) to hold the replies, then cut back to where they end.
///
/// ```
/// use echod::protocol::line::{push_replies, Prefix};
/// let mut out = b"x".to_vec();
/// let used = push_replies(&mut out, &Prefix::new(b"OK..."), b"hi\nthere\npart", 1 << 16);
/// assert_eq!(used, (9, 2));
/// assert_eq!(out, b"xOK...hi\nOK...there\n");
/// ```
#[inline]
pub fn push_replies(
    out: &mut Vec<u8>,
    prefix: &Prefix<'_>,
    buf: &[u8],
    limit: usize,
) -> (usize, u64) {
    // (The block scan, not `line_len`: on the short reads of a person typing, memchr's
    // set-up costs more than the scan.)
    let Some(first) = newlines(buf).next().map(|end| end + 1) else {
        return (0, 0); // A partial line: nothing to answer, nothing allocated.
    };
    if first == buf.len() {
        // The read is one line: a person typing, a ping-pong client. Nothing to win
        // from the loop's set-up here, so append the one reply.
        push_reply(out, prefix.bytes, buf);
        return (first, 1);
    }
    let (mut used, mut answered) = (0, 0);
    // The fast loop is for short lines with a short prefix; a read that starts with a
    // long line goes the plain way (memchr jumps over long lines, the loop would not).
    let fast = prefix.padded.filter(|_| first <= LINE_COPY);
    // Whether lines are left for the plain way (the fast loop stopped at a long line).
    let mut plain = fast.is_none();
    if let Some(padded) = fast {
        let plen = prefix.bytes.len();
        let mut at = out.len();
        // The room is zero-filled before the loop writes into it, the only per-byte cost
        // the loop adds, so it is kept near what is written: the replies to lines at
        // least 4 times as long as the prefix, in steps of at most 4 KiB (so a long line
        // that stops the loop wastes little), plus what the fixed-size copies of one
        // reply may write beyond its end.
        loop {
            let rest = buf.len() - used;
            let room = (rest + rest / 4).clamp(1, ROOM_STEP).min(limit);
            out.resize(at + room + REPLY_COPY, 0);
            let done = put_short_replies(out, at, padded, plen, &buf[used..]);
            used += done.used;
            at = done.at;
            answered += done.answered;
            plain = done.stop == Stop::LongLine;
            if done.stop != Stop::OutOfRoom {
                break;
            }
        }
        out.truncate(at);
    }
    if !plain {
        return (used, answered); // What is left is a partial line.
    }
    // The lines the loop above left: from the first longer than 64 bytes on, or all of
    // them with a prefix longer than 16 bytes.
    let from = used;
    for end in newlines(&buf[from..]) {
        push_reply(out, prefix.bytes, &buf[used..=from + end]);
        used = from + end + 1;
        answered += 1;
    }
    (used, answered)
}

/// The fast part of [`push_replies`]: writes into `out` from `at` the replies to the
/// lines of `buf` while each is short (at most 64 bytes) and `out` has room for a
/// reply's fixed-size copies (16 bytes of prefix, 64 of line). A line with 64 bytes of
/// `buf` from its start is copied as exactly 64; the last lines of `buf` are copied as
/// they are.
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
                room[..16].copy_from_slice(&prefix);
                match buf[used..].first_chunk::<LINE_COPY>() {
                    Some(line) => room[prefix_len..prefix_len + LINE_COPY].copy_from_slice(line),
                    None => copy_exact(&mut room[prefix_len..prefix_len + len], &buf[used..=end]),
                }
                free = &mut std::mem::take(&mut free)[prefix_len + len..];
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

/// A copy of a length known only at run time, kept out of line for the same reason as
/// [`extend_exact`].
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

/// The most [`push_replies`] writes for one reply: a 16-byte prefix and a 64-byte line.
const REPLY_COPY: usize = 16 + LINE_COPY;

/// A line of up to this many bytes is copied as exactly this many by [`push_line`].
const LINE_COPY: usize = 64;

/// Appends the line `input[..len]` to `out`; the bytes after it in `input` may be read
/// (never appended).
///
/// The same trick as [`Prefix`]: a short line with 64 bytes of input from its start is
/// copied as a fixed 64 bytes (four 16-byte moves, no `memcpy` call), and `out` is then
/// cut back to the line's real end.
///
/// ```
/// let input = [b"hi\n".as_slice(), &[b'x'; 64]].concat();
/// let mut out = Vec::new();
/// echod::protocol::line::push_line(&mut out, &input, 3);
/// assert_eq!(out, b"hi\n");
/// ```
#[inline]
pub fn push_line(out: &mut Vec<u8>, input: &[u8], len: usize) {
    match input.first_chunk::<LINE_COPY>() {
        Some(block) if len <= LINE_COPY => {
            out.extend_from_slice(block);
            out.truncate(out.len() - (LINE_COPY - len));
        }
        _ => extend_exact(out, &input[..len]),
    }
}

/// The copy of a length known only at run time, kept out of line: inlined next to a
/// fixed-size copy, the compiler merges the two back into one `memcpy` call of a
/// variable length, which is what [`Prefix`] and [`push_line`] avoid.
#[inline(never)]
fn extend_exact(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(bytes);
}

/// Appends the reply to one line (`prefix` + `line`) to `out`.
///
/// ```
/// let mut out = Vec::new();
/// echod::protocol::line::push_reply(&mut out, b"OK...", b"hi\n");
/// assert_eq!(out, b"OK...hi\n");
/// ```
pub fn push_reply(out: &mut Vec<u8>, prefix: &[u8], line: &[u8]) {
    out.reserve(prefix.len() + line.len());
    out.extend_from_slice(prefix);
    out.extend_from_slice(line);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_first_line_only() {
        assert_eq!(line_len(b"a\nb\n"), Some(2));
        assert_eq!(line_len(b"\n"), Some(1));
        assert_eq!(line_len(b""), None);
        assert_eq!(line_len(b"\0\xff\r"), None);
    }

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

    /// The reply bytes of [`push_replies`] written the plain way: append each reply.
    fn plain_replies(prefix: &[u8], buf: &[u8]) -> (Vec<u8>, usize, u64) {
        let (mut out, mut used, mut lines) = (Vec::new(), 0, 0);
        while let Some(len) = line_len(&buf[used..]) {
            out.extend_from_slice(prefix);
            out.extend_from_slice(&buf[used..used + len]);
            used += len;
            lines += 1;
        }
        (out, used, lines)
    }

    proptest::proptest! {
        /// Every mix of line lengths (empty, shorter and longer than the prefix, around
        /// the 64-byte copy and block sizes, long), prefix lengths (none, short, over the
        /// 16 bytes of the fast path), a partial line or not, bytes already in `out`, and
        /// a first allocation too small or large enough.
        #[test]
        fn push_replies_agrees_with_appending_each_reply(
            // Mostly lines the fast loop takes (at most 64 bytes), some it leaves.
            lines in proptest::collection::vec(
                proptest::prop_oneof![4 => 0usize..70, 1 => 0usize..200],
                0..40,
            ),
            fill in proptest::num::u8::ANY,
            partial in 0usize..80,
            prefix_len in proptest::prop_oneof![0usize..=17, 18usize..40],
            before in 0usize..20,
            limit in proptest::prop_oneof![proptest::strategy::Just(1usize), 1usize..5000],
        ) {
            // Every byte differs from its neighbours (and is never a `\n`), so a copy from
            // the wrong place or of the wrong length shows in the output.
            let mut buf = Vec::new();
            for len in &lines {
                for _ in 0..*len {
                    let byte = fill.wrapping_add(buf.len() as u8);
                    buf.push(if byte == NEWLINE { b'x' } else { byte });
                }
                buf.push(NEWLINE);
            }
            buf.extend(std::iter::repeat_n(b'p', partial));
            let prefix: Vec<u8> = (0..prefix_len as u8).map(|i| b'A' + i).collect();
            let mut out = vec![b'#'; before];
            let got = push_replies(&mut out, &Prefix::new(&prefix), &buf, limit);
            let (want, used, count) = plain_replies(&prefix, &buf);
            proptest::prop_assert_eq!(got, (used, count));
            proptest::prop_assert_eq!(&out[..before], &vec![b'#'; before][..]);
            proptest::prop_assert_eq!(&out[before..], &want[..]);
        }
    }

    #[test]
    fn push_replies_allocates_nothing_for_a_partial_line() {
        let mut out = Vec::new();
        let prefix = Prefix::new(b"OK...");
        assert_eq!(
            push_replies(&mut out, &prefix, &[b'x'; 300], 1 << 16),
            (0, 0)
        );
        assert_eq!(out.capacity(), 0);
    }

    #[test]
    fn complete_len_splits_lines_from_the_fragment() {
        assert_eq!(complete_len(b"a\nb\nfrag"), 4);
        assert_eq!(complete_len(b"frag"), 0);
        assert_eq!(complete_len(b"a\n"), 2);
    }

    #[test]
    fn prefixes_of_every_length_are_copied_exactly() {
        let long: Vec<u8> = (0..40).collect();
        for len in 0..=long.len() {
            let mut out = b"ab".to_vec();
            Prefix::new(&long[..len]).push(&mut out);
            assert_eq!(&out[..2], b"ab");
            assert_eq!(&out[2..], &long[..len], "prefix of {len} bytes");
        }
    }

    #[test]
    fn lines_of_every_length_are_copied_exactly() {
        let input: Vec<u8> = (0..=200).map(|i| i as u8).collect();
        for len in [1, 2, 63, 64, 65, 130] {
            for after in [0, 1, 63, 64, 70] {
                let mut out = b"ab".to_vec();
                push_line(&mut out, &input[..len + after], len);
                assert_eq!(&out[..2], b"ab");
                assert_eq!(&out[2..], &input[..len], "line {len}, {after} after");
            }
        }
    }

    #[test]
    fn replies_keep_every_byte() {
        let mut out = Vec::new();
        push_reply(&mut out, b"OK...", b"\0\xff\r\n");
        push_reply(&mut out, b"OK...", b"\n");
        assert_eq!(out, b"OK...\0\xff\r\nOK...\n");
        assert_eq!(reply_len(b"OK...", 4), 9);
    }
}
