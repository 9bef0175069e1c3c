//! Identity generation on several cores.
//!
//! The search is embarrassingly parallel: each worker walks its own random candidates and the
//! first acceptable one wins. Expected work is ~15 memory-hard hashes per identity.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;

use zt_proto::Identity;
use zt_proto::crypto::c25519::KeyPair;
use zt_proto::crypto::identity_hash::Scratch;

use crate::rng::OsRng;

/// Generates an identity using up to `threads` cores (0 = all available).
#[must_use]
pub fn generate(threads: usize) -> Identity {
    let threads = match threads {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    if threads == 1 {
        return Identity::generate(&mut OsRng);
    }
    let done = AtomicBool::new(false);
    let (tx, rx) = mpsc::channel();
    std::thread::scope(|s| {
        for _ in 0..threads {
            let tx = tx.clone();
            let done = &done;
            s.spawn(move || {
                let mut scratch = Scratch::default();
                let mut candidate = KeyPair::generate(&mut OsRng);
                while !done.load(Ordering::Relaxed) {
                    if let Some(id) = Identity::try_candidate(&candidate, &mut scratch) {
                        done.store(true, Ordering::Relaxed);
                        let _ = tx.send(id);
                        return;
                    }
                    Identity::next_candidate(&mut candidate);
                }
            });
        }
        drop(tx);
        // Some worker always finds one: the loop only ends after a send.
        rx.recv().unwrap_or_else(|_| Identity::generate(&mut OsRng))
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn parallel_generation_gives_valid_identities() {
        for threads in [1, 2] {
            let id = super::generate(threads);
            id.validate().unwrap();
            assert!(id.has_secret());
        }
    }
}
