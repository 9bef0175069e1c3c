//! How application threads reach the loop: a socket's kick (a flush may run the loop's pass on
//! the caller's thread while the loop is idle) and the loop's side of the leader/follower
//! protocol ([`crate::lead`]).

use std::sync::Arc;
use std::time::Instant;

use super::{Shared, panic_message};

impl Shared {
    /// An application thread queued a few bytes to send ([`crate::sockets::Kick`]): when the
    /// loop is idle, this thread runs the loop's pass itself, and what it queued goes out now,
    /// without a hand-off to the loop thread. The loop is still woken when the pass left it
    /// something to do sooner than it planned (a nearer deadline, an event, a snapshot to
    /// refresh), or when it is busy (it then sees the change in its next pass).
    fn flush(&self) {
        if let Ok(mut guard) = self.core.try_lock()
            && let Some(core) = guard.as_mut()
            && let Some(parked) = core.parked_until
        {
            let pass =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| core.flush(self, parked)));
            match pass {
                Ok(true) => return,
                Ok(false) => {}
                // The loop ends with it (it checks `fault` when it wakes).
                Err(panic) => core.fault = Some(panic_message(&*panic)),
            }
        }
        self.wake();
    }

    /// An application thread would wait for its socket: while the loop is idle, it leads
    /// the node's receiving instead ([`crate::lead::lead`]). `false`: it cannot: wait as usual.
    ///
    /// Unix only (see [`crate::wake`]); on Windows threads wait as usual and the loop
    /// thread's poller (mio over IOCP) does the receiving.
    #[cfg(not(unix))]
    #[allow(clippy::unused_self)]
    fn lead(&self, _ready: &mut dyn FnMut() -> bool, _deadline: Option<Instant>) -> bool {
        false
    }

    /// See the Windows version above.
    #[cfg(unix)]
    fn lead(&self, ready: &mut dyn FnMut() -> bool, deadline: Option<Instant>) -> bool {
        match &self.lead_wake {
            Some(wake) => crate::lead::lead(self, wake, ready, deadline),
            None => false,
        }
    }

    /// Interrupts the leading thread, if any, to look at its socket again.
    pub(super) fn interrupt_leader(&self) {
        #[cfg(unix)]
        if let Some(w) = &self.lead_wake {
            w.signal();
        }
    }
}

/// What the loop lends a thread that leads the node's receiving (see [`crate::lead`]).
#[cfg(unix)]
impl crate::lead::Lender for Shared {
    fn take(&self) -> Option<(u64, Vec<std::os::fd::RawFd>)> {
        let mut guard = self.core.try_lock().ok()?;
        let core = guard.as_mut()?;
        if core.parked_until.is_none() || core.leading {
            return None;
        }
        if let Err(e) = core.out.udp.deregister(&core.registry) {
            log::debug!(target: "zt.node", "cannot take the UDP sockets from the loop: {e}");
            core.give_back_udp();
            return None;
        }
        core.leading = true;
        Some((core.epoch, core.out.udp.raw_fds()))
    }

    fn receive(&self, epoch: u64, readable: &[bool]) -> crate::lead::Pass {
        use crate::lead::Pass;
        let mut guard = self.lock_core();
        let Some(core) = guard.as_mut().filter(|c| c.epoch == epoch) else {
            return Pass::Gone;
        };
        let pass = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            core.receive(self, readable)
        }));
        match pass {
            Ok(Ok(true)) => Pass::Stay,
            Ok(Ok(false)) => Pass::WakeLoop,
            Ok(Err(e)) => {
                core.fault = Some(format!("receiving: {e}"));
                Pass::Faulted
            }
            Err(panic) => {
                core.fault = Some(panic_message(&*panic));
                Pass::Faulted
            }
        }
    }

    fn wake_loop(&self) {
        self.wake();
    }

    fn give_back(&self, epoch: u64) {
        let mut guard = self.lock_core();
        if let Some(core) = guard.as_mut().filter(|c| c.epoch == epoch) {
            core.leading = false;
            core.give_back_udp();
        }
    }
}

/// How a node's sockets reach its loop.
pub(super) struct Link(pub(super) Arc<Shared>);

impl crate::lead::LoopLink for Link {
    fn wake(&self) {
        self.0.wake();
    }

    fn flush(&self) {
        self.0.flush();
    }

    fn lead(&self, ready: &mut dyn FnMut() -> bool, deadline: Option<Instant>) -> bool {
        self.0.lead(ready, deadline)
    }

    fn interrupt(&self) {
        self.0.interrupt_leader();
    }
}
