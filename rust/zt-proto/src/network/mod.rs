//! Virtual networks: identifiers and address derivations (this module), configs ([`config`]),
//! credentials ([`credentials`]) and flow rules ([`rules`], [`filter`]).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use crate::address::{Address, parse_hex_digits};

pub(crate) mod config;
pub(crate) mod credentials;
pub(crate) mod filter;
pub(crate) mod rules;

/// A 64-bit network ID: the controller's address in the top 40 bits, a number below.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NetworkId(pub u64);

/// Error parsing a network ID.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a network ID is 16 hexadecimal digits, got {0:?}")]
pub struct NetworkIdParseError(pub String);

/// What an ad-hoc network ID (top byte 0xff) describes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AdHoc {
    /// `ff SSSS EEEE 000000`: IPv6 only, TCP/UDP to ports start..=end.
    PortRange {
        /// First port.
        start: u16,
        /// Last port.
        end: u16,
    },
    /// `ff AA hhhhhhhhhh 01`: IPv4 `AA.0.0.0/8` (and 6plane), optional hub.
    Ipv4 {
        /// First octet of the /8.
        octet: u8,
        /// Hub node (0 = none).
        hub: u64,
    },
}

impl NetworkId {
    /// The controller's address (top 40 bits).
    #[must_use]
    pub fn controller(self) -> Address {
        Address::from_u64_truncating(self.0 >> 24)
    }

    /// The port-range ad-hoc network for ports `start..=end` (libzt's
    /// `zts_net_compute_adhoc_id`).
    #[must_use]
    pub fn adhoc(start: u16, end: u16) -> Self {
        Self((0xff << 56) | (u64::from(start) << 40) | (u64::from(end) << 24))
    }

    /// Whether the ID is ad-hoc (no controller), and which kind.
    #[must_use]
    pub fn adhoc_kind(self) -> Option<AdHoc> {
        if self.0 >> 56 != 0xff {
            return None;
        }
        if self.0 & 0xff_ffff == 0 {
            return Some(AdHoc::PortRange {
                start: ((self.0 >> 40) & 0xffff) as u16,
                end: ((self.0 >> 24) & 0xffff) as u16,
            });
        }
        if self.0 & 0xff == 0x01 {
            return Some(AdHoc::Ipv4 {
                octet: ((self.0 >> 48) & 0xff) as u8,
                hub: (self.0 >> 8) & 0xff_ffff_ffff,
            });
        }
        None
    }

    /// The member's rfc4193 address (`fd` ‖ network ID ‖ `99 93` ‖ node address, /88).
    #[must_use]
    pub fn rfc4193(self, node: Address) -> Ipv6Addr {
        let mut b = [0u8; 16];
        b[0] = 0xfd;
        b[1..9].copy_from_slice(&self.0.to_be_bytes());
        b[9] = 0x99;
        b[10] = 0x93;
        b[11..16].copy_from_slice(&node.to_bytes());
        Ipv6Addr::from(b)
    }

    /// The member's 6plane address (`fc` ‖ folded network ID ‖ node address ‖ `::1`, /40).
    #[must_use]
    pub fn sixplane(self, node: Address) -> Ipv6Addr {
        let mut b = [0u8; 16];
        b[0] = 0xfc;
        let folded = ((self.0 >> 32) as u32) ^ (self.0 as u32);
        b[1..5].copy_from_slice(&folded.to_be_bytes());
        b[5..10].copy_from_slice(&node.to_bytes());
        b[15] = 0x01;
        Ipv6Addr::from(b)
    }

    /// The member's MAC address on this network.
    #[must_use]
    pub fn mac(self, node: Address) -> Mac {
        Mac((u64::from(first_octet(self)) << 40) | self.mix(node.to_u64()))
    }

    /// The node a member MAC on this network belongs to (`None` if the MAC is not a member MAC
    /// of this network).
    #[must_use]
    pub(crate) fn node_of(self, mac: Mac) -> Option<Address> {
        if (mac.0 >> 40) as u8 != first_octet(self) {
            return None;
        }
        Some(Address::from_u64_truncating(
            self.mix(mac.0 & 0xff_ffff_ffff),
        ))
    }

    /// XORs the 5 bytes of `v` (most significant first) with network ID bytes 1..=5 (bits 8–15
    /// for the first, … bits 40–47 for the last). Its own inverse: maps node bits to MAC bits
    /// and back.
    fn mix(self, v: u64) -> u64 {
        let mut out = 0u64;
        for i in 0..5 {
            let shift = 8 * (4 - i);
            out |= (((v >> shift) & 0xff) ^ ((self.0 >> (8 * (i + 1))) & 0xff)) << shift;
        }
        out
    }
}

fn first_octet(nwid: NetworkId) -> u8 {
    let o = ((nwid.0 & 0xfe) | 0x02) as u8;
    if o == 0x52 { 0x32 } else { o }
}

impl fmt::Display for NetworkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl FromStr for NetworkId {
    type Err = NetworkIdParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_hex_digits(s, 16)
            .map(Self)
            .ok_or_else(|| NetworkIdParseError(s.to_owned()))
    }
}

/// A 48-bit Ethernet MAC address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Mac(pub u64);

impl Mac {
    /// ff:ff:ff:ff:ff:ff.
    pub const BROADCAST: Mac = Mac(0xffff_ffff_ffff);

    /// The 6 bytes.
    #[must_use]
    pub fn to_bytes(self) -> [u8; 6] {
        let b = self.0.to_be_bytes();
        [b[2], b[3], b[4], b[5], b[6], b[7]]
    }

    /// From 6 bytes.
    #[must_use]
    pub fn from_bytes(b: &[u8; 6]) -> Self {
        Self(b.iter().fold(0u64, |a, &x| (a << 8) | u64::from(x)))
    }

    /// Whether the group bit is set.
    #[must_use]
    pub(crate) fn is_multicast(self) -> bool {
        (self.0 >> 40) & 1 == 1
    }
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.to_bytes();
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

/// A multicast group: a MAC and a 32-bit "additional distinguishing information".
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MulticastGroup {
    /// The group MAC.
    pub mac: Mac,
    /// ADI.
    pub adi: u32,
}

impl MulticastGroup {
    /// The group ARP requests for `ip` go to (broadcast MAC, ADI = the address).
    #[must_use]
    pub fn for_arp(ip: Ipv4Addr) -> Self {
        Self {
            mac: Mac::BROADCAST,
            adi: u32::from(ip),
        }
    }

    /// The Ethernet group an IP multicast group's datagrams are sent to (ADI 0): 01:00:5e and
    /// the low 23 bits of an IPv4 group, 33:33 and the low 32 bits of an IPv6 group. None for
    /// an address that is not multicast.
    #[must_use]
    pub fn for_ip(group: IpAddr) -> Option<Self> {
        let mac = match group {
            IpAddr::V4(g) if g.is_multicast() => {
                0x0100_5e00_0000 | (u64::from(g.to_bits()) & 0x7f_ffff)
            }
            IpAddr::V6(g) if g.is_multicast() => {
                0x3333_0000_0000 | (g.to_bits() as u64 & 0xffff_ffff)
            }
            _ => return None,
        };
        Some(Self {
            mac: Mac(mac),
            adi: 0,
        })
    }

    /// The IPv6 solicited-node group of `ip` (33:33:ff:xx:yy:zz, ADI 0).
    #[must_use]
    pub(crate) fn for_ndp(ip: Ipv6Addr) -> Self {
        let o = ip.octets();
        let mac = (0x3333_ff00_0000u64)
            | (u64::from(o[13]) << 16)
            | (u64::from(o[14]) << 8)
            | u64::from(o[15]);
        Self {
            mac: Mac(mac),
            adi: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> Address {
        s.parse().unwrap()
    }

    #[test]
    fn derivations_match_the_reference_examples() {
        let nwid: NetworkId = "8056c2e21c000001".parse().unwrap();
        let node = a("89e92ceee5");
        assert_eq!(nwid.controller(), a("8056c2e21c"));
        assert_eq!(nwid.mac(node).to_string(), "02:89:e9:30:0c:27");
        assert_eq!(nwid.node_of(nwid.mac(node)), Some(node));
        assert_eq!(nwid.node_of(Mac(0x0489_e930_0c27)), None);
        assert_eq!(
            nwid.rfc4193(node),
            "fd80:56c2:e21c:0000:0199:9389:e92c:eee5"
                .parse::<Ipv6Addr>()
                .unwrap()
        );
        assert_eq!(
            nwid.sixplane(node),
            "fc9c:56c2:e389:e92c:eee5::1".parse::<Ipv6Addr>().unwrap()
        );
        assert_eq!(NetworkId::adhoc(5000, 6000).to_string(), "ff13881770000000");
        assert_eq!(
            NetworkId::adhoc(5000, 6000).adhoc_kind(),
            Some(AdHoc::PortRange {
                start: 5000,
                end: 6000
            })
        );
        assert_eq!(nwid.adhoc_kind(), None);
        assert_eq!(
            NetworkId(0xff0a_0000_0000_0001).adhoc_kind(),
            Some(AdHoc::Ipv4 { octet: 10, hub: 0 })
        );
        assert_eq!(NetworkId(0xff00_0000_0000_0002).adhoc_kind(), None);
        assert!("8056c2e21c00000".parse::<NetworkId>().is_err());
    }

    #[test]
    fn mac_first_octet_avoids_0x52_and_multicast() {
        assert_eq!(first_octet(NetworkId(0x52)), 0x32);
        assert_eq!(first_octet(NetworkId(0x53)), 0x32);
        assert_eq!(first_octet(NetworkId(0xff)), 0xfe);
        assert!(!NetworkId(0x01).mac(a("0123456789")).is_multicast());
    }

    #[test]
    fn multicast_groups() {
        let g = MulticastGroup::for_arp("10.147.17.5".parse().unwrap());
        assert_eq!((g.mac, g.adi), (Mac::BROADCAST, 0x0a93_1105));
        let g = MulticastGroup::for_ndp("fd00::1:2:3".parse().unwrap());
        assert_eq!(g.mac.to_string(), "33:33:ff:02:00:03");
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        for (group, mac) in [
            ("239.1.2.3", "01:00:5e:01:02:03"),
            ("224.129.255.7", "01:00:5e:01:ff:07"),
            ("ff02::1", "33:33:00:00:00:01"),
            ("ff05::1:2:3:4", "33:33:00:03:00:04"),
            ("ff02::1:ff02:3", "33:33:ff:02:00:03"),
        ] {
            let g = MulticastGroup::for_ip(ip(group)).unwrap();
            assert_eq!((g.mac.to_string(), g.adi), (mac.to_owned(), 0), "{group}");
        }
        assert_eq!(MulticastGroup::for_ip(ip("198.18.0.1")), None);
        assert_eq!(MulticastGroup::for_ip(ip("255.255.255.255")), None);
        assert_eq!(MulticastGroup::for_ip(ip("fd00::1")), None);
    }
}
