//! Packets from addresses the node does not know: lookups (WHOIS) and relaying within the
//! budgets of [`super::budget`], whatever sources a flood invents.

use std::net::SocketAddr;

use super::budget::{LOOKUP_SOURCE_BURST, RELAY_BURST, RELAY_REFILL_MS, WHOIS_PER_S};
use super::hello_tests::{drops, hello, hello_checked, node, node_as, throwaway};
use super::*;
use crate::crypto::test_rng::TestRng;
use crate::packet::Cipher;

/// A packet from `src` (an address nobody knows) to `dest`, armored with a throw-away key.
fn from_stranger(src: Address, dest: Address, n: u64) -> Vec<u8> {
    let mut p = packet::new_packet(n.to_be_bytes(), dest, src, Verb::Echo);
    p.extend_from_slice(&[0u8; 32]);
    let keys = PeerKeys::new(&[7u8; 48]);
    packet::armor(&mut p, &keys, Cipher::Poly1305Salsa2012);
    p
}

fn stranger(i: u64) -> Address {
    Address::from_u64_truncating(0x42_0000_0000 | i)
}

#[test]
fn lookups_for_unknown_sources_have_a_budget() {
    let now = Timestamp(1_000);
    let mut n = node(now);
    // One physical source inventing sources: its network's burst is looked up and queued.
    let from: SocketAddr = "203.0.113.9:9993".parse().unwrap();
    for i in 0..1_000 {
        let p = from_stranger(stranger(i), n.address(), i);
        n.handle_datagram(now, LocalSocket(0), from, &p);
    }
    let burst = u64::from(LOOKUP_SOURCE_BURST);
    assert_eq!(drops(&n, DropReason::LookupBudget), 1_000 - burst);
    assert_eq!(
        drops(&n, DropReason::QueueFull),
        0,
        "no waiting packet pushed out"
    );
    // Many source networks together: the node-wide budget (the queue keeps the newest
    // QUEUE_SIZE of those).
    for i in 0..1_000u32 {
        let from = SocketAddr::new(std::net::Ipv4Addr::from(0xC612_0000 | (i << 8)).into(), 1);
        let k = 10_000 + u64::from(i);
        n.handle_datagram(
            now,
            LocalSocket(0),
            from,
            &from_stranger(stranger(k), n.address(), k),
        );
    }
    let node_wide = u64::from(WHOIS_PER_S);
    assert_eq!(
        drops(&n, DropReason::LookupBudget),
        2_000 - node_wide,
        "{:?}",
        n.stats().drops
    );
    assert_eq!(
        drops(&n, DropReason::QueueFull),
        node_wide - QUEUE_SIZE as u64
    );
}

/// A node that is the root of its own planet (so it relays).
fn root(now: Timestamp) -> Node {
    let n = node_as(now, true);
    assert!(n.is_root());
    n
}

/// A peer the root knows (it said HELLO from `at`), and its address.
fn known_peer(n: &mut Node, rng: &mut TestRng, at: SocketAddr, now: Timestamp) -> Address {
    let id = throwaway(rng);
    let wire_id = u64::from(at.port()) << 32
        | u64::from(u32::from(match at.ip() {
            std::net::IpAddr::V4(ip) => ip,
            std::net::IpAddr::V6(_) => std::net::Ipv4Addr::UNSPECIFIED,
        }));
    let p = hello(&id, n, wire_id, true);
    hello_checked(n, now, at, &p);
    while n.poll_transmit().is_some() {}
    assert!(n.peer(id.address()).is_some());
    id.address()
}

#[test]
fn a_root_relays_for_strangers_within_a_budget_and_for_peers_freely() {
    let now = Timestamp(1_000);
    let mut n = root(now);
    let mut rng = TestRng(24);
    let alice_at: SocketAddr = "198.51.100.10:9993".parse().unwrap();
    let bob_at: SocketAddr = "198.51.100.11:9993".parse().unwrap();
    let alice = known_peer(&mut n, &mut rng, alice_at, now);
    let bob = known_peer(&mut n, &mut rng, bob_at, now);
    // Past the budget: relayed, or dropped for want of a route (bob's path is learned only
    // when he answers the root's HELLO, which this test does not play).
    let relayed = |n: &Node| n.stats().relayed + drops(n, DropReason::RelayNoRoute);

    // Spoofed sources from one stranger's address: the burst is relayed, then nothing.
    let spoofer: SocketAddr = "203.0.113.66:4444".parse().unwrap();
    for i in 0..5_000 {
        let p = from_stranger(stranger(i), bob, i);
        n.handle_datagram(now, LocalSocket(0), spoofer, &p);
    }
    assert_eq!(relayed(&n), u64::from(RELAY_BURST), "{:?}", n.stats().drops);
    assert_eq!(
        drops(&n, DropReason::RelayBudget),
        5_000 - u64::from(RELAY_BURST)
    );
    // A known peer's packets (and fragments) to bob go through without limit meanwhile.
    for i in 0..5_000 {
        let p = from_stranger(alice, bob, 100_000 + i);
        n.handle_datagram(now, LocalSocket(0), alice_at, &p);
    }
    let mut fragment = vec![0u8; 40];
    fragment[..8].copy_from_slice(&7u64.to_be_bytes());
    fragment[8..13].copy_from_slice(&bob.to_bytes());
    fragment[13] = 0xff; // the fragment indicator
    fragment[14] = 0x21; // fragment 1 of 2
    assert!(packet::is_fragment(&fragment));
    for _ in 0..1_000 {
        n.handle_datagram(now, LocalSocket(0), alice_at, &fragment);
    }
    assert_eq!(relayed(&n), u64::from(RELAY_BURST) + 6_000);
    // The stranger's budget refills slowly.
    let later = now + 10 * RELAY_REFILL_MS;
    for i in 0..100 {
        let p = from_stranger(stranger(50_000 + i), bob, 50_000 + i);
        n.handle_datagram(later, LocalSocket(0), spoofer, &p);
    }
    assert_eq!(relayed(&n), u64::from(RELAY_BURST) + 6_000 + 10);
}
