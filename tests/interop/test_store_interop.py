"""Storage directories: a libzt 1.8.4 home opened by zt, and a zt home opened by libzt.

libzt keeps ``identity.secret``, ``identity.public`` and ``roots`` (its planet) in the directory
given to ``zts_init_from_storage``; zt's :class:`zt.FileStore` uses zerotier-one's names and reads
``roots`` as the planet when there is no ``planet`` file.
"""

from __future__ import annotations

import os
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path

import pytest

import zt
from tests.interop.libzt import (
    id_pair_is_valid,
)
from tests.interop.marks import INTEROP, start_node_or_skip

pytestmark = INTEROP

WORLD_ID = 0x00C0FFEE00000001
TIMESTAMP = 1_700_000_000_000
START_TIMEOUT_S = 20.0


@dataclass(frozen=True)
class FileState:
    data: bytes
    mode: int
    mtime_ns: int

    @staticmethod
    def of(path: Path) -> FileState:
        st = path.stat()
        return FileState(path.read_bytes(), stat.S_IMODE(st.st_mode), st.st_mtime_ns)


@dataclass(frozen=True)
class LibztHome:
    """A storage directory a libzt node was started on (with a zt-made planet), then stopped."""

    path: Path
    node_id: str
    planet: bytes


def _zt_planet() -> zt.World:
    root = zt.Identity.generate()
    return zt.planet.make_planet(
        [(root, ["203.0.113.10/9993", "2001:db8::10/9993"])],
        signing_key=zt.KeyPair.generate(),
        world_id=WORLD_ID,
        timestamp=TIMESTAMP,
    )


@pytest.fixture(scope="module")
def libzt_home_template(tmp_path_factory: pytest.TempPathFactory) -> LibztHome:
    planet = _zt_planet().to_bytes()
    path = tmp_path_factory.mktemp("libzt-template") / "home"
    info = start_node_or_skip(path, roots=planet)
    assert {"identity.secret", "identity.public", "roots"} <= set(info["files"])
    return LibztHome(path, info["node_id"], planet)


@pytest.fixture
def libzt_home(libzt_home_template: LibztHome, tmp_path: Path) -> LibztHome:
    """A private copy of the libzt home (modes and times preserved)."""
    path = tmp_path / "home"
    shutil.copytree(libzt_home_template.path, path)
    return LibztHome(path, libzt_home_template.node_id, libzt_home_template.planet)


# --------------------------------------------------------------------------------------------
# libzt home -> zt
# --------------------------------------------------------------------------------------------


def test_zt_opens_a_libzt_home(libzt_home: LibztHome) -> None:
    home = libzt_home.path
    assert (home / "roots").read_bytes() == libzt_home.planet
    before = {name: FileState.of(home / name) for name in ("identity.secret", "identity.public")}
    roots_before = FileState.of(home / "roots")

    node = zt.Node(zt.NodeOptions(store=str(home)))
    try:
        node.start(timeout=START_TIMEOUT_S)
        assert node.address == libzt_home.node_id
        assert node.identity.secret_string() == before["identity.secret"].data.decode().strip()
        assert node.identity.public_string() == before["identity.public"].data.decode().strip()
        # libzt's `roots` (a zt planet libzt was given) is the planet zt runs with.
        assert node.planet.to_bytes() == libzt_home.planet
    finally:
        node.close()

    after = {name: FileState.of(home / name) for name in before}
    assert after == before  # identity files untouched: bytes, mode and mtime
    assert before["identity.secret"].mode == 0o600
    assert FileState.of(home / "roots") == roots_before


def test_zt_filestore_reads_a_libzt_home(libzt_home: LibztHome) -> None:
    home = libzt_home.path
    store = zt.FileStore(str(home))
    assert {"identity.secret", "identity.public", "roots"} <= set(store.list())
    assert store.get("identity.secret") == (home / "identity.secret").read_bytes()
    assert store.get("roots") == libzt_home.planet
    assert store.get("planet") is None

    with zt.Node(zt.NodeOptions(store=store)) as node:
        assert node.address == libzt_home.node_id
        assert node.planet.to_bytes() == libzt_home.planet


@pytest.mark.parametrize("keep", [0, 10, 135, 269])
def test_truncated_identity_secret_faults_zt_and_is_left_alone(
    libzt_home: LibztHome, keep: int
) -> None:
    secret = libzt_home.path / "identity.secret"
    full = secret.read_bytes()
    assert len(full) > keep
    secret.write_bytes(full[:keep])
    os.chmod(secret, 0o600)
    before = FileState.of(secret)

    node = zt.Node(zt.NodeOptions(store=str(libzt_home.path)))
    try:
        with pytest.raises(zt.NodeFaultedError, match=r"identity\.secret"):
            node.start(timeout=START_TIMEOUT_S)
        assert node.state is zt.NodeState.FAULTED
        assert node.fault is not None
        assert "identity.secret" in node.fault
    finally:
        node.close()
    assert FileState.of(secret) == before  # zt neither repaired nor replaced it


def test_libzt_replaces_a_truncated_identity_secret(libzt_home: LibztHome) -> None:
    """The contrast, observed: libzt 1.8.4 (like zerotier-one) silently makes a new identity
    when identity.secret does not parse, and overwrites the file."""
    secret = libzt_home.path / "identity.secret"
    secret.write_bytes(secret.read_bytes()[:135])
    info = start_node_or_skip(libzt_home.path)
    assert info["node_id"] != libzt_home.node_id
    replaced = secret.read_text()
    assert replaced.startswith(info["node_id"] + ":0:")
    assert len(replaced) == 270


# --------------------------------------------------------------------------------------------
# zt home -> libzt
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("custom_planet", [False, True], ids=["default-planet", "zt-planet"])
def test_libzt_opens_a_zt_home(tmp_path: Path, custom_planet: bool) -> None:
    home = tmp_path / "home"
    planet = _zt_planet() if custom_planet else None
    with zt.Node(zt.NodeOptions(store=str(home), planet=planet)) as node:
        address = node.address
        secret_string = node.identity.secret_string()
        planet_bytes = node.planet.to_bytes()
    if planet is not None:
        assert planet_bytes == planet.to_bytes()

    secret_file = home / "identity.secret"
    before = FileState.of(secret_file)
    # zt writes the identity files exactly as libzt does: no newline, secret readable by owner.
    assert before.data == secret_string.encode()
    assert before.mode == 0o600
    assert (home / "identity.public").read_bytes() == secret_string.rsplit(":", 1)[0].encode()
    assert id_pair_is_valid([before.data.decode()]) == [True]

    info = start_node_or_skip(home, roots=planet_bytes if custom_planet else None)
    assert info["node_id"] == address
    assert FileState.of(secret_file).data == before.data
    if custom_planet:
        assert (home / "roots").read_bytes() == planet_bytes


def test_zt_upgrades_libzt_default_planet_and_libzt_keeps_it(tmp_path: Path) -> None:
    """libzt's built-in planet is an older revision of Earth than zt's.  zt, like zerotier-one,
    runs with the newer signed revision and stores it; since the home's planet came from
    ``roots``, zt writes it there too (and as ``planet``).  libzt then keeps that newer
    revision rather than going back to its built-in one."""
    home = tmp_path / "home"
    info = start_node_or_skip(home)
    libzt_default = (home / "roots").read_bytes()
    secret_before = FileState.of(home / "identity.secret")
    ours = zt.default_planet().to_bytes()
    assert libzt_default != ours
    assert zt.World.from_bytes(libzt_default).accepts_update(zt.default_planet())

    with zt.Node(zt.NodeOptions(store=str(home))) as node:
        assert node.address == info["node_id"]
        assert node.planet.to_bytes() == ours
    assert FileState.of(home / "identity.secret") == secret_before
    assert (home / "roots").read_bytes() == ours
    assert (home / "planet").read_bytes() == ours

    again = start_node_or_skip(home)
    assert again["node_id"] == info["node_id"]
    assert (home / "roots").read_bytes() == ours
