//! What the node looks like from outside ([`Snapshot`]), rebuilt by the loop.

use std::sync::Arc;

use zt_proto::{Identity, Node, NodeStats, World};

use super::core::LoopState;

/// One path of a peer, as reported.
#[derive(Clone, Debug)]
pub struct PathInfo {
    /// Remote endpoint.
    pub remote: std::net::SocketAddr,
    /// Milliseconds since the last authenticated packet on it.
    pub last_receive_ago_ms: i64,
    /// Round-trip latency, if measured.
    pub latency_ms: Option<u32>,
    /// Whether it is alive.
    pub alive: bool,
}

/// A peer, as reported.
#[derive(Clone, Debug)]
pub struct PeerInfo {
    /// Address.
    pub address: zt_proto::Address,
    /// Software version (major, minor, revision), when known.
    pub version: Option<(u8, u8, u16)>,
    /// Protocol version, when known.
    pub protocol: Option<u8>,
    /// Whether it is one of this node's roots.
    pub is_root: bool,
    /// Its paths.
    pub paths: Vec<PathInfo>,
}

/// What the node looks like from outside, refreshed by the loop.
#[derive(Clone, Debug)]
pub struct Snapshot {
    /// The node's identity (with secret).
    pub identity: Identity,
    /// The current planet.
    pub planet: World,
    /// The moons.
    pub moons: Vec<World>,
    /// Core counters.
    pub stats: NodeStats,
    /// Store writes that failed since start.
    pub store_errors: u64,
    /// Datagrams the OS refused to send.
    pub send_errors: u64,
    /// Datagrams not sent because their destination is outside the allowed destinations
    /// (`RuntimeOptions::allowed_destinations` or the environment's list); the first to each
    /// address is logged.
    pub refused_destinations: u64,
    /// SYNs dropped while a listener had no free socket (its backlog full): their clients
    /// retry, as with the kernel's full queues.
    pub syns_dropped: u64,
    /// Whether a root answers (always for a root).
    pub online: bool,
    /// Whether this node is a root of its planet or a moon.
    pub is_root: bool,
    /// The UDP port.
    pub port: u16,
    /// Peers.
    pub peers: Vec<PeerInfo>,
    /// Networks joined (shared: copied from the node only when they change).
    pub networks: Arc<Vec<zt_proto::NetworkInfo>>,
    /// Frames delivered while no tap listened.
    pub frames_untapped: u64,
    /// Loop passes run by application threads right after they queued something to send (it
    /// went out from that thread, without a hand-off to the loop thread).
    pub inline_passes: u64,
    /// Passes run by application threads that waited for their socket and read the node's UDP
    /// sockets themselves while the loop was idle (the data reached them without a hand-off).
    pub led_passes: u64,
}

/// What the node looks like now. The networks (configs with their credentials) are copied only
/// when they changed; otherwise the `previous` ones are shared.
pub(super) fn build_snapshot(
    node: &Node,
    out: &mut LoopState,
    now: zt_proto::Timestamp,
    previous: Option<Arc<Vec<zt_proto::NetworkInfo>>>,
) -> Snapshot {
    let networks = match previous {
        Some(p) if !out.networks_changed => p,
        _ => Arc::new(node.networks()),
    };
    out.networks_changed = false;
    let roots = node.upstreams();
    let peers = node
        .peers()
        .map(|p| PeerInfo {
            address: p.identity.address(),
            version: p.version.map(|v| (v.major, v.minor, v.revision)),
            protocol: p.version.map(|v| v.protocol),
            is_root: roots.contains(&p.identity.address()),
            paths: p
                .paths
                .iter()
                .map(|x| PathInfo {
                    remote: x.remote,
                    last_receive_ago_ms: now.since(x.last_receive),
                    latency_ms: x.latency,
                    alive: x.is_alive(now),
                })
                .collect(),
        })
        .collect();
    Snapshot {
        identity: node.identity().clone(),
        planet: node.planet().clone(),
        moons: node.moons().to_vec(),
        stats: node.stats().clone(),
        store_errors: out.store_errors,
        send_errors: out.send_errors,
        refused_destinations: out.refused_destinations,
        syns_dropped: out.stacks.syns_dropped(),
        online: node.is_online(),
        is_root: node.is_root(),
        port: out.udp.port(),
        peers,
        networks,
        frames_untapped: out.frames_untapped,
        inline_passes: out.inline_passes,
        led_passes: out.led_passes,
    }
}
