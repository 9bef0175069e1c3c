//! Taps on a network's virtual Ethernet: bounded queues of the frames the node delivers.

use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use zt_proto::{Frame, NetworkId};

use crate::queue::{Bounded, wait_until};

/// Frames of one network, for one consumer. When the consumer falls behind, the oldest frames
/// are dropped and counted (like a NIC ring).
#[derive(Debug)]
pub struct FrameTap {
    network: NetworkId,
    inner: Mutex<Bounded<Frame>>,
    cond: Condvar,
}

impl FrameTap {
    /// A tap holding at most `capacity` frames.
    #[must_use]
    pub fn new(network: NetworkId, capacity: usize) -> Self {
        Self {
            network,
            inner: Mutex::new(Bounded::new(capacity)),
            cond: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Bounded<Frame>> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The network tapped.
    #[must_use]
    pub fn network(&self) -> NetworkId {
        self.network
    }

    /// Queues a frame (the runtime calls this).
    pub fn push(&self, f: Frame) {
        let mut q = self.lock();
        if q.push(f) {
            drop(q);
            self.cond.notify_one();
        }
    }

    /// The next frame, waiting up to `timeout` (None = forever). None when the time ran out or
    /// the tap is closed and empty.
    pub fn recv(&self, timeout: Option<Duration>) -> Option<Frame> {
        let deadline = timeout.map(|t| Instant::now() + t);
        let mut q = self.lock();
        loop {
            if let Some(f) = q.items.pop_front() {
                return Some(f);
            }
            if q.closed {
                return None;
            }
            q = wait_until(&self.cond, q, deadline)?;
        }
    }

    /// Frames dropped because the consumer was too slow.
    #[must_use]
    pub fn dropped(&self) -> u64 {
        self.lock().dropped
    }

    /// Ends the tap: receivers get what is queued, then None.
    pub fn close(&self) {
        self.lock().closed = true;
        self.cond.notify_all();
    }

    /// Whether the tap was closed.
    #[must_use]
    pub fn is_closed(&self) -> bool {
        self.lock().closed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use zt_proto::Mac;

    fn frame(n: u8) -> Frame {
        Frame {
            network: NetworkId(1),
            dst: Mac(1),
            src: Mac(2),
            ethertype: 0x0800,
            payload: vec![n],
        }
    }

    #[test]
    fn bounded_with_drop_count_and_close() {
        let t = FrameTap::new(NetworkId(1), 2);
        t.push(frame(1));
        t.push(frame(2));
        t.push(frame(3));
        assert_eq!(t.dropped(), 1);
        assert_eq!(t.recv(Some(Duration::ZERO)).unwrap().payload, [2]);
        t.close();
        assert_eq!(t.recv(None).unwrap().payload, [3]);
        assert!(t.recv(None).is_none());
    }

    #[test]
    fn recv_times_out_and_wakes() {
        let t = std::sync::Arc::new(FrameTap::new(NetworkId(1), 4));
        assert!(t.recv(Some(Duration::from_millis(20))).is_none());
        let t2 = t.clone();
        let h = std::thread::spawn(move || t2.recv(Some(Duration::from_secs(10))));
        std::thread::sleep(Duration::from_millis(20));
        t.push(frame(9));
        assert_eq!(h.join().unwrap().unwrap().payload, [9]);
    }
}
