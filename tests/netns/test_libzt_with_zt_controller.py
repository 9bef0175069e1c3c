"""Stock ZeroTier peers (libzt 1.8.4) as members of a private network hosted by a zt controller.

One lab (see :mod:`tests.netns.netlab`) of four hosts: host 0 runs ``zt run --controller``, the
root of a one-root planet and the network's controller (driven through its local JSON API,
zerotier-one's ``/controller`` paths, from inside host 0's namespace); hosts 1 and 2 run libzt
nodes (client and server, see ``managed`` in :func:`tests.interop.libzt.run_node_in_netns`);
host 3 runs a zt node (``ztmember.py``) that watches the network's frames and ARPs itself.

The libzt nodes are held while unauthorized, get their IPv4 from the network's pool and their
rfc4193 IPv6 once authorized, move 4 MiB over TCP/IPv4 checked by sha256 (IPv4 because libzt
1.8.4 crashes sending TCP bulk over IPv6), and the client loses access when deauthorized.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import subprocess
import sys
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Optional

import pytest

import zt
from tests.interop.libzt import NetnsNodeResult
from tests.interop.marks import INTEROP
from tests.netns.netlab import NetLab, require_netlab
from tests.netns.ztroot import (
    RootSetup,
    ZtRoot,
    api,
    libzt_node,
    make_root,
    zt_controller,
)

pytestmark = [pytest.mark.netns, *INTEROP]

MEMBER_SCRIPT = str(Path(__file__).with_name("ztmember.py"))
# The lab's network with rfc4193 addresses too, and a pool of its own.
NETWORK: dict[str, Any] = {
    **zt.lab.DEFAULT_NETWORK,
    "name": "interop",
    "v6AssignMode": {"rfc4193": True, "6plane": False, "zt": False},
    "ipAssignmentPools": [{"ipRangeStart": "198.18.1.10", "ipRangeEnd": "198.18.1.250"}],
}
POOL = (ipaddress.IPv4Address("198.18.1.10"), ipaddress.IPv4Address("198.18.1.250"))
TCP_PORT = 5001
BULK_BYTES = 4 << 20
HOLD_S = 4.0  # how long unauthorized members must stay without a config
JOIN_TIMEOUT_S = 45.0  # node online (<= 30 s) and joined
PENDING_TIMEOUT_S = 20.0  # joined until the controller lists the member (libzt: ~5 s)
READY_TIMEOUT_S = 30.0  # authorized until configured with both addresses
TRANSFER_TIMEOUT_S = 60.0
PROBE_WINDOW_S = 40.0
WORKER_TIMEOUT_S = 150.0
STOP_TIMEOUT_S = 30.0


class Scenario:
    """The lab's moving parts, and what a failure message should show of them."""

    def __init__(self, lab: NetLab, setup: RootSetup, root: ZtRoot, exchange: Path) -> None:
        self.lab = lab
        self.setup = setup
        self.root = root
        self.exchange = exchange
        self.started = time.monotonic()
        self.times: dict[str, float] = {}
        self.at: dict[str, float] = {}  # time.monotonic() of each mark
        self.workers: dict[str, Future[NetnsNodeResult]] = {}
        self.member: Optional[subprocess.Popen[str]] = None
        self.member_log: Optional[Path] = None
        self.member_report: Optional[dict[str, Any]] = None
        self.nwid = ""
        self.may_end: set[str] = set()  # workers allowed to have ended by now

    def mark(self, what: str) -> float:
        self.at[what] = time.monotonic()
        self.times[what] = round(self.at[what] - self.started, 2)
        return self.times[what]

    def api(self, method: str, path: str, body: Optional[Any] = None) -> tuple[int, Any]:
        return api(self.lab, self.setup.home, method, path, body)

    def api_ok(self, method: str, path: str, body: Optional[Any] = None) -> Any:
        status, out = self.api(method, path, body)
        if status != 200:
            self.fail(f"{method} {path} answered {status}: {out!r}")
        return out

    def member_record(self, address: str) -> dict[str, Any]:
        rec: dict[str, Any] = self.api_ok(
            "GET", f"/controller/network/{self.nwid}/member/{address}"
        )
        return rec

    def describe(self) -> str:
        parts = [f"timeline {self.times}", self.root.describe()]
        for name, future in self.workers.items():
            if future.done() and future.exception() is None:
                parts.append(f"--- libzt {name} ---\n{json.dumps(future.result())}")
            elif future.done():
                parts.append(f"--- libzt {name} raised ---\n{future.exception()}")
            else:
                parts.append(f"--- libzt {name}: still running ---")
        if self.member_report is not None:
            parts.append(f"--- zt member ---\n{json.dumps(self.member_report)}")
        if self.member_log is not None and self.member_log.is_file():
            log = self.member_log.read_text(errors="replace").strip().splitlines()
            parts.append("--- zt member stderr ---\n" + "\n".join(log[-30:]))
        files = sorted(p.name for p in self.exchange.iterdir())
        parts.append(f"exchange files: {files}")
        return "\n".join(parts)

    def fail(self, message: str) -> None:
        pytest.fail(f"{message}\n{self.describe()}")

    def check(self, ok: bool, message: str) -> None:
        if not ok:
            self.fail(message)

    def check_alive(self) -> None:
        """Fails at once when the controller, a libzt worker or the zt member has ended."""
        if self.root.proc.poll() is not None:
            self.fail("zt run (root + controller) exited")
        for name, future in self.workers.items():
            if future.done() and name not in self.may_end:
                future.result()  # a skip or an exception raised in the worker thread
                self.fail(f"libzt {name} ended early")
        if (
            self.member is not None
            and self.member.poll() is not None
            and "member" not in self.may_end
        ):
            self.fail(f"the zt member exited ({self.member.returncode})")

    def wait(self, what: str, predicate: Callable[[], bool], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            self.check_alive()
            if time.monotonic() > deadline:
                self.fail(f"timed out after {timeout:g} s waiting for {what}")
            time.sleep(0.05)
        self.mark(what)

    def wait_file(self, name: str, timeout: float) -> dict[str, Any]:
        path = self.exchange / name
        self.wait(name, path.is_file, timeout)
        info: dict[str, Any] = json.loads(path.read_text())
        return info

    def touch(self, name: str) -> None:
        (self.exchange / name).touch()
        self.mark(name)

    def wait_pending(self, address: str) -> dict[str, Any]:
        """Waits until the controller lists ``address`` as a member; returns its record."""

        def listed() -> bool:
            members = self.api_ok("GET", f"/controller/network/{self.nwid}/member")
            return address in members

        self.wait(f"{address} listed", listed, PENDING_TIMEOUT_S)
        return self.member_record(address)

    def set_authorized(self, address: str, authorized: bool) -> dict[str, Any]:
        """POSTs ``authorized``; marks "[de]authorized X" when done, and records in ``at``
        "posting [de]authorized X": when the call began."""
        path = f"/controller/network/{self.nwid}/member/{address}"
        what = f"{'' if authorized else 'de'}authorized {address}"
        self.at[f"posting {what}"] = time.monotonic()
        rec: dict[str, Any] = self.api_ok("POST", path, {"authorized": authorized})
        self.check(rec.get("authorized") is authorized, f"POST {path} returned {rec}")
        self.mark(what)
        return rec


def in_pool(ip: str) -> bool:
    return POOL[0] <= ipaddress.IPv4Address(ip) <= POOL[1]


def first_time(report: dict[str, Any], status: str) -> Optional[float]:
    """When (``time.monotonic()``) a worker's report first shows ``status``, or None."""
    for seen in report.get("statuses", []):
        if seen["status"] == status:
            return float(report["t0"]) + float(seen["t"])
    return None


def test_libzt_nodes_join_a_private_network_of_a_zt_controller(tmp_path: Path) -> None:
    require_netlab()
    exchange = tmp_path / "exchange"
    exchange.mkdir()
    with NetLab(4) as lab:
        setup = make_root(tmp_path, lab)
        with (
            zt_controller(lab, 0, setup, tmp_path / "root.log") as root,
            ThreadPoolExecutor(max_workers=2) as pool,
        ):
            sc = Scenario(lab, setup, root, exchange)
            try:
                run_scenario(sc, pool, tmp_path)
            finally:
                # Release whoever still waits (on failure too), then collect.
                (exchange / "stop").touch()
                if sc.member is not None:
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        sc.member.wait(timeout=STOP_TIMEOUT_S)
    print(
        f"\ncontroller {setup.identity.address}, network {sc.nwid}; timeline (s): "
        + ", ".join(f"{k} {v}" for k, v in sc.times.items())
    )


def run_scenario(sc: Scenario, pool: ThreadPoolExecutor, tmp_path: Path) -> None:
    controller = sc.setup.identity.address
    created = sc.api_ok("POST", f"/controller/network/{controller}______", NETWORK)
    nwid = str(created["id"])
    sc.nwid = nwid
    sc.check(zt.network.controller_of(nwid) == controller, f"network {nwid} not under us")
    sc.check(created.get("private") is True, f"created {created}")
    sc.mark("network created")

    # -- two libzt nodes join and are held -------------------------------------------------
    managed: dict[str, Any] = {
        "nwid": nwid,
        "exchange_dir": str(sc.exchange),
        "port": TCP_PORT,
        "timeout_s": WORKER_TIMEOUT_S,
    }
    sc.workers["server"] = pool.submit(
        libzt_node, sc.lab, 2, tmp_path / "libzt-server", sc.setup.planet,
        managed={**managed, "role": "server"},
    )  # fmt: skip
    sc.workers["client"] = pool.submit(
        libzt_node, sc.lab, 1, tmp_path / "libzt-client", sc.setup.planet,
        managed={**managed, "role": "client", "bytes": BULK_BYTES,
                 "probe_window_s": PROBE_WINDOW_S},
    )  # fmt: skip
    ids = {
        role: str(sc.wait_file(f"{role}.joined.json", JOIN_TIMEOUT_S)["node_id"])
        for role in ("server", "client")
    }
    for role, address in ids.items():
        rec = sc.wait_pending(address)
        sc.check(rec.get("authorized") is False, f"{role} {address} not pending: {rec}")
    held_from = time.monotonic()
    sc.wait("hold", lambda: time.monotonic() - held_from >= HOLD_S, HOLD_S + 5)
    early = sorted(p.name for p in sc.exchange.glob("*.ready.json"))
    sc.check(not early, f"unauthorized members got configured: {early}")

    # -- authorized: both configured from the controller -----------------------------------
    for address in ids.values():
        sc.set_authorized(address, True)
    ready = {
        role: sc.wait_file(f"{role}.ready.json", READY_TIMEOUT_S) for role in ("server", "client")
    }
    for role, info in ready.items():
        address = ids[role]
        sc.check(in_pool(str(info["ipv4"])), f"{role} IPv4 {info['ipv4']} not from the pool")
        rfc4193 = zt.network.rfc4193_address(nwid, address)
        sc.check(
            ipaddress.IPv6Address(str(info["ipv6"])) == rfc4193,
            f"{role} IPv6 {info['ipv6']} is not its rfc4193 address {rfc4193}",
        )
        mac = zt.network.member_mac(nwid, address)
        sc.check(info["mac"] == mac, f"{role} MAC {info['mac']}, expected {mac}")
        rec = sc.member_record(address)
        sc.check(rec.get("authorized") is True, f"{role} record {rec}")
        sc.check(
            info["ipv4"] in rec.get("ipAssignments", []),
            f"{role} record lacks its IPv4 {info['ipv4']}: {rec}",
        )
    sc.check(ready["server"]["ipv4"] != ready["client"]["ipv4"], f"same IPv4: {ready}")

    # -- a zt node joins too ---------------------------------------------------------------
    sc.member_log = tmp_path / "ztmember.log"
    argv = [sys.executable, MEMBER_SCRIPT, str(sc.setup.planet_file), str(tmp_path / "zt-home"),
            str(sc.exchange), nwid, str(WORKER_TIMEOUT_S)]  # fmt: skip
    with open(sc.member_log, "w") as err:
        sc.member = sc.lab.popen(3, argv, stdout=subprocess.PIPE, stderr=err, text=True)
    zt_address = str(sc.wait_file("zt.joined.json", JOIN_TIMEOUT_S)["address"])
    rec = sc.wait_pending(zt_address)
    sc.check(rec.get("authorized") is False, f"zt member {zt_address} not pending: {rec}")
    sc.set_authorized(zt_address, True)
    zt_ready = sc.wait_file("zt.ready.json", READY_TIMEOUT_S)
    sc.check(in_pool(str(zt_ready["ipv4"])), f"zt member IPv4 {zt_ready['ipv4']} not in the pool")
    zt_rfc4193 = str(zt.network.rfc4193_address(nwid, zt_address))
    sc.check(zt_rfc4193 in zt_ready["ipv6"], f"zt member lacks {zt_rfc4193}: {zt_ready}")
    sc.check(zt_ready["mac"] == zt.network.member_mac(nwid, zt_address), f"{zt_ready}")

    # -- TCP over the network: 4 MiB client -> server, sha256 back --------------------------
    # A moment for the zt member's subscription to the server's ARP group to reach the root,
    # so that the gather for the client's ARP request names it.
    time.sleep(1.0)
    root_before = sc.lab.link_stats(0)
    sc.touch("go")
    done = sc.wait_file("client.done.json", TRANSFER_TIMEOUT_S)
    root_after = sc.lab.link_stats(0)
    # Relayed by the root, the transfer's ~3000 segments would all cross the root's host.
    root_rx = root_after["rx_packets"] - root_before["rx_packets"]
    sc.check(done.get("sha256_ok") is True, f"digest mismatch: {done}")

    # -- deauthorized: the client loses access, the zt member still reaches the server -----
    sc.set_authorized(ids["client"], False)
    sc.touch("deauthorized")
    sc.touch("rearp")
    rearp = sc.wait_file("zt.rearp.json", 30.0)
    sc.may_end.add("client")
    sc.wait("client probes", sc.workers["client"].done, PROBE_WINDOW_S + 30.0)
    client_result = sc.workers["client"].result()
    sc.may_end.update(("server", "member"))
    sc.touch("stop")
    sc.wait("server stopped", sc.workers["server"].done, STOP_TIMEOUT_S)
    server_result = sc.workers["server"].result()
    assert sc.member is not None
    try:
        out, _ = sc.member.communicate(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        sc.fail("the zt member did not stop")
    sc.member_report = json.loads(out.strip().splitlines()[-1]) if out.strip() else {}
    sc.mark("all stopped")

    # -- what each side reported -----------------------------------------------------------
    client, server = client_result["managed"] or {}, server_result["managed"] or {}
    member = sc.member_report
    reports = {"client": client_result, "server": server_result, "member": member}
    (tmp_path / "reports.json").write_text(json.dumps(reports, indent=1))
    sc.check(client.get("error") is None, "the libzt client failed")
    sc.check(server.get("error") is None, "the libzt server failed")
    sc.check(member.get("error") is None, "the zt member failed")
    # The zt member does show the controller's answer while it was pending.
    seen = [str(s["status"]) for s in member.get("statuses", [])]
    sc.check(
        "ACCESS_DENIED" in seen and "OK" in seen and seen.index("ACCESS_DENIED") < seen.index("OK"),
        f"zt member statuses {member.get('statuses')}: expected ACCESS_DENIED, then OK",
    )
    # Held until authorized: libzt saw OK only after the authorization.  (libzt reports no
    # ACCESS_DENIED meanwhile: its status is the one of the core's last config callback, and
    # the ZeroTier core makes none when a controller denies access before any config.)
    for role, report in (("client", client), ("server", server)):
        first_ok = first_time(report, "OK")
        # From when the POST began: the member's next request may be answered before it returns.
        authorized_at = sc.at[f"posting authorized {ids[role]}"]
        sc.check(
            first_ok is not None and first_ok > authorized_at,
            f"libzt {role} statuses {report.get('statuses')} (t0 {report.get('t0')}): "
            f"not OK only after its authorization at {authorized_at}",
        )
    sc.check(client.get("sha256_ok") is True, "client: sha256 mismatch")
    sc.check(server.get("bytes_received") == BULK_BYTES, "server: wrong byte count")
    sc.check(server.get("sha256") == client.get("sha256"), "server and client digests differ")
    client_ip, server_ip = str(ready["client"]["ipv4"]), str(ready["server"]["ipv4"])
    sc.check(str(server.get("bulk_from", "")).startswith(f"{client_ip}:"), "bulk not from client")

    # ARP on the network, as the zt member saw it.
    client_mac, server_mac = ready["client"]["mac"], ready["server"]["mac"]
    frames = member.get("frames", [])
    arps = [f["arp"] | {"src": f["src"], "dst": f["dst"]} for f in frames if "arp" in f]
    client_request = [
        a for a in arps
        if a["op"] == 1 and a["sha"] == client_mac and a["src"] == client_mac
        and a["spa"] == client_ip and a["tpa"] == server_ip and a["dst"] == "ff:ff:ff:ff:ff:ff"
    ]  # fmt: skip
    sc.check(bool(client_request), f"the zt member saw no ARP request from the client: {arps}")
    server_reply = [
        a for a in arps
        if a["op"] == 2 and a["sha"] == server_mac and a["src"] == server_mac
        and a["spa"] == server_ip and a["tpa"] == zt_ready["ipv4"]
        and a["tha"] == zt_ready["mac"] and a["dst"] == zt_ready["mac"]
    ]  # fmt: skip
    sc.check(bool(server_reply), f"the zt member got no ARP reply from the server: {arps}")
    sc.check(member.get("arp", {}).get("ok") is True, "the zt member's ARP went unanswered")
    sc.check(rearp.get("ok") is True, "after the deauthorization the server no longer answers")

    # The deauthorized client: no probe reached the server.
    sc.check(client.get("probe_after_deauth") is False, "the deauthorized client still connects")
    sc.check(bool(client.get("probes")), "the client made no probe")
    from_client = [p for p in server.get("probes", []) if str(p["from"]).startswith(client_ip)]
    sc.check(not from_client, f"the server accepted probes from the client: {from_client}")

    print(
        f"\nclient {ids['client']} {client_ip}, server {ids['server']} {server_ip}, "
        f"zt member {zt_address} {zt_ready['ipv4']}; client statuses {client.get('statuses')}; "
        f"server statuses {server.get('statuses')}"
    )
    print(
        f"transfer {BULK_BYTES} B in {client.get('transfer_s', 0):.2f} s "
        f"({client.get('mbit_s', 0):.1f} Mbit/s; the root's host received {root_rx} packets "
        f"meanwhile); zt member ARP {member.get('arp')}, "
        f"again after deauth {rearp}; client probes after deauth: "
        f"{len(client.get('probes', []))}, none answered; frames seen by the zt member: "
        f"{len(frames)} ({len(arps)} ARP)"
    )
