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

/// Most worker threads one generation starts, whatever the machine.
pub const MAX_THREADS: usize = 64;

/// How many workers a request for `threads` gets: all cores for 0, never more than the
/// machine's cores (more would only take turns on them) nor [`MAX_THREADS`].
#[must_use]
pub fn worker_count(threads: usize) -> usize {
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    match threads {
        0 => cores,
        n => n.min(cores),
    }
    .clamp(1, MAX_THREADS)
}

/// Identity generation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeygenError {
    /// Not even one search's scratch memory (2 MB) could be allocated.
    #[error("out of memory: an identity search needs 2 MB of scratch memory")]
    OutOfMemory,
}

/// Searches from a random candidate until an identity is found or `done` is set.
fn search(scratch: &mut Scratch, done: &AtomicBool) -> Option<Identity> {
    let mut candidate = KeyPair::generate(&mut OsRng);
    while !done.load(Ordering::Relaxed) {
        if let Some(id) = Identity::try_candidate(&candidate, scratch) {
            return Some(id);
        }
        Identity::next_candidate(&mut candidate);
    }
    None
}

/// Generates an identity using up to `threads` cores (0 = all available; see
/// [`worker_count`]). A worker that cannot be started (the process is out of threads or
/// address space) or cannot get its scratch memory is done without: the search goes on with
/// the others, or on the calling thread if none started.
///
/// # Errors
/// [`KeygenError::OutOfMemory`] if no search could get its scratch memory (never an abort).
pub fn generate(threads: usize) -> Result<Identity, KeygenError> {
    let threads = worker_count(threads);
    let done = AtomicBool::new(false);
    let id = if threads == 1 {
        let mut scratch = Scratch::try_new().ok_or(KeygenError::OutOfMemory)?;
        search(&mut scratch, &done)
    } else {
        let (tx, rx) = mpsc::channel();
        std::thread::scope(|s| {
            for _ in 0..threads {
                let tx = tx.clone();
                let done = &done;
                let worker = move || {
                    let Some(mut scratch) = Scratch::try_new() else {
                        return;
                    };
                    if let Some(id) = search(&mut scratch, done) {
                        done.store(true, Ordering::Relaxed);
                        let _ = tx.send(id);
                    }
                };
                if std::thread::Builder::new()
                    .name("zt-keygen".into())
                    .spawn_scoped(s, worker)
                    .is_err()
                {
                    break;
                }
            }
            drop(tx);
            // Every worker that got its memory searches until one finds an identity: the
            // channel closes unanswered only if none did (or none started).
            match rx.recv() {
                Ok(id) => Some(id),
                Err(_) => {
                    let mut scratch = Scratch::try_new()?;
                    search(&mut scratch, &done)
                }
            }
        })
    };
    release_free_memory();
    id.ok_or(KeygenError::OutOfMemory)
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
    fn thread_counts_are_capped() {
        let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
        assert_eq!(super::worker_count(0), cores.min(super::MAX_THREADS));
        assert_eq!(super::worker_count(1), 1);
        assert_eq!(super::worker_count(1 << 40), cores.min(super::MAX_THREADS));
        assert_eq!(
            super::worker_count(usize::MAX),
            cores.min(super::MAX_THREADS)
        );
    }

    #[test]
    fn parallel_generation_gives_valid_identities() {
        for threads in [1, 2] {
            let id = super::generate(threads).unwrap();
            id.validate().unwrap();
            assert!(id.has_secret());
        }
    }
}
