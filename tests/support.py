"""Helpers shared by the test modules (none of which imports another test module): waiting,
free ports, a node's local HTTP API port and token, a private planet on loopback and options for
nodes under it, a ``zt run`` process, and the loopback lab with the network the tests use."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import zt
from zt.planet import make_planet

free_udp_port = zt.lab.unused_udp_port


@contextmanager
def turn(directory: Path, alone: bool) -> Iterator[None]:
    """A test's turn among the processes that share ``directory`` (pytest-xdist's workers):
    ``alone`` waits until no other test runs and keeps the others out until it ends; the rest
    run side by side. Two ``flock`` files: one taken alone waits on the gate, which new comers
    must pass, so a stream of others cannot starve it. (POSIX only: imported here.)"""
    import fcntl

    mode = fcntl.LOCK_EX if alone else fcntl.LOCK_SH
    with open(directory / "turn.gate", "a+b") as gate, open(directory / "turn.run", "a+b") as run:
        fcntl.flock(gate, mode)
        try:
            fcntl.flock(run, mode)
        finally:
            if not alone:
                fcntl.flock(gate, fcntl.LOCK_UN)
        try:
            yield
        finally:
            fcntl.flock(run, fcntl.LOCK_UN)
            if alone:
                fcntl.flock(gate, fcntl.LOCK_UN)


# ZeroTier's self-test identity: a known answer for the memory-hard hash and address.
KNOWN_GOOD = (
    "8e4df28b72:0:ac3d46abe0c21f3cfe7a6c8d6a85cfcffcb82fbd55af6a4d6350657c68200843fa2e16f9418bbd"
    "9702cae365f2af5fb4c420908b803a681d4daef6114d78a2d7:bd8dd6e4ce7022d2f812797a80c6ee8ad180dc4eb"
    "f301dec8b06d1be08832bddd63a2f1cfa7b2c504474c75bdc8898ba476ef92e8e2d0509f8441985171ff16e"
)

# The lab's network with rfc4193 addresses too.
NETWORK = {
    **zt.lab.DEFAULT_NETWORK,
    "name": "loopnet",
    "v6AssignMode": {"rfc4193": True, "6plane": False, "zt": False},
}


class Lab(zt.lab.Lab):
    """The public loopback lab (:mod:`zt.lab`) with the names these tests use: ``tmp`` (its
    home) and ``ctl`` (the controller's node)."""

    def __init__(self, tmp: Path) -> None:
        super().__init__(tmp)
        self.tmp = tmp
        self.ctl = self.controller_node


def wait_until(cond: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def api_port(node: zt.Node) -> int:
    """The port of ``node``'s local HTTP API (the node was started with one)."""
    assert node.api_port is not None, "the node serves no local HTTP API"
    return node.api_port


def api_token(home: Path) -> str:
    """The local HTTP API's token of the node (or ``zt run``) whose home is ``home``."""
    return (home / "authtoken.secret").read_text().strip()


def free_tcp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def loopback_planet(root_id: zt.Identity) -> tuple[zt.World, int]:
    """A one-root planet whose root ``root_id`` listens on a free 127.0.0.1 UDP port (returned
    too)."""
    port = free_udp_port()
    planet = make_planet([(root_id, [f"127.0.0.1/{port}"])], signing_key=zt.KeyPair.generate())
    return planet, port


def options(planet: zt.World, **fields: Any) -> zt.NodeOptions:
    """Options of a node under ``planet`` on loopback (IPv4 only); ``fields`` sets the others
    (``identity``, ``port``, ``store``, ``controller``, ``api_port``, ...)."""
    return zt.NodeOptions(planet=planet, allow_loopback=True, ipv6=False, **fields)


def zt_run(
    home: Path, port: int, planet_file: Path, *args: str, env: Optional[dict[str, str]] = None
) -> subprocess.Popen[str]:
    """``python -m zt run`` on loopback (IPv4 only) with ``home``, UDP ``port`` and the planet
    in ``planet_file``, plus ``args``; its stdout and stderr are pipes (text)."""
    argv = [
        sys.executable, "-m", "zt", "run", "--home", str(home), "--port", str(port),
        "--planet", str(planet_file), "--allow-loopback", "--no-ipv6", *args,
    ]  # fmt: skip
    return subprocess.Popen(
        argv,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


@dataclass
class RootHome:
    """A new root identity, the one-root planet naming it on loopback UDP ``port`` (also in
    ``planet_file``), and a home holding the root's identity for ``zt run``."""

    identity: zt.Identity
    planet: zt.World
    port: int
    planet_file: Path
    home: Path

    def run(self, *args: str, env: Optional[dict[str, str]] = None) -> subprocess.Popen[str]:
        """``zt run`` as that root (see :func:`zt_run`)."""
        return zt_run(self.home, self.port, self.planet_file, *args, env=env)


def root_home(tmp: Path) -> RootHome:
    """A :class:`RootHome` under ``tmp`` (files ``planet`` and ``root/``)."""
    identity = zt.Identity.generate()
    planet, port = loopback_planet(identity)
    planet_file = tmp / "planet"
    planet_file.write_bytes(planet.to_bytes())
    home = tmp / "root"
    home.mkdir()
    (home / "identity.secret").write_text(identity.secret_string())
    return RootHome(identity, planet, port, planet_file, home)
