//! TCP labs: two `zt-stack` [`NetStack`]s on a virtual clock, connected either
//!
//! - directly ([`DirectLab`]): Ethernet frames cross a [`Link`] each way; no ZeroTier at all,
//!   fast enough for property tests over thousands of seeds; or
//! - through ZeroTier ([`OverlayLab`]): two members of a network on a [`Sim`] (encryption,
//!   fragmentation at the physical MTU, the controller's config and its 2800-byte MTU), whose
//!   UDP datagrams cross the links, as in the real benchmark.
//!
//! [`transfer`] moves bytes over one TCP connection and measures it ([`Report`]): data is a
//! deterministic pattern checked byte for byte, sockets are made by `NetStack::add_tcp` (its
//! congestion control) with `zt-runtime`'s default buffers, the writer writes and the reader
//! reads as fast as the sockets allow (the reader optionally at a limited rate). Time is
//! event-driven: the clock jumps to the next datagram arrival, node timer or stack deadline,
//! so a connection that stops dead costs a handful of steps per back-off and the run ends at
//! its virtual time limit.

use std::collections::{BTreeMap, BinaryHeap};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::OnceLock;

use zt_proto::network::NetworkId;
use zt_proto::node::Frame;
use zt_stack::NetStack;
use zt_stack::smoltcp::iface::SocketHandle;
use zt_stack::smoltcp::socket::tcp::{self, TcpInfo};

use crate::SimRng;
use crate::lab::{NetworkLab, private_network};
use crate::link::{Link, LinkProfile, LinkStats, PathProfile};

/// `zt-runtime`'s default socket buffer, each way (`zt_runtime::sockets::DEFAULT_BUFFER`);
/// left at this size, buffers grow with the path, up to [`zt_stack::TCP_BUFFER_MAX`].
pub const DEFAULT_BUFFER: usize = zt_stack::TCP_BUFFER;

/// A gap in receiver progress at least this long is a stall (as the real benchmark counts).
pub const STALL_US: i64 = 200_000;

/// One end of a lab.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum End {
    /// The connecting end (its path's `ab` direction leads away from it).
    A,
    /// The listening end.
    B,
}

impl End {
    fn other(self) -> End {
        match self {
            End::A => End::B,
            End::B => End::A,
        }
    }

    fn index(self) -> usize {
        match self {
            End::A => 0,
            End::B => 1,
        }
    }
}

impl fmt::Display for End {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            End::A => "A",
            End::B => "B",
        })
    }
}

/// Which way a traced segment went, as seen at a stack.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dir {
    /// The stack sent it (onto the network).
    Sent,
    /// The stack was given it (it crossed the network).
    Received,
}

/// A TCP segment seen at a stack's boundary (see [`DirectLab::trace`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    /// When (µs, the lab's clock).
    pub at_us: i64,
    /// The stack that sent or received it.
    pub end: End,
    /// Sent or received.
    pub dir: Dir,
    /// Sequence number.
    pub seq: u32,
    /// Acknowledgement number (if ACK is set).
    pub ack: Option<u32>,
    /// Payload bytes.
    pub len: u16,
    /// SYN, FIN, RST, PSH as "SFRP" letters (others: '.').
    pub flags: [u8; 4],
    /// Advertised window (unscaled).
    pub window: u16,
}

impl fmt::Display for Segment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:12.6} {} {} seq {:10} ack {:>10} len {:4} {} win {}",
            self.at_us as f64 / 1e6,
            self.end,
            match self.dir {
                Dir::Sent => "->",
                Dir::Received => "<-",
            },
            self.seq,
            self.ack.map(|a| a.to_string()).unwrap_or_default(),
            self.len,
            String::from_utf8_lossy(&self.flags),
            self.window
        )
    }
}

/// The TCP segment in an Ethernet frame (IPv4 or IPv6), if it holds one.
#[must_use]
pub fn decode_segment(frame: &[u8], at_us: i64, end: End, dir: Dir) -> Option<Segment> {
    use zt_stack::smoltcp::wire::{
        EthernetFrame, EthernetProtocol, IpProtocol, Ipv4Packet, Ipv6Packet, TcpPacket,
    };
    let eth = EthernetFrame::new_checked(frame).ok()?;
    let payload = match eth.ethertype() {
        EthernetProtocol::Ipv4 => {
            let ip = Ipv4Packet::new_checked(eth.payload()).ok()?;
            if ip.next_header() != IpProtocol::Tcp {
                return None;
            }
            let hl = usize::from(ip.header_len());
            let total = usize::from(ip.total_len()).min(eth.payload().len());
            eth.payload().get(hl..total)?
        }
        EthernetProtocol::Ipv6 => {
            let ip = Ipv6Packet::new_checked(eth.payload()).ok()?;
            if ip.next_header() != IpProtocol::Tcp {
                return None;
            }
            eth.payload().get(40..)?
        }
        _ => return None,
    };
    let tcp = TcpPacket::new_checked(payload).ok()?;
    let flag = |on: bool, c: u8| if on { c } else { b'.' };
    Some(Segment {
        at_us,
        end,
        dir,
        seq: tcp.seq_number().0 as u32,
        ack: tcp.ack().then(|| tcp.ack_number().0 as u32),
        len: u16::try_from(tcp.payload().len()).unwrap_or(u16::MAX),
        flags: [
            flag(tcp.syn(), b'S'),
            flag(tcp.fin(), b'F'),
            flag(tcp.rst(), b'R'),
            flag(tcp.psh(), b'P'),
        ],
        window: tcp.window_len(),
    })
}

fn trace(trace: &mut Option<Vec<Segment>>, frame: &[u8], at_us: i64, end: End, dir: Dir) {
    if let Some(t) = trace
        && let Some(s) = decode_segment(frame, at_us, end, dir)
    {
        t.push(s);
    }
}

/// Two stacks and what connects them, driven by [`transfer`].
pub trait Lab {
    /// "direct" or "overlay".
    fn kind(&self) -> &'static str;
    /// The path between the ends.
    fn path(&self) -> &PathProfile;
    /// The seed the lab was built with.
    fn seed(&self) -> u64;
    /// Virtual time (µs).
    fn now_us(&self) -> i64;
    /// When the network next does something by itself (a frame or datagram arrives, a timer
    /// fires; µs).
    fn next_event_us(&self) -> Option<i64>;
    /// Runs the network to `t_us` and hands the frames that arrived to the stacks (which the
    /// caller then polls).
    fn advance_to_us(&mut self, t_us: i64);
    /// Sends what the stacks queued, at the current time.
    fn flush(&mut self);
    /// One end's stack.
    fn stack(&mut self, end: End) -> &mut NetStack;
    /// One end's IP address.
    fn addr(&self, end: End) -> IpAddr;
    /// Counters of the path's two directions: A → B, B → A.
    fn link_stats(&self) -> [LinkStats; 2];
    /// Other counters of the lab (name, value), reported as differences over a transfer.
    fn counters(&self) -> BTreeMap<String, u64> {
        BTreeMap::new()
    }
}

// ----- the direct lab --------------------------------------------------------------------------

#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct InFlight {
    at_us: i64,
    seq: u64,
    to: usize,
    data: Vec<u8>,
}

/// Two stacks whose Ethernet frames cross a link each way, nothing else: no ZeroTier, no
/// fragmentation, one frame per datagram.
#[derive(Debug)]
pub struct DirectLab {
    path: PathProfile,
    seed: u64,
    now_us: i64,
    stacks: [NetStack; 2],
    links: [Link; 2],
    in_flight: BinaryHeap<std::cmp::Reverse<InFlight>>,
    seq: u64,
    /// When set, every TCP segment the stacks send or are given is appended (for diagnosis).
    pub trace: Option<Vec<Segment>>,
}

const MAC_A: [u8; 6] = [0x02, 0x5a, 0x54, 0x00, 0x00, 0x01];
const MAC_B: [u8; 6] = [0x02, 0x5a, 0x54, 0x00, 0x00, 0x02];
const IP_A: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
const IP_B: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
/// The IP MTU of a ZeroTier network by default (and of the direct lab unless told).
pub const OVERLAY_MTU: usize = 2800;

impl DirectLab {
    /// Stacks at 198.18.0.1 (A) and 198.18.0.2 (B), IP MTU 2800 (a ZeroTier network's), on
    /// `path`; `seed` drives the links and the stacks (initial sequence numbers, ports).
    #[must_use]
    pub fn new(path: &PathProfile, seed: u64) -> Self {
        Self::with_mtu(path, seed, OVERLAY_MTU)
    }

    /// The same with IP MTU `mtu` (clamped to 576..=9000).
    #[must_use]
    pub fn with_mtu(path: &PathProfile, seed: u64, mtu: usize) -> Self {
        let mtu = mtu.clamp(576, 9000);
        let mut rng = SimRng(seed);
        let mut a = NetStack::new(MAC_A, mtu, rng.next_u64(), 0);
        let mut b = NetStack::new(MAC_B, mtu, rng.next_u64(), 0);
        a.set_addresses(&[(IpAddr::V4(IP_A), 15)]);
        b.set_addresses(&[(IpAddr::V4(IP_B), 15)]);
        let ab = Link::new(path.ab, rng.next_u64());
        let ba = Link::new(path.ba, rng.next_u64());
        Self {
            path: path.clone(),
            seed,
            now_us: 0,
            stacks: [a, b],
            links: [ab, ba],
            in_flight: BinaryHeap::new(),
            seq: 0,
            trace: None,
        }
    }

    /// Runs a transfer ([`transfer`]).
    pub fn transfer(&mut self, spec: &Transfer) -> Report {
        transfer(self, spec)
    }
}

impl Lab for DirectLab {
    fn kind(&self) -> &'static str {
        "direct"
    }

    fn path(&self) -> &PathProfile {
        &self.path
    }

    fn seed(&self) -> u64 {
        self.seed
    }

    fn now_us(&self) -> i64 {
        self.now_us
    }

    fn next_event_us(&self) -> Option<i64> {
        self.in_flight.peek().map(|d| d.0.at_us)
    }

    fn advance_to_us(&mut self, t_us: i64) {
        while let Some(d) = self.in_flight.peek() {
            if d.0.at_us > t_us {
                break;
            }
            let Some(std::cmp::Reverse(d)) = self.in_flight.pop() else {
                break;
            };
            self.links[1 - d.to].arrived(d.data.len());
            let end = if d.to == 0 { End::A } else { End::B };
            trace(&mut self.trace, &d.data, d.at_us, end, Dir::Received);
            self.stacks[d.to].handle_frame(d.data);
        }
        self.now_us = self.now_us.max(t_us);
    }

    fn flush(&mut self) {
        for from in 0..2 {
            while let Some(frame) = self.stacks[from].poll_frame() {
                let end = if from == 0 { End::A } else { End::B };
                trace(&mut self.trace, &frame, self.now_us, end, Dir::Sent);
                let (heap, seq) = (&mut self.in_flight, &mut self.seq);
                self.links[from].send(self.now_us, frame, |at_us, data| {
                    *seq += 1;
                    heap.push(std::cmp::Reverse(InFlight {
                        at_us,
                        seq: *seq,
                        to: 1 - from,
                        data,
                    }));
                });
            }
        }
    }

    fn stack(&mut self, end: End) -> &mut NetStack {
        &mut self.stacks[end.index()]
    }

    fn addr(&self, end: End) -> IpAddr {
        IpAddr::V4(match end {
            End::A => IP_A,
            End::B => IP_B,
        })
    }

    fn link_stats(&self) -> [LinkStats; 2] {
        [self.links[0].stats, self.links[1].stats]
    }
}

// ----- the overlay lab -------------------------------------------------------------------------

/// Why a lab could not be set up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetupError(pub String);

impl fmt::Display for SetupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "lab set-up failed: {}", self.0)
    }
}

impl std::error::Error for SetupError {}

/// Two members of a ZeroTier network on a [`Sim`](crate::Sim), each with a stack. The path's
/// links carry the UDP datagrams between the two members (A → B is `path.ab`); the root and
/// the controller are reached over unimpaired 1 ms links, so only the members' own path is
/// impaired.
#[derive(Debug)]
pub struct OverlayLab {
    /// The network (root, controller, the two members).
    pub net: NetworkLab,
    path: PathProfile,
    seed: u64,
    hosts: [usize; 2],
    stacks: [NetStack; 2],
    addrs: [IpAddr; 2],
    /// When set, every TCP segment the stacks send or are given is appended (for diagnosis).
    pub trace: Option<Vec<Segment>>,
}

impl OverlayLab {
    /// Builds the network (a root, a controller, members A and B), joins and authorizes both
    /// members, sets `path` between them, attaches a stack to each with the network's MTU and
    /// addresses, and exchanges UDP datagrams both ways until both stacks have resolved each
    /// other and the members talk directly (not through the root). `seed` drives the
    /// simulator (links, node randomness) and the stacks.
    ///
    /// # Errors
    /// If a member is not configured, or the members cannot reach each other over `path`
    /// within a minute of virtual time (a path that loses everything, say).
    pub fn new(path: &PathProfile, seed: u64) -> Result<Self, SetupError> {
        let mut net = NetworkLab::with_seed(seed, LinkProfile::delay(1_000), 2, &private_network());
        let (a, b) = (net.members[0], net.members[1]);
        net.sim.set_path(a, b, path);
        if !net.authorize_all() {
            return Err(SetupError("the members are not configured".into()));
        }
        let id = net.nwid;
        let mut rng = SimRng(seed ^ 0x7374_6163_6b73);
        let mut stack = |net: &NetworkLab, h: usize| -> Result<(NetStack, IpAddr), SetupError> {
            let info = net.sim.hosts[h]
                .node
                .network(id)
                .ok_or_else(|| SetupError("not joined".into()))?;
            let c = info
                .config
                .ok_or_else(|| SetupError("no network config".into()))?;
            let mut s = NetStack::new(
                info.mac.to_bytes(),
                usize::from(c.mtu),
                rng.next_u64(),
                net.sim.now_us(),
            );
            let addrs: Vec<(IpAddr, u8)> = c.static_ips.iter().map(|p| (p.ip, p.bits)).collect();
            s.set_addresses(&addrs);
            let v4 = net
                .ipv4_of(h)
                .ok_or_else(|| SetupError("no IPv4 address".into()))?;
            Ok((s, IpAddr::V4(v4)))
        };
        let (sa, ia) = stack(&net, a)?;
        let (sb, ib) = stack(&net, b)?;
        let mut lab = Self {
            net,
            path: path.clone(),
            seed,
            hosts: [a, b],
            stacks: [sa, sb],
            addrs: [ia, ib],
            trace: None,
        };
        lab.warm_up()?;
        Ok(lab)
    }

    /// The path's hosts in the simulator: A, B.
    #[must_use]
    pub fn hosts(&self) -> [usize; 2] {
        self.hosts
    }

    /// Runs a transfer ([`transfer`]).
    pub fn transfer(&mut self, spec: &Transfer) -> Report {
        transfer(self, spec)
    }

    /// Whether each member has a direct path to the other.
    fn direct(&self) -> bool {
        let sim = &self.net.sim;
        let [a, b] = self.hosts;
        let has = |from: usize, to: usize| {
            let peer = sim.hosts[to].node.address();
            sim.hosts[from]
                .node
                .peer(peer)
                .and_then(|p| p.best_path(sim.now))
                .is_some_and(|p| p.remote == sim.hosts[to].public_addr())
        };
        has(a, b) && has(b, a)
    }

    /// UDP datagrams A → B and B → A every 250 ms until both arrived and the path is direct;
    /// then a second more.
    fn warm_up(&mut self) -> Result<(), SetupError> {
        const PORT: u16 = 9;
        let ua = self.stacks[0].add_udp(8, 4096);
        let ub = self.stacks[1].add_udp(8, 4096);
        for (s, h) in [(0, ua), (1, ub)] {
            self.stacks[s]
                .udp(h)
                .bind(PORT)
                .map_err(|e| SetupError(format!("bind: {e:?}")))?;
        }
        let ends = [(End::A, ua), (End::B, ub)];
        let mut got = [false; 2];
        let start = self.now_us();
        while self.now_us() - start < 60_000_000 {
            // Both ways every round until the path is direct: a member confirms a path with a
            // HELLO when direct traffic arrives, and that HELLO or its OK may be lost.
            for (end, h) in ends {
                let to = self.addr(end.other());
                let _ = self.stack(end).udp(h).send_slice(
                    b"warm-up",
                    zt_stack::smoltcp::wire::IpEndpoint::new(to.into(), PORT),
                );
            }
            let until = self.now_us() + 250_000;
            while self.now_us() < until {
                let t = self.now_us();
                for s in &mut self.stacks {
                    s.poll(t);
                }
                self.flush();
                for (end, h) in ends {
                    while self.stack(end).udp(h).recv().is_ok() {
                        got[end.index()] = true;
                    }
                }
                let mut next = self.next_event_us().unwrap_or(until);
                for s in &mut self.stacks {
                    if let Some(p) = s.poll_at(t) {
                        next = next.min(p.max(t + 1));
                    }
                }
                self.advance_to_us(next.clamp(t + 1, until));
            }
            if got == [true, true] && self.direct() {
                for (end, h) in ends {
                    self.stack(end).remove(h);
                }
                self.net.sim.run_for(1_000);
                for s in &mut self.stacks {
                    s.poll(self.net.sim.now_us());
                }
                self.flush();
                return Ok(());
            }
        }
        Err(SetupError(format!(
            "the members did not reach each other directly (A got {}, B got {}, direct {})",
            got[0],
            got[1],
            self.direct()
        )))
    }
}

impl Lab for OverlayLab {
    fn kind(&self) -> &'static str {
        "overlay"
    }

    fn path(&self) -> &PathProfile {
        &self.path
    }

    fn seed(&self) -> u64 {
        self.seed
    }

    fn now_us(&self) -> i64 {
        self.net.sim.now_us()
    }

    fn next_event_us(&self) -> Option<i64> {
        self.net.sim.next_event_us()
    }

    fn advance_to_us(&mut self, t_us: i64) {
        self.net.sim.run_until_us(t_us);
        let now = self.net.sim.now_us();
        for (i, &h) in self.hosts.iter().enumerate() {
            while let Some(f) = self.net.sim.hosts[h].frames.pop_front() {
                if f.network != self.net.nwid {
                    continue;
                }
                let mut buf = self.stacks[i].frame_buffer();
                f.write_ethernet(&mut buf);
                let end = if i == 0 { End::A } else { End::B };
                trace(&mut self.trace, &buf, now, end, Dir::Received);
                self.stacks[i].handle_frame(buf);
            }
        }
    }

    fn flush(&mut self) {
        let now = self.net.sim.now;
        let now_us = self.net.sim.now_us();
        let id: NetworkId = self.net.nwid;
        for (i, &h) in self.hosts.iter().enumerate() {
            while let Some(out) = self.stacks[i].poll_frame() {
                let end = if i == 0 { End::A } else { End::B };
                trace(&mut self.trace, &out, now_us, end, Dir::Sent);
                if let Some(f) = Frame::from_ethernet(id, &out) {
                    // A refused frame is counted by the node (`frames_dropped`).
                    let _ = self.net.sim.hosts[h].node.send_frame(now, f);
                }
                self.stacks[i].recycle(out);
            }
        }
        self.net.sim.pump();
    }

    fn stack(&mut self, end: End) -> &mut NetStack {
        &mut self.stacks[end.index()]
    }

    fn addr(&self, end: End) -> IpAddr {
        self.addrs[end.index()]
    }

    fn link_stats(&self) -> [LinkStats; 2] {
        let [a, b] = self.hosts;
        [self.net.sim.link_stats(a, b), self.net.sim.link_stats(b, a)]
    }

    /// The members' drop counters (by reason, "A drops BadMac" say), the frames their nodes
    /// refused, and the datagrams the root relayed.
    fn counters(&self) -> BTreeMap<String, u64> {
        let mut c = BTreeMap::new();
        for (end, &h) in [End::A, End::B].iter().zip(&self.hosts) {
            let st = self.net.sim.hosts[h].node.stats();
            for (r, n) in &st.drops {
                c.insert(format!("{end} drops {r:?}"), *n);
            }
            for (r, n) in &st.frames_dropped {
                c.insert(format!("{end} refused frames {r:?}"), *n);
            }
        }
        c.insert(
            "root relayed".into(),
            self.net.sim.hosts[0].node.stats().relayed,
        );
        c
    }
}

// ----- transfers -------------------------------------------------------------------------------

/// What to transfer, and how.
#[derive(Clone, Debug, PartialEq)]
pub struct Transfer {
    /// Bytes each way.
    pub bytes: u64,
    /// Both ends send `bytes` at once (B → A too) on the one connection.
    pub both_ways: bool,
    /// Receive and send buffer of every socket (clamped to 1 KiB ..= [`MAX_BUFFER`]).
    pub buffers: (usize, usize),
    /// The readers take at most this many bytes per second (None: as fast as they come).
    pub read_rate: Option<u64>,
    /// Virtual time limit of the whole run (connection set-up included; µs).
    pub time_limit_us: i64,
    /// Give up once no flow made progress for this long (µs; a connection stopped dead).
    pub give_up_after_us: Option<i64>,
    /// Gap in receiver progress that counts as a stall (µs).
    pub stall_us: i64,
    /// Nagle's algorithm on (as `zt-runtime` leaves it unless TCP_NODELAY).
    pub nagle: bool,
    /// The listening port on B.
    pub port: u16,
    /// Smallest interval between two timeline samples (µs).
    pub timeline_every_us: i64,
    /// The senders' congestion control (None: the stack's, CUBIC).
    pub congestion: Option<tcp::CongestionControl>,
}

impl Transfer {
    /// `bytes` from A to B with the defaults: `zt-runtime`'s buffers, an unlimited reader,
    /// Nagle on, a 120 s limit, giving up after 60 s without progress, 200 ms stalls.
    #[must_use]
    pub fn new(bytes: u64) -> Self {
        Self {
            bytes,
            both_ways: false,
            buffers: (DEFAULT_BUFFER, DEFAULT_BUFFER),
            read_rate: None,
            time_limit_us: 120_000_000,
            give_up_after_us: Some(60_000_000),
            stall_us: STALL_US,
            nagle: true,
            port: 7000,
            timeline_every_us: 10_000,
            congestion: None,
        }
    }

    /// The same with this congestion control on both sockets.
    #[must_use]
    pub fn with_congestion(mut self, cc: tcp::CongestionControl) -> Self {
        self.congestion = Some(cc);
        self
    }

    /// The same with a time limit of `s` seconds.
    #[must_use]
    pub fn within_s(mut self, s: f64) -> Self {
        self.time_limit_us = (s * 1e6) as i64;
        self
    }
}

/// A stall: no receiver progress from `at_us` (since the flow started) for `len_us`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stall {
    /// When the gap began (µs since the flow started).
    pub at_us: i64,
    /// How long it lasted (µs); for the last one of a flow that did not finish, until the end
    /// of the run.
    pub len_us: i64,
}

/// One direction of a transfer.
#[derive(Clone, Debug)]
pub struct FlowReport {
    /// The writing end.
    pub from: End,
    /// Bytes to move.
    pub bytes: u64,
    /// Bytes the reader got (and checked).
    pub delivered: u64,
    /// Offset of the first byte that was not what was sent, if any.
    pub first_bad: Option<u64>,
    /// When the writer could start (µs since the run began: the connection was established).
    /// Stalls and the timeline count from there.
    pub started_us: Option<i64>,
    /// From the start to the last byte read, or to the end of the run if not complete (µs).
    pub duration_us: i64,
    /// Stalls (gaps ≥ the transfer's `stall_us`), in order.
    pub stalls: Vec<Stall>,
    /// How long the flow had been without progress when the run ended (0 if complete).
    pub idle_at_end_us: i64,
    /// (µs since the start, bytes read), sampled as bytes arrive.
    pub timeline: Vec<(i64, u64)>,
    /// The writing socket's `info()` at the end.
    pub sender: TcpInfo,
    /// The reading socket's `info()` at the end.
    pub receiver: TcpInfo,
}

impl FlowReport {
    /// Every byte arrived, intact.
    #[must_use]
    pub fn completed(&self) -> bool {
        self.delivered == self.bytes && self.first_bad.is_none()
    }

    /// Bytes per second over [`Self::duration_us`].
    #[must_use]
    pub fn goodput(&self) -> f64 {
        if self.duration_us <= 0 {
            return 0.0;
        }
        self.delivered as f64 * 1e6 / self.duration_us as f64
    }

    /// The longest stall (µs; 0 if none).
    #[must_use]
    pub fn longest_stall_us(&self) -> i64 {
        self.stalls.iter().map(|s| s.len_us).max().unwrap_or(0)
    }
}

/// What a transfer did.
#[derive(Clone, Debug)]
pub struct Report {
    /// "direct" or "overlay".
    pub lab: &'static str,
    /// The path's name.
    pub path: String,
    /// The lab's seed.
    pub seed: u64,
    /// Bottleneck rate of A → B (bytes/s), if any.
    pub rate_ab: Option<u64>,
    /// Bottleneck rate of B → A (bytes/s), if any.
    pub rate_ba: Option<u64>,
    /// The lab's clock when the run began (µs; traces are on this clock).
    pub start_us: i64,
    /// When the connection was established (µs since the run began), if it was.
    pub established_us: Option<i64>,
    /// Virtual time the run took (µs).
    pub run_us: i64,
    /// Why the run ended.
    pub ended: Ending,
    /// A → B first, then B → A if both ways.
    pub flows: Vec<FlowReport>,
    /// The A → B link's counters over the run.
    pub link_ab: LinkStats,
    /// The B → A link's counters over the run.
    pub link_ba: LinkStats,
    /// The lab's other counters that changed over the run ([`Lab::counters`]).
    pub counters: BTreeMap<String, u64>,
    /// Steps of the event loop (distinct instants visited).
    pub steps: u64,
}

/// Why a run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ending {
    /// Every flow completed.
    Completed,
    /// The time limit was reached.
    TimeLimit,
    /// No progress for `give_up_after_us`.
    NoProgress,
    /// Nothing left to happen: no timer, nothing in flight.
    Quiet,
    /// B could not listen on the port or A could not connect (port in use, no address).
    NotStarted,
}

impl Report {
    /// Every flow moved every byte intact.
    #[must_use]
    pub fn completed(&self) -> bool {
        self.flows.iter().all(FlowReport::completed)
    }

    /// The A → B flow.
    #[must_use]
    pub fn flow(&self) -> &FlowReport {
        &self.flows[0]
    }

    /// The A → B flow's goodput (bytes/s).
    #[must_use]
    pub fn goodput(&self) -> f64 {
        self.flow().goodput()
    }

    /// The A → B goodput as a fraction of the A → B bottleneck rate.
    #[must_use]
    pub fn utilisation(&self) -> Option<f64> {
        self.rate_ab.map(|r| self.goodput() / r as f64)
    }

    /// One line: outcome, goodput, stalls, retransmissions and timeouts of the A → B flow.
    #[must_use]
    pub fn summary(&self) -> String {
        let f = self.flow();
        let outcome = if self.completed() {
            "completed".to_string()
        } else {
            format!(
                "INCOMPLETE ({:?}, idle {:.1} s)",
                self.ended,
                f.idle_at_end_us as f64 / 1e6
            )
        };
        format!(
            "{} \"{}\" seed {}: {} {}/{} B in {:.2} s, {:.2} MB/s{}, {} stalls (longest {:.2} s), \
             {} segs retransmitted, {} timeouts, {} recoveries",
            self.lab,
            self.path,
            self.seed,
            outcome,
            f.delivered,
            f.bytes,
            f.duration_us as f64 / 1e6,
            f.goodput() / 1e6,
            self.utilisation()
                .map(|u| format!(" ({:.1} % of the bottleneck)", u * 100.0))
                .unwrap_or_default(),
            f.stalls.len(),
            f.longest_stall_us() as f64 / 1e6,
            f.sender.segs_retrans,
            f.sender.timeouts,
            f.sender.recoveries,
        )
    }

    /// The A → B timeline, coarsened to at most `points` samples, as text ("t_s bytes" lines).
    #[must_use]
    pub fn timeline_text(&self, points: usize) -> String {
        let t = &self.flow().timeline;
        let step = t.len().div_ceil(points.max(1)).max(1);
        let mut s = String::new();
        for (i, (us, b)) in t.iter().enumerate() {
            if i % step == 0 || i + 1 == t.len() {
                s.push_str(&format!("{:9.3} s {:>12} B\n", *us as f64 / 1e6, b));
            }
        }
        s
    }
}

fn info_line(i: &TcpInfo) -> String {
    format!(
        "srtt {:.1} ms rttvar {:.1} ms rto {:.1} ms cwnd {} ssthresh {} in-flight {} sent {} B \
         retrans {} B / {} segs, timeouts {}, recoveries {}, loss probes {}, undos {}, \
         d-sacks {}, reordering {}, rx dup {} ooo {} holes-full {}, buffers rx {} tx {}",
        f64::from(i.srtt_us) / 1e3,
        f64::from(i.rttvar_us) / 1e3,
        f64::from(i.rto_us) / 1e3,
        i.cwnd,
        i.ssthresh,
        i.in_flight,
        i.bytes_sent,
        i.bytes_retrans,
        i.segs_retrans,
        i.timeouts,
        i.recoveries,
        i.loss_probes,
        i.undos,
        i.dsacks_received,
        i.reordering_seen,
        i.rx_duplicates,
        i.rx_out_of_order,
        i.rx_too_many_holes,
        i.rx_buffer,
        i.tx_buffer
    )
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{}", self.summary())?;
        writeln!(
            f,
            "  established at {:.3} s, run {:.3} s, ended: {:?}, {} steps",
            self.established_us.unwrap_or(-1) as f64 / 1e6,
            self.run_us as f64 / 1e6,
            self.ended,
            self.steps
        )?;
        for fl in &self.flows {
            writeln!(
                f,
                "  flow {}→{}: {}/{} B{}, {:.2} MB/s, {} stalls, longest {:.3} s",
                fl.from,
                fl.from.other(),
                fl.delivered,
                fl.bytes,
                fl.first_bad
                    .map(|o| format!(", CORRUPT at {o}"))
                    .unwrap_or_default(),
                fl.goodput() / 1e6,
                fl.stalls.len(),
                fl.longest_stall_us() as f64 / 1e6
            )?;
            writeln!(f, "    sender   {}", info_line(&fl.sender))?;
            writeln!(f, "    receiver {}", info_line(&fl.receiver))?;
            if !fl.stalls.is_empty() {
                let list: Vec<String> = fl
                    .stalls
                    .iter()
                    .take(12)
                    .map(|s| format!("{:.2}s+{:.2}s", s.at_us as f64 / 1e6, s.len_us as f64 / 1e6))
                    .collect();
                writeln!(f, "    stalls: {}", list.join(" "))?;
            }
        }
        writeln!(f, "  link A→B: {}", self.link_ab)?;
        writeln!(f, "  link B→A: {}", self.link_ba)?;
        if !self.counters.is_empty() {
            let c: Vec<String> = self
                .counters
                .iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect();
            writeln!(f, "  {}", c.join(", "))?;
        }
        Ok(())
    }
}

/// The byte pattern of a flow: a pseudo-random table of prime length, so that data delivered
/// at the wrong offset (by anything but a multiple of the period) or corrupted is caught.
struct Pattern(&'static [u8]);

const PATTERN_PERIOD: usize = 65_521;

impl Pattern {
    fn of(end: End) -> Self {
        static TABLES: OnceLock<[Vec<u8>; 2]> = OnceLock::new();
        let t = TABLES.get_or_init(|| {
            let make = |seed| {
                let mut r = SimRng(seed);
                let mut v = vec![0u8; PATTERN_PERIOD];
                crate::SecureRandom::fill(&mut r, &mut v);
                v
            };
            [make(0xa0b0), make(0xb0a0)]
        });
        Self(&t[end.index()])
    }

    /// Fills `out` with the bytes at `offset..`.
    fn fill(&self, offset: u64, out: &mut [u8]) {
        let mut at = (offset % PATTERN_PERIOD as u64) as usize;
        let mut done = 0;
        while done < out.len() {
            let n = (PATTERN_PERIOD - at).min(out.len() - done);
            out[done..done + n].copy_from_slice(&self.0[at..at + n]);
            done += n;
            at = 0;
        }
    }

    /// The index in `data` of the first byte that differs from the pattern at `offset..`.
    fn check(&self, offset: u64, data: &[u8]) -> Option<usize> {
        let mut at = (offset % PATTERN_PERIOD as u64) as usize;
        let mut done = 0;
        while done < data.len() {
            let n = (PATTERN_PERIOD - at).min(data.len() - done);
            if data[done..done + n] != self.0[at..at + n] {
                let bad = data[done..done + n]
                    .iter()
                    .zip(&self.0[at..at + n])
                    .position(|(a, b)| a != b)
                    .unwrap_or(0);
                return Some(done + bad);
            }
            done += n;
            at = 0;
        }
        None
    }
}

struct Flow {
    from: End,
    /// The writer's socket (on `from`), the reader's (on the other end).
    tx: SocketHandle,
    rx: SocketHandle,
    pattern: Pattern,
    written: u64,
    read: u64,
    closed: bool,
    first_bad: Option<u64>,
    started: Option<i64>,
    done_at: Option<i64>,
    last_progress: i64,
    last_sample: i64,
    stalls: Vec<Stall>,
    timeline: Vec<(i64, u64)>,
}

/// Bytes a rate-limited reader may take at once after a pause.
const READ_BURST: u64 = 64 * 1024;

impl Flow {
    fn new(from: End, tx: SocketHandle, rx: SocketHandle) -> Self {
        Self {
            from,
            tx,
            rx,
            pattern: Pattern::of(from),
            written: 0,
            read: 0,
            closed: false,
            first_bad: None,
            started: None,
            done_at: None,
            last_progress: 0,
            last_sample: i64::MIN,
            stalls: Vec::new(),
            timeline: Vec::new(),
        }
    }

    /// Bytes the reader may still take at `t`.
    fn allowance(&self, spec: &Transfer, t: i64) -> u64 {
        match (spec.read_rate, self.started) {
            (Some(rate), Some(s)) => {
                let earned = u128::from(rate) * (t - s).max(0) as u128 / 1_000_000;
                let earned = u64::try_from(earned).unwrap_or(u64::MAX);
                earned.saturating_add(READ_BURST).saturating_sub(self.read)
            }
            _ => u64::MAX,
        }
    }

    /// When a rate-limited reader with data waiting may read again.
    fn read_wake(&self, spec: &Transfer, lab: &mut impl Lab) -> Option<i64> {
        let rate = spec.read_rate?.max(1);
        let start = self.started?;
        if self.done_at.is_some() || lab.stack(self.from.other()).tcp(self.rx).recv_queue() == 0 {
            return None;
        }
        let want = (self.read + 16 * 1024).saturating_sub(READ_BURST);
        let at = u128::from(want) * 1_000_000 / u128::from(rate);
        Some(start.saturating_add(i64::try_from(at).unwrap_or(i64::MAX)))
    }

    /// The writer writes, the reader reads; true if any byte moved.
    fn step(&mut self, spec: &Transfer, lab: &mut impl Lab, t: i64) -> bool {
        if self.started.is_none() {
            let s = lab.stack(self.from).tcp(self.tx);
            if s.state() != tcp::State::Established {
                return false;
            }
            self.started = Some(t);
            self.last_progress = t;
            self.timeline.push((0, 0));
            self.last_sample = t;
            if spec.bytes == 0 {
                self.done_at = Some(t);
            }
        }
        let start = self.started.unwrap_or(t);
        let mut moved = false;
        let s = lab.stack(self.from).tcp(self.tx);
        while self.written < spec.bytes && s.can_send() {
            let (pattern, written) = (&self.pattern, self.written);
            let left = spec.bytes - written;
            let n = s
                .send(|buf| {
                    let n = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                    pattern.fill(written, &mut buf[..n]);
                    (n, n)
                })
                .unwrap_or(0);
            if n == 0 {
                break;
            }
            self.written += n as u64;
            moved = true;
        }
        if self.written == spec.bytes && !self.closed {
            s.close();
            self.closed = true;
        }
        let mut allowance = self.allowance(spec, t);
        let before = self.read;
        let r = lab.stack(self.from.other()).tcp(self.rx);
        while allowance > 0 && r.can_recv() {
            let (pattern, read, first_bad) = (&self.pattern, self.read, &mut self.first_bad);
            let n = r
                .recv(|buf| {
                    let n = buf
                        .len()
                        .min(usize::try_from(allowance).unwrap_or(usize::MAX));
                    if first_bad.is_none()
                        && let Some(i) = pattern.check(read, &buf[..n])
                    {
                        *first_bad = Some(read + i as u64);
                    }
                    (n, n)
                })
                .unwrap_or(0);
            if n == 0 {
                break;
            }
            self.read += n as u64;
            allowance -= n as u64;
        }
        if self.read > before {
            moved = true;
            let gap = t - self.last_progress;
            if gap >= spec.stall_us {
                self.stalls.push(Stall {
                    at_us: self.last_progress - start,
                    len_us: gap,
                });
            }
            self.last_progress = t;
            if t - self.last_sample >= spec.timeline_every_us || self.read == spec.bytes {
                self.timeline.push((t - start, self.read));
                self.last_sample = t;
            }
            if self.read == spec.bytes {
                self.done_at = Some(t);
            }
        }
        moved
    }

    fn report(self, spec: &Transfer, lab: &mut impl Lab, run_start: i64, end: i64) -> FlowReport {
        let mut stalls = self.stalls;
        let (duration_us, idle) = match (self.started, self.done_at) {
            (Some(s), Some(d)) => (d - s, 0),
            (Some(s), None) => (end - s, end - self.last_progress),
            (None, _) => (0, 0),
        };
        if let Some(s) = self.started
            && self.done_at.is_none()
            && idle >= spec.stall_us
        {
            stalls.push(Stall {
                at_us: self.last_progress - s,
                len_us: idle,
            });
        }
        let mut timeline = self.timeline;
        if let Some(s) = self.started
            && timeline
                .last()
                .is_none_or(|l| l.1 != self.read || l.0 != end - s)
            && self.done_at.is_none()
        {
            timeline.push((end - s, self.read));
        }
        FlowReport {
            from: self.from,
            bytes: spec.bytes,
            delivered: self.read,
            first_bad: self.first_bad,
            started_us: self.started.map(|s| s - run_start),
            duration_us,
            stalls,
            idle_at_end_us: idle,
            timeline,
            sender: lab.stack(self.from).tcp(self.tx).info(),
            receiver: lab.stack(self.from.other()).tcp(self.rx).info(),
        }
    }
}

/// Largest socket buffer a transfer makes (larger requests are clamped; 64 MiB).
pub const MAX_BUFFER: usize = 1 << 26;

/// Safety valve: most event-loop steps a run may take (far more than any transfer needs).
const MAX_STEPS: u64 = 50_000_000;

/// Moves `spec.bytes` from A to B (and B to A if `both_ways`) over one new TCP connection
/// (A connects to B's `spec.port`), and reports. The sockets are removed afterwards, so a
/// lab can run several transfers (on different ports).
///
/// Each instant the loop visits: the frames that arrived are given to the stacks, the stacks
/// are polled, the writers write and the readers read, the stacks are polled again and what
/// they sent goes on the network; then the clock jumps to the earliest of the next network
/// event, the stacks' `poll_at` and a rate-limited reader's next read.
///
/// Durations and goodput run from when the connection is established (the writer's first
/// chance to write) to the last byte read; the time limit counts from the `connect`.
pub fn transfer(lab: &mut impl Lab, spec: &Transfer) -> Report {
    let run_start = lab.now_us();
    let links_before = lab.link_stats();
    let counters_before = lab.counters();
    let clamp = |b: usize| b.clamp(1024, MAX_BUFFER);
    let (rx, tx) = (clamp(spec.buffers.0), clamp(spec.buffers.1));
    let server = lab.stack(End::B).add_tcp(rx, tx);
    let client = lab.stack(End::A).add_tcp(rx, tx);
    if spec.buffers == (DEFAULT_BUFFER, DEFAULT_BUFFER) {
        // As zt-runtime: buffers left at the default grow with the path.
        for (end, h) in [(End::A, client), (End::B, server)] {
            lab.stack(end)
                .tcp(h)
                .set_buffer_limits(zt_stack::TCP_BUFFER_MAX, zt_stack::TCP_BUFFER_MAX);
        }
    }
    if let Some(cc) = spec.congestion {
        for (end, h) in [(End::A, client), (End::B, server)] {
            lab.stack(end).tcp(h).set_congestion_control(cc);
        }
    }
    let listening = lab.stack(End::B).tcp(server).listen(spec.port).is_ok();
    let remote = SocketAddr::new(lab.addr(End::B), spec.port);
    let connecting = lab.stack(End::A).tcp_connect(client, remote, 0).is_ok();
    for (end, h) in [(End::A, client), (End::B, server)] {
        lab.stack(end).tcp(h).set_nagle_enabled(spec.nagle);
    }
    let mut flows = vec![Flow::new(End::A, client, server)];
    if spec.both_ways {
        flows.push(Flow::new(End::B, server, client));
    }
    let deadline = run_start.saturating_add(spec.time_limit_us.max(0));
    let mut established = None;
    let mut steps = 0u64;
    let mut last_progress = run_start;
    let ended = loop {
        steps += 1;
        let t = lab.now_us();
        for _ in 0..4 {
            lab.stack(End::A).poll(t);
            lab.stack(End::B).poll(t);
            let mut moved = false;
            for f in &mut flows {
                moved |= f.step(spec, lab, t);
            }
            lab.stack(End::A).poll(t);
            lab.stack(End::B).poll(t);
            lab.flush();
            if moved {
                last_progress = t;
            } else {
                break;
            }
        }
        if established.is_none() && lab.stack(End::A).tcp(client).state() == tcp::State::Established
        {
            established = Some(t - run_start);
        }
        if !(listening && connecting) {
            break Ending::NotStarted;
        }
        if flows.iter().all(|f| f.done_at.is_some()) {
            break Ending::Completed;
        }
        if t >= deadline || steps >= MAX_STEPS {
            break Ending::TimeLimit;
        }
        if spec
            .give_up_after_us
            .is_some_and(|g| t - last_progress >= g)
        {
            break Ending::NoProgress;
        }
        let mut next = lab.next_event_us();
        for end in [End::A, End::B] {
            if let Some(p) = lab.stack(end).poll_at(t) {
                let p = p.max(t + 1);
                next = Some(next.map_or(p, |n| n.min(p)));
            }
        }
        for f in &flows {
            if let Some(w) = f.read_wake(spec, lab) {
                let w = w.max(t + 1);
                next = Some(next.map_or(w, |n| n.min(w)));
            }
        }
        let Some(next) = next else {
            break Ending::Quiet;
        };
        let mut next = next.clamp(t + 1, deadline.max(t + 1));
        if let Some(g) = spec.give_up_after_us {
            next = next.min(last_progress.saturating_add(g).max(t + 1));
        }
        lab.advance_to_us(next);
    };
    let end = lab.now_us();
    let flows: Vec<FlowReport> = flows
        .into_iter()
        .map(|f| f.report(spec, lab, run_start, end))
        .collect();
    lab.stack(End::A).remove(client);
    lab.stack(End::B).remove(server);
    let [ab, ba] = lab.link_stats();
    let counters_after = lab.counters();
    let counters = counters_after
        .into_iter()
        .filter_map(|(k, v)| {
            let d = v.saturating_sub(counters_before.get(&k).copied().unwrap_or(0));
            (d > 0).then_some((k, d))
        })
        .collect();
    Report {
        lab: lab.kind(),
        path: lab.path().name.clone(),
        seed: lab.seed(),
        rate_ab: lab.path().ab.bottleneck.map(|b| b.rate),
        rate_ba: lab.path().ba.bottleneck.map(|b| b.rate),
        start_us: run_start,
        established_us: established,
        run_us: end - run_start,
        ended,
        flows,
        link_ab: since(&ab, &links_before[0]),
        link_ba: since(&ba, &links_before[1]),
        counters,
        steps,
    }
}

/// Counters accumulated between `before` and `now` (`max_queue` as of now).
fn since(now: &LinkStats, before: &LinkStats) -> LinkStats {
    LinkStats {
        sent: now.sent - before.sent,
        bytes_sent: now.bytes_sent - before.bytes_sent,
        delivered: now.delivered - before.delivered,
        bytes_delivered: now.bytes_delivered - before.bytes_delivered,
        lost: now.lost - before.lost,
        burst_lost: now.burst_lost - before.burst_lost,
        duplicated: now.duplicated - before.duplicated,
        corrupted: now.corrupted - before.corrupted,
        queue_drops: now.queue_drops - before.queue_drops,
        max_queue: now.max_queue,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_pattern_catches_misplaced_and_flipped_bytes() {
        let p = Pattern::of(End::A);
        let mut buf = vec![0u8; 200_000];
        p.fill(12_345, &mut buf);
        assert_eq!(p.check(12_345, &buf), None);
        assert_eq!(p.check(12_345, &buf[1000..]), Some(0), "wrong offset");
        assert_eq!(p.check(13_345, &buf[1000..]), None);
        buf[150_000] ^= 4;
        assert_eq!(p.check(12_345, &buf), Some(150_000));
        let q = Pattern::of(End::B);
        let mut other = vec![0u8; 100];
        q.fill(12_345, &mut other);
        assert_ne!(other, buf[..100], "each direction has its own pattern");
    }
}
