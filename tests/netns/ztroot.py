"""A zt root for the namespace labs (see :mod:`tests.netns.netlab`): a one-root planet naming
a root on one of the lab's hosts, ``zt run`` there as that root (or as root and controller, with
its local JSON API), and libzt nodes whose roots are that planet."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Callable, Optional

import pytest

import zt
from tests.ci import environment_lacks
from tests.interop.libzt import LibztUnavailable, NetnsNodeResult, run_node_in_netns
from tests.netns.netlab import NetLab

ROOT_PORT = 9993
LIBZT_PORT = 9994
ONLINE_TIMEOUT_S = 30.0
ROOT_START_TIMEOUT_S = 60.0
ROOT_STOP_TIMEOUT_S = 10.0


@dataclass
class RootSetup:
    """A root identity, its home directory and the one-root planet naming it."""

    identity: zt.Identity
    home: Path
    planet_file: Path
    planet: bytes


def make_root(tmp_path: Path, lab: NetLab, host: int = 0) -> RootSetup:
    identity = zt.Identity.generate()
    home = tmp_path / "root-home"
    home.mkdir()
    (home / "identity.secret").write_text(identity.secret_string())
    endpoints = [f"{lab.host_ip4(host)}/{ROOT_PORT}", f"{lab.host_ip6(host)}/{ROOT_PORT}"]
    world = zt.planet.make_planet([(identity, endpoints)], signing_key=zt.KeyPair.generate())
    planet = world.to_bytes()
    planet_file = tmp_path / "planet"
    planet_file.write_bytes(planet)
    return RootSetup(identity=identity, home=home, planet_file=planet_file, planet=planet)


@dataclass
class ZtRoot:
    """A running ``zt run`` process; its stdout lines are collected by a thread."""

    proc: subprocess.Popen[str]
    log: Path
    lines: list[str] = field(default_factory=list)
    banner: threading.Event = field(default_factory=threading.Event)

    def _read(self) -> None:
        stdout: Optional[IO[str]] = self.proc.stdout
        if stdout is None:
            return
        with contextlib.suppress(ValueError, OSError):  # closed by the lab's cleanup
            for line in stdout:
                self.lines.append(line.rstrip("\n"))
                if line.startswith(("root ", "node ")):
                    self.banner.set()

    def describe(self) -> str:
        log = self.log.read_text(errors="replace") if self.log.is_file() else ""
        tail = "\n".join(log.strip().splitlines()[-40:])
        return (
            f"zt run exit={self.proc.poll()} stdout={self.lines!r}\n--- zt run stderr ---\n{tail}"
        )

    def stop(self, timeout: float) -> int:
        """SIGTERM, then the exit code (raises TimeoutExpired after ``timeout``)."""
        self.proc.terminate()
        return self.proc.wait(timeout=timeout)


@contextlib.contextmanager
def _zt_run(
    lab: NetLab,
    host: int,
    setup: RootSetup,
    log: Path,
    args: list[str],
    started: Callable[[ZtRoot], bool],
    what: str,
) -> Iterator[ZtRoot]:
    """Runs ``zt run`` (plus ``args``) as the root on ``host`` until ``started`` says it is up,
    and checks its ``root ... listening`` line; stops it on leaving."""
    argv = [
        sys.executable, "-m", "zt", "run", "--home", str(setup.home), "--port", str(ROOT_PORT),
        "--planet", str(setup.planet_file), *args,
    ]  # fmt: skip
    with open(log, "w") as err:
        proc = lab.popen(host, argv, stdout=subprocess.PIPE, stderr=err, text=True)
    root = ZtRoot(proc=proc, log=log)
    reader = threading.Thread(target=root._read, name="zt-run-stdout", daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + ROOT_START_TIMEOUT_S
        while not started(root):
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"{what} did not start:\n{root.describe()}")
        yield root
    finally:
        if proc.poll() is None:
            proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=ROOT_STOP_TIMEOUT_S)
        reader.join(timeout=5)


def _listening(setup: RootSetup) -> str:
    return f"root {setup.identity.address} listening on UDP port {ROOT_PORT}"


@contextlib.contextmanager
def zt_root(lab: NetLab, host: int, setup: RootSetup, log: Path) -> Iterator[ZtRoot]:
    """Runs ``zt run`` as the root on ``host``; waits for its ``root ... listening`` line."""
    with _zt_run(lab, host, setup, log, [], lambda r: r.banner.wait(0.1), "zt root") as root:
        banner = next(line for line in root.lines if line.startswith(("root ", "node ")))
        assert banner == _listening(setup), root.describe()
        yield root


@contextlib.contextmanager
def zt_controller(lab: NetLab, host: int, setup: RootSetup, log: Path) -> Iterator[ZtRoot]:
    """Runs ``zt run --controller`` as the root on ``host``; waits until its API is served."""
    api_line = f"api on 127.0.0.1:{ROOT_PORT}"

    def serving(root: ZtRoot) -> bool:
        if api_line in root.lines:
            return True
        time.sleep(0.05)
        return False

    args = ["--controller", "-v"]
    with _zt_run(lab, host, setup, log, args, serving, "zt controller") as root:
        assert _listening(setup) in root.lines, root.describe()
        yield root


def libzt_node(lab: NetLab, host: int, storage: Path, roots: bytes, **kw: Any) -> NetnsNodeResult:
    storage.mkdir(parents=True, exist_ok=True)
    try:
        return run_node_in_netns(
            lab.netns(host),
            storage,
            roots,
            port=LIBZT_PORT,
            online_timeout_s=ONLINE_TIMEOUT_S,
            **kw,
        )
    except LibztUnavailable as exc:
        environment_lacks(f"a libzt node cannot start: {exc.reason}")


# Runs inside host 0: one call of the controller's local API (never through a proxy).
_API_SCRIPT = """\
import json, sys, urllib.error, urllib.request
home, port, method, path, body = sys.argv[1:6]
with open(home + "/authtoken.secret") as f:
    token = f.read().strip()
req = urllib.request.Request(
    f"http://127.0.0.1:{port}{path}", method=method, data=body.encode() if body else None,
    headers={"X-ZT1-Auth": token, "Content-Type": "application/json"})
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
try:
    with opener.open(req, timeout=10) as r:
        status, text = r.status, r.read().decode()
except urllib.error.HTTPError as e:
    status, text = e.code, e.read().decode()
print(json.dumps({"status": status, "text": text}))
"""


def api(
    lab: NetLab, home: Path, method: str, path: str, body: Optional[Any] = None
) -> tuple[int, Any]:
    """One call of the local JSON API of the ``zt run`` in host 0: (HTTP status, JSON body)."""
    argv = [sys.executable, "-I", "-c", _API_SCRIPT, str(home), str(ROOT_PORT), method, path,
            "" if body is None else json.dumps(body)]  # fmt: skip
    out = json.loads(lab.run(0, argv, timeout=30).stdout)
    text = str(out["text"])
    return int(out["status"]), json.loads(text) if text.strip() else None
