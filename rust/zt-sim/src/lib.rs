//! A deterministic network of `zt-proto` nodes in one process, on a virtual clock.
//!
//! Hosts own one UDP socket each. Datagrams cross an impaired [`link::Link`] per direction of
//! every pair of hosts (delay, jitter and hence reordering, loss, bursty loss, duplication,
//! corruption, an optional bottleneck; see [`link`]) and optional NATs. The NAT model is a
//! port-restricted cone: one public port per host (endpoint-independent mapping), inbound
//! allowed only from remote endpoints the host has sent to. A datagram sent with TTL 2 opens
//! the sender's NAT but is lost before the far side, like the junk ZeroTier sends before hole
//! punching.
//!
//! The clock runs in microseconds ([`Sim::now_us`]); nodes see milliseconds ([`Sim::now`], the
//! microseconds rounded down), user-space stacks and link queues the microseconds.
//!
//! [`lab`] builds a ZeroTier network on a simulator (controller, members, configs), [`tcp`]
//! runs TCP transfers between user-space stacks over it or over a bare link.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod lab;
pub mod link;
pub mod tcp;

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};
use std::net::{IpAddr, SocketAddr};

use link::{Link, LinkProfile, LinkStats, PathProfile};

use zt_proto::{
    Event, Frame, Identity, LocalSocket, Node, NodeConfig, Path, Peer, Timestamp, World,
    crypto::SecureRandom,
};

/// Deterministic (NOT secure) random numbers: SplitMix64.
#[derive(Clone, Debug)]
pub struct SimRng(pub u64);

impl SimRng {
    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        zt_proto::splitmix64(&mut self.0)
    }

    /// A float in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

impl SecureRandom for SimRng {
    fn fill(&mut self, dest: &mut [u8]) {
        for chunk in dest.chunks_mut(8) {
            let v = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

/// Impairments applied to every datagram (the simulator's original, millisecond model; it
/// becomes the default [`LinkProfile`] of every pair of hosts, see [`Netem::link`]).
#[derive(Clone, Debug)]
pub struct Netem {
    /// One-way latency in ms.
    pub latency_ms: i64,
    /// Extra random delay in [0, jitter) ms (this reorders datagrams).
    pub jitter_ms: i64,
    /// Probability that a datagram is lost.
    pub loss: f64,
    /// Probability that a datagram is delivered twice.
    pub duplicate: f64,
}

impl Default for Netem {
    fn default() -> Self {
        Self {
            latency_ms: 10,
            jitter_ms: 0,
            loss: 0.0,
            duplicate: 0.0,
        }
    }
}

impl Netem {
    /// The equivalent link: `latency + jitter / 2` ± `jitter / 2`, the same loss and
    /// duplication, no bottleneck.
    #[must_use]
    pub fn link(&self) -> LinkProfile {
        let jitter_us = self.jitter_ms.max(0) * 1000;
        LinkProfile {
            delay_us: self.latency_ms * 1000 + jitter_us / 2,
            jitter_us: jitter_us / 2,
            loss: self.loss,
            duplicate: self.duplicate,
            ..LinkProfile::default()
        }
    }
}

#[derive(Debug)]
struct Nat {
    public: SocketAddr,
    allowed: BTreeSet<SocketAddr>,
}

/// One simulated host.
#[derive(Debug)]
pub struct Host {
    /// Its node.
    pub node: Node,
    /// The address its socket is bound to.
    pub bind: SocketAddr,
    /// When true the host is cut off: nothing it sends or is sent reaches anyone.
    pub isolated: bool,
    /// If set, the host's events go through it (a controller answering requests, say); what
    /// it returns is kept in `events`.
    pub handler: Option<Box<dyn EventHandler>>,
    /// Events kept by the handler.
    pub events: std::collections::VecDeque<Event>,
    /// Frames the node delivered to its (virtual) stack.
    pub frames: std::collections::VecDeque<Frame>,
    nat: Option<Nat>,
}

/// Something that reacts to a host's events inside the simulation.
pub trait EventHandler: std::fmt::Debug {
    /// Handles `ev`; returns it (or another) to keep it for the test, None to swallow it.
    fn handle(&mut self, node: &mut Node, now: Timestamp, ev: Event) -> Option<Event>;
}

impl Host {
    /// The address others see for this host.
    #[must_use]
    pub fn public_addr(&self) -> SocketAddr {
        self.nat.as_ref().map_or(self.bind, |n| n.public)
    }
}

#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct InFlight {
    at_us: i64,
    seq: u64,
    link: usize,
    from: SocketAddr,
    to: SocketAddr,
    data: Vec<u8>,
}

/// Counters of the simulated network (all links together; [`Sim::link_stats`] has them per
/// direction of a pair of hosts).
#[derive(Debug, Default, Clone)]
pub struct NetStats {
    /// Datagrams handed to the network.
    pub sent: u64,
    /// Datagrams delivered to a host.
    pub delivered: u64,
    /// Lost: by a link (random or bursty loss, a full bottleneck queue) or an isolated host.
    pub lost: u64,
    /// Duplicated by a link.
    pub duplicated: u64,
    /// Corrupted by a link (delivered with a bit flipped).
    pub corrupted: u64,
    /// Refused by a NAT or addressed to nobody.
    pub unroutable: u64,
}

/// What happened to a datagram (see [`Sim::trace`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DatagramEvent {
    /// A host sent it (before the link).
    Sent,
    /// The link lost it (random or bursty loss, a full queue).
    Dropped,
    /// It reached a host.
    Delivered,
    /// It reached nobody (a NAT refused it, or no host has the address).
    Unroutable,
}

/// A datagram event, for diagnosis.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TracedDatagram {
    /// When (µs).
    pub at_us: i64,
    /// What happened.
    pub event: DatagramEvent,
    /// Source address (public).
    pub from: SocketAddr,
    /// Destination address.
    pub to: SocketAddr,
    /// Length.
    pub len: usize,
}

/// One direction between two addresses, and whether its profile was set explicitly.
#[derive(Debug)]
struct LinkSlot {
    link: Link,
    explicit: bool,
}

/// The simulated network.
#[derive(Debug)]
pub struct Sim {
    /// Virtual time in milliseconds (what the nodes see): [`Self::now_us`] rounded down.
    pub now: Timestamp,
    /// Hosts, by index.
    pub hosts: Vec<Host>,
    /// Counters.
    pub stats: NetStats,
    /// When set, every datagram event is appended (for diagnosis; it grows without bound).
    pub trace: Option<Vec<TracedDatagram>>,
    now_us: i64,
    seed: u64,
    default_link: LinkProfile,
    links: Vec<LinkSlot>,
    link_index: BTreeMap<(SocketAddr, SocketAddr), usize>,
    queue: BinaryHeap<Reverse<InFlight>>,
    rng: SimRng,
    seq: u64,
}

/// A link's seed: the simulator's seed mixed with both addresses (so each direction of each
/// pair draws its own, reproducible random numbers whatever the other traffic).
fn link_seed(seed: u64, from: SocketAddr, to: SocketAddr) -> u64 {
    let mut h = SimRng(seed ^ 0x6c69_6e6b);
    let mut mix = |s: &str| {
        for b in s.bytes() {
            h.0 ^= u64::from(b);
            h.next_u64();
        }
    };
    mix(&from.to_string());
    mix("|");
    mix(&to.to_string());
    h.next_u64()
}

impl Sim {
    /// An empty network starting at `now` with seed `seed`; every pair of hosts is connected
    /// by `netem` ([`Netem::link`]).
    #[must_use]
    pub fn new(seed: u64, netem: Netem, now: Timestamp) -> Self {
        Self::with_link(seed, netem.link(), now)
    }

    /// An empty network starting at `now` with seed `seed`; every direction of every pair of
    /// hosts is a link with profile `default_link` unless [`Self::set_link`] says otherwise.
    #[must_use]
    pub fn with_link(seed: u64, default_link: LinkProfile, now: Timestamp) -> Self {
        Self {
            now,
            hosts: Vec::new(),
            stats: NetStats::default(),
            trace: None,
            now_us: now.as_millis().saturating_mul(1000),
            seed,
            default_link,
            links: Vec::new(),
            link_index: BTreeMap::new(),
            queue: BinaryHeap::new(),
            rng: SimRng(seed),
            seq: 0,
        }
    }

    /// Virtual time in microseconds.
    #[must_use]
    pub fn now_us(&self) -> i64 {
        self.now_us
    }

    fn set_now_us(&mut self, us: i64) {
        self.now_us = us;
        self.now = Timestamp(us.div_euclid(1000));
    }

    fn link_slot(&mut self, from: SocketAddr, to: SocketAddr) -> usize {
        if let Some(&i) = self.link_index.get(&(from, to)) {
            return i;
        }
        let link = Link::new(self.default_link, link_seed(self.seed, from, to));
        self.links.push(LinkSlot {
            link,
            explicit: false,
        });
        self.link_index.insert((from, to), self.links.len() - 1);
        self.links.len() - 1
    }

    /// Sets the profile of the link from host `from` to host `to` (their public addresses),
    /// from now on; the link's queue and counters carry on.
    ///
    /// # Panics
    /// If a host index is out of range.
    pub fn set_link(&mut self, from: usize, to: usize, profile: LinkProfile) {
        let key = (self.hosts[from].public_addr(), self.hosts[to].public_addr());
        let i = self.link_slot(key.0, key.1);
        self.links[i].link.set_profile(profile);
        self.links[i].explicit = true;
    }

    /// Sets both directions between hosts `a` and `b` (`path.ab` from `a` to `b`).
    ///
    /// # Panics
    /// If a host index is out of range.
    pub fn set_path(&mut self, a: usize, b: usize, path: &PathProfile) {
        self.set_link(a, b, path.ab);
        self.set_link(b, a, path.ba);
    }

    /// Changes the profile of every link not set with [`Self::set_link`] (and of those made
    /// later).
    pub fn set_default_link(&mut self, profile: LinkProfile) {
        for slot in self.links.iter_mut().filter(|s| !s.explicit) {
            slot.link.set_profile(profile);
        }
        self.default_link = profile;
    }

    /// The counters of the link from host `from` to host `to` (zero if it carried nothing).
    ///
    /// # Panics
    /// If a host index is out of range.
    #[must_use]
    pub fn link_stats(&self, from: usize, to: usize) -> LinkStats {
        let key = (self.hosts[from].public_addr(), self.hosts[to].public_addr());
        self.link_index
            .get(&key)
            .map(|&i| self.links[i].link.stats)
            .unwrap_or_default()
    }

    /// Adds a host with a node built from `config` (identity, planet, cached peers, options).
    ///
    /// # Panics
    /// If the node cannot be created (invalid test set-up).
    #[allow(clippy::expect_used)]
    pub fn add_host_with(&mut self, config: NodeConfig, bind: SocketAddr) -> usize {
        let seed = self.rng.next_u64();
        let mut node = Node::new(config, Box::new(SimRng(seed)), self.now).expect("valid node");
        node.set_local_sockets(vec![(LocalSocket(0), bind)]);
        self.hosts.push(Host {
            node,
            bind,
            isolated: false,
            handler: None,
            events: std::collections::VecDeque::new(),
            frames: std::collections::VecDeque::new(),
            nat: None,
        });
        self.hosts.len() - 1
    }

    /// Adds a host with `identity` bound to `bind`, behind a NAT whose public address is
    /// `nat_public` if given. Returns its index.
    ///
    /// # Panics
    /// If the node cannot be created (invalid test set-up).
    pub fn add_host(
        &mut self,
        identity: Identity,
        planet: World,
        bind: SocketAddr,
        nat_public: Option<SocketAddr>,
    ) -> usize {
        let host = self.add_host_with(NodeConfig::new(identity, planet), bind);
        self.hosts[host].nat = nat_public.map(|public| Nat {
            public,
            allowed: BTreeSet::new(),
        });
        host
    }

    /// Whether the path host `from` would use to reach host `to` (the one `pick` chooses among
    /// its paths to that peer: [`Peer::best_path`], say) leads to `to`'s public address, not
    /// through a root.
    ///
    /// # Panics
    /// If a host index is out of range.
    #[must_use]
    pub fn goes_direct(
        &self,
        from: usize,
        to: usize,
        pick: impl for<'p> Fn(&'p Peer, Timestamp) -> Option<&'p Path>,
    ) -> bool {
        let peer = self.hosts[to].node.address();
        self.hosts[from]
            .node
            .peer(peer)
            .and_then(|p| pick(p, self.now))
            .is_some_and(|p| p.remote == self.hosts[to].public_addr())
    }

    /// Delivers `data` to host `to` as if it came from `from` (for injecting garbage).
    pub fn inject(&mut self, to: usize, from: SocketAddr, data: &[u8]) {
        self.hosts[to]
            .node
            .handle_datagram(self.now, LocalSocket(0), from, data);
        self.pump();
    }

    /// Executes every host's outputs (after a test drove a node directly).
    pub fn pump(&mut self) {
        for i in 0..self.hosts.len() {
            loop {
                let h = &mut self.hosts[i];
                if let Some(handler) = h.handler.as_mut() {
                    while let Some(ev) = h.node.poll_event() {
                        if let Some(kept) = handler.handle(&mut h.node, self.now, ev) {
                            h.events.push_back(kept);
                        }
                    }
                }
                while let Some(f) = h.node.poll_frame() {
                    h.frames.push_back(f);
                }
                let mut sent = false;
                // Identities are validated at once (the runtime does it on another thread).
                while let Some(id) = h.node.poll_identity_check() {
                    let valid = id.validate().is_ok();
                    h.node.handle_identity_checked(self.now, &id, valid);
                    sent = true;
                }
                while let Some(t) = self.hosts[i].node.poll_transmit() {
                    sent = true;
                    self.send(i, t.to, t.data, t.ttl);
                }
                while self.hosts[i].node.poll_store().is_some() {}
                if !sent {
                    break;
                }
            }
        }
    }

    fn send(&mut self, host: usize, to: SocketAddr, data: Vec<u8>, ttl: Option<u32>) {
        self.stats.sent += 1;
        if self.hosts[host].isolated {
            self.stats.lost += 1;
            return;
        }
        let h = &mut self.hosts[host];
        let from = match &mut h.nat {
            Some(nat) => {
                nat.allowed.insert(to);
                nat.public
            }
            None => h.bind,
        };
        if ttl.is_some_and(|t| t <= 2) {
            return;
        }
        let li = self.link_slot(from, to);
        let link = &mut self.links[li].link;
        let before = link.stats;
        let len = data.len();
        let (queue, seq, now) = (&mut self.queue, &mut self.seq, self.now_us);
        link.send(now, data, |at_us, data| {
            *seq += 1;
            queue.push(Reverse(InFlight {
                at_us,
                seq: *seq,
                link: li,
                from,
                to,
                data,
            }));
        });
        let after = link.stats;
        if let Some(t) = &mut self.trace {
            let mut ev = |event| {
                t.push(TracedDatagram {
                    at_us: self.now_us,
                    event,
                    from,
                    to,
                    len,
                });
            };
            ev(DatagramEvent::Sent);
            if after.dropped() > before.dropped() {
                ev(DatagramEvent::Dropped);
            }
        }
        self.stats.lost += after.dropped() - before.dropped();
        self.stats.duplicated += after.duplicated - before.duplicated;
        self.stats.corrupted += after.corrupted - before.corrupted;
    }

    fn deliver(&mut self, d: InFlight) {
        self.links[d.link].link.arrived(d.data.len());
        if let Some(t) = &mut self.trace {
            let routable = self.hosts.iter().any(|h| match &h.nat {
                None => h.bind == d.to,
                Some(nat) => nat.public == d.to && nat.allowed.contains(&d.from),
            });
            t.push(TracedDatagram {
                at_us: self.now_us,
                event: if routable {
                    DatagramEvent::Delivered
                } else {
                    DatagramEvent::Unroutable
                },
                from: d.from,
                to: d.to,
                len: d.data.len(),
            });
        }
        let target = self.hosts.iter().position(|h| match &h.nat {
            None => h.bind == d.to,
            Some(nat) => nat.public == d.to && nat.allowed.contains(&d.from),
        });
        match target {
            Some(i) if self.hosts[i].isolated => self.stats.lost += 1,
            Some(i) => {
                self.stats.delivered += 1;
                self.hosts[i]
                    .node
                    .handle_datagram(self.now, LocalSocket(0), d.from, &d.data);
            }
            None => self.stats.unroutable += 1,
        }
    }

    /// The time of the next thing the network will do by itself (a datagram arriving, a
    /// node's timer; µs), if anything.
    #[must_use]
    pub fn next_event_us(&self) -> Option<i64> {
        let timer = self
            .hosts
            .iter()
            .map(|h| h.node.poll_timeout().as_millis().saturating_mul(1000))
            .min();
        let packet = self.queue.peek().map(|Reverse(d)| d.at_us);
        match (timer, packet) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Runs the network until virtual time `until_us` (µs): everything due by then happens,
    /// and the clock is left at `until_us` (if that is later than now).
    pub fn run_until_us(&mut self, until_us: i64) {
        self.pump();
        while let Some(next) = self.next_event_us() {
            if next > until_us {
                break;
            }
            self.set_now_us(next.max(self.now_us));
            while let Some(Reverse(d)) = self.queue.peek() {
                if d.at_us > self.now_us {
                    break;
                }
                let Some(Reverse(d)) = self.queue.pop() else {
                    break;
                };
                self.deliver(d);
                self.pump();
            }
            for i in 0..self.hosts.len() {
                if self.hosts[i].node.poll_timeout() <= self.now {
                    self.hosts[i].node.handle_timeout(self.now);
                }
            }
            self.pump();
        }
        if until_us > self.now_us {
            self.set_now_us(until_us);
        }
    }

    /// Runs the network until virtual time `until`.
    pub fn run_until(&mut self, until: Timestamp) {
        self.run_until_us(until.as_millis().saturating_mul(1000));
    }

    /// Runs for `ms` more milliseconds.
    pub fn run_for(&mut self, ms: i64) {
        let until = self.now_us.saturating_add(ms.saturating_mul(1000));
        self.run_until_us(until);
    }
}

/// A host address on the simulated public network (a documentation prefix).
#[must_use]
pub fn public(i: u8) -> SocketAddr {
    SocketAddr::new(IpAddr::from([203, 0, 113, i]), 9993)
}

/// The `i`-th address of a large simulated population, each in its own /24 (198.18.0.0/15).
#[must_use]
pub fn population(i: u16) -> SocketAddr {
    let net = 18 + (i / 256) as u8;
    SocketAddr::new(IpAddr::from([198, net, (i % 256) as u8, 1]), 9993)
}
