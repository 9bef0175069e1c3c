//! The one place Rust errors become Python exceptions (classes live in `zt/errors.py`).

use pyo3::PyErr;
use zt_runtime::sockets::SockError;

pyo3::import_exception!(zt.errors, IdentityError);
pyo3::import_exception!(zt.errors, WorldError);
pyo3::import_exception!(zt.errors, StoreError);
pyo3::import_exception!(zt.errors, StoreCorruptError);
pyo3::import_exception!(zt.errors, NodeStateError);
pyo3::import_exception!(zt.errors, NodeFaultedError);
pyo3::import_exception!(zt.errors, NetworkError);

pub(crate) fn identity(e: zt_proto::IdentityError) -> PyErr {
    IdentityError::new_err(e.to_string())
}

pub(crate) fn world(e: impl std::fmt::Display) -> PyErr {
    WorldError::new_err(e.to_string())
}

pub(crate) fn store(e: zt_runtime::StoreError) -> PyErr {
    match e {
        zt_runtime::StoreError::Corrupt { .. } => StoreCorruptError::new_err(e.to_string()),
        other => StoreError::new_err(other.to_string()),
    }
}

pub(crate) fn runtime(e: zt_runtime::runtime::RuntimeError) -> PyErr {
    use zt_runtime::runtime::RuntimeError as R;
    match e {
        R::Faulted(_) => NodeFaultedError::new_err(e.to_string()),
        R::Timeout => pyo3::exceptions::PyTimeoutError::new_err(e.to_string()),
        other => NodeStateError::new_err(other.to_string()),
    }
}

/// An operation's error: the runtime's through `runtime`, the operation's own through `failed`.
pub(crate) fn op<E>(
    e: zt_runtime::runtime::OpError<E>,
    runtime: impl FnOnce(zt_runtime::runtime::RuntimeError) -> PyErr,
    failed: impl FnOnce(E) -> PyErr,
) -> PyErr {
    match e {
        zt_runtime::runtime::OpError::Runtime(e) => runtime(e),
        zt_runtime::runtime::OpError::Failed(e) => failed(e),
    }
}

/// An OS error as Python's `OSError` (its subclass by errno, as the stdlib raises them), the
/// message prefixed with what failed.
pub(crate) fn os(what: &str, e: &std::io::Error) -> PyErr {
    use std::io::ErrorKind as K;
    let errno = e.raw_os_error().or(match e.kind() {
        K::AddrInUse => Some(sock_errno(SockError::AddrInUse)),
        K::AddrNotAvailable => Some(sock_errno(SockError::AddrNotAvailable)),
        K::PermissionDenied => Some(sock_errno(SockError::Access)),
        _ => None,
    });
    let message = format!("{what}: {e}");
    match errno {
        Some(n) => pyo3::exceptions::PyOSError::new_err((n, message)),
        None => pyo3::exceptions::PyOSError::new_err(message),
    }
}

/// A runtime error met by a socket call: a node that is not running is a network that is down
/// (`OSError(ENETDOWN)`, as sockets users expect), a wait that ran out a `TimeoutError`.
pub(crate) fn socket_runtime(e: zt_runtime::runtime::RuntimeError) -> PyErr {
    use zt_runtime::runtime::RuntimeError as R;
    match e {
        R::Timeout => pyo3::exceptions::PyTimeoutError::new_err(e.to_string()),
        other => pyo3::exceptions::PyOSError::new_err((
            sock_errno(SockError::NetDown),
            format!("network is down: {other}"),
        )),
    }
}

/// The value of Python's `errno.<name>` (what `OSError` picks its subclass by; on Windows
/// Winsock's for socket errors). -1 if Python lacks the name.
#[cfg(not(unix))]
fn errno(name: &str) -> i32 {
    use pyo3::prelude::*;
    Python::attach(|py| {
        py.import("errno")
            .and_then(|m| m.getattr(name))
            .and_then(|v| v.extract::<i32>())
            .unwrap_or(-1)
    })
}

/// The errno of a socket error, as Python numbers it on this platform.
pub(crate) fn sock_errno(e: SockError) -> i32 {
    #[cfg(unix)]
    {
        e.errno()
    }
    #[cfg(not(unix))]
    {
        errno(e.errno_name())
    }
}
