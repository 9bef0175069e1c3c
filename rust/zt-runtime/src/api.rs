//! zerotier-one's local JSON objects (`/status`, `/peer`, `/network`), rendered from a node's
//! snapshot with the same field names, types and defaults, so tools written for zerotier-one
//! read a `zt` node unchanged.

use serde_json::{Value, json};
use zt_proto::network::config::NetworkType;
use zt_proto::node::{NetworkInfo, NetworkStatus};

use crate::runtime::{PeerInfo, Snapshot};

/// The software version reported (the ZeroTier release whose protocol and API `zt` follows).
pub const VERSION: (u8, u8, u16) = (1, 14, 1);

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

/// `GET /network/<id>`.
#[must_use]
pub fn network_json(n: &NetworkInfo) -> Value {
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
        "allowManaged": true,
        "allowGlobal": false,
        "allowDefault": false,
        "allowDNS": false,
        "assignedAddresses": addresses,
        "routes": routes,
        "multicastSubscriptions": subs,
        "dns": dns,
    })
}

/// `GET /peer/<address>`.
#[must_use]
pub fn peer_json(p: &PeerInfo, now_ms: i64, moon_roots: &[zt_proto::Address]) -> Value {
    let (maj, min, rev) = p.version.map_or((-1, -1, -1), |(a, b, c)| {
        (i64::from(a), i64::from(b), i64::from(c))
    });
    let latency = p
        .paths
        .iter()
        .filter_map(|x| x.latency_ms)
        .min()
        .map_or(-1, i64::from);
    let role = if moon_roots.contains(&p.address) {
        "MOON"
    } else if p.is_root {
        "PLANET"
    } else {
        "LEAF"
    };
    let best = p
        .paths
        .iter()
        .filter(|x| x.alive)
        .min_by_key(|x| x.latency_ms.unwrap_or(u32::MAX))
        .map(|x| x.remote);
    let paths: Vec<Value> = p
        .paths
        .iter()
        .map(|x| {
            json!({
                "address": format!("{}/{}", x.remote.ip(), x.remote.port()),
                "lastSend": 0,
                "lastReceive": now_ms - x.last_receive_ago_ms,
                "trustedPathId": 0,
                "active": true,
                "expired": false,
                "preferred": Some(x.remote) == best,
                "localSocket": 0,
                "localPort": 0,
            })
        })
        .collect();
    json!({
        "address": p.address.to_string(),
        "versionMajor": maj,
        "versionMinor": min,
        "versionRev": rev,
        "version": format!("{maj}.{min}.{rev}"),
        "latency": latency,
        "role": role,
        "isBonded": false,
        "tunneled": false,
        "paths": paths,
    })
}

/// `GET /status`.
#[must_use]
pub fn status_json(s: &Snapshot, now_ms: i64, home: Option<&str>) -> Value {
    let listening: Vec<String> = vec![format!("0.0.0.0/{}", s.port)];
    json!({
        "address": s.identity.address().to_string(),
        "publicIdentity": s.identity.to_public_string(),
        "online": s.online,
        "tcpFallbackActive": false,
        "version": format!("{}.{}.{}", VERSION.0, VERSION.1, VERSION.2),
        "versionMajor": VERSION.0,
        "versionMinor": VERSION.1,
        "versionRev": VERSION.2,
        "versionBuild": 0,
        "clock": now_ms,
        "planetWorldId": s.planet.id,
        "planetWorldTimestamp": s.planet.timestamp,
        "config": {"settings": {
            "allowTcpFallbackRelay": false,
            "forceTcpRelay": false,
            "primaryPort": s.port,
            "secondaryPort": 0,
            "tertiaryPort": 0,
            "homeDir": home.unwrap_or(""),
            "listeningOn": listening,
            "surfaceAddresses": [],
            "portMappingEnabled": false,
            "softwareUpdate": "disable",
            "softwareUpdateChannel": "release",
        }},
    })
}

/// `GET /peer`: every peer, by address.
#[must_use]
pub fn peers_json(s: &Snapshot, now_ms: i64) -> Value {
    let moon_roots: Vec<zt_proto::Address> = s
        .moons
        .iter()
        .flat_map(|m| m.roots.iter().map(|r| r.identity.address()))
        .collect();
    let mut peers: Vec<&PeerInfo> = s.peers.iter().collect();
    peers.sort_by_key(|p| p.address);
    Value::Array(
        peers
            .into_iter()
            .map(|p| peer_json(p, now_ms, &moon_roots))
            .collect(),
    )
}

/// `GET /network`: every joined network, by ID.
#[must_use]
pub fn networks_json(s: &Snapshot) -> Value {
    let mut nets: Vec<&NetworkInfo> = s.networks.iter().collect();
    nets.sort_by_key(|n| n.id);
    Value::Array(nets.into_iter().map(network_json).collect())
}
