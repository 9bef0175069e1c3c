//! A flood of forged HELLOs must not slow a node's known peers (issue 15, the short version of
//! `benches/py/bench_hello_flood.py`).
//!
//! A root and a leaf on loopback; the leaf echoes USER_MESSAGEs back to the root (through its
//! event subscription and the public API, as an application would). While a flooder sends
//! HELLOs from throw-away identities to the node under test as fast as one thread can, the root
//! sends an echo every 10 ms and times the answers. Two floods, each against the root and
//! against the leaf: a wrong MAC from fresh keys (each costs the node an agreement unless the
//! budgets refuse it first), and a valid MAC from keys whose address does not derive from them
//! (each costs a 14 ms validation unless budgets and the validation thread keep it off the
//! loop), the latter from 250 source networks (127.0.N.1: all of 127/8 is loopback).
//!
//! Before the budgets, the root answered 13 of 100 echoes (p50 6.3 s) under the first flood.
//! Here at least 95 % must come back with a median under 20 ms (a debug build on a loaded
//! 2-core CI machine; the benchmark reports the release figures), and the node must answer
//! normally right after.

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use zt_proto::crypto::c25519::KeyPair;
use zt_proto::node::{DropReason, hello_packet};
use zt_proto::{Address, Identity, Timestamp};
use zt_runtime::events::NodeEvent;
use zt_runtime::rng::OsRng;
use zt_runtime::runtime::NodeRuntime;

use common::{T, node};

const ECHO: u64 = 0x7a74_6563_686f;
const REPLY: u64 = ECHO + 1;

#[derive(Clone, Copy, Debug)]
enum Flood {
    WrongMac,
    Underived,
}

/// HELLOs from `n` throw-away identities to `target`.
fn forged(target: &Identity, n: usize, flood: Flood) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| {
            let kp = KeyPair::generate(&mut OsRng);
            let mut a = [0u8; 8];
            zt_proto::crypto::SecureRandom::fill(&mut OsRng, &mut a);
            let address =
                Address::from_u64_truncating(u64::from_le_bytes(a) & 0xffff_ffff | 0x42 << 32);
            let id = Identity::from_key_pair_unchecked(address, kp);
            let mut p = hello_packet(
                &id,
                target,
                (i as u64).to_be_bytes(),
                Timestamp(1),
                (1, 14, 1),
            )
            .expect("a hello");
            if matches!(flood, Flood::WrongMac) {
                p[zt_proto::packet::IDX_MAC] ^= 0x55;
            }
            p
        })
        .collect()
}

/// The leaf's side of the echo, until `stop`: every ECHO message goes back as a REPLY.
fn echo_responder(leaf: &NodeRuntime, stop: &AtomicBool) {
    let sub = leaf.subscribe(4096).expect("subscription");
    while !stop.load(Ordering::Relaxed) {
        if let Ok(NodeEvent::UserMessage {
            from,
            type_id: ECHO,
            data,
        }) = sub.recv(Some(Duration::from_millis(50)))
        {
            let _ = leaf.send_user_message(from, REPLY, data, T);
        }
    }
}

/// `count` echoes from `root` to `leaf`, one every `gap`: how many came back within a second
/// each, and their median round trip.
fn echoes(root: &NodeRuntime, leaf: Address, count: u64, gap: Duration) -> (u64, Duration) {
    let sub = root.subscribe(4096).expect("subscription");
    let mut sent_at = Vec::new();
    let mut rtts = Vec::new();
    let start = Instant::now();
    let mut next = start;
    let end_of_sending = start + gap * u32::try_from(count).unwrap_or(u32::MAX);
    loop {
        let now = Instant::now();
        if now >= next && (sent_at.len() as u64) < count {
            let seq = sent_at.len() as u64;
            sent_at.push(now);
            root.send_user_message(leaf, ECHO, seq.to_be_bytes().to_vec(), T)
                .expect("running")
                .expect("sent");
            next += gap;
        }
        if now > end_of_sending + Duration::from_secs(1) {
            break;
        }
        if let Ok(NodeEvent::UserMessage {
            type_id: REPLY,
            data,
            ..
        }) = sub.recv(Some(Duration::from_millis(1)))
            && let Ok(b) = <[u8; 8]>::try_from(data.as_slice())
            && let Some(at) = sent_at.get(u64::from_be_bytes(b) as usize)
        {
            let rtt = at.elapsed();
            if rtt <= Duration::from_secs(1) {
                rtts.push(rtt);
            }
        }
    }
    rtts.sort();
    let median = rtts.get(rtts.len() / 2).copied().unwrap_or(Duration::MAX);
    (rtts.len() as u64, median)
}

fn run(target_is_root: bool, flood: Flood) {
    let (planet, root_id, port) = common::loopback_planet(91);
    let root = node(&planet, Some(root_id.clone()), port, false);
    let leaf_id = Identity::generate(&mut OsRng);
    let leaf = node(&planet, Some(leaf_id.clone()), 0, false);
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| echo_responder(&leaf, &stop));
        // Stops the responder however `check` ends (the scope waits for it).
        let _stop = StopOnDrop(&stop);
        check(
            &root,
            &leaf,
            &root_id,
            &leaf_id,
            port,
            target_is_root,
            flood,
        );
    });
}

struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

fn check(
    root: &NodeRuntime,
    leaf: &NodeRuntime,
    root_id: &Identity,
    leaf_id: &Identity,
    port: u16,
    target_is_root: bool,
    flood: Flood,
) {
    let leaf_port = leaf.snapshot().expect("snapshot").port;
    // Unflooded first: the pair works (and the leaf is known to the root).
    let (got, _) = echoes(root, leaf_id.address(), 10, Duration::from_millis(10));
    assert_eq!(got, 10, "echoes before any flood");
    let (target, target_port, target_id) = if target_is_root {
        (root, port, root_id)
    } else {
        (leaf, leaf_port, leaf_id)
    };
    let packets = forged(target_id, 2_000, flood);
    let flooding = Arc::new(AtomicBool::new(true));
    let sent = Arc::new(AtomicU64::new(0));
    let flooder = {
        let (flooding, sent) = (flooding.clone(), sent.clone());
        std::thread::spawn(move || {
            let to = SocketAddr::from(([127, 0, 0, 1], target_port));
            let sockets: Vec<UdpSocket> = match flood {
                Flood::WrongMac => vec![UdpSocket::bind("127.0.0.1:0").expect("bind")],
                Flood::Underived => (1..=250u8)
                    .map(|n| UdpSocket::bind((std::net::Ipv4Addr::new(127, 0, n, 1), 0)))
                    .collect::<Result<_, _>>()
                    .expect("bind 127.0.N.1"),
            };
            // Bounded in time (the caller stops it) and in count.
            let mut i = 0usize;
            while flooding.load(Ordering::Relaxed) && i < 5_000_000 {
                let s = &sockets[i % sockets.len()];
                let _ = s.send_to(&packets[i % packets.len()], to);
                i += 1;
            }
            sent.store(i as u64, Ordering::Relaxed);
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    let (got, median) = echoes(root, leaf_id.address(), 100, Duration::from_millis(10));
    flooding.store(false, Ordering::Relaxed);
    flooder.join().expect("flooder");
    let stats = target.snapshot().expect("snapshot").stats;
    let refused = [
        DropReason::RateLimited,
        DropReason::BadMac,
        DropReason::BadIdentity,
    ]
    .iter()
    .map(|r| stats.drops.get(r).copied().unwrap_or(0))
    .sum::<u64>();
    eprintln!(
        "{flood:?} flood of {} HELLOs at the {}: {got}/100 echoes, median {median:?}; drops {:?}",
        sent.load(Ordering::Relaxed),
        if target_is_root { "root" } else { "leaf" },
        stats.drops
    );
    assert!(
        refused > 1_000,
        "the flood reached the node: {:?}",
        stats.drops
    );
    assert!(got >= 95, "{got}/100 echoes during the flood");
    assert!(
        median <= Duration::from_millis(20),
        "median echo {median:?} during the flood"
    );
    // Right after: normal.
    let (got, _) = echoes(root, leaf_id.address(), 20, Duration::from_millis(10));
    assert_eq!(got, 20, "echoes after the flood");
}

#[test]
fn wrong_mac_flood_at_a_root() {
    run(true, Flood::WrongMac);
}

#[test]
fn wrong_mac_flood_at_a_leaf() {
    run(false, Flood::WrongMac);
}

#[test]
fn underived_identity_flood_at_a_root() {
    run(true, Flood::Underived);
}

#[test]
fn underived_identity_flood_at_a_leaf() {
    run(false, Flood::Underived);
}
