use std::sync::Arc;
use std::time::{Duration, Instant};

use pyo3::exceptions::{PyEOFError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyBytes, PyDict};
use zt_runtime::events::{NodeEvent, RecvError, Subscription};
use zt_runtime::runtime::{Lifecycle, NodeRuntime, RuntimeOptions};
use zt_runtime::sockets::SockError;
use zt_runtime::state::LoadOptions;

use crate::errors;
use crate::identity::Identity;
use crate::store::to_store;
use crate::world::World;

/// A timeout from Python (seconds; None waits for ever). The Python layer checks what users
/// pass as `socket.settimeout` does; a remaining time computed there may be a little below
/// zero and counts as zero. NaN is refused (it compared as zero before).
fn duration(timeout: Option<f64>) -> PyResult<Option<Duration>> {
    timeout
        .map(|t| {
            if t.is_nan() {
                return Err(PyValueError::new_err("Invalid value NaN (not a number)"));
            }
            Duration::try_from_secs_f64(t.max(0.0))
                .map_err(|_| PyValueError::new_err(format!("invalid timeout {t}")))
        })
        .transpose()
}

/// Longest a blocking call on Python's main thread waits before it runs pending signal
/// handlers (Ctrl-C interrupts a blocked call as it does the stdlib's).
const SIGNAL_CHECK: Duration = Duration::from_millis(100);

/// Whether this is Python's main thread, where it runs signal handlers (asked of Python once per
/// thread: `threading.main_thread()`).
fn on_main_thread(py: Python<'_>) -> bool {
    thread_local! {
        static MAIN: std::cell::Cell<Option<bool>> = const { std::cell::Cell::new(None) };
    }
    MAIN.with(|m| {
        if let Some(known) = m.get() {
            return known;
        }
        let main = (|| -> PyResult<bool> {
            let threading = py.import("threading")?;
            let main = threading.call_method0("main_thread")?;
            Ok(threading.call_method0("current_thread")?.is(&main))
        })()
        .unwrap_or(false);
        m.set(Some(main));
        main
    })
}

/// Runs `wait` (until a deadline) without the GIL until it returns anything but its own
/// timeout (`timed_out`) or `deadline` passes. On Python's main thread the wait is cut into
/// slices of [`SIGNAL_CHECK`]; between them pending signal handlers run, and an exception from
/// one (`KeyboardInterrupt`) ends the call, as it ends the stdlib's blocking socket calls.
fn wait_interruptibly<R: Send, E: Send>(
    py: Python<'_>,
    deadline: Option<Instant>,
    timed_out: impl Fn(&E) -> bool,
    wait: impl Fn(Option<Instant>) -> Result<R, E> + Sync,
) -> PyResult<Result<R, E>> {
    if !on_main_thread(py) {
        return Ok(py.detach(|| wait(deadline)));
    }
    loop {
        let slice = Instant::now() + SIGNAL_CHECK;
        let until = deadline.map_or(slice, |d| d.min(slice));
        let r = py.detach(|| wait(Some(until)));
        match r {
            Err(e) if timed_out(&e) && deadline.is_none_or(|d| Instant::now() < d) => {
                py.check_signals()?;
            }
            r => return Ok(r),
        }
    }
}

/// The deadline of a timeout that starts now (None: none, and for one too long to represent).
fn deadline(timeout: Option<Duration>) -> Option<Instant> {
    timeout.and_then(|t| Instant::now().checked_add(t))
}

/// A timeout from now until `deadline` (None: none), zero once it passed.
fn left(deadline: Option<Instant>) -> Option<Duration> {
    deadline.map(|d| d.saturating_duration_since(Instant::now()))
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
            d.set_item("data", PyBytes::new(py, data))?;
        }
        NodeEvent::Network { network, .. } => d.set_item("network", network.to_string())?,
        NodeEvent::Address {
            network, address, ..
        } => {
            d.set_item("network", network.to_string())?;
            d.set_item("address", address.to_string())?;
        }
        _ => {}
    }
    Ok(d)
}

/// Frames of one network delivered to this process (a tap on the virtual Ethernet).
#[pyclass(module = "zt._native", frozen)]
pub(crate) struct FrameTap(Arc<zt_runtime::frames::FrameTap>);

#[pymethods]
impl FrameTap {
    /// The next Ethernet frame (14-byte header + payload); None on timeout or once closed.
    #[pyo3(signature = (timeout = None))]
    fn recv<'py>(
        &self,
        py: Python<'py>,
        timeout: Option<f64>,
    ) -> PyResult<Option<Bound<'py, PyBytes>>> {
        let deadline = deadline(duration(timeout)?);
        let tap = &*self.0;
        // `None` from the tap: a timeout unless it was closed.
        let f = wait_interruptibly(
            py,
            deadline,
            |()| !tap.is_closed(),
            |d| tap.recv(left(d)).ok_or(()),
        )?
        .ok();
        f.map(|f| {
            let mut header = [0u8; 14];
            header[..6].copy_from_slice(&f.dst.to_bytes());
            header[6..12].copy_from_slice(&f.src.to_bytes());
            header[12..].copy_from_slice(&f.ethertype.to_be_bytes());
            bytes_of(py, &header, &f.payload)
        })
        .transpose()
    }

    /// Frames lost because this consumer was too slow.
    #[getter]
    fn dropped(&self) -> u64 {
        self.0.dropped()
    }

    /// Whether it was closed.
    #[getter]
    fn closed(&self) -> bool {
        self.0.is_closed()
    }

    /// Stops receiving.
    fn close(&self) {
        self.0.close();
    }
}

fn network_id(nwid: &str) -> PyResult<zt_proto::network::NetworkId> {
    nwid.parse()
        .map_err(|e: zt_proto::network::NetworkIdParseError| PyValueError::new_err(e.to_string()))
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
        let sub = &*self.0;
        let r = match t {
            Some(d) if d.is_zero() => sub.try_recv(),
            _ => wait_interruptibly(
                py,
                deadline(t),
                |e| matches!(e, RecvError::Timeout),
                |d| sub.recv(left(d)),
            )?,
        };
        match r {
            Ok(ev) => Ok(Some((ev.code() as i32, payload(py, &ev)?))),
            Err(RecvError::Timeout) => Ok(None),
            Err(RecvError::Closed) => Err(PyEOFError::new_err("the event subscription is closed")),
        }
    }

    /// Readable while an event is queued or the subscription is closed (for select/asyncio).
    fn fileno(&self) -> zt_runtime::readiness::RawDescriptor {
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
    store: Arc<dyn zt_runtime::Store>,
    http: std::sync::Mutex<Option<zt_runtime::http::HttpServer>>,
}

impl NativeNode {
    /// Creates a socket on the loop thread (`make` gets the loop and a waker for the socket).
    fn open_socket<T: Send + 'static>(
        &self,
        py: Python<'_>,
        make: impl FnOnce(
            &mut zt_runtime::runtime::LoopCtx<'_>,
            zt_runtime::sockets::Kick,
        ) -> Result<T, SockError>
        + Send
        + 'static,
    ) -> PyResult<T> {
        let rt = self.rt();
        let wake = rt.handle().waker();
        py.detach(|| rt.call(move |ctx| make(ctx, wake), Duration::from_secs(10)))
            .map_err(errors::socket_runtime)?
            .map_err(|e| sock_err(e, None))
    }

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
        allow_loopback = false, allowed_destinations = None, controller = None
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
        controller: Option<String>,
    ) -> PyResult<Self> {
        if let Some(p) = &planet
            && p.0.world_type != zt_proto::WorldType::Planet
        {
            return Err(errors::world(
                "the planet option needs a planet, not a moon",
            ));
        }
        let allowed = match allowed_destinations {
            None => None,
            Some(list) => Some(
                zt_runtime::underlay::parse_prefixes(&list.join(","))
                    .map_err(PyValueError::new_err)?,
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
            controller: controller.map(|c| {
                if c == ":memory:" {
                    zt_runtime::runtime::ControllerStorage::Memory
                } else {
                    zt_runtime::runtime::ControllerStorage::File(c.into())
                }
            }),
        };
        let store = to_store(store)?;
        Ok(Self {
            rt: Some(NodeRuntime::new(store.clone(), options)),
            store,
            http: std::sync::Mutex::new(None),
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

    /// Stops and waits for the thread (idempotent). `reset`: the node's TCP peers get a reset
    /// first; without it they see the node vanish, as when its process is killed (a testing
    /// aid for what peers do then).
    #[pyo3(signature = (reset = true))]
    fn stop(&self, py: Python<'_>, reset: bool) {
        let rt = self.rt();
        if reset {
            py.detach(|| rt.stop());
        } else {
            py.detach(|| rt.stop_silently());
        }
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
        let rt = self.rt();
        if let Some(s) = py.detach(|| rt.fresh_snapshot()) {
            d.set_item("quick_tasks", s.stats.quick_tasks)?;
            d.set_item("ping_checks", s.stats.ping_checks)?;
            d.set_item("housekeeping", s.stats.housekeeping)?;
            d.set_item("worlds_rejected", s.stats.worlds_rejected)?;
            d.set_item("store_errors", s.store_errors)?;
            d.set_item("send_errors", s.send_errors)?;
            d.set_item("refused_destinations", s.refused_destinations)?;
            d.set_item("syns_dropped", s.syns_dropped)?;
            d.set_item("inline_passes", s.inline_passes)?;
            d.set_item("led_passes", s.led_passes)?;
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
        let rt = self.rt();
        let Some(s) = py.detach(|| rt.fresh_snapshot()) else {
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

    /// Keeps the node's loop thread busy for `seconds` and returns once it is (a testing aid
    /// for back-pressure).
    fn stall(&self, py: Python<'_>, seconds: f64) -> PyResult<()> {
        let busy = duration(Some(seconds))?.unwrap_or_default();
        let rt = self.rt();
        py.detach(|| rt.stall(busy)).map_err(errors::runtime)
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

    /// Joins a network (idempotent); NetworkError over the cap on joined networks.
    #[pyo3(signature = (nwid, timeout = 10.0))]
    fn join(&self, py: Python<'_>, nwid: &str, timeout: f64) -> PyResult<()> {
        let id = network_id(nwid)?;
        let t = duration(Some(timeout))?.unwrap_or_default();
        let rt = self.rt();
        py.detach(|| rt.call(move |ctx| ctx.node.join(ctx.now, id), t))
            .map_err(errors::runtime)?
            .map_err(|e| errors::NetworkError::new_err(format!("cannot join {id}: {e}")))
    }

    /// Leaves a network; False if it was not joined.
    #[pyo3(signature = (nwid, timeout = 10.0))]
    fn leave(&self, py: Python<'_>, nwid: &str, timeout: f64) -> PyResult<bool> {
        let id = network_id(nwid)?;
        let t = duration(Some(timeout))?.unwrap_or_default();
        let rt = self.rt();
        py.detach(|| rt.call(move |ctx| ctx.node.leave(id), t))
            .map_err(errors::runtime)
    }

    /// The number of the latest published snapshot.
    fn snapshot_seq(&self) -> u64 {
        self.rt().snapshot_seq()
    }

    /// Waits (without the GIL) until a snapshot newer than `seq` is published, `timeout`
    /// seconds pass, or the node stops; the latest number.
    fn wait_snapshot(&self, py: Python<'_>, seq: u64, timeout: f64) -> PyResult<u64> {
        let t = duration(Some(timeout))?.unwrap_or_default();
        let rt = self.rt();
        Ok(py.detach(|| rt.wait_snapshot_after(seq, t)))
    }

    /// Joined networks as zerotier-one's `/network` JSON text.
    fn networks_json(&self) -> String {
        self.rt().snapshot().map_or_else(
            || "[]".to_owned(),
            |s| zt_runtime::api::networks_json(&s).to_string(),
        )
    }

    /// Sends an Ethernet frame (14-byte header + payload) on a network; raises NetworkError.
    #[pyo3(signature = (nwid, frame, timeout = 10.0))]
    fn send_frame(&self, py: Python<'_>, nwid: &str, frame: &[u8], timeout: f64) -> PyResult<()> {
        let id = network_id(nwid)?;
        let f = zt_proto::node::Frame::from_ethernet(id, frame)
            .ok_or_else(|| PyValueError::new_err("a frame needs at least a 14-byte header"))?;
        let t = duration(Some(timeout))?.unwrap_or_default();
        let rt = self.rt();
        py.detach(|| rt.call(move |ctx| ctx.node.send_frame(ctx.now, f), t))
            .map_err(errors::runtime)?
            .map_err(|e| errors::NetworkError::new_err(e.to_string()))
    }

    /// A tap receiving the network's frames delivered to this node.
    #[pyo3(signature = (nwid, capacity = 1024))]
    fn tap_frames(&self, nwid: &str, capacity: usize) -> PyResult<FrameTap> {
        Ok(FrameTap(self.rt().tap_frames(network_id(nwid)?, capacity)))
    }

    /// Subscribes to a multicast group (MAC `xx:xx:..`, ADI) on a network.
    #[pyo3(signature = (nwid, mac, adi = 0, timeout = 10.0))]
    fn multicast_subscribe(
        &self,
        py: Python<'_>,
        nwid: &str,
        mac: &str,
        adi: u32,
        timeout: f64,
    ) -> PyResult<()> {
        let id = network_id(nwid)?;
        let hex: String = mac.chars().filter(|c| *c != ':').collect();
        let m = u64::from_str_radix(&hex, 16)
            .ok()
            .filter(|_| hex.len() == 12)
            .ok_or_else(|| PyValueError::new_err(format!("{mac:?} is not a MAC address")))?;
        let g = zt_proto::network::MulticastGroup {
            mac: zt_proto::network::Mac(m),
            adi,
        };
        let t = duration(Some(timeout))?.unwrap_or_default();
        let rt = self.rt();
        py.detach(|| rt.call(move |ctx| ctx.node.subscribe(ctx.now, id, g), t))
            .map_err(errors::runtime)
    }

    /// Pings `ip` on a network from this node's stack (ICMP / ICMPv6 echo); the round-trip
    /// time in seconds, or None if no reply came within `timeout`.
    #[pyo3(signature = (nwid, ip, timeout = 5.0, size = 56))]
    fn ping(
        &self,
        py: Python<'_>,
        nwid: &str,
        ip: &str,
        timeout: f64,
        size: usize,
    ) -> PyResult<Option<f64>> {
        let id = network_id(nwid)?;
        let dst: std::net::IpAddr = ip
            .parse()
            .map_err(|_| PyValueError::new_err(format!("{ip:?} is not an IP address")))?;
        if size > 1400 {
            return Err(PyValueError::new_err("size must be at most 1400"));
        }
        let t = duration(Some(timeout))?.unwrap_or_default();
        let rt = self.rt();
        py.detach(|| {
            let started = Instant::now();
            let ident = (started.elapsed().subsec_nanos() as u16) | 1;
            let payload = vec![0x5a; size];
            let call = Duration::from_secs(10);
            let first = payload.clone();
            let h = rt
                .call(
                    move |ctx| ctx.stacks.ping_send(id, dst, (ident, 1), &first, None),
                    call,
                )
                .map_err(errors::runtime)?
                .map_err(|e| {
                    errors::NetworkError::new_err(match e {
                        zt_stack::StackError::BadHandle => format!(
                            "cannot ping: network {id} is not up on this node (not joined, or \
                             its config has not arrived)"
                        ),
                        e => format!("cannot ping: {e}"),
                    })
                })?;
            let mut seq = 1u16;
            let mut last = Instant::now();
            loop {
                let done = started.elapsed() >= t;
                let got = rt
                    .call(move |ctx| ctx.stacks.ping_reply(id, h, done), call)
                    .map_err(errors::runtime)?;
                if got.is_some() {
                    return Ok(Some(last.elapsed().as_secs_f64()));
                }
                if done {
                    return Ok(None);
                }
                // Like ping(8): another request now and then (the first may be lost while the
                // neighbour is resolved).
                if last.elapsed() >= Duration::from_millis(250) {
                    seq = seq.wrapping_add(1);
                    last = Instant::now();
                    let p = payload.clone();
                    let _ = rt.call(
                        move |ctx| ctx.stacks.ping_send(id, dst, (ident, seq), &p, Some(h)),
                        call,
                    );
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        })
    }

    /// Calls the local JSON API in-process (no token): `(status, body text)`.
    #[pyo3(signature = (method, path, body = None, home = None))]
    fn api(
        &self,
        py: Python<'_>,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
        home: Option<String>,
    ) -> (u16, String) {
        let api = zt_runtime::http::Api::new(self.rt().handle(), String::new(), home);
        let body = body.unwrap_or_default().to_vec();
        let (m, p) = (method.to_owned(), path.to_owned());
        let r = py.detach(move || api.handle_trusted(&m, &p, &body));
        (r.status, r.body)
    }

    /// Serves the local HTTP API on loopback at `port` (0 = any) with this token (None: the
    /// store's `authtoken.secret`, created if absent); returns the port.
    #[pyo3(signature = (port, token = None, home = None))]
    fn start_api(
        &self,
        py: Python<'_>,
        port: u16,
        token: Option<String>,
        home: Option<String>,
    ) -> PyResult<u16> {
        let token = match token {
            Some(t) => t,
            None => {
                let store = self.store.clone();
                py.detach(move || zt_runtime::http::auth_token(&*store))
                    .map_err(errors::store)?
            }
        };
        let mut g = self
            .http
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(s) = g.as_ref() {
            return Ok(s.port());
        }
        let api = zt_runtime::http::Api::new(self.rt().handle(), token, home);
        let server = zt_runtime::http::HttpServer::start(api, port)
            .map_err(|e| errors::os("cannot serve the API", &e))?;
        let p = server.port();
        *g = Some(server);
        Ok(p)
    }

    /// Stops serving the HTTP API.
    fn stop_api(&self, py: Python<'_>) {
        let server = self
            .http
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        py.detach(move || drop(server));
    }

    /// Starts a TCP connection to `(ip, port)` on the network that routes `ip`, from
    /// `(local_ip, local_port)` (None/0: the route's address, an ephemeral port). Buffer sizes of 0 are the default, free to grow with the
    /// path; others are fixed.
    #[pyo3(signature = (ip, port, rcvbuf = 0, sndbuf = 0, local_port = 0, local_ip = None))]
    #[allow(clippy::too_many_arguments)]
    fn tcp_connect(
        &self,
        py: Python<'_>,
        ip: &str,
        port: u16,
        rcvbuf: usize,
        sndbuf: usize,
        local_port: u16,
        local_ip: Option<&str>,
    ) -> PyResult<TcpSocket> {
        let remote = parse_sockaddr(ip, port)?;
        let local_ip = local_ip.map(parse_ip).transpose()?;
        self.open_socket(py, move |ctx, wake| {
            ctx.sockets.connect_from(
                ctx.stacks,
                remote,
                (local_ip, local_port),
                (rcvbuf, sndbuf),
                wake,
            )
        })
        .map(TcpSocket)
    }

    /// Listens on `(ip, port)`: one address, or "0.0.0.0" (the IPv4 addresses of every
    /// network, including networks configured later) or "::" (every address, IPv4 too unless
    /// `v6only`). Buffer sizes as for `tcp_connect`.
    #[pyo3(signature = (ip, port, backlog = 128, rcvbuf = 0, sndbuf = 0, v6only = false))]
    #[allow(clippy::too_many_arguments)]
    fn tcp_listen(
        &self,
        py: Python<'_>,
        ip: &str,
        port: u16,
        backlog: usize,
        rcvbuf: usize,
        sndbuf: usize,
        v6only: bool,
    ) -> PyResult<TcpSocket> {
        let local = parse_sockaddr(ip, port)?;
        self.open_socket(py, move |ctx, wake| {
            ctx.sockets
                .listen(ctx.stacks, local, backlog, v6only, (rcvbuf, sndbuf), wake)
        })
        .map(TcpSocket)
    }

    /// Binds a UDP socket to `(ip, port)` (port 0: ephemeral; "::"/"0.0.0.0": every network).
    #[pyo3(signature = (ip, port, rcvbuf = 1048576, sndbuf = 1048576))]
    fn udp_bind(
        &self,
        py: Python<'_>,
        ip: &str,
        port: u16,
        rcvbuf: usize,
        sndbuf: usize,
    ) -> PyResult<UdpSocket> {
        let local = parse_sockaddr(ip, port)?;
        self.open_socket(py, move |ctx, wake| {
            ctx.udp.bind(ctx.stacks, local, (rcvbuf, sndbuf), wake)
        })
        .map(UdpSocket)
    }

    /// Joins (`join`) or leaves an IP multicast group on a UDP socket: on every network of the
    /// socket (`iface` None) or the one where this node has the address `iface`. Raises
    /// OSError: EINVAL (not a multicast group), ENODEV (no such interface address),
    /// EADDRINUSE (joined already), EADDRNOTAVAIL (not joined), ENOBUFS (too many groups).
    #[pyo3(signature = (sock, group, iface = None, join = true))]
    fn udp_membership(
        &self,
        py: Python<'_>,
        sock: &UdpSocket,
        group: &str,
        iface: Option<&str>,
        join: bool,
    ) -> PyResult<()> {
        let group = parse_ip(group)?;
        let iface = iface.map(parse_ip).transpose()?;
        let s = sock.0.clone();
        let rt = self.rt();
        py.detach(|| {
            rt.call(
                move |ctx| {
                    ctx.udp
                        .membership(ctx.node, ctx.now, ctx.stacks, &s, group, iface, join)
                },
                Duration::from_secs(10),
            )
        })
        .map_err(errors::socket_runtime)?
        .map_err(|e| sock_err(e, None))
    }

    /// Sets the network a UDP socket's IPv4 multicasts go out on (`IP_MULTICAST_IF`): the one
    /// where this node has the IPv4 address `iface`, or every network of the socket (None).
    /// Raises OSError(EADDRNOTAVAIL) for an address no network of the socket gives the node.
    #[pyo3(signature = (sock, iface = None))]
    fn udp_multicast_if(
        &self,
        py: Python<'_>,
        sock: &UdpSocket,
        iface: Option<&str>,
    ) -> PyResult<()> {
        let iface = match iface.map(parse_ip).transpose()? {
            None => None,
            Some(std::net::IpAddr::V4(a)) => Some(a),
            Some(std::net::IpAddr::V6(_)) => {
                return Err(PyValueError::new_err(
                    "IP_MULTICAST_IF takes an IPv4 address",
                ));
            }
        };
        let s = sock.0.clone();
        let rt = self.rt();
        py.detach(|| {
            rt.call(
                move |ctx| ctx.udp.set_multicast_if(ctx.stacks, &s, iface),
                Duration::from_secs(10),
            )
        })
        .map_err(errors::socket_runtime)?
        .map_err(|e| sock_err(e, None))
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
        let http = self
            .http
            .get_mut()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        drop(http);
        if let Some(rt) = self.rt.take() {
            // Stopping joins the loop thread, which may need the GIL (custom stores): release it.
            Python::attach(|py| py.detach(move || drop(rt)));
        }
    }
}

/// Runs `attempt` (with the GIL) until it has a result, waiting with `wait` (without the GIL,
/// until the deadline of `timeout`) whenever it has none: the shape of every blocking socket
/// call. Data moves in `attempt`, straight between Python objects and the socket's buffers,
/// so the socket's lock is only ever taken by a thread that already holds the GIL or that
/// does not want it (the loop thread, `wait`): no lock-order inversion with the GIL.
fn blocking<R>(
    py: Python<'_>,
    timeout: Option<Duration>,
    mut attempt: impl FnMut() -> PyResult<Option<R>>,
    wait: impl Fn(Option<Instant>) -> Result<(), SockError> + Sync,
) -> PyResult<R> {
    // A timeout too long to represent blocks like None.
    let deadline = deadline(timeout);
    loop {
        if let Some(r) = attempt()? {
            return Ok(r);
        }
        if timeout.is_some_and(|t| t.is_zero()) {
            // Non-blocking: no need to give up the GIL to learn that.
            return Err(sock_err(SockError::WouldBlock, timeout));
        }
        wait_interruptibly(py, deadline, |e| *e == SockError::WouldBlock, &wait)?
            .map_err(|e| sock_err(e, timeout))?;
    }
}

/// Runs a socket call that waits up to a timeout (`WouldBlock` when it ends) as
/// [`wait_interruptibly`] does, with `timeout`'s errors.
fn sock_wait<R: Send>(
    py: Python<'_>,
    timeout: Option<Duration>,
    call: impl Fn(Option<Duration>) -> Result<R, SockError> + Sync,
) -> PyResult<R> {
    wait_interruptibly(
        py,
        deadline(timeout),
        |e| *e == SockError::WouldBlock,
        |d| call(left(d)),
    )?
    .map_err(|e| sock_err(e, timeout))
}

/// A new `bytes` holding `a` then `b` (its storage written once, not zeroed first).
fn bytes_of<'py>(py: Python<'py>, a: &[u8], b: &[u8]) -> PyResult<Bound<'py, PyBytes>> {
    let len = a.len() + b.len();
    let size = pyo3::ffi::Py_ssize_t::try_from(len)
        .map_err(|_| pyo3::exceptions::PyOverflowError::new_err("too many bytes"))?;
    // SAFETY: `py` proves the GIL is held, as both calls need. With a NULL source,
    // `PyBytes_FromStringAndSize` returns a new reference to a fresh, uninitialised `bytes` of
    // `size` bytes (or, for 0, the shared empty one, into which nothing is written), or NULL
    // with an exception set, which `from_owned_ptr_or_err` turns into `Err`. Nothing else
    // can reach the new object yet, so writing its storage is sound; `PyBytes_AsString` gives
    // that storage (`size` bytes long), and the two copies fill exactly `a.len() + b.len() ==
    // size` bytes of it from Rust memory, which cannot overlap a fresh Python object, before
    // the object is handed out.
    #[allow(unsafe_code)]
    unsafe {
        let obj = pyo3::ffi::PyBytes_FromStringAndSize(std::ptr::null(), size);
        let bytes = Bound::from_owned_ptr_or_err(py, obj)?.cast_into::<PyBytes>()?;
        let dst = pyo3::ffi::PyBytes_AsString(obj).cast::<u8>();
        std::ptr::copy_nonoverlapping(a.as_ptr(), dst, a.len());
        std::ptr::copy_nonoverlapping(b.as_ptr(), dst.add(a.len()), b.len());
        Ok(bytes)
    }
}

/// Copies `a` then `b` into the start of `buffer`'s storage, as much as fits; how many bytes.
fn fill_bytearray(buffer: &Bound<'_, PyByteArray>, a: &[u8], b: &[u8]) -> usize {
    let len = buffer.len();
    let dst = buffer.data();
    let mut at = 0;
    for part in [a, b] {
        let n = part.len().min(len - at);
        if n == 0 {
            continue;
        }
        // SAFETY: `dst` and `len` were read just now from the bytearray, whose storage holds
        // `len` bytes, and `at + n <= len`. The `Bound` proves this thread holds the GIL, and
        // the GIL excludes every other Python thread (this extension is built for the limited
        // API, abi3, which free-threaded CPython does not load). From reading `dst` to the end
        // of this copy no Python code runs (nothing here calls into the interpreter or
        // releases the GIL), so nothing can resize, reallocate or free the storage meanwhile.
        // `part` is Rust memory (a socket's buffer, borrowed under its lock), so the ranges
        // cannot overlap. The storage is written only through this raw pointer, never through
        // a Rust reference, the way C code holding the GIL writes into a bytearray. (Only C
        // code that released the GIL while holding an export of the buffer could touch it
        // meanwhile: a race such code creates for every user of the buffer, CPython's own
        // `socket.recv_into` included.)
        #[allow(unsafe_code)]
        unsafe {
            std::ptr::copy_nonoverlapping(part.as_ptr(), dst.add(at), n);
        }
        at += n;
    }
    at
}

/// Runs `f` on `data[offset..]`, borrowed in place from a `bytes` or `bytearray` (ValueError
/// for an offset beyond the end, TypeError for another type).
fn with_bytes<R>(
    data: &Bound<'_, PyAny>,
    offset: usize,
    f: impl FnOnce(&[u8]) -> R,
) -> PyResult<R> {
    fn tail(all: &[u8], offset: usize) -> PyResult<&[u8]> {
        all.get(offset..)
            .ok_or_else(|| PyValueError::new_err("offset beyond the end of the data"))
    }
    if let Ok(b) = data.cast::<PyBytes>() {
        return Ok(f(tail(b.as_bytes(), offset)?));
    }
    if let Ok(b) = data.cast::<PyByteArray>() {
        // SAFETY: the `Bound` proves this thread holds the GIL, which excludes every other
        // Python thread (this extension is built for the limited API, abi3, which
        // free-threaded CPython does not load). The slice lives only until `f` returns, during
        // which no Python code runs (`f` only copies the bytes into a socket's buffer, and
        // neither calls into the interpreter nor releases the GIL): no Python code can resize,
        // reallocate, free or write the storage while it is borrowed. (Only C code that
        // released the GIL while holding an export of the buffer could write it meanwhile: a
        // race such code creates for every reader of the buffer, CPython's own included.)
        #[allow(unsafe_code)]
        let all = unsafe { b.as_bytes() };
        return Ok(f(tail(all, offset)?));
    }
    Err(PyTypeError::new_err(format!(
        "a bytes or bytearray object is required, not {}",
        data.get_type().name()?
    )))
}

/// Which senders a UDP read takes.
fn sender_filter(
    ipv4_only: bool,
    peer: Option<(String, u16)>,
) -> PyResult<impl Fn(std::net::SocketAddr) -> bool> {
    let peer = peer
        .map(|(ip, port)| parse_sockaddr(&ip, port))
        .transpose()?;
    Ok(move |from: std::net::SocketAddr| {
        !(ipv4_only && from.is_ipv6()) && peer.is_none_or(|p| p == from)
    })
}

fn sock_err(e: SockError, timeout: Option<Duration>) -> PyErr {
    use SockError as S;
    match e {
        S::WouldBlock if timeout.is_some_and(|t| t.is_zero()) => {
            pyo3::exceptions::PyBlockingIOError::new_err((errors::sock_errno(e), e.to_string()))
        }
        S::WouldBlock => pyo3::exceptions::PyTimeoutError::new_err("timed out"),
        other => {
            pyo3::exceptions::PyOSError::new_err((errors::sock_errno(other), other.to_string()))
        }
    }
}

/// An `(ip, port)` tuple for Python.
type PyAddr = Option<(String, u16)>;

fn addr_tuple(a: Option<std::net::SocketAddr>) -> PyAddr {
    a.map(|a| (a.ip().to_string(), a.port()))
}

/// A TCP socket on a node's network stack (data is buffered in Rust; `fileno()` is a real
/// descriptor mirroring readiness).
#[pyclass(module = "zt._native", frozen)]
pub(crate) struct TcpSocket(Arc<zt_runtime::sockets::TcpShared>);

/// A native socket nobody holds any more is closed (gracefully: queued data still goes out),
/// as the OS closes a descriptor's socket with its last reference: otherwise its connection,
/// or its port, would stay until the node stops. `zt.socket` closes its sockets itself; this
/// covers any native socket dropped on another path.
impl Drop for TcpSocket {
    fn drop(&mut self) {
        self.0.close();
    }
}

#[pymethods]
impl TcpSocket {
    /// Up to `n` bytes (b"" at EOF). `timeout`: None blocks, 0 never blocks.
    #[pyo3(signature = (n, timeout = None))]
    fn recv<'py>(
        &self,
        py: Python<'py>,
        n: usize,
        timeout: Option<f64>,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let t = duration(timeout)?;
        let s = &*self.0;
        blocking(
            py,
            t,
            || {
                s.try_recv_with(n, |a, b| match bytes_of(py, a, b) {
                    Ok(bytes) => (a.len() + b.len(), Ok(bytes)),
                    Err(e) => (0, Err(e)),
                })
                .map_err(|e| sock_err(e, t))?
                .transpose()
            },
            |deadline| s.wait_readable(deadline),
        )
    }

    /// Receives up to `n` bytes into the start of `buffer` (no more than fit), straight from
    /// the socket's receive buffer; how many (0 at EOF). `timeout` as for `recv`.
    #[pyo3(signature = (buffer, n, timeout = None))]
    fn recv_into(
        &self,
        py: Python<'_>,
        buffer: &Bound<'_, PyByteArray>,
        n: usize,
        timeout: Option<f64>,
    ) -> PyResult<usize> {
        let t = duration(timeout)?;
        let s = &*self.0;
        blocking(
            py,
            t,
            // The buffer's size is read on every attempt: another thread may have resized it
            // while this one waited without the GIL.
            || {
                s.try_recv_with(n.min(buffer.len()), |a, b| {
                    let got = fill_bytearray(buffer, a, b);
                    (got, got)
                })
                .map_err(|e| sock_err(e, t))
            },
            |deadline| s.wait_readable(deadline),
        )
    }

    /// Queues bytes from `data[offset:]` (bytes or bytearray, read in place); how many were
    /// taken (blocks for room unless `timeout` is 0).
    #[pyo3(signature = (data, timeout = None, offset = 0))]
    fn send(
        &self,
        py: Python<'_>,
        data: &Bound<'_, PyAny>,
        timeout: Option<f64>,
        offset: usize,
    ) -> PyResult<usize> {
        let t = duration(timeout)?;
        let s = &*self.0;
        blocking(
            py,
            t,
            || with_bytes(data, offset, |d| s.try_send(d))?.map_err(|e| sock_err(e, t)),
            |deadline| s.wait_writable(deadline),
        )
    }

    /// Waits until connected.
    #[pyo3(signature = (timeout = None))]
    fn wait_connected(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<()> {
        let s = &*self.0;
        sock_wait(py, duration(timeout)?, |t| s.wait_connected(t))
    }

    /// The next connection of a listening socket.
    #[pyo3(signature = (timeout = None))]
    fn accept(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<TcpSocket> {
        let s = &*self.0;
        sock_wait(py, duration(timeout)?, |t| s.accept(t)).map(TcpSocket)
    }

    /// Stops sending (FIN after queued data).
    fn shutdown_write(&self) {
        self.0.shutdown_write();
    }

    /// Closes (queued data still goes out).
    fn close(&self) {
        self.0.close();
    }

    /// The readiness descriptor.
    fn fileno(&self) -> zt_runtime::readiness::RawDescriptor {
        self.0.fd()
    }

    /// `(local, peer)` as `(ip, port)` tuples or None.
    fn addresses(&self) -> (PyAddr, PyAddr) {
        let (l, p) = self.0.addresses();
        (addr_tuple(l), addr_tuple(p))
    }

    /// "idle", "listening", "connecting", "connected" or "closed".
    fn phase(&self) -> &'static str {
        use zt_runtime::sockets::Phase as P;
        match self.0.phase() {
            P::Idle => "idle",
            P::Listening => "listening",
            P::Connecting => "connecting",
            P::Connected => "connected",
            P::Closed => "closed",
        }
    }

    /// Sets an option: "nodelay", "keepalive", "keepidle" (s), "keepintvl" (s), "keepcnt",
    /// "user_timeout" (ms).
    fn set_option(&self, name: &str, value: i64) -> PyResult<()> {
        self.0
            .set_option(tcp_option(name)?, value)
            .map_err(|e| sock_err(e, None))
    }

    /// An option's value (names as for `set_option`).
    fn option(&self, name: &str) -> PyResult<i64> {
        Ok(self.0.option(tcp_option(name)?))
    }

    /// The connection's round-trip estimates, windows, buffers and retransmission counters (as
    /// Linux's `TCP_INFO`), as of the loop's last pass over it.
    fn tcp_info<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let i = self.0.tcp_info();
        let d = PyDict::new(py);
        d.set_item("srtt_us", i.srtt_us)?;
        d.set_item("rttvar_us", i.rttvar_us)?;
        d.set_item("min_rtt_us", i.min_rtt_us)?;
        d.set_item("rto_us", i.rto_us)?;
        d.set_item("cwnd", i.cwnd)?;
        d.set_item("ssthresh", i.ssthresh)?;
        d.set_item("in_flight", i.in_flight)?;
        d.set_item("pacing_rate", i.pacing_rate)?;
        d.set_item("bytes_sent", i.bytes_sent)?;
        d.set_item("bytes_retrans", i.bytes_retrans)?;
        d.set_item("segs_retrans", i.segs_retrans)?;
        d.set_item("timeouts", i.timeouts)?;
        d.set_item("loss_probes", i.loss_probes)?;
        d.set_item("recoveries", i.recoveries)?;
        d.set_item("undos", i.undos)?;
        d.set_item("dsacks_received", i.dsacks_received)?;
        d.set_item("reordering_seen", i.reordering_seen)?;
        d.set_item("rx_out_of_order", i.rx_out_of_order)?;
        d.set_item("rx_duplicates", i.rx_duplicates)?;
        d.set_item("rx_too_many_holes", i.rx_too_many_holes)?;
        d.set_item("rx_buffer", i.rx_buffer)?;
        d.set_item("tx_buffer", i.tx_buffer)?;
        Ok(d)
    }
}

fn tcp_option(name: &str) -> PyResult<zt_runtime::sockets::TcpOption> {
    use zt_runtime::sockets::TcpOption as O;
    Ok(match name {
        "nodelay" => O::NoDelay,
        "keepalive" => O::KeepAlive,
        "keepidle" => O::KeepIdle,
        "keepintvl" => O::KeepInterval,
        "keepcnt" => O::KeepCount,
        "user_timeout" => O::UserTimeout,
        "congestion" => O::Congestion,
        _ => {
            return Err(PyValueError::new_err(format!(
                "unknown TCP option {name:?}"
            )));
        }
    })
}

/// A UDP socket on a node's network stacks.
#[pyclass(module = "zt._native", frozen)]
pub(crate) struct UdpSocket(Arc<zt_runtime::sockets::UdpShared>);

/// Closed when dropped, as [`TcpSocket`].
impl Drop for UdpSocket {
    fn drop(&mut self) {
        self.0.close();
    }
}

#[pymethods]
impl UdpSocket {
    /// `(data, (ip, port))` of the next datagram (truncated to `n`). With `ipv4_only`,
    /// datagrams from IPv6 senders are dropped; with `peer`, datagrams from anyone else.
    #[pyo3(signature = (n, timeout = None, ipv4_only = false, peer = None))]
    fn recvfrom<'py>(
        &self,
        py: Python<'py>,
        n: usize,
        timeout: Option<f64>,
        ipv4_only: bool,
        peer: Option<(String, u16)>,
    ) -> PyResult<(Bound<'py, PyBytes>, (String, u16))> {
        let t = duration(timeout)?;
        let accept = sender_filter(ipv4_only, peer)?;
        let s = &*self.0;
        blocking(
            py,
            t,
            || {
                s.try_recv_from_with(n, &accept, |d, from| match bytes_of(py, d, &[]) {
                    Ok(bytes) => (true, Ok((bytes, (from.ip().to_string(), from.port())))),
                    Err(e) => (false, Err(e)),
                })
                .map_err(|e| sock_err(e, t))?
                .transpose()
            },
            |deadline| s.wait_readable(deadline),
        )
    }

    /// Like `recvfrom`, into the start of `buffer`: `(nbytes, (ip, port))` (a datagram
    /// longer than `n` or than the buffer is truncated).
    #[pyo3(signature = (buffer, n, timeout = None, ipv4_only = false, peer = None))]
    fn recvfrom_into(
        &self,
        py: Python<'_>,
        buffer: &Bound<'_, PyByteArray>,
        n: usize,
        timeout: Option<f64>,
        ipv4_only: bool,
        peer: Option<(String, u16)>,
    ) -> PyResult<(usize, (String, u16))> {
        let t = duration(timeout)?;
        let accept = sender_filter(ipv4_only, peer)?;
        let s = &*self.0;
        blocking(
            py,
            t,
            || {
                s.try_recv_from_with(n.min(buffer.len()), &accept, |d, from| {
                    let got = fill_bytearray(buffer, d, &[]);
                    (true, (got, (from.ip().to_string(), from.port())))
                })
                .map_err(|e| sock_err(e, t))
            },
            |deadline| s.wait_readable(deadline),
        )
    }

    /// Queues a datagram (bytes or bytearray, read in place) to `(ip, port)`.
    #[pyo3(signature = (data, ip, port, timeout = None))]
    fn sendto(
        &self,
        py: Python<'_>,
        data: &Bound<'_, PyAny>,
        ip: &str,
        port: u16,
        timeout: Option<f64>,
    ) -> PyResult<usize> {
        let to = parse_sockaddr(ip, port)?;
        let t = duration(timeout)?;
        let s = &*self.0;
        // The size last tried (a bytearray may change size while the call waits).
        let len = std::sync::atomic::AtomicUsize::new(0);
        let relaxed = std::sync::atomic::Ordering::Relaxed;
        blocking(
            py,
            t,
            || {
                with_bytes(data, 0, |d| {
                    len.store(d.len(), relaxed);
                    s.try_send_to(d, to)
                })?
                .map_err(|e| sock_err(e, t))
            },
            |deadline| s.wait_writable(len.load(relaxed), deadline),
        )
    }

    /// The readiness descriptor.
    fn fileno(&self) -> zt_runtime::readiness::RawDescriptor {
        self.0.fd()
    }

    /// `(ip, port)` bound.
    fn local(&self) -> PyAddr {
        addr_tuple(self.0.local())
    }

    /// Datagrams lost because the receive buffer was full.
    fn dropped(&self) -> u64 {
        self.0.dropped()
    }

    /// Sets an option (0/1): "broadcast" (`SO_BROADCAST`), "multicast_loop"
    /// (`IP_MULTICAST_LOOP`), "multicast_loop_v6" (`IPV6_MULTICAST_LOOP`).
    fn set_option(&self, name: &str, value: i64) -> PyResult<()> {
        self.0.set_option(udp_option(name)?, value);
        Ok(())
    }

    /// An option's value (names as for `set_option`).
    fn option(&self, name: &str) -> PyResult<i64> {
        Ok(self.0.option(udp_option(name)?))
    }

    /// Raises what `sendto` would for this destination before queueing anything: EACCES for
    /// a broadcast without `SO_BROADCAST`, EPERM when the network's config disables
    /// broadcast/multicast, ENETUNREACH when no network of the socket takes it.
    fn check_destination(&self, ip: &str) -> PyResult<()> {
        self.0
            .check_destination(parse_ip(ip)?)
            .map_err(|e| sock_err(e, None))
    }

    /// Closes the socket.
    fn close(&self) {
        self.0.close();
    }
}

fn udp_option(name: &str) -> PyResult<zt_runtime::sockets::UdpOption> {
    use zt_runtime::sockets::UdpOption as O;
    Ok(match name {
        "broadcast" => O::Broadcast,
        "multicast_loop" => O::MulticastLoopV4,
        "multicast_loop_v6" => O::MulticastLoopV6,
        _ => {
            return Err(PyValueError::new_err(format!(
                "unknown UDP option {name:?}"
            )));
        }
    })
}

fn parse_ip(ip: &str) -> PyResult<std::net::IpAddr> {
    parse_sockaddr(ip, 0).map(|a| a.ip())
}

fn parse_sockaddr(ip: &str, port: u16) -> PyResult<std::net::SocketAddr> {
    let ip: std::net::IpAddr = ip
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .map_err(|_| PyValueError::new_err(format!("{ip:?} is not an IP address")))?;
    Ok(std::net::SocketAddr::new(ip, port))
}
