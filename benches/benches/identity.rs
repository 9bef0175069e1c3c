//! Identities: the memory-hard hash, validation, generation (one core and all cores), signing,
//! verification and key agreement.
//!
//! Generation takes ~0.1–0.3 s per identity and its cost varies a lot from one identity to the
//! next (the number of candidates tried is geometric), so it uses flat sampling with few samples
//! and a bounded measurement time; the whole file runs in well under two minutes.

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, SamplingMode, criterion_group, criterion_main};
use zt_proto::Identity;
use zt_proto::crypto::identity_hash::{Scratch, hash};
use zt_runtime::keygen;

/// Message signed and verified (a typical small control payload).
const MESSAGE_LEN: usize = 256;

fn message() -> Vec<u8> {
    (0..MESSAGE_LEN).map(|i| (i * 13 + 1) as u8).collect()
}

/// The memory-hard hash and full validation (which runs it once, plus key checks).
fn hashing(c: &mut Criterion) {
    let id = keygen::generate(1).expect("an identity");
    let public: [u8; 64] = *id.public_key();

    let mut group = c.benchmark_group("identity");
    group
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5));

    let mut scratch = Scratch::default();
    group.bench_function("memory_hard_hash", |b| {
        b.iter(|| hash(black_box(&public), &mut scratch));
    });
    group.bench_function("validate", |b| {
        b.iter(|| black_box(&id).validate());
    });
    group.bench_function("validate_with_scratch", |b| {
        b.iter(|| black_box(&id).validate_with(&mut scratch));
    });
    group.finish();
}

/// Identity generation; `threads` 1 is one core, 0 is every available core.
fn generation(c: &mut Criterion) {
    let mut group = c.benchmark_group("identity_generate");
    group
        .sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(12));
    group.bench_function("single_core", |b| {
        b.iter(|| keygen::generate(1).expect("an identity"))
    });
    group.bench_function("all_cores", |b| {
        b.iter(|| keygen::generate(0).expect("an identity"))
    });
    group.finish();
}

/// Signing, verifying and agreeing on the per-peer key.
fn keys(c: &mut Criterion) {
    let alice: Identity = keygen::generate(1).expect("an identity");
    let bob: Identity = keygen::generate(1).expect("an identity");
    let msg = message();
    let sig = alice
        .sign(&msg)
        .expect("generated identities have a secret");
    assert!(alice.verify(&msg, &sig), "a fresh signature verifies");

    let mut group = c.benchmark_group("identity_keys");
    group
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    group.bench_function("sign_256B", |b| {
        b.iter(|| black_box(&alice).sign(black_box(&msg)));
    });
    group.bench_function("verify_256B", |b| {
        b.iter(|| black_box(&alice).verify(black_box(&msg), black_box(&sig)));
    });
    group.bench_function("agree", |b| {
        b.iter(|| black_box(&alice).agree(black_box(&bob)));
    });
    group.finish();
}

criterion_group!(benches, hashing, generation, keys);
criterion_main!(benches);
