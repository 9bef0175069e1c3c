use pyo3::prelude::*;
use pyo3::types::PyBytes;
use zt_proto::{
    IdentityError as CoreIdentityError,
    crypto::c25519::{self, KeyPair as CoreKeyPair},
};

use crate::errors;

/// A ZeroTier identity (address + C25519 key pair, optionally with its secret).
#[pyclass(module = "zt._native", frozen, eq, hash, from_py_object)]
#[derive(Clone, PartialEq, Eq, Hash)]
pub(crate) struct Identity(pub(crate) zt_proto::Identity);

#[pymethods]
impl Identity {
    /// Generates a new identity; the work is spread over `threads` cores (0 = all; more than
    /// the machine has count as all, and threads the process cannot start are done without).
    #[staticmethod]
    /// `MemoryError` if the search's scratch memory (2 MB) cannot be had.
    #[pyo3(signature = (threads = 0))]
    fn generate(py: Python<'_>, threads: usize) -> PyResult<Self> {
        py.detach(|| zt_runtime::keygen::generate(threads))
            .map(Self)
            .map_err(|e| pyo3::exceptions::PyMemoryError::new_err(e.to_string()))
    }

    /// Parses `address:0:public[:secret]`.
    #[staticmethod]
    fn from_string(s: &str) -> PyResult<Self> {
        s.parse().map(Self).map_err(errors::identity)
    }

    /// Parses the binary form (71 bytes, or 135 with the secret).
    #[staticmethod]
    fn from_bytes(b: &[u8]) -> PyResult<Self> {
        zt_proto::Identity::from_bytes(b)
            .map(Self)
            .map_err(errors::identity)
    }

    /// The 10-hex-digit address.
    #[getter]
    fn address(&self) -> String {
        self.0.address().to_string()
    }

    /// The address as an integer.
    #[getter]
    fn address_int(&self) -> u64 {
        self.0.address().to_u64()
    }

    /// The 64-byte public key.
    #[getter]
    fn public_key<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, self.0.public_key())
    }

    /// The 64-byte secret key, or None.
    #[getter]
    fn secret_key<'py>(&self, py: Python<'py>) -> Option<Bound<'py, PyBytes>> {
        self.0.key_pair().map(|k| PyBytes::new(py, k.secret()))
    }

    /// Whether the secret key is present.
    #[getter]
    fn has_secret(&self) -> bool {
        self.0.has_secret()
    }

    /// This identity without its secret.
    #[getter]
    fn public(&self) -> Self {
        Self(self.0.to_public())
    }

    /// Full validation (memory-hard hash, address, key pairing); raises IdentityError.
    fn validate(&self, py: Python<'_>) -> PyResult<()> {
        let id = self.0.clone();
        py.detach(move || id.validate()).map_err(errors::identity)
    }

    /// `validate()` as a bool.
    fn is_valid(&self, py: Python<'_>) -> bool {
        let id = self.0.clone();
        py.detach(move || id.validate()).is_ok()
    }

    /// The public text form.
    fn public_string(&self) -> String {
        self.0.to_public_string()
    }

    /// The secret text form; raises IdentityError without a secret.
    fn secret_string(&self) -> PyResult<String> {
        if !self.0.has_secret() {
            return Err(errors::identity(CoreIdentityError::NoSecret(
                self.0.address(),
            )));
        }
        Ok(self.0.to_secret_string())
    }

    /// The binary form.
    #[pyo3(signature = (include_secret = false))]
    fn to_bytes<'py>(&self, py: Python<'py>, include_secret: bool) -> Bound<'py, PyBytes> {
        PyBytes::new(py, &self.0.to_bytes(include_secret))
    }

    /// A 96-byte ZeroTier signature of `data`.
    fn sign<'py>(&self, py: Python<'py>, data: &[u8]) -> PyResult<Bound<'py, PyBytes>> {
        let sig = self.0.sign(data).map_err(errors::identity)?;
        Ok(PyBytes::new(py, &sig))
    }

    /// Whether `signature` is this identity's signature of `data`.
    fn verify(&self, data: &[u8], signature: &[u8]) -> bool {
        self.0.verify(data, signature)
    }

    /// The 48-byte key shared with `other` (needs this identity's secret).
    fn agree<'py>(&self, py: Python<'py>, other: &Identity) -> PyResult<Bound<'py, PyBytes>> {
        let k = self.0.agree(&other.0).map_err(errors::identity)?;
        Ok(PyBytes::new(py, &k[..]))
    }

    fn __str__(&self) -> String {
        self.0.to_public_string()
    }

    fn __repr__(&self) -> String {
        let s = if self.0.has_secret() { ", secret" } else { "" };
        format!("<Identity {}{s}>", self.0.address())
    }
}

/// A C25519 key pair, as used to sign worlds (mkworld's `*.c25519` files hold public ‖ secret).
#[pyclass(module = "zt._native", frozen)]
#[derive(Clone)]
pub(crate) struct KeyPair(pub(crate) CoreKeyPair);

#[pymethods]
impl KeyPair {
    /// A fresh random pair.
    #[staticmethod]
    fn generate() -> Self {
        Self(CoreKeyPair::generate(&mut zt_runtime::rng::OsRng))
    }

    /// From 128 bytes (public ‖ secret, the `.c25519` file form) or 64 secret bytes.
    #[staticmethod]
    fn from_bytes(b: &[u8]) -> PyResult<Self> {
        match b.len() {
            128 => {
                let public: [u8; 64] = b[..64].try_into().unwrap_or([0; 64]);
                let secret: [u8; 64] = b[64..].try_into().unwrap_or([0; 64]);
                CoreKeyPair::from_parts(&public, &secret)
                    .map(Self)
                    .ok_or_else(|| errors::world("the secret key does not match the public key"))
            }
            64 => Ok(Self(CoreKeyPair::from_secret(
                &b.try_into().unwrap_or([0; 64]),
            ))),
            n => Err(errors::world(format!(
                "a key pair is 128 bytes (or a 64-byte secret), got {n}"
            ))),
        }
    }

    /// The 64-byte public key.
    #[getter]
    fn public<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, self.0.public())
    }

    /// The 64-byte secret key.
    #[getter]
    fn secret<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, self.0.secret())
    }

    /// public ‖ secret (128 bytes).
    fn to_bytes<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        let mut v = self.0.public().to_vec();
        v.extend_from_slice(self.0.secret());
        PyBytes::new(py, &v)
    }

    /// A 96-byte ZeroTier signature.
    fn sign<'py>(&self, py: Python<'py>, data: &[u8]) -> Bound<'py, PyBytes> {
        PyBytes::new(py, &self.0.sign(data))
    }

    /// Verifies a ZeroTier signature under a 64-byte public key.
    #[staticmethod]
    fn verify(public: &[u8], data: &[u8], signature: &[u8]) -> bool {
        <[u8; 64]>::try_from(public).is_ok_and(|p| c25519::verify(&p, data, signature))
    }

    fn __repr__(&self) -> String {
        format!("<KeyPair {}…>", &zt_proto_hex(&self.0.public()[..8]))
    }
}

fn zt_proto_hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
