//! Node events with libzt's numeric codes, fanned out to any number of subscribers.
//!
//! Each [`Subscription`] has a bounded queue (the oldest events are dropped and counted when a
//! consumer falls behind) and a readiness descriptor that is readable exactly while the queue is
//! non-empty or the subscription is closed, so `select`, `selectors` and asyncio's `add_reader`
//! can wait on it.

use std::io::{Read, Write};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError, Weak};
use std::time::{Duration, Instant};

use crate::queue::{Bounded, wait_until};
use crate::readiness::{LocalStream, RawDescriptor, local_pair, raw_descriptor};
use zt_proto::{Address, IpPrefix, NetworkId, StoreKey};

/// Numeric event codes. 2xx are libzt's `ZTS_EVENT_*` values; 275 and 3xx are `zt`'s own.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(i32)]
pub enum EventCode {
    /// The node has started (libzt `ZTS_EVENT_NODE_UP`).
    NodeUp = 200,
    /// The node reaches its roots (`ZTS_EVENT_NODE_ONLINE`).
    NodeOnline = 201,
    /// The node lost its roots (`ZTS_EVENT_NODE_OFFLINE`).
    NodeOffline = 202,
    /// The node has stopped (`ZTS_EVENT_NODE_DOWN`).
    NodeDown = 203,
    /// The node could not run (`ZTS_EVENT_NODE_FATAL_ERROR`).
    NodeFatalError = 204,
    /// `identity.secret` was written (`ZTS_EVENT_STORE_IDENTITY_SECRET`).
    StoreIdentitySecret = 270,
    /// `identity.public` was written (`ZTS_EVENT_STORE_IDENTITY_PUBLIC`).
    StoreIdentityPublic = 271,
    /// The planet was written (`ZTS_EVENT_STORE_PLANET`).
    StorePlanet = 272,
    /// A peer was written (`ZTS_EVENT_STORE_PEER`).
    StorePeer = 273,
    /// A network config was written (`ZTS_EVENT_STORE_NETWORK`).
    StoreNetwork = 274,
    /// A moon was written (zt).
    StoreMoon = 275,
    /// A direct path to a peer was learned (`ZTS_EVENT_PEER_PATH_DISCOVERED`).
    PeerPathDiscovered = 243,
    /// A direct path to a peer expired (`ZTS_EVENT_PEER_PATH_DEAD`).
    PeerPathDead = 244,
    /// The controller does not have the network (`ZTS_EVENT_NETWORK_NOT_FOUND`).
    NetworkNotFound = 210,
    /// Never produced by 1.x controllers (`ZTS_EVENT_NETWORK_CLIENT_TOO_OLD`).
    NetworkClientTooOld = 211,
    /// Waiting for a config (`ZTS_EVENT_NETWORK_REQ_CONFIG`).
    NetworkRequestConfig = 212,
    /// Configured (`ZTS_EVENT_NETWORK_OK`).
    NetworkOk = 213,
    /// The controller refused this node (`ZTS_EVENT_NETWORK_ACCESS_DENIED`).
    NetworkAccessDenied = 214,
    /// An IPv4 address is assigned (`ZTS_EVENT_NETWORK_READY_IP4`).
    NetworkReadyIp4 = 215,
    /// An IPv6 address is assigned (`ZTS_EVENT_NETWORK_READY_IP6`).
    NetworkReadyIp6 = 216,
    /// The network was left (`ZTS_EVENT_NETWORK_DOWN`).
    NetworkDown = 218,
    /// A new config took effect (`ZTS_EVENT_NETWORK_UPDATE`).
    NetworkUpdate = 219,
    /// The controller wants SSO authentication (zt; libzt has no such event).
    NetworkAuthenticationRequired = 220,
    /// An IPv4 address was assigned (`ZTS_EVENT_ADDR_ADDED_IP4`).
    AddrAddedIp4 = 260,
    /// An IPv4 address was withdrawn (`ZTS_EVENT_ADDR_REMOVED_IP4`).
    AddrRemovedIp4 = 261,
    /// An IPv6 address was assigned (`ZTS_EVENT_ADDR_ADDED_IP6`).
    AddrAddedIp6 = 262,
    /// An IPv6 address was withdrawn (`ZTS_EVENT_ADDR_REMOVED_IP6`).
    AddrRemovedIp6 = 263,
    /// A USER_MESSAGE arrived (zt).
    UserMessage = 310,
    /// A planet was adopted (zt).
    PlanetChanged = 300,
    /// A moon was added or updated (zt).
    MoonChanged = 301,
}

/// An event from a node.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum NodeEvent {
    /// Started, with this address.
    Up {
        /// The node's address.
        address: Address,
    },
    /// Reaches its roots.
    Online,
    /// Lost its roots.
    Offline,
    /// Stopped.
    Down,
    /// Could not start or keep running.
    FatalError {
        /// Why.
        message: String,
    },
    /// An object was persisted.
    Stored {
        /// Which.
        key: StoreKey,
    },
    /// A planet was adopted.
    PlanetChanged {
        /// World ID.
        id: u64,
        /// Revision.
        timestamp: u64,
    },
    /// A moon was added or updated.
    MoonChanged {
        /// World ID.
        id: u64,
        /// Revision.
        timestamp: u64,
    },
    /// A direct path was learned.
    PathDiscovered {
        /// The peer.
        address: Address,
        /// Its endpoint.
        remote: std::net::SocketAddr,
    },
    /// A direct path expired.
    PathDead {
        /// The peer.
        address: Address,
        /// Its endpoint.
        remote: std::net::SocketAddr,
    },
    /// A USER_MESSAGE arrived.
    UserMessage {
        /// Sender.
        from: Address,
        /// Type ID.
        type_id: u64,
        /// Payload.
        data: Vec<u8>,
    },
    /// A network's state changed (`code` says how: 210–220).
    Network {
        /// Which event.
        code: EventCode,
        /// Network.
        network: NetworkId,
    },
    /// A managed address was assigned or withdrawn (`code` 260–263).
    Address {
        /// Which event.
        code: EventCode,
        /// Network.
        network: NetworkId,
        /// Address and prefix length.
        address: IpPrefix,
    },
}

impl NodeEvent {
    /// The numeric code.
    #[must_use]
    pub fn code(&self) -> EventCode {
        match self {
            Self::Up { .. } => EventCode::NodeUp,
            Self::Online => EventCode::NodeOnline,
            Self::Offline => EventCode::NodeOffline,
            Self::Down => EventCode::NodeDown,
            Self::FatalError { .. } => EventCode::NodeFatalError,
            Self::Stored { key } => match key {
                StoreKey::IdentitySecret => EventCode::StoreIdentitySecret,
                StoreKey::IdentityPublic => EventCode::StoreIdentityPublic,
                StoreKey::Planet => EventCode::StorePlanet,
                StoreKey::Peer(_) => EventCode::StorePeer,
                StoreKey::NetworkConfig(_) => EventCode::StoreNetwork,
                StoreKey::Moon(_) => EventCode::StoreMoon,
            },
            Self::PlanetChanged { .. } => EventCode::PlanetChanged,
            Self::MoonChanged { .. } => EventCode::MoonChanged,
            Self::PathDiscovered { .. } => EventCode::PeerPathDiscovered,
            Self::PathDead { .. } => EventCode::PeerPathDead,
            Self::UserMessage { .. } => EventCode::UserMessage,
            Self::Network { code, .. } | Self::Address { code, .. } => *code,
        }
    }
}

/// Why [`Subscription::recv`] returned no event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RecvError {
    /// Nothing arrived in time (or nothing is queued, for a non-blocking call).
    #[error("no event within the timeout")]
    Timeout,
    /// The subscription was closed and its queue is empty.
    #[error("the event subscription is closed")]
    Closed,
}

/// One consumer's view of a node's events.
#[derive(Debug)]
pub struct Subscription {
    queue: Mutex<Bounded<NodeEvent>>,
    cond: Condvar,
    ready_rx: LocalStream,
    ready_tx: LocalStream,
}

impl Subscription {
    fn new(capacity: usize) -> std::io::Result<Self> {
        let (ready_rx, ready_tx) = local_pair()?;
        Ok(Self {
            queue: Mutex::new(Bounded::new(capacity)),
            cond: Condvar::new(),
            ready_rx,
            ready_tx,
        })
    }

    fn lock(&self) -> MutexGuard<'_, Bounded<NodeEvent>> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn signal(&self) {
        // A full socket buffer already means "readable"; nothing else can fail here.
        let _ = (&self.ready_tx).write(&[1]);
    }

    fn unsignal(&self) {
        let mut buf = [0u8; 64];
        while let Ok(n) = (&self.ready_rx).read(&mut buf) {
            if n == 0 {
                break;
            }
        }
    }

    fn push(&self, event: NodeEvent) {
        let mut q = self.lock();
        if q.push(event) {
            // The queue was empty before this event (once any oldest one was dropped).
            if q.items.len() == 1 {
                self.signal();
            }
            self.cond.notify_all();
        }
    }

    fn take(&self, q: &mut Bounded<NodeEvent>) -> Option<NodeEvent> {
        let ev = q.items.pop_front()?;
        if q.items.is_empty() && !q.closed {
            self.unsignal();
        }
        Some(ev)
    }

    /// Waits up to `timeout` (forever if `None`) for the next event.
    ///
    /// # Errors
    /// [`RecvError::Timeout`], or [`RecvError::Closed`] once closed and drained.
    pub fn recv(&self, timeout: Option<Duration>) -> Result<NodeEvent, RecvError> {
        let deadline = timeout.map(|t| Instant::now() + t);
        let mut q = self.lock();
        loop {
            if let Some(ev) = self.take(&mut q) {
                return Ok(ev);
            }
            if q.closed {
                return Err(RecvError::Closed);
            }
            q = wait_until(&self.cond, q, deadline).ok_or(RecvError::Timeout)?;
        }
    }

    /// The next event if one is queued.
    ///
    /// # Errors
    /// [`RecvError::Timeout`] if none is queued, [`RecvError::Closed`] once closed and drained.
    pub fn try_recv(&self) -> Result<NodeEvent, RecvError> {
        let mut q = self.lock();
        match self.take(&mut q) {
            Some(ev) => Ok(ev),
            None if q.closed => Err(RecvError::Closed),
            None => Err(RecvError::Timeout),
        }
    }

    /// Events discarded because this subscriber fell more than its capacity behind.
    #[must_use]
    pub fn dropped(&self) -> u64 {
        self.lock().dropped
    }

    /// Ends the subscription: waiters wake, and `recv` reports `Closed` once the queue is empty.
    pub fn close(&self) {
        let mut q = self.lock();
        if !q.closed {
            q.closed = true;
            if q.items.is_empty() {
                self.signal();
            }
            self.cond.notify_all();
        }
    }

    /// Whether [`Subscription::close`] was called.
    #[must_use]
    pub fn is_closed(&self) -> bool {
        self.lock().closed
    }

    /// A descriptor that is readable while an event is queued or the subscription is closed.
    /// Do not read from it; call [`Subscription::try_recv`].
    #[must_use]
    pub fn readiness_fd(&self) -> RawDescriptor {
        raw_descriptor(&self.ready_rx)
    }
}

/// Distributes events to subscriptions.
#[derive(Debug, Default)]
pub struct EventHub {
    subs: Mutex<Vec<Weak<Subscription>>>,
}

impl EventHub {
    /// A new subscription holding at most `capacity` undelivered events.
    ///
    /// # Errors
    /// The readiness descriptor could not be created (out of descriptors).
    pub fn subscribe(&self, capacity: usize) -> std::io::Result<Arc<Subscription>> {
        let sub = Arc::new(Subscription::new(capacity)?);
        let mut subs = self.subs.lock().unwrap_or_else(PoisonError::into_inner);
        subs.retain(|w| w.strong_count() > 0);
        subs.push(Arc::downgrade(&sub));
        Ok(sub)
    }

    /// Delivers `event` to every live subscription.
    pub fn publish(&self, event: &NodeEvent) {
        log::debug!(target: "zt.events", "{:?} ({})", event, event.code() as i32);
        let subs: Vec<Arc<Subscription>> = {
            let mut subs = self.subs.lock().unwrap_or_else(PoisonError::into_inner);
            subs.retain(|w| w.strong_count() > 0);
            subs.iter().filter_map(Weak::upgrade).collect()
        };
        for s in subs {
            s.push(event.clone());
        }
    }

    /// Closes every subscription.
    pub fn close_all(&self) {
        let subs = self.subs.lock().unwrap_or_else(PoisonError::into_inner);
        for s in subs.iter().filter_map(Weak::upgrade) {
            s.close();
        }
    }
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    fn fd_is_readable(fd: RawDescriptor) -> bool {
        let mut pfd = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: `pfd` is a valid, initialised pollfd that lives across the call, and nfds is 1.
        #[allow(unsafe_code)]
        let n = unsafe { libc::poll(&mut pfd, 1, 0) };
        n == 1 && (pfd.revents & libc::POLLIN) != 0
    }

    #[test]
    fn fan_out_readiness_and_overflow() {
        let hub = EventHub::default();
        let a = hub.subscribe(2).unwrap();
        let b = hub.subscribe(8).unwrap();
        assert!(!fd_is_readable(a.readiness_fd()));
        hub.publish(&NodeEvent::Online);
        assert!(fd_is_readable(a.readiness_fd()));
        hub.publish(&NodeEvent::Offline);
        hub.publish(&NodeEvent::Down);
        // a kept the newest two and counted one drop; b has all three.
        assert_eq!(a.dropped(), 1);
        assert_eq!(a.try_recv(), Ok(NodeEvent::Offline));
        assert!(fd_is_readable(a.readiness_fd()));
        assert_eq!(a.try_recv(), Ok(NodeEvent::Down));
        assert!(!fd_is_readable(a.readiness_fd()));
        assert_eq!(a.try_recv(), Err(RecvError::Timeout));
        assert_eq!(
            b.recv(Some(Duration::from_millis(1))),
            Ok(NodeEvent::Online)
        );
        assert_eq!(b.dropped(), 0);
        hub.close_all();
        assert!(fd_is_readable(a.readiness_fd()));
        assert_eq!(a.recv(None), Err(RecvError::Closed));
        assert_eq!(b.recv(None), Ok(NodeEvent::Offline));
    }

    #[test]
    fn recv_wakes_on_publish_from_another_thread() {
        let hub = Arc::new(EventHub::default());
        let s = hub.subscribe(4).unwrap();
        let h = hub.clone();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            h.publish(&NodeEvent::Down);
        });
        assert_eq!(s.recv(Some(Duration::from_secs(5))), Ok(NodeEvent::Down));
        t.join().unwrap();
        assert_eq!(
            s.recv(Some(Duration::from_millis(10))),
            Err(RecvError::Timeout)
        );
    }

    #[test]
    fn codes_match_libzt() {
        assert_eq!(
            NodeEvent::Up {
                address: Address::default()
            }
            .code() as i32,
            200
        );
        assert_eq!(NodeEvent::Down.code() as i32, 203);
        assert_eq!(
            NodeEvent::Stored {
                key: StoreKey::Planet
            }
            .code() as i32,
            272
        );
    }
}
