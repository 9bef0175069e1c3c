"""zt: a user-space ZeroTier SDK for Python with a Rust core.

Protocol-compatible with ZeroTier 1.x (identities, planets and moons as zerotier-one and libzt
make them). Start with :class:`Node`, :class:`Identity` and :mod:`zt.planet`.

Sockets: ``node.socket()`` (:mod:`zt.socket`), TLS on them (:mod:`zt.ssl`), asyncio streams
(:mod:`zt.asyncio`), httpx transports (:mod:`zt.http`, needs ``zt[http]``), and
:func:`zt.route` for unchanged stdlib-socket code (``requests``, ``urllib``…).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from . import controller, errors, events, network, planet, stores
from ._native import (
    BUILD_PROFILE,
    VERSION,
    Identity,
    KeyPair,
    Root,
    World,
    default_planet,
)
from .controller import Controller
from .errors import (
    ControllerError,
    IdentityError,
    NetworkError,
    NodeFaultedError,
    NodeStateError,
    StoreCorruptError,
    StoreError,
    WorldError,
    ZtError,
)
from .events import Event, EventCode, EventStream
from .network import NetworkInfo
from .node import Node, NodeOptions, NodeState
from .stores import FileStore, MemoryStore, Store

if TYPE_CHECKING:
    from . import httpserver, lab, routing, ssl
    from .routing import Router, route

__version__ = VERSION

# Imported on first use: they pull in the standard library's ssl (OpenSSL) and more, which a
# program that never uses them should not pay for in start-up time and memory.
_LAZY = {"lab": ("lab", None), "ssl": ("ssl", None), "routing": ("routing", None),
         "httpserver": ("httpserver", None),
         "route": ("routing", "route"), "Router": ("routing", "Router")}  # fmt: skip


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        module_name, attr = _LAZY[name]
        module = importlib.import_module(f".{module_name}", __name__)
        value = module if attr is None else getattr(module, attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "BUILD_PROFILE",
    "Controller",
    "ControllerError",
    "Event",
    "EventCode",
    "EventStream",
    "FileStore",
    "Identity",
    "IdentityError",
    "KeyPair",
    "MemoryStore",
    "NetworkError",
    "NetworkInfo",
    "Node",
    "NodeFaultedError",
    "NodeOptions",
    "NodeState",
    "NodeStateError",
    "Root",
    "Router",
    "Store",
    "StoreCorruptError",
    "StoreError",
    "World",
    "WorldError",
    "ZtError",
    "__version__",
    "controller",
    "default_planet",
    "errors",
    "events",
    "httpserver",
    "lab",
    "network",
    "planet",
    "route",
    "routing",
    "ssl",
    "stores",
]
