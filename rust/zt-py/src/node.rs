use std::sync::Arc;
use std::time::Duration;

use pyo3::exceptions::{PyEOFError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyDict;
use zt_runtime::events::{NodeEvent, RecvError, Subscription};
use zt_runtime::runtime::{Lifecycle, NodeRuntime, RuntimeOptions};
use zt_runtime::state::LoadOptions;

use crate::errors;
use crate::identity::Identity;
use crate::store::to_store;
use crate::world::World;

fn duration(timeout: Option<f64>) -> PyResult<Option<Duration>> {
    timeout
        .map(|t| {
            Duration::try_from_secs_f64(t.max(0.0))
                .map_err(|_| PyValueError::new_err(format!("invalid timeout {t}")))
        })
        .transpose()
}

/// A node's event queue (one per consumer).
#[pyclass(module = "zt._native", frozen)]
pub(crate) struct EventSubscription(Arc<Subscription>);

fn payload<'py>(py: Python<'py>, ev: &NodeEvent) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    match ev {
        NodeEvent::Up { address } => d.set_item("address", address.to_string())?,
        NodeEvent::FatalError { message } => d.set_item("message", message)?,
        NodeEvent::Stored { key } => d.set_item("key", key.path())?,
        NodeEvent::PlanetChanged { id, timestamp } | NodeEvent::MoonChanged { id, timestamp } => {
            d.set_item("id", *id)?;
            d.set_item("timestamp", *timestamp)?;
        }
        _ => {}
    }
    Ok(d)
}

#[pymethods]
impl EventSubscription {
    /// The next `(code, payload)`; None on timeout; EOFError once closed and drained.
    #[pyo3(signature = (timeout = None))]
    fn recv<'py>(
        &self,
        py: Python<'py>,
        timeout: Option<f64>,
    ) -> PyResult<Option<(i32, Bound<'py, PyDict>)>> {
        let t = duration(timeout)?;
        let sub = self.0.clone();
        let r = match t {
            Some(d) if d.is_zero() => sub.try_recv(),
            _ => py.detach(move || sub.recv(t)),
        };
        match r {
            Ok(ev) => Ok(Some((ev.code() as i32, payload(py, &ev)?))),
            Err(RecvError::Timeout) => Ok(None),
            Err(RecvError::Closed) => Err(PyEOFError::new_err("the event subscription is closed")),
        }
    }

    /// Readable while an event is queued or the subscription is closed (for select/asyncio).
    fn fileno(&self) -> i32 {
        self.0.readiness_fd()
    }

    /// Events dropped because this consumer fell behind.
    #[getter]
    fn dropped(&self) -> u64 {
        self.0.dropped()
    }

    /// Whether closed.
    #[getter]
    fn closed(&self) -> bool {
        self.0.is_closed()
    }

    /// Closes this subscription.
    fn close(&self) {
        self.0.close();
    }
}

/// The native node: a loop thread driving the protocol core.
#[pyclass(module = "zt._native", frozen)]
pub(crate) struct NativeNode {
    rt: Option<NodeRuntime>,
}

impl NativeNode {
    fn rt(&self) -> &NodeRuntime {
        // Only Drop takes it out.
        self.rt
            .as_ref()
            .unwrap_or_else(|| unreachable!("runtime present until drop"))
    }
}

#[pymethods]
impl NativeNode {
    #[new]
    #[pyo3(signature = (store, identity = None, planet = None, keygen_threads = 0))]
    fn new(
        store: &Bound<'_, PyAny>,
        identity: Option<Identity>,
        planet: Option<World>,
        keygen_threads: usize,
    ) -> PyResult<Self> {
        if let Some(p) = &planet {
            if p.0.world_type != zt_proto::WorldType::Planet {
                return Err(errors::world(
                    "the planet option needs a planet, not a moon",
                ));
            }
        }
        let options = RuntimeOptions {
            load: LoadOptions {
                identity: identity.map(|i| i.0),
                planet: planet.map(|p| p.0),
                keygen_threads,
            },
        };
        Ok(Self {
            rt: Some(NodeRuntime::new(to_store(store)?, options)),
        })
    }

    /// Starts the loop thread (idempotent); returns at once.
    fn start(&self, py: Python<'_>) -> PyResult<()> {
        let rt = self.rt();
        py.detach(|| rt.start())
            .map_err(|e| errors::NodeStateError::new_err(e.to_string()))
    }

    /// Waits until running; raises NodeFaultedError, NodeStateError or TimeoutError.
    #[pyo3(signature = (timeout = None))]
    fn wait_running(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<()> {
        let t = duration(timeout)?;
        let rt = self.rt();
        py.detach(|| rt.wait_running(t)).map_err(errors::runtime)
    }

    /// Stops and waits for the thread (idempotent).
    fn stop(&self, py: Python<'_>) {
        let rt = self.rt();
        py.detach(|| rt.stop());
    }

    /// Ends all event subscriptions.
    fn close_events(&self) {
        self.rt().close_events();
    }

    /// `(state name, fault cause or None)`.
    fn lifecycle(&self) -> (&'static str, Option<String>) {
        let l = self.rt().lifecycle();
        let cause = match &l {
            Lifecycle::Faulted(c) => Some(c.clone()),
            _ => None,
        };
        (l.name(), cause)
    }

    /// The identity (with secret), once started.
    fn identity(&self) -> Option<Identity> {
        self.rt().snapshot().map(|s| Identity(s.identity))
    }

    /// The current planet, once started.
    fn planet(&self) -> Option<World> {
        self.rt().snapshot().map(|s| World(s.planet))
    }

    /// The moons, once started.
    fn moons(&self) -> Vec<World> {
        self.rt()
            .snapshot()
            .map(|s| s.moons.into_iter().map(World).collect())
            .unwrap_or_default()
    }

    /// Counters.
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        if let Some(s) = self.rt().snapshot() {
            d.set_item("quick_tasks", s.stats.quick_tasks)?;
            d.set_item("ping_checks", s.stats.ping_checks)?;
            d.set_item("housekeeping", s.stats.housekeeping)?;
            d.set_item("worlds_rejected", s.stats.worlds_rejected)?;
            d.set_item("store_errors", s.store_errors)?;
        }
        Ok(d)
    }

    /// A new event queue holding at most `capacity` undelivered events.
    #[pyo3(signature = (capacity = 1024))]
    fn subscribe(&self, capacity: usize) -> PyResult<EventSubscription> {
        self.rt()
            .subscribe(capacity)
            .map(EventSubscription)
            .map_err(|e| errors::NodeStateError::new_err(e.to_string()))
    }

    /// Offers a newer planet or moon revision; raises WorldError if refused.
    #[pyo3(signature = (world, timeout = 10.0))]
    fn update_world(&self, py: Python<'_>, world: &World, timeout: f64) -> PyResult<()> {
        let t = duration(Some(timeout))?.unwrap_or_default();
        let w = world.0.clone();
        let rt = self.rt();
        py.detach(|| rt.update_world(w, t))
            .map_err(errors::runtime)?
            .map_err(errors::world)
    }
}

impl Drop for NativeNode {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            // Stopping joins the loop thread, which may need the GIL (custom stores): release it.
            Python::attach(|py| py.detach(move || drop(rt)));
        }
    }
}
