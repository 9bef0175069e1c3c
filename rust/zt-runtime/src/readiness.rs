//! A real file descriptor whose readability and writability mirror a user-space socket's, so
//! `select`, `selectors` and asyncio can wait on sockets whose data lives in Rust.
//!
//! It is one end (`user`) of a Unix socket pair; the other end (`control`) stays here:
//! - readable ⇔ a byte waits in `user`'s receive queue (written from `control`, drained from
//!   `user` when the socket stops being readable);
//! - writable ⇔ `user`'s send queue has room (filled up from `user` until the kernel says
//!   `WouldBlock` when the socket stops being writable, drained from `control` to make it
//!   writable again).
//!
//! Nobody else ever reads or writes these descriptors; only their poll state matters.

use std::io::{ErrorKind, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::{Mutex, PoisonError};

/// Readiness state driven from Rust.
///
/// The descriptor is kept up to date only once someone has asked for it ([`Readiness::fd`]):
/// a socket used with blocking calls alone never pays the system calls of mirroring its state.
#[derive(Debug)]
pub struct Readiness {
    user: UnixStream,
    control: UnixStream,
    state: Mutex<State>,
}

#[derive(Debug, Clone, Copy)]
struct State {
    /// `fd()` was called: the descriptor must mirror `want`.
    armed: bool,
    /// (readable, writable) as the socket is.
    want: (bool, bool),
    /// (readable, writable) as the descriptor polls.
    have: (bool, bool),
}

const FILL: [u8; 4096] = [0; 4096];

impl Readiness {
    /// A fresh pair, neither readable nor writable.
    ///
    /// # Errors
    /// The socket pair could not be created.
    pub fn new() -> std::io::Result<Self> {
        let (user, control) = UnixStream::pair()?;
        user.set_nonblocking(true)?;
        control.set_nonblocking(true)?;
        Ok(Self {
            user,
            control,
            // A new pair polls writable and not readable.
            state: Mutex::new(State {
                armed: false,
                want: (false, false),
                have: (false, true),
            }),
        })
    }

    /// The descriptor to hand to `select`/`poll`/asyncio (never read or written by users).
    /// From the first call on, it mirrors the socket's state.
    #[must_use]
    pub fn fd(&self) -> RawFd {
        let mut st = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if !st.armed {
            st.armed = true;
            self.apply(&mut st);
        }
        self.user.as_raw_fd()
    }

    /// Sets what the socket is; the descriptor follows when it is in use.
    pub fn set(&self, readable: bool, writable: bool) {
        let mut st = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        st.want = (readable, writable);
        if st.armed {
            self.apply(&mut st);
        }
    }

    fn apply(&self, st: &mut State) {
        let (readable, writable) = st.want;
        if st.have.0 != readable {
            if readable {
                let _ = (&self.control).write(&[1]);
            } else {
                let mut buf = [0u8; 64];
                while matches!((&self.user).read(&mut buf), Ok(n) if n > 0) {}
            }
            st.have.0 = readable;
        }
        if st.have.1 != writable {
            if writable {
                let mut buf = [0u8; 4096];
                loop {
                    match (&self.control).read(&mut buf) {
                        Ok(n) if n > 0 => {}
                        Err(e) if e.kind() == ErrorKind::Interrupted => {}
                        _ => break,
                    }
                }
            } else {
                loop {
                    match (&self.user).write(&FILL) {
                        Ok(n) if n > 0 => {}
                        Err(e) if e.kind() == ErrorKind::Interrupted => {}
                        _ => break,
                    }
                }
            }
            st.have.1 = writable;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn poll(fd: RawFd) -> (bool, bool) {
        let mut p = libc::pollfd {
            fd,
            events: libc::POLLIN | libc::POLLOUT,
            revents: 0,
        };
        // SAFETY: `p` is a valid, initialised pollfd that outlives the call; nfds is 1.
        #[allow(unsafe_code)]
        let n = unsafe { libc::poll(&mut p, 1, 0) };
        assert!(n >= 0);
        (
            p.revents & libc::POLLIN != 0,
            p.revents & libc::POLLOUT != 0,
        )
    }

    #[test]
    fn the_descriptor_follows_once_in_use() {
        let r = Readiness::new().unwrap();
        r.set(true, true);
        r.set(true, false);
        // Armed by fd(): the latest state, whatever came before.
        assert_eq!(poll(r.fd()), (true, false));
        r.set(false, true);
        assert_eq!(poll(r.fd()), (false, true));
    }

    #[test]
    fn every_combination_is_reachable() {
        let r = Readiness::new().unwrap();
        assert_eq!(poll(r.fd()), (false, false));
        for (rd, wr) in [
            (true, false),
            (true, true),
            (false, true),
            (false, false),
            (true, true),
        ] {
            r.set(rd, wr);
            assert_eq!(poll(r.fd()), (rd, wr), "state {rd} {wr}");
        }
    }
}
