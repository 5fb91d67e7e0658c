//! Backslash escapes for `--send TEXT` (and `echoc load --banner TEXT`).
//!
//! A shell makes it awkward to type a carriage return or a raw byte, yet the
//! tutorial's HTTP request needs `\r\n`. So we accept a small, C-like set of
//! escapes and nothing else: an unknown escape is an error, not a silent
//! literal, because a typo in a protocol test should be loud.
//!
//! | escape | byte       |
//! |--------|------------|
//! | `\n`   | 0x0a       |
//! | `\r`   | 0x0d       |
//! | `\t`   | 0x09       |
//! | `\\`   | 0x5c       |
//! | `\xNN` | 0xNN (exactly two hex digits) |

use std::fmt;

/// Why a piece of text could not be unescaped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EscapeError {
    /// Byte offset of the backslash that starts the bad escape.
    pub offset: usize,
    /// The offending escape as written, e.g. `\q` or `\x4`.
    pub escape: String,
}

impl fmt::Display for EscapeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "bad escape '{}' at byte {} (known: \\n \\r \\t \\\\ \\xNN)",
            self.escape, self.offset
        )
    }
}

impl std::error::Error for EscapeError {}

/// Turns `text` with backslash escapes into the bytes it stands for.
///
/// Every byte that is not part of an escape is copied as is, so UTF-8 text
/// passes through unchanged.
pub fn unescape(text: &[u8]) -> Result<Vec<u8>, EscapeError> {
    let mut out = Vec::with_capacity(text.len());
    let mut i = 0;
    while i < text.len() {
        if text[i] != b'\\' {
            out.push(text[i]);
            i += 1;
            continue;
        }
        let (byte, len) = escape_at(text, i)?;
        out.push(byte);
        i += len;
    }
    Ok(out)
}

/// Decodes the escape starting at `text[at]` (a backslash): the byte it
/// stands for and how many input bytes it took.
fn escape_at(text: &[u8], at: usize) -> Result<(u8, usize), EscapeError> {
    let bad = |len: usize| EscapeError {
        offset: at,
        escape: String::from_utf8_lossy(&text[at..(at + len).min(text.len())]).into_owned(),
    };
    match text.get(at + 1) {
        Some(b'n') => Ok((b'\n', 2)),
        Some(b'r') => Ok((b'\r', 2)),
        Some(b't') => Ok((b'\t', 2)),
        Some(b'\\') => Ok((b'\\', 2)),
        Some(b'x') => {
            let hi = text.get(at + 2).copied().and_then(hex_value);
            let lo = text.get(at + 3).copied().and_then(hex_value);
            match (hi, lo) {
                (Some(hi), Some(lo)) => Ok((hi << 4 | lo, 4)),
                // Show as much of the broken `\x..` as there is.
                (Some(_), None) => Err(bad(4)),
                (None, _) => Err(bad(3)),
            }
        }
        // A lone backslash at the very end, or an escape we do not know.
        None => Err(bad(1)),
        Some(_) => Err(bad(2)),
    }
}

/// The value of one hex digit, either case.
fn hex_value(digit: u8) -> Option<u8> {
    match digit {
        b'0'..=b'9' => Some(digit - b'0'),
        b'a'..=b'f' => Some(digit - b'a' + 10),
        b'A'..=b'F' => Some(digit - b'A' + 10),
        _ => None,
    }
}

/// Renders bytes for a human: printable ASCII as is, everything else in the
/// same escapes [`unescape`] reads (so a report can be pasted back into
/// `--send`). Used to show mismatched replies.
pub fn escape(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for &b in bytes {
        match b {
            b'\n' => out.push_str("\\n"),
            b'\r' => out.push_str("\\r"),
            b'\t' => out.push_str("\\t"),
            b'\\' => out.push_str("\\\\"),
            0x20..=0x7e => out.push(b as char),
            _ => out.push_str(&format!("\\x{b:02x}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_is_unchanged() {
        assert_eq!(unescape(b"hello, world").unwrap(), b"hello, world");
        assert_eq!(unescape("héllo".as_bytes()).unwrap(), "héllo".as_bytes());
        assert_eq!(unescape(b"").unwrap(), b"");
    }

    #[test]
    fn known_escapes() {
        assert_eq!(unescape(br"a\nb\rc\td\\e").unwrap(), b"a\nb\rc\td\\e");
        assert_eq!(
            unescape(br"\x00\x41\x7f\xff\xAb").unwrap(),
            b"\x00A\x7f\xff\xab"
        );
    }

    #[test]
    fn the_tutorial_http_request() {
        assert_eq!(
            unescape(br"GET / HTTP/1.1\r\n\r\n").unwrap(),
            b"GET / HTTP/1.1\r\n\r\n"
        );
    }

    #[test]
    fn escaped_backslash_does_not_start_another_escape() {
        assert_eq!(unescape(br"\\n").unwrap(), b"\\n");
    }

    #[test]
    fn malformed_escapes_are_errors() {
        let err = |s: &[u8]| unescape(s).unwrap_err();
        assert_eq!(err(br"abc\").escape, "\\");
        assert_eq!(err(br"abc\").offset, 3);
        assert_eq!(err(br"\q").escape, "\\q");
        assert_eq!(err(br"\x").escape, "\\x");
        assert_eq!(err(br"\x4").escape, "\\x4");
        assert_eq!(err(br"\x4g").escape, "\\x4g");
        assert_eq!(err(br"\xg1").escape, "\\xg");
        assert_eq!(err(br"ok\n then \0").offset, 10);
    }

    #[test]
    fn error_message_names_the_escape() {
        let msg = unescape(br"\q").unwrap_err().to_string();
        assert!(msg.contains("'\\q'"), "{msg}");
    }

    #[test]
    fn escape_round_trips() {
        let all: Vec<u8> = (0..=255).collect();
        assert_eq!(unescape(escape(&all).as_bytes()).unwrap(), all);
    }
}
