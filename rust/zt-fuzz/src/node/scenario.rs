//! The fixed world of the node harnesses, built once per process and role: planet and moon,
//! the network and its records, the configs and credentials the controller issued (signed
//! content a fuzzer cannot forge), and the keys between every pair of identities.

use std::sync::OnceLock;

use zt_proto::{
    LocalSocket, NetworkConfig, NetworkId, NetworkType, Node, NodeConfig, World,
    credentials::{CredentialType, Revocation},
    crypto::c25519::KeyPair,
    fuzzing::{CHUNK_FLAG_FAST_PROPAGATE, Credentials},
    make_chunks,
    packet::PeerKeys,
    rules::{Rule, RuleKind},
};
use zt_sim::SimRng;
use zt_sim::lab::Records;

use crate::fixtures::{self, START, fixtures};

/// A member record of the controller: (network, member) and the record.
type MemberRecord = ((NetworkId, zt_proto::Address), serde_json::Value);

/// Which node the harness drives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// A member of a network (identity 1 is its root and controller).
    Leaf,
    /// The planet's root and a network controller.
    Root,
}

/// Everything fixed for one role.
#[derive(Debug)]
pub struct Scenario {
    /// The role.
    pub role: Role,
    /// The planet the node starts with.
    pub planet: World,
    /// Planet revisions offered as updates: a valid one, one signed by a key the planet does
    /// not name, one that rotates the signing key.
    pub planet_updates: Vec<World>,
    /// The moon (leaf: held from the start) and a newer revision of it.
    pub moons: Vec<World>,
    /// The network.
    pub nwid: NetworkId,
    /// Leaf: the stored config of node 0.
    pub stored_config: Vec<u8>,
    /// Leaf: configs the controller may send, each as its signed chunks (same as stored, a
    /// newer one with other rules, one in two chunks, one issued to member 2, a public one).
    pub config_chunks: Vec<Vec<Vec<u8>>>,
    /// NETWORK_CREDENTIALS payloads for identity `i` (COM, capabilities, tags, COOs);
    /// empty for non-members.
    pub credentials: Vec<Vec<u8>>,
    /// A revocation of member 2's COM, fast-propagated, as a NETWORK_CREDENTIALS payload.
    pub revocation: Vec<u8>,
    /// Network records (root).
    records: Option<(serde_json::Value, Vec<MemberRecord>)>,
    /// `keys[i][j]`: between identities i and j.
    keys: Vec<Vec<PeerKeys>>,
}

/// The scenario of `role`.
#[must_use]
pub fn scenario(role: Role) -> &'static Scenario {
    static LEAF: OnceLock<Scenario> = OnceLock::new();
    static ROOT: OnceLock<Scenario> = OnceLock::new();
    match role {
        Role::Leaf => LEAF.get_or_init(|| Scenario::build(role)),
        Role::Root => ROOT.get_or_init(|| Scenario::build(role)),
    }
}

fn chunks(c: &NetworkConfig, update_id: u64, flags: u8) -> Vec<Vec<u8>> {
    let f = fixtures();
    make_chunks(c.network_id, &c.to_bytes(), update_id, flags, &f.ids[1]).unwrap_or_default()
}

fn credentials(c: &NetworkConfig) -> Vec<u8> {
    Credentials {
        coms: c.com.iter().cloned().collect(),
        capabilities: c.capabilities.clone(),
        tags: c.tags.clone(),
        revocations: Vec::new(),
        coos: c.coos.clone(),
    }
    .write()
}

impl Scenario {
    fn build(role: Role) -> Self {
        let f = fixtures();
        let ids = &f.ids;
        // Leaf: 1 is root and controller. Root: 0 is both.
        let ctl = match role {
            Role::Leaf => 1,
            Role::Root => 0,
        };
        let planet = fixtures::planet(&ids[ctl], fixtures::endpoint(1), 1, &f.planet_key);
        let next = KeyPair::generate(&mut SimRng(79));
        let stranger = KeyPair::generate(&mut SimRng(80));
        let planet_updates = vec![
            fixtures::planet(&ids[ctl], fixtures::endpoint(1), 2, &f.planet_key),
            {
                let roots = planet.roots.clone();
                World::make(
                    planet.world_type,
                    planet.id,
                    3,
                    *stranger.public(),
                    roots,
                    &stranger,
                )
                .unwrap_or_else(|_| planet.clone())
            },
            fixtures::planet(&ids[ctl], fixtures::endpoint(2), 4, &next),
        ];
        let moons = vec![
            fixtures::moon(&ids[1], fixtures::endpoint(1), 1),
            fixtures::moon(&ids[1], fixtures::endpoint(1), 5),
        ];
        let nwid = fixtures::network_id(&ids[ctl]);
        let members: Vec<&zt_proto::Identity> = match role {
            Role::Leaf => vec![&ids[0], &ids[2]],
            Role::Root => vec![&ids[0], &ids[1], &ids[2]],
        };
        let watcher = &ids[2];
        let records = fixtures::records(nwid, watcher, &members);
        let issued: Vec<Option<NetworkConfig>> = (0..ids.len())
            .map(|i| {
                members
                    .iter()
                    .any(|m| m.address() == ids[i].address())
                    .then(|| fixtures::issue(&records, nwid, &ids[ctl], &ids[i]))
            })
            .collect();
        let credentials: Vec<Vec<u8>> = issued
            .iter()
            .map(|c| c.as_ref().map(credentials).unwrap_or_default())
            .collect();
        let mut revocation = Revocation::new(
            77,
            nwid,
            0,
            START.0 + 1,
            Revocation::FLAG_FAST_PROPAGATE,
            ids[2].address(),
            CredentialType::Com,
        );
        let _ = revocation.sign(&ids[ctl]);
        let revocation = Credentials {
            revocations: vec![revocation],
            ..Credentials::default()
        }
        .write();
        let mut stored_config = Vec::new();
        let mut config_chunks = Vec::new();
        if let (Role::Leaf, Some(mine)) = (role, &issued[0]) {
            stored_config = mine.to_bytes();
            let mut newer = mine.clone();
            newer.timestamp += 60_000;
            newer.revision += 1;
            newer.rules = vec![Rule::new(RuleKind::Accept)];
            let mut big = mine.clone();
            big.timestamp += 120_000;
            big.revision += 2;
            let extra = (0..700u16).map(|i| {
                let ip = std::net::Ipv6Addr::new(0xfd00, i, 0, 0, 0, 0, 0, 1);
                Rule::new(RuleKind::Ipv6Source(ip, 64))
            });
            big.rules.splice(0..0, extra);
            let mut public = mine.clone();
            public.timestamp += 180_000;
            public.network_type = NetworkType::Public;
            public.com = None;
            config_chunks = vec![
                chunks(mine, 1, 0),
                chunks(&newer, 2, 0),
                chunks(&big, 3, CHUNK_FLAG_FAST_PROPAGATE),
                issued[2]
                    .as_ref()
                    .map(|c| chunks(c, 4, 0))
                    .unwrap_or_default(),
                chunks(&public, 5, 0),
            ];
        }
        let keys = ids
            .iter()
            .map(|a| ids.iter().map(|b| fixtures::keys(a, b)).collect())
            .collect();
        let records = (role == Role::Root).then(|| {
            (
                records.networks.get(&nwid).cloned().unwrap_or_default(),
                records
                    .members
                    .iter()
                    .map(|(k, v)| (*k, v.clone()))
                    .collect(),
            )
        });
        Self {
            role,
            planet,
            planet_updates,
            moons,
            nwid,
            stored_config,
            config_chunks,
            credentials,
            revocation,
            records,
            keys,
        }
    }

    /// The keys between identities `a` and `b`.
    #[must_use]
    pub fn keys(&self, a: usize, b: usize) -> &PeerKeys {
        &self.keys[a][b]
    }

    /// A fresh copy of the controller's records (root).
    #[must_use]
    pub fn records(&self) -> Records {
        let mut r = Records::default();
        if let Some((net, members)) = &self.records {
            r.networks.insert(self.nwid, net.clone());
            r.members.extend(members.iter().cloned());
        }
        r
    }

    /// The node under test, as the runtime would create it from its stored state.
    ///
    /// # Panics
    /// If the fixed state is refused (a broken fixture).
    #[allow(clippy::expect_used)]
    #[must_use]
    pub fn new_node(&self) -> Node {
        let f = fixtures();
        let (moons, networks) = match self.role {
            Role::Leaf => (
                vec![self.moons[0].clone()],
                vec![(self.nwid, self.stored_config.clone())],
            ),
            Role::Root => (vec![], vec![]),
        };
        let config = NodeConfig {
            moons,
            networks,
            ..NodeConfig::new(f.ids[0].clone(), self.planet.clone())
        };
        let mut node = Node::new(config, Box::new(SimRng(0x5eed)), START).expect("a node");
        node.set_local_sockets(vec![
            (LocalSocket(0), "0.0.0.0:9993".parse().expect("an address")),
            (LocalSocket(1), "[::]:9993".parse().expect("an address")),
        ]);
        if self.role == Role::Root {
            node.set_controller(true);
        }
        node
    }
}
