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

/// Stack of one search worker: the search keeps its large state (the 2 MB scratch) on the heap.
const WORKER_STACK: usize = 512 << 10;

/// Address space a new thread needs beyond its stack and scratch: its thread-local data and
/// the first pages of its allocator arena. glibc aborts the whole process when a started
/// thread cannot get these, so a worker is started only when this much is free as well.
const WORKER_HEADROOM: usize = 8 << 20;

/// Whether the process has address space for one more worker thread now (under an
/// `RLIMIT_AS`, a cgroup or a 32-bit address space it may not).
fn room_for_worker() -> bool {
    #[cfg(unix)]
    {
        let len = WORKER_STACK + WORKER_HEADROOM;
        // SAFETY: an anonymous, inaccessible, unreserved mapping at an address of the kernel's
        // choosing touches no existing memory; it is unmapped at once with the same length,
        // and nothing ever reads or writes it.
        #[allow(unsafe_code)]
        unsafe {
            let p = libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_NONE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            );
            if p == libc::MAP_FAILED {
                return false;
            }
            libc::munmap(p, len);
        }
        true
    }
    #[cfg(not(unix))]
    {
        let mut probe = Vec::<u8>::new();
        probe
            .try_reserve_exact(WORKER_STACK + WORKER_HEADROOM)
            .is_ok()
    }
}

/// Generates an identity using up to `threads` cores (0 = all available; see
/// [`worker_count`]). Each worker's scratch memory is allocated before it starts, and a worker
/// starts only while the process has room for it: one that cannot get its memory or cannot be
/// started (the process is out of threads or address space) is done without, and the search
/// goes on with the others, or on the calling thread if none started.
///
/// # Errors
/// [`KeygenError::OutOfMemory`] if no search could get its scratch memory (never an abort).
pub fn generate(threads: usize) -> Result<Identity, KeygenError> {
    let threads = worker_count(threads);
    let done = AtomicBool::new(false);
    let mut own = Scratch::try_new().ok_or(KeygenError::OutOfMemory)?;
    let id = if threads == 1 {
        search(&mut own, &done)
    } else {
        let (tx, rx) = mpsc::channel();
        std::thread::scope(|s| {
            // The first worker takes the scratch already in hand; each later one gets its own.
            let mut spare = Some(own);
            for _ in 0..threads {
                let Some(mut scratch) = spare.take().or_else(Scratch::try_new) else {
                    break;
                };
                if !room_for_worker() {
                    spare = Some(scratch);
                    break;
                }
                let tx = tx.clone();
                let done = &done;
                let worker = move || {
                    if let Some(id) = search(&mut scratch, done) {
                        done.store(true, Ordering::Relaxed);
                        let _ = tx.send(id);
                    }
                };
                if std::thread::Builder::new()
                    .name("zt-keygen".into())
                    .stack_size(WORKER_STACK)
                    .spawn_scoped(s, worker)
                    .is_err()
                {
                    break;
                }
            }
            drop(tx);
            // Every started worker searches until one finds an identity: the channel closes
            // unanswered only if none started.
            match rx.recv() {
                Ok(id) => Some(id),
                Err(_) => {
                    let mut scratch = spare.or_else(Scratch::try_new)?;
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
