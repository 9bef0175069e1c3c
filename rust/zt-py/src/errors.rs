//! The one place Rust errors become Python exceptions (classes live in `zt/errors.py`).

use pyo3::PyErr;

pyo3::import_exception!(zt.errors, IdentityError);
pyo3::import_exception!(zt.errors, WorldError);
pyo3::import_exception!(zt.errors, StoreError);
pyo3::import_exception!(zt.errors, StoreCorruptError);
pyo3::import_exception!(zt.errors, NodeStateError);
pyo3::import_exception!(zt.errors, NodeFaultedError);
pyo3::import_exception!(zt.errors, NetworkError);

pub(crate) fn identity(e: zt_proto::identity::IdentityError) -> PyErr {
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

/// An OS error as Python's `OSError` (its subclass by errno, as the stdlib raises them), the
/// message prefixed with what failed.
pub(crate) fn os(what: &str, e: &std::io::Error) -> PyErr {
    use std::io::ErrorKind as K;
    let errno = e.raw_os_error().or(match e.kind() {
        K::AddrInUse => Some(libc::EADDRINUSE),
        K::AddrNotAvailable => Some(libc::EADDRNOTAVAIL),
        K::PermissionDenied => Some(libc::EACCES),
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
            libc::ENETDOWN,
            format!("network is down: {other}"),
        )),
    }
}
