//! Conversions shared by the classes: new `bytes`, socket errors, IP addresses from Python.

use std::time::Duration;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyBytes;
use zt_runtime::sockets::SockError;

use crate::errors;

/// A new `bytes` holding `a` then `b` (its storage written once, not zeroed first).
pub(crate) fn bytes_of<'py>(py: Python<'py>, a: &[u8], b: &[u8]) -> PyResult<Bound<'py, PyBytes>> {
    let len = a.len() + b.len();
    let size = pyo3::ffi::Py_ssize_t::try_from(len)
        .map_err(|_| pyo3::exceptions::PyOverflowError::new_err("too many bytes"))?;
    // SAFETY: `py` proves the GIL is held, as both calls need. With a NULL source,
    // `PyBytes_FromStringAndSize` returns a new reference to a fresh, uninitialised `bytes` of
    // `size` bytes (or, for 0, the shared empty one, into which nothing is written), or NULL
    // with an exception set, which `from_owned_ptr_or_err` turns into `Err`. Nothing else
    // can reach the new object yet, so writing its storage is sound; `PyBytes_AsString` gives
    // that storage (`size` bytes long), and the two copies fill exactly `a.len() + b.len() ==
    // size` bytes of it from Rust memory, which cannot overlap a fresh Python object, before
    // the object is handed out.
    #[allow(unsafe_code)]
    unsafe {
        let obj = pyo3::ffi::PyBytes_FromStringAndSize(std::ptr::null(), size);
        let bytes = Bound::from_owned_ptr_or_err(py, obj)?.cast_into::<PyBytes>()?;
        let dst = pyo3::ffi::PyBytes_AsString(obj).cast::<u8>();
        std::ptr::copy_nonoverlapping(a.as_ptr(), dst, a.len());
        std::ptr::copy_nonoverlapping(b.as_ptr(), dst.add(a.len()), b.len());
        Ok(bytes)
    }
}

pub(crate) fn sock_err(e: SockError, timeout: Option<Duration>) -> PyErr {
    use SockError as S;
    match e {
        S::WouldBlock if timeout.is_some_and(|t| t.is_zero()) => {
            pyo3::exceptions::PyBlockingIOError::new_err((errors::sock_errno(e), e.to_string()))
        }
        S::WouldBlock => pyo3::exceptions::PyTimeoutError::new_err("timed out"),
        other => {
            pyo3::exceptions::PyOSError::new_err((errors::sock_errno(other), other.to_string()))
        }
    }
}

pub(crate) fn parse_ip(ip: &str) -> PyResult<std::net::IpAddr> {
    parse_sockaddr(ip, 0).map(|a| a.ip())
}

pub(crate) fn parse_sockaddr(ip: &str, port: u16) -> PyResult<std::net::SocketAddr> {
    let ip: std::net::IpAddr = ip
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .map_err(|_| PyValueError::new_err(format!("{ip:?} is not an IP address")))?;
    Ok(std::net::SocketAddr::new(ip, port))
}

/// A socket operation's error: a node that does not run it is a network that is down, a
/// socket error is its `OSError`.
pub(crate) fn socket_op(e: zt_runtime::runtime::OpError<SockError>) -> PyErr {
    errors::op(e, errors::socket_runtime, |e| sock_err(e, None))
}
