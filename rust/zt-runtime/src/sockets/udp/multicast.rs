//! UDP broadcast and multicast: options, group membership, and sends to groups.

use std::collections::{BTreeSet, HashSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use zt_proto::NetworkId;
use zt_stack::smoltcp::iface::SocketHandle;
use zt_stack::smoltcp::wire::IpListenEndpoint;
use zt_stack::{Policy, Stacks};

use super::super::SockError;
use super::{
    Dest, GroupSend, Looped, MAX_MEMBERSHIPS, NetView, UdpEntry, UdpOption, UdpShared, UdpState,
    UdpTable,
};

/// The directed broadcast address of an IPv4 prefix (none for /31 and /32).
pub(super) fn broadcast_of(ip: Ipv4Addr, bits: u8) -> Option<Ipv4Addr> {
    (bits < 31).then(|| Ipv4Addr::from_bits(ip.to_bits() | (u32::MAX >> bits)))
}

pub(super) fn net_views(
    stacks: &mut Stacks,
    handles: &[(NetworkId, SocketHandle)],
) -> Vec<NetView> {
    handles
        .iter()
        .filter_map(|(id, _)| {
            let policy = stacks.policy(*id);
            let v4 = stacks
                .get(*id)?
                .addresses()
                .into_iter()
                .filter_map(|(a, bits)| match a {
                    IpAddr::V4(v4) => Some((v4, bits)),
                    IpAddr::V6(_) => None,
                })
                .collect();
            let mtu = stacks.get(*id)?.mtu();
            Some(NetView {
                id: *id,
                v4,
                policy,
                mtu,
            })
        })
        .collect()
}

/// Whether `ip` is the directed broadcast address of one of these networks.
pub(super) fn is_directed_broadcast(stacks: &mut Stacks, nets: &[NetworkId], ip: IpAddr) -> bool {
    let IpAddr::V4(ip) = ip else { return false };
    nets.iter().any(|n| {
        stacks.get(*n).is_some_and(|s| {
            s.addresses().iter().any(|(a, bits)| match a {
                IpAddr::V4(a) => broadcast_of(*a, *bits) == Some(ip),
                IpAddr::V6(_) => false,
            })
        })
    })
}

impl UdpState {
    pub(super) fn kind(&self, ip: IpAddr) -> Dest {
        match ip {
            _ if ip.is_multicast() => Dest::Multicast,
            IpAddr::V4(v4)
                if v4 == Ipv4Addr::BROADCAST
                    || self
                        .nets
                        .iter()
                        .any(|n| n.v4.iter().any(|(a, b)| broadcast_of(*a, *b) == Some(v4))) =>
            {
                Dest::Broadcast
            }
            _ => Dest::Unicast,
        }
    }

    /// The networks a broadcast or multicast to `to` goes out on (if the network allows it).
    pub(super) fn targets(&self, to: IpAddr, kind: Dest) -> impl Iterator<Item = &NetView> {
        let opts = self.opts;
        self.nets.iter().filter(move |n| match (kind, to) {
            (Dest::Unicast, _) => false,
            (Dest::Broadcast, IpAddr::V4(b)) if b != Ipv4Addr::BROADCAST => {
                n.v4.iter()
                    .any(|(a, bits)| broadcast_of(*a, *bits) == Some(b))
            }
            (Dest::Broadcast, _) => !n.v4.is_empty(),
            (Dest::Multicast, IpAddr::V4(_)) => {
                !n.v4.is_empty() && opts.multicast_if.is_none_or(|m| m == n.id)
            }
            (Dest::Multicast, IpAddr::V6(_)) => true,
        })
    }

    /// The largest payload of a datagram to `to` that its network carries in one IP packet
    /// (the stacks do not fragment, so a larger one could only be lost): the MTU of the
    /// socket's network whose IPv4 subnet holds `to`, else the smallest of its networks'.
    /// `None` before the socket has a network.
    pub(super) fn max_payload(&self, to: IpAddr) -> Option<usize> {
        let headers = if to.is_ipv4() { 20 + 8 } else { 40 + 8 };
        let holds = |n: &&NetView| match to {
            IpAddr::V4(a) => n.v4.iter().any(|(mine, bits)| {
                let mask = u32::MAX.checked_shl(32 - u32::from(*bits)).unwrap_or(0);
                u32::from(*mine) & mask == u32::from(a) & mask
            }),
            IpAddr::V6(_) => false,
        };
        let mtu = self
            .nets
            .iter()
            .filter(holds)
            .map(|n| n.mtu)
            .min()
            .or_else(|| self.nets.iter().map(|n| n.mtu).min())?;
        Some(mtu.saturating_sub(headers))
    }

    /// Whether the application may send to `to`: not from an address of the other family
    /// (ENETUNREACH); a broadcast needs `SO_BROADCAST` (EACCES) and some network to send it on
    /// (ENETUNREACH) whose config allows it (EPERM); so does a multicast.
    pub(super) fn permit(&self, to: IpAddr) -> Result<(), SockError> {
        // A socket bound to an address of one family has no source address for the other.
        if let Some(l) = self.local
            && !l.ip().is_unspecified()
            && l.is_ipv4() != to.is_ipv4()
        {
            return Err(SockError::NetUnreachable);
        }
        let kind = self.kind(to);
        if kind == Dest::Unicast {
            return Ok(());
        }
        if kind == Dest::Broadcast && !self.opts.broadcast {
            return Err(SockError::Access);
        }
        let mut any = false;
        for n in self.targets(to, kind) {
            if allows(n.policy, kind) {
                return Ok(());
            }
            any = true;
        }
        Err(if any {
            SockError::NotPermitted
        } else {
            SockError::NetUnreachable
        })
    }
}

pub(super) fn allows(p: Policy, kind: Dest) -> bool {
    match kind {
        Dest::Unicast => true,
        Dest::Broadcast => p.broadcast,
        Dest::Multicast => p.multicast,
    }
}

impl UdpShared {
    /// Sets an option.
    pub fn set_option(&self, opt: UdpOption, value: i64) {
        let mut st = self.core.lock();
        let on = value != 0;
        match opt {
            UdpOption::Broadcast => st.opts.broadcast = on,
            UdpOption::MulticastLoopV4 => st.opts.loop_v4 = on,
            UdpOption::MulticastLoopV6 => st.opts.loop_v6 = on,
        }
    }

    /// An option's value.
    #[must_use]
    pub fn option(&self, opt: UdpOption) -> i64 {
        let o = self.core.lock().opts;
        i64::from(match opt {
            UdpOption::Broadcast => o.broadcast,
            UdpOption::MulticastLoopV4 => o.loop_v4,
            UdpOption::MulticastLoopV6 => o.loop_v6,
        })
    }

    /// Whether datagrams may be sent to `to` (what `send_to` checks first; `connect` checks
    /// it too).
    ///
    /// # Errors
    /// `Access` for a broadcast address without [`UdpOption::Broadcast`], `NetUnreachable`
    /// when no network of the socket takes a broadcast or multicast to `to`, `NotPermitted`
    /// when their configs disable it.
    pub fn check_destination(&self, to: IpAddr) -> Result<(), SockError> {
        self.core.lock().permit(to)
    }

    /// Queues a datagram for the application as if it had arrived (a copy of a broadcast or
    /// multicast this node sent).
    pub(super) fn deliver(&self, from: SocketAddr, data: &[u8]) {
        let mut st = self.core.lock();
        if st.released {
            return;
        }
        if st.rx_bytes + data.len() > st.rx_cap {
            st.dropped += 1;
        } else {
            st.rx_bytes += data.len();
            st.rx.push_back((from, data.to_vec()));
        }
        self.core.refresh(&st);
    }
}

/// Sends the first queued datagram, a broadcast or multicast, on each of the socket's networks
/// that takes it.
pub(super) fn send_group(
    e: &UdpEntry,
    st: &mut UdpState,
    stacks: &mut Stacks,
    to: SocketAddr,
    looped: &mut Vec<Looped>,
) -> GroupSend {
    let kind = st.kind(to.ip());
    let targets: Vec<(NetworkId, SocketHandle)> = st
        .targets(to.ip(), kind)
        .filter(|n| allows(n.policy, kind))
        .filter_map(|n| e.handles.iter().find(|(m, _)| *m == n.id).copied())
        .collect();
    for (n, h) in &targets {
        if stacks.get(*n).is_some_and(|s| !s.udp(*h).can_send()) {
            return GroupSend::Blocked;
        }
    }
    let Some((_, d)) = st.tx.pop_front() else {
        return GroupSend::Dropped;
    };
    st.tx_bytes -= d.len();
    let ep = zt_stack::smoltcp::wire::IpEndpoint::new(to.ip().into(), to.port());
    let mut sent = Vec::new();
    for (n, h) in targets {
        if let Some(s) = stacks.get(n)
            && s.udp(h).send_slice(&d, ep).is_ok()
        {
            sent.push(n);
        }
    }
    if sent.is_empty() {
        return GroupSend::Dropped;
    }
    let loop_back = match (kind, to.ip()) {
        (Dest::Multicast, IpAddr::V4(_)) => st.opts.loop_v4,
        (Dest::Multicast, IpAddr::V6(_)) => st.opts.loop_v6,
        _ => true,
    };
    if loop_back {
        looped.push(Looped {
            nets: sent,
            to,
            from: (e.listen, e.port),
            kind,
            data: d,
        });
    }
    GroupSend::Sent
}

/// The source address a datagram from a socket listening on any address to `to` carries on a
/// stack with these addresses (the one smoltcp would pick, near enough).
pub(super) fn source_for(addrs: &[(IpAddr, u8)], to: IpAddr) -> Option<IpAddr> {
    match to {
        IpAddr::V4(_) => addrs.iter().map(|(a, _)| *a).find(IpAddr::is_ipv4),
        IpAddr::V6(g) => {
            let link_local = |a: &IpAddr| matches!(a, IpAddr::V6(v) if v.is_unicast_link_local());
            // Interface- and link-local groups are answered from the link-local address.
            let small_scope = g.is_multicast() && g.octets()[1] & 0x0f <= 2;
            let wide = addrs
                .iter()
                .map(|(a, _)| *a)
                .find(|a| a.is_ipv6() && !link_local(a));
            let ll = addrs.iter().map(|(a, _)| *a).find(link_local);
            if small_scope {
                ll.or(wide)
            } else {
                wide.or(ll)
            }
        }
    }
}

impl UdpTable {
    /// Follows the stacks: drops the sockets of networks that went, binds sockets on
    /// unspecified, multicast or broadcast addresses on networks that came, refreshes what
    /// senders know of their networks.
    pub(super) fn resync(&mut self, stacks: &mut Stacks) {
        let nets = stacks.networks();
        let mut held: HashSet<(NetworkId, u16)> = HashSet::new();
        for e in &mut self.entries {
            e.handles.retain(|(n, _)| stacks.get(*n).is_some());
            held.extend(e.handles.iter().map(|(n, _)| (*n, e.port)));
        }
        for e in &mut self.entries {
            if e.shared.core.lock().released {
                continue;
            }
            if e.follows {
                for n in &nets {
                    if held.contains(&(*n, e.port)) {
                        continue;
                    }
                    let Some(s) = stacks.get(*n) else { continue };
                    let h = s.add_udp(256, e.rx_bytes);
                    let ep = IpListenEndpoint {
                        addr: e.listen.map(Into::into),
                        port: e.port,
                    };
                    if s.udp(h).bind(ep).is_err() {
                        s.remove(h);
                        continue;
                    }
                    e.handles.push((*n, h));
                    held.insert((*n, e.port));
                }
            }
            let views = net_views(stacks, &e.handles);
            e.shared.core.lock().nets = views;
        }
        self.groups_dirty = true;
    }

    /// Delivers a copy of a broadcast or multicast this node sent to its own sockets bound to
    /// the destination port on those networks (for a multicast, if the node joined the group
    /// there); one copy per socket, however many of its networks the datagram went out on. A
    /// datagram to one of the node's own addresses goes to one socket (it went nowhere else).
    pub(super) fn loop_back(&self, stacks: &mut Stacks, l: &Looped) {
        let mut done = vec![false; self.entries.len()];
        for &net in &l.nets {
            if l.kind == Dest::Multicast && !self.applied.contains(&(net, l.to.ip())) {
                continue;
            }
            let src = match (l.from.0, l.kind) {
                (Some(a), _) => Some(a),
                // To itself: from the address it was sent to, as over loopback.
                (None, Dest::Unicast) => Some(l.to.ip()),
                (None, _) => stacks
                    .get(net)
                    .and_then(|s| source_for(&s.addresses(), l.to.ip())),
            };
            let Some(src) = src else { continue };
            for (e, done) in self.entries.iter().zip(&mut done) {
                if !*done
                    && e.port == l.to.port()
                    && e.only.is_none_or(|o| o == l.to.ip())
                    && e.handles.iter().any(|(n, _)| *n == net)
                    && !e.shared.core.lock().released
                {
                    *done = true;
                    e.shared.deliver(SocketAddr::new(src, l.from.1), &l.data);
                    if l.kind == Dest::Unicast {
                        // One socket gets a unicast datagram.
                        return;
                    }
                }
            }
        }
    }

    pub(super) fn entry(&mut self, shared: &Arc<UdpShared>) -> Result<&mut UdpEntry, SockError> {
        self.entries
            .iter_mut()
            .find(|e| Arc::ptr_eq(&e.shared, shared) && !e.shared.core.lock().released)
            .ok_or(SockError::Closed)
    }

    /// The network among the entry's where this node has the address `ip`.
    pub(super) fn network_with(stacks: &mut Stacks, e: &UdpEntry, ip: IpAddr) -> Option<NetworkId> {
        e.handles.iter().map(|(n, _)| *n).find(|n| {
            stacks
                .get(*n)
                .is_some_and(|s| s.addresses().iter().any(|(a, _)| *a == ip))
        })
    }

    /// Joins (`join`) or leaves the multicast group `group` for a socket: on every network of
    /// the socket (`iface` None; networks it gets later included) or on the one where this
    /// node has the address `iface`. The node's stack then takes datagrams to the group and
    /// the node announces the matching Ethernet group (01:00:5e or 33:33 and the group's low
    /// bits, ADI 0) to the network, so that senders include it. Memberships are counted over
    /// all sockets, and a socket's end when it closes. Leaving with `iface` None leaves the
    /// group's first membership.
    ///
    /// # Errors
    /// `Invalid` for a group that is not multicast, `Closed` for a closed socket, `NoDevice`
    /// when no network of the socket gives this node `iface`, `AddrInUse` for a membership
    /// held already, `AddrNotAvailable` for leaving one not held, `NoBuffers` beyond
    /// [`MAX_MEMBERSHIPS`] or when a network's group table is full.
    #[allow(clippy::too_many_arguments)]
    pub fn membership(
        &mut self,
        node: &mut zt_proto::Node,
        now: zt_proto::Timestamp,
        stacks: &mut Stacks,
        shared: &Arc<UdpShared>,
        group: IpAddr,
        iface: Option<IpAddr>,
        join: bool,
    ) -> Result<(), SockError> {
        if !group.is_multicast() {
            return Err(SockError::Invalid);
        }
        let e = self.entry(shared)?;
        if let Some(a) = iface
            && Self::network_with(stacks, e, a).is_none()
        {
            return Err(SockError::NoDevice);
        }
        let m = (group, iface);
        if !join {
            let i = e
                .groups
                .iter()
                .position(|g| *g == m || (iface.is_none() && g.0 == group))
                .ok_or(SockError::AddrNotAvailable)?;
            e.groups.remove(i);
            self.apply_groups(node, now, stacks);
            return Ok(());
        }
        if e.groups.contains(&m) {
            return Err(SockError::AddrInUse);
        }
        if e.groups.len() >= MAX_MEMBERSHIPS {
            return Err(SockError::NoBuffers);
        }
        e.groups.push(m);
        let failed = self.apply_groups(node, now, stacks);
        if failed.iter().any(|(_, g)| *g == group) {
            if let Ok(e) = self.entry(shared) {
                e.groups.retain(|g| *g != m);
            }
            self.apply_groups(node, now, stacks);
            return Err(SockError::NoBuffers);
        }
        Ok(())
    }

    /// Sets the network IPv4 multicasts of a socket go out on: the one where this node has
    /// the address `iface` (`IP_MULTICAST_IF`), or None for every network of the socket that
    /// has an IPv4 address.
    ///
    /// # Errors
    /// `Closed` for a closed socket, `AddrNotAvailable` when no network of the socket gives
    /// this node that address.
    pub fn set_multicast_if(
        &mut self,
        stacks: &mut Stacks,
        shared: &Arc<UdpShared>,
        iface: Option<Ipv4Addr>,
    ) -> Result<(), SockError> {
        let e = self.entry(shared)?;
        let net = match iface {
            None => None,
            Some(a) => Some(
                Self::network_with(stacks, e, IpAddr::V4(a)).ok_or(SockError::AddrNotAvailable)?,
            ),
        };
        shared.core.lock().opts.multicast_if = net;
        Ok(())
    }

    /// Brings the stacks' groups and the node's subscriptions in line with the sockets'
    /// memberships if they may differ (a socket closed, networks changed); true if anything
    /// changed.
    pub fn sync_groups(
        &mut self,
        node: &mut zt_proto::Node,
        now: zt_proto::Timestamp,
        stacks: &mut Stacks,
    ) -> bool {
        if !std::mem::take(&mut self.groups_dirty) {
            return false;
        }
        let before = self.applied.clone();
        let failed = self.apply_groups(node, now, stacks);
        for (n, g) in failed {
            log::warn!(target: "zt.sockets", "cannot join multicast group {g} on {n}: table full");
        }
        before != self.applied
    }

    /// Joins and leaves groups on the stacks and node so that they match the memberships;
    /// returns the (network, group) joins that failed (table full).
    pub(super) fn apply_groups(
        &mut self,
        node: &mut zt_proto::Node,
        now: zt_proto::Timestamp,
        stacks: &mut Stacks,
    ) -> Vec<(NetworkId, IpAddr)> {
        use zt_proto::MulticastGroup;
        let mut wanted = BTreeSet::new();
        for e in &self.entries {
            if e.groups.is_empty() || e.shared.core.lock().released {
                continue;
            }
            for (n, _) in &e.handles {
                let Some(s) = stacks.get(*n) else { continue };
                let addrs = s.addresses();
                for (g, iface) in &e.groups {
                    if iface.is_none_or(|a| addrs.iter().any(|(x, _)| *x == a)) {
                        wanted.insert((*n, *g));
                    }
                }
            }
        }
        let gone: Vec<_> = self.applied.difference(&wanted).copied().collect();
        let new: Vec<_> = wanted.difference(&self.applied).copied().collect();
        for (n, g) in gone {
            self.applied.remove(&(n, g));
            if let Some(s) = stacks.get(n) {
                let _ = s.leave_multicast(g);
            }
            let Some(mg) = MulticastGroup::for_ip(g) else {
                continue;
            };
            // Another group may share the Ethernet group (the low bits of the address).
            let shared = self
                .applied
                .iter()
                .any(|(m, h)| *m == n && MulticastGroup::for_ip(*h) == Some(mg));
            if !shared {
                node.unsubscribe(n, mg);
            }
        }
        let mut failed = Vec::new();
        for (n, g) in new {
            let Some(s) = stacks.get(n) else { continue };
            if s.join_multicast(g).is_err() {
                failed.push((n, g));
                continue;
            }
            self.applied.insert((n, g));
            if let Some(mg) = MulticastGroup::for_ip(g) {
                node.subscribe(now, n, mg);
            }
        }
        failed
    }
}
