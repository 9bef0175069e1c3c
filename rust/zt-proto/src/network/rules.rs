//! Flow rules: the entries of a network's rule table (`R` in a netconfig, and inside
//! capabilities), their wire encoding and their names.
//!
//! An entry is a type byte (bit 7 NOT, bit 6 OR, bits 5..0 the rule type), an operand length and
//! the operand. Unknown types are kept (their operand skipped by its length) so that a table
//! written by a newer controller still parses; they evaluate as the netconfig says (see
//! [`crate::network::filter`]).

use std::net::{Ipv4Addr, Ipv6Addr};

use crate::address::Address;
use crate::cursor::{Reader, WireError};
use crate::network::Mac;

/// Most entries in a network's base rule table.
pub const MAX_RULES: usize = 1024;
/// Most entries in one capability.
pub const MAX_CAPABILITY_RULES: usize = 64;

/// Frame characteristic: evaluated on the receiving side.
pub const CHAR_INBOUND: u64 = 0x8000_0000_0000_0000;
/// Frame characteristic: destination MAC is multicast.
pub const CHAR_MULTICAST: u64 = 0x4000_0000_0000_0000;
/// Frame characteristic: destination MAC is broadcast.
pub const CHAR_BROADCAST: u64 = 0x2000_0000_0000_0000;
/// Frame characteristic: the sender's source IP is covered by its certificate of ownership.
pub const CHAR_SENDER_IP_AUTHENTICATED: u64 = 0x1000_0000_0000_0000;
/// Frame characteristic: the sender's source MAC is covered by its certificate of ownership.
pub const CHAR_SENDER_MAC_AUTHENTICATED: u64 = 0x0800_0000_0000_0000;
/// Frame characteristic: TCP FIN.
pub const CHAR_TCP_FIN: u64 = 0x01;
/// Frame characteristic: TCP SYN.
pub const CHAR_TCP_SYN: u64 = 0x02;
/// Frame characteristic: TCP RST.
pub const CHAR_TCP_RST: u64 = 0x04;
/// Frame characteristic: TCP PSH.
pub const CHAR_TCP_PSH: u64 = 0x08;
/// Frame characteristic: TCP ACK.
pub const CHAR_TCP_ACK: u64 = 0x10;
/// Frame characteristic: TCP URG.
pub const CHAR_TCP_URG: u64 = 0x20;
/// Frame characteristic: TCP ECE.
pub const CHAR_TCP_ECE: u64 = 0x40;
/// Frame characteristic: TCP CWR.
pub const CHAR_TCP_CWR: u64 = 0x80;
/// Frame characteristic: TCP NS.
pub const CHAR_TCP_NS: u64 = 0x100;

/// Target of a TEE, WATCH or REDIRECT action.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Forward {
    /// Node to send the copy (or the frame) to.
    pub address: Address,
    /// Unused flags, carried as is.
    pub flags: u32,
    /// Bytes of the Ethernet payload to copy (0 = all; unused for REDIRECT).
    pub length: u16,
}

/// Which tag comparison a tag match performs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TagOp {
    /// |local − remote| ≤ value (type 44).
    Difference,
    /// (local AND remote) = value (45).
    BitwiseAnd,
    /// (local OR remote) = value (46).
    BitwiseOr,
    /// (local XOR remote) = value (47).
    BitwiseXor,
    /// local = value AND remote = value (48).
    Equal,
    /// The sender's tag = value (49).
    Sender,
    /// The receiver's tag = value (50).
    Receiver,
}

/// What a rule entry does or tests.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RuleKind {
    /// Drop the frame (type 0).
    Drop,
    /// Accept the frame (1).
    Accept,
    /// Send a copy and continue (2).
    Tee(Forward),
    /// Send a copy asking for an acknowledgement and continue (3).
    Watch(Forward),
    /// Send the frame elsewhere instead (4).
    Redirect(Forward),
    /// Stop evaluating this table without a match (5).
    Break,
    /// QoS priority: accepts (6; the bucket is not on the wire).
    Priority,
    /// An action type this implementation does not know (7..15): a no-op.
    UnknownAction(u8),
    /// Sender's ZeroTier address (24).
    SourceAddress(Address),
    /// Destination's ZeroTier address (25).
    DestAddress(Address),
    /// VLAN ID (26).
    VlanId(u16),
    /// VLAN PCP (27).
    VlanPcp(u8),
    /// VLAN DEI (28).
    VlanDei(u8),
    /// Source MAC (29).
    MacSource(Mac),
    /// Destination MAC (30).
    MacDest(Mac),
    /// IPv4 source within a prefix (31).
    Ipv4Source(Ipv4Addr, u8),
    /// IPv4 destination within a prefix (32).
    Ipv4Dest(Ipv4Addr, u8),
    /// IPv6 source within a prefix (33).
    Ipv6Source(Ipv6Addr, u8),
    /// IPv6 destination within a prefix (34).
    Ipv6Dest(Ipv6Addr, u8),
    /// (TOS AND mask) within [start, end] (35).
    IpTos {
        /// Mask.
        mask: u8,
        /// Low end.
        start: u8,
        /// High end.
        end: u8,
    },
    /// IP protocol / IPv6 final next header (36).
    IpProtocol(u8),
    /// Ethertype (37).
    EtherType(u16),
    /// ICMP / ICMPv6 type and optionally code (38).
    Icmp {
        /// ICMP type.
        icmp_type: u8,
        /// ICMP code (compared only with flag 0x01).
        code: u8,
        /// 0x01: also compare the code.
        flags: u8,
    },
    /// TCP/UDP/SCTP/UDP-Lite source port in range (39).
    SourcePortRange(u16, u16),
    /// Destination port in range (40).
    DestPortRange(u16, u16),
    /// (characteristics AND mask) ≠ 0 (41).
    Characteristics(u64),
    /// Ethernet payload length in range (42).
    FrameSizeRange(u16, u16),
    /// Random u32 ≤ probability (43).
    Random(u32),
    /// A tag comparison (44..50).
    Tags {
        /// Which comparison.
        op: TagOp,
        /// Tag ID.
        id: u32,
        /// Value compared with.
        value: u32,
    },
    /// An integer read from the frame within [start, start + end] (51).
    IntegerRange {
        /// Low end.
        start: u64,
        /// Width of the range.
        end: u32,
        /// Byte index in the Ethernet payload.
        index: u16,
        /// Bit count − 1 in bits 0..5, 0x80 = little-endian.
        format: u8,
    },
    /// A match type this implementation does not know (16..23, 52..63).
    UnknownMatch(u8),
}

/// One entry of a rule table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Rule {
    /// Invert the match.
    pub not: bool,
    /// OR with the previous match instead of AND.
    pub or: bool,
    /// What it does or tests.
    pub kind: RuleKind,
}

impl Rule {
    /// A plain rule (no NOT, no OR).
    #[must_use]
    pub fn new(kind: RuleKind) -> Self {
        Self {
            not: false,
            or: false,
            kind,
        }
    }

    /// A negated match.
    #[must_use]
    pub fn not(kind: RuleKind) -> Self {
        Self {
            not: true,
            or: false,
            kind,
        }
    }

    /// A match OR'ed with the previous one.
    #[must_use]
    pub fn or(kind: RuleKind) -> Self {
        Self {
            not: false,
            or: true,
            kind,
        }
    }

    /// The 6-bit rule type number.
    #[must_use]
    pub(crate) fn type_number(&self) -> u8 {
        use RuleKind as K;
        match self.kind {
            K::Drop => 0,
            K::Accept => 1,
            K::Tee(_) => 2,
            K::Watch(_) => 3,
            K::Redirect(_) => 4,
            K::Break => 5,
            K::Priority => 6,
            K::UnknownAction(t) | K::UnknownMatch(t) => t & 0x3f,
            K::SourceAddress(_) => 24,
            K::DestAddress(_) => 25,
            K::VlanId(_) => 26,
            K::VlanPcp(_) => 27,
            K::VlanDei(_) => 28,
            K::MacSource(_) => 29,
            K::MacDest(_) => 30,
            K::Ipv4Source(..) => 31,
            K::Ipv4Dest(..) => 32,
            K::Ipv6Source(..) => 33,
            K::Ipv6Dest(..) => 34,
            K::IpTos { .. } => 35,
            K::IpProtocol(_) => 36,
            K::EtherType(_) => 37,
            K::Icmp { .. } => 38,
            K::SourcePortRange(..) => 39,
            K::DestPortRange(..) => 40,
            K::Characteristics(_) => 41,
            K::FrameSizeRange(..) => 42,
            K::Random(_) => 43,
            K::Tags { op, .. } => match op {
                TagOp::Difference => 44,
                TagOp::BitwiseAnd => 45,
                TagOp::BitwiseOr => 46,
                TagOp::BitwiseXor => 47,
                TagOp::Equal => 48,
                TagOp::Sender => 49,
                TagOp::Receiver => 50,
            },
            K::IntegerRange { .. } => 51,
        }
    }

    /// Whether this entry is an action (types 0..15) rather than a match.
    #[must_use]
    pub fn is_action(&self) -> bool {
        self.type_number() < 16
    }

    /// Appends the wire form.
    pub(crate) fn write(&self, out: &mut Vec<u8>) {
        use RuleKind as K;
        let t =
            self.type_number() | if self.not { 0x80 } else { 0 } | if self.or { 0x40 } else { 0 };
        out.push(t);
        let start = out.len();
        out.push(0);
        match self.kind {
            K::Tee(f) | K::Watch(f) | K::Redirect(f) => {
                out.extend_from_slice(&f.address.to_u64().to_be_bytes());
                out.extend_from_slice(&f.flags.to_be_bytes());
                out.extend_from_slice(&f.length.to_be_bytes());
            }
            K::SourceAddress(a) | K::DestAddress(a) => out.extend_from_slice(&a.to_bytes()),
            K::VlanId(v) | K::EtherType(v) => out.extend_from_slice(&v.to_be_bytes()),
            K::VlanPcp(v) | K::VlanDei(v) | K::IpProtocol(v) => out.push(v),
            K::MacSource(m) | K::MacDest(m) => out.extend_from_slice(&m.to_bytes()),
            K::Ipv4Source(ip, bits) | K::Ipv4Dest(ip, bits) => {
                out.extend_from_slice(&ip.octets());
                out.push(bits);
            }
            K::Ipv6Source(ip, bits) | K::Ipv6Dest(ip, bits) => {
                out.extend_from_slice(&ip.octets());
                out.push(bits);
            }
            K::IpTos { mask, start, end } => out.extend_from_slice(&[mask, start, end]),
            K::Icmp {
                icmp_type,
                code,
                flags,
            } => out.extend_from_slice(&[icmp_type, code, flags]),
            K::SourcePortRange(a, b) | K::DestPortRange(a, b) | K::FrameSizeRange(a, b) => {
                out.extend_from_slice(&a.to_be_bytes());
                out.extend_from_slice(&b.to_be_bytes());
            }
            K::Characteristics(m) => out.extend_from_slice(&m.to_be_bytes()),
            K::Random(p) => out.extend_from_slice(&p.to_be_bytes()),
            K::Tags { id, value, .. } => {
                out.extend_from_slice(&id.to_be_bytes());
                out.extend_from_slice(&value.to_be_bytes());
            }
            K::IntegerRange {
                start,
                end,
                index,
                format,
            } => {
                out.extend_from_slice(&start.to_be_bytes());
                out.extend_from_slice(&start.wrapping_add(u64::from(end)).to_be_bytes());
                out.extend_from_slice(&index.to_be_bytes());
                out.push(format);
            }
            K::Drop
            | K::Accept
            | K::Break
            | K::Priority
            | K::UnknownAction(_)
            | K::UnknownMatch(_) => {}
        }
        // Operands are at most 19 bytes.
        out[start] = (out.len() - start - 1) as u8;
    }

    /// Reads one entry.
    ///
    /// # Errors
    /// Truncated input, or an operand shorter than its type needs.
    pub(crate) fn read(r: &mut Reader<'_>) -> Result<Self, WireError> {
        use RuleKind as K;
        let t = r.u8()?;
        let n = usize::from(r.u8()?);
        let op = r.bytes(n)?;
        let mut o = Reader::new(op);
        let ty = t & 0x3f;
        let fwd = |o: &mut Reader<'_>| -> Result<Forward, WireError> {
            Ok(Forward {
                address: Address::from_u64_truncating(o.u64()?),
                flags: u32::from_be_bytes(o.array()?),
                length: o.u16()?,
            })
        };
        let tag = |op: TagOp, o: &mut Reader<'_>| -> Result<RuleKind, WireError> {
            Ok(K::Tags {
                op,
                id: u32::from_be_bytes(o.array()?),
                value: u32::from_be_bytes(o.array()?),
            })
        };
        let kind = match ty {
            0 => K::Drop,
            1 => K::Accept,
            2 => K::Tee(fwd(&mut o)?),
            3 => K::Watch(fwd(&mut o)?),
            4 => K::Redirect(fwd(&mut o)?),
            5 => K::Break,
            6 => K::Priority,
            7..=15 => K::UnknownAction(ty),
            24 => K::SourceAddress(Address::from_bytes(&o.array()?)),
            25 => K::DestAddress(Address::from_bytes(&o.array()?)),
            26 => K::VlanId(o.u16()?),
            27 => K::VlanPcp(o.u8()?),
            28 => K::VlanDei(o.u8()?),
            29 => K::MacSource(Mac::from_bytes(&o.array()?)),
            30 => K::MacDest(Mac::from_bytes(&o.array()?)),
            31 => K::Ipv4Source(Ipv4Addr::from(o.array::<4>()?), o.u8()?),
            32 => K::Ipv4Dest(Ipv4Addr::from(o.array::<4>()?), o.u8()?),
            33 => K::Ipv6Source(Ipv6Addr::from(o.array::<16>()?), o.u8()?),
            34 => K::Ipv6Dest(Ipv6Addr::from(o.array::<16>()?), o.u8()?),
            35 => K::IpTos {
                mask: o.u8()?,
                start: o.u8()?,
                end: o.u8()?,
            },
            36 => K::IpProtocol(o.u8()?),
            37 => K::EtherType(o.u16()?),
            38 => K::Icmp {
                icmp_type: o.u8()?,
                code: o.u8()?,
                flags: o.u8()?,
            },
            39 => K::SourcePortRange(o.u16()?, o.u16()?),
            40 => K::DestPortRange(o.u16()?, o.u16()?),
            41 => K::Characteristics(o.u64()?),
            42 => K::FrameSizeRange(o.u16()?, o.u16()?),
            43 => K::Random(u32::from_be_bytes(o.array()?)),
            44 => tag(TagOp::Difference, &mut o)?,
            45 => tag(TagOp::BitwiseAnd, &mut o)?,
            46 => tag(TagOp::BitwiseOr, &mut o)?,
            47 => tag(TagOp::BitwiseXor, &mut o)?,
            48 => tag(TagOp::Equal, &mut o)?,
            49 => tag(TagOp::Sender, &mut o)?,
            50 => tag(TagOp::Receiver, &mut o)?,
            51 => {
                let start = o.u64()?;
                let end = o.u64()?.wrapping_sub(start) as u32;
                K::IntegerRange {
                    start,
                    end,
                    index: o.u16()?,
                    format: o.u8()?,
                }
            }
            _ => K::UnknownMatch(ty),
        };
        Ok(Self {
            not: t & 0x80 != 0,
            or: t & 0x40 != 0,
            kind,
        })
    }
}

/// Appends a rule table.
pub fn write_rules(out: &mut Vec<u8>, rules: &[Rule]) {
    for r in rules {
        r.write(out);
    }
}

/// Reads `count` entries.
///
/// # Errors
/// Truncated or malformed entries.
pub fn read_rules(r: &mut Reader<'_>, count: usize) -> Result<Vec<Rule>, WireError> {
    (0..count).map(|_| Rule::read(r)).collect()
}

/// Reads a whole blob of entries (a netconfig's `R`), at most [`MAX_RULES`].
///
/// # Errors
/// Truncated or malformed entries, or too many.
pub fn parse_rules(blob: &[u8]) -> Result<Vec<Rule>, WireError> {
    let mut r = Reader::new(blob);
    let mut out = Vec::new();
    while !r.is_empty() {
        if out.len() >= MAX_RULES {
            return Err(WireError::BadValue {
                what: "rule count",
                value: out.len() as u64 + 1,
            });
        }
        out.push(Rule::read(&mut r)?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> Vec<Rule> {
        let a = Address::new(0x0089_e92c_eee5).unwrap();
        vec![
            Rule::not(RuleKind::EtherType(0x86dd)),
            Rule::new(RuleKind::Drop),
            Rule::new(RuleKind::IpProtocol(58)),
            Rule::or(RuleKind::IpProtocol(6)),
            Rule::new(RuleKind::DestPortRange(5000, 6000)),
            Rule::new(RuleKind::Tee(Forward {
                address: a,
                flags: 7,
                length: 128,
            })),
            Rule::new(RuleKind::SourceAddress(a)),
            Rule::new(RuleKind::MacDest(Mac(0x0289_e930_0c27))),
            Rule::new(RuleKind::Ipv4Source(Ipv4Addr::new(198, 18, 0, 0), 15)),
            Rule::new(RuleKind::Ipv6Dest("fd00::1".parse().unwrap(), 88)),
            Rule::new(RuleKind::Icmp {
                icmp_type: 8,
                code: 0,
                flags: 1,
            }),
            Rule::new(RuleKind::Characteristics(CHAR_TCP_SYN | CHAR_INBOUND)),
            Rule::new(RuleKind::Tags {
                op: TagOp::BitwiseXor,
                id: 1000,
                value: 3,
            }),
            Rule::new(RuleKind::IntegerRange {
                start: 10,
                end: 20,
                index: 3,
                format: 0x87,
            }),
            Rule::new(RuleKind::Accept),
        ]
    }

    #[test]
    fn tables_round_trip() {
        let rules = sample();
        let mut out = Vec::new();
        write_rules(&mut out, &rules);
        assert_eq!(parse_rules(&out).unwrap(), rules);
        assert_eq!(
            read_rules(&mut Reader::new(&out), rules.len()).unwrap(),
            rules
        );
    }

    #[test]
    fn known_encodings() {
        // ACCEPT is two bytes; NOT ethertype IPv6 is 0xa5 0x02 0x86 0xdd.
        let mut out = Vec::new();
        Rule::new(RuleKind::Accept).write(&mut out);
        Rule::not(RuleKind::EtherType(0x86dd)).write(&mut out);
        assert_eq!(out, [0x01, 0x00, 0xa5, 0x02, 0x86, 0xdd]);
    }

    #[test]
    fn unknown_types_are_kept_and_skipped() {
        let blob = [0x14, 0x03, 1, 2, 3, 0x0a, 0x01, 9, 0x01, 0x00];
        let rules = parse_rules(&blob).unwrap();
        assert_eq!(
            rules,
            [
                Rule::new(RuleKind::UnknownMatch(20)),
                Rule::new(RuleKind::UnknownAction(10)),
                Rule::new(RuleKind::Accept)
            ]
        );
    }

    #[test]
    fn short_operands_are_errors() {
        assert!(parse_rules(&[37, 1, 0x86]).is_err());
        assert!(parse_rules(&[37, 5, 0x86]).is_err());
        assert!(parse_rules(&[1]).is_err());
    }

    proptest! {
        #[test]
        fn never_panics(data in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = parse_rules(&data);
        }
    }
}
