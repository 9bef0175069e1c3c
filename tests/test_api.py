"""zerotier-one's local JSON API over real HTTP (urllib), as ztncui / ztnet use it: a private
planet whose root is on 127.0.0.1, a controller node and a member node, all on loopback."""

from __future__ import annotations

import errno
import json
import os
import pathlib
import re
import select
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Optional

import pytest

import zt

from .support import api_port, api_token, loopback_planet, options, root_home, wait_until

OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@dataclass
class Reply:
    status: int
    body: str
    content_type: str

    def json(self) -> Any:
        return json.loads(self.body)


def http(
    port: int,
    method: str,
    path: str,
    body: Any = None,
    *,
    token: Optional[str] = None,
    headers: Optional[dict[str, str]] = None,
    raw: Optional[bytes] = None,
) -> Reply:
    """One request to the API; ``token`` goes in X-ZT1-Auth; ``raw`` is sent as the body."""
    h = dict(headers or {})
    if token is not None:
        h["X-ZT1-Auth"] = token
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    if data is not None:
        h.setdefault("Content-Type", "application/json")
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}", data=data, headers=h, method=method
    )
    try:
        with OPENER.open(req, timeout=20) as resp:
            return Reply(resp.status, resp.read().decode(), resp.headers.get("Content-Type", ""))
    except urllib.error.HTTPError as e:
        return Reply(e.code, e.read().decode(), e.headers.get("Content-Type", ""))


@dataclass
class Env:
    root: zt.Node
    ctl: zt.Node
    member: zt.Node
    ctl_home: pathlib.Path
    member_home: pathlib.Path
    ctl_token: str
    member_token: str
    ctl_port: int
    member_port: int

    def ctl_api(self, method: str, path: str, body: Any = None, **kw: Any) -> Reply:
        return http(self.ctl_port, method, path, body, token=self.ctl_token, **kw)

    def member_api(self, method: str, path: str, body: Any = None, **kw: Any) -> Reply:
        return http(self.member_port, method, path, body, token=self.member_token, **kw)


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    root_id = zt.Identity.generate()
    planet, port = loopback_planet(root_id)
    ctl_home = tmp_path_factory.mktemp("ctl")
    member_home = tmp_path_factory.mktemp("member")
    root = zt.Node(options(planet, identity=root_id, port=port)).start()
    ctl = zt.Node(options(planet, store=str(ctl_home), controller=True, api_port=0)).start()
    member = zt.Node(options(planet, store=str(member_home), api_port=0)).start()
    try:
        ctl.wait_online(15)
        member.wait_online(15)
        yield Env(
            root,
            ctl,
            member,
            ctl_home,
            member_home,
            api_token(ctl_home),
            api_token(member_home),
            api_port(ctl),
            api_port(member),
        )
    finally:
        for n in (member, ctl, root):
            n.close()


# -- authentication ---------------------------------------------------------------------------


def test_token_file_is_created_private(env: Env) -> None:
    token_file = env.ctl_home / "authtoken.secret"
    assert re.fullmatch(r"[a-z0-9]{24}", env.ctl_token)
    assert token_file.stat().st_mode & 0o077 == 0
    assert env.ctl_token != env.member_token


def test_authentication(env: Env) -> None:
    port, token = env.ctl_port, env.ctl_token
    for r in (
        http(port, "GET", "/status"),
        http(port, "GET", "/status", token="wrong"),
        http(port, "GET", f"/status?auth={token}x"),
        http(port, "GET", "/status", headers={"Authorization": f"Bearer {token} x"}),
        http(port, "GET", "/status", headers={"Authorization": f"Basic {token}"}),
        # Only the first source present counts: a wrong header is not rescued by ?auth=.
        http(port, "GET", f"/status?auth={token}", token="wrong"),
        # Unknown paths are checked before routing.
        http(port, "GET", "/no/such/path"),
        http(port, "GET", "/controller/network"),
    ):
        assert (r.status, r.body) == (401, "{}")
        assert r.content_type == "application/json"
    for r in (
        http(port, "GET", "/status", token=token),
        http(port, "GET", "/status", headers={"x-zt1-auth": token}),
        http(port, "GET", f"/status?auth={token}"),
        http(port, "GET", "/status", headers={"Authorization": f"Bearer {token}"}),
        http(port, "GET", "/status", headers={"Authorization": f"bearer {token}"}),
    ):
        assert r.status == 200, r
        assert r.json()["address"] == env.ctl.address
    # /health needs no token.
    r = http(port, "GET", "/health")
    assert r.status == 200
    h = r.json()
    assert sorted(h) == [
        "clock",
        "online",
        "version",
        "versionBuild",
        "versionMajor",
        "versionMinor",
        "versionRev",
    ]
    assert h["online"] is True and h["version"] == "1.14.1"
    # The other node's token is not this node's.
    assert http(port, "GET", "/status", token=env.member_token).status == 401


def test_jsonp(env: Env) -> None:
    r = env.ctl_api("GET", "/health?jsonp=cb")
    assert r.content_type == "application/javascript"
    assert r.body.startswith("cb({") and r.body.endswith("});")
    r = http(env.ctl_port, "GET", "/status?jsonp=cb")
    assert (r.status, r.body) == (401, "cb({});")


# -- /status and /peer ------------------------------------------------------------------------


def test_status_fields_and_types(env: Env) -> None:
    r = env.ctl_api("GET", "/status")
    assert r.status == 200 and r.content_type == "application/json"
    keys = list(json.loads(r.body, object_pairs_hook=lambda kv: [k for k, _ in kv]))
    assert keys == sorted(keys), "keys are sorted as zerotier-one's nlohmann::json sorts them"
    s = r.json()
    assert s["address"] == env.ctl.address
    assert re.fullmatch(r"[0-9a-f]{10}", s["address"])
    assert s["publicIdentity"] == str(env.ctl.identity.public)
    assert s["online"] is True
    assert s["tcpFallbackActive"] is False
    assert s["version"] == "1.14.1"
    assert (s["versionMajor"], s["versionMinor"], s["versionRev"], s["versionBuild"]) == (
        1,
        14,
        1,
        0,
    )
    assert isinstance(s["clock"], int) and abs(s["clock"] - time.time() * 1000) < 60_000
    assert s["planetWorldId"] == env.ctl.planet.id
    assert s["planetWorldTimestamp"] == env.ctl.planet.timestamp
    settings = s["config"]["settings"]
    assert settings["primaryPort"] == env.ctl.port
    assert isinstance(settings["secondaryPort"], int) and isinstance(settings["tertiaryPort"], int)
    assert settings["homeDir"] == str(env.ctl_home)
    assert isinstance(settings["listeningOn"], list)
    assert all(re.fullmatch(r"[0-9a-f.:]+/\d+", a) for a in settings["surfaceAddresses"])
    assert settings["allowTcpFallbackRelay"] is False and settings["forceTcpRelay"] is False
    assert settings["portMappingEnabled"] is False
    assert (settings["softwareUpdate"], settings["softwareUpdateChannel"]) == (
        "disable",
        "release",
    )


def test_peers_list_the_root_as_planet(env: Env) -> None:
    root = env.root.address

    def root_peer() -> Optional[dict[str, Any]]:
        peers = env.member_api("GET", "/peer").json()
        return next((p for p in peers if p["address"] == root), None)

    wait_until(
        lambda: (p := root_peer()) is not None and p["latency"] >= 0,
        15,
        "a measured latency to the root",
    )
    peers = env.member_api("GET", "/peer").json()
    assert [p["address"] for p in peers] == sorted(p["address"] for p in peers)
    p = root_peer()
    assert p is not None
    assert p["role"] == "PLANET"
    assert (p["versionMajor"], p["versionMinor"], p["versionRev"]) == (1, 14, 1)
    assert p["version"] == "1.14.1"
    assert p["isBonded"] is False and p["tunneled"] is False
    assert isinstance(p["latency"], int)
    preferred = [x for x in p["paths"] if x["preferred"]]
    assert len(preferred) == 1
    path = preferred[0]
    assert path["address"] == f"127.0.0.1/{env.root.port}"
    assert path["active"] is True and path["expired"] is False
    now = time.time() * 1000
    assert 0 < path["lastReceive"] <= now + 1000 and 0 < path["lastSend"] <= now + 1000
    assert path["localPort"] == env.member.port
    # One peer, hex in either case; an unknown one is {} (200).
    one = env.member_api("GET", f"/peer/{root.upper()}")
    assert one.status == 200 and one.json()["address"] == root
    assert env.member_api("GET", "/peer/0000000001").json() == {}
    assert env.member_api("GET", "/peer/00000001").status == 404


# -- controller -------------------------------------------------------------------------------


NETWORK_DEFAULTS = {
    "authTokens": [None],
    "capabilities": [],
    "dns": [],
    "enableBroadcast": True,
    "ipAssignmentPools": [],
    "mtu": 2800,
    "multicastLimit": 32,
    "objtype": "network",
    "private": True,
    "remoteTraceLevel": 0,
    "remoteTraceTarget": None,
    "revision": 1,
    "routes": [],
    "rules": [{"not": False, "or": False, "type": "ACTION_ACCEPT"}],
    "tags": [],
    "v4AssignMode": {"zt": False},
    "v6AssignMode": {"6plane": False, "rfc4193": False, "zt": False},
}


def network_status(env: Env, nwid: str) -> dict[str, Any]:
    r = env.member_api("GET", f"/network/{nwid}")
    assert r.status == 200, r
    n: dict[str, Any] = r.json()
    return n


def test_controller_flow_as_ztncui(env: Env) -> None:
    ctl = env.ctl.address
    member = env.member.address

    r = env.ctl_api("GET", "/controller")
    assert r.status == 200
    info = r.json()
    assert (info["controller"], info["apiVersion"], info["databaseReady"]) == (True, 4, True)

    # Create with the legacy form, from the address /status gives.
    address = env.ctl_api("GET", "/status").json()["address"]
    r = env.ctl_api("POST", f"/controller/network/{address}______", {"name": "lab"})
    assert r.status == 200, r
    net = r.json()
    nwid = net["id"]
    assert re.fullmatch(ctl + r"[0-9a-f]{6}", nwid) and net["nwid"] == nwid
    assert net["name"] == "lab"
    for k, v in NETWORK_DEFAULTS.items():
        assert net[k] == v, k
    assert isinstance(net["creationTime"], int)
    # Another controller's prefix, or ours in upper case (compared as a string): 400.
    # (An address without hex letters has no upper-case form that differs.)
    others = ["0123456789" if ctl != "0123456789" else "9876543210"]
    if ctl.upper() != ctl:
        others.append(ctl.upper())
    for prefix in others:
        r = env.ctl_api("POST", f"/controller/network/{prefix}______", {"name": "x"})
        assert (r.status, r.body) == (400, ""), prefix

    assert nwid in env.ctl_api("GET", "/controller/network").json()
    got = env.ctl_api("GET", f"/controller/network/{nwid.upper()}")
    assert got.status == 200 and got.json() == net

    # Updates as ztncui's forms send them (strings for booleans).
    r = env.ctl_api(
        "POST",
        f"/controller/network/{nwid}",
        {
            "name": "lab2",
            "private": "true",
            "v4AssignMode": {"zt": "true"},
            "v6AssignMode": {"rfc4193": "false"},
            "ipAssignmentPools": [{"ipRangeStart": "10.147.17.10", "ipRangeEnd": "10.147.17.250"}],
            "routes": [{"target": "10.147.17.0/24", "via": None}],
            "rulesSource": "ignored",
            "multicastLimit": "64",
        },
    )
    assert r.status == 200, r
    net = r.json()
    assert net["name"] == "lab2" and net["private"] is True
    assert net["v4AssignMode"] == {"zt": True}
    assert net["v6AssignMode"] == {"rfc4193": False}
    assert net["routes"] == [{"target": "10.147.17.0/24", "via": None}]
    assert net["ipAssignmentPools"] == [
        {"ipRangeEnd": "10.147.17.250", "ipRangeStart": "10.147.17.10"}
    ]
    assert net["rulesSource"] == "" and net["multicastLimit"] == 64
    assert net["revision"] == 2

    # The member joins through its own API and shows up pending.
    r = env.member_api("POST", f"/network/{nwid}", {})
    assert r.status == 200, r
    joined = r.json()
    assert joined["id"] == joined["nwid"] == nwid
    assert joined["allowManaged"] is True and joined["allowDNS"] is False
    wait_until(
        lambda: member in env.ctl_api("GET", f"/controller/network/{nwid}/member").json(),
        20,
        "the member's request",
    )
    members = env.ctl_api("GET", f"/controller/network/{nwid}/member").json()
    assert members == {member: members[member]} and isinstance(members[member], int)
    m = env.ctl_api("GET", f"/controller/network/{nwid}/member/{member}").json()
    assert m["authorized"] is False and m["id"] == m["address"] == member
    assert m["nwid"] == nwid and m["identity"] == str(env.member.identity.public)
    assert m["ipAssignments"] == [] and m["vMajor"] == -1
    wait_until(lambda: network_status(env, nwid)["status"] == "ACCESS_DENIED", 20, "ACCESS_DENIED")

    r = env.ctl_api("GET", f"/unstable/controller/network/{nwid}/member")
    assert r.json()["meta"] == {"authorizedCount": 0, "totalCount": 1}

    # Authorize as ztncui does (a string).
    r = env.ctl_api("POST", f"/controller/network/{nwid}/member/{member}", {"authorized": "true"})
    assert r.status == 200, r
    m = r.json()
    assert m["authorized"] is True and m["lastAuthorizedCredentialType"] == "api"
    assert m["lastAuthorizedTime"] > 0
    wait_until(
        lambda: (
            network_status(env, nwid)["status"] == "OK"
            and bool(network_status(env, nwid)["assignedAddresses"])
        ),
        30,
        "the member's config",
    )
    n = network_status(env, nwid)
    assert n["name"] == "lab2" and n["type"] == "PRIVATE"
    (addr,) = n["assignedAddresses"]
    assert re.fullmatch(r"10\.147\.17\.\d+/24", addr)
    assert {"target": "10.147.17.0/24", "via": None, "flags": 0, "metric": 0} in n["routes"]
    assert n["netconfRevision"] > 0
    m = env.ctl_api("GET", f"/controller/network/{nwid}/member/{member}").json()
    assert m["ipAssignments"] == [addr.split("/")[0]]
    assert (m["vMajor"], m["vMinor"], m["vRev"]) == (1, 14, 1)

    r = env.ctl_api("GET", "/unstable/controller/network")
    data = r.json()
    assert data["meta"]["networkCount"] == len(data["data"]) >= 1
    mine = next(x for x in data["data"] if x["id"] == nwid)
    assert mine["meta"] == {"authorizedMemberCount": 1, "totalMemberCount": 1}
    r = env.ctl_api("GET", f"/unstable/controller/network/{nwid}/member")
    u = r.json()
    assert u["meta"] == {"authorizedCount": 1, "totalCount": 1}
    assert [x["id"] for x in u["data"]] == [member]

    # Deleting returns the record as it was; then 404 with an empty body.
    r = env.ctl_api("DELETE", f"/controller/network/{nwid}/member/{member}")
    assert r.status == 200 and r.json()["authorized"] is True
    for method in ("GET", "DELETE"):
        r = env.ctl_api(method, f"/controller/network/{nwid}/member/{member}")
        assert (r.status, r.body) == (404, "")
    r = env.ctl_api("DELETE", f"/controller/network/{nwid}")
    assert r.status == 200 and r.json()["name"] == "lab2"
    for path in (f"/controller/network/{nwid}", f"/controller/network/{nwid}/member"):
        r = env.ctl_api("GET", path)
        assert (r.status, r.body) == (404, "")
    assert env.ctl_api("DELETE", f"/controller/network/{nwid}").status == 404
    assert nwid not in env.ctl_api("GET", "/controller/network").json()
    # Posting a member of a missing network is 404, whatever the body.
    for raw in (b"{}", b"{not json"):
        r = env.ctl_api("POST", f"/controller/network/{nwid}/member/{member}", raw=raw)
        assert (r.status, r.body) == (404, "")
    env.member_api("DELETE", f"/network/{nwid}")


def test_create_new_style_and_errors(env: Env) -> None:
    r = env.ctl_api("POST", "/controller/network", {"name": "new-style", "private": False})
    assert r.status == 200
    net = r.json()
    nwid = net["id"]
    assert nwid.startswith(env.ctl.address) and net["private"] is False
    path = f"/controller/network/{nwid}"
    for raw in (b"{not json", b"", b"\xff\xfe"):
        r = env.ctl_api("POST", path, raw=raw)
        assert r.status == 500, raw
        err = r.json()
        assert err["error"] == 500 and isinstance(err["description"], str)
        assert r.body.startswith('{"error": 500, "description": ')
    r = env.ctl_api("POST", f"{path}/member/0123456789", raw=b"[1,")
    assert r.status == 500 and r.json()["error"] == 500
    # Unknown paths and methods: 404 with an empty body.
    for method, p in (
        ("GET", "/nothing"),
        ("GET", "/status/"),
        ("GET", f"{path}/"),
        ("GET", f"{path}/members"),
        ("PATCH", path),
        ("POST", "/peer"),
        ("GET", f"/unstable/controller/network/{nwid}"),
    ):
        r = env.ctl_api(method, p)
        assert (r.status, r.body) == (404, ""), (method, p)
    # A network with foreign prefix may be stored (zerotier-one does not check).
    r = env.ctl_api("POST", "/controller/network/0123456789abcdef", {"name": "foreign"})
    assert r.status == 200 and r.json()["id"] == "0123456789abcdef"
    for n in (nwid, "0123456789abcdef"):
        assert env.ctl_api("DELETE", f"/controller/network/{n}").status == 200
    # The member node runs no controller.
    r = env.member_api("GET", "/controller")
    assert (r.status, r.body) == (404, "")


# -- /network on the member -------------------------------------------------------------------


def test_network_join_settings_and_leave(env: Env) -> None:
    nwid = env.ctl.address + "abcdef"  # not in the controller's database: NOT_FOUND
    conf = env.member_home / "networks.d" / f"{nwid}.local.conf"
    r = env.member_api("GET", f"/network/{nwid}")
    assert (r.status, r.body) == (404, "{}")
    r = env.member_api("POST", f"/network/{nwid.upper()}", {"allowDNS": True, "allowGlobal": "yes"})
    assert r.status == 200, r
    n = r.json()
    assert n["id"] == nwid
    assert (n["allowManaged"], n["allowGlobal"], n["allowDefault"], n["allowDNS"]) == (
        True,
        False,
        False,
        True,
    )
    assert re.fullmatch(r"([0-9a-f]{2}:){5}[0-9a-f]{2}", n["mac"])
    for k, t in (
        ("assignedAddresses", list),
        ("routes", list),
        ("multicastSubscriptions", list),
        ("dns", dict),
        ("mtu", int),
        ("portError", int),
        ("netconfRevision", int),
        ("portDeviceName", str),
        ("dhcp", bool),
        ("bridge", bool),
        ("broadcastEnabled", bool),
    ):
        assert isinstance(n[k], t), k
    assert n["type"] in ("PRIVATE", "PUBLIC")
    assert conf.read_text() == "allowManaged=1\nallowGlobal=0\nallowDefault=0\nallowDNS=1\n"
    # A body that is not JSON is no settings; the join is idempotent.
    r = env.member_api("PUT", f"/network/{nwid}", raw=b"not json")
    assert r.status == 200 and r.json()["allowDNS"] is True
    r = env.member_api("POST", f"/network/{nwid}")
    assert r.status == 200 and r.json()["allowDNS"] is True
    # In-process calls see the same settings.
    assert env.member.api("GET", f"/network/{nwid}")["allowDNS"] is True
    wait_until(lambda: network_status(env, nwid)["status"] == "NOT_FOUND", 20, "NOT_FOUND")
    listed = env.member_api("GET", "/network").json()
    assert nwid in [x["id"] for x in listed]
    assert [x["id"] for x in listed] == sorted(x["id"] for x in listed)

    r = env.member_api("DELETE", f"/network/{nwid}")
    assert (r.status, r.json()) == (200, {"result": True})
    assert not conf.exists()
    r = env.member_api("DELETE", f"/network/{nwid}")
    assert (r.status, r.body) == (200, "{}")
    r = env.member_api("GET", f"/network/{nwid}")
    assert (r.status, r.body) == (404, "{}")
    # Rejoining starts from the defaults again.
    r = env.member_api("POST", f"/network/{nwid}")
    assert r.json()["allowDNS"] is False
    assert env.member_api("DELETE", f"/network/{nwid}").json() == {"result": True}


def test_config_endpoints(env: Env) -> None:
    r = env.member_api("GET", "/config")
    assert (r.status, r.json()) == (200, {})
    r = env.member_api("POST", "/config/settings", {"softwareUpdate": "apply"})
    assert (r.status, r.body) == (200, "{}")
    lc = json.loads((env.member_home / "local.conf").read_text())
    assert lc == {"settings": {"softwareUpdate": "apply"}}
    assert env.member_api("GET", "/config").json() == lc
    s = env.member_api("GET", "/status").json()["config"]["settings"]
    assert s["softwareUpdate"] == "apply"
    os.remove(env.member_home / "local.conf")
    assert env.member_api("GET", "/moon").json() == []
    assert env.member_api("GET", "/moon/0123456789").json() == {}


# -- robustness -------------------------------------------------------------------------------


def raw_exchange(port: int, data: bytes, *, shutdown: bool = False, timeout: float = 15) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        if shutdown:
            s.shutdown(socket.SHUT_WR)
        out = b""
        try:
            while chunk := s.recv(65536):
                out += chunk
        except ConnectionResetError:
            pass
        return out


def test_garbage_and_oversized_requests(env: Env) -> None:
    port = env.ctl_port
    for data, status in (
        (b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03" + bytes(range(256)), b"400"),
        (b"GARBAGE\r\n\r\n", b"400"),
        (b"GET / HTTP/1.1\r\nContent-Length: -5\r\n\r\n", b"400"),
        (b"POST /status HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", b"400"),
        (b"POST /x HTTP/1.1\r\nContent-Length: 99999999999999\r\n\r\n{", b"413"),
        (b"GET /" + b"a" * 20000 + b" HTTP/1.1\r\n\r\n", b"414"),
        (b"GET / HTTP/1.1\r\n" + b"X: y\r\n" * 200 + b"\r\n", b"431"),
    ):
        reply = raw_exchange(port, data)
        assert reply.startswith(b"HTTP/1.1 " + status + b" "), (data[:40], reply[:80])
    # A body shorter than announced, then the client gives up sending: 400 for a token holder;
    # without the token the body is never read, and the head alone is answered 401.
    auth = f"X-ZT1-Auth: {env.ctl_token}\r\n".encode()
    head = b"POST /x HTTP/1.1\r\nContent-Length: 100\r\n"
    reply = raw_exchange(port, head + auth + b"\r\n{}", shutdown=True)
    assert reply.startswith(b"HTTP/1.1 400 ")
    reply = raw_exchange(port, head + b"\r\n{}", shutdown=True)
    assert reply.startswith(b"HTTP/1.1 401 ")
    # Connecting and closing at once is harmless.
    assert raw_exchange(port, b"", shutdown=True) == b""
    # A chunked body: refused from the head without the token, read with it.
    chunked = b"Transfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n"
    reply = raw_exchange(port, b"POST /controller/network HTTP/1.1\r\n" + chunked)
    assert reply.startswith(b"HTTP/1.1 401 ")
    local_conf = env.ctl_home / "local.conf"
    before = local_conf.read_bytes() if local_conf.exists() else None
    try:
        reply = raw_exchange(port, b"POST /config/settings HTTP/1.1\r\n" + auth + chunked)
        assert reply.startswith(b"HTTP/1.1 200 ") and reply.endswith(b"\r\n\r\n{}")
    finally:
        if before is None:
            local_conf.unlink(missing_ok=True)
        else:
            local_conf.write_bytes(before)
    # Non-UTF-8 in a header value does not matter.
    reply = raw_exchange(port, b"GET /health HTTP/1.1\r\nX-Odd: \xff\xfe\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 200 ")


def test_slow_clients_do_not_block_others(env: Env) -> None:
    port = env.ctl_port
    slow = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(8)]
    try:
        for s in slow:
            s.sendall(b"POST /status HTTP/1.1\r\nContent-Length: 10\r\n\r\n{")
        started = time.monotonic()
        r = env.ctl_api("GET", "/status")
        assert r.status == 200
        assert time.monotonic() - started < 5
    finally:
        for s in slow:
            s.close()
    assert env.ctl_api("GET", "/health").status == 200


def _rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads /proc")
def test_unauthenticated_bodies_are_not_buffered(tmp_path: pathlib.Path) -> None:
    """64 connections without a token, each sending a 15 MiB body less one byte and holding
    it, add less than 20 MB to the serving process (they are answered 401 from the head)."""
    rh = root_home(tmp_path)
    root, port, home = rh.identity, rh.port, rh.home
    proc = rh.run(env=dict(os.environ, ZT_ALLOWED_DESTINATIONS="127.0.0.0/8"))
    socks: list[socket.socket] = []
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().startswith(f"root {root.address} listening")
        assert proc.stdout.readline() == f"api on 127.0.0.1:{port}\n"
        token = api_token(home)
        assert http(port, "GET", "/status", token=token).status == 200
        time.sleep(0.5)
        base = _rss_kb(proc.pid)
        size = 15 << 20
        body = memoryview(bytes(size - 1))
        head = f"POST /controller/network HTTP/1.1\r\nContent-Length: {size}\r\n\r\n".encode()
        sent: dict[socket.socket, int] = {}
        for _ in range(64):
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            s.sendall(head)
            s.setblocking(False)
            socks.append(s)
            sent[s] = 0
        peak = base
        deadline = time.monotonic() + 20
        active = set(socks)
        while active and time.monotonic() < deadline:
            _, writable, _ = select.select([], list(active), [], 0.05)
            for s in writable:
                try:
                    sent[s] += s.send(body[sent[s] : sent[s] + (256 << 10)])
                except BlockingIOError:
                    continue
                except OSError:
                    active.discard(s)  # refused and closed by the server
                    continue
                if sent[s] >= size - 1:
                    active.discard(s)  # held, one byte short
            peak = max(peak, _rss_kb(proc.pid))
        # Hold them a moment longer.
        for _ in range(20):
            peak = max(peak, _rss_kb(proc.pid))
            time.sleep(0.05)
        added_mb = (peak - base) / 1024
        print(f"RSS {base / 1024:.1f} MB, peak {peak / 1024:.1f} MB: +{added_mb:.1f} MB")
        assert added_mb < 20, f"+{added_mb:.1f} MB"
        assert sum(sent.values()) < 64 * (size - 1), "the server took every body"
        assert http(port, "GET", "/status", token=token).status == 200
    finally:
        for s in socks:
            s.close()
        proc.terminate()
        proc.communicate(timeout=30)


def test_joined_networks_are_capped(tmp_path: pathlib.Path) -> None:
    root_id = zt.Identity.generate()
    planet, port = loopback_planet(root_id)
    opts = options(planet, identity=root_id, port=port, store=str(tmp_path), api_port=0)
    with zt.Node(opts) as node:
        token = api_token(tmp_path)
        ids = [f"deadbeef00{i:06x}" for i in range(1025)]
        for nwid in ids[:1024]:
            node.join(nwid)
        node.join(ids[0])  # a member already: fine at the cap
        with pytest.raises(zt.errors.NetworkError, match="member of 1024 networks"):
            node.join(ids[1024])
        r = http(api_port(node), "POST", f"/network/{ids[1024]}", {}, token=token)
        assert r.status == 403, r
        assert r.json()["description"].startswith("this node is a member of 1024 networks")
        assert len(node.networks()) == 1024
        assert node.leave(ids[0])
        node.join(ids[1024])
        assert node.network(ids[1024]) is not None


def test_a_taken_api_port_is_refused(tmp_path: pathlib.Path) -> None:
    """Another program on 127.0.0.1's port would answer the API's clients (zt cli,
    zerotier-cli): start() raises OSError(EADDRINUSE) naming it and leaves the node stopped;
    `zt run` says so and exits 1."""
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        node = zt.Node(store=str(tmp_path / "n"), port=0, api_port=port)
        with pytest.raises(OSError, match=f"127.0.0.1:{port}") as e:
            node.start()
        assert e.value.errno == errno.EADDRINUSE
        assert node.state == zt.NodeState.STOPPED and node.api_port is None
        node.close()
        run = subprocess.run(
            [sys.executable, "-m", "zt", "run", "--home", str(tmp_path / "r"), "--port", "0",
             "--api-port", str(port)],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert run.returncode == 1, run
        assert f"127.0.0.1:{port}" in run.stderr and "in use" in run.stderr, run.stderr
