//! The loop side of TCP: the table of connections and listeners, serviced on each pass.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use zt_proto::NetworkId;
use zt_stack::smoltcp::iface::SocketHandle;
use zt_stack::smoltcp::socket::tcp;
use zt_stack::smoltcp::wire::IpListenEndpoint;
use zt_stack::{NetStack, Stacks};

use super::super::{SockError, endpoint};
use super::{
    Armed, Congestion, Conn, Entry, Kind, Listener, MAX_ARMED, ORPHAN_FIN_TIMEOUT_MS, Phase, Scope,
    SocketTable, TcpBuffers, TcpShared, TcpState, Wait,
};
use crate::lead::Kick;

/// How many listening sockets a listener keeps armed per address: its backlog and one, as
/// Linux's accept queue holds `backlog + 1` connections.
pub(super) fn armed_for(backlog: usize) -> usize {
    backlog.saturating_add(1).clamp(1, MAX_ARMED)
}

/// Arms up to `count` listening sockets on `stack` for `(addr, port)`.
pub(super) fn arm(
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
    pub(super) fn sync(&mut self, stacks: &mut Stacks, backlog: usize) {
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

    pub(super) fn disarm(&mut self, stacks: &mut Stacks) {
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
            let mut st = shared.core.lock();
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
            let mut st = shared.core.lock();
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
    pub(super) fn listening_on(&self, port: u16, scope: Option<Scope>) -> bool {
        self.entries.iter().any(|e| match &e.kind {
            Kind::Listener(l) => {
                l.port == port
                    && scope.is_none_or(|s| l.scope.overlaps(s))
                    && !e.shared.core.lock().released
            }
            Kind::Conn(_) => false,
        })
    }

    /// A port for a listener bound to port 0: from the stacks' ephemeral range, used by no
    /// listener and no socket of any network's stack.
    pub(super) fn free_port(&mut self, stacks: &mut Stacks) -> Result<u16, SockError> {
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
pub(super) fn service_listener(
    shared: &Arc<TcpShared>,
    l: &mut Listener,
    stacks: &mut Stacks,
    resync: bool,
    now_ms: i64,
    new_entries: &mut Vec<Entry>,
) -> bool {
    let (released, backlog, options) = {
        let st = shared.core.lock();
        (st.released, st.backlog, st.options)
    };
    let buffers = l.buffers;
    if released {
        l.disarm(stacks);
        // Connections nobody accepted are closed with it.
        let queued: Vec<_> = shared.core.lock().accept.drain(..).collect();
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
            if shared.core.lock().accept.len() >= backlog {
                // The accept queue is full: the connection waits in its socket, established
                // (what it receives is buffered and acknowledged up to its window), until
                // accept() makes room, as the kernel keeps a completed handshake. It is not
                // closed: a client would read EOF from a server that never saw it.
                break;
            }
            // A connection: hand it to accept() (a new listener is armed below).
            a.handles.remove(i);
            taken += 1;
            let Ok(c) = TcpShared::new(buffers.rx, buffers.tx, shared.core.wake.clone()) else {
                stack.tcp(h).abort();
                continue;
            };
            {
                let mut st = c.core.lock();
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
            let mut st = shared.core.lock();
            st.accept.push_back(c);
            shared.core.refresh(&st);
        }
        if taken > 0 {
            let want = a.handles.len() + taken;
            arm(stack, a.addr, l.port, want, buffers, &mut a.handles);
        }
    }
    true
}

impl Conn {
    pub(super) fn new(net: NetworkId, h: SocketHandle) -> Self {
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
    pub(super) fn watch(&mut self, stack: &mut NetStack, now_ms: i64) {
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

    pub(super) fn unwatch(&mut self, stack: &mut NetStack) {
        if let Some((port, remote)) = self.watched.take() {
            stack.tcp_unwatch(port, remote);
        }
    }

    /// Applies options, enforces the deadline; true if the connection was aborted.
    pub(super) fn keep_time(
        &mut self,
        st: &mut TcpState,
        stack: &mut NetStack,
        now_ms: i64,
    ) -> bool {
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
    pub(super) fn service(
        &mut self,
        shared: &TcpShared,
        stack: &mut NetStack,
        now_ms: i64,
    ) -> (bool, bool) {
        let mut sent = false;
        let mut st = shared.core.lock();
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
        shared.core.refresh(&st);
        drop(st);
        if done {
            self.unwatch(stack);
            stack.remove(self.h);
            return (false, sent);
        }
        (true, sent)
    }
}
