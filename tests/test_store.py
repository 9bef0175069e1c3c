from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Optional

import pytest

import zt


class DictStore:
    """A custom store: any object with get/put/delete/list."""

    def __init__(self) -> None:
        self.data: dict[str, bytes] = {}
        self.calls: list[str] = []

    def get(self, key: str) -> Optional[bytes]:
        self.calls.append(f"get {key}")
        return self.data.get(key)

    def put(self, key: str, data: bytes) -> None:
        self.calls.append(f"put {key}")
        self.data[key] = bytes(data)

    def delete(self, key: str) -> None:
        self.data.pop(key, None)

    def list(self, prefix: str) -> list[str]:
        return [k for k in self.data if k.startswith(prefix)]


def test_file_store_layout_and_atomic_modes(tmp_path: Path) -> None:
    home = tmp_path / "home"
    with zt.Node(store=str(home)) as node:
        addr = node.address
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    secret = home / "identity.secret"
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    assert secret.read_text().startswith(addr + ":0:") and len(secret.read_text()) == 270
    assert (home / "identity.public").read_text() == zt.Identity.from_string(
        secret.read_text()
    ).public_string()
    assert (home / "planet").read_bytes() == zt.default_planet().to_bytes()
    assert not [p for p in home.iterdir() if p.name.startswith(".")], "no temp files left"


def test_file_store_api(tmp_path: Path) -> None:
    s = zt.FileStore(str(tmp_path / "s"))
    s.put("moons.d/0000000000000001.moon", b"m")
    s.put("identity.secret", b"x", secret=True)
    assert s.get("identity.secret") == b"x" and s.get("nope") is None
    assert s.list("moons.d/") == ["moons.d/0000000000000001.moon"]
    s.delete("identity.secret")
    s.delete("identity.secret")
    assert s.get("identity.secret") is None
    for bad in ("../escape", "/abs", "a//b", ""):
        with pytest.raises(zt.StoreError, match="invalid store key"):
            s.get(bad)
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(zt.StoreError):
        zt.FileStore(str(f))


@pytest.mark.parametrize(
    "damage",
    [
        lambda b: b[:100],
        lambda b: b"",
        lambda b: b"\xff\xfe garbage",
        lambda b: b.replace(b":0:", b":1:", 1),
    ],
)
def test_corrupt_identity_is_named_and_never_overwritten(tmp_path: Path, damage: object) -> None:
    home = tmp_path / "home"
    zt.Node(store=str(home)).start().close()
    secret = home / "identity.secret"
    broken = damage(secret.read_bytes())  # type: ignore[operator]
    secret.write_bytes(broken)
    node = zt.Node(store=str(home))
    with pytest.raises(zt.NodeFaultedError, match=r"identity\.secret"):
        node.start(timeout=30)
    assert node.state is zt.NodeState.FAULTED and "identity.secret" in (node.fault or "")
    assert secret.read_bytes() == broken
    node.close()


def test_corrupt_planet_and_moon_are_named(tmp_path: Path) -> None:
    home = tmp_path / "home"
    zt.Node(store=str(home)).start().close()
    (home / "planet").write_bytes(zt.default_planet().to_bytes()[:300])
    with pytest.raises(zt.NodeFaultedError, match="planet is corrupt"):
        zt.Node(store=str(home)).start()
    (home / "planet").unlink()
    (home / "moons.d").mkdir()
    (home / "moons.d" / "00000000000000aa.moon").write_bytes(b"\x7f\x00")
    with pytest.raises(zt.NodeFaultedError, match=r"00000000000000aa\.moon"):
        zt.Node(store=str(home)).start()


def test_missing_secret_with_public_present_refuses(tmp_path: Path) -> None:
    home = tmp_path / "home"
    zt.Node(store=str(home)).start().close()
    public = (home / "identity.public").read_bytes()
    (home / "identity.secret").unlink()
    with pytest.raises(zt.NodeFaultedError, match="refusing to generate"):
        zt.Node(store=str(home)).start()
    assert (home / "identity.public").read_bytes() == public
    assert not (home / "identity.secret").exists()


def test_libzt_roots_alias_is_read_and_kept_in_sync(tmp_path: Path) -> None:
    home = tmp_path / "home"
    key = zt.KeyPair.generate()
    root = zt.Identity.generate()
    v1 = zt.planet.make_planet([(root, ["203.0.113.1/9993"])], signing_key=key, timestamp=10)
    ident = zt.Identity.generate()
    home.mkdir()
    (home / "identity.secret").write_text(ident.secret_string())
    (home / "roots").write_bytes(v1.to_bytes())
    with zt.Node(store=str(home)) as node:
        assert node.address == ident.address
        assert node.planet == v1
        v2 = zt.planet.update_planet(v1, key)
        node.update_world(v2)
        assert node.planet == v2
    assert (home / "planet").read_bytes() == v2.to_bytes()
    assert (home / "roots").read_bytes() == v2.to_bytes()
    assert (home / "identity.public").read_text() == ident.public_string()


def test_memory_and_custom_stores() -> None:
    with zt.Node() as node:
        assert isinstance(node.store, zt.MemoryStore)
        assert node.store.get("identity.secret") is not None
    custom = DictStore()
    with zt.Node(store=custom) as node:
        addr = node.address
    assert custom.data["identity.secret"].decode().startswith(addr)
    assert custom.data["planet"] == zt.default_planet().to_bytes()
    with zt.Node(store=custom) as node:
        assert node.address == addr
    assert "put identity.secret" in custom.calls


def test_custom_store_errors_fault_the_node() -> None:
    class Failing(DictStore):
        def get(self, key: str) -> Optional[bytes]:
            raise OSError("disk on fire")

    with pytest.raises(zt.NodeFaultedError, match="disk on fire"):
        zt.Node(store=Failing()).start()
    with pytest.raises(TypeError, match="get, put, delete and list"):
        zt.Node(store=object())


def test_explicit_identity_must_match_store(tmp_path: Path) -> None:
    ident = zt.Identity.generate()
    home = tmp_path / "home"
    with zt.Node(store=str(home), identity=ident) as node:
        assert node.identity == ident
    with pytest.raises(zt.NodeFaultedError, match="refusing to replace"):
        zt.Node(store=str(home), identity=zt.Identity.generate()).start()
    assert os.path.exists(home / "identity.secret")


def test_a_store_serves_one_running_node(tmp_path: Path) -> None:
    """A second node on a store in use is refused (two nodes with one identity would fight over
    peers and configs); once the first stops, the store is free again."""
    home = tmp_path / "home"
    with zt.Node(store=str(home), port=0) as first:
        second = zt.Node(store=str(home), port=0)
        with pytest.raises(
            zt.NodeFaultedError, match=f"in use by another running node \\(process {os.getpid()}\\)"
        ):
            second.start()
        assert first.online or first.address  # the first runs on, unharmed
    with second:
        assert second.address == first.address
    memory = zt.MemoryStore()
    with (
        zt.Node(store=memory, port=0),
        pytest.raises(zt.NodeFaultedError, match="memory store: in use"),
    ):
        zt.Node(store=memory, port=0).start()


def test_a_store_held_by_another_process(tmp_path: Path) -> None:
    """The claim holds across processes and ends with the holder, even when it is killed."""
    home = tmp_path / "home"
    code = (
        "import sys, zt\n"
        f"n = zt.Node(store={str(home)!r}, port=0).start()\n"
        "print('up', flush=True)\n"
        "sys.stdin.read()\n"
    )
    with subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    ) as holder:
        try:
            assert holder.stdout is not None
            assert holder.stdout.readline().strip() == "up"
            with pytest.raises(zt.NodeFaultedError, match=f"process {holder.pid}"):
                zt.Node(store=str(home), port=0).start()
        finally:
            holder.kill()
            holder.wait(timeout=10)
    with zt.Node(store=str(home), port=0) as node:  # kill -9 left nothing behind
        assert node.address
