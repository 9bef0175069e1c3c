//! Fixed identities, worlds and network records shared by the harnesses, built once per
//! process. Identities are stored rather than generated (generation is memory-hard and slow);
//! everything else is derived from them and from fixed seeds, so every run sees the same world.

use std::net::{IpAddr, SocketAddr};
use std::sync::OnceLock;

use serde_json::{Value, json};
use zt_controller::records::{member_update_from_post, network_update_from_post};
use zt_controller::rule_json::render_rule;
use zt_controller::{self as ctl, Decision, NetworkSummary, Request};
use zt_proto::{
    Address, Dictionary, Identity, NetworkConfig, NetworkId, Root, Timestamp, World, WorldType,
    crypto::c25519::KeyPair,
    packet::PeerKeys,
    rules::{Forward, Rule, RuleKind, TagOp},
};
use zt_sim::SimRng;

/// The time every harness starts at.
pub const START: Timestamp = Timestamp(1_700_000_000_000);

/// Identities (with their secrets) made by `Identity::generate(&mut SimRng(1000 + i))` (see the
/// ignored test below); index 0 is the node under test, 1–3 its peers.
const IDENTITIES: [&str; 4] = [
    "56dbe42189:0:9f6eac8601584fbd8a154c2ce1cc0a13f32d23358eebf93c5d731766b2ded73749843ed5e1ff0531f1d57a09c5baabb12565b03a13c4a89faf8f5eb0227f210e:48c1cc4d8bba1e3cbfbbf4d4829d7ad051b6c92f1c6afec5a7cf4fe1f6d8504f9fa4f08df34af7ad6200723bd3928bd6f400f7e44249d61377e1c126a8be34a6",
    "ccf63ce280:0:40b7198cf1680ec657e499d964d948922fb0c7cb8b75296a03952d20877ce649a999f880a1400eda7afaadaa3c59218ab1c58b7f66eedf6c6e5a12329ad13e09:d406c6f3f7003e535ace1047495ac53ab1afbec67baa743a2f1f2316d986e67babd534f4ebbfca81b94f3d991dc55db058cfe6bb012fc62f28843343b8ffee7f",
    "286a6df163:0:f213b36a37acb6991adada1f695307450696d35b1be83ccdbc8e5fbc20c95b2b8c54643ba829c03e3b7b05f06a4c4ff625852f358128b922eebed5de1262fa5c:fdb87aac7f31faee1aa653df81007761c0cee3f436b3cb0ecb4b2e19932041f5a0d7ccc0bf3c9483b7c46f65c7e79debe206b97e2390743ae3d67f0c4f87974a",
    "14ef128dfc:0:d11c233655e0879dc048368515be50825b25a7ee1c6225a99bc08c1ac1b4621b2f6cb4dbaf02a0d2b9b46134edd5c00b1900879377c17e0276cd122cf64d0e58:b87966446093989a2ef8a08f842ebf6aec659f825605d08870f7e9b0ea6b1b2d11128143504426fc3626769f9ad3d0f7cf9c04929c73448fcf32eb9f5c808c2b",
];

/// Everything fixed.
#[derive(Debug)]
pub struct Fixtures {
    /// Identities 0–3 (valid, with secrets) and 4: a key pair under an address that does not
    /// derive from it (fails validation).
    pub ids: Vec<Identity>,
    /// Signs the planets (and their updates).
    pub planet_key: KeyPair,
    /// Signs the moon.
    pub moon_key: KeyPair,
}

/// The shared fixtures.
///
/// # Panics
/// If a stored identity does not parse (a broken build of this crate).
#[allow(clippy::expect_used)]
pub fn fixtures() -> &'static Fixtures {
    static F: OnceLock<Fixtures> = OnceLock::new();
    F.get_or_init(|| {
        let mut ids: Vec<Identity> = IDENTITIES
            .iter()
            .map(|s| s.parse().expect("a stored identity"))
            .collect();
        let forged = KeyPair::generate(&mut SimRng(4));
        let addr = Address::new(0x0badc0ffee).expect("a valid address");
        ids.push(Identity::from_key_pair_unchecked(addr, forged));
        Fixtures {
            ids,
            planet_key: KeyPair::generate(&mut SimRng(77)),
            moon_key: KeyPair::generate(&mut SimRng(78)),
        }
    })
}

/// Where identity `i` sends from (203.0.113.i:9993; the root's stable endpoint is index 1's).
#[must_use]
pub fn endpoint(i: usize) -> SocketAddr {
    SocketAddr::new(IpAddr::from([203, 0, 113, i as u8]), 9993)
}

/// Another endpoint of identity `i` (IPv6), for new paths.
#[must_use]
pub fn endpoint6(i: usize) -> SocketAddr {
    SocketAddr::new(
        IpAddr::from([0x2001, 0xdb8, 0, 0, 0, 0, 0, i as u16]),
        9993 + i as u16,
    )
}

/// Identity `i`'s endpoint, or (`alt`) its other one.
#[must_use]
pub fn endpoint_of(i: usize, alt: bool) -> SocketAddr {
    if alt { endpoint6(i) } else { endpoint(i) }
}

/// The symmetric keys between identities `a` and `b` (`a` must have its secret).
///
/// # Panics
/// If the agreement fails (never for the fixed identities).
#[allow(clippy::expect_used)]
#[must_use]
pub fn keys(a: &Identity, b: &Identity) -> PeerKeys {
    PeerKeys::new(&a.agree(b).expect("an agreement"))
}

/// A world with one root, `root` at `ep`, revision `ts`, naming `next` as the key of the next
/// revision and signed by `signer`.
///
/// # Panics
/// If signing fails (never).
#[allow(clippy::expect_used)]
fn world(
    kind: WorldType,
    id: u64,
    root: &Identity,
    ep: SocketAddr,
    ts: u64,
    keys: (&KeyPair, &KeyPair),
) -> World {
    let (next, signer) = keys;
    let roots = vec![Root {
        identity: root.to_public(),
        stable_endpoints: vec![ep.into()],
    }];
    World::make(kind, id, ts, *next.public(), roots, signer).expect("a signed world")
}

/// A planet (ID 0x5151) with `root` at `ep`, revision `ts`, signed with the planet key (and
/// naming `next` as the key of the next revision).
#[must_use]
pub fn planet(root: &Identity, ep: SocketAddr, ts: u64, next: &KeyPair) -> World {
    let keys = (next, &fixtures().planet_key);
    world(WorldType::Planet, 0x5151, root, ep, ts, keys)
}

/// A moon (ID 0x7777) with `root` at `ep`, revision `ts`.
#[must_use]
pub fn moon(root: &Identity, ep: SocketAddr, ts: u64) -> World {
    let key = &fixtures().moon_key;
    world(WorldType::Moon, 0x7777, root, ep, ts, (key, key))
}

/// The network of controller `ctl_id` that the harnesses use.
#[must_use]
pub fn network_id(controller: &Identity) -> NetworkId {
    NetworkId((controller.address().to_u64() << 24) | 0x42)
}

fn forward(a: &Identity) -> Forward {
    Forward {
        address: a.address(),
        flags: 0,
        length: 64,
    }
}

/// A rule table using most rule kinds, accepting ordinary traffic.
#[must_use]
pub fn rules(watcher: &Identity) -> Vec<Rule> {
    use RuleKind as K;
    vec![
        Rule::not(K::EtherType(0x0800)),
        Rule::not(K::EtherType(0x0806)),
        Rule::not(K::EtherType(0x86dd)),
        Rule::new(K::Drop),
        Rule::new(K::IpProtocol(6)),
        Rule::new(K::DestPortRange(23, 23)),
        Rule::new(K::Drop),
        Rule::new(K::IpProtocol(17)),
        Rule::or(K::Icmp {
            icmp_type: 8,
            code: 0,
            flags: 0,
        }),
        Rule::new(K::Tee(forward(watcher))),
        Rule::new(K::Characteristics(zt_proto::rules::CHAR_TCP_NS)),
        Rule::new(K::Watch(forward(watcher))),
        Rule::new(K::Tags {
            op: TagOp::Equal,
            id: 101,
            value: 3,
        }),
        Rule::new(K::Break),
        Rule::new(K::FrameSizeRange(1400, 1500)),
        Rule::new(K::Drop),
        Rule::new(K::Ipv4Source(std::net::Ipv4Addr::new(198, 18, 0, 0), 15)),
        Rule::new(K::Random(0x8000_0000)),
        Rule::new(K::Accept),
        Rule::new(K::Tags {
            op: TagOp::Sender,
            id: 100,
            value: 1,
        }),
        Rule::new(K::Accept),
    ]
}

/// The network record: private, managed IPv4 and rfc4193, the rule table above, two
/// capabilities and two tags.
#[must_use]
pub fn network_json(watcher: &Identity) -> Value {
    let rules: Vec<Value> = rules(watcher).iter().map(render_rule).collect();
    let cap_rules: Vec<Value> = [
        Rule::new(RuleKind::EtherType(0x0800)),
        Rule::new(RuleKind::Redirect(forward(watcher))),
        Rule::new(RuleKind::Accept),
    ]
    .iter()
    .map(render_rule)
    .collect();
    json!({
        "name": "fuzz-net",
        "private": true,
        "enableBroadcast": true,
        "multicastLimit": 16,
        "mtu": 10000,
        "v4AssignMode": {"zt": true},
        "v6AssignMode": {"rfc4193": true, "6plane": true, "zt": false},
        "ipAssignmentPools": [{"ipRangeStart": "198.18.0.10", "ipRangeEnd": "198.18.0.250"}],
        "routes": [{"target": "198.18.0.0/15", "via": null}],
        "rules": rules,
        "capabilities": [
            {"id": 1, "default": true, "rules": cap_rules},
            {"id": 2, "default": false, "rules": [{"type": "ACTION_ACCEPT"}]}
        ],
        "tags": [{"id": 100, "default": 1}, {"id": 101}],
    })
}

/// The member record body: authorized, with a tag and both capabilities.
#[must_use]
pub fn member_json() -> Value {
    json!({"authorized": true, "tags": [[101, 7]], "capabilities": [1, 2], "activeBridge": false})
}

/// Controller records for `nwid`: the network and members `members` (authorized).
///
/// # Panics
/// If a fixed record is refused (a broken fixture).
#[allow(clippy::expect_used)]
#[must_use]
pub fn records(nwid: NetworkId, watcher: &Identity, members: &[&Identity]) -> zt_sim::lab::Records {
    let mut r = zt_sim::lab::Records::default();
    let mut net = Value::Null;
    network_update_from_post(&mut net, nwid, &network_json(watcher), START)
        .expect("a valid network");
    r.networks.insert(nwid, net);
    for m in members {
        let mut rec = Value::Null;
        member_update_from_post(&mut rec, nwid, m.address(), &member_json(), START)
            .expect("a valid member");
        r.members.insert((nwid, m.address()), rec);
    }
    r
}

/// Request metadata as a 1.14 node sends it (with the rules engine revision: without it a
/// controller sends an accept-all rule table).
#[must_use]
pub fn member_metadata() -> Dictionary {
    zt_proto::request_metadata((1, 14, 1))
}

/// The controller's decision on `member`'s request for `nwid` at `now`, from its records: the
/// network record and every member record (`mine` is the requester's, if any).
#[must_use]
pub fn decide<'a>(
    nwid: NetworkId,
    network: Option<&Value>,
    members: impl IntoIterator<Item = &'a Value> + Clone,
    mine: Option<&Value>,
    member: &Identity,
    metadata: &Dictionary,
    now: Timestamp,
) -> ctl::Outcome {
    let allocated = ctl::allocated_ips(members.clone());
    let bridges = ctl::active_bridges(members);
    ctl::decide(
        &Request {
            network_id: nwid,
            identity: &member.to_public(),
            metadata,
            genuine: true,
            now,
        },
        network,
        mine,
        &NetworkSummary {
            allocated_ips: &allocated,
            active_bridges: &bridges,
        },
        &mut SimRng(9),
    )
}

/// The config the controller `controller` issues to `member` from `records`.
///
/// # Panics
/// If the records do not authorize the member (a broken fixture).
#[allow(clippy::expect_used, clippy::panic)]
#[must_use]
pub fn issue(
    records: &zt_sim::lab::Records,
    nwid: NetworkId,
    controller: &Identity,
    member: &Identity,
) -> NetworkConfig {
    let out = decide(
        nwid,
        records.networks.get(&nwid),
        records.members.values(),
        records.members.get(&(nwid, member.address())),
        member,
        &member_metadata(),
        START,
    );
    let Decision::Authorized(plan) = out.decision else {
        panic!("fixture member not authorized: {:?}", out.decision);
    };
    ctl::issue::issue(&plan, controller, member).expect("a signed config")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_identities_are_valid_and_the_forged_one_is_not() {
        let f = fixtures();
        for id in &f.ids[..4] {
            assert!(id.has_secret());
            assert_eq!(id.validate(), Ok(()));
        }
        assert!(f.ids[4].validate().is_err());
    }

    #[test]
    #[ignore = "slow (memory-hard generation); shows where the stored identities come from"]
    fn stored_identities_come_from_their_seeds() {
        let made: Vec<String> = (0..IDENTITIES.len())
            .map(|i| Identity::generate(&mut SimRng(1000 + i as u64)).to_secret_string())
            .collect();
        println!("{made:#?}");
        assert_eq!(made, IDENTITIES);
    }
}
