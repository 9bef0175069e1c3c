//! Waiting on several descriptors from any thread: an eventfd to interrupt a waiter, and a
//! readability wait over a few descriptors with a precise deadline (`ppoll`).
//!
//! The runtime's loop thread waits with mio; these serve an application thread that waits for
//! its socket by reading the node's UDP sockets itself (see `Shared::lead` in the runtime).

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Instant;

/// An eventfd: polls readable from [`EventFd::signal`] until [`EventFd::drain`].
#[derive(Debug)]
pub struct EventFd(OwnedFd);

impl EventFd {
    /// A new, unsignalled eventfd (non-blocking, closed on exec).
    ///
    /// # Errors
    /// The OS refused (descriptor limit).
    pub fn new() -> io::Result<Self> {
        // SAFETY: eventfd takes no pointers; it returns a new descriptor or -1.
        #[allow(unsafe_code)]
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just returned by eventfd, is valid and owned by nobody else.
        #[allow(unsafe_code)]
        Ok(Self(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// Makes it readable (a waiter in [`wait_readable`] on it returns).
    pub fn signal(&self) {
        let one: u64 = 1;
        // SAFETY: writes the 8 bytes of `one`, which lives across the call, to our own
        // descriptor. A full counter (EAGAIN) still polls readable, which is all we need.
        #[allow(unsafe_code)]
        let _ = unsafe { libc::write(self.0.as_raw_fd(), (&raw const one).cast(), 8) };
    }

    /// Makes it unreadable again.
    pub fn drain(&self) {
        let mut n: u64 = 0;
        // SAFETY: reads at most 8 bytes into `n`, which lives across the call, from our own
        // non-blocking descriptor (EAGAIN when already drained).
        #[allow(unsafe_code)]
        let _ = unsafe { libc::read(self.0.as_raw_fd(), (&raw mut n).cast(), 8) };
    }

    /// The descriptor, to wait on.
    #[must_use]
    pub fn raw(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

/// Waits until one of `fds` is readable (or in error) or `deadline` passes: `ready[i]` tells
/// whether `fds[i]` is. `Ok(false)`: the deadline passed first.
///
/// # Errors
/// `poll` failed (EINTR included: the caller decides whether to wait again).
pub fn wait_readable(
    fds: &[RawFd],
    ready: &mut [bool],
    deadline: Option<Instant>,
) -> io::Result<bool> {
    let mut p: Vec<libc::pollfd> = fds
        .iter()
        .map(|&fd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    let timeout = match deadline {
        None => None,
        Some(d) => {
            let left = d.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(false);
            }
            Some(libc::timespec {
                tv_sec: libc::time_t::try_from(left.as_secs()).unwrap_or(libc::time_t::MAX),
                tv_nsec: libc::c_long::from(left.subsec_nanos().cast_signed()),
            })
        }
    };
    let ts = timeout
        .as_ref()
        .map_or(std::ptr::null(), std::ptr::from_ref);
    // SAFETY: `p` holds `p.len()` initialised pollfds and `ts` is null or points at a timespec;
    // both outlive the call, and the signal mask pointer is null (the mask is left as it is).
    #[allow(unsafe_code)]
    let n = unsafe {
        libc::ppoll(
            p.as_mut_ptr(),
            p.len() as libc::nfds_t,
            ts,
            std::ptr::null(),
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    for (r, pfd) in ready.iter_mut().zip(&p) {
        *r = pfd.revents != 0;
    }
    Ok(n > 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn an_eventfd_interrupts_a_wait_until_drained() {
        let e = EventFd::new().unwrap();
        let mut ready = [false];
        let soon = Some(Instant::now() + Duration::from_millis(20));
        assert!(!wait_readable(&[e.raw()], &mut ready, soon).unwrap());
        let signaller = std::thread::scope(|s| {
            let h = s.spawn(|| {
                std::thread::sleep(Duration::from_millis(10));
                e.signal();
            });
            let r = wait_readable(&[e.raw()], &mut ready, None).unwrap();
            h.join().unwrap();
            r
        });
        assert!(signaller && ready[0]);
        e.drain();
        let past = Some(Instant::now());
        assert!(!wait_readable(&[e.raw()], &mut ready, past).unwrap());
        assert!(
            !wait_readable(
                &[e.raw()],
                &mut ready,
                Some(Instant::now() + Duration::from_millis(1))
            )
            .unwrap()
        );
    }
}
