//! Typed operations on a running node: join and leave networks, send frames, open sockets, ping.
//!
//! Each runs on the loop thread (a round trip through [`NodeHandle::call`]) and returns its own
//! error beside the runtime's ([`OpError`]), so the Python bindings, the runtime's tests and any
//! Rust user call the same code instead of writing closures over the loop's internals.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use zt_proto::{Frame, FrameError, JoinError, MulticastGroup, NetworkId};

use super::{LoopCtx, NodeHandle, RuntimeError};
use crate::sockets::{Kick, SockError, TcpShared, UdpShared};

/// How long a socket operation waits for the loop thread to take it up and answer.
pub const OP_TIMEOUT: Duration = Duration::from_secs(10);

/// An operation's failure: the node did not run it ([`RuntimeError`]), or it failed (`E`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpError<E> {
    /// The node is not running, stopped meanwhile, or did not answer in time.
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    /// The operation ran and failed.
    #[error(transparent)]
    Failed(E),
}

/// Why a ping could not be sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PingError {
    /// The network has no stack on this node: not joined, or its config has not arrived.
    #[error("network {0} is not up on this node (not joined, or its config has not arrived)")]
    NotUp(NetworkId),
    /// The stack refused the echo request.
    #[error("{0}")]
    Stack(zt_stack::StackError),
    /// More than [`MAX_PING_SIZE`] bytes of payload.
    #[error("a ping's payload is at most {MAX_PING_SIZE} bytes")]
    TooLarge,
}

/// Most payload bytes a ping carries.
pub const MAX_PING_SIZE: usize = 1400;

/// How often an unanswered ping is sent again (as ping(8) does, once a second; sooner here
/// because the first request may be lost while the neighbour is resolved).
const PING_RESEND: Duration = Duration::from_millis(250);

fn flat<T, E>(r: Result<Result<T, E>, RuntimeError>) -> Result<T, OpError<E>> {
    r?.map_err(OpError::Failed)
}

impl NodeHandle {
    /// Creates a socket on the loop thread: `make` gets the loop and the socket's link to it.
    fn open_socket<T: Send + 'static>(
        &self,
        make: impl FnOnce(&mut LoopCtx<'_>, Kick) -> Result<T, SockError> + Send + 'static,
    ) -> Result<T, OpError<SockError>> {
        let wake = self.waker();
        flat(self.call(move |ctx| make(ctx, wake), OP_TIMEOUT))
    }

    /// Joins a network (idempotent).
    ///
    /// # Errors
    /// The node is not running, or refuses (over its cap on joined networks).
    pub fn join(&self, id: NetworkId, timeout: Duration) -> Result<(), OpError<JoinError>> {
        flat(self.call(move |ctx| ctx.node.join(ctx.now, id), timeout))
    }

    /// Leaves a network; `false` if it was not joined.
    ///
    /// # Errors
    /// The node is not running.
    pub fn leave(&self, id: NetworkId, timeout: Duration) -> Result<bool, RuntimeError> {
        self.call(move |ctx| ctx.node.leave(id), timeout)
    }

    /// Sends an Ethernet frame on a joined network (the network's rules apply).
    ///
    /// # Errors
    /// The node is not running, or the frame cannot go (not joined, refused by the rules, …).
    pub fn send_frame(&self, frame: Frame, timeout: Duration) -> Result<(), OpError<FrameError>> {
        flat(self.call(move |ctx| ctx.node.send_frame(ctx.now, frame), timeout))
    }

    /// Subscribes the node to a multicast group on a network (announced to its peers).
    ///
    /// # Errors
    /// The node is not running.
    pub fn subscribe_multicast(
        &self,
        id: NetworkId,
        group: MulticastGroup,
        timeout: Duration,
    ) -> Result<(), RuntimeError> {
        self.call(move |ctx| ctx.node.subscribe(ctx.now, id, group), timeout)
    }

    /// Starts a TCP connection to `remote` on the network that routes it, from `local` (an
    /// address of the node, None: the route's; a port, 0: an ephemeral one). `buffers`
    /// (receive, send): 0 is the default size, free to grow with the path; others are fixed.
    /// The socket becomes connected (or fails) later.
    ///
    /// # Errors
    /// The node is not running, no network routes `remote`, or the stack refuses.
    pub fn tcp_connect(
        &self,
        remote: SocketAddr,
        local: (Option<IpAddr>, u16),
        buffers: (usize, usize),
    ) -> Result<Arc<TcpShared>, OpError<SockError>> {
        self.open_socket(move |ctx, wake| {
            ctx.sockets
                .connect_from(ctx.stacks, remote, local, buffers, wake)
        })
    }

    /// Listens on `local`: one address, `0.0.0.0` (the IPv4 addresses of every network,
    /// including networks configured later) or `::` (every address, IPv4 too unless
    /// `v6only`). Buffers as for [`Self::tcp_connect`].
    ///
    /// # Errors
    /// The node is not running, the address is not the node's, or the port is taken.
    pub fn tcp_listen(
        &self,
        local: SocketAddr,
        backlog: usize,
        v6only: bool,
        buffers: (usize, usize),
    ) -> Result<Arc<TcpShared>, OpError<SockError>> {
        self.open_socket(move |ctx, wake| {
            ctx.sockets
                .listen(ctx.stacks, local, backlog, v6only, buffers, wake)
        })
    }

    /// Binds a UDP socket to `local` (port 0: ephemeral; `::`/`0.0.0.0`: every network).
    ///
    /// # Errors
    /// The node is not running, the address is not the node's, or the port is taken.
    pub fn udp_bind(
        &self,
        local: SocketAddr,
        buffers: (usize, usize),
    ) -> Result<Arc<UdpShared>, OpError<SockError>> {
        self.open_socket(move |ctx, wake| ctx.udp.bind(ctx.stacks, local, buffers, wake))
    }

    /// Joins (`join`) or leaves an IP multicast group on a UDP socket: on every network of the
    /// socket (`iface` None) or the one where this node has the address `iface`.
    ///
    /// # Errors
    /// The node is not running; `EINVAL` (not a multicast group), `ENODEV` (no such interface
    /// address), `EADDRINUSE` (joined already), `EADDRNOTAVAIL` (not joined), `ENOBUFS` (too
    /// many groups).
    pub fn udp_membership(
        &self,
        sock: &Arc<UdpShared>,
        group: IpAddr,
        iface: Option<IpAddr>,
        join: bool,
    ) -> Result<(), OpError<SockError>> {
        let s = sock.clone();
        flat(self.call(
            move |ctx| {
                ctx.udp
                    .membership(ctx.node, ctx.now, ctx.stacks, &s, group, iface, join)
            },
            OP_TIMEOUT,
        ))
    }

    /// Sets the network a UDP socket's IPv4 multicasts go out on (`IP_MULTICAST_IF`): the one
    /// where this node has the address `iface`, or every network of the socket (None).
    ///
    /// # Errors
    /// The node is not running; `EADDRNOTAVAIL` for an address no network of the socket gives
    /// the node.
    pub fn udp_multicast_if(
        &self,
        sock: &Arc<UdpShared>,
        iface: Option<Ipv4Addr>,
    ) -> Result<(), OpError<SockError>> {
        let s = sock.clone();
        flat(self.call(
            move |ctx| ctx.udp.set_multicast_if(ctx.stacks, &s, iface),
            OP_TIMEOUT,
        ))
    }

    /// Pings `dst` on a network from the node's stack (ICMP or ICMPv6 echo with `size` bytes
    /// of payload): the round-trip time of the first answer, or None if none came within
    /// `timeout`. An unanswered request is sent again every 250 ms; the time is measured from
    /// the request last sent.
    ///
    /// # Errors
    /// The node is not running, the network is not up, or the payload is too large.
    pub fn ping(
        &self,
        id: NetworkId,
        dst: IpAddr,
        size: usize,
        timeout: Duration,
    ) -> Result<Option<Duration>, OpError<PingError>> {
        if size > MAX_PING_SIZE {
            return Err(OpError::Failed(PingError::TooLarge));
        }
        let started = Instant::now();
        // An identifier per ping (odd, never 0), so that concurrent pings tell their answers apart.
        let ident = (started.elapsed().subsec_nanos() as u16) | 1;
        let payload: Arc<[u8]> = vec![0x5a; size].into();
        let p = payload.clone();
        let h = flat(self.call(
            move |ctx| ctx.stacks.ping_send(id, dst, (ident, 1), &p, None),
            OP_TIMEOUT,
        ))
        .map_err(|e| match e {
            OpError::Failed(zt_stack::StackError::BadHandle) => {
                OpError::Failed(PingError::NotUp(id))
            }
            OpError::Failed(e) => OpError::Failed(PingError::Stack(e)),
            OpError::Runtime(e) => OpError::Runtime(e),
        })?;
        let mut seq = 1u16;
        let mut last = Instant::now();
        loop {
            let done = started.elapsed() >= timeout;
            let got = self.call(move |ctx| ctx.stacks.ping_reply(id, h, done), OP_TIMEOUT)?;
            if got.is_some() {
                return Ok(Some(last.elapsed()));
            }
            if done {
                return Ok(None);
            }
            if last.elapsed() >= PING_RESEND {
                seq = seq.wrapping_add(1);
                last = Instant::now();
                let p = payload.clone();
                // A failed resend is like a lost request: the ping waits on.
                let _ = self.call(
                    move |ctx| ctx.stacks.ping_send(id, dst, (ident, seq), &p, Some(h)),
                    OP_TIMEOUT,
                );
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}
