//! One loop thread per node: loads state, drives the sans-IO core, executes its outputs.
//!
//! Lifecycle: `Created → Starting → Running → Stopping → Stopped`, or `Faulted(cause)` when the
//! node cannot start or its thread fails. `start` and `stop` are idempotent and may be called from
//! any thread; a stopped or faulted node can be started again.

use std::collections::VecDeque;
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::{JoinHandle, ThreadId};
use std::time::{Duration, Instant};

use mio::{Token, Waker};
use zt_proto::{Node, SendError, World, WorldUpdateRejected};

use crate::events::EventHub;
use crate::frames::FrameTap;
use crate::state::LoadOptions;
use crate::store::Store;

mod core;
mod event_loop;
mod handle;
mod link;
mod ops;
mod snapshot;
#[cfg(test)]
mod tests;

use self::core::Core;
use event_loop::{panic_message, run};
pub use handle::{NodeHandle, NodeRuntime};
use link::Link;
pub use ops::{MAX_PING_SIZE, OP_TIMEOUT, OpError, PingError};
use snapshot::build_snapshot;
pub use snapshot::{PathInfo, PeerInfo, Snapshot};

const WAKE: Token = Token(0);
const FIRST_SOCKET: usize = 1;
const INTERFACE_REFRESH_MS: i64 = 30_000;
/// Longest time the published snapshot lags behind the node while packets flow.
const SNAPSHOT_PERIOD_MS: i64 = 20;
/// Most datagrams per UDP socket that a leading thread reads before it looks at its own socket
/// again ([`crate::lead`]): a stream of datagrams does not keep it from returning.
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
    pub allowed_destinations: Option<Vec<crate::underlay::IpPrefix>>,
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
    pub stacks: &'a mut zt_stack::Stacks,
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
    /// what it just queued (`Shared::flush` in `link.rs`).
    core: Mutex<Option<Core>>,
    /// Interrupts an application thread that leads the node's receiving ([`crate::lead`]).
    #[cfg(unix)]
    lead_wake: Option<crate::wake::Wake>,
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
