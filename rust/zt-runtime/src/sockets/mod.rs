//! User-space sockets on the networks' stacks, shaped for a blocking/non-blocking socket API.
//!
//! Data lives in Rust: each socket has a shared state ([`TcpShared`]) with bounded receive and
//! send buffers that application threads read and write directly (no round trip through the
//! loop), and a [`Readiness`] descriptor mirroring it. The loop thread moves bytes between those
//! buffers and the smoltcp sockets ([`SocketTable::service`]) and wakes waiters.
//!
//! Dead peers: a connection waiting on its peer — to acknowledge data or a FIN, or to answer a
//! SYN — is aborted with [`SockError::TimedOut`] once the peer has been silent for the user
//! timeout ([`DEFAULT_USER_TIMEOUT`], or `TCP_USER_TIMEOUT`); with `SO_KEEPALIVE`, an idle one
//! is probed every `TCP_KEEPINTVL` and aborted after `TCP_KEEPIDLE + TCP_KEEPINTVL ×
//! TCP_KEEPCNT` of silence. Silence is measured by the stack, which records when each
//! connection last took in a segment from its peer ([`zt_stack::NetStack::tcp_heard`]).

use std::net::{IpAddr, SocketAddr};

mod shared;
mod tcp;
mod udp;

pub use crate::lead::{Kick, LoopLink};
pub use tcp::{
    Congestion, DEFAULT_BUFFER, DEFAULT_USER_TIMEOUT, MAX_AUTO_BUFFER, Phase, SocketTable,
    TcpOption, TcpShared,
};
pub use udp::{MAX_DATAGRAM, MAX_MEMBERSHIPS, UdpOption, UdpShared, UdpTable};

/// Most bytes a send leaves queued for the sending thread to flush itself: more (bulk data)
/// go to the loop thread, which then packs and encrypts them while the application produces
/// the next ones.
const FLUSH_MAX: usize = 16 << 10;

/// A socket error, with the errno Python will raise.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SockError {
    /// ECONNREFUSED.
    #[error("connection refused")]
    Refused,
    /// ECONNRESET.
    #[error("connection reset by peer")]
    Reset,
    /// ETIMEDOUT: the peer stopped answering.
    #[error("connection timed out")]
    TimedOut,
    /// ENOTCONN.
    #[error("socket is not connected")]
    NotConnected,
    /// EPIPE.
    #[error("broken pipe")]
    BrokenPipe,
    /// EAGAIN / a timeout of the call.
    #[error("resource temporarily unavailable")]
    WouldBlock,
    /// ENETUNREACH: no joined network routes the address.
    #[error("network is unreachable")]
    NetUnreachable,
    /// ENETDOWN: the node stopped.
    #[error("network is down")]
    NetDown,
    /// EADDRINUSE.
    #[error("address already in use")]
    AddrInUse,
    /// EADDRNOTAVAIL: no joined network gives this node that address.
    #[error("cannot assign requested address")]
    AddrNotAvailable,
    /// EADDRNOTAVAIL: a connection to one of this node's own addresses (the overlay has no
    /// loopback: it would wait for a handshake nobody answers).
    #[error("cannot connect to this node's own address (the overlay has no loopback)")]
    OwnAddress,
    /// EINVAL.
    #[error("invalid argument")]
    Invalid,
    /// EBADF: the socket was closed.
    #[error("bad file descriptor")]
    Closed,
    /// EACCES: a broadcast without `SO_BROADCAST`.
    #[error("permission denied")]
    Access,
    /// EPERM: the network's config does not let this through (broadcast or multicast
    /// disabled).
    #[error("operation not permitted by the network's configuration")]
    NotPermitted,
    /// ENODEV: no network of the socket has that interface address.
    #[error("no such device")]
    NoDevice,
    /// ENOBUFS: too many multicast groups.
    #[error("no buffer space available")]
    NoBuffers,
    /// EMSGSIZE: a datagram larger than the network's MTU allows (the stacks do not fragment).
    #[error("message too long")]
    MsgSize,
}

impl SockError {
    /// The errno's symbolic name (`"ECONNREFUSED"`), as Python's `errno` module has it on every
    /// platform (its values differ: Windows numbers socket errors as Winsock does).
    #[must_use]
    pub fn errno_name(self) -> &'static str {
        match self {
            Self::Refused => "ECONNREFUSED",
            Self::Reset => "ECONNRESET",
            Self::TimedOut => "ETIMEDOUT",
            Self::NotConnected => "ENOTCONN",
            Self::BrokenPipe => "EPIPE",
            Self::WouldBlock => "EAGAIN",
            Self::NetUnreachable => "ENETUNREACH",
            Self::NetDown => "ENETDOWN",
            Self::AddrInUse => "EADDRINUSE",
            Self::AddrNotAvailable | Self::OwnAddress => "EADDRNOTAVAIL",
            Self::Invalid => "EINVAL",
            Self::Closed => "EBADF",
            Self::Access => "EACCES",
            Self::NotPermitted => "EPERM",
            Self::NoDevice => "ENODEV",
            Self::NoBuffers => "ENOBUFS",
            Self::MsgSize => "EMSGSIZE",
        }
    }

    /// The errno value on this (Unix) platform, the one Python's `errno` module has.
    #[cfg(unix)]
    #[must_use]
    pub fn errno(self) -> i32 {
        match self {
            Self::Refused => libc::ECONNREFUSED,
            Self::Reset => libc::ECONNRESET,
            Self::TimedOut => libc::ETIMEDOUT,
            Self::NotConnected => libc::ENOTCONN,
            Self::BrokenPipe => libc::EPIPE,
            Self::WouldBlock => libc::EAGAIN,
            Self::NetUnreachable => libc::ENETUNREACH,
            Self::NetDown => libc::ENETDOWN,
            Self::AddrInUse => libc::EADDRINUSE,
            Self::AddrNotAvailable | Self::OwnAddress => libc::EADDRNOTAVAIL,
            Self::Invalid => libc::EINVAL,
            Self::Closed => libc::EBADF,
            Self::Access => libc::EACCES,
            Self::NotPermitted => libc::EPERM,
            Self::NoDevice => libc::ENODEV,
            Self::NoBuffers => libc::ENOBUFS,
            Self::MsgSize => libc::EMSGSIZE,
        }
    }
}

/// A smoltcp endpoint as a socket address.
fn endpoint(e: zt_stack::smoltcp::wire::IpEndpoint) -> SocketAddr {
    SocketAddr::new(IpAddr::from(e.addr), e.port)
}

impl From<crate::lead::Expired> for SockError {
    fn from(_: crate::lead::Expired) -> Self {
        SockError::WouldBlock
    }
}
