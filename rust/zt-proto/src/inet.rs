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

/// How far an IP address reaches, as ZeroTier classes addresses (`InetAddress::ipScope`): path
/// selection prefers the more local, and a device takes managed addresses and routes by it.
/// The discriminants are stock's.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum IpScope {
    /// Not an address anything can use (0.0.0.0/8, 255.0.0.0/8, `::`).
    None = 0,
    /// Multicast (224.0.0.0/4, ff00::/8).
    Multicast = 1,
    /// Loopback (127.0.0.0/8, `::1`, fe80::1, ::ffff:127.x.x.x).
    Loopback = 2,
    /// IPv4 blocks that are public but often used privately (several military /8s, 240.0.0.0/4).
    PseudoPrivate = 3,
    /// Everything else: routable on the Internet.
    Global = 4,
    /// Link-local (169.254.0.0/16, fe80::/10).
    LinkLocal = 5,
    /// Unused by 1.x (it once meant carrier-grade NAT space, which is [`IpScope::Private`] now).
    Shared = 6,
    /// Private and test ranges (RFC 1918, 100.64.0.0/10, the documentation and benchmarking
    /// ranges, fc00::/7).
    Private = 7,
}

impl IpScope {
    /// The scope of `ip`. IPv4-mapped IPv6 addresses are global unless they map loopback, as in
    /// stock.
    #[must_use]
    pub fn of(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(ip) => Self::of_v4(ip),
            IpAddr::V6(ip) => Self::of_v6(ip),
        }
    }

    fn of_v4(ip: Ipv4Addr) -> Self {
        let o = ip.octets();
        let inside = |net: [u8; 4], bits| ipv4_prefix_contains(Ipv4Addr::from(net), bits, ip);
        match o[0] {
            0 | 255 => Self::None,
            6 | 11 | 21 | 22 | 25 | 26 | 28 | 29 | 30 | 51 | 55 | 56 => Self::PseudoPrivate,
            10 => Self::Private,
            127 => Self::Loopback,
            224..=239 => Self::Multicast,
            240..=254 => Self::PseudoPrivate,
            _ if inside([169, 254, 0, 0], 16) => Self::LinkLocal,
            _ if inside([100, 64, 0, 0], 10)
                || inside([172, 16, 0, 0], 12)
                || inside([192, 168, 0, 0], 16)
                || inside([192, 0, 2, 0], 24)
                || inside([198, 18, 0, 0], 15)
                || inside([198, 51, 100, 0], 24)
                || inside([203, 0, 113, 0], 24) =>
            {
                Self::Private
            }
            _ => Self::Global,
        }
    }

    fn of_v6(ip: Ipv6Addr) -> Self {
        let b = ip.octets();
        if b[0] == 0xff {
            return Self::Multicast;
        }
        if b[0] == 0xfe && b[1] & 0xc0 == 0x80 {
            // fe80::1 is loopback to stock; the rest of fe80::/10 is link-local.
            return if b[2..15].iter().all(|&x| x == 0) && b[15] == 1 {
                Self::Loopback
            } else {
                Self::LinkLocal
            };
        }
        if b[0] & 0xfe == 0xfc {
            return Self::Private;
        }
        if b[..9].iter().all(|&x| x == 0) && b[10] == 0xff && b[11] == 0xff && b[12] == 0x7f {
            return Self::Loopback;
        }
        if b[..15].iter().all(|&x| x == 0) {
            match b[15] {
                0 => return Self::None,
                1 => return Self::Loopback,
                _ => {}
            }
        }
        Self::Global
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
    fn scopes_are_stocks() {
        use IpScope::*;
        let cases = [
            ("0.0.0.0", None),
            ("0.1.2.3", None),
            ("255.1.2.3", None),
            ("255.255.255.255", None),
            ("224.0.0.1", Multicast),
            ("239.255.255.250", Multicast),
            ("127.0.0.1", Loopback),
            ("127.9.9.9", Loopback),
            ("6.1.1.1", PseudoPrivate),
            ("28.0.0.1", PseudoPrivate),
            ("56.7.8.9", PseudoPrivate),
            ("240.0.0.1", PseudoPrivate),
            ("254.1.1.1", PseudoPrivate),
            ("169.254.1.1", LinkLocal),
            ("169.253.1.1", Global),
            ("10.1.2.3", Private),
            ("100.64.0.1", Private),
            ("100.127.255.255", Private),
            ("100.128.0.1", Global),
            ("172.16.0.1", Private),
            ("172.31.255.255", Private),
            ("172.32.0.1", Global),
            ("192.168.1.1", Private),
            ("192.0.2.1", Private),
            ("192.0.3.1", Global),
            ("198.18.0.1", Private),
            ("198.19.255.255", Private),
            ("198.20.0.1", Global),
            ("198.51.100.7", Private),
            ("203.0.113.9", Private),
            ("8.8.8.8", Global),
            ("::", None),
            ("::1", Loopback),
            ("::2", Global),
            ("fe80::1", Loopback),
            ("fe80::2", LinkLocal),
            ("febf::1:1", LinkLocal),
            ("ff02::1", Multicast),
            ("fd00::1", Private),
            ("fc00::1", Private),
            ("2001:db8::1", Global),
            ("::ffff:127.0.0.1", Loopback),
            ("::ffff:10.0.0.1", Global),
        ];
        for (ip, scope) in cases {
            assert_eq!(IpScope::of(ip.parse().unwrap()), scope, "{ip}");
        }
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
