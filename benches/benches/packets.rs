//! Packet crypto and relaying: armor+dearmor per second (1400-byte payloads, suites 1 and 3)
//! and how many datagrams per second a root relays.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use zt_proto::{
    Address, Identity, LocalSocket, Root, Timestamp, World, WorldType,
    crypto::c25519::KeyPair,
    packet::{self, Cipher, PeerKeys, Verb},
};
use zt_sim::{Netem, Sim, SimRng, public};

fn armor_dearmor(c: &mut Criterion) {
    let keys = PeerKeys::new(&[0x42; 48]);
    let mut g = c.benchmark_group("packet_1400B");
    g.throughput(Throughput::Elements(1));
    for (name, cipher) in [
        ("salsa2012_poly1305", Cipher::Poly1305Salsa2012),
        ("aes_gmac_siv", Cipher::AesGmacSiv),
    ] {
        let src = Address::new(0x0102030405).unwrap_or_default();
        let dst = Address::new(0x0a0b0c0d0e).unwrap_or_default();
        let mut template = packet::new_packet([7; 8], dst, src, Verb::Frame);
        template.extend((0..1400u32).map(|i| i as u8));
        g.bench_function(format!("{name}_armor_dearmor"), |b| {
            b.iter(|| {
                let mut p = template.clone();
                packet::armor(&mut p, &keys, cipher);
                let ok = packet::dearmor(black_box(&mut p), &keys).is_ok();
                assert!(ok);
            });
        });
    }
    g.finish();
}

/// A root relaying a captured leaf-to-leaf packet (relays never decrypt).
fn relay(c: &mut Criterion) {
    let root_id = Identity::generate(&mut SimRng(1));
    let key = KeyPair::generate(&mut SimRng(2));
    let roots = vec![Root {
        identity: root_id.to_public(),
        stable_endpoints: vec![public(1).into()],
    }];
    let planet = World::make(WorldType::Planet, 9, 1, *key.public(), roots, &key)
        .unwrap_or_else(|_| unreachable!());
    let mut sim = Sim::new(3, Netem::default(), Timestamp(1_700_000_000_000));
    // (a and b only need to be known to the root, with paths: they come online below.)
    let root = sim.add_host(root_id, planet.clone(), public(1), None);
    let a = sim.add_host(
        Identity::generate(&mut SimRng(4)),
        planet.clone(),
        public(2),
        None,
    );
    let b = sim.add_host(Identity::generate(&mut SimRng(5)), planet, public(3), None);
    sim.run_for(6_000);
    // Relays never decrypt: any well-formed packet from a to b is relayed as it is.
    let src = sim.hosts[a].node.address();
    let dest = sim.hosts[b].node.address();
    let mut data = packet::new_packet([9; 8], dest, src, Verb::Frame);
    data.extend((0..1400u32).map(|i| i as u8));
    let now = sim.now;
    let node = &mut sim.hosts[root].node;
    let from = public(2);
    let mut g = c.benchmark_group("root_relay");
    g.throughput(Throughput::Elements(1));
    g.bench_function("relay_datagram", |bch| {
        bch.iter(|| {
            node.handle_datagram(now, LocalSocket(0), from, black_box(&data));
            let out = node.poll_transmit();
            assert!(out.is_some());
            while node.poll_event().is_some() {}
        });
    });
    g.finish();
}

criterion_group!(benches, armor_dearmor, relay);
criterion_main!(benches);
