"""State stores.

A store holds a node's identity, planet, moons, peers and network configs under zerotier-one's
file names (``identity.secret``, ``planet``, ``moons.d/<id>.moon``, ``peers.d/<addr>.peer``,
``networks.d/<nwid>.conf``), so a :class:`FileStore` directory is interchangeable with a
zerotier-one or libzt home (libzt's ``roots`` is read as the planet when ``planet`` is absent).

Custom stores are any object with these four methods (see :class:`Store`); they are called on the
node's thread. ``put`` must be atomic.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Optional, Protocol, Union, runtime_checkable

from ._native import FileStore, MemoryStore

__all__ = ["FileStore", "MemoryStore", "Store", "open_store"]


@runtime_checkable
class Store(Protocol):
    """What a custom store provides."""

    def get(self, key: str) -> Optional[bytes]:
        """The value of ``key`` or None."""

    def put(self, key: str, data: bytes) -> None:
        """Atomically set ``key``."""

    def delete(self, key: str) -> None:
        """Remove ``key`` (absent is fine)."""

    def list(self, prefix: str) -> Iterable[str]:
        """Keys starting with ``prefix``."""


def open_store(spec: Union[Store, str, os.PathLike[str], None]) -> Store:
    """The store for a ``NodeOptions.store`` value: a path becomes a :class:`FileStore`, None a
    :class:`MemoryStore`, and a store object is used as it is."""
    if spec is None:
        return MemoryStore()
    if isinstance(spec, (str, os.PathLike)):
        if not os.fspath(spec):
            raise ValueError(
                "store must not be an empty path: name a directory, or pass None to keep "
                "state in memory only"
            )
        return FileStore(os.fspath(spec))
    for method in ("get", "put", "delete", "list"):
        if not callable(getattr(spec, method, None)):
            raise TypeError(
                f"a store needs get, put, delete and list methods; {spec!r} lacks {method}"
            )
    return spec
