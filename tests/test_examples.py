"""Every script in examples/ runs as written and shows what it says it shows: each runs as a
subprocess (``python examples/x.py``) in an empty directory, with traffic confined to loopback
and no proxies, and must exit 0 and print the expected lines (the echoed bytes, the HTTP
status and body...). A new example without a test here fails ``test_every_example_is_tested``.
"""

from __future__ import annotations

import importlib.util
import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Optional

import pytest

import zt
from tests.ci import environment_lacks

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
PROXY_VARIABLES = {"http_proxy", "https_proxy", "all_proxy", "no_proxy"}
TIMEOUT = 60
IP = r"198\.18\.\d+\.\d+"
ADDRESS = r"[0-9a-f]{10}"

# name: (arguments, a module it needs or None, patterns of lines it must print). Each pattern
# must match a whole line of its own (a pattern listed twice needs two such lines).
CASES: dict[str, tuple[list[str], Optional[str], list[str]]] = {
    "echo.py": (
        ["hello", "second message"],
        None,
        [rf"server: connection from {IP}:\d+", "echoed: hello", "echoed: second message"],
    ),
    "private_network.py": (
        [],
        None,
        [
            r"created network [0-9a-f]{16} 'example' private=True",
            rf"alice {ADDRESS}: OK 10\.147\.17\.\d+/24",
            rf"bob {ADDRESS}: ACCESS_DENIED",
            rf"bob {ADDRESS}: OK 10\.147\.17\.\d+/24",
            *[rf"member {ADDRESS} authorized=True ips=\['10\.147\.17\.\d+'\]"] * 2,
            "alice pings bob: reply",
            rf"bob {ADDRESS}: ACCESS_DENIED again",
            "alice pings bob: no reply",
        ],
    ),
    "requests_route.py": (
        [],
        "requests",
        [
            rf'GET http://{IP}:8080/by-address -> 200 {{"path": "/by-address", "client": "{IP}"}}',
            rf'GET http://web\.lab:8080/by-name -> 200 {{"path": "/by-name", "client": "{IP}"}}',
        ],
    ),
    "httpx_client.py": (
        [],
        "httpx",
        [
            rf"sync: 200 hello {IP}, you asked for /sync",
            rf"async: \[200, 200, 200, 200, 200\] hello {IP}, you asked for /async/4",
        ],
    ),
    "asyncio_server.py": (
        ["20"],
        None,
        ["reply: HELLO FROM CLIENT 0", "20/20 clients got their answer"],
    ),
    "tls.py": (
        [],
        "cryptography",
        [
            rf"TLSv1\.[23]: verified the server's certificate for \['echo\.lab', '{IP}'\]",
            "echoed: hello over TLS over ZeroTier",
        ],
    ),
    "udp_multicast.py": (
        [],
        None,
        [
            rf"{name} got '{to} #\d+' from {IP}"
            for to in (r"239\.1\.2\.3", r"255\.255\.255\.255")
            for name in ("bob", "carol")
        ],
    ),
    "fleet.py": (
        [],
        None,
        [
            rf"zt run: root {ADDRESS} listening on UDP port \d+",
            *["zt cli join: 200 join OK"] * 2,
            *[rf"200 info {ADDRESS} 1\.14\.1 ONLINE"] * 2,
            *[rf"200 listnetworks [0-9a-f]{{16}} fleet \S+ OK PRIVATE +{IP}/15"] * 2,
            *[rf"{ADDRESS} 1\.14\.1 LEAF +\d+ DIRECT .* 127\.0\.0\.1/\d+"] * 2,
            *["zt run exited 0: stopped"] * 3,
        ],
    ),
}
# Examples with a test of their own below.
OWN_TESTS = {"join_existing.py"}


def command(name: str, *args: str) -> list[str]:
    # ResourceWarnings (an unclosed socket or file) are shown, so that the tests see them.
    return [sys.executable, "-W", "always::ResourceWarning", str(EXAMPLES / name), *args]


def environment() -> dict[str, str]:
    # No proxy: the examples' HTTP clients must reach the overlay, not a proxy of this host.
    env = {k: v for k, v in os.environ.items() if k.lower() not in PROXY_VARIABLES}
    env.update(ZT_ALLOWED_DESTINATIONS="127.0.0.0/8,::1/128", no_proxy="*")
    return env


def check(name: str, proc: subprocess.CompletedProcess[str], patterns: list[str]) -> None:
    """Exit code 0, no ResourceWarning, and a line of its own for each pattern."""
    output = f"{name} printed:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    assert proc.returncode == 0, f"{name} exited {proc.returncode}; {output}"
    assert "ResourceWarning" not in proc.stderr, f"{name} leaked; {output}"
    lines = proc.stdout.splitlines()
    for pattern in patterns:
        i = next((i for i, line in enumerate(lines) if re.fullmatch(pattern, line)), None)
        assert i is not None, f"{name}: no line matches {pattern!r}; {output}"
        del lines[i]


def run(name: str, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    # A session of its own: on a timeout its whole process group is killed (fleet.py's daemons
    # included, which would otherwise outlive it).
    with subprocess.Popen(
        command(name, *args),
        cwd=cwd,
        env=environment(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    ) as proc:
        try:
            out, err = proc.communicate(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, err = proc.communicate()
            raise AssertionError(f"{name} did not end in {TIMEOUT} s:\n{out}\n{err}") from None
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def test_every_example_is_tested() -> None:
    assert EXAMPLES.is_dir()
    scripts = {p.name for p in EXAMPLES.glob("*.py")}
    assert len(scripts) >= 9
    assert scripts == set(CASES) | OWN_TESTS, "add the new example to CASES (or a test of its own)"


@pytest.mark.parametrize("name", sorted(CASES))
def test_example(name: str, tmp_path: Path) -> None:
    args, needs, patterns = CASES[name]
    if needs is not None and importlib.util.find_spec(needs) is None:
        environment_lacks(f"{name} needs {needs}, which is not installed (pip install 'zt[test]')")
    check(name, run(name, *args, cwd=tmp_path), patterns)


def test_join_existing(tmp_path: Path) -> None:
    """A lab provides the planet and the network; the script joins it twice: with a stored
    identity authorized beforehand (and greets a line service), then as a new node that the
    controller authorizes once the script has printed its address."""
    with zt.lab.Lab(tmp_path / "lab") as lab:
        nwid = lab.network()
        server = lab.member(nwid)
        ip = lab.ip(server, nwid)
        planet = tmp_path / "planet"
        planet.write_bytes(lab.planet.to_bytes())
        identity = zt.Identity.generate()
        store = tmp_path / "store"
        store.mkdir()
        (store / "identity.secret").write_text(identity.secret_string())
        lab.controller.authorize(nwid, identity.address)

        with server.create_server((ip, 7000)) as listener:

            def answer_one() -> None:
                conn, _ = listener.accept()
                with conn, conn.makefile("rb") as lines:
                    conn.sendall(b"you said: " + lines.readline())

            thread = threading.Thread(target=answer_one, daemon=True)
            thread.start()
            args = ["--planet", str(planet), "--network", nwid, "--store", str(store)]
            proc = run("join_existing.py", *args, "--connect", f"{ip}:7000", cwd=tmp_path)
            thread.join(10)
        assigned = lab.controller.member(nwid, identity.address)["ipAssignments"]
        check(
            "join_existing.py",
            proc,
            [
                f"node {identity.address} joining {nwid}",
                f"network {nwid} 'lab': OK",
                rf"address: {re.escape(assigned[0])}/15",
                f"answer: you said: hello from {identity.address}",
            ],
        )

        # A new node: the script prints its address first and waits to be authorized.
        args = ["--planet", str(planet), "--network", nwid]
        with subprocess.Popen(
            command("join_existing.py", *args),
            cwd=tmp_path,
            env=environment(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        ) as popen:
            try:
                assert popen.stdout is not None
                first = popen.stdout.readline()
                m = re.fullmatch(rf"node ({ADDRESS}) joining {nwid}\n", first)
                assert m, first
                lab.controller.authorize(nwid, m.group(1))
                out, err = popen.communicate(timeout=TIMEOUT)
            finally:
                popen.kill()
        proc = subprocess.CompletedProcess(popen.args, popen.returncode, first + out, err)
        check("join_existing.py", proc, [f"network {nwid} 'lab': OK", rf"address: {IP}/15"])
