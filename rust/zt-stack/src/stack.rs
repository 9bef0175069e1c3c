//! One network's TCP/IP stack: a smoltcp interface and its sockets over a [`VirtualEthernet`].
//!
//! Sans-IO like the protocol core: frames go in with [`NetStack::handle_frame`], come out of
//! [`NetStack::poll_frame`]; time is given in microseconds to [`NetStack::poll`], which says when
//! it wants to be polled next ([`NetStack::poll_at`]). Microseconds, not the node's
//! milliseconds: TCP measures round trips of a tenth of a millisecond on a LAN, and its loss
//! detection and pacing work at that scale.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use smoltcp::iface::{Config, Interface, MulticastError, PollResult, SocketHandle, SocketSet};
use smoltcp::socket::{icmp, tcp, udp};
use smoltcp::storage::PacketMetadata;
use smoltcp::time::Instant;
use smoltcp::wire::{EthernetAddress, HardwareAddress, IpAddress, IpCidr, IpEndpoint};

use crate::device::{TcpTuple, VirtualEthernet};

/// A TCP socket's default buffer size each way.
pub const TCP_BUFFER: usize = 1 << 20;
/// How far the buffers of a TCP socket at the default size may grow with its path (see
/// `tcp::Socket::set_buffer_limits`): the window of a path of 100 MB/s and 80 ms.
pub const TCP_BUFFER_MAX: usize = 8 << 20;

/// First ephemeral port (IANA dynamic range).
pub const EPHEMERAL_FIRST: u16 = 49152;

/// Why a stack operation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StackError {
    /// The socket is not in a state that allows it.
    #[error("invalid state for this operation")]
    InvalidState,
    /// No local address of the destination's family, or unspecified address/port.
    #[error("address not available")]
    AddressNotAvailable,
    /// Every ephemeral port is taken.
    #[error("no free local port")]
    NoPorts,
    /// The port is taken.
    #[error("address in use")]
    AddressInUse,
    /// The buffer is full / empty (try again).
    #[error("would block")]
    WouldBlock,
    /// The datagram does not fit.
    #[error("message too long")]
    TooLong,
    /// Unknown socket handle.
    #[error("bad socket handle")]
    BadHandle,
    /// The interface's multicast group table is full.
    #[error("too many multicast groups")]
    GroupTableFull,
}

/// A network's stack.
pub struct NetStack {
    iface: Interface,
    dev: VirtualEthernet,
    sockets: SocketSet<'static>,
    mac: [u8; 6],
    next_port: u16,
    /// Ports with a listener → how many listening addresses ([`Self::set_listening`]).
    listening: HashMap<u16, usize>,
    /// SYNs queued for the stack since its last full poll, per listening port.
    syns_queued: HashMap<u16, usize>,
    syns_dropped: u64,
}

impl std::fmt::Debug for NetStack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NetStack")
            .field("mac", &EthernetAddress(self.mac))
            .field("addrs", &self.iface.ip_addrs())
            .finish_non_exhaustive()
    }
}

fn tuple(local_port: u16, remote: SocketAddr) -> TcpTuple {
    (local_port, remote.ip().into(), remote.port())
}

fn ts(us: i64) -> Instant {
    Instant::from_micros(us)
}

/// The EUI-64 link-local address of a MAC (what lwIP gives a netif, too).
#[must_use]
pub fn link_local(mac: [u8; 6]) -> Ipv6Addr {
    Ipv6Addr::from([
        0xfe,
        0x80,
        0,
        0,
        0,
        0,
        0,
        0,
        mac[0] ^ 0x02,
        mac[1],
        mac[2],
        0xff,
        0xfe,
        mac[3],
        mac[4],
        mac[5],
    ])
}

/// The solicited-node multicast group of an IPv6 address (ff02::1:ffxx:xxxx).
#[must_use]
pub fn solicited_node(ip: Ipv6Addr) -> Ipv6Addr {
    let o = ip.octets();
    Ipv6Addr::from([
        0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, 0xff, o[13], o[14], o[15],
    ])
}

impl NetStack {
    /// A stack for the member with this MAC, IP MTU `mtu`, seeded with `seed` (TCP initial
    /// sequence numbers, ephemeral ports), at `now_us` (microseconds).
    #[must_use]
    pub fn new(mac: [u8; 6], mtu: usize, seed: u64, now_us: i64) -> Self {
        let mut dev = VirtualEthernet::new(mtu);
        let mut config = Config::new(HardwareAddress::Ethernet(EthernetAddress(mac)));
        config.random_seed = seed;
        let iface = Interface::new(config, &mut dev, ts(now_us));
        let span = u64::from(u16::MAX - EPHEMERAL_FIRST);
        let mut s = Self {
            iface,
            dev,
            sockets: SocketSet::new(Vec::new()),
            mac,
            next_port: EPHEMERAL_FIRST + (seed % span) as u16,
            listening: HashMap::new(),
            syns_queued: HashMap::new(),
            syns_dropped: 0,
        };
        s.set_addresses(&[]);
        s
    }

    /// Sets the managed addresses (`ip`, prefix length); the link-local address is kept.
    pub fn set_addresses(&mut self, addrs: &[(IpAddr, u8)]) {
        let ll = link_local(self.mac);
        self.iface.update_ip_addrs(|a| {
            a.clear();
            let _ = a.push(IpCidr::new(IpAddress::Ipv6(ll), 64));
            for (ip, bits) in addrs {
                let cidr = match ip {
                    IpAddr::V4(v4) => IpCidr::new(IpAddress::Ipv4(*v4), (*bits).min(32)),
                    IpAddr::V6(v6) => IpCidr::new(IpAddress::Ipv6(*v6), (*bits).min(128)),
                };
                if a.push(cidr).is_err() {
                    break;
                }
            }
        });
    }

    /// Sets the IP MTU (a network's config).
    pub fn set_mtu(&mut self, mtu: usize) {
        self.dev.set_mtu(mtu);
    }

    /// The IP MTU.
    #[must_use]
    pub fn mtu(&self) -> usize {
        self.dev.mtu()
    }

    /// The addresses in use.
    #[must_use]
    pub fn addresses(&self) -> Vec<(IpAddr, u8)> {
        self.address_iter().collect()
    }

    /// The addresses in use, without collecting them (`ip`, prefix length; the link-local
    /// address first).
    pub fn address_iter(&self) -> impl Iterator<Item = (IpAddr, u8)> + '_ {
        self.iface
            .ip_addrs()
            .iter()
            .map(|c| (IpAddr::from(c.address()), c.prefix_len()))
    }

    /// A frame from the network (Ethernet, 14-byte header). Its buffer is kept for reuse once
    /// the stack has processed it: build frames in [`Self::frame_buffer`]s.
    ///
    /// A SYN for a port that has a listener ([`Self::set_listening`]) but no listening socket
    /// free for it (every one armed is taken by a handshake or an unaccepted connection) is
    /// dropped, as the kernel drops a SYN its full queues cannot take: the client sends it
    /// again and gets in once a socket is free, where smoltcp would answer with a RST (a
    /// refused connection). Counted in [`Self::syns_dropped`].
    pub fn handle_frame(&mut self, frame: Vec<u8>) {
        if !self.listening.is_empty()
            && let Some(port) = crate::device::syn_port(&frame)
            && self.listening.contains_key(&port)
        {
            let free = self
                .sockets
                .iter()
                .filter(|(_, s)| match s {
                    smoltcp::socket::Socket::Tcp(t) => {
                        t.state() == tcp::State::Listen && t.listen_endpoint().port == port
                    }
                    _ => false,
                })
                .count();
            let queued = self.syns_queued.entry(port).or_insert(0);
            if *queued >= free {
                self.syns_dropped += 1;
                self.dev.discard_rx(frame);
                return;
            }
            *queued += 1;
        }
        self.dev.push_rx(frame);
    }

    /// Marks `port` as having a listener (`true`, counted: one call per listening address)
    /// or one fewer (`false`): SYNs for it wait for a free listening socket instead of being
    /// refused ([`Self::handle_frame`]).
    pub fn set_listening(&mut self, port: u16, on: bool) {
        if on {
            *self.listening.entry(port).or_insert(0) += 1;
        } else if let Some(n) = self.listening.get_mut(&port) {
            *n -= 1;
            if *n == 0 {
                self.listening.remove(&port);
                self.syns_queued.remove(&port);
            }
        }
    }

    /// SYNs dropped for want of a free listening socket ([`Self::handle_frame`]).
    #[must_use]
    pub fn syns_dropped(&self) -> u64 {
        self.syns_dropped
    }

    /// An empty buffer to build the next [`Self::handle_frame`] frame in (a recycled one when
    /// the stack has one spare: no allocation per frame).
    pub fn frame_buffer(&mut self) -> Vec<u8> {
        self.dev.rx_buffer()
    }

    /// Processes queued frames and timers at `now_us` (microseconds); true if anything happened
    /// to a socket.
    pub fn poll(&mut self, now_us: i64) -> bool {
        let r = self
            .iface
            .poll(ts(now_us), &mut self.dev, &mut self.sockets)
            == PollResult::SocketStateChanged;
        if self.dev.rx_pending() == 0 {
            // The queued SYNs reached their sockets.
            self.syns_queued.clear();
        }
        r
    }

    /// The next frame for the network.
    pub fn poll_frame(&mut self) -> Option<Vec<u8>> {
        self.dev.pop_tx()
    }

    /// Gives a sent frame's buffer back for reuse.
    pub fn recycle(&mut self, buf: Vec<u8>) {
        self.dev.recycle(buf);
    }

    /// When the stack wants [`Self::poll`] again (microseconds), if at all.
    pub fn poll_at(&mut self, now_us: i64) -> Option<i64> {
        self.iface
            .poll_at(ts(now_us), &self.sockets)
            .map(|i| i.total_micros())
    }

    /// Joins an IP multicast group: datagrams to it are accepted from then on (an IGMP or MLD
    /// report announces it on the network). Joining a group twice is a no-op.
    ///
    /// # Errors
    /// `AddressNotAvailable` for a group that is not multicast, `GroupTableFull` when the
    /// interface holds as many groups as it can.
    pub fn join_multicast(&mut self, group: IpAddr) -> Result<(), StackError> {
        self.iface
            .join_multicast_group(IpAddress::from(group))
            .map_err(|e| match e {
                MulticastError::GroupTableFull => StackError::GroupTableFull,
                MulticastError::Unaddressable => StackError::AddressNotAvailable,
            })
    }

    /// Leaves an IP multicast group (a no-op if it was not joined). The solicited-node groups
    /// of the stack's own IPv6 addresses, which neighbour discovery needs, stay joined.
    ///
    /// # Errors
    /// `AddressNotAvailable` for a group that is not multicast.
    pub fn leave_multicast(&mut self, group: IpAddr) -> Result<(), StackError> {
        if let IpAddr::V6(g) = group
            && self
                .addresses()
                .iter()
                .any(|(a, _)| matches!(a, IpAddr::V6(a) if solicited_node(*a) == g))
        {
            return Ok(());
        }
        self.iface
            .leave_multicast_group(IpAddress::from(group))
            .map_err(|_| StackError::AddressNotAvailable)
    }

    /// Whether the interface accepts datagrams to this multicast group.
    #[must_use]
    pub fn has_multicast(&self, group: IpAddr) -> bool {
        self.iface.has_multicast_group(IpAddress::from(group))
    }

    /// Frames dropped by full device queues.
    #[must_use]
    pub fn dropped_frames(&self) -> u64 {
        self.dev.dropped
    }

    // ----- sockets -------------------------------------------------------------------------------

    /// A new TCP socket with these buffer sizes.
    pub fn add_tcp(&mut self, rx: usize, tx: usize) -> SocketHandle {
        let mut s = tcp::Socket::new(
            tcp::SocketBuffer::new(vec![0; rx]),
            tcp::SocketBuffer::new(vec![0; tx]),
        );
        // Without a congestion controller smoltcp sends the whole peer window at once, and a
        // receiver that queues fewer segments than it advertises (lwIP in libzt) drops most of
        // each burst: 100 MB to libzt took 18-32 s without one, 2-4 s with CUBIC.
        s.set_congestion_control(tcp::CongestionControl::Cubic);
        // Timestamps (RFC 7323): a round-trip sample from every ACK, and spurious
        // retransmissions told from needed ones (the window cut they caused is undone).
        s.set_timestamps(true);
        self.sockets.add(s)
    }

    /// A new UDP socket holding up to `packets` datagrams of `bytes` total each way.
    pub fn add_udp(&mut self, packets: usize, bytes: usize) -> SocketHandle {
        let buf = || udp::PacketBuffer::new(vec![PacketMetadata::EMPTY; packets], vec![0; bytes]);
        self.sockets.add(udp::Socket::new(buf(), buf()))
    }

    /// A new ICMP socket (for pings).
    pub fn add_icmp(&mut self, packets: usize, bytes: usize) -> SocketHandle {
        let buf =
            || icmp::PacketBuffer::new(vec![icmp::PacketMetadata::EMPTY; packets], vec![0; bytes]);
        self.sockets.add(icmp::Socket::new(buf(), buf()))
    }

    /// Removes a socket (a TCP socket should be closed or aborted first).
    pub fn remove(&mut self, h: SocketHandle) {
        self.sockets.remove(h);
    }

    /// A TCP socket.
    pub fn tcp(&mut self, h: SocketHandle) -> &mut tcp::Socket<'static> {
        self.sockets.get_mut::<tcp::Socket<'static>>(h)
    }

    /// Starts recording when segments from `remote` to local port `local_port` arrive (the
    /// liveness of a connection's peer: [`Self::tcp_heard`]); until [`Self::tcp_unwatch`].
    /// In milliseconds of the clock given to [`Self::poll`].
    pub fn tcp_watch(&mut self, local_port: u16, remote: SocketAddr, now_ms: i64) {
        self.dev.watch(tuple(local_port, remote), now_ms);
    }

    /// Stops recording for a connection.
    pub fn tcp_unwatch(&mut self, local_port: u16, remote: SocketAddr) {
        self.dev.unwatch(&tuple(local_port, remote));
    }

    /// When the stack last took in a segment of a watched connection (ms; when watching began
    /// if none since). Any segment counts: data, ACKs, answers to keep-alive or zero-window
    /// probes, RSTs.
    #[must_use]
    pub fn tcp_heard(&self, local_port: u16, remote: SocketAddr) -> Option<i64> {
        self.dev.heard(&tuple(local_port, remote))
    }

    /// A UDP socket.
    pub fn udp(&mut self, h: SocketHandle) -> &mut udp::Socket<'static> {
        self.sockets.get_mut::<udp::Socket<'static>>(h)
    }

    /// An ICMP socket.
    pub fn icmp(&mut self, h: SocketHandle) -> &mut icmp::Socket<'static> {
        self.sockets.get_mut::<icmp::Socket<'static>>(h)
    }

    /// Whether a TCP or UDP socket of this stack uses `port` locally.
    #[must_use]
    pub fn port_in_use(&self, port: u16) -> bool {
        self.sockets.iter().any(|(_, s)| match s {
            smoltcp::socket::Socket::Tcp(t) => {
                t.local_endpoint().is_some_and(|e| e.port == port)
                    || t.listen_endpoint().port == port
            }
            smoltcp::socket::Socket::Udp(u) => u.endpoint().port == port,
            _ => false,
        })
    }

    /// A free ephemeral port.
    ///
    /// # Errors
    /// All are in use.
    pub fn ephemeral_port(&mut self) -> Result<u16, StackError> {
        for _ in 0..=(u16::MAX - EPHEMERAL_FIRST) {
            let p = self.next_port;
            self.next_port = if p == u16::MAX {
                EPHEMERAL_FIRST
            } else {
                p + 1
            };
            if !self.port_in_use(p) {
                return Ok(p);
            }
        }
        Err(StackError::NoPorts)
    }

    /// Starts a TCP connection (from `local_port`, 0 = ephemeral).
    ///
    /// # Errors
    /// Bad state, no address of that family, or no free port.
    pub fn tcp_connect(
        &mut self,
        h: SocketHandle,
        remote: SocketAddr,
        local_port: u16,
    ) -> Result<u16, StackError> {
        self.tcp_connect_from(h, remote, None, local_port)
    }

    /// As [`tcp_connect`](Self::tcp_connect), from the local address `local` (None: the one
    /// the route gives), which must be one of this stack's.
    ///
    /// # Errors
    /// As `tcp_connect`; `AddressNotAvailable` if `local` is not an address of this stack.
    pub fn tcp_connect_from(
        &mut self,
        h: SocketHandle,
        remote: SocketAddr,
        local: Option<IpAddr>,
        local_port: u16,
    ) -> Result<u16, StackError> {
        if let Some(ip) = local
            && !self.address_iter().any(|(a, _)| a == ip)
        {
            return Err(StackError::AddressNotAvailable);
        }
        let port = if local_port == 0 {
            self.ephemeral_port()?
        } else {
            local_port
        };
        let family_ok = self
            .iface
            .ip_addrs()
            .iter()
            .any(|c| c.address().version() == IpAddress::from(remote.ip()).version());
        if !family_ok {
            return Err(StackError::AddressNotAvailable);
        }
        let cx = self.iface.context();
        let remote = IpEndpoint::new(remote.ip().into(), remote.port());
        let local = smoltcp::wire::IpListenEndpoint {
            addr: local.map(Into::into),
            port,
        };
        self.sockets
            .get_mut::<tcp::Socket<'static>>(h)
            .connect(cx, remote, local)
            .map_err(|e| match e {
                tcp::ConnectError::InvalidState => StackError::InvalidState,
                tcp::ConnectError::Unaddressable => StackError::AddressNotAvailable,
            })?;
        Ok(port)
    }
}
