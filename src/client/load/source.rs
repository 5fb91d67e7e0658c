//! `--source A-B`: spreading connections over several local addresses.
//!
//! A TCP connection is named by its four-tuple (source address, source port,
//! destination address, destination port). Towards one server address and
//! port, one source address offers only the ephemeral port range (about
//! 28,000 ports on Linux), so one source address cannot open 100,000
//! connections. On loopback every address in 127.0.0.0/8 is ours, so we bind
//! each socket to the next address of a range, round-robin, before connecting:
//! twenty addresses give over half a million possible connections.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// An inclusive range of local addresses of one family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SourceRange {
    first: IpAddr,
    /// How many addresses, at least 1.
    count: u128,
}

/// Why a `--source` argument was not understood.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceError(pub String);

impl fmt::Display for SourceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for SourceError {}

impl SourceRange {
    /// Parses `A` or `A-B` (both IPv4 or both IPv6, `A <= B`).
    pub fn parse(text: &str) -> Result<SourceRange, SourceError> {
        let (a, b) = text.split_once('-').unwrap_or((text, text));
        let address = |s: &str| {
            s.trim()
                .parse::<IpAddr>()
                .map_err(|_| SourceError(format!("'{s}' is not an IP address")))
        };
        let (first, last) = (address(a)?, address(b)?);
        let (lo, hi) = match (first, last) {
            (IpAddr::V4(x), IpAddr::V4(y)) => (u128::from(u32::from(x)), u128::from(u32::from(y))),
            (IpAddr::V6(x), IpAddr::V6(y)) => (u128::from(x), u128::from(y)),
            _ => return Err(SourceError(format!("'{text}' mixes IPv4 and IPv6"))),
        };
        if hi < lo {
            return Err(SourceError(format!("'{text}' ends before it starts")));
        }
        Ok(SourceRange {
            first,
            count: hi - lo + 1,
        })
    }

    /// The `n`-th address, wrapping around: connection `n` binds to it.
    pub fn nth(&self, n: u64) -> IpAddr {
        let offset = u128::from(n) % self.count;
        match self.first {
            // Parsing guarantees first + offset stays inside the family.
            IpAddr::V4(a) => IpAddr::V4(Ipv4Addr::from((u128::from(u32::from(a)) + offset) as u32)),
            IpAddr::V6(a) => IpAddr::V6(Ipv6Addr::from(u128::from(a) + offset)),
        }
    }

    /// Whether the range is IPv4 (else IPv6).
    pub fn is_ipv4(&self) -> bool {
        self.first.is_ipv4()
    }

    /// How many addresses the range holds.
    pub fn len(&self) -> u128 {
        self.count
    }

    /// Never true: a range holds at least one address. (Here for clippy's
    /// `len_without_is_empty`.)
    pub fn is_empty(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_range_of_loopback_addresses() {
        let range = SourceRange::parse("127.0.0.1-127.0.0.20").unwrap();
        assert_eq!(range.len(), 20);
        assert_eq!(range.nth(0).to_string(), "127.0.0.1");
        assert_eq!(range.nth(19).to_string(), "127.0.0.20");
        assert_eq!(range.nth(20).to_string(), "127.0.0.1", "wraps around");
        assert!(range.is_ipv4());
    }

    #[test]
    fn ranges_cross_octet_boundaries() {
        let range = SourceRange::parse("10.0.0.255-10.0.1.1").unwrap();
        assert_eq!(range.len(), 3);
        assert_eq!(range.nth(1).to_string(), "10.0.1.0");
    }

    #[test]
    fn single_addresses_and_ipv6() {
        let one = SourceRange::parse("127.0.0.5").unwrap();
        assert_eq!(
            (one.len(), one.nth(7).to_string()),
            (1, "127.0.0.5".to_string())
        );
        let six = SourceRange::parse("::1-::3").unwrap();
        assert_eq!((six.len(), six.nth(2).to_string()), (3, "::3".to_string()));
        assert!(!six.is_ipv4());
    }

    #[test]
    fn bad_ranges_are_refused() {
        assert!(SourceRange::parse("127.0.0.9-127.0.0.1").is_err());
        assert!(SourceRange::parse("127.0.0.1-::1").is_err());
        assert!(SourceRange::parse("localhost").is_err());
        assert!(SourceRange::parse("127.0.0.1-").is_err());
        assert!(SourceRange::parse("").is_err());
    }
}
