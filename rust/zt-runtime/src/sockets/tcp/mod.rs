//! TCP sockets: what application threads and the loop share for each ([`TcpShared`], its
//! methods in `socket.rs`), and the loop's table of connections and listeners ([`SocketTable`],
//! in `table.rs`).

mod socket;
mod table;
#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use zt_proto::NetworkId;
use zt_stack::NetStack;
use zt_stack::smoltcp::iface::SocketHandle;
use zt_stack::smoltcp::socket::tcp;

use super::SockError;
use super::shared::SocketCore;

/// Default buffer size each way.
pub const DEFAULT_BUFFER: usize = zt_stack::TCP_BUFFER;
/// How far the buffers of a TCP socket left at their default size may grow with its path
/// (see [`zt_stack::smoltcp::socket::tcp::Socket::set_buffer_limits`]).
pub const MAX_AUTO_BUFFER: usize = zt_stack::TCP_BUFFER_MAX;

/// A TCP socket's buffer sizes, from what the application asked for: 0 is the default size,
/// free to grow with the path; anything else is that size, fixed (as `SO_RCVBUF`/`SO_SNDBUF`
/// fix it in Linux).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct TcpBuffers {
    rx: usize,
    tx: usize,
    rx_max: usize,
    tx_max: usize,
}

impl TcpBuffers {
    fn new((rx, tx): (usize, usize)) -> Self {
        let one = |b: usize| {
            if b == 0 {
                (DEFAULT_BUFFER, MAX_AUTO_BUFFER)
            } else {
                let b = b.max(4096);
                (b, b)
            }
        };
        let ((rx, rx_max), (tx, tx_max)) = (one(rx), one(tx));
        Self {
            rx,
            tx,
            rx_max,
            tx_max,
        }
    }

    /// A TCP socket on `stack` with these buffers.
    fn add(&self, stack: &mut NetStack) -> SocketHandle {
        let h = stack.add_tcp(self.rx, self.tx);
        stack.tcp(h).set_buffer_limits(self.rx_max, self.tx_max);
        h
    }
}
/// Most listening smoltcp sockets kept armed per listener and address: up to the backlog, so
/// that as many handshakes can be in progress at once (a SYN finding none is dropped, as by the
/// kernel, and the client's retry gets in later: `NetStack::handle_frame`). Their buffers are zeroed allocations the OS maps lazily, so idle ones cost little
/// memory.
const MAX_ARMED: usize = 128;
/// How long a connection may wait on a silent peer (unacknowledged data or FIN, unanswered
/// SYN) before it is aborted, unless `TCP_USER_TIMEOUT` says otherwise.
pub const DEFAULT_USER_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a closed socket waits in FIN-WAIT-2 for a silent peer's FIN (Linux's
/// `tcp_fin_timeout`).
const ORPHAN_FIN_TIMEOUT_MS: i64 = 60_000;
/// Keep-alive defaults (Linux's): 2 h idle, 75 s between probes, 9 probes.
const KEEPIDLE_DEFAULT: u32 = 7200;
const KEEPINTVL_DEFAULT: u32 = 75;
const KEEPCNT_DEFAULT: u32 = 9;

/// Where a TCP socket is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Created, not connected or listening.
    Idle,
    /// Listening for connections.
    Listening,
    /// Connecting.
    Connecting,
    /// Connected (data may flow).
    Connected,
    /// Closed (by us, the peer, or an error).
    Closed,
}

/// A TCP socket option (`setsockopt`/`getsockopt`); values are integers as in C.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum TcpOption {
    /// `TCP_NODELAY` (0/1; on by default here).
    NoDelay,
    /// `SO_KEEPALIVE` (0/1; off by default).
    KeepAlive,
    /// `TCP_KEEPIDLE`: seconds (1–32767, default 7200); with keep-alive, a connection whose
    /// peer has been silent for `TCP_KEEPIDLE + TCP_KEEPINTVL × TCP_KEEPCNT` is dropped.
    KeepIdle,
    /// `TCP_KEEPINTVL`: seconds between keep-alive probes, sent whenever the connection is
    /// idle (1–32767, default 75).
    KeepInterval,
    /// `TCP_KEEPCNT`: unanswered probes before the connection is dropped (1–127, default 9).
    KeepCount,
    /// `TCP_USER_TIMEOUT`: milliseconds a connection may wait on a silent peer before it is
    /// aborted (0: the default, [`DEFAULT_USER_TIMEOUT`]).
    UserTimeout,
    /// `TCP_CONGESTION`: the sender's congestion control, a [`Congestion`] as its number
    /// (default CUBIC). Changing it on a connection starts the new controller afresh.
    Congestion,
}

/// A TCP sender's congestion control (`TCP_CONGESTION`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(u8)]
pub enum Congestion {
    /// CUBIC (RFC 9438) with HyStart++: loss-based, the default (as Linux's).
    #[default]
    Cubic = 0,
    /// BBR: model-based, paces at the measured bottleneck bandwidth; random loss does not
    /// shrink its window.
    Bbr = 1,
    /// Reno (RFC 5681).
    Reno = 2,
}

impl Congestion {
    /// By the name Linux gives it (`cubic`, `bbr`, `reno`).
    #[must_use]
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "cubic" => Some(Self::Cubic),
            "bbr" => Some(Self::Bbr),
            "reno" => Some(Self::Reno),
            _ => None,
        }
    }

    /// The name Linux gives it.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Cubic => "cubic",
            Self::Bbr => "bbr",
            Self::Reno => "reno",
        }
    }

    fn from_number(n: i64) -> Option<Self> {
        [Self::Cubic, Self::Bbr, Self::Reno]
            .into_iter()
            .find(|c| *c as i64 == n)
    }

    fn smoltcp(self) -> tcp::CongestionControl {
        match self {
            Self::Cubic => tcp::CongestionControl::Cubic,
            Self::Bbr => tcp::CongestionControl::Bbr,
            Self::Reno => tcp::CongestionControl::Reno,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct TcpOptions {
    nodelay: bool,
    keepalive: bool,
    keepidle: u32,
    keepintvl: u32,
    keepcnt: u32,
    /// ms; 0 = default.
    user_timeout: u32,
    congestion: Congestion,
}

impl Default for TcpOptions {
    fn default() -> Self {
        Self {
            nodelay: true,
            keepalive: false,
            keepidle: KEEPIDLE_DEFAULT,
            keepintvl: KEEPINTVL_DEFAULT,
            keepcnt: KEEPCNT_DEFAULT,
            user_timeout: 0,
            congestion: Congestion::Cubic,
        }
    }
}

impl TcpOptions {
    fn user_timeout_ms(&self) -> i64 {
        if self.user_timeout == 0 {
            DEFAULT_USER_TIMEOUT.as_millis() as i64
        } else {
            i64::from(self.user_timeout)
        }
    }

    fn keepalive_limit_ms(&self) -> i64 {
        (i64::from(self.keepidle) + i64::from(self.keepintvl) * i64::from(self.keepcnt)) * 1000
    }
}

#[derive(Debug)]
struct TcpState {
    phase: Phase,
    rx: VecDeque<u8>,
    rx_cap: usize,
    tx: VecDeque<u8>,
    tx_cap: usize,
    /// The peer closed its side (after the buffered data: EOF).
    eof: bool,
    error: Option<SockError>,
    local: Option<SocketAddr>,
    peer: Option<SocketAddr>,
    /// The application shut down writing (FIN after the buffered data).
    write_shutdown: bool,
    /// The application closed the socket.
    released: bool,
    accept: VecDeque<Arc<TcpShared>>,
    backlog: usize,
    options: TcpOptions,
    /// The loop left data in the stack because `rx` was full: a read must wake it.
    rx_blocked: bool,
    /// The connection's sender and receiver figures as of the loop's last pass.
    info: tcp::TcpInfo,
}

/// What application threads and the loop share for one TCP socket.
pub struct TcpShared {
    core: SocketCore<TcpState>,
}

impl std::fmt::Debug for TcpShared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let st = self.core.lock();
        f.debug_struct("TcpShared")
            .field("phase", &st.phase)
            .field("local", &st.local)
            .field("peer", &st.peer)
            .finish_non_exhaustive()
    }
}

/// What a connection is waiting for from its peer (the deadline's reason).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Wait {
    /// An acknowledgement (data, FIN) or an answer to our SYN.
    Ack,
    /// A FIN, after the application closed the socket (FIN-WAIT-2).
    OrphanFin,
    /// Anything, on an idle connection with keep-alive.
    KeepAlive,
}

#[derive(Debug)]
struct Conn {
    net: NetworkId,
    h: SocketHandle,
    /// (local port, peer) as watched on the stack.
    watched: Option<(u16, SocketAddr)>,
    /// What the connection waits for, and since when (ms).
    waiting: Option<(Wait, i64)>,
    /// When it will be aborted unless the peer speaks (ms).
    deadline: Option<i64>,
    /// The keep-alive interval given to smoltcp (s).
    keepalive: Option<u32>,
    /// The congestion control given to smoltcp (the stack starts every socket with CUBIC).
    congestion: Congestion,
}

/// Which local addresses a listener takes connections on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Scope {
    /// One address (of whichever network has it).
    Addr(IpAddr),
    /// Every IPv4 address of every network (`0.0.0.0`).
    AnyV4,
    /// Every IPv6 address of every network (`::` with `IPV6_V6ONLY`).
    AnyV6Only,
    /// Every address, IPv4 and IPv6, of every network (`::`, dual-stack).
    Any,
}

impl Scope {
    fn overlaps(self, other: Scope) -> bool {
        use Scope::{Addr, Any, AnyV4, AnyV6Only};
        match (self, other) {
            (Any, _) | (_, Any) | (AnyV4, AnyV4) | (AnyV6Only, AnyV6Only) => true,
            (AnyV4, AnyV6Only) | (AnyV6Only, AnyV4) => false,
            (Addr(a), Addr(b)) => a == b,
            (Addr(a), AnyV4) | (AnyV4, Addr(a)) => a.is_ipv4(),
            (Addr(a), AnyV6Only) | (AnyV6Only, Addr(a)) => a.is_ipv6(),
        }
    }

    /// The listen addresses (None: any) this scope needs on a stack with these addresses.
    fn endpoints(self, addrs: &[(IpAddr, u8)]) -> Vec<Option<IpAddr>> {
        match self {
            Scope::Any => vec![None],
            Scope::Addr(ip) => addrs
                .iter()
                .filter(|(a, _)| *a == ip)
                .map(|_| Some(ip))
                .take(1)
                .collect(),
            Scope::AnyV4 => addrs
                .iter()
                .filter(|(a, _)| a.is_ipv4())
                .map(|(a, _)| Some(*a))
                .collect(),
            Scope::AnyV6Only => addrs
                .iter()
                .filter(|(a, _)| a.is_ipv6())
                .map(|(a, _)| Some(*a))
                .collect(),
        }
    }
}

/// Listening smoltcp sockets of one listener on one network and address.
#[derive(Debug)]
struct Armed {
    net: NetworkId,
    addr: Option<IpAddr>,
    handles: Vec<SocketHandle>,
}

#[derive(Debug)]
struct Listener {
    port: u16,
    scope: Scope,
    armed: Vec<Armed>,
    buffers: TcpBuffers,
}

#[derive(Debug)]
enum Kind {
    Conn(Conn),
    Listener(Listener),
}

#[derive(Debug)]
struct Entry {
    shared: Arc<TcpShared>,
    kind: Kind,
}

/// The loop thread's table of sockets.
#[derive(Debug, Default)]
pub struct SocketTable {
    entries: Vec<Entry>,
    /// The stacks' generation the listeners were armed for.
    generation: Option<u64>,
    /// The earliest connection deadline (ms).
    next_deadline: Option<i64>,
    /// The next port tried for a listener on port 0 while no network has a stack.
    next_port: u16,
}
