//! The loop thread: set up a node (store, sockets, poller), then turn until it stops.

use std::collections::BTreeSet;
use std::sync::Arc;

use mio::{Events, Poll, Waker};
use zt_proto::Node;

use super::core::{Core, LoopState};
use super::{
    ALLOWED_DESTINATIONS_ENV, Command, ControllerStorage, FIRST_SOCKET, INTERFACE_REFRESH_MS,
    Lifecycle, LoopCtx, SNAPSHOT_PERIOD_MS, Shared, Snapshot, WAKE, build_snapshot,
    interface_addresses,
};
use crate::clock::Clock;
use crate::events::NodeEvent;
use crate::state;
use crate::store::StoreError;
use crate::underlay::{RECV_BUFFER, UdpSockets};

/// Failure that ends a loop.
#[derive(Debug, thiserror::Error)]
pub(super) enum LoopError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Node(#[from] zt_proto::NodeError),
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

pub(super) fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    let msg = panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_else(|| "unknown panic".into());
    format!("internal error: {msg}")
}

pub(super) fn run(shared: &Arc<Shared>) {
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

pub(super) fn run_loop(shared: &Arc<Shared>) -> Result<(), LoopError> {
    // Held until the loop ends: no second node runs on this store meanwhile.
    let _claim = shared.store.lock()?;
    let (core, mut poll, waker, first) = setup(shared)?;
    let mut guard = shared.lock_core();
    *guard = Some(core);
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
    loop {
        let Some(core) = guard.as_mut() else {
            return Ok(());
        };
        if let Some(fault) = core.fault.take() {
            return Err(LoopError::Fault(fault));
        }
        let Turn::Wait { snapshot_stale } = core.turn(shared) else {
            break;
        };
        let mut deadline = core.deadline();
        if snapshot_stale {
            deadline = deadline.min(core.snapshot_at + SNAPSHOT_PERIOD_MS);
        }
        // Application threads may run passes while the loop waits (`Shared::flush` in `link.rs`).
        core.parked_until = Some(deadline);
        let timeout = core.out.clock.until(deadline);
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
        core.woken(&events)?;
    }
    drop(guard);
    shared.hub.publish(&NodeEvent::Down);
    Ok(())
}

/// Loads the node from its store and binds its sockets: the loop's state, its poller, the
/// poller's waker and the first snapshot.
fn setup(shared: &Arc<Shared>) -> Result<(Core, Poll, Arc<Waker>, Snapshot), LoopError> {
    let clock = Clock::new();
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
            Ok(v) => Some(crate::underlay::parse_prefixes(&v).map_err(|e| {
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
    let interfaces_at = clock.now();
    let poll = Poll::new()?;
    let waker = Arc::new(Waker::new(poll.registry(), WAKE)?);
    udp.register(poll.registry(), FIRST_SOCKET)?;
    let mut out = LoopState {
        udp,
        controller,
        stacks: zt_stack::Stacks::new({
            let mut b = [0u8; 8];
            zt_proto::crypto::SecureRandom::fill(&mut crate::rng::OsRng, &mut b);
            u64::from_le_bytes(b)
        }),
        clock,
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
    out.stacks.sync(&node, clock.now_us());
    out.stacks_dirty = false;
    let first = build_snapshot(&node, &mut out, clock.now(), None);
    let core = Core {
        node,
        out,
        epoch: {
            static RUNS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
            RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        },
        parked_until: None,
        registry: poll.registry().try_clone()?,
        leading: false,
        recv_buf: vec![0u8; RECV_BUFFER],
        interfaces_at,
        snapshot_at: clock.now(),
        fault: None,
    };
    Ok((core, poll, waker, first))
}

/// What the loop does after a turn.
enum Turn {
    /// Waits for datagrams, requests or its next deadline; the snapshot is due again after its
    /// period when `snapshot_stale`.
    Wait { snapshot_stale: bool },
    /// Stops: the node was asked to.
    Stop,
}

impl Core {
    /// One turn of the loop: runs the requests, executes the node's outputs, refreshes the
    /// snapshot if someone may look at it, then answers the requests.
    fn turn(&mut self, shared: &Shared) -> Turn {
        let clock = self.out.clock;
        let Core { node, out, .. } = self;
        let (commands, snapshot_wanted): (Vec<Command>, bool) = {
            let mut c = shared.lock();
            (
                c.commands.drain(..).collect(),
                std::mem::take(&mut c.snapshot_wanted),
            )
        };
        let had_commands = !commands.is_empty() || snapshot_wanted;
        let mut stopping = false;
        let mut reset_peers = false;
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
                out.stacks.poll(node, clock.now_us());
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
            || now.since(self.snapshot_at) >= SNAPSHOT_PERIOD_MS
        {
            let previous = shared.lock().snapshot.as_ref().map(|s| s.networks.clone());
            let snap = build_snapshot(&self.node, &mut self.out, now, previous);
            let mut c = shared.lock();
            c.snapshot = Some(snap);
            c.snapshot_seq += 1;
            drop(c);
            shared.changed.notify_all();
            self.out.events_since_snapshot = false;
            self.snapshot_at = now;
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
            Turn::Stop
        } else {
            Turn::Wait { snapshot_stale }
        }
    }

    /// After the loop's wait: hands the datagrams of the sockets that polled readable to the
    /// node, refreshes the interface addresses when due, and runs the node's timers.
    ///
    /// # Errors
    /// A socket failed (it ends the loop).
    fn woken(&mut self, events: &Events) -> std::io::Result<()> {
        for ev in events {
            let Some(index) = ev.token().0.checked_sub(FIRST_SOCKET) else {
                continue;
            };
            self.read_udp(index, usize::MAX)?;
        }
        let now = self.out.clock.now();
        if now.since(self.interfaces_at) >= INTERFACE_REFRESH_MS {
            self.node.set_interface_addresses(interface_addresses());
            self.interfaces_at = now;
        }
        if self.node.poll_timeout() <= now {
            self.node.handle_timeout(now);
        }
        Ok(())
    }
}
