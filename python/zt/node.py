"""The node: a ZeroTier endpoint running on its own thread inside this process.

Several nodes can run in one process, each with its own store, identity and events.

    with zt.Node(zt.NodeOptions(store="./zt-home")) as node:
        print(node.address)
"""

from __future__ import annotations

import atexit
import enum
import json
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Union

from . import _native
from . import socket as zt_socket
from ._timeout import check_timeout
from .controller import Controller
from .errors import ControllerError, NetworkError, NodeStateError
from .events import Event, EventStream, _make
from .network import NetworkIdLike, NetworkInfo, format_network_id
from .stores import Store, open_store

__all__ = ["Node", "NodeOptions", "NodeState", "PathInfo", "PeerInfo"]

log = logging.getLogger("zt.node")

# Nodes still running when the interpreter exits are stopped cleanly, so their state is persisted.
_live_nodes: weakref.WeakSet[Node] = weakref.WeakSet()


@atexit.register
def _stop_live_nodes() -> None:
    for node in list(_live_nodes):
        node.close()


EventCallback = Callable[[Event], Any]
PlanetLike = Union[_native.World, bytes, str, "os.PathLike[str]"]


class NodeState(enum.Enum):
    """Where a node is in its life. FAULTED carries its cause in :attr:`Node.fault`."""

    CREATED = "created"
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"
    FAULTED = "faulted"


@dataclass
class NodeOptions:
    """How a node is set up.

    store:
        Where state lives: a directory path (a zerotier-one / libzt home, created if needed), a
        :class:`zt.FileStore` or :class:`zt.MemoryStore`, any object with ``get``/``put``/
        ``delete``/``list`` methods, or None for memory only.
    identity:
        Use this identity (with secret) instead of the stored or a newly generated one. A store
        that already holds a different identity refuses it.
    planet:
        A private planet (:class:`zt.World`, its bytes, or a file path) instead of ZeroTier's
        default. A newer signed revision of it found in the store still wins, as in zerotier-one.
    keygen_threads:
        Cores used to generate an identity (0 = all; more than the machine has count as all).
    on_event:
        A callback for every event, called on a dispatcher thread.
    event_queue_size:
        Capacity of each event consumer's queue.
    port:
        UDP port (0 = random, as libzt; zerotier-one uses 9993).
    ipv6:
        Also use IPv6.
    allow_loopback:
        Use loopback paths (stock ZeroTier never does; useful for several zt nodes on one host).
    allowed_destinations:
        Send only to these prefixes (``["127.0.0.0/8", ...]``); None reads the
        ``ZT_ALLOWED_DESTINATIONS`` environment variable, else anywhere.
    controller:
        Run the built-in network controller (:attr:`Node.controller`): True keeps its records in
        ``controller.db`` in the node's home directory (in memory for a memory store), a path
        names the SQLite file, ``":memory:"`` keeps them in memory.
    api_port:
        Serve zerotier-one's local JSON API on loopback TCP at this port (0 = any free port)
        with the home's ``authtoken.secret``; None (default) serves nothing.
    tcp_congestion:
        The congestion control of the node's TCP sockets unless one sets ``TCP_CONGESTION``:
        ``"cubic"`` (default, as Linux's), ``"bbr"`` (keeps a lossy path's rate; takes a larger
        share of a bottleneck shared with CUBIC flows) or ``"reno"``.
    """

    store: Union[Store, str, os.PathLike[str], None] = None
    identity: Optional[_native.Identity] = None
    planet: Optional[PlanetLike] = None
    keygen_threads: int = 0
    on_event: Optional[EventCallback] = None
    event_queue_size: int = 1024
    port: int = 0
    ipv6: bool = True
    allow_loopback: bool = False
    allowed_destinations: Optional[list[str]] = None
    controller: Union[bool, str, os.PathLike[str]] = False
    api_port: Optional[int] = None
    tcp_congestion: str = "cubic"


@dataclass(frozen=True)
class PathInfo:
    """A physical path to a peer."""

    remote: str
    last_receive_ago_ms: int
    latency_ms: Optional[int]
    alive: bool


@dataclass(frozen=True)
class PeerInfo:
    """A peer as the node knows it."""

    address: str
    version: Optional[str]
    protocol: Optional[int]
    is_root: bool
    paths: tuple[PathInfo, ...]

    @property
    def direct(self) -> bool:
        """Whether an alive direct path exists."""
        return any(p.alive for p in self.paths)


def _timeout(value: float) -> float:
    """A required timeout, checked as ``socket.settimeout`` checks one."""
    t = check_timeout(value)
    if t is None:
        raise TypeError("timeout must be a number of seconds, not None")
    return t


def _load_planet(planet: PlanetLike) -> _native.World:
    if isinstance(planet, _native.World):
        return planet
    if isinstance(planet, bytes):
        return _native.World.from_bytes(planet)
    return _native.World.from_bytes(Path(planet).read_bytes())


class Node:
    """A ZeroTier node. Thread-safe; ``start``/``stop`` are idempotent; a context manager."""

    def __init__(self, options: Optional[NodeOptions] = None, **kwargs: Any) -> None:
        if options is None:
            options = NodeOptions(**kwargs)
        elif kwargs:
            raise TypeError("pass either a NodeOptions or keyword options, not both")
        if options.event_queue_size < 1:
            raise ValueError("event_queue_size must be at least 1")
        if options.keygen_threads < 0:
            raise ValueError("keygen_threads must be >= 0")
        if options.tcp_congestion not in zt_socket.CONGESTION_CONTROLS:
            raise ValueError(
                f"tcp_congestion must be one of {', '.join(zt_socket.CONGESTION_CONTROLS)},"
                f" not {options.tcp_congestion!r}"
            )
        if not 0 <= options.port <= 65535:
            raise ValueError("port must be in 0..65535")
        if options.api_port is not None and not 0 <= options.api_port <= 65535:
            raise ValueError("api_port must be in 0..65535")
        self.options = options
        self.store = open_store(options.store)
        planet = _load_planet(options.planet) if options.planet is not None else None
        home = options.store if isinstance(options.store, (str, os.PathLike)) else None
        self._home: Optional[str] = os.fspath(home) if home is not None else None
        controller: Optional[str] = None
        if options.controller is True:
            controller = (
                os.path.join(os.fspath(home), "controller.db") if home is not None else ":memory:"
            )
        elif options.controller:
            controller = os.fspath(options.controller)
        self._native = _native.NativeNode(
            self.store,
            identity=options.identity,
            planet=planet,
            keygen_threads=options.keygen_threads,
            port=options.port,
            ipv6=options.ipv6,
            allow_loopback=options.allow_loopback,
            allowed_destinations=options.allowed_destinations,
            controller=controller,
        )
        self.controller: Optional[Controller] = Controller(self) if controller else None
        self.api_port: Optional[int] = None
        self._lock = threading.Lock()
        self._callbacks: list[EventCallback] = []
        self._dispatcher: Optional[threading.Thread] = None
        self._dispatch_sub: Optional[_native.EventSubscription] = None
        if options.on_event is not None:
            self.add_event_callback(options.on_event)

    # -- lifecycle -------------------------------------------------------------------------

    def start(self, *, wait: bool = True, timeout: Optional[float] = None) -> Node:
        """Starts the node (a no-op if starting or running).

        With ``wait`` it returns once the node runs, raising :class:`zt.errors.NodeFaultedError`
        with the cause if it cannot start, or ``TimeoutError``; ``OSError`` (``EADDRINUSE``)
        if ``api_port`` is taken on 127.0.0.1 or ::1 (the node is stopped again).
        """
        timeout = check_timeout(timeout)
        _live_nodes.add(self)
        self._native.start()
        if wait:
            self._native.wait_running(timeout)
            if self.options.api_port is not None and self.api_port is None:
                try:
                    self.api_port = self._native.start_api(self.options.api_port, None, self._home)
                except BaseException:
                    # A node without the API it was asked for does not run on: its port is
                    # another program's (OSError, EADDRINUSE), the caller must choose.
                    self._native.stop()
                    raise
        return self

    def wait_running(self, timeout: Optional[float] = None) -> None:
        """Waits until the node runs (see :meth:`start`)."""
        self._native.wait_running(check_timeout(timeout))

    def stop(self) -> None:
        """Stops the node, persisting its state, and waits for it (a no-op unless running)."""
        self._native.stop_api()
        self.api_port = None
        self._native.stop()

    def close(self) -> None:
        """Stops the node and ends every event stream and the callback dispatcher."""
        self._native.stop_api()
        self.api_port = None
        self._native.stop()
        self._native.close_events()
        t = self._dispatcher
        if t is not None and t is not threading.current_thread():
            t.join(timeout=5)

    def __enter__(self) -> Node:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def state(self) -> NodeState:
        """The lifecycle state."""
        return NodeState(self._native.lifecycle()[0])

    @property
    def fault(self) -> Optional[str]:
        """Why the node faulted, or None."""
        return self._native.lifecycle()[1]

    # -- for zt's own modules --------------------------------------------------------------
    # zt.socket, zt._multicast and zt.controller reach the native node only through these two
    # methods; no module but this one reads ``_native`` or ``_home``.

    def _handle(self) -> _native.NativeNode:
        """The native node (``zt._native.NativeNode``) behind this one, in any state: a call on
        it reports itself a node that is not running (socket calls with ``OSError(ENETDOWN)``,
        others with :class:`zt.errors.NodeStateError`), so callers check nothing first."""
        return self._native

    def _call_api(self, method: str, path: str, body: Optional[bytes] = None) -> tuple[int, str]:
        """One trusted in-process call of the local JSON API (no token), with the node's home
        directory if it has one (``local.conf``, per-network settings files): ``(HTTP status,
        response text)``; a failing status is returned, not raised (callers word the error)."""
        return self._native.api(method, path, body, self._home)

    # -- what the node is ------------------------------------------------------------------

    def _check_waitable(self, what: str) -> None:
        """Raises NodeStateError unless the node is starting or running: a wait on a node that
        is not (never started, stopped, faulted) would never end."""
        state = self.state
        if state not in (NodeState.STARTING, NodeState.RUNNING):
            cause = f": {self.fault}" if state is NodeState.FAULTED and self.fault else ""
            raise NodeStateError(f"cannot wait to {what}: the node is {state.value}{cause}")

    def _require(self, value: Any, what: str) -> Any:
        if value is None:
            raise NodeStateError(f"the node's {what} is known once it has started")
        return value

    @property
    def identity(self) -> _native.Identity:
        """The node's identity, with its secret key."""
        ident: _native.Identity = self._require(self._native.identity(), "identity")
        return ident

    @property
    def address(self) -> str:
        """The node's 10-hex-digit ZeroTier address."""
        return self.identity.address

    @property
    def planet(self) -> _native.World:
        """The planet in use."""
        planet: _native.World = self._require(self._native.planet(), "planet")
        return planet

    @property
    def moons(self) -> list[_native.World]:
        """The moons held."""
        return self._native.moons()

    @property
    def stats(self) -> dict[str, Any]:
        """Counters of the node's work and of dropped or failed operations (``drops`` maps each
        drop reason to its count)."""
        return self._native.stats()

    def _status(self) -> tuple[bool, bool, int]:
        status: tuple[bool, bool, int] = self._require(self._native.status(), "status")
        return status

    @property
    def online(self) -> bool:
        """Whether a root answers (always true for a root); False before the node runs (while
        it starts, too) and after it stops."""
        status = self._native.status()
        return bool(status[0]) if status is not None else False

    @property
    def is_root(self) -> bool:
        """Whether this node is a root of its planet or of a moon."""
        return self._status()[1]

    @property
    def port(self) -> int:
        """The UDP port the node listens on."""
        return self._status()[2]

    def peers(self) -> list[PeerInfo]:
        """Known peers and their paths."""
        return [
            PeerInfo(
                address=p["address"],
                version=p["version"],
                protocol=p["protocol"],
                is_root=p["is_root"],
                paths=tuple(PathInfo(**x) for x in p["paths"]),
            )
            for p in self._native.peers()
        ]

    def peer(self, address: str) -> Optional[PeerInfo]:
        """One peer, or None."""
        return next((p for p in self.peers() if p.address == address), None)

    def send_user_message(
        self, address: str, type_id: int, data: bytes, timeout: float = 10.0
    ) -> None:
        """Sends a USER_MESSAGE (type IDs up to 0xffff are reserved by ZeroTier). It is queued
        while the peer is looked up; delivery is not confirmed."""
        if not 0 <= type_id < 2**64:
            raise ValueError("type_id must fit in 64 bits")
        self._native.send_user_message(address, type_id, bytes(data), _timeout(timeout))

    def wait_online(self, timeout: Optional[float] = None) -> None:
        """Waits until a root answers; raises TimeoutError, or :class:`zt.errors.NodeStateError`
        if the node is not running (or stops meanwhile)."""
        timeout = check_timeout(timeout)
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            self._check_waitable("come online")
            if self.online:
                return
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError("no root answered in time")
            time.sleep(0.02)

    def update_world(self, world: _native.World, timeout: float = 10.0) -> None:
        """Offers a newer signed revision of the planet or of a held moon.

        Raises :class:`zt.errors.WorldError` if it is not a valid update.
        """
        self._native.update_world(world, _timeout(timeout))

    # -- networks --------------------------------------------------------------------------

    def join(self, nwid: NetworkIdLike) -> None:
        """Joins a network (idempotent); its config is requested at once (ad-hoc networks are
        configured locally). Watch :meth:`network` or NETWORK_* events for the outcome.

        Raises :class:`zt.errors.NetworkError` when the node is already a member of 1,024
        networks (the cap; leave one first)."""
        self._native.join(format_network_id(nwid))

    def leave(self, nwid: NetworkIdLike) -> bool:
        """Leaves a network (its stored config and local settings are deleted); False if it was
        not joined."""
        path = f"/network/{format_network_id(nwid)}"
        status, text = self._call_api("DELETE", path)
        if status != 200:
            raise NodeStateError(f"cannot leave: {text or status}")
        return bool(json.loads(text).get("result", False))

    def networks(self) -> list[NetworkInfo]:
        """Joined networks."""
        return [NetworkInfo.from_json(d) for d in json.loads(self._native.networks_json())]

    def network(self, nwid: NetworkIdLike) -> Optional[NetworkInfo]:
        """A joined network, or None."""
        want = format_network_id(nwid)
        return next((n for n in self.networks() if n.id == want), None)

    def wait_network(
        self,
        nwid: NetworkIdLike,
        timeout: Optional[float] = None,
        *,
        addresses: bool = True,
    ) -> NetworkInfo:
        """Waits until the network is OK (and, with ``addresses``, has a managed address).

        Raises :class:`zt.errors.NetworkError` on ACCESS_DENIED / NOT_FOUND only once the
        timeout passes (a member may be authorized meanwhile), ``TimeoutError`` otherwise, and
        :class:`zt.errors.NodeStateError` if the node is not running (or stops meanwhile).
        """
        timeout = check_timeout(timeout)
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            self._check_waitable(f"join {format_network_id(nwid)}")
            seq = self._native.snapshot_seq()
            n = self.network(nwid)
            if n is None:
                raise NetworkError(f"not a member of {format_network_id(nwid)}")
            if n.status == "OK" and (n.addresses or not addresses):
                return n
            if deadline is not None and time.monotonic() > deadline:
                if n.status in ("ACCESS_DENIED", "NOT_FOUND", "AUTHENTICATION_REQUIRED"):
                    raise NetworkError(f"network {n.id}: {n.status}")
                raise TimeoutError(f"network {n.id} is {n.status}")
            # Until the node publishes a new state (at once when the network changes), in
            # slices so that Ctrl-C and the deadline are heeded.
            left = 0.5 if deadline is None else max(0.0, deadline - time.monotonic()) + 0.001
            self._native.wait_snapshot(seq, min(left, 0.5))

    def send_frame(self, nwid: NetworkIdLike, frame: bytes) -> None:
        """Sends an Ethernet frame (14-byte header + payload) on a network, as the node's own
        virtual NIC would. Raises :class:`zt.errors.NetworkError` if the network refuses it."""
        self._native.send_frame(format_network_id(nwid), bytes(frame))

    def frames(self, nwid: NetworkIdLike, capacity: int = 1024) -> _native.FrameTap:
        """A tap receiving the Ethernet frames the node delivers on a network (from now on)."""
        return self._native.tap_frames(format_network_id(nwid), capacity)

    def socket(self, family: int = 2, type: int = 1, proto: int = 0) -> zt_socket.socket:
        """A socket on this node's networks, like ``socket.socket(family, type)``
        (``AF_INET``/``AF_INET6``; ``SOCK_STREAM`` or ``SOCK_DGRAM``)."""
        return zt_socket.socket(self, family, type, proto)

    def create_connection(
        self,
        address: tuple[Any, Any],
        timeout: Any = zt_socket._GLOBAL_DEFAULT_TIMEOUT,
        source_address: Optional[tuple[Any, ...]] = None,
        *,
        all_errors: bool = False,
    ) -> zt_socket.socket:
        """A TCP connection to ``(ip, port)`` on this node's networks, like
        ``socket.create_connection`` (see :func:`zt.socket.create_connection`)."""
        return zt_socket.create_connection(
            self, address, timeout, source_address, all_errors=all_errors
        )

    def create_server(
        self,
        address: Union[tuple[Any, ...], int],
        *,
        family: int = zt_socket.AF_INET,
        backlog: Optional[int] = None,
        reuse_port: bool = False,
        dualstack_ipv6: bool = False,
    ) -> zt_socket.socket:
        """A listening TCP socket on ``(ip, port)`` (or a port), like ``socket.create_server``
        (see :func:`zt.socket.create_server`)."""
        return zt_socket.create_server(
            self,
            address,
            family=family,
            backlog=backlog,
            reuse_port=reuse_port,
            dualstack_ipv6=dualstack_ipv6,
        )

    def ping(
        self, nwid: NetworkIdLike, ip: str, timeout: float = 5.0, size: int = 56
    ) -> Optional[float]:
        """Pings ``ip`` on a network from this node's own TCP/IP stack (ICMP or ICMPv6 echo);
        the round-trip time in seconds, or None without a reply within ``timeout``. Every
        node's stack answers pings to its managed addresses."""
        return self._native.ping(format_network_id(nwid), str(ip), _timeout(timeout), size)

    def multicast_subscribe(self, nwid: NetworkIdLike, mac: str, adi: int = 0) -> None:
        """Subscribes to a multicast group (announced to the network's members)."""
        self._native.multicast_subscribe(format_network_id(nwid), mac, adi)

    def api(self, method: str, path: str, body: Optional[Any] = None) -> Any:
        """Calls the node's local JSON API in-process (zerotier-one's paths and objects);
        raises :class:`zt.errors.ControllerError` with the HTTP status on failure."""
        data = None if body is None else json.dumps(body).encode()
        status, text = self._call_api(method, path, data)
        if status != 200:
            raise ControllerError(status, text)
        return json.loads(text) if text else {}

    # -- events ----------------------------------------------------------------------------

    def events(self, *, until_down: bool = True, queue_size: Optional[int] = None) -> EventStream:
        """A new event stream, from now on (create it before :meth:`start` to see start-up)."""
        size = queue_size if queue_size is not None else self.options.event_queue_size
        return EventStream(self._native.subscribe(size), until_down=until_down)

    def add_event_callback(self, callback: EventCallback) -> None:
        """Calls ``callback(event)`` for each event, on a dispatcher thread. Exceptions it raises
        are logged to the ``zt.events`` logger and do not stop delivery."""
        with self._lock:
            self._callbacks.append(callback)
            if self._dispatcher is None:
                sub = self._native.subscribe(self.options.event_queue_size)
                self._dispatch_sub = sub
                self._dispatcher = threading.Thread(
                    target=self._dispatch, args=(sub,), name="zt-events", daemon=True
                )
                self._dispatcher.start()

    def remove_event_callback(self, callback: EventCallback) -> None:
        """Stops calling ``callback``."""
        with self._lock:
            self._callbacks.remove(callback)

    def _dispatch(self, sub: _native.EventSubscription) -> None:
        while True:
            try:
                item = sub.recv(None)
            except EOFError:
                return
            if item is None:
                continue
            ev = _make(*item)
            with self._lock:
                callbacks = list(self._callbacks)
            for cb in callbacks:
                try:
                    cb(ev)
                except Exception:
                    log.exception("event callback %r failed on %s", cb, ev.name)

    def __repr__(self) -> str:
        ident = self._native.identity()
        addr = ident.address if ident is not None else "?"
        return f"<zt.Node {addr} {self.state.value}>"
