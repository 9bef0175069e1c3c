from __future__ import annotations

import http.server
import json
import re
import subprocess
import sys
import threading
from pathlib import Path
from typing import Callable

import pytest

import zt
from zt.cli import demo

from .support import api_token, root_home


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "zt", *args], cwd=cwd, capture_output=True, text=True, timeout=120
    )


def test_idtool_generate_validate_getpublic_sign_verify(tmp_path: Path) -> None:
    r = run("idtool", "generate", cwd=tmp_path)
    assert r.returncode == 0 and len(r.stdout) == 270 and not r.stdout.endswith("\n")
    ident = zt.Identity.from_string(r.stdout)
    ident.validate()
    r = run("idtool", "generate", "id.secret", "id.public", cwd=tmp_path)
    assert r.returncode == 0 and r.stdout == "id.secret written\nid.public written\n"
    assert (tmp_path / "id.secret").stat().st_mode & 0o777 == 0o600
    secret = (tmp_path / "id.secret").read_text()
    public = (tmp_path / "id.public").read_text()
    assert zt.Identity.from_string(secret).public_string() == public
    r = run("idtool", "validate", "id.secret", cwd=tmp_path)
    assert (r.returncode, r.stdout) == (0, "id.secret is a valid identity\n")
    r = run("idtool", "validate", public, cwd=tmp_path)
    assert r.returncode == 0
    r = run("idtool", "getpublic", "id.secret", cwd=tmp_path)
    assert (r.returncode, r.stdout) == (0, public)
    (tmp_path / "msg").write_bytes(b"message \x00\xff")
    r = run("idtool", "sign", "id.secret", "msg", cwd=tmp_path)
    assert r.returncode == 0 and len(r.stdout) == 192
    sig = r.stdout
    assert zt.Identity.from_string(public).verify(b"message \x00\xff", bytes.fromhex(sig))
    r = run("idtool", "verify", "id.public", "msg", sig, cwd=tmp_path)
    assert (r.returncode, r.stdout) == (0, "msg signature valid\n")
    (tmp_path / "sig.txt").write_text(sig)
    assert run("idtool", "verify", "id.public", "msg", "sig.txt", cwd=tmp_path).returncode == 0
    (tmp_path / "msg").write_bytes(b"other")
    r = run("idtool", "verify", "id.public", "msg", sig, cwd=tmp_path)
    assert (r.returncode, r.stderr) == (1, "msg signature check FAILED\n")


def test_idtool_errors_and_exit_codes(tmp_path: Path) -> None:
    r = run("idtool", cwd=tmp_path)
    assert r.returncode == 1 and "Usage:" in r.stdout
    assert run("idtool", "nonsense", cwd=tmp_path).returncode == 1
    r = run("idtool", "validate", "missing-file", cwd=tmp_path)
    assert (r.returncode, r.stderr) == (
        1,
        "Identity argument invalid or file unreadable: missing-file\n",
    )
    good = zt.Identity.generate()
    bad = "0123456789" + good.public_string()[10:]
    r = run("idtool", "validate", bad, cwd=tmp_path)
    assert (r.returncode, r.stderr) == (1, f"{bad} FAILED validation.\n")
    r = run("idtool", "sign", good.public_string(), "x", cwd=tmp_path)
    assert r.returncode == 1 and "does not contain a private key" in r.stderr
    r = run("idtool", "sign", good.secret_string(), "nofile", cwd=tmp_path)
    assert (r.returncode, r.stderr) == (1, "nofile is not readable\n")
    assert run("idtool", "initmoon", cwd=tmp_path).returncode == 0  # help, as stock
    assert run("idtool", "genmoon", cwd=tmp_path).returncode == 0
    assert run("idtool", "sign", cwd=tmp_path).returncode == 1


def test_idtool_vanity(tmp_path: Path) -> None:
    r = run("idtool", "generate", "v.secret", "v.public", "a", cwd=tmp_path)
    assert r.returncode == 0
    assert zt.Identity.from_string((tmp_path / "v.secret").read_text()).address.startswith("a")
    assert "vanity address: found " in r.stderr


def test_initmoon_genmoon(tmp_path: Path) -> None:
    seed = zt.Identity.generate()
    (tmp_path / "seed.public").write_text(seed.public_string())
    r = run("idtool", "initmoon", "seed.public", cwd=tmp_path)
    assert r.returncode == 0
    doc = json.loads(r.stdout)
    assert list(doc) == sorted(doc) and r.stdout.startswith('{\n "id": ')
    assert doc["id"] == seed.address and doc["worldType"] == "moon"
    assert doc["signingKey"] == doc["updatesMustBeSignedBy"]
    # Endpoint order as zerotier-idtool 1.14.1 writes it (observed with the stock tool).
    doc["roots"][0]["stableEndpoints"] = [
        "2001:db8::2/9993",
        "203.0.113.9/9993",
        "203.0.113.10/9994",
        "198.18.0.1/9993",
        "2001:db8::1/9993",
    ]
    (tmp_path / "moon.json").write_text(json.dumps(doc))
    r = run("idtool", "genmoon", "moon.json", cwd=tmp_path)
    name = f"{int(seed.address, 16):016x}.moon"
    assert r.returncode == 0 and r.stdout.startswith(f"wrote {name} (signed world with timestamp ")
    moon = zt.World.from_bytes((tmp_path / name).read_bytes())
    assert moon.world_type == "moon" and moon.verify() and moon.id == int(seed.address, 16)
    assert moon.roots[0].stable_endpoints == [
        "198.18.0.1/9993",
        "203.0.113.9/9993",
        "203.0.113.10/9994",
        "2001:db8::1/9993",
        "2001:db8::2/9993",
    ]
    doc["worldType"] = "galaxy"
    (tmp_path / "bad.json").write_text(json.dumps(doc))
    assert run("idtool", "genmoon", "bad.json", cwd=tmp_path).stderr == "invalid worldType\n"
    assert run("idtool", "genmoon", "nope.json", cwd=tmp_path).stderr == "cannot read nope.json\n"


def test_mkplanet_and_rotation(tmp_path: Path) -> None:
    roots = [zt.Identity.generate() for _ in range(2)]
    (tmp_path / "r0.public").write_text(roots[0].public_string())
    args = [
        "mkplanet",
        "--root",
        "r0.public@203.0.113.1/9993,2001:db8::1/9993",
        "--root",
        f"{roots[1].public_string()}@203.0.113.2/9993",
        "--id",
        "0x1234",
        "--timestamp",
        "1000",
        "--keys",
        "keys",
    ]
    r = run(*args, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    v1 = zt.World.from_bytes((tmp_path / "planet").read_bytes())
    assert v1.id == 0x1234 and v1.timestamp == 1000 and v1.verify()
    assert v1.roots[0].stable_endpoints == ["203.0.113.1/9993", "2001:db8::1/9993"]
    cur = (tmp_path / "keys" / "current.c25519").read_bytes()
    assert len(cur) == 128 and cur[:64] == v1.update_key
    (tmp_path / "planet").rename(tmp_path / "v1")
    r = run(*args[:-4], "--rotate", "--keys", "keys", "--update", "v1", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    v2 = zt.World.from_bytes((tmp_path / "planet").read_bytes())
    assert v1.accepts_update(v2) and v2.update_key != v1.update_key
    r = run(*args[:-4], "--timestamp", "5", "--keys", "keys", "--update", "planet", cwd=tmp_path)
    assert r.returncode == 1 and "cannot make the planet" in r.stderr


def _figure(pattern: str, text: str) -> float:
    """The number the pattern's one group captures in the demo's output; it must be > 0."""
    m = re.search(pattern, text, re.MULTILINE)
    assert m is not None, f"no line matching {pattern!r} in:\n{text}"
    value = float(m.group(1))
    assert value > 0, m.group(0)
    return value


def test_demo_and_version(tmp_path: Path) -> None:
    r = run("demo", "--home", str(tmp_path / "homes"), "--messages", "5", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "bob got 5/5 messages from alice" in out
    assert "alice -> bob direct path: ['127.0.0.1:" in out
    _figure(r"^alice: +[0-9a-f]{10} online (\d+\.\d+) s after start$", out)
    _figure(r"^bob: +[0-9a-f]{10} online (\d+\.\d+) s after start$", out)
    _figure(r"^addresses: alice's (\d+\.\d+) s, bob's", out)
    _figure(r"^addresses: .*, bob's (\d+\.\d+) s after authorization", out)
    ip = re.search(r"^alice +OK on [0-9a-f]{16}: .*, (198\.18\.\d+\.\d+)/15$", out, re.M)
    assert ip is not None, out
    assert "alice got bob's ARP reply" in out
    # The data steps: 1 MB echoed back identical, timed; an HTTP GET answered 200 with the page.
    _figure(r"^echo: +20 round trips alice -> bob -> alice: median (\d+\.\d+) ms", out)
    assert "alice sent 1000000 random bytes, got 1000000 back, identical: " in out
    _figure(r"identical: (\d+\.\d+) s, ", out)
    _figure(r"identical: \d+\.\d+ s, (\d+\.\d+) MB/s each way$", out)
    page = re.escape(repr(demo.PAGE))
    _figure(rf"^http: +HTTP/1\.0 200 OK, {len(demo.PAGE)} bytes in (\d+\.\d+) ms: {page}$", out)
    assert f'bob\'s server logged: {ip.group(1)} "GET /hello.txt HTTP/1.1" 200' in out
    lines = out.splitlines()
    steps = [
        "bob got 5/5",
        "alice got bob's ARP",
        "echo:    alice sent",
        "http:    HTTP/",
        "demo ok",
    ]
    at = [next(i for i, line in enumerate(lines) if line.startswith(s)) for s in steps]
    assert at == sorted(at), out
    assert out.endswith("demo ok\n")
    assert r.stderr == ""
    for name in ("root", "alice", "bob"):
        assert (tmp_path / "homes" / name / "identity.secret").exists()
    assert (tmp_path / "homes" / "www" / "hello.txt").exists()
    r = run("version", cwd=tmp_path)
    assert r.stdout.strip() == f"zt {zt.__version__}"
    assert run(cwd=tmp_path).returncode == 1
    assert run("bogus", cwd=tmp_path).returncode == 2


def _corrupt_the_echo(monkeypatch: pytest.MonkeyPatch) -> None:
    """Flips one bit of the first large chunk alice reads back from the echo server."""
    recv = zt.socket.socket.recv
    flipped: list[bool] = []

    def corrupting(self: zt.socket.socket, bufsize: int, flags: int = 0) -> bytes:
        data = recv(self, bufsize, flags)
        if len(data) > 100 and not flipped and self.getpeername()[1] == demo.ECHO_PORT:
            flipped.append(True)
            data = bytes([data[0] ^ 1]) + data[1:]
        return data

    monkeypatch.setattr(zt.socket.socket, "recv", corrupting)


def _answer_404(monkeypatch: pytest.MonkeyPatch) -> None:
    def not_found(self: http.server.SimpleHTTPRequestHandler) -> None:
        self.send_error(404)

    monkeypatch.setattr(demo._Files, "do_GET", not_found)


@pytest.mark.parametrize(
    ("breakage", "message"),
    [
        (
            _corrupt_the_echo,
            "demo FAILED: tcp echo: sent 1000000 bytes, got 1000000 back, differing from byte ",
        ),
        (_answer_404, "demo FAILED: http GET: HTTP/1.0 404 Not Found, body b'<!DOCTYPE"),
    ],
    ids=["corrupted-echo", "http-404"],
)
def test_demo_fails_clearly_and_cleans_up(
    breakage: Callable[[pytest.MonkeyPatch], None],
    message: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    breakage(monkeypatch)
    assert demo.main(["--home", str(tmp_path), "--messages", "1"]) == 1
    out, err = capsys.readouterr()
    assert err.startswith(message), err
    assert err.count("\n") == 1 and "demo ok" not in out
    # Its threads ended (its echo server, sender, HTTP server, zt.route's pumps); the leak
    # check (conftest) fails the test if it left a socket open.
    left = [t.name for t in threading.enumerate() if t.name.startswith(("zt demo", "zt-route"))]
    assert left == []


def test_run_serves_as_root_and_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    import json
    import os
    import signal
    import urllib.request

    rh = root_home(tmp_path)
    root, planet, port, home = rh.identity, rh.planet, rh.port, rh.home
    env = dict(os.environ, ZT_ALLOWED_DESTINATIONS="127.0.0.0/8")
    adhoc = zt.network.adhoc_network_id(7000, 7001)
    proc = rh.run("--join", f"{adhoc:016x}", env=env)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line == f"root {root.address} listening on UDP port {port}\n"
        # The local JSON API is served at the UDP port's number, with the home's token.
        assert proc.stdout.readline() == f"api on 127.0.0.1:{port}\n"
        token = api_token(home)
        req = urllib.request.Request(
            f"http://127.0.0.1:{port}/network/{adhoc:016x}", headers={"X-ZT1-Auth": token}
        )
        with urllib.request.urlopen(req, timeout=10) as r:
            net = json.loads(r.read())
        assert net["status"] == "OK" and net["name"] == "adhoc-1b58-1b59", "--join joined"
        six = zt.network.sixplane_address(adhoc, root.address)
        assert net["assignedAddresses"] == [f"{six}/40"]
        opts = zt.NodeOptions(planet=planet, allow_loopback=True, ipv6=False)
        with zt.Node(opts) as leaf:
            leaf.wait_online(15)
            leaf_addr = leaf.address
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert out == "stopped\n"
    assert (home / "peers.d" / f"{leaf_addr}.peer").exists(), "peers persisted at stop"
    assert (home / "networks.d" / f"{adhoc:016x}.conf").exists(), "rejoined at the next start"
    assert (home / "planet").read_bytes() == planet.to_bytes()


def test_run_reports_a_busy_port(tmp_path: Path) -> None:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("0.0.0.0", 0))
        port = s.getsockname()[1]
        r = run("run", "--home", str(tmp_path / "h"), "--port", str(port), cwd=tmp_path)
    assert r.returncode == 1
    last = r.stderr.strip().splitlines()[-1]
    assert last == f"zt run: the node failed: cannot bind UDP port {port}: " + (
        "Address already in use (os error 98)"
    )
