//! The loop's state ([`Core`]) and the execution of the node's outputs after each pass
//! ([`LoopState`]): transmits, events, store operations, frames to the stacks and taps.

use std::collections::BTreeSet;
use std::sync::PoisonError;

use zt_proto::{Event, IpPrefix, Node, StoreKey, StoreOp};

use super::{
    ALLOWED_DESTINATIONS_ENV, FIRST_SOCKET, LEAD_BATCH, REFUSED_LOGGED_MAX, SNAPSHOT_PERIOD_MS,
    Shared,
};
use crate::clock::Clock;
use crate::events::NodeEvent;
use crate::state::ROOTS_ALIAS;
use crate::underlay::UdpSockets;

/// The loop's state (what [`Shared::core`] holds while the loop runs).
// Windows has no leading thread: the fields and methods that serve one go unused there.
#[cfg_attr(not(unix), allow(dead_code))]
pub(super) struct Core {
    pub(super) node: Node,
    pub(super) out: LoopState,
    /// Which run of the loop this is (unique in the process): a thread that led the receiving
    /// of an earlier run of a restarted node must not touch this one.
    pub(super) epoch: u64,
    /// While the loop thread waits: the deadline it waits for.
    pub(super) parked_until: Option<zt_proto::Timestamp>,
    /// The loop's poller (the UDP sockets leave it while an application thread leads).
    pub(super) registry: mio::Registry,
    /// An application thread waits for the UDP sockets instead of the loop ([`crate::lead`]).
    pub(super) leading: bool,
    /// Where datagrams are read into (by the loop or a leading thread).
    pub(super) recv_buf: Vec<u8>,
    /// When the interface addresses were last given to the node.
    pub(super) interfaces_at: zt_proto::Timestamp,
    /// When the snapshot was last rebuilt.
    pub(super) snapshot_at: zt_proto::Timestamp,
    /// A pass on an application thread panicked: the loop ends with this.
    pub(super) fault: Option<String>,
}

impl Core {
    /// The next time the loop must run for timers.
    pub(super) fn deadline(&mut self) -> zt_proto::Timestamp {
        [
            self.out.stacks.poll_at(self.out.clock.now_us()),
            self.out.sockets.poll_at().map(zt_proto::Timestamp),
        ]
        .into_iter()
        .flatten()
        .fold(self.node.poll_timeout(), Ord::min)
    }

    /// The loop's pass, run by an application thread while the loop waits until `parked`.
    /// Whether the loop may go on waiting (else the caller wakes it).
    pub(super) fn flush(&mut self, shared: &Shared, parked: zt_proto::Timestamp) -> bool {
        self.out.inline_passes += 1;
        self.settle(shared, parked)
    }

    /// Puts the UDP sockets back into the loop's poller (the loop is woken if datagrams wait).
    /// A poller that refuses ends the loop: it could not receive on them any more.
    #[cfg_attr(not(unix), allow(dead_code))]
    pub(super) fn give_back_udp(&mut self) {
        if let Err(e) = self.out.udp.register(&self.registry, FIRST_SOCKET) {
            self.fault = Some(format!("cannot watch the UDP sockets again: {e}"));
        }
    }

    /// The leading thread's pass ([`crate::lead`]): reads the UDP sockets that polled
    /// `readable`, then runs the loop's pass. Whether the loop may go on waiting.
    ///
    /// # Errors
    /// A socket failed as it would fail the loop.
    #[cfg_attr(not(unix), allow(dead_code))]
    pub(super) fn receive(&mut self, shared: &Shared, readable: &[bool]) -> std::io::Result<bool> {
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
    pub(super) fn read_udp(&mut self, index: usize, limit: usize) -> std::io::Result<()> {
        let now = self.out.clock.now();
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
    pub(super) fn settle(&mut self, shared: &Shared, parked: zt_proto::Timestamp) -> bool {
        let now = self.out.clock.now();
        self.out.drain(shared, &mut self.node, now);
        // Packets moved: the snapshot must not lag more than its period behind.
        let next = self.deadline().min(self.snapshot_at + SNAPSHOT_PERIOD_MS);
        !(self.out.events_since_snapshot || self.out.networks_changed) && next >= parked
    }
}

pub(super) struct LoopState {
    pub(super) udp: UdpSockets,
    pub(super) controller: Option<crate::controller::ControllerHost>,
    pub(super) stacks: zt_stack::Stacks,
    /// The loop's clock (the node's milliseconds; the stacks' microseconds on the same base).
    pub(super) clock: Clock,
    pub(super) sockets: crate::sockets::SocketTable,
    pub(super) datagrams: crate::sockets::UdpTable,
    pub(super) stacks_dirty: bool,
    /// Network state changed since the snapshot last copied it (events, API calls).
    pub(super) networks_changed: bool,
    /// An event was emitted since the last snapshot (its receiver may look at the node).
    pub(super) events_since_snapshot: bool,
    pub(super) frames_untapped: u64,
    pub(super) inline_passes: u64,
    pub(super) led_passes: u64,
    pub(super) planet_in_roots: bool,
    pub(super) store_errors: u64,
    pub(super) send_errors: u64,
    /// Datagrams not sent because their destination is outside the allowed destinations.
    pub(super) refused_destinations: u64,
    /// Destinations already logged as refused (each is logged once; bounded).
    pub(super) refused_logged: BTreeSet<std::net::IpAddr>,
    /// Validates new peers' identities off this thread.
    pub(super) validator: crate::validator::Validator,
}

impl LoopState {
    /// Executes the node's outputs and moves data between the node and the stacks until
    /// neither has anything left to do.
    pub(super) fn drain(&mut self, shared: &Shared, node: &mut Node, now: zt_proto::Timestamp) {
        loop {
            let executed = self.execute_node_outputs(shared, node, now);
            let moved = self.service_stacks(node, now);
            if !(executed || moved) {
                break;
            }
        }
    }

    /// Sends the node's transmits and executes its events, store operations, identity checks
    /// and frames. Whether there were any.
    fn execute_node_outputs(
        &mut self,
        shared: &Shared,
        node: &mut Node,
        now: zt_proto::Timestamp,
    ) -> bool {
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
        progress
    }

    /// Moves data between the stacks, the sockets and the node (frames out, bytes in and out
    /// of socket buffers, multicast memberships). Whether anything moved.
    fn service_stacks(&mut self, node: &mut Node, now: zt_proto::Timestamp) -> bool {
        let mut progress = false;
        if self.stacks_dirty {
            self.stacks_dirty = false;
            self.stacks.sync(node, self.clock.now_us());
        }
        self.sockets.service(&mut self.stacks, now.as_millis());
        self.datagrams.service(&mut self.stacks);
        if self.stacks.poll(node, self.clock.now_us()) {
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
        progress
    }

    pub(super) fn deliver(&mut self, shared: &Shared, f: zt_proto::Frame) {
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

    pub(super) fn event(
        &mut self,
        shared: &Shared,
        node: &mut Node,
        now: zt_proto::Timestamp,
        ev: Event,
    ) {
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
        // An address event, with the code (IPv4, IPv6) of the address's family.
        let addr = |(v4, v6), network, address: IpPrefix| NodeEvent::Address {
            code: if address.ip.is_ipv4() { v4 } else { v6 },
            network,
            address,
        };
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
                use zt_proto::NetworkStatus as S;
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
            Event::NetworkAddressAdded { network, address } => {
                addr((C::AddrAddedIp4, C::AddrAddedIp6), network, address)
            }
            Event::NetworkAddressRemoved { network, address } => {
                addr((C::AddrRemovedIp4, C::AddrRemovedIp6), network, address)
            }
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

    pub(super) fn execute(&mut self, shared: &Shared, op: StoreOp) {
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
