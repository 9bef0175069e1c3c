//! `zt._native`: the thin PyO3 layer over `zt-proto` and `zt-runtime`. No protocol logic lives
//! here; errors map to the classes of `zt/errors.py` in [`errors`].

use pyo3::prelude::*;

mod errors;
mod identity;
mod node;
mod store;
mod world;

#[pymodule]
mod _native {
    use super::*;

    #[pymodule_export]
    use identity::{Identity, KeyPair};
    #[pymodule_export]
    use node::{EventSubscription, NativeNode};
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
    fn init(_m: &Bound<'_, PyModule>) -> PyResult<()> {
        // Route the `log` records of the Rust crates to Python's `logging` ("zt.*" loggers).
        let _ = pyo3_log::try_init();
        Ok(())
    }
}
