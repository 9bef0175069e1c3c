//! A deterministic network of `zt-proto` nodes in one process, on a virtual clock.
//!
//! Hosts own one UDP socket each. Datagrams cross a seeded "netem" (latency, jitter and hence
//! reordering, loss, duplication) and optional NATs. The NAT model is a port-restricted cone:
//! one public port per host (endpoint-independent mapping), inbound allowed only from remote
//! endpoints the host has sent to. A datagram sent with TTL 2 opens the sender's NAT but is
//! lost before the far side, like the junk ZeroTier sends before hole punching.
#![forbid(unsafe_code)]

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap};
use std::net::{IpAddr, SocketAddr};

use zt_proto::crypto::SecureRandom;
use zt_proto::node::{CoreOptions, Event, Frame, LocalSocket, NodeConfig};
use zt_proto::{Identity, Node, Timestamp, World};

/// Deterministic (NOT secure) random numbers: SplitMix64.
#[derive(Clone, Debug)]
pub struct SimRng(pub u64);

impl SimRng {
    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
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

/// Impairments applied to every datagram.
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
    at: Timestamp,
    seq: u64,
    from: SocketAddr,
    to: SocketAddr,
    data: Vec<u8>,
}

/// Counters of the simulated network.
#[derive(Debug, Default, Clone)]
pub struct NetStats {
    /// Datagrams handed to the network.
    pub sent: u64,
    /// Datagrams delivered to a host.
    pub delivered: u64,
    /// Lost by netem.
    pub lost: u64,
    /// Duplicated by netem.
    pub duplicated: u64,
    /// Refused by a NAT or addressed to nobody.
    pub unroutable: u64,
}

/// The simulated network.
#[derive(Debug)]
pub struct Sim {
    /// Virtual time.
    pub now: Timestamp,
    /// Hosts, by index.
    pub hosts: Vec<Host>,
    /// Impairments.
    pub netem: Netem,
    /// Counters.
    pub stats: NetStats,
    queue: BinaryHeap<Reverse<InFlight>>,
    rng: SimRng,
    seq: u64,
}

impl Sim {
    /// An empty network starting at `now` with seed `seed`.
    #[must_use]
    pub fn new(seed: u64, netem: Netem, now: Timestamp) -> Self {
        Self {
            now,
            hosts: Vec::new(),
            netem,
            stats: NetStats::default(),
            queue: BinaryHeap::new(),
            rng: SimRng(seed),
            seq: 0,
        }
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
    #[allow(clippy::expect_used)]
    pub fn add_host(
        &mut self,
        identity: Identity,
        planet: World,
        bind: SocketAddr,
        nat_public: Option<SocketAddr>,
    ) -> usize {
        let config = NodeConfig {
            identity,
            stored_planet: None,
            default_planet: planet,
            moons: vec![],
            peers: vec![],
            networks: vec![],
            options: CoreOptions::default(),
        };
        let seed = self.rng.next_u64();
        let mut node = Node::new(config, Box::new(SimRng(seed)), self.now).expect("valid node");
        node.set_local_sockets(vec![(LocalSocket(0), bind)]);
        let nat = nat_public.map(|public| Nat {
            public,
            allowed: BTreeSet::new(),
        });
        self.hosts.push(Host {
            node,
            bind,
            isolated: false,
            handler: None,
            events: std::collections::VecDeque::new(),
            frames: std::collections::VecDeque::new(),
            nat,
        });
        self.hosts.len() - 1
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
        if self.rng.unit() < self.netem.loss {
            self.stats.lost += 1;
            return;
        }
        let copies = if self.rng.unit() < self.netem.duplicate {
            self.stats.duplicated += 1;
            2
        } else {
            1
        };
        for _ in 0..copies {
            let jitter = if self.netem.jitter_ms > 0 {
                (self.rng.next_u64() % self.netem.jitter_ms as u64) as i64
            } else {
                0
            };
            self.seq += 1;
            self.queue.push(Reverse(InFlight {
                at: self.now + self.netem.latency_ms + jitter,
                seq: self.seq,
                from,
                to,
                data: data.clone(),
            }));
        }
    }

    fn deliver(&mut self, d: InFlight) {
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

    /// Runs the network until virtual time `until`.
    pub fn run_until(&mut self, until: Timestamp) {
        self.pump();
        loop {
            let next_timer = self.hosts.iter().map(|h| h.node.poll_timeout()).min();
            let next_packet = self.queue.peek().map(|Reverse(d)| d.at);
            let next = match (next_timer, next_packet) {
                (Some(a), Some(b)) => a.min(b),
                (Some(a), None) => a,
                (None, Some(b)) => b,
                (None, None) => break,
            };
            if next > until {
                break;
            }
            self.now = next.max(self.now);
            while let Some(Reverse(d)) = self.queue.peek() {
                if d.at > self.now {
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
        self.now = until;
    }

    /// Runs for `ms` more milliseconds.
    pub fn run_for(&mut self, ms: i64) {
        let until = self.now + ms;
        self.run_until(until);
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
