//! The underlay: the node's physical UDP sockets, one IPv4 and one IPv6 (v6-only) socket on the
//! same port (the overlay's sockets are in [`crate::sockets`]).

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;

use mio::net::UdpSocket;
use mio::{Interest, Registry, Token};
use socket2::{Domain, Protocol, SockRef, Socket, Type};
use zt_proto::{LocalSocket, Transmit, crypto::SecureRandom};

use crate::rng::OsRng;

/// Largest datagram read (ZeroTier's packets are at most 10 KiB).
pub const RECV_BUFFER: usize = 16 * 1024;
const RANDOM_PORT_TRIES: usize = 64;

/// An IP prefix such as `127.0.0.0/8` or `2001:db8::/32`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IpPrefix {
    /// Network address.
    pub addr: IpAddr,
    /// Prefix length.
    pub len: u8,
}

impl IpPrefix {
    /// Whether `ip` lies inside.
    #[must_use]
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let bits = u32::from(self.len.min(32));
                bits == 0 || (u32::from(n) ^ u32::from(a)) >> (32 - bits) == 0
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let bits = u32::from(self.len.min(128));
                bits == 0 || (u128::from(n) ^ u128::from(a)) >> (128 - bits) == 0
            }
            _ => false,
        }
    }
}

impl FromStr for IpPrefix {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (a, l) = s
            .trim()
            .split_once('/')
            .ok_or_else(|| format!("{s:?} is not ip/len"))?;
        let addr: IpAddr = a
            .parse()
            .map_err(|_| format!("{a:?} is not an IP address"))?;
        let len: u8 = l
            .parse()
            .map_err(|_| format!("{l:?} is not a prefix length"))?;
        if len > if addr.is_ipv4() { 32 } else { 128 } {
            return Err(format!("prefix length {len} too long for {addr}"));
        }
        Ok(Self { addr, len })
    }
}

/// Parses a comma-separated prefix list (`ZT_ALLOWED_DESTINATIONS`).
///
/// # Errors
/// A malformed entry.
pub fn parse_prefixes(s: &str) -> Result<Vec<IpPrefix>, String> {
    s.split(',')
        .filter(|x| !x.trim().is_empty())
        .map(IpPrefix::from_str)
        .collect()
}

/// Bound sockets.
#[derive(Debug)]
pub struct UdpSockets {
    socks: Vec<(LocalSocket, UdpSocket, SocketAddr)>,
    /// Which sockets are registered with a poller.
    watched: Vec<bool>,
    port: u16,
    allowed: Option<Vec<IpPrefix>>,
}

fn bind_one(addr: SocketAddr) -> io::Result<UdpSocket> {
    let domain = if addr.is_ipv4() {
        Domain::IPV4
    } else {
        Domain::IPV6
    };
    let s = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        s.set_only_v6(true)?;
    }
    s.set_nonblocking(true)?;
    // Generous buffers: a root or a busy node receives bursts.
    let _ = s.set_recv_buffer_size(4 << 20);
    let _ = s.set_send_buffer_size(4 << 20);
    s.bind(&addr.into())?;
    Ok(UdpSocket::from_std(s.into()))
}

impl UdpSockets {
    /// Binds `port` (0 = a random port from 20000–65499) on IPv4 and, when `ipv6`, IPv6.
    /// IPv6 is skipped when the host has none.
    ///
    /// # Errors
    /// The port is taken (or no random port could be bound).
    pub fn bind(port: u16, ipv6: bool) -> io::Result<Self> {
        if port != 0 {
            return Self::bind_port(port, ipv6);
        }
        let mut last = io::Error::new(io::ErrorKind::AddrInUse, "no free port");
        for _ in 0..RANDOM_PORT_TRIES {
            let mut b = [0u8; 2];
            OsRng.fill(&mut b);
            let p = 20_000 + u16::from_le_bytes(b) % 45_500;
            match Self::bind_port(p, ipv6) {
                Ok(s) => return Ok(s),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    fn bind_port(port: u16, ipv6: bool) -> io::Result<Self> {
        let v4 = SocketAddr::from((Ipv4Addr::UNSPECIFIED, port));
        let mut socks = vec![(LocalSocket(0), bind_one(v4)?, v4)];
        if ipv6 {
            let v6 = SocketAddr::from((Ipv6Addr::UNSPECIFIED, port));
            match bind_one(v6) {
                Ok(s) => socks.push((LocalSocket(1), s, v6)),
                Err(e) if e.kind() == io::ErrorKind::AddrInUse => return Err(e),
                Err(e) => log::info!(target: "zt.node", "no IPv6 socket: {e}"),
            }
        }
        Ok(Self {
            watched: vec![false; socks.len()],
            socks,
            port,
            allowed: None,
        })
    }

    /// Restricts destinations to `allowed` (None = anywhere). Sends elsewhere fail with
    /// `PermissionDenied` and never reach the OS.
    pub fn set_allowed_destinations(&mut self, allowed: Option<Vec<IpPrefix>>) {
        self.allowed = allowed;
    }

    /// The bound port.
    #[must_use]
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The sockets as the core sees them.
    #[must_use]
    pub fn locals(&self) -> Vec<(LocalSocket, SocketAddr)> {
        self.socks.iter().map(|(l, _, a)| (*l, *a)).collect()
    }

    /// Registers every socket that is not (any more) for readability; socket `i` gets token
    /// `first + i`.
    ///
    /// # Errors
    /// The poller refused (the sockets registered before stay so).
    pub fn register(&mut self, registry: &Registry, first: usize) -> io::Result<()> {
        for (i, (_, s, _)) in self.socks.iter_mut().enumerate() {
            if !self.watched[i] {
                registry.register(s, Token(first + i), Interest::READABLE)?;
                self.watched[i] = true;
            }
        }
        Ok(())
    }

    /// Takes every registered socket out of `registry` (see [`Self::register`]).
    ///
    /// # Errors
    /// The poller refused (the sockets taken out before stay out).
    pub fn deregister(&mut self, registry: &Registry) -> io::Result<()> {
        for (i, (_, s, _)) in self.socks.iter_mut().enumerate() {
            if self.watched[i] {
                registry.deregister(s)?;
                self.watched[i] = false;
            }
        }
        Ok(())
    }

    /// The sockets' descriptors, in index order (to wait on from another thread).
    #[cfg(unix)]
    #[must_use]
    pub fn raw_fds(&self) -> Vec<std::os::fd::RawFd> {
        use std::os::fd::AsRawFd;
        self.socks.iter().map(|(_, s, _)| s.as_raw_fd()).collect()
    }

    /// Sends one datagram (with its one-off TTL, if any).
    ///
    /// # Errors
    /// The OS refused (unreachable, buffer full, …).
    pub fn send(&self, t: &Transmit) -> io::Result<()> {
        if let Some(allowed) = &self.allowed
            && !allowed.iter().any(|p| p.contains(t.to.ip()))
        {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!("{} is outside the allowed destinations", t.to),
            ));
        }
        let Some((_, sock, _)) = self.socks.iter().find(|(l, _, _)| *l == t.local) else {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                "no such local socket",
            ));
        };
        match t.ttl {
            None => sock.send_to(&t.data, t.to).map(|_| ()),
            Some(ttl) => {
                let sref = SockRef::from(sock);
                let v6 = t.to.is_ipv6();
                let old = if v6 {
                    sref.unicast_hops_v6()?
                } else {
                    sref.ttl_v4()?
                };
                if v6 {
                    sref.set_unicast_hops_v6(ttl)?
                } else {
                    sref.set_ttl_v4(ttl)?
                }
                let r = sock.send_to(&t.data, t.to).map(|_| ());
                if v6 {
                    sref.set_unicast_hops_v6(old)?
                } else {
                    sref.set_ttl_v4(old)?
                }
                r
            }
        }
    }

    /// Reads the queued datagrams of socket `index`, at most `limit` of them, calling `f` for
    /// each.
    ///
    /// # Errors
    /// A receive error other than "would block".
    pub fn recv_all(
        &self,
        index: usize,
        buf: &mut [u8],
        limit: usize,
        mut f: impl FnMut(LocalSocket, SocketAddr, &[u8]),
    ) -> io::Result<()> {
        let Some((local, sock, _)) = self.socks.get(index) else {
            return Ok(());
        };
        for _ in 0..limit {
            match sock.recv_from(buf) {
                Ok((n, from)) => f(*local, from, &buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // ICMP errors surface as ECONNREFUSED on some systems: not fatal.
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_parse_and_match() {
        let p = parse_prefixes("127.0.0.0/8, ::1/128,2001:db8::/32").unwrap();
        let ok = |ip: &str| p.iter().any(|x| x.contains(ip.parse().unwrap()));
        assert!(ok("127.1.2.3") && ok("::1") && ok("2001:db8::5") && ok("::ffff:127.0.0.1"));
        assert!(!ok("8.8.8.8") && !ok("2001:db9::1") && !ok("128.0.0.1"));
        assert!(parse_prefixes("1.2.3.4").is_err());
        assert!(parse_prefixes("1.2.3.4/33").is_err());
        assert_eq!(parse_prefixes("").unwrap(), vec![]);
    }

    #[test]
    fn filtered_sends_never_reach_the_os() {
        let mut u = UdpSockets::bind(0, false).unwrap();
        u.set_allowed_destinations(Some(parse_prefixes("127.0.0.0/8").unwrap()));
        let t = Transmit {
            local: LocalSocket(0),
            to: "192.0.2.1:9993".parse().unwrap(),
            data: vec![1],
            ttl: None,
        };
        assert_eq!(
            u.send(&t).unwrap_err().kind(),
            io::ErrorKind::PermissionDenied
        );
        let me = SocketAddr::from(([127, 0, 0, 1], u.port()));
        u.send(&Transmit { to: me, ..t }).unwrap();
    }
}
