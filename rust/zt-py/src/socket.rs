//! TCP and UDP sockets on a node's network stacks (`TcpSocket`, `UdpSocket`), and how data
//! moves between them and Python's `bytes` and `bytearray`.

use std::sync::Arc;

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyBytes, PyDict};

use crate::blocking::{blocking, duration, sock_wait};
use crate::convert::{bytes_of, parse_ip, parse_sockaddr, sock_err};

/// Copies `a` then `b` into the start of `buffer`'s storage, as much as fits; how many bytes.
fn fill_bytearray(buffer: &Bound<'_, PyByteArray>, a: &[u8], b: &[u8]) -> usize {
    let len = buffer.len();
    let dst = buffer.data();
    let mut at = 0;
    for part in [a, b] {
        let n = part.len().min(len - at);
        if n == 0 {
            continue;
        }
        // SAFETY: `dst` and `len` were read just now from the bytearray, whose storage holds
        // `len` bytes, and `at + n <= len`. The `Bound` proves this thread holds the GIL, and
        // the GIL excludes every other Python thread (this extension is built for the limited
        // API, abi3, which free-threaded CPython does not load). From reading `dst` to the end
        // of this copy no Python code runs (nothing here calls into the interpreter or
        // releases the GIL), so nothing can resize, reallocate or free the storage meanwhile.
        // `part` is Rust memory (a socket's buffer, borrowed under its lock), so the ranges
        // cannot overlap. The storage is written only through this raw pointer, never through
        // a Rust reference, the way C code holding the GIL writes into a bytearray. (Only C
        // code that released the GIL while holding an export of the buffer could touch it
        // meanwhile: a race such code creates for every user of the buffer, CPython's own
        // `socket.recv_into` included.)
        #[allow(unsafe_code)]
        unsafe {
            std::ptr::copy_nonoverlapping(part.as_ptr(), dst.add(at), n);
        }
        at += n;
    }
    at
}

/// Runs `f` on `data[offset..]`, borrowed in place from a `bytes` or `bytearray` (ValueError
/// for an offset beyond the end, TypeError for another type).
fn with_bytes<R>(
    data: &Bound<'_, PyAny>,
    offset: usize,
    f: impl FnOnce(&[u8]) -> R,
) -> PyResult<R> {
    fn tail(all: &[u8], offset: usize) -> PyResult<&[u8]> {
        all.get(offset..)
            .ok_or_else(|| PyValueError::new_err("offset beyond the end of the data"))
    }
    if let Ok(b) = data.cast::<PyBytes>() {
        return Ok(f(tail(b.as_bytes(), offset)?));
    }
    if let Ok(b) = data.cast::<PyByteArray>() {
        // SAFETY: the `Bound` proves this thread holds the GIL, which excludes every other
        // Python thread (this extension is built for the limited API, abi3, which
        // free-threaded CPython does not load). The slice lives only until `f` returns, during
        // which no Python code runs (`f` only copies the bytes into a socket's buffer, and
        // neither calls into the interpreter nor releases the GIL): no Python code can resize,
        // reallocate, free or write the storage while it is borrowed. (Only C code that
        // released the GIL while holding an export of the buffer could write it meanwhile: a
        // race such code creates for every reader of the buffer, CPython's own included.)
        #[allow(unsafe_code)]
        let all = unsafe { b.as_bytes() };
        return Ok(f(tail(all, offset)?));
    }
    Err(PyTypeError::new_err(format!(
        "a bytes or bytearray object is required, not {}",
        data.get_type().name()?
    )))
}

/// Which senders a UDP read takes.
fn sender_filter(
    ipv4_only: bool,
    peer: Option<(String, u16)>,
) -> PyResult<impl Fn(std::net::SocketAddr) -> bool> {
    let peer = peer
        .map(|(ip, port)| parse_sockaddr(&ip, port))
        .transpose()?;
    Ok(move |from: std::net::SocketAddr| {
        !(ipv4_only && from.is_ipv6()) && peer.is_none_or(|p| p == from)
    })
}

/// An `(ip, port)` tuple for Python.
type PyAddr = Option<(String, u16)>;

fn addr_tuple(a: Option<std::net::SocketAddr>) -> PyAddr {
    a.map(|a| (a.ip().to_string(), a.port()))
}

/// A TCP socket on a node's network stack (data is buffered in Rust; `fileno()` is a real
/// descriptor mirroring readiness).
#[pyclass(module = "zt._native", frozen)]
pub(crate) struct TcpSocket(pub(crate) Arc<zt_runtime::sockets::TcpShared>);

/// A native socket nobody holds any more is closed (gracefully: queued data still goes out),
/// as the OS closes a descriptor's socket with its last reference: otherwise its connection,
/// or its port, would stay until the node stops. `zt.socket` closes its sockets itself; this
/// covers any native socket dropped on another path.
impl Drop for TcpSocket {
    fn drop(&mut self) {
        self.0.close();
    }
}

#[pymethods]
impl TcpSocket {
    /// Up to `n` bytes (b"" at EOF). `timeout`: None blocks, 0 never blocks.
    #[pyo3(signature = (n, timeout = None))]
    fn recv<'py>(
        &self,
        py: Python<'py>,
        n: usize,
        timeout: Option<f64>,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let t = duration(timeout)?;
        let s = &*self.0;
        blocking(
            py,
            t,
            || {
                s.try_recv_with(n, |a, b| match bytes_of(py, a, b) {
                    Ok(bytes) => (a.len() + b.len(), Ok(bytes)),
                    Err(e) => (0, Err(e)),
                })
                .map_err(|e| sock_err(e, t))?
                .transpose()
            },
            |deadline| s.wait_readable(deadline),
        )
    }

    /// Receives up to `n` bytes into the start of `buffer` (no more than fit), straight from
    /// the socket's receive buffer; how many (0 at EOF). `timeout` as for `recv`.
    #[pyo3(signature = (buffer, n, timeout = None))]
    fn recv_into(
        &self,
        py: Python<'_>,
        buffer: &Bound<'_, PyByteArray>,
        n: usize,
        timeout: Option<f64>,
    ) -> PyResult<usize> {
        let t = duration(timeout)?;
        let s = &*self.0;
        blocking(
            py,
            t,
            // The buffer's size is read on every attempt: another thread may have resized it
            // while this one waited without the GIL.
            || {
                s.try_recv_with(n.min(buffer.len()), |a, b| {
                    let got = fill_bytearray(buffer, a, b);
                    (got, got)
                })
                .map_err(|e| sock_err(e, t))
            },
            |deadline| s.wait_readable(deadline),
        )
    }

    /// Queues bytes from `data[offset:]` (bytes or bytearray, read in place); how many were
    /// taken (blocks for room unless `timeout` is 0).
    #[pyo3(signature = (data, timeout = None, offset = 0))]
    fn send(
        &self,
        py: Python<'_>,
        data: &Bound<'_, PyAny>,
        timeout: Option<f64>,
        offset: usize,
    ) -> PyResult<usize> {
        let t = duration(timeout)?;
        let s = &*self.0;
        blocking(
            py,
            t,
            || with_bytes(data, offset, |d| s.try_send(d))?.map_err(|e| sock_err(e, t)),
            |deadline| s.wait_writable(deadline),
        )
    }

    /// Waits until connected.
    #[pyo3(signature = (timeout = None))]
    fn wait_connected(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<()> {
        let s = &*self.0;
        sock_wait(py, duration(timeout)?, |t| s.wait_connected(t))
    }

    /// The next connection of a listening socket.
    #[pyo3(signature = (timeout = None))]
    fn accept(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<TcpSocket> {
        let s = &*self.0;
        sock_wait(py, duration(timeout)?, |t| s.accept(t)).map(TcpSocket)
    }

    /// Stops sending (FIN after queued data).
    fn shutdown_write(&self) {
        self.0.shutdown_write();
    }

    /// Closes (queued data still goes out).
    fn close(&self) {
        self.0.close();
    }

    /// The readiness descriptor.
    fn fileno(&self) -> zt_runtime::readiness::RawDescriptor {
        self.0.fd()
    }

    /// `(local, peer)` as `(ip, port)` tuples or None.
    fn addresses(&self) -> (PyAddr, PyAddr) {
        let (l, p) = self.0.addresses();
        (addr_tuple(l), addr_tuple(p))
    }

    /// "idle", "listening", "connecting", "connected" or "closed".
    fn phase(&self) -> &'static str {
        use zt_runtime::sockets::Phase as P;
        match self.0.phase() {
            P::Idle => "idle",
            P::Listening => "listening",
            P::Connecting => "connecting",
            P::Connected => "connected",
            P::Closed => "closed",
        }
    }

    /// Sets an option: "nodelay", "keepalive", "keepidle" (s), "keepintvl" (s), "keepcnt",
    /// "user_timeout" (ms).
    fn set_option(&self, name: &str, value: i64) -> PyResult<()> {
        self.0
            .set_option(tcp_option(name)?, value)
            .map_err(|e| sock_err(e, None))
    }

    /// An option's value (names as for `set_option`).
    fn option(&self, name: &str) -> PyResult<i64> {
        Ok(self.0.option(tcp_option(name)?))
    }

    /// The connection's round-trip estimates, windows, buffers and retransmission counters (as
    /// Linux's `TCP_INFO`), as of the loop's last pass over it.
    fn tcp_info<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let i = self.0.tcp_info();
        let d = PyDict::new(py);
        d.set_item("srtt_us", i.srtt_us)?;
        d.set_item("rttvar_us", i.rttvar_us)?;
        d.set_item("min_rtt_us", i.min_rtt_us)?;
        d.set_item("rto_us", i.rto_us)?;
        d.set_item("cwnd", i.cwnd)?;
        d.set_item("ssthresh", i.ssthresh)?;
        d.set_item("in_flight", i.in_flight)?;
        d.set_item("pacing_rate", i.pacing_rate)?;
        d.set_item("bytes_sent", i.bytes_sent)?;
        d.set_item("bytes_retrans", i.bytes_retrans)?;
        d.set_item("segs_retrans", i.segs_retrans)?;
        d.set_item("timeouts", i.timeouts)?;
        d.set_item("loss_probes", i.loss_probes)?;
        d.set_item("recoveries", i.recoveries)?;
        d.set_item("undos", i.undos)?;
        d.set_item("dsacks_received", i.dsacks_received)?;
        d.set_item("reordering_seen", i.reordering_seen)?;
        d.set_item("rx_out_of_order", i.rx_out_of_order)?;
        d.set_item("rx_duplicates", i.rx_duplicates)?;
        d.set_item("rx_too_many_holes", i.rx_too_many_holes)?;
        d.set_item("rx_buffer", i.rx_buffer)?;
        d.set_item("tx_buffer", i.tx_buffer)?;
        Ok(d)
    }
}

fn tcp_option(name: &str) -> PyResult<zt_runtime::sockets::TcpOption> {
    use zt_runtime::sockets::TcpOption as O;
    Ok(match name {
        "nodelay" => O::NoDelay,
        "keepalive" => O::KeepAlive,
        "keepidle" => O::KeepIdle,
        "keepintvl" => O::KeepInterval,
        "keepcnt" => O::KeepCount,
        "user_timeout" => O::UserTimeout,
        "congestion" => O::Congestion,
        _ => {
            return Err(PyValueError::new_err(format!(
                "unknown TCP option {name:?}"
            )));
        }
    })
}

/// A UDP socket on a node's network stacks.
#[pyclass(module = "zt._native", frozen)]
pub(crate) struct UdpSocket(pub(crate) Arc<zt_runtime::sockets::UdpShared>);

/// Closed when dropped, as [`TcpSocket`].
impl Drop for UdpSocket {
    fn drop(&mut self) {
        self.0.close();
    }
}

#[pymethods]
impl UdpSocket {
    /// `(data, (ip, port))` of the next datagram (truncated to `n`). With `ipv4_only`,
    /// datagrams from IPv6 senders are dropped; with `peer`, datagrams from anyone else.
    #[pyo3(signature = (n, timeout = None, ipv4_only = false, peer = None))]
    fn recvfrom<'py>(
        &self,
        py: Python<'py>,
        n: usize,
        timeout: Option<f64>,
        ipv4_only: bool,
        peer: Option<(String, u16)>,
    ) -> PyResult<(Bound<'py, PyBytes>, (String, u16))> {
        let t = duration(timeout)?;
        let accept = sender_filter(ipv4_only, peer)?;
        let s = &*self.0;
        blocking(
            py,
            t,
            || {
                s.try_recv_from_with(n, &accept, |d, from| match bytes_of(py, d, &[]) {
                    Ok(bytes) => (true, Ok((bytes, (from.ip().to_string(), from.port())))),
                    Err(e) => (false, Err(e)),
                })
                .map_err(|e| sock_err(e, t))?
                .transpose()
            },
            |deadline| s.wait_readable(deadline),
        )
    }

    /// Like `recvfrom`, into the start of `buffer`: `(nbytes, (ip, port))` (a datagram
    /// longer than `n` or than the buffer is truncated).
    #[pyo3(signature = (buffer, n, timeout = None, ipv4_only = false, peer = None))]
    fn recvfrom_into(
        &self,
        py: Python<'_>,
        buffer: &Bound<'_, PyByteArray>,
        n: usize,
        timeout: Option<f64>,
        ipv4_only: bool,
        peer: Option<(String, u16)>,
    ) -> PyResult<(usize, (String, u16))> {
        let t = duration(timeout)?;
        let accept = sender_filter(ipv4_only, peer)?;
        let s = &*self.0;
        blocking(
            py,
            t,
            || {
                s.try_recv_from_with(n.min(buffer.len()), &accept, |d, from| {
                    let got = fill_bytearray(buffer, d, &[]);
                    (true, (got, (from.ip().to_string(), from.port())))
                })
                .map_err(|e| sock_err(e, t))
            },
            |deadline| s.wait_readable(deadline),
        )
    }

    /// Queues a datagram (bytes or bytearray, read in place) to `(ip, port)`.
    #[pyo3(signature = (data, ip, port, timeout = None))]
    fn sendto(
        &self,
        py: Python<'_>,
        data: &Bound<'_, PyAny>,
        ip: &str,
        port: u16,
        timeout: Option<f64>,
    ) -> PyResult<usize> {
        let to = parse_sockaddr(ip, port)?;
        let t = duration(timeout)?;
        let s = &*self.0;
        // The size last tried (a bytearray may change size while the call waits).
        let len = std::sync::atomic::AtomicUsize::new(0);
        let relaxed = std::sync::atomic::Ordering::Relaxed;
        blocking(
            py,
            t,
            || {
                with_bytes(data, 0, |d| {
                    len.store(d.len(), relaxed);
                    s.try_send_to(d, to)
                })?
                .map_err(|e| sock_err(e, t))
            },
            |deadline| s.wait_writable(len.load(relaxed), deadline),
        )
    }

    /// The readiness descriptor.
    fn fileno(&self) -> zt_runtime::readiness::RawDescriptor {
        self.0.fd()
    }

    /// `(ip, port)` bound.
    fn local(&self) -> PyAddr {
        addr_tuple(self.0.local())
    }

    /// Datagrams lost because the receive buffer was full.
    fn dropped(&self) -> u64 {
        self.0.dropped()
    }

    /// Sets an option (0/1): "broadcast" (`SO_BROADCAST`), "multicast_loop"
    /// (`IP_MULTICAST_LOOP`), "multicast_loop_v6" (`IPV6_MULTICAST_LOOP`).
    fn set_option(&self, name: &str, value: i64) -> PyResult<()> {
        self.0.set_option(udp_option(name)?, value);
        Ok(())
    }

    /// An option's value (names as for `set_option`).
    fn option(&self, name: &str) -> PyResult<i64> {
        Ok(self.0.option(udp_option(name)?))
    }

    /// Raises what `sendto` would for this destination before queueing anything: EACCES for
    /// a broadcast without `SO_BROADCAST`, EPERM when the network's config disables
    /// broadcast/multicast, ENETUNREACH when no network of the socket takes it.
    fn check_destination(&self, ip: &str) -> PyResult<()> {
        self.0
            .check_destination(parse_ip(ip)?)
            .map_err(|e| sock_err(e, None))
    }

    /// Closes the socket.
    fn close(&self) {
        self.0.close();
    }
}

fn udp_option(name: &str) -> PyResult<zt_runtime::sockets::UdpOption> {
    use zt_runtime::sockets::UdpOption as O;
    Ok(match name {
        "broadcast" => O::Broadcast,
        "multicast_loop" => O::MulticastLoopV4,
        "multicast_loop_v6" => O::MulticastLoopV6,
        _ => {
            return Err(PyValueError::new_err(format!(
                "unknown UDP option {name:?}"
            )));
        }
    })
}
