//! The bounded queue each consumer of a node's events ([`crate::events::Subscription`]) and of
//! a network's frames ([`crate::frames::FrameTap`]) reads from.

use std::collections::VecDeque;
use std::sync::{Condvar, MutexGuard, PoisonError};
use std::time::Instant;

/// One consumer's queue: when it is full, the oldest item is dropped and counted (like a NIC
/// ring); once closed, it takes nothing more.
#[derive(Debug)]
pub(crate) struct Bounded<T> {
    pub(crate) items: VecDeque<T>,
    capacity: usize,
    pub(crate) dropped: u64,
    pub(crate) closed: bool,
}

impl<T> Bounded<T> {
    /// An open, empty queue of at most `capacity` items (at least one).
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            items: VecDeque::new(),
            capacity: capacity.max(1),
            dropped: 0,
            closed: false,
        }
    }

    /// Queues `item` unless the queue is closed, dropping the oldest one when it is full;
    /// whether it was queued.
    pub(crate) fn push(&mut self, item: T) -> bool {
        if self.closed {
            return false;
        }
        if self.items.len() >= self.capacity {
            self.items.pop_front();
            self.dropped += 1;
        }
        self.items.push_back(item);
        true
    }
}

/// Waits on `cond` until woken or `deadline` (None: none); None once `deadline` has passed.
pub(crate) fn wait_until<'a, T>(
    cond: &Condvar,
    guard: MutexGuard<'a, T>,
    deadline: Option<Instant>,
) -> Option<MutexGuard<'a, T>> {
    Some(match deadline {
        None => cond.wait(guard).unwrap_or_else(PoisonError::into_inner),
        Some(d) => {
            let left = d.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            cond.wait_timeout(guard, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0
        }
    })
}
