//! The node state machine: inputs in, outputs polled out (see the crate docs for the contract).

pub mod budget;
#[cfg(test)]
mod hello_tests;
mod incoming;
pub mod network;
pub mod peer;
#[cfg(test)]
mod source_tests;

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

pub use network::{
    ControllerRequest, Frame, FrameError, JoinError, LOCAL_REQUEST, NetworkInfo, NetworkStatus,
};
pub use peer::{CachedPeer, LocalSocket, Path, Peer, RemoteVersion, ip_scope, usable_endpoint};

/// Interval of the quick housekeeping pass (WHOIS retries, queued packets).
pub const QUICK_TASK_INTERVAL_MS: i64 = 500;
/// Interval of the ping check (keepalives, online test, network config refresh).
pub const PING_CHECK_INTERVAL_MS: i64 = 5_000;
/// Interval of the slow housekeeping pass (peer/path cleanup).
pub const HOUSEKEEPING_INTERVAL_MS: i64 = 30_000;

/// A persisted object, named as zerotier-one names its files.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StoreKey {
    /// `identity.public`
    IdentityPublic,
    /// `identity.secret` (written with owner-only permissions)
    IdentitySecret,
    /// `planet` (libzt calls it `roots`)
    Planet,
    /// `moons.d/<16 hex id>.moon`
    Moon(u64),
    /// `peers.d/<10 hex address>.peer`
    Peer(Address),
    /// `networks.d/<16 hex nwid>.conf`
    NetworkConfig(u64),
}

impl StoreKey {
    /// The relative path zerotier-one uses for this object.
    #[must_use]
    pub fn path(&self) -> String {
        match self {
            Self::IdentityPublic => "identity.public".into(),
            Self::IdentitySecret => "identity.secret".into(),
            Self::Planet => "planet".into(),
            Self::Moon(id) => format!("moons.d/{id:016x}.moon"),
            Self::Peer(a) => format!("peers.d/{a}.peer"),
            Self::NetworkConfig(id) => format!("networks.d/{id:016x}.conf"),
        }
    }

    /// Whether the object must be readable by its owner only.
    #[must_use]
    pub fn is_secret(&self) -> bool {
        matches!(self, Self::IdentitySecret)
    }
}

/// A write or delete for the runtime's store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreOp {
    /// Write `data` under `key` (atomically, replacing any old value).
    Put {
        /// What.
        key: StoreKey,
        /// The bytes.
        data: Vec<u8>,
    },
    /// Remove `key`.
    Delete {
        /// What.
        key: StoreKey,
    },
}

/// Something the application may want to know about.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// The node is up with this address.
    Up {
        /// The node's address.
        address: Address,
    },
    /// A planet was adopted (at start-up or as a signed update).
    PlanetChanged {
        /// World ID.
        id: u64,
        /// Revision timestamp.
        timestamp: u64,
    },
    /// A moon was added or updated.
    MoonChanged {
        /// World ID.
        id: u64,
        /// Revision timestamp.
        timestamp: u64,
    },
    /// An upstream (root) answered recently: the node is online.
    Online,
    /// No upstream answered within the activity timeout.
    Offline,
    /// A direct path to a peer was learned.
    PathAdded {
        /// The peer.
        address: Address,
        /// The endpoint.
        remote: SocketAddr,
    },
    /// A direct path to a peer expired.
    PathRemoved {
        /// The peer.
        address: Address,
        /// The endpoint.
        remote: SocketAddr,
    },
    /// A network's status changed (joined, configured, refused...).
    NetworkStatus {
        /// Network.
        network: NetworkId,
        /// New status.
        status: NetworkStatus,
    },
    /// A new config for a network took effect.
    NetworkConfigured {
        /// Network.
        network: NetworkId,
    },
    /// A managed address was assigned.
    NetworkAddressAdded {
        /// Network.
        network: NetworkId,
        /// The address with its prefix length.
        address: IpPrefix,
    },
    /// A managed address was withdrawn.
    NetworkAddressRemoved {
        /// Network.
        network: NetworkId,
        /// The address with its prefix length.
        address: IpPrefix,
    },
    /// A network was left.
    NetworkLeft {
        /// Network.
        network: NetworkId,
    },
    /// A member asks this node's controller for a config (answer with
    /// [`Node::controller_send_config`] or [`Node::controller_send_error`]).
    ControllerRequest(Box<ControllerRequest>),
    /// A USER_MESSAGE arrived.
    UserMessage {
        /// Sender.
        from: Address,
        /// Message type ID.
        type_id: u64,
        /// Payload.
        data: Vec<u8>,
    },
}

/// Why an input was dropped (each is counted in [`NodeStats::drops`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum DropReason {
    /// Too short to be a packet or fragment.
    Runt,
    /// A packet claiming to come from this node.
    FromSelf,
    /// A fragment header out of range or inconsistent with its set.
    BadFragment,
    /// A reassembled packet over the size limit.
    Oversize,
    /// A fragment set that never completed.
    FragmentTimeout,
    /// MAC or SIV tag did not verify.
    BadMac,
    /// A cipher suite this node does not accept.
    UnsupportedCipher,
    /// Compressed payload that does not decompress.
    BadCompression,
    /// A payload too short or malformed for its verb.
    Malformed,
    /// A HELLO with a protocol version below 4.
    OldProtocol,
    /// A HELLO whose identity does not match its source, or fails validation.
    BadIdentity,
    /// A HELLO from a different identity with a known address.
    IdentityCollision,
    /// A HELLO of an unknown identity over budget (its source network's, or the node's; see
    /// [`budget`]).
    RateLimited,
    /// A HELLO of an identity whose validation is under way (an earlier HELLO started it).
    AwaitingValidation,
    /// An OK that answers nothing this node sent.
    UnexpectedReply,
    /// OK(WHOIS), RENDEZVOUS or worlds from a peer that is not an upstream.
    NotFromUpstream,
    /// Relaying is not this node's job (not a root), or hop limit reached.
    RelayRefused,
    /// A packet to relay that came over no known peer's path, over its source network's
    /// relay budget (see [`budget`]).
    RelayBudget,
    /// A packet from an unknown address that would need a lookup (WHOIS) over the node's
    /// lookup budget (see [`budget`]).
    LookupBudget,
    /// Nowhere to relay to.
    RelayNoRoute,
    /// Waited too long for a WHOIS answer.
    QueueTimeout,
    /// A queue was full.
    QueueFull,
    /// A verb this node does not handle (yet).
    UnhandledVerb,
    /// An authenticated packet seen before (a replay, or a duplicate from the network).
    Replay,
    /// A network config (chunk) that is malformed, unsigned, not for us or not verifiable.
    BadConfig,
    /// A signature that does not verify.
    BadSignature,
    /// Traffic for a network this node has not joined.
    NotMember,
    /// A credential that does not parse or verify.
    BadCredential,
    /// Network traffic from a peer without valid credentials (held, credentials requested).
    NoCredentials,
    /// The network's rules dropped a frame.
    Filtered,
    /// A bridged frame from a peer that is not an active bridge (or to us, not a bridge).
    NotBridge,
    /// A multicast on a network with multicast off.
    MulticastDisabled,
    /// A bounded table (multicast subscriptions) is full.
    TableFull,
    /// A message about a peer whose identity is not known yet (it is looked up).
    UnknownPeer,
}

/// Counters of what the node did and dropped.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeStats {
    /// Quick housekeeping passes run.
    pub quick_tasks: u64,
    /// Ping checks run.
    pub ping_checks: u64,
    /// Slow housekeeping passes run.
    pub housekeeping: u64,
    /// World updates refused (bad signature, not newer, foreign ID).
    pub worlds_rejected: u64,
    /// Datagrams received.
    pub datagrams_in: u64,
    /// Datagrams sent.
    pub datagrams_out: u64,
    /// Packets accepted (authenticated) and processed.
    pub packets_in: u64,
    /// Datagrams relayed for others.
    pub relayed: u64,
    /// RENDEZVOUS messages sent.
    pub rendezvous_sent: u64,
    /// PUSH_DIRECT_PATHS messages sent.
    pub push_sent: u64,
    /// Endpoints contacted because a peer pushed them.
    pub push_contacts: u64,
    /// Inputs dropped, by reason.
    pub drops: BTreeMap<DropReason, u64>,
    /// Frames from the local stack not sent, by reason.
    pub frames_dropped: BTreeMap<FrameError, u64>,
}

impl NodeStats {
    /// All drops.
    #[must_use]
    pub fn total_drops(&self) -> u64 {
        self.drops.values().sum()
    }
}

/// A datagram to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transmit {
    /// Local socket to send from.
    pub local: LocalSocket,
    /// Destination.
    pub to: SocketAddr,
    /// Bytes.
    pub data: Vec<u8>,
    /// IP TTL to use for this datagram only (NAT-opening junk uses 2).
    pub ttl: Option<u32>,
}

/// Error constructing a node.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NodeError {
    /// The node's own identity must include its secret key.
    #[error("the node identity {0} has no secret key")]
    NoSecret(Address),
    /// The node's identity failed validation.
    #[error(transparent)]
    Identity(#[from] crate::identity::IdentityError),
    /// A stored planet or moon is not usable.
    #[error("stored {0:?} world is not usable: {1}")]
    World(WorldType, String),
}

/// Error sending a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// The message does not fit in a packet.
    #[error("message too large ({0} bytes)")]
    TooLarge(usize),
    /// Sending to oneself.
    #[error("cannot send to this node's own address")]
    ToSelf,
    /// The queue for peers being looked up is full.
    #[error("too many messages are waiting for unknown peers")]
    QueueFull,
    /// A config for a network this node does not control.
    #[error("this node is not the controller of that network")]
    NotController,
}

/// Protocol settings (defaults match stock ZeroTier SDK builds).
#[derive(Clone, Debug)]
pub struct CoreOptions {
    /// Use loopback paths (stock nodes never do; handy for single-host setups of `zt` nodes).
    pub allow_loopback: bool,
    /// Physical MTU (UDP payload per datagram).
    pub physical_mtu: usize,
    /// A root silent this long makes the node offline; peers this quiet are not kept alive.
    pub activity_timeout_ms: i64,
    /// Software version reported in HELLO (major, minor, revision).
    pub software_version: (u8, u8, u16),
    /// Networks the node may be a member of at once ([`MAX_NETWORKS`] by default); a join
    /// beyond is refused with [`JoinError::TooManyNetworks`], and networks stored beyond it
    /// are not rejoined at start-up.
    pub max_networks: usize,
}

/// Networks a node may be a member of at once unless [`CoreOptions::max_networks`] says
/// otherwise. zerotier-one has no such cap; each network costs a config, a TCP/IP stack, timers
/// and requests to its controller, and every listing walks them all.
pub const MAX_NETWORKS: usize = 1024;

impl Default for CoreOptions {
    fn default() -> Self {
        Self {
            allow_loopback: false,
            physical_mtu: packet::DEFAULT_PHYSICAL_MTU,
            activity_timeout_ms: ACTIVITY_TIMEOUT_MS,
            software_version: (1, 14, 1),
            max_networks: MAX_NETWORKS,
        }
    }
}

/// What the runtime loaded from the store before creating the node.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// The node's identity, with its secret key.
    pub identity: Identity,
    /// The stored planet, if any; it wins over `default_planet` unless that is a signed update.
    pub stored_planet: Option<World>,
    /// The built-in (or user-chosen) planet.
    pub default_planet: World,
    /// Stored moons.
    pub moons: Vec<World>,
    /// Cached peers (their HELLOs go out at start-up).
    pub peers: Vec<CachedPeer>,
    /// Networks joined in an earlier run, with their stored config (`\\n` = none yet).
    pub networks: Vec<(NetworkId, Vec<u8>)>,
    /// Protocol settings.
    pub options: CoreOptions,
}

/// A root silent this long makes the node offline (stock SDK builds use 30 s).
pub const ACTIVITY_TIMEOUT_MS: i64 = 30_000;
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
    nets: network::Networks,
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
            nets: network::Networks::default(),
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
    pub fn direct_endpoints(&self) -> Vec<SocketAddr> {
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

    // ---- sending ------------------------------------------------------------------------

    /// Emits an armored packet on one path, fragmenting it as needed.
    fn emit(&mut self, local: LocalSocket, to: SocketAddr, data: Vec<u8>, now: Timestamp) {
        let mtu = self.options.physical_mtu;
        for d in packet::fragment(&data, mtu) {
            self.stats.datagrams_out += 1;
            self.transmits.push_back(Transmit {
                local,
                to,
                data: d,
                ttl: None,
            });
        }
        let dest = packet::destination(&data);
        if let Some(p) = self.peers.get_mut(&dest)
            && let Some(path) = p
                .paths
                .iter_mut()
                .find(|x| x.local == local && x.remote == to)
        {
            path.last_send = now;
        }
    }

    /// Builds and armors a packet for `dest` (which must be a known peer).
    fn seal(
        &mut self,
        now: Timestamp,
        dest: Address,
        verb: Verb,
        payload: &[u8],
        cipher: Option<Cipher>,
    ) -> Option<Vec<u8>> {
        let id = self.random_id();
        let me = self.address();
        let mtu = self.options.physical_mtu;
        let peer = self.peers.get(&dest)?;
        let mut p = packet::new_packet(id, dest, me, verb);
        p.extend_from_slice(payload);
        let cipher = cipher.unwrap_or(if peer.supports_aes() {
            Cipher::AesGmacSiv
        } else {
            Cipher::Poly1305Salsa2012
        });
        if cipher != Cipher::Poly1305None
            && (matches!(
                verb,
                Verb::PushDirectPaths | Verb::UserMessage | Verb::Whois
            ) || (payload.len() > 64
                && matches!(
                    verb,
                    Verb::Ok
                        | Verb::NetworkConfig
                        | Verb::NetworkConfigRequest
                        | Verb::NetworkCredentials
                        | Verb::MulticastLike
                        | Verb::MulticastFrame
                )))
        {
            packet::compress(&mut p);
        }
        if p.len() > packet::max_packet_len(mtu) {
            // More pieces than receivers accept (at most 7): it could never arrive.
            return None;
        }
        let fragmented = packet::needs_fragmenting(p.len(), mtu);
        packet::set_fragmented(&mut p, fragmented);
        packet::armor(&mut p, &peer.keys, cipher);
        if matches!(
            verb,
            Verb::Hello
                | Verb::Whois
                | Verb::Echo
                | Verb::NetworkConfigRequest
                | Verb::MulticastGather
                | Verb::MulticastFrame
        ) {
            self.expect_reply(now, packet::packet_id(&p));
        }
        Some(p)
    }

    /// Remembers the wire ID of a request sent, so that an OK answering it is accepted (the
    /// oldest are forgotten first beyond [`EXPECT_REPLY_MAX`]).
    fn expect_reply(&mut self, now: Timestamp, wire_id: u64) {
        while self.expecting_order.len() >= EXPECT_REPLY_MAX {
            if let Some(old) = self.expecting_order.pop_front() {
                self.expecting.remove(&old);
            }
        }
        if self.expecting.insert(wire_id, now).is_none() {
            self.expecting_order.push_back(wire_id);
        }
    }

    /// Sends to a peer by the best route: its direct path, else relayed through the best
    /// upstream, else queued while its identity is looked up.
    fn send(&mut self, now: Timestamp, dest: Address, verb: Verb, payload: Vec<u8>) -> bool {
        if dest == self.address() {
            return false;
        }
        let Some(peer) = self.peers.get(&dest) else {
            self.enqueue(now, dest, verb, payload);
            self.request_whois(now, dest);
            return false;
        };
        if matches!(verb, Verb::Ok | Verb::Error)
            && let Some((src, path)) = self.inbound
            && src == dest
            && let Some((local, to)) = path.or_else(|| self.relay_route(now, dest))
        {
            let Some(p) = self.seal(now, dest, verb, &payload, None) else {
                return false;
            };
            self.emit(local, to, p, now);
            return true;
        }
        let route = peer
            .best_current_path(now)
            .map(|p| (p.local, p.remote))
            .or_else(|| self.relay_route(now, dest))
            .or_else(|| peer.best_alive_path(now).map(|p| (p.local, p.remote)))
            .or_else(|| peer.best_path(now).map(|p| (p.local, p.remote)));
        let Some((local, to)) = route else {
            self.enqueue(now, dest, verb, payload);
            return false;
        };
        let Some(p) = self.seal(now, dest, verb, &payload, None) else {
            return false;
        };
        self.emit(local, to, p, now);
        true
    }

    /// The physical path to the best upstream (other than `not`), for relaying.
    fn relay_route(&self, now: Timestamp, not: Address) -> Option<(LocalSocket, SocketAddr)> {
        self.best_upstream(now, Some(not))
            .and_then(|u| self.peers.get(&u))
            .and_then(|p| p.best_path(now))
            .map(|p| (p.local, p.remote))
    }

    fn best_upstream(&self, now: Timestamp, not: Option<Address>) -> Option<Address> {
        self.upstreams
            .iter()
            .filter(|a| Some(**a) != not)
            .filter_map(|a| self.peers.get(a).map(|p| (a, p)))
            .filter(|(_, p)| p.best_path(now).is_some())
            .min_by_key(|(_, p)| {
                let lat = u64::from(p.best_path(now).and_then(|x| x.latency).unwrap_or(0xffff));
                let age = now.since(p.last_receive).max(0) as u64;
                if now.since(p.last_receive) >= self.options.activity_timeout_ms {
                    u64::MAX
                } else {
                    lat * (1 + age / 61_000)
                }
            })
            .map(|(a, _)| *a)
    }

    fn enqueue(&mut self, now: Timestamp, dest: Address, verb: Verb, payload: Vec<u8>) {
        if self.tx_queue.len() >= QUEUE_SIZE {
            self.tx_queue.pop_front();
            self.drop_input(DropReason::QueueFull);
        }
        self.tx_queue.push_back(Queued {
            dest,
            verb,
            payload,
            created: now,
        });
    }

    /// Sends a HELLO (authenticated, not encrypted) to `dest` at a specific endpoint.
    fn send_hello(&mut self, now: Timestamp, dest: Address, local: LocalSocket, to: SocketAddr) {
        let Some(peer) = self.peers.get(&dest) else {
            return;
        };
        let keys = peer.keys.clone();
        let (major, minor, rev) = self.options.software_version;
        let mut body = vec![packet::PROTOCOL_VERSION, major, minor];
        body.extend_from_slice(&rev.to_be_bytes());
        body.extend_from_slice(&(now.as_millis() as u64).to_be_bytes());
        self.identity.write(&mut body, false);
        InetAddress(Some(to)).write(&mut body);
        body.extend_from_slice(&self.planet.id.to_be_bytes());
        body.extend_from_slice(&self.planet.timestamp.to_be_bytes());
        let id = self.random_id();
        let mut p = packet::new_packet(id, dest, self.address(), Verb::Hello);
        p.extend_from_slice(&body);
        // The tail (moon list) is encrypted with the HELLO field cipher.
        let mut tail = (self.moons.len() as u16).to_be_bytes().to_vec();
        for m in &self.moons {
            tail.push(WorldType::Moon as u8);
            tail.extend_from_slice(&m.id.to_be_bytes());
            tail.extend_from_slice(&m.timestamp.to_be_bytes());
        }
        packet::crypt_hello_field(&keys, &id, &mut tail);
        p.extend_from_slice(&tail);
        packet::armor(&mut p, &keys, Cipher::Poly1305None);
        self.expect_reply(now, packet::packet_id(&p));
        if let Some(peer) = self.peers.get_mut(&dest) {
            peer.last_hello = now;
        }
        self.emit(local, to, p, now);
    }

    /// Sends a packet to a peer at a specific endpoint (replies, path probes).
    fn send_via(
        &mut self,
        now: Timestamp,
        dest: Address,
        verb: Verb,
        payload: &[u8],
        local: LocalSocket,
        to: SocketAddr,
    ) {
        if let Some(p) = self.seal(now, dest, verb, payload, None) {
            self.emit(local, to, p, now);
        }
    }

    /// Probes a possible direct path: ECHO if the peer's version allows, else HELLO.
    fn contact(&mut self, now: Timestamp, dest: Address, to: SocketAddr) {
        let Some(local) = self.socket_for(&to) else {
            return;
        };
        let echo_ok = self
            .peers
            .get(&dest)
            .and_then(|p| p.version)
            .is_some_and(|v| v.protocol >= 5);
        if echo_ok {
            self.send_via(now, dest, Verb::Echo, &[], local, to);
        } else {
            self.send_hello(now, dest, local, to);
        }
    }

    fn request_whois(&mut self, now: Timestamp, addr: Address) {
        if self
            .whois_sent
            .get(&addr)
            .is_some_and(|t| now.since(*t) < WHOIS_RETRY_MS)
        {
            return;
        }
        let Some(up) = self.best_upstream(now, Some(addr)) else {
            return;
        };
        self.whois_sent.insert(addr, now);
        self.send(now, up, Verb::Whois, addr.to_bytes().to_vec());
    }

    /// Sends a USER_MESSAGE (type IDs up to 65535 are reserved by ZeroTier).
    ///
    /// # Errors
    /// Too large, to self, or the lookup queue is full.
    pub fn send_user_message(
        &mut self,
        now: Timestamp,
        dest: Address,
        type_id: u64,
        data: &[u8],
    ) -> Result<(), SendError> {
        if dest == self.address() {
            return Err(SendError::ToSelf);
        }
        let max = packet::max_packet_len(self.options.physical_mtu)
            .saturating_sub(packet::IDX_PAYLOAD + 8);
        if data.len() > max {
            return Err(SendError::TooLarge(data.len()));
        }
        if !self.peers.contains_key(&dest) && self.tx_queue.len() >= QUEUE_SIZE {
            return Err(SendError::QueueFull);
        }
        let mut payload = type_id.to_be_bytes().to_vec();
        payload.extend_from_slice(data);
        if let Some(p) = self.peers.get_mut(&dest) {
            p.last_trust = now;
        }
        self.send(now, dest, Verb::UserMessage, payload);
        Ok(())
    }

    /// Sends an arbitrary verb and payload to a peer: for tests that need malformed or forged
    /// protocol messages from an authenticated peer.
    #[doc(hidden)]
    pub fn send_raw_for_tests(
        &mut self,
        now: Timestamp,
        dest: Address,
        verb: Verb,
        payload: Vec<u8>,
    ) {
        self.send(now, dest, verb, payload);
    }

    /// Sends an ECHO to a peer (a reachability probe; the OK updates its path).
    pub fn ping(&mut self, now: Timestamp, dest: Address) {
        self.send(now, dest, Verb::Echo, Vec::new());
    }

    // ---- timers ---------------------------------------------------------------------------

    /// Runs every periodic task that is due at `now`.
    pub fn handle_timeout(&mut self, now: Timestamp) {
        if now >= self.schedule.quick {
            self.stats.quick_tasks += 1;
            self.schedule.quick = now + QUICK_TASK_INTERVAL_MS;
            self.quick_tasks(now);
            self.network_quick_tasks(now);
        }
        if now >= self.schedule.ping {
            self.stats.ping_checks += 1;
            self.schedule.ping = now + PING_CHECK_INTERVAL_MS;
            self.ping_check(now);
            self.network_ping_check(now);
        }
        if now >= self.schedule.housekeeping {
            self.stats.housekeeping += 1;
            self.schedule.housekeeping = now + HOUSEKEEPING_INTERVAL_MS;
            self.housekeeping(now);
            self.network_housekeeping(now);
        }
    }

    fn quick_tasks(&mut self, now: Timestamp) {
        let before = self.tx_queue.len() + self.rx_queue.len();
        self.tx_queue
            .retain(|q| now.since(q.created) < QUEUE_TIMEOUT_MS);
        self.rx_queue.retain(|q| now.since(q.0) < QUEUE_TIMEOUT_MS);
        let expired = before - self.tx_queue.len() - self.rx_queue.len();
        for _ in 0..expired {
            self.drop_input(DropReason::QueueTimeout);
        }
        let mut unknown: Vec<Address> = self
            .tx_queue
            .iter()
            .map(|q| q.dest)
            .chain(self.rx_queue.iter().map(|q| packet::source(&q.3)))
            .filter(|a| !self.peers.contains_key(a))
            .collect();
        unknown.dedup();
        for a in unknown {
            self.request_whois(now, a);
        }
        self.flush_tx_queue(now);
        self.retry_unreachable_roots(now);
        let stale: Vec<u64> = self
            .fragments
            .iter()
            .filter(|(_, f)| now.since(f.created) >= QUEUE_TIMEOUT_MS)
            .map(|(k, _)| *k)
            .collect();
        for k in stale {
            self.remove_fragment_set(k);
            self.drop_input(DropReason::FragmentTimeout);
        }
        self.whois_sent
            .retain(|_, t| now.since(*t) < QUEUE_TIMEOUT_MS);
        self.echo_gate.retain(|_, t| now.since(*t) < 1_000);
        self.budgets.forget_refilled(now);
        // A driver that never answers a check must not pin its HELLO forever.
        let expired: Vec<Address> = self
            .validating
            .iter()
            .filter(|(_, v)| now.since(v.since) >= QUEUE_TIMEOUT_MS)
            .map(|(a, _)| *a)
            .collect();
        for a in expired {
            self.validating.remove(&a);
            self.drop_input(DropReason::QueueTimeout);
        }
    }

    /// HELLOs the stable endpoints of roots with no live path, at most every second.
    fn retry_unreachable_roots(&mut self, now: Timestamp) {
        for up in self.upstreams.clone() {
            let Some(peer) = self.peers.get(&up) else {
                continue;
            };
            if peer.best_alive_path(now).is_some()
                || now.since(peer.last_hello) < ROOT_HELLO_RETRY_MS
            {
                continue;
            }
            for ep in self.stable_endpoints(up) {
                if let Some(local) = self.socket_for(&ep) {
                    self.send_hello(now, up, local, ep);
                }
            }
        }
    }

    fn flush_tx_queue(&mut self, now: Timestamp) {
        let queued: Vec<Queued> = self.tx_queue.drain(..).collect();
        let (ready, wait): (Vec<Queued>, Vec<Queued>) = queued.into_iter().partition(|q| {
            self.peers.get(&q.dest).is_some_and(|p| {
                p.best_path(now).is_some() || self.relay_route(now, q.dest).is_some()
            })
        });
        self.tx_queue = wait.into();
        for q in ready {
            self.send(now, q.dest, q.verb, q.payload);
        }
    }

    fn ping_check(&mut self, now: Timestamp) {
        for (addr, ep) in std::mem::take(&mut self.pending_hellos) {
            if let Some(local) = self.socket_for(&ep) {
                self.send_hello(now, addr, local, ep);
            }
        }
        for up in self.upstreams.clone() {
            let Some(peer) = self.peers.get(&up) else {
                continue;
            };
            let alive: Vec<(LocalSocket, SocketAddr, Timestamp)> = peer
                .paths
                .iter()
                .filter(|p| p.is_alive(now))
                .map(|p| (p.local, p.remote, p.last_send))
                .collect();
            let hello_due = now.since(peer.last_hello) >= FULL_HELLO_INTERVAL_MS;
            if alive.is_empty() {
                for ep in self.stable_endpoints(up) {
                    if let Some(local) = self.socket_for(&ep) {
                        self.send_hello(now, up, local, ep);
                    }
                }
            } else {
                for (local, remote, last_send) in alive {
                    if hello_due {
                        self.send_hello(now, up, local, remote);
                    } else if now.since(last_send) >= peer::PATH_HEARTBEAT_MS {
                        self.send_via(now, up, Verb::Echo, &[], local, remote);
                    }
                }
            }
        }
        // Keep direct paths to peers in use alive.
        let in_use: Vec<Address> = self
            .peers
            .iter()
            .filter(|(a, p)| {
                !self.upstreams.contains(a)
                    && now.since(p.last_trust) < self.options.activity_timeout_ms.max(TRUST_MS / 4)
            })
            .map(|(a, _)| *a)
            .collect();
        for a in in_use {
            let Some(peer) = self.peers.get(&a) else {
                continue;
            };
            let hello_due = now.since(peer.last_hello) >= FULL_HELLO_INTERVAL_MS;
            let paths: Vec<_> = peer
                .paths
                .iter()
                .filter(|p| !p.is_expired(now))
                .map(|p| (p.local, p.remote, p.last_send))
                .collect();
            for (local, remote, last_send) in paths {
                if hello_due {
                    self.send_hello(now, a, local, remote);
                } else if now.since(last_send) >= peer::PATH_HEARTBEAT_MS {
                    self.send_via(now, a, Verb::Echo, &[], local, remote);
                }
            }
        }
        self.update_online(now);
    }

    fn update_online(&mut self, now: Timestamp) {
        let online = self.is_root() || now.since(self.last_up) < self.options.activity_timeout_ms;
        if online != self.online {
            self.online = online;
            self.events.push_back(if online {
                Event::Online
            } else {
                Event::Offline
            });
        }
    }

    fn housekeeping(&mut self, now: Timestamp) {
        let mut removed = Vec::new();
        for (a, p) in &mut self.peers {
            p.paths.retain(|path| {
                let keep = !path.is_expired(now);
                if !keep {
                    removed.push((*a, path.remote));
                }
                keep
            });
            p.confirm_sent.retain(|(_, t)| now.since(*t) < 10_000);
        }
        for (address, remote) in removed {
            self.events
                .push_back(Event::PathRemoved { address, remote });
        }
        let evict: Vec<Address> = self
            .peers
            .iter()
            .filter(|(a, p)| {
                !self.upstreams.contains(a)
                    && now.since(p.last_receive) >= PEER_EVICT_MS
                    && now.since(p.last_trust) >= PEER_EVICT_MS
            })
            .map(|(a, _)| *a)
            .collect();
        for a in evict {
            if let Some(p) = self.peers.remove(&a) {
                self.store_ops.push_back(StoreOp::Put {
                    key: StoreKey::Peer(a),
                    data: p.to_cache(),
                });
            }
        }
        self.united
            .retain(|_, t| now.since(*t) < UNITE_INTERVAL_MS * 8);
        self.expecting
            .retain(|_, t| now.since(*t) < EXPECT_REPLY_MS);
    }

    /// Writes every peer with a path to the peer cache (call before stopping).
    pub fn persist_peers(&mut self) {
        let ops: Vec<StoreOp> = self
            .peers
            .iter()
            .filter(|(_, p)| !p.paths.is_empty())
            .map(|(a, p)| StoreOp::Put {
                key: StoreKey::Peer(*a),
                data: p.to_cache(),
            })
            .collect();
        self.store_ops.extend(ops);
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
            identity: Identity::generate(&mut TestRng(99)),
            stored_planet: stored,
            default_planet: default,
            moons: vec![],
            peers: vec![],
            networks: vec![],
            options: CoreOptions::default(),
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
