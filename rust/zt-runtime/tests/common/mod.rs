//! Helpers shared by the runtime's integration tests: nodes of one process on loopback UDP.
#![allow(dead_code, unreachable_pub)]

use std::net::UdpSocket;
use std::sync::Arc;
use std::time::{Duration, Instant};

use zt_proto::{CoreOptions, Identity, Root, World, WorldType, crypto::c25519::KeyPair};
use zt_runtime::MemoryStore;
use zt_runtime::rng::OsRng;
use zt_runtime::runtime::{ControllerStorage, NodeRuntime, RuntimeOptions};
use zt_runtime::state::LoadOptions;
use zt_runtime::underlay::parse_prefixes;

/// How long a node may take to start.
pub const T: Duration = Duration::from_secs(10);
/// How long a node without a stored identity may take to start: it first generates one (a
/// memory-hard search of random length that, with both cores busy, has taken over 10 s).
pub const KEYGEN_START: Duration = Duration::from_secs(60);

/// A UDP port free on 127.0.0.1 right now.
pub fn free_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .expect("a free port")
        .local_addr()
        .expect("its address")
        .port()
}

/// A planet (world `id`) whose one root listens on a free 127.0.0.1 port, with that root's
/// identity and port.
pub fn loopback_planet(id: u64) -> (World, Identity, u16) {
    let root_id = Identity::generate(&mut OsRng);
    let port = free_port();
    let key = KeyPair::generate(&mut OsRng);
    let roots = vec![Root {
        identity: root_id.to_public(),
        stable_endpoints: vec![std::net::SocketAddr::from(([127, 0, 0, 1], port)).into()],
    }];
    let planet = World::make(WorldType::Planet, id, 1, *key.public(), roots, &key).expect("planet");
    (planet, root_id, port)
}

/// A started node on `planet` at `port` (IPv4 loopback only), with an in-memory controller
/// when `controller`.
pub fn node(
    planet: &World,
    identity: Option<Identity>,
    port: u16,
    controller: bool,
) -> NodeRuntime {
    let rt = NodeRuntime::new(
        Arc::new(MemoryStore::new()),
        RuntimeOptions {
            load: LoadOptions {
                identity,
                planet: Some(planet.clone()),
                keygen_threads: 1,
                core: CoreOptions {
                    allow_loopback: true,
                    ..CoreOptions::default()
                },
            },
            port,
            ipv6: false,
            allowed_destinations: Some(parse_prefixes("127.0.0.0/8").expect("prefix")),
            controller: controller.then_some(ControllerStorage::Memory),
        },
    );
    rt.start().expect("start");
    rt.wait_running(Some(KEYGEN_START)).expect("running");
    rt
}

/// Polls `f` every 20 ms until it holds; panics after `limit`.
pub fn wait_for<F: FnMut() -> bool>(what: &str, limit: Duration, mut f: F) {
    let end = Instant::now() + limit;
    while !f() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The socket error of an operation the node ran (a node that did not run it fails the test).
pub fn op<T>(
    r: Result<T, zt_runtime::runtime::OpError<zt_runtime::sockets::SockError>>,
) -> Result<T, zt_runtime::sockets::SockError> {
    r.map_err(|e| match e {
        zt_runtime::runtime::OpError::Failed(e) => e,
        zt_runtime::runtime::OpError::Runtime(e) => {
            panic!("the node did not run the operation: {e}")
        }
    })
}
