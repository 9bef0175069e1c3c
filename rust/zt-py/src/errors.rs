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
