//! The node state machine: inputs in, outputs polled out (see the crate docs for the contract).

use std::collections::VecDeque;

use crate::address::Address;
use crate::identity::Identity;
use crate::time::Timestamp;
use crate::world::{World, WorldType, WorldUpdateRejected};

/// Interval of the quick housekeeping pass (WHOIS retries, queued packets).
pub const QUICK_TASK_INTERVAL_MS: i64 = 500;
/// Interval of the ping check (keepalives, online test, network config refresh).
pub const PING_CHECK_INTERVAL_MS: i64 = 5_000;
/// Interval of the slow housekeeping pass (peer/path cleanup).
pub const HOUSEKEEPING_INTERVAL_MS: i64 = 30_000;

/// A persisted object, named as zerotier-one names its files.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StoreKey {
    /// `identity.public`
    IdentityPublic,
    /// `identity.secret` (written with owner-only permissions)
    IdentitySecret,
    /// `planet` (libzt calls it `roots`)
    Planet,
    /// `moons.d/<16 hex id>.moon`
    Moon(u64),
    /// `peers.d/<10 hex address>.peer`
    Peer(Address),
    /// `networks.d/<16 hex nwid>.conf`
    NetworkConfig(u64),
}

impl StoreKey {
    /// The relative path zerotier-one uses for this object.
    #[must_use]
    pub fn path(&self) -> String {
        match self {
            Self::IdentityPublic => "identity.public".into(),
            Self::IdentitySecret => "identity.secret".into(),
            Self::Planet => "planet".into(),
            Self::Moon(id) => format!("moons.d/{id:016x}.moon"),
            Self::Peer(a) => format!("peers.d/{a}.peer"),
            Self::NetworkConfig(id) => format!("networks.d/{id:016x}.conf"),
        }
    }

    /// Whether the object must be readable by its owner only.
    #[must_use]
    pub fn is_secret(&self) -> bool {
        matches!(self, Self::IdentitySecret)
    }
}

/// A write or delete for the runtime's store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreOp {
    /// Write `data` under `key` (atomically, replacing any old value).
    Put {
        /// What.
        key: StoreKey,
        /// The bytes.
        data: Vec<u8>,
    },
    /// Remove `key`.
    Delete {
        /// What.
        key: StoreKey,
    },
}

/// Something the application may want to know about.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// The node is up with this address.
    Up {
        /// The node's address.
        address: Address,
    },
    /// A planet was adopted (at start-up or as a signed update).
    PlanetChanged {
        /// World ID.
        id: u64,
        /// Revision timestamp.
        timestamp: u64,
    },
    /// A moon was added or updated.
    MoonChanged {
        /// World ID.
        id: u64,
        /// Revision timestamp.
        timestamp: u64,
    },
}

/// Counters of what the node did and dropped.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeStats {
    /// Quick housekeeping passes run.
    pub quick_tasks: u64,
    /// Ping checks run.
    pub ping_checks: u64,
    /// Slow housekeeping passes run.
    pub housekeeping: u64,
    /// World updates refused (bad signature, not newer, foreign ID).
    pub worlds_rejected: u64,
}

/// Error constructing a node.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NodeError {
    /// The node's own identity must include its secret key.
    #[error("the node identity {0} has no secret key")]
    NoSecret(Address),
    /// The node's identity failed validation.
    #[error(transparent)]
    Identity(#[from] crate::identity::IdentityError),
    /// A stored planet or moon is not usable.
    #[error("stored {0:?} world is not usable: {1}")]
    World(WorldType, String),
}

/// What the runtime loaded from the store before creating the node.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// The node's identity, with its secret key.
    pub identity: Identity,
    /// The stored planet, if any; it wins over `default_planet` unless that is a signed update.
    pub stored_planet: Option<World>,
    /// The built-in (or user-chosen) planet.
    pub default_planet: World,
    /// Stored moons.
    pub moons: Vec<World>,
}

#[derive(Clone, Copy, Debug)]
struct Schedule {
    quick: Timestamp,
    ping: Timestamp,
    housekeeping: Timestamp,
}

/// The ZeroTier node core.
#[derive(Debug)]
pub struct Node {
    identity: Identity,
    planet: World,
    moons: Vec<World>,
    schedule: Schedule,
    events: VecDeque<Event>,
    store_ops: VecDeque<StoreOp>,
    stats: NodeStats,
}

impl Node {
    /// Creates the node at time `now`; emits [`Event::Up`] and stores whatever the adopted
    /// planet changed.
    ///
    /// # Errors
    /// The identity has no secret key, or a stored moon is not a moon.
    pub fn new(config: NodeConfig, now: Timestamp) -> Result<Self, NodeError> {
        let NodeConfig {
            identity,
            stored_planet,
            default_planet,
            moons,
        } = config;
        if !identity.has_secret() {
            return Err(NodeError::NoSecret(identity.address()));
        }
        if default_planet.world_type != WorldType::Planet {
            return Err(NodeError::World(
                WorldType::Planet,
                "the default is not a planet".into(),
            ));
        }
        let mut node = Self {
            identity,
            planet: default_planet.clone(),
            moons: Vec::new(),
            schedule: Schedule {
                quick: now,
                ping: now,
                housekeeping: now,
            },
            events: VecDeque::new(),
            store_ops: VecDeque::new(),
            stats: NodeStats::default(),
        };
        let mut store_planet = true;
        if let Some(stored) = stored_planet {
            if stored.world_type != WorldType::Planet {
                return Err(NodeError::World(WorldType::Planet, "not a planet".into()));
            }
            // A stored planet wins unless the default is a signed update of that same planet.
            if stored.check_update(&default_planet).is_err() {
                node.planet = stored;
                store_planet = false;
            }
        }
        if store_planet {
            node.store_ops.push_back(StoreOp::Put {
                key: StoreKey::Planet,
                data: node.planet.to_bytes(),
            });
        }
        for m in moons {
            if m.world_type != WorldType::Moon {
                return Err(NodeError::World(
                    WorldType::Moon,
                    format!("{:016x} is a planet", m.id),
                ));
            }
            node.moons.retain(|x| x.id != m.id);
            node.moons.push(m);
        }
        node.events.push_back(Event::Up {
            address: node.identity.address(),
        });
        node.events.push_back(Event::PlanetChanged {
            id: node.planet.id,
            timestamp: node.planet.timestamp,
        });
        Ok(node)
    }

    /// The node's identity.
    #[must_use]
    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// The node's address.
    #[must_use]
    pub fn address(&self) -> Address {
        self.identity.address()
    }

    /// The current planet.
    #[must_use]
    pub fn planet(&self) -> &World {
        &self.planet
    }

    /// The moons held.
    #[must_use]
    pub fn moons(&self) -> &[World] {
        &self.moons
    }

    /// Every root of the planet and moons except this node, in order, without duplicates.
    #[must_use]
    pub fn upstreams(&self) -> Vec<Address> {
        let mut out: Vec<Address> = Vec::new();
        for w in std::iter::once(&self.planet).chain(self.moons.iter()) {
            for r in &w.roots {
                let a = r.identity.address();
                if a != self.address() && !out.contains(&a) {
                    out.push(a);
                }
            }
        }
        out
    }

    /// Whether this node is one of its planet's or moons' roots.
    #[must_use]
    pub fn is_root(&self) -> bool {
        std::iter::once(&self.planet)
            .chain(self.moons.iter())
            .any(|w| {
                w.roots
                    .iter()
                    .any(|r| r.identity.address() == self.address())
            })
    }

    /// Counters.
    #[must_use]
    pub fn stats(&self) -> &NodeStats {
        &self.stats
    }

    /// Offers a newer revision of the planet or of a held moon (from the network or the user).
    /// Accepted worlds are stored and announced.
    ///
    /// # Errors
    /// Why the world was refused (counted in [`NodeStats::worlds_rejected`]).
    pub fn handle_world_update(&mut self, world: World) -> Result<(), WorldUpdateRejected> {
        let current = match world.world_type {
            WorldType::Planet => Some(&self.planet),
            WorldType::Moon => self.moons.iter().find(|m| m.id == world.id),
        };
        let verdict = match current {
            Some(cur) => cur.check_update(&world),
            None => Err(WorldUpdateRejected::DifferentWorld),
        };
        if let Err(e) = verdict {
            self.stats.worlds_rejected += 1;
            return Err(e);
        }
        let (id, timestamp, data) = (world.id, world.timestamp, world.to_bytes());
        match world.world_type {
            WorldType::Planet => {
                self.planet = world;
                self.store_ops.push_back(StoreOp::Put {
                    key: StoreKey::Planet,
                    data,
                });
                self.events
                    .push_back(Event::PlanetChanged { id, timestamp });
            }
            WorldType::Moon => {
                self.moons.retain(|m| m.id != id);
                self.moons.push(world);
                self.store_ops.push_back(StoreOp::Put {
                    key: StoreKey::Moon(id),
                    data,
                });
                self.events.push_back(Event::MoonChanged { id, timestamp });
            }
        }
        Ok(())
    }

    /// Runs every periodic task that is due at `now`.
    pub fn handle_timeout(&mut self, now: Timestamp) {
        if now >= self.schedule.quick {
            self.stats.quick_tasks += 1;
            self.schedule.quick = now + QUICK_TASK_INTERVAL_MS;
        }
        if now >= self.schedule.ping {
            self.stats.ping_checks += 1;
            self.schedule.ping = now + PING_CHECK_INTERVAL_MS;
        }
        if now >= self.schedule.housekeeping {
            self.stats.housekeeping += 1;
            self.schedule.housekeeping = now + HOUSEKEEPING_INTERVAL_MS;
        }
    }

    /// When [`Node::handle_timeout`] should next be called.
    #[must_use]
    pub fn poll_timeout(&self) -> Timestamp {
        self.schedule
            .quick
            .min(self.schedule.ping)
            .min(self.schedule.housekeeping)
    }

    /// The next event, if any.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// The next store operation, if any.
    pub fn poll_store(&mut self) -> Option<StoreOp> {
        self.store_ops.pop_front()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::c25519::KeyPair;
    use crate::crypto::test_rng::TestRng;
    use crate::world::Root;

    fn planet(id: u64, ts: u64, signer: &KeyPair, next: &KeyPair) -> World {
        let root = Root {
            identity: Identity::generate(&mut TestRng(id + ts)),
            stable_endpoints: vec!["203.0.113.9/9993".parse().unwrap()],
        };
        World::make(
            WorldType::Planet,
            id,
            ts,
            *next.public(),
            vec![root],
            signer,
        )
        .unwrap()
    }

    fn config(stored: Option<World>, default: World) -> NodeConfig {
        NodeConfig {
            identity: Identity::generate(&mut TestRng(99)),
            stored_planet: stored,
            default_planet: default,
            moons: vec![],
        }
    }

    fn drain(node: &mut Node) -> (Vec<Event>, Vec<StoreOp>) {
        let ev = std::iter::from_fn(|| node.poll_event()).collect();
        let st = std::iter::from_fn(|| node.poll_store()).collect();
        (ev, st)
    }

    #[test]
    fn fresh_node_adopts_and_stores_default_planet() {
        let k = KeyPair::generate(&mut TestRng(1));
        let p = planet(7, 100, &k, &k);
        let mut node = Node::new(config(None, p.clone()), Timestamp(0)).unwrap();
        let (ev, st) = drain(&mut node);
        assert_eq!(
            ev[0],
            Event::Up {
                address: node.address()
            }
        );
        assert_eq!(
            st,
            vec![StoreOp::Put {
                key: StoreKey::Planet,
                data: p.to_bytes()
            }]
        );
        assert_eq!(node.planet(), &p);
        assert_eq!(node.upstreams().len(), 1);
        assert!(!node.is_root());
    }

    #[test]
    fn stored_planet_overrides_default_unless_default_is_signed_update() {
        let k = KeyPair::generate(&mut TestRng(2));
        let custom = planet(8, 100, &k, &k);
        let default = planet(7, 500, &k, &k);
        let mut node = Node::new(config(Some(custom.clone()), default), Timestamp(0)).unwrap();
        assert_eq!(node.planet(), &custom);
        assert!(
            drain(&mut node).1.is_empty(),
            "an unchanged stored planet is not rewritten"
        );

        let newer = planet(8, 200, &k, &k);
        let mut node =
            Node::new(config(Some(custom.clone()), newer.clone()), Timestamp(0)).unwrap();
        assert_eq!(node.planet(), &newer);
        assert_eq!(drain(&mut node).1.len(), 1);

        let stranger = KeyPair::generate(&mut TestRng(3));
        let forged = planet(8, 300, &stranger, &stranger);
        let node = Node::new(config(Some(custom.clone()), forged), Timestamp(0)).unwrap();
        assert_eq!(node.planet(), &custom);
    }

    #[test]
    fn world_updates_follow_the_signing_chain() {
        let k1 = KeyPair::generate(&mut TestRng(4));
        let k2 = KeyPair::generate(&mut TestRng(5));
        let p1 = planet(9, 100, &k1, &k1);
        let mut node = Node::new(config(None, p1), Timestamp(0)).unwrap();
        drain(&mut node);
        let p2 = planet(9, 200, &k1, &k2);
        node.handle_world_update(p2.clone()).unwrap();
        let (ev, st) = drain(&mut node);
        assert_eq!(
            ev,
            vec![Event::PlanetChanged {
                id: 9,
                timestamp: 200
            }]
        );
        assert_eq!(
            st,
            vec![StoreOp::Put {
                key: StoreKey::Planet,
                data: p2.to_bytes()
            }]
        );
        // k1 no longer signs updates.
        assert_eq!(
            node.handle_world_update(planet(9, 300, &k1, &k1)),
            Err(WorldUpdateRejected::BadSignature)
        );
        assert_eq!(
            node.handle_world_update(p2),
            Err(WorldUpdateRejected::NotNewer)
        );
        assert_eq!(node.stats().worlds_rejected, 2);
        node.handle_world_update(planet(9, 300, &k2, &k2)).unwrap();
    }

    #[test]
    fn timers_follow_the_injected_clock() {
        let k = KeyPair::generate(&mut TestRng(6));
        let mut node = Node::new(config(None, planet(1, 1, &k, &k)), Timestamp(1_000)).unwrap();
        assert_eq!(node.poll_timeout(), Timestamp(1_000));
        node.handle_timeout(Timestamp(1_000));
        assert_eq!(node.poll_timeout(), Timestamp(1_500));
        // Early wake-ups do nothing.
        node.handle_timeout(Timestamp(1_499));
        assert_eq!(node.stats().quick_tasks, 1);
        let mut now = Timestamp(1_000);
        while now < Timestamp(61_000) {
            now = node.poll_timeout();
            node.handle_timeout(now);
        }
        let s = node.stats();
        assert_eq!((s.quick_tasks, s.ping_checks, s.housekeeping), (121, 13, 3));
    }

    #[test]
    fn rejects_identity_without_secret() {
        let k = KeyPair::generate(&mut TestRng(7));
        let mut c = config(None, planet(1, 1, &k, &k));
        c.identity = c.identity.to_public();
        assert!(matches!(
            Node::new(c, Timestamp(0)),
            Err(NodeError::NoSecret(_))
        ));
    }
}
