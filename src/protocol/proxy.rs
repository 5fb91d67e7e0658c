//! The PROXY protocol header (HAProxy's `send-proxy` / `send-proxy-v2`): a sans-IO parser.
//!
//! Behind a TCP load balancer such as HAProxy, every connection the daemon accepts comes from
//! the balancer, so the socket's peer address is the balancer's, not the client's. The PROXY
//! protocol (HAProxy's `doc/proxy-protocol.txt`) fixes that: the balancer sends one header at
//! the very start of the connection saying who the real client is and which address it
//! connected to, and then relays the client's bytes unchanged. With `--proxy-protocol`, echod
//! requires that header on every connection and logs the address it carries.
//!
//! There are two versions, and a receiver accepts both:
//! - **Version 1** (`send-proxy`) is one line of ASCII text, at most 107 bytes with its CRLF:
//!   `PROXY TCP4 192.0.2.1 198.51.100.7 56324 8888\r\n`, the same with `TCP6` and IPv6
//!   addresses, or `PROXY UNKNOWN` (optionally followed by anything) when the proxy cannot
//!   tell.
//! - **Version 2** (`send-proxy-v2`) is binary: a 12-byte signature (`\r\n\r\n\0\r\nQUIT\n`),
//!   a version/command byte, a family/transport byte, a big-endian length, and that many
//!   bytes of addresses followed by optional TLV extensions.
//!
//! The spec says a receiver must never *guess* whether a header is present (that would let
//! any client spoof its address), so with the option on, a connection without a valid header
//! is refused. It should also refuse as early as possible: [`parse`] returns
//! [`Parse::Invalid`] as soon as the bytes received so far cannot be the start of any valid
//! header (a plain client typing `hello` is turned away at its first byte), and
//! [`Parse::Incomplete`] only while a valid header is still possible.
//!
//! # Using it
//!
//! The parser keeps no state: the caller accumulates what the socket delivered and calls
//! [`parse`] on all of it after each read. On [`Parse::Done`] it drops the first `len`
//! bytes; whatever follows in the buffer is ordinary protocol input that arrived in the same
//! read. Because each call looks at the whole buffer, a header split at any byte parses
//! exactly as it would in one piece (the tests check every split point).
//!
//! # Decisions
//!
//! - **Size cap.** [`MAX_HEADER`] is 512 bytes. A v1 line is at most 107 bytes; a v2 header
//!   is 16 + its length field, which may announce up to 64 KiB. We skip TLVs rather than
//!   interpret them, so the cap only bounds what one connection may make us buffer: 512
//!   bytes holds the largest address block (2 × 108-byte UNIX paths, 232 bytes in all) or
//!   IPv6 addresses plus the TLVs HAProxy commonly adds (ALPN, authority/SNI up to 255
//!   bytes, a unique ID up to 128 bytes, CRC32c). It is also what dnsdist accepts by default.
//!   A v2 header announcing more is [`Parse::Invalid`] as soon as its length field arrives.
//!   HAProxy's optional SSL TLVs (`send-proxy-v2-ssl-cn`) can carry certificate names that
//!   push a header past 512 bytes; raising the constant is all such a setup needs.
//! - **Families we do not serve.** With the v2 PROXY command, UDP over IPv4/IPv6 and UNIX
//!   stream/datagram addresses give [`Source::Unknown`]: the spec asks receivers to fall back
//!   to UNSPEC for valid combinations they do not implement, and echod only speaks TCP. The
//!   length must still cover the family's address block (12, 36 or 216 bytes); family bytes
//!   the spec does not define are invalid.
//! - **LOCAL.** A v2 LOCAL command (health checks from the proxy itself) gives
//!   [`Source::Unknown`] whatever its family byte says: the spec tells receivers to ignore the
//!   family and skip the announced length.
//! - **Strict v1.** As the spec demands, numbers must not have leading zeros (`010.0.0.1`
//!   and port `080` are invalid), fields are separated by exactly one space, and the line ends
//!   with CRLF, never a bare CR or LF (after `UNKNOWN`, anything before the CRLF is ignored,
//!   as the spec says). IPv6 addresses may use the dotted-quad tail that
//!   `inet_ntop` produces for mapped addresses (`::ffff:192.0.2.1`); they are reported as
//!   IPv6, as written.
//!
//! ```
//! use echod::protocol::proxy::{parse, Parse, Source};
//! let buf = b"PROXY TCP4 192.0.2.1 198.51.100.7 56324 8888\r\nhello\n";
//! let Parse::Done { source: Source::Tcp { client, .. }, len } = parse(buf) else {
//!     panic!("a valid header")
//! };
//! assert_eq!(client, "192.0.2.1:56324".parse().unwrap());
//! assert_eq!(&buf[len..], b"hello\n");
//! assert_eq!(parse(b"hello\n"), Parse::Invalid("not a PROXY protocol header"));
//! ```

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// What the header says about the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// A proxied TCP connection: the real client and the address it connected to.
    Tcp {
        /// The client's address and port, as the proxy saw them.
        client: SocketAddr,
        /// The address and port the client connected to (on the proxy).
        server: SocketAddr,
    },
    /// `PROXY UNKNOWN` (v1), a v2 LOCAL command, or a v2 family we do not serve (UNSPEC, UDP,
    /// UNIX): there is no TCP client to report, so the caller uses the socket's own peer
    /// address. Health checks from the proxy itself look like this.
    Unknown,
}

/// The outcome of looking at the bytes received so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parse {
    /// More bytes are needed: what we have is a valid start of a header. Never returned once
    /// the buffer holds [`MAX_HEADER`] bytes or more.
    Incomplete,
    /// A complete, valid header of `len` bytes at the start of the buffer.
    Done {
        /// What the header says about the client.
        source: Source,
        /// The header's length; the bytes after it are ordinary protocol input.
        len: usize,
    },
    /// Not a valid PROXY header, with a short reason for the log. The connection must be
    /// refused: the bytes cannot become valid by waiting for more.
    Invalid(&'static str),
}

/// The longest header we accept, in bytes. A v1 line is at most 107 bytes; a v2 header is
/// 16 bytes plus its announced length, and we refuse one whose total exceeds this (see the
/// module documentation for why 512).
pub const MAX_HEADER: usize = 512;

/// The start of every v1 header: the word `PROXY` and exactly one space.
const V1_SIGNATURE: &[u8] = b"PROXY ";

/// The start of every v2 header. It contains a NUL and `QUIT`, so that it is rejected early
/// by most other protocols' servers if it is sent to one by mistake.
const V2_SIGNATURE: &[u8] = b"\r\n\r\n\0\r\nQUIT\n";

/// The longest v1 line, CRLF included: `PROXY UNKNOWN` followed by two full-length IPv6
/// addresses and two 5-digit ports (spec section 2.1).
const V1_MAX_LINE: usize = 107;

/// The v1 protocol words. `UNKNOWN` may be followed by anything up to the CRLF.
const V1_PROTOCOLS: [&[u8]; 3] = [b"TCP4", b"TCP6", b"UNKNOWN"];

/// The fixed part of a v2 header: signature, version/command, family, 2-byte length.
const V2_FIXED: usize = 16;

/// The one v2 version we know (the high nibble of the 13th byte).
const V2_VERSION: u8 = 2;

// The reasons we give for refusing a header, shared by the complete and the partial checks
// so that a header gets the same reason however it was split.
const NOT_PROXY: &str = "not a PROXY protocol header";
const V1_NO_CRLF: &str = "v1 header has no CRLF within 107 bytes";
const V1_BARE_CR: &str = "v1 header has a CR without LF";
const V1_PROTOCOL: &str = "v1 protocol is not TCP4, TCP6 or UNKNOWN";
const V1_TOO_FEW: &str = "v1 header has too few fields";
const V1_TOO_MANY: &str = "v1 header has too many fields";
const V1_EMPTY: &str = "v1 header has an empty field (extra space?)";
const V1_ADDRESS: &str = "v1 address is not valid for its family";
const V1_PORT: &str = "v1 port is not a decimal number in 0..=65535";
const V1_LEADING_ZERO: &str = "v1 port has a leading zero";
const V2_BAD_VERSION: &str = "v2 version is not 2";
const V2_BAD_COMMAND: &str = "v2 command is neither LOCAL nor PROXY";
const V2_BAD_FAMILY: &str = "v2 address family or transport is not defined";
const V2_TOO_LONG: &str = "v2 header is longer than we accept";
const V2_SHORT_BLOCK: &str = "v2 length is shorter than its address block";

/// Parses the PROXY header at the start of `buf`, which holds everything received so far.
///
/// Returns [`Parse::Incomplete`] while `buf` is a valid start of a header,
/// [`Parse::Done`] once a whole header is there (bytes after it are left alone), and
/// [`Parse::Invalid`] as soon as `buf` cannot begin a valid header.
pub fn parse(buf: &[u8]) -> Parse {
    if buf.starts_with(V1_SIGNATURE) {
        parse_v1(buf)
    } else if buf.starts_with(V2_SIGNATURE) {
        parse_v2(buf)
    } else if V1_SIGNATURE.starts_with(buf) || V2_SIGNATURE.starts_with(buf) {
        // Too short to tell yet, but each byte so far matches one of the signatures (the
        // first byte alone tells them apart: `P` or `\r`).
        Parse::Incomplete
    } else {
        Parse::Invalid(NOT_PROXY)
    }
}

// ---------------------------------------------------------------------------------------
// Version 1: one text line.
// ---------------------------------------------------------------------------------------

/// Parses a buffer that starts with the v1 signature.
///
/// Every answer depends only on the bytes that decided it, so a line keeps the reason it was
/// first refused for however many bytes follow: the log says what actually went wrong.
fn parse_v1(buf: &[u8]) -> Parse {
    // We never look past the longest line the spec allows: a CRLF at bytes 107..108 would
    // make a 108-byte line, which is invalid.
    let window = &buf[..buf.len().min(V1_MAX_LINE)];
    let head = &window[V1_SIGNATURE.len()..];
    let Some(cr) = head.iter().position(|&byte| byte == b'\r') else {
        // No CR yet: the line is still growing, and must be a possible start of a line.
        return match check_v1_prefix(head) {
            Err(reason) => Parse::Invalid(reason),
            Ok(()) if buf.len() >= V1_MAX_LINE => Parse::Invalid(V1_NO_CRLF),
            Ok(()) => Parse::Incomplete,
        };
    };
    // No field may contain a CR, so the first one ends the line's fields: what comes before
    // it must be a complete, valid line.
    let source = match parse_v1_line(&head[..cr]) {
        Ok(source) => source,
        Err(reason) => return Parse::Invalid(reason),
    };
    let crlf_at = match source {
        // For UNKNOWN, the spec says to ignore anything before the CRLF, a lone CR included.
        Source::Unknown => window.windows(2).position(|pair| pair == b"\r\n"),
        Source::Tcp { .. } => match head.get(cr + 1) {
            Some(b'\n') => Some(V1_SIGNATURE.len() + cr),
            Some(_) => return Parse::Invalid(V1_BARE_CR),
            None => None,
        },
    };
    match crlf_at {
        Some(at) => Parse::Done {
            source,
            len: at + 2,
        },
        None if buf.len() >= V1_MAX_LINE => Parse::Invalid(V1_NO_CRLF),
        None => Parse::Incomplete,
    }
}

/// Parses a complete v1 line after `PROXY ` and without its CRLF.
fn parse_v1_line(line: &[u8]) -> Result<Source, &'static str> {
    match split_at_space(line) {
        // The spec: for UNKNOWN "the receiver must ignore anything presented before the
        // CRLF", so the rest of the line is not even looked at.
        (b"UNKNOWN", _) => Ok(Source::Unknown),
        (b"TCP4", Some(rest)) => parse_v1_tcp(rest, Family::V4),
        (b"TCP6", Some(rest)) => parse_v1_tcp(rest, Family::V6),
        (b"TCP4" | b"TCP6", None) => Err(V1_TOO_FEW),
        _ => Err(V1_PROTOCOL),
    }
}

/// Parses the four fields of a complete `TCP4`/`TCP6` line:
/// `<src addr> <dst addr> <src port> <dst port>`.
fn parse_v1_tcp(fields: &[u8], family: Family) -> Result<Source, &'static str> {
    let mut fields = fields.split(|&byte| byte == b' ');
    let mut next = || fields.next().ok_or(V1_TOO_FEW);
    let client_ip = family.parse(next()?)?;
    let server_ip = family.parse(next()?)?;
    let client_port = parse_port(next()?)?;
    let server_port = parse_port(next()?)?;
    if fields.next().is_some() {
        return Err(V1_TOO_MANY);
    }
    Ok(Source::Tcp {
        client: SocketAddr::new(client_ip, client_port),
        server: SocketAddr::new(server_ip, server_port),
    })
}

/// Checks that `partial` (the bytes after `PROXY `, no CR among them yet) can still grow
/// into a valid line, so that garbage is refused now rather than after the timeout. It
/// checks in the order `parse_v1_line` does, so both give the same reason.
fn check_v1_prefix(partial: &[u8]) -> Result<(), &'static str> {
    match split_at_space(partial) {
        (b"UNKNOWN", Some(_)) => Ok(()),
        (b"TCP4", Some(rest)) => check_v1_tcp_prefix(rest, Family::V4),
        (b"TCP6", Some(rest)) => check_v1_tcp_prefix(rest, Family::V6),
        (word, None) if V1_PROTOCOLS.iter().any(|known| known.starts_with(word)) => Ok(()),
        _ => Err(V1_PROTOCOL),
    }
}

/// Checks the fields of an unfinished `TCP4`/`TCP6` line: every field but the last is
/// complete and must be valid; the last one may still be growing, so it only has to be a
/// possible start of its kind of field.
fn check_v1_tcp_prefix(fields: &[u8], family: Family) -> Result<(), &'static str> {
    // We check the fields in the order `parse_v1_tcp` does, so that a line gets the same
    // reason however it was split.
    let count = fields.split(|&byte| byte == b' ').count();
    for (index, field) in fields.split(|&byte| byte == b' ').enumerate() {
        if index == 4 {
            return Err(V1_TOO_MANY);
        }
        let complete = index + 1 < count;
        match (index < 2, complete) {
            (true, true) => family.parse(field).map(drop)?,
            (true, false) => family.check_prefix(field)?,
            (false, true) => parse_port(field).map(drop)?,
            (false, false) => check_port_prefix(field)?,
        }
    }
    Ok(())
}

/// Splits `text` at its first space: the word before it, and the rest after it (`None`
/// when there is no space).
fn split_at_space(text: &[u8]) -> (&[u8], Option<&[u8]>) {
    match text.iter().position(|&byte| byte == b' ') {
        Some(at) => (&text[..at], Some(&text[at + 1..])),
        None => (text, None),
    }
}

/// The address family a v1 `TCP4` or `TCP6` line announces.
#[derive(Debug, Clone, Copy)]
enum Family {
    /// `TCP4`: dotted-quad IPv4 addresses.
    V4,
    /// `TCP6`: colon-separated IPv6 addresses.
    V6,
}

impl Family {
    /// The longest text an address of this family can take. For IPv6 we allow the
    /// dotted-quad tail form (`ffff:...:ffff:255.255.255.255`, 45 characters), which
    /// `inet_ntop` uses for mapped addresses.
    fn max_text(self) -> usize {
        match self {
            Family::V4 => 15,
            Family::V6 => 45,
        }
    }

    /// Whether `byte` may appear in an address of this family.
    fn allows(self, byte: u8) -> bool {
        match self {
            Family::V4 => byte.is_ascii_digit() || byte == b'.',
            Family::V6 => byte.is_ascii_hexdigit() || byte == b':' || byte == b'.',
        }
    }

    /// Checks that `text` can still grow into an address of this family: right characters,
    /// not too long. The full check waits until the field is complete.
    fn check_prefix(self, text: &[u8]) -> Result<(), &'static str> {
        if text.len() <= self.max_text() && text.iter().all(|&byte| self.allows(byte)) {
            Ok(())
        } else {
            Err(V1_ADDRESS)
        }
    }

    /// Parses a complete address field. The standard library's parsers already refuse
    /// leading zeros in IPv4 octets (as the spec requires), zone IDs and surrounding spaces.
    fn parse(self, text: &[u8]) -> Result<IpAddr, &'static str> {
        if text.is_empty() {
            return Err(V1_EMPTY);
        }
        self.check_prefix(text)?;
        // `check_prefix` let through ASCII only, so this conversion cannot fail.
        let text = std::str::from_utf8(text).map_err(|_| V1_ADDRESS)?;
        let parsed = match self {
            Family::V4 => text.parse::<Ipv4Addr>().map(IpAddr::V4),
            Family::V6 => text.parse::<Ipv6Addr>().map(IpAddr::V6),
        };
        parsed.map_err(|_| V1_ADDRESS)
    }
}

/// Checks that `text` can still grow into a valid port: decimal digits only (no sign), no
/// leading zero, at most 5 digits and at most 65535. Each of these stays broken whatever
/// bytes follow, so the check is exact for a growing field.
fn check_port_prefix(text: &[u8]) -> Result<(), &'static str> {
    // The leading zero first: it is the one check that more bytes cannot turn into another.
    if text.len() > 1 && text[0] == b'0' {
        return Err(V1_LEADING_ZERO);
    }
    if !text.iter().all(u8::is_ascii_digit) || text.len() > 5 {
        return Err(V1_PORT);
    }
    if decimal(text) > u32::from(u16::MAX) {
        return Err(V1_PORT);
    }
    Ok(())
}

/// Parses a complete port field.
fn parse_port(text: &[u8]) -> Result<u16, &'static str> {
    if text.is_empty() {
        return Err(V1_EMPTY);
    }
    check_port_prefix(text)?;
    u16::try_from(decimal(text)).map_err(|_| V1_PORT)
}

/// The value of at most 5 ASCII digits (so it cannot overflow a `u32`).
fn decimal(digits: &[u8]) -> u32 {
    digits
        .iter()
        .fold(0, |value, &digit| value * 10 + u32::from(digit - b'0'))
}

// ---------------------------------------------------------------------------------------
// Version 2: binary.
// ---------------------------------------------------------------------------------------

/// What the address block of a v2 header holds, as far as we care.
#[derive(Debug, Clone, Copy)]
enum Addresses {
    /// TCP over IPv4: 4 + 4 address bytes, then 2 + 2 port bytes.
    Tcp4,
    /// TCP over IPv6: 16 + 16 address bytes, then 2 + 2 port bytes.
    Tcp6,
    /// Anything we report as [`Source::Unknown`]; at least `block` bytes long.
    Skipped {
        /// The size of the family's address block, which the length must cover.
        block: usize,
    },
}

impl Addresses {
    /// Reads the family/transport byte (the 14th) of a PROXY command. `None` for values
    /// the spec leaves undefined, which it says receivers must reject.
    fn from_family(family: u8) -> Option<Addresses> {
        match family {
            0x00 => Some(Addresses::Skipped { block: 0 }), // UNSPEC
            0x11 => Some(Addresses::Tcp4),
            0x21 => Some(Addresses::Tcp6),
            0x12 => Some(Addresses::Skipped { block: 12 }), // UDP over IPv4
            0x22 => Some(Addresses::Skipped { block: 36 }), // UDP over IPv6
            0x31 | 0x32 => Some(Addresses::Skipped { block: 216 }), // UNIX stream, datagram
            _ => None,
        }
    }

    /// How many bytes the address block takes; the header's length must be at least that.
    fn block_len(self) -> usize {
        match self {
            Addresses::Tcp4 => 12,
            Addresses::Tcp6 => 36,
            Addresses::Skipped { block } => block,
        }
    }

    /// Decodes the address block (at least [`Addresses::block_len`] bytes, which the
    /// caller has checked, so the indexing below stays in bounds).
    fn source(self, block: &[u8]) -> Source {
        let port = |at: usize| u16::from_be_bytes([block[at], block[at + 1]]);
        // The two addresses, then the two ports where the addresses end.
        let (client, server, ports): (IpAddr, IpAddr, usize) = match self {
            Addresses::Tcp4 => (ipv4(&block[0..4]).into(), ipv4(&block[4..8]).into(), 8),
            Addresses::Tcp6 => (ipv6(&block[0..16]).into(), ipv6(&block[16..32]).into(), 32),
            Addresses::Skipped { .. } => return Source::Unknown,
        };
        Source::Tcp {
            client: SocketAddr::new(client, port(ports)),
            server: SocketAddr::new(server, port(ports + 2)),
        }
    }
}

/// An IPv4 address from exactly 4 bytes in network order.
fn ipv4(bytes: &[u8]) -> Ipv4Addr {
    Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3])
}

/// An IPv6 address from exactly 16 bytes in network order.
fn ipv6(bytes: &[u8]) -> Ipv6Addr {
    let mut octets = [0; 16];
    octets.copy_from_slice(bytes);
    Ipv6Addr::from(octets)
}

/// Parses a buffer that starts with the v2 signature. Each fixed byte is checked as soon as
/// it arrives, and the length as soon as both its bytes have, so a bad header is refused
/// without waiting for the rest of it.
fn parse_v2(buf: &[u8]) -> Parse {
    let Some(&version_command) = buf.get(12) else {
        return Parse::Incomplete;
    };
    let local = match version_command {
        0x20 => true,
        0x21 => false,
        byte if byte >> 4 != V2_VERSION => return Parse::Invalid(V2_BAD_VERSION),
        _ => return Parse::Invalid(V2_BAD_COMMAND),
    };
    let Some(&family) = buf.get(13) else {
        return Parse::Incomplete;
    };
    let addresses = if local {
        // The spec: for LOCAL the receiver discards the block "including the family which
        // is ignored", so any family byte and any length are fine.
        Addresses::Skipped { block: 0 }
    } else {
        match Addresses::from_family(family) {
            Some(addresses) => addresses,
            None => return Parse::Invalid(V2_BAD_FAMILY),
        }
    };
    let Some(&[high, low]) = buf.get(14..V2_FIXED) else {
        return Parse::Incomplete;
    };
    let block_len = usize::from(u16::from_be_bytes([high, low]));
    let len = V2_FIXED + block_len;
    if len > MAX_HEADER {
        return Parse::Invalid(V2_TOO_LONG);
    }
    if block_len < addresses.block_len() {
        return Parse::Invalid(V2_SHORT_BLOCK);
    }
    // Whatever follows the addresses in the block is TLVs, which we skip unread.
    match buf.get(V2_FIXED..len) {
        Some(block) => Parse::Done {
            source: addresses.source(block),
            len,
        },
        None => Parse::Incomplete,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A valid TCP4 line (the spec's example).
    const TCP4: &[u8] = b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n";
    /// A valid TCP6 line.
    const TCP6: &[u8] = b"PROXY TCP6 2001:db8::1 ::1 65535 0\r\n";
    /// The longest possible TCP6 line (104 bytes).
    const TCP6_LONGEST: &[u8] = b"PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff \
        ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n";
    /// A TCP6 line with IPv4-mapped addresses, as `inet_ntop` writes them.
    const TCP6_MAPPED: &[u8] = b"PROXY TCP6 ::ffff:192.0.2.1 ::ffff:198.51.100.7 1 2\r\n";
    /// The short UNKNOWN form.
    const UNKNOWN: &[u8] = b"PROXY UNKNOWN\r\n";
    /// The spec's worst case: UNKNOWN with two full IPv6 addresses, exactly 107 bytes.
    const UNKNOWN_LONGEST: &[u8] = b"PROXY UNKNOWN ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff \
        ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n";

    /// A v2 header: signature, `version_command`, `family`, the length of `block`, `block`.
    fn v2(version_command: u8, family: u8, block: &[u8]) -> Vec<u8> {
        let len = u16::try_from(block.len()).expect("test blocks fit a u16");
        v2_with_len(version_command, family, len, block)
    }

    /// A v2 header whose length field says `len`, whatever `block` holds.
    fn v2_with_len(version_command: u8, family: u8, len: u16, block: &[u8]) -> Vec<u8> {
        let mut header = V2_SIGNATURE.to_vec();
        header.extend([version_command, family]);
        header.extend(len.to_be_bytes());
        header.extend(block);
        header
    }

    /// The address block of a TCP over IPv4 header.
    fn block_v4(client: SocketAddr, server: SocketAddr) -> Vec<u8> {
        let (IpAddr::V4(client_ip), IpAddr::V4(server_ip)) = (client.ip(), server.ip()) else {
            panic!("IPv4 addresses expected");
        };
        let mut block = client_ip.octets().to_vec();
        block.extend(server_ip.octets());
        block.extend(client.port().to_be_bytes());
        block.extend(server.port().to_be_bytes());
        block
    }

    /// The address block of a TCP over IPv6 header.
    fn block_v6(client: SocketAddr, server: SocketAddr) -> Vec<u8> {
        let (IpAddr::V6(client_ip), IpAddr::V6(server_ip)) = (client.ip(), server.ip()) else {
            panic!("IPv6 addresses expected");
        };
        let mut block = client_ip.octets().to_vec();
        block.extend(server_ip.octets());
        block.extend(client.port().to_be_bytes());
        block.extend(server.port().to_be_bytes());
        block
    }

    /// Shorthand for a socket address literal.
    fn addr(text: &str) -> SocketAddr {
        text.parse().expect("a valid test address")
    }

    /// Shorthand for a TCP source.
    fn tcp(client: &str, server: &str) -> Source {
        Source::Tcp {
            client: addr(client),
            server: addr(server),
        }
    }

    /// The v2 IPv4 header used by several tests, with its expected source.
    fn v2_ipv4() -> (Vec<u8>, Source) {
        let (client, server) = (addr("192.0.2.1:56324"), addr("198.51.100.7:8888"));
        (
            v2(0x21, 0x11, &block_v4(client, server)),
            Source::Tcp { client, server },
        )
    }

    /// The v2 IPv6 header used by several tests, with its expected source.
    fn v2_ipv6() -> (Vec<u8>, Source) {
        let (client, server) = (addr("[2001:db8::1]:1"), addr("[2001:db8::2:1]:65535"));
        (
            v2(0x21, 0x21, &block_v6(client, server)),
            Source::Tcp { client, server },
        )
    }

    /// Checks the contract on every prefix of `input`: `Incomplete` only below
    /// `MAX_HEADER`, and once the answer is not `Incomplete` it never changes as bytes are
    /// added (a decision is final, and a split header parses like a whole one). Returns the
    /// answer for the whole input.
    fn consistent(input: &[u8]) -> Parse {
        let mut decided = None;
        for end in 0..=input.len() {
            let result = parse(&input[..end]);
            match (decided, result) {
                (None, Parse::Incomplete) => assert!(end < MAX_HEADER, "Incomplete at {end}"),
                (None, _) => decided = Some(result),
                (Some(before), _) => assert_eq!(before, result, "changed at {end}: {input:?}"),
            }
            if let Parse::Done { len, .. } = result {
                assert!(len <= end && len <= MAX_HEADER);
            }
        }
        parse(input)
    }

    /// Checks that `header` parses to `source`, that each of its strict prefixes is
    /// `Incomplete`, and that bytes after it are left to the caller.
    fn assert_valid(header: &[u8], source: Source) {
        for end in 0..header.len() {
            assert_eq!(
                parse(&header[..end]),
                Parse::Incomplete,
                "prefix of {end} bytes"
            );
        }
        let done = Parse::Done {
            source,
            len: header.len(),
        };
        assert_eq!(consistent(header), done);
        let mut with_input = header.to_vec();
        with_input.extend(b"hello\n\r\n\r\n\0PROXY \xff");
        assert_eq!(consistent(&with_input), done);
    }

    /// Checks that `input` is refused for `reason`, consistently at every length from the
    /// point where it is first refused, and that it was refused by byte `by` at the latest.
    fn assert_invalid_by(input: &[u8], by: usize, reason: &'static str) {
        assert_eq!(consistent(input), Parse::Invalid(reason), "{input:?}");
        assert_eq!(
            parse(&input[..by]),
            Parse::Invalid(reason),
            "{input:?} by {by}"
        );
    }

    /// Checks that a complete `input` is refused for `reason`.
    fn assert_invalid(input: &[u8], reason: &'static str) {
        assert_invalid_by(input, input.len(), reason);
    }

    #[test]
    fn empty_input_waits() {
        assert_eq!(parse(b""), Parse::Incomplete);
    }

    #[test]
    fn v1_tcp4() {
        assert_valid(TCP4, tcp("192.168.0.1:56324", "192.168.0.11:443"));
        assert_valid(
            b"PROXY TCP4 0.0.0.0 255.255.255.255 0 65535\r\n",
            tcp("0.0.0.0:0", "255.255.255.255:65535"),
        );
    }

    #[test]
    fn v1_tcp6() {
        assert_valid(TCP6, tcp("[2001:db8::1]:65535", "[::1]:0"));
        let all_ones = "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535";
        assert_eq!(TCP6_LONGEST.len(), 104);
        assert_valid(TCP6_LONGEST, tcp(all_ones, all_ones));
        assert_valid(
            b"PROXY TCP6 2001:DB8::A ::1 1 2\r\n",
            tcp("[2001:db8::a]:1", "[::1]:2"),
        );
    }

    #[test]
    fn v1_tcp6_mapped_addresses_stay_ipv6() {
        let source = tcp("[::ffff:192.0.2.1]:1", "[::ffff:198.51.100.7]:2");
        assert_valid(TCP6_MAPPED, source);
    }

    #[test]
    fn v1_unknown() {
        assert_valid(UNKNOWN, Source::Unknown);
        assert_valid(b"PROXY UNKNOWN \r\n", Source::Unknown);
        assert_valid(
            b"PROXY UNKNOWN whatever, even \x00\xff\r\n",
            Source::Unknown,
        );
        assert_valid(b"PROXY UNKNOWN a\rb\nc\r\n", Source::Unknown);
        assert_eq!(UNKNOWN_LONGEST.len(), 107);
        assert_valid(UNKNOWN_LONGEST, Source::Unknown);
    }

    #[test]
    fn v1_following_input_is_not_part_of_the_header() {
        let mut buf = TCP4.to_vec();
        buf.extend(b"PROXY TCP4 1.2.3.4 5.6.7.8 9 10\r\nhi\n");
        let Parse::Done { len, source } = parse(&buf) else {
            panic!("a valid header");
        };
        assert_eq!(source, tcp("192.168.0.1:56324", "192.168.0.11:443"));
        assert_eq!(&buf[len..], b"PROXY TCP4 1.2.3.4 5.6.7.8 9 10\r\nhi\n");
        // Even when the input after the header would push a v1 line past 107 bytes.
        let mut long = UNKNOWN.to_vec();
        long.extend([b'x'; 200]);
        assert_eq!(consistent(&long), parse(UNKNOWN));
    }

    #[test]
    fn v1_family_must_match_addresses() {
        let reason = V1_ADDRESS;
        assert_invalid(b"PROXY TCP4 2001:db8::1 ::1 1 2\r\n", reason);
        assert_invalid(b"PROXY TCP6 192.0.2.1 198.51.100.7 1 2\r\n", reason);
        assert_invalid(b"PROXY TCP6 ::1 198.51.100.7 1 2\r\n", reason);
        assert_invalid(b"PROXY TCP4 192.0.2.1 ::1 1 2\r\n", reason);
        // The colon is refused by the first byte that shows it.
        assert_invalid_by(b"PROXY TCP4 2001:db8::1 ::1 1 2\r\n", 16, reason);
    }

    #[test]
    fn v1_addresses_must_be_canonical() {
        assert_invalid(b"PROXY TCP4 256.0.0.1 192.0.2.1 1 2\r\n", V1_ADDRESS);
        assert_invalid(b"PROXY TCP4 010.0.0.1 192.0.2.1 1 2\r\n", V1_ADDRESS);
        assert_invalid(b"PROXY TCP4 1.2.3 192.0.2.1 1 2\r\n", V1_ADDRESS);
        assert_invalid(b"PROXY TCP4 1.2.3.4.5 192.0.2.1 1 2\r\n", V1_ADDRESS);
        assert_invalid(b"PROXY TCP4 192.000.2.1 192.0.2.1 1 2\r\n", V1_ADDRESS);
        assert_invalid(b"PROXY TCP6 fe80::1%eth0 ::1 1 2\r\n", V1_ADDRESS);
        assert_invalid(b"PROXY TCP6 1::2::3 ::1 1 2\r\n", V1_ADDRESS);
        assert_invalid(b"PROXY TCP6 [::1] ::1 1 2\r\n", V1_ADDRESS);
        // Sixteen characters cannot be an IPv4 address: refused without waiting for more.
        assert_invalid_by(
            b"PROXY TCP4 1111111111111111 1.2.3.4 1 2\r\n",
            27,
            V1_ADDRESS,
        );
    }

    #[test]
    fn v1_ports_must_be_plain_decimal_in_range() {
        assert_invalid(b"PROXY TCP4 1.2.3.4 5.6.7.8 65536 1\r\n", V1_PORT);
        assert_invalid(b"PROXY TCP4 1.2.3.4 5.6.7.8 1 65536\r\n", V1_PORT);
        assert_invalid(b"PROXY TCP4 1.2.3.4 5.6.7.8 99999 1\r\n", V1_PORT);
        assert_invalid(b"PROXY TCP4 1.2.3.4 5.6.7.8 100000 1\r\n", V1_PORT);
        assert_invalid(b"PROXY TCP4 1.2.3.4 5.6.7.8 +80 1\r\n", V1_PORT);
        assert_invalid(b"PROXY TCP4 1.2.3.4 5.6.7.8 -1 1\r\n", V1_PORT);
        assert_invalid(b"PROXY TCP4 1.2.3.4 5.6.7.8 x50 1\r\n", V1_PORT);
        assert_invalid(b"PROXY TCP4 1.2.3.4 5.6.7.8 0x50 1\r\n", V1_LEADING_ZERO);
        assert_invalid(b"PROXY TCP4 1.2.3.4 5.6.7.8 080 1\r\n", V1_LEADING_ZERO);
        assert_invalid(b"PROXY TCP4 1.2.3.4 5.6.7.8 1 00\r\n", V1_LEADING_ZERO);
        // 65536 is refused at its last digit, before any space or CRLF.
        assert_invalid_by(b"PROXY TCP4 1.2.3.4 5.6.7.8 65536 1\r\n", 32, V1_PORT);
    }

    #[test]
    fn v1_fields_take_exactly_one_space() {
        assert_invalid(b"PROXY  TCP4 1.2.3.4 5.6.7.8 1 2\r\n", V1_PROTOCOL);
        assert_invalid(b"PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n", V1_EMPTY);
        assert_invalid(b"PROXY TCP4 1.2.3.4  5.6.7.8 1 2\r\n", V1_EMPTY);
        assert_invalid(b"PROXY TCP4 1.2.3.4 5.6.7.8  1 2\r\n", V1_EMPTY);
        assert_invalid(b"PROXY TCP4 1.2.3.4 5.6.7.8 1  2\r\n", V1_EMPTY);
        assert_invalid(b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n", V1_TOO_MANY);
        assert_invalid(b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n", V1_TOO_MANY);
        assert_invalid(b"PROXY TCP4 1.2.3.4\t5.6.7.8 1 2\r\n", V1_ADDRESS);
        assert_invalid(b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n", V1_TOO_FEW);
        assert_invalid(b"PROXY TCP4\r\n", V1_TOO_FEW);
        assert_invalid(b"PROXY TCP4 \r\n", V1_EMPTY);
    }

    #[test]
    fn v1_needs_crlf_within_107_bytes() {
        // UNKNOWN lines are the only ones that can grow that long without another error.
        let mut line = b"PROXY UNKNOWN ".to_vec();
        line.resize(V1_MAX_LINE - 1, b'a');
        assert_eq!(parse(&line), Parse::Incomplete);
        line.push(b'a');
        assert_eq!(parse(&line), Parse::Invalid(V1_NO_CRLF));
        // A CRLF that would make the line 108 bytes long is too late.
        let mut late = b"PROXY UNKNOWN ".to_vec();
        late.resize(V1_MAX_LINE - 1, b'a');
        late.extend(b"\r\n");
        assert_invalid_by(&late, V1_MAX_LINE, V1_NO_CRLF);
    }

    #[test]
    fn v1_line_ends_with_crlf_only() {
        assert_invalid(b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n", V1_PORT);
        assert_invalid(b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rX", V1_BARE_CR);
        assert_invalid(b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\r\n", V1_BARE_CR);
        assert_invalid(b"PROXY TCP4 1.2.3.4\r 5.6.7.8 1 2\r\n", V1_TOO_FEW);
        assert_invalid(b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\t\r\n", V1_PORT);
        assert_invalid(b"PROXY UNKNOWN\n", V1_PROTOCOL);
        // A bare LF after UNKNOWN is just ignored text: we keep waiting for the CRLF.
        assert_eq!(parse(b"PROXY UNKNOWN x\nGET /"), Parse::Incomplete);
    }

    #[test]
    fn plain_clients_are_refused_at_once() {
        assert_invalid_by(b"hello\n", 1, NOT_PROXY);
        assert_invalid_by(b"GET / HTTP/1.1\r\n", 1, NOT_PROXY);
        assert_invalid_by(b"\r\nhello", 3, NOT_PROXY);
        assert_invalid_by(b"\r\n\r\nQUIT\n", 5, NOT_PROXY);
        assert_invalid_by(b"PROX\n", 5, NOT_PROXY);
    }

    #[test]
    fn v1_proxy_followed_by_garbage() {
        assert_invalid_by(b"PROXY garbage\r\n", 7, V1_PROTOCOL);
        assert_invalid_by(b"PROXY\r\n", 6, NOT_PROXY);
        assert_invalid_by(b"PROXYTCP4 1.2.3.4 5.6.7.8 1 2\r\n", 6, NOT_PROXY);
        assert_invalid_by(b"PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n", 10, V1_PROTOCOL);
        assert_invalid_by(b"PROXY TCP 1.2.3.4 5.6.7.8 1 2\r\n", 10, V1_PROTOCOL);
        assert_invalid_by(b"PROXY UNKNOWNX\r\n", 14, V1_PROTOCOL);
        assert_invalid_by(b"PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n", 8, V1_PROTOCOL);
        assert_invalid(b"PROXY \r\n", V1_PROTOCOL);
    }

    #[test]
    fn v1_is_case_sensitive() {
        assert_invalid_by(b"proxy TCP4 1.2.3.4 5.6.7.8 1 2\r\n", 1, NOT_PROXY);
        assert_invalid_by(b"Proxy TCP4 1.2.3.4 5.6.7.8 1 2\r\n", 2, NOT_PROXY);
        assert_invalid_by(b"PROXY tcp4 1.2.3.4 5.6.7.8 1 2\r\n", 7, V1_PROTOCOL);
        assert_invalid_by(b"PROXY unknown\r\n", 7, V1_PROTOCOL);
    }

    #[test]
    fn v2_tcp_over_ipv4() {
        let (header, source) = v2_ipv4();
        assert_eq!(header.len(), 28);
        assert_valid(&header, source);
    }

    #[test]
    fn v2_tcp_over_ipv6() {
        let (header, source) = v2_ipv6();
        assert_eq!(header.len(), 52);
        assert_valid(&header, source);
    }

    #[test]
    fn v2_local_ignores_family_and_addresses() {
        assert_valid(&v2(0x20, 0x00, b""), Source::Unknown);
        let (client, server) = (addr("10.0.0.1:1"), addr("10.0.0.2:2"));
        assert_valid(&v2(0x20, 0x11, &block_v4(client, server)), Source::Unknown);
        // The family byte is not even checked, nor the length against it.
        assert_valid(&v2(0x20, 0xff, b"xyz"), Source::Unknown);
        assert_valid(&v2(0x20, 0x21, b""), Source::Unknown);
    }

    #[test]
    fn v2_unspec_is_unknown() {
        assert_valid(&v2(0x21, 0x00, b""), Source::Unknown);
        assert_valid(&v2(0x21, 0x00, b"addresses we ignore"), Source::Unknown);
    }

    #[test]
    fn v2_udp_and_unix_are_unknown() {
        assert_valid(&v2(0x21, 0x12, &[7; 12]), Source::Unknown);
        assert_valid(&v2(0x21, 0x22, &[7; 36]), Source::Unknown);
        assert_valid(&v2(0x21, 0x31, &[b'/'; 216]), Source::Unknown);
        assert_valid(&v2(0x21, 0x32, &[b'/'; 220]), Source::Unknown);
    }

    #[test]
    fn v2_tlvs_are_skipped() {
        let (client, server) = (addr("192.0.2.1:56324"), addr("198.51.100.7:8888"));
        let mut block = block_v4(client, server);
        block.extend(b"\x01\x00\x02h2"); // PP2_TYPE_ALPN "h2"
        block.extend(b"\x02\x00\x0bexample.com"); // PP2_TYPE_AUTHORITY
        block.extend(b"\x04\x00\x03\x00\x00\x00"); // PP2_TYPE_NOOP
        let header = v2(0x21, 0x11, &block);
        assert_eq!(header.len(), 16 + 12 + 5 + 14 + 6);
        assert_valid(&header, Source::Tcp { client, server });
        let (client, server) = (addr("[::1]:1"), addr("[::2]:2"));
        let mut block = block_v6(client, server);
        block.extend(b"\x05\x00\x04uid1"); // PP2_TYPE_UNIQUE_ID
        assert_valid(&v2(0x21, 0x21, &block), Source::Tcp { client, server });
    }

    #[test]
    fn v2_largest_accepted_header() {
        let (client, server) = (addr("[::1]:1"), addr("[::2]:2"));
        let mut block = block_v6(client, server);
        block.resize(MAX_HEADER - V2_FIXED, 0);
        let header = v2(0x21, 0x21, &block);
        assert_eq!(header.len(), MAX_HEADER);
        assert_valid(&header, Source::Tcp { client, server });
    }

    #[test]
    fn v2_bad_version_is_refused_at_its_byte() {
        let (mut header, _) = v2_ipv4();
        for version_command in [0x01, 0x11, 0x31, 0xf1, 0x10, 0x00] {
            header[12] = version_command;
            assert_invalid_by(&header, 13, V2_BAD_VERSION);
        }
    }

    #[test]
    fn v2_bad_command_is_refused_at_its_byte() {
        let (mut header, _) = v2_ipv4();
        for version_command in [0x22, 0x23, 0x2f] {
            header[12] = version_command;
            assert_invalid_by(&header, 13, V2_BAD_COMMAND);
        }
    }

    #[test]
    fn v2_undefined_family_is_refused_at_its_byte() {
        let (mut header, _) = v2_ipv4();
        for family in [0x01, 0x02, 0x10, 0x13, 0x20, 0x30, 0x33, 0x41, 0xff] {
            header[13] = family;
            assert_invalid_by(&header, 14, V2_BAD_FAMILY);
        }
    }

    #[test]
    fn v2_length_must_cover_the_address_block() {
        let (v4, _) = v2_ipv4();
        assert_invalid_by(
            &v2_with_len(0x21, 0x11, 11, &v4[16..27]),
            16,
            V2_SHORT_BLOCK,
        );
        assert_invalid_by(&v2_with_len(0x21, 0x11, 0, b""), 16, V2_SHORT_BLOCK);
        let (v6, _) = v2_ipv6();
        assert_invalid_by(
            &v2_with_len(0x21, 0x21, 35, &v6[16..51]),
            16,
            V2_SHORT_BLOCK,
        );
        assert_invalid_by(&v2_with_len(0x21, 0x21, 12, &v4[16..]), 16, V2_SHORT_BLOCK);
        assert_invalid_by(&v2_with_len(0x21, 0x12, 11, &[0; 11]), 16, V2_SHORT_BLOCK);
        assert_invalid_by(&v2_with_len(0x21, 0x22, 12, &[0; 12]), 16, V2_SHORT_BLOCK);
        assert_invalid_by(&v2_with_len(0x21, 0x31, 215, &[0; 215]), 16, V2_SHORT_BLOCK);
    }

    #[test]
    fn v2_over_max_header_is_refused_at_the_length() {
        let too_long = u16::try_from(MAX_HEADER - V2_FIXED + 1).expect("fits");
        let (v4, _) = v2_ipv4();
        assert_invalid_by(
            &v2_with_len(0x21, 0x11, too_long, &v4[16..]),
            16,
            V2_TOO_LONG,
        );
        assert_invalid_by(
            &v2_with_len(0x21, 0x11, u16::MAX, &v4[16..]),
            16,
            V2_TOO_LONG,
        );
        // The cap applies to LOCAL too: it bounds what we buffer, whatever the command.
        assert_invalid_by(&v2_with_len(0x20, 0x00, too_long, b""), 16, V2_TOO_LONG);
    }

    #[test]
    fn v2_following_input_is_not_part_of_the_header() {
        let (mut buf, source) = v2_ipv4();
        buf.extend(b"hello\n");
        assert_eq!(parse(&buf), Parse::Done { source, len: 28 });
        assert_eq!(&buf[28..], b"hello\n");
    }

    #[test]
    fn v1_and_v2_signatures_do_not_mix() {
        // The v1 word after the v2 signature, and the v2 signature after the v1 word.
        assert_invalid_by(b"\r\n\r\n\0\r\nQUIT\nPROXY ", 13, V2_BAD_VERSION);
        assert_invalid_by(b"PROXY \r\n\r\n\0\r\nQUIT\n", 8, V1_PROTOCOL);
    }

    /// An IPv4 or IPv6 socket address, for the property tests.
    fn any_v4() -> impl Strategy<Value = SocketAddr> {
        any::<([u8; 4], u16)>().prop_map(|(ip, port)| SocketAddr::from((ip, port)))
    }

    /// An IPv6 socket address (of any kind, mapped ones included).
    fn any_v6() -> impl Strategy<Value = SocketAddr> {
        any::<([u8; 16], u16)>().prop_map(|(ip, port)| SocketAddr::from((ip, port)))
    }

    /// A v1 line for two addresses of one family, as a proxy would write it.
    fn v1_line(client: SocketAddr, server: SocketAddr) -> Vec<u8> {
        let family = if client.is_ipv4() { "TCP4" } else { "TCP6" };
        let (ci, si, cp, sp) = (client.ip(), server.ip(), client.port(), server.port());
        format!("PROXY {family} {ci} {si} {cp} {sp}\r\n").into_bytes()
    }

    proptest! {
        #[test]
        fn v1_round_trips_ipv4(client in any_v4(), server in any_v4(), tail in any::<Vec<u8>>()) {
            let mut buf = v1_line(client, server);
            let len = buf.len();
            buf.extend(tail);
            prop_assert_eq!(consistent(&buf), Parse::Done { source: Source::Tcp { client, server }, len });
        }

        #[test]
        fn v1_round_trips_ipv6(client in any_v6(), server in any_v6(), tail in any::<Vec<u8>>()) {
            let mut buf = v1_line(client, server);
            let len = buf.len();
            buf.extend(tail);
            prop_assert_eq!(consistent(&buf), Parse::Done { source: Source::Tcp { client, server }, len });
        }

        #[test]
        fn v2_round_trips(
            client in any_v4(),
            server in any_v4(),
            client6 in any_v6(),
            server6 in any_v6(),
            tlvs in proptest::collection::vec(any::<u8>(), 0..=MAX_HEADER - 52),
            tail in any::<Vec<u8>>(),
        ) {
            for (family, mut block, source) in [
                (0x11, block_v4(client, server), Source::Tcp { client, server }),
                (0x21, block_v6(client6, server6), Source::Tcp { client: client6, server: server6 }),
            ] {
                block.extend(&tlvs);
                let mut buf = v2(0x21, family, &block);
                let len = buf.len();
                buf.extend(&tail);
                prop_assert_eq!(consistent(&buf), Parse::Done { source, len });
            }
        }

        #[test]
        fn any_bytes_keep_the_contract(start in 0..3usize, rest in proptest::collection::vec(any::<u8>(), 0..600)) {
            // Start some inputs with a signature so that the deeper paths are reached.
            let mut buf = [&b""[..], V1_SIGNATURE, V2_SIGNATURE][start].to_vec();
            buf.extend(rest);
            consistent(&buf);
        }

        #[test]
        fn mutated_headers_keep_the_contract(
            which in 0..6usize,
            edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0..3u8), 1..4),
        ) {
            // Valid headers with a few bytes replaced, inserted or removed: near misses
            // reach the checks that random bytes rarely get past.
            let mut buf = [TCP4, TCP6, TCP6_MAPPED, UNKNOWN_LONGEST, &v2_ipv4().0, &v2_ipv6().0][which].to_vec();
            for (at, byte, kind) in edits {
                let at = at.index(buf.len());
                match kind {
                    0 => buf[at] = byte,
                    1 => buf.insert(at, byte),
                    _ => { buf.remove(at); }
                }
            }
            consistent(&buf);
        }

        #[test]
        fn v1_fields_of_any_text_keep_the_contract(
            words in proptest::collection::vec("[0-9a-fA-F:.+ -]{0,8}|TCP4|TCP6|UNKNOWN", 0..8),
            crlf in any::<bool>(),
        ) {
            let mut buf = format!("PROXY {}", words.join(" ")).into_bytes();
            if crlf {
                buf.extend(b"\r\n");
            }
            consistent(&buf);
        }
    }
}
