//! Network membership: joining, configs from controllers, credentials, virtual Ethernet and
//! multicast, as a member node does them.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use super::{DropReason, Event, Node, StoreKey, StoreOp};
use crate::address::Address;
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
use crate::wire::Reader;

/// Ethertype of IPv4.
pub const ETHERTYPE_IPV4: u16 = 0x0800;
/// Ethertype of ARP.
pub const ETHERTYPE_ARP: u16 = 0x0806;
/// Ethertype of IPv6.
pub const ETHERTYPE_IPV6: u16 = 0x86dd;

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
pub const ERROR_UNSUPPORTED_OPERATION: u8 = 0x05;
/// ERROR code: the sender must present credentials.
pub const ERROR_NEED_MEMBERSHIP_CERTIFICATE: u8 = 0x06;
/// ERROR code: network access denied.
pub const ERROR_NETWORK_ACCESS_DENIED: u8 = 0x07;
/// ERROR code: unwanted multicast.
pub const ERROR_UNWANTED_MULTICAST: u8 = 0x08;
/// ERROR code: authentication (SSO) required.
pub const ERROR_AUTHENTICATION_REQUIRED: u8 = 0x09;

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

    /// The Ethernet II bytes.
    #[must_use]
    pub fn to_ethernet(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(14 + self.payload.len());
        self.write_ethernet(&mut out);
        out
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
    revoked: BTreeMap<(u8, u32), i64>,
    revocation_ids: BTreeSet<u32>,
    last_push: Option<Timestamp>,
    pushed_config_ts: i64,
    last_like: Option<Timestamp>,
}

/// What capabilities, tags and COOs have in common for a membership table.
trait Keyed: Clone {
    /// Credential type number (revocations name it).
    const KIND: u8;
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
    ($t:ty, $kind:literal, $table:ident, |$c:ident| $holder:expr) => {
        impl Keyed for $t {
            const KIND: u8 = $kind;
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

keyed!(Capability, 2, caps, |c| c.issued_to());
keyed!(Tag, 3, tags, |c| Some(c.issued_to));
keyed!(Coo, 4, coos, |c| Some(c.issued_to));

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
                credential_time_ok(self.local, c.timestamp, m.revoked.get(&(4, c.id)).copied())
                    && f(c)
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
        credential_time_ok(self.local, t.timestamp, m.revoked.get(&(3, id)).copied())
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

    // ----- config requests -------------------------------------------------------------------

    fn request_metadata(&self) -> Dictionary {
        let v = self.options.software_version;
        let mut d = Dictionary::new();
        d.add_u64("v", config::CONFIG_VERSION);
        d.add_u64("vend", 1);
        d.add_u64("pv", u64::from(crate::packet::PROTOCOL_VERSION));
        d.add_u64("majv", u64::from(v.0));
        d.add_u64("minv", u64::from(v.1));
        d.add_u64("revv", u64::from(v.2));
        d.add_u64("mr", 1024);
        d.add_u64("mc", 128);
        d.add_u64("mcr", 64);
        d.add_u64("mt", 128);
        d.add_u64("f", 0);
        d.add_u64("revr", 1);
        d
    }

    pub(super) fn request_config(&mut self, now: Timestamp, id: NetworkId) {
        let me = self.address();
        let Some(net) = self.nets.joined.get_mut(&id) else {
            return;
        };
        net.last_request = now;
        if let Some(kind) = id.adhoc_kind() {
            self.configure_adhoc(now, id, kind);
            return;
        }
        let controller = id.controller();
        if controller == me {
            let req = ControllerRequest {
                network: id,
                requester: self.identity.to_public(),
                metadata: self.request_metadata(),
                request_id: LOCAL_REQUEST,
                from: None,
            };
            self.events
                .push_back(Event::ControllerRequest(Box::new(req)));
            return;
        }
        let (rev, ts) = net
            .config
            .as_ref()
            .map_or((0, 0), |c| (c.revision, c.timestamp));
        let md = self.request_metadata().to_bytes();
        let mut p = Vec::with_capacity(md.len() + 26);
        p.extend_from_slice(&id.0.to_be_bytes());
        p.extend_from_slice(&(md.len() as u16).to_be_bytes());
        p.extend_from_slice(&md);
        p.extend_from_slice(&rev.to_be_bytes());
        p.extend_from_slice(&(ts as u64).to_be_bytes());
        self.send(now, controller, Verb::NetworkConfigRequest, p);
    }

    fn configure_adhoc(&mut self, now: Timestamp, id: NetworkId, kind: AdHoc) {
        let me = self.address();
        let mut c = NetworkConfig::new(id, me);
        c.network_type = NetworkType::Public;
        c.timestamp = now.as_millis();
        c.revision = 1;
        c.credential_max_delta = config::MAX_CREDENTIAL_MAX_DELTA;
        c.flags = config::FLAG_ENABLE_IPV6_NDP_EMULATION;
        c.mtu = config::DEFAULT_MTU;
        c.static_ips.push(IpPrefix {
            ip: IpAddr::V6(id.sixplane(me)),
            bits: 40,
        });
        match kind {
            AdHoc::PortRange { start, end } => {
                if end < start {
                    if let Some(n) = self.nets.joined.get_mut(&id) {
                        n.failure = Some(NetworkStatus::NotFound);
                    }
                    self.events.push_back(Event::NetworkStatus {
                        network: id,
                        status: NetworkStatus::NotFound,
                    });
                    return;
                }
                c.name = format!("adhoc-{start:04x}-{end:04x}");
                c.multicast_limit = 0;
                c.rules = filter::adhoc_port_rules(start, end);
            }
            AdHoc::Ipv4 {
                octet: first_octet,
                hub,
            } => {
                c.name = format!("adhoc-{first_octet}.0.0.0");
                c.multicast_limit = 1024;
                c.rules = vec![crate::network::rules::Rule::new(
                    crate::network::rules::RuleKind::Accept,
                )];
                let a = me.to_u64();
                c.static_ips.push(IpPrefix {
                    ip: IpAddr::V4(std::net::Ipv4Addr::new(
                        first_octet,
                        (a >> 16) as u8,
                        (a >> 8) as u8,
                        a as u8,
                    )),
                    bits: 8,
                });
                if hub != 0 {
                    c.specialists.push(hub);
                }
            }
        }
        self.set_configuration(now, id, c, false);
    }

    /// Applies a config (from a controller or built locally). Returns whether it was new.
    pub(super) fn set_configuration(
        &mut self,
        now: Timestamp,
        id: NetworkId,
        c: NetworkConfig,
        save: bool,
    ) -> bool {
        let me = self.address();
        if c.issued_to != me || c.network_id != id {
            self.drop_input(DropReason::BadConfig);
            return false;
        }
        let Some(net) = self.nets.joined.get_mut(&id) else {
            return false;
        };
        let was_ok = net.status() == NetworkStatus::Ok;
        let old_failure = net.failure.take();
        if net.config.as_ref() == Some(&c) {
            if old_failure.is_some() {
                self.events.push_back(Event::NetworkStatus {
                    network: id,
                    status: NetworkStatus::Ok,
                });
            }
            return false;
        }
        let old_ips: Vec<IpPrefix> = net
            .config
            .as_ref()
            .map(|o| o.static_ips.clone())
            .unwrap_or_default();
        if save {
            self.store_ops.push_back(StoreOp::Put {
                key: StoreKey::NetworkConfig(id.0),
                data: c.to_bytes(),
            });
        }
        net.config = Some(c);
        net.last_config_update = now;
        self.config_applied(now, id, &old_ips, was_ok);
        true
    }

    /// Events and announcements after a config took effect (the OK status only when it was
    /// not OK before: configs are refreshed every minute).
    fn config_applied(
        &mut self,
        now: Timestamp,
        id: NetworkId,
        old_ips: &[IpPrefix],
        was_ok: bool,
    ) {
        let Some(net) = self.nets.joined.get(&id) else {
            return;
        };
        let Some(c) = &net.config else { return };
        for ip in old_ips {
            if !c.static_ips.contains(ip) {
                self.events.push_back(Event::NetworkAddressRemoved {
                    network: id,
                    address: *ip,
                });
            }
        }
        let added: Vec<IpPrefix> = c
            .static_ips
            .iter()
            .filter(|ip| !old_ips.contains(ip))
            .copied()
            .collect();
        for ip in added {
            self.events.push_back(Event::NetworkAddressAdded {
                network: id,
                address: ip,
            });
        }
        self.events
            .push_back(Event::NetworkConfigured { network: id });
        if !was_ok {
            self.events.push_back(Event::NetworkStatus {
                network: id,
                status: NetworkStatus::Ok,
            });
        }
        self.announce_new_groups(now, id);
    }

    /// A chunk of config arrived (OK to our request, or a pushed NETWORK_CONFIG).
    pub(super) fn handle_config_chunk(
        &mut self,
        now: Timestamp,
        src: Address,
        wire_id: u64,
        payload: &[u8],
        pushed: bool,
    ) {
        let Ok(chunk) = ConfigChunk::parse(payload) else {
            return self.drop_input(DropReason::BadConfig);
        };
        let id = chunk.network_id;
        if !self.nets.joined.contains_key(&id) {
            return self.drop_input(DropReason::NotMember);
        }
        let controller = id.controller();
        if chunk.signature.is_some() {
            let Some(ctl) = self.peers.get(&controller).map(|p| p.identity.clone()) else {
                self.request_whois(now, controller);
                return self.drop_input(DropReason::BadConfig);
            };
            if !chunk.verify(&ctl) {
                return self.drop_input(DropReason::BadSignature);
            }
            if chunk.flags & config::CHUNK_FLAG_FAST_PROPAGATE != 0 {
                let raw = chunk.raw.to_vec();
                let members: Vec<Address> = self.nets.joined[&id]
                    .members
                    .keys()
                    .copied()
                    .filter(|a| *a != src && *a != controller)
                    .collect();
                for m in members {
                    self.send(now, m, Verb::NetworkConfig, raw.clone());
                }
            }
        } else if src != controller {
            return self.drop_input(DropReason::BadConfig);
        }
        let update_id = if chunk.signature.is_some() {
            chunk.update_id
        } else {
            wire_id
        };
        let outcome = match self.nets.joined.get_mut(&id) {
            Some(n) => n.assembler.add(&chunk, wire_id),
            None => return,
        };
        match outcome {
            ChunkOutcome::Incomplete => {}
            ChunkOutcome::Duplicate => self.drop_input(DropReason::Replay),
            ChunkOutcome::TooManyChunks => self.drop_input(DropReason::BadConfig),
            ChunkOutcome::Complete(dict) => match NetworkConfig::from_bytes(&dict) {
                Ok(c) => {
                    self.set_configuration(now, id, c, true);
                    if pushed {
                        let mut ok = vec![Verb::Echo as u8];
                        ok.extend_from_slice(&wire_id.to_be_bytes());
                        ok.extend_from_slice(&id.0.to_be_bytes());
                        ok.extend_from_slice(&update_id.to_be_bytes());
                        self.send(now, src, Verb::Ok, ok);
                    }
                }
                Err(_) => self.drop_input(DropReason::BadConfig),
            },
        }
    }

    /// An ERROR answering one of our config requests, or asking for credentials.
    pub(super) fn handle_network_error(
        &mut self,
        now: Timestamp,
        src: Address,
        in_re: u8,
        code: u8,
        rest: &[u8],
    ) {
        let mut r = Reader::new(rest);
        let Ok(nwid) = r.u64() else { return };
        let id = NetworkId(nwid);
        if !self.nets.joined.contains_key(&id) {
            return;
        }
        if code == ERROR_NEED_MEMBERSHIP_CERTIFICATE {
            self.push_credentials(now, id, src, true);
            return;
        }
        if code == ERROR_UNWANTED_MULTICAST {
            if let (Ok(mac), Ok(adi)) = (r.array::<6>(), r.array::<4>()) {
                let g = MulticastGroup {
                    mac: Mac::from_bytes(&mac),
                    adi: u32::from_be_bytes(adi),
                };
                if let Some(m) = self.nets.multicast.members.get_mut(&(id, g))
                    && m.remove(&src).is_some()
                {
                    self.nets.multicast.entries -= 1;
                }
            }
            return;
        }
        if src != id.controller() || in_re != Verb::NetworkConfigRequest as u8 {
            return;
        }
        let status = match code {
            ERROR_OBJ_NOT_FOUND | ERROR_UNSUPPORTED_OPERATION => NetworkStatus::NotFound,
            ERROR_NETWORK_ACCESS_DENIED => NetworkStatus::AccessDenied,
            ERROR_AUTHENTICATION_REQUIRED => NetworkStatus::AuthenticationRequired,
            _ => return,
        };
        if let Some(n) = self.nets.joined.get_mut(&id)
            && n.failure != Some(status)
        {
            n.failure = Some(status);
            self.events.push_back(Event::NetworkStatus {
                network: id,
                status,
            });
        }
    }

    // ----- controller side ---------------------------------------------------------------------

    /// A NETWORK_CONFIG_REQUEST for a network (we may control it).
    pub(super) fn handle_config_request(
        &mut self,
        now: Timestamp,
        src: Address,
        hops: u8,
        from: SocketAddr,
        wire_id: u64,
        payload: &[u8],
    ) -> bool {
        let mut r = Reader::new(payload);
        let Ok(nwid) = r.u64() else {
            self.drop_input(DropReason::Malformed);
            return true;
        };
        let id = NetworkId(nwid);
        if !self.nets.controller {
            return false;
        }
        if id.controller() != self.address() {
            // Stock controllers stay silent for networks that are not theirs.
            return true;
        }
        let metadata = match r.u16().and_then(|n| r.bytes(usize::from(n.min(1023)))) {
            Ok(md) => Dictionary::parse(md),
            Err(_) => Dictionary::new(),
        };
        let Some(peer) = self.peers.get(&src) else {
            return true;
        };
        let req = ControllerRequest {
            network: id,
            requester: peer.identity.clone(),
            metadata,
            request_id: wire_id,
            from: (hops == 0).then_some(from),
        };
        let _ = now;
        self.events
            .push_back(Event::ControllerRequest(Box::new(req)));
        true
    }

    /// Sends a config to a member (as the network's controller): OK chunks answering
    /// `request_id`, or pushed NETWORK_CONFIG chunks when `request_id` is 0. A config for this
    /// node itself is applied directly.
    ///
    /// # Errors
    /// The config is not for a network this node controls.
    pub fn controller_send_config(
        &mut self,
        now: Timestamp,
        request_id: u64,
        config: &NetworkConfig,
    ) -> Result<(), super::SendError> {
        let id = config.network_id;
        if id.controller() != self.address() {
            return Err(super::SendError::NotController);
        }
        let dest = config.issued_to;
        self.nets.controller_authorized.insert((id, dest), now);
        if dest == self.address() {
            if self.nets.joined.contains_key(&id) {
                self.set_configuration(now, id, config.clone(), true);
            }
            return Ok(());
        }
        let dict = config.to_bytes();
        let mut uid = [0u8; 8];
        self.rng.fill(&mut uid);
        let update_id = u64::from_be_bytes(uid) | 1;
        let chunks = config::make_chunks(id, &dict, update_id, 0, &self.identity)
            .map_err(|_| super::SendError::NotController)?;
        for ch in chunks {
            if request_id != 0 && request_id != LOCAL_REQUEST {
                let mut ok = Vec::with_capacity(ch.len() + 9);
                ok.push(Verb::NetworkConfigRequest as u8);
                ok.extend_from_slice(&request_id.to_be_bytes());
                ok.extend_from_slice(&ch);
                self.send(now, dest, Verb::Ok, ok);
            } else {
                self.send(now, dest, Verb::NetworkConfig, ch);
            }
        }
        Ok(())
    }

    /// Refuses a config request (as controller): `code` is one of the `ERROR_*` values.
    pub fn controller_send_error(
        &mut self,
        now: Timestamp,
        network: NetworkId,
        dest: Address,
        request_id: u64,
        code: u8,
    ) {
        if request_id == 0 {
            return;
        }
        if dest == self.address() {
            let status = match code {
                ERROR_NETWORK_ACCESS_DENIED => NetworkStatus::AccessDenied,
                _ => NetworkStatus::NotFound,
            };
            if let Some(n) = self.nets.joined.get_mut(&network)
                && n.failure != Some(status)
            {
                n.failure = Some(status);
                self.events
                    .push_back(Event::NetworkStatus { network, status });
            }
            return;
        }
        let mut e = vec![Verb::NetworkConfigRequest as u8];
        e.extend_from_slice(&request_id.to_be_bytes());
        e.push(code);
        e.extend_from_slice(&network.0.to_be_bytes());
        self.send(now, dest, Verb::Error, e);
    }

    /// Sends a signed revocation to `dest` (as controller), fast-propagated.
    pub fn controller_send_revocation(&mut self, now: Timestamp, dest: Address, rev: &Revocation) {
        let creds = Credentials {
            revocations: vec![rev.clone()],
            ..Credentials::default()
        };
        if dest == self.address() {
            let mut r = rev.clone();
            r.flags &= !Revocation::FLAG_FAST_PROPAGATE;
            self.accept_revocation(now, self.address(), &r);
            return;
        }
        self.send(now, dest, Verb::NetworkCredentials, creds.write());
    }

    // ----- credentials -----------------------------------------------------------------------

    /// Whether `peer` may talk to us on `id` (public network, or an agreeing COM).
    fn gate(&self, id: NetworkId, peer: Address) -> bool {
        let Some(net) = self.nets.joined.get(&id) else {
            return false;
        };
        let Some(c) = &net.config else { return false };
        if c.network_type == NetworkType::Public {
            return true;
        }
        let (Some(mine), Some(m)) = (&c.com, net.members.get(&peer)) else {
            return false;
        };
        let Some(theirs) = &m.com else { return false };
        if theirs.timestamp().unwrap_or(0) <= m.com_revoked_before {
            return false;
        }
        let Some(identity) = self.peers.get(&peer).map(|p| &p.identity) else {
            return false;
        };
        mine.agrees_with(theirs, identity)
    }

    /// Whether a member's pushed credentials may be used with ours (timestamps in window).
    fn membership_mut(&mut self, id: NetworkId, peer: Address) -> Option<&mut Membership> {
        self.nets
            .joined
            .get_mut(&id)
            .map(|n| n.members.entry(peer).or_default())
    }

    /// `peer` greeted us (HELLO): it may have restarted and lost what we pushed it. Our next
    /// frame to it pushes our credentials again, and its request for them is answered at once
    /// rather than after [`CREDENTIAL_REQUEST_RATE_MS`]: a restarted member's first exchange
    /// (its ARP request, our reply) is not held up by a reply it must drop for want of our COM.
    /// At most one push per HELLO, and peers greet about once a minute per path.
    pub(super) fn forget_pushes_to(&mut self, peer: Address) {
        for n in self.nets.joined.values_mut() {
            if let Some(m) = n.members.get_mut(&peer) {
                m.last_push = None;
            }
        }
    }

    /// Pushes our COM, capabilities, tags and COOs to `peer` if it needs them.
    pub(super) fn push_credentials(
        &mut self,
        now: Timestamp,
        id: NetworkId,
        peer: Address,
        asked: bool,
    ) {
        if peer == id.controller() && !asked {
            return;
        }
        let Some(net) = self.nets.joined.get(&id) else {
            return;
        };
        let Some(c) = &net.config else { return };
        let Some(com) = c.com.clone() else { return };
        let ts = c.timestamp;
        let m = net.members.get(&peer);
        let due = match m.and_then(|m| m.last_push) {
            None => true,
            Some(last) => {
                let changed = m.is_some_and(|m| m.pushed_config_ts != ts);
                if asked {
                    changed || now.since(last) >= CREDENTIAL_REQUEST_RATE_MS
                } else {
                    changed || now.since(last) >= CREDENTIAL_REPUSH_MS
                }
            }
        };
        if !due {
            return;
        }
        let creds = Credentials {
            coms: vec![com],
            capabilities: c.capabilities.clone(),
            tags: c.tags.clone(),
            revocations: Vec::new(),
            coos: c.coos.clone(),
        };
        if let Some(m) = self.membership_mut(id, peer) {
            m.last_push = Some(now);
            m.pushed_config_ts = ts;
        }
        self.send(now, peer, Verb::NetworkCredentials, creds.write());
    }

    /// NETWORK_CREDENTIALS from `src`.
    pub(super) fn handle_credentials(&mut self, now: Timestamp, src: Address, payload: &[u8]) {
        let Ok(creds) = Credentials::read(payload) else {
            return self.drop_input(DropReason::BadCredential);
        };
        let mut touched = BTreeSet::new();
        for com in &creds.coms {
            let (Some(id), Some(to)) = (com.network_id(), com.issued_to()) else {
                self.drop_input(DropReason::BadCredential);
                continue;
            };
            if !self.nets.joined.contains_key(&id) {
                continue;
            }
            let Some(ctl) = self.controller_identity(now, id) else {
                continue;
            };
            let ts = com.timestamp().unwrap_or(0);
            let ok = com.verify(&ctl).is_ok();
            let Some(m) = self.membership_mut(id, to) else {
                continue;
            };
            if ts <= m.com_revoked_before {
                continue;
            }
            if let Some(old) = &m.com
                && (old.timestamp().unwrap_or(0) > ts || old == com)
            {
                continue;
            }
            if ok {
                m.com = Some(com.clone());
                touched.insert((id, to));
            } else {
                self.drop_input(DropReason::BadCredential);
            }
        }
        for rev in &creds.revocations {
            self.accept_revocation(now, src, rev);
        }
        for cap in &creds.capabilities {
            self.accept_keyed(now, cap);
        }
        for tag in &creds.tags {
            self.accept_keyed(now, tag);
        }
        for coo in &creds.coos {
            self.accept_keyed(now, coo);
        }
        // Frames held for these senders may pass now.
        for (id, peer) in touched {
            self.retry_held(now, id, Some(peer));
        }
    }

    /// Stores a capability, tag or COO of its holder unless it is older than the one held,
    /// revoked, or not signed by the network's controller.
    fn accept_keyed<T: Keyed>(&mut self, now: Timestamp, c: &T) {
        let id = c.network();
        let (Some(to), Some(ctl)) = (c.holder(), self.controller_identity(now, id)) else {
            return;
        };
        let ok = c.check(&ctl);
        let Some(m) = self.membership_mut(id, to) else {
            return;
        };
        let revoked = m
            .revoked
            .get(&(T::KIND, c.key()))
            .is_some_and(|r| *r >= c.stamp());
        let table = T::table(m);
        if revoked || table.get(&c.key()).is_some_and(|o| o.stamp() > c.stamp()) {
            return;
        }
        if ok {
            table.insert(c.key(), c.clone());
        } else {
            self.drop_input(DropReason::BadCredential);
        }
    }

    fn controller_identity(&mut self, now: Timestamp, id: NetworkId) -> Option<Identity> {
        let c = id.controller();
        if c == self.address() {
            return Some(self.identity.to_public());
        }
        match self.peers.get(&c) {
            Some(p) => Some(p.identity.clone()),
            None => {
                self.request_whois(now, c);
                None
            }
        }
    }

    fn accept_revocation(&mut self, now: Timestamp, src: Address, rev: &Revocation) {
        let id = rev.network_id;
        if !self.nets.joined.contains_key(&id) {
            return;
        }
        let Some(ctl) = self.controller_identity(now, id) else {
            return;
        };
        if rev.verify(&ctl).is_err() {
            return self.drop_input(DropReason::BadCredential);
        }
        let Some(m) = self.membership_mut(id, rev.target) else {
            return;
        };
        if !m.revocation_ids.insert(rev.id) {
            return;
        }
        match rev.credential_type {
            CredentialType::Com => {
                m.com_revoked_before = m.com_revoked_before.max(rev.threshold);
            }
            CredentialType::Capability | CredentialType::Tag | CredentialType::Coo => {
                let e = m
                    .revoked
                    .entry((rev.credential_type as u8, rev.credential_id))
                    .or_insert(i64::MIN);
                *e = (*e).max(rev.threshold);
                m.com_revoked_before = m.com_revoked_before.max(rev.threshold);
            }
            _ => return,
        }
        if rev.target == self.address() && rev.credential_type == CredentialType::Com {
            // Our own membership was revoked: our config's COM is no longer good.
            if let Some(n) = self.nets.joined.get_mut(&id)
                && n.config
                    .as_ref()
                    .and_then(|c| c.com.as_ref())
                    .and_then(Com::timestamp)
                    .is_some_and(|t| t <= rev.threshold)
            {
                n.failure = Some(NetworkStatus::AccessDenied);
                self.events.push_back(Event::NetworkStatus {
                    network: id,
                    status: NetworkStatus::AccessDenied,
                });
            }
        }
        if rev.flags & Revocation::FLAG_FAST_PROPAGATE != 0 {
            let signer = id.controller();
            let members: Vec<Address> = self.nets.joined[&id]
                .members
                .keys()
                .copied()
                .filter(|a| *a != src && *a != signer && *a != self.address())
                .collect();
            let payload = Credentials {
                revocations: vec![rev.clone()],
                ..Credentials::default()
            }
            .write();
            for a in members {
                self.send(now, a, Verb::NetworkCredentials, payload.clone());
            }
        }
    }

    // ----- frames in ---------------------------------------------------------------------------

    fn need_credentials(
        &mut self,
        now: Timestamp,
        src: Address,
        verb: Verb,
        wire_id: u64,
        id: NetworkId,
        payload: &[u8],
    ) {
        let mut e = vec![verb as u8];
        e.extend_from_slice(&wire_id.to_be_bytes());
        e.push(ERROR_NEED_MEMBERSHIP_CERTIFICATE);
        e.extend_from_slice(&id.0.to_be_bytes());
        self.send(now, src, Verb::Error, e);
        if let Some(n) = self.nets.joined.get_mut(&id) {
            if n.held.len() >= HELD_MAX {
                n.held.pop_front();
            }
            n.held.push_back(Held {
                at: now,
                src,
                verb,
                wire_id,
                payload: payload.to_vec(),
            });
        }
        self.drop_input(DropReason::NoCredentials);
    }

    fn retry_held(&mut self, now: Timestamp, id: NetworkId, only: Option<Address>) {
        let Some(n) = self.nets.joined.get_mut(&id) else {
            return;
        };
        let held: Vec<Held> = n.held.drain(..).collect();
        let mut keep = VecDeque::new();
        for h in held {
            if now.since(h.at) > HELD_TIMEOUT_MS {
                continue;
            }
            if only.is_some_and(|a| a != h.src) || !self.gate(id, h.src) {
                keep.push_back(h);
                continue;
            }
            self.dispatch_network_verb(now, h.src, h.verb, h.wire_id, &h.payload, true);
        }
        if let Some(n) = self.nets.joined.get_mut(&id) {
            keep.extend(n.held.drain(..));
            n.held = keep;
        }
    }

    /// FRAME, EXT_FRAME, MULTICAST_* from `src`. `retry`: a held frame tried again.
    pub(super) fn dispatch_network_verb(
        &mut self,
        now: Timestamp,
        src: Address,
        verb: Verb,
        wire_id: u64,
        payload: &[u8],
        retry: bool,
    ) {
        match verb {
            Verb::Frame => self.handle_frame_in(now, src, wire_id, payload, retry),
            Verb::ExtFrame => self.handle_ext_frame(now, src, wire_id, payload, retry),
            Verb::MulticastFrame => self.handle_multicast_frame(now, src, wire_id, payload, retry),
            Verb::MulticastLike => self.handle_like(now, src, payload),
            Verb::MulticastGather => self.handle_gather(now, src, wire_id, payload),
            _ => {}
        }
    }

    fn handle_frame_in(
        &mut self,
        now: Timestamp,
        src: Address,
        wire_id: u64,
        payload: &[u8],
        retry: bool,
    ) {
        if payload.len() < 10 {
            return self.drop_input(DropReason::Malformed);
        }
        let id = NetworkId(u64::from_be_bytes(
            payload[..8].try_into().unwrap_or([0; 8]),
        ));
        let Some(net) = self.nets.joined.get(&id) else {
            return self.drop_input(DropReason::NotMember);
        };
        let my_mac = net.mac;
        if !self.gate(id, src) {
            if !retry {
                self.need_credentials(now, src, Verb::Frame, wire_id, id, payload);
            }
            return;
        }
        self.gate_passed(now, id, src);
        let ethertype = u16::from_be_bytes([payload[8], payload[9]]);
        let frame = Frame {
            network: id,
            dst: my_mac,
            src: id.mac(src),
            ethertype,
            payload: payload[10..].to_vec(),
        };
        if self.filter_in(now, id, src, &frame) == 0 {
            return self.drop_input(DropReason::Filtered);
        }
        self.nets.frames.push_back(frame);
    }

    fn handle_ext_frame(
        &mut self,
        now: Timestamp,
        src: Address,
        wire_id: u64,
        payload: &[u8],
        retry: bool,
    ) {
        let mut r = Reader::new(payload);
        let (Ok(nwid), Ok(flags)) = (r.u64(), r.u8()) else {
            return self.drop_input(DropReason::Malformed);
        };
        let id = NetworkId(nwid);
        if flags & 0x01 != 0 {
            match Com::read(&mut r) {
                Ok(com) => self.add_inline_com(now, src, &com),
                Err(_) => return self.drop_input(DropReason::Malformed),
            }
        }
        let (Ok(dst), Ok(smac), Ok(et)) = (r.array::<6>(), r.array::<6>(), r.u16()) else {
            return self.drop_input(DropReason::Malformed);
        };
        let body = &payload[r.position()..];
        let Some(net) = self.nets.joined.get(&id) else {
            return self.drop_input(DropReason::NotMember);
        };
        let my_mac = net.mac;
        if !self.gate(id, src) {
            if !retry {
                self.need_credentials(now, src, Verb::ExtFrame, wire_id, id, payload);
            }
            return;
        }
        self.gate_passed(now, id, src);
        let frame = Frame {
            network: id,
            dst: Mac::from_bytes(&dst),
            src: Mac::from_bytes(&smac),
            ethertype: et,
            payload: body.to_vec(),
        };
        if frame.src.0 == 0 || frame.src == my_mac {
            return self.drop_input(DropReason::Filtered);
        }
        let verdict = self.filter_in(now, id, src, &frame);
        if flags & 0x10 != 0 {
            let mut ok = vec![Verb::ExtFrame as u8];
            ok.extend_from_slice(&wire_id.to_be_bytes());
            ok.extend_from_slice(&id.0.to_be_bytes());
            self.send(now, src, Verb::Ok, ok);
        }
        match verdict {
            0 => return self.drop_input(DropReason::Filtered),
            2 => {
                self.nets.frames.push_back(frame);
                return;
            }
            _ => {}
        }
        let cfg = self.nets.joined[&id].config.as_ref();
        let Some(cfg) = cfg else { return };
        if frame.src != id.mac(src) {
            if !cfg.is_active_bridge(src) {
                return self.drop_input(DropReason::NotBridge);
            }
            if let Some(n) = self.nets.joined.get_mut(&id) {
                n.bridge_routes.insert(frame.src, src);
            }
        }
        let cfg = self.nets.joined[&id].config.as_ref();
        let Some(cfg) = cfg else { return };
        if frame.dst != my_mac {
            if frame.dst.is_multicast() {
                if cfg.multicast_limit == 0 {
                    return self.drop_input(DropReason::MulticastDisabled);
                }
            } else if !cfg.is_active_bridge(self.address()) {
                return self.drop_input(DropReason::NotBridge);
            }
        }
        self.nets.frames.push_back(frame);
    }

    fn add_inline_com(&mut self, now: Timestamp, src: Address, com: &Com) {
        let creds = Credentials {
            coms: vec![com.clone()],
            ..Credentials::default()
        };
        self.handle_credentials(now, src, &creds.write());
    }

    fn handle_multicast_frame(
        &mut self,
        now: Timestamp,
        src: Address,
        wire_id: u64,
        payload: &[u8],
        retry: bool,
    ) {
        let mut r = Reader::new(payload);
        let (Ok(nwid), Ok(flags)) = (r.u64(), r.u8()) else {
            return self.drop_input(DropReason::Malformed);
        };
        let id = NetworkId(nwid);
        if flags & 0x01 != 0 {
            match Com::read(&mut r) {
                Ok(com) => self.add_inline_com(now, src, &com),
                Err(_) => return self.drop_input(DropReason::Malformed),
            }
        }
        let gather_limit = if flags & 0x02 != 0 {
            match r.array::<4>() {
                Ok(b) => u32::from_be_bytes(b),
                Err(_) => return self.drop_input(DropReason::Malformed),
            }
        } else {
            0
        };
        let smac = if flags & 0x04 != 0 {
            match r.array::<6>() {
                Ok(b) => Some(Mac::from_bytes(&b)),
                Err(_) => return self.drop_input(DropReason::Malformed),
            }
        } else {
            None
        };
        let (Ok(dst), Ok(adi), Ok(et)) = (r.array::<6>(), r.array::<4>(), r.u16()) else {
            return self.drop_input(DropReason::Malformed);
        };
        let body = &payload[r.position()..];
        let Some(net) = self.nets.joined.get(&id) else {
            return self.drop_input(DropReason::NotMember);
        };
        let my_mac = net.mac;
        if !self.gate(id, src) {
            if !retry {
                self.need_credentials(now, src, Verb::MulticastFrame, wire_id, id, payload);
            }
            return;
        }
        self.gate_passed(now, id, src);
        let Some(cfg) = &self.nets.joined[&id].config else {
            return;
        };
        if cfg.multicast_limit == 0 {
            return self.drop_input(DropReason::MulticastDisabled);
        }
        let group = MulticastGroup {
            mac: Mac::from_bytes(&dst),
            adi: u32::from_be_bytes(adi),
        };
        let from_mac = smac.unwrap_or_else(|| id.mac(src));
        if body.is_empty()
            || body.len() > MAX_MULTICAST_PAYLOAD
            || !group.mac.is_multicast()
            || from_mac.0 == 0
            || from_mac.is_multicast()
            || from_mac == my_mac
        {
            return self.drop_input(DropReason::Malformed);
        }
        if from_mac != id.mac(src) {
            if !cfg.is_active_bridge(src) {
                return self.drop_input(DropReason::NotBridge);
            }
            if let Some(n) = self.nets.joined.get_mut(&id) {
                n.bridge_routes.insert(from_mac, src);
            }
        }
        let frame = Frame {
            network: id,
            dst: group.mac,
            src: from_mac,
            ethertype: et,
            payload: body.to_vec(),
        };
        if self.filter_in(now, id, src, &frame) == 0 {
            return self.drop_input(DropReason::Filtered);
        }
        self.nets.frames.push_back(frame);
        if gather_limit > 0 {
            let (total, addrs) = self.gather(id, group, src, gather_limit);
            if !addrs.is_empty() {
                let mut ok = vec![Verb::MulticastFrame as u8];
                ok.extend_from_slice(&wire_id.to_be_bytes());
                ok.extend_from_slice(&id.0.to_be_bytes());
                ok.extend_from_slice(&group.mac.to_bytes());
                ok.extend_from_slice(&group.adi.to_be_bytes());
                ok.push(0x02);
                ok.extend_from_slice(&total.to_be_bytes());
                ok.extend_from_slice(&(addrs.len() as u16).to_be_bytes());
                for a in addrs {
                    ok.extend_from_slice(&a.to_bytes());
                }
                self.send(now, src, Verb::Ok, ok);
            }
        }
    }

    /// A fresh seed for a frame's RANDOM rule matches: SplitMix64 over a state seeded once from
    /// the secure RNG (not a system call per frame; the values need not be secret).
    fn frame_seed(&mut self) -> u64 {
        if self.nets.frame_seed == 0 {
            let mut b = [0u8; 8];
            self.rng.fill(&mut b);
            self.nets.frame_seed = u64::from_le_bytes(b) | 1;
        }
        self.nets.frame_seed = self.nets.frame_seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.nets.frame_seed;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Inbound filter: 0 drop, 1 accept, 2 accept bypassing MAC checks. Sends the rules'
    /// copies and redirects.
    fn filter_in(&mut self, now: Timestamp, id: NetworkId, src: Address, f: &Frame) -> u8 {
        let seed = self.frame_seed();
        let Some(net) = self.nets.joined.get(&id) else {
            return 0;
        };
        let Some(cfg) = &net.config else { return 0 };
        let m = net.members.get(&src);
        let info = FrameInfo {
            inbound: true,
            me: self.identity.address(),
            source: src,
            dest: Some(self.identity.address()),
            mac_source: f.src,
            mac_dest: f.dst,
            ethertype: f.ethertype,
            vlan_id: 0,
            payload: &f.payload,
            random_seed: seed,
        };
        let ctx = Ctx {
            local: cfg,
            remote: m,
            inbound: true,
        };
        let caps: Vec<&[crate::network::rules::Rule]> = m
            .map(|m| {
                m.caps
                    .values()
                    .filter(|c| {
                        credential_time_ok(cfg, c.timestamp, m.revoked.get(&(2, c.id)).copied())
                    })
                    .map(|c| c.rules.as_slice())
                    .collect()
            })
            .unwrap_or_default();
        let unsupported = cfg.flags & config::FLAG_RULES_RESULT_OF_UNSUPPORTED_MATCH != 0;
        let d = filter::filter_inbound(&cfg.rules, caps, &info, &ctx, unsupported);
        for c in &d.copies {
            self.send_ext_copy(now, c.to, f, &f.payload, c.length, c.ext_frame_flags(true));
        }
        if let Some(r) = d.redirect {
            self.send_ext_copy(
                now,
                r,
                f,
                &f.payload,
                0,
                filter::EXT_FRAME_FLAGS_REDIRECT_INBOUND,
            );
        }
        d.code()
    }

    /// Something from `src` passed the gate: membership exists; announce our groups to it
    /// if due.
    fn gate_passed(&mut self, now: Timestamp, id: NetworkId, src: Address) {
        let due = match self.membership_mut(id, src) {
            Some(m) => match m.last_like {
                Some(t) if now.since(t) < ANNOUNCE_PERIOD_MS => false,
                _ => {
                    m.last_like = Some(now);
                    true
                }
            },
            None => false,
        };
        if due {
            let groups: Vec<MulticastGroup> = self.nets.joined[&id].groups().into_iter().collect();
            self.send_likes(now, id, src, &groups);
        }
    }

    // ----- multicast -----------------------------------------------------------------------------

    fn send_likes(
        &mut self,
        now: Timestamp,
        id: NetworkId,
        to: Address,
        groups: &[MulticastGroup],
    ) {
        for chunk in groups.chunks(500) {
            let mut p = Vec::with_capacity(chunk.len() * 18);
            for g in chunk {
                p.extend_from_slice(&id.0.to_be_bytes());
                p.extend_from_slice(&g.mac.to_bytes());
                p.extend_from_slice(&g.adi.to_be_bytes());
            }
            if !p.is_empty() {
                self.send(now, to, Verb::MulticastLike, p);
            }
        }
    }

    /// Upstreams of a network: its controller, the roots, anchors and replicators.
    fn network_upstreams(&self, id: NetworkId) -> Vec<Address> {
        let mut v = self.upstreams.clone();
        let c = id.controller();
        if !c.is_reserved() && c != self.address() && !v.contains(&c) {
            v.push(c);
        }
        if let Some(cfg) = self.nets.joined.get(&id).and_then(|n| n.config.as_ref()) {
            for a in cfg.specialists_with(
                config::SPECIALIST_ANCHOR | config::SPECIALIST_MULTICAST_REPLICATOR,
            ) {
                if a != self.address() && !v.contains(&a) {
                    v.push(a);
                }
            }
        }
        v
    }

    /// Announces groups not announced before to everyone concerned.
    fn announce_new_groups(&mut self, now: Timestamp, id: NetworkId) {
        let Some(net) = self.nets.joined.get_mut(&id) else {
            return;
        };
        if net.config.is_none() {
            return;
        }
        let all = net.groups();
        let new: Vec<MulticastGroup> = all.difference(&net.announced).copied().collect();
        net.announced = all;
        if new.is_empty() {
            return;
        }
        let upstreams = self.network_upstreams(id);
        let members: Vec<Address> = self.nets.joined[&id]
            .members
            .keys()
            .copied()
            .filter(|a| !upstreams.contains(a) && self.gate(id, *a))
            .collect();
        for t in upstreams {
            self.send_likes(now, id, t, &new);
        }
        // A member only takes LIKEs from peers whose credentials it holds: one that has only
        // sent to us (a multicast sender, say) gets ours first, so that it learns the new group
        // now rather than at its next gather.
        for t in members {
            self.push_credentials(now, id, t, false);
            self.send_likes(now, id, t, &new);
        }
    }

    /// Periodic: config refresh, LIKEs to upstreams and members, held frames, multicast
    /// timeouts. Called from the ping check.
    pub(super) fn network_ping_check(&mut self, now: Timestamp) {
        let ids: Vec<NetworkId> = self.nets.joined.keys().copied().collect();
        for id in ids {
            let n = &self.nets.joined[&id];
            let due = n.config.is_none()
                || n.failure.is_some()
                || now.since(n.last_config_update) >= AUTOCONF_DELAY_MS;
            if due && now.since(n.last_request) >= super::PING_CHECK_INTERVAL_MS - 100 {
                self.request_config(now, id);
            }
            let Some(n) = self.nets.joined.get_mut(&id) else {
                continue;
            };
            if n.config.is_none() {
                continue;
            }
            let groups: Vec<MulticastGroup> = n.groups().into_iter().collect();
            let upstream_due = now.since(n.last_upstream_announce) >= ANNOUNCE_PERIOD_MS;
            if upstream_due {
                n.last_upstream_announce = now;
            }
            let ups = self.network_upstreams(id);
            if upstream_due {
                for u in &ups {
                    self.send_likes(now, id, *u, &groups);
                }
            }
            let members: Vec<Address> = self.nets.joined[&id]
                .members
                .keys()
                .copied()
                .filter(|a| !ups.contains(a))
                .collect();
            for m in members {
                if self.gate(id, m) {
                    self.gate_passed(now, id, m);
                }
            }
        }
    }

    /// Quick tasks: retry held frames, flush expired multicasts.
    pub(super) fn network_quick_tasks(&mut self, now: Timestamp) {
        let ids: Vec<NetworkId> = self
            .nets
            .joined
            .iter()
            .filter(|(_, n)| !n.held.is_empty())
            .map(|(i, _)| *i)
            .collect();
        for id in ids {
            self.retry_held(now, id, None);
        }
        self.nets.multicast.pending.retain(|p| {
            now.since(p.created) < MULTICAST_TRANSMIT_TIMEOUT_MS && p.sent.len() < p.limit
        });
    }

    /// Housekeeping: forget stale subscriptions and controller authorizations.
    pub(super) fn network_housekeeping(&mut self, now: Timestamp) {
        let mc = &mut self.nets.multicast;
        for m in mc.members.values_mut() {
            m.retain(|_, t| now.since(*t) < LIKE_EXPIRE_MS);
        }
        mc.members.retain(|_, m| !m.is_empty());
        mc.entries = mc.members.values().map(BTreeMap::len).sum();
        self.nets
            .controller_authorized
            .retain(|_, t| now.since(*t) < CONTROLLER_AUTH_WINDOW_MS);
    }

    fn may_use_multicast_from(&self, id: NetworkId, src: Address) -> bool {
        (self.nets.joined.contains_key(&id) && self.gate(id, src))
            || self.is_root()
            || self.nets.controller_authorized.contains_key(&(id, src))
    }

    fn learn_member(&mut self, now: Timestamp, id: NetworkId, g: MulticastGroup, a: Address) {
        if a == self.address() {
            return;
        }
        let m = &mut self.nets.multicast;
        let group = m.members.entry((id, g)).or_default();
        if let Some(t) = group.get_mut(&a) {
            *t = now;
        } else if m.entries >= MAX_MULTICAST_ENTRIES {
            if group.is_empty() {
                m.members.remove(&(id, g));
            }
            self.drop_input(DropReason::TableFull);
            return;
        } else {
            group.insert(a, now);
            m.entries += 1;
        }
        // Pending multicasts for this group go to the new member.
        let mut sends = Vec::new();
        for p in &mut self.nets.multicast.pending {
            if p.network == id && p.group == g && p.sent.len() < p.limit && p.sent.insert(a) {
                sends.push((p.src, p.ethertype, p.payload.clone(), p.gather_limit));
            }
        }
        for (src, et, payload, gl) in sends {
            self.send_multicast_frame(now, id, a, g, src, et, &payload, gl);
        }
    }

    fn handle_like(&mut self, now: Timestamp, src: Address, payload: &[u8]) {
        for t in payload.chunks_exact(18) {
            let id = NetworkId(u64::from_be_bytes(t[..8].try_into().unwrap_or([0; 8])));
            let mut mac = [0u8; 6];
            mac.copy_from_slice(&t[8..14]);
            let g = MulticastGroup {
                mac: Mac::from_bytes(&mac),
                adi: u32::from_be_bytes(t[14..18].try_into().unwrap_or([0; 4])),
            };
            if self.may_use_multicast_from(id, src) {
                self.learn_member(now, id, g, src);
            }
        }
    }

    /// Members to tell a gatherer about: ourselves first if subscribed, then others at random.
    fn gather(
        &mut self,
        id: NetworkId,
        g: MulticastGroup,
        not: Address,
        limit: u32,
    ) -> (u32, Vec<Address>) {
        let mut out = Vec::new();
        let subscribed = self
            .nets
            .joined
            .get(&id)
            .is_some_and(|n| n.groups().contains(&g));
        if subscribed {
            out.push(self.address());
        }
        let mut known: Vec<Address> = self
            .nets
            .multicast
            .members
            .get(&(id, g))
            .map(|m| m.keys().copied().filter(|a| *a != not).collect())
            .unwrap_or_default();
        let total = known.len() as u32 + u32::from(subscribed);
        self.shuffle(&mut known);
        let max = (limit.min(65_535) as usize).min(1_900);
        for a in known {
            if out.len() >= max {
                break;
            }
            out.push(a);
        }
        out.truncate(max);
        (total, out)
    }

    fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let mut b = [0u8; 4];
            self.rng.fill(&mut b);
            let j = (u32::from_le_bytes(b) as usize) % (i + 1);
            v.swap(i, j);
        }
    }

    fn handle_gather(&mut self, now: Timestamp, src: Address, wire_id: u64, payload: &[u8]) {
        let mut r = Reader::new(payload);
        let (Ok(nwid), Ok(flags), Ok(mac), Ok(adi), Ok(limit)) = (
            r.u64(),
            r.u8(),
            r.array::<6>(),
            r.array::<4>(),
            r.array::<4>(),
        ) else {
            return self.drop_input(DropReason::Malformed);
        };
        let id = NetworkId(nwid);
        if flags & 0x01 != 0
            && let Ok(com) = Com::read(&mut r)
        {
            self.add_inline_com(now, src, &com);
        }
        let limit = u32::from_be_bytes(limit);
        if limit == 0 || !self.may_use_multicast_from(id, src) {
            return;
        }
        let g = MulticastGroup {
            mac: Mac::from_bytes(&mac),
            adi: u32::from_be_bytes(adi),
        };
        let (total, addrs) = self.gather(id, g, src, limit);
        if addrs.is_empty() {
            return;
        }
        let mut ok = vec![Verb::MulticastGather as u8];
        ok.extend_from_slice(&wire_id.to_be_bytes());
        ok.extend_from_slice(&id.0.to_be_bytes());
        ok.extend_from_slice(&g.mac.to_bytes());
        ok.extend_from_slice(&g.adi.to_be_bytes());
        ok.extend_from_slice(&total.to_be_bytes());
        ok.extend_from_slice(&(addrs.len() as u16).to_be_bytes());
        for a in addrs {
            ok.extend_from_slice(&a.to_bytes());
        }
        self.send(now, src, Verb::Ok, ok);
    }

    /// OK(MULTICAST_GATHER) or OK(MULTICAST_FRAME): learn the members listed.
    pub(super) fn handle_gather_ok(&mut self, now: Timestamp, frame_ok: bool, r: &mut Reader<'_>) {
        let (Ok(nwid), Ok(mac), Ok(adi)) = (r.u64(), r.array::<6>(), r.array::<4>()) else {
            return self.drop_input(DropReason::Malformed);
        };
        if frame_ok {
            let Ok(flags) = r.u8() else { return };
            if flags & 0x01 != 0 && Com::read(r).is_err() {
                return;
            }
            if flags & 0x02 == 0 {
                return;
            }
        }
        let (Ok(_total), Ok(n)) = (r.array::<4>(), r.u16()) else {
            return self.drop_input(DropReason::Malformed);
        };
        let id = NetworkId(nwid);
        if !self.nets.joined.contains_key(&id) {
            return;
        }
        let g = MulticastGroup {
            mac: Mac::from_bytes(&mac),
            adi: u32::from_be_bytes(adi),
        };
        for _ in 0..n {
            let Ok(a) = r.array::<5>() else { break };
            let a = Address::from_bytes(&a);
            self.learn_member(now, id, g, a);
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn send_multicast_frame(
        &mut self,
        now: Timestamp,
        id: NetworkId,
        to: Address,
        g: MulticastGroup,
        src: Option<Mac>,
        ethertype: u16,
        payload: &[u8],
        gather_limit: u32,
    ) {
        let Some(net) = self.nets.joined.get(&id) else {
            return;
        };
        if net.config.is_none() {
            return;
        }
        let frame = Frame {
            network: id,
            dst: g.mac,
            src: src.unwrap_or(net.mac),
            ethertype,
            payload: Vec::new(),
        };
        if !self.filter_out(now, id, Some(to), &frame, payload, true) {
            return;
        }
        self.push_credentials(now, id, to, false);
        let mut p = Vec::with_capacity(payload.len() + 40);
        p.extend_from_slice(&id.0.to_be_bytes());
        let mut flags = 0u8;
        if gather_limit > 0 {
            flags |= 0x02;
        }
        if src.is_some() {
            flags |= 0x04;
        }
        p.push(flags);
        if gather_limit > 0 {
            p.extend_from_slice(&gather_limit.to_be_bytes());
        }
        if let Some(s) = src {
            p.extend_from_slice(&s.to_bytes());
        }
        p.extend_from_slice(&g.mac.to_bytes());
        p.extend_from_slice(&g.adi.to_be_bytes());
        p.extend_from_slice(&ethertype.to_be_bytes());
        p.extend_from_slice(payload);
        self.send(now, to, Verb::MulticastFrame, p);
    }

    /// Sends a multicast to a group's members (§8.6 without replicators).
    fn multicast(
        &mut self,
        now: Timestamp,
        id: NetworkId,
        g: MulticastGroup,
        src: Option<Mac>,
        ethertype: u16,
        payload: &[u8],
    ) {
        let Some(cfg) = self.nets.joined.get(&id).and_then(|n| n.config.clone()) else {
            return;
        };
        let limit = cfg.multicast_limit as usize;
        let me = self.address();
        let mut known: Vec<Address> = self
            .nets
            .multicast
            .members
            .get(&(id, g))
            .map(|m| m.keys().copied().filter(|a| *a != me).collect())
            .unwrap_or_default();
        self.shuffle(&mut known);
        let bridges: Vec<Address> = cfg
            .specialists_with(config::SPECIALIST_ACTIVE_BRIDGE)
            .into_iter()
            .filter(|a| *a != me)
            .collect();
        let mut recipients: Vec<Address> = Vec::new();
        for a in bridges.iter().chain(known.iter()) {
            if recipients.len() >= limit {
                break;
            }
            if !recipients.contains(a) {
                recipients.push(*a);
            }
        }
        let gather_limit = if known.len() >= limit {
            1
        } else {
            (limit - known.len() + 1) as u32
        };
        if known.len() < limit {
            let key = (id, g);
            let last = self.nets.multicast.last_gather.get(&key).copied();
            if known.is_empty() || last.is_none_or(|t| now.since(t) >= EXPLICIT_GATHER_DELAY_MS) {
                self.nets.multicast.last_gather.insert(key, now);
                let mut targets = Vec::new();
                if let Some(root) = self.best_upstream(now, None) {
                    targets.push(root);
                }
                for a in self.network_upstreams(id) {
                    if !targets.contains(&a) && !self.upstreams.contains(&a) {
                        targets.push(a);
                    }
                }
                let com = cfg.com.clone();
                for t in targets.into_iter().take(16) {
                    let mut p = Vec::new();
                    p.extend_from_slice(&id.0.to_be_bytes());
                    p.push(u8::from(com.is_some()));
                    p.extend_from_slice(&g.mac.to_bytes());
                    p.extend_from_slice(&g.adi.to_be_bytes());
                    p.extend_from_slice(&gather_limit.to_be_bytes());
                    if let Some(c) = &com {
                        c.write(&mut p);
                    }
                    self.send(now, t, Verb::MulticastGather, p);
                }
            }
            let same_group = self
                .nets
                .multicast
                .pending
                .iter()
                .filter(|p| p.network == id && p.group == g)
                .count();
            if same_group >= TX_QUEUE_PER_GROUP
                && let Some(i) = self
                    .nets
                    .multicast
                    .pending
                    .iter()
                    .position(|p| p.network == id && p.group == g)
            {
                self.nets.multicast.pending.remove(i);
            }
            self.nets.multicast.pending.push(PendingMulticast {
                created: now,
                network: id,
                group: g,
                src,
                ethertype,
                payload: payload.to_vec(),
                limit,
                gather_limit,
                sent: recipients.iter().copied().collect(),
            });
        }
        for a in recipients {
            self.send_multicast_frame(now, id, a, g, src, ethertype, payload, gather_limit);
        }
    }

    // ----- frames out ---------------------------------------------------------------------------

    /// Outbound filter; sends any rule copies unless `no_copy`. Returns whether to send.
    fn filter_out(
        &mut self,
        now: Timestamp,
        id: NetworkId,
        dest: Option<Address>,
        f: &Frame,
        payload: &[u8],
        no_copy: bool,
    ) -> bool {
        let seed = self.frame_seed();
        let Some(net) = self.nets.joined.get(&id) else {
            return false;
        };
        let Some(cfg) = &net.config else { return false };
        let me = self.identity.address();
        let info = FrameInfo {
            inbound: false,
            me,
            source: me,
            dest,
            mac_source: f.src,
            mac_dest: f.dst,
            ethertype: f.ethertype,
            vlan_id: 0,
            payload,
            random_seed: seed,
        };
        let ctx = Ctx {
            local: cfg,
            remote: dest.and_then(|d| net.members.get(&d)),
            inbound: false,
        };
        let caps = cfg.capabilities.iter().map(|c| c.rules.as_slice());
        let unsupported = cfg.flags & config::FLAG_RULES_RESULT_OF_UNSUPPORTED_MATCH != 0;
        let d = filter::filter_outbound(&cfg.rules, caps, &info, &ctx, unsupported);
        if !no_copy {
            for c in &d.copies {
                self.send_ext_copy(now, c.to, f, payload, c.length, c.ext_frame_flags(false));
            }
        }
        if let Some(r) = d.redirect {
            self.send_ext_copy(
                now,
                r,
                f,
                payload,
                0,
                filter::EXT_FRAME_FLAGS_REDIRECT_OUTBOUND,
            );
            return false;
        }
        d.accept
    }

    fn send_ext_copy(
        &mut self,
        now: Timestamp,
        to: Address,
        f: &Frame,
        payload: &[u8],
        len: usize,
        flags: u8,
    ) {
        let id = f.network;
        let n = if len == 0 {
            payload.len()
        } else {
            payload.len().min(len)
        };
        let mut p = Vec::with_capacity(n + 23);
        p.extend_from_slice(&id.0.to_be_bytes());
        p.push(flags);
        p.extend_from_slice(&f.dst.to_bytes());
        p.extend_from_slice(&f.src.to_bytes());
        p.extend_from_slice(&f.ethertype.to_be_bytes());
        p.extend_from_slice(&payload[..n]);
        self.send(now, to, Verb::ExtFrame, p);
    }

    /// A frame from the local stack (§7.3 of the notes): unicast to a member, multicast to the
    /// group, to a bridge, or back to ourselves.
    ///
    /// # Errors
    /// Why the frame was not sent (also counted).
    pub fn send_frame(&mut self, now: Timestamp, f: Frame) -> Result<(), FrameError> {
        let id = f.network;
        let Some(net) = self.nets.joined.get(&id) else {
            return Err(FrameError::NotJoined);
        };
        let Some(cfg) = &net.config else {
            return Err(FrameError::NotConfigured);
        };
        let my_mac = net.mac;
        let me = self.address();
        let bridged = f.src != my_mac;
        if bridged && !cfg.is_active_bridge(me) {
            return Err(self.frame_drop(FrameError::NotBridge));
        }
        if f.payload.len() > self.max_frame_payload() {
            return Err(self.frame_drop(FrameError::TooLarge));
        }
        if f.dst.is_multicast() {
            let mut group = MulticastGroup { mac: f.dst, adi: 0 };
            if f.dst == Mac::BROADCAST {
                if let Some(target) = arp_request_target(f.ethertype, &f.payload) {
                    group = MulticastGroup::for_arp(target);
                } else if !cfg.broadcast_enabled() {
                    return Err(self.frame_drop(FrameError::BroadcastDisabled));
                }
            }
            if cfg.ndp_emulation()
                && let Some(na) = self.emulate_ndp(cfg, &f, my_mac)
            {
                self.nets.frames.push_back(na);
                return Ok(());
            }
            if cfg.multicast_limit == 0 {
                return Err(self.frame_drop(FrameError::MulticastDisabled));
            }
            if !self.filter_out(now, id, None, &f, &f.payload, false) {
                return Err(self.frame_drop(FrameError::Filtered));
            }
            self.multicast(
                now,
                id,
                group,
                bridged.then_some(f.src),
                f.ethertype,
                &f.payload,
            );
            return Ok(());
        }
        if f.dst == my_mac {
            self.nets.frames.push_back(f);
            return Ok(());
        }
        if f.dst.to_bytes()[0] == my_mac.to_bytes()[0] {
            let Some(peer) = id.node_of(f.dst) else {
                return Err(self.frame_drop(FrameError::NoRoute));
            };
            if !self.filter_out(now, id, Some(peer), &f, &f.payload, false) {
                return Err(self.frame_drop(FrameError::Filtered));
            }
            self.push_credentials(now, id, peer, false);
            if bridged {
                let mut p = Vec::with_capacity(f.payload.len() + 23);
                p.extend_from_slice(&id.0.to_be_bytes());
                p.push(0);
                p.extend_from_slice(&f.dst.to_bytes());
                p.extend_from_slice(&f.src.to_bytes());
                p.extend_from_slice(&f.ethertype.to_be_bytes());
                p.extend_from_slice(&f.payload);
                self.send(now, peer, Verb::ExtFrame, p);
            } else {
                let mut p = Vec::with_capacity(f.payload.len() + 10);
                p.extend_from_slice(&id.0.to_be_bytes());
                p.extend_from_slice(&f.ethertype.to_be_bytes());
                p.extend_from_slice(&f.payload);
                self.send(now, peer, Verb::Frame, p);
            }
            return Ok(());
        }
        // Another MAC: via the bridge that has it, else the active bridges.
        if !self.filter_out(now, id, None, &f, &f.payload, false) {
            return Err(self.frame_drop(FrameError::Filtered));
        }
        let net = &self.nets.joined[&id];
        let Some(cfg) = &net.config else {
            return Err(FrameError::NotConfigured);
        };
        let targets: Vec<Address> = match net.bridge_routes.get(&f.dst) {
            Some(b) if *b != me && cfg.is_active_bridge(*b) => vec![*b],
            _ => cfg
                .specialists_with(config::SPECIALIST_ACTIVE_BRIDGE)
                .into_iter()
                .filter(|a| *a != me)
                .take(32)
                .collect(),
        };
        if targets.is_empty() {
            return Err(self.frame_drop(FrameError::NoRoute));
        }
        for t in targets {
            if !self.filter_out(now, id, Some(t), &f, &f.payload, true) {
                continue;
            }
            self.push_credentials(now, id, t, false);
            let mut p = Vec::with_capacity(f.payload.len() + 23);
            p.extend_from_slice(&id.0.to_be_bytes());
            p.push(0);
            p.extend_from_slice(&f.dst.to_bytes());
            p.extend_from_slice(&f.src.to_bytes());
            p.extend_from_slice(&f.ethertype.to_be_bytes());
            p.extend_from_slice(&f.payload);
            self.send(now, t, Verb::ExtFrame, p);
        }
        Ok(())
    }

    fn frame_drop(&mut self, e: FrameError) -> FrameError {
        *self.stats.frames_dropped.entry(e).or_insert(0) += 1;
        e
    }

    /// NDP emulation: an NS for an rfc4193/6plane address of another member is answered
    /// locally with a forged NA (nothing goes on the wire).
    fn emulate_ndp(&self, cfg: &NetworkConfig, f: &Frame, my_mac: Mac) -> Option<Frame> {
        let p = &f.payload;
        if f.ethertype != ETHERTYPE_IPV6 || p.len() < 64 || p[6] != 58 || p[40] != 135 {
            return None;
        }
        let mut t = [0u8; 16];
        t.copy_from_slice(&p[48..64]);
        let target = Ipv6Addr::from(t);
        let owner = cfg.emulated_v6_prefix_owner(target)?;
        if owner == self.address() {
            return None;
        }
        // Our own managed address with the same scheme is the NA's destination.
        let ours = cfg.static_ips.iter().find_map(|s| match s.ip {
            IpAddr::V6(a)
                if (s.bits == 88 && a.octets()[..11] == t[..11])
                    || (s.bits == 40 && a.octets()[..5] == t[..5]) =>
            {
                Some(a)
            }
            _ => None,
        })?;
        let peer_mac = f.network.mac(owner);
        let mut na = Vec::with_capacity(72);
        // IPv6 header
        na.extend_from_slice(&[0x60, 0, 0, 0]);
        na.extend_from_slice(&32u16.to_be_bytes());
        na.push(58);
        na.push(255);
        na.extend_from_slice(&t);
        na.extend_from_slice(&ours.octets());
        // ICMPv6 NA
        let icmp_start = na.len();
        na.extend_from_slice(&[136, 0, 0, 0]);
        na.extend_from_slice(&[0x60, 0, 0, 0]);
        na.extend_from_slice(&t);
        na.extend_from_slice(&[2, 1]);
        na.extend_from_slice(&peer_mac.to_bytes());
        let sum = icmpv6_checksum(&t, &ours.octets(), &na[icmp_start..]);
        na[icmp_start + 2..icmp_start + 4].copy_from_slice(&sum.to_be_bytes());
        let _ = my_mac;
        Some(Frame {
            network: f.network,
            dst: f.src,
            src: peer_mac,
            ethertype: ETHERTYPE_IPV6,
            payload: na,
        })
    }
}

fn arp_request_target(ethertype: u16, p: &[u8]) -> Option<std::net::Ipv4Addr> {
    if ethertype != ETHERTYPE_ARP || p.len() < 28 {
        return None;
    }
    if p[2..4] != [0x08, 0x00] || p[4] != 6 || p[5] != 4 || p[6..8] != [0, 1] {
        return None;
    }
    Some(std::net::Ipv4Addr::new(p[24], p[25], p[26], p[27]))
}

/// The ICMPv6 checksum over the pseudo-header and `icmp` (checksum field zero).
#[must_use]
pub fn icmpv6_checksum(src: &[u8; 16], dst: &[u8; 16], icmp: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    let mut add = |b: &[u8]| {
        for c in b.chunks(2) {
            let w = if c.len() == 2 {
                u16::from_be_bytes([c[0], c[1]])
            } else {
                u16::from_be_bytes([c[0], 0])
            };
            sum += u32::from(w);
        }
    };
    add(src);
    add(dst);
    add(&(icmp.len() as u32).to_be_bytes());
    add(&[0, 0, 0, 58]);
    add(icmp);
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}
