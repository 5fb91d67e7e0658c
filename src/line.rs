//! Line framing: pure functions, no state and no I/O.
//!
//! The protocol splits input on `\n` and answers each line with a prefix plus the line's
//! bytes *including* its terminator, exactly as received: `hi\n` becomes `OK...hi\n`, a telnet
//! `hi\r\n` becomes `OK...hi\r\n`. Bytes are opaque: NUL, 0xFF and invalid UTF-8 pass through.
//!
//! The per-connection bookkeeping (partial lines, limits, backpressure) lives in
//! [`crate::conn`]; this module only answers "where does the next line end?" and "what
//! are the reply bytes?".

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
/// use echod::line::line_len;
/// assert_eq!(line_len(b"hi\r\nthere"), Some(4));
/// assert_eq!(line_len(b"no newline yet"), None);
/// ```
pub fn line_len(buf: &[u8]) -> Option<usize> {
    memchr::memchr(NEWLINE, buf).map(|i| i + 1)
}

/// The positions of every `\n` in `buf`, in order: one vectorised scan for a whole read
/// instead of one call per line.
///
/// ```
/// let ends: Vec<usize> = echod::line::newlines(b"a\nbc\nd").collect();
/// assert_eq!(ends, [1, 4]);
/// ```
pub fn newlines(buf: &[u8]) -> impl Iterator<Item = usize> + '_ {
    memchr::memchr_iter(NEWLINE, buf)
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

/// Appends the reply to one line (`prefix` + `line`) to `out`.
///
/// ```
/// let mut out = Vec::new();
/// echod::line::push_reply(&mut out, b"OK...", b"hi\n");
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
    fn complete_len_splits_lines_from_the_fragment() {
        assert_eq!(complete_len(b"a\nb\nfrag"), 4);
        assert_eq!(complete_len(b"frag"), 0);
        assert_eq!(complete_len(b"a\n"), 2);
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
