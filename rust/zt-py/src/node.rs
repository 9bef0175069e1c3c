//! The native node (`NativeNode`): lifecycle, networks, frames, the local API, and the
//! sockets it opens.

use std::sync::Arc;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyDict;
use zt_runtime::runtime::{Lifecycle, NodeRuntime, RuntimeOptions};
use zt_runtime::state::LoadOptions;

use crate::blocking::duration;
use crate::convert::{parse_ip, parse_sockaddr, socket_op};
use crate::errors;
use crate::events::{EventSubscription, FrameTap};
use crate::identity::Identity;
use crate::socket::{TcpSocket, UdpSocket};
use crate::store::to_store;
use crate::world::World;

fn network_id(nwid: &str) -> PyResult<zt_proto::NetworkId> {
    nwid.parse()
        .map_err(|e: zt_proto::NetworkIdParseError| PyValueError::new_err(e.to_string()))
}

/// The native node: a loop thread driving the protocol core.
#[pyclass(module = "zt._native", frozen)]
pub(crate) struct NativeNode {
    rt: Option<NodeRuntime>,
    store: Arc<dyn zt_runtime::Store>,
    http: std::sync::Mutex<Option<zt_runtime::http::HttpServer>>,
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
        let core = zt_proto::CoreOptions {
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
            .map_err(|e: zt_proto::AddressError| PyValueError::new_err(e.to_string()))?;
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
        py.detach(|| rt.join(id, t)).map_err(|e| {
            errors::op(e, errors::runtime, |e| {
                errors::NetworkError::new_err(format!("cannot join {id}: {e}"))
            })
        })
    }

    /// Leaves a network; False if it was not joined.
    #[pyo3(signature = (nwid, timeout = 10.0))]
    fn leave(&self, py: Python<'_>, nwid: &str, timeout: f64) -> PyResult<bool> {
        let id = network_id(nwid)?;
        let t = duration(Some(timeout))?.unwrap_or_default();
        let rt = self.rt();
        py.detach(|| rt.leave(id, t)).map_err(errors::runtime)
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
            |s| zt_runtime::http::views::networks_json(&s).to_string(),
        )
    }

    /// Sends an Ethernet frame (14-byte header + payload) on a network; raises NetworkError.
    #[pyo3(signature = (nwid, frame, timeout = 10.0))]
    fn send_frame(&self, py: Python<'_>, nwid: &str, frame: &[u8], timeout: f64) -> PyResult<()> {
        let id = network_id(nwid)?;
        let f = zt_proto::Frame::from_ethernet(id, frame)
            .ok_or_else(|| PyValueError::new_err("a frame needs at least a 14-byte header"))?;
        let t = duration(Some(timeout))?.unwrap_or_default();
        let rt = self.rt();
        py.detach(|| rt.send_frame(f, t)).map_err(|e| {
            errors::op(e, errors::runtime, |e| {
                errors::NetworkError::new_err(e.to_string())
            })
        })
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
        let g = zt_proto::MulticastGroup {
            mac: zt_proto::Mac(m),
            adi,
        };
        let t = duration(Some(timeout))?.unwrap_or_default();
        let rt = self.rt();
        py.detach(|| rt.subscribe_multicast(id, g, t))
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
        if size > zt_runtime::runtime::MAX_PING_SIZE {
            return Err(PyValueError::new_err(format!(
                "size must be at most {}",
                zt_runtime::runtime::MAX_PING_SIZE
            )));
        }
        let t = duration(Some(timeout))?.unwrap_or_default();
        let rt = self.rt();
        py.detach(|| rt.ping(id, dst, size, t))
            .map(|rtt| rtt.map(|d| d.as_secs_f64()))
            .map_err(|e| {
                errors::op(e, errors::runtime, |e| {
                    errors::NetworkError::new_err(format!("cannot ping: {e}"))
                })
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
        let rt = self.rt();
        py.detach(|| rt.tcp_connect(remote, (local_ip, local_port), (rcvbuf, sndbuf)))
            .map(TcpSocket)
            .map_err(socket_op)
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
        let rt = self.rt();
        py.detach(|| rt.tcp_listen(local, backlog, v6only, (rcvbuf, sndbuf)))
            .map(TcpSocket)
            .map_err(socket_op)
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
        let rt = self.rt();
        py.detach(|| rt.udp_bind(local, (rcvbuf, sndbuf)))
            .map(UdpSocket)
            .map_err(socket_op)
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
        let rt = self.rt();
        py.detach(|| rt.udp_membership(&sock.0, group, iface, join))
            .map_err(socket_op)
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
        let rt = self.rt();
        py.detach(|| rt.udp_multicast_if(&sock.0, iface))
            .map_err(socket_op)
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
