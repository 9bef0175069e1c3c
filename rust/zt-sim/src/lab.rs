//! A ZeroTier network on the simulator: a root, a controller node answering from records in
//! memory (as the runtime's controller host does), and members that join it.

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::rc::Rc;
use std::sync::OnceLock;

use serde_json::{Value, json};
use zt_controller::records::{member_update_from_post, network_update_from_post};
use zt_controller::{self as ctl, Decision, NetworkSummary, Request};
use zt_proto::{
    Address, ERROR_NETWORK_ACCESS_DENIED, ERROR_OBJ_NOT_FOUND, Event, Identity, NetworkId,
    NetworkStatus, Node, Root, Timestamp, World, WorldType, crypto::c25519::KeyPair,
};

use crate::link::LinkProfile;
use crate::{EventHandler, Sim, SimRng, public};

/// The virtual time labs start at.
pub const START: Timestamp = Timestamp(1_700_000_000_000);

/// The identity generated from `seed` (deterministic; the first few are cached, since the
/// identity hash is slow and every lab uses the same ones).
#[must_use]
pub fn identity(seed: u64) -> Identity {
    const CACHED: usize = 16;
    static CACHE: OnceLock<std::sync::Mutex<HashMap<u64, Identity>>> = OnceLock::new();
    if seed >= CACHED as u64 {
        return Identity::generate(&mut SimRng(seed));
    }
    let cache = CACHE.get_or_init(Default::default);
    if let Ok(map) = cache.lock()
        && let Some(id) = map.get(&seed)
    {
        return id.clone();
    }
    let id = Identity::generate(&mut SimRng(seed));
    if let Ok(mut map) = cache.lock() {
        map.insert(seed, id.clone());
    }
    id
}

/// A planet with one root, `root`, reachable at `ep`.
///
/// # Panics
/// If the world cannot be signed (it always can).
#[must_use]
#[allow(clippy::expect_used)]
pub fn planet(root: &Identity, ep: SocketAddr) -> World {
    let key = KeyPair::generate(&mut SimRng(77));
    let roots = vec![Root {
        identity: root.to_public(),
        stable_endpoints: vec![ep.into()],
    }];
    World::make(WorldType::Planet, 0x5151, 1, *key.public(), roots, &key).expect("a valid planet")
}

/// Controller records in memory.
#[derive(Debug, Default)]
pub struct Records {
    /// Network records, by network.
    pub networks: HashMap<NetworkId, Value>,
    /// Member records, by network and member.
    pub members: HashMap<(NetworkId, Address), Value>,
    /// Config requests answered.
    pub requests: u32,
    rng: Option<SimRng>,
}

/// Answers config requests from the shared records, as the runtime's controller host does.
#[derive(Debug)]
pub struct MemController(pub Rc<RefCell<Records>>);

impl EventHandler for MemController {
    fn handle(&mut self, node: &mut Node, now: Timestamp, ev: Event) -> Option<Event> {
        let Event::ControllerRequest(req) = ev else {
            return Some(ev);
        };
        let mut guard = self.0.borrow_mut();
        let this = &mut *guard;
        this.requests += 1;
        let id = req.network;
        let a = req.requester.address();
        let members: Vec<Value> = this
            .members
            .iter()
            .filter(|((n, _), _)| *n == id)
            .map(|(_, v)| v.clone())
            .collect();
        let allocated = ctl::allocated_ips(members.iter());
        let bridges = ctl::active_bridges(members.iter());
        let outcome = ctl::decide(
            &Request {
                network_id: id,
                identity: &req.requester,
                metadata: &req.metadata,
                genuine: true,
                now,
            },
            this.networks.get(&id),
            this.members.get(&(id, a)),
            &NetworkSummary {
                allocated_ips: &allocated,
                active_bridges: &bridges,
            },
            this.rng.get_or_insert(SimRng(5)),
        );
        if let Some(save) = outcome.save {
            this.members.insert((id, a), save);
        }
        match outcome.decision {
            Decision::NotFound => {
                node.controller_send_error(now, id, a, req.request_id, ERROR_OBJ_NOT_FOUND);
            }
            Decision::AccessDenied => {
                node.controller_send_error(now, id, a, req.request_id, ERROR_NETWORK_ACCESS_DENIED);
            }
            Decision::NoAnswer => {}
            Decision::Authorized(plan) => {
                if let Ok(c) = ctl::issue::issue(&plan, node.identity(), &req.requester) {
                    let _ = node.controller_send_config(now, req.request_id, &c);
                }
            }
        }
        None
    }
}

/// A private network with managed IPv4 (198.18.0.10–250) and RFC 4193 IPv6 addresses, the
/// default MTU (2800).
#[must_use]
pub fn private_network() -> Value {
    json!({
        "name": "sim-net",
        "private": true,
        "v4AssignMode": {"zt": true},
        "v6AssignMode": {"rfc4193": true, "6plane": false, "zt": false},
        "ipAssignmentPools": [{"ipRangeStart": "198.18.0.10", "ipRangeEnd": "198.18.0.250"}],
        "routes": [{"target": "198.18.0.0/15", "via": null}],
    })
}

/// A simulated network: host 0 is the root, `ctl` the controller of `nwid`, `members` the
/// hosts that may join it (not joined yet).
#[derive(Debug)]
pub struct NetworkLab {
    /// The simulator.
    pub sim: Sim,
    /// The controller's host.
    pub ctl: usize,
    /// The members' hosts.
    pub members: Vec<usize>,
    /// The network.
    pub nwid: NetworkId,
    /// The controller's records.
    pub records: Rc<RefCell<Records>>,
}

impl NetworkLab {
    /// A root (203.0.113.1), a controller (203.0.113.2) serving `network` and `n_members`
    /// members (203.0.113.10, .11, …), every pair of hosts linked by `link`; after 3 s of
    /// virtual time (everyone online). Simulator seed 11, fixed identities.
    ///
    /// # Panics
    /// If `network` is not a valid network record (a test set-up error).
    #[must_use]
    pub fn new(link: LinkProfile, n_members: usize, network: &Value) -> Self {
        Self::with_seed(11, link, n_members, network)
    }

    /// The same with simulator seed `seed` (the identities stay the same).
    ///
    /// # Panics
    /// If `network` is not a valid network record (a test set-up error).
    #[must_use]
    #[allow(clippy::expect_used)]
    pub fn with_seed(seed: u64, link: LinkProfile, n_members: usize, network: &Value) -> Self {
        let root_id = identity(1);
        let p = planet(&root_id, public(1));
        let mut sim = Sim::with_link(seed, link, START);
        sim.add_host(root_id, p.clone(), public(1), None);
        let ctl_id = identity(2);
        let ctl_addr = ctl_id.address();
        let ctl = sim.add_host(ctl_id, p.clone(), public(2), None);
        sim.hosts[ctl].node.set_controller(true);
        let nwid = NetworkId((ctl_addr.to_u64() << 24) | 0x00_0042);
        let records = Rc::new(RefCell::new(Records::default()));
        let mut rec = Value::Null;
        network_update_from_post(&mut rec, nwid, network, START).expect("a valid network");
        records.borrow_mut().networks.insert(nwid, rec);
        sim.hosts[ctl].handler = Some(Box::new(MemController(records.clone())));
        let members = (0..n_members)
            .map(|i| {
                sim.add_host(
                    identity(10 + i as u64),
                    p.clone(),
                    public(10 + (i % 240) as u8),
                    None,
                )
            })
            .collect();
        sim.run_for(3_000);
        Self {
            sim,
            ctl,
            members,
            nwid,
            records,
        }
    }

    /// A member's status on the lab's network.
    #[must_use]
    pub fn status(&self, host: usize) -> Option<NetworkStatus> {
        status(&self.sim, host, self.nwid)
    }

    /// A member's managed IPv4 address.
    #[must_use]
    pub fn ipv4_of(&self, host: usize) -> Option<Ipv4Addr> {
        ipv4_of(&self.sim, host, self.nwid)
    }

    /// Authorizes (or deauthorizes) a member in the records; true if that deauthorized it.
    pub fn authorize(&self, a: Address, yes: bool) -> bool {
        authorize(&self.records, self.nwid, a, yes)
    }

    /// Every member joins, is authorized once its request is pending, and gets its config
    /// (11 s of virtual time). False if some member is not `Ok` afterwards.
    pub fn authorize_all(&mut self) -> bool {
        let id = self.nwid;
        for &m in &self.members {
            let now = self.sim.now;
            self.sim.hosts[m]
                .node
                .join(now, id)
                .expect("a lab member is far below the cap on networks");
        }
        self.sim.pump();
        self.sim.run_for(3_000);
        for &m in &self.members {
            let a = self.sim.hosts[m].node.address();
            authorize(&self.records, id, a, true);
        }
        self.sim.run_for(8_000);
        self.members
            .iter()
            .all(|&m| self.status(m) == Some(NetworkStatus::Ok))
    }
}

/// A host's status on network `id`.
#[must_use]
pub fn status(sim: &Sim, host: usize, id: NetworkId) -> Option<NetworkStatus> {
    sim.hosts[host].node.network(id).map(|n| n.status)
}

/// A host's managed IPv4 address on network `id`.
#[must_use]
pub fn ipv4_of(sim: &Sim, host: usize, id: NetworkId) -> Option<Ipv4Addr> {
    sim.hosts[host]
        .node
        .network(id)?
        .config?
        .static_ips
        .iter()
        .find_map(|p| match p.ip {
            IpAddr::V4(a) => Some(a),
            IpAddr::V6(_) => None,
        })
}

/// Authorizes (or deauthorizes) member `a` of `id` in the records, as the API would; true if
/// that deauthorized it.
///
/// # Panics
/// If the update is refused (a test set-up error).
#[allow(clippy::expect_used)]
pub fn authorize(records: &RefCell<Records>, id: NetworkId, a: Address, yes: bool) -> bool {
    let mut r = records.borrow_mut();
    let mut rec = r.members.get(&(id, a)).cloned().unwrap_or(Value::Null);
    let change = member_update_from_post(&mut rec, id, a, &json!({"authorized": yes}), START)
        .expect("a valid member update");
    r.members.insert((id, a), rec);
    change.deauthorized
}
