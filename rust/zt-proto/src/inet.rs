//! ZeroTier's `InetAddress` serialization: an IP endpoint or nothing.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;

use crate::cursor::{Reader, WireError};

/// A physical endpoint as ZeroTier carries it: `None` is the null address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct InetAddress(pub Option<SocketAddr>);

/// Error parsing the `ip/port` text form.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not an endpoint of the form ip/port (e.g. 203.0.113.1/9993 or 2001:db8::1/9993)")]
pub struct InetAddressParseError(pub String);

impl InetAddress {
    /// Bytes this address takes on the wire.
    #[must_use]
    pub fn wire_len(&self) -> usize {
        match self.0 {
            None => 1,
            Some(SocketAddr::V4(_)) => 7,
            Some(SocketAddr::V6(_)) => 19,
        }
    }

    /// Appends the wire form.
    pub fn write(&self, out: &mut Vec<u8>) {
        match self.0 {
            None => out.push(0),
            Some(SocketAddr::V4(a)) => {
                out.push(4);
                out.extend_from_slice(&a.ip().octets());
                out.extend_from_slice(&a.port().to_be_bytes());
            }
            Some(SocketAddr::V6(a)) => {
                out.push(6);
                out.extend_from_slice(&a.ip().octets());
                out.extend_from_slice(&a.port().to_be_bytes());
            }
        }
    }

    /// The endpoint `ip` with the port that follows its address on the wire.
    fn read_port_for(ip: IpAddr, r: &mut Reader<'_>) -> Result<Self, WireError> {
        Ok(Self(Some(SocketAddr::new(ip, r.u16()?))))
    }

    /// Reads the wire form; the reserved kinds 1, 2 and 3 are skipped and read as null.
    ///
    /// # Errors
    /// Truncated input or an unknown type byte.
    pub fn read(r: &mut Reader<'_>) -> Result<Self, WireError> {
        match r.u8()? {
            0 => Ok(Self(None)),
            4 => Self::read_port_for(IpAddr::from(r.array::<4>()?), r),
            6 => Self::read_port_for(IpAddr::from(r.array::<16>()?), r),
            1 | 2 => {
                r.bytes(6)?;
                Ok(Self(None))
            }
            3 => {
                let n = r.u16()?;
                r.bytes(usize::from(n))?;
                Ok(Self(None))
            }
            t => Err(WireError::BadValue {
                what: "InetAddress type",
                value: u64::from(t),
            }),
        }
    }
}

impl fmt::Display for InetAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            None => f.write_str("0.0.0.0/0"),
            Some(a) => write!(f, "{}/{}", a.ip(), a.port()),
        }
    }
}

impl FromStr for InetAddress {
    type Err = InetAddressParseError;

    /// Parses ZeroTier's `ip/port` form; `ip:port` and `[ip6]:port` are accepted too.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || InetAddressParseError(s.to_owned());
        if let Some((ip, port)) = s.rsplit_once('/') {
            let ip = IpAddr::from_str(ip).map_err(|_| err())?;
            let port = port.parse::<u16>().map_err(|_| err())?;
            return Ok(Self(Some(SocketAddr::new(ip, port))));
        }
        SocketAddr::from_str(s)
            .map(|a| Self(Some(a)))
            .map_err(|_| err())
    }
}

impl From<SocketAddr> for InetAddress {
    fn from(a: SocketAddr) -> Self {
        Self(Some(a))
    }
}

/// Whether `addr` lies in `net`/`bits` as ZeroTier tests it (`InetAddress::containsAddress`, the
/// IPv4 rule matches): the leading `bits` bits of both are compared. Out-of-range prefix
/// lengths shift as x86-64 stock builds do (the count is taken modulo 32).
#[must_use]
pub fn ipv4_prefix_contains(net: Ipv4Addr, bits: u32, addr: Ipv4Addr) -> bool {
    if bits == 0 {
        return true;
    }
    let shift = 32u32.wrapping_sub(bits) & 31;
    (u32::from(addr) >> shift) == (u32::from(net) >> shift)
}

/// Whether `addr` masked to `bits` equals `net` (`InetAddress::containsAddress`, the IPv6 rule
/// matches). As stock, `net` itself is not masked, so an address with host bits set never
/// contains anything; prefix lengths above 128 shift as x86-64 stock builds do.
#[must_use]
pub fn ipv6_prefix_contains(net: Ipv6Addr, bits: u32, addr: Ipv6Addr) -> bool {
    let mask = if bits == 0 {
        0
    } else {
        let high = if bits >= 64 {
            u64::MAX
        } else {
            u64::MAX << (64 - bits)
        };
        let low = if bits <= 64 {
            0
        } else {
            u64::MAX << (128u32.wrapping_sub(bits) & 63)
        };
        (u128::from(high) << 64) | u128::from(low)
    };
    u128::from(addr) & mask == u128::from(net)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rt(a: InetAddress) {
        let mut v = Vec::new();
        a.write(&mut v);
        assert_eq!(v.len(), a.wire_len());
        let mut r = Reader::new(&v);
        assert_eq!(InetAddress::read(&mut r).unwrap(), a);
        assert!(r.is_empty());
    }

    #[test]
    fn wire_and_text() {
        let v4: InetAddress = "203.0.113.7/9993".parse().unwrap();
        let v6: InetAddress = "2001:db8::1/9993".parse().unwrap();
        assert_eq!(v4.to_string(), "203.0.113.7/9993");
        assert_eq!(v6.to_string(), "2001:db8::1/9993");
        assert_eq!("[2001:db8::1]:9993".parse::<InetAddress>().unwrap(), v6);
        rt(v4);
        rt(v6);
        rt(InetAddress(None));
        assert!("203.0.113.7".parse::<InetAddress>().is_err());
        assert!("203.0.113.7/99999".parse::<InetAddress>().is_err());
        let mut r = Reader::new(&[9u8, 0, 0]);
        assert!(InetAddress::read(&mut r).is_err());
        let mut r = Reader::new(&[3u8, 0, 2, 1, 1]);
        assert_eq!(InetAddress::read(&mut r).unwrap(), InetAddress(None));
    }

    #[test]
    fn odd_prefix_lengths() {
        let v4 = |s: &str| s.parse::<Ipv4Addr>().expect("literal");
        let v6 = |s: &str| s.parse::<Ipv6Addr>().expect("literal");
        // Beyond the address width, x86-64 shift semantics: /33 compares the top bit only.
        assert!(ipv4_prefix_contains(v4("128.0.0.0"), 33, v4("200.1.2.3")));
        assert!(!ipv4_prefix_contains(v4("128.0.0.0"), 33, v4("100.1.2.3")));
        assert!(ipv4_prefix_contains(v4("10.0.0.1"), 64, v4("10.0.0.1")));
        // /129 keeps the top 64 bits and the top bit of the low half.
        assert!(ipv6_prefix_contains(
            v6("fd00::"),
            129,
            v6("fd00::7fff:0:0:1")
        ));
        assert!(!ipv6_prefix_contains(
            v6("fd00::"),
            129,
            v6("fd00::8000:0:0:0")
        ));
        assert!(ipv6_prefix_contains(v6("fd00::1"), 128, v6("fd00::1")));
        assert!(ipv6_prefix_contains(v6("::"), 0, v6("fd00::1")));
        assert!(!ipv6_prefix_contains(v6("fd00::1"), 0, v6("fd00::1")));
    }
}
