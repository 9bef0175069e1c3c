"""A whole ZeroTier network on loopback in one call, for examples, docs, tests and trying zt.

:class:`Lab` makes a private planet whose only root is a zt node on 127.0.0.1, starts that root
and a network controller, and hands out members: ``lab.member(nwid)`` starts a node, joins it
to the network, authorizes it and returns once it has its addresses. Every node's traffic is
confined to 127.0.0.0/8 (``allowed_destinations``), and :meth:`Lab.close` stops every node it
started::

    import zt

    with zt.lab.Lab() as lab:
        nwid = lab.network()                     # 198.18.0.0/15, addresses assigned
        a, b = lab.member(nwid), lab.member(nwid)
        print(lab.ip(b, nwid))                   # e.g. 198.18.0.57

The controller is a normal zt controller (``lab.controller``, zerotier-one's JSON records), so
a lab network can be changed like any other.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import tempfile
from pathlib import Path
from typing import Any, Optional, TypeVar, Union

from . import planet as _planet
from ._native import Identity, KeyPair, World
from .controller import Controller
from .errors import NodeFaultedError
from .network import NetworkIdLike
from .node import Node

__all__ = ["DEFAULT_NETWORK", "Lab", "unused_udp_port"]

_L = TypeVar("_L", bound="Lab")

#: The network :meth:`Lab.network` creates unless told otherwise: private, IPv4 addresses from
#: 198.18.0.0/15 (a range for testing, RFC 2544), no IPv6 assignment.
DEFAULT_NETWORK: dict[str, Any] = {
    "name": "lab",
    "private": True,
    "v4AssignMode": {"zt": True},
    "v6AssignMode": {"rfc4193": False, "6plane": False, "zt": False},
    "ipAssignmentPools": [{"ipRangeStart": "198.18.0.10", "ipRangeEnd": "198.18.0.250"}],
    "routes": [{"target": "198.18.0.0/15", "via": None}],
}

# How many ports the root tries (another process may take one between choosing and binding).
_ROOT_PORT_TRIES = 8
# Options the lab sets per node itself.
_LAB_OPTIONS = ("planet", "identity", "port", "store", "controller")


def unused_udp_port() -> int:
    """A UDP port that nothing on 127.0.0.1 uses now. Another process may take it before the
    caller binds it: a caller that cannot retry should bind port 0 instead."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Lab:
    """A private planet, its root and a network controller on 127.0.0.1, and members.

    ``home``: where the controller's database and the members' stores go (a temporary
    directory, removed by :meth:`close`, if not given). ``node_options``: options every node
    of the lab gets (for example ``tcp_congestion="bbr"``); by default ``allow_loopback=True,
    ipv6=False, allowed_destinations=["127.0.0.0/8"]``.
    """

    def __init__(self, home: Union[str, Path, None] = None, **node_options: Any) -> None:
        clash = sorted(set(node_options) & set(_LAB_OPTIONS))
        if clash:
            raise ValueError(f"the lab sets {', '.join(clash)} per node itself")
        self._tmp: Optional[str] = None
        if home is None:
            self._tmp = tempfile.mkdtemp(prefix="zt-lab-")
            home = self._tmp
        self.home = Path(home)
        self.home.mkdir(parents=True, exist_ok=True)
        self._options = node_options
        self.nodes: list[Node] = []
        self._members = 0
        try:
            self.root, self.planet = self._start_root()
            self.controller_node = self.node(store=str(self.home / "controller"), controller=True)
        except BaseException:
            with contextlib.suppress(Exception):
                self.close()
            raise

    def _start_root(self) -> tuple[Node, World]:
        identity = Identity.generate()
        key = KeyPair.generate()
        for attempt in range(_ROOT_PORT_TRIES):
            port = unused_udp_port()
            planet = _planet.make_planet([(identity, [f"127.0.0.1/{port}"])], signing_key=key)
            try:
                root = self._start(planet, identity=identity, port=port)
            except NodeFaultedError as e:
                # Another process took the port between the probe and the bind: another one.
                if "in use" not in str(e) or attempt + 1 == _ROOT_PORT_TRIES:
                    raise
                continue
            return root, planet
        raise AssertionError("unreachable")

    def _start(self, planet: World, **options: Any) -> Node:
        merged = {
            "allow_loopback": True,
            "ipv6": False,
            "allowed_destinations": ["127.0.0.0/8"],
            **self._options,
            **options,
        }
        node = Node(planet=planet, **merged)
        try:
            node.start()
        except BaseException:
            node.close()
            raise
        self.nodes.append(node)
        return node

    @property
    def controller(self) -> Controller:
        """The lab's network controller."""
        ctl = self.controller_node.controller
        assert ctl is not None
        return ctl

    def node(self, **options: Any) -> Node:
        """A started node on the lab's planet (no network joined); ``options`` as
        :class:`zt.NodeOptions` takes them."""
        return self._start(self.planet, **options)

    def network(self, **fields: Any) -> str:
        """Creates a network on the lab's controller: :data:`DEFAULT_NETWORK` with ``fields``
        over it (zerotier-one's network JSON). Returns its ID."""
        nwid: str = self.controller.create_network(**{**DEFAULT_NETWORK, **fields})["id"]
        return nwid

    def member(self, nwid: NetworkIdLike, timeout: float = 30.0, **options: Any) -> Node:
        """A new node, authorized on ``nwid``, that has joined it and got its configuration
        (``node.network(nwid)`` has its addresses). Its store is a directory in the lab's home
        unless ``options`` give one."""
        self._members += 1
        options.setdefault("store", str(self.home / f"member-{self._members}"))
        node = self.node(**options)
        # Authorized before it asks: the controller's first answer is the configuration.
        self.controller.authorize(nwid, node.address)
        node.join(nwid)
        node.wait_network(nwid, timeout=timeout)
        return node

    def ip(self, node: Node, nwid: NetworkIdLike) -> str:
        """The IPv4 address the network assigned to ``node``, as text."""
        info = node.network(nwid)
        if info is None or info.ipv4 is None:
            raise LookupError(f"{node.address} has no IPv4 address on {nwid}")
        return str(info.ipv4.ip)

    def close(self) -> None:
        """Stops every node of the lab, members first, and removes a temporary home."""
        first: Optional[BaseException] = None
        while self.nodes:
            try:
                self.nodes.pop().close()
            except BaseException as e:  # the others are still closed; the first error is raised
                first = first or e
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None
        if first is not None:
            raise first

    def __enter__(self: _L) -> _L:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
