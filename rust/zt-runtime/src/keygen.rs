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
        let id = Identity::generate(&mut OsRng);
        release_free_memory();
        return id;
    }
    let done = AtomicBool::new(false);
    let (tx, rx) = mpsc::channel();
    let id = std::thread::scope(|s| {
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
    });
    release_free_memory();
    id
}

/// Hands the memory the workers' hash scratch buffers (2 MB each) freed back to the OS: glibc
/// keeps what its per-thread arenas freed, which left an idle node's process several MB larger
/// for its whole life after generating its identity.
fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: `malloc_trim` takes no pointers and only returns free pages of the
        // allocator's own arenas to the kernel; glibc makes it safe to call from any thread
        // at any time (it locks each arena while trimming it).
        #[allow(unsafe_code)]
        unsafe {
            libc::malloc_trim(0);
        }
    }
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
