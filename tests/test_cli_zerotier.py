"""``python -m zt cli`` (zerotier-cli's commands, lines and exit codes) as a subprocess against
nodes on loopback: in-process nodes serving the API, and a ``zt run`` node."""

from __future__ import annotations

import json
import os
import pathlib
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Optional

import pytest

import zt
from tests.support import (
    api_port,
    api_token,
    free_tcp_port,
    loopback_planet,
    options,
    wait_until,
    zt_run,
)

LEAVE_NWID = "8056c2e21c000001"
STATUSES = ("REQUESTING_CONFIGURATION", "NOT_FOUND", "ACCESS_DENIED")


@dataclass
class Run:
    code: int
    out: str
    err: str


def cli(*args: str, cwd: Optional[pathlib.Path] = None) -> Run:
    p = subprocess.run(
        [sys.executable, "-m", "zt", "cli", *args],
        capture_output=True,
        text=True,
        timeout=90,
        cwd=cwd,
        env={**os.environ, "HOME": str(cwd or "/nonexistent")},
    )
    return Run(p.returncode, p.stdout, p.stderr)


@dataclass
class Env:
    root: zt.Node
    node: zt.Node
    home: pathlib.Path
    port: int
    token: str


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    root_id = zt.Identity.generate()
    planet, port = loopback_planet(root_id)
    home = tmp_path_factory.mktemp("clihome")
    root = zt.Node(options(planet, identity=root_id, port=port)).start()
    node = zt.Node(options(planet, store=str(home), api_port=0)).start()
    try:
        (home / "zerotier-one.port").write_text(str(api_port(node)))
        node.wait_online(15)
        wait_until(lambda: (p := node.peer(root.address)) is not None and p.direct, 15, "root path")
        yield Env(root, node, home, api_port(node), api_token(home))
    finally:
        node.close()
        root.close()


def test_info_and_status(env: Env) -> None:
    for cmd in ("info", "status"):
        r = cli(f"-D{env.home}", cmd)
        assert (r.code, r.err) == (0, "")
        assert r.out == f"200 info {env.node.address} 1.14.1 ONLINE\n"
    # Explicit port and token, switches after the command.
    r = cli("info", f"-p{env.port}", f"-T{env.token}", "-H127.0.0.1")
    assert r.out == f"200 info {env.node.address} 1.14.1 ONLINE\n"


def test_info_json(env: Env) -> None:
    r = cli(f"-D{env.home}", "-j", "info")
    assert r.code == 0
    status = json.loads(r.out)
    assert status["address"] == env.node.address and status["online"] is True
    lines = r.out.splitlines()
    assert lines[0] == "{" and lines[1] == f' "address": "{env.node.address}",'
    assert lines[-1] == "}" and r.out.endswith("}\n")
    keys = [ln.split('"')[1] for ln in lines if ln.startswith(' "')]
    assert keys == sorted(keys)


def test_listpeers_and_peers(env: Env) -> None:
    root = env.root.address
    r = cli(f"-D{env.home}", "listpeers")
    assert r.code == 0
    lines = r.out.splitlines()
    assert lines[0] == "200 listpeers <ztaddr> <path> <latency> <version> <role>"
    row = next(ln for ln in lines[1:] if ln.startswith(f"200 listpeers {root} "))
    m = re.fullmatch(
        rf"200 listpeers {root} 127\.0\.0\.1/{env.root.port};(-?\d+);(-?\d+) (-?\d+) "
        r"1\.14\.1 PLANET",
        row,
    )
    assert m, row
    assert int(m.group(2)) >= 0, "something was received on the preferred path"

    r = cli(f"-D{env.home}", "peers")
    assert r.code == 0
    lines = r.out.splitlines()
    assert lines[:2] == [
        "200 peers",
        "<ztaddr>   <ver>  <role> <lat> <link>   <lastTX> <lastRX> <path>",
    ]
    row = next(ln for ln in lines[2:] if ln.startswith(root))
    m = re.fullmatch(
        rf"{root} 1\.14\.1 PLANET ([ \d-]{{5}}) DIRECT   (-?\d+) *(-?\d+) *"
        rf"127\.0\.0\.1/{env.root.port}",
        row,
    )
    assert m, row
    # Column layout: version and role left-aligned in 6, latency right-aligned in 5,
    # lastTX and lastRX left-aligned in 8.
    assert row.index("DIRECT") == 10 + 1 + 6 + 1 + 6 + 1 + 5 + 1
    tx_start = row.index("DIRECT") + 9
    assert row[tx_start + 8] == " " and row[tx_start + 17] == " "

    r = cli(f"-D{env.home}", "-j", "peers")
    assert any(p["address"] == root for p in json.loads(r.out))


def test_join_listnetworks_get_set_leave(env: Env) -> None:
    nwid = env.root.address + "000042"  # no controller answers: REQUESTING_CONFIGURATION
    r = cli(f"-D{env.home}", "listnetworks")
    assert r.code == 0
    header = "200 listnetworks <nwid> <name> <mac> <status> <type> <dev> <ZT assigned ips>"
    assert r.out.splitlines()[0] == header

    r = cli(f"-D{env.home}", "join", nwid)
    assert (r.code, r.out) == (0, "200 join OK\n")
    assert env.node.network(nwid) is not None
    r = cli(f"-D{env.home}", "join", "123")
    assert (r.code, r.out) == (2, "invalid network id\n")

    r = cli(f"-D{env.home}", "listnetworks")
    lines = r.out.splitlines()
    assert lines[0] == header
    row = next(ln for ln in lines if ln.startswith(f"200 listnetworks {nwid} "))
    n = env.node.network(nwid)
    assert n is not None
    # No name yet and no OS device: empty fields, as zerotier-cli prints them.
    m = re.fullmatch(rf"200 listnetworks {nwid}  {n.mac} ([A-Z_]+) PRIVATE  -", row)
    assert m and m.group(1) in STATUSES, row

    r = cli(f"-D{env.home}", "-j", "listnetworks")
    assert nwid in [x["nwid"] for x in json.loads(r.out)]

    r = cli(f"-D{env.home}", "get", nwid, "status")
    assert r.code == 0 and r.out.rstrip("\n") in STATUSES
    r = cli(f"-D{env.home}", "get", nwid, "allowManaged")
    assert r.out == "1\n"
    r = cli(f"-D{env.home}", "get", nwid, "routes")
    assert r.out == "error, unknown property name\n"
    r = cli(f"-D{env.home}", "get", nwid, "ip4")
    assert (r.code, r.out) == (0, "\n")
    r = cli(f"-D{env.home}", "get", "0000000000000001", "status")
    assert (r.code, r.out) == (0, "")
    assert r.err == "unknown network ID, check that you are a member of the network\n"
    r = cli(f"-D{env.home}", "get", "short", "status")
    assert (r.code, r.err) == (2, "invalid format: must be a 16-digit (network) ID\n")

    r = cli(f"-D{env.home}", "set", nwid, "allowDNS=1")
    assert r.code == 0 and json.loads(r.out)["allowDNS"] is True
    r = cli(f"-D{env.home}", "get", nwid, "allowDNS")
    assert r.out == "1\n"
    r = cli(f"-D{env.home}", "set", nwid, "allowDNS=false")
    assert json.loads(r.out)["allowDNS"] is False
    r = cli(f"-D{env.home}", "set", nwid, "mtu=1")
    assert (r.code, r.out) == (0, "")
    r = cli(f"-D{env.home}", "set", nwid, "allowDNS")
    assert r.code == 2 and "Usage:" in r.err

    r = cli(f"-D{env.home}", "leave", nwid)
    assert (r.code, r.out) == (0, "200 leave OK\n")
    assert env.node.network(nwid) is None
    # Leaving a network not joined is still OK; -j prints the raw body.
    r = cli(f"-D{env.home}", "-j", "leave", LEAVE_NWID)
    assert (r.code, r.out) == (0, "{}")


def test_raw_path_and_moons(env: Env) -> None:
    r = cli(f"-D{env.home}", "/health")
    assert r.code == 0 and json.loads(r.out)["version"] == "1.14.1"
    r = cli(f"-D{env.home}", "/nothing")
    assert (r.code, r.out) == (1, "404 /nothing \n")
    r = cli(f"-D{env.home}", "listmoons")
    assert (r.code, r.out) == (0, "[]\n")
    r = cli(f"-D{env.home}", "listbonds")
    assert r.code == 0 and "NONE" in r.out


def test_raw_paths_post_and_delete(env: Env) -> None:
    """``/<path> <json>`` POSTs (``-`` reads the body from stdin), ``-XDELETE /<path>``
    deletes: the controller API and network settings are reachable without curl."""
    nwid = env.root.address + "0000a7"
    r = cli(f"-D{env.home}", f"/network/{nwid}", '{"allowDNS": true}')
    assert r.code == 0 and json.loads(r.out)["id"] == nwid, r
    assert json.loads(r.out)["allowDNS"] is True
    assert any(n.id == nwid for n in env.node.networks())
    r = cli(f"-D{env.home}", f"/network/{nwid}", "{not json")
    assert r.code == 1 and "not JSON" in r.err, r
    r = cli(f"-D{env.home}", "-XDELETE", f"/network/{nwid}")
    assert r.code == 0, r
    wait_until(lambda: all(n.id != nwid for n in env.node.networks()), 10, "left")
    r = cli(f"-D{env.home}", "-XPUT", f"/network/{nwid}")
    assert r.code == 1 and "GET, POST or DELETE" in r.err, r
    r = cli(f"-D{env.home}", "-XDELETE", "info")
    assert r.code == 1 and "/<path> requests only" in r.err, r


def test_wrong_token(env: Env) -> None:
    r = cli(f"-p{env.port}", "-Twrong", "info")
    assert (r.code, r.out) == (1, "401 info {}\n")
    r = cli(f"-p{env.port}", "-Twrong", "join", "0123456789abcdef")
    assert (r.code, r.out) == (1, "401 join {}\n")
    r = cli(f"-p{env.port}", "-Twrong", "listnetworks")
    assert (r.code, r.out) == (1, "401 listnetworks {}\n")


def test_unreachable_node(tmp_path: pathlib.Path) -> None:
    port = free_tcp_port()
    hint = (
        "Please check that the service is running and that TCP port 9993 can be contacted "
        "via 127.0.0.1.\n"
    )
    for cmd in ("info", "listpeers", "peers", "listnetworks"):
        r = cli(f"-p{port}", "-Tx", cmd)
        assert r.code == 1, cmd
        assert r.out == f"Error connecting to the ZeroTier service: connection failed\n\n{hint}"
    r = cli(f"-p{port}", "-Tx", "join", "0123456789abcdef")
    assert (r.code, r.out) == (1, "0 join connection failed\n")
    r = cli(f"-p{port}", "-Tx", "leave", "0123456789abcdef")
    assert (r.code, r.out) == (1, "0 leave connection failed\n")


def test_discovery_errors_and_switches(tmp_path: pathlib.Path) -> None:
    r = cli(f"-D{tmp_path}", "info")
    assert r.code == 2
    assert r.err == f"zt cli: missing port and zerotier-one.port not found in {tmp_path}\n"
    (tmp_path / "zerotier-one.port").write_text("9993")
    r = cli(f"-D{tmp_path}", "info", cwd=tmp_path)
    assert r.code == 2
    assert r.err == (
        f"zt cli: authtoken.secret not found or readable in {tmp_path} (try again as root)\n"
    )
    r = cli("-v")
    assert (r.code, r.out) == (0, "1.14.1\n")
    r = cli("-h")
    assert r.code == 0 and r.out.startswith("zt cli 1.14.1")
    for bad in ("-p0", "-p70000", "-pxyz", "-jx", "-D"):
        r = cli(bad, "info")
        assert r.code == 1 and "Usage:" in r.out, bad
    # No command: help on stderr, exit 0 (after discovery, as zerotier-cli).
    r = cli("-p9993", "-Tx")
    assert r.code == 0 and "Usage:" in r.err


def test_zt_run_writes_the_port_file(tmp_path: pathlib.Path) -> None:
    root_id = zt.Identity.generate()
    planet, port = loopback_planet(root_id)
    planet_file = tmp_path / "planet"
    planet_file.write_bytes(planet.to_bytes())
    home = tmp_path / "home"
    with zt.Node(options(planet, identity=root_id, port=port)):
        proc = zt_run(home, 0, planet_file)
        try:
            wait_until(lambda: (home / "zerotier-one.port").exists(), 60, "zerotier-one.port")
            api_port = int((home / "zerotier-one.port").read_text())
            assert 0 < api_port < 65536
            deadline = time.monotonic() + 30
            while True:
                r = cli(f"-D{home}", "info")
                if r.out.endswith(" ONLINE\n") or time.monotonic() > deadline:
                    break
                time.sleep(0.2)
            assert r.code == 0 and re.fullmatch(r"200 info [0-9a-f]{10} 1\.14\.1 ONLINE\n", r.out)
        finally:
            proc.terminate()
            out, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
        assert f"api on 127.0.0.1:{api_port}" in out
