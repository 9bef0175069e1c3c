//! A network's configuration as its controller issues it (the netconfig dictionary), and the
//! signed chunks it travels in.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use crate::address::Address;
use crate::cursor::{Reader, WireError};
use crate::dictionary::Dictionary;
use crate::identity::Identity;
use crate::inet::InetAddress;
use crate::network::NetworkId;
use crate::network::credentials::{Capability, Com, Coo, Tag};
use crate::network::rules::{self, Rule};

/// Netconfig format version written (members need ≥ 6).
pub(crate) const CONFIG_VERSION: u64 = 7;
/// Default MTU of a network.
pub(crate) const DEFAULT_MTU: u16 = 2800;
/// Smallest MTU a config may set.
pub(crate) const MIN_MTU: u16 = 1280;
/// Largest MTU a config may set.
pub(crate) const MAX_MTU: u16 = 10000;
/// Most bytes kept of a network's name.
pub(crate) const MAX_NAME_LEN: usize = 127;
/// Most routes kept.
pub(crate) const MAX_ROUTES: usize = 128;
/// Most static (managed) IPs kept.
pub(crate) const MAX_STATIC_IPS: usize = 32;
/// Most specialists kept.
pub(crate) const MAX_SPECIALISTS: usize = 256;
/// Most capabilities kept.
pub(crate) const MAX_CAPABILITIES: usize = 128;
/// Most tags kept.
pub(crate) const MAX_TAGS: usize = 128;
/// Most certificates of ownership kept.
pub(crate) const MAX_COOS: usize = 4;
/// Largest assembled netconfig dictionary accepted (stock 1.8.4 is the smaller of the two).
pub(crate) const MAX_DICT_LEN: usize = 422_527;

/// Flag: ff:ff:ff:ff:ff:ff frames allowed.
pub(crate) const FLAG_ENABLE_BROADCAST: u64 = 0x02;
/// Flag: emulate IPv6 NDP for rfc4193 and 6plane addresses.
pub(crate) const FLAG_ENABLE_IPV6_NDP_EMULATION: u64 = 0x04;
/// Flag: what an unknown MATCH rule evaluates to.
pub(crate) const FLAG_RULES_RESULT_OF_UNSUPPORTED_MATCH: u64 = 0x08;

/// Specialist role: active bridge.
pub(crate) const SPECIALIST_ACTIVE_BRIDGE: u64 = 0x0000_0200_0000_0000;
/// Specialist role: anchor.
pub(crate) const SPECIALIST_ANCHOR: u64 = 0x0000_0400_0000_0000;
/// Specialist role: multicast replicator.
pub(crate) const SPECIALIST_MULTICAST_REPLICATOR: u64 = 0x0000_0800_0000_0000;

/// Default credential time window a controller uses (30 minutes).
#[cfg(test)]
const DEFAULT_CREDENTIAL_MAX_DELTA: i64 = 1_800_000;
/// Largest credential time window (also what ad-hoc networks use).
pub(crate) const MAX_CREDENTIAL_MAX_DELTA: i64 = 7_200_000;

/// The metadata a member sends with a config request (stock 1.14.1's fields and limits),
/// announcing software version `(major, minor, revision)`.
#[must_use]
pub fn request_metadata(software_version: (u8, u8, u16)) -> Dictionary {
    let (major, minor, revision) = software_version;
    let mut d = Dictionary::new();
    d.add_u64("v", CONFIG_VERSION);
    d.add_u64("vend", 1);
    d.add_u64("pv", u64::from(crate::packet::PROTOCOL_VERSION));
    d.add_u64("majv", u64::from(major));
    d.add_u64("minv", u64::from(minor));
    d.add_u64("revv", u64::from(revision));
    d.add_u64("mr", 1024);
    d.add_u64("mc", 128);
    d.add_u64("mcr", 64);
    d.add_u64("mt", 128);
    d.add_u64("f", 0);
    d.add_u64("revr", 1);
    d
}

/// Private (members need a certificate of membership) or public.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum NetworkType {
    /// Members must hold an agreeing certificate of membership.
    #[default]
    Private,
    /// Anybody may join and send.
    Public,
}

/// An IP address with a prefix length (a managed address or a route target).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IpPrefix {
    /// The address.
    pub ip: IpAddr,
    /// Prefix length in bits.
    pub bits: u8,
}

impl IpPrefix {
    fn write(&self, out: &mut Vec<u8>) {
        InetAddress(Some(SocketAddr::new(self.ip, u16::from(self.bits)))).write(out);
    }

    fn read(r: &mut Reader<'_>) -> Result<Option<Self>, WireError> {
        Ok(InetAddress::read(r)?.0.map(|s| Self {
            ip: s.ip(),
            bits: s.port().min(255) as u8,
        }))
    }

    /// Whether `ip` is within this prefix.
    #[must_use]
    pub fn contains(&self, ip: IpAddr) -> bool {
        let bits = u32::from(self.bits);
        match (self.ip, ip) {
            (IpAddr::V4(a), IpAddr::V4(b)) => {
                same_leading_bits(u32::from(a).into(), u32::from(b).into(), bits, 32)
            }
            (IpAddr::V6(a), IpAddr::V6(b)) => same_leading_bits(a.into(), b.into(), bits, 128),
            _ => false,
        }
    }
}

/// Whether the `width`-bit numbers `a` and `b` agree in their leading `bits` bits (all of them
/// when `bits` exceeds `width`).
fn same_leading_bits(a: u128, b: u128, bits: u32, width: u32) -> bool {
    let bits = bits.min(width);
    if bits == 0 {
        return true;
    }
    let shift = width - bits;
    a >> shift == b >> shift
}

impl std::fmt::Display for IpPrefix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.ip, self.bits)
    }
}

/// A managed route.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Route {
    /// Destination network.
    pub target: IpPrefix,
    /// Gateway (None = on the network itself).
    pub via: Option<IpAddr>,
    /// Flags (none defined).
    pub flags: u16,
    /// Metric.
    pub metric: u16,
}

/// DNS settings pushed to members.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Dns {
    /// Search domain (≤ 127 bytes).
    pub domain: String,
    /// Up to 4 servers.
    pub servers: Vec<IpAddr>,
}

impl Dns {
    fn write(&self, out: &mut Vec<u8>) {
        let mut domain = [0u8; 128];
        let d = truncate_utf8(&self.domain, 127).as_bytes();
        domain[..d.len()].copy_from_slice(d);
        out.extend_from_slice(&domain);
        for i in 0..4 {
            let a = self.servers.get(i).map(|ip| SocketAddr::new(*ip, 0));
            InetAddress(a).write(out);
        }
    }

    fn read(blob: &[u8]) -> Result<Self, WireError> {
        let mut r = Reader::new(blob);
        let domain: [u8; 128] = r.array()?;
        let end = domain.iter().position(|&b| b == 0).unwrap_or(127);
        let mut servers = Vec::new();
        for _ in 0..4 {
            if let Some(s) = InetAddress::read(&mut r)?.0 {
                servers.push(s.ip());
            }
        }
        // As the name: invalid UTF-8 grows into U+FFFD, so cut again after converting.
        let domain = String::from_utf8_lossy(&domain[..end]);
        Ok(Self {
            domain: truncate_utf8(&domain, 127).to_owned(),
            servers,
        })
    }
}

/// Single sign-on settings (carried, not acted upon).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub(crate) struct Sso {
    /// 0 implicit, 1 OIDC.
    pub(crate) version: u64,
    /// Whether SSO is on.
    pub(crate) enabled: bool,
    /// Authentication URL.
    pub(crate) authentication_url: String,
    /// Authentication expiry (ms).
    pub(crate) authentication_expiry: i64,
}

/// Why a netconfig was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// No or an old `v` (legacy configs are not supported, as in stock 1.x).
    #[error("netconfig version {0} is not supported (need ≥ 6)")]
    Version(u64),
    /// No network ID.
    #[error("netconfig has no network ID")]
    NoNetwork,
    /// No issued-to address.
    #[error("netconfig has no issued-to address")]
    NoIssuedTo,
    /// A binary field does not parse.
    #[error("netconfig field {0} is malformed: {1}")]
    Field(&'static str, String),
}

/// A network configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetworkConfig {
    /// Network.
    pub network_id: NetworkId,
    /// Controller time of issue (ms).
    pub timestamp: i64,
    /// Largest |credential timestamp − `timestamp`| for peers' credentials to count.
    pub credential_max_delta: i64,
    /// Revision counter.
    pub revision: u64,
    /// The member this config is for.
    pub(crate) issued_to: Address,
    /// Remote trace target.
    pub remote_trace_target: Option<Address>,
    /// Remote trace level.
    pub remote_trace_level: u8,
    /// `FLAG_*` bits.
    pub flags: u64,
    /// Most recipients of one multicast (0 = multicast off).
    pub multicast_limit: u32,
    /// Private or public.
    pub network_type: NetworkType,
    /// Short name.
    pub name: String,
    /// MTU (clamped to [1280, 10000]).
    pub mtu: u16,
    /// Certificate of membership.
    pub com: Option<Com>,
    /// Capabilities, by ID.
    pub capabilities: Vec<Capability>,
    /// Tags, by ID.
    pub tags: Vec<Tag>,
    /// Certificates of ownership (≤ 4).
    pub coos: Vec<Coo>,
    /// Specialists (address | role bits).
    pub specialists: Vec<u64>,
    /// Routes.
    pub routes: Vec<Route>,
    /// Managed addresses.
    pub static_ips: Vec<IpPrefix>,
    /// Base rule table (empty drops everything).
    pub rules: Vec<Rule>,
    /// DNS.
    pub dns: Dns,
    /// SSO.
    pub(crate) sso: Sso,
}

impl NetworkConfig {
    /// An empty private config for `network_id` issued to `issued_to` (rules empty: drops all).
    #[must_use]
    pub fn new(network_id: NetworkId, issued_to: Address) -> Self {
        Self {
            network_id,
            timestamp: 0,
            credential_max_delta: 0,
            revision: 0,
            issued_to,
            remote_trace_target: None,
            remote_trace_level: 0,
            flags: 0,
            multicast_limit: 0,
            network_type: NetworkType::Private,
            name: String::new(),
            mtu: DEFAULT_MTU,
            com: None,
            capabilities: Vec::new(),
            tags: Vec::new(),
            coos: Vec::new(),
            specialists: Vec::new(),
            routes: Vec::new(),
            static_ips: Vec::new(),
            rules: Vec::new(),
            dns: Dns::default(),
            sso: Sso::default(),
        }
    }

    /// Whether ff:ff:ff:ff:ff:ff frames are allowed.
    #[must_use]
    pub fn broadcast_enabled(&self) -> bool {
        self.flags & FLAG_ENABLE_BROADCAST != 0
    }

    /// Whether NDP emulation is on.
    #[must_use]
    pub fn ndp_emulation(&self) -> bool {
        self.flags & FLAG_ENABLE_IPV6_NDP_EMULATION != 0
    }

    /// Whether `address` is an active bridge.
    #[must_use]
    pub(crate) fn is_active_bridge(&self, address: Address) -> bool {
        self.specialists
            .iter()
            .any(|s| s & 0xff_ffff_ffff == address.to_u64() && s & SPECIALIST_ACTIVE_BRIDGE != 0)
    }

    /// Addresses of specialists having any of `roles`.
    #[must_use]
    pub fn specialists_with(&self, roles: u64) -> Vec<Address> {
        self.specialists
            .iter()
            .filter(|s| *s & roles != 0)
            .map(|s| Address::from_u64_truncating(*s))
            .collect()
    }

    /// Our rfc4193 or 6plane address that shares its prefix with `ip`, if any (for NDP
    /// emulation: such addresses resolve by computation).
    #[must_use]
    pub(crate) fn emulated_v6_prefix_owner(&self, ip: Ipv6Addr) -> Option<Address> {
        let b = ip.octets();
        for p in &self.static_ips {
            let IpAddr::V6(mine) = p.ip else { continue };
            let m = mine.octets();
            if p.bits == 88 && m[0] == 0xfd && m[9] == 0x99 && m[10] == 0x93 && b[..11] == m[..11] {
                return Address::from_bytes(&[b[11], b[12], b[13], b[14], b[15]]).into();
            }
            if p.bits == 40 && m[0] == 0xfc && b[..5] == m[..5] {
                return Address::from_bytes(&[b[5], b[6], b[7], b[8], b[9]]).into();
            }
        }
        None
    }

    /// The netconfig dictionary (in stock 1.14.1's key order).
    #[must_use]
    pub(crate) fn to_dictionary(&self) -> Dictionary {
        let mut d = Dictionary::new();
        d.add_u64("v", CONFIG_VERSION);
        d.add_u64("nwid", self.network_id.0);
        d.add_i64("ts", self.timestamp);
        d.add_i64("ctmd", self.credential_max_delta);
        d.add_u64("r", self.revision);
        d.add("id", self.issued_to.to_string().as_bytes());
        let tt = self
            .remote_trace_target
            .map_or_else(|| "0000000000".to_owned(), |a| a.to_string());
        d.add("tt", tt.as_bytes());
        d.add_u64("tl", u64::from(self.remote_trace_level));
        d.add_u64("f", self.flags);
        d.add_u64("ml", u64::from(self.multicast_limit));
        d.add_u64(
            "t",
            match self.network_type {
                NetworkType::Private => 0,
                NetworkType::Public => 1,
            },
        );
        let name = truncate_utf8(&self.name, MAX_NAME_LEN);
        d.add("n", name.as_bytes());
        d.add_u64("mtu", u64::from(self.mtu));
        let mut tmp = Vec::new();
        if let Some(com) = &self.com {
            com.write(&mut tmp);
            d.add("C", &tmp);
        }
        add_packed(&mut d, "CAP", &self.capabilities, Capability::write);
        add_packed(&mut d, "TAG", &self.tags, Tag::write);
        add_packed(&mut d, "COO", self.coos.iter().take(MAX_COOS), Coo::write);
        add_packed(&mut d, "S", &self.specialists, |s, out| {
            out.extend_from_slice(&s.to_be_bytes());
        });
        add_packed(&mut d, "RT", &self.routes, |r, out| {
            r.target.write(out);
            InetAddress(r.via.map(|v| SocketAddr::new(v, 0))).write(out);
            out.extend_from_slice(&r.flags.to_be_bytes());
            out.extend_from_slice(&r.metric.to_be_bytes());
        });
        add_packed(&mut d, "I", &self.static_ips, IpPrefix::write);
        if !self.rules.is_empty() {
            tmp.clear();
            rules::write_rules(&mut tmp, &self.rules);
            d.add("R", &tmp);
        }
        tmp.clear();
        self.dns.write(&mut tmp);
        d.add("DNS", &tmp);
        d.add_u64("ssov", self.sso.version);
        d.add_bool("ssoe", self.sso.enabled);
        if self.sso.enabled && self.sso.version == 0 {
            if !self.sso.authentication_url.is_empty() {
                d.add("aurl", self.sso.authentication_url.as_bytes());
            }
            d.add_i64("aexpt", self.sso.authentication_expiry);
        }
        d
    }

    /// Parses a netconfig dictionary as a member does.
    ///
    /// # Errors
    /// Missing version, network or issued-to; a malformed COM or COO blob (malformed
    /// capability and tag blobs are truncated at the first bad entry, as stock does).
    pub(crate) fn from_dictionary(d: &Dictionary) -> Result<Self, ConfigError> {
        let version = d.get_u64("v").unwrap_or(0);
        if version < 6 {
            return Err(ConfigError::Version(version));
        }
        let nwid = d.get_u64("nwid").unwrap_or(0);
        if nwid == 0 {
            return Err(ConfigError::NoNetwork);
        }
        // An address is 40 bits: a value whose low 40 bits are zero names no one.
        let issued = Address::from_u64_truncating(d.get_u64("id").unwrap_or(0));
        if issued.to_u64() == 0 {
            return Err(ConfigError::NoIssuedTo);
        }
        let mut c = Self::new(NetworkId(nwid), issued);
        c.timestamp = d.get_i64("ts").unwrap_or(0);
        c.credential_max_delta = d.get_i64("ctmd").unwrap_or(0);
        c.revision = d.get_u64("r").unwrap_or(0);
        c.remote_trace_target = d
            .get_u64("tt")
            .filter(|t| *t & 0xff_ffff_ffff != 0)
            .map(Address::from_u64_truncating);
        c.remote_trace_level = d.get_u64("tl").unwrap_or(0).min(255) as u8;
        c.multicast_limit = d.get_u64("ml").unwrap_or(0).min(u64::from(u32::MAX)) as u32;
        if let Some(n) = d.get("n") {
            // Invalid UTF-8 becomes U+FFFD (3 bytes each), so cut again after converting: the
            // name stays within MAX_NAME_LEN bytes, as written.
            let n = String::from_utf8_lossy(&n[..n.len().min(MAX_NAME_LEN)]);
            c.name = truncate_utf8(&n, MAX_NAME_LEN).to_owned();
        }
        c.mtu = d
            .get_u64("mtu")
            .unwrap_or(u64::from(DEFAULT_MTU))
            .clamp(u64::from(MIN_MTU), u64::from(MAX_MTU)) as u16;
        c.flags = d.get_u64("f").unwrap_or(0);
        c.network_type = if d.get_u64("t").unwrap_or(0) == 1 {
            NetworkType::Public
        } else {
            NetworkType::Private
        };
        let bad =
            |what: &'static str, e: &dyn std::fmt::Display| ConfigError::Field(what, e.to_string());
        if let Some(blob) = d.get("C") {
            let mut r = Reader::new(blob);
            c.com = Some(Com::read(&mut r).map_err(|e| bad("C", &e))?);
        }
        if let Some(blob) = d.get("CAP") {
            c.capabilities = read_packed(blob, MAX_CAPABILITIES, Capability::read);
            c.capabilities.sort_by_key(|x| x.id);
        }
        if let Some(blob) = d.get("TAG") {
            c.tags = read_packed(blob, MAX_TAGS, Tag::read);
            c.tags.sort_by_key(|x| x.id);
        }
        if let Some(blob) = d.get("COO") {
            let mut r = Reader::new(blob);
            while !r.is_empty() {
                let coo = Coo::read(&mut r).map_err(|e| bad("COO", &e))?;
                if c.coos.len() < MAX_COOS {
                    c.coos.push(coo);
                }
            }
        }
        if let Some(blob) = d.get("S") {
            for ch in blob.chunks_exact(8).take(MAX_SPECIALISTS) {
                let mut b = [0u8; 8];
                b.copy_from_slice(ch);
                c.specialists.push(u64::from_be_bytes(b));
            }
        }
        if let Some(blob) = d.get("RT") {
            let mut r = Reader::new(blob);
            while !r.is_empty() && c.routes.len() < MAX_ROUTES {
                let route = (|| -> Result<Option<Route>, WireError> {
                    let target = IpPrefix::read(&mut r)?;
                    let via = InetAddress::read(&mut r)?.0.map(|s| s.ip());
                    let flags = r.u16()?;
                    let metric = r.u16()?;
                    Ok(target.map(|target| Route {
                        target,
                        via,
                        flags,
                        metric,
                    }))
                })()
                .map_err(|e| bad("RT", &e))?;
                c.routes.extend(route);
            }
        }
        if let Some(blob) = d.get("I") {
            let mut r = Reader::new(blob);
            while !r.is_empty() && c.static_ips.len() < MAX_STATIC_IPS {
                if let Some(ip) = IpPrefix::read(&mut r).map_err(|e| bad("I", &e))? {
                    c.static_ips.push(ip);
                }
            }
        }
        if let Some(blob) = d.get("R") {
            c.rules = rules::parse_rules(blob).map_err(|e| bad("R", &e))?;
        }
        if let Some(blob) = d.get("DNS") {
            c.dns = Dns::read(blob).map_err(|e| bad("DNS", &e))?;
        }
        c.sso.version = d.get_u64("ssov").unwrap_or(0);
        c.sso.enabled = d.get_bool("ssoe").unwrap_or(false);
        // As written: the implicit flow's URL and expiry only with SSO version 0.
        if c.sso.enabled && c.sso.version == 0 {
            c.sso.authentication_url = d.get_str("aurl").unwrap_or_default();
            c.sso.authentication_expiry = d.get_i64("aexpt").unwrap_or(0);
        }
        Ok(c)
    }

    /// The dictionary text.
    #[must_use]
    pub fn to_bytes(&self) -> Vec<u8> {
        self.to_dictionary().to_bytes()
    }

    /// Parses dictionary text.
    ///
    /// # Errors
    /// As `Self::from_dictionary`.
    pub fn from_bytes(b: &[u8]) -> Result<Self, ConfigError> {
        Self::from_dictionary(&Dictionary::parse(b))
    }
}

/// The credentials packed back to back in `blob`, at most `max`: reading stops at the first
/// malformed one.
fn read_packed<T, E>(
    blob: &[u8],
    max: usize,
    read: impl Fn(&mut Reader<'_>) -> Result<T, E>,
) -> Vec<T> {
    let mut r = Reader::new(blob);
    let mut out = Vec::new();
    while !r.is_empty() && out.len() < max {
        match read(&mut r) {
            Ok(x) => out.push(x),
            Err(_) => break,
        }
    }
    out
}

/// Adds `key` holding what `write` makes of each of `items`, back to back (the counterpart of
/// [`read_packed`]); no entry when that is empty.
fn add_packed<T>(
    d: &mut Dictionary,
    key: &str,
    items: impl IntoIterator<Item = T>,
    write: impl Fn(T, &mut Vec<u8>),
) {
    let mut blob = Vec::new();
    for item in items {
        write(item, &mut blob);
    }
    if !blob.is_empty() {
        d.add(key, &blob);
    }
}

fn truncate_utf8(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Flag of a config chunk: forward it to the network's other members.
pub const CHUNK_FLAG_FAST_PROPAGATE: u8 = 0x01;
/// Largest dictionary slice in one chunk (as stock controllers cut them).
pub(crate) const MAX_CHUNK_LEN: usize = 10024 - (28 + 256);

/// One signed piece of a netconfig.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigChunk<'a> {
    /// Network.
    pub(crate) network_id: NetworkId,
    /// Dictionary bytes [index, index + len).
    pub(crate) data: &'a [u8],
    /// `CHUNK_FLAG_*`.
    pub(crate) flags: u8,
    /// Same for all chunks of one update.
    pub(crate) update_id: u64,
    /// Length of the whole dictionary.
    pub(crate) total_len: u32,
    /// Byte offset of this chunk.
    pub(crate) index: u32,
    /// Controller signature over everything before it (None in the legacy unsigned form).
    pub(crate) signature: Option<[u8; 96]>,
    /// The signed bytes (network ID through index).
    pub(crate) signed: &'a [u8],
    /// The whole chunk as received (network ID through signature), for forwarding.
    pub raw: &'a [u8],
}

impl<'a> ConfigChunk<'a> {
    /// Parses a chunk (the payload of NETWORK_CONFIG, or OK(NETWORK_CONFIG_REQUEST) after the
    /// OK header).
    ///
    /// # Errors
    /// Truncated, inconsistent (index + len > total) or wrongly typed signature.
    pub fn parse(payload: &'a [u8]) -> Result<Self, WireError> {
        let mut r = Reader::new(payload);
        let network_id = NetworkId(r.u64()?);
        let len = usize::from(r.u16()?);
        let data = r.bytes(len)?;
        if r.is_empty() {
            return Ok(Self {
                network_id,
                data,
                flags: 0,
                update_id: 0,
                total_len: len as u32,
                index: 0,
                signature: None,
                signed: &payload[..r.position()],
                raw: &payload[..r.position()],
            });
        }
        let flags = r.u8()?;
        let update_id = r.u64()?;
        let total_len = u32::from_be_bytes(r.array()?);
        let index = u32::from_be_bytes(r.array()?);
        let signed_end = r.position();
        if u64::from(index) + len as u64 > u64::from(total_len) || total_len as usize > MAX_DICT_LEN
        {
            return Err(WireError::BadValue {
                what: "config chunk range",
                value: u64::from(index) + len as u64,
            });
        }
        let sig_type = r.u8()?;
        let sig_len = r.u16()?;
        if sig_type != 1 || sig_len != 96 {
            return Err(WireError::BadValue {
                what: "config chunk signature",
                value: u64::from(sig_type) << 16 | u64::from(sig_len),
            });
        }
        let signature: [u8; 96] = r.array()?;
        Ok(Self {
            network_id,
            data,
            flags,
            update_id,
            total_len,
            index,
            signature: Some(signature),
            signed: &payload[..signed_end],
            raw: &payload[..r.position()],
        })
    }

    /// Whether the controller's signature verifies.
    #[must_use]
    pub fn verify(&self, controller: &Identity) -> bool {
        self.signature
            .is_some_and(|s| controller.verify(self.signed, &s))
    }

    /// An ID for duplicate detection: the first 16 signature bytes folded to 8.
    #[must_use]
    pub fn chunk_id(&self) -> u64 {
        let Some(s) = self.signature else { return 0 };
        let mut a = [0u8; 8];
        let mut b = [0u8; 8];
        a.copy_from_slice(&s[..8]);
        b.copy_from_slice(&s[8..16]);
        u64::from_ne_bytes(a) ^ u64::from_ne_bytes(b)
    }
}

/// Splits a netconfig into signed chunk payloads (controller side).
///
/// # Errors
/// The signer has no secret key.
pub fn make_chunks(
    network_id: NetworkId,
    dict: &[u8],
    update_id: u64,
    flags: u8,
    signer: &Identity,
) -> Result<Vec<Vec<u8>>, crate::identity::IdentityError> {
    let mut out = Vec::new();
    let mut index = 0usize;
    loop {
        let n = (dict.len() - index).min(MAX_CHUNK_LEN);
        let mut p = Vec::with_capacity(n + 128);
        p.extend_from_slice(&network_id.0.to_be_bytes());
        p.extend_from_slice(&(n as u16).to_be_bytes());
        p.extend_from_slice(&dict[index..index + n]);
        p.push(flags);
        p.extend_from_slice(&update_id.to_be_bytes());
        p.extend_from_slice(&(dict.len() as u32).to_be_bytes());
        p.extend_from_slice(&(index as u32).to_be_bytes());
        let sig = signer.sign(&p)?;
        p.push(1);
        p.extend_from_slice(&96u16.to_be_bytes());
        p.extend_from_slice(&sig);
        out.push(p);
        index += n;
        if index >= dict.len() {
            break;
        }
    }
    Ok(out)
}

/// Maximum number of updates reassembled at once.
pub(crate) const MAX_INCOMING_UPDATES: usize = 3;
/// Most chunks accepted for one update.
pub(crate) const MAX_UPDATE_CHUNKS: usize = MAX_DICT_LEN / 1024 + 1;

#[derive(Clone, Debug, Default)]
struct UpdateSlot {
    update_id: u64,
    usage: u64,
    chunk_ids: Vec<u64>,
    have: usize,
    data: Vec<u8>,
}

/// What happened to a chunk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChunkOutcome {
    /// Stored; more chunks are needed.
    Incomplete,
    /// Seen before.
    Duplicate,
    /// Too many chunks for this update.
    TooManyChunks,
    /// The whole dictionary.
    Complete(Vec<u8>),
}

/// Member-side reassembly of netconfig updates (3 slots, as stock).
#[derive(Clone, Debug, Default)]
pub struct ConfigAssembler {
    slots: [UpdateSlot; MAX_INCOMING_UPDATES],
}

impl ConfigAssembler {
    /// Adds a chunk whose signature the caller has verified (or a legacy unsigned chunk the
    /// caller accepted, with `legacy_id` = the packet ID).
    pub fn add(&mut self, chunk: &ConfigChunk<'_>, legacy_id: u64) -> ChunkOutcome {
        let (update_id, chunk_id) = if chunk.signature.is_some() {
            (chunk.update_id, chunk.chunk_id())
        } else {
            (legacy_id, legacy_id)
        };
        let slot_i = self
            .slots
            .iter()
            .position(|s| s.update_id == update_id && s.usage > 0)
            .unwrap_or_else(|| {
                (0..MAX_INCOMING_UPDATES)
                    .min_by_key(|&i| self.slots[i].usage)
                    .unwrap_or(0)
            });
        let slot = &mut self.slots[slot_i];
        if slot.update_id == update_id && slot.chunk_ids.contains(&chunk_id) {
            return ChunkOutcome::Duplicate;
        }
        if slot.update_id != update_id || slot.usage == 0 {
            slot.update_id = update_id;
            slot.chunk_ids.clear();
            slot.have = 0;
            slot.data = vec![0; chunk.total_len as usize];
        }
        if slot.chunk_ids.len() >= MAX_UPDATE_CHUNKS {
            return ChunkOutcome::TooManyChunks;
        }
        slot.usage += 1;
        slot.chunk_ids.push(chunk_id);
        let start = chunk.index as usize;
        let end = start + chunk.data.len();
        if slot.data.len() < end {
            slot.data.resize(end, 0);
        }
        slot.data[start..end].copy_from_slice(chunk.data);
        slot.have += chunk.data.len();
        if slot.have >= chunk.total_len as usize {
            let data = std::mem::take(&mut slot.data);
            slot.chunk_ids.clear();
            slot.have = 0;
            slot.update_id = 0;
            return ChunkOutcome::Complete(data);
        }
        ChunkOutcome::Incomplete
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::test_rng::TestRng;
    use crate::network::credentials::Thing;
    use crate::network::rules::RuleKind;
    use proptest::prelude::*;

    #[test]
    fn prefix_contains_compares_the_leading_bits() {
        let p = |ip: &str, bits| IpPrefix {
            ip: ip.parse().unwrap(),
            bits,
        };
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(p("10.147.17.9", 24).contains(ip("10.147.17.200")));
        assert!(!p("10.147.17.9", 24).contains(ip("10.147.18.1")));
        assert!(p("10.0.0.0", 0).contains(ip("192.0.2.1")));
        assert!(p("10.0.0.1", 40).contains(ip("10.0.0.1")));
        assert!(!p("10.0.0.1", 40).contains(ip("10.0.0.2")));
        assert!(p("fd00::1", 64).contains(ip("fd00::ffff")));
        assert!(!p("fd00::1", 64).contains(ip("fd00:0:0:1::1")));
        assert!(p("fd00::1", 0).contains(ip("2001:db8::1")));
        assert!(!p("fd00::1", 200).contains(ip("fd00::2")));
        assert!(!p("fd00::1", 8).contains(ip("10.0.0.1")));
    }

    #[test]
    fn a_name_with_invalid_utf8_stays_within_its_limit_and_survives_a_round_trip() {
        // Found by fuzzing (fuzz/corpus/netconfig/crash-*): 126 bytes and two invalid ones
        // read as a 129-byte name, written back cut to 127 bytes.
        let mut raw = b"v=7\nnwid=c\nid=56dbe42189\nn=".to_vec();
        raw.extend(std::iter::repeat_n(b'a', 126));
        raw.extend_from_slice(&[0xff, 0xff]);
        let c = NetworkConfig::from_bytes(&raw).unwrap();
        assert!(c.name.len() <= MAX_NAME_LEN);
        assert_eq!(c.name, "a".repeat(126));
        assert_eq!(NetworkConfig::from_bytes(&c.to_bytes()).unwrap(), c);
    }

    #[test]
    fn a_dns_domain_stays_within_127_bytes_and_survives_a_round_trip() {
        // Found by fuzzing (fuzz/corpus/netconfig/crash-*): invalid UTF-8 read as a longer
        // domain, and a multi-byte character was cut in half when written.
        let mut blob = vec![0xffu8; 127];
        blob.push(0);
        let mut none = Vec::new();
        InetAddress(None).write(&mut none);
        for _ in 0..4 {
            blob.extend_from_slice(&none);
        }
        let d = Dns::read(&blob).unwrap();
        assert!(d.domain.len() <= 127, "{} bytes", d.domain.len());
        let mut out = Vec::new();
        d.write(&mut out);
        assert_eq!(Dns::read(&out).unwrap(), d);
        let long = Dns {
            domain: "é".repeat(100),
            servers: vec![],
        };
        let mut out = Vec::new();
        long.write(&mut out);
        assert_eq!(Dns::read(&out).unwrap().domain, "é".repeat(63));
    }

    #[test]
    fn sso_fields_are_read_as_they_are_written() {
        // Found by fuzzing (fuzz/corpus/netconfig/crash-*): the URL of an SSO version other
        // than 0 was read, but never written back.
        let c = NetworkConfig::from_bytes(b"v=7\nnwid=c\nid=1\nssov=1\nssoe=1\naurl=x").unwrap();
        assert_eq!((c.sso.version, c.sso.authentication_url.as_str()), (1, ""));
        let c = NetworkConfig::from_bytes(b"v=7\nnwid=c\nid=1\nssov=0\nssoe=1\naurl=x").unwrap();
        assert_eq!(c.sso.authentication_url, "x");
        assert_eq!(NetworkConfig::from_bytes(&c.to_bytes()).unwrap(), c);
    }

    #[test]
    fn an_issued_to_of_zero_in_its_low_40_bits_is_refused() {
        // Found by fuzzing (fuzz/corpus/netconfig/crash-*): such a config was read as issued to
        // address 0, and what it wrote back did not read.
        let c = NetworkConfig::from_bytes(b"v=7\nnwid=c\nid=10000000000");
        assert!(matches!(c, Err(ConfigError::NoIssuedTo)), "{c:?}");
        assert!(NetworkConfig::from_bytes(b"v=7\nnwid=c\nid=10000000001").is_ok());
    }

    fn ids() -> (Identity, Identity) {
        (
            Identity::generate(&mut TestRng(11)),
            Identity::generate(&mut TestRng(12)),
        )
    }

    fn full_config(ctl: &Identity, member: &Identity) -> NetworkConfig {
        let id = NetworkId((ctl.address().to_u64() << 24) | 7);
        let me = member.address();
        let mut c = NetworkConfig::new(id, me);
        c.timestamp = 1_700_000_000_000;
        c.credential_max_delta = DEFAULT_CREDENTIAL_MAX_DELTA;
        c.revision = 5;
        c.flags = FLAG_ENABLE_BROADCAST | FLAG_ENABLE_IPV6_NDP_EMULATION;
        c.multicast_limit = 32;
        c.name = "test=net\nwith\\escapes".into();
        c.mtu = 2800;
        let mut com = Com::new(id, c.timestamp, c.credential_max_delta, member);
        com.sign(ctl).unwrap();
        c.com = Some(com);
        let mut coo = Coo::new(id, c.timestamp, 1, me);
        coo.add_thing(Thing::ip("198.18.0.5".parse().unwrap()));
        coo.sign(ctl).unwrap();
        c.coos.push(coo);
        let mut cap = Capability::new(id, c.timestamp, 9, vec![Rule::new(RuleKind::Accept)]);
        cap.sign(ctl, me).unwrap();
        c.capabilities.push(cap);
        let mut tag = Tag::new(id, c.timestamp, 3, 42, me);
        tag.sign(ctl).unwrap();
        c.tags.push(tag);
        c.specialists.push(me.to_u64() | SPECIALIST_ACTIVE_BRIDGE);
        c.routes.push(Route {
            target: IpPrefix {
                ip: "198.18.0.0".parse().unwrap(),
                bits: 15,
            },
            via: None,
            flags: 0,
            metric: 0,
        });
        c.routes.push(Route {
            target: IpPrefix {
                ip: "2001:db8::".parse().unwrap(),
                bits: 32,
            },
            via: Some("fd00::1".parse().unwrap()),
            flags: 0,
            metric: 7,
        });
        c.static_ips.push(IpPrefix {
            ip: "198.18.0.5".parse().unwrap(),
            bits: 15,
        });
        c.static_ips.push(IpPrefix {
            ip: IpAddr::V6(id.rfc4193(me)),
            bits: 88,
        });
        c.rules = vec![
            Rule::not(RuleKind::EtherType(0x0800)),
            Rule::new(RuleKind::Drop),
            Rule::new(RuleKind::Accept),
        ];
        c.dns = Dns {
            domain: "lab.example".into(),
            servers: vec!["198.18.0.1".parse().unwrap()],
        };
        c
    }

    #[test]
    fn dictionary_round_trip_with_every_field() {
        let (ctl, member) = ids();
        let c = full_config(&ctl, &member);
        let bytes = c.to_bytes();
        let back = NetworkConfig::from_bytes(&bytes).unwrap();
        assert_eq!(back, c);
        // Stock's key order and integer format.
        let text = String::from_utf8_lossy(&bytes);
        assert!(text.starts_with("v=0000000000000007\nnwid="));
        let keys: Vec<&str> = text
            .split('\n')
            .filter_map(|l| l.split_once('=').map(|(k, _)| k))
            .filter(|k| ["C", "CAP", "TAG", "COO", "S", "RT", "I", "R", "DNS"].contains(k))
            .collect();
        assert_eq!(keys, ["C", "CAP", "TAG", "COO", "S", "RT", "I", "R", "DNS"]);
        // Binary values are escaped, so the text has no raw NUL.
        assert!(!bytes.contains(&0));
        assert!(c.is_active_bridge(member.address()));
        assert_eq!(
            c.emulated_v6_prefix_owner(c.network_id.rfc4193(ctl.address())),
            Some(ctl.address())
        );
    }

    #[test]
    fn static_ip_encoding_matches_stock() {
        let (ctl, member) = ids();
        let mut c = NetworkConfig::new(NetworkId(ctl.address().to_u64() << 24), member.address());
        c.static_ips.push(IpPrefix {
            ip: "10.147.17.5".parse().unwrap(),
            bits: 24,
        });
        let d = c.to_dictionary();
        assert_eq!(d.get("I").unwrap(), [4, 10, 147, 17, 5, 0, 24]);
        let dns = d.get("DNS").unwrap();
        assert_eq!(dns.len(), 132);
        assert!(dns.iter().all(|b| *b == 0));
    }

    #[test]
    fn member_side_checks() {
        // Version `v`, with or without the network ID and the issued-to address.
        let head = |v: u64, nwid: bool, id: bool| {
            let mut d = Dictionary::new();
            d.add_u64("v", v);
            if nwid {
                d.add_u64("nwid", 1);
            }
            if id {
                d.add("id", b"0102030405");
            }
            d
        };
        for (d, err) in [
            (head(5, true, true), ConfigError::Version(5)),
            (head(7, false, true), ConfigError::NoNetwork),
            (head(7, true, false), ConfigError::NoIssuedTo),
        ] {
            assert_eq!(NetworkConfig::from_dictionary(&d), Err(err));
        }
        // MTU clamps, long names truncate, a bad COM rejects, a bad CAP list truncates.
        let mut d = head(7, true, true);
        d.add_u64("mtu", 100);
        d.add("n", &[b'x'; 300]);
        d.add("CAP", &[1, 2, 3]);
        let c = NetworkConfig::from_dictionary(&d).unwrap();
        assert_eq!(c.mtu, MIN_MTU);
        assert_eq!(c.name.len(), MAX_NAME_LEN);
        assert!(c.capabilities.is_empty());
        assert!(c.rules.is_empty(), "no rules: everything is dropped");
        d.add("C", &[2, 0, 0]);
        assert!(matches!(
            NetworkConfig::from_dictionary(&d),
            Err(ConfigError::Field("C", _))
        ));
    }

    #[test]
    fn chunks_reassemble_in_any_order_once() {
        let (ctl, member) = ids();
        let mut c = full_config(&ctl, &member);
        c.name = "x".repeat(100);
        // A big config: many routes.
        for i in 0..120u8 {
            c.routes.push(Route {
                target: IpPrefix {
                    ip: IpAddr::V4(std::net::Ipv4Addr::new(198, 18, i, 0)),
                    bits: 24,
                },
                via: None,
                flags: 0,
                metric: 0,
            });
        }
        c.routes.truncate(MAX_ROUTES);
        let dict = c.to_bytes();
        let chunks = make_chunks(c.network_id, &dict, 77, 0, &ctl).unwrap();
        assert!(chunks.len() == 1 || dict.len() > MAX_CHUNK_LEN);
        // Force several chunks with a long DNS-free blob: re-cut the dictionary by hand.
        let big: Vec<u8> = dict.iter().copied().cycle().take(30_000).collect();
        let chunks = make_chunks(c.network_id, &big, 78, 0, &ctl).unwrap();
        assert_eq!(chunks.len(), 4);
        let mut asm = ConfigAssembler::default();
        let order = [2usize, 0, 3, 1];
        let mut done = None;
        for (k, &i) in order.iter().enumerate() {
            let ch = ConfigChunk::parse(&chunks[i]).unwrap();
            assert!(ch.verify(&ctl));
            assert!(
                !ch.verify(&member),
                "only the controller's signature counts"
            );
            match asm.add(&ch, 0) {
                ChunkOutcome::Complete(d) => done = Some((k, d)),
                ChunkOutcome::Incomplete => {}
                other => panic!("{other:?}"),
            }
            if k == 1 {
                assert_eq!(asm.add(&ch, 0), ChunkOutcome::Duplicate);
            }
        }
        let (k, d) = done.unwrap();
        assert_eq!(k, 3);
        assert_eq!(d, big);
    }

    #[test]
    fn chunk_parsing_rejects_inconsistent_ranges_and_signatures() {
        let (ctl, _) = ids();
        let chunks = make_chunks(NetworkId(1), b"abc", 1, 0, &ctl).unwrap();
        let mut bad = chunks[0].clone();
        // total length 2 < index + len.
        let total_at = 8 + 2 + 3 + 1 + 8;
        bad[total_at..total_at + 4].copy_from_slice(&2u32.to_be_bytes());
        assert!(ConfigChunk::parse(&bad).is_err());
        let mut bad = chunks[0].clone();
        let sig_type_at = total_at + 8;
        bad[sig_type_at] = 2;
        assert!(ConfigChunk::parse(&bad).is_err());
        // A tampered chunk does not verify.
        let mut t = chunks[0].clone();
        t[10] ^= 1;
        assert!(!ConfigChunk::parse(&t).unwrap().verify(&ctl));
        // Legacy unsigned form: network, length, whole dictionary.
        let mut legacy = 1u64.to_be_bytes().to_vec();
        legacy.extend_from_slice(&3u16.to_be_bytes());
        legacy.extend_from_slice(b"abc");
        let l = ConfigChunk::parse(&legacy).unwrap();
        assert!(l.signature.is_none());
        assert!(!l.verify(&ctl));
    }

    proptest! {
        #[test]
        fn parsers_never_panic(data in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = ConfigChunk::parse(&data);
            let _ = NetworkConfig::from_bytes(&data);
            let mut asm = ConfigAssembler::default();
            if let Ok(ch) = ConfigChunk::parse(&data) {
                let _ = asm.add(&ch, 1);
            }
        }
    }
}
