//! Network and member records: defaults, clean-up before saving, the API's POST merges, and the
//! "save only on effective change" rule that numbers revisions.
//!
//! Records are `serde_json` objects so that unknown and hand-edited fields survive exactly as
//! they do in the stock controller. `serde_json` keeps object keys sorted, which is also the
//! order the stock controller writes (and so the byte form of a compact dump matches).
//!
//! A caller keeps the stored records and, for a POST, passes the stored one (or `null` when
//! there is none) to [`network_update_from_post`] / [`member_update_from_post`]; on success the
//! value holds the record to store and answer with, and the returned [`Change`] says whether it
//! differs from what was stored (only then is it written, its revision bumped and members
//! notified) and whether it deauthorized the member (then a revocation is due).

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use crate::error::PostError;
use crate::json::{
    Inet, field, ip_to_string, json_bool, json_eq, json_int, json_string, number_cmp_i64,
    parse_inet,
};
use crate::rule_json::{parse_rule_checked, render_rule};
use zt_proto::{Address, NetworkId, Timestamp};

/// Most entries the API keeps in any array field (`ZT_CONTROLLER_MAX_ARRAY_SIZE`).
pub const MAX_ARRAY_SIZE: usize = 16384;
/// Default MTU of a network.
pub const DEFAULT_MTU: u64 = 2800;
/// Smallest MTU a network may have.
pub const MIN_MTU: u64 = 1280;
/// Largest MTU a network may have.
pub const MAX_MTU: u64 = 10000;
/// Default multicast recipient limit.
pub const DEFAULT_MULTICAST_LIMIT: u64 = 32;

/// What saving a record did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Change {
    /// The record differs from the stored one (ignoring `revision`), or there was none: it must
    /// be written (its revision was bumped) and listeners notified (config pushes).
    pub changed: bool,
    /// A member went from authorized to not authorized: revoke its COM on the network.
    pub deauthorized: bool,
}

fn object(v: &mut Value) -> &mut Map<String, Value> {
    if !v.is_object() {
        *v = Value::Object(Map::new());
    }
    match v {
        Value::Object(m) => m,
        _ => unreachable!("just made an object"),
    }
}

fn set_default(m: &mut Map<String, Value>, key: &str, value: Value) {
    if !m.contains_key(key) {
        m.insert(key.to_owned(), value);
    }
}

/// The rule list of a new network: accept everything.
#[must_use]
pub fn default_rules() -> Value {
    json!([{"not": false, "or": false, "type": "ACTION_ACCEPT"}])
}

/// Fills the defaults of a network record (`DB::initNetwork`) and sets `id`/`nwid`.
///
/// Missing keys get their defaults; `objtype` is forced. Like the stock code (which tests a
/// misspelt key), `remoteTraceLevel` is reset to 0 every time. A non-object becomes an object.
pub fn init_network(network: &mut Value, nwid: NetworkId, now: Timestamp) {
    let m = object(network);
    set_default(m, "private", json!(true));
    set_default(m, "creationTime", json!(now.0));
    set_default(m, "name", json!(""));
    set_default(m, "multicastLimit", json!(DEFAULT_MULTICAST_LIMIT));
    set_default(m, "enableBroadcast", json!(true));
    set_default(m, "v4AssignMode", json!({"zt": false}));
    set_default(
        m,
        "v6AssignMode",
        json!({"rfc4193": false, "zt": false, "6plane": false}),
    );
    set_default(m, "authTokens", json!([null]));
    set_default(m, "capabilities", json!([]));
    set_default(m, "tags", json!([]));
    set_default(m, "routes", json!([]));
    set_default(m, "ipAssignmentPools", json!([]));
    set_default(m, "mtu", json!(DEFAULT_MTU));
    set_default(m, "remoteTraceTarget", Value::Null);
    m.insert("remoteTraceLevel".into(), json!(0));
    set_default(m, "rulesSource", json!(""));
    set_default(m, "rules", default_rules());
    set_default(m, "dns", json!([]));
    set_default(m, "ssoEnabled", json!(false));
    set_default(m, "clientId", json!(""));
    set_default(m, "authorizationEndpoint", json!(""));
    m.insert("objtype".into(), json!("network"));
    let id = nwid.to_string();
    m.insert("id".into(), json!(id));
    m.insert("nwid".into(), json!(id));
}

/// Fills the defaults of a member record (`DB::initMember`) and sets `id`/`address`/`nwid`.
///
/// `revision` starts at 0 (the first save makes it 1); `identity` and `name` stay absent;
/// `remoteTraceLevel` is reset to 0 every time (stock quirk). A non-object becomes an object.
pub fn init_member(member: &mut Value, nwid: NetworkId, address: Address, now: Timestamp) {
    let m = object(member);
    set_default(m, "authorized", json!(false));
    set_default(m, "ssoExempt", json!(false));
    set_default(m, "ipAssignments", json!([]));
    set_default(m, "activeBridge", json!(false));
    set_default(m, "tags", json!([]));
    set_default(m, "capabilities", json!([]));
    set_default(m, "creationTime", json!(now.0));
    set_default(m, "noAutoAssignIps", json!(false));
    set_default(m, "revision", json!(0));
    set_default(m, "lastDeauthorizedTime", json!(0));
    set_default(m, "lastAuthorizedTime", json!(0));
    set_default(m, "lastAuthorizedCredentialType", Value::Null);
    set_default(m, "lastAuthorizedCredential", Value::Null);
    set_default(m, "authenticationExpiryTime", json!(0));
    for k in ["vMajor", "vMinor", "vRev", "vProto"] {
        set_default(m, k, json!(-1));
    }
    set_default(m, "remoteTraceTarget", Value::Null);
    m.insert("remoteTraceLevel".into(), json!(0));
    m.insert("objtype".into(), json!("member"));
    let a = address.to_string();
    m.insert("id".into(), json!(a));
    m.insert("address".into(), json!(a));
    m.insert("nwid".into(), json!(nwid.to_string()));
}

/// Removes the computed fields a network record never stores (`DB::cleanNetwork`).
pub fn clean_network(network: &mut Value) {
    remove_keys(
        network,
        &[
            "clock",
            "authorizedMemberCount",
            "activeMemberCount",
            "totalMemberCount",
            "lastModified",
        ],
    );
}

/// Removes the computed fields a member record never stores (`DB::cleanMember`).
pub fn clean_member(member: &mut Value) {
    remove_keys(
        member,
        &[
            "clock",
            "physicalAddr",
            "recentLog",
            "lastModified",
            "lastRequestMetaData",
            "authenticationURL",
            "authenticationClientID",
        ],
    );
}

/// Removes `keys` from a record (an object; anything else is left as it is).
fn remove_keys(record: &mut Value, keys: &[&str]) {
    if let Value::Object(m) = record {
        for k in keys {
            m.remove(*k);
        }
    }
}

/// Whether two records are the same for saving purposes: same number of keys and every key
/// but `revision` equal (numbers by value).
#[must_use]
pub fn same_record(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| k == "revision" || y.get(k).is_some_and(|w| json_eq(v, w)))
        }
        (Value::Object(_), _) | (_, Value::Object(_)) => false,
        _ => json_eq(a, b),
    }
}

/// The save rule of the stock file database: if `new` differs from `old` (ignoring
/// `revision`) or there is no `old` object, `new.revision` becomes its value + 1 and the
/// record must be written; otherwise nothing is written and nobody is notified.
pub fn commit_record(old: Option<&Value>, new: &mut Value) -> Change {
    let old = old.filter(|o| o.is_object());
    let changed = old.is_none_or(|o| !same_record(o, new));
    if changed {
        let revision = json_int(field(new, "revision"), 0).wrapping_add(1);
        object(new).insert("revision".into(), json!(revision));
    }
    let was = old.is_some_and(|o| json_bool(field(o, "authorized"), false));
    let is = json_bool(field(new, "authorized"), false);
    Change {
        changed,
        deauthorized: changed && was && !is,
    }
}

/// A remote trace target as the API stores it: a 10-character string, else null.
fn trace_target(v: &Value) -> Value {
    let s = json_string(v, "");
    if s.len() == 10 { json!(s) } else { Value::Null }
}

/// Parses and re-renders a rule array (non-objects and unparsable rules dropped, capped).
fn canonical_rules(rules: &[Value]) -> Result<Vec<Value>, PostError> {
    let mut out = Vec::new();
    for r in rules {
        if let Some(rule) = parse_rule_checked(r)? {
            out.push(render_rule(&rule));
            if out.len() >= MAX_ARRAY_SIZE {
                break;
            }
        }
    }
    Ok(out)
}

fn v6_assign_mode(v: &Value) -> Value {
    let mut m = Map::new();
    match v {
        Value::String(s) => {
            let s = s.split('\0').next().unwrap_or("");
            let modes: Vec<&str> = s.split(',').filter(|p| !p.is_empty()).collect();
            for k in ["rfc4193", "zt", "6plane"] {
                m.insert(k.into(), json!(modes.contains(&k)));
            }
        }
        Value::Object(o) => {
            for k in ["rfc4193", "zt", "6plane"] {
                if let Some(x) = o.get(k) {
                    m.insert(k.into(), json!(json_bool(x, false)));
                }
            }
        }
        _ => {
            for k in ["rfc4193", "zt", "6plane"] {
                m.insert(k.into(), json!(false));
            }
        }
    }
    Value::Object(m)
}

fn routes_from_post(rts: &[Value]) -> Value {
    let mut out = Vec::new();
    for rt in rts {
        let Some(Value::String(target)) = rt.get("target") else {
            continue;
        };
        let t = parse_inet(target);
        let (ip, bits_ok) = match t {
            Inet::V4(ip, bits) => (ip.into(), bits <= 32),
            Inet::V6(ip, bits) => (ip.into(), bits <= 128),
            Inet::Nil => continue,
        };
        if !bits_ok {
            continue;
        }
        let via = match rt.get("via") {
            Some(Value::String(v)) => match (parse_inet(v), t) {
                (Inet::V4(v, _), Inet::V4(..)) => json!(v.to_string()),
                (Inet::V6(v, _), Inet::V6(..)) => json!(ip_to_string(v.into())),
                _ => Value::Null,
            },
            _ => Value::Null,
        };
        out.push(json!({
            "target": format!("{}/{}", ip_to_string(ip), t.port()),
            "via": via,
        }));
        if out.len() >= MAX_ARRAY_SIZE {
            break;
        }
    }
    Value::Array(out)
}

fn pools_from_post(pools: &[Value]) -> Value {
    let mut out = Vec::new();
    for p in pools {
        let (Some(s), Some(e)) = (p.get("ipRangeStart"), p.get("ipRangeEnd")) else {
            continue;
        };
        let (s, e) = (
            parse_inet(&json_string(s, "")),
            parse_inet(&json_string(e, "")),
        );
        let (Some(si), Some(ei)) = (s.ip(), e.ip()) else {
            continue;
        };
        if si.is_ipv4() != ei.is_ipv4() {
            continue;
        }
        out.push(json!({"ipRangeStart": ip_to_string(si), "ipRangeEnd": ip_to_string(ei)}));
        if out.len() >= MAX_ARRAY_SIZE {
            break;
        }
    }
    Value::Array(out)
}

fn auth_tokens_from_post(v: &Value) -> Value {
    let Value::Object(o) = v else {
        return json!([null]);
    };
    let kept: Map<String, Value> = o
        .iter()
        .filter(|(_, v)| match v {
            Value::Number(n) => number_cmp_i64(n, 0).is_some_and(|c| c.is_ge()),
            _ => false,
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if kept.is_empty() {
        Value::Null
    } else {
        Value::Object(kept)
    }
}

fn capabilities_from_post(caps: &[Value]) -> Result<Value, PostError> {
    let mut by_id = BTreeMap::new();
    for cap in caps.iter().filter(|c| c.is_object()) {
        let id = json_int(field(cap, "id"), 0);
        let rules = match field(cap, "rules") {
            Value::Array(r) => canonical_rules(r)?,
            _ => Vec::new(),
        };
        by_id.insert(
            id,
            json!({"id": id, "default": json_bool(field(cap, "default"), false), "rules": rules}),
        );
    }
    Ok(Value::Array(
        by_id.into_values().take(MAX_ARRAY_SIZE).collect(),
    ))
}

fn tags_from_post(tags: &[Value]) -> Value {
    let mut by_id = BTreeMap::new();
    for tag in tags.iter().filter(|t| t.is_object()) {
        let id = json_int(field(tag, "id"), 0);
        let dfl = match field(tag, "default") {
            Value::Null => Value::Null,
            d => json!(json_int(d, 0)),
        };
        by_id.insert(id, json!({"id": id, "default": dfl}));
    }
    Value::Array(by_id.into_values().take(MAX_ARRAY_SIZE).collect())
}

fn dns_from_post(dns: &Map<String, Value>) -> Value {
    let mut nd = Map::new();
    nd.insert(
        "domain".into(),
        dns.get("domain").cloned().unwrap_or(Value::Null),
    );
    if let Some(Value::Array(servers)) = dns.get("servers") {
        nd.insert("servers".into(), Value::Array(servers.clone()));
    }
    Value::Object(nd)
}

/// Applies a network POST body (`networkUpdateFromPostData`).
///
/// `record` is the stored network (`null` if none); on success it holds the record to store
/// and return. Defaults are filled, then each key present in an object `body` replaces its
/// field after normalisation; unknown keys are ignored; a non-object body changes nothing (the
/// record is still saved, so a new network is created).
///
/// # Errors
/// Where the stock controller answers HTTP 500 (a `MATCH_CHARACTERISTICS` rule whose `mask` is
/// neither a number nor a string); `record` is then left as it was.
pub fn network_update_from_post(
    record: &mut Value,
    nwid: NetworkId,
    body: &Value,
    now: Timestamp,
) -> Result<Change, PostError> {
    let mut n = record.clone();
    init_network(&mut n, nwid, now);
    if let Value::Object(b) = body {
        let m = object(&mut n);
        let mut put = |k: &str, v: Value| {
            m.insert(k.to_owned(), v);
        };
        if let Some(v) = b.get("name") {
            put("name", json!(json_string(v, "")));
        }
        if let Some(v) = b.get("private") {
            put("private", json!(json_bool(v, true)));
        }
        if let Some(v) = b.get("enableBroadcast") {
            put("enableBroadcast", json!(json_bool(v, false)));
        }
        if let Some(v) = b.get("multicastLimit") {
            put(
                "multicastLimit",
                json!(json_int(v, DEFAULT_MULTICAST_LIMIT)),
            );
        }
        if let Some(v) = b.get("mtu") {
            let mtu = u64::from(json_int(v, DEFAULT_MTU) as u32).clamp(MIN_MTU, MAX_MTU);
            put("mtu", json!(mtu));
        }
        if let Some(v) = b.get("remoteTraceTarget") {
            put("remoteTraceTarget", trace_target(v));
        }
        if let Some(v) = b.get("remoteTraceLevel") {
            put("remoteTraceLevel", json!(json_int(v, 0)));
        }
        if let Some(v) = b.get("v4AssignMode") {
            let zt = match v {
                Value::String(s) => s == "zt",
                Value::Object(_) => json_bool(field(v, "zt"), false),
                _ => false,
            };
            put("v4AssignMode", json!({ "zt": zt }));
        }
        if let Some(v) = b.get("v6AssignMode") {
            put("v6AssignMode", v6_assign_mode(v));
        }
        if let Some(Value::Array(a)) = b.get("routes") {
            put("routes", routes_from_post(a));
        }
        if let Some(Value::Array(a)) = b.get("ipAssignmentPools") {
            put("ipAssignmentPools", pools_from_post(a));
        }
        if let Some(Value::Array(a)) = b.get("rules") {
            put("rules", Value::Array(canonical_rules(a)?));
        }
        if let Some(v) = b.get("authTokens") {
            put("authTokens", auth_tokens_from_post(v));
        }
        if let Some(Value::Array(a)) = b.get("capabilities") {
            put("capabilities", capabilities_from_post(a)?);
        }
        if let Some(Value::Array(a)) = b.get("tags") {
            put("tags", tags_from_post(a));
        }
        if let Some(Value::Object(d)) = b.get("dns") {
            put("dns", dns_from_post(d));
        }
    }
    clean_network(&mut n);
    let change = commit_record(Some(&*record), &mut n);
    *record = n;
    Ok(change)
}

/// Applies a member POST body (the member handler of the stock HTTP control plane).
///
/// `record` is the stored member (`null` if none: a POST creates it); on success it holds the
/// record to store and return. `authorized` changes stamp `lastAuthorizedTime` (with credential
/// type `"api"`) or `lastDeauthorizedTime` with `now`. `id`, `address` and `nwid` are set from
/// `nwid`/`address` (lower case). The caller checks that the network exists (else 404).
///
/// # Errors
/// Where the stock controller answers HTTP 500: an `ipAssignments` element that is not a
/// string. `record` is then left as it was.
pub fn member_update_from_post(
    record: &mut Value,
    nwid: NetworkId,
    address: Address,
    body: &Value,
    now: Timestamp,
) -> Result<Change, PostError> {
    let mut n = record.clone();
    init_member(&mut n, nwid, address, now);
    if let Value::Object(b) = body {
        let m = object(&mut n);
        for k in ["activeBridge", "noAutoAssignIps"] {
            if let Some(v) = b.get(k) {
                m.insert(k.into(), json!(json_bool(v, false)));
            }
        }
        if let Some(v) = b.get("authenticationExpiryTime") {
            m.insert("authenticationExpiryTime".into(), json!(json_int(v, 0)));
        }
        for k in ["authenticationURL", "name"] {
            if let Some(v) = b.get(k) {
                m.insert(k.into(), json!(json_string(v, "")));
            }
        }
        if let Some(v) = b.get("remoteTraceTarget") {
            m.insert("remoteTraceTarget".into(), trace_target(v));
        }
        if let Some(v) = b.get("remoteTraceLevel") {
            m.insert("remoteTraceLevel".into(), json!(json_int(v, 0)));
        }
        if let Some(v) = b.get("authorized") {
            let auth = json_bool(v, false);
            if auth != json_bool(m.get("authorized").unwrap_or(&Value::Null), false) {
                m.insert("authorized".into(), json!(auth));
                if auth {
                    m.insert("lastAuthorizedTime".into(), json!(now.0));
                    m.insert("lastAuthorizedCredentialType".into(), json!("api"));
                    m.insert("lastAuthorizedCredential".into(), Value::Null);
                } else {
                    m.insert("lastDeauthorizedTime".into(), json!(now.0));
                }
            }
        }
        if let Some(Value::Array(a)) = b.get("ipAssignments") {
            let mut ips = Vec::new();
            for v in a {
                let Value::String(s) = v else {
                    return Err(PostError::type_must_be_string(v));
                };
                if let Some(ip) = parse_inet(s).ip() {
                    ips.push(json!(ip_to_string(ip)));
                    if ips.len() >= MAX_ARRAY_SIZE {
                        break;
                    }
                }
            }
            m.insert("ipAssignments".into(), Value::Array(ips));
        }
        if let Some(Value::Array(a)) = b.get("tags") {
            let mut tags = BTreeMap::new();
            for t in a {
                if let Value::Array(pair) = t
                    && let [id, value] = pair.as_slice()
                {
                    tags.insert(
                        json_int(id, 0) & 0xffff_ffff,
                        json_int(value, 0) & 0xffff_ffff,
                    );
                }
            }
            let tags: Vec<Value> = tags
                .into_iter()
                .take(MAX_ARRAY_SIZE)
                .map(|(id, value)| json!([id, value]))
                .collect();
            m.insert("tags".into(), Value::Array(tags));
        }
        if let Some(Value::Array(a)) = b.get("capabilities") {
            let mut caps: Vec<u64> = a
                .iter()
                .take(MAX_ARRAY_SIZE)
                .map(|c| json_int(c, 0))
                .collect();
            caps.sort_unstable();
            caps.dedup();
            m.insert("capabilities".into(), json!(caps));
        }
    }
    clean_member(&mut n);
    let change = commit_record(Some(&*record), &mut n);
    *record = n;
    Ok(change)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NWID: NetworkId = NetworkId(0x8056_c2e2_1c00_0001);
    const T0: Timestamp = Timestamp(1_700_000_000_000);

    fn addr() -> Address {
        "1a2b3c4d5e".parse().unwrap()
    }

    fn new_network() -> Value {
        let mut n = Value::Null;
        let c = network_update_from_post(&mut n, NWID, &json!({}), T0).unwrap();
        assert!(c.changed);
        n
    }

    fn post_network(n: &mut Value, body: Value) -> Change {
        network_update_from_post(n, NWID, &body, T0 + 5).unwrap()
    }

    fn post_member(m: &mut Value, body: Value, now: Timestamp) -> Change {
        member_update_from_post(m, NWID, addr(), &body, now).unwrap()
    }

    #[test]
    fn fresh_network_matches_the_composed_example() {
        let expected = r#"{"authTokens":[null],"authorizationEndpoint":"","capabilities":[],"clientId":"","creationTime":1700000000000,"dns":[],"enableBroadcast":true,"id":"8056c2e21c000001","ipAssignmentPools":[],"mtu":2800,"multicastLimit":32,"name":"","nwid":"8056c2e21c000001","objtype":"network","private":true,"remoteTraceLevel":0,"remoteTraceTarget":null,"revision":1,"routes":[],"rules":[{"not":false,"or":false,"type":"ACTION_ACCEPT"}],"rulesSource":"","ssoEnabled":false,"tags":[],"v4AssignMode":{"zt":false},"v6AssignMode":{"6plane":false,"rfc4193":false,"zt":false}}"#;
        assert_eq!(new_network().to_string(), expected);
    }

    #[test]
    fn pending_member_matches_the_composed_example() {
        // The key set and values of a member after its first request (identity added by the
        // request), here built through init + save.
        let mut m = Value::Null;
        init_member(&mut m, NWID, addr(), T0);
        object(&mut m).insert("identity".into(), json!("1a2b3c4d5e:0:<128 hex digits>"));
        clean_member(&mut m);
        assert!(commit_record(None, &mut m).changed);
        let expected = r#"{"activeBridge":false,"address":"1a2b3c4d5e","authenticationExpiryTime":0,"authorized":false,"capabilities":[],"creationTime":1700000000000,"id":"1a2b3c4d5e","identity":"1a2b3c4d5e:0:<128 hex digits>","ipAssignments":[],"lastAuthorizedCredential":null,"lastAuthorizedCredentialType":null,"lastAuthorizedTime":0,"lastDeauthorizedTime":0,"noAutoAssignIps":false,"nwid":"8056c2e21c000001","objtype":"member","remoteTraceLevel":0,"remoteTraceTarget":null,"revision":1,"ssoExempt":false,"tags":[],"vMajor":-1,"vMinor":-1,"vProto":-1,"vRev":-1}"#;
        assert_eq!(m.to_string(), expected);
    }

    #[test]
    fn revision_moves_only_on_change() {
        let mut n = new_network();
        assert_eq!(n["revision"], 1);
        let c = post_network(
            &mut n,
            json!({"name": "x", "unknownKey": 5, "rulesSource": "y"}),
        );
        assert_eq!(
            c,
            Change {
                changed: true,
                deauthorized: false
            }
        );
        assert_eq!(n["revision"], 2);
        assert!(n.get("unknownKey").is_none());
        assert_eq!(n["rulesSource"], "");
        // Same value again: nothing to write, revision unchanged.
        assert!(!post_network(&mut n, json!({"name": "x"})).changed);
        assert_eq!(n["revision"], 2);
        // Empty body and non-object bodies change nothing either.
        assert!(!post_network(&mut n, json!({})).changed);
        assert!(!post_network(&mut n, json!([1, 2])).changed);
        // A number that equals the stored one by value is no change.
        assert!(!post_network(&mut n, json!({"mtu": "2800"})).changed);
        // remoteTraceLevel is reset by a POST that omits it.
        post_network(&mut n, json!({"remoteTraceLevel": 10}));
        assert_eq!(n["remoteTraceLevel"], 10);
        assert!(post_network(&mut n, json!({"name": "x"})).changed);
        assert_eq!(n["remoteTraceLevel"], 0);
        // Stored computed fields are cleaned away.
        object(&mut n).insert("totalMemberCount".into(), json!(3));
        post_network(&mut n, json!({}));
        assert!(n.get("totalMemberCount").is_none());
    }

    #[test]
    fn network_scalar_coercions() {
        let mut n = new_network();
        post_network(
            &mut n,
            json!({"name": 12, "private": "false", "enableBroadcast": "no",
                   "multicastLimit": "64", "mtu": 99999, "remoteTraceTarget": "89e92ceee5"}),
        );
        assert_eq!(n["name"], "12");
        assert_eq!(n["private"], false);
        assert_eq!(n["enableBroadcast"], false);
        assert_eq!(n["multicastLimit"], 64);
        assert_eq!(n["mtu"], 10000);
        assert_eq!(n["remoteTraceTarget"], "89e92ceee5");
        post_network(
            &mut n,
            json!({"private": null, "enableBroadcast": null, "multicastLimit": null,
                   "mtu": 5, "remoteTraceTarget": "short", "name": null}),
        );
        assert_eq!(n["private"], true, "uncoercible private defaults to true");
        assert_eq!(
            n["enableBroadcast"], false,
            "uncoercible enableBroadcast defaults to false"
        );
        assert_eq!(n["multicastLimit"], 32);
        assert_eq!(n["mtu"], 1280);
        assert_eq!(n["remoteTraceTarget"], Value::Null);
        assert_eq!(n["name"], "");
        post_network(&mut n, json!({"mtu": null}));
        assert_eq!(n["mtu"], 2800);
        post_network(&mut n, json!({"mtu": 4_294_968_596u64}));
        assert_eq!(
            n["mtu"], 1300,
            "the value is cut to 32 bits before clamping"
        );
    }

    #[test]
    fn assign_modes() {
        let mut n = new_network();
        post_network(
            &mut n,
            json!({"v4AssignMode": "zt", "v6AssignMode": "zt,,6plane,zzz"}),
        );
        assert_eq!(n["v4AssignMode"], json!({"zt": true}));
        assert_eq!(
            n["v6AssignMode"],
            json!({"zt": true, "6plane": true, "rfc4193": false})
        );
        post_network(&mut n, json!({"v4AssignMode": {"zt": "true", "x": 1}}));
        assert_eq!(n["v4AssignMode"], json!({"zt": true}));
        post_network(&mut n, json!({"v4AssignMode": {}}));
        assert_eq!(n["v4AssignMode"], json!({"zt": false}));
        post_network(&mut n, json!({"v4AssignMode": "dhcp"}));
        assert_eq!(n["v4AssignMode"], json!({"zt": false}));
        post_network(&mut n, json!({"v4AssignMode": 1}));
        assert_eq!(n["v4AssignMode"], json!({"zt": false}));
        // An object copies only the keys it has.
        post_network(&mut n, json!({"v6AssignMode": {"rfc4193": 1}}));
        assert_eq!(n["v6AssignMode"], json!({"rfc4193": true}));
        post_network(&mut n, json!({"v6AssignMode": {}}));
        assert_eq!(n["v6AssignMode"], json!({}));
        post_network(&mut n, json!({"v6AssignMode": null}));
        assert_eq!(
            n["v6AssignMode"],
            json!({"zt": false, "6plane": false, "rfc4193": false})
        );
    }

    #[test]
    fn routes_and_pools() {
        let mut n = new_network();
        post_network(
            &mut n,
            json!({"routes": [
                {"target": "10.147.17.0/24", "via": null},
                {"target": "10.147.17.5/24"},
                {"target": "192.168.0.0/16", "via": "10.147.17.1"},
                {"target": "fd00:0::/8", "via": "10.0.0.1"},
                {"target": "0.0.0.0"},
                {"target": "10.0.0.0/33"},
                {"target": "nonsense"},
                {"target": 5},
                "notanobject",
                {"target": "2001:db8::/200"},
                {"target": "1.2.3/8"}
            ]}),
        );
        assert_eq!(
            n["routes"],
            json!([
                {"target": "10.147.17.0/24", "via": null},
                {"target": "10.147.17.5/24", "via": null},
                {"target": "192.168.0.0/16", "via": "10.147.17.1"},
                {"target": "fd00::/8", "via": null},
                {"target": "0.0.0.0/0", "via": null},
                {"target": "0.0.0.0/8", "via": null}
            ])
        );
        post_network(&mut n, json!({"routes": {"target": "10.0.0.0/8"}}));
        assert_eq!(
            n["routes"].as_array().unwrap().len(),
            6,
            "non-arrays are ignored"
        );
        post_network(&mut n, json!({"routes": []}));
        assert_eq!(n["routes"], json!([]), "arrays are replaced, never merged");

        post_network(
            &mut n,
            json!({"ipAssignmentPools": [
                {"ipRangeStart": "10.147.17.1", "ipRangeEnd": "10.147.17.254"},
                {"ipRangeStart": "10.147.17.9/24", "ipRangeEnd": "10.147.17.1"},
                {"ipRangeStart": "fd00::1", "ipRangeEnd": "10.0.0.1"},
                {"ipRangeStart": "fd00:0::1", "ipRangeEnd": "fd00::ffff"},
                {"ipRangeStart": "10.0.0.1"},
                {"ipRangeStart": "x", "ipRangeEnd": "y"}
            ]}),
        );
        assert_eq!(
            n["ipAssignmentPools"],
            json!([
                {"ipRangeStart": "10.147.17.1", "ipRangeEnd": "10.147.17.254"},
                {"ipRangeStart": "10.147.17.9", "ipRangeEnd": "10.147.17.1"},
                {"ipRangeStart": "fd00::1", "ipRangeEnd": "fd00::ffff"}
            ])
        );
    }

    #[test]
    fn rules_capabilities_tags() {
        let mut n = new_network();
        post_network(
            &mut n,
            json!({"rules": [
                {"type": "MATCH_ETHERTYPE", "etherType": 2048, "not": true},
                {"type": "ACTION_DROP"},
                {"type": "INTEGER_RANGE", "start": 1},
                {"type": "bogus"},
                7,
                {"type": "ACTION_ACCEPT", "not": false, "or": false}
            ]}),
        );
        assert_eq!(
            n["rules"],
            json!([
                {"type": "MATCH_ETHERTYPE", "etherType": 2048, "not": true, "or": false},
                {"type": "ACTION_DROP"},
                {"type": "ACTION_ACCEPT"}
            ])
        );
        post_network(
            &mut n,
            json!({"capabilities": [
                {"id": 5, "default": "true", "rules": [{"type": "ACTION_ACCEPT"}, {"type": "x"}]},
                {"id": "2", "rules": "no"},
                {"id": 5, "default": false},
                "skip"
            ], "tags": [
                {"id": 9, "default": "3"},
                {"id": 1},
                {"id": 1, "default": null},
                {"id": 4, "default": {}},
                []
            ]}),
        );
        assert_eq!(
            n["capabilities"],
            json!([
                {"id": 2, "default": false, "rules": []},
                {"id": 5, "default": false, "rules": []}
            ])
        );
        assert_eq!(
            n["tags"],
            json!([
                {"id": 1, "default": null},
                {"id": 4, "default": 0},
                {"id": 9, "default": 3}
            ])
        );
        let mut before = n.clone();
        let err = network_update_from_post(
            &mut before,
            NWID,
            &json!({"name": "changed", "rules": [{"type": "MATCH_CHARACTERISTICS", "mask": true}]}),
            T0,
        )
        .unwrap_err();
        assert!(
            err.description
                .contains("type must be string, but is boolean")
        );
        assert_eq!(before, n, "a failed POST leaves the record alone");
    }

    #[test]
    fn auth_tokens_and_dns() {
        let mut n = new_network();
        post_network(
            &mut n,
            json!({"authTokens": {"a": 0, "b": -1, "c": "5", "d": 1.5, "e": 17}}),
        );
        assert_eq!(n["authTokens"], json!({"a": 0, "d": 1.5, "e": 17}));
        post_network(&mut n, json!({"authTokens": {"b": -1}}));
        assert_eq!(n["authTokens"], Value::Null);
        post_network(&mut n, json!({"authTokens": "x"}));
        assert_eq!(n["authTokens"], json!([null]));

        post_network(
            &mut n,
            json!({"dns": {"domain": "zt.example", "servers": ["10.0.0.1", 5, "x"], "other": 1}}),
        );
        assert_eq!(
            n["dns"],
            json!({"domain": "zt.example", "servers": ["10.0.0.1", 5, "x"]})
        );
        post_network(&mut n, json!({"dns": {"servers": "x"}}));
        assert_eq!(n["dns"], json!({"domain": null}));
        post_network(&mut n, json!({"dns": {"domain": "", "servers": []}}));
        assert_eq!(n["dns"], json!({"domain": "", "servers": []}));
        post_network(&mut n, json!({"dns": []}));
        assert_eq!(
            n["dns"],
            json!({"domain": "", "servers": []}),
            "non-objects are ignored"
        );
    }

    #[test]
    fn arrays_are_capped() {
        let mut n = new_network();
        let routes: Vec<Value> = (0..MAX_ARRAY_SIZE + 10)
            .map(|i| json!({"target": format!("10.{}.{}.0/24", i / 256 % 256, i % 256)}))
            .collect();
        post_network(&mut n, json!({ "routes": routes }));
        assert_eq!(n["routes"].as_array().unwrap().len(), MAX_ARRAY_SIZE);
    }

    #[test]
    fn member_post() {
        let mut m = Value::Null;
        let c = post_member(&mut m, json!({"authorized": "true", "name": "laptop"}), T0);
        assert_eq!(
            c,
            Change {
                changed: true,
                deauthorized: false
            }
        );
        assert_eq!(m["revision"], 1);
        assert_eq!(m["authorized"], true);
        assert_eq!(m["lastAuthorizedTime"], T0.0);
        assert_eq!(m["lastAuthorizedCredentialType"], "api");
        assert_eq!(m["lastAuthorizedCredential"], Value::Null);
        assert_eq!(m["name"], "laptop");
        assert_eq!(m["id"], "1a2b3c4d5e");
        assert_eq!(m["address"], "1a2b3c4d5e");
        assert_eq!(m["nwid"], "8056c2e21c000001");
        assert!(m.get("identity").is_none());

        // Same authorization again: no stamp, no change.
        let c = post_member(&mut m, json!({"authorized": 1}), T0 + 10);
        assert!(!c.changed);
        assert_eq!(m["lastAuthorizedTime"], T0.0);
        assert_eq!(m["revision"], 1);

        let c = post_member(&mut m, json!({"authorized": "false"}), T0 + 20);
        assert_eq!(
            c,
            Change {
                changed: true,
                deauthorized: true
            }
        );
        assert_eq!(m["authorized"], false);
        assert_eq!(m["lastDeauthorizedTime"], T0.0 + 20);
        assert_eq!(m["lastAuthorizedTime"], T0.0);
        assert_eq!(m["revision"], 2);

        let c = post_member(
            &mut m,
            json!({
                "activeBridge": "1", "noAutoAssignIps": 2, "authenticationExpiryTime": "77",
                "authenticationURL": "https://x", "remoteTraceTarget": "89e92ceee5",
                "remoteTraceLevel": 20,
                "ipAssignments": ["10.147.17.5/24", "FD00::0:1", "junk", "10.1"],
                "tags": [[5, 1], [2, "7"], [5, 4294967298u64], [1], "x"],
                "capabilities": [9, "3", 9, true, null],
                "description": "ignored"
            }),
            T0 + 30,
        );
        assert!(c.changed && !c.deauthorized);
        assert_eq!(m["activeBridge"], true);
        assert_eq!(m["noAutoAssignIps"], true);
        assert_eq!(m["authenticationExpiryTime"], 77);
        assert!(
            m.get("authenticationURL").is_none(),
            "computed, never stored"
        );
        assert!(m.get("description").is_none());
        assert_eq!(m["remoteTraceTarget"], "89e92ceee5");
        assert_eq!(m["remoteTraceLevel"], 20);
        assert_eq!(
            m["ipAssignments"],
            json!(["10.147.17.5", "fd00::1", "0.0.0.0"])
        );
        assert_eq!(m["tags"], json!([[2, 7], [5, 2]]));
        assert_eq!(m["capabilities"], json!([0, 1, 3, 9]));

        // A POST without remoteTraceLevel resets it (stock quirk).
        post_member(&mut m, json!({}), T0 + 40);
        assert_eq!(m["remoteTraceLevel"], 0);

        let mut before = m.clone();
        let err = member_update_from_post(
            &mut before,
            NWID,
            addr(),
            &json!({"ipAssignments": ["10.0.0.1", 5]}),
            T0,
        )
        .unwrap_err();
        assert_eq!(
            err.description,
            "[json.exception.type_error.302] type must be string, but is number"
        );
        assert_eq!(before, m);
    }

    #[test]
    fn member_defaults_fill_old_records() {
        // A stored record missing fields gets them (and so counts as changed).
        let mut m = json!({"id": "1a2b3c4d5e", "nwid": "8056c2e21c000001", "authorized": true,
                           "revision": 7, "objtype": "member"});
        let c = post_member(&mut m, json!({}), T0);
        assert!(c.changed);
        assert_eq!(m["revision"], 8);
        assert_eq!(m["vMajor"], -1);
        assert_eq!(m["authorized"], true);
    }
}
