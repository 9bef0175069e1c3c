//! User-space sockets on the networks' stacks, shaped for a blocking/non-blocking socket API.
//!
//! Data lives in Rust: each socket has a shared state ([`TcpShared`]) with bounded receive and
//! send buffers that application threads read and write directly (no round trip through the
//! loop), and a [`Readiness`] descriptor mirroring it. The loop thread moves bytes between those
//! buffers and the smoltcp sockets ([`SocketTable::service`]) and wakes waiters.

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use zt_proto::network::NetworkId;
use zt_stack::smoltcp::iface::SocketHandle;
use zt_stack::smoltcp::socket::tcp;

use crate::readiness::Readiness;
use crate::stacks::Stacks;

/// Default buffer size each way.
pub const DEFAULT_BUFFER: usize = 1 << 20;
/// Most listening smoltcp sockets kept armed per listener: up to the backlog, so that as many
/// handshakes can be in progress at once (a SYN finding none gets a RST, i.e. "refused").
/// Their buffers are zeroed allocations the OS maps lazily, so idle ones cost little memory.
const MAX_ARMED: usize = 128;

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
    /// ETIMEDOUT.
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
    /// EADDRINUSE.
    #[error("address already in use")]
    AddrInUse,
    /// EINVAL.
    #[error("invalid argument")]
    Invalid,
    /// EBADF: the socket was closed.
    #[error("bad file descriptor")]
    Closed,
}

impl SockError {
    /// The errno value.
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
            Self::AddrInUse => libc::EADDRINUSE,
            Self::Invalid => libc::EINVAL,
            Self::Closed => libc::EBADF,
        }
    }
}

/// Waits on `cond` until woken or `deadline` (`WouldBlock` once it has passed).
fn wait_on<'a, T>(
    cond: &Condvar,
    st: MutexGuard<'a, T>,
    deadline: Option<Instant>,
) -> Result<MutexGuard<'a, T>, SockError> {
    match deadline {
        None => Ok(cond.wait(st).unwrap_or_else(PoisonError::into_inner)),
        Some(d) => {
            let now = Instant::now();
            if now >= d {
                return Err(SockError::WouldBlock);
            }
            Ok(cond
                .wait_timeout(st, d - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0)
        }
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
    nodelay: bool,
    /// The loop left data in the stack because `rx` was full: a read must wake it.
    rx_blocked: bool,
}

/// What application threads and the loop share for one TCP socket.
pub struct TcpShared {
    state: Mutex<TcpState>,
    cond: Condvar,
    readiness: Readiness,
    wake: Arc<dyn Fn() + Send + Sync>,
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
    fn new(
        rx_cap: usize,
        tx_cap: usize,
        wake: Arc<dyn Fn() + Send + Sync>,
    ) -> std::io::Result<Arc<Self>> {
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
                nodelay: true,
                rx_blocked: false,
            }),
            cond: Condvar::new(),
            readiness: Readiness::new()?,
            wake,
        }))
    }

    fn lock(&self) -> MutexGuard<'_, TcpState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The readiness descriptor.
    #[must_use]
    pub fn fd(&self) -> i32 {
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
        self.cond.notify_all();
    }

    fn wait<'a>(
        &'a self,
        st: MutexGuard<'a, TcpState>,
        deadline: Option<Instant>,
    ) -> Result<MutexGuard<'a, TcpState>, SockError> {
        wait_on(&self.cond, st, deadline)
    }

    /// Receives up to `buf.len()` bytes; 0 means EOF. `timeout` None blocks, zero does not.
    ///
    /// # Errors
    /// The connection failed, the socket is not connected, or nothing arrived in time.
    pub fn recv(&self, buf: &mut [u8], timeout: Option<Duration>) -> Result<usize, SockError> {
        let deadline = timeout.map(|t| Instant::now() + t);
        let mut st = self.lock();
        loop {
            if !st.rx.is_empty() {
                let n = buf.len().min(st.rx.len());
                let (a, b) = st.rx.as_slices();
                let first = a.len().min(n);
                buf[..first].copy_from_slice(&a[..first]);
                buf[first..n].copy_from_slice(&b[..n - first]);
                st.rx.drain(..n);
                // The loop needs to hear of it only when it stopped moving data for want of room.
                let wake = std::mem::take(&mut st.rx_blocked);
                self.refresh(&st);
                drop(st);
                if wake {
                    (self.wake)();
                }
                return Ok(n);
            }
            if let Some(e) = st.error {
                return Err(e);
            }
            if st.eof || st.released {
                return Ok(0);
            }
            if matches!(st.phase, Phase::Idle | Phase::Listening) {
                return Err(SockError::NotConnected);
            }
            st = self.wait(st, deadline)?;
        }
    }

    /// Queues up to `data.len()` bytes; returns how many (at least 1 unless it would block).
    ///
    /// # Errors
    /// Not connected, write side shut down, connection failed, or no room in time.
    pub fn send(&self, data: &[u8], timeout: Option<Duration>) -> Result<usize, SockError> {
        let deadline = timeout.map(|t| Instant::now() + t);
        let mut st = self.lock();
        loop {
            if let Some(e) = st.error {
                return Err(e);
            }
            if st.write_shutdown || st.released || st.phase == Phase::Closed {
                return Err(SockError::BrokenPipe);
            }
            match st.phase {
                Phase::Connected => {
                    let room = st.tx_cap.saturating_sub(st.tx.len());
                    if room > 0 {
                        let n = room.min(data.len());
                        // Data already waiting means the loop knows (it takes more on its next
                        // pass, which incoming ACKs cause): only the first bytes wake it.
                        let wake = st.tx.is_empty();
                        st.tx.extend(&data[..n]);
                        self.refresh(&st);
                        drop(st);
                        if wake {
                            (self.wake)();
                        }
                        return Ok(n);
                    }
                }
                Phase::Connecting => {}
                _ => return Err(SockError::NotConnected),
            }
            st = self.wait(st, deadline)?;
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
    /// Not listening, or none in time.
    pub fn accept(&self, timeout: Option<Duration>) -> Result<Arc<TcpShared>, SockError> {
        let deadline = timeout.map(|t| Instant::now() + t);
        let mut st = self.lock();
        loop {
            if let Some(c) = st.accept.pop_front() {
                self.refresh(&st);
                return Ok(c);
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
        (self.wake)();
    }

    /// Closes the socket (a graceful close: queued bytes still go out).
    pub fn close(&self) {
        let mut st = self.lock();
        st.released = true;
        st.write_shutdown = true;
        self.refresh(&st);
        drop(st);
        (self.wake)();
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

    /// Bytes waiting to be read.
    #[must_use]
    pub fn readable_bytes(&self) -> usize {
        self.lock().rx.len()
    }

    /// Enables or disables Nagle's algorithm (TCP_NODELAY is the default here).
    pub fn set_nodelay(&self, on: bool) {
        self.lock().nodelay = on;
        (self.wake)();
    }
}

#[derive(Debug)]
struct Entry {
    shared: Arc<TcpShared>,
    net: NetworkId,
    /// The connection's smoltcp socket, or the armed listening sockets.
    handles: Vec<SocketHandle>,
    listen_port: Option<u16>,
}

/// The loop thread's table of sockets.
#[derive(Debug, Default)]
pub struct SocketTable {
    entries: Vec<Entry>,
}

fn endpoint(e: zt_stack::smoltcp::wire::IpEndpoint) -> SocketAddr {
    SocketAddr::new(IpAddr::from(e.addr), e.port)
}

impl SocketTable {
    /// The network whose managed prefixes contain `ip`.
    pub(crate) fn route(stacks: &mut Stacks, ip: IpAddr) -> Option<NetworkId> {
        for id in stacks.networks() {
            let s = stacks.get(id)?;
            let hit = s.addresses().iter().any(|(a, bits)| {
                let p = zt_proto::network::config::IpPrefix {
                    ip: *a,
                    bits: *bits,
                };
                p.contains(ip) && !matches!(a, IpAddr::V6(v6) if v6.is_unicast_link_local())
            });
            if hit {
                return Some(id);
            }
        }
        None
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
        wake: Arc<dyn Fn() + Send + Sync>,
    ) -> Result<Arc<TcpShared>, SockError> {
        let net = Self::route(stacks, remote.ip()).ok_or(SockError::NetUnreachable)?;
        let stack = stacks.get(net).ok_or(SockError::NetUnreachable)?;
        let h = stack.add_tcp(buffers.0.max(4096), buffers.1.max(4096));
        let port = match stack.tcp_connect(h, remote, 0) {
            Ok(p) => p,
            Err(_) => {
                stack.remove(h);
                return Err(SockError::NetUnreachable);
            }
        };
        let shared = TcpShared::new(buffers.0, buffers.1, wake).map_err(|_| SockError::Invalid)?;
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
            net,
            handles: vec![h],
            listen_port: None,
        });
        Ok(shared)
    }

    /// Listens on `port` of the network that holds `local` (or of every network for an
    /// unspecified address: the first configured one for now).
    ///
    /// # Errors
    /// No such network or address, or the port is taken.
    pub fn listen(
        &mut self,
        stacks: &mut Stacks,
        local: SocketAddr,
        backlog: usize,
        buffers: (usize, usize),
        wake: Arc<dyn Fn() + Send + Sync>,
    ) -> Result<Arc<TcpShared>, SockError> {
        let net = if local.ip().is_unspecified() {
            stacks
                .networks()
                .into_iter()
                .min()
                .ok_or(SockError::NetUnreachable)?
        } else {
            Self::route(stacks, local.ip()).ok_or(SockError::NetUnreachable)?
        };
        if local.port() == 0
            || self
                .entries
                .iter()
                .any(|e| e.net == net && e.listen_port == Some(local.port()))
        {
            return Err(if local.port() == 0 {
                SockError::Invalid
            } else {
                SockError::AddrInUse
            });
        }
        let shared = TcpShared::new(buffers.0, buffers.1, wake).map_err(|_| SockError::Invalid)?;
        {
            let mut st = shared.lock();
            st.phase = Phase::Listening;
            st.local = Some(local);
            st.backlog = backlog.max(1);
        }
        let mut e = Entry {
            shared: shared.clone(),
            net,
            handles: Vec::new(),
            listen_port: Some(local.port()),
        };
        let stack = stacks.get(net).ok_or(SockError::NetUnreachable)?;
        for _ in 0..backlog.clamp(1, MAX_ARMED) {
            let h = stack.add_tcp(buffers.0.max(4096), buffers.1.max(4096));
            if stack.tcp(h).listen(local.port()).is_err() {
                stack.remove(h);
                return Err(SockError::AddrInUse);
            }
            e.handles.push(h);
        }
        self.entries.push(e);
        Ok(shared)
    }

    /// Moves data and state between the shared buffers and the stacks. Call after polling the
    /// stacks (and before, to hand over fresh application data). True if a stack needs polling
    /// again (data was queued for sending).
    pub fn service(&mut self, stacks: &mut Stacks) -> bool {
        let mut again = false;
        let mut new_entries = Vec::new();
        self.entries.retain_mut(|e| {
            let Some(stack) = stacks.get(e.net) else {
                let mut st = e.shared.lock();
                st.error.get_or_insert(SockError::NetUnreachable);
                st.phase = Phase::Closed;
                e.shared.refresh(&st);
                return false;
            };
            if let Some(port) = e.listen_port {
                let released = e.shared.lock().released;
                let mut i = 0;
                while i < e.handles.len() {
                    let h = e.handles[i];
                    if released {
                        stack.tcp(h).abort();
                        stack.remove(h);
                        e.handles.remove(i);
                        continue;
                    }
                    let (ready, local, peer) = {
                        let s = stack.tcp(h);
                        (
                            s.is_active()
                                && !s.is_listening()
                                && s.state() != tcp::State::SynReceived,
                            s.local_endpoint().map(endpoint),
                            s.remote_endpoint().map(endpoint),
                        )
                    };
                    if !ready {
                        i += 1;
                        continue;
                    }
                    // A connection: hand it to accept() and arm a new listener.
                    e.handles.remove(i);
                    let (rx_cap, tx_cap) = {
                        let st = e.shared.lock();
                        (st.rx_cap, st.tx_cap)
                    };
                    if let Ok(c) = TcpShared::new(rx_cap, tx_cap, e.shared.wake.clone()) {
                        {
                            let mut st = c.lock();
                            st.phase = Phase::Connected;
                            st.local = local;
                            st.peer = peer;
                        }
                        new_entries.push(Entry {
                            shared: c.clone(),
                            net: e.net,
                            handles: vec![h],
                            listen_port: None,
                        });
                        let mut st = e.shared.lock();
                        if st.accept.len() < st.backlog {
                            st.accept.push_back(c);
                            e.shared.refresh(&st);
                        } else {
                            drop(st);
                            c.close();
                        }
                    }
                    let nh = stack.add_tcp(4096.max(rx_cap), 4096.max(tx_cap));
                    if stack.tcp(nh).listen(port).is_ok() {
                        e.handles.push(nh);
                    } else {
                        stack.remove(nh);
                    }
                }
                return !released || !e.handles.is_empty();
            }
            let h = e.handles[0];
            let s = stack.tcp(h);
            let mut st = e.shared.lock();
            s.set_nagle_enabled(!st.nodelay);
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
                        st.error = Some(SockError::Refused);
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
                again = true;
            }
            if st.write_shutdown && st.tx.is_empty() && s.may_send() {
                s.close();
                again = true;
            }
            let done = st.released && (st.phase == Phase::Closed || !s.is_open());
            e.shared.refresh(&st);
            drop(st);
            if done {
                stack.remove(h);
                return false;
            }
            true
        });
        self.entries.extend(new_entries);
        again
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
}

/// What application threads and the loop share for one UDP socket.
pub struct UdpShared {
    state: Mutex<UdpState>,
    cond: Condvar,
    readiness: Readiness,
    wake: Arc<dyn Fn() + Send + Sync>,
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

    fn refresh(&self, st: &UdpState) {
        let readable = !st.rx.is_empty() || st.error.is_some() || st.released;
        let writable = st.tx_bytes < st.tx_cap || st.error.is_some();
        self.readiness.set(readable, writable);
        self.cond.notify_all();
    }

    /// The readiness descriptor.
    #[must_use]
    pub fn fd(&self) -> i32 {
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
            if let Some((from, mut d)) = st.rx.pop_front() {
                st.rx_bytes -= d.len();
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
            st = wait_on(&self.cond, st, deadline)?;
        }
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
        if data.len() > MAX_DATAGRAM {
            return Err(SockError::Invalid);
        }
        let deadline = timeout.map(|t| Instant::now() + t);
        let mut st = self.lock();
        loop {
            if st.released {
                return Err(SockError::Closed);
            }
            if st.tx_bytes + data.len() <= st.tx_cap || st.tx.is_empty() {
                st.tx_bytes += data.len();
                st.tx.push_back((to, data.to_vec()));
                self.refresh(&st);
                drop(st);
                (self.wake)();
                return Ok(data.len());
            }
            st = wait_on(&self.cond, st, deadline)?;
        }
    }

    /// Closes the socket.
    pub fn close(&self) {
        let mut st = self.lock();
        st.released = true;
        self.refresh(&st);
        drop(st);
        (self.wake)();
    }
}

#[derive(Debug)]
struct UdpEntry {
    shared: Arc<UdpShared>,
    /// One smoltcp socket per network it is bound on.
    handles: Vec<(NetworkId, SocketHandle)>,
}

/// The loop thread's UDP sockets.
#[derive(Debug, Default)]
pub struct UdpTable {
    entries: Vec<UdpEntry>,
}

impl UdpTable {
    /// Binds `local` (port 0: an ephemeral port; an unspecified address: every configured
    /// network).
    ///
    /// # Errors
    /// No network for the address, or the port is taken.
    pub fn bind(
        &mut self,
        stacks: &mut Stacks,
        local: SocketAddr,
        buffers: (usize, usize),
        wake: Arc<dyn Fn() + Send + Sync>,
    ) -> Result<Arc<UdpShared>, SockError> {
        let nets: Vec<NetworkId> = if local.ip().is_unspecified() {
            stacks.networks()
        } else {
            SocketTable::route(stacks, local.ip()).into_iter().collect()
        };
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
        for n in nets {
            let Some(s) = stacks.get(n) else { continue };
            let h = s.add_udp(256, buffers.0.max(MAX_DATAGRAM));
            let ep = if local.ip().is_unspecified() {
                zt_stack::smoltcp::wire::IpListenEndpoint { addr: None, port }
            } else {
                zt_stack::smoltcp::wire::IpListenEndpoint {
                    addr: Some(local.ip().into()),
                    port,
                }
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
            shared: shared.clone(),
            handles,
        });
        Ok(shared)
    }

    /// Moves datagrams between the shared queues and the stacks; true if any was sent.
    pub fn service(&mut self, stacks: &mut Stacks) -> bool {
        let mut sent = false;
        self.entries.retain_mut(|e| {
            let mut st = e.shared.lock();
            if st.released {
                for (n, h) in &e.handles {
                    if let Some(s) = stacks.get(*n) {
                        s.remove(*h);
                    }
                }
                return false;
            }
            for (n, h) in &e.handles {
                let Some(s) = stacks.get(*n) else { continue };
                let sock = s.udp(*h);
                while let Ok((data, meta)) = sock.recv() {
                    if st.rx_bytes + data.len() > st.rx_cap {
                        st.dropped += 1;
                        continue;
                    }
                    st.rx_bytes += data.len();
                    st.rx.push_back((endpoint(meta.endpoint), data.to_vec()));
                }
            }
            while let Some((to, _)) = st.tx.front() {
                let to = *to;
                let net = SocketTable::route(stacks, to.ip())
                    .filter(|n| e.handles.iter().any(|(m, _)| m == n));
                let Some(net) = net else {
                    // Nothing routes it: dropped like an unroutable datagram.
                    if let Some((_, d)) = st.tx.pop_front() {
                        st.tx_bytes -= d.len();
                    }
                    continue;
                };
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
            }
            e.shared.refresh(&st);
            true
        });
        sent
    }
}
