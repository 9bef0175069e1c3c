"""Tests of the libzt 1.8.4 harness itself, against the real libzt."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.interop.libzt import (
    LibztError,
    id_new,
    id_pair_is_valid,
    sign_root_set,
)
from tests.interop.marks import INTEROP, start_node_or_skip

pytestmark = INTEROP

IDENTITY_SECRET_RE = re.compile(r"^[0-9a-f]{10}:0:[0-9a-f]{128}:[0-9a-f]{128}$")
WORLD_ID = 0x0123456789ABCDEF
TIMESTAMP = 1_700_000_000_000


@pytest.fixture(scope="module")
def identities() -> list[str]:
    keys, _seconds = id_new(3)
    return keys


def _flip_hex(text: str, index: int) -> str:
    replacement = "1" if text[index] == "0" else "0"
    return text[:index] + replacement + text[index + 1 :]


def test_id_new_gives_identities_libzt_accepts(identities: list[str]) -> None:
    assert len(identities) == 3
    assert len(set(identities)) == 3
    for key in identities:
        assert len(key) == 270
        assert IDENTITY_SECRET_RE.match(key), key
    assert id_pair_is_valid(identities) == [True, True, True]


def test_id_new_reports_a_duration_per_call() -> None:
    keys, seconds = id_new(2)
    assert len(keys) == len(seconds) == 2
    assert all(0 < s < 60 for s in seconds)


def test_flipped_address_digit_is_rejected(identities: list[str]) -> None:
    key = identities[0]
    assert id_pair_is_valid([_flip_hex(key, 3), key]) == [False, True]


def test_flipped_public_key_digit_is_rejected(identities: list[str]) -> None:
    key = identities[0]
    assert id_pair_is_valid([_flip_hex(key, 13 + 40)]) == [False]


def test_sign_root_set_makes_a_planet(identities: list[str]) -> None:
    public = identities[0].rsplit(":", 1)[0]
    roots = [(public, ["203.0.113.1/9993", "2001:db8::1/9993"])]
    planet, previous, current = sign_root_set(WORLD_ID, TIMESTAMP, roots)
    assert planet[0] == 1  # World::TYPE_PLANET
    assert int.from_bytes(planet[1:9], "big") == WORLD_ID
    assert int.from_bytes(planet[9:17], "big") == TIMESTAMP
    assert len(previous) == len(current) == 128
    assert previous == current  # no key files given: one fresh pair serves as both
    assert planet[17:81] == current[:64]  # updates must be signed by the current public key

    again, previous2, current2 = sign_root_set(
        WORLD_ID, TIMESTAMP, roots, previous_key=previous, current_key=current
    )
    assert (previous2, current2) == (previous, current)
    assert again == planet  # C25519 signatures are deterministic: same keys, same planet


def test_start_node_writes_identity_and_roots(tmp_path: Path) -> None:
    storage = tmp_path / "node"
    info = start_node_or_skip(storage)
    node_id = info["node_id"]
    assert re.fullmatch(r"[0-9a-f]{10}", node_id)
    assert {"identity.secret", "identity.public", "roots"} <= set(info["files"])
    public = (storage / "identity.public").read_text().strip()
    assert public.split(":")[0] == node_id
    secret = (storage / "identity.secret").read_text().strip()
    assert secret.startswith(public + ":")
    assert id_pair_is_valid([secret]) == [True]

    again = start_node_or_skip(storage)  # identity persists in the storage dir
    assert again["node_id"] == node_id


def test_start_node_uses_given_roots(tmp_path: Path, identities: list[str]) -> None:
    public = identities[1].rsplit(":", 1)[0]
    planet, _previous, _current = sign_root_set(
        WORLD_ID, TIMESTAMP, [(public, ["203.0.113.7/9993"])]
    )
    storage = tmp_path / "node"
    info = start_node_or_skip(storage, roots=planet)
    assert "roots" in info["files"]
    assert (storage / "roots").read_bytes() == planet


def test_start_node_adopts_a_seeded_identity(tmp_path: Path, identities: list[str]) -> None:
    storage = tmp_path / "node"
    storage.mkdir()
    (storage / "identity.secret").write_text(identities[2])
    info = start_node_or_skip(storage)
    assert info["node_id"] == identities[2][:10]


def test_libzt_abort_surfaces_as_libzt_error() -> None:
    # libzt throws a C++ exception on an unparsable root identity, which aborts the worker.
    with pytest.raises(LibztError):
        sign_root_set(WORLD_ID, TIMESTAMP, [("not-an-identity", ["203.0.113.1/9993"])])
