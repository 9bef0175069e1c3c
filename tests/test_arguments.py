"""Bad arguments and damaged stores get clear errors: no hang, no abort, no silent fallback
(issue 15, items 5-7)."""

from __future__ import annotations

import decimal
import math
import os
import sqlite3
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

import zt
from zt.errors import NodeStateError

NWID = "8056c2e21c000001"

# What socket.settimeout raises for each bad value, checked against the stdlib itself below.
BAD_TIMEOUTS: list[tuple[Any, type[BaseException]]] = [
    ("0.2", TypeError),
    (decimal.Decimal("0.5"), TypeError),
    (math.nan, ValueError),
    (-1, ValueError),
    (math.inf, OverflowError),
    (2**70, OverflowError),
]


@pytest.mark.parametrize(("value", "exc"), BAD_TIMEOUTS)
def test_socket_timeouts_are_checked_as_the_stdlib_checks_them(value: Any, exc: type) -> None:
    import socket as std

    with std.socket() as s, pytest.raises(exc):
        s.settimeout(value)  # the reference: the stdlib raises the same
    n = zt.Node()
    try:
        zs = n.socket()
        with pytest.raises(exc):
            zs.settimeout(value)
        zs.close()
        with pytest.raises(exc):
            n.create_connection(("198.18.0.1", 80), timeout=value)
    finally:
        n.close()


def test_good_timeouts_still_pass() -> None:
    n = zt.Node()
    try:
        s = n.socket()
        for value, want in [(None, None), (0, 0.0), (True, 1.0), (0.25, 0.25), (3, 3.0)]:
            s.settimeout(value)
            assert s.gettimeout() == want
        s.close()
    finally:
        n.close()


@pytest.mark.parametrize(("value", "exc"), BAD_TIMEOUTS)
def test_node_waits_check_their_timeouts(value: Any, exc: type) -> None:
    n = zt.Node().start()
    try:
        with pytest.raises(exc):
            n.wait_online(timeout=value)
        with pytest.raises(exc):
            n.wait_network(NWID, timeout=value)
        with pytest.raises(exc):
            n.wait_running(timeout=value)
        if value is not None:
            with pytest.raises(exc):
                n.ping(NWID, "198.18.0.1", timeout=value)
    finally:
        n.close()


def test_waits_on_a_node_that_is_not_running_raise_at_once() -> None:
    n = zt.Node()
    t0 = time.monotonic()
    with pytest.raises(NodeStateError, match="created"):
        n.wait_online()
    n.start()
    n.join(NWID)
    n.stop()
    with pytest.raises(NodeStateError, match="stopped"):
        n.wait_network(NWID)
    with pytest.raises(NodeStateError, match="stopped"):
        n.wait_online()
    assert time.monotonic() - t0 < 10
    n.close()


def test_a_wait_ends_when_the_node_stops_meanwhile() -> None:
    import threading

    n = zt.Node().start()
    n.join(NWID)
    caught: list[BaseException] = []

    def wait() -> None:
        try:
            n.wait_network(NWID)
        except BaseException as e:  # recorded for the assertion
            caught.append(e)

    t = threading.Thread(target=wait)
    t.start()
    time.sleep(0.2)
    n.stop()
    t.join(10)
    assert not t.is_alive(), "wait_network still waiting on a stopped node"
    assert caught and isinstance(caught[0], NodeStateError), caught
    n.close()


def test_an_empty_store_path_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match="empty path"):
        zt.Node(store="")
    with pytest.raises(OSError, match="must be named"):
        zt.FileStore("")
    assert list(tmp_path.iterdir()) == [], "nothing written into the working directory"


def _run(code: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_huge_keygen_thread_counts_are_capped() -> None:
    # Before: 2**40 threads were started one by one (it never returned).
    r = _run(
        """
        import zt
        zt.Identity.generate(threads=2**40).validate()
        n = zt.Node(keygen_threads=2**40).start()
        n.close()
        print("ok")
        """,
        timeout=60,
    )
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr


@pytest.mark.parametrize("room_mb", [2, 4, 6, 8, 10, 12, 16, 24])
def test_keygen_survives_threads_that_cannot_start(room_mb: int) -> None:
    # Under an address-space limit with room for few or no more threads, the workers that
    # would not fit are not started and the generation goes on without them. Before: a failed
    # spawn aborted the process (rc 134), and a worker that started with no room left for its
    # thread-local data made glibc abort it (rc -6), depending on how much room was left.
    r = _run(
        f"""
        import resource, zt
        with open("/proc/self/status") as f:
            vm = next(int(l.split()[1]) for l in f if l.startswith("VmSize:")) * 1024
        resource.setrlimit(resource.RLIMIT_AS, (vm + ({room_mb} << 20), resource.RLIM_INFINITY))
        ok = 0
        for _ in range(3):
            try:
                zt.Identity.generate(threads=64).validate()
                ok += 1
            except MemoryError:
                pass
        print("ok", ok)
        """
    )
    assert r.returncode == 0, (r.returncode, r.stderr[-2000:])
    assert r.stdout.startswith("ok"), r.stdout


def _controller_node(home: Path) -> zt.Node:
    return zt.Node(store=str(home), controller=True)


def test_an_empty_controller_db_is_refused(tmp_path: Path) -> None:
    home = tmp_path / "ctl"
    home.mkdir()
    (home / "controller.db").write_bytes(b"")
    n = _controller_node(home)
    with pytest.raises(zt.errors.NodeFaultedError, match=r"controller\.db.*empty"):
        n.start(timeout=30)
    n.close()
    assert (home / "controller.db").stat().st_size == 0, "the file is left as it was"


def test_a_damaged_controller_db_is_refused(tmp_path: Path) -> None:
    home = tmp_path / "ctl"
    _controller_node(home).start(timeout=30).close()
    db = home / "controller.db"
    c = sqlite3.connect(db)
    with c:
        c.executemany(
            "INSERT INTO network (id, record) VALUES (?, ?)",
            [(i, '{"name": "%s"}' % ("x" * 2000)) for i in range(1, 41)],
        )
    c.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    c.close()
    data = bytearray(db.read_bytes())
    assert len(data) > 16384
    data[8192:16384] = b"\xa5" * 8192  # page 3 onwards: found only at query time before
    db.write_bytes(bytes(data))
    n = _controller_node(home)
    with pytest.raises(zt.errors.NodeFaultedError, match=r"controller\.db"):
        n.start(timeout=30)
    n.close()


@pytest.mark.skipif(os.name != "posix", reason="file modes are POSIX")
def test_controller_db_is_private(tmp_path: Path) -> None:
    home = tmp_path / "ctl"
    n = _controller_node(home).start(timeout=30)
    assert n.controller is not None
    n.controller.create_network(name="x")
    n.close()
    mode = stat.S_IMODE((home / "controller.db").stat().st_mode)
    assert mode == 0o600, oct(mode)
