//! The application side of a TCP socket: connect, listen, accept, send, receive, options.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use zt_stack::smoltcp::socket::tcp;

use super::super::shared::{SocketCore, SocketState};
use super::super::{FLUSH_MAX, SockError};
use super::{Congestion, Phase, TcpOption, TcpOptions, TcpShared, TcpState};
use crate::lead::Kick;

impl SocketState for TcpState {
    fn readiness(&self) -> (bool, bool) {
        let readable = !self.rx.is_empty()
            || self.eof
            || self.error.is_some()
            || !self.accept.is_empty()
            || self.phase == Phase::Closed;
        let writable =
            (self.phase == Phase::Connected && self.tx.len() < self.tx_cap && !self.write_shutdown)
                || self.error.is_some()
                || self.phase == Phase::Closed;
        (readable, writable)
    }

    /// Every wait is for the socket to become readable (data, EOF, error, a connection to
    /// accept) or writable (room, connected, error); closing or shutting down from another
    /// thread must wake a blocked call too.
    fn wake_waiters(&self, (readable, writable): (bool, bool)) -> (bool, bool) {
        (
            readable || self.released,
            writable || self.released || self.write_shutdown,
        )
    }

    /// Data, EOF, an error, or a socket that cannot receive.
    fn recv_ready(&self) -> bool {
        !self.rx.is_empty()
            || self.error.is_some()
            || self.eof
            || self.released
            || matches!(self.phase, Phase::Idle | Phase::Listening)
    }
}

impl TcpShared {
    pub(super) fn new(rx_cap: usize, tx_cap: usize, wake: Kick) -> std::io::Result<Arc<Self>> {
        let state = TcpState {
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
        };
        Ok(Arc::new(Self {
            core: SocketCore::new(state, wake)?,
        }))
    }

    /// The readiness descriptor.
    #[must_use]
    pub fn fd(&self) -> crate::readiness::RawDescriptor {
        self.core.fd()
    }

    /// Ends the socket with `error` (unless it already failed) and wakes everyone waiting.
    pub(super) fn fail(&self, error: SockError) {
        let mut st = self.core.lock();
        st.error.get_or_insert(error);
        st.phase = Phase::Closed;
        self.core.refresh(&st);
    }

    /// Whether a send returns at once: room for data, an error, or a socket that cannot send.
    pub(super) fn send_ready(st: &TcpState) -> bool {
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
        self.core.wait_readable(deadline)
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
        let mut st = self.core.lock();
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
                self.core.refresh(&st);
                drop(st);
                if wake {
                    self.core.wake.wake();
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
        let mut st = self.core.lock();
        while !Self::send_ready(&st) {
            st = self.core.wait(st, deadline)?;
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
        let mut st = self.core.lock();
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
                self.core.refresh(&st);
                drop(st);
                if wake && small {
                    self.core.wake.flush();
                } else if wake {
                    self.core.wake.wake();
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
        let mut st = self.core.lock();
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
            st = self.core.wait(st, deadline)?;
        }
    }

    /// The next accepted connection.
    ///
    /// # Errors
    /// Not listening, closed (also while waiting: `Closed`), or none in time.
    pub fn accept(&self, timeout: Option<Duration>) -> Result<Arc<TcpShared>, SockError> {
        let deadline = timeout.map(|t| Instant::now() + t);
        let mut st = self.core.lock();
        loop {
            // A closed listener hands out nothing (the loop closes what it had queued), and a
            // close from another thread ends a blocked accept.
            if st.released {
                return Err(SockError::Closed);
            }
            if let Some(c) = st.accept.pop_front() {
                let was_full = st.accept.len() + 1 >= st.backlog;
                self.core.refresh(&st);
                drop(st);
                if was_full {
                    // Connections may wait for room in their sockets: the loop hands one over.
                    self.core.wake.wake();
                }
                return Ok(c);
            }
            if let Some(e) = st.error {
                return Err(e);
            }
            if st.phase != Phase::Listening {
                return Err(SockError::Invalid);
            }
            st = self.core.wait(st, deadline)?;
        }
    }

    /// Stops sending (FIN once the queued bytes are out).
    pub fn shutdown_write(&self) {
        self.core.change_and_wake(|st| st.write_shutdown = true);
    }

    /// Closes the socket (a graceful close: queued bytes still go out).
    pub fn close(&self) {
        self.core.change_and_wake(|st| {
            st.released = true;
            st.write_shutdown = true;
        });
    }

    /// Local and peer addresses.
    #[must_use]
    pub fn addresses(&self) -> (Option<SocketAddr>, Option<SocketAddr>) {
        let st = self.core.lock();
        (st.local, st.peer)
    }

    /// The current phase.
    #[must_use]
    pub fn phase(&self) -> Phase {
        self.core.lock().phase
    }

    /// The connection's round-trip estimates, windows and retransmission counters (as Linux's
    /// `TCP_INFO`), as of the loop's last pass over it.
    #[must_use]
    pub fn tcp_info(&self) -> tcp::TcpInfo {
        self.core.lock().info
    }

    /// Bytes waiting to be read.
    #[must_use]
    pub fn readable_bytes(&self) -> usize {
        self.core.lock().rx.len()
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
            let mut st = self.core.lock();
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
        self.core.wake.wake();
        Ok(())
    }

    /// A socket option's value.
    #[must_use]
    pub fn option(&self, opt: TcpOption) -> i64 {
        let o = self.core.lock().options;
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
