//! UDP sockets: what application threads and the loop share for each ([`UdpShared`]), and the
//! loop's table of them ([`UdpTable`]); broadcast and multicast in `multicast.rs`.

mod multicast;
#[cfg(test)]
mod tests;

use std::collections::{BTreeSet, VecDeque};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use zt_proto::NetworkId;
use zt_stack::smoltcp::iface::SocketHandle;
use zt_stack::smoltcp::wire::IpListenEndpoint;
use zt_stack::{Policy, Stacks};

use super::shared::{SocketCore, SocketState};
use super::{FLUSH_MAX, SockError, endpoint};
use crate::lead::Kick;
use multicast::{is_directed_broadcast, net_views, send_group};

/// Largest datagram accepted (the network MTU limits what actually fits).
pub const MAX_DATAGRAM: usize = 65_507;

#[derive(Debug)]
struct UdpState {
    rx: VecDeque<(SocketAddr, Vec<u8>)>,
    rx_bytes: usize,
    rx_cap: usize,
    tx: VecDeque<(SocketAddr, Vec<u8>)>,
    tx_bytes: usize,
    tx_cap: usize,
    local: Option<SocketAddr>,
    released: bool,
    /// Datagrams dropped because the receive buffer was full.
    dropped: u64,
    error: Option<SockError>,
    opts: UdpOptions,
    /// The socket's networks as its senders need them (kept by the loop).
    nets: Vec<NetView>,
    /// Emptied datagram buffers, reused for the next datagrams either way.
    spare: Vec<Vec<u8>>,
}

/// Most spare datagram buffers a UDP socket keeps, and the largest one kept.
const SPARE_BUFFERS: usize = 32;
const SPARE_CAPACITY: usize = 16 << 10;

impl UdpState {
    /// Keeps an emptied datagram buffer for reuse (unless there are enough, or it is large).
    fn keep_spare(&mut self, mut d: Vec<u8>) {
        if self.spare.len() < SPARE_BUFFERS && (1..=SPARE_CAPACITY).contains(&d.capacity()) {
            d.clear();
            self.spare.push(d);
        }
    }

    /// Whether a datagram of `len` bytes fits in the send buffer (one always fits in an empty
    /// one).
    fn has_room(&self, len: usize) -> bool {
        self.tx_bytes + len <= self.tx_cap || self.tx.is_empty()
    }
}

impl SocketState for UdpState {
    fn readiness(&self) -> (bool, bool) {
        let readable = !self.rx.is_empty() || self.error.is_some() || self.released;
        let writable = self.tx_bytes < self.tx_cap || self.error.is_some();
        (readable, writable)
    }

    /// A datagram, an error, or closed.
    fn recv_ready(&self) -> bool {
        !self.rx.is_empty() || self.released || self.error.is_some()
    }
}

/// What application threads and the loop share for one UDP socket.
pub struct UdpShared {
    core: SocketCore<UdpState>,
}

impl std::fmt::Debug for UdpShared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UdpShared")
            .field("local", &self.core.lock().local)
            .finish_non_exhaustive()
    }
}

impl UdpShared {
    /// The readiness descriptor.
    #[must_use]
    pub fn fd(&self) -> crate::readiness::RawDescriptor {
        self.core.fd()
    }

    /// The bound address.
    #[must_use]
    pub fn local(&self) -> Option<SocketAddr> {
        self.core.lock().local
    }

    /// Datagrams lost to a full receive buffer.
    #[must_use]
    pub fn dropped(&self) -> u64 {
        self.core.lock().dropped
    }

    /// Pops the next datagram `accept` takes, dropping those it refuses before it.
    fn next_datagram(
        st: &mut UdpState,
        accept: impl Fn(SocketAddr) -> bool,
    ) -> Option<(SocketAddr, Vec<u8>)> {
        while let Some((from, d)) = st.rx.pop_front() {
            st.rx_bytes -= d.len();
            if accept(from) {
                return Some((from, d));
            }
            st.keep_spare(d);
        }
        None
    }

    /// The next datagram (truncated to `max`) and its sender.
    ///
    /// # Errors
    /// Closed, or nothing in time.
    pub fn recv_from(
        &self,
        max: usize,
        timeout: Option<Duration>,
    ) -> Result<(Vec<u8>, SocketAddr), SockError> {
        let deadline = timeout.map(|t| Instant::now() + t);
        let mut st = self.core.lock();
        loop {
            if let Some((from, mut d)) = Self::next_datagram(&mut st, |_| true) {
                d.truncate(max);
                self.core.refresh(&st);
                return Ok((d, from));
            }
            if st.released {
                return Err(SockError::Closed);
            }
            if let Some(e) = st.error {
                return Err(e);
            }
            st = self.core.until(st, UdpState::recv_ready, deadline)?;
        }
    }

    /// Waits until a read would not block (a datagram, an error, closed) or `deadline`
    /// passes (`WouldBlock`); then read with [`Self::try_recv_from_with`].
    ///
    /// # Errors
    /// `WouldBlock` once `deadline` has passed.
    pub fn wait_readable(&self, deadline: Option<Instant>) -> Result<(), SockError> {
        self.core.wait_readable(deadline)
    }

    /// Reads the next datagram without blocking: datagrams whose sender `accept` refuses are
    /// dropped; `take` gets the first one it accepts (truncated to `max`) with its sender and
    /// returns whether it consumed it (false: the datagram stays first in the queue) and its
    /// result. `Ok(None)`: nothing (accepted) to read yet (see [`Self::wait_readable`]).
    ///
    /// `take` runs with the socket's state locked: it must not block, nor wait for anything
    /// that could be waiting for this socket.
    ///
    /// # Errors
    /// Closed, or the node stopped.
    pub fn try_recv_from_with<R>(
        &self,
        max: usize,
        accept: impl Fn(SocketAddr) -> bool,
        take: impl FnOnce(&[u8], SocketAddr) -> (bool, R),
    ) -> Result<Option<R>, SockError> {
        let mut st = self.core.lock();
        let before = st.rx.len();
        if let Some((from, d)) = Self::next_datagram(&mut st, accept) {
            let (used, r) = take(&d[..max.min(d.len())], from);
            if used {
                st.keep_spare(d);
            } else {
                st.rx_bytes += d.len();
                st.rx.push_front((from, d));
            }
            self.core.refresh(&st);
            return Ok(Some(r));
        }
        if st.rx.len() != before {
            self.core.refresh(&st);
        }
        if st.released {
            return Err(SockError::Closed);
        }
        if let Some(e) = st.error {
            return Err(e);
        }
        Ok(None)
    }

    /// Waits until a datagram of `len` bytes can be queued (or sending fails at once) or
    /// `deadline` passes (`WouldBlock`); then send with [`Self::try_send_to`].
    ///
    /// # Errors
    /// `WouldBlock` once `deadline` has passed.
    pub fn wait_writable(&self, len: usize, deadline: Option<Instant>) -> Result<(), SockError> {
        let mut st = self.core.lock();
        while !(st.released || st.error.is_some() || st.has_room(len)) {
            st = self.core.wait(st, deadline)?;
        }
        Ok(())
    }

    /// Queues a datagram to `to` without blocking (its bytes are copied with the socket's
    /// state locked): its length, or `Ok(None)` while the send buffer has no room for it.
    ///
    /// # Errors
    /// Closed, too large, or the node stopped.
    pub fn try_send_to(&self, data: &[u8], to: SocketAddr) -> Result<Option<usize>, SockError> {
        if data.len() > MAX_DATAGRAM {
            return Err(SockError::Invalid);
        }
        let mut st = self.core.lock();
        if st.released {
            return Err(SockError::Closed);
        }
        if let Some(e) = st.error {
            return Err(e);
        }
        st.permit(to.ip())?;
        if st.max_payload(to.ip()).is_some_and(|max| data.len() > max) {
            return Err(SockError::MsgSize);
        }
        if !st.has_room(data.len()) {
            return Ok(None);
        }
        let mut d = st.spare.pop().unwrap_or_default();
        d.extend_from_slice(data);
        st.tx_bytes += d.len();
        st.tx.push_back((to, d));
        let small = st.tx_bytes <= FLUSH_MAX;
        self.core.refresh(&st);
        drop(st);
        if small {
            self.core.wake.flush();
        } else {
            self.core.wake.wake();
        }
        Ok(Some(data.len()))
    }

    /// Queues a datagram to `to`.
    ///
    /// # Errors
    /// Closed, too large, or no room in time.
    pub fn send_to(
        &self,
        data: &[u8],
        to: SocketAddr,
        timeout: Option<Duration>,
    ) -> Result<usize, SockError> {
        let deadline = timeout.map(|t| Instant::now() + t);
        loop {
            if let Some(n) = self.try_send_to(data, to)? {
                return Ok(n);
            }
            self.wait_writable(data.len(), deadline)?;
        }
    }

    /// Closes the socket.
    pub fn close(&self) {
        self.core.change_and_wake(|st| st.released = true);
    }
}

/// How long a closed UDP socket may still send what was queued before its close (a link
/// address being resolved, a full stack buffer).
const UDP_LINGER: Duration = Duration::from_secs(2);

#[derive(Debug)]
struct UdpEntry {
    shared: Arc<UdpShared>,
    /// When the loop first saw the socket closed (it lingers while it has data to send).
    closed_at: Option<Instant>,
    /// One smoltcp socket per network it is bound on.
    handles: Vec<(NetworkId, SocketHandle)>,
    /// The bound port.
    port: u16,
    /// The address its smoltcp sockets listen on (None: any).
    listen: Option<IpAddr>,
    /// Bound to a specific address: only datagrams to it are taken.
    only: Option<IpAddr>,
    /// Bound to an unspecified, multicast or broadcast address: on every network, including
    /// networks configured later.
    follows: bool,
    /// Receive buffer size of its smoltcp sockets.
    rx_bytes: usize,
    /// Multicast groups joined: (group, interface address or None for every network).
    groups: Vec<(IpAddr, Option<IpAddr>)>,
}

/// The loop thread's UDP sockets.
#[derive(Debug, Default)]
pub struct UdpTable {
    entries: Vec<UdpEntry>,
    /// The stacks' generation the sockets' networks were set up for.
    generation: Option<u64>,
    /// Multicast groups joined on the stacks (and their Ethernet groups subscribed on the
    /// node), for all sockets together.
    applied: BTreeSet<(NetworkId, IpAddr)>,
    /// Memberships may differ from `applied`.
    groups_dirty: bool,
}

impl Drop for UdpTable {
    /// The node stopped: every socket fails with `NetDown` (nothing stays blocked).
    fn drop(&mut self) {
        for e in &self.entries {
            let mut st = e.shared.core.lock();
            st.error.get_or_insert(SockError::NetDown);
            e.shared.core.refresh(&st);
        }
    }
}

impl UdpTable {
    /// Binds `local` (port 0: an ephemeral port). An unspecified, multicast or
    /// 255.255.255.255 address binds on every configured network, networks configured later
    /// included; a socket bound to a specific address (unicast, multicast or broadcast) takes
    /// only datagrams to that address, as on Linux.
    ///
    /// # Errors
    /// No network for the address, or the port is taken.
    pub fn bind(
        &mut self,
        stacks: &mut Stacks,
        local: SocketAddr,
        buffers: (usize, usize),
        wake: Kick,
    ) -> Result<Arc<UdpShared>, SockError> {
        let ip = local.ip();
        let follows = ip.is_unspecified() || ip.is_multicast() || ip == Ipv4Addr::BROADCAST;
        let nets: Vec<NetworkId> = if follows {
            stacks.networks()
        } else {
            stacks.route(ip).into_iter().collect()
        };
        // Bound to a group or broadcast address, the smoltcp sockets listen on any (so that
        // what they send has a source address of the network) and the loop filters.
        let listen = (!follows && !is_directed_broadcast(stacks, &nets, ip)).then_some(ip);
        let Some(first) = nets.first().copied() else {
            return Err(SockError::NetUnreachable);
        };
        let port = if local.port() == 0 {
            stacks
                .get(first)
                .ok_or(SockError::NetUnreachable)?
                .ephemeral_port()
                .map_err(|_| SockError::AddrInUse)?
        } else {
            local.port()
        };
        let taken = self.entries.iter().any(|e| {
            !e.shared.core.lock().released
                && e.shared.local().map(|l| l.port()) == Some(port)
                && e.handles.iter().any(|(n, _)| nets.contains(n))
        });
        if taken {
            return Err(SockError::AddrInUse);
        }
        let mut handles = Vec::new();
        let rx_bytes = buffers.0.max(MAX_DATAGRAM);
        for n in nets {
            let Some(s) = stacks.get(n) else { continue };
            let h = s.add_udp(256, rx_bytes);
            let ep = IpListenEndpoint {
                addr: listen.map(Into::into),
                port,
            };
            if s.udp(h).bind(ep).is_err() {
                s.remove(h);
                for (n2, h2) in handles {
                    if let Some(s2) = stacks.get(n2) {
                        s2.remove(h2);
                    }
                }
                return Err(SockError::AddrInUse);
            }
            handles.push((n, h));
        }
        let state = UdpState {
            rx: VecDeque::new(),
            rx_bytes: 0,
            rx_cap: buffers.0,
            tx: VecDeque::new(),
            tx_bytes: 0,
            tx_cap: buffers.1,
            local: Some(SocketAddr::new(local.ip(), port)),
            released: false,
            dropped: 0,
            error: None,
            opts: UdpOptions::default(),
            nets: net_views(stacks, &handles),
            spare: Vec::new(),
        };
        let shared = Arc::new(UdpShared {
            core: SocketCore::new(state, wake).map_err(|_| SockError::Invalid)?,
        });
        {
            let st = shared.core.lock();
            shared.core.refresh(&st);
        }
        self.entries.push(UdpEntry {
            closed_at: None,
            shared: shared.clone(),
            handles,
            port,
            listen,
            only: (!ip.is_unspecified()).then_some(ip),
            follows,
            rx_bytes,
            groups: Vec::new(),
        });
        Ok(shared)
    }

    /// Moves datagrams between the shared queues and the stacks; true if any was sent.
    pub fn service(&mut self, stacks: &mut Stacks) -> bool {
        if self.generation != Some(stacks.generation()) {
            self.generation = Some(stacks.generation());
            self.resync(stacks);
        }
        let mut sent = false;
        let mut looped = Vec::new();
        let mut groups_gone = false;
        self.entries.retain_mut(|e| {
            let mut st = e.shared.core.lock();
            // A closed socket first sends what sendto() took before the close (as the kernel
            // does), for at most UDP_LINGER; then its stack sockets go.
            let closed_since = if st.released {
                Some(*e.closed_at.get_or_insert_with(Instant::now))
            } else {
                None
            };
            for (n, h) in e.handles.iter().filter(|_| closed_since.is_none()) {
                let Some(s) = stacks.get(*n) else { continue };
                let sock = s.udp(*h);
                while let Ok((data, meta)) = sock.recv() {
                    if e.only.is_some_and(|o| meta.local_address != Some(o.into())) {
                        continue;
                    }
                    if st.rx_bytes + data.len() > st.rx_cap {
                        st.dropped += 1;
                        continue;
                    }
                    st.rx_bytes += data.len();
                    let mut d = st.spare.pop().unwrap_or_default();
                    d.extend_from_slice(data);
                    st.rx.push_back((endpoint(meta.endpoint), d));
                }
            }
            while let Some((to, _)) = st.tx.front() {
                let to = *to;
                if st.kind(to.ip()) != Dest::Unicast {
                    match send_group(e, &mut st, stacks, to, &mut looped) {
                        GroupSend::Blocked => break,
                        GroupSend::Sent => sent = true,
                        GroupSend::Dropped => {}
                    }
                    continue;
                }
                let net = stacks
                    .route(to.ip())
                    .filter(|n| e.handles.iter().any(|(m, _)| m == n));
                let Some(net) = net else {
                    // Nothing routes it: dropped like an unroutable datagram.
                    if let Some((_, d)) = st.tx.pop_front() {
                        st.tx_bytes -= d.len();
                        st.keep_spare(d);
                    }
                    continue;
                };
                if stacks
                    .get(net)
                    .is_some_and(|s| s.address_iter().any(|(a, _)| a == to.ip()))
                {
                    // To this node's own address: delivered to its own socket on that port, as
                    // through the kernel's loopback (the stack would ask the network for it).
                    if let Some((_, d)) = st.tx.pop_front() {
                        st.tx_bytes -= d.len();
                        looped.push(Looped {
                            nets: vec![net],
                            to,
                            from: (e.listen, e.port),
                            kind: Dest::Unicast,
                            data: d,
                        });
                        sent = true;
                    }
                    continue;
                }
                let Some(h) = e.handles.iter().find(|(m, _)| *m == net).map(|(_, h)| *h) else {
                    break;
                };
                let Some(s) = stacks.get(net) else { break };
                let sock = s.udp(h);
                if !sock.can_send() {
                    break;
                }
                let Some((_, d)) = st.tx.pop_front() else {
                    break;
                };
                st.tx_bytes -= d.len();
                let ep = zt_stack::smoltcp::wire::IpEndpoint::new(to.ip().into(), to.port());
                if sock.send_slice(&d, ep).is_ok() {
                    sent = true;
                }
                st.keep_spare(d);
            }
            if let Some(since) = closed_since {
                let queued = !st.tx.is_empty()
                    || e.handles
                        .iter()
                        .any(|(n, h)| stacks.get(*n).is_some_and(|s| s.udp(*h).send_queue() > 0));
                if !queued || since.elapsed() >= UDP_LINGER {
                    for (n, h) in &e.handles {
                        if let Some(s) = stacks.get(*n) {
                            s.remove(*h);
                        }
                    }
                    groups_gone |= !e.groups.is_empty();
                    return false;
                }
            }
            e.shared.core.refresh(&st);
            true
        });
        self.groups_dirty |= groups_gone;
        for l in looped {
            self.loop_back(stacks, &l);
        }
        sent
    }
}

/// Most multicast groups one UDP socket may join (Linux's `igmp_max_memberships`).
pub const MAX_MEMBERSHIPS: usize = 20;

/// A UDP socket option (`setsockopt`/`getsockopt`; 0/1 values).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum UdpOption {
    /// `SO_BROADCAST`: datagrams to broadcast addresses may be sent (off by default; without
    /// it such sends fail with EACCES, as on Linux).
    Broadcast,
    /// `IP_MULTICAST_LOOP`: the node's own sockets get the IPv4 multicasts this socket sends
    /// (on by default).
    MulticastLoopV4,
    /// `IPV6_MULTICAST_LOOP`: the same for IPv6 (on by default).
    MulticastLoopV6,
}

#[derive(Clone, Copy, Debug)]
struct UdpOptions {
    broadcast: bool,
    loop_v4: bool,
    loop_v6: bool,
    /// `IP_MULTICAST_IF`: the network IPv4 multicasts go out on (None: every network of the
    /// socket that has an IPv4 address).
    multicast_if: Option<NetworkId>,
}

impl Default for UdpOptions {
    fn default() -> Self {
        Self {
            broadcast: false,
            loop_v4: true,
            loop_v6: true,
            multicast_if: None,
        }
    }
}

/// One network of a UDP socket, as its senders need it.
#[derive(Clone, Debug)]
struct NetView {
    id: NetworkId,
    /// The node's IPv4 addresses there, with their prefix lengths.
    v4: Vec<(Ipv4Addr, u8)>,
    policy: Policy,
    /// The network's IP MTU.
    mtu: usize,
}

/// What a destination address is to a socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Dest {
    Unicast,
    /// 255.255.255.255 or the directed broadcast address of one of the socket's networks.
    Broadcast,
    Multicast,
}

/// A broadcast or multicast a socket sent, to be delivered to the node's own sockets too.
#[derive(Debug)]
struct Looped {
    nets: Vec<NetworkId>,
    to: SocketAddr,
    /// The sender's address, if bound to a specific unicast one, and port.
    from: (Option<IpAddr>, u16),
    kind: Dest,
    data: Vec<u8>,
}

enum GroupSend {
    /// A network's socket has no room: try again later.
    Blocked,
    Sent,
    /// No network takes it any more.
    Dropped,
}
