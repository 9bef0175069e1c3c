use std::sync::Arc;

use pyo3::prelude::*;
use pyo3::types::PyBytes;
use zt_runtime::store::{FileStore as CoreFileStore, MemoryStore as CoreMemoryStore};
use zt_runtime::{Store, StoreError};

use crate::errors;

/// A directory laid out as zerotier-one's / libzt's home; atomic writes.
#[pyclass(module = "zt._native", frozen)]
pub(crate) struct FileStore(pub(crate) Arc<CoreFileStore>);

/// A store in memory.
#[pyclass(module = "zt._native", frozen)]
pub(crate) struct MemoryStore(pub(crate) Arc<CoreMemoryStore>);

fn get<'py>(py: Python<'py>, s: &dyn Store, key: &str) -> PyResult<Option<Bound<'py, PyBytes>>> {
    let v = py.detach(|| s.get(key)).map_err(errors::store)?;
    Ok(v.map(|d| PyBytes::new(py, &d)))
}

macro_rules! store_methods {
    ($t:ty, { $($extra:tt)* }) => {
        #[pymethods]
        impl $t {
            $($extra)*

            /// The value of `key`, or None.
            fn get<'py>(&self, py: Python<'py>, key: &str) -> PyResult<Option<Bound<'py, PyBytes>>> {
                get(py, &*self.0, key)
            }

            /// Atomically sets `key`; `secret` asks for owner-only permissions.
            #[pyo3(signature = (key, data, secret = false))]
            fn put(&self, py: Python<'_>, key: &str, data: &[u8], secret: bool) -> PyResult<()> {
                py.detach(|| self.0.put(key, data, secret)).map_err(errors::store)
            }

            /// Removes `key` (absent is fine).
            fn delete(&self, py: Python<'_>, key: &str) -> PyResult<()> {
                py.detach(|| self.0.delete(key)).map_err(errors::store)
            }

            /// Keys starting with `prefix`, sorted.
            #[pyo3(signature = (prefix = ""))]
            fn list(&self, py: Python<'_>, prefix: &str) -> PyResult<Vec<String>> {
                py.detach(|| self.0.list(prefix)).map_err(errors::store)
            }
        }
    };
}

store_methods!(FileStore, {
    #[new]
    fn new(path: std::path::PathBuf) -> PyResult<Self> {
        CoreFileStore::open(path)
            .map(|s| Self(Arc::new(s)))
            .map_err(errors::store)
    }

    /// The directory.
    #[getter]
    fn path(&self) -> std::path::PathBuf {
        self.0.root().to_path_buf()
    }

    fn __repr__(&self) -> String {
        format!("FileStore({:?})", self.0.root())
    }
});

store_methods!(MemoryStore, {
    #[new]
    fn new() -> Self {
        Self(Arc::new(CoreMemoryStore::new()))
    }
});

/// Any Python object with get/put/delete/list, called from the node's thread with the GIL.
struct PyStore(Py<PyAny>);

impl PyStore {
    fn call<T>(
        &self,
        operation: &'static str,
        key: &str,
        f: impl FnOnce(Python<'_>, &Bound<'_, PyAny>) -> PyResult<T>,
    ) -> Result<T, StoreError> {
        Python::attach(|py| {
            f(py, self.0.bind(py)).map_err(|e| StoreError::Backend {
                operation,
                key: key.to_owned(),
                message: e.to_string(),
            })
        })
    }
}

impl Store for PyStore {
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.call("get", key, |_, o| {
            let v = o.call_method1("get", (key,))?;
            if v.is_none() {
                Ok(None)
            } else {
                Ok(Some(v.extract::<Vec<u8>>()?))
            }
        })
    }

    fn put(&self, key: &str, data: &[u8], _secret: bool) -> Result<(), StoreError> {
        self.call("put", key, |py, o| {
            o.call_method1("put", (key, PyBytes::new(py, data)))
                .map(|_| ())
        })
    }

    fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.call("delete", key, |_, o| {
            o.call_method1("delete", (key,)).map(|_| ())
        })
    }

    fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        self.call("list", prefix, |_, o| {
            let mut keys: Vec<String> = o
                .call_method1("list", (prefix,))?
                .try_iter()?
                .map(|k| k.and_then(|k| k.extract::<String>()))
                .collect::<PyResult<_>>()?;
            keys.retain(|k| k.starts_with(prefix) && zt_runtime::store::check_key(k).is_ok());
            keys.sort();
            Ok(keys)
        })
    }

    fn describe(&self, key: &str) -> String {
        let name = Python::attach(|py| {
            self.0
                .bind(py)
                .get_type()
                .name()
                .map(|n| n.to_string())
                .unwrap_or_default()
        });
        format!("{name}:{key}")
    }
}

/// The store behind a Python store argument.
pub(crate) fn to_store(obj: &Bound<'_, PyAny>) -> PyResult<Arc<dyn Store>> {
    if let Ok(s) = obj.cast::<FileStore>() {
        return Ok(s.get().0.clone());
    }
    if let Ok(s) = obj.cast::<MemoryStore>() {
        return Ok(s.get().0.clone());
    }
    for m in ["get", "put", "delete", "list"] {
        if !obj.hasattr(m)? {
            return Err(pyo3::exceptions::PyTypeError::new_err(format!(
                "a store needs get, put, delete and list methods; {} has no {m}()",
                obj.get_type().name()?
            )));
        }
    }
    Ok(Arc::new(PyStore(obj.clone().unbind())))
}
