//! The leader/follower protocol: how a thread that waits for its socket receives for its node.
//!
//! Application threads wait for their sockets here ([`Waitable::until`]). While the node's loop
//! thread is idle, one such thread at a time becomes the node's receiver (the *leader*,
//! [`LoopLink::lead`]): it takes the node's UDP sockets from the loop's poller, waits on them
//! itself, and runs the loop's receive pass on its own thread whenever they are readable, so the
//! data for its socket reaches it with no hand-off from the loop thread. The others (the
//! *followers*) wait on their socket's condition variable, woken by whoever makes it ready; a
//! socket that becomes ready on another thread while the leader waits for it interrupts the
//! leader ([`Kick::interrupt`]). The leader stops when its socket is ready, at its deadline, or
//! when the node stops, and gives the UDP sockets back to the loop.
//!
//! What the loop lends a leader is the [`Lender`] trait, which the runtime implements on its
//! shared state; [`lead`] is the leader's side of the protocol, the same on every node.

use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

/// A wait's deadline passed before the socket was ready.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Expired;

/// Socket state that counts the threads waiting on its condition variable, so that state
/// changes notify (a system call each) only when someone waits: the loop refreshes every
/// socket on each of its passes.
pub(crate) trait Waiters {
    fn waiters(&mut self) -> &mut usize;
    /// A thread leading its node's receive path ([`LoopLink::lead`]) waits for this socket:
    /// readiness that another thread brings must interrupt it.
    fn leader_waits(&mut self) -> &mut bool;
}

/// Waits on `cond` until woken or `deadline` ([`Expired`] once it has passed).
pub(crate) fn wait_on<'a, T: Waiters>(
    cond: &Condvar,
    mut st: MutexGuard<'a, T>,
    deadline: Option<Instant>,
) -> Result<MutexGuard<'a, T>, Expired> {
    let timeout = match deadline {
        None => None,
        Some(d) => {
            let now = Instant::now();
            if now >= d {
                return Err(Expired);
            }
            Some(d - now)
        }
    };
    *st.waiters() += 1;
    let mut st = match timeout {
        None => cond.wait(st).unwrap_or_else(PoisonError::into_inner),
        Some(t) => {
            cond.wait_timeout(st, t)
                .unwrap_or_else(PoisonError::into_inner)
                .0
        }
    };
    *st.waiters() -= 1;
    Ok(st)
}

/// What a wait needs of a socket: its state, its condition variable and its link to the loop.
pub(crate) struct Waitable<'a, T> {
    pub(crate) state: &'a Mutex<T>,
    pub(crate) cond: &'a Condvar,
    pub(crate) kick: &'a Kick,
}

impl<'a, T: Waiters> Waitable<'a, T> {
    /// Waits until `ready` holds for the socket's state or `deadline` passes ([`Expired`]):
    /// as its node's receiving thread when the loop lets it lead (the datagrams for this socket
    /// are then read, decrypted and put into it by this thread: no hand-off from the loop
    /// thread), else on the condition variable, woken by whoever changes the state.
    pub(crate) fn until(
        &self,
        mut st: MutexGuard<'a, T>,
        ready: impl Fn(&T) -> bool,
        deadline: Option<Instant>,
    ) -> Result<MutexGuard<'a, T>, Expired> {
        let lock = || self.state.lock().unwrap_or_else(PoisonError::into_inner);
        while !ready(&st) {
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Err(Expired);
            }
            drop(st);
            // Whether this thread led (and may have marked the socket as waited for by a
            // leader): a thread that could not lead must not unmark it for the one that does.
            let mut asked = false;
            let led = self.kick.lead(
                &mut || {
                    asked = true;
                    let mut st = lock();
                    let r = ready(&st);
                    *st.leader_waits() = !r;
                    r
                },
                deadline,
            );
            st = lock();
            if asked {
                *st.leader_waits() = false;
            }
            if ready(&st) {
                break;
            }
            if led {
                // It stops leading only when ready or at the deadline (checked above).
                continue;
            }
            st = wait_on(self.cond, st, deadline)?;
        }
        Ok(st)
    }
}

/// How a socket reaches its node's loop (what [`Kick`] wraps).
pub trait LoopLink: Send + Sync {
    /// An application thread changed the socket: the loop thread is woken and acts on the
    /// change in its next pass.
    fn wake(&self);

    /// An application thread queued a few bytes to send: it may run the loop's pass itself
    /// when the loop is idle (the bytes go out from this thread); otherwise as [`Self::wake`].
    fn flush(&self) {
        self.wake();
    }

    /// Lets a thread that would wait for its socket read the node's UDP sockets itself until
    /// `ready()` (it returns true), `deadline` passes or the node stops. `ready` is asked before
    /// each wait. `false`: this thread cannot lead now (the loop is busy or another thread
    /// leads): wait on the socket as usual.
    fn lead(&self, ready: &mut dyn FnMut() -> bool, deadline: Option<Instant>) -> bool {
        let _ = (ready, deadline);
        false
    }

    /// A socket that a leading thread waits for became ready on another thread.
    fn interrupt(&self) {}
}

/// How a socket tells its node's loop that an application thread changed it, and lets a
/// thread that waits for it receive for the node ([`LoopLink`]).
///
/// [`Kick::wake`] wakes the loop thread, which acts on the change in its next pass.
/// [`Kick::flush`] is for a few bytes to send: when the loop is idle, the calling thread runs
/// the loop's pass itself (the bytes go out from this thread, without a hand-off to the loop
/// thread and back); when the loop is busy, it wakes it.
#[derive(Clone)]
pub struct Kick(Arc<dyn LoopLink>);

struct FnLink<F>(F);

impl<F: Fn() + Send + Sync> LoopLink for FnLink<F> {
    fn wake(&self) {
        (self.0)();
    }
}

impl Kick {
    /// A kick that calls `f` to wake (and to flush) and never leads.
    pub fn new(f: impl Fn() + Send + Sync + 'static) -> Self {
        Self(Arc::new(FnLink(f)))
    }

    /// A kick over `link`.
    pub fn from_link(link: Arc<dyn LoopLink>) -> Self {
        Self(link)
    }

    /// A kick that does nothing (sockets outside a node, in tests).
    #[must_use]
    pub fn none() -> Self {
        Self::new(|| {})
    }

    pub(crate) fn wake(&self) {
        self.0.wake();
    }

    pub(crate) fn flush(&self) {
        self.0.flush();
    }

    fn lead(&self, ready: &mut dyn FnMut() -> bool, deadline: Option<Instant>) -> bool {
        self.0.lead(ready, deadline)
    }

    pub(crate) fn interrupt(&self) {
        if !LEADING.get() {
            self.0.interrupt();
        }
    }
}

thread_local! {
    /// This thread runs a pass as the leader: a socket it makes ready needs no interrupt (the
    /// leader looks at its socket after each pass).
    static LEADING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `f` as the leading thread's pass (see [`LoopLink::lead`]).
#[cfg(unix)]
fn leading_pass<R>(f: impl FnOnce() -> R) -> R {
    struct Reset;
    impl Drop for Reset {
        fn drop(&mut self) {
            LEADING.set(false);
        }
    }
    LEADING.set(true);
    let _reset = Reset;
    f()
}

impl std::fmt::Debug for Kick {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Kick")
    }
}

/// What a node's loop lends a leading thread; the runtime implements it on its shared state.
#[cfg(unix)]
pub(crate) trait Lender {
    /// Takes the node's UDP sockets from the loop's poller, if the loop is idle and nobody else
    /// leads: the loop's epoch (which a restart of the node changes) and the sockets.
    fn take(&self) -> Option<(u64, Vec<std::os::fd::RawFd>)>;
    /// Runs the loop's receive pass, on this thread, over the sockets `readable` marks.
    fn receive(&self, epoch: u64, readable: &[bool]) -> Pass;
    /// Wakes the loop thread.
    fn wake_loop(&self);
    /// Gives the UDP sockets back to the loop's poller (if `epoch` still runs).
    fn give_back(&self, epoch: u64);
}

/// How a leader's receive pass went.
#[cfg(unix)]
pub(crate) enum Pass {
    /// The loop has nothing to do sooner than it planned: lead on.
    Stay,
    /// The pass left the loop work (a nearer deadline, an event): wake it, and lead on.
    WakeLoop,
    /// The pass failed and the loop ends the node: wake it and stop leading.
    Faulted,
    /// The node stopped (it may run again, with other sockets): stop leading.
    Gone,
}

/// The leader's side: waits for the node's UDP sockets (and `wake`, which interrupts it)
/// instead of its own socket, and runs the loop's receive pass whenever they are readable,
/// until `ready()`, `deadline` or the end of the node. The loop thread stops waiting for the
/// UDP sockets meanwhile (they come back when this thread is done: datagrams that arrive in
/// between wake it then), but keeps its timers and requests. `false`: this thread could not
/// lead (the loop is busy, another thread leads) or stopped for a failure: wait as usual.
#[cfg(unix)]
pub(crate) fn lead(
    lender: &impl Lender,
    wake: &crate::wake::Wake,
    ready: &mut dyn FnMut() -> bool,
    deadline: Option<Instant>,
) -> bool {
    let Some((epoch, mut fds)) = lender.take() else {
        return false;
    };
    let sockets = fds.len();
    fds.push(wake.raw());
    let mut readable = vec![false; fds.len()];
    // Whether it stopped because its socket is ready or at the deadline.
    let done = loop {
        if ready() {
            break true;
        }
        match crate::wake::wait_readable(&fds, &mut readable, deadline) {
            Ok(true) => {}
            Ok(false) => break true,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                log::debug!(target: "zt.node", "leading thread cannot wait: {e}");
                break false;
            }
        }
        if readable[sockets] {
            wake.drain();
        }
        if !readable[..sockets].contains(&true) {
            continue;
        }
        match leading_pass(|| lender.receive(epoch, &readable[..sockets])) {
            Pass::Stay => {}
            Pass::WakeLoop => lender.wake_loop(),
            // The loop ends the node; this thread waits on its socket, which fails then.
            Pass::Faulted => {
                lender.wake_loop();
                break false;
            }
            // Its sockets failed (or will): wait on them as usual.
            Pass::Gone => return false,
        }
    };
    lender.give_back(epoch);
    done
}
