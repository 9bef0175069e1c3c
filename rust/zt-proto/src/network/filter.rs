//! The flow-rules engine: runs a network's rule table (and capabilities) over an Ethernet frame,
//! outbound before it is sent and inbound before it is delivered, with ZeroTier 1.14.1 semantics.
//!
//! Everything here is a pure function of its inputs: the frame ([`FrameInfo`]), the rule tables,
//! and what the node knows about tags and certificates of ownership ([`FilterContext`], asked only
//! when a rule needs it). Nothing allocates unless a TEE/WATCH copy is to be sent.
//!
//! # Evaluating one table ([`evaluate_table`])
//!
//! Entries are read in order, grouping into sets "matches… then an action". The set starts out
//! matching, each match ANDs (or, with its OR bit, ORs) its result into it, and a match whose
//! result could not change the set (set false, no OR bit) is skipped without being evaluated.
//! When the action is reached and the set matches, it is taken; either way the set restarts as
//! matching. Special cases, all as stock:
//!
//! * Some matches give a *hard* result that ignores their NOT bit: a false for a frame of the
//!   wrong kind (IP matches on non-IP frames, ICMP on non-ICMP, …) and a true for an ICMP type
//!   match without code check or for an unknown remote tag where the engine is lenient.
//! * Lenient tag matches arm *skip-drop*: the next DROP that would be taken is ignored once.
//! * Inbound, a TEE/WATCH/REDIRECT to this node makes an otherwise-matching set *super-accept*
//!   at once; one whose set does not match still marks the table so a later ACCEPT
//!   super-accepts. A super-accepted frame bypasses the MAC and bridging checks.
//! * Unknown actions are no-ops; unknown matches yield the network's configured value
//!   (netconfig flag 0x08), which the NOT bit then inverts.
//!
//! # Whole decisions ([`filter_outbound`], [`filter_inbound`])
//!
//! The base table decides first. If it does not match, the capabilities are tried in turn and
//! the first one that accepts (or redirects) wins; a DROP or BREAK inside a capability only ends
//! that capability. Nothing matching means drop.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::address::Address;
use crate::inet::{ipv4_prefix_contains, ipv6_prefix_contains};
use crate::network::Mac;
use crate::network::rules::{
    CHAR_BROADCAST, CHAR_INBOUND, CHAR_MULTICAST, CHAR_SENDER_IP_AUTHENTICATED,
    CHAR_SENDER_MAC_AUTHENTICATED, CHAR_TCP_ACK, CHAR_TCP_SYN, Forward, Rule, RuleKind, TagOp,
};

/// Ethertype of IPv4.
pub(crate) const ETHERTYPE_IPV4: u16 = 0x0800;
/// Ethertype of ARP.
pub(crate) const ETHERTYPE_ARP: u16 = 0x0806;
/// Ethertype of IPv6.
pub(crate) const ETHERTYPE_IPV6: u16 = 0x86dd;

/// EXT_FRAME flags byte of a frame redirected on the sending side.
pub(crate) const EXT_FRAME_FLAGS_REDIRECT_OUTBOUND: u8 = 0x04;
/// EXT_FRAME flags byte of a frame redirected on the receiving side.
pub(crate) const EXT_FRAME_FLAGS_REDIRECT_INBOUND: u8 = 0x0a;

const IPPROTO_ICMP: u8 = 1;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;
const IPPROTO_ICMPV6: u8 = 58;
const IPPROTO_SCTP: u8 = 132;
const IPPROTO_UDPLITE: u8 = 136;

/// What the caller knows about one frame and its two ends.
#[derive(Clone, Copy, Debug)]
pub struct FrameInfo<'a> {
    /// Evaluated on the receiving side (the frame came from `source` over the network).
    pub inbound: bool,
    /// This node's address.
    pub me: Address,
    /// The ZeroTier sender: this node outbound, the peer it came from inbound.
    pub source: Address,
    /// The ZeroTier destination: `None` when unknown (outbound multicast or bridged frames before
    /// fan-out), which matches compare as address 0. Stock passes this node's address inbound.
    pub dest: Option<Address>,
    /// Source MAC.
    pub mac_source: Mac,
    /// Destination MAC.
    pub mac_dest: Mac,
    /// Ethertype.
    pub ethertype: u16,
    /// VLAN ID (stock always passes 0).
    pub vlan_id: u16,
    /// The Ethernet payload, without the 14-byte header.
    pub payload: &'a [u8],
    /// Seed for RANDOM matches: each one evaluated draws a fresh number from a small generator
    /// seeded with this (take it from the node's PRNG per frame).
    pub random_seed: u64,
}

/// What the node knows about tags and ownership, asked lazily (only by rules that need it).
pub trait FilterContext {
    /// This node's own tag with that ID (from its network config), if it has one.
    fn local_tag(&self, id: u32) -> Option<u32>;

    /// The peer's tag with that ID: the sender's inbound, the receiver's outbound (none when the
    /// destination is unknown). Only tags whose timestamp is currently valid count.
    fn remote_tag(&self, id: u32) -> Option<u32>;

    /// Whether the frame's source IP (see [`ownership_source`]) is owned by its sender: inbound
    /// per the sender's pushed certificates of ownership (plus the rfc4193/6plane prefix rule
    /// with NDP emulation), outbound per this node's own certificates.
    fn source_ip_owned(&self, _ip: IpAddr) -> bool {
        false
    }

    /// Whether the frame's source MAC is owned by its sender, with the same sources as
    /// [`Self::source_ip_owned`].
    fn source_mac_owned(&self, _mac: Mac) -> bool {
        false
    }
}

/// A context without tags or certificates of ownership (ad-hoc networks, tests).
#[cfg(test)]
#[derive(Clone, Copy, Debug, Default)]
struct NoCredentials;

#[cfg(test)]
impl FilterContext for NoCredentials {
    fn local_tag(&self, _id: u32) -> Option<u32> {
        None
    }

    fn remote_tag(&self, _id: u32) -> Option<u32> {
        None
    }
}

/// The outcome of one table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Nothing decided (end of table, or BREAK).
    NoMatch,
    /// DROP.
    Drop,
    /// ACCEPT (or PRIORITY).
    Accept,
    /// ACCEPT while this node is a TEE/WATCH/REDIRECT target (inbound only): deliver even if the
    /// MAC or bridging checks would refuse it.
    SuperAccept,
    /// REDIRECT: send the frame to this address instead.
    Redirect(Address),
}

/// A TEE or WATCH copy to send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct FrameCopy {
    /// Where to.
    pub(crate) to: Address,
    /// How many payload bytes to copy (already limited to the payload length).
    pub(crate) length: usize,
    /// WATCH (the copy asks for an acknowledgement) rather than TEE.
    pub(crate) watch: bool,
}

impl FrameCopy {
    /// The EXT_FRAME flags byte that announces this copy: 0x02 TEE / 0x16 WATCH on the sending
    /// side, 0x08 / 0x1c on the receiving side.
    #[must_use]
    pub(crate) fn ext_frame_flags(&self, inbound: bool) -> u8 {
        match (inbound, self.watch) {
            (false, false) => 0x02,
            (false, true) => 0x16,
            (true, false) => 0x08,
            (true, true) => 0x1c,
        }
    }
}

/// The result of one table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Evaluation {
    /// What the table decided.
    pub(crate) verdict: Verdict,
    /// The last TEE/WATCH copy the table asked for (sent only if the frame is accepted).
    pub(crate) copy: Option<FrameCopy>,
}

/// The decision for a frame this node is about to send.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OutboundDecision {
    /// Send the frame to its destination as usual.
    pub(crate) accept: bool,
    /// Send the whole frame as EXT_FRAME (flags [`EXT_FRAME_FLAGS_REDIRECT_OUTBOUND`]) to this
    /// node instead; `accept` is then false.
    pub(crate) redirect: Option<Address>,
    /// Copies to send (the winning capability's first, then the base table's), flags from
    /// [`FrameCopy::ext_frame_flags`]. Stock skips them in the per-recipient passes of bridge
    /// fan-out. Empty unless the frame is accepted or redirected.
    pub(crate) copies: Vec<FrameCopy>,
    /// Index (in the order given) of the capability that accepted, if it was one.
    pub(crate) capability: Option<usize>,
}

/// What to do locally with a received frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub(crate) enum Delivery {
    /// Do not deliver (stock result 0).
    #[default]
    Drop,
    /// Deliver, subject to the usual MAC and bridging checks (1).
    Accept,
    /// Deliver even if those checks fail: this node is a TEE/REDIRECT target (2).
    SuperAccept,
}

/// The decision for a frame this node received.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct InboundDecision {
    /// Local delivery.
    pub(crate) delivery: Delivery,
    /// Forward the whole frame as EXT_FRAME (flags [`EXT_FRAME_FLAGS_REDIRECT_INBOUND`]) to this
    /// node; `delivery` is then [`Delivery::Drop`].
    pub(crate) redirect: Option<Address>,
    /// Copies to send (the winning capability's first, then the base table's), flags from
    /// [`FrameCopy::ext_frame_flags`].
    pub(crate) copies: Vec<FrameCopy>,
    /// Index (in the order given) of the sender's capability that accepted, if it was one.
    pub(crate) capability: Option<usize>,
}

impl InboundDecision {
    /// Stock's integer result: 0 drop, 1 accept, 2 accept bypassing the MAC/bridge checks.
    #[cfg(test)]
    #[must_use]
    pub(crate) fn code(&self) -> u8 {
        match self.delivery {
            Delivery::Drop => 0,
            Delivery::Accept => 1,
            Delivery::SuperAccept => 2,
        }
    }
}

/// The address whose ownership decides "sender IP authenticated".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OwnershipSource {
    /// The frame carries no usable source address.
    None,
    /// Check this address against the sender's certificates of ownership.
    Ip(IpAddr),
    /// An IPv6 neighbor solicitation: counts as authenticated without any check.
    NeighborSolicitation,
}

/// The source address a frame claims, for ownership checks: the IPv4 source; an ARP packet's
/// sender protocol address; the IPv6 source, except that a neighbor solicitation (ICMPv6 type
/// 135 right after the IPv6 header) is authenticated outright and a neighbor advertisement (136)
/// is checked on its target address.
#[must_use]
pub fn ownership_source(ethertype: u16, payload: &[u8]) -> OwnershipSource {
    let p = payload;
    match ethertype {
        ETHERTYPE_IPV4 if p.len() >= 20 => OwnershipSource::Ip(IpAddr::V4(ipv4_at(p, 12))),
        ETHERTYPE_IPV6 if p.len() >= 40 => {
            if p.len() >= 40 + 8 + 16 && p[6] == IPPROTO_ICMPV6 && p[40] == 135 {
                OwnershipSource::NeighborSolicitation
            } else if p.len() >= 40 + 8 + 16 && p[6] == IPPROTO_ICMPV6 && p[40] == 136 {
                OwnershipSource::Ip(IpAddr::V6(ipv6_at(p, 48)))
            } else {
                OwnershipSource::Ip(IpAddr::V6(ipv6_at(p, 8)))
            }
        }
        ETHERTYPE_ARP if p.len() >= 28 => OwnershipSource::Ip(IpAddr::V4(ipv4_at(p, 14))),
        _ => OwnershipSource::None,
    }
}

/// The frame's characteristics bits (`CHAR_*`), as MATCH_CHARACTERISTICS sees them: direction,
/// multicast/broadcast destination, sender IP/MAC authenticated (asking `ctx`), and the TCP
/// flags of an IPv4 or IPv6 TCP segment.
#[must_use]
pub fn characteristics<C: FilterContext + ?Sized>(frame: &FrameInfo<'_>, ctx: &C) -> u64 {
    let mut c = 0;
    if frame.inbound {
        c |= CHAR_INBOUND;
    }
    if frame.mac_dest.is_multicast() {
        c |= CHAR_MULTICAST;
    }
    if frame.mac_dest == Mac::BROADCAST {
        c |= CHAR_BROADCAST;
    }
    match ownership_source(frame.ethertype, frame.payload) {
        OwnershipSource::NeighborSolicitation => c |= CHAR_SENDER_IP_AUTHENTICATED,
        OwnershipSource::Ip(ip) => {
            if ctx.source_ip_owned(ip) {
                c |= CHAR_SENDER_IP_AUTHENTICATED;
            }
        }
        OwnershipSource::None => {}
    }
    if ctx.source_mac_owned(frame.mac_source) {
        c |= CHAR_SENDER_MAC_AUTHENTICATED;
    }
    c | tcp_flags(frame.ethertype, frame.payload)
}

/// TCP flag bits (byte 13, and the low nibble of byte 12 above them) of an IPv4 or IPv6 TCP
/// segment, else 0.
fn tcp_flags(ethertype: u16, p: &[u8]) -> u64 {
    let at = match ethertype {
        ETHERTYPE_IPV4 if p.len() >= 20 && p[9] == IPPROTO_TCP => ipv4_header_len(p),
        ETHERTYPE_IPV6 => match ipv6_payload(p) {
            Some((pos, IPPROTO_TCP)) if p.len() > pos + 14 => pos,
            _ => return 0,
        },
        _ => return 0,
    };
    // Stock does not bounds-check the IPv4 case (it reads past a short frame); missing bytes
    // count as no flags here.
    let byte = |i: usize| u64::from(p.get(at + i).copied().unwrap_or(0));
    byte(13) | ((byte(12) & 0x0f) << 8)
}

/// IPv4 header length from the IHL field (not validated, as stock).
fn ipv4_header_len(p: &[u8]) -> usize {
    usize::from(p[0] & 0x0f) * 4
}

fn ipv4_at(p: &[u8], at: usize) -> Ipv4Addr {
    Ipv4Addr::new(p[at], p[at + 1], p[at + 2], p[at + 3])
}

fn ipv6_at(p: &[u8], at: usize) -> Ipv6Addr {
    let mut b = [0u8; 16];
    b.copy_from_slice(&p[at..at + 16]);
    Ipv6Addr::from(b)
}

/// Walks an IPv6 packet's extension headers (hop-by-hop 0, routing 43, destination options 60,
/// mobility 135) to the upper-layer header: its offset and protocol number. `None` if the packet
/// is shorter than an IPv6 header or an extension header is cut off or overruns the packet.
fn ipv6_payload(p: &[u8]) -> Option<(usize, u8)> {
    if p.len() < 40 {
        return None;
    }
    let mut pos = 40;
    let mut proto = p[6];
    while pos <= p.len() {
        match proto {
            0 | 43 | 60 | 135 => {
                if pos + 8 > p.len() {
                    return None;
                }
                proto = p[pos];
                pos += usize::from(p[pos + 1]) * 8 + 8;
            }
            _ => return Some((pos, proto)),
        }
    }
    None
}

/// A match's result before the NOT bit.
#[derive(Clone, Copy)]
enum Outcome {
    /// Ordinary result: the NOT bit inverts it.
    Raw(bool),
    /// Final result, whatever the NOT bit says.
    Hard(bool),
}

/// State shared by the tables of one decision.
struct Evaluator<'e, 'a, C: ?Sized> {
    frame: &'e FrameInfo<'a>,
    ctx: &'e C,
    unsupported: bool,
    rng: u64,
    chars: Option<u64>,
    /// The destination as matches see it (0 when unknown).
    dest: u64,
}

impl<'e, 'a, C: FilterContext + ?Sized> Evaluator<'e, 'a, C> {
    fn new(frame: &'e FrameInfo<'a>, ctx: &'e C, unsupported: bool) -> Self {
        Self {
            frame,
            ctx,
            unsupported,
            rng: frame.random_seed,
            chars: None,
            dest: frame.dest.map_or(0, Address::to_u64),
        }
    }

    /// The low 32 bits of the next SplitMix64 value.
    fn random(&mut self) -> u32 {
        crate::splitmix::splitmix64(&mut self.rng) as u32
    }

    fn table(&mut self, rules: &[Rule]) -> Evaluation {
        let f = self.frame;
        let mut set = true;
        let mut super_accept = false;
        let mut skip_drop = false;
        let mut copy = None;
        let done = |verdict, copy| Evaluation { verdict, copy };
        for rule in rules {
            if rule.is_action() {
                if !set {
                    if f.inbound
                        && let RuleKind::Tee(t) | RuleKind::Watch(t) | RuleKind::Redirect(t) =
                            rule.kind
                        && t.address == f.me
                    {
                        super_accept = true;
                    }
                    set = true;
                    continue;
                }
                match rule.kind {
                    RuleKind::Priority => return done(Verdict::Accept, copy),
                    RuleKind::Drop => {
                        if skip_drop {
                            skip_drop = false;
                        } else {
                            return done(Verdict::Drop, copy);
                        }
                    }
                    RuleKind::Accept => {
                        let v = if super_accept {
                            Verdict::SuperAccept
                        } else {
                            Verdict::Accept
                        };
                        return done(v, copy);
                    }
                    RuleKind::Tee(t) | RuleKind::Watch(t) | RuleKind::Redirect(t) => {
                        let Forward {
                            address, length, ..
                        } = t;
                        if address == f.source {
                            // Copying to the sender is pointless.
                        } else if address == f.me {
                            if f.inbound {
                                return done(Verdict::SuperAccept, copy);
                            }
                        } else if address.to_u64() == self.dest {
                            // Nor to the destination.
                        } else if let RuleKind::Redirect(_) = rule.kind {
                            return done(Verdict::Redirect(address), copy);
                        } else {
                            // A copy to address 0 replaces the earlier one but is never sent.
                            copy = (address.to_u64() != 0).then(|| FrameCopy {
                                to: address,
                                length: match usize::from(length) {
                                    0 => f.payload.len(),
                                    n => n.min(f.payload.len()),
                                },
                                watch: matches!(rule.kind, RuleKind::Watch(_)),
                            });
                        }
                    }
                    RuleKind::Break => return done(Verdict::NoMatch, copy),
                    _ => {}
                }
                continue;
            }
            if !set && !rule.or {
                continue;
            }
            let x = match self.matches(&rule.kind, super_accept, &mut skip_drop) {
                Outcome::Raw(r) => r != rule.not,
                Outcome::Hard(r) => r,
            };
            if rule.or {
                set |= x;
            } else {
                set &= x;
            }
        }
        done(Verdict::NoMatch, copy)
    }

    fn matches(&mut self, kind: &RuleKind, super_accept: bool, skip_drop: &mut bool) -> Outcome {
        use Outcome::{Hard, Raw};
        let f = self.frame;
        let p = f.payload;
        let v4 = f.ethertype == ETHERTYPE_IPV4 && p.len() >= 20;
        let v6 = f.ethertype == ETHERTYPE_IPV6;
        match *kind {
            RuleKind::SourceAddress(a) => Raw(a == f.source),
            RuleKind::DestAddress(a) => Raw(a.to_u64() == self.dest),
            RuleKind::VlanId(v) => Raw(v == f.vlan_id),
            RuleKind::VlanPcp(v) | RuleKind::VlanDei(v) => Raw(v == 0),
            RuleKind::MacSource(m) => Raw(m == f.mac_source),
            RuleKind::MacDest(m) => Raw(m == f.mac_dest),
            RuleKind::Ipv4Source(net, bits) if v4 => {
                Raw(ipv4_prefix_contains(net, bits.into(), ipv4_at(p, 12)))
            }
            RuleKind::Ipv4Dest(net, bits) if v4 => {
                Raw(ipv4_prefix_contains(net, bits.into(), ipv4_at(p, 16)))
            }
            RuleKind::Ipv6Source(net, bits) if v6 && p.len() >= 40 => {
                Raw(ipv6_prefix_contains(net, bits.into(), ipv6_at(p, 8)))
            }
            RuleKind::Ipv6Dest(net, bits) if v6 && p.len() >= 40 => {
                Raw(ipv6_prefix_contains(net, bits.into(), ipv6_at(p, 24)))
            }
            RuleKind::IpTos { mask, start, end } => {
                // IPv4 TOS byte, or the IPv6 traffic class across bytes 0 and 1.
                let tos = if v4 {
                    p[1]
                } else if v6 && p.len() >= 40 {
                    (p[0] << 4) | (p[1] >> 4)
                } else {
                    return Hard(false);
                };
                let tos = tos & mask;
                Raw(start <= tos && tos <= end)
            }
            RuleKind::IpProtocol(proto) => {
                if v4 {
                    Raw(p[9] == proto)
                } else if v6 {
                    match ipv6_payload(p) {
                        Some((_, q)) => Raw(q == proto),
                        None => Hard(false),
                    }
                } else {
                    Hard(false)
                }
            }
            RuleKind::EtherType(t) => Raw(t == f.ethertype),
            RuleKind::Icmp {
                icmp_type,
                code,
                flags,
            } => {
                let at = if v4 {
                    let ihl = ipv4_header_len(p);
                    if p[9] != IPPROTO_ICMP || p.len() < ihl + 2 {
                        return Hard(false);
                    }
                    ihl
                } else if v6 {
                    match ipv6_payload(p) {
                        Some((pos, IPPROTO_ICMPV6)) if p.len() >= pos + 2 => pos,
                        _ => return Hard(false),
                    }
                } else {
                    return Hard(false);
                };
                if p[at] != icmp_type {
                    Hard(false)
                } else if flags & 0x01 != 0 {
                    Raw(p[at + 1] == code)
                } else {
                    Hard(true)
                }
            }
            RuleKind::SourcePortRange(lo, hi) | RuleKind::DestPortRange(lo, hi) => {
                let dest = matches!(kind, RuleKind::DestPortRange(..));
                let port_at = |at: usize, proto: u8| -> Option<u16> {
                    let carries_ports = matches!(
                        proto,
                        IPPROTO_TCP | IPPROTO_UDP | IPPROTO_SCTP | IPPROTO_UDPLITE
                    );
                    (carries_ports && p.len() > at + 4).then(|| {
                        let i = at + if dest { 2 } else { 0 };
                        u16::from_be_bytes([p[i], p[i + 1]])
                    })
                };
                if v4 {
                    Raw(port_at(ipv4_header_len(p), p[9]).is_some_and(|x| lo <= x && x <= hi))
                } else if v6 {
                    match ipv6_payload(p) {
                        // On IPv6, port 0 never matches.
                        Some((pos, proto)) => {
                            Raw(port_at(pos, proto).is_some_and(|x| x > 0 && lo <= x && x <= hi))
                        }
                        None => Hard(false),
                    }
                } else {
                    Hard(false)
                }
            }
            RuleKind::Characteristics(mask) => {
                let c = match self.chars {
                    Some(c) => c,
                    None => *self.chars.insert(characteristics(f, self.ctx)),
                };
                Raw(c & mask != 0)
            }
            RuleKind::FrameSizeRange(lo, hi) => {
                Raw(usize::from(lo) <= p.len() && p.len() <= usize::from(hi))
            }
            RuleKind::Random(probability) => Raw(self.random() <= probability),
            RuleKind::Tags { op, id, value } => {
                let ctx = self.ctx;
                match op {
                    TagOp::Sender | TagOp::Receiver => {
                        let sender = op == TagOp::Sender;
                        if super_accept {
                            *skip_drop = true;
                            Hard(true)
                        } else if sender == f.inbound {
                            // The peer's tag: the sender inbound, the receiver outbound.
                            match ctx.remote_tag(id) {
                                Some(r) => Raw(r == value),
                                None if !sender => {
                                    *skip_drop = true;
                                    Hard(true)
                                }
                                None => Hard(false),
                            }
                        } else {
                            match ctx.local_tag(id) {
                                Some(l) => Raw(l == value),
                                None => Hard(false),
                            }
                        }
                    }
                    _ => {
                        let Some(l) = ctx.local_tag(id) else {
                            return Hard(false);
                        };
                        match ctx.remote_tag(id) {
                            Some(r) => Raw(match op {
                                TagOp::Difference => l.abs_diff(r) <= value,
                                TagOp::BitwiseAnd => l & r == value,
                                TagOp::BitwiseOr => l | r == value,
                                TagOp::BitwiseXor => l ^ r == value,
                                _ => l == value && r == value,
                            }),
                            None if f.inbound && !super_accept => Hard(false),
                            None => {
                                *skip_drop = true;
                                Hard(true)
                            }
                        }
                    }
                }
            }
            RuleKind::IntegerRange {
                start,
                end,
                index,
                format,
            } => {
                let v = read_integer(p, index, format);
                Raw(v >= start && v <= start.wrapping_add(u64::from(end)))
            }
            RuleKind::UnknownMatch(_) => Raw(self.unsupported),
            // IP address matches on frames of another kind or too short.
            RuleKind::Ipv4Source(..)
            | RuleKind::Ipv4Dest(..)
            | RuleKind::Ipv6Source(..)
            | RuleKind::Ipv6Dest(..) => Hard(false),
            // Actions are handled by the caller.
            RuleKind::Drop
            | RuleKind::Accept
            | RuleKind::Tee(_)
            | RuleKind::Watch(_)
            | RuleKind::Redirect(_)
            | RuleKind::Break
            | RuleKind::Priority
            | RuleKind::UnknownAction(_) => Raw(false),
        }
    }
}

/// The integer MATCH_INTEGER_RANGE reads: `(format & 63) + 1` bits, big-endian unless format
/// bit 0x80. As stock, a big-endian read covers the last `bytes` bytes of the 8-byte window at
/// `index` (so it starts at `index + 8 − bytes`); a little-endian one starts at `index` and keeps
/// the top bits of the value. Reads past the end give 0.
fn read_integer(p: &[u8], index: u16, format: u8) -> u64 {
    let bits = u32::from(format & 63) + 1;
    let bytes = bits.div_ceil(8) as usize;
    let index = usize::from(index);
    if format & 0x80 == 0 {
        let start = index + 8 - bytes;
        let v = p
            .get(start..index + 8)
            .map_or(0, |b| b.iter().fold(0u64, |v, &x| (v << 8) | u64::from(x)));
        v & (u64::MAX >> (64 - bits))
    } else {
        let v = p.get(index..index + bytes).map_or(0, |b| {
            b.iter().fold(0u64, |v, &x| (v >> 8) | (u64::from(x) << 56))
        });
        v >> (64 - bits)
    }
}

/// Evaluates one rule table on a frame. `unsupported_match_result` is what an unknown match
/// type yields before its NOT bit (netconfig flag 0x08).
#[must_use]
pub fn evaluate_table<C: FilterContext + ?Sized>(
    rules: &[Rule],
    frame: &FrameInfo<'_>,
    ctx: &C,
    unsupported_match_result: bool,
) -> Evaluation {
    Evaluator::new(frame, ctx, unsupported_match_result).table(rules)
}

/// Runs the base table, then (if it did not match) the capabilities in order until one accepts.
/// Returns the deciding verdict (`NoMatch`/`Drop` = drop), the copies to send if accepted, and
/// the index of the accepting capability.
fn decide<C, I, R>(
    base: &[Rule],
    capabilities: I,
    frame: &FrameInfo<'_>,
    ctx: &C,
    unsupported: bool,
) -> (Verdict, Vec<FrameCopy>, Option<usize>)
where
    C: FilterContext + ?Sized,
    I: IntoIterator<Item = R>,
    R: AsRef<[Rule]>,
{
    let mut ev = Evaluator::new(frame, ctx, unsupported);
    let first = ev.table(base);
    let mut copies = Vec::new();
    let mut capability = None;
    let verdict = match first.verdict {
        Verdict::Drop => return (Verdict::Drop, copies, None),
        Verdict::NoMatch => {
            let mut won = Verdict::NoMatch;
            for (i, cap) in capabilities.into_iter().enumerate() {
                let e = ev.table(cap.as_ref());
                if matches!(e.verdict, Verdict::NoMatch | Verdict::Drop) {
                    continue;
                }
                capability = Some(i);
                copies.extend(e.copy);
                won = e.verdict;
                break;
            }
            if capability.is_none() {
                return (Verdict::NoMatch, copies, None);
            }
            won
        }
        v => v,
    };
    copies.extend(first.copy);
    (verdict, copies, capability)
}

/// The full decision for a frame this node sends (`frame.inbound` false): the base table, then
/// this node's own capabilities in ascending capability-ID order (each as its rule slice);
/// default drop.
#[must_use]
pub fn filter_outbound<C, I, R>(
    base: &[Rule],
    capabilities: I,
    frame: &FrameInfo<'_>,
    ctx: &C,
    unsupported_match_result: bool,
) -> OutboundDecision
where
    C: FilterContext + ?Sized,
    I: IntoIterator<Item = R>,
    R: AsRef<[Rule]>,
{
    let (verdict, copies, capability) =
        decide(base, capabilities, frame, ctx, unsupported_match_result);
    match verdict {
        Verdict::NoMatch | Verdict::Drop => OutboundDecision::default(),
        // A redirect to address 0 leaves the frame going where it was going.
        Verdict::Redirect(to) if to.to_u64() != 0 => OutboundDecision {
            accept: false,
            redirect: Some(to),
            copies,
            capability,
        },
        _ => OutboundDecision {
            accept: true,
            redirect: None,
            copies,
            capability,
        },
    }
}

/// The full decision for a frame this node received (`frame.inbound` true): the base table, then
/// the sender's valid capabilities in the order given; default drop.
#[must_use]
pub fn filter_inbound<C, I, R>(
    base: &[Rule],
    capabilities: I,
    frame: &FrameInfo<'_>,
    ctx: &C,
    unsupported_match_result: bool,
) -> InboundDecision
where
    C: FilterContext + ?Sized,
    I: IntoIterator<Item = R>,
    R: AsRef<[Rule]>,
{
    let (verdict, copies, capability) =
        decide(base, capabilities, frame, ctx, unsupported_match_result);
    let delivery = match verdict {
        Verdict::NoMatch | Verdict::Drop => return InboundDecision::default(),
        Verdict::Redirect(to) if to.to_u64() != 0 => {
            return InboundDecision {
                delivery: Delivery::Drop,
                redirect: Some(to),
                copies,
                capability,
            };
        }
        Verdict::SuperAccept => Delivery::SuperAccept,
        _ => Delivery::Accept,
    };
    InboundDecision {
        delivery,
        redirect: None,
        copies,
        capability,
    }
}

/// The 14-entry rule table of a port-range ad-hoc network (`ffSSSSEEEE000000`): IPv6 only;
/// ICMPv6; UDP or TCP to a port in `start..=end`; anything without a TCP SYN; SYN+ACK; else drop.
#[must_use]
pub fn adhoc_port_rules(start: u16, end: u16) -> Vec<Rule> {
    use RuleKind as K;
    let accept = Rule::new(K::Accept);
    vec![
        Rule::not(K::EtherType(ETHERTYPE_IPV6)),
        Rule::new(K::Drop),
        Rule::new(K::IpProtocol(IPPROTO_ICMPV6)),
        accept,
        Rule::new(K::IpProtocol(IPPROTO_UDP)),
        Rule::or(K::IpProtocol(IPPROTO_TCP)),
        Rule::new(K::DestPortRange(start, end)),
        accept,
        Rule::not(K::Characteristics(CHAR_TCP_SYN)),
        accept,
        Rule::new(K::Characteristics(CHAR_TCP_SYN)),
        Rule::new(K::Characteristics(CHAR_TCP_ACK)),
        accept,
        Rule::new(K::Drop),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::network::NetworkId;
    use crate::network::rules::{
        CHAR_TCP_ACK, CHAR_TCP_FIN, CHAR_TCP_NS, CHAR_TCP_PSH, parse_rules, write_rules,
    };
    use RuleKind as K;
    use proptest::prelude::*;

    /// Hand-built IP packets (Ethernet payloads).
    mod pkt {
        use std::net::Ipv6Addr;

        pub(super) const SRC4: [u8; 4] = [10, 0, 0, 1];
        pub(super) const DST4: [u8; 4] = [10, 0, 0, 2];

        pub(super) fn src6() -> Ipv6Addr {
            "fd00::1".parse().expect("literal")
        }

        pub(super) fn dst6() -> Ipv6Addr {
            "fd00::2".parse().expect("literal")
        }

        /// IPv4 with a 20-byte header.
        pub(super) fn ipv4(proto: u8, src: [u8; 4], dst: [u8; 4], l4: &[u8]) -> Vec<u8> {
            let len = (20 + l4.len()) as u16;
            let mut p = vec![0x45, 0];
            p.extend_from_slice(&len.to_be_bytes());
            p.extend_from_slice(&[0, 0, 0x40, 0, 64, proto, 0, 0]);
            p.extend_from_slice(&src);
            p.extend_from_slice(&dst);
            p.extend_from_slice(l4);
            p
        }

        /// IPv6; `l4` includes any extension headers.
        pub(super) fn ipv6(next: u8, src: Ipv6Addr, dst: Ipv6Addr, l4: &[u8]) -> Vec<u8> {
            let mut p = vec![0x60, 0, 0, 0];
            p.extend_from_slice(&(l4.len() as u16).to_be_bytes());
            p.extend_from_slice(&[next, 64]);
            p.extend_from_slice(&src.octets());
            p.extend_from_slice(&dst.octets());
            p.extend_from_slice(l4);
            p
        }

        /// A 20-byte TCP header; `flags` bits 0..7 go to byte 13, bits 8..11 to byte 12.
        pub(super) fn tcp(sport: u16, dport: u16, flags: u16) -> Vec<u8> {
            let mut t = Vec::new();
            t.extend_from_slice(&sport.to_be_bytes());
            t.extend_from_slice(&dport.to_be_bytes());
            t.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0]);
            t.push(0x50 | ((flags >> 8) & 0x0f) as u8);
            t.push(flags as u8);
            t.extend_from_slice(&[0xff, 0xff, 0, 0, 0, 0]);
            t
        }

        /// A UDP header and data.
        pub(super) fn udp(sport: u16, dport: u16, data: &[u8]) -> Vec<u8> {
            let mut u = Vec::new();
            u.extend_from_slice(&sport.to_be_bytes());
            u.extend_from_slice(&dport.to_be_bytes());
            u.extend_from_slice(&((8 + data.len()) as u16).to_be_bytes());
            u.extend_from_slice(&[0, 0]);
            u.extend_from_slice(data);
            u
        }

        /// An 8-byte ICMP / ICMPv6 header.
        pub(super) fn icmp(icmp_type: u8, code: u8) -> Vec<u8> {
            vec![icmp_type, code, 0, 0, 0, 0, 0, 0]
        }

        pub(super) fn v4_tcp(sport: u16, dport: u16, flags: u16) -> Vec<u8> {
            ipv4(6, SRC4, DST4, &tcp(sport, dport, flags))
        }

        pub(super) fn v6_tcp(sport: u16, dport: u16, flags: u16) -> Vec<u8> {
            ipv6(6, src6(), dst6(), &tcp(sport, dport, flags))
        }

        pub(super) fn v4_udp(sport: u16, dport: u16) -> Vec<u8> {
            ipv4(17, SRC4, DST4, &udp(sport, dport, b"hello"))
        }

        pub(super) fn v6_udp(sport: u16, dport: u16) -> Vec<u8> {
            ipv6(17, src6(), dst6(), &udp(sport, dport, b"hello"))
        }

        pub(super) fn v4_icmp(icmp_type: u8, code: u8) -> Vec<u8> {
            ipv4(1, SRC4, DST4, &icmp(icmp_type, code))
        }

        pub(super) fn v6_icmp(icmp_type: u8, code: u8) -> Vec<u8> {
            ipv6(58, src6(), dst6(), &icmp(icmp_type, code))
        }

        /// IPv6 neighbor solicitation / advertisement for `target`.
        pub(super) fn v6_nd(icmp_type: u8, target: Ipv6Addr) -> Vec<u8> {
            let mut l4 = icmp(icmp_type, 0);
            l4.extend_from_slice(&target.octets());
            ipv6(58, "fe80::1".parse().expect("literal"), dst6(), &l4)
        }

        /// An ARP request from `spa`.
        pub(super) fn arp(spa: [u8; 4]) -> Vec<u8> {
            let mut p = vec![0, 1, 8, 0, 6, 4, 0, 1, 2, 0, 0, 0, 0, 1];
            p.extend_from_slice(&spa);
            p.extend_from_slice(&[0; 6]);
            p.extend_from_slice(&[10, 0, 0, 2]);
            p
        }
    }

    const TCP_SYN: u16 = 0x02;
    const TCP_ACK: u16 = 0x10;

    fn addr(a: u64) -> Address {
        Address::from_u64_truncating(a)
    }
    fn me() -> Address {
        addr(0x11_1111_1111)
    }
    fn peer() -> Address {
        addr(0x22_2222_2222)
    }
    fn third() -> Address {
        addr(0x33_3333_3333)
    }
    fn fourth() -> Address {
        addr(0x44_4444_4444)
    }
    const MAC_ME: Mac = Mac(0x0211_1111_1111);
    const MAC_PEER: Mac = Mac(0x0222_2222_2222);

    fn ethertype_of(p: &[u8]) -> u16 {
        match p.first().map(|b| b >> 4) {
            Some(4) => ETHERTYPE_IPV4,
            Some(6) => ETHERTYPE_IPV6,
            _ => ETHERTYPE_ARP,
        }
    }

    /// This node sending `p` to the peer.
    fn outbound(p: &[u8]) -> FrameInfo<'_> {
        FrameInfo {
            inbound: false,
            me: me(),
            source: me(),
            dest: Some(peer()),
            mac_source: MAC_ME,
            mac_dest: MAC_PEER,
            ethertype: ethertype_of(p),
            vlan_id: 0,
            payload: p,
            random_seed: 1,
        }
    }

    /// The peer sending `p` to this node.
    fn inbound(p: &[u8]) -> FrameInfo<'_> {
        FrameInfo {
            inbound: true,
            me: me(),
            source: peer(),
            dest: Some(me()),
            mac_source: MAC_PEER,
            mac_dest: MAC_ME,
            ethertype: ethertype_of(p),
            vlan_id: 0,
            payload: p,
            random_seed: 1,
        }
    }

    #[derive(Default)]
    struct Ctx {
        local: Vec<(u32, u32)>,
        remote: Vec<(u32, u32)>,
        ips: Vec<IpAddr>,
        macs: Vec<Mac>,
    }

    impl FilterContext for Ctx {
        fn local_tag(&self, id: u32) -> Option<u32> {
            self.local.iter().find(|t| t.0 == id).map(|t| t.1)
        }
        fn remote_tag(&self, id: u32) -> Option<u32> {
            self.remote.iter().find(|t| t.0 == id).map(|t| t.1)
        }
        fn source_ip_owned(&self, ip: IpAddr) -> bool {
            self.ips.contains(&ip)
        }
        fn source_mac_owned(&self, mac: Mac) -> bool {
            self.macs.contains(&mac)
        }
    }

    fn tags(local: &[(u32, u32)], remote: &[(u32, u32)]) -> Ctx {
        Ctx {
            local: local.to_vec(),
            remote: remote.to_vec(),
            ..Ctx::default()
        }
    }

    fn verdict(rules: &[Rule], f: &FrameInfo<'_>) -> Verdict {
        evaluate_table(rules, f, &NoCredentials, false).verdict
    }

    fn accept() -> Rule {
        Rule::new(K::Accept)
    }

    fn drop_() -> Rule {
        Rule::new(K::Drop)
    }

    /// (plain, negated): whether `[match, ACCEPT]` accepts, without and with the NOT bit.
    /// Raw true = (T, F), raw false = (F, T), hard false = (F, F), hard true = (T, T).
    fn outcome_with(
        kind: RuleKind,
        f: &FrameInfo<'_>,
        ctx: &Ctx,
        unsupported: bool,
    ) -> (bool, bool) {
        let run = |r: Rule| {
            let v = evaluate_table(&[r, accept()], f, ctx, unsupported).verdict;
            assert!(matches!(v, Verdict::Accept | Verdict::NoMatch), "{v:?}");
            v == Verdict::Accept
        };
        (run(Rule::new(kind)), run(Rule::not(kind)))
    }

    fn outcome(kind: RuleKind, f: &FrameInfo<'_>) -> (bool, bool) {
        outcome_with(kind, f, &Ctx::default(), false)
    }

    /// `kind` on each of `packets` (sent): a hard false, NOT or not.
    fn assert_hard_false(kind: RuleKind, packets: &[&[u8]]) {
        for p in packets {
            assert_eq!(outcome(kind, &outbound(p)), HARD_F, "{kind:?} on {p:02x?}");
        }
    }

    const T: (bool, bool) = (true, false);
    const F: (bool, bool) = (false, true);
    const HARD_F: (bool, bool) = (false, false);
    const HARD_T: (bool, bool) = (true, true);

    #[test]
    fn zerotier_addresses() {
        let p = pkt::v4_udp(1, 2);
        assert_eq!(outcome(K::SourceAddress(peer()), &inbound(&p)), T);
        assert_eq!(outcome(K::SourceAddress(third()), &inbound(&p)), F);
        assert_eq!(outcome(K::SourceAddress(me()), &outbound(&p)), T);
        assert_eq!(outcome(K::DestAddress(me()), &inbound(&p)), T);
        assert_eq!(outcome(K::DestAddress(peer()), &outbound(&p)), T);
        assert_eq!(outcome(K::DestAddress(third()), &outbound(&p)), F);
        // An unknown destination compares as address 0.
        let mut f = outbound(&p);
        f.dest = None;
        assert_eq!(outcome(K::DestAddress(peer()), &f), F);
        assert_eq!(outcome(K::DestAddress(addr(0)), &f), T);
    }

    #[test]
    fn vlan_matches() {
        let p = pkt::v4_udp(1, 2);
        let mut f = outbound(&p);
        assert_eq!(outcome(K::VlanId(0), &f), T);
        assert_eq!(outcome(K::VlanId(7), &f), F);
        f.vlan_id = 7;
        assert_eq!(outcome(K::VlanId(7), &f), T);
        // PCP and DEI are not supported: true iff the operand is 0.
        assert_eq!(outcome(K::VlanPcp(0), &f), T);
        assert_eq!(outcome(K::VlanPcp(3), &f), F);
        assert_eq!(outcome(K::VlanDei(0), &f), T);
        assert_eq!(outcome(K::VlanDei(1), &f), F);
    }

    #[test]
    fn mac_matches() {
        let p = pkt::v4_udp(1, 2);
        let f = outbound(&p);
        assert_eq!(outcome(K::MacSource(MAC_ME), &f), T);
        assert_eq!(outcome(K::MacSource(MAC_PEER), &f), F);
        assert_eq!(outcome(K::MacDest(MAC_PEER), &f), T);
        assert_eq!(outcome(K::MacDest(MAC_ME), &f), F);
    }

    #[test]
    fn ipv4_address_matches() {
        let p = pkt::v4_udp(1, 2);
        let f = outbound(&p);
        let ip = |s: &str| s.parse::<Ipv4Addr>().expect("literal");
        assert_eq!(outcome(K::Ipv4Source(ip("10.0.0.0"), 8), &f), T);
        assert_eq!(outcome(K::Ipv4Source(ip("10.0.0.1"), 32), &f), T);
        assert_eq!(outcome(K::Ipv4Source(ip("10.0.0.2"), 32), &f), F);
        assert_eq!(outcome(K::Ipv4Source(ip("10.1.0.0"), 16), &f), F);
        assert_eq!(outcome(K::Ipv4Source(ip("192.168.0.0"), 0), &f), T);
        assert_eq!(outcome(K::Ipv4Dest(ip("10.0.0.2"), 32), &f), T);
        assert_eq!(outcome(K::Ipv4Dest(ip("10.0.0.1"), 32), &f), F);
        // The host bits of the rule address are ignored for IPv4.
        assert_eq!(outcome(K::Ipv4Source(ip("10.9.9.9"), 8), &f), T);
        // Not IPv4, or too short: hard false.
        let (q, a) = (pkt::v6_udp(1, 2), pkt::arp(pkt::SRC4));
        assert_hard_false(K::Ipv4Source(ip("0.0.0.0"), 0), &[&q, &p[..19], &a]);
        assert_hard_false(K::Ipv4Dest(ip("0.0.0.0"), 0), &[&q]);
    }

    #[test]
    fn ipv6_address_matches() {
        let p = pkt::v6_udp(1, 2);
        let f = outbound(&p);
        let ip = |s: &str| s.parse::<Ipv6Addr>().expect("literal");
        assert_eq!(outcome(K::Ipv6Source(ip("fd00::"), 8), &f), T);
        assert_eq!(outcome(K::Ipv6Source(ip("fd00::1"), 128), &f), T);
        assert_eq!(outcome(K::Ipv6Source(ip("fd00::2"), 128), &f), F);
        assert_eq!(outcome(K::Ipv6Source(ip("fc00::"), 8), &f), F);
        assert_eq!(outcome(K::Ipv6Source(ip("::"), 0), &f), T);
        assert_eq!(outcome(K::Ipv6Dest(ip("fd00::2"), 128), &f), T);
        assert_eq!(outcome(K::Ipv6Dest(ip("fd00::"), 100), &f), T);
        // Unlike IPv4, the rule address is compared unmasked: host bits make it never match.
        assert_eq!(outcome(K::Ipv6Source(ip("fd00::1"), 64), &f), F);
        let q = pkt::v4_udp(1, 2);
        assert_hard_false(K::Ipv6Source(ip("::"), 0), &[&q]);
        assert_hard_false(K::Ipv6Dest(ip("::"), 0), &[&p[..39]]);
    }

    #[test]
    fn ip_tos() {
        let mut p = pkt::v4_udp(1, 2);
        p[1] = 0xb9; // DSCP 46 (EF), ECN 1
        let tos = |mask, start, end| K::IpTos { mask, start, end };
        assert_eq!(outcome(tos(0xfc, 0xb8, 0xb8), &outbound(&p)), T);
        assert_eq!(outcome(tos(0xff, 0xb8, 0xb8), &outbound(&p)), F);
        assert_eq!(outcome(tos(0xff, 0x00, 0xff), &outbound(&p)), T);
        // IPv6 traffic class straddles bytes 0 and 1.
        let mut q = pkt::v6_udp(1, 2);
        q[0] = 0x6b;
        q[1] = 0x90;
        assert_eq!(outcome(tos(0xfc, 0xb8, 0xb8), &outbound(&q)), T);
        assert_eq!(outcome(tos(0xff, 0xb9, 0xb9), &outbound(&q)), T);
        assert_eq!(outcome(tos(0xff, 0, 0xb8), &outbound(&q)), F);
        let a = pkt::arp(pkt::SRC4);
        assert_eq!(outcome(tos(0, 0, 255), &outbound(&a)), HARD_F);
    }

    /// `next` header preceded by a hop-by-hop header and a 16-byte destination options header.
    fn with_extension_headers(next: u8, l4: &[u8]) -> Vec<u8> {
        let mut ext = vec![60, 0, 0, 0, 0, 0, 0, 0];
        ext.extend_from_slice(&[next, 1]);
        ext.extend_from_slice(&[0; 14]);
        ext.extend_from_slice(l4);
        pkt::ipv6(0, pkt::src6(), pkt::dst6(), &ext)
    }

    #[test]
    fn ipv6_header_walk() {
        assert_eq!(ipv6_payload(&pkt::v6_udp(1, 2)), Some((40, 17)));
        let p = with_extension_headers(6, &pkt::tcp(1, 2, 0));
        assert_eq!(ipv6_payload(&p), Some((64, 6)));
        // A header exactly at the end still names the protocol.
        assert_eq!(ipv6_payload(&p[..64]), Some((64, 6)));
        // Cut inside an extension header, or its length running past the end.
        assert_eq!(ipv6_payload(&p[..60]), None);
        assert_eq!(ipv6_payload(&p[..50]), None);
        assert_eq!(ipv6_payload(&p[..39]), None);
        // Fragment (44) and ESP (50) headers end the walk.
        let f = pkt::ipv6(44, pkt::src6(), pkt::dst6(), &[6, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(ipv6_payload(&f), Some((40, 44)));
    }

    #[test]
    fn ip_protocol() {
        assert_eq!(
            outcome(K::IpProtocol(6), &outbound(&pkt::v4_tcp(1, 2, 0))),
            T
        );
        assert_eq!(
            outcome(K::IpProtocol(17), &outbound(&pkt::v4_tcp(1, 2, 0))),
            F
        );
        assert_eq!(outcome(K::IpProtocol(17), &outbound(&pkt::v6_udp(1, 2))), T);
        let p = with_extension_headers(6, &pkt::tcp(1, 2, 0));
        assert_eq!(outcome(K::IpProtocol(6), &outbound(&p)), T);
        assert_eq!(outcome(K::IpProtocol(0), &outbound(&p)), F);
        let (a, v4) = (pkt::arp(pkt::SRC4), pkt::v4_tcp(1, 2, 0));
        assert_hard_false(K::IpProtocol(6), &[&p[..60], &a, &v4[..19]]);
    }

    #[test]
    fn ethertype() {
        let p = pkt::v4_udp(1, 2);
        assert_eq!(outcome(K::EtherType(0x0800), &outbound(&p)), T);
        assert_eq!(outcome(K::EtherType(0x86dd), &outbound(&p)), F);
    }

    #[test]
    fn icmp() {
        let icmp = |icmp_type, code, flags| K::Icmp {
            icmp_type,
            code,
            flags,
        };
        for p in [pkt::v4_icmp(8, 0), pkt::v6_icmp(8, 0)] {
            let f = outbound(&p);
            // Type only: a hard true, NOT or not.
            assert_eq!(outcome(icmp(8, 5, 0), &f), HARD_T);
            // Type and code.
            assert_eq!(outcome(icmp(8, 0, 1), &f), T);
            assert_eq!(outcome(icmp(8, 1, 1), &f), F);
            // Other type: hard false.
            assert_eq!(outcome(icmp(0, 0, 0), &f), HARD_F);
            assert_eq!(outcome(icmp(0, 0, 1), &f), HARD_F);
        }
        let p = with_extension_headers(58, &pkt::icmp(128, 0));
        assert_eq!(outcome(icmp(128, 0, 1), &outbound(&p)), T);
        for p in [
            pkt::v4_udp(1, 2),
            pkt::v6_udp(1, 2),
            pkt::arp(pkt::SRC4),
            pkt::v4_icmp(8, 0)[..21].to_vec(),
            pkt::v6_icmp(8, 0)[..41].to_vec(),
        ] {
            assert_eq!(outcome(icmp(8, 0, 0), &outbound(&p)), HARD_F);
        }
    }

    #[test]
    fn port_ranges() {
        let d = |lo, hi| K::DestPortRange(lo, hi);
        let s = |lo, hi| K::SourcePortRange(lo, hi);
        for p in [
            pkt::v4_tcp(1234, 80, 0),
            pkt::v6_tcp(1234, 80, 0),
            pkt::v4_udp(1234, 80),
            pkt::v6_udp(1234, 80),
            pkt::ipv4(132, pkt::SRC4, pkt::DST4, &pkt::udp(1234, 80, b"")),
            pkt::ipv6(136, pkt::src6(), pkt::dst6(), &pkt::udp(1234, 80, b"")),
            with_extension_headers(17, &pkt::udp(1234, 80, b"")),
        ] {
            let f = outbound(&p);
            assert_eq!(outcome(d(80, 80), &f), T);
            assert_eq!(outcome(d(0, 79), &f), F);
            assert_eq!(outcome(d(81, 65535), &f), F);
            assert_eq!(outcome(s(1000, 2000), &f), T);
            assert_eq!(outcome(s(80, 80), &f), F);
        }
        // A protocol without ports, or too short: a plain (raw) false, so NOT makes it true.
        for p in [
            pkt::v4_icmp(8, 0),
            pkt::v6_icmp(8, 0),
            pkt::v4_tcp(1234, 80, 0)[..24].to_vec(),
            pkt::v6_tcp(1234, 80, 0)[..44].to_vec(),
        ] {
            assert_eq!(outcome(d(0, 65535), &outbound(&p)), F);
        }
        // Port 0 matches on IPv4 but never on IPv6.
        assert_eq!(outcome(d(0, 10), &outbound(&pkt::v4_udp(1, 0))), T);
        assert_eq!(outcome(d(0, 10), &outbound(&pkt::v6_udp(1, 0))), F);
        assert_eq!(outcome(s(0, 10), &outbound(&pkt::v6_udp(0, 5))), F);
        // No walkable IPv6 header, or not IP at all: hard false.
        let p = with_extension_headers(17, &pkt::udp(1234, 80, b""));
        let (a, v4) = (pkt::arp(pkt::SRC4), pkt::v4_udp(1, 2));
        assert_hard_false(d(0, 65535), &[&p[..60], &a, &v4[..19]]);
    }

    #[test]
    fn characteristics_bits() {
        let c = |f: &FrameInfo<'_>| characteristics(f, &NoCredentials);
        let p = pkt::v4_tcp(1, 2, TCP_SYN | TCP_ACK | 0x100 | 0x200);
        assert_eq!(
            c(&outbound(&p)),
            CHAR_TCP_SYN | CHAR_TCP_ACK | CHAR_TCP_NS | 0x200
        );
        assert_eq!(
            c(&inbound(&p)),
            CHAR_INBOUND | CHAR_TCP_SYN | CHAR_TCP_ACK | CHAR_TCP_NS | 0x200
        );
        let q = pkt::v6_tcp(1, 2, 0x01 | 0x08 | 0x80);
        assert_eq!(c(&outbound(&q)), CHAR_TCP_FIN | CHAR_TCP_PSH | 0x80);
        let e = with_extension_headers(6, &pkt::tcp(1, 2, TCP_SYN));
        assert_eq!(c(&outbound(&e)), CHAR_TCP_SYN);
        // IPv6 TCP needs more than 14 header bytes; UDP has no flags.
        assert_eq!(c(&outbound(&q[..54])), 0);
        assert_eq!(c(&outbound(&pkt::v4_udp(1, 2))), 0);
        // Destination kinds.
        let mut f = outbound(&p);
        f.mac_dest = Mac(0x3333_0000_0001);
        assert_eq!(c(&f) & !0xfff, CHAR_MULTICAST);
        f.mac_dest = Mac::BROADCAST;
        assert_eq!(c(&f) & !0xfff, CHAR_MULTICAST | CHAR_BROADCAST);
        // Ownership, asked of the context.
        let ctx = Ctx {
            ips: vec![IpAddr::V4(Ipv4Addr::from(pkt::SRC4))],
            macs: vec![MAC_ME],
            ..Ctx::default()
        };
        assert_eq!(
            characteristics(&outbound(&p), &ctx) & !0xfff,
            CHAR_SENDER_IP_AUTHENTICATED | CHAR_SENDER_MAC_AUTHENTICATED
        );
        assert_eq!(
            characteristics(&inbound(&p), &ctx) & !0xfff,
            CHAR_INBOUND | CHAR_SENDER_IP_AUTHENTICATED
        );
        // A neighbor solicitation is authenticated outright.
        let ns = pkt::v6_nd(135, pkt::dst6());
        assert_eq!(c(&outbound(&ns)), CHAR_SENDER_IP_AUTHENTICATED);
        // As a rule.
        let chars = K::Characteristics;
        assert_eq!(outcome(chars(CHAR_TCP_SYN), &outbound(&p)), T);
        assert_eq!(outcome(chars(CHAR_TCP_FIN), &outbound(&p)), F);
        assert_eq!(outcome(chars(CHAR_INBOUND), &inbound(&p)), T);
        assert_eq!(outcome(chars(CHAR_INBOUND), &outbound(&p)), F);
        assert_eq!(
            outcome(chars(CHAR_TCP_FIN | CHAR_TCP_ACK), &outbound(&p)),
            T
        );
        assert_eq!(
            outcome_with(
                chars(CHAR_SENDER_MAC_AUTHENTICATED),
                &outbound(&p),
                &ctx,
                false
            ),
            T
        );
    }

    #[test]
    fn ownership_sources() {
        let v4 = |a: [u8; 4]| OwnershipSource::Ip(IpAddr::V4(Ipv4Addr::from(a)));
        let v6 = |a: Ipv6Addr| OwnershipSource::Ip(IpAddr::V6(a));
        assert_eq!(
            ownership_source(ETHERTYPE_IPV4, &pkt::v4_udp(1, 2)),
            v4(pkt::SRC4)
        );
        assert_eq!(
            ownership_source(ETHERTYPE_IPV4, &[0x45; 19]),
            OwnershipSource::None
        );
        assert_eq!(
            ownership_source(ETHERTYPE_ARP, &pkt::arp([10, 9, 8, 7])),
            v4([10, 9, 8, 7])
        );
        assert_eq!(
            ownership_source(ETHERTYPE_ARP, &[0; 27]),
            OwnershipSource::None
        );
        assert_eq!(
            ownership_source(ETHERTYPE_IPV6, &pkt::v6_udp(1, 2)),
            v6(pkt::src6())
        );
        assert_eq!(
            ownership_source(ETHERTYPE_IPV6, &[0x60; 39]),
            OwnershipSource::None
        );
        let target: Ipv6Addr = "fd00::77".parse().expect("literal");
        assert_eq!(
            ownership_source(ETHERTYPE_IPV6, &pkt::v6_nd(135, target)),
            OwnershipSource::NeighborSolicitation
        );
        assert_eq!(
            ownership_source(ETHERTYPE_IPV6, &pkt::v6_nd(136, target)),
            v6(target)
        );
        // Other ICMPv6, or a truncated one, uses the IPv6 source.
        let fe80: Ipv6Addr = "fe80::1".parse().expect("literal");
        assert_eq!(
            ownership_source(ETHERTYPE_IPV6, &pkt::v6_nd(128, target)),
            v6(fe80)
        );
        assert_eq!(
            ownership_source(ETHERTYPE_IPV6, &pkt::v6_nd(135, target)[..63]),
            v6(fe80)
        );
        assert_eq!(
            ownership_source(0x1234, &pkt::v4_udp(1, 2)),
            OwnershipSource::None
        );
    }

    #[test]
    fn frame_size_range() {
        let p = pkt::v4_udp(1, 2); // 33 bytes
        assert_eq!(p.len(), 33);
        assert_eq!(outcome(K::FrameSizeRange(33, 33), &outbound(&p)), T);
        assert_eq!(outcome(K::FrameSizeRange(0, 32), &outbound(&p)), F);
        assert_eq!(outcome(K::FrameSizeRange(34, 1500), &outbound(&p)), F);
    }

    #[test]
    fn random() {
        let p = pkt::v4_udp(1, 2);
        let mut hits = 0;
        for seed in 0..2000 {
            let mut f = outbound(&p);
            f.random_seed = seed;
            assert_eq!(outcome(K::Random(u32::MAX), &f), T);
            if outcome(K::Random(u32::MAX / 4), &f) == T {
                hits += 1;
            }
        }
        assert!((350..650).contains(&hits), "{hits}");
        // Each RANDOM match draws anew.
        let rules = [Rule::new(K::Random(u32::MAX / 2)), accept()];
        let mut f = outbound(&p);
        let mut both = [0; 2];
        for seed in 0..200 {
            f.random_seed = seed;
            let e = |r: &[Rule]| evaluate_table(r, &f, &NoCredentials, false).verdict;
            let twice = [rules[0], rules[0], accept()];
            both[usize::from(e(&twice) == Verdict::Accept)] += 1;
            let _ = e(&rules);
        }
        assert!(both[1] > 20 && both[1] < 80, "{both:?}");
    }

    #[test]
    fn tag_comparisons() {
        let p = pkt::v4_udp(1, 2);
        let tag = |op, value| K::Tags { op, id: 1, value };
        let ctx = tags(&[(1, 5)], &[(1, 7)]);
        for f in [outbound(&p), inbound(&p)] {
            let o = |k| outcome_with(k, &f, &ctx, false);
            assert_eq!(o(tag(TagOp::Difference, 2)), T);
            assert_eq!(o(tag(TagOp::Difference, 1)), F);
            assert_eq!(o(tag(TagOp::BitwiseAnd, 5)), T);
            assert_eq!(o(tag(TagOp::BitwiseAnd, 7)), F);
            assert_eq!(o(tag(TagOp::BitwiseOr, 7)), T);
            assert_eq!(o(tag(TagOp::BitwiseXor, 2)), T);
            assert_eq!(o(tag(TagOp::BitwiseXor, 0)), F);
            assert_eq!(o(tag(TagOp::Equal, 5)), F);
        }
        let same = tags(&[(1, 5)], &[(1, 5)]);
        assert_eq!(
            outcome_with(tag(TagOp::Equal, 5), &outbound(&p), &same, false),
            T
        );
        // No local tag: hard false in both directions.
        let ctx = tags(&[], &[(1, 5)]);
        for f in [outbound(&p), inbound(&p)] {
            assert_eq!(outcome_with(tag(TagOp::Equal, 5), &f, &ctx, false), HARD_F);
        }
        // No remote tag: inbound strict, outbound lenient.
        let ctx = tags(&[(1, 5)], &[]);
        assert_eq!(
            outcome_with(tag(TagOp::Equal, 5), &inbound(&p), &ctx, false),
            HARD_F
        );
        assert_eq!(
            outcome_with(tag(TagOp::Equal, 5), &outbound(&p), &ctx, false),
            HARD_T
        );
    }

    #[test]
    fn tag_sender_and_receiver() {
        let p = pkt::v4_udp(1, 2);
        let sender = |value| K::Tags {
            op: TagOp::Sender,
            id: 1,
            value,
        };
        let receiver = |value| K::Tags {
            op: TagOp::Receiver,
            id: 1,
            value,
        };
        let ctx = tags(&[(1, 5)], &[(1, 7)]);
        let o = |k, f: &FrameInfo<'_>| outcome_with(k, f, &ctx, false);
        // Outbound: we are the sender, the peer the receiver.
        assert_eq!(o(sender(5), &outbound(&p)), T);
        assert_eq!(o(sender(7), &outbound(&p)), F);
        assert_eq!(o(receiver(7), &outbound(&p)), T);
        assert_eq!(o(receiver(5), &outbound(&p)), F);
        // Inbound: the peer is the sender, we the receiver.
        assert_eq!(o(sender(7), &inbound(&p)), T);
        assert_eq!(o(receiver(5), &inbound(&p)), T);
        assert_eq!(o(receiver(7), &inbound(&p)), F);
        // Missing tags.
        let none = Ctx::default();
        let o = |k, f: &FrameInfo<'_>| outcome_with(k, f, &none, false);
        assert_eq!(o(sender(5), &outbound(&p)), HARD_F);
        assert_eq!(o(receiver(5), &outbound(&p)), HARD_T);
        assert_eq!(o(sender(5), &inbound(&p)), HARD_F);
        assert_eq!(o(receiver(5), &inbound(&p)), HARD_F);
    }

    #[test]
    fn skip_drop() {
        let p = pkt::v4_udp(1, 2);
        let missing = K::Tags {
            op: TagOp::Equal,
            id: 1,
            value: 5,
        };
        let ctx = tags(&[(1, 5)], &[]);
        let e = |rules: &[Rule], f: &FrameInfo<'_>| evaluate_table(rules, f, &ctx, false).verdict;
        // The lenient match arms skip-drop: its own DROP is skipped, the set stays matching.
        let rules = [Rule::new(missing), drop_(), accept()];
        assert_eq!(e(&rules, &outbound(&p)), Verdict::Accept);
        // Inbound the same match is a hard false instead.
        let rules = [Rule::new(missing), accept(), drop_()];
        assert_eq!(e(&rules, &outbound(&p)), Verdict::Accept);
        assert_eq!(e(&rules, &inbound(&p)), Verdict::Drop);
        // NOT does not change the lenient result.
        let rules = [Rule::not(missing), drop_(), accept()];
        assert_eq!(e(&rules, &outbound(&p)), Verdict::Accept);
        // Only one DROP is skipped.
        let rules = [Rule::new(missing), drop_(), drop_(), accept()];
        assert_eq!(e(&rules, &outbound(&p)), Verdict::Drop);
        // It stays armed across sets until a DROP is taken.
        let rules = [
            Rule::new(missing),
            Rule::new(K::Tee(Forward {
                address: third(),
                flags: 0,
                length: 0,
            })),
            drop_(),
            accept(),
        ];
        assert_eq!(e(&rules, &outbound(&p)), Verdict::Accept);
        // A skipped match (set already false, no OR) is not evaluated and arms nothing.
        let rules = [
            Rule::new(K::EtherType(0x1234)),
            Rule::new(missing),
            drop_(),
            drop_(),
        ];
        assert_eq!(e(&rules, &outbound(&p)), Verdict::Drop);
        // An OR'ed match is evaluated even when the set already matches.
        let rules = [
            Rule::new(K::EtherType(ETHERTYPE_IPV4)),
            Rule::or(missing),
            drop_(),
            accept(),
        ];
        assert_eq!(e(&rules, &outbound(&p)), Verdict::Accept);
    }

    #[test]
    fn integer_range() {
        let p: Vec<u8> = (0u8..32).collect();
        let f = outbound(&p);
        let int = |start, end, index, format| K::IntegerRange {
            start,
            end,
            index,
            format,
        };
        assert_eq!(read_integer(&p, 0, 7), 7, "big-endian byte at index + 7");
        assert_eq!(read_integer(&p, 0, 0x87), 0, "little-endian byte at index");
        assert_eq!(read_integer(&p, 3, 0x87), 3);
        assert_eq!(read_integer(&p, 2, 15), 0x0809, "two bytes from index + 6");
        assert_eq!(read_integer(&p, 2, 0x8f), 0x0302);
        assert_eq!(read_integer(&p, 2, 11), 0x809);
        assert_eq!(read_integer(&p, 2, 0x8b), 0x030);
        assert_eq!(read_integer(&p, 0, 0), 1, "one bit");
        assert_eq!(read_integer(&p, 0, 63), 0x0001_0203_0405_0607);
        assert_eq!(read_integer(&p, 0, 0xbf), 0x0706_0504_0302_0100);
        assert_eq!(read_integer(&p, 24, 63), 0x1819_1a1b_1c1d_1e1f);
        // The 8-byte window must fit even for a short big-endian read; else 0.
        assert_eq!(read_integer(&p, 25, 7), 0);
        assert_eq!(read_integer(&p, 31, 0x87), 31);
        assert_eq!(read_integer(&p, 32, 0x87), 0);
        assert_eq!(read_integer(&p, u16::MAX, 63), 0);
        assert_eq!(outcome(int(7, 0, 0, 7), &f), T);
        assert_eq!(outcome(int(5, 2, 0, 7), &f), T);
        assert_eq!(outcome(int(8, 10, 0, 7), &f), F);
        assert_eq!(outcome(int(0, 0, 30, 7), &f), T);
        // start + end wraps: nothing matches.
        assert_eq!(outcome(int(u64::MAX - 1, 5, 0, 7), &f), F);
    }

    #[test]
    fn unknown_types() {
        let p = pkt::v4_udp(1, 2);
        let f = outbound(&p);
        let ctx = Ctx::default();
        assert_eq!(outcome_with(K::UnknownMatch(20), &f, &ctx, false), F);
        assert_eq!(outcome_with(K::UnknownMatch(60), &f, &ctx, true), T);
        assert_eq!(
            verdict(&[Rule::new(K::UnknownAction(9)), drop_()], &f),
            Verdict::Drop
        );
    }

    #[test]
    fn actions() {
        let p = pkt::v4_udp(1, 2);
        let f = outbound(&p);
        assert_eq!(verdict(&[], &f), Verdict::NoMatch);
        assert_eq!(verdict(&[accept()], &f), Verdict::Accept);
        assert_eq!(verdict(&[drop_(), accept()], &f), Verdict::Drop);
        assert_eq!(
            verdict(&[Rule::new(K::Break), accept()], &f),
            Verdict::NoMatch
        );
        assert_eq!(
            verdict(&[Rule::new(K::Priority), drop_()], &f),
            Verdict::Accept
        );
        // A set that does not match skips its action, and the next set starts afresh.
        let rules = [
            Rule::new(K::EtherType(0x1234)),
            Rule::new(K::Break),
            accept(),
        ];
        assert_eq!(verdict(&rules, &f), Verdict::Accept);
        let rules = [Rule::new(K::EtherType(0x1234)), drop_(), accept()];
        assert_eq!(verdict(&rules, &f), Verdict::Accept);
        // NOT and OR bits on actions mean nothing.
        let odd = Rule {
            not: true,
            or: true,
            kind: K::Drop,
        };
        assert_eq!(verdict(&[odd], &f), Verdict::Drop);
    }

    #[test]
    fn not_and_or() {
        let udp = pkt::v4_udp(1, 2);
        let tcp = pkt::v4_tcp(1, 2, 0);
        let icmp = pkt::v4_icmp(8, 0);
        let check = |rules: &[Rule], p: &[u8]| verdict(rules, &outbound(p)) == Verdict::Accept;
        // (UDP OR TCP) AND dport 2.
        let rules = [
            Rule::new(K::IpProtocol(17)),
            Rule::or(K::IpProtocol(6)),
            Rule::new(K::DestPortRange(2, 2)),
            accept(),
        ];
        assert!(check(&rules, &udp));
        assert!(check(&rules, &tcp));
        assert!(!check(&rules, &icmp));
        assert!(!check(&rules, &pkt::v4_udp(1, 3)));
        // NOT UDP AND NOT TCP.
        let rules = [
            Rule::not(K::IpProtocol(17)),
            Rule::not(K::IpProtocol(6)),
            accept(),
        ];
        assert!(!check(&rules, &udp));
        assert!(!check(&rules, &tcp));
        assert!(check(&rules, &icmp));
        // OR rescues a failed set; OR with NOT.
        let rules = [
            Rule::new(K::EtherType(0x1234)),
            Rule {
                not: true,
                or: true,
                kind: K::IpProtocol(17),
            },
            accept(),
        ];
        assert!(!check(&rules, &udp));
        assert!(check(&rules, &tcp));
        // AND after OR: (A OR B) AND C is evaluated left to right.
        let rules = [
            Rule::new(K::EtherType(0x1234)),
            Rule::or(K::EtherType(ETHERTYPE_IPV4)),
            Rule::new(K::IpProtocol(6)),
            accept(),
        ];
        assert!(check(&rules, &tcp));
        assert!(!check(&rules, &udp));
        // A hard false ORs in as false even with NOT.
        let rules = [
            Rule::new(K::EtherType(0x1234)),
            Rule {
                not: true,
                or: true,
                kind: K::Ipv6Source(Ipv6Addr::UNSPECIFIED, 0),
            },
            accept(),
        ];
        assert!(!check(&rules, &udp));
    }

    #[test]
    fn adhoc_table_matches_stock() {
        let rules = adhoc_port_rules(5000, 6000);
        assert_eq!(rules.len(), 14);
        let mut wire = Vec::new();
        write_rules(&mut wire, &rules);
        #[rustfmt::skip]
        let expected: Vec<u8> = [
            &[0xa5, 2, 0x86, 0xdd][..], &[0, 0],
            &[36, 1, 58], &[1, 0],
            &[36, 1, 17], &[0x40 | 36, 1, 6], &[40, 4, 0x13, 0x88, 0x17, 0x70], &[1, 0],
            &[0x80 | 41, 8, 0, 0, 0, 0, 0, 0, 0, 0x02], &[1, 0],
            &[41, 8, 0, 0, 0, 0, 0, 0, 0, 0x02], &[41, 8, 0, 0, 0, 0, 0, 0, 0, 0x10], &[1, 0],
            &[0, 0],
        ]
        .concat();
        assert_eq!(wire, expected);
        assert_eq!(parse_rules(&wire).expect("parses"), rules);
        assert_eq!(
            NetworkId(0xff13_8817_7000_0000).adhoc_kind(),
            Some(crate::network::AdHoc::PortRange {
                start: 5000,
                end: 6000
            })
        );
    }

    #[test]
    fn adhoc_table_behaviour() {
        let rules = adhoc_port_rules(5000, 6000);
        let caps: [&[Rule]; 0] = [];
        let cases: [(Vec<u8>, bool, &str); 12] = [
            (pkt::v6_tcp(40000, 5000, TCP_SYN), true, "SYN into range"),
            (
                pkt::v6_tcp(40000, 6000, TCP_SYN),
                true,
                "SYN to the last port",
            ),
            (pkt::v6_tcp(40000, 6001, TCP_SYN), false, "SYN outside"),
            (pkt::v6_tcp(40000, 4999, TCP_SYN), false, "SYN below"),
            (
                pkt::v6_tcp(5000, 40000, TCP_SYN | TCP_ACK),
                true,
                "SYN-ACK reply",
            ),
            (pkt::v6_tcp(5000, 40000, TCP_ACK), true, "established"),
            (pkt::v6_udp(40000, 5500), true, "UDP into range"),
            (pkt::v6_udp(40000, 53), true, "UDP outside (no SYN)"),
            (pkt::v6_icmp(128, 0), true, "ICMPv6"),
            (pkt::v6_nd(135, pkt::dst6()), true, "NDP"),
            (pkt::v4_tcp(40000, 5000, TCP_SYN), false, "IPv4"),
            (pkt::arp(pkt::SRC4), false, "ARP"),
        ];
        for (p, ok, what) in cases {
            let out = filter_outbound(&rules, caps, &outbound(&p), &NoCredentials, false);
            assert_eq!(out.accept, ok, "outbound {what}");
            assert!(out.copies.is_empty() && out.redirect.is_none());
            let inn = filter_inbound(&rules, caps, &inbound(&p), &NoCredentials, false);
            let expected = if ok { Delivery::Accept } else { Delivery::Drop };
            assert_eq!(inn.delivery, expected, "inbound {what}");
        }
        // A SYN to port 0 over IPv6 is dropped even when the range starts at 0.
        let rules = adhoc_port_rules(0, 10);
        let p = pkt::v6_tcp(40000, 0, TCP_SYN);
        assert!(!filter_outbound(&rules, caps, &outbound(&p), &NoCredentials, false).accept);
    }

    fn tee(address: Address, length: u16) -> Rule {
        Rule::new(K::Tee(Forward {
            address,
            flags: 0,
            length,
        }))
    }

    fn watch(address: Address, length: u16) -> Rule {
        Rule::new(K::Watch(Forward {
            address,
            flags: 0,
            length,
        }))
    }

    fn redirect(address: Address) -> Rule {
        Rule::new(K::Redirect(Forward {
            address,
            flags: 0,
            length: 0,
        }))
    }

    #[test]
    fn capabilities_in_order() {
        let p = pkt::v4_udp(1, 2);
        let f = outbound(&p);
        let never: &[Rule] = &[Rule::new(K::EtherType(0x1234)), accept()];
        let dropper: &[Rule] = &[drop_(), accept()];
        let breaker: &[Rule] = &[Rule::new(K::Break), accept()];
        let yes: &[Rule] = &[accept()];
        let redirector: &[Rule] = &[redirect(third())];
        let out = |base: &[Rule], caps: &[&[Rule]]| {
            filter_outbound(base, caps.iter(), &f, &NoCredentials, false)
        };
        let d = out(&[], &[never, dropper, breaker, yes, redirector]);
        assert!(d.accept);
        assert_eq!(d.capability, Some(3));
        let d = out(&[], &[never, redirector, yes]);
        assert!(!d.accept);
        assert_eq!(d.redirect, Some(third()));
        assert_eq!(d.capability, Some(1));
        // Nothing matches: drop. A base DROP ignores the capabilities.
        assert_eq!(out(&[], &[never, dropper]), OutboundDecision::default());
        assert_eq!(out(&[], &[]), OutboundDecision::default());
        assert_eq!(out(&[drop_()], &[yes]), OutboundDecision::default());
        // A base accept never looks at them.
        assert_eq!(out(&[accept()], &[redirector]).capability, None);
        // Capabilities given as owned vectors work too.
        let owned = vec![never.to_vec(), yes.to_vec()];
        let d = filter_outbound(&[], &owned, &f, &NoCredentials, false);
        assert_eq!(d.capability, Some(1));
        // Inbound, a capability's super-accept is kept.
        let g = inbound(&p);
        let supers: &[Rule] = &[Rule::new(K::EtherType(0x1234)), tee(me(), 0), accept()];
        let d = filter_inbound(&[], [never, supers], &g, &NoCredentials, false);
        assert_eq!(d.delivery, Delivery::SuperAccept);
        assert_eq!(d.code(), 2);
        assert_eq!(d.capability, Some(1));
        let d = filter_inbound(&[], [never, dropper], &g, &NoCredentials, false);
        assert_eq!(d.code(), 0);
    }

    #[test]
    fn tee_and_watch_copies() {
        let p = pkt::v4_udp(1, 2);
        let f = outbound(&p);
        let out = |base: &[Rule], caps: &[&[Rule]]| {
            filter_outbound(base, caps.iter(), &f, &NoCredentials, false)
        };
        let copy = |to, length, watch| FrameCopy { to, length, watch };
        let d = out(&[tee(third(), 10), accept()], &[]);
        assert!(d.accept);
        assert_eq!(d.copies, [copy(third(), 10, false)]);
        assert_eq!(d.copies[0].ext_frame_flags(false), 0x02);
        assert_eq!(d.copies[0].ext_frame_flags(true), 0x08);
        let d = out(&[watch(third(), 0), accept()], &[]);
        assert_eq!(d.copies, [copy(third(), p.len(), true)]);
        assert_eq!(d.copies[0].ext_frame_flags(false), 0x16);
        assert_eq!(d.copies[0].ext_frame_flags(true), 0x1c);
        // Length is capped at the payload.
        let d = out(&[tee(third(), 60000), accept()], &[]);
        assert_eq!(d.copies, [copy(third(), p.len(), false)]);
        // Only the last copy of a table is kept.
        let d = out(&[tee(third(), 1), tee(fourth(), 2), accept()], &[]);
        assert_eq!(d.copies, [copy(fourth(), 2, false)]);
        // No copy to the frame's own ends, nor to ourselves outbound.
        for a in [me(), peer()] {
            let d = out(&[tee(a, 0), accept()], &[]);
            assert!(d.accept && d.copies.is_empty());
        }
        // A copy to address 0 cancels the earlier one.
        let d = out(&[tee(third(), 0), tee(addr(0), 0), accept()], &[]);
        assert!(d.copies.is_empty());
        // A dropped frame sends no copies.
        assert!(out(&[tee(third(), 0), drop_()], &[]).copies.is_empty());
        // A non-matching set does not copy.
        let d = out(
            &[Rule::new(K::EtherType(0x1234)), tee(third(), 0), accept()],
            &[],
        );
        assert!(d.copies.is_empty());
        // The base copy survives a NO_MATCH and is sent after the capability's.
        let cap: &[Rule] = &[tee(fourth(), 0), accept()];
        let d = out(&[tee(third(), 0), Rule::new(K::Break)], &[cap]);
        assert_eq!(
            d.copies,
            [
                copy(fourth(), p.len(), false),
                copy(third(), p.len(), false)
            ]
        );
        // A capability that does not accept takes its copy with it.
        let lost: &[Rule] = &[tee(fourth(), 0)];
        let d = out(&[tee(third(), 0)], &[lost, &[accept()]]);
        assert_eq!(d.copies, [copy(third(), p.len(), false)]);
        // Nothing accepts: no copies at all.
        assert!(out(&[tee(third(), 0)], &[lost]).copies.is_empty());
        // Inbound too.
        let g = inbound(&p);
        let d = filter_inbound(
            &[tee(third(), 4), accept()],
            [&[]; 0],
            &g,
            &NoCredentials,
            false,
        );
        assert_eq!(d.delivery, Delivery::Accept);
        assert_eq!(d.copies, [copy(third(), 4, false)]);
    }

    #[test]
    fn redirects() {
        let p = pkt::v4_udp(1, 2);
        let f = outbound(&p);
        let none: [&[Rule]; 0] = [];
        let d = filter_outbound(
            &[redirect(third()), accept()],
            none,
            &f,
            &NoCredentials,
            false,
        );
        assert!(!d.accept);
        assert_eq!(d.redirect, Some(third()));
        assert!(d.copies.is_empty());
        // With an earlier TEE both go out.
        let rules = [tee(fourth(), 0), redirect(third())];
        let d = filter_outbound(&rules, none, &f, &NoCredentials, false);
        assert_eq!(d.redirect, Some(third()));
        assert_eq!(d.copies.len(), 1);
        // Redirecting to an end of the frame is a no-op.
        for a in [me(), peer()] {
            let d = filter_outbound(&[redirect(a), drop_()], none, &f, &NoCredentials, false);
            assert_eq!(d, OutboundDecision::default());
        }
        // To address 0 (destination known): accepted where it was going.
        let d = filter_outbound(&[redirect(addr(0))], none, &f, &NoCredentials, false);
        assert!(d.accept && d.redirect.is_none());
        // Unknown destination: address 0 is "the destination", a no-op.
        let mut m = outbound(&p);
        m.dest = None;
        let d = filter_outbound(&[redirect(addr(0))], none, &m, &NoCredentials, false);
        assert!(!d.accept);
        // Inbound: forwarded, not delivered.
        let g = inbound(&p);
        let d = filter_inbound(&[redirect(third())], none, &g, &NoCredentials, false);
        assert_eq!(d.delivery, Delivery::Drop);
        assert_eq!(d.code(), 0);
        assert_eq!(d.redirect, Some(third()));
        // From a capability.
        let cap: &[Rule] = &[redirect(third())];
        let d = filter_inbound(&[], [cap], &g, &NoCredentials, false);
        assert_eq!((d.redirect, d.capability), (Some(third()), Some(0)));
    }

    #[test]
    fn super_accept() {
        let p = pkt::v4_udp(1, 2);
        let g = inbound(&p);
        let f = outbound(&p);
        let none: [&[Rule]; 0] = [];
        // A matching TEE/WATCH/REDIRECT to us super-accepts at once inbound.
        for r in [tee(me(), 0), watch(me(), 0), redirect(me())] {
            assert_eq!(verdict(&[r, drop_()], &g), Verdict::SuperAccept);
            assert_eq!(
                filter_inbound(&[r], none, &g, &NoCredentials, false).code(),
                2
            );
            // Outbound it is ignored.
            assert_eq!(verdict(&[r, drop_()], &f), Verdict::Drop);
        }
        // A non-matching one marks the table: a later ACCEPT super-accepts.
        let rules = [Rule::new(K::EtherType(0x1234)), tee(me(), 0), accept()];
        assert_eq!(verdict(&rules, &g), Verdict::SuperAccept);
        assert_eq!(verdict(&rules, &f), Verdict::Accept);
        // PRIORITY still gives a plain accept.
        let rules = [
            Rule::new(K::EtherType(0x1234)),
            tee(me(), 0),
            Rule::new(K::Priority),
        ];
        assert_eq!(verdict(&rules, &g), Verdict::Accept);
        // Once marked, missing remote tags are lenient inbound too.
        let ctx = tags(&[(1, 5)], &[]);
        let missing = K::Tags {
            op: TagOp::Equal,
            id: 1,
            value: 5,
        };
        let sender = K::Tags {
            op: TagOp::Sender,
            id: 1,
            value: 5,
        };
        for m in [missing, sender] {
            let plain = [Rule::new(m), accept()];
            assert_eq!(
                evaluate_table(&plain, &g, &ctx, false).verdict,
                Verdict::NoMatch
            );
            let rules = [
                Rule::new(K::EtherType(0x1234)),
                redirect(me()),
                Rule::new(m),
                drop_(),
                accept(),
            ];
            let v = evaluate_table(&rules, &g, &ctx, false).verdict;
            assert_eq!(v, Verdict::SuperAccept);
        }
    }

    fn arb_rules() -> impl Strategy<Value = Vec<Rule>> {
        // Every type with a generous operand: each decodes (operands are at most 19 bytes).
        proptest::collection::vec((any::<u8>(), any::<[u8; 19]>()), 0..24).prop_map(|v| {
            let mut wire = Vec::new();
            for (t, op) in v {
                wire.push(t);
                wire.push(19);
                wire.extend_from_slice(&op);
            }
            let mut rules = parse_rules(&wire).unwrap_or_default();
            // Steer operands towards values the frames and context can actually meet.
            for r in &mut rules {
                match &mut r.kind {
                    K::Tags { id, .. } => *id &= 1,
                    K::IntegerRange { index, .. } => *index &= 0x7f,
                    K::Tee(f) | K::Watch(f) | K::Redirect(f) => {
                        f.address = [me(), peer(), third(), addr(0)][(f.flags & 3) as usize];
                    }
                    _ => {}
                }
            }
            rules
        })
    }

    fn arb_payload() -> impl Strategy<Value = (u16, Vec<u8>)> {
        let random = proptest::collection::vec(any::<u8>(), 0..120);
        prop_oneof![
            (any::<u16>(), random.clone()),
            (Just(ETHERTYPE_IPV4), random.clone()),
            (Just(ETHERTYPE_IPV6), random.clone()),
            (Just(ETHERTYPE_ARP), random.clone()),
            // Real headers with a mangled, truncated tail.
            (
                any::<u8>(),
                any::<u16>(),
                any::<u16>(),
                random.clone(),
                0usize..100
            )
                .prop_map(|(proto, s, d, tail, cut)| {
                    let mut p = pkt::ipv4(proto, pkt::SRC4, pkt::DST4, &pkt::udp(s, d, &tail));
                    p[0] = 0x40 | (tail.first().copied().unwrap_or(5) & 0x0f);
                    p.truncate(p.len().saturating_sub(cut));
                    (ETHERTYPE_IPV4, p)
                }),
            (any::<u8>(), random, 0usize..100).prop_map(|(next, tail, cut)| {
                let mut p = pkt::ipv6(next, pkt::src6(), pkt::dst6(), &tail);
                p.truncate(p.len().saturating_sub(cut));
                (ETHERTYPE_IPV6, p)
            }),
        ]
    }

    proptest! {
        #[test]
        fn random_rules_never_panic(
            base in arb_rules(),
            caps in proptest::collection::vec(arb_rules(), 0..3),
            (ethertype, payload) in arb_payload(),
            inbound in any::<bool>(),
            dest_known in any::<bool>(),
            unsupported in any::<bool>(),
            seed in any::<u64>(),
            macs in any::<(u64, u64)>(),
            tag_values in any::<[Option<u32>; 4]>(),
        ) {
            let (a, b) = if inbound { (peer(), me()) } else { (me(), peer()) };
            let f = FrameInfo {
                inbound,
                me: me(),
                source: a,
                dest: dest_known.then_some(b),
                mac_source: Mac(macs.0 & 0xffff_ffff_ffff),
                mac_dest: Mac(macs.1 & 0xffff_ffff_ffff),
                ethertype,
                vlan_id: 0,
                payload: &payload,
                random_seed: seed,
            };
            let mut ctx = Ctx::default();
            for (i, v) in tag_values.iter().enumerate() {
                if let Some(v) = v {
                    let id = (i / 2) as u32;
                    if i % 2 == 0 {
                        ctx.local.push((id, *v));
                    } else {
                        ctx.remote.push((id, *v));
                    }
                }
            }
            let _ = characteristics(&f, &ctx);
            let _ = ownership_source(ethertype, &payload);
            let e = evaluate_table(&base, &f, &ctx, unsupported);
            if let Some(c) = e.copy {
                prop_assert!(c.length <= payload.len());
            }
            let o = filter_outbound(&base, &caps, &f, &ctx, unsupported);
            prop_assert!(!(o.accept && o.redirect.is_some()));
            prop_assert!(o.copies.len() <= 2);
            let i = filter_inbound(&base, &caps, &f, &ctx, unsupported);
            prop_assert!(i.redirect.is_none() || i.delivery == Delivery::Drop);
        }
    }
}
