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
        NodeEvent::PathDiscovered { address, remote } | NodeEvent::PathDead { address, remote } => {
            d.set_item("address", address.to_string())?;
            d.set_item("remote", remote.to_string())?;
        }
        NodeEvent::UserMessage {
            from,
            type_id,
            data,
        } => {
            d.set_item("address", from.to_string())?;
            d.set_item("type_id", *type_id)?;
            d.set_item("data", pyo3::types::PyBytes::new(py, data))?;
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
    #[pyo3(signature = (
        store, identity = None, planet = None, keygen_threads = 0, port = 0, ipv6 = true,
        allow_loopback = false, allowed_destinations = None
    ))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        store: &Bound<'_, PyAny>,
        identity: Option<Identity>,
        planet: Option<World>,
        keygen_threads: usize,
        port: u16,
        ipv6: bool,
        allow_loopback: bool,
        allowed_destinations: Option<Vec<String>>,
    ) -> PyResult<Self> {
        if let Some(p) = &planet {
            if p.0.world_type != zt_proto::WorldType::Planet {
                return Err(errors::world(
                    "the planet option needs a planet, not a moon",
                ));
            }
        }
        let allowed = match allowed_destinations {
            None => None,
            Some(list) => Some(
                zt_runtime::udp::parse_prefixes(&list.join(",")).map_err(PyValueError::new_err)?,
            ),
        };
        let core = zt_proto::node::CoreOptions {
            allow_loopback,
            ..Default::default()
        };
        let options = RuntimeOptions {
            load: LoadOptions {
                identity: identity.map(|i| i.0),
                planet: planet.map(|p| p.0),
                keygen_threads,
                core,
            },
            port,
            ipv6,
            allowed_destinations: allowed,
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
            d.set_item("send_errors", s.send_errors)?;
            d.set_item("datagrams_in", s.stats.datagrams_in)?;
            d.set_item("datagrams_out", s.stats.datagrams_out)?;
            d.set_item("packets_in", s.stats.packets_in)?;
            d.set_item("relayed", s.stats.relayed)?;
            d.set_item("rendezvous_sent", s.stats.rendezvous_sent)?;
            d.set_item("push_sent", s.stats.push_sent)?;
            d.set_item("push_contacts", s.stats.push_contacts)?;
            d.set_item("drops_total", s.stats.total_drops())?;
            let drops = PyDict::new(py);
            for (reason, n) in &s.stats.drops {
                drops.set_item(format!("{reason:?}"), *n)?;
            }
            d.set_item("drops", drops)?;
        }
        Ok(d)
    }

    /// `(online, is_root, port)` once started.
    fn status(&self) -> Option<(bool, bool, u16)> {
        self.rt().snapshot().map(|s| (s.online, s.is_root, s.port))
    }

    /// Known peers as dicts.
    fn peers<'py>(&self, py: Python<'py>) -> PyResult<Vec<Bound<'py, PyDict>>> {
        let Some(s) = self.rt().snapshot() else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for p in s.peers {
            let d = PyDict::new(py);
            d.set_item("address", p.address.to_string())?;
            d.set_item("version", p.version.map(|(a, b, c)| format!("{a}.{b}.{c}")))?;
            d.set_item("protocol", p.protocol)?;
            d.set_item("is_root", p.is_root)?;
            let mut paths = Vec::new();
            for x in p.paths {
                let pd = PyDict::new(py);
                pd.set_item("remote", x.remote.to_string())?;
                pd.set_item("last_receive_ago_ms", x.last_receive_ago_ms)?;
                pd.set_item("latency_ms", x.latency_ms)?;
                pd.set_item("alive", x.alive)?;
                paths.push(pd);
            }
            d.set_item("paths", paths)?;
            out.push(d);
        }
        Ok(out)
    }

    /// Sends a USER_MESSAGE; raises ValueError for a bad address or size.
    #[pyo3(signature = (address, type_id, data, timeout = 10.0))]
    fn send_user_message(
        &self,
        py: Python<'_>,
        address: &str,
        type_id: u64,
        data: &[u8],
        timeout: f64,
    ) -> PyResult<()> {
        let dest: zt_proto::Address = address
            .parse()
            .map_err(|e: zt_proto::address::AddressError| PyValueError::new_err(e.to_string()))?;
        let t = duration(Some(timeout))?.unwrap_or_default();
        let data = data.to_vec();
        let rt = self.rt();
        py.detach(|| rt.send_user_message(dest, type_id, data, t))
            .map_err(errors::runtime)?
            .map_err(|e| PyValueError::new_err(e.to_string()))
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
