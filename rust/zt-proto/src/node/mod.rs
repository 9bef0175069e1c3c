//! The node state machine: inputs in, outputs polled out (see the crate docs for the contract).
//!
//! This file holds `Node`, its construction, getters and `poll_*` outputs; `types.rs` what it
//! stores, emits, counts and refuses; `incoming.rs` datagrams in; `send.rs` packets out (paths,
//! relays, HELLO, WHOIS); `timers.rs` its periodic work; `peer.rs` peers and paths;
//! `budget.rs` the budgets for unauthenticated work; `network/` network membership.

pub(crate) mod budget;
#[cfg(test)]
mod hello_tests;
mod incoming;
pub(crate) mod membership;
pub(crate) mod peer;
mod send;
#[cfg(test)]
mod source_tests;
mod timers;
mod types;

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;

use crate::address::Address;
use crate::crypto::SecureRandom;
use crate::identity::Identity;
use crate::inet::InetAddress;
use crate::network::NetworkId;
use crate::network::config::IpPrefix;
use crate::packet::{self, Cipher, PeerKeys, Verb};
use crate::time::Timestamp;
use crate::world::{World, WorldType, WorldUpdateRejected};

pub use membership::{
    ControllerRequest, Frame, FrameError, JoinError, LOCAL_REQUEST, NetworkInfo, NetworkStatus,
};
pub(crate) use peer::usable_endpoint;
pub use peer::{CachedPeer, LocalSocket, Path, Peer, RemoteVersion};

pub use types::*;

/// A root silent this long makes the node offline (stock SDK builds use 30 s).
pub(crate) const ACTIVITY_TIMEOUT_MS: i64 = 30_000;
const FULL_HELLO_INTERVAL_MS: i64 = 60_000;
const WHOIS_RETRY_MS: i64 = 500;
const QUEUE_TIMEOUT_MS: i64 = 5_000;
const QUEUE_SIZE: usize = 32;
/// Fragment sets being reassembled at once. ZeroTierOne keeps 32 (`ZT_RX_QUEUE_SIZE`), which a
/// single fast flow outgrows as soon as its path reorders: at 100 MB/s of 2800-byte frames
/// (two datagrams each), 10 ms of jitter leaves ~400 frames waiting for their other half, and
/// evicting one loses the frame. The oldest set goes when the table is full.
const FRAGMENT_SETS: usize = 1024;
/// At most this many of them from one source address (one sender cannot evict everyone
/// else's); its own oldest goes first.
const FRAGMENT_SETS_PER_SOURCE: usize = 512;
const EXPECT_REPLY_MS: i64 = 60_000;
const EXPECT_REPLY_MAX: usize = 8192;
const UNITE_INTERVAL_MS: i64 = 30_000;
const PUSH_INTERVAL_RELAYED_MS: i64 = 15_000;
const PUSH_INTERVAL_DIRECT_MS: i64 = 120_000;
const TRUST_MS: i64 = 600_000;
const ECHO_GATE_MS: i64 = 166;
const PEER_EVICT_MS: i64 = 600_000;
/// While no root answers, HELLOs to roots are retried this often (not only every ping check).
const ROOT_HELLO_RETRY_MS: i64 = 1_000;

/// Wire IDs of recently accepted packets (IDs are random or SIV tags, so a repeat is a replay).
#[derive(Default)]
struct ReplayWindow {
    seen: std::collections::HashSet<u64>,
    order: VecDeque<u64>,
}

impl ReplayWindow {
    const CAPACITY: usize = 1 << 16;

    /// Records `id`; false if it was already there.
    fn insert(&mut self, id: u64) -> bool {
        if !self.seen.insert(id) {
            return false;
        }
        self.order.push_back(id);
        if self.order.len() > Self::CAPACITY
            && let Some(old) = self.order.pop_front()
        {
            self.seen.remove(&old);
        }
        true
    }
}

#[derive(Clone, Copy, Debug)]
struct Schedule {
    quick: Timestamp,
    ping: Timestamp,
    housekeeping: Timestamp,
}

struct Queued {
    dest: Address,
    verb: Verb,
    payload: Vec<u8>,
    created: Timestamp,
}

/// A HELLO whose MAC verified, held while its identity is validated.
struct Validating {
    identity: Identity,
    keys: PeerKeys,
    local: LocalSocket,
    from: SocketAddr,
    /// The HELLO, dearmored.
    packet: Vec<u8>,
    since: Timestamp,
}

struct FragmentSet {
    created: Timestamp,
    /// Order of arrival (for evicting the oldest).
    seq: u64,
    /// Where its first datagram came from (what it counts against).
    source: SocketAddr,
    local: LocalSocket,
    from: SocketAddr,
    head: Option<Vec<u8>>,
    pieces: [Option<Vec<u8>>; packet::MAX_FRAGMENTS],
    total: u8,
}

/// A HELLO from `sender` (which must hold its secret key) to `dest` with packet ID `id`, as a
/// node sends it (protocol 11, no world fields), armored with the keys the two identities
/// agree on; `None` if `sender` has no secret key or the agreement fails. For tools and tests
/// that play a peer without running a [`Node`] (a flood of HELLOs, for one).
#[must_use]
pub fn hello_packet(
    sender: &Identity,
    dest: &Identity,
    id: [u8; 8],
    now: Timestamp,
    version: (u8, u8, u16),
) -> Option<Vec<u8>> {
    let keys = PeerKeys::new(&*sender.agree(dest).ok()?);
    let (major, minor, rev) = version;
    let mut p = packet::new_packet(id, dest.address(), sender.address(), Verb::Hello);
    p.extend_from_slice(&[packet::PROTOCOL_VERSION, major, minor]);
    p.extend_from_slice(&rev.to_be_bytes());
    p.extend_from_slice(&(now.as_millis() as u64).to_be_bytes());
    sender.write(&mut p, false);
    packet::armor(&mut p, &keys, Cipher::Poly1305None);
    Some(p)
}

/// The ZeroTier node core.
pub struct Node {
    identity: Identity,
    options: CoreOptions,
    rng: Box<dyn SecureRandom + Send>,
    planet: World,
    moons: Vec<World>,
    upstreams: Vec<Address>,
    peers: BTreeMap<Address, Peer>,
    locals: Vec<(LocalSocket, SocketAddr)>,
    interfaces: Vec<std::net::IpAddr>,
    surface: BTreeMap<Address, SocketAddr>,
    schedule: Schedule,
    online: bool,
    last_up: Timestamp,
    expecting: std::collections::HashMap<u64, Timestamp>,
    expecting_order: VecDeque<u64>,
    whois_sent: BTreeMap<Address, Timestamp>,
    /// The sender of the packet being handled and its direct path (None: it was relayed). Its
    /// OKs and ERRORs go back the way it came (as stock answers on the packet's path), not by
    /// the sender's best path, which may still be an old port of a peer that just restarted;
    /// answers to a relayed packet go back through a relay for the same reason.
    inbound: Option<(Address, Option<(LocalSocket, SocketAddr)>)>,
    tx_queue: VecDeque<Queued>,
    rx_queue: VecDeque<(Timestamp, LocalSocket, SocketAddr, Vec<u8>)>,
    fragments: BTreeMap<u64, FragmentSet>,
    /// Fragment sets in order of arrival (sequence, packet id); entries of sets that completed
    /// or expired are skipped when met.
    fragment_order: VecDeque<(u64, u64)>,
    fragment_seq: u64,
    /// Fragment sets per source address.
    fragment_sources: std::collections::HashMap<SocketAddr, usize>,
    united: BTreeMap<(Address, Address), Timestamp>,
    budgets: budget::Budgets,
    /// HELLOs of new identities waiting for their validation, by address.
    validating: BTreeMap<Address, Validating>,
    /// Identities to validate ([`Node::poll_identity_check`]).
    identity_checks: VecDeque<Identity>,
    echo_gate: BTreeMap<(LocalSocket, SocketAddr), Timestamp>,
    pending_hellos: Vec<(Address, SocketAddr)>,
    replay: ReplayWindow,
    events: VecDeque<Event>,
    store_ops: VecDeque<StoreOp>,
    transmits: VecDeque<Transmit>,
    stats: NodeStats,
    nets: membership::Networks,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("address", &self.identity.address())
            .field("peers", &self.peers.len())
            .field("online", &self.online)
            .finish_non_exhaustive()
    }
}

impl Node {
    /// Creates the node at time `now`; emits [`Event::Up`] and stores whatever the adopted
    /// planet changed.
    ///
    /// # Errors
    /// The identity has no secret key, or a stored world is of the wrong kind.
    pub fn new(
        config: NodeConfig,
        rng: Box<dyn SecureRandom + Send>,
        now: Timestamp,
    ) -> Result<Self, NodeError> {
        let NodeConfig {
            identity,
            stored_planet,
            default_planet,
            moons,
            peers,
            networks,
            options,
        } = config;
        if !identity.has_secret() {
            return Err(NodeError::NoSecret(identity.address()));
        }
        if default_planet.world_type != WorldType::Planet {
            return Err(NodeError::World(
                WorldType::Planet,
                "the default is not a planet".into(),
            ));
        }
        let never = Timestamp(i64::MIN / 2);
        let mut node = Self {
            identity,
            options,
            rng,
            planet: default_planet.clone(),
            moons: Vec::new(),
            upstreams: Vec::new(),
            peers: BTreeMap::new(),
            locals: Vec::new(),
            interfaces: Vec::new(),
            surface: BTreeMap::new(),
            schedule: Schedule {
                quick: now,
                ping: now,
                housekeeping: now + HOUSEKEEPING_INTERVAL_MS,
            },
            online: false,
            last_up: never,
            expecting: std::collections::HashMap::new(),
            expecting_order: VecDeque::new(),
            whois_sent: BTreeMap::new(),
            inbound: None,
            tx_queue: VecDeque::new(),
            rx_queue: VecDeque::new(),
            fragments: BTreeMap::new(),
            fragment_order: VecDeque::new(),
            fragment_seq: 0,
            fragment_sources: std::collections::HashMap::new(),
            united: BTreeMap::new(),
            budgets: budget::Budgets::new(now),
            validating: BTreeMap::new(),
            identity_checks: VecDeque::new(),
            echo_gate: BTreeMap::new(),
            pending_hellos: Vec::new(),
            replay: ReplayWindow::default(),
            events: VecDeque::new(),
            store_ops: VecDeque::new(),
            transmits: VecDeque::new(),
            stats: NodeStats::default(),
            nets: membership::Networks::default(),
        };
        let mut store_planet = true;
        if let Some(stored) = stored_planet {
            if stored.world_type != WorldType::Planet {
                return Err(NodeError::World(WorldType::Planet, "not a planet".into()));
            }
            // A stored planet wins unless the default is a signed update of that same planet.
            if stored.check_update(&default_planet).is_err() {
                node.planet = stored;
                store_planet = false;
            }
        }
        if store_planet {
            node.store_ops.push_back(StoreOp::Put {
                key: StoreKey::Planet,
                data: node.planet.to_bytes(),
            });
        }
        for m in moons {
            if m.world_type != WorldType::Moon {
                return Err(NodeError::World(
                    WorldType::Moon,
                    format!("{:016x} is a planet", m.id),
                ));
            }
            node.moons.retain(|x| x.id != m.id);
            node.moons.push(m);
        }
        node.refresh_upstreams();
        for cached in peers {
            let addr = cached.identity.address();
            if addr == node.address() {
                continue;
            }
            if node.add_peer(cached.identity.clone())
                && let Some(p) = node.peers.get_mut(&addr)
            {
                p.version = cached.version;
            }
            for ep in cached.endpoints {
                node.pending_hellos.push((addr, ep));
            }
        }
        node.online = node.is_root();
        for (id, cached) in networks.into_iter().take(node.options.max_networks) {
            node.join_cached(now, id, &cached);
        }
        node.events.push_back(Event::Up {
            address: node.identity.address(),
        });
        node.events.push_back(Event::PlanetChanged {
            id: node.planet.id,
            timestamp: node.planet.timestamp,
        });
        if node.online {
            node.events.push_back(Event::Online);
        }
        Ok(node)
    }

    /// The node's identity.
    #[must_use]
    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// The node's address.
    #[must_use]
    pub fn address(&self) -> Address {
        self.identity.address()
    }

    /// The current planet.
    #[must_use]
    pub fn planet(&self) -> &World {
        &self.planet
    }

    /// The moons held.
    #[must_use]
    pub fn moons(&self) -> &[World] {
        &self.moons
    }

    /// Every root of the planet and moons except this node, in order, without duplicates.
    #[must_use]
    pub fn upstreams(&self) -> Vec<Address> {
        self.upstreams.clone()
    }

    /// Whether this node is one of its planet's or moons' roots.
    #[must_use]
    pub fn is_root(&self) -> bool {
        std::iter::once(&self.planet)
            .chain(self.moons.iter())
            .any(|w| {
                w.roots
                    .iter()
                    .any(|r| r.identity.address() == self.address())
            })
    }

    /// Whether the node reaches a root (always true for a root).
    #[must_use]
    pub fn is_online(&self) -> bool {
        self.online
    }

    /// Counters.
    #[must_use]
    pub fn stats(&self) -> &NodeStats {
        &self.stats
    }

    /// Known peers.
    pub fn peers(&self) -> impl Iterator<Item = &Peer> {
        self.peers.values()
    }

    /// One peer.
    #[must_use]
    pub fn peer(&self, address: Address) -> Option<&Peer> {
        self.peers.get(&address)
    }

    /// External addresses of this node as roots and peers report them.
    #[must_use]
    pub fn surface_addresses(&self) -> Vec<SocketAddr> {
        let mut v: Vec<SocketAddr> = self.surface.values().copied().collect();
        v.sort();
        v.dedup();
        v
    }

    /// Tells the core which local UDP sockets exist and what they are bound to.
    pub fn set_local_sockets(&mut self, locals: Vec<(LocalSocket, SocketAddr)>) {
        self.locals = locals;
    }

    /// Tells the core the host's interface addresses; with the bound ports they are the direct
    /// endpoints advertised to peers in PUSH_DIRECT_PATHS.
    pub fn set_interface_addresses(&mut self, addrs: Vec<std::net::IpAddr>) {
        self.interfaces = addrs;
    }

    /// Endpoints where peers may reach this node directly: interface addresses with the bound
    /// port of their family, then external addresses reported by roots.
    #[must_use]
    pub(crate) fn direct_endpoints(&self) -> Vec<SocketAddr> {
        let mut eps: Vec<SocketAddr> = Vec::new();
        for ip in &self.interfaces {
            let port = self
                .locals
                .iter()
                .find(|(_, a)| a.is_ipv4() == ip.is_ipv4())
                .map(|(_, a)| a.port());
            if let Some(port) = port {
                let ep = SocketAddr::new(*ip, port);
                if usable_endpoint(&ep, self.options.allow_loopback) && !eps.contains(&ep) {
                    eps.push(ep);
                }
            }
        }
        for ep in self.surface_addresses() {
            if usable_endpoint(&ep, self.options.allow_loopback) && !eps.contains(&ep) {
                eps.push(ep);
            }
        }
        eps
    }

    fn socket_for(&self, to: &SocketAddr) -> Option<LocalSocket> {
        self.locals
            .iter()
            .find(|(_, a)| a.is_ipv4() == to.is_ipv4())
            .map(|(l, _)| *l)
    }

    fn refresh_upstreams(&mut self) {
        let mut ups = Vec::new();
        let mut idents = Vec::new();
        for w in std::iter::once(&self.planet).chain(self.moons.iter()) {
            for r in &w.roots {
                let a = r.identity.address();
                if a != self.address() && !ups.contains(&a) {
                    ups.push(a);
                    idents.push(r.identity.clone());
                }
            }
        }
        for id in idents {
            self.add_peer(id);
        }
        self.upstreams = ups;
    }

    fn is_upstream(&self, a: Address) -> bool {
        self.upstreams.contains(&a)
    }

    fn stable_endpoints(&self, a: Address) -> Vec<SocketAddr> {
        std::iter::once(&self.planet)
            .chain(self.moons.iter())
            .flat_map(|w| w.roots.iter())
            .filter(|r| r.identity.address() == a)
            .flat_map(|r| r.stable_endpoints.iter().filter_map(|e| e.0))
            .collect()
    }

    /// Adds a peer (computing its keys) unless known; true if added.
    fn add_peer(&mut self, identity: Identity) -> bool {
        let a = identity.address();
        if a == self.address() || self.peers.contains_key(&a) {
            return false;
        }
        let Ok(shared) = self.identity.agree(&identity) else {
            return false;
        };
        let keys = PeerKeys::new(&shared);
        self.peers.insert(a, Peer::new(identity.to_public(), keys));
        true
    }

    fn drop_input(&mut self, why: DropReason) {
        *self.stats.drops.entry(why).or_insert(0) += 1;
    }

    fn random_id(&mut self) -> [u8; 8] {
        let mut id = [0u8; 8];
        self.rng.fill(&mut id);
        id
    }

    /// Offers a newer revision of the planet or of a held moon (from the network or the user).
    /// Accepted worlds are stored and announced.
    ///
    /// # Errors
    /// Why the world was refused (counted in [`NodeStats::worlds_rejected`]).
    pub fn handle_world_update(&mut self, world: World) -> Result<(), WorldUpdateRejected> {
        let current = match world.world_type {
            WorldType::Planet => Some(&self.planet),
            WorldType::Moon => self.moons.iter().find(|m| m.id == world.id),
        };
        let verdict = match current {
            Some(cur) => cur.check_update(&world),
            None => Err(WorldUpdateRejected::DifferentWorld),
        };
        if let Err(e) = verdict {
            self.stats.worlds_rejected += 1;
            return Err(e);
        }
        let (id, timestamp, data) = (world.id, world.timestamp, world.to_bytes());
        match world.world_type {
            WorldType::Planet => {
                self.planet = world;
                self.store_ops.push_back(StoreOp::Put {
                    key: StoreKey::Planet,
                    data,
                });
                self.events
                    .push_back(Event::PlanetChanged { id, timestamp });
            }
            WorldType::Moon => {
                self.moons.retain(|m| m.id != id);
                self.moons.push(world);
                self.store_ops.push_back(StoreOp::Put {
                    key: StoreKey::Moon(id),
                    data,
                });
                self.events.push_back(Event::MoonChanged { id, timestamp });
            }
        }
        self.refresh_upstreams();
        Ok(())
    }

    /// When [`Node::handle_timeout`] should next be called.
    #[must_use]
    pub fn poll_timeout(&self) -> Timestamp {
        self.schedule
            .quick
            .min(self.schedule.ping)
            .min(self.schedule.housekeeping)
    }

    /// The next event, if any.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// The next store operation, if any.
    pub fn poll_store(&mut self) -> Option<StoreOp> {
        self.store_ops.pop_front()
    }

    /// The next datagram to send, if any.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The next identity to validate, if any: a HELLO from it passed its MAC check and waits.
    /// Run [`Identity::validate`] (memory-hard, ≈ 14 ms: on another thread if the node's
    /// thread must stay responsive) and report with [`Node::handle_identity_checked`]. At most
    /// [`budget::VALIDATIONS_PENDING`] wait at once; one not answered within 5 s is dropped.
    pub fn poll_identity_check(&mut self) -> Option<Identity> {
        self.identity_checks.pop_front()
    }
}
#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::c25519::KeyPair;
    use crate::crypto::test_rng::TestRng;
    use crate::world::Root;

    fn planet(id: u64, ts: u64, signer: &KeyPair, next: &KeyPair) -> World {
        let root = Root {
            identity: Identity::generate(&mut TestRng(id + ts)),
            stable_endpoints: vec!["203.0.113.9/9993".parse().unwrap()],
        };
        World::make(
            WorldType::Planet,
            id,
            ts,
            *next.public(),
            vec![root],
            signer,
        )
        .unwrap()
    }

    fn config(stored: Option<World>, default: World) -> NodeConfig {
        NodeConfig {
            stored_planet: stored,
            ..NodeConfig::new(Identity::generate(&mut TestRng(99)), default)
        }
    }

    fn new_node(c: NodeConfig, now: Timestamp) -> Result<Node, NodeError> {
        Node::new(c, Box::new(TestRng(1234)), now)
    }

    fn drain(node: &mut Node) -> (Vec<Event>, Vec<StoreOp>) {
        let ev = std::iter::from_fn(|| node.poll_event()).collect();
        let st = std::iter::from_fn(|| node.poll_store()).collect();
        (ev, st)
    }

    #[test]
    fn fresh_node_adopts_and_stores_default_planet() {
        let k = KeyPair::generate(&mut TestRng(1));
        let p = planet(7, 100, &k, &k);
        let mut node = new_node(config(None, p.clone()), Timestamp(0)).unwrap();
        let (ev, st) = drain(&mut node);
        assert_eq!(
            ev[0],
            Event::Up {
                address: node.address()
            }
        );
        assert_eq!(
            st,
            vec![StoreOp::Put {
                key: StoreKey::Planet,
                data: p.to_bytes()
            }]
        );
        assert_eq!(node.planet(), &p);
        assert_eq!(node.upstreams().len(), 1);
        assert!(
            node.peer(node.upstreams()[0]).is_some(),
            "roots are known peers from the start"
        );
        assert!(!node.is_root());
    }

    #[test]
    fn stored_planet_overrides_default_unless_default_is_signed_update() {
        let k = KeyPair::generate(&mut TestRng(2));
        let custom = planet(8, 100, &k, &k);
        let default = planet(7, 500, &k, &k);
        let mut node = new_node(config(Some(custom.clone()), default), Timestamp(0)).unwrap();
        assert_eq!(node.planet(), &custom);
        assert!(
            drain(&mut node).1.is_empty(),
            "an unchanged stored planet is not rewritten"
        );

        let newer = planet(8, 200, &k, &k);
        let mut node = new_node(config(Some(custom.clone()), newer.clone()), Timestamp(0)).unwrap();
        assert_eq!(node.planet(), &newer);
        assert_eq!(drain(&mut node).1.len(), 1);

        let stranger = KeyPair::generate(&mut TestRng(3));
        let forged = planet(8, 300, &stranger, &stranger);
        let node = new_node(config(Some(custom.clone()), forged), Timestamp(0)).unwrap();
        assert_eq!(node.planet(), &custom);
    }

    #[test]
    fn world_updates_follow_the_signing_chain() {
        let k1 = KeyPair::generate(&mut TestRng(4));
        let k2 = KeyPair::generate(&mut TestRng(5));
        let p1 = planet(9, 100, &k1, &k1);
        let mut node = new_node(config(None, p1), Timestamp(0)).unwrap();
        drain(&mut node);
        let p2 = planet(9, 200, &k1, &k2);
        node.handle_world_update(p2.clone()).unwrap();
        let (ev, st) = drain(&mut node);
        assert_eq!(
            ev,
            vec![Event::PlanetChanged {
                id: 9,
                timestamp: 200
            }]
        );
        assert_eq!(
            st,
            vec![StoreOp::Put {
                key: StoreKey::Planet,
                data: p2.to_bytes()
            }]
        );
        // k1 no longer signs updates.
        assert_eq!(
            node.handle_world_update(planet(9, 300, &k1, &k1)),
            Err(WorldUpdateRejected::BadSignature)
        );
        assert_eq!(
            node.handle_world_update(p2),
            Err(WorldUpdateRejected::NotNewer)
        );
        assert_eq!(node.stats().worlds_rejected, 2);
        node.handle_world_update(planet(9, 300, &k2, &k2)).unwrap();
    }

    #[test]
    fn timers_follow_the_injected_clock() {
        let k = KeyPair::generate(&mut TestRng(6));
        let mut node = new_node(config(None, planet(1, 1, &k, &k)), Timestamp(1_000)).unwrap();
        assert_eq!(node.poll_timeout(), Timestamp(1_000));
        node.handle_timeout(Timestamp(1_000));
        assert_eq!(node.poll_timeout(), Timestamp(1_500));
        assert!(
            node.poll_transmit().is_none(),
            "no local sockets yet, so nothing to send"
        );
        // Early wake-ups do nothing.
        node.handle_timeout(Timestamp(1_499));
        assert_eq!(node.stats().quick_tasks, 1);
        let mut now = Timestamp(1_000);
        while now < Timestamp(61_000) {
            now = node.poll_timeout();
            node.handle_timeout(now);
        }
        let s = node.stats();
        assert_eq!((s.quick_tasks, s.ping_checks, s.housekeeping), (121, 13, 2));
    }

    #[test]
    fn direct_endpoints_are_usable_interface_addresses_with_the_bound_port() {
        let k = KeyPair::generate(&mut TestRng(8));
        let mut node = new_node(config(None, planet(1, 1, &k, &k)), Timestamp(0)).unwrap();
        node.set_local_sockets(vec![
            (LocalSocket(0), "0.0.0.0:9993".parse().unwrap()),
            (LocalSocket(1), "[::]:9994".parse().unwrap()),
        ]);
        node.set_interface_addresses(
            [
                "127.0.0.1",
                "10.1.2.3",
                "fe80::1",
                "2001:db8::5",
                "169.254.1.1",
            ]
            .iter()
            .map(|a| a.parse().unwrap())
            .collect(),
        );
        let eps: Vec<String> = node
            .direct_endpoints()
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(eps, vec!["10.1.2.3:9993", "[2001:db8::5]:9994"]);
    }

    #[test]
    fn rejects_identity_without_secret() {
        let k = KeyPair::generate(&mut TestRng(7));
        let mut c = config(None, planet(1, 1, &k, &k));
        c.identity = c.identity.to_public();
        assert!(matches!(
            new_node(c, Timestamp(0)),
            Err(NodeError::NoSecret(_))
        ));
    }

    #[test]
    fn joins_stop_at_the_cap() {
        let k = KeyPair::generate(&mut TestRng(1));
        let p = planet(7, 100, &k, &k);
        let base = 0x0123_4567_8900_0000;
        // Stored networks beyond the cap are not rejoined.
        let mut c = config(None, p.clone());
        c.options.max_networks = 3;
        c.networks = (0..5)
            .map(|i| (NetworkId(base + i), b"\n".to_vec()))
            .collect();
        let mut node = new_node(c, Timestamp(0)).unwrap();
        assert_eq!(node.networks().len(), 3);
        let extra = NetworkId(base + 0xff);
        assert_eq!(
            node.join(Timestamp(1), extra),
            Err(JoinError::TooManyNetworks(3))
        );
        assert!(node.network(extra).is_none());
        assert_eq!(
            node.join(Timestamp(1), extra).unwrap_err().to_string(),
            "this node is a member of 3 networks, the most it may join (leave one first)"
        );
        // Joining one it is a member of is fine; leaving one makes room.
        assert_eq!(node.join(Timestamp(1), NetworkId(base)), Ok(()));
        assert!(node.leave(NetworkId(base)));
        assert_eq!(node.join(Timestamp(2), extra), Ok(()));
        assert!(node.network(extra).is_some());
        // The default: MAX_NETWORKS.
        let mut node = new_node(config(None, p), Timestamp(0)).unwrap();
        assert_eq!(MAX_NETWORKS, 1024);
        for i in 0..MAX_NETWORKS as u64 {
            node.join(Timestamp(1), NetworkId(base + i)).unwrap();
        }
        assert_eq!(
            node.join(Timestamp(1), NetworkId(base + 0x10000)),
            Err(JoinError::TooManyNetworks(MAX_NETWORKS))
        );
        assert_eq!(node.networks().len(), MAX_NETWORKS);
    }
}
