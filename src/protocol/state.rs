//! Saved state: the little binary codec that carries a connection across an upgrade.
//!
//! On SIGUSR2 the daemon replaces its own program with a new one (see
//! [`crate::reactor::upgrade`]) and hands every connection over. A socket travels as a
//! descriptor; everything else about the connection is a *value* (its state, its
//! buffers, its deadlines), because the state machines are sans-IO. This module writes
//! such values as bytes and reads them back.
//!
//! The format is deliberately dull: little-endian integers of a fixed width, byte
//! strings as a `u32` length and the bytes, a `bool` as one byte that must be 0 or 1.
//! We write it by hand rather than derive it (serde with bincode or postcard would do
//! it in a line) for two reasons: the daemon has no serialisation dependency, and a
//! reader should be able to see, field by field, what crosses from one program to the
//! next. The version in the header (see the reactor's `upgrade::state`) says which
//! layout follows; the fields carry no names or tags of their own.
//!
//! Reading never trusts the input. Every read checks that the bytes are there, so a
//! truncated or garbled file gives [`Malformed`] and never a panic, and a length
//! prefix can never make us allocate more than the input holds.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6};

use crate::protocol::tick::Tick;

/// Builds a saved state: appends fields to a byte vector.
#[derive(Debug, Default)]
pub struct Writer {
    /// Everything written so far.
    bytes: Vec<u8>,
}

impl Writer {
    /// An empty writer.
    pub fn new() -> Writer {
        Writer::default()
    }

    /// One byte.
    pub fn u8(&mut self, v: u8) {
        self.bytes.push(v);
    }

    /// A `u16`, little-endian.
    pub fn u16(&mut self, v: u16) {
        self.bytes.extend_from_slice(&v.to_le_bytes());
    }

    /// A `u32`, little-endian.
    pub fn u32(&mut self, v: u32) {
        self.bytes.extend_from_slice(&v.to_le_bytes());
    }

    /// A `u64`, little-endian.
    pub fn u64(&mut self, v: u64) {
        self.bytes.extend_from_slice(&v.to_le_bytes());
    }

    /// A `bool` as one byte, 0 or 1.
    pub fn bool(&mut self, v: bool) {
        self.u8(u8::from(v));
    }

    /// A count or a length. Every count we save is bounded far below 4 GiB (buffers by
    /// `--max-line` and `--max-pending`, at most 1 GiB; connections by the fd limit), so
    /// a `u32` holds it; a larger value is a bug we would rather see than truncate.
    pub fn length(&mut self, n: usize) {
        self.u32(u32::try_from(n).expect("saved lengths are bounded below 4 GiB"));
    }

    /// A byte string: its length, then its bytes.
    pub fn bytes(&mut self, v: &[u8]) {
        self.length(v.len());
        self.bytes.extend_from_slice(v);
    }

    /// Fixed bytes with no length (a magic number: the reader knows its size).
    pub fn raw(&mut self, v: &[u8]) {
        self.bytes.extend_from_slice(v);
    }

    /// A socket address: family (4 or 6), address bytes, port; IPv6 adds its flow
    /// info and scope id.
    pub fn addr(&mut self, addr: SocketAddr) {
        match addr {
            SocketAddr::V4(a) => {
                self.u8(4);
                self.raw(&a.ip().octets());
            }
            SocketAddr::V6(a) => {
                self.u8(6);
                self.raw(&a.ip().octets());
                self.u32(a.flowinfo());
                self.u32(a.scope_id());
            }
        }
        self.u16(addr.port());
    }

    /// A deadline, as milliseconds from `now` (0 if it is already due; `u64::MAX` for
    /// [`Tick::NEVER`]). A [`Tick`] counts from the start of the loop that made it,
    /// so only the distance means anything to another program.
    pub fn deadline(&mut self, at: Tick, now: Tick) {
        let ms = match at.get() {
            None => u64::MAX,
            Some(at) => at.as_millis().saturating_sub(now.as_millis()),
        };
        self.u64(ms);
    }

    /// The bytes written.
    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }
}

/// A saved state that cannot be read: truncated, garbled, or from a layout we do not
/// know. The text says what was wrong, for the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Malformed(pub &'static str);

impl fmt::Display for Malformed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "malformed saved state: {}", self.0)
    }
}

impl std::error::Error for Malformed {}

impl From<Malformed> for std::io::Error {
    fn from(e: Malformed) -> std::io::Error {
        std::io::Error::new(std::io::ErrorKind::InvalidData, e)
    }
}

/// Reads a saved state field by field, in the order it was written.
#[derive(Debug)]
pub struct Reader<'a> {
    /// What is left to read.
    rest: &'a [u8],
}

/// The result of reading one field.
pub type Read<T> = Result<T, Malformed>;

impl<'a> Reader<'a> {
    /// A reader over `bytes`.
    pub fn new(bytes: &'a [u8]) -> Reader<'a> {
        Reader { rest: bytes }
    }

    /// The next `n` bytes, or [`Malformed`] if fewer are left.
    pub fn raw(&mut self, n: usize) -> Read<&'a [u8]> {
        if n > self.rest.len() {
            return Err(Malformed("truncated"));
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }

    /// The next `N` bytes as an array.
    fn array<const N: usize>(&mut self) -> Read<[u8; N]> {
        let mut out = [0; N];
        out.copy_from_slice(self.raw(N)?);
        Ok(out)
    }

    /// One byte.
    pub fn u8(&mut self) -> Read<u8> {
        Ok(self.array::<1>()?[0])
    }

    /// A little-endian `u16`.
    pub fn u16(&mut self) -> Read<u16> {
        self.array().map(u16::from_le_bytes)
    }

    /// A little-endian `u32`.
    pub fn u32(&mut self) -> Read<u32> {
        self.array().map(u32::from_le_bytes)
    }

    /// A little-endian `u64`.
    pub fn u64(&mut self) -> Read<u64> {
        self.array().map(u64::from_le_bytes)
    }

    /// A `bool`: a byte that must be 0 or 1.
    pub fn bool(&mut self) -> Read<bool> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(Malformed("a flag is neither 0 nor 1")),
        }
    }

    /// A count or length written by [`Writer::length`].
    pub fn length(&mut self) -> Read<usize> {
        usize::try_from(self.u32()?).map_err(|_| Malformed("a length does not fit"))
    }

    /// A count of items that each take at least `min_size` bytes: refused at once when
    /// the input is too short to hold them, so that garbage cannot make us reserve room
    /// for billions of items.
    pub fn count(&mut self, min_size: usize) -> Read<usize> {
        let n = self.length()?;
        if n.saturating_mul(min_size.max(1)) > self.rest.len() {
            return Err(Malformed("a count exceeds the data"));
        }
        Ok(n)
    }

    /// A byte string written by [`Writer::bytes`], at most `max` bytes long.
    pub fn bytes(&mut self, max: usize) -> Read<&'a [u8]> {
        let n = self.length()?;
        if n > max {
            return Err(Malformed("a buffer is longer than its limit"));
        }
        self.raw(n)
    }

    /// A socket address written by [`Writer::addr`].
    pub fn addr(&mut self) -> Read<SocketAddr> {
        match self.u8()? {
            4 => {
                let octets: [u8; 4] = self.array()?;
                let ip = IpAddr::V4(Ipv4Addr::from(octets));
                Ok(SocketAddr::new(ip, self.u16()?))
            }
            6 => {
                let octets: [u8; 16] = self.array()?;
                let (flow, scope) = (self.u32()?, self.u32()?);
                let ip = Ipv6Addr::from(octets);
                Ok(SocketAddr::V6(SocketAddrV6::new(
                    ip,
                    self.u16()?,
                    flow,
                    scope,
                )))
            }
            _ => Err(Malformed("an address family that is neither 4 nor 6")),
        }
    }

    /// A deadline written by [`Writer::deadline`], as a tick of the loop whose time
    /// is now `now`.
    pub fn deadline(&mut self, now: Tick) -> Read<Tick> {
        Ok(match self.u64()? {
            u64::MAX => Tick::NEVER,
            // Far-future deadlines stay real ones: one below NEVER at most.
            ms => Tick::from_millis(now.as_millis().saturating_add(ms).min(u64::MAX - 1)),
        })
    }

    /// Succeeds only when everything has been read: trailing bytes mean the writer and
    /// the reader disagree about the layout.
    pub fn finish(self) -> Read<()> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(Malformed("trailing bytes"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_come_back_in_order() {
        let mut w = Writer::new();
        w.u8(7);
        w.u16(0xBEEF);
        w.u32(70_000);
        w.u64(u64::MAX);
        w.bool(true);
        w.bytes(b"half a li");
        w.addr("[2001:db8::1%3]:8888".parse().unwrap());
        w.addr("192.0.2.1:7".parse().unwrap());
        let now = Tick::from_millis(5000);
        w.deadline(Tick::from_millis(7000), now);
        w.deadline(Tick::from_millis(1000), now);
        w.deadline(Tick::NEVER, now);
        let bytes = w.into_bytes();
        let mut r = Reader::new(&bytes);
        assert_eq!(r.u8(), Ok(7));
        assert_eq!(r.u16(), Ok(0xBEEF));
        assert_eq!(r.u32(), Ok(70_000));
        assert_eq!(r.u64(), Ok(u64::MAX));
        assert_eq!(r.bool(), Ok(true));
        assert_eq!(r.bytes(100), Ok(&b"half a li"[..]));
        assert_eq!(r.addr(), Ok("[2001:db8::1%3]:8888".parse().unwrap()));
        assert_eq!(r.addr(), Ok("192.0.2.1:7".parse().unwrap()));
        // The new loop's clock reads 10 here: a deadline 2 s away is still 2 s away,
        // one already past is due at once, none stays none.
        let now = Tick::from_millis(10);
        assert_eq!(r.deadline(now), Ok(Tick::from_millis(2010)));
        assert_eq!(r.deadline(now), Ok(now));
        assert_eq!(r.deadline(now), Ok(Tick::NEVER));
        assert_eq!(r.finish(), Ok(()));
    }

    #[test]
    fn short_or_lying_input_is_an_error_not_a_panic() {
        assert_eq!(Reader::new(&[1, 2, 3]).u32(), Err(Malformed("truncated")));
        assert!(Reader::new(&[2]).bool().is_err());
        // A length of 4 GiB with three bytes behind it.
        let mut r = Reader::new(&[0xFF, 0xFF, 0xFF, 0xFF, 1, 2, 3]);
        assert!(r.bytes(usize::MAX).is_err());
        let mut r = Reader::new(&[0xFF, 0xFF, 0xFF, 0xFF, 1, 2, 3]);
        assert!(r.count(1).is_err());
        let mut r = Reader::new(&[5, 0, 0, 0, 1, 2, 3, 4, 5]);
        assert_eq!(
            r.bytes(4),
            Err(Malformed("a buffer is longer than its limit"))
        );
        assert!(Reader::new(&[0]).finish().is_err());
    }
}
