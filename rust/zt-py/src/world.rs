use pyo3::prelude::*;
use pyo3::types::PyBytes;
use zt_proto::{Root as CoreRoot, World as CoreWorld, WorldType};

use crate::errors;
use crate::identity::{Identity, KeyPair};

/// One root of a world: its public identity and stable endpoints (`"ip/port"` strings).
#[pyclass(module = "zt._native", frozen, eq, from_py_object)]
#[derive(Clone, PartialEq)]
pub(crate) struct Root {
    /// The root's identity.
    #[pyo3(get)]
    identity: Identity,
    /// Its endpoints as `ip/port` strings.
    #[pyo3(get)]
    stable_endpoints: Vec<String>,
}

#[pymethods]
impl Root {
    #[new]
    fn new(identity: Identity, stable_endpoints: Vec<String>) -> PyResult<Self> {
        for ep in &stable_endpoints {
            ep.parse::<zt_proto::InetAddress>().map_err(errors::world)?;
        }
        Ok(Self {
            identity: Identity(identity.0.to_public()),
            stable_endpoints,
        })
    }

    fn __repr__(&self) -> String {
        format!(
            "Root({}, {:?})",
            self.identity.0.address(),
            self.stable_endpoints
        )
    }
}

impl Root {
    fn to_core(&self) -> PyResult<CoreRoot> {
        let eps = self
            .stable_endpoints
            .iter()
            .map(|e| e.parse().map_err(errors::world))
            .collect::<PyResult<_>>()?;
        Ok(CoreRoot {
            identity: self.identity.0.clone(),
            stable_endpoints: eps,
        })
    }
}

/// A ZeroTier world: a planet (root set) or a moon.
#[pyclass(module = "zt._native", frozen, eq, from_py_object)]
#[derive(Clone, PartialEq)]
pub(crate) struct World(pub(crate) CoreWorld);

fn parse_type(t: &str) -> PyResult<WorldType> {
    match t {
        "planet" => Ok(WorldType::Planet),
        "moon" => Ok(WorldType::Moon),
        other => Err(errors::world(format!(
            "world type must be 'planet' or 'moon', not {other:?}"
        ))),
    }
}

#[pymethods]
impl World {
    /// Parses a serialized world.
    #[staticmethod]
    fn from_bytes(b: &[u8]) -> PyResult<Self> {
        CoreWorld::from_bytes(b).map(Self).map_err(errors::world)
    }

    /// Builds and signs a world. `signing_key` must be the key named by the previous revision
    /// (for a first revision, conventionally the pair whose public key is `update_key`).
    #[staticmethod]
    #[pyo3(signature = (world_type, world_id, timestamp, roots, signing_key, update_key = None))]
    fn make(
        world_type: &str,
        world_id: u64,
        timestamp: u64,
        roots: Vec<Root>,
        signing_key: &KeyPair,
        update_key: Option<&[u8]>,
    ) -> PyResult<Self> {
        let update: [u8; 64] = match update_key {
            Some(k) => k
                .try_into()
                .map_err(|_| errors::world("update_key must be a 64-byte public key"))?,
            None => *signing_key.0.public(),
        };
        let roots = roots
            .iter()
            .map(Root::to_core)
            .collect::<PyResult<Vec<_>>>()?;
        CoreWorld::make(
            parse_type(world_type)?,
            world_id,
            timestamp,
            update,
            roots,
            &signing_key.0,
        )
        .map(Self)
        .map_err(errors::world)
    }

    /// The serialized world.
    fn to_bytes<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, &self.0.to_bytes())
    }

    /// `"planet"` or `"moon"`.
    #[getter]
    fn world_type(&self) -> &'static str {
        match self.0.world_type {
            WorldType::Planet => "planet",
            WorldType::Moon => "moon",
        }
    }

    /// The world ID.
    #[getter]
    fn id(&self) -> u64 {
        self.0.id
    }

    /// The revision timestamp (ms).
    #[getter]
    fn timestamp(&self) -> u64 {
        self.0.timestamp
    }

    /// The public key that must sign the next revision.
    #[getter]
    fn update_key<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, &self.0.update_key)
    }

    /// The 96-byte signature.
    #[getter]
    fn signature<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, &self.0.signature)
    }

    /// The roots.
    #[getter]
    fn roots(&self) -> Vec<Root> {
        self.0
            .roots
            .iter()
            .map(|r| Root {
                identity: Identity(r.identity.clone()),
                stable_endpoints: r.stable_endpoints.iter().map(ToString::to_string).collect(),
            })
            .collect()
    }

    /// Whether the signature is valid under `key` (64-byte public key), or, without `key`,
    /// under this world's own update key (true of first revisions).
    #[pyo3(signature = (key = None))]
    fn verify(&self, key: Option<&[u8]>) -> PyResult<bool> {
        match key {
            None => Ok(self.0.is_self_signed()),
            Some(k) => {
                let k: [u8; 64] = k
                    .try_into()
                    .map_err(|_| errors::world("key must be a 64-byte public key"))?;
                Ok(self.0.is_signed_by(&k))
            }
        }
    }

    /// Raises WorldError unless `update` may replace this world (same type and ID, newer, and
    /// signed by this world's update key).
    fn check_update(&self, update: &World) -> PyResult<()> {
        self.0.check_update(&update.0).map_err(errors::world)
    }

    /// `check_update` as a bool.
    fn accepts_update(&self, update: &World) -> bool {
        self.0.check_update(&update.0).is_ok()
    }

    fn __repr__(&self) -> String {
        format!(
            "<World {} id={:#x} timestamp={} roots={}>",
            self.world_type(),
            self.0.id,
            self.0.timestamp,
            self.0.roots.len()
        )
    }
}

/// ZeroTier's default planet as a stock 1.14.1 install has it.
#[pyfunction]
pub(crate) fn default_planet() -> World {
    World(zt_proto::default_planet())
}
