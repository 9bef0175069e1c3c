//! The node's public handles: [`NodeRuntime`] (lifecycle, subscriptions, snapshots, calls on the
//! loop thread) and [`NodeHandle`] (a clonable handle on a running node).

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, PoisonError, mpsc};
use std::time::{Duration, Instant};

use zt_proto::{SendError, World, WorldUpdateRejected};

use super::{
    Command, Control, Lifecycle, Link, LoopCtx, RuntimeError, RuntimeOptions, Shared, Snapshot,
    call, request, run,
};
use crate::events::{EventHub, Subscription};
use crate::frames::FrameTap;
use crate::store::Store;

/// A shared handle on a running node: snapshots, calls on its loop thread and the typed
/// operations (`ops.rs`).
#[derive(Clone)]
pub struct NodeHandle {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for NodeHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeHandle").finish_non_exhaustive()
    }
}

impl NodeHandle {
    /// What sockets call after an application thread changed state the loop services (socket
    /// buffers): it wakes the loop thread, or runs the loop's pass on the calling thread for a
    /// flush while the loop is idle ([`crate::sockets::Kick`]).
    #[must_use]
    pub fn waker(&self) -> crate::sockets::Kick {
        crate::sockets::Kick::from_link(Arc::new(Link(self.shared.clone())))
    }

    /// The latest snapshot, once the node has run. While packets flow it may lag up to 20 ms
    /// behind the node; [`Self::fresh_snapshot`] does not.
    #[must_use]
    pub fn snapshot(&self) -> Option<Snapshot> {
        self.shared.lock().snapshot.clone()
    }

    /// A snapshot taken after this call (a round trip to the loop thread): for counters and
    /// peers read right after something happened.
    #[must_use]
    pub fn fresh_snapshot(&self) -> Option<Snapshot> {
        self.shared.fresh_snapshot()
    }

    /// As [`NodeRuntime::call`].
    ///
    /// # Errors
    /// The node is not running or did not answer in time.
    pub fn call<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut LoopCtx<'_>) -> T + Send + 'static,
        timeout: Duration,
    ) -> Result<T, RuntimeError> {
        call(&self.shared, f, timeout)
    }

    /// The number of the latest snapshot (it grows by one with each published snapshot).
    #[must_use]
    pub fn snapshot_seq(&self) -> u64 {
        self.shared.lock().snapshot_seq
    }

    /// Waits until a snapshot newer than number `seq` is published, `timeout` passes, or the
    /// node is neither starting nor running; the latest number. For waiting on a change of
    /// state (a network becoming OK) without polling.
    #[must_use]
    pub fn wait_snapshot_after(&self, seq: u64, timeout: Duration) -> u64 {
        let deadline = Instant::now() + timeout;
        let mut c = self.shared.lock();
        while c.snapshot_seq == seq
            && matches!(c.lifecycle, Lifecycle::Starting | Lifecycle::Running)
        {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            c = self
                .shared
                .changed
                .wait_timeout(c, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        c.snapshot_seq
    }

    /// Offers a newer revision of the planet or of a held moon.
    ///
    /// # Errors
    /// The node is not running, or the update was refused (the inner error says why).
    pub fn update_world(
        &self,
        world: World,
        timeout: Duration,
    ) -> Result<Result<(), WorldUpdateRejected>, RuntimeError> {
        self.request(|tx| Command::WorldUpdate(Box::new(world), tx), timeout)
    }

    /// Sends a USER_MESSAGE to `dest` (queued while its identity is looked up).
    ///
    /// # Errors
    /// The node is not running, or the message cannot be sent (the inner error says why).
    pub fn send_user_message(
        &self,
        dest: zt_proto::Address,
        type_id: u64,
        data: Vec<u8>,
        timeout: Duration,
    ) -> Result<Result<(), SendError>, RuntimeError> {
        self.request(|tx| Command::UserMessage(dest, type_id, data, tx), timeout)
    }

    pub(super) fn request<T>(
        &self,
        command: impl FnOnce(mpsc::Sender<T>) -> Command,
        timeout: Duration,
    ) -> Result<T, RuntimeError> {
        request(&self.shared, command, timeout)
    }
}

/// A node and its loop thread.
///
/// It dereferences to its [`NodeHandle`]: snapshots, calls and the typed operations
/// ([`NodeHandle::join`], [`NodeHandle::tcp_connect`], …) work on it directly.
pub struct NodeRuntime {
    handle: NodeHandle,
}

impl std::ops::Deref for NodeRuntime {
    type Target = NodeHandle;

    fn deref(&self) -> &NodeHandle {
        &self.handle
    }
}

impl std::fmt::Debug for NodeRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeRuntime")
            .field("lifecycle", &self.lifecycle())
            .finish()
    }
}

impl NodeRuntime {
    /// A node over `store`, not yet started.
    #[must_use]
    pub fn new(store: Arc<dyn Store>, options: RuntimeOptions) -> Self {
        let control = Control {
            lifecycle: Lifecycle::Created,
            waker: None,
            commands: VecDeque::new(),
            thread: None,
            thread_id: None,
            snapshot: None,
            snapshot_wanted: false,
            snapshot_seq: 0,
            generation: 0,
        };
        Self {
            handle: NodeHandle {
                shared: Arc::new(Shared {
                    store,
                    options,
                    hub: EventHub::default(),
                    taps: Mutex::new(Vec::new()),
                    control: Mutex::new(control),
                    changed: Condvar::new(),
                    core: Mutex::new(None),
                    // Without it (descriptor limit), threads wait for their sockets as usual.
                    #[cfg(unix)]
                    lead_wake: crate::wake::Wake::new().ok(),
                }),
            },
        }
    }

    /// The current lifecycle state.
    #[must_use]
    pub fn lifecycle(&self) -> Lifecycle {
        self.handle.shared.lock().lifecycle.clone()
    }

    /// A subscription to this node's events (from now on).
    ///
    /// # Errors
    /// Out of file descriptors.
    pub fn subscribe(&self, capacity: usize) -> std::io::Result<Arc<Subscription>> {
        self.handle.shared.hub.subscribe(capacity)
    }

    /// Starts the node's thread unless it is starting or running; returns at once.
    ///
    /// # Errors
    /// The OS refused to start a thread.
    pub fn start(&self) -> std::io::Result<()> {
        let mut c = self.handle.shared.lock();
        loop {
            match c.lifecycle {
                Lifecycle::Starting | Lifecycle::Running => return Ok(()),
                Lifecycle::Stopping => {
                    c = self
                        .shared
                        .changed
                        .wait(c)
                        .unwrap_or_else(PoisonError::into_inner);
                }
                Lifecycle::Created | Lifecycle::Stopped | Lifecycle::Faulted(_) => break,
            }
        }
        if let Some(old) = c.thread.take() {
            // The old loop has ended (its state is final); reap it.
            let _ = old.join();
        }
        c.commands.clear();
        c.generation += 1;
        c.lifecycle = Lifecycle::Starting;
        let shared = self.handle.shared.clone();
        let handle = std::thread::Builder::new()
            .name("zt-node".into())
            .spawn(move || run(&shared))
            .inspect_err(|_| c.lifecycle = Lifecycle::Faulted("could not start a thread".into()))?;
        c.thread_id = Some(handle.thread().id());
        c.thread = Some(handle);
        self.handle.shared.changed.notify_all();
        Ok(())
    }

    /// Waits until the node is running.
    ///
    /// # Errors
    /// It faulted, stopped, or `timeout` ran out.
    pub fn wait_running(&self, timeout: Option<Duration>) -> Result<(), RuntimeError> {
        let deadline = timeout.map(|t| Instant::now() + t);
        let mut c = self.handle.shared.lock();
        loop {
            match &c.lifecycle {
                Lifecycle::Running => return Ok(()),
                Lifecycle::Faulted(cause) => return Err(RuntimeError::Faulted(cause.clone())),
                Lifecycle::Starting => {}
                other => return Err(RuntimeError::NotRunning(other.name())),
            }
            c = match deadline {
                None => self
                    .shared
                    .changed
                    .wait(c)
                    .unwrap_or_else(PoisonError::into_inner),
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Err(RuntimeError::Timeout);
                    }
                    self.handle
                        .shared
                        .changed
                        .wait_timeout(c, left)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0
                }
            };
        }
    }

    /// Stops the node and waits for its thread to finish (unless called from that thread).
    /// Does nothing if it is not starting or running.
    pub fn stop(&self) {
        self.stop_with(true);
    }

    /// As [`stop`](Self::stop), but the node's TCP peers are not told (no reset): they see
    /// the node vanish, as when its process is killed. For tests of what a peer does then.
    pub fn stop_silently(&self) {
        self.stop_with(false);
    }

    pub(super) fn stop_with(&self, reset: bool) {
        let mut c = self.handle.shared.lock();
        let generation = c.generation;
        match c.lifecycle {
            Lifecycle::Created | Lifecycle::Stopped | Lifecycle::Faulted(_) => return,
            Lifecycle::Starting | Lifecycle::Running => {
                c.lifecycle = Lifecycle::Stopping;
                c.send(Command::Stop { reset });
                self.handle.shared.changed.notify_all();
            }
            Lifecycle::Stopping => {}
        }
        if c.thread_id == Some(std::thread::current().id()) {
            return;
        }
        while matches!(c.lifecycle, Lifecycle::Stopping) && c.generation == generation {
            c = self
                .shared
                .changed
                .wait(c)
                .unwrap_or_else(PoisonError::into_inner);
        }
        if c.generation != generation {
            // Restarted meanwhile: the starter reaped the thread this call stopped.
            return;
        }
        let thread = c.thread.take();
        drop(c);
        if let Some(t) = thread {
            let _ = t.join();
        }
    }

    /// A cloneable handle for other threads (API servers): snapshots and calls, no lifecycle.
    #[must_use]
    pub fn handle(&self) -> NodeHandle {
        self.handle.clone()
    }

    /// Keeps the loop thread busy for `busy` and returns once it is: a testing aid for
    /// back-pressure (what application threads queue meanwhile waits for the loop).
    ///
    /// # Errors
    /// The node is not running or did not start the stall within 10 s.
    pub fn stall(&self, busy: Duration) -> Result<(), RuntimeError> {
        // The answer is sent as the job starts, not after it (as `call` would).
        request(
            &self.handle.shared,
            move |started| {
                Command::Call(Box::new(move |_: &mut LoopCtx<'_>| {
                    let _ = started.send(());
                    std::thread::sleep(busy);
                    Box::new(|| {}) as Box<dyn FnOnce() + Send>
                }))
            },
            Duration::from_secs(10),
        )
    }

    /// A tap receiving the frames the node delivers on `network` (dropped with the tap).
    #[must_use]
    pub fn tap_frames(&self, network: zt_proto::NetworkId, capacity: usize) -> Arc<FrameTap> {
        let tap = Arc::new(FrameTap::new(network, capacity));
        let mut taps = self
            .shared
            .taps
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        taps.retain(|w| w.strong_count() > 0);
        taps.push(Arc::downgrade(&tap));
        tap
    }

    /// Ends every event subscription (after a final stop).
    pub fn close_events(&self) {
        self.handle.shared.hub.close_all();
        for t in self
            .shared
            .taps
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .filter_map(std::sync::Weak::upgrade)
        {
            t.close();
        }
    }
}

impl Drop for NodeRuntime {
    fn drop(&mut self) {
        self.stop();
        self.handle.shared.hub.close_all();
    }
}
