use pyo3::prelude::*;
use pyo3::types::PyBytes;

/// SHA-512 of `data`.
#[pyfunction]
pub(crate) fn sha512<'py>(py: Python<'py>, data: &[u8]) -> Bound<'py, PyBytes> {
    PyBytes::new(py, &zt_proto::crypto::sha512(data))
}

/// The full 16-byte Poly1305 tag (ZeroTier keeps the first 8) of `data` under a 32-byte key.
#[pyfunction]
pub(crate) fn poly1305<'py>(
    py: Python<'py>,
    key: &[u8],
    data: &[u8],
) -> PyResult<Bound<'py, PyBytes>> {
    let key: [u8; 32] = key
        .try_into()
        .map_err(|_| pyo3::exceptions::PyValueError::new_err("a Poly1305 key is 32 bytes"))?;
    Ok(PyBytes::new(py, &zt_proto::crypto::poly1305(&key, data)))
}

/// `data` XORed with the Salsa20/`rounds` keystream (rounds 12 or 20; 32-byte key, 8-byte nonce).
#[pyfunction]
pub(crate) fn salsa20<'py>(
    py: Python<'py>,
    rounds: u8,
    key: &[u8],
    nonce: &[u8],
    data: &[u8],
) -> PyResult<Bound<'py, PyBytes>> {
    use zt_proto::crypto::{Salsa, SalsaRounds};
    let bad = |m: &str| pyo3::exceptions::PyValueError::new_err(m.to_owned());
    let r = match rounds {
        12 => SalsaRounds::R12,
        20 => SalsaRounds::R20,
        _ => return Err(bad("rounds must be 12 or 20")),
    };
    let key: [u8; 32] = key
        .try_into()
        .map_err(|_| bad("a Salsa20 key is 32 bytes"))?;
    let nonce: [u8; 8] = nonce
        .try_into()
        .map_err(|_| bad("a Salsa20 nonce is 8 bytes"))?;
    let mut out = data.to_vec();
    Salsa::new(r, &key, &nonce).crypt(&mut out);
    Ok(PyBytes::new(py, &out))
}

/// The memory-hard hash of a 64-byte public key (ZeroTier's identity proof of work).
#[pyfunction]
pub(crate) fn identity_hash<'py>(
    py: Python<'py>,
    public_key: &[u8],
) -> PyResult<Bound<'py, PyBytes>> {
    let pk: [u8; 64] = public_key
        .try_into()
        .map_err(|_| pyo3::exceptions::PyValueError::new_err("a public key is 64 bytes"))?;
    let d = py.detach(|| {
        zt_proto::crypto::identity_hash::hash(
            &pk,
            &mut zt_proto::crypto::identity_hash::Scratch::default(),
        )
    });
    Ok(PyBytes::new(py, &d))
}
