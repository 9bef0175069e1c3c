//! The core's vocabulary: what it stores, emits, counts and refuses, and how it is configured.

use super::*;

/// Interval of the quick housekeeping pass (WHOIS retries, queued packets).
pub(crate) const QUICK_TASK_INTERVAL_MS: i64 = 500;
/// Interval of the ping check (keepalives, online test, network config refresh).
pub(crate) const PING_CHECK_INTERVAL_MS: i64 = 5_000;
/// Interval of the slow housekeeping pass (peer/path cleanup).
pub(crate) const HOUSEKEEPING_INTERVAL_MS: i64 = 30_000;

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
    /// `budget`).
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
    /// relay budget (see `budget`).
    RelayBudget,
    /// A packet from an unknown address that would need a lookup (WHOIS) over the node's
    /// lookup budget (see `budget`).
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
    /// Networks the node may be a member of at once (`MAX_NETWORKS` by default); a join
    /// beyond is refused with [`JoinError::TooManyNetworks`], and networks stored beyond it
    /// are not rejoined at start-up.
    pub max_networks: usize,
}

/// Networks a node may be a member of at once unless [`CoreOptions::max_networks`] says
/// otherwise. zerotier-one has no such cap; each network costs a config, a TCP/IP stack, timers
/// and requests to its controller, and every listing walks them all.
pub(crate) const MAX_NETWORKS: usize = 1024;

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

impl NodeConfig {
    /// A node that starts fresh: `identity` on `default_planet`, nothing stored, default options.
    #[must_use]
    pub fn new(identity: Identity, default_planet: World) -> Self {
        Self {
            identity,
            stored_planet: None,
            default_planet,
            moons: vec![],
            peers: vec![],
            networks: vec![],
            options: CoreOptions::default(),
        }
    }
}
