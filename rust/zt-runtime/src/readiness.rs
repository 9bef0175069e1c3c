//! A real file descriptor whose readability and writability mirror a user-space socket's, so
//! `select`, `selectors` and asyncio can wait on sockets whose data lives in Rust.
//!
//! It is one end (`user`) of a connected local socket pair ([`local_pair`]: a Unix socket pair,
//! on Windows a loopback TCP pair as Python's `socket.socketpair` makes there, since `select`
//! waits only on sockets); the other end (`control`) stays here:
//! - readable ⇔ a byte waits in `user`'s receive queue (written from `control`, drained from
//!   `user` when the socket stops being readable);
//! - writable ⇔ `user`'s send queue has room (filled up from `user` until the kernel says
//!   `WouldBlock` when the socket stops being writable, drained from `control` to make it
//!   writable again).
//!
//! Nobody else ever reads or writes these descriptors; only their poll state matters.

use std::io::{ErrorKind, Read, Write};
use std::sync::{Mutex, PoisonError};

/// One end of a [`local_pair`].
#[cfg(unix)]
pub type LocalStream = std::os::unix::net::UnixStream;
/// One end of a [`local_pair`].
#[cfg(windows)]
pub type LocalStream = std::net::TcpStream;

/// What `select` and asyncio wait on: a descriptor (Unix) or a socket handle (Windows), as
/// Python's `fileno()` returns them.
#[cfg(unix)]
pub type RawDescriptor = std::os::fd::RawFd;
/// What `select` and asyncio wait on: a descriptor (Unix) or a socket handle (Windows), as
/// Python's `fileno()` returns them.
#[cfg(windows)]
pub type RawDescriptor = std::os::windows::io::RawSocket;

/// The descriptor of one end of a [`local_pair`].
#[must_use]
pub fn raw_descriptor(s: &LocalStream) -> RawDescriptor {
    #[cfg(unix)]
    {
        std::os::fd::AsRawFd::as_raw_fd(s)
    }
    #[cfg(windows)]
    {
        std::os::windows::io::AsRawSocket::as_raw_socket(s)
    }
}

/// Two connected, non-blocking local sockets.
///
/// # Errors
/// The OS refused (descriptor limit; on Windows, no loopback interface).
#[cfg(unix)]
pub fn local_pair() -> std::io::Result<(LocalStream, LocalStream)> {
    let (a, b) = LocalStream::pair()?;
    a.set_nonblocking(true)?;
    b.set_nonblocking(true)?;
    Ok((a, b))
}

/// Two connected, non-blocking local sockets: a loopback TCP connection (Windows has no
/// `socketpair`). The accepted end is checked to be ours: another local program that connects
/// to the short-lived listener first is turned away. Small buffers keep the "not writable"
/// state cheap to reach.
///
/// # Errors
/// The OS refused (no loopback interface, out of sockets).
#[cfg(windows)]
pub fn local_pair() -> std::io::Result<(LocalStream, LocalStream)> {
    use std::net::{Ipv4Addr, TcpListener};
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    let a = LocalStream::connect(listener.local_addr()?)?;
    let want = a.local_addr()?;
    let b = loop {
        let (b, from) = listener.accept()?;
        if from == want {
            break b;
        }
    };
    for s in [&a, &b] {
        s.set_nodelay(true)?;
        s.set_nonblocking(true)?;
        let s = socket2::SockRef::from(s);
        s.set_send_buffer_size(4096)?;
        s.set_recv_buffer_size(4096)?;
    }
    Ok((a, b))
}

/// Readiness state driven from Rust.
///
/// The descriptor is kept up to date only once someone has asked for it ([`Readiness::fd`]):
/// a socket used with blocking calls alone never pays the system calls of mirroring its state.
#[derive(Debug)]
pub struct Readiness {
    user: LocalStream,
    control: LocalStream,
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
        let (user, control) = local_pair()?;
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
    pub fn fd(&self) -> RawDescriptor {
        let mut st = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if !st.armed {
            st.armed = true;
            self.apply(&mut st);
        }
        raw_descriptor(&self.user)
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

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    fn poll(fd: RawDescriptor) -> (bool, bool) {
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
