"""A fleet of ``zt run`` daemons on a private planet, driven with ``zt cli``, all on loopback.

Command-line tools only, in a temporary directory: ``zt idtool`` makes the root's identity,
``zt mkplanet`` a planet naming it at 127.0.0.1, ``zt run`` starts the root (also the network
controller) and two nodes as separate processes, ``zt cli`` joins them to a network and lists
networks and peers. The controller is driven through its local JSON API (zerotier-one's
``/controller`` routes, as with ``curl``). Every daemon is stopped with SIGTERM.

    python examples/fleet.py
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from typing import Any

from zt.lab import unused_udp_port

ENV = {**os.environ, "ZT_ALLOWED_DESTINATIONS": "127.0.0.0/8"}  # the daemons stay on loopback
POOLS = [{"ipRangeStart": "198.18.0.10", "ipRangeEnd": "198.18.0.250"}]
NETWORK = {"name": "fleet", "private": True, "v4AssignMode": {"zt": True},
           "ipAssignmentPools": POOLS, "routes": [{"target": "198.18.0.0/15"}]}  # fmt: skip


def zt(cwd: str, *args: str) -> str:
    """Runs ``zt ARGS`` (``python -m zt``) in ``cwd`` and returns what it printed."""
    cmd = [sys.executable, "-m", "zt", *args]
    return subprocess.run(cmd, cwd=cwd, env=ENV, capture_output=True, text=True, check=True).stdout


def start(cwd: str, home: str, *args: str) -> tuple[subprocess.Popen[str], str]:
    """Starts ``zt run --home HOME ARGS`` (its log in HOME/run.log); returns it and its address."""
    cmd = [sys.executable, "-m", "zt", "run", "--home", home, "--planet", "planet", *args]
    os.makedirs(f"{cwd}/{home}", exist_ok=True)
    with open(f"{cwd}/{home}/run.log", "w") as log:
        proc = subprocess.Popen(
            cmd, cwd=cwd, env=ENV, stdout=subprocess.PIPE, stderr=log, text=True
        )
    assert proc.stdout is not None
    first = proc.stdout.readline()  # "root|node <address> listening on UDP port <port>"
    if not first:
        raise RuntimeError(f"zt run failed: see {cwd}/{home}/run.log")
    proc.stdout.readline()  # "api on 127.0.0.1:<port>", also in HOME/zerotier-one.port
    print(f"zt run: {first.strip()}")
    return proc, first.split()[1]


def controller(home: str, path: str, body: dict[str, Any]) -> Any:
    """POSTs to the controller's local API with the token of its home."""
    with open(f"{home}/zerotier-one.port") as p, open(f"{home}/authtoken.secret") as t:
        url, token = f"http://127.0.0.1:{p.read()}/controller/network{path}", t.read()
    req = urllib.request.Request(url, json.dumps(body).encode(), {"X-ZT1-Auth": token})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


def main() -> None:
    with tempfile.TemporaryDirectory() as d:
        os.mkdir(f"{d}/root")
        zt(d, "idtool", "generate", "root/identity.secret", "root/identity.public")
        port = unused_udp_port()
        zt(d, "mkplanet", "--root", f"root/identity.public@127.0.0.1/{port}")  # writes ./planet
        flags = ["--api-port", "0", "--allow-loopback", "--no-ipv6"]
        procs = []
        try:
            proc, root = start(d, "root", "--port", str(port), "--controller", *flags)
            procs.append(proc)
            nwid = controller(f"{d}/root", f"/{root}______", NETWORK)["id"]  # a new network
            for home in ("node1", "node2"):
                proc, address = start(d, home, "--port", "0", *flags)
                procs.append(proc)
                controller(f"{d}/root", f"/{nwid}/member/{address}", {"authorized": True})
                print(f"zt cli join: {zt(d, 'cli', f'-D{home}', 'join', nwid).strip()}")
            for home in ("node1", "node2"):
                deadline = time.monotonic() + 30
                while not zt(d, "cli", f"-D{home}", "get", nwid, "ip4").strip():
                    assert time.monotonic() < deadline, f"{home} got no address"
                    time.sleep(0.2)
                print(zt(d, "cli", f"-D{home}", "info").strip())
                print(zt(d, "cli", f"-D{home}", "listnetworks").splitlines()[-1])
            print(zt(d, "cli", "-Droot", "peers"), end="")
        finally:
            for proc in reversed(procs):
                proc.terminate()  # SIGTERM: the node stops cleanly and saves its state
                out, _ = proc.communicate(timeout=30)
                print(f"zt run exited {proc.returncode}: {out.strip()}")


if __name__ == "__main__":
    main()
