//! `zt._native`: the thin PyO3 layer over `zt-proto` and `zt-runtime`. No protocol logic lives
//! here; errors map to the classes of `zt/errors.py` in [`errors`].

use pyo3::prelude::*;

mod blocking;
mod convert;
mod crypto;
mod errors;
mod events;
mod identity;
mod network;
mod node;
mod socket;
mod store;
mod world;

#[pymodule]
mod _native {
    use super::*;

    #[pymodule_export]
    use crypto::{identity_hash, poly1305, salsa20, sha512};
    #[pymodule_export]
    use events::{EventSubscription, FrameTap};
    #[pymodule_export]
    use identity::{Identity, KeyPair};
    #[pymodule_export]
    use network::{network_adhoc_id, network_member_mac, network_rfc4193, network_sixplane};
    #[pymodule_export]
    use node::NativeNode;
    #[pymodule_export]
    use socket::{TcpSocket, UdpSocket};
    #[pymodule_export]
    use store::{FileStore, MemoryStore};
    #[pymodule_export]
    use world::{Root, World, default_planet};

    /// "release" or "debug": benchmarks refuse debug builds.
    #[pymodule_export]
    const BUILD_PROFILE: &str = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };

    /// The package version.
    #[pymodule_export]
    const VERSION: &str = env!("CARGO_PKG_VERSION");

    #[pymodule_init]
    fn init(m: &Bound<'_, PyModule>) -> PyResult<()> {
        // Route the `log` records of the Rust crates to Python's `logging` ("zt.*" loggers).
        // No caching, so that logging configured after import still takes effect; the Rust side
        // only logs lifecycle-level records.
        let logger = pyo3_log::Logger::new(m.py(), pyo3_log::Caching::Nothing)?;
        let _ = logger.install();
        Ok(())
    }
}
