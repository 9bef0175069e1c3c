//! The views of the local JSON API: zerotier-one's objects (`/status`, `/health`, `/peer`,
//! `/network`, `/moon`), rendered with the same field names, types and defaults, so tools
//! written for zerotier-one read a `zt` node unchanged. (serde_json keeps object keys sorted,
//! as zerotier-one's nlohmann::json does.)

use serde_json::{Map, Value, json};
use zt_controller::json::{json_bool, json_int, json_string};
use zt_proto::{Address, NetworkInfo, NetworkStatus, NetworkType, Node, Peer, Timestamp, World};

use crate::device::managed::conf_true;
use crate::runtime::Snapshot;

/// The software version reported (the ZeroTier release whose protocol and API `zt` follows).
pub const VERSION: (u8, u8, u16) = (1, 14, 1);

fn version_string() -> String {
    format!("{}.{}.{}", VERSION.0, VERSION.1, VERSION.2)
}

fn hex(b: &[u8]) -> String {
    use std::fmt::Write;
    b.iter()
        .fold(String::with_capacity(b.len() * 2), |mut s, x| {
            let _ = write!(s, "{x:02x}");
            s
        })
}

/// Status name as zerotier-one spells it.
#[must_use]
pub fn status_name(s: NetworkStatus) -> &'static str {
    match s {
        NetworkStatus::RequestingConfiguration => "REQUESTING_CONFIGURATION",
        NetworkStatus::Ok => "OK",
        NetworkStatus::AccessDenied => "ACCESS_DENIED",
        NetworkStatus::NotFound => "NOT_FOUND",
        NetworkStatus::PortError => "PORT_ERROR",
        NetworkStatus::ClientTooOld => "CLIENT_TOO_OLD",
        NetworkStatus::AuthenticationRequired => "AUTHENTICATION_REQUIRED",
    }
}

/// zerotier-one's per-network local settings (`networks.d/<nwid>.local.conf`): whether the
/// OS may apply managed addresses, global addresses, a default route and DNS. `zt` configures
/// no OS interface, so they are only kept and reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalSettings {
    /// `allowManaged` (default true).
    pub allow_managed: bool,
    /// `allowGlobal` (default false).
    pub allow_global: bool,
    /// `allowDefault` (default false).
    pub allow_default: bool,
    /// `allowDNS` (default false).
    pub allow_dns: bool,
}

impl Default for LocalSettings {
    fn default() -> Self {
        Self {
            allow_managed: true,
            allow_global: false,
            allow_default: false,
            allow_dns: false,
        }
    }
}

impl LocalSettings {
    /// Reads the `key=value` lines of a `.local.conf` (missing keys keep their defaults; an
    /// `allowManaged` longer than 5 characters is zerotier-one's address list, meaning true).
    #[must_use]
    pub fn from_conf(text: &str) -> Self {
        let mut s = Self::default();
        for line in text.lines() {
            let Some((k, v)) = line.split_once('=') else {
                continue;
            };
            let v = v.trim_end_matches('\r');
            match k {
                "allowManaged" if !v.is_empty() => s.allow_managed = v.len() > 5 || conf_true(v),
                "allowGlobal" => s.allow_global = conf_true(v),
                "allowDefault" => s.allow_default = conf_true(v),
                "allowDNS" => s.allow_dns = conf_true(v),
                _ => {}
            }
        }
        s
    }

    /// The `.local.conf` text zerotier-one writes (all four keys, `0`/`1`).
    #[must_use]
    pub fn to_conf(&self) -> String {
        format!(
            "allowManaged={}\nallowGlobal={}\nallowDefault={}\nallowDNS={}\n",
            u8::from(self.allow_managed),
            u8::from(self.allow_global),
            u8::from(self.allow_default),
            u8::from(self.allow_dns)
        )
    }

    /// Applies a `POST /network/<id>` body: each of the four keys that is a JSON boolean is
    /// set; anything else (other types, a body that is not an object) is ignored.
    pub fn apply_post(&mut self, body: &Value) {
        let set = |slot: &mut bool, key: &str| {
            if let Some(b) = body.get(key).and_then(Value::as_bool) {
                *slot = b;
            }
        };
        set(&mut self.allow_managed, "allowManaged");
        set(&mut self.allow_global, "allowGlobal");
        set(&mut self.allow_default, "allowDefault");
        set(&mut self.allow_dns, "allowDNS");
    }
}

/// `GET /network/<id>` with default local settings.
#[must_use]
pub fn network_json(n: &NetworkInfo) -> Value {
    network_json_with(n, &LocalSettings::default())
}

/// `GET /network/<id>`.
#[must_use]
pub fn network_json_with(n: &NetworkInfo, settings: &LocalSettings) -> Value {
    let c = n.config.as_ref();
    let id = n.id.to_string();
    let addresses: Vec<String> = c
        .map(|c| c.static_ips.iter().map(ToString::to_string).collect())
        .unwrap_or_default();
    let routes: Vec<Value> = c
        .map(|c| {
            c.routes
                .iter()
                .map(|r| {
                    json!({
                        "target": r.target.to_string(),
                        "via": r.via.map(|v| v.to_string()),
                        "flags": r.flags,
                        "metric": r.metric,
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    let subs: Vec<Value> = n
        .subscriptions
        .iter()
        .map(|g| json!({"mac": g.mac.to_string(), "adi": g.adi}))
        .collect();
    let dns = c.map_or_else(
        || json!({"domain": "", "servers": []}),
        |c| {
            json!({
                "domain": c.dns.domain,
                "servers": c.dns.servers.iter().map(ToString::to_string).collect::<Vec<_>>(),
            })
        },
    );
    json!({
        "id": id,
        "nwid": id,
        "mac": n.mac.to_string(),
        "name": c.map(|c| c.name.clone()).unwrap_or_default(),
        "status": status_name(n.status),
        "type": match c.map(|c| c.network_type) {
            Some(NetworkType::Public) => "PUBLIC",
            _ => "PRIVATE",
        },
        "mtu": c.map_or(2800, |c| c.mtu),
        "dhcp": false,
        "bridge": false,
        "broadcastEnabled": c.is_some_and(|c| c.broadcast_enabled()),
        "portError": 0,
        "netconfRevision": c.map_or(0, |c| c.revision),
        "portDeviceName": "",
        "allowManaged": settings.allow_managed,
        "allowGlobal": settings.allow_global,
        "allowDefault": settings.allow_default,
        "allowDNS": settings.allow_dns,
        "assignedAddresses": addresses,
        "routes": routes,
        "multicastSubscriptions": subs,
        "dns": dns,
    })
}

/// A peer's role as zerotier-one names it: a root of the planet is `PLANET`, a root of a
/// moon `MOON`, anything else `LEAF`.
#[must_use]
pub fn peer_role(node: &Node, a: Address) -> &'static str {
    if !node.upstreams().contains(&a) {
        "LEAF"
    } else if node
        .planet()
        .roots
        .iter()
        .any(|r| r.identity.address() == a)
    {
        "PLANET"
    } else {
        "MOON"
    }
}

fn ms_or_zero(t: Timestamp) -> i64 {
    t.as_millis().max(0)
}

/// `GET /peer/<address>`: version −1 when unknown, latency of the preferred path (−1 if
/// unknown), the paths the node keeps (not expired), the preferred one being the best alive
/// path. `local_port` is the node's UDP port.
#[must_use]
pub fn peer_json(node: &Node, p: &Peer, now: Timestamp, local_port: u16) -> Value {
    let (maj, min, rev) = p.version.map_or((-1, -1, -1), |v| {
        (
            i64::from(v.major),
            i64::from(v.minor),
            i64::from(v.revision),
        )
    });
    let best = p.best_alive_path(now);
    let latency = best.and_then(|b| b.latency).map_or(-1, i64::from);
    let paths: Vec<Value> = p
        .paths
        .iter()
        .filter(|x| !x.is_expired(now))
        .map(|x| {
            let preferred = best.is_some_and(|b| b.local == x.local && b.remote == x.remote);
            json!({
                "address": format!("{}/{}", x.remote.ip(), x.remote.port()),
                "lastSend": ms_or_zero(x.last_send),
                "lastReceive": ms_or_zero(x.last_receive),
                "trustedPathId": 0,
                "active": true,
                "expired": false,
                "preferred": preferred,
                "localSocket": x.local.0,
                "localPort": local_port,
            })
        })
        .collect();
    let address = p.identity.address();
    json!({
        "address": address.to_string(),
        "versionMajor": maj,
        "versionMinor": min,
        "versionRev": rev,
        "version": format!("{maj}.{min}.{rev}"),
        "latency": latency,
        "role": peer_role(node, address),
        "isBonded": false,
        "tunneled": false,
        "paths": paths,
    })
}

/// `GET /peer`: every peer, by address.
#[must_use]
pub fn peers_json(node: &Node, now: Timestamp, local_port: u16) -> Value {
    let mut peers: Vec<&Peer> = node.peers().collect();
    peers.sort_by_key(|p| p.identity.address());
    Value::Array(
        peers
            .into_iter()
            .map(|p| peer_json(node, p, now, local_port))
            .collect(),
    )
}

/// `GET /health`.
#[must_use]
pub fn health_json(online: bool, now_ms: i64) -> Value {
    json!({
        "clock": now_ms,
        "online": online,
        "version": version_string(),
        "versionBuild": 0,
        "versionMajor": VERSION.0,
        "versionMinor": VERSION.1,
        "versionRev": VERSION.2,
    })
}

/// `local_conf` (a JSON object, else an empty one) after `f` changed its `settings` object
/// (an empty one where there is none, or something else).
pub(crate) fn with_settings(
    local_conf: Value,
    f: impl FnOnce(&mut Map<String, Value>),
) -> Map<String, Value> {
    let mut conf = match local_conf {
        Value::Object(m) => m,
        _ => Map::new(),
    };
    let settings = conf
        .entry("settings")
        .or_insert_with(|| Value::Object(Map::new()));
    if !settings.is_object() {
        *settings = Value::Object(Map::new());
    }
    if let Value::Object(s) = settings {
        f(s);
    }
    conf
}

/// `GET /status`. `local_conf` is the home's `local.conf` (or `{}`); its `settings` are
/// completed as zerotier-one does (values present in the file win where it lets them).
#[must_use]
pub fn status_json(
    node: &Node,
    now_ms: i64,
    port: u16,
    home: Option<&str>,
    local_conf: Value,
) -> Value {
    let config = with_settings(local_conf, |s| {
        let null = Value::Null;
        let b = |s: &Map<String, Value>, k: &str, d: bool| json_bool(s.get(k).unwrap_or(&null), d);
        let i = |s: &Map<String, Value>, k: &str, d: u64| {
            json_int(s.get(k).unwrap_or(&null), d) & 0xffff
        };
        let st =
            |s: &Map<String, Value>, k: &str, d: &str| json_string(s.get(k).unwrap_or(&null), d);
        // No TCP relay and no UPnP in zt: those report false.
        let v = json!({
            "allowTcpFallbackRelay": b(s, "allowTcpFallbackRelay", false),
            "forceTcpRelay": b(s, "forceTcpRelay", false),
            "primaryPort": i(s, "primaryPort", u64::from(port)),
            "secondaryPort": i(s, "secondaryPort", 0),
            "tertiaryPort": i(s, "tertiaryPort", 0),
            "homeDir": home.unwrap_or(""),
            "listeningOn": [format!("0.0.0.0/{port}")],
            "surfaceAddresses": node
                .surface_addresses()
                .iter()
                .map(|a| format!("{}/{}", a.ip(), a.port()))
                .collect::<Vec<_>>(),
            "portMappingEnabled": false,
            "softwareUpdate": st(s, "softwareUpdate", "disable"),
            "softwareUpdateChannel": st(s, "softwareUpdateChannel", "release"),
        });
        if let Value::Object(v) = v {
            s.extend(v);
        }
    });
    let planet = node.planet();
    json!({
        "address": node.address().to_string(),
        "publicIdentity": node.identity().to_public_string(),
        "online": node.is_online(),
        "tcpFallbackActive": false,
        "version": version_string(),
        "versionMajor": VERSION.0,
        "versionMinor": VERSION.1,
        "versionRev": VERSION.2,
        "versionBuild": 0,
        "clock": now_ms,
        "planetWorldId": planet.id,
        "planetWorldTimestamp": planet.timestamp,
        "config": Value::Object(config),
    })
}

/// A moon as `GET /moon` lists it.
#[must_use]
pub fn moon_json(w: &World) -> Value {
    let roots: Vec<Value> = w
        .roots
        .iter()
        .map(|r| {
            json!({
                "identity": r.identity.to_public_string(),
                "stableEndpoints": r
                    .stable_endpoints
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>(),
            })
        })
        .collect();
    json!({
        "id": format!("{:016x}", w.id),
        "timestamp": w.timestamp,
        "signature": hex(&w.signature),
        "updatesMustBeSignedBy": hex(&w.update_key),
        "roots": roots,
        "waiting": false,
    })
}

/// `GET /network`: every joined network, by ID (default local settings).
#[must_use]
pub fn networks_json(s: &Snapshot) -> Value {
    let mut nets: Vec<&NetworkInfo> = s.networks.iter().collect();
    nets.sort_by_key(|n| n.id);
    Value::Array(nets.into_iter().map(network_json).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_settings_round_trip_and_parse() {
        let d = LocalSettings::default();
        assert_eq!(
            d.to_conf(),
            "allowManaged=1\nallowGlobal=0\nallowDefault=0\nallowDNS=0\n"
        );
        assert_eq!(LocalSettings::from_conf(&d.to_conf()), d);
        let s = LocalSettings::from_conf("allowManaged=0\nallowDNS=true\nallowGlobal=T\r\n");
        assert!(!s.allow_managed && s.allow_dns && s.allow_global && !s.allow_default);
        // An address list means "managed, restricted to these".
        let s = LocalSettings::from_conf("allowManaged=10.0.0.0/8,fd00::/8\n");
        assert!(s.allow_managed);
        assert_eq!(LocalSettings::from_conf("garbage\n\0\u{7f}"), d);
    }

    #[test]
    fn local_settings_post_takes_booleans_only() {
        let mut s = LocalSettings::default();
        s.apply_post(&json!({"allowManaged": false, "allowGlobal": "true", "allowDNS": true}));
        assert!(!s.allow_managed && !s.allow_global && s.allow_dns);
        s.apply_post(&json!([1, 2]));
        s.apply_post(&Value::Null);
        assert!(!s.allow_managed && s.allow_dns);
    }

    #[test]
    fn hex_is_lower_case() {
        assert_eq!(hex(&[0x00, 0xab, 0x7f]), "00ab7f");
    }
}
