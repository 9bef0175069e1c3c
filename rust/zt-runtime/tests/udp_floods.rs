//! A flood of forged HELLOs, or of packets with invented sources for a root to relay, must not
//! slow a node's known peers (issue 15).
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
//! A third flood sends the root packets for the leaf from invented ZeroTier addresses (a root
//! relays; the leaf would look each new source up): the root's relay budget and the leaf's
//! lookup budget keep both working.
//!
//! `benchmark_ten_second_floods` (ignored by default) runs each flood, and a slow one (one
//! HELLO per source network every 2 s from 2,000 networks), for 10 s, three rounds, and prints
//! min/median/max: the figures in docs/security.md.
//!
//! Before the budgets, the root answered 13 of 100 echoes (p50 6.3 s) under the first flood.
//! Here at least 95 % must come back with a median under 20 ms (a debug build on a loaded
//! 2-core CI machine; the benchmark reports the release figures), and the node must answer
//! normally right after.

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use zt_proto::{Address, DropReason, Identity, Timestamp, crypto::c25519::KeyPair, hello_packet};
use zt_runtime::events::NodeEvent;
use zt_runtime::rng::OsRng;
use zt_runtime::runtime::NodeRuntime;

use common::{T, node};

const ECHO: u64 = 0x7a74_6563_686f;
const REPLY: u64 = ECHO + 1;

#[derive(Clone, Copy, Debug)]
enum Flood {
    /// HELLOs with a wrong MAC from fresh keys, one socket, as fast as it goes.
    WrongMac,
    /// HELLOs with a valid MAC from keys whose address does not derive from them, from 250
    /// source networks, as fast as they go.
    Underived,
    /// The same, one packet per source network every 2 s from 2,000 networks (1,000 a second).
    UnderivedSlow,
    /// Packets for the leaf from invented addresses, sent to the root to relay.
    Relayed,
}

/// Packets for `dest` from `n` invented addresses (armored with a key nobody has).
fn spoofed(dest: Address, n: usize) -> Vec<Vec<u8>> {
    let keys = zt_proto::packet::PeerKeys::new(&[9u8; 48]);
    (0..n)
        .map(|i| {
            let src = Address::from_u64_truncating(0x42_0000_0000 | i as u64);
            let mut p = zt_proto::packet::new_packet(
                (i as u64).to_be_bytes(),
                dest,
                src,
                zt_proto::packet::Verb::Echo,
            );
            p.extend_from_slice(&[0u8; 64]);
            zt_proto::packet::armor(&mut p, &keys, zt_proto::packet::Cipher::Poly1305Salsa2012);
            p
        })
        .collect()
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

/// What one flood did to the echoes.
#[derive(Clone, Copy, Debug)]
struct Outcome {
    /// Datagrams the flooder sent.
    sent: u64,
    /// Echoes answered within a second during the flood, of `asked`.
    got: u64,
    asked: u64,
    /// Their median round trip.
    median: Duration,
    /// Echoes answered in the second right after the flood, of 20.
    after: u64,
    /// Drops by the target of the kinds the flood causes.
    refused: u64,
    /// Packets the root relayed during the flood.
    relayed: u64,
}

/// A root and a leaf that echoes; `flood` at the root or the leaf for `seconds` while the root
/// sends an echo every 10 ms.
fn run(target_is_root: bool, flood: Flood, seconds: f64) -> Outcome {
    let (planet, root_id, port) = common::loopback_planet(91);
    let root = node(&planet, Some(root_id.clone()), port, false);
    let leaf_id = Identity::generate(&mut OsRng);
    let leaf = node(&planet, Some(leaf_id.clone()), 0, false);
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| echo_responder(&leaf, &stop));
        // Stops the responder however `measure` ends (the scope waits for it).
        let _stop = StopOnDrop(&stop);
        measure(
            &root,
            &leaf,
            &root_id,
            &leaf_id,
            port,
            target_is_root,
            flood,
            seconds,
        )
    })
}

struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Sends `packets` to `to` until `flooding` ends (at most 50 M): as fast as one thread can,
/// from one socket (`WrongMac`, `Relayed`) or 250 source networks (`Underived`); for
/// `UnderivedSlow`, one packet per source network every 2 s from 2,000 networks.
fn flood_loop(flood: Flood, to: SocketAddr, packets: &[Vec<u8>], flooding: &AtomicBool) -> u64 {
    let mut i = 0usize;
    match flood {
        Flood::UnderivedSlow => {
            let start = Instant::now();
            while flooding.load(Ordering::Relaxed) {
                // 1,000 a second: packet i goes at i ms, from network i mod 2,000.
                let due = start + Duration::from_millis(i as u64);
                if let Some(wait) = due.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
                let net = (i % 2_000) as u16 + 256;
                let from = std::net::Ipv4Addr::new(127, (net >> 8) as u8, net as u8, 1);
                if let Ok(s) = UdpSocket::bind((from, 0)) {
                    let _ = s.send_to(&packets[i % packets.len()], to);
                }
                i += 1;
            }
        }
        _ => {
            let sockets: Vec<UdpSocket> = match flood {
                Flood::Underived => (1..=250u8)
                    .map(|n| UdpSocket::bind((std::net::Ipv4Addr::new(127, 0, n, 1), 0)))
                    .collect::<Result<_, _>>()
                    .expect("bind 127.0.N.1"),
                _ => vec![UdpSocket::bind("127.0.0.1:0").expect("bind")],
            };
            while flooding.load(Ordering::Relaxed) && i < 50_000_000 {
                let s = &sockets[i % sockets.len()];
                let _ = s.send_to(&packets[i % packets.len()], to);
                i += 1;
            }
        }
    }
    i as u64
}

#[allow(clippy::too_many_arguments)]
fn measure(
    root: &NodeRuntime,
    leaf: &NodeRuntime,
    root_id: &Identity,
    leaf_id: &Identity,
    port: u16,
    target_is_root: bool,
    flood: Flood,
    seconds: f64,
) -> Outcome {
    let leaf_port = leaf.snapshot().expect("snapshot").port;
    // Unflooded first: the pair works (and the leaf is known to the root).
    let (got, _) = echoes(root, leaf_id.address(), 10, Duration::from_millis(10));
    assert_eq!(got, 10, "echoes before any flood");
    let (target, target_port, target_id) = if target_is_root {
        (root, port, root_id)
    } else {
        (leaf, leaf_port, leaf_id)
    };
    let packets = match flood {
        Flood::Relayed => spoofed(leaf_id.address(), 100_000),
        _ => forged(target_id, 2_000, flood),
    };
    let relayed0 = root.snapshot().expect("snapshot").stats.relayed;
    let flooding = Arc::new(AtomicBool::new(true));
    let flooder = {
        let flooding = flooding.clone();
        let to = SocketAddr::from(([127, 0, 0, 1], target_port));
        std::thread::spawn(move || flood_loop(flood, to, &packets, &flooding))
    };
    std::thread::sleep(Duration::from_millis(300));
    // Echoes every 10 ms for the flood's length (less the 300 ms head start).
    let asked = ((seconds - 0.3) * 100.0).max(10.0) as u64;
    let (got, median) = echoes(root, leaf_id.address(), asked, Duration::from_millis(10));
    flooding.store(false, Ordering::Relaxed);
    let sent = flooder.join().expect("flooder");
    let stats = target.snapshot().expect("snapshot").stats;
    let refused = [
        DropReason::RateLimited,
        DropReason::BadMac,
        DropReason::BadIdentity,
        DropReason::RelayBudget,
    ]
    .iter()
    .map(|r| stats.drops.get(r).copied().unwrap_or(0))
    .sum::<u64>();
    let relayed = root.snapshot().expect("snapshot").stats.relayed - relayed0;
    // Right after: normal (20 echoes over the next 200 ms, each answered within a second).
    let (after, _) = echoes(root, leaf_id.address(), 20, Duration::from_millis(10));
    let o = Outcome {
        sent,
        got,
        asked,
        median,
        after,
        refused,
        relayed,
    };
    eprintln!(
        "{flood:?} flood at the {}: {o:?}; target's drops {:?}",
        if target_is_root { "root" } else { "leaf" },
        stats.drops
    );
    o
}

/// The suite's short version: ~1 s of flood; at least 95 % of the echoes back with a median
/// under 20 ms (a debug build on a loaded 2-core CI machine), all of them right after.
fn check(target_is_root: bool, flood: Flood) {
    // One flood at a time: each takes a core as fast as it can, and the tests of this file
    // run on threads of one process (on a 2-core machine, two floods at once measure the
    // machine, not the node).
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _turn = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let o = run(target_is_root, flood, 1.3);
    assert!(o.refused > 1_000, "the flood did not reach the node: {o:?}");
    assert!(
        o.got * 100 >= o.asked * 95,
        "{}/{} echoes during the flood",
        o.got,
        o.asked
    );
    assert!(
        o.median <= Duration::from_millis(20),
        "median echo {:?} during the flood",
        o.median
    );
    assert_eq!(o.after, 20, "echoes after the flood");
    if matches!(flood, Flood::Relayed) {
        assert!(
            o.relayed < o.sent / 10,
            "the root relayed {} of {} packets",
            o.relayed,
            o.sent
        );
    }
}

/// A test of the short version ([`check`]) for each `name: target_is_root, flood;`.
macro_rules! flood_tests {
    ($($name:ident: $target_is_root:expr, $flood:expr;)*) => {
        $(
            #[test]
            fn $name() {
                check($target_is_root, $flood);
            }
        )*
    };
}

flood_tests! {
    wrong_mac_flood_at_a_root: true, Flood::WrongMac;
    wrong_mac_flood_at_a_leaf: false, Flood::WrongMac;
    underived_identity_flood_at_a_root: true, Flood::Underived;
    underived_identity_flood_at_a_leaf: false, Flood::Underived;
    relayed_flood_from_invented_sources: true, Flood::Relayed;
}

/// The benchmark (issue 15's "must show"): each flood for 10 s, three rounds, min/median/max of
/// the echoes answered (%), their median round trip and the echoes right after. Run with
/// `cargo test --release -p zt-runtime --test udp_floods -- --ignored --nocapture`.
#[test]
#[ignore = "a 10 s-per-flood benchmark (about 3 minutes): run it with --ignored"]
fn benchmark_ten_second_floods() {
    let rounds = 3;
    let cases = [
        (true, Flood::WrongMac),
        (false, Flood::WrongMac),
        (true, Flood::Underived),
        (false, Flood::Underived),
        (true, Flood::UnderivedSlow),
        (false, Flood::UnderivedSlow),
        (true, Flood::Relayed),
    ];
    let mut lines = Vec::new();
    for (at_root, flood) in cases {
        let runs: Vec<Outcome> = (0..rounds).map(|_| run(at_root, flood, 10.0)).collect();
        let stat = |f: &dyn Fn(&Outcome) -> f64| {
            let mut v: Vec<f64> = runs.iter().map(f).collect();
            v.sort_by(f64::total_cmp);
            (v[0], v[v.len() / 2], v[v.len() - 1])
        };
        let pct = stat(&|o| 100.0 * o.got as f64 / o.asked as f64);
        let p50 = stat(&|o| o.median.as_secs_f64() * 1e3);
        let rate = stat(&|o| o.sent as f64 / 10.0);
        let after = stat(&|o| o.after as f64 * 5.0);
        lines.push(format!(
            "{:5} {:14} {:>9.0}/s  echoes {:5.1}/{:5.1}/{:5.1} %  p50 {:6.2}/{:6.2}/{:6.2} ms  \
             right after {:3.0}/{:3.0}/{:3.0} %",
            if at_root { "root" } else { "leaf" },
            format!("{flood:?}"),
            rate.1,
            pct.0,
            pct.1,
            pct.2,
            p50.0,
            p50.1,
            p50.2,
            after.0,
            after.1,
            after.2
        ));
    }
    eprintln!("\n10 s floods, {rounds} rounds, min/median/max (flood rate: median):");
    for l in &lines {
        eprintln!("{l}");
    }
}
