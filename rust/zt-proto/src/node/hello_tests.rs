//! HELLOs of unknown identities against the budgets ([`super::budget`]): forged floods cost
//! bounded work, newcomers behind one address are answered together, known peers are served.

use std::net::SocketAddr;

use super::budget::{SOURCE_BURST, SOURCE_REFILL_MS, VALIDATIONS_PENDING};
use super::*;
use crate::crypto::c25519::KeyPair;
use crate::crypto::test_rng::TestRng;

const NODE_AT: &str = "203.0.113.1:9993";

pub(super) fn node(now: Timestamp) -> Node {
    node_as(now, false)
}

/// The start of most tests here: time 1 s, the node under test (a leaf), and a random source
/// seeded with `seed` for the identities it meets.
fn start(seed: u64) -> (Timestamp, Node, TestRng) {
    let now = Timestamp(1_000);
    (now, node(now), TestRng(seed))
}

/// The node under test: a leaf of a one-root planet, or (`root`) that planet's root.
pub(super) fn node_as(now: Timestamp, root: bool) -> Node {
    let identity = Identity::generate(&mut TestRng(7));
    let root = crate::world::Root {
        identity: if root {
            identity.to_public()
        } else {
            Identity::generate(&mut TestRng(5))
        },
        stable_endpoints: vec!["203.0.113.9/9993".parse().unwrap()],
    };
    let k = KeyPair::generate(&mut TestRng(6));
    let planet = World::make(WorldType::Planet, 1, 1, *k.public(), vec![root], &k).unwrap();
    let mut n = Node::new(NodeConfig::new(identity, planet), Box::new(TestRng(8)), now).unwrap();
    n.set_local_sockets(vec![(LocalSocket(0), NODE_AT.parse().unwrap())]);
    while n.poll_event().is_some() {}
    while n.poll_store().is_some() {}
    n
}

/// An identity whose address does not derive from its key (a throw-away key, as a flood uses).
pub(super) fn throwaway(rng: &mut TestRng) -> Identity {
    let kp = KeyPair::generate(rng);
    let mut a = [0u8; 8];
    rng.fill(&mut a);
    // Not 0xff as first byte: reserved, and a fragment's marker at that offset.
    let address = Address::from_u64_truncating(u64::from_le_bytes(a) & 0xffff_ffff | 0x42 << 32);
    Identity::from_key_pair_unchecked(address, kp)
}

pub(super) fn hello(from: &Identity, to: &Node, n: u64, good_mac: bool) -> Vec<u8> {
    let mut p = hello_packet(
        from,
        to.identity(),
        n.to_be_bytes(),
        Timestamp(1),
        (1, 14, 1),
    )
    .unwrap();
    if !good_mac {
        p[packet::IDX_MAC] ^= 1;
    }
    p
}

pub(super) fn drops(n: &Node, r: DropReason) -> u64 {
    n.stats().drops.get(&r).copied().unwrap_or(0)
}

/// Hands `n` the HELLO `p` of an identity it does not know yet, from `at`, and passes the
/// identity check that asks for.
pub(super) fn hello_checked(n: &mut Node, now: Timestamp, at: SocketAddr, p: &[u8]) {
    n.handle_datagram(now, LocalSocket(0), at, p);
    let id = n.poll_identity_check().expect("a check is asked for");
    n.handle_identity_checked(now, &id, true);
}

/// A new peer of `n`: a throw-away identity whose first HELLO, from `at`, was checked and
/// answered.
fn befriend(n: &mut Node, rng: &mut TestRng, now: Timestamp, at: SocketAddr) -> Identity {
    let friend = throwaway(rng);
    hello_checked(n, now, at, &hello(&friend, n, 1, true));
    assert_eq!(answered(n), [at].into());
    friend
}

/// The endpoints the node answered (an OK(HELLO), and whatever else it sends a new peer).
pub(super) fn answered(n: &mut Node) -> std::collections::BTreeSet<SocketAddr> {
    std::iter::from_fn(|| n.poll_transmit())
        .map(|t| t.to)
        .collect()
}

#[test]
fn forged_hellos_with_a_wrong_mac_spend_their_source_networks_budget() {
    let (now, mut n, mut rng) = start(11);
    let from: SocketAddr = "203.0.113.50:9993".parse().unwrap();
    for i in 0..1_000 {
        let p = hello(&throwaway(&mut rng), &n, i, false);
        n.handle_datagram(now, LocalSocket(0), from, &p);
    }
    // One agreement per token: the burst, then nothing from that /24.
    assert_eq!(drops(&n, DropReason::BadMac), u64::from(SOURCE_BURST));
    assert_eq!(
        drops(&n, DropReason::RateLimited),
        1_000 - u64::from(SOURCE_BURST)
    );
    assert!(n.poll_identity_check().is_none());
    assert!(answered(&mut n).is_empty());
    // Another address of the same /24 shares the budget; another /24 has its own.
    let p = hello(&throwaway(&mut rng), &n, 5_000, false);
    n.handle_datagram(now, LocalSocket(0), "203.0.113.51:1".parse().unwrap(), &p);
    assert_eq!(drops(&n, DropReason::BadMac), u64::from(SOURCE_BURST));
    n.handle_datagram(now, LocalSocket(0), "198.51.100.7:1".parse().unwrap(), &p);
    assert_eq!(drops(&n, DropReason::BadMac), u64::from(SOURCE_BURST) + 1);
    // The budget refills: one more token after the refill interval.
    let later = now + SOURCE_REFILL_MS;
    for i in 0..10 {
        let p = hello(&throwaway(&mut rng), &n, 6_000 + i, false);
        n.handle_datagram(later, LocalSocket(0), from, &p);
    }
    assert_eq!(drops(&n, DropReason::BadMac), u64::from(SOURCE_BURST) + 2);
}

#[test]
fn a_valid_mac_from_an_underived_address_is_checked_once_off_the_node() {
    let (now, mut n, mut rng) = start(12);
    let forged = throwaway(&mut rng);
    let from: SocketAddr = "203.0.113.60:9993".parse().unwrap();
    n.handle_datagram(now, LocalSocket(0), from, &hello(&forged, &n, 1, true));
    // Not answered yet: its identity is to be validated by the driver.
    assert!(answered(&mut n).is_empty());
    let id = n.poll_identity_check().expect("a check is asked for");
    assert_eq!(id, forged.to_public());
    assert!(!id.has_secret());
    // A second HELLO meanwhile waits for the same check.
    n.handle_datagram(now, LocalSocket(0), from, &hello(&forged, &n, 2, true));
    assert_eq!(drops(&n, DropReason::AwaitingValidation), 1);
    assert!(n.poll_identity_check().is_none());
    let valid = id.validate().is_ok();
    assert!(!valid);
    n.handle_identity_checked(now, &id, valid);
    assert_eq!(drops(&n, DropReason::BadIdentity), 1);
    assert!(n.peer(forged.address()).is_none());
    assert!(answered(&mut n).is_empty());
    // The verdict is remembered: the same identity again costs no agreement and no check.
    for i in 3..100 {
        n.handle_datagram(now, LocalSocket(0), from, &hello(&forged, &n, i, true));
    }
    assert_eq!(drops(&n, DropReason::BadIdentity), 98);
    assert_eq!(drops(&n, DropReason::RateLimited), 0);
    assert!(n.poll_identity_check().is_none());
}

#[test]
fn newcomers_behind_one_address_are_answered_together() {
    let (now, mut n, mut rng) = start(13);
    let nat: SocketAddr = "203.0.113.70:9993".parse().unwrap();
    let members: Vec<Identity> = (0..20).map(|_| throwaway(&mut rng)).collect();
    for (i, m) in members.iter().enumerate() {
        let from = SocketAddr::new(nat.ip(), 20_000 + i as u16);
        n.handle_datagram(now, LocalSocket(0), from, &hello(m, &n, i as u64, true));
    }
    let checks: Vec<Identity> = std::iter::from_fn(|| n.poll_identity_check()).collect();
    assert_eq!(checks.len(), 20, "every newcomer is checked at once");
    // The driver vouches for them (these keys are throw-away; validity is the driver's word).
    for id in &checks {
        n.handle_identity_checked(now, id, true);
    }
    assert_eq!(
        answered(&mut n).len(),
        20,
        "each is answered in the same moment"
    );
    assert_eq!(
        n.stats().packets_in,
        20,
        "each HELLO counts as a packet taken in"
    );
    for m in &members {
        assert!(n.peer(m.address()).is_some());
    }
    assert_eq!(n.stats().total_drops(), 0);
}

#[test]
fn known_peers_are_served_while_a_flood_is_refused() {
    let (now, mut n, mut rng) = start(14);
    let friend_at: SocketAddr = "198.51.100.20:9993".parse().unwrap();
    let friend = befriend(&mut n, &mut rng, now, friend_at);
    // A flood from many /24s, valid MACs from underived addresses: the node-wide budgets cap
    // the work (agreements, and checks asked for), and nothing is answered.
    let mut asked = 0;
    for i in 0..3_000u32 {
        let from = SocketAddr::new(
            std::net::Ipv4Addr::from(0xC612_0000 | (i << 8)).into(),
            9993,
        );
        let p = hello(&throwaway(&mut rng), &n, 100 + u64::from(i), true);
        n.handle_datagram(now, LocalSocket(0), from, &p);
        while n.poll_identity_check().is_some() {
            asked += 1;
        }
    }
    assert!(asked <= VALIDATIONS_PENDING, "{asked} checks asked for");
    assert!(drops(&n, DropReason::RateLimited) >= 3_000 - budget::AGREEMENTS_PER_S as u64);
    assert!(answered(&mut n).is_empty());
    // The friend's HELLO is answered as ever.
    n.handle_datagram(now, LocalSocket(0), friend_at, &hello(&friend, &n, 2, true));
    assert_eq!(answered(&mut n), [friend_at].into());
}

#[test]
fn unanswered_checks_expire() {
    let (now, mut n, mut rng) = start(15);
    let m = throwaway(&mut rng);
    let from: SocketAddr = "203.0.113.80:9993".parse().unwrap();
    n.handle_datagram(now, LocalSocket(0), from, &hello(&m, &n, 1, true));
    assert!(n.poll_identity_check().is_some());
    let later = now + 6_000;
    while n.poll_timeout() <= later {
        let t = n.poll_timeout();
        n.handle_timeout(t);
    }
    assert_eq!(drops(&n, DropReason::QueueTimeout), 1);
    // An answer after that is ignored; a new HELLO starts a new check.
    n.handle_identity_checked(later, &m.to_public(), true);
    assert!(n.peer(m.address()).is_none());
    n.handle_datagram(later, LocalSocket(0), from, &hello(&m, &n, 2, true));
    assert!(n.poll_identity_check().is_some());
}

#[test]
fn a_valid_identity_seen_before_needs_no_agreement_again() {
    let (now, mut n, mut rng) = start(16);
    let at: SocketAddr = "203.0.113.90:9993".parse().unwrap();
    let friend = befriend(&mut n, &mut rng, now, at);
    // Its peer is forgotten (as an idle peer is evicted), and a flood from its network spends
    // that network's budget.
    n.peers.remove(&friend.address());
    for i in 0..100 {
        let p = hello(&throwaway(&mut rng), &n, 1_000 + i, false);
        n.handle_datagram(now, LocalSocket(0), at, &p);
    }
    assert!(drops(&n, DropReason::RateLimited) > 0);
    // Its next HELLO is answered at once, without the budget: the keys agreed with it were
    // remembered with its verdict, so only the MAC is checked.
    n.handle_datagram(now, LocalSocket(0), at, &hello(&friend, &n, 2, true));
    assert!(n.poll_identity_check().is_none());
    assert_eq!(answered(&mut n), [at].into());
    assert!(n.peer(friend.address()).is_some());
    // A forged HELLO in its name (the right identity, a wrong MAC) is still refused.
    let drops_before = drops(&n, DropReason::BadMac);
    n.peers.remove(&friend.address());
    n.handle_datagram(now, LocalSocket(0), at, &hello(&friend, &n, 3, false));
    assert_eq!(drops(&n, DropReason::BadMac), drops_before + 1);
    assert!(answered(&mut n).is_empty());
}

fn hello_at(from: &Identity, to: &Node, n: u64, stamp: i64) -> Vec<u8> {
    hello_packet(
        from,
        to.identity(),
        n.to_be_bytes(),
        Timestamp(stamp),
        (1, 14, 1),
    )
    .unwrap()
}

fn alive_paths(n: &Node, a: Address, now: Timestamp) -> Vec<SocketAddr> {
    n.peer(a)
        .map(|p| {
            p.paths
                .iter()
                .filter(|x| x.is_alive(now))
                .map(|x| x.remote)
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn a_newer_hello_from_a_new_port_moves_the_peer_there_at_once() {
    let (now, mut n, mut rng) = start(17);
    let friend = throwaway(&mut rng);
    let old: SocketAddr = "203.0.113.91:9993".parse().unwrap();
    let new: SocketAddr = "203.0.113.91:40000".parse().unwrap();
    let elsewhere: SocketAddr = "203.0.113.66:9993".parse().unwrap();
    let p = hello_at(&friend, &n, 1, 500_000);
    hello_checked(&mut n, now, old, &p);
    // A first HELLO is answered, and its endpoint confirmed by a HELLO of ours, as ever.
    assert!(alive_paths(&n, friend.address(), now).is_empty());
    n.peers
        .get_mut(&friend.address())
        .unwrap()
        .learn_path(LocalSocket(0), old, now);
    answered(&mut n);
    // The peer restarts on a new port: its newer HELLO makes that port its path, and the old
    // one is no longer alive (what is sent to it goes where it now listens).
    let later = now + 2_000;
    // The friend's HELLO `k` stamped `stamp`, from `at`, later; the peer's live paths after it.
    let paths_after_hello = |n: &mut Node, at: SocketAddr, k: u64, stamp: i64| {
        n.handle_datagram(later, LocalSocket(0), at, &hello_at(&friend, n, k, stamp));
        alive_paths(n, friend.address(), later)
    };
    assert_eq!(paths_after_hello(&mut n, new, 2, 600_000), vec![new]);
    assert_eq!(answered(&mut n), [new].into());
    // An older HELLO of the peer's, replayed from elsewhere, moves nothing: it is answered,
    // and its endpoint only asked to confirm (a HELLO of ours goes there).
    assert_eq!(paths_after_hello(&mut n, elsewhere, 3, 550_000), vec![new]);
    let to: Vec<SocketAddr> = std::iter::from_fn(|| n.poll_transmit())
        .map(|t| t.to)
        .collect();
    assert_eq!(
        to,
        vec![elsewhere, elsewhere],
        "the OK(HELLO) and a confirming HELLO"
    );
    // So does the same HELLO again (the replay filter drops it before it counts).
    assert_eq!(paths_after_hello(&mut n, elsewhere, 2, 600_000), vec![new]);
}
