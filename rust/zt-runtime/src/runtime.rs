//! One loop thread per node: loads state, drives the sans-IO core, executes its outputs.
//!
//! Lifecycle: `Created → Starting → Running → Stopping → Stopped`, or `Faulted(cause)` when the
//! node cannot start or its thread fails. `start` and `stop` are idempotent and may be called from
//! any thread; a stopped or faulted node can be started again.

use std::collections::{BTreeSet, VecDeque};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::{JoinHandle, ThreadId};
use std::time::{Duration, Instant};

use mio::{Events, Poll, Token, Waker};
use zt_proto::node::{Event, NodeStats, SendError, StoreKey, StoreOp};
use zt_proto::world::WorldUpdateRejected;
use zt_proto::{Identity, Node, World};

use crate::clock::Clock;
use crate::events::{EventHub, NodeEvent, Subscription};
use crate::frames::FrameTap;
use crate::state::{self, LoadOptions, ROOTS_ALIAS};
use crate::store::{Store, StoreError};
use crate::udp::{RECV_BUFFER, UdpSockets};

const WAKE: Token = Token(0);
const FIRST_SOCKET: usize = 1;
const INTERFACE_REFRESH_MS: i64 = 30_000;
/// Longest time the published snapshot lags behind the node while packets flow.
const SNAPSHOT_PERIOD_MS: i64 = 20;
/// Most datagrams per UDP socket that a leading thread reads before it looks at its own socket
/// again ([`Shared::lead`]): a stream of datagrams does not keep it from returning.
#[cfg_attr(not(unix), allow(dead_code))]
const LEAD_BATCH: usize = 64;
/// Refused destinations logged at most (each once); more are only counted.
const REFUSED_LOGGED_MAX: usize = 64;

/// The host's interface addresses (what PUSH_DIRECT_PATHS advertises, with the bound port).
fn interface_addresses() -> Vec<std::net::IpAddr> {
    match if_addrs::get_if_addrs() {
        Ok(list) => list.into_iter().map(|i| i.ip()).collect(),
        Err(e) => {
            log::debug!(target: "zt.node", "cannot list interfaces: {e}");
            Vec::new()
        }
    }
}

/// Where a node is in its life.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Lifecycle {
    /// Built, never started.
    Created,
    /// Loading state and starting the loop.
    Starting,
    /// Running.
    Running,
    /// Shutting down.
    Stopping,
    /// Stopped cleanly.
    Stopped,
    /// Could not start or failed while running; the cause.
    Faulted(String),
}

impl Lifecycle {
    /// A short lowercase name.
    #[must_use]
    pub fn name(&self) -> &'static str {
        match self {
            Self::Created => "created",
            Self::Starting => "starting",
            Self::Running => "running",
            Self::Stopping => "stopping",
            Self::Stopped => "stopped",
            Self::Faulted(_) => "faulted",
        }
    }
}

/// Options of a node's runtime.
#[derive(Debug, Clone)]
pub struct RuntimeOptions {
    /// Identity, planet and protocol choices.
    pub load: LoadOptions,
    /// UDP port (0 = random, as libzt does; zerotier-one uses 9993).
    pub port: u16,
    /// Also bind IPv6.
    pub ipv6: bool,
    /// Send only to these prefixes (None: the `ZT_ALLOWED_DESTINATIONS` environment variable, a
    /// comma-separated prefix list, if set; else anywhere). Test suites use it to guarantee that
    /// no datagram leaves the hosts they control.
    pub allowed_destinations: Option<Vec<crate::udp::IpPrefix>>,
    /// Run the built-in network controller with this database.
    pub controller: Option<ControllerStorage>,
}

/// Where the built-in controller keeps its records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ControllerStorage {
    /// A SQLite file.
    File(std::path::PathBuf),
    /// Memory only (lost at stop).
    Memory,
}

impl Default for RuntimeOptions {
    fn default() -> Self {
        Self {
            load: LoadOptions::default(),
            port: 0,
            ipv6: true,
            allowed_destinations: None,
            controller: None,
        }
    }
}

/// Name of the environment variable holding the destination allow-list.
pub const ALLOWED_DESTINATIONS_ENV: &str = "ZT_ALLOWED_DESTINATIONS";

/// One path of a peer, as reported.
#[derive(Clone, Debug)]
pub struct PathInfo {
    /// Remote endpoint.
    pub remote: std::net::SocketAddr,
    /// Milliseconds since the last authenticated packet on it.
    pub last_receive_ago_ms: i64,
    /// Round-trip latency, if measured.
    pub latency_ms: Option<u32>,
    /// Whether it is alive.
    pub alive: bool,
}

/// A peer, as reported.
#[derive(Clone, Debug)]
pub struct PeerInfo {
    /// Address.
    pub address: zt_proto::Address,
    /// Software version (major, minor, revision), when known.
    pub version: Option<(u8, u8, u16)>,
    /// Protocol version, when known.
    pub protocol: Option<u8>,
    /// Whether it is one of this node's roots.
    pub is_root: bool,
    /// Its paths.
    pub paths: Vec<PathInfo>,
}

/// What the node looks like from outside, refreshed by the loop.
#[derive(Clone, Debug)]
pub struct Snapshot {
    /// The node's identity (with secret).
    pub identity: Identity,
    /// The current planet.
    pub planet: World,
    /// The moons.
    pub moons: Vec<World>,
    /// Core counters.
    pub stats: NodeStats,
    /// Store writes that failed since start.
    pub store_errors: u64,
    /// Datagrams the OS refused to send.
    pub send_errors: u64,
    /// Datagrams not sent because their destination is outside the allowed destinations
    /// (`RuntimeOptions::allowed_destinations` or the environment's list); the first to each
    /// address is logged.
    pub refused_destinations: u64,
    /// SYNs dropped while a listener had no free socket (its backlog full): their clients
    /// retry, as with the kernel's full queues.
    pub syns_dropped: u64,
    /// Whether a root answers (always for a root).
    pub online: bool,
    /// Whether this node is a root of its planet or a moon.
    pub is_root: bool,
    /// The UDP port.
    pub port: u16,
    /// Peers.
    pub peers: Vec<PeerInfo>,
    /// Networks joined (shared: copied from the node only when they change).
    pub networks: Arc<Vec<zt_proto::node::NetworkInfo>>,
    /// Frames delivered while no tap listened.
    pub frames_untapped: u64,
    /// Loop passes run by application threads right after they queued something to send (it
    /// went out from that thread, without a hand-off to the loop thread).
    pub inline_passes: u64,
    /// Passes run by application threads that waited for their socket and read the node's UDP
    /// sockets themselves while the loop was idle (the data reached them without a hand-off).
    pub led_passes: u64,
}

/// Work for the loop thread; it returns the reply, sent once the work's outputs are executed.
type Job = Box<dyn FnOnce(&mut LoopCtx<'_>) -> Box<dyn FnOnce() + Send> + Send>;

/// What a [`NodeRuntime::call`] closure gets on the loop thread.
pub struct LoopCtx<'a> {
    /// The node core.
    pub node: &'a mut Node,
    /// The current time.
    pub now: zt_proto::Timestamp,
    /// The built-in controller, if enabled.
    pub controller: Option<&'a mut crate::controller::ControllerHost>,
    /// The TCP/IP stacks of the configured networks.
    pub stacks: &'a mut crate::stacks::Stacks,
    /// The user-space TCP sockets on those stacks.
    pub sockets: &'a mut crate::sockets::SocketTable,
    /// The user-space UDP sockets.
    pub udp: &'a mut crate::sockets::UdpTable,
}

enum Command {
    /// Stop the loop; `reset`: send the node's TCP peers a reset first.
    Stop {
        reset: bool,
    },
    Call(Job),
    WorldUpdate(Box<World>, mpsc::Sender<Result<(), WorldUpdateRejected>>),
    UserMessage(
        zt_proto::Address,
        u64,
        Vec<u8>,
        mpsc::Sender<Result<(), SendError>>,
    ),
}

/// Error from the runtime API.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RuntimeError {
    /// The node is not running.
    #[error("the node is {0}")]
    NotRunning(&'static str),
    /// The node faulted.
    #[error("the node failed: {0}")]
    Faulted(String),
    /// A wait ran out.
    #[error("timed out waiting for the node")]
    Timeout,
    /// The node stopped before answering.
    #[error("the node stopped before answering")]
    Stopped,
}

struct Control {
    lifecycle: Lifecycle,
    waker: Option<Arc<Waker>>,
    commands: VecDeque<Command>,
    thread: Option<JoinHandle<()>>,
    thread_id: Option<ThreadId>,
    snapshot: Option<Snapshot>,
    /// A reader asked for a snapshot newer than the current one ([`fresh_snapshot`]).
    snapshot_wanted: bool,
    /// Counts snapshots published (readers wait for it to move).
    snapshot_seq: u64,
    /// Incremented by every start, so that a stopper joins only the thread it stopped.
    generation: u64,
}

impl Control {
    fn send(&mut self, cmd: Command) {
        self.commands.push_back(cmd);
        if let Some(w) = &self.waker {
            // A failed wake means the loop is gone; it will not read the command, which the
            // caller notices through the lifecycle.
            let _ = w.wake();
        }
    }
}

struct Shared {
    store: Arc<dyn Store>,
    options: RuntimeOptions,
    hub: EventHub,
    taps: Mutex<Vec<std::sync::Weak<FrameTap>>>,
    control: Mutex<Control>,
    changed: Condvar,
    /// What the loop works on, while it runs. The loop thread holds it except while it waits
    /// for datagrams or its next deadline; then an application thread may take it to send
    /// what it just queued ([`Shared::kick`]).
    core: Mutex<Option<Core>>,
    /// Interrupts an application thread that leads the node's receiving ([`Shared::lead`]).
    #[cfg(unix)]
    lead_wake: Option<crate::signal::Wake>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Control> {
        self.control.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn lock_core(&self) -> MutexGuard<'_, Option<Core>> {
        self.core.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Wakes the loop thread.
    fn wake(&self) {
        let w = self.lock().waker.clone();
        if let Some(w) = w {
            // A failed wake means the loop is gone; so are its sockets.
            let _ = w.wake();
        }
    }

    /// A socket changed on an application thread ([`crate::sockets::Kick`]). For a `flush`,
    /// when the loop is idle, this thread runs the loop's pass itself: what it queued goes out
    /// now, without a hand-off to the loop thread. The loop is still woken when the pass left
    /// it something to do sooner than it planned (a nearer deadline, an event, a snapshot to
    /// refresh), when it is busy (it then sees the change in its next pass), or for a plain
    /// wake.
    fn kick(&self, flush: bool) {
        if flush
            && let Ok(mut guard) = self.core.try_lock()
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

    /// An application thread would wait for its socket: while the loop is idle, it waits for
    /// the node's UDP sockets instead and runs the loop's receive pass itself whenever they
    /// have datagrams, until `ready()`, `deadline` or the end of the node (leader/follower).
    /// The loop thread stops waiting for the UDP sockets meanwhile (they leave its poller and
    /// come back when this thread is done: datagrams that arrive in between wake it then),
    /// but keeps its timers and requests. The data for this thread's socket thus reaches it
    /// with no wake-up of, and no hand-off from, the loop thread. `false`: the loop is busy,
    /// another thread leads, or the poller refused: wait as usual.
    ///
    /// Unix only (see [`crate::signal`]); on Windows threads wait as usual and the loop
    /// thread's poller (mio over IOCP) does the receiving.
    #[cfg(not(unix))]
    #[allow(clippy::unused_self)]
    fn lead(&self, _ready: &mut dyn FnMut() -> bool, _deadline: Option<Instant>) -> bool {
        false
    }

    /// See the Windows version above.
    #[cfg(unix)]
    fn lead(&self, ready: &mut dyn FnMut() -> bool, deadline: Option<Instant>) -> bool {
        let Some(lead_wake) = &self.lead_wake else {
            return false;
        };
        let (epoch, mut fds) = {
            let Ok(mut guard) = self.core.try_lock() else {
                return false;
            };
            let Some(core) = guard.as_mut() else {
                return false;
            };
            if core.parked_until.is_none() || core.leading {
                return false;
            }
            if let Err(e) = core.out.udp.deregister(&core.registry) {
                log::debug!(target: "zt.node", "cannot take the UDP sockets from the loop: {e}");
                core.give_back_udp();
                return false;
            }
            core.leading = true;
            (core.epoch, core.out.udp.raw_fds())
        };
        let sockets = fds.len();
        fds.push(lead_wake.raw());
        let mut readable = vec![false; fds.len()];
        // Whether it stopped because its socket is ready or at the deadline.
        let done = loop {
            if ready() {
                break true;
            }
            match crate::signal::wait_readable(&fds, &mut readable, deadline) {
                Ok(true) => {}
                Ok(false) => break true,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    log::debug!(target: "zt.node", "leading thread cannot wait: {e}");
                    break false;
                }
            }
            if readable[sockets] {
                lead_wake.drain();
            }
            if !readable[..sockets].contains(&true) {
                continue;
            }
            let mut guard = self.lock_core();
            let Some(core) = guard.as_mut().filter(|c| c.epoch == epoch) else {
                // The node stopped (and may run again, with other sockets); its sockets failed
                // (or will: wait on them as usual).
                return false;
            };
            let pass = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                crate::sockets::leading_pass(|| core.receive(self, &readable[..sockets]))
            }));
            let stay = match pass {
                Ok(Ok(stay)) => stay,
                Ok(Err(e)) => {
                    core.fault = Some(format!("receiving: {e}"));
                    false
                }
                Err(panic) => {
                    core.fault = Some(panic_message(&*panic));
                    false
                }
            };
            let faulted = core.fault.is_some();
            drop(guard);
            if !stay {
                self.wake();
            }
            if faulted {
                // The loop ends the node; this thread waits on its socket, which fails then.
                break false;
            }
        };
        let mut guard = self.lock_core();
        if let Some(core) = guard.as_mut().filter(|c| c.epoch == epoch) {
            core.leading = false;
            core.give_back_udp();
        }
        done
    }

    /// Interrupts the leading thread, if any, to look at its socket again.
    fn interrupt_leader(&self) {
        #[cfg(unix)]
        if let Some(w) = &self.lead_wake {
            w.signal();
        }
    }

    /// A snapshot taken after this call began (the loop is asked for one and woken), or the
    /// latest one if the node is not running or does not answer within a second.
    fn fresh_snapshot(&self) -> Option<Snapshot> {
        let mut c = self.lock();
        if c.lifecycle != Lifecycle::Running || c.waker.is_none() {
            return c.snapshot.clone();
        }
        let seq = c.snapshot_seq;
        c.snapshot_wanted = true;
        if let Some(w) = &c.waker {
            let _ = w.wake();
        }
        let deadline = Instant::now() + Duration::from_secs(1);
        while c.snapshot_seq == seq && c.lifecycle == Lifecycle::Running {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            c = self
                .changed
                .wait_timeout(c, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        c.snapshot.clone()
    }

    fn set_lifecycle(&self, l: Lifecycle) {
        let mut c = self.lock();
        c.lifecycle = l;
        if !matches!(c.lifecycle, Lifecycle::Running) {
            c.waker = None;
        }
        self.changed.notify_all();
    }
}

/// Sends a command built around a reply channel and waits for the loop's answer.
fn request<T>(
    shared: &Shared,
    command: impl FnOnce(mpsc::Sender<T>) -> Command,
    timeout: Duration,
) -> Result<T, RuntimeError> {
    let lifecycle = shared.lock().lifecycle.clone();
    if lifecycle != Lifecycle::Running {
        return Err(RuntimeError::NotRunning(lifecycle.name()));
    }
    let (tx, rx) = mpsc::channel();
    shared.lock().send(command(tx));
    match rx.recv_timeout(timeout) {
        Ok(r) => Ok(r),
        Err(mpsc::RecvTimeoutError::Timeout) => Err(RuntimeError::Timeout),
        Err(mpsc::RecvTimeoutError::Disconnected) => Err(RuntimeError::Stopped),
    }
}

fn call<T: Send + 'static>(
    shared: &Shared,
    f: impl FnOnce(&mut LoopCtx<'_>) -> T + Send + 'static,
    timeout: Duration,
) -> Result<T, RuntimeError> {
    request(
        shared,
        move |tx| {
            Command::Call(Box::new(move |ctx: &mut LoopCtx<'_>| {
                let r = f(ctx);
                Box::new(move || {
                    let _ = tx.send(r);
                }) as Box<dyn FnOnce() + Send>
            }))
        },
        timeout,
    )
}

/// How a node's sockets reach its loop.
struct Link(Arc<Shared>);

impl crate::sockets::LoopLink for Link {
    fn kick(&self, flush: bool) {
        self.0.kick(flush);
    }

    fn lead(&self, ready: &mut dyn FnMut() -> bool, deadline: Option<Instant>) -> bool {
        self.0.lead(ready, deadline)
    }

    fn interrupt(&self) {
        self.0.interrupt_leader();
    }
}

/// A shared handle on a running node: snapshots and calls on its loop thread.
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
}

/// A node and its loop thread.
pub struct NodeRuntime {
    shared: Arc<Shared>,
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
                lead_wake: crate::signal::Wake::new().ok(),
            }),
        }
    }

    /// The current lifecycle state.
    #[must_use]
    pub fn lifecycle(&self) -> Lifecycle {
        self.shared.lock().lifecycle.clone()
    }

    /// A subscription to this node's events (from now on).
    ///
    /// # Errors
    /// Out of file descriptors.
    pub fn subscribe(&self, capacity: usize) -> std::io::Result<Arc<Subscription>> {
        self.shared.hub.subscribe(capacity)
    }

    /// The latest snapshot, once the node has run. While packets flow it may lag up to 20 ms
    /// behind the node; [`Self::fresh_snapshot`] does not.
    #[must_use]
    pub fn snapshot(&self) -> Option<Snapshot> {
        self.shared.lock().snapshot.clone()
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

    /// A snapshot taken after this call (a round trip to the loop thread): for counters and
    /// peers read right after something happened.
    #[must_use]
    pub fn fresh_snapshot(&self) -> Option<Snapshot> {
        self.shared.fresh_snapshot()
    }

    /// Starts the node's thread unless it is starting or running; returns at once.
    ///
    /// # Errors
    /// The OS refused to start a thread.
    pub fn start(&self) -> std::io::Result<()> {
        let mut c = self.shared.lock();
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
        let shared = self.shared.clone();
        let handle = std::thread::Builder::new()
            .name("zt-node".into())
            .spawn(move || run(&shared))
            .inspect_err(|_| c.lifecycle = Lifecycle::Faulted("could not start a thread".into()))?;
        c.thread_id = Some(handle.thread().id());
        c.thread = Some(handle);
        self.shared.changed.notify_all();
        Ok(())
    }

    /// Waits until the node is running.
    ///
    /// # Errors
    /// It faulted, stopped, or `timeout` ran out.
    pub fn wait_running(&self, timeout: Option<Duration>) -> Result<(), RuntimeError> {
        let deadline = timeout.map(|t| Instant::now() + t);
        let mut c = self.shared.lock();
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
                    self.shared
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

    fn stop_with(&self, reset: bool) {
        let mut c = self.shared.lock();
        let generation = c.generation;
        match c.lifecycle {
            Lifecycle::Created | Lifecycle::Stopped | Lifecycle::Faulted(_) => return,
            Lifecycle::Starting | Lifecycle::Running => {
                c.lifecycle = Lifecycle::Stopping;
                c.send(Command::Stop { reset });
                self.shared.changed.notify_all();
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

    fn request<T>(
        &self,
        command: impl FnOnce(mpsc::Sender<T>) -> Command,
        timeout: Duration,
    ) -> Result<T, RuntimeError> {
        request(&self.shared, command, timeout)
    }

    /// A cloneable handle for other threads (API servers): snapshots and calls, no lifecycle.
    #[must_use]
    pub fn handle(&self) -> NodeHandle {
        NodeHandle {
            shared: self.shared.clone(),
        }
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

    /// Runs `f` on the loop thread with the node (and controller) and returns its result once
    /// everything it caused is sent and stored.
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

    /// Keeps the loop thread busy for `busy` and returns once it is: a testing aid for
    /// back-pressure (what application threads queue meanwhile waits for the loop).
    ///
    /// # Errors
    /// The node is not running or did not start the stall within 10 s.
    pub fn stall(&self, busy: Duration) -> Result<(), RuntimeError> {
        // The answer is sent as the job starts, not after it (as `call` would).
        request(
            &self.shared,
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
    pub fn tap_frames(
        &self,
        network: zt_proto::network::NetworkId,
        capacity: usize,
    ) -> Arc<FrameTap> {
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
        self.shared.hub.close_all();
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
        self.shared.hub.close_all();
    }
}

/// Failure that ends a loop.
#[derive(Debug, thiserror::Error)]
enum LoopError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Node(#[from] zt_proto::node::NodeError),
    #[error("event loop: {0}")]
    Io(#[from] std::io::Error),
    #[error("cannot bind UDP port {port}: {source}")]
    Bind { port: u16, source: std::io::Error },
    #[error(transparent)]
    Db(#[from] crate::controller_db::DbError),
    /// A pass run on an application thread panicked.
    #[error("{0}")]
    Fault(String),
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    let msg = panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_else(|| "unknown panic".into());
    format!("internal error: {msg}")
}

fn run(shared: &Arc<Shared>) {
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run_loop(shared)));
    // However the loop ended, its node and sockets go (the sockets fail with ENETDOWN).
    let core = shared.lock_core().take();
    drop(core);
    // A thread leading the node's receiving stops waiting for its sockets (now closed).
    shared.interrupt_leader();
    let cause = match outcome {
        Ok(Ok(())) => None,
        Ok(Err(e)) => Some(e.to_string()),
        Err(panic) => Some(panic_message(&*panic)),
    };
    // What readers see of a node that no longer runs: offline, no live path.
    if let Some(snap) = shared.lock().snapshot.as_mut() {
        snap.online = false;
        for path in snap.peers.iter_mut().flat_map(|p| p.paths.iter_mut()) {
            path.alive = false;
        }
    }
    match cause {
        None => {
            shared.set_lifecycle(Lifecycle::Stopped);
            log::info!(target: "zt.node", "node stopped");
        }
        Some(cause) => {
            log::error!(target: "zt.node", "node failed: {cause}");
            shared.hub.publish(&NodeEvent::FatalError {
                message: cause.clone(),
            });
            shared.set_lifecycle(Lifecycle::Faulted(cause));
        }
    }
}

/// The loop's state (what [`Shared::core`] holds while the loop runs).
// Windows has no leading thread: the fields and methods that serve one go unused there.
#[cfg_attr(not(unix), allow(dead_code))]
struct Core {
    node: Node,
    out: Outputs,
    clock: Clock,
    /// Which run of the loop this is (unique in the process): a thread that led the receiving
    /// of an earlier run of a restarted node must not touch this one.
    epoch: u64,
    /// While the loop thread waits: the deadline it waits for.
    parked_until: Option<zt_proto::Timestamp>,
    /// The loop's poller (the UDP sockets leave it while an application thread leads).
    registry: mio::Registry,
    /// An application thread waits for the UDP sockets instead of the loop ([`Shared::lead`]).
    leading: bool,
    /// Where datagrams are read into (by the loop or a leading thread).
    recv_buf: Vec<u8>,
    /// When the snapshot was last rebuilt.
    snapshot_at: zt_proto::Timestamp,
    /// A pass on an application thread panicked: the loop ends with this.
    fault: Option<String>,
}

impl Core {
    /// The next time the loop must run for timers.
    fn deadline(&mut self) -> zt_proto::Timestamp {
        [
            self.out.stacks.poll_at(),
            self.out.sockets.poll_at().map(zt_proto::Timestamp),
        ]
        .into_iter()
        .flatten()
        .fold(self.node.poll_timeout(), Ord::min)
    }

    /// The loop's pass, run by an application thread while the loop waits until `parked`.
    /// Whether the loop may go on waiting (else the caller wakes it).
    fn flush(&mut self, shared: &Shared, parked: zt_proto::Timestamp) -> bool {
        self.out.inline_passes += 1;
        self.settle(shared, parked)
    }

    /// Puts the UDP sockets back into the loop's poller (the loop is woken if datagrams wait).
    /// A poller that refuses ends the loop: it could not receive on them any more.
    #[cfg_attr(not(unix), allow(dead_code))]
    fn give_back_udp(&mut self) {
        if let Err(e) = self.out.udp.register(&self.registry, FIRST_SOCKET) {
            self.fault = Some(format!("cannot watch the UDP sockets again: {e}"));
        }
    }

    /// The leading thread's pass ([`Shared::lead`]): reads the UDP sockets that polled
    /// `readable`, then runs the loop's pass. Whether the loop may go on waiting.
    ///
    /// # Errors
    /// A socket failed as it would fail the loop.
    #[cfg_attr(not(unix), allow(dead_code))]
    fn receive(&mut self, shared: &Shared, readable: &[bool]) -> std::io::Result<bool> {
        self.out.led_passes += 1;
        for (index, _) in readable.iter().enumerate().filter(|(_, r)| **r) {
            self.read_udp(index, LEAD_BATCH)?;
        }
        Ok(match self.parked_until {
            Some(parked) => self.settle(shared, parked),
            None => false,
        })
    }

    /// Hands up to `limit` datagrams queued on UDP socket `index` to the node.
    ///
    /// # Errors
    /// A receive error other than "would block" (it ends the loop).
    fn read_udp(&mut self, index: usize, limit: usize) -> std::io::Result<()> {
        let now = self.clock.now();
        let Self {
            node,
            out,
            recv_buf,
            ..
        } = self;
        out.udp
            .recv_all(index, recv_buf, limit, |local, from, data| {
                node.handle_datagram(now, local, from, data);
            })
    }

    /// Executes the node's outputs after a pass on an application thread; whether the loop
    /// may go on waiting until `parked`.
    fn settle(&mut self, shared: &Shared, parked: zt_proto::Timestamp) -> bool {
        let now = self.clock.now();
        self.out.drain(shared, &mut self.node, now);
        // Packets moved: the snapshot must not lag more than its period behind.
        let next = self.deadline().min(self.snapshot_at + SNAPSHOT_PERIOD_MS);
        !(self.out.events_since_snapshot || self.out.networks_changed) && next >= parked
    }
}

struct Outputs {
    udp: UdpSockets,
    controller: Option<crate::controller::ControllerHost>,
    stacks: crate::stacks::Stacks,
    sockets: crate::sockets::SocketTable,
    datagrams: crate::sockets::UdpTable,
    stacks_dirty: bool,
    /// Network state changed since the snapshot last copied it (events, API calls).
    networks_changed: bool,
    /// An event was emitted since the last snapshot (its receiver may look at the node).
    events_since_snapshot: bool,
    frames_untapped: u64,
    inline_passes: u64,
    led_passes: u64,
    planet_in_roots: bool,
    store_errors: u64,
    send_errors: u64,
    /// Datagrams not sent because their destination is outside the allowed destinations.
    refused_destinations: u64,
    /// Destinations already logged as refused (each is logged once; bounded).
    refused_logged: BTreeSet<std::net::IpAddr>,
    /// Validates new peers' identities off this thread.
    validator: crate::validator::Validator,
}

impl Outputs {
    fn drain(&mut self, shared: &Shared, node: &mut Node, now: zt_proto::Timestamp) {
        loop {
            let mut progress = false;
            while let Some(t) = node.poll_transmit() {
                progress = true;
                match self.udp.send(&t) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                        self.refused_destinations += 1;
                        if self.refused_logged.len() < REFUSED_LOGGED_MAX
                            && self.refused_logged.insert(t.to.ip())
                        {
                            // Info, not a warning: a confined node meets refusals in normal
                            // work (peers advertise addresses it may not use).
                            log::info!(
                                target: "zt.node",
                                "not sending to {}: outside the allowed destinations \
                                 (NodeOptions.allowed_destinations or \
                                 {ALLOWED_DESTINATIONS_ENV}); further refusals are only counted",
                                t.to
                            );
                        }
                    }
                    Err(e) => {
                        self.send_errors += 1;
                        log::trace!(target: "zt.node", "send to {} failed: {e}", t.to);
                    }
                }
            }
            while let Some(ev) = node.poll_event() {
                progress = true;
                self.events_since_snapshot = true;
                self.event(shared, node, now, ev);
            }
            while let Some(op) = node.poll_store() {
                progress = true;
                self.execute(shared, op);
            }
            while let Some(id) = node.poll_identity_check() {
                self.validator.submit(id);
            }
            for (id, valid) in self.validator.results() {
                progress = true;
                node.handle_identity_checked(now, &id, valid);
            }
            while let Some(f) = node.poll_frame() {
                progress = true;
                self.deliver(shared, f);
            }
            if self.stacks_dirty {
                self.stacks_dirty = false;
                self.stacks.sync(node);
            }
            self.sockets.service(&mut self.stacks, now.as_millis());
            self.datagrams.service(&mut self.stacks);
            if self.stacks.poll(node, now) {
                progress = true;
            }
            if self.sockets.service(&mut self.stacks, now.as_millis()) {
                progress = true;
            }
            if self.datagrams.service(&mut self.stacks) {
                progress = true;
            }
            // Closed sockets and changed networks may end or extend multicast memberships.
            if self.datagrams.sync_groups(node, now, &mut self.stacks) {
                progress = true;
                self.networks_changed = true;
            }
            if !progress {
                break;
            }
        }
    }

    fn deliver(&mut self, shared: &Shared, f: zt_proto::node::Frame) {
        let stacked = self.stacks.deliver(&f);
        let taps = shared
            .taps
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .filter_map(std::sync::Weak::upgrade)
            .filter(|t| t.network() == f.network)
            .collect::<Vec<_>>();
        match taps.split_last() {
            None if !stacked => self.frames_untapped += 1,
            None => {}
            Some((last, rest)) => {
                for t in rest {
                    t.push(f.clone());
                }
                last.push(f);
            }
        }
    }

    fn event(&mut self, shared: &Shared, node: &mut Node, now: zt_proto::Timestamp, ev: Event) {
        use crate::events::EventCode as C;
        if matches!(
            ev,
            Event::NetworkStatus { .. }
                | Event::NetworkConfigured { .. }
                | Event::NetworkLeft { .. }
                | Event::NetworkAddressAdded { .. }
                | Event::NetworkAddressRemoved { .. }
        ) {
            self.networks_changed = true;
        }
        let net = |code, network| NodeEvent::Network { code, network };
        let ev = match ev {
            Event::Up { address } => NodeEvent::Up { address },
            Event::PlanetChanged { id, timestamp } => NodeEvent::PlanetChanged { id, timestamp },
            Event::MoonChanged { id, timestamp } => NodeEvent::MoonChanged { id, timestamp },
            Event::Online => NodeEvent::Online,
            Event::Offline => NodeEvent::Offline,
            Event::PathAdded { address, remote } => NodeEvent::PathDiscovered { address, remote },
            Event::PathRemoved { address, remote } => NodeEvent::PathDead { address, remote },
            Event::UserMessage {
                from,
                type_id,
                data,
            } => NodeEvent::UserMessage {
                from,
                type_id,
                data,
            },
            Event::NetworkStatus { network, status } => {
                use zt_proto::node::NetworkStatus as S;
                self.stacks_dirty = true;
                let code = match status {
                    S::RequestingConfiguration => C::NetworkRequestConfig,
                    S::Ok => {
                        // libzt announces readiness per family before OK.
                        let info = node.network(network);
                        let ips = info
                            .as_ref()
                            .and_then(|i| i.config.as_ref())
                            .map(|c| c.static_ips.clone())
                            .unwrap_or_default();
                        if ips.iter().any(|p| p.ip.is_ipv4()) {
                            shared.hub.publish(&net(C::NetworkReadyIp4, network));
                        }
                        if ips.iter().any(|p| p.ip.is_ipv6()) {
                            shared.hub.publish(&net(C::NetworkReadyIp6, network));
                        }
                        C::NetworkOk
                    }
                    S::AccessDenied => C::NetworkAccessDenied,
                    S::NotFound | S::PortError => C::NetworkNotFound,
                    S::ClientTooOld => C::NetworkClientTooOld,
                    S::AuthenticationRequired => C::NetworkAuthenticationRequired,
                };
                net(code, network)
            }
            Event::NetworkConfigured { network } => {
                self.stacks_dirty = true;
                net(C::NetworkUpdate, network)
            }
            Event::NetworkLeft { network } => {
                self.stacks_dirty = true;
                net(C::NetworkDown, network)
            }
            Event::NetworkAddressAdded { network, address } => NodeEvent::Address {
                code: if address.ip.is_ipv4() {
                    C::AddrAddedIp4
                } else {
                    C::AddrAddedIp6
                },
                network,
                address,
            },
            Event::NetworkAddressRemoved { network, address } => NodeEvent::Address {
                code: if address.ip.is_ipv4() {
                    C::AddrRemovedIp4
                } else {
                    C::AddrRemovedIp6
                },
                network,
                address,
            },
            Event::ControllerRequest(req) => {
                match self.controller.as_mut() {
                    Some(c) => c.handle_request(node, now, &req),
                    None => log::debug!(target: "zt.controller", "request without a controller"),
                }
                return;
            }
            other => {
                log::debug!(target: "zt.node", "unhandled core event {other:?}");
                return;
            }
        };
        shared.hub.publish(&ev);
    }

    fn execute(&mut self, shared: &Shared, op: StoreOp) {
        let store = &*shared.store;
        let (key, result) = match op {
            StoreOp::Put { key, data } => {
                let mut r = store.put(&key.path(), &data, key.is_secret());
                if r.is_ok() && key == StoreKey::Planet && self.planet_in_roots {
                    r = store.put(ROOTS_ALIAS, &data, false);
                }
                (key, r)
            }
            StoreOp::Delete { key } => (key, store.delete(&key.path())),
        };
        match result {
            Ok(()) => shared.hub.publish(&NodeEvent::Stored { key }),
            Err(e) => {
                self.store_errors += 1;
                log::error!(target: "zt.store", "could not persist {}: {e}", key.path());
            }
        }
    }
}

/// What the node looks like now. The networks (configs with their credentials) are copied only
/// when they changed; otherwise the `previous` ones are shared.
fn snapshot(
    node: &Node,
    out: &mut Outputs,
    now: zt_proto::Timestamp,
    previous: Option<Arc<Vec<zt_proto::node::NetworkInfo>>>,
) -> Snapshot {
    let networks = match previous {
        Some(p) if !out.networks_changed => p,
        _ => Arc::new(node.networks()),
    };
    out.networks_changed = false;
    let roots = node.upstreams();
    let peers = node
        .peers()
        .map(|p| PeerInfo {
            address: p.identity.address(),
            version: p.version.map(|v| (v.major, v.minor, v.revision)),
            protocol: p.version.map(|v| v.protocol),
            is_root: roots.contains(&p.identity.address()),
            paths: p
                .paths
                .iter()
                .map(|x| PathInfo {
                    remote: x.remote,
                    last_receive_ago_ms: now.since(x.last_receive),
                    latency_ms: x.latency,
                    alive: x.is_alive(now),
                })
                .collect(),
        })
        .collect();
    Snapshot {
        identity: node.identity().clone(),
        planet: node.planet().clone(),
        moons: node.moons().to_vec(),
        stats: node.stats().clone(),
        store_errors: out.store_errors,
        send_errors: out.send_errors,
        refused_destinations: out.refused_destinations,
        syns_dropped: out.stacks.syns_dropped(),
        online: node.is_online(),
        is_root: node.is_root(),
        port: out.udp.port(),
        peers,
        networks,
        frames_untapped: out.frames_untapped,
        inline_passes: out.inline_passes,
        led_passes: out.led_passes,
    }
}

fn run_loop(shared: &Arc<Shared>) -> Result<(), LoopError> {
    let clock = Clock::new();
    // Held until the loop ends: no second node runs on this store meanwhile.
    let _claim = shared.store.lock()?;
    let loaded = state::load(&*shared.store, &shared.options.load)?;
    for key in &loaded.written {
        shared.hub.publish(&NodeEvent::Stored { key: *key });
    }
    let port = shared.options.port;
    let mut udp = UdpSockets::bind(port, shared.options.ipv6)
        .map_err(|source| LoopError::Bind { port, source })?;
    let allowed = match &shared.options.allowed_destinations {
        Some(a) => Some(a.clone()),
        None => match std::env::var(ALLOWED_DESTINATIONS_ENV) {
            Ok(v) => Some(crate::udp::parse_prefixes(&v).map_err(|e| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    format!("{ALLOWED_DESTINATIONS_ENV}: {e}"),
                )
            })?),
            Err(_) => None,
        },
    };
    udp.set_allowed_destinations(allowed);
    let mut node = Node::new(
        loaded.config,
        Box::new(crate::rng::BufferedOsRng::default()),
        clock.now(),
    )?;
    let controller = match &shared.options.controller {
        None => None,
        Some(storage) => {
            let db = match storage {
                ControllerStorage::File(p) => crate::controller_db::ControllerDb::open(p),
                ControllerStorage::Memory => crate::controller_db::ControllerDb::in_memory(),
            }?;
            node.set_controller(true);
            Some(crate::controller::ControllerHost::new(
                db,
                node.identity().clone(),
            ))
        }
    };
    node.set_local_sockets(udp.locals());
    node.set_interface_addresses(interface_addresses());
    let mut interfaces_at = clock.now();
    let mut poll = Poll::new()?;
    let waker = Arc::new(Waker::new(poll.registry(), WAKE)?);
    udp.register(poll.registry(), FIRST_SOCKET)?;
    let mut out = Outputs {
        udp,
        controller,
        stacks: crate::stacks::Stacks::new(
            {
                let mut b = [0u8; 8];
                zt_proto::crypto::SecureRandom::fill(&mut crate::rng::OsRng, &mut b);
                u64::from_le_bytes(b)
            },
            clock,
        ),
        sockets: crate::sockets::SocketTable::default(),
        datagrams: crate::sockets::UdpTable::default(),
        stacks_dirty: true,
        networks_changed: true,
        events_since_snapshot: false,
        frames_untapped: 0,
        inline_passes: 0,
        led_passes: 0,
        planet_in_roots: loaded.planet_in_roots,
        store_errors: 0,
        send_errors: 0,
        refused_destinations: 0,
        refused_logged: BTreeSet::new(),
        validator: crate::validator::Validator::start(waker.clone()),
    };
    log::info!(
        target: "zt.node",
        "node {} running on UDP port {}{}",
        node.address(),
        out.udp.port(),
        if node.is_root() { " as a root" } else { "" }
    );
    // Networks restored from the store are OK in the first snapshot: their stacks exist by
    // then, or a caller of wait_network() could open sockets or ping before they do.
    out.stacks.sync(&node);
    out.stacks_dirty = false;
    let first = snapshot(&node, &mut out, clock.now(), None);
    let mut guard = shared.lock_core();
    *guard = Some(Core {
        node,
        out,
        clock,
        epoch: {
            static RUNS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
            RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        },
        parked_until: None,
        registry: poll.registry().try_clone()?,
        leading: false,
        recv_buf: vec![0u8; RECV_BUFFER],
        snapshot_at: clock.now(),
        fault: None,
    });
    {
        let mut c = shared.lock();
        c.snapshot = Some(first);
        if c.lifecycle == Lifecycle::Starting {
            c.lifecycle = Lifecycle::Running;
        }
        c.waker = Some(waker);
        shared.changed.notify_all();
    }
    let mut events = Events::with_capacity(64);
    let mut stopping = false;
    let mut reset_peers = false;
    while !stopping {
        let Some(core) = guard.as_mut() else {
            return Ok(());
        };
        if let Some(fault) = core.fault.take() {
            return Err(LoopError::Fault(fault));
        }
        let Core { node, out, .. } = core;
        let (commands, snapshot_wanted): (Vec<Command>, bool) = {
            let mut c = shared.lock();
            (
                c.commands.drain(..).collect(),
                std::mem::take(&mut c.snapshot_wanted),
            )
        };
        let had_commands = !commands.is_empty() || snapshot_wanted;
        let mut world_replies = Vec::new();
        let mut send_replies = Vec::new();
        let mut call_replies = Vec::new();
        for cmd in commands {
            match cmd {
                Command::Stop { reset } => {
                    stopping = true;
                    reset_peers = reset;
                }
                Command::Call(job) => {
                    let mut ctx = LoopCtx {
                        node,
                        now: clock.now(),
                        controller: out.controller.as_mut(),
                        stacks: &mut out.stacks,
                        sockets: &mut out.sockets,
                        udp: &mut out.datagrams,
                    };
                    call_replies.push(job(&mut ctx));
                }
                Command::WorldUpdate(world, reply) => {
                    world_replies.push((reply, node.handle_world_update(*world)));
                }
                Command::UserMessage(dest, type_id, data, reply) => {
                    let r = node.send_user_message(clock.now(), dest, type_id, &data);
                    send_replies.push((reply, r));
                }
            }
        }
        if stopping {
            // The node's connections end with it: their peers get a reset now (sent by the
            // drain below) instead of waiting on a silent connection until they time out.
            if reset_peers {
                out.sockets.reset_all(&mut out.stacks);
                out.stacks.poll(node, clock.now());
            }
            node.persist_peers();
        }
        // Outputs are executed and the snapshot refreshed before anyone hears back, so a caller
        // that gets an answer sees its effect.
        out.drain(shared, node, clock.now());
        if !call_replies.is_empty() {
            // A call may have joined, left or subscribed.
            out.networks_changed = true;
        }
        // The snapshot is rebuilt when someone may look at it because of this pass (an answer,
        // an event), when networks changed, and otherwise at most every SNAPSHOT_PERIOD_MS:
        // not on every one of the many passes that only move packets.
        let now = clock.now();
        let snapshot_stale = if had_commands
            || out.networks_changed
            || out.events_since_snapshot
            || now.since(core.snapshot_at) >= SNAPSHOT_PERIOD_MS
        {
            let Core { node, out, .. } = core;
            let previous = shared.lock().snapshot.as_ref().map(|s| s.networks.clone());
            let snap = snapshot(node, out, now, previous);
            let mut c = shared.lock();
            c.snapshot = Some(snap);
            c.snapshot_seq += 1;
            drop(c);
            shared.changed.notify_all();
            out.events_since_snapshot = false;
            core.snapshot_at = now;
            false
        } else {
            true
        };
        for reply in call_replies {
            reply();
        }
        for (reply, result) in world_replies {
            let _ = reply.send(result);
        }
        for (reply, result) in send_replies {
            let _ = reply.send(result);
        }
        if stopping {
            break;
        }
        let mut deadline = core.deadline();
        if snapshot_stale {
            deadline = deadline.min(core.snapshot_at + SNAPSHOT_PERIOD_MS);
        }
        let timeout = clock.until(deadline);
        // Application threads may run passes while the loop waits (`Shared::kick`).
        core.parked_until = Some(deadline);
        drop(guard);
        let polled = poll.poll(&mut events, Some(timeout));
        guard = shared.lock_core();
        if let Err(e) = polled
            && e.kind() != std::io::ErrorKind::Interrupted
        {
            return Err(e.into());
        }
        let Some(core) = guard.as_mut() else {
            return Ok(());
        };
        core.parked_until = None;
        for ev in &events {
            let Some(index) = ev.token().0.checked_sub(FIRST_SOCKET) else {
                continue;
            };
            core.read_udp(index, usize::MAX)?;
        }
        let Core { node, .. } = core;
        let now = clock.now();
        if now.since(interfaces_at) >= INTERFACE_REFRESH_MS {
            node.set_interface_addresses(interface_addresses());
            interfaces_at = now;
        }
        if node.poll_timeout() <= now {
            node.handle_timeout(now);
        }
    }
    drop(guard);
    shared.hub.publish(&NodeEvent::Down);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::{EventCode, RecvError};
    use crate::store::MemoryStore;

    fn runtime() -> (NodeRuntime, Arc<MemoryStore>) {
        let store = Arc::new(MemoryStore::new());
        let rt = NodeRuntime::new(
            store.clone(),
            RuntimeOptions {
                load: LoadOptions {
                    keygen_threads: 1,
                    ..Default::default()
                },
                // Unit tests talk to nobody: the default planet's roots are public hosts.
                allowed_destinations: Some(Vec::new()),
                ..Default::default()
            },
        );
        (rt, store)
    }

    fn codes(sub: &Subscription) -> Vec<EventCode> {
        std::iter::from_fn(|| sub.recv(Some(Duration::from_millis(200))).ok())
            .map(|e| e.code())
            .collect()
    }

    #[test]
    fn lifecycle_start_stop_restart() {
        let (rt, store) = runtime();
        let sub = rt.subscribe(64).unwrap();
        assert_eq!(rt.lifecycle(), Lifecycle::Created);
        rt.stop(); // no-op
        rt.start().unwrap();
        rt.start().unwrap(); // idempotent
        rt.wait_running(Some(Duration::from_secs(30))).unwrap();
        let id = rt.snapshot().unwrap().identity;
        assert!(store.get("identity.secret").unwrap().is_some());
        rt.stop();
        rt.stop();
        assert_eq!(rt.lifecycle(), Lifecycle::Stopped);
        let c = codes(&sub);
        assert_eq!(
            c,
            vec![
                EventCode::StoreIdentitySecret,
                EventCode::StoreIdentityPublic,
                EventCode::NodeUp,
                EventCode::PlanetChanged,
                EventCode::StorePlanet,
                EventCode::NodeDown
            ]
        );
        rt.start().unwrap();
        rt.wait_running(Some(Duration::from_secs(30))).unwrap();
        assert_eq!(
            rt.snapshot().unwrap().identity,
            id,
            "restart reuses the stored identity"
        );
        drop(rt);
        assert!(codes(&sub).contains(&EventCode::NodeDown));
        assert_eq!(sub.try_recv(), Err(RecvError::Closed));
    }

    #[test]
    fn corrupt_store_faults_with_cause() {
        let (rt, store) = runtime();
        store
            .put("identity.secret", b"0123456789:0:zz", true)
            .unwrap();
        let sub = rt.subscribe(8).unwrap();
        rt.start().unwrap();
        let err = rt.wait_running(Some(Duration::from_secs(10))).unwrap_err();
        assert!(
            matches!(err, RuntimeError::Faulted(ref m) if m.contains("identity.secret")),
            "{err}"
        );
        assert!(matches!(rt.lifecycle(), Lifecycle::Faulted(_)));
        assert_eq!(
            sub.recv(Some(Duration::from_secs(1))).unwrap().code(),
            EventCode::NodeFatalError
        );
        assert_eq!(
            store.get("identity.secret").unwrap().unwrap(),
            b"0123456789:0:zz"
        );
    }

    #[test]
    fn concurrent_start_stop_from_threads() {
        let (rt, _) = runtime();
        let rt = Arc::new(rt);
        let (done_tx, done_rx) = mpsc::channel();
        let threads: Vec<_> = (0..8)
            .map(|i| {
                let rt = rt.clone();
                let done = done_tx.clone();
                std::thread::spawn(move || {
                    for _ in 0..25 {
                        if i % 2 == 0 {
                            rt.start().unwrap();
                        } else {
                            rt.stop();
                        }
                    }
                    done.send(()).unwrap();
                })
            })
            .collect();
        // A watchdog rather than a hang: every thread must finish.
        for _ in 0..threads.len() {
            done_rx
                .recv_timeout(Duration::from_secs(120))
                .expect("start/stop deadlocked");
        }
        for t in threads {
            t.join().unwrap();
        }
        rt.stop();
        assert_eq!(rt.lifecycle(), Lifecycle::Stopped);
        rt.start().unwrap();
        rt.wait_running(Some(Duration::from_secs(30))).unwrap();
    }
}
