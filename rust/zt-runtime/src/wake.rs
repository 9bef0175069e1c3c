//! Waiting on several descriptors from any thread: a wake to interrupt a waiter, and a
//! readability wait over a few descriptors with a deadline.
//!
//! The runtime's loop thread waits with mio; these serve an application thread that waits for
//! its socket by reading the node's UDP sockets itself (see `lead.rs`).
//!
//! Linux has an eventfd and `ppoll` (a deadline to the nanosecond). Other Unix systems (macOS,
//! the BSDs) get the same through a socket pair and `poll` (a deadline rounded up to the next
//! millisecond); both are built and tested on Linux. Windows has neither: its threads wait for
//! their sockets as usual while the loop thread's IOCP poller receives.

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::time::{Duration, Instant};

#[cfg(target_os = "linux")]
pub use self::linux::Wake;
#[cfg(target_os = "linux")]
use self::linux::poll as os_poll;
#[cfg(not(target_os = "linux"))]
pub use self::unix::Wake;
#[cfg(not(target_os = "linux"))]
use self::unix::poll as os_poll;

/// Waits until one of `fds` is readable (or in error) or `deadline` passes: `ready[i]` tells
/// whether `fds[i]` is. `Ok(false)`: the deadline passed first. On Linux the deadline holds to
/// the nanosecond; elsewhere the wait ends at the first whole millisecond at or after it
/// (never before it).
///
/// # Errors
/// `poll` failed (EINTR included: the caller decides whether to wait again).
pub fn wait_readable(
    fds: &[RawFd],
    ready: &mut [bool],
    deadline: Option<Instant>,
) -> io::Result<bool> {
    wait_with(os_poll, fds, ready, deadline)
}

/// One platform's poll over `p` for at most the time given (None: no limit): the number of
/// ready descriptors, or a negative number with errno set.
type Poll = fn(&mut [libc::pollfd], Option<Duration>) -> libc::c_int;

/// [`wait_readable`] with this platform's `poll`.
fn wait_with(
    poll: Poll,
    fds: &[RawFd],
    ready: &mut [bool],
    deadline: Option<Instant>,
) -> io::Result<bool> {
    let mut p = pollfds(fds);
    let Some(left) = time_left(deadline) else {
        return Ok(false);
    };
    let n = poll(&mut p, left);
    read_back(n, &p, ready)
}

/// One `pollfd` asking for readability per descriptor.
fn pollfds(fds: &[RawFd]) -> Vec<libc::pollfd> {
    fds.iter()
        .map(|&fd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        })
        .collect()
}

/// How long a wait until `deadline` may last: `Some(None)` without a deadline, `None` once it
/// has passed (the wait is over before it starts).
fn time_left(deadline: Option<Instant>) -> Option<Option<Duration>> {
    match deadline {
        None => Some(None),
        Some(d) => {
            let left = d.saturating_duration_since(Instant::now());
            (!left.is_zero()).then_some(Some(left))
        }
    }
}

/// The result of a poll that returned `n` over `p`: which descriptors are ready, and whether
/// any is.
fn read_back(n: libc::c_int, p: &[libc::pollfd], ready: &mut [bool]) -> io::Result<bool> {
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    for (r, pfd) in ready.iter_mut().zip(p) {
        *r = pfd.revents != 0;
    }
    Ok(n > 0)
}

#[cfg(target_os = "linux")]
mod linux {
    use super::{AsRawFd, Duration, RawFd, io};
    use std::os::fd::{FromRawFd, OwnedFd};

    /// An eventfd: polls readable from [`Wake::signal`] until [`EventFd::drain`].
    #[derive(Debug)]
    pub struct Wake(OwnedFd);

    impl Wake {
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

    /// `ppoll` over `p` for at most `left` (to the nanosecond).
    #[allow(unsafe_code)]
    pub(super) fn poll(p: &mut [libc::pollfd], left: Option<Duration>) -> libc::c_int {
        let timeout = left.map(|left| libc::timespec {
            tv_sec: libc::time_t::try_from(left.as_secs()).unwrap_or(libc::time_t::MAX),
            tv_nsec: libc::c_long::from(left.subsec_nanos().cast_signed()),
        });
        let ts = timeout
            .as_ref()
            .map_or(std::ptr::null(), std::ptr::from_ref);
        // SAFETY: `p` holds `p.len()` initialised pollfds and `ts` is null or points at a timespec;
        // both outlive the call, and the signal mask pointer is null (the mask is left as it is).
        unsafe {
            libc::ppoll(
                p.as_mut_ptr(),
                p.len() as libc::nfds_t,
                ts,
                std::ptr::null(),
            )
        }
    }
}

/// The same for Unix systems without eventfd and `ppoll`.
#[cfg(any(not(target_os = "linux"), test))]
#[cfg_attr(target_os = "linux", allow(unreachable_pub))]
mod unix {
    use super::{AsRawFd, Duration, RawFd, io};
    use std::io::{Read, Write};
    use std::os::unix::net::UnixStream;

    /// A socket pair: polls readable from [`Wake::signal`] until [`Wake::drain`].
    #[derive(Debug)]
    pub struct Wake {
        rx: UnixStream,
        tx: UnixStream,
    }

    impl Wake {
        /// A new, unsignalled wake (non-blocking).
        ///
        /// # Errors
        /// The OS refused (descriptor limit).
        pub fn new() -> io::Result<Self> {
            let (rx, tx) = UnixStream::pair()?;
            rx.set_nonblocking(true)?;
            tx.set_nonblocking(true)?;
            Ok(Self { rx, tx })
        }

        /// Makes it readable. A full pair (EAGAIN) is readable already.
        pub fn signal(&self) {
            let _ = (&self.tx).write(&[1]);
        }

        /// Makes it unreadable again.
        pub fn drain(&self) {
            let mut buf = [0u8; 64];
            while matches!((&self.rx).read(&mut buf), Ok(n) if n > 0) {}
        }

        /// The descriptor, to wait on.
        #[must_use]
        pub fn raw(&self) -> RawFd {
            self.rx.as_raw_fd()
        }
    }

    /// `poll` over `p` for at most `left`, rounded up to whole milliseconds (the wait never
    /// ends before the deadline).
    #[allow(unsafe_code)]
    pub(super) fn poll(p: &mut [libc::pollfd], left: Option<Duration>) -> libc::c_int {
        let timeout: libc::c_int = left.map_or(-1, |left| {
            let ms = left.as_nanos().div_ceil(1_000_000);
            libc::c_int::try_from(ms).unwrap_or(libc::c_int::MAX)
        });
        // SAFETY: `p` holds `p.len()` initialised pollfds that outlive the call.
        unsafe { libc::poll(p.as_mut_ptr(), p.len() as libc::nfds_t, timeout) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_wake_interrupts_a_wait_until_drained() {
        the_wake_interrupts_a_wait_until_drained(&Wake::new().unwrap(), wait_readable);
    }

    /// The portable version, built and run on Linux too.
    #[cfg(target_os = "linux")]
    #[test]
    fn the_portable_wake_interrupts_a_wait_until_drained() {
        the_wake_interrupts_a_wait_until_drained(&unix::Wake::new().unwrap(), |f, r, d| {
            wait_with(unix::poll, f, r, d)
        });
    }

    trait AWake: Sync {
        fn signal(&self);
        fn drain(&self);
        fn raw(&self) -> RawFd;
    }

    impl AWake for Wake {
        fn signal(&self) {
            Wake::signal(self);
        }
        fn drain(&self) {
            Wake::drain(self);
        }
        fn raw(&self) -> RawFd {
            Wake::raw(self)
        }
    }

    #[cfg(target_os = "linux")]
    impl AWake for unix::Wake {
        fn signal(&self) {
            unix::Wake::signal(self);
        }
        fn drain(&self) {
            unix::Wake::drain(self);
        }
        fn raw(&self) -> RawFd {
            unix::Wake::raw(self)
        }
    }

    type Wait = fn(&[RawFd], &mut [bool], Option<Instant>) -> io::Result<bool>;

    fn the_wake_interrupts_a_wait_until_drained(e: &dyn AWake, wait_readable: Wait) {
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
