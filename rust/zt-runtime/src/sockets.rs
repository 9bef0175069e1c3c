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

use std::collections::{BTreeSet, HashSet, VecDeque};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use zt_proto::network::NetworkId;
use zt_stack::NetStack;
use zt_stack::smoltcp::iface::SocketHandle;
use zt_stack::smoltcp::socket::tcp;
use zt_stack::smoltcp::wire::IpListenEndpoint;

use crate::readiness::Readiness;
use crate::stacks::{Policy, Stacks};

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

/// Socket state that counts the threads waiting on its condition variable, so that state
/// changes notify (a system call each) only when someone waits: the loop refreshes every
/// socket on each of its passes.
trait Waiters {
    fn waiters(&mut self) -> &mut usize;
    /// A thread leading its node's receive path ([`LoopLink::lead`]) waits for this socket:
    /// readiness that another thread brings must interrupt it.
    fn leader_waits(&mut self) -> &mut bool;
}

/// Waits on `cond` until woken or `deadline` (`WouldBlock` once it has passed).
fn wait_on<'a, T: Waiters>(
    cond: &Condvar,
    mut st: MutexGuard<'a, T>,
    deadline: Option<Instant>,
) -> Result<MutexGuard<'a, T>, SockError> {
    let timeout = match deadline {
        None => None,
        Some(d) => {
            let now = Instant::now();
            if now >= d {
                return Err(SockError::WouldBlock);
            }
            Some(d - now)
        }
    };
    *st.waiters() += 1;
    let mut st = match timeout {
        None => cond.wait(st).unwrap_or_else(PoisonError::into_inner),
        Some(t) => {
            cond.wait_timeout(st, t)
                .unwrap_or_else(PoisonError::into_inner)
                .0
        }
    };
    *st.waiters() -= 1;
    Ok(st)
}

/// What a wait needs of a socket: its state, its condition variable and its link to the loop.
struct Waitable<'a, T> {
    state: &'a Mutex<T>,
    cond: &'a Condvar,
    kick: &'a Kick,
}

impl<'a, T: Waiters> Waitable<'a, T> {
    /// Waits until `ready` holds for the socket's state or `deadline` passes (`WouldBlock`):
    /// as its node's receiving thread when the loop lets it lead (the datagrams for this socket
    /// are then read, decrypted and put into it by this thread: no hand-off from the loop
    /// thread), else on the condition variable, woken by whoever changes the state.
    fn until(
        &self,
        mut st: MutexGuard<'a, T>,
        ready: impl Fn(&T) -> bool,
        deadline: Option<Instant>,
    ) -> Result<MutexGuard<'a, T>, SockError> {
        let lock = || self.state.lock().unwrap_or_else(PoisonError::into_inner);
        while !ready(&st) {
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Err(SockError::WouldBlock);
            }
            drop(st);
            // Whether this thread led (and may have marked the socket as waited for by a
            // leader): a thread that could not lead must not unmark it for the one that does.
            let mut asked = false;
            let led = self.kick.lead(
                &mut || {
                    asked = true;
                    let mut st = lock();
                    let r = ready(&st);
                    *st.leader_waits() = !r;
                    r
                },
                deadline,
            );
            st = lock();
            if asked {
                *st.leader_waits() = false;
            }
            if ready(&st) {
                break;
            }
            if led {
                // It stops leading only when ready or at the deadline (checked above).
                continue;
            }
            st = wait_on(self.cond, st, deadline)?;
        }
        Ok(st)
    }
}

/// How a socket reaches its node's loop (what [`Kick`] wraps).
pub trait LoopLink: Send + Sync {
    /// An application thread changed the socket. `flush`: it queued a few bytes to send, and
    /// may run the loop's pass itself when the loop is idle; otherwise the loop thread is woken
    /// and acts on the change in its next pass.
    fn kick(&self, flush: bool);

    /// Lets a thread that would wait for its socket read the node's UDP sockets itself until
    /// `ready()` (it returns true), `deadline` passes or the node stops. `ready` is asked before
    /// each wait. `false`: this thread cannot lead now (the loop is busy or another thread
    /// leads): wait on the socket as usual.
    fn lead(&self, ready: &mut dyn FnMut() -> bool, deadline: Option<Instant>) -> bool {
        let _ = (ready, deadline);
        false
    }

    /// A socket that a leading thread waits for became ready on another thread.
    fn interrupt(&self) {}
}

/// How a socket tells its node's loop that an application thread changed it, and lets a
/// thread that waits for it receive for the node ([`LoopLink`]).
///
/// [`Kick::wake`] wakes the loop thread, which acts on the change in its next pass.
/// [`Kick::flush`] is for a few bytes to send: when the loop is idle, the calling thread runs
/// the loop's pass itself (the bytes go out from this thread, without a hand-off to the loop
/// thread and back); when the loop is busy, it wakes it.
#[derive(Clone)]
pub struct Kick(Arc<dyn LoopLink>);

struct FnLink<F>(F);

impl<F: Fn(bool) + Send + Sync> LoopLink for FnLink<F> {
    fn kick(&self, flush: bool) {
        (self.0)(flush);
    }
}

impl Kick {
    /// A kick that calls `f` (with `true` for a flush) and never leads.
    pub fn new(f: impl Fn(bool) + Send + Sync + 'static) -> Self {
        Self(Arc::new(FnLink(f)))
    }

    /// A kick over `link`.
    pub fn from_link(link: Arc<dyn LoopLink>) -> Self {
        Self(link)
    }

    /// A kick that does nothing (sockets outside a node, in tests).
    #[must_use]
    pub fn none() -> Self {
        Self::new(|_| {})
    }

    fn wake(&self) {
        self.0.kick(false);
    }

    fn flush(&self) {
        self.0.kick(true);
    }

    fn lead(&self, ready: &mut dyn FnMut() -> bool, deadline: Option<Instant>) -> bool {
        self.0.lead(ready, deadline)
    }

    fn interrupt(&self) {
        if !LEADING.get() {
            self.0.interrupt();
        }
    }
}

thread_local! {
    /// This thread runs a pass as the leader: a socket it makes ready needs no interrupt (the
    /// leader looks at its socket after each pass).
    static LEADING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `f` as the leading thread's pass (see [`LoopLink::lead`]).
#[cfg_attr(not(unix), allow(dead_code))]
pub(crate) fn leading_pass<R>(f: impl FnOnce() -> R) -> R {
    struct Reset;
    impl Drop for Reset {
        fn drop(&mut self) {
            LEADING.set(false);
        }
    }
    LEADING.set(true);
    let _reset = Reset;
    f()
}

impl std::fmt::Debug for Kick {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Kick")
    }
}

/// Most bytes a send leaves queued for the sending thread to flush itself: more (bulk data)
/// go to the loop thread, which then packs and encrypts them while the application produces
/// the next ones.
const FLUSH_MAX: usize = 16 << 10;

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
    /// Threads waiting on the condition variable.
    waiters: usize,
    /// A leading thread waits for this socket ([`Waiters::leader_waits`]).
    leader_waits: bool,
    /// (readable, writable) as of the last refresh: waiters are woken when either turns true.
    signalled: std::cell::Cell<(bool, bool)>,
    /// The connection's sender and receiver figures as of the loop's last pass.
    info: tcp::TcpInfo,
}

impl Waiters for TcpState {
    fn waiters(&mut self) -> &mut usize {
        &mut self.waiters
    }

    fn leader_waits(&mut self) -> &mut bool {
        &mut self.leader_waits
    }
}

/// What application threads and the loop share for one TCP socket.
pub struct TcpShared {
    state: Mutex<TcpState>,
    cond: Condvar,
    readiness: Readiness,
    wake: Kick,
}

impl std::fmt::Debug for TcpShared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let st = self.lock();
        f.debug_struct("TcpShared")
            .field("phase", &st.phase)
            .field("local", &st.local)
            .field("peer", &st.peer)
            .finish_non_exhaustive()
    }
}

impl TcpShared {
    fn new(rx_cap: usize, tx_cap: usize, wake: Kick) -> std::io::Result<Arc<Self>> {
        Ok(Arc::new(Self {
            state: Mutex::new(TcpState {
                phase: Phase::Idle,
                rx: VecDeque::new(),
                rx_cap,
                tx: VecDeque::new(),
                tx_cap,
                eof: false,
                error: None,
                local: None,
                peer: None,
                write_shutdown: false,
                released: false,
                accept: VecDeque::new(),
                backlog: 0,
                options: TcpOptions::default(),
                rx_blocked: false,
                info: tcp::TcpInfo::default(),
                waiters: 0,
                leader_waits: false,
                signalled: std::cell::Cell::new((false, false)),
            }),
            cond: Condvar::new(),
            readiness: Readiness::new()?,
            wake,
        }))
    }

    fn lock(&self) -> MutexGuard<'_, TcpState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn waitable(&self) -> Waitable<'_, TcpState> {
        Waitable {
            state: &self.state,
            cond: &self.cond,
            kick: &self.wake,
        }
    }

    /// The readiness descriptor.
    #[must_use]
    pub fn fd(&self) -> crate::readiness::RawDescriptor {
        self.readiness.fd()
    }

    fn refresh(&self, st: &TcpState) {
        let readable = !st.rx.is_empty()
            || st.eof
            || st.error.is_some()
            || !st.accept.is_empty()
            || st.phase == Phase::Closed;
        let writable =
            (st.phase == Phase::Connected && st.tx.len() < st.tx_cap && !st.write_shutdown)
                || st.error.is_some()
                || st.phase == Phase::Closed;
        self.readiness.set(readable, writable);
        // Every wait is for the socket to become readable (data, EOF, error, a connection to
        // accept) or writable (room, connected, error): wake waiters when one of them turns
        // true, not on each of the loop's passes.
        // Closing or shutting down from another thread must wake a blocked call too.
        let (r, w) = (
            readable || st.released,
            writable || st.released || st.write_shutdown,
        );
        let (was_r, was_w) = st.signalled.replace((r, w));
        if st.waiters > 0 && ((r && !was_r) || (w && !was_w)) {
            self.cond.notify_all();
        }
        if st.leader_waits && r && !was_r {
            self.wake.interrupt();
        }
    }

    /// Ends the socket with `error` (unless it already failed) and wakes everyone waiting.
    fn fail(&self, error: SockError) {
        let mut st = self.lock();
        st.error.get_or_insert(error);
        st.phase = Phase::Closed;
        self.refresh(&st);
    }

    fn wait<'a>(
        &'a self,
        st: MutexGuard<'a, TcpState>,
        deadline: Option<Instant>,
    ) -> Result<MutexGuard<'a, TcpState>, SockError> {
        wait_on(&self.cond, st, deadline)
    }

    /// Whether a read returns at once: data, EOF, an error, or a socket that cannot receive.
    fn recv_ready(st: &TcpState) -> bool {
        !st.rx.is_empty()
            || st.error.is_some()
            || st.eof
            || st.released
            || matches!(st.phase, Phase::Idle | Phase::Listening)
    }

    /// Whether a send returns at once: room for data, an error, or a socket that cannot send.
    fn send_ready(st: &TcpState) -> bool {
        st.error.is_some()
            || st.write_shutdown
            || st.released
            || match st.phase {
                Phase::Connected => st.tx.len() < st.tx_cap,
                Phase::Connecting => false,
                Phase::Idle | Phase::Listening | Phase::Closed => true,
            }
    }

    /// Waits until a read would not block (data, EOF, an error...) or `deadline` passes
    /// (`WouldBlock`). It takes nothing: another thread may take the data first, so read with
    /// [`Self::try_recv_with`] and wait again if that finds nothing.
    ///
    /// # Errors
    /// `WouldBlock` once `deadline` has passed.
    pub fn wait_readable(&self, deadline: Option<Instant>) -> Result<(), SockError> {
        self.waitable()
            .until(self.lock(), Self::recv_ready, deadline)
            .map(drop)
    }

    /// Reads without blocking, straight from the receive buffer into wherever `take` puts the
    /// bytes: `take` gets up to `max` received bytes as two slices (the buffer is a ring: the
    /// second continues the first) and returns how many of them it consumed (the rest stays
    /// queued) with its result. At EOF, and once the socket was closed, `take` gets two empty
    /// slices. `Ok(None)`: nothing to read yet (see [`Self::wait_readable`]).
    ///
    /// `take` runs with the socket's state locked: it must not block, nor wait for anything
    /// that could be waiting for this socket (a Python caller holds the GIL already and must
    /// not release it in `take`).
    ///
    /// # Errors
    /// The connection failed, or the socket is not connected.
    pub fn try_recv_with<R>(
        &self,
        max: usize,
        take: impl FnOnce(&[u8], &[u8]) -> (usize, R),
    ) -> Result<Option<R>, SockError> {
        let mut st = self.lock();
        if !st.rx.is_empty() {
            let n = max.min(st.rx.len());
            let (a, b) = st.rx.as_slices();
            let first = a.len().min(n);
            let (used, r) = take(&a[..first], &b[..n - first]);
            let used = used.min(n);
            if used > 0 {
                st.rx.drain(..used);
                // The loop needs to hear of it only when it stopped moving data for want of
                // room.
                let wake = std::mem::take(&mut st.rx_blocked);
                self.refresh(&st);
                drop(st);
                if wake {
                    self.wake.wake();
                }
            }
            return Ok(Some(r));
        }
        if let Some(e) = st.error {
            return Err(e);
        }
        if st.eof || st.released {
            return Ok(Some(take(&[], &[]).1));
        }
        if matches!(st.phase, Phase::Idle | Phase::Listening) {
            return Err(SockError::NotConnected);
        }
        Ok(None)
    }

    /// Receives up to `buf.len()` bytes; 0 means EOF. `timeout` None blocks, zero does not.
    ///
    /// # Errors
    /// The connection failed, the socket is not connected, or nothing arrived in time.
    pub fn recv(&self, buf: &mut [u8], timeout: Option<Duration>) -> Result<usize, SockError> {
        let deadline = timeout.map(|t| Instant::now() + t);
        loop {
            let got = self.try_recv_with(buf.len(), |a, b| {
                let n = a.len() + b.len();
                buf[..a.len()].copy_from_slice(a);
                buf[a.len()..n].copy_from_slice(b);
                (n, n)
            })?;
            if let Some(n) = got {
                return Ok(n);
            }
            self.wait_readable(deadline)?;
        }
    }

    /// Waits until a send would not block (room in the send buffer, an error...) or
    /// `deadline` passes (`WouldBlock`); then send with [`Self::try_send`] (which may find the
    /// room taken by another thread: wait again).
    ///
    /// # Errors
    /// `WouldBlock` once `deadline` has passed.
    pub fn wait_writable(&self, deadline: Option<Instant>) -> Result<(), SockError> {
        let mut st = self.lock();
        while !Self::send_ready(&st) {
            st = self.wait(st, deadline)?;
        }
        Ok(())
    }

    /// Queues up to `data.len()` bytes without blocking: how many (at least 1 unless `data` is
    /// empty). `Ok(None)`: no room yet, or still connecting (see [`Self::wait_writable`]). The
    /// bytes are copied with the socket's state locked.
    ///
    /// # Errors
    /// Not connected, write side shut down, or the connection failed.
    pub fn try_send(&self, data: &[u8]) -> Result<Option<usize>, SockError> {
        let mut st = self.lock();
        if let Some(e) = st.error {
            return Err(e);
        }
        if st.write_shutdown || st.released || st.phase == Phase::Closed {
            return Err(SockError::BrokenPipe);
        }
        match st.phase {
            Phase::Connected => {
                let room = st.tx_cap.saturating_sub(st.tx.len());
                if room == 0 {
                    return Ok(None);
                }
                let n = room.min(data.len());
                // Data already waiting means the loop knows (it takes more on its next pass,
                // which incoming ACKs cause): only the first bytes wake it.
                let wake = st.tx.is_empty();
                st.tx.extend(&data[..n]);
                let small = st.tx.len() <= FLUSH_MAX;
                self.refresh(&st);
                drop(st);
                if wake && small {
                    self.wake.flush();
                } else if wake {
                    self.wake.wake();
                }
                Ok(Some(n))
            }
            Phase::Connecting => Ok(None),
            _ => Err(SockError::NotConnected),
        }
    }

    /// Queues up to `data.len()` bytes; returns how many (at least 1 unless it would block).
    ///
    /// # Errors
    /// Not connected, write side shut down, connection failed, or no room in time.
    pub fn send(&self, data: &[u8], timeout: Option<Duration>) -> Result<usize, SockError> {
        let deadline = timeout.map(|t| Instant::now() + t);
        loop {
            if let Some(n) = self.try_send(data)? {
                return Ok(n);
            }
            self.wait_writable(deadline)?;
        }
    }

    /// Waits until connected (or failed).
    ///
    /// # Errors
    /// Refused, timed out, reset.
    pub fn wait_connected(&self, timeout: Option<Duration>) -> Result<(), SockError> {
        let deadline = timeout.map(|t| Instant::now() + t);
        let mut st = self.lock();
        loop {
            if let Some(e) = st.error {
                return Err(e);
            }
            match st.phase {
                Phase::Connected => return Ok(()),
                Phase::Connecting => {}
                Phase::Closed => return Err(SockError::Refused),
                _ => return Err(SockError::NotConnected),
            }
            st = self.wait(st, deadline)?;
        }
    }

    /// The next accepted connection.
    ///
    /// # Errors
    /// Not listening, closed (also while waiting: `Closed`), or none in time.
    pub fn accept(&self, timeout: Option<Duration>) -> Result<Arc<TcpShared>, SockError> {
        let deadline = timeout.map(|t| Instant::now() + t);
        let mut st = self.lock();
        loop {
            // A closed listener hands out nothing (the loop closes what it had queued), and a
            // close from another thread ends a blocked accept.
            if st.released {
                return Err(SockError::Closed);
            }
            if let Some(c) = st.accept.pop_front() {
                let was_full = st.accept.len() + 1 >= st.backlog;
                self.refresh(&st);
                drop(st);
                if was_full {
                    // Connections may wait for room in their sockets: the loop hands one over.
                    self.wake.wake();
                }
                return Ok(c);
            }
            if let Some(e) = st.error {
                return Err(e);
            }
            if st.phase != Phase::Listening {
                return Err(SockError::Invalid);
            }
            st = self.wait(st, deadline)?;
        }
    }

    /// Stops sending (FIN once the queued bytes are out).
    pub fn shutdown_write(&self) {
        let mut st = self.lock();
        st.write_shutdown = true;
        self.refresh(&st);
        drop(st);
        self.wake.wake();
    }

    /// Closes the socket (a graceful close: queued bytes still go out).
    pub fn close(&self) {
        let mut st = self.lock();
        st.released = true;
        st.write_shutdown = true;
        self.refresh(&st);
        drop(st);
        self.wake.wake();
    }

    /// Local and peer addresses.
    #[must_use]
    pub fn addresses(&self) -> (Option<SocketAddr>, Option<SocketAddr>) {
        let st = self.lock();
        (st.local, st.peer)
    }

    /// The current phase.
    #[must_use]
    pub fn phase(&self) -> Phase {
        self.lock().phase
    }

    /// The connection's round-trip estimates, windows and retransmission counters (as Linux's
    /// `TCP_INFO`), as of the loop's last pass over it.
    #[must_use]
    pub fn tcp_info(&self) -> tcp::TcpInfo {
        self.lock().info
    }

    /// Bytes waiting to be read.
    #[must_use]
    pub fn readable_bytes(&self) -> usize {
        self.lock().rx.len()
    }

    /// Sets a socket option (connections accepted by a listener inherit its options).
    ///
    /// # Errors
    /// `Invalid` for a value out of the option's range.
    pub fn set_option(&self, opt: TcpOption, value: i64) -> Result<(), SockError> {
        let ranged = |lo: i64, hi: i64| {
            if (lo..=hi).contains(&value) {
                u32::try_from(value).map_err(|_| SockError::Invalid)
            } else {
                Err(SockError::Invalid)
            }
        };
        {
            let mut st = self.lock();
            let o = &mut st.options;
            match opt {
                TcpOption::NoDelay => o.nodelay = value != 0,
                TcpOption::KeepAlive => o.keepalive = value != 0,
                TcpOption::KeepIdle => o.keepidle = ranged(1, 32_767)?,
                TcpOption::KeepInterval => o.keepintvl = ranged(1, 32_767)?,
                TcpOption::KeepCount => o.keepcnt = ranged(1, 127)?,
                TcpOption::UserTimeout => o.user_timeout = ranged(0, i64::from(i32::MAX))?,
                TcpOption::Congestion => {
                    o.congestion = Congestion::from_number(value).ok_or(SockError::Invalid)?;
                }
            }
        }
        self.wake.wake();
        Ok(())
    }

    /// A socket option's value.
    #[must_use]
    pub fn option(&self, opt: TcpOption) -> i64 {
        let o = self.lock().options;
        match opt {
            TcpOption::NoDelay => i64::from(o.nodelay),
            TcpOption::KeepAlive => i64::from(o.keepalive),
            TcpOption::KeepIdle => i64::from(o.keepidle),
            TcpOption::KeepInterval => i64::from(o.keepintvl),
            TcpOption::KeepCount => i64::from(o.keepcnt),
            TcpOption::UserTimeout => i64::from(o.user_timeout),
            TcpOption::Congestion => o.congestion as i64,
        }
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

fn endpoint(e: zt_stack::smoltcp::wire::IpEndpoint) -> SocketAddr {
    SocketAddr::new(IpAddr::from(e.addr), e.port)
}

/// How many listening sockets a listener keeps armed per address: its backlog and one, as
/// Linux's accept queue holds `backlog + 1` connections.
fn armed_for(backlog: usize) -> usize {
    backlog.saturating_add(1).clamp(1, MAX_ARMED)
}

/// Arms up to `count` listening sockets on `stack` for `(addr, port)`.
fn arm(
    stack: &mut NetStack,
    addr: Option<IpAddr>,
    port: u16,
    count: usize,
    buffers: TcpBuffers,
    handles: &mut Vec<SocketHandle>,
) {
    let ep = IpListenEndpoint {
        addr: addr.map(Into::into),
        port,
    };
    while handles.len() < count {
        let h = buffers.add(stack);
        if stack.tcp(h).listen(ep).is_err() {
            stack.remove(h);
            return;
        }
        handles.push(h);
    }
}

impl Listener {
    /// Arms and disarms so that the listener covers exactly the addresses its scope asks for
    /// on the current stacks.
    fn sync(&mut self, stacks: &mut Stacks, backlog: usize) {
        let scope = self.scope;
        let buffers = self.buffers;
        let port = self.port;
        self.armed.retain_mut(|a| {
            let Some(stack) = stacks.get(a.net) else {
                return false;
            };
            if scope.endpoints(&stack.addresses()).contains(&a.addr) {
                return true;
            }
            for h in a.handles.drain(..) {
                stack.tcp(h).abort();
                stack.remove(h);
            }
            stack.set_listening(port, false);
            false
        });
        for net in stacks.networks() {
            let Some(stack) = stacks.get(net) else {
                continue;
            };
            for addr in scope.endpoints(&stack.addresses()) {
                if self.armed.iter().any(|a| a.net == net && a.addr == addr) {
                    continue;
                }
                let mut handles = Vec::new();
                arm(
                    stack,
                    addr,
                    self.port,
                    armed_for(backlog),
                    buffers,
                    &mut handles,
                );
                stack.set_listening(self.port, true);
                self.armed.push(Armed { net, addr, handles });
            }
        }
    }

    fn disarm(&mut self, stacks: &mut Stacks) {
        for a in self.armed.drain(..) {
            if let Some(stack) = stacks.get(a.net) {
                for h in a.handles {
                    stack.tcp(h).abort();
                    stack.remove(h);
                }
                stack.set_listening(self.port, false);
            }
        }
    }
}

impl SocketTable {
    /// The network whose managed prefixes contain `ip`.
    pub(crate) fn route(stacks: &Stacks, ip: IpAddr) -> Option<NetworkId> {
        stacks.route(ip)
    }

    /// Starts a connection; the returned socket becomes connected (or fails) later.
    ///
    /// # Errors
    /// No network routes the address, or the stack refuses.
    pub fn connect(
        &mut self,
        stacks: &mut Stacks,
        remote: SocketAddr,
        buffers: (usize, usize),
        wake: Kick,
    ) -> Result<Arc<TcpShared>, SockError> {
        self.connect_from(stacks, remote, (None, 0), buffers, wake)
    }

    /// As [`connect`](Self::connect), from `local`: an address of the node on the network
    /// that routes `remote` (None: the one the route gives) and a port (0: an ephemeral one).
    /// Nothing is sent if either is wrong, nor to this node's own address
    /// ([`SockError::OwnAddress`]) or port 0 (refused, as by the kernel).
    ///
    /// # Errors
    /// As `connect`; `AddrNotAvailable` if the address is not the node's on that network,
    /// `AddrInUse` if a socket or listener of the node uses the port.
    pub fn connect_from(
        &mut self,
        stacks: &mut Stacks,
        remote: SocketAddr,
        local: (Option<IpAddr>, u16),
        buffers: (usize, usize),
        wake: Kick,
    ) -> Result<Arc<TcpShared>, SockError> {
        let (local_ip, local_port) = local;
        let local_ip = local_ip.filter(|ip| !ip.is_unspecified());
        if stacks.networks().iter().any(|n| {
            stacks
                .get(*n)
                .is_some_and(|s| s.address_iter().any(|(a, _)| a == remote.ip()))
        }) {
            return Err(SockError::OwnAddress);
        }
        let net = Self::route(stacks, remote.ip()).ok_or(SockError::NetUnreachable)?;
        if remote.port() == 0 {
            return Err(SockError::Refused);
        }
        if local_port != 0
            && (self.listening_on(local_port, None)
                || stacks
                    .networks()
                    .iter()
                    .any(|n| stacks.get(*n).is_some_and(|s| s.port_in_use(local_port))))
        {
            return Err(SockError::AddrInUse);
        }
        let stack = stacks.get(net).ok_or(SockError::NetUnreachable)?;
        let buffers = TcpBuffers::new(buffers);
        let h = buffers.add(stack);
        let port = match stack.tcp_connect_from(h, remote, local_ip, local_port) {
            Ok(p) => p,
            Err(e) => {
                stack.remove(h);
                return Err(match (e, local_ip) {
                    (zt_stack::StackError::AddressNotAvailable, Some(_)) => {
                        SockError::AddrNotAvailable
                    }
                    _ => SockError::NetUnreachable,
                });
            }
        };
        let shared =
            TcpShared::new(buffers.rx, buffers.tx, wake).map_err(|_| SockError::Invalid)?;
        {
            let mut st = shared.lock();
            st.phase = Phase::Connecting;
            st.peer = Some(remote);
            st.local = stack
                .tcp(h)
                .local_endpoint()
                .map(endpoint)
                .or(Some(SocketAddr::new(remote.ip(), port)));
        }
        self.entries.push(Entry {
            shared: shared.clone(),
            kind: Kind::Conn(Conn::new(net, h)),
        });
        Ok(shared)
    }

    /// Listens on `local`: one address (of the network that gives this node that address), or
    /// for an unspecified address every network — including networks configured later — on
    /// their IPv4 addresses (`0.0.0.0`), or on all their addresses (`::`; only the IPv6 ones
    /// with `v6only`).
    ///
    /// # Errors
    /// Port 0, no network gives this node the address, or a listener overlapping this one
    /// holds the port.
    pub fn listen(
        &mut self,
        stacks: &mut Stacks,
        local: SocketAddr,
        backlog: usize,
        v6only: bool,
        buffers: (usize, usize),
        wake: Kick,
    ) -> Result<Arc<TcpShared>, SockError> {
        let scope = match local.ip() {
            IpAddr::V4(v4) if v4.is_unspecified() => Scope::AnyV4,
            IpAddr::V6(v6) if v6.is_unspecified() && v6only => Scope::AnyV6Only,
            IpAddr::V6(v6) if v6.is_unspecified() => Scope::Any,
            ip => {
                let held = stacks.networks().into_iter().any(|n| {
                    stacks
                        .get(n)
                        .is_some_and(|s| s.addresses().iter().any(|(a, _)| *a == ip))
                });
                if !held {
                    return Err(SockError::AddrNotAvailable);
                }
                Scope::Addr(ip)
            }
        };
        // Port 0: an ephemeral port, as the kernel picks for listen() without bind().
        let local = if local.port() == 0 {
            SocketAddr::new(local.ip(), self.free_port(stacks)?)
        } else {
            local
        };
        if self.listening_on(local.port(), Some(scope)) {
            return Err(SockError::AddrInUse);
        }
        let buffers = TcpBuffers::new(buffers);
        let shared =
            TcpShared::new(buffers.rx, buffers.tx, wake).map_err(|_| SockError::Invalid)?;
        let backlog = backlog.max(1);
        {
            let mut st = shared.lock();
            st.phase = Phase::Listening;
            st.local = Some(local);
            st.backlog = backlog;
        }
        let mut l = Listener {
            port: local.port(),
            scope,
            armed: Vec::new(),
            buffers,
        };
        l.sync(stacks, backlog);
        self.entries.push(Entry {
            shared: shared.clone(),
            kind: Kind::Listener(l),
        });
        Ok(shared)
    }

    /// Moves data and state between the shared buffers and the stacks, accepts connections,
    /// aborts connections whose peer went silent for too long. Call after polling the stacks
    /// (and before, to hand over fresh application data); `now_ms` is the stacks' clock. True if
    /// a stack needs polling again (data was queued for sending).
    pub fn service(&mut self, stacks: &mut Stacks, now_ms: i64) -> bool {
        let resync = self.generation != Some(stacks.generation());
        self.generation = Some(stacks.generation());
        let mut again = false;
        let mut new_entries = Vec::new();
        self.entries.retain_mut(|e| match &mut e.kind {
            Kind::Listener(l) => {
                service_listener(&e.shared, l, stacks, resync, now_ms, &mut new_entries)
            }
            Kind::Conn(c) => {
                let Some(stack) = stacks.get(c.net) else {
                    e.shared.fail(SockError::NetUnreachable);
                    return false;
                };
                let (keep, sent) = c.service(&e.shared, stack, now_ms);
                again |= sent;
                keep
            }
        });
        self.entries.extend(new_entries);
        self.next_deadline = self
            .entries
            .iter()
            .filter_map(|e| match &e.kind {
                Kind::Conn(c) => c.deadline,
                Kind::Listener(_) => None,
            })
            .min();
        again
    }

    /// When a connection will time out unless its peer speaks (ms): the loop must run
    /// [`Self::service`] then.
    #[must_use]
    pub fn poll_at(&self) -> Option<i64> {
        self.next_deadline
    }

    /// Sockets held.
    #[must_use]
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are none.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

impl SocketTable {
    /// Whether a listener (not released) holds `port`, in a scope overlapping `scope` (None:
    /// any).
    fn listening_on(&self, port: u16, scope: Option<Scope>) -> bool {
        self.entries.iter().any(|e| match &e.kind {
            Kind::Listener(l) => {
                l.port == port
                    && scope.is_none_or(|s| l.scope.overlaps(s))
                    && !e.shared.lock().released
            }
            Kind::Conn(_) => false,
        })
    }

    /// A port for a listener bound to port 0: from the stacks' ephemeral range, used by no
    /// listener and no socket of any network's stack.
    fn free_port(&mut self, stacks: &mut Stacks) -> Result<u16, SockError> {
        let nets = stacks.networks();
        for _ in 0..=(u16::MAX - zt_stack::stack::EPHEMERAL_FIRST) {
            let port = match nets.first().and_then(|n| stacks.get(*n)) {
                Some(s) => s.ephemeral_port().map_err(|_| SockError::AddrInUse)?,
                None => {
                    let first = zt_stack::stack::EPHEMERAL_FIRST;
                    let p = self.next_port.max(first);
                    self.next_port = if p == u16::MAX { first } else { p + 1 };
                    p
                }
            };
            let used = nets
                .iter()
                .any(|n| stacks.get(*n).is_some_and(|s| s.port_in_use(port)));
            if !used && !self.listening_on(port, None) {
                return Ok(port);
            }
        }
        Err(SockError::AddrInUse)
    }

    /// The node stops: every connection fails here with `NetDown` and is aborted on its stack,
    /// which sends its peer a reset on the stacks' next poll (listeners just close).
    pub fn reset_all(&mut self, stacks: &mut Stacks) {
        for e in &self.entries {
            e.shared.fail(SockError::NetDown);
            if let Kind::Conn(c) = &e.kind
                && let Some(stack) = stacks.get(c.net)
            {
                stack.tcp(c.h).abort();
            }
        }
    }
}

impl Drop for SocketTable {
    /// The node stopped: every socket fails with `NetDown` (nothing stays blocked).
    fn drop(&mut self) {
        for e in &self.entries {
            e.shared.fail(SockError::NetDown);
        }
    }
}

/// Hands established connections of a listener to `accept()` and re-arms; false once the
/// listener is closed and disarmed.
fn service_listener(
    shared: &Arc<TcpShared>,
    l: &mut Listener,
    stacks: &mut Stacks,
    resync: bool,
    now_ms: i64,
    new_entries: &mut Vec<Entry>,
) -> bool {
    let (released, backlog, options) = {
        let st = shared.lock();
        (st.released, st.backlog, st.options)
    };
    let buffers = l.buffers;
    if released {
        l.disarm(stacks);
        // Connections nobody accepted are closed with it.
        let queued: Vec<_> = shared.lock().accept.drain(..).collect();
        for c in queued {
            c.close();
        }
        return false;
    }
    if resync {
        l.sync(stacks, backlog);
    }
    for a in &mut l.armed {
        let Some(stack) = stacks.get(a.net) else {
            continue;
        };
        let mut i = 0;
        let mut taken = 0;
        while i < a.handles.len() {
            let h = a.handles[i];
            let (ready, local, peer) = {
                let s = stack.tcp(h);
                (
                    s.is_active() && !s.is_listening() && s.state() != tcp::State::SynReceived,
                    s.local_endpoint().map(endpoint),
                    s.remote_endpoint().map(endpoint),
                )
            };
            if !ready {
                i += 1;
                continue;
            }
            if shared.lock().accept.len() >= backlog {
                // The accept queue is full: the connection waits in its socket, established
                // (what it receives is buffered and acknowledged up to its window), until
                // accept() makes room, as the kernel keeps a completed handshake. It is not
                // closed: a client would read EOF from a server that never saw it.
                break;
            }
            // A connection: hand it to accept() (a new listener is armed below).
            a.handles.remove(i);
            taken += 1;
            let Ok(c) = TcpShared::new(buffers.rx, buffers.tx, shared.wake.clone()) else {
                stack.tcp(h).abort();
                continue;
            };
            {
                let mut st = c.lock();
                st.phase = Phase::Connected;
                st.local = local;
                st.peer = peer;
                st.options = options;
            }
            let mut conn = Conn::new(a.net, h);
            conn.watch(stack, now_ms);
            new_entries.push(Entry {
                shared: c.clone(),
                kind: Kind::Conn(conn),
            });
            let mut st = shared.lock();
            st.accept.push_back(c);
            shared.refresh(&st);
        }
        if taken > 0 {
            let want = a.handles.len() + taken;
            arm(stack, a.addr, l.port, want, buffers, &mut a.handles);
        }
    }
    true
}

impl Conn {
    fn new(net: NetworkId, h: SocketHandle) -> Self {
        Self {
            net,
            h,
            watched: None,
            waiting: None,
            deadline: None,
            keepalive: None,
            congestion: Congestion::Cubic,
        }
    }

    /// Starts recording the peer's segments once the connection has both endpoints.
    fn watch(&mut self, stack: &mut NetStack, now_ms: i64) {
        if self.watched.is_some() {
            return;
        }
        let s = stack.tcp(self.h);
        if let (Some(l), Some(r)) = (s.local_endpoint(), s.remote_endpoint()) {
            let r = endpoint(r);
            stack.tcp_watch(l.port, r, now_ms);
            self.watched = Some((l.port, r));
        }
    }

    fn unwatch(&mut self, stack: &mut NetStack) {
        if let Some((port, remote)) = self.watched.take() {
            stack.tcp_unwatch(port, remote);
        }
    }

    /// Applies options, enforces the deadline; true if the connection was aborted.
    fn keep_time(&mut self, st: &mut TcpState, stack: &mut NetStack, now_ms: i64) -> bool {
        self.watch(stack, now_ms);
        let o = st.options;
        let s = stack.tcp(self.h);
        s.set_nagle_enabled(!o.nodelay);
        let keepalive = o.keepalive.then_some(o.keepintvl);
        if keepalive != self.keepalive {
            s.set_keep_alive(
                keepalive.map(|i| zt_stack::smoltcp::time::Duration::from_secs(i.into())),
            );
            self.keepalive = keepalive;
        }
        if o.congestion != self.congestion {
            s.set_congestion_control(o.congestion.smoltcp());
            self.congestion = o.congestion;
        }
        use tcp::State as S;
        let wait = match s.state() {
            S::SynSent | S::SynReceived | S::FinWait1 | S::Closing | S::LastAck => Some(Wait::Ack),
            S::Closed | S::TimeWait | S::Listen => None,
            _ if s.send_queue() > 0 => Some(Wait::Ack),
            S::FinWait2 if st.released => Some(Wait::OrphanFin),
            _ if o.keepalive => Some(Wait::KeepAlive),
            _ => None,
        };
        let since = match (self.waiting, wait) {
            (Some((was, t)), Some(w)) if was == w => t,
            _ => now_ms,
        };
        self.waiting = wait.map(|w| (w, since));
        self.deadline = wait.map(|w| {
            let limit = match w {
                Wait::Ack => o.user_timeout_ms(),
                Wait::OrphanFin => ORPHAN_FIN_TIMEOUT_MS,
                Wait::KeepAlive => o.keepalive_limit_ms(),
            };
            let heard = self
                .watched
                .and_then(|(p, r)| stack.tcp_heard(p, r))
                .unwrap_or(since);
            heard.max(since) + limit
        });
        if self.deadline.is_some_and(|d| now_ms >= d) {
            stack.tcp(self.h).abort();
            st.error.get_or_insert(SockError::TimedOut);
            st.phase = Phase::Closed;
            self.deadline = None;
            self.waiting = None;
            return true;
        }
        false
    }

    /// Services one connection: returns (keep the entry, data was queued for sending).
    fn service(&mut self, shared: &TcpShared, stack: &mut NetStack, now_ms: i64) -> (bool, bool) {
        let mut sent = false;
        let mut st = shared.lock();
        if st.phase == Phase::Closed {
            self.deadline = None;
        } else {
            self.keep_time(&mut st, stack, now_ms);
        }
        let s = stack.tcp(self.h);
        match s.state() {
            tcp::State::Established
            | tcp::State::CloseWait
            | tcp::State::FinWait1
            | tcp::State::FinWait2
                if st.phase == Phase::Connecting =>
            {
                st.phase = Phase::Connected;
                st.local = s.local_endpoint().map(endpoint).or(st.local);
            }
            tcp::State::Closed | tcp::State::TimeWait => {
                if st.phase == Phase::Connecting {
                    st.error.get_or_insert(SockError::Refused);
                } else if st.phase == Phase::Connected && !st.eof && !st.write_shutdown {
                    st.error.get_or_insert(SockError::Reset);
                }
                st.phase = Phase::Closed;
            }
            _ => {}
        }
        // Network → application.
        while s.can_recv() && st.rx.len() < st.rx_cap {
            let room = st.rx_cap - st.rx.len();
            let _ = s.recv(|buf| {
                let n = buf.len().min(room);
                st.rx.extend(&buf[..n]);
                (n, ())
            });
        }
        st.rx_blocked = s.can_recv();
        if !s.may_recv()
            && matches!(
                s.state(),
                tcp::State::CloseWait
                    | tcp::State::LastAck
                    | tcp::State::Closing
                    | tcp::State::TimeWait
                    | tcp::State::Closed
            )
        {
            st.eof = true;
        }
        // Application → network.
        while !st.tx.is_empty() && s.can_send() {
            let (a, _) = st.tx.as_slices();
            let n = s.send_slice(a).unwrap_or(0);
            if n == 0 {
                break;
            }
            st.tx.drain(..n);
            sent = true;
        }
        if st.write_shutdown && st.tx.is_empty() && s.may_send() {
            s.close();
            sent = true;
        }
        let done = st.released && (st.phase == Phase::Closed || !s.is_open());
        st.info = s.info();
        shared.refresh(&st);
        drop(st);
        if done {
            self.unwatch(stack);
            stack.remove(self.h);
            return (false, sent);
        }
        (true, sent)
    }
}

// ----- UDP -----------------------------------------------------------------------------------

/// Largest datagram accepted (the network MTU limits what actually fits).
pub const MAX_DATAGRAM: usize = 65_507;

#[derive(Debug)]
struct UdpState {
    rx: VecDeque<(SocketAddr, Vec<u8>)>,
    rx_bytes: usize,
    rx_cap: usize,
    tx: VecDeque<(SocketAddr, Vec<u8>)>,
    tx_bytes: usize,
    tx_cap: usize,
    local: Option<SocketAddr>,
    released: bool,
    /// Datagrams dropped because the receive buffer was full.
    dropped: u64,
    error: Option<SockError>,
    opts: UdpOptions,
    /// The socket's networks as its senders need them (kept by the loop).
    nets: Vec<NetView>,
    /// Threads waiting on the condition variable.
    waiters: usize,
    /// A leading thread waits for this socket ([`Waiters::leader_waits`]).
    leader_waits: bool,
    /// (readable, writable) as of the last refresh: waiters are woken when either turns true.
    signalled: std::cell::Cell<(bool, bool)>,
    /// Emptied datagram buffers, reused for the next datagrams either way.
    spare: Vec<Vec<u8>>,
}

/// Most spare datagram buffers a UDP socket keeps, and the largest one kept.
const SPARE_BUFFERS: usize = 32;
const SPARE_CAPACITY: usize = 16 << 10;

impl UdpState {
    /// Keeps an emptied datagram buffer for reuse (unless there are enough, or it is large).
    fn keep_spare(&mut self, mut d: Vec<u8>) {
        if self.spare.len() < SPARE_BUFFERS && (1..=SPARE_CAPACITY).contains(&d.capacity()) {
            d.clear();
            self.spare.push(d);
        }
    }

    /// Whether a datagram of `len` bytes fits in the send buffer (one always fits in an empty
    /// one).
    fn has_room(&self, len: usize) -> bool {
        self.tx_bytes + len <= self.tx_cap || self.tx.is_empty()
    }
}

impl Waiters for UdpState {
    fn waiters(&mut self) -> &mut usize {
        &mut self.waiters
    }

    fn leader_waits(&mut self) -> &mut bool {
        &mut self.leader_waits
    }
}

/// What application threads and the loop share for one UDP socket.
pub struct UdpShared {
    state: Mutex<UdpState>,
    cond: Condvar,
    readiness: Readiness,
    wake: Kick,
}

impl std::fmt::Debug for UdpShared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UdpShared")
            .field("local", &self.lock().local)
            .finish_non_exhaustive()
    }
}

impl UdpShared {
    fn lock(&self) -> MutexGuard<'_, UdpState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn waitable(&self) -> Waitable<'_, UdpState> {
        Waitable {
            state: &self.state,
            cond: &self.cond,
            kick: &self.wake,
        }
    }

    fn refresh(&self, st: &UdpState) {
        let readable = !st.rx.is_empty() || st.error.is_some() || st.released;
        let writable = st.tx_bytes < st.tx_cap || st.error.is_some();
        self.readiness.set(readable, writable);
        let (was_r, was_w) = st.signalled.replace((readable, writable));
        if st.waiters > 0 && ((readable && !was_r) || (writable && !was_w)) {
            self.cond.notify_all();
        }
        if st.leader_waits && readable && !was_r {
            self.wake.interrupt();
        }
    }

    /// The readiness descriptor.
    #[must_use]
    pub fn fd(&self) -> crate::readiness::RawDescriptor {
        self.readiness.fd()
    }

    /// The bound address.
    #[must_use]
    pub fn local(&self) -> Option<SocketAddr> {
        self.lock().local
    }

    /// Datagrams lost to a full receive buffer.
    #[must_use]
    pub fn dropped(&self) -> u64 {
        self.lock().dropped
    }

    /// Pops the next datagram `accept` takes, dropping those it refuses before it.
    fn next_datagram(
        st: &mut UdpState,
        accept: impl Fn(SocketAddr) -> bool,
    ) -> Option<(SocketAddr, Vec<u8>)> {
        while let Some((from, d)) = st.rx.pop_front() {
            st.rx_bytes -= d.len();
            if accept(from) {
                return Some((from, d));
            }
            st.keep_spare(d);
        }
        None
    }

    /// Whether a read returns at once: a datagram, an error, or closed.
    fn recv_ready(st: &UdpState) -> bool {
        !st.rx.is_empty() || st.released || st.error.is_some()
    }

    /// The next datagram (truncated to `max`) and its sender.
    ///
    /// # Errors
    /// Closed, or nothing in time.
    pub fn recv_from(
        &self,
        max: usize,
        timeout: Option<Duration>,
    ) -> Result<(Vec<u8>, SocketAddr), SockError> {
        let deadline = timeout.map(|t| Instant::now() + t);
        let mut st = self.lock();
        loop {
            if let Some((from, mut d)) = Self::next_datagram(&mut st, |_| true) {
                d.truncate(max);
                self.refresh(&st);
                return Ok((d, from));
            }
            if st.released {
                return Err(SockError::Closed);
            }
            if let Some(e) = st.error {
                return Err(e);
            }
            st = self.waitable().until(st, Self::recv_ready, deadline)?;
        }
    }

    /// Waits until a read would not block (a datagram, an error, closed) or `deadline`
    /// passes (`WouldBlock`); then read with [`Self::try_recv_from_with`].
    ///
    /// # Errors
    /// `WouldBlock` once `deadline` has passed.
    pub fn wait_readable(&self, deadline: Option<Instant>) -> Result<(), SockError> {
        self.waitable()
            .until(self.lock(), Self::recv_ready, deadline)
            .map(drop)
    }

    /// Reads the next datagram without blocking: datagrams whose sender `accept` refuses are
    /// dropped; `take` gets the first one it accepts (truncated to `max`) with its sender and
    /// returns whether it consumed it (false: the datagram stays first in the queue) and its
    /// result. `Ok(None)`: nothing (accepted) to read yet (see [`Self::wait_readable`]).
    ///
    /// `take` runs with the socket's state locked: it must not block, nor wait for anything
    /// that could be waiting for this socket.
    ///
    /// # Errors
    /// Closed, or the node stopped.
    pub fn try_recv_from_with<R>(
        &self,
        max: usize,
        accept: impl Fn(SocketAddr) -> bool,
        take: impl FnOnce(&[u8], SocketAddr) -> (bool, R),
    ) -> Result<Option<R>, SockError> {
        let mut st = self.lock();
        let before = st.rx.len();
        if let Some((from, d)) = Self::next_datagram(&mut st, accept) {
            let (used, r) = take(&d[..max.min(d.len())], from);
            if used {
                st.keep_spare(d);
            } else {
                st.rx_bytes += d.len();
                st.rx.push_front((from, d));
            }
            self.refresh(&st);
            return Ok(Some(r));
        }
        if st.rx.len() != before {
            self.refresh(&st);
        }
        if st.released {
            return Err(SockError::Closed);
        }
        if let Some(e) = st.error {
            return Err(e);
        }
        Ok(None)
    }

    /// Waits until a datagram of `len` bytes can be queued (or sending fails at once) or
    /// `deadline` passes (`WouldBlock`); then send with [`Self::try_send_to`].
    ///
    /// # Errors
    /// `WouldBlock` once `deadline` has passed.
    pub fn wait_writable(&self, len: usize, deadline: Option<Instant>) -> Result<(), SockError> {
        let mut st = self.lock();
        while !(st.released || st.error.is_some() || st.has_room(len)) {
            st = wait_on(&self.cond, st, deadline)?;
        }
        Ok(())
    }

    /// Queues a datagram to `to` without blocking (its bytes are copied with the socket's
    /// state locked): its length, or `Ok(None)` while the send buffer has no room for it.
    ///
    /// # Errors
    /// Closed, too large, or the node stopped.
    pub fn try_send_to(&self, data: &[u8], to: SocketAddr) -> Result<Option<usize>, SockError> {
        if data.len() > MAX_DATAGRAM {
            return Err(SockError::Invalid);
        }
        let mut st = self.lock();
        if st.released {
            return Err(SockError::Closed);
        }
        if let Some(e) = st.error {
            return Err(e);
        }
        st.permit(to.ip())?;
        if st.max_payload(to.ip()).is_some_and(|max| data.len() > max) {
            return Err(SockError::MsgSize);
        }
        if !st.has_room(data.len()) {
            return Ok(None);
        }
        let mut d = st.spare.pop().unwrap_or_default();
        d.extend_from_slice(data);
        st.tx_bytes += d.len();
        st.tx.push_back((to, d));
        let small = st.tx_bytes <= FLUSH_MAX;
        self.refresh(&st);
        drop(st);
        if small {
            self.wake.flush();
        } else {
            self.wake.wake();
        }
        Ok(Some(data.len()))
    }

    /// Queues a datagram to `to`.
    ///
    /// # Errors
    /// Closed, too large, or no room in time.
    pub fn send_to(
        &self,
        data: &[u8],
        to: SocketAddr,
        timeout: Option<Duration>,
    ) -> Result<usize, SockError> {
        let deadline = timeout.map(|t| Instant::now() + t);
        loop {
            if let Some(n) = self.try_send_to(data, to)? {
                return Ok(n);
            }
            self.wait_writable(data.len(), deadline)?;
        }
    }

    /// Closes the socket.
    pub fn close(&self) {
        let mut st = self.lock();
        st.released = true;
        self.refresh(&st);
        drop(st);
        self.wake.wake();
    }
}

/// How long a closed UDP socket may still send what was queued before its close (a link
/// address being resolved, a full stack buffer).
const UDP_LINGER: Duration = Duration::from_secs(2);

#[derive(Debug)]
struct UdpEntry {
    shared: Arc<UdpShared>,
    /// When the loop first saw the socket closed (it lingers while it has data to send).
    closed_at: Option<Instant>,
    /// One smoltcp socket per network it is bound on.
    handles: Vec<(NetworkId, SocketHandle)>,
    /// The bound port.
    port: u16,
    /// The address its smoltcp sockets listen on (None: any).
    listen: Option<IpAddr>,
    /// Bound to a specific address: only datagrams to it are taken.
    only: Option<IpAddr>,
    /// Bound to an unspecified, multicast or broadcast address: on every network, including
    /// networks configured later.
    follows: bool,
    /// Receive buffer size of its smoltcp sockets.
    rx_bytes: usize,
    /// Multicast groups joined: (group, interface address or None for every network).
    groups: Vec<(IpAddr, Option<IpAddr>)>,
}

/// The loop thread's UDP sockets.
#[derive(Debug, Default)]
pub struct UdpTable {
    entries: Vec<UdpEntry>,
    /// The stacks' generation the sockets' networks were set up for.
    generation: Option<u64>,
    /// Multicast groups joined on the stacks (and their Ethernet groups subscribed on the
    /// node), for all sockets together.
    applied: BTreeSet<(NetworkId, IpAddr)>,
    /// Memberships may differ from `applied`.
    groups_dirty: bool,
}

impl Drop for UdpTable {
    /// The node stopped: every socket fails with `NetDown` (nothing stays blocked).
    fn drop(&mut self) {
        for e in &self.entries {
            let mut st = e.shared.lock();
            st.error.get_or_insert(SockError::NetDown);
            e.shared.refresh(&st);
        }
    }
}

impl UdpTable {
    /// Binds `local` (port 0: an ephemeral port). An unspecified, multicast or
    /// 255.255.255.255 address binds on every configured network, networks configured later
    /// included; a socket bound to a specific address (unicast, multicast or broadcast) takes
    /// only datagrams to that address, as on Linux.
    ///
    /// # Errors
    /// No network for the address, or the port is taken.
    pub fn bind(
        &mut self,
        stacks: &mut Stacks,
        local: SocketAddr,
        buffers: (usize, usize),
        wake: Kick,
    ) -> Result<Arc<UdpShared>, SockError> {
        let ip = local.ip();
        let follows = ip.is_unspecified() || ip.is_multicast() || ip == Ipv4Addr::BROADCAST;
        let nets: Vec<NetworkId> = if follows {
            stacks.networks()
        } else {
            SocketTable::route(stacks, ip).into_iter().collect()
        };
        // Bound to a group or broadcast address, the smoltcp sockets listen on any (so that
        // what they send has a source address of the network) and the loop filters.
        let listen = (!follows && !is_directed_broadcast(stacks, &nets, ip)).then_some(ip);
        let Some(first) = nets.first().copied() else {
            return Err(SockError::NetUnreachable);
        };
        let port = if local.port() == 0 {
            stacks
                .get(first)
                .ok_or(SockError::NetUnreachable)?
                .ephemeral_port()
                .map_err(|_| SockError::AddrInUse)?
        } else {
            local.port()
        };
        let taken = self.entries.iter().any(|e| {
            !e.shared.lock().released
                && e.shared.local().map(|l| l.port()) == Some(port)
                && e.handles.iter().any(|(n, _)| nets.contains(n))
        });
        if taken {
            return Err(SockError::AddrInUse);
        }
        let mut handles = Vec::new();
        let rx_bytes = buffers.0.max(MAX_DATAGRAM);
        for n in nets {
            let Some(s) = stacks.get(n) else { continue };
            let h = s.add_udp(256, rx_bytes);
            let ep = IpListenEndpoint {
                addr: listen.map(Into::into),
                port,
            };
            if s.udp(h).bind(ep).is_err() {
                s.remove(h);
                for (n2, h2) in handles {
                    if let Some(s2) = stacks.get(n2) {
                        s2.remove(h2);
                    }
                }
                return Err(SockError::AddrInUse);
            }
            handles.push((n, h));
        }
        let shared = Arc::new(UdpShared {
            state: Mutex::new(UdpState {
                rx: VecDeque::new(),
                rx_bytes: 0,
                rx_cap: buffers.0,
                tx: VecDeque::new(),
                tx_bytes: 0,
                tx_cap: buffers.1,
                local: Some(SocketAddr::new(local.ip(), port)),
                released: false,
                dropped: 0,
                error: None,
                waiters: 0,
                leader_waits: false,
                signalled: std::cell::Cell::new((false, false)),
                opts: UdpOptions::default(),
                nets: net_views(stacks, &handles),
                spare: Vec::new(),
            }),
            cond: Condvar::new(),
            readiness: Readiness::new().map_err(|_| SockError::Invalid)?,
            wake,
        });
        {
            let st = shared.lock();
            shared.refresh(&st);
        }
        self.entries.push(UdpEntry {
            closed_at: None,
            shared: shared.clone(),
            handles,
            port,
            listen,
            only: (!ip.is_unspecified()).then_some(ip),
            follows,
            rx_bytes,
            groups: Vec::new(),
        });
        Ok(shared)
    }

    /// Moves datagrams between the shared queues and the stacks; true if any was sent.
    pub fn service(&mut self, stacks: &mut Stacks) -> bool {
        if self.generation != Some(stacks.generation()) {
            self.generation = Some(stacks.generation());
            self.resync(stacks);
        }
        let mut sent = false;
        let mut looped = Vec::new();
        let mut groups_gone = false;
        self.entries.retain_mut(|e| {
            let mut st = e.shared.lock();
            // A closed socket first sends what sendto() took before the close (as the kernel
            // does), for at most UDP_LINGER; then its stack sockets go.
            let closed_since = if st.released {
                Some(*e.closed_at.get_or_insert_with(Instant::now))
            } else {
                None
            };
            for (n, h) in e.handles.iter().filter(|_| closed_since.is_none()) {
                let Some(s) = stacks.get(*n) else { continue };
                let sock = s.udp(*h);
                while let Ok((data, meta)) = sock.recv() {
                    if e.only.is_some_and(|o| meta.local_address != Some(o.into())) {
                        continue;
                    }
                    if st.rx_bytes + data.len() > st.rx_cap {
                        st.dropped += 1;
                        continue;
                    }
                    st.rx_bytes += data.len();
                    let mut d = st.spare.pop().unwrap_or_default();
                    d.extend_from_slice(data);
                    st.rx.push_back((endpoint(meta.endpoint), d));
                }
            }
            while let Some((to, _)) = st.tx.front() {
                let to = *to;
                if st.kind(to.ip()) != Dest::Unicast {
                    match send_group(e, &mut st, stacks, to, &mut looped) {
                        GroupSend::Blocked => break,
                        GroupSend::Sent => sent = true,
                        GroupSend::Dropped => {}
                    }
                    continue;
                }
                let net = SocketTable::route(stacks, to.ip())
                    .filter(|n| e.handles.iter().any(|(m, _)| m == n));
                let Some(net) = net else {
                    // Nothing routes it: dropped like an unroutable datagram.
                    if let Some((_, d)) = st.tx.pop_front() {
                        st.tx_bytes -= d.len();
                        st.keep_spare(d);
                    }
                    continue;
                };
                if stacks
                    .get(net)
                    .is_some_and(|s| s.address_iter().any(|(a, _)| a == to.ip()))
                {
                    // To this node's own address: delivered to its own socket on that port, as
                    // through the kernel's loopback (the stack would ask the network for it).
                    if let Some((_, d)) = st.tx.pop_front() {
                        st.tx_bytes -= d.len();
                        looped.push(Looped {
                            nets: vec![net],
                            to,
                            from: (e.listen, e.port),
                            kind: Dest::Unicast,
                            data: d,
                        });
                        sent = true;
                    }
                    continue;
                }
                let Some(h) = e.handles.iter().find(|(m, _)| *m == net).map(|(_, h)| *h) else {
                    break;
                };
                let Some(s) = stacks.get(net) else { break };
                let sock = s.udp(h);
                if !sock.can_send() {
                    break;
                }
                let Some((_, d)) = st.tx.pop_front() else {
                    break;
                };
                st.tx_bytes -= d.len();
                let ep = zt_stack::smoltcp::wire::IpEndpoint::new(to.ip().into(), to.port());
                if sock.send_slice(&d, ep).is_ok() {
                    sent = true;
                }
                st.keep_spare(d);
            }
            if let Some(since) = closed_since {
                let queued = !st.tx.is_empty()
                    || e.handles
                        .iter()
                        .any(|(n, h)| stacks.get(*n).is_some_and(|s| s.udp(*h).send_queue() > 0));
                if !queued || since.elapsed() >= UDP_LINGER {
                    for (n, h) in &e.handles {
                        if let Some(s) = stacks.get(*n) {
                            s.remove(*h);
                        }
                    }
                    groups_gone |= !e.groups.is_empty();
                    return false;
                }
            }
            e.shared.refresh(&st);
            true
        });
        self.groups_dirty |= groups_gone;
        for l in looped {
            self.loop_back(stacks, &l);
        }
        sent
    }
}

// ----- UDP broadcast and multicast ------------------------------------------------------------

/// Most multicast groups one UDP socket may join (Linux's `igmp_max_memberships`).
pub const MAX_MEMBERSHIPS: usize = 20;

/// A UDP socket option (`setsockopt`/`getsockopt`; 0/1 values).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum UdpOption {
    /// `SO_BROADCAST`: datagrams to broadcast addresses may be sent (off by default; without
    /// it such sends fail with EACCES, as on Linux).
    Broadcast,
    /// `IP_MULTICAST_LOOP`: the node's own sockets get the IPv4 multicasts this socket sends
    /// (on by default).
    MulticastLoopV4,
    /// `IPV6_MULTICAST_LOOP`: the same for IPv6 (on by default).
    MulticastLoopV6,
}

#[derive(Clone, Copy, Debug)]
struct UdpOptions {
    broadcast: bool,
    loop_v4: bool,
    loop_v6: bool,
    /// `IP_MULTICAST_IF`: the network IPv4 multicasts go out on (None: every network of the
    /// socket that has an IPv4 address).
    multicast_if: Option<NetworkId>,
}

impl Default for UdpOptions {
    fn default() -> Self {
        Self {
            broadcast: false,
            loop_v4: true,
            loop_v6: true,
            multicast_if: None,
        }
    }
}

/// One network of a UDP socket, as its senders need it.
#[derive(Clone, Debug)]
struct NetView {
    id: NetworkId,
    /// The node's IPv4 addresses there, with their prefix lengths.
    v4: Vec<(Ipv4Addr, u8)>,
    policy: Policy,
    /// The network's IP MTU.
    mtu: usize,
}

/// What a destination address is to a socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Dest {
    Unicast,
    /// 255.255.255.255 or the directed broadcast address of one of the socket's networks.
    Broadcast,
    Multicast,
}

/// The directed broadcast address of an IPv4 prefix (none for /31 and /32).
fn broadcast_of(ip: Ipv4Addr, bits: u8) -> Option<Ipv4Addr> {
    (bits < 31).then(|| Ipv4Addr::from_bits(ip.to_bits() | (u32::MAX >> bits)))
}

fn net_views(stacks: &mut Stacks, handles: &[(NetworkId, SocketHandle)]) -> Vec<NetView> {
    handles
        .iter()
        .filter_map(|(id, _)| {
            let policy = stacks.policy(*id);
            let v4 = stacks
                .get(*id)?
                .addresses()
                .into_iter()
                .filter_map(|(a, bits)| match a {
                    IpAddr::V4(v4) => Some((v4, bits)),
                    IpAddr::V6(_) => None,
                })
                .collect();
            let mtu = stacks.get(*id)?.mtu();
            Some(NetView {
                id: *id,
                v4,
                policy,
                mtu,
            })
        })
        .collect()
}

/// Whether `ip` is the directed broadcast address of one of these networks.
fn is_directed_broadcast(stacks: &mut Stacks, nets: &[NetworkId], ip: IpAddr) -> bool {
    let IpAddr::V4(ip) = ip else { return false };
    nets.iter().any(|n| {
        stacks.get(*n).is_some_and(|s| {
            s.addresses().iter().any(|(a, bits)| match a {
                IpAddr::V4(a) => broadcast_of(*a, *bits) == Some(ip),
                IpAddr::V6(_) => false,
            })
        })
    })
}

impl UdpState {
    fn kind(&self, ip: IpAddr) -> Dest {
        match ip {
            _ if ip.is_multicast() => Dest::Multicast,
            IpAddr::V4(v4)
                if v4 == Ipv4Addr::BROADCAST
                    || self
                        .nets
                        .iter()
                        .any(|n| n.v4.iter().any(|(a, b)| broadcast_of(*a, *b) == Some(v4))) =>
            {
                Dest::Broadcast
            }
            _ => Dest::Unicast,
        }
    }

    /// The networks a broadcast or multicast to `to` goes out on (if the network allows it).
    fn targets(&self, to: IpAddr, kind: Dest) -> impl Iterator<Item = &NetView> {
        let opts = self.opts;
        self.nets.iter().filter(move |n| match (kind, to) {
            (Dest::Unicast, _) => false,
            (Dest::Broadcast, IpAddr::V4(b)) if b != Ipv4Addr::BROADCAST => {
                n.v4.iter()
                    .any(|(a, bits)| broadcast_of(*a, *bits) == Some(b))
            }
            (Dest::Broadcast, _) => !n.v4.is_empty(),
            (Dest::Multicast, IpAddr::V4(_)) => {
                !n.v4.is_empty() && opts.multicast_if.is_none_or(|m| m == n.id)
            }
            (Dest::Multicast, IpAddr::V6(_)) => true,
        })
    }

    /// The largest payload of a datagram to `to` that its network carries in one IP packet
    /// (the stacks do not fragment, so a larger one could only be lost): the MTU of the
    /// socket's network whose IPv4 subnet holds `to`, else the smallest of its networks'.
    /// `None` before the socket has a network.
    fn max_payload(&self, to: IpAddr) -> Option<usize> {
        let headers = if to.is_ipv4() { 20 + 8 } else { 40 + 8 };
        let holds = |n: &&NetView| match to {
            IpAddr::V4(a) => n.v4.iter().any(|(mine, bits)| {
                let mask = u32::MAX.checked_shl(32 - u32::from(*bits)).unwrap_or(0);
                u32::from(*mine) & mask == u32::from(a) & mask
            }),
            IpAddr::V6(_) => false,
        };
        let mtu = self
            .nets
            .iter()
            .filter(holds)
            .map(|n| n.mtu)
            .min()
            .or_else(|| self.nets.iter().map(|n| n.mtu).min())?;
        Some(mtu.saturating_sub(headers))
    }

    /// Whether the application may send to `to`: not from an address of the other family
    /// (ENETUNREACH); a broadcast needs `SO_BROADCAST` (EACCES) and some network to send it on
    /// (ENETUNREACH) whose config allows it (EPERM); so does a multicast.
    fn permit(&self, to: IpAddr) -> Result<(), SockError> {
        // A socket bound to an address of one family has no source address for the other.
        if let Some(l) = self.local
            && !l.ip().is_unspecified()
            && l.is_ipv4() != to.is_ipv4()
        {
            return Err(SockError::NetUnreachable);
        }
        let kind = self.kind(to);
        if kind == Dest::Unicast {
            return Ok(());
        }
        if kind == Dest::Broadcast && !self.opts.broadcast {
            return Err(SockError::Access);
        }
        let mut any = false;
        for n in self.targets(to, kind) {
            if allows(n.policy, kind) {
                return Ok(());
            }
            any = true;
        }
        Err(if any {
            SockError::NotPermitted
        } else {
            SockError::NetUnreachable
        })
    }
}

fn allows(p: Policy, kind: Dest) -> bool {
    match kind {
        Dest::Unicast => true,
        Dest::Broadcast => p.broadcast,
        Dest::Multicast => p.multicast,
    }
}

impl UdpShared {
    /// Sets an option.
    pub fn set_option(&self, opt: UdpOption, value: i64) {
        let mut st = self.lock();
        let on = value != 0;
        match opt {
            UdpOption::Broadcast => st.opts.broadcast = on,
            UdpOption::MulticastLoopV4 => st.opts.loop_v4 = on,
            UdpOption::MulticastLoopV6 => st.opts.loop_v6 = on,
        }
    }

    /// An option's value.
    #[must_use]
    pub fn option(&self, opt: UdpOption) -> i64 {
        let o = self.lock().opts;
        i64::from(match opt {
            UdpOption::Broadcast => o.broadcast,
            UdpOption::MulticastLoopV4 => o.loop_v4,
            UdpOption::MulticastLoopV6 => o.loop_v6,
        })
    }

    /// Whether datagrams may be sent to `to` (what `send_to` checks first; `connect` checks
    /// it too).
    ///
    /// # Errors
    /// `Access` for a broadcast address without [`UdpOption::Broadcast`], `NetUnreachable`
    /// when no network of the socket takes a broadcast or multicast to `to`, `NotPermitted`
    /// when their configs disable it.
    pub fn check_destination(&self, to: IpAddr) -> Result<(), SockError> {
        self.lock().permit(to)
    }

    /// Queues a datagram for the application as if it had arrived (a copy of a broadcast or
    /// multicast this node sent).
    fn deliver(&self, from: SocketAddr, data: &[u8]) {
        let mut st = self.lock();
        if st.released {
            return;
        }
        if st.rx_bytes + data.len() > st.rx_cap {
            st.dropped += 1;
        } else {
            st.rx_bytes += data.len();
            st.rx.push_back((from, data.to_vec()));
        }
        self.refresh(&st);
    }
}

/// A broadcast or multicast a socket sent, to be delivered to the node's own sockets too.
#[derive(Debug)]
struct Looped {
    nets: Vec<NetworkId>,
    to: SocketAddr,
    /// The sender's address, if bound to a specific unicast one, and port.
    from: (Option<IpAddr>, u16),
    kind: Dest,
    data: Vec<u8>,
}

enum GroupSend {
    /// A network's socket has no room: try again later.
    Blocked,
    Sent,
    /// No network takes it any more.
    Dropped,
}

/// Sends the first queued datagram, a broadcast or multicast, on each of the socket's networks
/// that takes it.
fn send_group(
    e: &UdpEntry,
    st: &mut UdpState,
    stacks: &mut Stacks,
    to: SocketAddr,
    looped: &mut Vec<Looped>,
) -> GroupSend {
    let kind = st.kind(to.ip());
    let targets: Vec<(NetworkId, SocketHandle)> = st
        .targets(to.ip(), kind)
        .filter(|n| allows(n.policy, kind))
        .filter_map(|n| e.handles.iter().find(|(m, _)| *m == n.id).copied())
        .collect();
    for (n, h) in &targets {
        if stacks.get(*n).is_some_and(|s| !s.udp(*h).can_send()) {
            return GroupSend::Blocked;
        }
    }
    let Some((_, d)) = st.tx.pop_front() else {
        return GroupSend::Dropped;
    };
    st.tx_bytes -= d.len();
    let ep = zt_stack::smoltcp::wire::IpEndpoint::new(to.ip().into(), to.port());
    let mut sent = Vec::new();
    for (n, h) in targets {
        if let Some(s) = stacks.get(n)
            && s.udp(h).send_slice(&d, ep).is_ok()
        {
            sent.push(n);
        }
    }
    if sent.is_empty() {
        return GroupSend::Dropped;
    }
    let loop_back = match (kind, to.ip()) {
        (Dest::Multicast, IpAddr::V4(_)) => st.opts.loop_v4,
        (Dest::Multicast, IpAddr::V6(_)) => st.opts.loop_v6,
        _ => true,
    };
    if loop_back {
        looped.push(Looped {
            nets: sent,
            to,
            from: (e.listen, e.port),
            kind,
            data: d,
        });
    }
    GroupSend::Sent
}

/// The source address a datagram from a socket listening on any address to `to` carries on a
/// stack with these addresses (the one smoltcp would pick, near enough).
fn source_for(addrs: &[(IpAddr, u8)], to: IpAddr) -> Option<IpAddr> {
    match to {
        IpAddr::V4(_) => addrs.iter().map(|(a, _)| *a).find(IpAddr::is_ipv4),
        IpAddr::V6(g) => {
            let link_local = |a: &IpAddr| matches!(a, IpAddr::V6(v) if v.is_unicast_link_local());
            // Interface- and link-local groups are answered from the link-local address.
            let small_scope = g.is_multicast() && g.octets()[1] & 0x0f <= 2;
            let wide = addrs
                .iter()
                .map(|(a, _)| *a)
                .find(|a| a.is_ipv6() && !link_local(a));
            let ll = addrs.iter().map(|(a, _)| *a).find(link_local);
            if small_scope {
                ll.or(wide)
            } else {
                wide.or(ll)
            }
        }
    }
}

impl UdpTable {
    /// Follows the stacks: drops the sockets of networks that went, binds sockets on
    /// unspecified, multicast or broadcast addresses on networks that came, refreshes what
    /// senders know of their networks.
    fn resync(&mut self, stacks: &mut Stacks) {
        let nets = stacks.networks();
        let mut held: HashSet<(NetworkId, u16)> = HashSet::new();
        for e in &mut self.entries {
            e.handles.retain(|(n, _)| stacks.get(*n).is_some());
            held.extend(e.handles.iter().map(|(n, _)| (*n, e.port)));
        }
        for e in &mut self.entries {
            if e.shared.lock().released {
                continue;
            }
            if e.follows {
                for n in &nets {
                    if held.contains(&(*n, e.port)) {
                        continue;
                    }
                    let Some(s) = stacks.get(*n) else { continue };
                    let h = s.add_udp(256, e.rx_bytes);
                    let ep = IpListenEndpoint {
                        addr: e.listen.map(Into::into),
                        port: e.port,
                    };
                    if s.udp(h).bind(ep).is_err() {
                        s.remove(h);
                        continue;
                    }
                    e.handles.push((*n, h));
                    held.insert((*n, e.port));
                }
            }
            let views = net_views(stacks, &e.handles);
            e.shared.lock().nets = views;
        }
        self.groups_dirty = true;
    }

    /// Delivers a copy of a broadcast or multicast this node sent to its own sockets bound to
    /// the destination port on those networks (for a multicast, if the node joined the group
    /// there); one copy per socket, however many of its networks the datagram went out on. A
    /// datagram to one of the node's own addresses goes to one socket (it went nowhere else).
    fn loop_back(&self, stacks: &mut Stacks, l: &Looped) {
        let mut done = vec![false; self.entries.len()];
        for &net in &l.nets {
            if l.kind == Dest::Multicast && !self.applied.contains(&(net, l.to.ip())) {
                continue;
            }
            let src = match (l.from.0, l.kind) {
                (Some(a), _) => Some(a),
                // To itself: from the address it was sent to, as over loopback.
                (None, Dest::Unicast) => Some(l.to.ip()),
                (None, _) => stacks
                    .get(net)
                    .and_then(|s| source_for(&s.addresses(), l.to.ip())),
            };
            let Some(src) = src else { continue };
            for (e, done) in self.entries.iter().zip(&mut done) {
                if !*done
                    && e.port == l.to.port()
                    && e.only.is_none_or(|o| o == l.to.ip())
                    && e.handles.iter().any(|(n, _)| *n == net)
                    && !e.shared.lock().released
                {
                    *done = true;
                    e.shared.deliver(SocketAddr::new(src, l.from.1), &l.data);
                    if l.kind == Dest::Unicast {
                        // One socket gets a unicast datagram.
                        return;
                    }
                }
            }
        }
    }

    fn entry(&mut self, shared: &Arc<UdpShared>) -> Result<&mut UdpEntry, SockError> {
        self.entries
            .iter_mut()
            .find(|e| Arc::ptr_eq(&e.shared, shared) && !e.shared.lock().released)
            .ok_or(SockError::Closed)
    }

    /// The network among the entry's where this node has the address `ip`.
    fn network_with(stacks: &mut Stacks, e: &UdpEntry, ip: IpAddr) -> Option<NetworkId> {
        e.handles.iter().map(|(n, _)| *n).find(|n| {
            stacks
                .get(*n)
                .is_some_and(|s| s.addresses().iter().any(|(a, _)| *a == ip))
        })
    }

    /// Joins (`join`) or leaves the multicast group `group` for a socket: on every network of
    /// the socket (`iface` None; networks it gets later included) or on the one where this
    /// node has the address `iface`. The node's stack then takes datagrams to the group and
    /// the node announces the matching Ethernet group (01:00:5e or 33:33 and the group's low
    /// bits, ADI 0) to the network, so that senders include it. Memberships are counted over
    /// all sockets, and a socket's end when it closes. Leaving with `iface` None leaves the
    /// group's first membership.
    ///
    /// # Errors
    /// `Invalid` for a group that is not multicast, `Closed` for a closed socket, `NoDevice`
    /// when no network of the socket gives this node `iface`, `AddrInUse` for a membership
    /// held already, `AddrNotAvailable` for leaving one not held, `NoBuffers` beyond
    /// [`MAX_MEMBERSHIPS`] or when a network's group table is full.
    #[allow(clippy::too_many_arguments)]
    pub fn membership(
        &mut self,
        node: &mut zt_proto::Node,
        now: zt_proto::Timestamp,
        stacks: &mut Stacks,
        shared: &Arc<UdpShared>,
        group: IpAddr,
        iface: Option<IpAddr>,
        join: bool,
    ) -> Result<(), SockError> {
        if !group.is_multicast() {
            return Err(SockError::Invalid);
        }
        let e = self.entry(shared)?;
        if let Some(a) = iface
            && Self::network_with(stacks, e, a).is_none()
        {
            return Err(SockError::NoDevice);
        }
        let m = (group, iface);
        if !join {
            let i = e
                .groups
                .iter()
                .position(|g| *g == m || (iface.is_none() && g.0 == group))
                .ok_or(SockError::AddrNotAvailable)?;
            e.groups.remove(i);
            self.apply_groups(node, now, stacks);
            return Ok(());
        }
        if e.groups.contains(&m) {
            return Err(SockError::AddrInUse);
        }
        if e.groups.len() >= MAX_MEMBERSHIPS {
            return Err(SockError::NoBuffers);
        }
        e.groups.push(m);
        let failed = self.apply_groups(node, now, stacks);
        if failed.iter().any(|(_, g)| *g == group) {
            if let Ok(e) = self.entry(shared) {
                e.groups.retain(|g| *g != m);
            }
            self.apply_groups(node, now, stacks);
            return Err(SockError::NoBuffers);
        }
        Ok(())
    }

    /// Sets the network IPv4 multicasts of a socket go out on: the one where this node has
    /// the address `iface` (`IP_MULTICAST_IF`), or None for every network of the socket that
    /// has an IPv4 address.
    ///
    /// # Errors
    /// `Closed` for a closed socket, `AddrNotAvailable` when no network of the socket gives
    /// this node that address.
    pub fn set_multicast_if(
        &mut self,
        stacks: &mut Stacks,
        shared: &Arc<UdpShared>,
        iface: Option<Ipv4Addr>,
    ) -> Result<(), SockError> {
        let e = self.entry(shared)?;
        let net = match iface {
            None => None,
            Some(a) => Some(
                Self::network_with(stacks, e, IpAddr::V4(a)).ok_or(SockError::AddrNotAvailable)?,
            ),
        };
        shared.lock().opts.multicast_if = net;
        Ok(())
    }

    /// Brings the stacks' groups and the node's subscriptions in line with the sockets'
    /// memberships if they may differ (a socket closed, networks changed); true if anything
    /// changed.
    pub fn sync_groups(
        &mut self,
        node: &mut zt_proto::Node,
        now: zt_proto::Timestamp,
        stacks: &mut Stacks,
    ) -> bool {
        if !std::mem::take(&mut self.groups_dirty) {
            return false;
        }
        let before = self.applied.clone();
        let failed = self.apply_groups(node, now, stacks);
        for (n, g) in failed {
            log::warn!(target: "zt.sockets", "cannot join multicast group {g} on {n}: table full");
        }
        before != self.applied
    }

    /// Joins and leaves groups on the stacks and node so that they match the memberships;
    /// returns the (network, group) joins that failed (table full).
    fn apply_groups(
        &mut self,
        node: &mut zt_proto::Node,
        now: zt_proto::Timestamp,
        stacks: &mut Stacks,
    ) -> Vec<(NetworkId, IpAddr)> {
        use zt_proto::network::MulticastGroup;
        let mut wanted = BTreeSet::new();
        for e in &self.entries {
            if e.groups.is_empty() || e.shared.lock().released {
                continue;
            }
            for (n, _) in &e.handles {
                let Some(s) = stacks.get(*n) else { continue };
                let addrs = s.addresses();
                for (g, iface) in &e.groups {
                    if iface.is_none_or(|a| addrs.iter().any(|(x, _)| *x == a)) {
                        wanted.insert((*n, *g));
                    }
                }
            }
        }
        let gone: Vec<_> = self.applied.difference(&wanted).copied().collect();
        let new: Vec<_> = wanted.difference(&self.applied).copied().collect();
        for (n, g) in gone {
            self.applied.remove(&(n, g));
            if let Some(s) = stacks.get(n) {
                let _ = s.leave_multicast(g);
            }
            let Some(mg) = MulticastGroup::for_ip(g) else {
                continue;
            };
            // Another group may share the Ethernet group (the low bits of the address).
            let shared = self
                .applied
                .iter()
                .any(|(m, h)| *m == n && MulticastGroup::for_ip(*h) == Some(mg));
            if !shared {
                node.unsubscribe(n, mg);
            }
        }
        let mut failed = Vec::new();
        for (n, g) in new {
            let Some(s) = stacks.get(n) else { continue };
            if s.join_multicast(g).is_err() {
                failed.push((n, g));
                continue;
            }
            self.applied.insert((n, g));
            if let Some(mg) = MulticastGroup::for_ip(g) {
                node.subscribe(now, n, mg);
            }
        }
        failed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listener_scopes_overlap_as_on_linux() {
        let v4: IpAddr = "198.18.0.1".parse().unwrap_or(IpAddr::from([0; 4]));
        let v6: IpAddr = "fd00::1".parse().unwrap_or(IpAddr::from([0; 16]));
        let all = [
            Scope::Any,
            Scope::AnyV4,
            Scope::AnyV6Only,
            Scope::Addr(v4),
            Scope::Addr(v6),
        ];
        for a in all {
            for b in all {
                assert_eq!(a.overlaps(b), b.overlaps(a), "{a:?} {b:?} symmetric");
            }
            assert!(a.overlaps(a) && a.overlaps(Scope::Any));
        }
        assert!(!Scope::AnyV4.overlaps(Scope::AnyV6Only));
        assert!(Scope::AnyV4.overlaps(Scope::Addr(v4)) && !Scope::AnyV4.overlaps(Scope::Addr(v6)));
        assert!(Scope::AnyV6Only.overlaps(Scope::Addr(v6)));
        assert!(!Scope::Addr(v4).overlaps(Scope::Addr(v6)));
    }

    #[test]
    fn listener_scopes_pick_the_addresses_to_listen_on() {
        let v4: IpAddr = IpAddr::from([198, 18, 0, 1]);
        let ll: IpAddr = "fe80::1".parse().unwrap_or(IpAddr::from([0; 16]));
        let v6: IpAddr = "fd00::1".parse().unwrap_or(IpAddr::from([0; 16]));
        let addrs = [(ll, 64), (v4, 15), (v6, 88)];
        assert_eq!(Scope::Any.endpoints(&addrs), vec![None]);
        assert_eq!(Scope::AnyV4.endpoints(&addrs), vec![Some(v4)]);
        assert_eq!(Scope::AnyV6Only.endpoints(&addrs), vec![Some(ll), Some(v6)]);
        assert_eq!(Scope::Addr(v6).endpoints(&addrs), vec![Some(v6)]);
        assert_eq!(Scope::Addr(v4).endpoints(&addrs[..1]), vec![]);
        assert_eq!(Scope::AnyV4.endpoints(&addrs[..1]), vec![]);
    }

    #[test]
    fn broadcast_and_multicast_destinations_are_recognised_and_permitted() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap_or(IpAddr::from([0; 4]));
        assert_eq!(
            broadcast_of(Ipv4Addr::new(198, 18, 0, 5), 15),
            Some(Ipv4Addr::new(198, 19, 255, 255))
        );
        assert_eq!(
            broadcast_of(Ipv4Addr::new(10, 1, 2, 3), 0),
            Some(Ipv4Addr::BROADCAST)
        );
        assert_eq!(broadcast_of(Ipv4Addr::new(10, 1, 2, 3), 31), None);
        assert_eq!(broadcast_of(Ipv4Addr::new(10, 1, 2, 3), 32), None);
        let net = |id: u64, v4: &[(Ipv4Addr, u8)], broadcast: bool, multicast: bool| NetView {
            id: NetworkId(id),
            v4: v4.to_vec(),
            policy: Policy {
                broadcast,
                multicast,
            },
            mtu: 2800,
        };
        let mut st = UdpState {
            rx: VecDeque::new(),
            rx_bytes: 0,
            rx_cap: 0,
            tx: VecDeque::new(),
            tx_bytes: 0,
            tx_cap: 0,
            local: Some(SocketAddr::new(ip("::"), 9)),
            released: false,
            dropped: 0,
            error: None,
            opts: UdpOptions::default(),
            nets: vec![
                net(1, &[(Ipv4Addr::new(198, 18, 0, 5), 15)], true, true),
                net(2, &[(Ipv4Addr::new(10, 0, 0, 5), 24)], false, false),
                net(3, &[], true, true),
            ],
            waiters: 0,
            leader_waits: false,
            signalled: std::cell::Cell::new((false, false)),
            spare: Vec::new(),
        };
        for (to, kind) in [
            ("198.18.0.9", Dest::Unicast),
            ("198.19.255.255", Dest::Broadcast),
            ("10.0.0.255", Dest::Broadcast),
            ("10.0.1.255", Dest::Unicast),
            ("255.255.255.255", Dest::Broadcast),
            ("239.1.2.3", Dest::Multicast),
            ("ff02::1", Dest::Multicast),
            ("fd00::ff", Dest::Unicast),
        ] {
            assert_eq!(st.kind(ip(to)), kind, "{to}");
        }
        let targets = |st: &UdpState, to: &str| -> Vec<u64> {
            let kind = st.kind(ip(to));
            st.targets(ip(to), kind).map(|n| n.id.0).collect()
        };
        assert_eq!(targets(&st, "255.255.255.255"), [1, 2]);
        assert_eq!(targets(&st, "10.0.0.255"), [2]);
        assert_eq!(targets(&st, "239.1.2.3"), [1, 2]);
        assert_eq!(targets(&st, "ff05::1"), [1, 2, 3]);
        assert_eq!(targets(&st, "198.18.0.9"), Vec::<u64>::new());
        // The payload a datagram may carry: its subnet's network's MTU, else the smallest.
        st.nets[1].mtu = 1400;
        assert_eq!(st.max_payload(ip("198.18.0.9")), Some(2800 - 28));
        assert_eq!(st.max_payload(ip("10.0.0.9")), Some(1400 - 28));
        assert_eq!(st.max_payload(ip("172.16.0.1")), Some(1400 - 28));
        assert_eq!(st.max_payload(ip("fd00::ff")), Some(1400 - 48));
        st.nets[1].mtu = 2800;
        assert_eq!(st.max_payload(ip("fd00::ff")), Some(2800 - 48));
        assert_eq!(st.permit(ip("255.255.255.255")), Err(SockError::Access));
        assert_eq!(st.permit(ip("198.18.0.9")), Ok(()));
        st.opts.broadcast = true;
        assert_eq!(st.permit(ip("255.255.255.255")), Ok(()));
        assert_eq!(st.permit(ip("10.0.0.255")), Err(SockError::NotPermitted));
        st.opts.multicast_if = Some(NetworkId(2));
        assert_eq!(targets(&st, "239.1.2.3"), [2]);
        assert_eq!(st.permit(ip("239.1.2.3")), Err(SockError::NotPermitted));
        assert_eq!(
            st.permit(ip("ff05::1")),
            Ok(()),
            "IP_MULTICAST_IF is IPv4's"
        );
        st.nets.truncate(1);
        st.nets[0].v4.clear();
        assert_eq!(
            st.permit(ip("255.255.255.255")),
            Err(SockError::NetUnreachable)
        );
        st.local = Some(SocketAddr::new(ip("fd00::1"), 9));
        assert_eq!(st.permit(ip("198.18.0.9")), Err(SockError::NetUnreachable));
        assert_eq!(st.permit(ip("fd00::2")), Ok(()));
    }

    #[test]
    fn looped_back_datagrams_carry_the_source_smoltcp_would_pick() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap_or(IpAddr::from([0; 4]));
        let addrs = [
            (ip("fe80::1"), 64),
            (ip("198.18.0.5"), 15),
            (ip("fd00::5"), 88),
        ];
        assert_eq!(source_for(&addrs, ip("239.1.1.1")), Some(ip("198.18.0.5")));
        assert_eq!(source_for(&addrs, ip("ff02::1")), Some(ip("fe80::1")));
        assert_eq!(source_for(&addrs, ip("ff05::1")), Some(ip("fd00::5")));
        assert_eq!(source_for(&addrs[..1], ip("ff05::1")), Some(ip("fe80::1")));
        assert_eq!(source_for(&addrs[..1], ip("239.1.1.1")), None);
    }

    #[test]
    fn options_validate_their_ranges() {
        let Ok(s) = TcpShared::new(4096, 4096, Kick::none()) else {
            panic!("no socket pair");
        };
        assert_eq!(s.option(TcpOption::NoDelay), 1);
        assert_eq!(s.option(TcpOption::KeepAlive), 0);
        assert_eq!(s.set_option(TcpOption::KeepAlive, 5), Ok(()));
        assert_eq!(s.option(TcpOption::KeepAlive), 1);
        for (opt, bad, good) in [
            (TcpOption::KeepIdle, 0, 32_767),
            (TcpOption::KeepInterval, 32_768, 1),
            (TcpOption::KeepCount, 128, 127),
            (TcpOption::UserTimeout, -1, 0),
            (TcpOption::UserTimeout, i64::from(i32::MAX) + 1, 5),
        ] {
            assert_eq!(
                s.set_option(opt, bad),
                Err(SockError::Invalid),
                "{opt:?} {bad}"
            );
            assert_eq!(s.set_option(opt, good), Ok(()));
            assert_eq!(s.option(opt), good);
        }
        let o = s.lock().options;
        assert_eq!(o.user_timeout_ms(), 5);
        assert_eq!(o.keepalive_limit_ms(), (32_767 + 127) * 1000);
        assert_eq!(
            TcpOptions::default().user_timeout_ms(),
            DEFAULT_USER_TIMEOUT.as_millis() as i64
        );
    }
}
