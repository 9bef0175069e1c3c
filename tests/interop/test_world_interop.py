"""Planets (worlds): zt against libzt 1.8.4 (``zts_util_sign_root_set``, ``zts_init_set_roots``).

Serialised planet (ZeroTier's ``World::serialize``)::

    type (1) | id (8) | timestamp (8) | updatesMustBeSignedBy (64) | signature (96)
    | root count (1) | per root: identity (71, public form) | endpoint count (1)
    | per endpoint: 0x04 + IPv4 (4) + port (2), or 0x06 + IPv6 (16) + port (2)

``zts_util_sign_root_set`` signs with ``previous.c25519`` and names ``current.c25519``'s public
key as the key for the next revision; with no key files it makes one pair and uses it for both.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from pathlib import Path

import pytest

import zt
from tests.interop.libzt import (
    id_new,
    sign_root_set,
)
from tests.interop.marks import INTEROP, start_node_or_skip

pytestmark = INTEROP

WORLD_ID = 0x0123456789ABCDEF
TIMESTAMP = 1_700_000_000_000
EARTH_WORLD_ID = 149604618
HEADER_LEN = 1 + 8 + 8 + 64 + 96
SIGNATURE_AT = 1 + 8 + 8 + 64

RootSpec = tuple[str, list[str]]


def _endpoints(n: int) -> list[str]:
    return [f"203.0.113.{n + 1}/9993", f"2001:db8::{n + 1}/9993"]


@pytest.fixture(scope="module")
def root_ids() -> list[str]:
    """Four public root identities: two made by libzt, two by zt."""
    keys, _seconds = id_new(2)
    libzt_public = [k.rsplit(":", 1)[0] for k in keys]
    zt_public = [zt.Identity.generate().public_string() for _ in range(2)]
    return [libzt_public[0], zt_public[0], libzt_public[1], zt_public[1]]


@pytest.fixture(scope="module")
def roots(root_ids: list[str]) -> list[RootSpec]:
    return [(ident, _endpoints(n)) for n, ident in enumerate(root_ids)]


def _assert_roots(world: zt.World, expected: Sequence[RootSpec]) -> None:
    assert len(world.roots) == len(expected)
    for root, (ident, endpoints) in zip(world.roots, expected):
        assert root.identity.public_string() == ident
        assert not root.identity.has_secret
        assert root.identity.is_valid()
        assert root.stable_endpoints == endpoints


def _parse_root_section(planet: bytes) -> list[tuple[bytes, list[str]]]:
    """The (binary identity, endpoints) of each root, parsed here by hand."""
    count = planet[HEADER_LEN]
    pos = HEADER_LEN + 1
    parsed: list[tuple[bytes, list[str]]] = []
    for _ in range(count):
        identity = planet[pos : pos + 71]
        pos += 71
        endpoints: list[str] = []
        n_endpoints = planet[pos]
        pos += 1
        for _ in range(n_endpoints):
            kind = planet[pos]
            size = {4: 4, 6: 16}[kind]
            ip = ipaddress.ip_address(planet[pos + 1 : pos + 1 + size])
            port = int.from_bytes(planet[pos + 1 + size : pos + 3 + size], "big")
            endpoints.append(f"{ip}/{port}")
            pos += 3 + size
        parsed.append((identity, endpoints))
    assert pos == len(planet), "planet has bytes after its last root"
    return parsed


# --------------------------------------------------------------------------------------------
# libzt -> zt
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("n_roots", [1, 4])
def test_libzt_planet_parses_and_verifies_in_zt(n_roots: int, roots: list[RootSpec]) -> None:
    wanted = roots[:n_roots]
    planet, previous, current = sign_root_set(WORLD_ID, TIMESTAMP, wanted)
    assert previous == current  # no key files: one fresh pair signs and is named for updates

    world = zt.World.from_bytes(planet)
    assert world.world_type == "planet"
    assert world.id == WORLD_ID
    assert world.timestamp == TIMESTAMP
    assert world.update_key == current[:64]
    assert world.signature == planet[SIGNATURE_AT:HEADER_LEN]
    assert world.verify()  # self-signed first revision
    assert world.verify(current[:64])
    assert not world.verify(zt.KeyPair.generate().public)
    _assert_roots(world, wanted)
    assert world.to_bytes() == planet


@pytest.mark.parametrize("n_roots", [1, 4])
def test_zt_root_serialisation_matches_libzt(n_roots: int, roots: list[RootSpec]) -> None:
    """zt's binary identity form and endpoint rendering agree with what libzt wrote."""
    wanted = roots[:n_roots]
    planet, _previous, _current = sign_root_set(WORLD_ID, TIMESTAMP, wanted)
    parsed = _parse_root_section(planet)
    assert len(parsed) == n_roots
    for (binary, endpoints), (ident, asked) in zip(parsed, wanted):
        assert zt.Identity.from_string(ident).to_bytes() == binary
        assert zt.Identity.from_bytes(binary).public_string() == ident
        assert endpoints == asked


def test_libzt_default_planet_in_zt(tmp_path: Path) -> None:
    """libzt's built-in planet (the ``roots`` it writes when given none) as zt sees it."""
    storage = tmp_path / "node"
    start_node_or_skip(storage)
    planet = (storage / "roots").read_bytes()
    world = zt.World.from_bytes(planet)
    assert world.world_type == "planet"
    assert world.id == EARTH_WORLD_ID
    assert world.verify()
    assert world.to_bytes() == planet
    assert len(world.roots) == 4
    # Observed: libzt 1.8.4 ships an older revision of Earth than zt's default planet; zt's is
    # a valid signed update of libzt's (same ID and update key, newer timestamp).
    ours = zt.default_planet()
    assert ours.id == world.id
    assert ours.update_key == world.update_key
    assert ours.timestamp > world.timestamp
    assert world.accepts_update(ours)
    assert not ours.accepts_update(world)


# --------------------------------------------------------------------------------------------
# Signing keys and determinism
# --------------------------------------------------------------------------------------------


def test_zt_planet_is_byte_identical_to_libzt(roots: list[RootSpec]) -> None:
    planet, _previous, current = sign_root_set(WORLD_ID, TIMESTAMP, roots)
    key = zt.KeyPair.from_bytes(current)
    assert key.public == current[:64]
    assert key.secret == current[64:]
    assert key.to_bytes() == current

    ours = zt.planet.make_planet(roots, signing_key=key, world_id=WORLD_ID, timestamp=TIMESTAMP)
    # Verified empirically: C25519 (Ed25519) signatures are deterministic, so the same
    # id/timestamp/roots/key give the same bytes in both implementations.
    assert ours.to_bytes() == planet
    again = zt.planet.make_planet(roots, signing_key=key, world_id=WORLD_ID, timestamp=TIMESTAMP)
    assert again.to_bytes() == planet

    # libzt with the same key given back as key files reproduces it too.
    libzt_again, _p, _c = sign_root_set(
        WORLD_ID, TIMESTAMP, roots, previous_key=current, current_key=current
    )
    assert libzt_again == planet


def test_libzt_key_rotation_seen_by_zt(roots: list[RootSpec]) -> None:
    k1 = zt.KeyPair.generate()
    k2 = zt.KeyPair.generate()
    rotated, previous, current = sign_root_set(
        WORLD_ID, TIMESTAMP + 1000, roots, previous_key=k1.to_bytes(), current_key=k2.to_bytes()
    )
    assert previous == k1.to_bytes()
    assert current == k2.to_bytes()

    world = zt.World.from_bytes(rotated)
    assert world.to_bytes() == rotated
    assert world.update_key == k2.public  # names K2 for the next revision...
    assert world.verify(k1.public)  # ...and is signed by K1
    assert not world.verify()  # not self-signed
    assert not world.verify(k2.public)
    _assert_roots(world, roots)

    # An older zt revision of the same planet, whose update key is K1, accepts libzt's.
    older = zt.planet.make_planet(roots[:1], signing_key=k1, world_id=WORLD_ID, timestamp=TIMESTAMP)
    assert older.accepts_update(world)
    older.check_update(world)
    assert not world.accepts_update(older)
    with pytest.raises(zt.WorldError):
        world.check_update(older)

    # zt makes the identical rotated revision.
    ours = zt.World.make(
        "planet",
        WORLD_ID,
        TIMESTAMP + 1000,
        [zt.Root(zt.Identity.from_string(i), e) for i, e in roots],
        k1,
        k2.public,
    )
    assert ours.to_bytes() == rotated
    via_update = zt.planet.update_planet(
        older, k1, roots=roots, next_key=k2, timestamp=TIMESTAMP + 1000
    )
    assert via_update.to_bytes() == rotated


def test_update_chain_across_libzt_and_zt(roots: list[RootSpec]) -> None:
    """zt enforces the update rules on revisions libzt signed."""
    k1 = zt.KeyPair.generate()
    k2 = zt.KeyPair.generate()
    v1 = zt.planet.make_planet(
        roots[:2], signing_key=k1, world_id=WORLD_ID, timestamp=TIMESTAMP, update_key=k2
    )
    # Signed by K2, which v1 names: accepted.
    good, _p, _c = sign_root_set(
        WORLD_ID, TIMESTAMP + 1, roots, previous_key=k2.to_bytes(), current_key=k2.to_bytes()
    )
    assert v1.accepts_update(zt.World.from_bytes(good))
    # Signed by K1, which v1 no longer names: refused.
    wrong_key, _p, _c = sign_root_set(
        WORLD_ID, TIMESTAMP + 1, roots, previous_key=k1.to_bytes(), current_key=k2.to_bytes()
    )
    assert not v1.accepts_update(zt.World.from_bytes(wrong_key))
    with pytest.raises(zt.WorldError):
        v1.check_update(zt.World.from_bytes(wrong_key))
    # Right key, another world ID: refused.
    other_id, _p, _c = sign_root_set(
        WORLD_ID + 1, TIMESTAMP + 1, roots, previous_key=k2.to_bytes(), current_key=k2.to_bytes()
    )
    assert not v1.accepts_update(zt.World.from_bytes(other_id))
    # Right key, same timestamp: refused (not newer).
    same_ts, _p, _c = sign_root_set(
        WORLD_ID, TIMESTAMP, roots, previous_key=k2.to_bytes(), current_key=k2.to_bytes()
    )
    assert not v1.accepts_update(zt.World.from_bytes(same_ts))


# --------------------------------------------------------------------------------------------
# zt -> libzt
# --------------------------------------------------------------------------------------------


def test_libzt_adopts_a_zt_planet(tmp_path: Path, roots: list[RootSpec]) -> None:
    key = zt.KeyPair.generate()
    planet = zt.planet.make_planet(roots, signing_key=key, world_id=WORLD_ID, timestamp=TIMESTAMP)
    data = planet.to_bytes()
    storage = tmp_path / "node"
    info = start_node_or_skip(storage, roots=data)
    assert "roots" in info["files"]
    written = (storage / "roots").read_bytes()
    assert written == data  # libzt adopted our planet rather than its built-in one
    assert zt.World.from_bytes(written).id == WORLD_ID


def test_libzt_does_not_check_a_planets_signature_on_first_load(
    tmp_path: Path, roots: list[RootSpec]
) -> None:
    key = zt.KeyPair.generate()
    planet = zt.planet.make_planet(
        roots[:1], signing_key=key, world_id=WORLD_ID, timestamp=TIMESTAMP
    )
    tampered = bytearray(planet.to_bytes())
    assert bytes(tampered[SIGNATURE_AT:HEADER_LEN]) == planet.signature
    tampered[SIGNATURE_AT + 10] ^= 0x01
    data = bytes(tampered)

    world = zt.World.from_bytes(data)  # zt parses it...
    assert world.to_bytes() == data
    assert not world.verify()  # ...and reports the bad signature
    assert not world.verify(key.public)

    # Observed: libzt (like zerotier-one) trusts the planet it is started with; it does not
    # check the signature and adopts the tampered planet as its roots.
    storage = tmp_path / "node"
    start_node_or_skip(storage, roots=data)
    assert (storage / "roots").read_bytes() == data
