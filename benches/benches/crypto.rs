//! Throughput of the symmetric primitives on the packet path: Salsa20/12 (packet encryption),
//! Poly1305 (packet MAC) and SHA-512.
//!
//! Sizes: 1400 bytes (about one ZeroTier packet at the default MTU) and 64 KiB (bulk).

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use zt_proto::crypto::{Salsa, SalsaRounds, poly1305, sha512};

/// (label, length in bytes) of each input size.
const SIZES: [(&str, usize); 2] = [("1400B", 1400), ("64KiB", 64 * 1024)];

const KEY: [u8; 32] = [0x5a; 32];
const NONCE: [u8; 8] = [0xa5; 8];

/// A deterministic, non-constant input of `len` bytes.
fn input(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 + 7) as u8).collect()
}

/// Salsa20/12 as the packet path uses it: a fresh cipher per buffer, encrypting in place.
fn salsa20_12(c: &mut Criterion) {
    let mut group = c.benchmark_group("salsa20_12");
    for (label, len) in SIZES {
        group.throughput(Throughput::Bytes(len as u64));
        let mut buf = input(len);
        group.bench_function(BenchmarkId::from_parameter(label), |b| {
            b.iter(|| {
                Salsa::new(SalsaRounds::R12, black_box(&KEY), black_box(&NONCE))
                    .crypt(black_box(&mut buf[..]));
            });
        });
    }
    group.finish();
}

fn poly1305_mac(c: &mut Criterion) {
    let mut group = c.benchmark_group("poly1305");
    for (label, len) in SIZES {
        group.throughput(Throughput::Bytes(len as u64));
        let data = input(len);
        group.bench_function(BenchmarkId::from_parameter(label), |b| {
            b.iter(|| poly1305(black_box(&KEY), black_box(&data[..])));
        });
    }
    group.finish();
}

fn sha512_digest(c: &mut Criterion) {
    let mut group = c.benchmark_group("sha512");
    let (label, len) = SIZES[0];
    group.throughput(Throughput::Bytes(len as u64));
    let data = input(len);
    group.bench_function(BenchmarkId::from_parameter(label), |b| {
        b.iter(|| sha512(black_box(&data[..])));
    });
    group.finish();
}

criterion_group!(benches, salsa20_12, poly1305_mac, sha512_digest);
criterion_main!(benches);
