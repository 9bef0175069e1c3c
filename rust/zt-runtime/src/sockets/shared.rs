//! What application threads and the loop share for one socket of either kind ([`SocketCore`]):
//! its state under a lock, the condition variable its blocked calls wait on, its readiness
//! descriptor and its link to the loop.

use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use super::SockError;
use crate::lead::{Expired, Kick, Waitable, Waiters, wait_on};
use crate::readiness::{RawDescriptor, Readiness};

/// A socket's state as its [`SocketCore`] needs it.
pub(super) trait SocketState {
    /// Whether the socket is (readable, writable), as its readiness descriptor shows.
    fn readiness(&self) -> (bool, bool);

    /// Whether blocked calls waiting for the socket to become readable or writable may go on,
    /// given its `readiness` (by default when it is so).
    fn wake_waiters(&self, readiness: (bool, bool)) -> (bool, bool) {
        readiness
    }

    /// Whether a read returns at once.
    fn recv_ready(&self) -> bool;
}

/// A socket's state `T` as its lock holds it, with what it keeps of the threads waiting for it.
#[derive(Debug)]
pub(super) struct Locked<T> {
    state: T,
    /// Threads waiting on the condition variable.
    waiters: usize,
    /// A leading thread waits for this socket ([`Waiters::leader_waits`]).
    leader_waits: bool,
    /// (readable, writable) for waiters as of the last refresh: they are woken when either
    /// turns true.
    signalled: std::cell::Cell<(bool, bool)>,
}

impl<T> std::ops::Deref for Locked<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.state
    }
}

impl<T> std::ops::DerefMut for Locked<T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.state
    }
}

impl<T> Waiters for Locked<T> {
    fn waiters(&mut self) -> &mut usize {
        &mut self.waiters
    }

    fn leader_waits(&mut self) -> &mut bool {
        &mut self.leader_waits
    }
}

/// A socket's locked state.
pub(super) type Guard<'a, T> = MutexGuard<'a, Locked<T>>;

/// What application threads and the loop share for one socket, around its state `T`.
pub(super) struct SocketCore<T> {
    state: Mutex<Locked<T>>,
    cond: Condvar,
    readiness: Readiness,
    /// The socket's link to its node's loop.
    pub(super) wake: Kick,
}

impl<T: SocketState> SocketCore<T> {
    pub(super) fn new(state: T, wake: Kick) -> std::io::Result<Self> {
        Ok(Self {
            state: Mutex::new(Locked {
                state,
                waiters: 0,
                leader_waits: false,
                signalled: std::cell::Cell::new((false, false)),
            }),
            cond: Condvar::new(),
            readiness: Readiness::new()?,
            wake,
        })
    }

    pub(super) fn lock(&self) -> Guard<'_, T> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The readiness descriptor.
    pub(super) fn fd(&self) -> RawDescriptor {
        self.readiness.fd()
    }

    /// Shows the state `st` (locked now) on the readiness descriptor, and wakes the waiters
    /// when the socket became readable or writable for them: those on the condition variable,
    /// and a leading thread waiting for it to become readable.
    pub(super) fn refresh(&self, st: &Locked<T>) {
        let (readable, writable) = st.readiness();
        self.readiness.set(readable, writable);
        let (r, w) = st.wake_waiters((readable, writable));
        let (was_r, was_w) = st.signalled.replace((r, w));
        if st.waiters > 0 && ((r && !was_r) || (w && !was_w)) {
            self.cond.notify_all();
        }
        if st.leader_waits && r && !was_r {
            self.wake.interrupt();
        }
    }

    /// Changes the state with `change`, then refreshes it and wakes the loop to act on it.
    pub(super) fn change_and_wake(&self, change: impl FnOnce(&mut T)) {
        let mut st = self.lock();
        change(&mut st);
        self.refresh(&st);
        drop(st);
        self.wake.wake();
    }

    /// Waits on the condition variable until woken or `deadline` passes (`WouldBlock`).
    pub(super) fn wait<'a>(
        &'a self,
        st: Guard<'a, T>,
        deadline: Option<Instant>,
    ) -> Result<Guard<'a, T>, SockError> {
        Ok(wait_on(&self.cond, st, deadline)?)
    }

    /// Waits until `ready` holds for the state or `deadline` passes, leading the node's receive
    /// path when it may ([`Waitable::until`]).
    pub(super) fn until<'a>(
        &'a self,
        st: Guard<'a, T>,
        ready: impl Fn(&T) -> bool,
        deadline: Option<Instant>,
    ) -> Result<Guard<'a, T>, Expired> {
        let waitable = Waitable {
            state: &self.state,
            cond: &self.cond,
            kick: &self.wake,
        };
        waitable.until(st, |l| ready(l), deadline)
    }

    /// Waits until a read would not block ([`SocketState::recv_ready`]) or `deadline` passes
    /// (`WouldBlock`). It takes nothing: another thread may take the data first, so read
    /// without blocking and wait again if that finds nothing.
    pub(super) fn wait_readable(&self, deadline: Option<Instant>) -> Result<(), SockError> {
        self.until(self.lock(), T::recv_ready, deadline)
            .map(drop)
            .map_err(SockError::from)
    }
}
