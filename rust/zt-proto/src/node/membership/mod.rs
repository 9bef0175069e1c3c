//! Network membership: joining, configs from controllers, credentials, virtual Ethernet and
//! multicast, as a member node does them.
//!
//! This file holds the state (`Networks`, `Network`, `Membership`) and the public API (join,
//! leave, status); the rest of `impl Node` for networks is split by concern:
//! `config_requests.rs` (asking controllers, applying configs), `controller.rs` (the controller's
//! side of a request), `credentials.rs` (gating on, pushing and accepting credentials),
//! `frames_in.rs` (frames from peers through the inbound filter), `multicast.rs` (likes,
//! gathers, sending to groups) and `frames_out.rs` (the stack's frames to peers).

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use super::{DropReason, Event, Node, StoreKey, StoreOp};
use crate::address::Address;
use crate::cursor::Reader;
use crate::dictionary::Dictionary;
use crate::identity::Identity;
use crate::network::config::{
    self, ChunkOutcome, ConfigAssembler, ConfigChunk, IpPrefix, NetworkConfig, NetworkType,
};
use crate::network::credentials::{
    Capability, Com, Coo, CredentialType, Credentials, Revocation, Tag,
};
use crate::network::filter::{self, FilterContext, FrameInfo};
use crate::network::{AdHoc, Mac, MulticastGroup, NetworkId};
use crate::packet::Verb;
use crate::time::Timestamp;

// The ethertypes have one home, the rules engine (whose rules match on them).
pub(crate) use crate::network::filter::{ETHERTYPE_ARP, ETHERTYPE_IPV6};

/// Config refresh interval once configured.
const AUTOCONF_DELAY_MS: i64 = 60_000;
/// LIKE announcement period.
const ANNOUNCE_PERIOD_MS: i64 = 60_000;
/// Subscriptions not refreshed for this long are forgotten.
const LIKE_EXPIRE_MS: i64 = 600_000;
/// Minimum gap between explicit gathers for one group.
const EXPLICIT_GATHER_DELAY_MS: i64 = 60_000;
/// Lifetime of a multicast waiting for more recipients.
const MULTICAST_TRANSMIT_TIMEOUT_MS: i64 = 5_000;
/// Re-push credentials to a peer after this long.
const CREDENTIAL_REPUSH_MS: i64 = 30_000;
/// Minimum gap between pushes asked for by NEED_MEMBERSHIP_CERTIFICATE.
const CREDENTIAL_REQUEST_RATE_MS: i64 = 1_000;
/// Frames held while waiting for a peer's credentials.
const HELD_TIMEOUT_MS: i64 = 5_000;
const HELD_MAX: usize = 64;
/// How long a controller answers LIKE/GATHER from a member it configured.
const CONTROLLER_AUTH_WINDOW_MS: i64 = 180_000;
/// Largest multicast payload.
const MAX_MULTICAST_PAYLOAD: usize = 10_000;
/// Pending multicasts per group.
const TX_QUEUE_PER_GROUP: usize = 32;
/// Most (network, group, member) subscriptions remembered (a root's table included).
const MAX_MULTICAST_ENTRIES: usize = 1_000_000;

/// ERROR code: object not found.
pub const ERROR_OBJ_NOT_FOUND: u8 = 0x03;
/// ERROR code: unsupported operation.
pub(crate) const ERROR_UNSUPPORTED_OPERATION: u8 = 0x05;
/// ERROR code: the sender must present credentials.
pub(crate) const ERROR_NEED_MEMBERSHIP_CERTIFICATE: u8 = 0x06;
/// ERROR code: network access denied.
pub const ERROR_NETWORK_ACCESS_DENIED: u8 = 0x07;
/// ERROR code: unwanted multicast.
pub(crate) const ERROR_UNWANTED_MULTICAST: u8 = 0x08;
/// ERROR code: authentication (SSO) required.
pub(crate) const ERROR_AUTHENTICATION_REQUIRED: u8 = 0x09;

/// The flags byte of EXT_FRAME and MULTICAST_FRAME (also MULTICAST_GATHER's). Bit
/// [`FrameFlags::COM`] means the same in every verb; the others depend on the verb.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct FrameFlags(pub(super) u8);

impl FrameFlags {
    /// Every verb: a certificate of membership follows the flags.
    pub(super) const COM: u8 = 0x01;
    /// EXT_FRAME: the sender asks for OK(EXT_FRAME).
    pub(super) const EXT_ACK: u8 = 0x10;
    /// MULTICAST_FRAME: a 4-byte gather limit follows (answered with known members); in
    /// OK(MULTICAST_FRAME): gather results follow.
    pub(super) const MULTICAST_GATHER: u8 = 0x02;
    /// MULTICAST_FRAME: a 6-byte source MAC follows (a bridged frame).
    pub(super) const MULTICAST_SOURCE_MAC: u8 = 0x04;

    /// Whether `bit` (one of the constants) is set.
    pub(super) fn has(self, bit: u8) -> bool {
        self.0 & bit != 0
    }
}

/// Where a network stands, with ZeroTier's status numbers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum NetworkStatus {
    /// Waiting for a config.
    RequestingConfiguration = 0,
    /// Configured.
    Ok = 1,
    /// The controller refused this node.
    AccessDenied = 2,
    /// The controller does not have this network (or is no controller).
    NotFound = 3,
    /// The local port could not be configured.
    PortError = 4,
    /// Never produced by 1.x controllers.
    ClientTooOld = 5,
    /// The controller wants SSO authentication.
    AuthenticationRequired = 6,
}

/// An Ethernet frame on a virtual network.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    /// Network.
    pub network: NetworkId,
    /// Destination MAC.
    pub dst: Mac,
    /// Source MAC.
    pub src: Mac,
    /// Ethertype.
    pub ethertype: u16,
    /// Payload (no Ethernet header, no FCS).
    pub payload: Vec<u8>,
}

impl Frame {
    /// Parses an Ethernet II frame (14-byte header).
    #[must_use]
    pub fn from_ethernet(network: NetworkId, b: &[u8]) -> Option<Self> {
        if b.len() < 14 {
            return None;
        }
        let mut d = [0u8; 6];
        let mut s = [0u8; 6];
        d.copy_from_slice(&b[..6]);
        s.copy_from_slice(&b[6..12]);
        Some(Self {
            network,
            dst: Mac::from_bytes(&d),
            src: Mac::from_bytes(&s),
            ethertype: u16::from_be_bytes([b[12], b[13]]),
            payload: b[14..].to_vec(),
        })
    }

    /// Appends the Ethernet II bytes to `out` (a reused buffer: no allocation once it is large
    /// enough).
    pub fn write_ethernet(&self, out: &mut Vec<u8>) {
        out.reserve(14 + self.payload.len());
        out.extend_from_slice(&self.dst.to_bytes());
        out.extend_from_slice(&self.src.to_bytes());
        out.extend_from_slice(&self.ethertype.to_be_bytes());
        out.extend_from_slice(&self.payload);
    }
}

/// A config request for a network this node controls, for the application's controller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ControllerRequest {
    /// Network asked for.
    pub network: NetworkId,
    /// Who asks (full identity, as the controller stores and checks it).
    pub requester: Identity,
    /// The request metadata dictionary.
    pub metadata: Dictionary,
    /// Wire ID of the request packet (answers echo it); [`LOCAL_REQUEST`] for this node's own.
    pub request_id: u64,
    /// Physical address if the request came directly.
    pub from: Option<SocketAddr>,
}

/// Request ID of a node asking its own controller.
pub const LOCAL_REQUEST: u64 = u64::MAX;

/// A public view of a joined network.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetworkInfo {
    /// ID.
    pub id: NetworkId,
    /// Our MAC on it.
    pub mac: Mac,
    /// Status.
    pub status: NetworkStatus,
    /// The config in use, if any.
    pub config: Option<NetworkConfig>,
    /// Multicast groups we announce.
    pub subscriptions: Vec<MulticastGroup>,
}

/// Per-peer credentials and bookkeeping on one network.
#[derive(Clone, Debug, Default)]
pub(super) struct Membership {
    com: Option<Com>,
    com_revoked_before: i64,
    tags: BTreeMap<u32, Tag>,
    caps: BTreeMap<u32, Capability>,
    coos: BTreeMap<u32, Coo>,
    revoked: BTreeMap<(CredentialType, u32), i64>,
    revocation_ids: BTreeSet<u32>,
    last_push: Option<Timestamp>,
    pushed_config_ts: i64,
    last_like: Option<Timestamp>,
}

/// What capabilities, tags and COOs have in common for a membership table.
trait Keyed: Clone {
    /// Credential type number (revocations name it).
    const KIND: CredentialType;
    fn key(&self) -> u32;
    fn stamp(&self) -> i64;
    fn network(&self) -> NetworkId;
    fn holder(&self) -> Option<Address>;
    fn check(&self, controller: &Identity) -> bool;
    fn table(m: &mut Membership) -> &mut BTreeMap<u32, Self>;
}

/// `Keyed` for a credential type: its type number, the membership table holding it, and how
/// its holder is found.
macro_rules! keyed {
    ($t:ty, $kind:expr, $table:ident, |$c:ident| $holder:expr) => {
        impl Keyed for $t {
            const KIND: CredentialType = $kind;
            fn key(&self) -> u32 {
                self.id
            }
            fn stamp(&self) -> i64 {
                self.timestamp
            }
            fn network(&self) -> NetworkId {
                self.network_id
            }
            fn holder(&self) -> Option<Address> {
                let $c = self;
                $holder
            }
            fn check(&self, controller: &Identity) -> bool {
                self.verify(controller).is_ok()
            }
            fn table(m: &mut Membership) -> &mut BTreeMap<u32, Self> {
                &mut m.$table
            }
        }
    };
}

keyed!(Capability, CredentialType::Capability, caps, |c| c
    .issued_to());
keyed!(Tag, CredentialType::Tag, tags, |c| Some(c.issued_to));
keyed!(Coo, CredentialType::Coo, coos, |c| Some(c.issued_to));

#[derive(Clone, Debug)]
struct Held {
    at: Timestamp,
    src: Address,
    verb: Verb,
    wire_id: u64,
    payload: Vec<u8>,
}

/// One joined network.
#[derive(Debug)]
pub(super) struct Network {
    id: NetworkId,
    mac: Mac,
    config: Option<NetworkConfig>,
    failure: Option<NetworkStatus>,
    last_config_update: Timestamp,
    last_request: Timestamp,
    assembler: ConfigAssembler,
    members: BTreeMap<Address, Membership>,
    user_groups: BTreeSet<MulticastGroup>,
    announced: BTreeSet<MulticastGroup>,
    last_upstream_announce: Timestamp,
    bridge_routes: HashMap<Mac, Address>,
    held: VecDeque<Held>,
}

impl Network {
    fn new(id: NetworkId, me: Address) -> Self {
        Self {
            id,
            mac: id.mac(me),
            config: None,
            failure: None,
            last_config_update: Timestamp(0),
            last_request: Timestamp(i64::MIN / 2),
            assembler: ConfigAssembler::default(),
            members: BTreeMap::new(),
            user_groups: BTreeSet::new(),
            announced: BTreeSet::new(),
            last_upstream_announce: Timestamp(i64::MIN / 2),
            bridge_routes: HashMap::new(),
            held: VecDeque::new(),
        }
    }

    fn info(&self) -> NetworkInfo {
        NetworkInfo {
            id: self.id,
            mac: self.mac,
            status: self.status(),
            config: self.config.clone(),
            subscriptions: self.groups().into_iter().collect(),
        }
    }

    fn status(&self) -> NetworkStatus {
        match (self.failure, &self.config) {
            (Some(f), _) => f,
            (None, Some(_)) => NetworkStatus::Ok,
            (None, None) => NetworkStatus::RequestingConfiguration,
        }
    }

    /// Our groups: ARP/NDP groups of our addresses, the broadcast group when enabled, and
    /// whatever the application subscribed.
    fn groups(&self) -> BTreeSet<MulticastGroup> {
        let mut g = self.user_groups.clone();
        if let Some(c) = &self.config {
            for ip in &c.static_ips {
                match ip.ip {
                    IpAddr::V4(a) => g.insert(MulticastGroup::for_arp(a)),
                    IpAddr::V6(a) => g.insert(MulticastGroup::for_ndp(a)),
                };
            }
            if c.broadcast_enabled() {
                g.insert(MulticastGroup {
                    mac: Mac::BROADCAST,
                    adi: 0,
                });
            }
        }
        g
    }
}

/// What the rules engine may ask about tags and ownership: ours from the config, the peer's
/// from the credentials it pushed.
struct Ctx<'a> {
    local: &'a NetworkConfig,
    remote: Option<&'a Membership>,
    inbound: bool,
}

impl Ctx<'_> {
    fn owns(&self, f: impl Fn(&Coo) -> bool) -> bool {
        if self.inbound {
            let Some(m) = self.remote else { return false };
            m.coos.values().any(|c| {
                credential_time_ok(
                    self.local,
                    c.timestamp,
                    m.revoked.get(&(CredentialType::Coo, c.id)).copied(),
                ) && f(c)
            })
        } else {
            self.local.coos.iter().any(f)
        }
    }
}

impl FilterContext for Ctx<'_> {
    fn local_tag(&self, id: u32) -> Option<u32> {
        self.local.tags.iter().find(|t| t.id == id).map(|t| t.value)
    }

    fn remote_tag(&self, id: u32) -> Option<u32> {
        let m = self.remote?;
        let t = m.tags.get(&id)?;
        credential_time_ok(
            self.local,
            t.timestamp,
            m.revoked.get(&(CredentialType::Tag, id)).copied(),
        )
        .then_some(t.value)
    }

    fn source_ip_owned(&self, ip: IpAddr) -> bool {
        if self.owns(|c| c.owns_ip(ip)) {
            return true;
        }
        match ip {
            IpAddr::V6(v6) => {
                self.local.ndp_emulation() && self.local.emulated_v6_prefix_owner(v6).is_some()
            }
            IpAddr::V4(_) => false,
        }
    }

    fn source_mac_owned(&self, mac: Mac) -> bool {
        self.owns(|c| c.owns_mac(mac))
    }
}

fn credential_time_ok(cfg: &NetworkConfig, ts: i64, revoked: Option<i64>) -> bool {
    (ts - cfg.timestamp).abs() <= cfg.credential_max_delta && revoked.is_none_or(|r| ts > r)
}

/// The multicast member database and pending sends.
#[derive(Debug, Default)]
pub(super) struct Multicaster {
    members: BTreeMap<(NetworkId, MulticastGroup), BTreeMap<Address, Timestamp>>,
    /// Entries in `members` (bounded by [`MAX_MULTICAST_ENTRIES`]).
    entries: usize,
    last_gather: BTreeMap<(NetworkId, MulticastGroup), Timestamp>,
    pending: Vec<PendingMulticast>,
}

#[derive(Debug)]
struct PendingMulticast {
    created: Timestamp,
    network: NetworkId,
    group: MulticastGroup,
    src: Option<Mac>,
    ethertype: u16,
    payload: Vec<u8>,
    limit: usize,
    gather_limit: u32,
    sent: BTreeSet<Address>,
}

/// Node-level network state.
#[derive(Debug, Default)]
pub(super) struct Networks {
    pub(super) joined: BTreeMap<NetworkId, Network>,
    pub(super) multicast: Multicaster,
    pub(super) frames: VecDeque<Frame>,
    pub(super) controller: bool,
    pub(super) controller_authorized: HashMap<(NetworkId, Address), Timestamp>,
    /// State of the per-frame seeds for RANDOM rule matches (seeded once from the node's RNG).
    pub(super) frame_seed: u64,
}

/// Why a network could not be joined.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum JoinError {
    /// The node is a member of as many networks as it may be ([`CoreOptions::max_networks`]).
    ///
    /// [`CoreOptions::max_networks`]: super::CoreOptions::max_networks
    #[error("this node is a member of {0} networks, the most it may join (leave one first)")]
    TooManyNetworks(usize),
}

/// Why a frame from the local stack was not sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// Not joined.
    #[error("not a member of this network")]
    NotJoined,
    /// No config yet.
    #[error("the network has no configuration yet")]
    NotConfigured,
    /// Source MAC not ours and we are no bridge.
    #[error("source MAC is not this node's and this node is not a bridge")]
    NotBridge,
    /// Broadcast disabled.
    #[error("broadcast is disabled on this network")]
    BroadcastDisabled,
    /// Multicast limit 0.
    #[error("multicast is disabled on this network")]
    MulticastDisabled,
    /// The rules dropped it.
    #[error("the network's rules drop this frame")]
    Filtered,
    /// Too large for one packet.
    #[error("frame too large")]
    TooLarge,
    /// No bridge for an unknown unicast MAC.
    #[error("no route to that MAC")]
    NoRoute,
}

/// The most header bytes before a frame's payload: MULTICAST_FRAME with a gather limit and a
/// bridged source MAC (FRAME has 10, EXT_FRAME 23).
const FRAME_HEADER_MAX: usize = 31;

impl Node {
    // ----- public API --------------------------------------------------------------------------

    /// The largest Ethernet payload [`Node::send_frame`] takes: what fits behind the largest
    /// frame header in a packet receivers accept at this node's physical MTU (9,869 bytes at
    /// the default MTU), and never more than stock's 9,900.
    #[must_use]
    pub fn max_frame_payload(&self) -> usize {
        crate::packet::max_packet_len(self.options.physical_mtu)
            .saturating_sub(crate::packet::IDX_PAYLOAD + FRAME_HEADER_MAX)
            .min(9_900)
    }

    /// Joins a network (idempotent). The config is requested at once; ad-hoc networks are
    /// configured locally.
    ///
    /// # Errors
    /// [`JoinError::TooManyNetworks`] when the node is already a member of
    /// [`CoreOptions::max_networks`](super::CoreOptions::max_networks) networks (joining one
    /// it is a member of is fine).
    pub fn join(&mut self, now: Timestamp, id: NetworkId) -> Result<(), JoinError> {
        if self.nets.joined.contains_key(&id) {
            return Ok(());
        }
        if self.nets.joined.len() >= self.options.max_networks {
            return Err(JoinError::TooManyNetworks(self.nets.joined.len()));
        }
        let me = self.address();
        self.nets.joined.insert(id, Network::new(id, me));
        self.store_ops.push_back(StoreOp::Put {
            key: StoreKey::NetworkConfig(id.0),
            data: b"\n".to_vec(),
        });
        self.events.push_back(Event::NetworkStatus {
            network: id,
            status: NetworkStatus::RequestingConfiguration,
        });
        self.request_config(now, id);
        Ok(())
    }

    /// Joins with a config remembered from an earlier run (applied at once, then refreshed).
    pub(super) fn join_cached(&mut self, now: Timestamp, id: NetworkId, cached: &[u8]) {
        let me = self.address();
        let mut net = Network::new(id, me);
        if cached.len() > 1
            && let Ok(c) = NetworkConfig::from_bytes(cached)
            && c.issued_to == me
            && c.network_id == id
        {
            net.config = Some(c);
        }
        let configured = net.config.is_some();
        self.nets.joined.insert(id, net);
        if configured {
            self.config_applied(now, id, &[], false);
        }
        self.request_config(now, id);
    }

    /// Leaves a network; its stored config is deleted.
    pub fn leave(&mut self, id: NetworkId) -> bool {
        if self.nets.joined.remove(&id).is_none() {
            return false;
        }
        let mc = &mut self.nets.multicast;
        mc.members.retain(|(n, _), _| *n != id);
        mc.entries = mc.members.values().map(BTreeMap::len).sum();
        mc.pending.retain(|p| p.network != id);
        self.store_ops.push_back(StoreOp::Delete {
            key: StoreKey::NetworkConfig(id.0),
        });
        self.events.push_back(Event::NetworkLeft { network: id });
        true
    }

    /// Networks joined.
    #[must_use]
    pub fn networks(&self) -> Vec<NetworkInfo> {
        self.nets.joined.values().map(Network::info).collect()
    }

    /// One joined network.
    #[must_use]
    pub fn network(&self, id: NetworkId) -> Option<NetworkInfo> {
        self.nets.joined.get(&id).map(Network::info)
    }

    /// Subscribes to a multicast group on a network (announced to members).
    pub fn subscribe(&mut self, now: Timestamp, id: NetworkId, group: MulticastGroup) {
        if let Some(n) = self.nets.joined.get_mut(&id)
            && n.user_groups.insert(group)
        {
            self.announce_new_groups(now, id);
        }
    }

    /// Unsubscribes from a multicast group (nothing is sent: members forget us when our
    /// announcements stop). Subscribing again announces the group again at once.
    pub fn unsubscribe(&mut self, id: NetworkId, group: MulticastGroup) {
        if let Some(n) = self.nets.joined.get_mut(&id)
            && n.user_groups.remove(&group)
            && !n.groups().contains(&group)
        {
            n.announced.remove(&group);
        }
    }

    /// Makes this node answer config requests for networks it controls (through
    /// [`Event::ControllerRequest`]) instead of refusing them.
    pub fn set_controller(&mut self, enabled: bool) {
        self.nets.controller = enabled;
    }

    /// Next frame for the local stack.
    pub fn poll_frame(&mut self) -> Option<Frame> {
        self.nets.frames.pop_front()
    }
}

// Declared after `keyed!`, which they use.
mod config_requests;
mod controller;
mod credentials;
mod frames_in;
mod frames_out;
mod multicast;
