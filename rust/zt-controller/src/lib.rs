//! The network controller's logic, compatible with the controller embedded in ZeroTierOne
//! 1.14.1: the same JSON records, defaults and coercions (so ztnet/ztncui work unchanged) and
//! the same answer to a member's NETWORK_CONFIG_REQUEST.
//!
//! Like `zt-proto`, the protocol core it builds on, this is sans-IO: no clock, files or threads;
//! time and randomness are passed in and records are `serde_json` values the caller stores.
//!
//! * [`records`]: record defaults, API POST merges, the revision/save rule.
//! * [`error`]: [`PostError`], a POST body the stock controller fails on.
//! * [`rule_json`]: rule entries ↔ their JSON objects.
//! * [`assign`]: routes, static IPs, pool allocation.
//! * [`decide`]: the answer to a config request, with the member record to save.
//!
//! # What the caller does
//!
//! Before [`decide`]: drop requests for networks whose top 40 bits are not its own address
//! (silently), and rate-limit genuine requests per (network, member) to one per 1000 ms. After
//! it: send the ERROR or the config (signing the COM, a COO when there are static IPs, the
//! capabilities and the tags), write [`Outcome::save`] if present, and remember the request's
//! metadata and identity for authorized genuine requests (that enables config pushes when
//! records change). Record changes reported by [`records::Change`] trigger pushes to online
//! members; deauthorizations trigger revocations.
//!
//! # Not supported
//!
//! SSO: `ssoEnabled` stays false (the file-backed stock controller cannot enable it through
//! its API either), so no request ever ends in AUTHENTICATION_REQUIRED and configs carry
//! `ssoe = 0`.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::collections::{BTreeMap, HashSet};
use std::net::{IpAddr, SocketAddr};

use serde_json::{Map, Value, json};

pub mod assign;
pub mod error;
pub mod issue;
pub mod json;
pub mod records;
pub mod rule_json;

pub use assign::Route;
pub use error::PostError;
pub use records::Change;

use self::json::{
    Inet, field, json_bool, json_int, json_int_hex, json_string, number_cmp_i64, number_to_i64,
    parse_inet, strtoull,
};
use self::records::{clean_member, commit_record, init_member};
use self::rule_json::parse_rule_checked;
use zt_proto::{
    Address, Dictionary, Identity, InetAddress, NetworkId, Timestamp,
    crypto::SecureRandom,
    rules::{MAX_CAPABILITY_RULES, MAX_RULES, Rule, RuleKind},
};

/// Default credential time max delta (`ctmd`): 30 minutes.
pub const DEFAULT_CREDENTIAL_MAX_DELTA: i64 = 1_800_000;
/// Smallest credential time max delta: 5 minutes.
pub const MIN_CREDENTIAL_MAX_DELTA: i64 = 300_000;
/// Largest credential time max delta: 2 hours.
pub const MAX_CREDENTIAL_MAX_DELTA: i64 = 7_200_000;
/// Config flag: Ethernet broadcast allowed.
pub const FLAG_ENABLE_BROADCAST: u64 = 0x02;
/// Config flag: IPv6 NDP emulation for rfc4193/6plane addresses.
pub const FLAG_ENABLE_IPV6_NDP_EMULATION: u64 = 0x04;
/// Specialist type bit of an active bridge.
pub const SPECIALIST_ACTIVE_BRIDGE: u64 = 0x0000_0200_0000_0000;
/// Longest network name sent (bytes).
pub const MAX_NAME_LEN: usize = 127;
/// Most capabilities in a config.
pub const MAX_CAPABILITIES: usize = 128;
/// Most tags in a config.
pub const MAX_TAGS: usize = 128;
/// Most specialists in a config.
pub const MAX_SPECIALISTS: usize = 256;
/// Most DNS servers in a config.
pub const MAX_DNS_SERVERS: usize = 4;

/// Pushed DNS settings.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Dns {
    /// Search domain (at most 127 bytes; empty if none).
    pub domain: String,
    /// Up to [`MAX_DNS_SERVERS`] servers in record order. An entry that does not parse is the
    /// null address; one written `ip/port` keeps the port, as the stock controller sends it.
    pub servers: Vec<InetAddress>,
}

/// Everything the network config for one member holds, before signing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigPlan {
    /// The network.
    pub network_id: NetworkId,
    /// Issue time (`ts`) and timestamp of the credentials.
    pub timestamp: Timestamp,
    /// The member.
    pub issued_to: Address,
    /// Private network (type 0) rather than public (1).
    pub private: bool,
    /// Network name, at most [`MAX_NAME_LEN`] bytes.
    pub name: String,
    /// The network record's revision.
    pub revision: u64,
    /// MTU, within 1280..=10000.
    pub mtu: u16,
    /// Most recipients of one multicast (0 disables multicast).
    pub multicast_limit: u32,
    /// [`FLAG_ENABLE_BROADCAST`] | [`FLAG_ENABLE_IPV6_NDP_EMULATION`].
    pub flags: u64,
    /// Credential time max delta (`ctmd`) and the COM's timestamp max delta.
    pub credential_max_delta: i64,
    /// The rule table.
    pub rules: Vec<Rule>,
    /// Capabilities to issue: ID and rules, in the member's order.
    pub capabilities: Vec<(u32, Vec<Rule>)>,
    /// Tags to issue (ID, value), ascending by ID.
    pub tags: Vec<(u32, u32)>,
    /// Managed routes.
    pub routes: Vec<Route>,
    /// Static IPs and their prefix lengths (sent as the address's port), in config order.
    pub static_ips: Vec<(IpAddr, u16)>,
    /// Specialists: active bridges OR'ed with [`SPECIALIST_ACTIVE_BRIDGE`], ascending.
    pub specialists: Vec<u64>,
    /// DNS settings; always sent (empty when the network has none).
    pub dns: Dns,
    /// Remote trace target, if any.
    pub remote_trace_target: Option<Address>,
    /// Remote trace level.
    pub remote_trace_level: u32,
}

/// The answer to a config request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// The network does not exist: ERROR OBJ_NOT_FOUND.
    NotFound,
    /// Not authorized, or the stored identity differs from the requester's: ERROR
    /// NETWORK_ACCESS_DENIED.
    AccessDenied,
    /// Where the stock controller throws and drops the request without an answer (a token
    /// request against a network whose `authTokens` is not an object or null — the default
    /// `[null]` is such a value —, a non-numeric `certificateTimeoutWindowSize`, a
    /// `MATCH_CHARACTERISTICS` rule with a non-numeric non-string mask, member `tags` that are
    /// not an array when a default tag must be added).
    NoAnswer,
    /// Authorized: send this config.
    Authorized(Box<ConfigPlan>),
}

/// The result of [`decide`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// What to answer.
    pub decision: Decision,
    /// The member record to write, if it changed (its revision already bumped); `None` when
    /// nothing changed or nothing is to be saved.
    pub save: Option<Value>,
}

/// A NETWORK_CONFIG_REQUEST as the controller sees it.
#[derive(Clone, Copy, Debug)]
pub struct Request<'a> {
    /// Requested network.
    pub network_id: NetworkId,
    /// The requester's full (public) identity.
    pub identity: &'a Identity,
    /// The request's metadata dictionary.
    pub metadata: &'a Dictionary,
    /// A request received from the network (packet ID ≠ 0), as opposed to an internal re-run
    /// that pushes an updated config; only genuine requests update the version fields.
    pub genuine: bool,
    /// Current time.
    pub now: Timestamp,
}

/// Facts about the other members of the network.
#[derive(Clone, Copy, Debug)]
pub struct NetworkSummary<'a> {
    /// Every IP in any member's `ipAssignments` ([`allocated_ips`]).
    pub allocated_ips: &'a HashSet<IpAddr>,
    /// Members with `activeBridge` set ([`active_bridges`]).
    pub active_bridges: &'a [Address],
}

/// Every IP listed in the members' `ipAssignments` (the pools' "allocated" set).
#[must_use]
pub fn allocated_ips<'a>(members: impl IntoIterator<Item = &'a Value>) -> HashSet<IpAddr> {
    members
        .into_iter()
        .filter_map(|m| m.get("ipAssignments").and_then(Value::as_array))
        .flatten()
        .filter_map(Value::as_str)
        .filter_map(|s| parse_inet(s).ip())
        .collect()
}

/// The members with `activeBridge` set (authorized or not), ascending, without duplicates.
#[must_use]
pub fn active_bridges<'a>(members: impl IntoIterator<Item = &'a Value>) -> Vec<Address> {
    let mut out: Vec<Address> = members
        .into_iter()
        .filter(|m| json_bool(field(m, "activeBridge"), false))
        .map(|m| Address::from_u64_truncating(json_int_hex(field(m, "id"), 0)))
        .filter(|a| a.to_u64() != 0)
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}

/// A metadata integer as the stock code reads it (`getUI`: hex, `strtoull` rules; absent or
/// empty is 0).
fn meta_uint(metadata: &Dictionary, key: &str) -> u64 {
    match metadata.get(key) {
        Some(v) if !v.is_empty() => {
            let v = &v[..v.len().min(127)];
            strtoull(&String::from_utf8_lossy(v), 16)
        }
        _ => 0,
    }
}

/// The token of a metadata `a=token:<t>` entry (value cut at 511 bytes and at a NUL).
fn presented_token(metadata: &Dictionary) -> Option<Vec<u8>> {
    let v = metadata.get("a")?;
    let v = &v[..v.len().min(511)];
    let v = v.split(|&b| b == 0).next().unwrap_or(&[]);
    (v.len() > 6 && v.starts_with(b"token:")).then(|| v[6..].to_vec())
}

/// `s` as a C field of `max + 1` bytes keeps it: up to the first NUL, at most `max` bytes (cut
/// back to a character boundary).
fn c_field(s: &str, max: usize) -> String {
    let s = s.split('\0').next().unwrap_or("");
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

fn trace_target(v: &Value) -> Option<Option<Address>> {
    let s = json_string(v, "");
    (s.len() == 10)
        .then(|| Some(Address::from_u64_truncating(strtoull(&s, 16))).filter(|a| a.to_u64() != 0))
}

fn inet_address(a: Inet) -> InetAddress {
    InetAddress(a.ip().map(|ip| SocketAddr::new(ip, a.port())))
}

/// Decides the answer to a config request and the member record to save (`_request` of the
/// stock controller, steps 2–9).
///
/// `network` and `member` are the stored records (`None` if absent). The record is created for
/// a new member, its identity learned on first contact and checked afterwards; public networks
/// and valid `a=token:<t>` metadata authorize automatically; unauthorized members are saved (so
/// they appear as pending) and denied. For authorized members the config is planned: rules,
/// capabilities (defaults added for members new in this request), tags (network defaults added
/// to the record), routes, static IPs (pool picks added to the record), DNS, trace settings.
/// `rng` feeds random IPv6 pool picks.
pub fn decide(
    req: &Request<'_>,
    network: Option<&Value>,
    member: Option<&Value>,
    summary: &NetworkSummary<'_>,
    rng: &mut impl SecureRandom,
) -> Outcome {
    let answer = |decision| Outcome {
        decision,
        save: None,
    };
    let Some(network) = network.filter(|n| n.as_object().is_some_and(|o| !o.is_empty())) else {
        return answer(Decision::NotFound);
    };
    let node = req.identity.address();
    let now = req.now;
    let new_member = member.and_then(Value::as_object).is_none_or(Map::is_empty);
    let mut m = member.cloned().unwrap_or(Value::Null);
    init_member(&mut m, req.network_id, node, now);

    // Identity: learned on first contact, compared afterwards (blocks address collisions).
    let known = json_string(field(&m, "identity"), "");
    if known.is_empty() {
        m["identity"] = json!(req.identity.to_public_string());
    } else if known.parse::<Identity>().ok().as_ref() != Some(req.identity) {
        return answer(Decision::AccessDenied);
    }

    // Authorization.
    let mut authorized = json_bool(field(&m, "authorized"), false);
    let mut auto: Option<(&str, Value)> = None;
    if !authorized {
        if !json_bool(field(network, "private"), true) {
            authorized = true;
            auto = Some(("public", Value::Null));
        } else if let Some(token) = presented_token(req.metadata) {
            let expiry = match field(network, "authTokens") {
                Value::Null => None,
                Value::Object(tokens) => std::str::from_utf8(&token)
                    .ok()
                    .and_then(|t| tokens.get(t))
                    .and_then(Value::as_number),
                _ => return answer(Decision::NoAnswer),
            };
            if let Some(e) = expiry
                && (number_cmp_i64(e, 0).is_some_and(|c| c.is_eq())
                    || number_cmp_i64(e, now.0).is_some_and(|c| c.is_gt()))
            {
                authorized = true;
                let token = String::from_utf8_lossy(&token).into_owned();
                auto = Some(("token", json!(token)));
            }
        }
    }
    if let Some((kind, credential)) = auto {
        m["authorized"] = json!(true);
        m["lastAuthorizedTime"] = json!(now.0);
        m["lastAuthorizedCredentialType"] = json!(kind);
        m["lastAuthorizedCredential"] = credential;
    }
    if !authorized {
        clean_member(&mut m);
        let change = commit_record(member, &mut m);
        return Outcome {
            decision: Decision::AccessDenied,
            save: change.changed.then_some(m),
        };
    }
    if req.genuine {
        for (field_name, key) in [
            ("vMajor", "majv"),
            ("vMinor", "minv"),
            ("vRev", "revv"),
            ("vProto", "pv"),
        ] {
            m[field_name] = json!(meta_uint(req.metadata, key));
        }
    }

    let credential_max_delta = match network.get("certificateTimeoutWindowSize") {
        None => DEFAULT_CREDENTIAL_MAX_DELTA,
        Some(Value::Number(n)) => number_to_i64(n),
        Some(_) => return answer(Decision::NoAnswer),
    }
    .clamp(MIN_CREDENTIAL_MAX_DELTA, MAX_CREDENTIAL_MAX_DELTA);

    let mut flags = 0;
    if json_bool(field(network, "enableBroadcast"), true) {
        flags |= FLAG_ENABLE_BROADCAST;
    }
    let (remote_trace_target, remote_trace_level) =
        match trace_target(field(&m, "remoteTraceTarget")) {
            Some(t) => (t, json_int(field(&m, "remoteTraceLevel"), 0) as u32),
            None => (
                trace_target(field(network, "remoteTraceTarget")).flatten(),
                json_int(field(network, "remoteTraceLevel"), 0) as u32,
            ),
        };
    let specialists: Vec<u64> = {
        let mut b = summary.active_bridges.to_vec();
        b.sort_unstable();
        b.dedup();
        b.iter()
            .take(MAX_SPECIALISTS)
            .map(|a| a.to_u64() | SPECIALIST_ACTIVE_BRIDGE)
            .collect()
    };

    let (rules, capabilities, tags) = if meta_uint(req.metadata, "revr") == 0 {
        // Clients without a rules engine get "accept everything".
        (vec![Rule::new(RuleKind::Accept)], Vec::new(), Vec::new())
    } else {
        match rules_caps_tags(network, &mut m, new_member) {
            Some(x) => x,
            None => return answer(Decision::NoAnswer),
        }
    };

    let routes = assign::routes_from_network(network);
    let assignment = assign::assign_ips(
        &assign::AssignContext {
            network_id: req.network_id,
            node,
            network,
            member: &m,
            routes: &routes,
            allocated: summary.allocated_ips,
        },
        rng,
    );
    if let Some(ips) = assignment.ip_assignments {
        m["ipAssignments"] = Value::Array(ips);
    }
    if assignment.ndp_emulation {
        flags |= FLAG_ENABLE_IPV6_NDP_EMULATION;
    }

    let dns = match field(network, "dns") {
        Value::Object(d) => Dns {
            domain: c_field(
                &json_string(d.get("domain").unwrap_or(&Value::Null), ""),
                127,
            ),
            servers: match d.get("servers") {
                Some(Value::Array(s)) => s
                    .iter()
                    .take(MAX_DNS_SERVERS)
                    .map(|a| inet_address(parse_inet(&json_string(a, ""))))
                    .collect(),
                _ => Vec::new(),
            },
        },
        _ => Dns::default(),
    };

    let plan = ConfigPlan {
        network_id: req.network_id,
        timestamp: now,
        issued_to: node,
        private: json_bool(field(network, "private"), true),
        name: c_field(&json_string(field(network, "name"), ""), MAX_NAME_LEN),
        revision: json_int(field(network, "revision"), 0),
        mtu: (json_int(field(network, "mtu"), records::DEFAULT_MTU) as u32)
            .clamp(records::MIN_MTU as u32, records::MAX_MTU as u32) as u16,
        multicast_limit: json_int(
            field(network, "multicastLimit"),
            records::DEFAULT_MULTICAST_LIMIT,
        ) as u32,
        flags,
        credential_max_delta,
        rules,
        capabilities,
        tags,
        routes,
        static_ips: assignment.static_ips,
        specialists,
        dns,
        remote_trace_target,
        remote_trace_level,
    };
    clean_member(&mut m);
    let change = commit_record(member, &mut m);
    Outcome {
        decision: Decision::Authorized(Box::new(plan)),
        save: change.changed.then_some(m),
    }
}

type RulesCapsTags = (Vec<Rule>, Vec<(u32, Vec<Rule>)>, Vec<(u32, u32)>);

/// The rules of the JSON array `rules` (none if it is not one), the first `max` that are
/// rules; `None` at a malformed one (where the stock code throws).
fn parse_rules(rules: &Value, max: usize) -> Option<Vec<Rule>> {
    let mut out = Vec::new();
    if let Value::Array(rs) = rules {
        for r in rs {
            if out.len() >= max {
                break;
            }
            if let Some(rule) = parse_rule_checked(r).ok()? {
                out.push(rule);
            }
        }
    }
    Some(out)
}

/// Rules, capabilities and tags for a member with a rules engine; updates the member's
/// `capabilities` (defaults for new members) and `tags` (network defaults). `None` where the
/// stock code throws.
fn rules_caps_tags(network: &Value, m: &mut Value, new_member: bool) -> Option<RulesCapsTags> {
    const ID_MASK: u64 = 0xffff_ffff;
    let rules = parse_rules(field(network, "rules"), MAX_RULES)?;

    if !m["capabilities"].is_array() {
        m["capabilities"] = json!([]);
    }
    let mut caps_by_id: BTreeMap<u32, &Value> = BTreeMap::new();
    if let Value::Array(caps) = field(network, "capabilities") {
        for cap in caps.iter().filter(|c| c.is_object()) {
            let id = (json_int(field(cap, "id"), 0) & ID_MASK) as u32;
            caps_by_id.insert(id, cap);
            if new_member
                && json_bool(field(cap, "default"), false)
                && let Value::Array(mine) = &mut m["capabilities"]
                && !mine
                    .iter()
                    .any(|c| json_int(c, 0) & ID_MASK == u64::from(id))
            {
                mine.push(json!(id));
            }
        }
    }
    let mut capabilities = Vec::new();
    let mine = m["capabilities"].as_array().cloned().unwrap_or_default();
    for c in &mine {
        let id = (json_int(c, 0) & ID_MASK) as u32;
        let Some(cap) = caps_by_id.get(&id) else {
            continue;
        };
        if cap.as_object().is_none_or(Map::is_empty) {
            continue;
        }
        let cap_rules = parse_rules(field(cap, "rules"), MAX_CAPABILITY_RULES)?;
        capabilities.push((id, cap_rules));
        if capabilities.len() >= MAX_CAPABILITIES {
            break;
        }
    }

    let mut tag_values: BTreeMap<u32, u32> = BTreeMap::new();
    if let Value::Array(ts) = &m["tags"] {
        for t in ts {
            if let Some([id, value]) = t.as_array().map(Vec::as_slice) {
                tag_values.insert(
                    (json_int(id, 0) & ID_MASK) as u32,
                    (json_int(value, 0) & ID_MASK) as u32,
                );
            }
        }
    }
    if let Value::Array(ts) = field(network, "tags") {
        for t in ts.iter().filter(|t| t.is_object()) {
            let id = (json_int(field(t, "id"), 0) & ID_MASK) as u32;
            let dfl = field(t, "default");
            if dfl.is_number() && !tag_values.contains_key(&id) {
                tag_values.insert(id, (json_int(dfl, 0) & ID_MASK) as u32);
                let mine = &mut m["tags"];
                if mine.is_null() {
                    *mine = json!([]);
                }
                mine.as_array_mut()?.push(json!([id, dfl]));
            }
        }
    }
    let tags = tag_values.into_iter().take(MAX_TAGS).collect();
    Some((rules, capabilities, tags))
}

#[cfg(test)]
mod tests;
