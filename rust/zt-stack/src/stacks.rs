//! The user-space TCP/IP stacks of a node's networks: one [`NetStack`] per configured network,
//! kept in step with the network's config (MAC, MTU, managed addresses) and fed with its frames;
//! what the stacks send goes out through the node ([`Node::send_frame`]). Sans-IO like the rest
//! of this crate: every call that needs the time takes it (microseconds, on the node's clock's
//! base: `now_us / 1000` is the node's `Timestamp`). The runtime and the simulator both drive
//! a node's stacks through this.

use std::collections::HashMap;
use std::net::IpAddr;

use crate::NetStack;
use crate::smoltcp::iface::SocketHandle;
use zt_proto::{Frame, NetworkId, NetworkStatus, Node, Timestamp};

/// The stacks, by network.
#[derive(Debug, Default)]
pub struct Stacks {
    by_net: HashMap<NetworkId, NetStack>,
    seed: u64,
    /// Frames the stacks sent that the node refused (rules, no route...).
    pub refused: u64,
    /// SYNs dropped by stacks that are gone (see [`Self::syns_dropped`]).
    syns_dropped_before: u64,
    /// Bumped whenever a stack appears or goes or its addresses change.
    generation: u64,
    /// What each network's config lets through (broadcast, multicast).
    policies: HashMap<NetworkId, Policy>,
}

/// What a network's config lets a member send besides unicast.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Policy {
    /// Broadcast (ff:ff:ff:ff:ff:ff frames other than ARP) is enabled.
    pub broadcast: bool,
    /// Multicast is enabled (a multicast limit above 0).
    pub multicast: bool,
}

impl Stacks {
    /// Stacks seeded with `seed` (TCP sequence numbers, ephemeral ports).
    #[must_use]
    pub fn new(seed: u64) -> Self {
        Self {
            by_net: HashMap::new(),
            seed,
            refused: 0,
            syns_dropped_before: 0,
            generation: 0,
            policies: HashMap::new(),
        }
    }

    /// SYNs the stacks dropped for want of a free listening socket (a full backlog), since
    /// start.
    #[must_use]
    pub fn syns_dropped(&self) -> u64 {
        self.syns_dropped_before
            + self
                .by_net
                .values()
                .map(NetStack::syns_dropped)
                .sum::<u64>()
    }

    /// Creates, updates or removes stacks after the node's networks changed (`now_us`: the
    /// time new stacks start at).
    pub fn sync(&mut self, node: &Node, now_us: i64) {
        let nets = node.networks();
        let before = self.by_net.len();
        let retired = &mut self.syns_dropped_before;
        self.by_net.retain(|id, s| {
            let keep = nets.iter().any(|n| n.id == *id && n.config.is_some());
            if !keep {
                *retired += s.syns_dropped();
            }
            keep
        });
        let mut changed = self.by_net.len() != before;
        let by_net = &self.by_net;
        self.policies.retain(|id, _| by_net.contains_key(id));
        for n in nets {
            let Some(c) = n.config.as_ref() else { continue };
            if n.status != NetworkStatus::Ok && !self.by_net.contains_key(&n.id) {
                continue;
            }
            let addrs: Vec<(IpAddr, u8)> = c.static_ips.iter().map(|p| (p.ip, p.bits)).collect();
            let seed = self.seed ^ n.id.0;
            let stack = self.by_net.entry(n.id).or_insert_with(|| {
                changed = true;
                NetStack::new(n.mac.to_bytes(), usize::from(c.mtu), seed, now_us)
            });
            stack.set_mtu(usize::from(c.mtu));
            let policy = Policy {
                broadcast: c.broadcast_enabled(),
                multicast: c.multicast_limit > 0,
            };
            if self.policies.insert(n.id, policy) != Some(policy) {
                changed = true;
            }
            if stack
                .addresses()
                .iter()
                .skip(1)
                .copied()
                .collect::<Vec<_>>()
                != addrs
            {
                stack.set_addresses(&addrs);
                changed = true;
            }
        }
        if changed {
            self.generation += 1;
        }
    }

    /// What a network's config lets through besides unicast (nothing for an unknown one).
    #[must_use]
    pub fn policy(&self, id: NetworkId) -> Policy {
        self.policies.get(&id).copied().unwrap_or_default()
    }

    /// Changes whenever a stack appears or goes, its addresses change or its config's
    /// broadcast or multicast setting does (listeners on unspecified addresses follow those).
    #[must_use]
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Hands a frame the node delivered to the network's stack; false if it has none.
    pub fn deliver(&mut self, f: &Frame) -> bool {
        self.deliver_tapped(f, |_| {})
    }

    /// As [`Self::deliver`], showing `tap` the Ethernet frame first (a capture, a trace).
    pub fn deliver_tapped(&mut self, f: &Frame, tap: impl FnOnce(&[u8])) -> bool {
        match self.by_net.get_mut(&f.network) {
            Some(s) => {
                let mut buf = s.frame_buffer();
                f.write_ethernet(&mut buf);
                tap(&buf);
                s.handle_frame(buf);
                true
            }
            None => false,
        }
    }

    /// Polls every stack at `now_us` and sends what they produced through the node. True if
    /// anything was sent.
    pub fn poll(&mut self, node: &mut Node, now_us: i64) -> bool {
        self.poll_tapped(node, now_us, |_, _| {})
    }

    /// As [`Self::poll`], showing `tap` each Ethernet frame a stack sends, with its network.
    pub fn poll_tapped(
        &mut self,
        node: &mut Node,
        now_us: i64,
        mut tap: impl FnMut(NetworkId, &[u8]),
    ) -> bool {
        let now = Timestamp(now_us.div_euclid(1000));
        let mut sent = false;
        for (id, s) in &mut self.by_net {
            s.poll(now_us);
            while let Some(out) = s.poll_frame() {
                sent = true;
                tap(*id, &out);
                match Frame::from_ethernet(*id, &out) {
                    Some(f) => {
                        if node.send_frame(now, f).is_err() {
                            self.refused += 1;
                        }
                    }
                    None => self.refused += 1,
                }
                s.recycle(out);
            }
        }
        sent
    }

    /// The earliest time a stack wants to be polled (ms, rounded up: the loop waits in
    /// milliseconds).
    pub fn poll_at(&mut self, now_us: i64) -> Option<Timestamp> {
        self.by_net
            .values_mut()
            .filter_map(|s| s.poll_at(now_us))
            .min()
            .map(|us| Timestamp((us + 999).div_euclid(1000)))
    }

    /// Sends an ICMP echo request (`ident`, `seq`, `payload`) to `dst` on a network; the
    /// returned socket collects the reply ([`Self::ping_reply`]). `again` resends on that
    /// socket (the first request may be lost while the neighbour is resolved, as with any ping).
    ///
    /// # Errors
    /// No stack for that network, or the socket cannot send yet.
    pub fn ping_send(
        &mut self,
        id: NetworkId,
        dst: IpAddr,
        (ident, seq): (u16, u16),
        payload: &[u8],
        again: Option<SocketHandle>,
    ) -> Result<SocketHandle, crate::StackError> {
        use crate::smoltcp::phy::ChecksumCapabilities;
        use crate::smoltcp::socket::icmp;
        use crate::smoltcp::wire::{
            Icmpv4Packet, Icmpv4Repr, Icmpv6Packet, Icmpv6Repr, IpAddress, Ipv6Address,
        };
        let s = self
            .by_net
            .get_mut(&id)
            .ok_or(crate::StackError::BadHandle)?;
        let h = s.add_icmp(4, 4 * (payload.len() + 64));
        let src6 = s.addresses().iter().find_map(|(a, _)| match a {
            IpAddr::V6(v6) if !v6.is_unicast_link_local() => Some(*v6),
            _ => None,
        });
        let sock = s.icmp(h);
        if again.is_none() && sock.bind(icmp::Endpoint::Ident(ident)).is_err() {
            s.remove(h);
            return Err(crate::StackError::InvalidState);
        }
        let caps = ChecksumCapabilities::default();
        let r = match dst {
            IpAddr::V4(v4) => {
                let repr = Icmpv4Repr::EchoRequest {
                    ident,
                    seq_no: seq,
                    data: payload,
                };
                sock.send(repr.buffer_len(), IpAddress::Ipv4(v4))
                    .map(|buf| {
                        repr.emit(&mut Icmpv4Packet::new_unchecked(buf), &caps);
                    })
            }
            IpAddr::V6(v6) => {
                let repr = Icmpv6Repr::EchoRequest {
                    ident,
                    seq_no: seq,
                    data: payload,
                };
                let src = src6.unwrap_or(Ipv6Address::UNSPECIFIED);
                sock.send(repr.buffer_len(), IpAddress::Ipv6(v6))
                    .map(|buf| {
                        repr.emit(&src, &v6, &mut Icmpv6Packet::new_unchecked(buf), &caps);
                    })
            }
        };
        if r.is_err() && again.is_none() {
            s.remove(h);
            return Err(crate::StackError::WouldBlock);
        }
        Ok(h)
    }

    /// The source of an echo reply received on a ping socket, if one arrived; `done` removes
    /// the socket.
    pub fn ping_reply(&mut self, id: NetworkId, h: SocketHandle, done: bool) -> Option<IpAddr> {
        let s = self.by_net.get_mut(&id)?;
        let mut from = None;
        {
            let sock = s.icmp(h);
            while let Ok((data, src)) = sock.recv() {
                // Type 0 (IPv4 echo reply) or 129 (ICMPv6 echo reply).
                if matches!(data.first(), Some(0 | 129)) {
                    from = Some(IpAddr::from(src));
                }
            }
        }
        if done || from.is_some() {
            s.remove(h);
        }
        from
    }

    /// The network whose managed prefixes (not link-local ones) contain `ip` (no allocation:
    /// this runs for every datagram sent).
    #[must_use]
    pub fn route(&self, ip: IpAddr) -> Option<NetworkId> {
        self.by_net.iter().find_map(|(id, s)| {
            s.address_iter()
                .any(|(a, bits)| {
                    let p = zt_proto::IpPrefix { ip: a, bits };
                    p.contains(ip) && !matches!(a, IpAddr::V6(v6) if v6.is_unicast_link_local())
                })
                .then_some(*id)
        })
    }

    /// The stack of a network.
    pub fn get(&mut self, id: NetworkId) -> Option<&mut NetStack> {
        self.by_net.get_mut(&id)
    }

    /// Networks with a stack.
    #[must_use]
    pub fn networks(&self) -> Vec<NetworkId> {
        self.by_net.keys().copied().collect()
    }
}
