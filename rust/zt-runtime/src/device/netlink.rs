//! A device's managed addresses and routes, put on and taken off through rtnetlink.
//!
//! Requests are synchronous: one `NETLINK_ROUTE` socket, one request at a time, each answered by
//! the kernel's acknowledgement (or its error) before the next goes. The messages:
//! - addresses: `RTM_NEWADDR` / `RTM_DELADDR` with the prefix length and the interface index;
//!   IPv4 carries `IFA_LOCAL`, `IFA_ADDRESS` and (below /31) `IFA_BROADCAST`, IPv6 `IFA_ADDRESS`;
//! - routes: `RTM_NEWROUTE` / `RTM_DELROUTE` in the main table, protocol static, scope
//!   universe, unicast, with `RTA_DST` and `RTA_OIF`, and through a gateway `RTA_GATEWAY` and
//!   `RTA_PRIORITY` (the metric);
//! - additions are exclusive (`NLM_F_CREATE | NLM_F_EXCL`); what is already there (`EEXIST`)
//!   counts as done, and so does removing what is already gone (`ESRCH`, `EADDRNOTAVAIL`,
//!   `ENODEV`), so applying the same changes twice is harmless.
//!
//! Everything here acts on the network namespace of the calling thread.

use std::io;
use std::net::{IpAddr, Ipv4Addr};

use netlink_packet_core::{
    NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage,
    NetlinkPayload,
};
use netlink_packet_route::address::{AddressAttribute, AddressMessage, AddressScope};
use netlink_packet_route::link::{LinkAttribute, LinkFlags, LinkMessage};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};
use zt_proto::IpPrefix;

use super::DeviceError;
use super::managed::{Changes, DeviceRoute, Step};

/// How much one receive takes: the kernel's dump datagrams are well below this.
const RECEIVE_BUFFER: usize = 64 * 1024;

/// What a change came to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The kernel made the change.
    Done,
    /// It was made already: the address or route was there (adding), or was not (removing).
    AlreadyDone,
}

/// An interface as the kernel describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Link {
    /// Its name.
    pub name: String,
    /// Its MTU.
    pub mtu: u32,
    /// Its hardware address, when it has a six-byte one.
    pub mac: Option<[u8; 6]>,
    /// Whether it is administratively up.
    pub up: bool,
}

/// A synchronous rtnetlink connection in the calling thread's network namespace.
pub struct Netlink {
    socket: Socket,
    sequence: u32,
    buffer: Vec<u8>,
}

impl std::fmt::Debug for Netlink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Netlink")
            .field("sequence", &self.sequence)
            .finish_non_exhaustive()
    }
}

impl Netlink {
    /// Opens the connection.
    ///
    /// # Errors
    /// [`DeviceError::Io`] when the socket cannot be opened.
    pub fn open() -> Result<Self, DeviceError> {
        let what = "opening a netlink socket";
        let mut socket = Socket::new(NETLINK_ROUTE).map_err(|e| DeviceError::io(what, e))?;
        socket.bind_auto().map_err(|e| DeviceError::io(what, e))?;
        socket
            .connect(&SocketAddr::new(0, 0))
            .map_err(|e| DeviceError::io(what, e))?;
        Ok(Self {
            socket,
            sequence: 0,
            buffer: vec![0; RECEIVE_BUFFER],
        })
    }

    /// Makes `changes` on the interface `ifindex`, in order, each acknowledged before the next:
    /// what each came to, or the first the kernel refused (the ones before it are made).
    ///
    /// # Errors
    /// [`DeviceError::Change`] with the refused step and the kernel's error.
    pub fn apply(
        &mut self,
        ifindex: u32,
        changes: &Changes,
    ) -> Result<Vec<(Step, Outcome)>, DeviceError> {
        changes
            .steps()
            .map(|step| self.step(ifindex, step).map(|outcome| (step, outcome)))
            .collect()
    }

    /// Makes one change on the interface `ifindex`.
    ///
    /// # Errors
    /// [`DeviceError::Change`] with the kernel's error.
    pub fn step(&mut self, ifindex: u32, step: Step) -> Result<Outcome, DeviceError> {
        let (message, flags, already) = match step {
            Step::AddAddress(a) => (
                RouteNetlinkMessage::NewAddress(address_message(ifindex, a)),
                NLM_F_CREATE | NLM_F_EXCL,
                &[libc::EEXIST][..],
            ),
            Step::RemoveAddress(a) => (
                RouteNetlinkMessage::DelAddress(address_message(ifindex, a)),
                0,
                &[libc::EADDRNOTAVAIL, libc::ENODEV, libc::ESRCH][..],
            ),
            Step::AddRoute(r) => (
                RouteNetlinkMessage::NewRoute(route_message(ifindex, &r)),
                NLM_F_CREATE | NLM_F_EXCL,
                &[libc::EEXIST][..],
            ),
            Step::RemoveRoute(r) => (
                RouteNetlinkMessage::DelRoute(route_message(ifindex, &r)),
                0,
                &[libc::ESRCH, libc::ENODEV, libc::EADDRNOTAVAIL][..],
            ),
        };
        match self.request(NLM_F_ACK | flags, message, |_| {}) {
            Ok(()) => Ok(Outcome::Done),
            Err(e) if e.raw_os_error().is_some_and(|code| already.contains(&code)) => {
                Ok(Outcome::AlreadyDone)
            }
            Err(source) => Err(DeviceError::Change { step, source }),
        }
    }

    /// The addresses on the interface `ifindex`, with their prefix lengths (the kernel's own
    /// link-local ones included).
    ///
    /// # Errors
    /// [`DeviceError::Io`] when the kernel does not answer.
    pub fn addresses(&mut self, ifindex: u32) -> Result<Vec<IpPrefix>, DeviceError> {
        let mut found = Vec::new();
        self.request(
            NLM_F_DUMP,
            RouteNetlinkMessage::GetAddress(AddressMessage::default()),
            |message| {
                let RouteNetlinkMessage::NewAddress(m) = message else {
                    return;
                };
                if m.header.index != ifindex {
                    return;
                }
                let (mut local, mut address) = (None, None);
                for attribute in &m.attributes {
                    match attribute {
                        AddressAttribute::Local(ip) => local = Some(*ip),
                        AddressAttribute::Address(ip) => address = Some(*ip),
                        _ => {}
                    }
                }
                if let Some(ip) = local.or(address) {
                    found.push(IpPrefix {
                        ip,
                        bits: m.header.prefix_len,
                    });
                }
            },
        )
        .map_err(|e| DeviceError::io(format!("listing the addresses of interface {ifindex}"), e))?;
        Ok(found)
    }

    /// The static routes (the kind [`Netlink::step`] adds) in the main table out of the
    /// interface `ifindex`; a route's metric is the kernel's (IPv6 routes added without one
    /// have 1024).
    ///
    /// # Errors
    /// [`DeviceError::Io`] when the kernel does not answer.
    pub fn routes(&mut self, ifindex: u32) -> Result<Vec<DeviceRoute>, DeviceError> {
        let mut found = Vec::new();
        for family in [AddressFamily::Inet, AddressFamily::Inet6] {
            let mut query = RouteMessage::default();
            query.header.address_family = family;
            self.request(
                NLM_F_DUMP,
                RouteNetlinkMessage::GetRoute(query),
                |message| {
                    let RouteNetlinkMessage::NewRoute(m) = message else {
                        return;
                    };
                    if m.header.protocol != RouteProtocol::Static
                        || m.header.kind != RouteType::Unicast
                    {
                        return;
                    }
                    let (mut table, mut oif) = (u32::from(m.header.table), None);
                    let (mut destination, mut via, mut metric) = (None, None, 0);
                    for attribute in &m.attributes {
                        match attribute {
                            RouteAttribute::Table(t) => table = *t,
                            RouteAttribute::Oif(i) => oif = Some(*i),
                            RouteAttribute::Destination(a) => destination = ip_of(a),
                            RouteAttribute::Gateway(a) => via = ip_of(a),
                            RouteAttribute::Priority(p) => metric = *p,
                            _ => {}
                        }
                    }
                    if table != u32::from(RouteHeader::RT_TABLE_MAIN) || oif != Some(ifindex) {
                        return;
                    }
                    let unspecified = match m.header.address_family {
                        AddressFamily::Inet6 => IpAddr::from([0u16; 8]),
                        _ => IpAddr::from(Ipv4Addr::UNSPECIFIED),
                    };
                    found.push(DeviceRoute {
                        target: IpPrefix {
                            ip: destination.unwrap_or(unspecified),
                            bits: m.header.destination_prefix_length,
                        },
                        via,
                        metric,
                    });
                },
            )
            .map_err(|e| {
                DeviceError::io(format!("listing the routes of interface {ifindex}"), e)
            })?;
        }
        Ok(found)
    }

    /// The interface `ifindex` as the kernel describes it, or `None` when there is none.
    ///
    /// # Errors
    /// [`DeviceError::Io`] when the kernel does not answer.
    pub fn link(&mut self, ifindex: u32) -> Result<Option<Link>, DeviceError> {
        let mut query = LinkMessage::default();
        query.header.index = ifindex;
        let mut found = None;
        let answer = self.request(NLM_F_ACK, RouteNetlinkMessage::GetLink(query), |message| {
            let RouteNetlinkMessage::NewLink(m) = message else {
                return;
            };
            let mut link = Link {
                name: String::new(),
                mtu: 0,
                mac: None,
                up: m.header.flags.contains(LinkFlags::Up),
            };
            for attribute in &m.attributes {
                match attribute {
                    LinkAttribute::IfName(name) => link.name.clone_from(name),
                    LinkAttribute::Mtu(mtu) => link.mtu = *mtu,
                    LinkAttribute::Address(mac) => link.mac = <[u8; 6]>::try_from(&mac[..]).ok(),
                    _ => {}
                }
            }
            found = Some(link);
        });
        match answer {
            Ok(()) => Ok(found),
            Err(e) if e.raw_os_error() == Some(libc::ENODEV) => Ok(None),
            Err(e) => Err(DeviceError::io(format!("reading interface {ifindex}"), e)),
        }
    }

    /// Brings the interface `ifindex` up.
    ///
    /// # Errors
    /// [`DeviceError::NotPermitted`] without the privilege, [`DeviceError::Io`] otherwise.
    pub fn set_up(&mut self, ifindex: u32) -> Result<(), DeviceError> {
        let mut m = LinkMessage::default();
        m.header.index = ifindex;
        m.header.flags = LinkFlags::Up;
        m.header.change_mask = LinkFlags::Up;
        self.request(NLM_F_ACK, RouteNetlinkMessage::SetLink(m), |_| {})
            .map_err(|e| DeviceError::io(format!("bringing interface {ifindex} up"), e))
    }

    /// Sends `message` with `flags` (and `NLM_F_REQUEST`) and hands each message of the answer
    /// to `each`, until the kernel's acknowledgement or the end of a dump; the kernel's error
    /// as an [`io::Error`] with its errno.
    fn request(
        &mut self,
        flags: u16,
        message: RouteNetlinkMessage,
        mut each: impl FnMut(RouteNetlinkMessage),
    ) -> io::Result<()> {
        self.sequence = self.sequence.wrapping_add(1);
        let sequence = self.sequence;
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | flags;
        header.sequence_number = sequence;
        let mut packet = NetlinkMessage::new(header, NetlinkPayload::from(message));
        packet.finalize();
        let length = packet.buffer_len();
        if length > self.buffer.len() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "netlink request too long",
            ));
        }
        packet.serialize(&mut self.buffer[..length]);
        self.socket.send(&self.buffer[..length], 0)?;
        loop {
            let received = match self.socket.recv(&mut &mut self.buffer[..], 0) {
                Ok(n) => n.min(self.buffer.len()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            let mut at = 0;
            while at < received {
                let packet =
                    NetlinkMessage::<RouteNetlinkMessage>::deserialize(&self.buffer[at..received])
                        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
                let length = packet.header.length as usize;
                if length == 0 {
                    break;
                }
                at += length.next_multiple_of(4);
                if packet.header.sequence_number != sequence {
                    continue; // an answer to an earlier request that was given up on
                }
                match packet.payload {
                    NetlinkPayload::Error(e) => {
                        return match e.code {
                            None => Ok(()),
                            Some(_) => Err(e.to_io()),
                        };
                    }
                    NetlinkPayload::Done(_) => return Ok(()),
                    NetlinkPayload::InnerMessage(m) => each(m),
                    NetlinkPayload::Noop | NetlinkPayload::Overrun(_) => {}
                    _ => {}
                }
            }
        }
    }
}

/// The `AF_*` family of `ip`.
fn family(ip: IpAddr) -> AddressFamily {
    if ip.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    }
}

/// An address request for `address` on `ifindex`.
fn address_message(ifindex: u32, address: IpPrefix) -> AddressMessage {
    let mut m = AddressMessage::default();
    m.header.family = family(address.ip);
    m.header.prefix_len = address.bits;
    m.header.scope = AddressScope::Universe;
    m.header.index = ifindex;
    match address.ip {
        IpAddr::V4(ip) => {
            m.attributes.push(AddressAttribute::Local(address.ip));
            m.attributes.push(AddressAttribute::Address(address.ip));
            if address.bits < 31 {
                let host = u32::MAX.checked_shr(u32::from(address.bits)).unwrap_or(0);
                let broadcast = Ipv4Addr::from(u32::from(ip) | host);
                m.attributes.push(AddressAttribute::Broadcast(broadcast));
            }
        }
        IpAddr::V6(_) => m.attributes.push(AddressAttribute::Address(address.ip)),
    }
    m
}

/// A route request for `route` out of `ifindex`.
fn route_message(ifindex: u32, route: &DeviceRoute) -> RouteMessage {
    let mut m = RouteMessage::default();
    m.header.address_family = family(route.target.ip);
    m.header.destination_prefix_length = route.target.bits;
    m.header.table = RouteHeader::RT_TABLE_MAIN;
    m.header.protocol = RouteProtocol::Static;
    m.header.scope = RouteScope::Universe;
    m.header.kind = RouteType::Unicast;
    m.attributes
        .push(RouteAttribute::Destination(route.target.ip.into()));
    m.attributes.push(RouteAttribute::Oif(ifindex));
    if let Some(via) = route.via {
        m.attributes.push(RouteAttribute::Gateway(via.into()));
    }
    if route.metric != 0 {
        m.attributes.push(RouteAttribute::Priority(route.metric));
    }
    m
}

/// The IP address in a route attribute.
fn ip_of(address: &RouteAddress) -> Option<IpAddr> {
    match address {
        RouteAddress::Inet(ip) => Some(IpAddr::V4(*ip)),
        RouteAddress::Inet6(ip) => Some(IpAddr::V6(*ip)),
        _ => None,
    }
}
