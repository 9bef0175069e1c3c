"""A namespace lab of socket agents on one network hosted by a zt root + controller.

Host 0 runs ``zt run --controller`` (the root of a one-root planet and the network's
controller); every other host runs one agent, a zt node (``ztagent.py``) or a libzt 1.8.4
node (the ``agent`` role of ``tests/interop/libzt.py``), all members of one public network with
an IPv4 pool and rfc4193 IPv6 addresses.  The driver talks to the agents through
:class:`agentproto.Agent` handles (command files in a shared exchange directory).  Used by
``test_sockets_interop.py`` and ``benches/py/bench_tcp.py``.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Optional

import zt.lab
from tests.interop.libzt import NetnsNodeResult
from tests.netns.agentproto import Agent, AgentError
from tests.netns.netlab import NetLab
from tests.netns.ztroot import RootSetup, ZtRoot, api, libzt_node, make_root, zt_controller

AGENT_SCRIPT = str(Path(__file__).with_name("ztagent.py"))
# The lab's network (zt.lab.DEFAULT_NETWORK: its IPv4 assignment and 198.18.0.0/15 route), but
# public (the agents join unauthorized), with rfc4193 addresses too and a pool of its own.
NETWORK: dict[str, Any] = {
    **zt.lab.DEFAULT_NETWORK,
    "name": "sockets",
    "private": False,
    "v6AssignMode": {"rfc4193": True, "6plane": False, "zt": False},
    "ipAssignmentPools": [{"ipRangeStart": "198.18.2.10", "ipRangeEnd": "198.18.2.250"}],
}
READY_TIMEOUT_S = 90.0
STOP_TIMEOUT_S = 30.0


class SocketLab:
    """``kinds`` names the agents of hosts 1, 2, …: ``"zt"`` or ``"libzt"``.  Agents are
    named ``z1``/``l1``-style (kind initial + host index)."""

    def __init__(self, tmp: Path, kinds: Sequence[str], timeout_s: float = 900.0) -> None:
        self.tmp = tmp
        self.kinds = list(kinds)
        self.timeout_s = timeout_s
        self.exchange = tmp / "exchange"
        self.exchange.mkdir(parents=True, exist_ok=True)
        self.agents: dict[str, Agent] = {}
        self.hosts: dict[str, int] = {}
        self.procs: dict[str, subprocess.Popen[str]] = {}
        self.workers: dict[str, Future[NetnsNodeResult]] = {}
        self.killed: set[str] = set()
        self.reports: dict[str, Any] = {}
        self.warm_up: dict[str, float] = {}  # seconds until each libzt agent first answered
        self.nwid = ""
        self.lab: Optional[NetLab] = None
        self.root: Optional[ZtRoot] = None
        self.setup: Optional[RootSetup] = None

    @staticmethod
    def name_of(kind: str, host: int) -> str:
        return f"{kind[0]}{host}"

    @contextlib.contextmanager
    def running(self) -> Iterator[SocketLab]:
        with (
            NetLab(len(self.kinds) + 1) as lab,
            ThreadPoolExecutor(max_workers=max(1, self.kinds.count("libzt"))) as pool,
        ):
            self.lab = lab
            self.setup = make_root(self.tmp, lab)
            with zt_controller(lab, 0, self.setup, self.tmp / "root.log") as root:
                self.root = root
                try:
                    self._start(lab, pool)
                    yield self
                finally:
                    self._stop()

    def _start(self, lab: NetLab, pool: ThreadPoolExecutor) -> None:
        assert self.setup is not None
        controller = self.setup.identity.address
        status, created = api(
            lab, self.setup.home, "POST", f"/controller/network/{controller}______", NETWORK
        )
        if status != 200:
            raise AgentError(f"creating the network answered {status}: {created}")
        self.nwid = str(created["id"])
        for host, kind in enumerate(self.kinds, start=1):
            name = self.name_of(kind, host)
            self.hosts[name] = host
            if kind == "zt":
                home = self.tmp / f"home-{name}"
                home.mkdir()
                argv = [sys.executable, AGENT_SCRIPT, str(self.setup.planet_file), str(home),
                        str(self.exchange), self.nwid, name, str(self.timeout_s)]  # fmt: skip
                with open(self.tmp / f"{name}.log", "w") as err:
                    self.procs[name] = lab.popen(
                        host, argv, stdout=subprocess.PIPE, stderr=err, text=True
                    )
            elif kind == "libzt":
                managed = {
                    "role": "agent",
                    "name": name,
                    "nwid": self.nwid,
                    "exchange_dir": str(self.exchange),
                    "timeout_s": self.timeout_s,
                }
                self.workers[name] = pool.submit(
                    libzt_node, lab, host, self.tmp / f"libzt-{name}", self.setup.planet,
                    managed=managed,
                )  # fmt: skip
            else:
                raise ValueError(f"unknown agent kind {kind!r}")
            self.agents[name] = Agent(self.exchange, name, self._checker(name))
        for agent in self.agents.values():
            agent.wait_ready(READY_TIMEOUT_S)
        self._warm_up()

    def _warm_up(self) -> None:
        """Waits until every libzt agent answers over IPv4 and IPv6.

        libzt 1.8.4 announces the multicast groups of a new address (its ARP group) only on
        its next periodic scan, up to ~10 s after it reports the address: until then nobody
        can resolve its IPv4 address.  Tests measure steady state, so they start after this.
        """
        prober = next((a for n, a in self.agents.items() if n.startswith("z")), None)
        if prober is None:
            return
        for name, agent in self.agents.items():
            if not name.startswith("l"):
                continue
            for family in (4, 6):
                echo = agent.start("udp_echo", family=family, port=9, idle_s=1.0)
                echo.listening()
                out = prober.start(
                    "udp_client", host=agent.address(family), port=9, count=1, attempts=30
                ).ok(timeout=60)
                echo.ok(timeout=30)
                self.warm_up[f"{name} IPv{family}"] = out["first_s"]

    def _checker(self, name: str) -> Any:
        def check() -> None:
            if name in self.killed:
                return
            proc = self.procs.get(name)
            if proc is not None and proc.poll() is not None:
                raise AgentError(f"{name} exited ({proc.returncode}):\n{self.log_tail(name)}")
            worker = self.workers.get(name)
            if worker is not None and worker.done():
                raise AgentError(f"libzt {name} ended: {worker.result()}")

        return check

    def log_tail(self, name: str, lines: int = 30) -> str:
        log = self.tmp / f"{name}.log"
        text = log.read_text(errors="replace") if log.is_file() else ""
        return "\n".join(text.strip().splitlines()[-lines:])

    def kill(self, name: str) -> None:
        """SIGKILLs a zt agent (a peer that vanishes without a word)."""
        self.killed.add(name)
        self.procs[name].kill()
        self.procs[name].wait(timeout=10)

    def _stop(self) -> None:
        (self.exchange / "stop").touch()
        for name, proc in self.procs.items():
            try:
                out, _ = proc.communicate(timeout=STOP_TIMEOUT_S)
                self.reports[name] = json.loads(out) if out.strip() else None
            except (subprocess.TimeoutExpired, ValueError) as exc:
                self.reports[name] = f"no report: {exc}"
        for name, worker in self.workers.items():
            try:
                self.reports[name] = worker.result(timeout=STOP_TIMEOUT_S + 30)
            except Exception as exc:
                self.reports[name] = f"raised {exc!r}"

    def pid(self, name: str) -> int:
        return int(self.agents[name].info["pid"])

    def proc_stat(self, name: str) -> dict[str, float]:
        """RSS (kB) and CPU seconds of an agent's process, read from /proc."""
        pid = self.pid(name)
        status = Path(f"/proc/{pid}/status").read_text().splitlines()
        rss = next(int(x.split()[1]) for x in status if x.startswith("VmRSS:"))
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks = 100.0  # os.sysconf("SC_CLK_TCK") on Linux
        cpu = (int(fields[11]) + int(fields[12])) / ticks
        return {"rss_kb": float(rss), "cpu_s": cpu, "t": time.monotonic()}
