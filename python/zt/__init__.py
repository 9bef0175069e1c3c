"""zt: a user-space ZeroTier SDK for Python with a Rust core.

Protocol-compatible with ZeroTier 1.x (identities, planets and moons as zerotier-one and libzt
make them). Start with :class:`Node`, :class:`Identity` and :mod:`zt.planet`.
"""

from __future__ import annotations

from . import errors, events, network, planet, stores
from ._native import (
    BUILD_PROFILE,
    VERSION,
    Identity,
    KeyPair,
    Root,
    World,
    default_planet,
)
from .errors import (
    IdentityError,
    NodeFaultedError,
    NodeStateError,
    StoreCorruptError,
    StoreError,
    WorldError,
    ZtError,
)
from .events import Event, EventCode, EventStream
from .node import Node, NodeOptions, NodeState
from .stores import FileStore, MemoryStore, Store

__version__ = VERSION

__all__ = [
    "BUILD_PROFILE",
    "Event",
    "EventCode",
    "EventStream",
    "FileStore",
    "Identity",
    "IdentityError",
    "KeyPair",
    "MemoryStore",
    "Node",
    "NodeFaultedError",
    "NodeOptions",
    "NodeState",
    "NodeStateError",
    "Root",
    "Store",
    "StoreCorruptError",
    "StoreError",
    "World",
    "WorldError",
    "ZtError",
    "__version__",
    "default_planet",
    "errors",
    "events",
    "network",
    "planet",
    "stores",
]
