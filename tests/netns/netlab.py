"""A small private network of Linux network namespaces for tests that need real UDP paths.

``NetLab(n)`` makes one "switch" namespace holding a Linux bridge and ``n`` host namespaces.
Each host has a veth ``eth0`` whose other end is a port of the bridge, ``lo`` up, and only
documentation addresses: ``203.0.113.(10+i)/24`` and ``2001:db8::(10+i)/64``.  No host has a
default route, and nothing in the lab is connected to the namespace the tests run in: the veth
pairs are created inside the switch namespace with their host end placed straight into the host
namespace, so the caller's own interfaces and routes are never touched.

Every process started through the lab gets ``ZT_ALLOWED_DESTINATIONS`` set to the lab's ranges,
so a zt node refuses to send anywhere else.  Leaving the ``with`` block (also on failure) ends
every process the lab started, then every other process still inside its namespaces (by pid),
then deletes the namespaces.

Needs root and ``ip`` (iproute2) with ``ip netns``: see :func:`netlab_available`.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from typing import IO, Any, Optional

from tests.ci import environment_lacks

__all__ = [
    "ALLOWED_DESTINATIONS",
    "NetLab",
    "NetLabError",
    "netlab_available",
    "require_netlab",
]


IPV4_NET = "203.0.113.0/24"  # TEST-NET-3 (RFC 5737)
IPV6_NET = "2001:db8::/32"  # documentation prefix (RFC 3849)
ALLOWED_DESTINATIONS = f"{IPV4_NET},{IPV6_NET}"

MAX_HOSTS = 200  # 203.0.113.10 .. 203.0.113.209
_IP_TIMEOUT_S = 30.0
_TERM_GRACE_S = 10.0

_lab_counter = itertools.count()


class NetLabError(RuntimeError):
    """Setting up or driving the lab failed."""


def _ip(*args: str, timeout: float = _IP_TIMEOUT_S) -> str:
    """Runs ``ip ARGS``; returns stdout, raises :class:`NetLabError` on failure."""
    cmd = ["ip", *args]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise NetLabError(f"`{' '.join(cmd)}` failed: {exc}") from exc
    if proc.returncode != 0:
        raise NetLabError(
            f"`{' '.join(cmd)}` exited {proc.returncode}: {proc.stderr.strip() or proc.stdout}"
        )
    return proc.stdout


_availability: Optional[tuple[bool, str]] = None


def netlab_available() -> tuple[bool, str]:
    """(True, "") when a lab can be built here, else (False, why not).  Memoised per process.

    Probes for real: creates a throw-away namespace with a bridge and a veth pair, then deletes
    it again.
    """
    global _availability
    if _availability is None:
        _availability = _probe()
    return _availability


def _probe() -> tuple[bool, str]:
    if not sys.platform.startswith("linux"):
        return False, f"network namespaces need Linux (this is {sys.platform})"
    if os.geteuid() != 0:
        return False, "creating network namespaces needs root"
    if shutil.which("ip") is None:
        return False, "`ip` (iproute2) not found"
    name = f"ztlprobe{os.getpid()}"
    try:
        _ip("netns", "list")
        _ip("netns", "add", name)
    except NetLabError as exc:
        return False, f"`ip netns` unavailable: {exc}"
    try:
        _ip("-n", name, "link", "add", "br0", "type", "bridge")
        _ip("-n", name, "link", "add", "a0", "type", "veth", "peer", "name", "b0")
        _ip("-n", name, "link", "set", "a0", "master", "br0")
    except NetLabError as exc:
        return False, f"cannot make a bridge or veth pair in a namespace: {exc}"
    finally:
        with contextlib.suppress(NetLabError):
            _ip("netns", "del", name)
    return True, ""


def require_netlab() -> None:
    """Skips the calling test (with the reason) when no lab can be built; fails it on CI."""
    ok, reason = netlab_available()
    if ok:
        return
    environment_lacks(f"no network lab can be built (it needs root and `ip netns`): {reason}")


class NetLab:
    """A bridge in a private namespace and ``n_hosts`` host namespaces attached to it.

    Use it as a context manager::

        with NetLab(2) as lab:
            proc = lab.popen(0, [sys.executable, "-m", "zt", "run", ...])
            lab.run(1, ["ip", "-6", "addr"])
    """

    def __init__(self, n_hosts: int) -> None:
        if not 1 <= n_hosts <= MAX_HOSTS:
            raise ValueError(f"n_hosts must be 1..{MAX_HOSTS}")
        self.n_hosts = n_hosts
        tag = f"ztl{os.getpid()}x{next(_lab_counter)}"
        self.switch = f"{tag}s"
        self.hosts = [f"{tag}h{i}" for i in range(n_hosts)]
        self._created: list[str] = []
        self._procs: list[subprocess.Popen[Any]] = []
        self._up = False

    # -- lifetime -------------------------------------------------------------------------

    def __enter__(self) -> NetLab:
        try:
            self._build()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _add_netns(self, name: str) -> None:
        _ip("netns", "add", name)
        self._created.append(name)
        _ip("-n", name, "link", "set", "lo", "up")

    def _build(self) -> None:
        sw = self.switch
        self._add_netns(sw)
        # Plain learning bridge: no STP (ports forward at once), no multicast snooping (NDP
        # and other multicast are simply flooded).
        _ip("-n", sw, "link", "add", "br0", "type", "bridge", "stp_state", "0")
        _ip("-n", sw, "link", "set", "br0", "type", "bridge", "mcast_snooping", "0")
        _ip("-n", sw, "link", "set", "br0", "up")
        for i, host in enumerate(self.hosts):
            self._add_netns(host)
            # Made inside the switch namespace, the host end moved straight into the host's.
            port = f"p{i}"
            _ip("-n", sw, "link", "add", port, "type", "veth", "peer", "name", "eth0",
                "netns", host)  # fmt: skip
            _ip("-n", sw, "link", "set", port, "master", "br0")
            _ip("-n", sw, "link", "set", port, "up")
            _ip("-n", host, "addr", "add", f"{self.host_ip4(i)}/24", "dev", "eth0")
            _ip("-n", host, "-6", "addr", "add", f"{self.host_ip6(i)}/64", "dev", "eth0",
                "nodad")  # fmt: skip
            _ip("-n", host, "link", "set", "eth0", "up")
        self._check()
        self._up = True

    def _check(self) -> None:
        """Every host has its addresses, no default route, and only ``lo`` and ``eth0``."""
        for i, host in enumerate(self.hosts):
            links = json.loads(_ip("-n", host, "-j", "link", "show"))
            names = sorted(str(link["ifname"]) for link in links)
            if names != ["eth0", "lo"]:
                raise NetLabError(f"{host} has interfaces {names}, expected eth0 and lo")
            for family in ("-4", "-6"):
                default = _ip("-n", host, family, "route", "show", "default").strip()
                if default:
                    raise NetLabError(f"{host} has a default route: {default}")
            addrs = _ip("-n", host, "addr", "show", "dev", "eth0")
            for want in (f"{self.host_ip4(i)}/24", f"{self.host_ip6(i)}/64"):
                if want not in addrs:
                    raise NetLabError(f"{host} eth0 lacks {want}:\n{addrs}")
        # Wait (briefly) for the carriers: a veth is only up once both of its ends are.
        deadline = time.monotonic() + 10.0
        while True:
            states = [
                json.loads(_ip("-n", host, "-j", "link", "show", "eth0"))[0].get("operstate")
                for host in self.hosts
            ]
            if all(state == "UP" for state in states):
                return
            if time.monotonic() > deadline:
                raise NetLabError(f"host links not up after 10 s: {states}")
            time.sleep(0.05)

    def close(self) -> None:
        """Ends the lab's processes, then deletes its namespaces.  Safe to call twice."""
        problems: list[str] = []
        for proc in self._procs:
            _terminate(proc)
        self._procs.clear()
        # Whatever else still runs inside the lab (a worker started with `ip netns exec` by
        # someone else, a grandchild): those pids belong to namespaces only this lab made.
        for name in reversed(self._created):
            for pid in self._netns_pids(name):
                _kill_pid(pid)
        for name in reversed(self._created):
            try:
                _ip("netns", "del", name)
            except NetLabError as exc:
                problems.append(str(exc))
        self._created.clear()
        self._up = False
        if problems:
            raise NetLabError("cleanup failed: " + "; ".join(problems))

    @staticmethod
    def _netns_pids(name: str) -> list[int]:
        try:
            out = _ip("netns", "pids", name)
        except NetLabError:
            return []
        own = os.getpid()
        return [int(tok) for tok in out.split() if tok.isdigit() and int(tok) != own]

    # -- addresses ------------------------------------------------------------------------

    def _index(self, i: int) -> int:
        if not 0 <= i < self.n_hosts:
            raise IndexError(f"host {i} not in 0..{self.n_hosts - 1}")
        return i

    def host_ip4(self, i: int) -> str:
        """IPv4 address of host ``i`` (no prefix length)."""
        return f"203.0.113.{10 + self._index(i)}"

    def host_ip6(self, i: int) -> str:
        """IPv6 address of host ``i`` (no prefix length)."""
        return f"2001:db8::{10 + self._index(i)}"

    def netns(self, i: int) -> str:
        """Name of host ``i``'s namespace (for ``ip netns exec``)."""
        return self.hosts[self._index(i)]

    # -- processes ------------------------------------------------------------------------

    def _argv(self, i: int, argv: Sequence[str]) -> list[str]:
        if not self._up:
            raise NetLabError("the lab is not set up (use it as a context manager)")
        if not argv:
            raise ValueError("empty argv")
        # `ip netns exec` execs the program itself: the Popen pid is the program's pid.
        return ["ip", "netns", "exec", self.netns(i), *[str(a) for a in argv]]

    @staticmethod
    def _env(env: Optional[Mapping[str, str]]) -> dict[str, str]:
        merged = dict(os.environ)
        if env:
            merged.update(env)
        # Whatever the caller says: a zt node in the lab may only send inside the lab.
        merged["ZT_ALLOWED_DESTINATIONS"] = ALLOWED_DESTINATIONS
        return merged

    def popen(
        self,
        i: int,
        argv: Sequence[str],
        env: Optional[Mapping[str, str]] = None,
        **kw: Any,
    ) -> subprocess.Popen[Any]:
        """Starts ``argv`` in host ``i``; the lab ends it on close.

        ``env`` is added to (not substituted for) this process's environment;
        ``ZT_ALLOWED_DESTINATIONS`` is always the lab's.  Other keywords go to ``Popen``.
        """
        proc: subprocess.Popen[Any] = subprocess.Popen(
            self._argv(i, argv), env=self._env(env), **kw
        )
        self._procs.append(proc)
        return proc

    def run(
        self,
        i: int,
        argv: Sequence[str],
        env: Optional[Mapping[str, str]] = None,
        *,
        timeout: float = 60.0,
        check: bool = True,
        input: Optional[str] = None,
    ) -> subprocess.CompletedProcess[str]:
        """Runs ``argv`` in host ``i`` to completion (text mode, output captured)."""
        proc = subprocess.run(
            self._argv(i, argv),
            env=self._env(env),
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and proc.returncode != 0:
            raise NetLabError(
                f"{list(argv)} in {self.netns(i)} exited {proc.returncode}: {proc.stderr.strip()}"
            )
        return proc

    def link_stats(self, i: int) -> dict[str, int]:
        """Counters of host ``i``'s ``eth0`` (``rx_packets``, ``tx_packets``, bytes, ...)."""
        info = json.loads(_ip("-n", self.netns(i), "-j", "-s", "link", "show", "eth0"))[0]
        stats = info["stats64"]
        return {
            f"{direction}_{key}": int(value)
            for direction in ("rx", "tx")
            for key, value in stats[direction].items()
        }


def _terminate(proc: subprocess.Popen[Any]) -> None:
    if proc.poll() is None:
        try:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=_TERM_GRACE_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=_TERM_GRACE_S)
        except ProcessLookupError:
            pass
    streams: list[Optional[IO[Any]]] = [proc.stdin, proc.stdout, proc.stderr]
    for stream in streams:
        if stream is not None:
            with contextlib.suppress(OSError):
                stream.close()


def _kill_pid(pid: int) -> None:
    """SIGTERM, then SIGKILL after a grace period, a process that is not our child."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + _TERM_GRACE_S
    while time.monotonic() < deadline:
        if not _alive(pid):
            return
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as handle:
            state = handle.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"
