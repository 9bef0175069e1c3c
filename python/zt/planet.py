"""Private planets: build, sign, rotate.

A planet lists up to four roots (identity + stable endpoints) and is signed. Each revision names
the public key that must sign the next one, so a planet can be updated in place by whoever holds
that key, and nodes accept the update over the network.

    key = zt.KeyPair.generate()
    planet = zt.planet.make_planet([(root_identity, ["203.0.113.1/9993"])], signing_key=key)
    # later: a new root set, the same signing chain
    v2 = zt.planet.update_planet(planet, key, roots=[...])
    # rotate the signing key: v3 is signed by `key` and names `new_key` for v4 onward
    v3 = zt.planet.update_planet(v2, key, next_key=new_key)
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Optional, Union

from ._native import Identity, KeyPair, Root, World, default_planet
from .errors import WorldError

__all__ = [
    "RootSpec",
    "default_planet",
    "load_key",
    "make_planet",
    "save_key",
    "update_planet",
]

RootSpec = Union[Root, tuple[Union[Identity, str], Sequence[str]]]
EARTH_WORLD_ID = 149604618


def _root(spec: RootSpec) -> Root:
    if isinstance(spec, Root):
        return spec
    ident, endpoints = spec
    if isinstance(ident, str):
        ident = Identity.from_string(ident)
    return Root(ident, list(endpoints))


def _now_ms() -> int:
    return int(time.time() * 1000)


def make_planet(
    roots: Sequence[RootSpec],
    *,
    signing_key: KeyPair,
    world_id: Optional[int] = None,
    timestamp: Optional[int] = None,
    update_key: Optional[KeyPair] = None,
) -> World:
    """A new signed planet.

    ``signing_key`` signs it; ``update_key`` (default: the same pair) is named as the key that
    must sign the next revision. ``world_id`` defaults to a random 63-bit ID (never Earth's), and
    ``timestamp`` to now in milliseconds.
    """
    if world_id is None:
        world_id = int.from_bytes(os.urandom(8), "big") >> 1 or 1
    if world_id == EARTH_WORLD_ID:
        raise WorldError("world ID 149604618 is ZeroTier's public planet; choose another")
    return World.make(
        "planet",
        world_id,
        timestamp if timestamp is not None else _now_ms(),
        [_root(r) for r in roots],
        signing_key,
        (update_key or signing_key).public,
    )


def update_planet(
    current: World,
    signing_key: KeyPair,
    *,
    roots: Optional[Sequence[RootSpec]] = None,
    next_key: Optional[KeyPair] = None,
    timestamp: Optional[int] = None,
) -> World:
    """The next revision of ``current``: same ID, newer timestamp, signed by ``signing_key``
    (which must be the key ``current`` names), naming ``next_key`` (default: ``signing_key``)
    for the revision after. ``roots`` defaults to the current roots."""
    if signing_key.public != current.update_key:
        raise WorldError("signing_key is not the key the current revision names for updates")
    ts = timestamp if timestamp is not None else max(_now_ms(), current.timestamp + 1)
    if ts <= current.timestamp:
        raise WorldError("an update needs a timestamp newer than the current revision's")
    new = World.make(
        current.world_type,
        current.id,
        ts,
        [_root(r) for r in (roots if roots is not None else current.roots)],
        signing_key,
        (next_key or signing_key).public,
    )
    current.check_update(new)
    return new


def load_key(path: Union[str, os.PathLike[str]]) -> KeyPair:
    """Reads a ``.c25519`` key file (64-byte public ‖ 64-byte secret, as mkworld writes)."""
    return KeyPair.from_bytes(Path(path).read_bytes())


def save_key(key: KeyPair, path: Union[str, os.PathLike[str]]) -> None:
    """Writes a ``.c25519`` key file readable by its owner only."""
    p = Path(path)
    tmp = p.with_name(f".{p.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, key.to_bytes())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, p)
