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

    /// Reads the wire form; the reserved kinds 1, 2 and 3 are skipped and read as null.
    ///
    /// # Errors
    /// Truncated input or an unknown type byte.
    pub fn read(r: &mut Reader<'_>) -> Result<Self, WireError> {
        match r.u8()? {
            0 => Ok(Self(None)),
            4 => {
                let ip: [u8; 4] = r.array()?;
                let port = r.u16()?;
                Ok(Self(Some(SocketAddr::new(
                    IpAddr::V4(Ipv4Addr::from(ip)),
                    port,
                ))))
            }
            6 => {
                let ip: [u8; 16] = r.array()?;
                let port = r.u16()?;
                Ok(Self(Some(SocketAddr::new(
                    IpAddr::V6(Ipv6Addr::from(ip)),
                    port,
                ))))
            }
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
}
