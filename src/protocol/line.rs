//! Line framing: where a line ends, and the one function that builds a reply.
//!
//! The protocol splits input on `\n` and answers each line with a prefix plus the line's
//! bytes *including* its terminator, exactly as received: `hi\n` becomes `OK...hi\n`, a
//! telnet `hi\r\n` becomes `OK...hi\r\n`. Bytes are opaque: NUL, 0xFF and invalid UTF-8
//! pass through. Answering every complete line of a read is this loop:
//!
//! ```
//! use echod::protocol::line::{line_len, push_reply};
//! let (buf, mut out, mut used) = (b"hi\nthere\r\npart", Vec::new(), 0);
//! while let Some(len) = line_len(&buf[used..]) {
//!     push_reply(&mut out, b"OK...", &buf[used..used + len], false);
//!     used += len;
//! }
//! assert_eq!(out, b"OK...hi\nOK...there\r\n");
//! assert_eq!(&buf[used..], b"part"); // A partial line waits for more bytes.
//! ```
//!
//! These are pure functions, with no state and no I/O. The per-connection bookkeeping
//! (partial lines, limits, backpressure) lives in [`conn`](super::conn), and
//! [`fast`](super::fast) runs the loop above faster on reads of many short lines (its
//! tests prove it builds the same bytes).

use crate::protocol::telnet;
use crate::waypoint;

/// The byte that ends a line. A `\r` before it is part of the line and is echoed back.
pub const NEWLINE: u8 = b'\n';

/// Returns the length of the first complete line in `buf`, including its `\n`, or
/// `None` when `buf` holds only part of a line ("need more bytes" is not an error).
///
/// `memchr` scans a word or a vector register at a time, several times faster than a
/// byte loop on long lines.
///
/// ```
/// use echod::protocol::line::line_len;
/// assert_eq!(line_len(b"hi\r\nthere"), Some(4));
/// assert_eq!(line_len(b"no newline yet"), None);
/// ```
pub fn line_len(buf: &[u8]) -> Option<usize> {
    waypoint("line_len");
    memchr::memchr(NEWLINE, buf).map(|i| i + 1)
}

/// Returns the length of the complete lines at the start of `buf`: everything after it
/// is a partial line. `0` when `buf` has no `\n`.
pub fn complete_len(buf: &[u8]) -> usize {
    memchr::memrchr(NEWLINE, buf).map_or(0, |i| i + 1)
}

/// How many bytes the reply to a line of `line_len` bytes takes (before telnet escaping).
pub fn reply_len(prefix: &[u8], line_len: usize) -> usize {
    prefix.len() + line_len
}

/// How many bytes [`push_reply`] appends for `line`: with telnet escaping, every 0xFF of
/// the prefix and the line takes two. (Room checks must count what is really queued.)
pub fn escaped_reply_len(prefix: &[u8], line: &[u8], telnet: bool) -> usize {
    waypoint("escaped_reply_len");
    let doubled = |bytes: &[u8]| bytes.iter().filter(|&&b| b == telnet::IAC).count();
    let extra = if telnet {
        doubled(prefix) + doubled(line)
    } else {
        0
    };
    reply_len(prefix, line.len()) + extra
}

/// Appends the reply to one line to `out`: `prefix`, then `line` (its terminator
/// included, or none for the final fragment of a closed connection).
///
/// With `telnet`, the connection speaks telnet, where a 0xFF byte starts a command: every
/// 0xFF of the reply is then sent as `IAC IAC` ([`telnet::escape_iac`]), the prefix's too.
///
/// ```
/// use echod::protocol::line::push_reply;
/// let mut out = Vec::new();
/// push_reply(&mut out, b"OK...", b"hi\n", false);
/// push_reply(&mut out, b"OK...", b"\xff\n", true);
/// assert_eq!(out, b"OK...hi\nOK...\xff\xff\n");
/// ```
pub fn push_reply(out: &mut Vec<u8>, prefix: &[u8], line: &[u8], telnet: bool) {
    waypoint("push_reply");
    if telnet {
        telnet::escape_iac(prefix, out);
        telnet::escape_iac(line, out);
    } else {
        out.reserve(prefix.len() + line.len());
        out.extend_from_slice(prefix);
        out.extend_from_slice(line);
    }
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
        let mut out = b"#".to_vec();
        push_reply(&mut out, b"OK...", b"\0\xff\r\n", false);
        push_reply(&mut out, b"OK...", b"\n", false);
        push_reply(&mut out, b"", b"frag", false);
        assert_eq!(out, b"#OK...\0\xff\r\nOK...\nfrag");
        assert_eq!(reply_len(b"OK...", 4), 9);
    }

    #[test]
    fn telnet_replies_double_every_ff_of_prefix_and_line() {
        let mut out = b"#".to_vec();
        push_reply(&mut out, b"\xff>", b"a\xff\xffb\r\n", true);
        push_reply(&mut out, b"OK...", b"", true);
        assert_eq!(out, b"#\xff\xff>a\xff\xff\xff\xffb\r\nOK...");
    }
}
