use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use zt_proto::{Address, NetworkId};

fn node(address: &str) -> PyResult<Address> {
    address
        .parse()
        .map_err(|e: zt_proto::AddressError| PyValueError::new_err(e.to_string()))
}

/// The rfc4193 address of `node` on network `nwid`.
#[pyfunction]
pub(crate) fn network_rfc4193(nwid: u64, address: &str) -> PyResult<String> {
    Ok(NetworkId(nwid).rfc4193(node(address)?).to_string())
}

/// The 6plane address of `node` on network `nwid`.
#[pyfunction]
pub(crate) fn network_sixplane(nwid: u64, address: &str) -> PyResult<String> {
    Ok(NetworkId(nwid).sixplane(node(address)?).to_string())
}

/// The MAC of `node` on network `nwid`.
#[pyfunction]
pub(crate) fn network_member_mac(nwid: u64, address: &str) -> PyResult<String> {
    Ok(NetworkId(nwid).mac(node(address)?).to_string())
}

/// The port-range ad-hoc network ID for `start..=end`.
#[pyfunction]
pub(crate) fn network_adhoc_id(start: u16, end: u16) -> u64 {
    NetworkId::adhoc(start, end).0
}
