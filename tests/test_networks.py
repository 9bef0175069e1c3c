"""Networks on loopback: a zt root, a zt controller and zt members in one process (plus a
``zt run`` controller process for the crash test). Interop with libzt members is in
``tests/netns``."""

from __future__ import annotations

import ipaddress
import json
import os
import signal
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

import zt
from zt.events import AddressEvent, EventCode, NetworkEvent

from .support import NETWORK, Lab, api_token, free_udp_port, wait_until, zt_run


def arp_request(
    src_mac: str, src_ip: ipaddress.IPv4Address, target: ipaddress.IPv4Address
) -> bytes:
    mac = bytes.fromhex(src_mac.replace(":", ""))
    header = b"\xff" * 6 + mac + b"\x08\x06"
    body = bytes([0, 1, 8, 0, 6, 4, 0, 1]) + mac + src_ip.packed + b"\0" * 6 + target.packed
    return header + body


def recv_frame(tap: zt._native.FrameTap, want: bytes, timeout: float) -> bool:
    """Whether ``want`` arrives on the tap within ``timeout`` (the node's own stack also talks on
    the network, e.g. it answers ARP, so other frames may come first)."""
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        if tap.recv(left) == want:
            return True
    return False


def drain(stream: zt.EventStream) -> list[zt.Event]:
    out = []
    while (ev := stream.get(0.05)) is not None:
        out.append(ev)
    return out


def test_members_are_held_authorized_configured_and_revoked(lab: Lab) -> None:
    assert lab.ctl.controller is not None
    ctl = lab.ctl.controller
    net = ctl.create_network(**NETWORK)
    nwid = net["id"]
    assert nwid.startswith(lab.ctl.address) and net["private"] is True
    assert net["v4AssignMode"] == {"zt": True} and net["mtu"] == 2800
    a = lab.node(store=str(lab.tmp / "a"))
    b = lab.node(store=str(lab.tmp / "b"))
    events = a.events(until_down=False)
    for m in (a, b):
        m.join(nwid)
    wait_until(
        lambda: all((n := m.network(nwid)) and n.status == "ACCESS_DENIED" for m in (a, b)),
        15,
        "both members held",
    )
    pending = ctl.members(nwid)
    assert set(pending) == {a.address, b.address}
    rec = ctl.member(nwid, a.address)
    assert rec["authorized"] is False and rec["identity"] == a.identity.public_string()

    for m in (a, b):
        ctl.authorize(nwid, m.address)
    # Authorizing pushes the config to a pending member seen recently (no wait for its retry).
    na = a.wait_network(nwid, 2.5)
    nb = b.wait_network(nwid, 2.5)
    for m, n in ((a, na), (b, nb)):
        assert n.status == "OK" and n.name == "loopnet" and n.type == "PRIVATE"
        assert n.ipv4 is not None and n.ipv4.network == ipaddress.ip_network("198.18.0.0/15")
        rfc4193 = ipaddress.ip_interface(f"{zt.network.rfc4193_address(nwid, m.address)}/88")
        assert rfc4193 in n.ipv6_addresses
        assert n.mac == zt.network.member_mac(nwid, m.address)
        assert str(n.ipv4.ip) in ctl.member(nwid, m.address)["ipAssignments"]
    assert na.ipv4 != nb.ipv4
    # libzt's event order: addresses, update, ready per family, OK.
    codes = [e.code for e in drain(events) if isinstance(e, (NetworkEvent, AddressEvent))]
    ok = codes.index(EventCode.NETWORK_OK)
    assert codes.index(EventCode.ADDR_ADDED_IP4) < ok
    assert codes.index(EventCode.ADDR_ADDED_IP6) < ok
    assert codes.index(EventCode.NETWORK_UPDATE) < codes.index(EventCode.NETWORK_READY_IP4) < ok
    # The config is persisted as the member's own re-serialization.
    conf = lab.tmp / "a" / "networks.d" / f"{nwid}.conf"
    assert conf.read_bytes().startswith(b"v=0000000000000007\nnwid=")

    # ARP from A for B's IPv4 reaches B (multicast to B's ARP group, members found by gather).
    tap = b.frames(nwid)
    assert na.ipv4 is not None and nb.ipv4 is not None
    req = arp_request(na.mac, na.ipv4.ip, nb.ipv4.ip)
    got = False
    for _ in range(10):
        a.send_frame(nwid, req)
        if got := recv_frame(tap, req, 1.0):
            break
    assert got, "B receives A's ARP request unchanged"
    # A unicast frame B -> A.
    tap_a = a.frames(nwid)
    frame = bytes.fromhex(na.mac.replace(":", "")) + bytes.fromhex(nb.mac.replace(":", ""))
    frame += b"\x08\x00" + bytes(range(64))
    b.send_frame(nwid, frame)
    assert recv_frame(tap_a, frame, 5)

    # Deauthorize B: revoked at once; B is refused from then on.
    ctl.deauthorize(nwid, b.address)
    wait_until(lambda: b.network(nwid).status == "ACCESS_DENIED", 15, "B denied")  # type: ignore[union-attr]
    before = a.stats["drops"].get("NoCredentials", 0)
    b.send_frame(nwid, frame[:-1] + b"\xff")
    assert not recv_frame(tap_a, frame[:-1] + b"\xff", 3)
    assert a.stats["drops"].get("NoCredentials", 0) > before


def test_leave_restart_and_cached_config(lab: Lab) -> None:
    assert lab.ctl.controller is not None
    nwid = lab.ctl.controller.create_network(**NETWORK)["id"]
    home = lab.tmp / "m"
    m = lab.node(store=str(home))
    m.join(nwid)
    wait_until(lambda: m.address in lab.ctl.controller.members(nwid), 10, "pending")  # type: ignore[union-attr]
    lab.ctl.controller.authorize(nwid, m.address)
    first = m.wait_network(nwid, 15)
    m.close()
    # Restart with the controller unreachable: the cached config applies at once.
    lab.ctl.stop()
    m2 = lab.node(store=str(home))
    again = m2.network(nwid)
    assert again is not None and again.status == "OK"
    assert again.addresses == first.addresses
    events = m2.events(until_down=False)
    assert m2.leave(nwid) is True
    assert m2.leave(nwid) is False
    assert m2.network(nwid) is None
    assert not (home / "networks.d" / f"{nwid}.conf").exists()
    assert any(
        isinstance(e, NetworkEvent) and e.code == EventCode.NETWORK_DOWN for e in drain(events)
    )
    # The controller's records survive its restart.
    lab.ctl.start()
    assert lab.ctl.controller.member(nwid, m.address)["authorized"] is True


def test_adhoc_network_between_two_nodes(lab: Lab) -> None:
    nwid = zt.network.adhoc_network_id(5000, 5000)
    a = lab.node()
    b = lab.node()
    for m in (a, b):
        m.join(nwid)
    na = a.wait_network(nwid, 5)
    nb = b.wait_network(nwid, 5)
    assert na.name == "adhoc-1388-1388" and na.type == "PUBLIC"
    assert na.ipv6_addresses == (
        ipaddress.IPv6Interface(f"{zt.network.sixplane_address(nwid, a.address)}/40"),
    )
    tap = b.frames(nwid)
    src = zt.network.sixplane_address(nwid, a.address)
    dst = zt.network.sixplane_address(nwid, b.address)
    tcp = (40000).to_bytes(2, "big") + (5000).to_bytes(2, "big") + bytes(8) + b"\x50\x02" + bytes(6)
    ip6 = b"\x60\0\0\0" + len(tcp).to_bytes(2, "big") + b"\x06\x40" + src.packed + dst.packed

    def mac(s: str) -> bytes:
        return bytes.fromhex(s.replace(":", ""))

    frame = mac(nb.mac) + mac(na.mac) + b"\x86\xdd" + ip6 + tcp
    a.send_frame(nwid, frame)
    assert recv_frame(tap, frame, 5)
    # A port outside the range is refused by the network's rules.
    blocked = frame[: -len(tcp)] + tcp[:2] + (22).to_bytes(2, "big") + tcp[4:]
    with pytest.raises(zt.NetworkError, match="rules"):
        a.send_frame(nwid, blocked)


def test_bad_arguments_get_clear_errors(lab: Lab) -> None:
    n = lab.node()
    with pytest.raises(ValueError, match="16 hexadecimal digits"):
        n.join("not-a-network")
    with pytest.raises(ValueError, match="64-bit"):
        n.join(2**64)
    with pytest.raises(zt.NetworkError, match="not a member"):
        n.send_frame("8056c2e21c000001", b"\xff" * 6 + b"\x02" * 6 + b"\x08\x00" + b"x")
    n.join("8056c2e21c000001")
    with pytest.raises(ValueError, match="14-byte"):
        n.send_frame("8056c2e21c000001", b"short")
    with pytest.raises(zt.NetworkError, match="no configuration"):
        n.send_frame("8056c2e21c000001", b"\xff" * 6 + b"\x02" * 6 + b"\x08\x00" + b"x")
    assert n.controller is None
    with pytest.raises(zt.ControllerError) as e:
        n.api("GET", "/controller/network")
    assert e.value.status == 404
    with pytest.raises(zt.ControllerError) as e:
        lab.ctl.controller.network("0000000000000001")  # type: ignore[union-attr]
    assert e.value.status == 404


def _start_controller_process(home: Path, planet: zt.World) -> tuple[subprocess.Popen[str], int]:
    pfile = home.parent / "planet"
    pfile.write_bytes(planet.to_bytes())
    port = free_udp_port()
    proc = zt_run(home, port, pfile, "--controller")
    assert proc.stdout is not None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if line.startswith("api on"):
            return proc, int(line.rsplit(":", 1)[1])
        if not line and proc.poll() is not None:
            break
    proc.kill()
    _, err = proc.communicate(timeout=10)
    raise AssertionError(f"zt run did not start: {err}")


def test_controller_changes_survive_kill_9(lab: Lab) -> None:
    home = lab.tmp / "crash"
    proc, api_port = _start_controller_process(home, lab.planet)
    try:
        token = api_token(home)

        def call(method: str, path: str, body: object = None) -> Any:
            data = None if body is None else json.dumps(body).encode()
            req = urllib.request.Request(
                f"http://127.0.0.1:{api_port}{path}",
                data=data,
                method=method,
                headers={"X-ZT1-Auth": token},
            )
            with urllib.request.urlopen(req, timeout=10) as r:
                return json.loads(r.read())

        address = call("GET", "/status")["address"]
        created = [call("POST", f"/controller/network/{address}______", NETWORK)["id"]]
        member = "0123456789"
        call("POST", f"/controller/network/{created[0]}/member/{member}", {"authorized": True})
        for i in range(5):
            created.append(call("POST", "/controller/network", {"name": f"n{i}"})["id"])
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=10)
    # Every acknowledged change is there after a crash.
    n = lab.node(store=str(home), controller=True)
    assert n.controller is not None
    assert sorted(n.controller.network_ids()) == sorted(created)
    assert n.controller.member(created[0], member)["authorized"] is True
    assert n.controller.network(created[0])["name"] == "loopnet"
    assert os.path.exists(home / "controller.db")


def test_public_network_settings_and_rules_reach_members(lab: Lab) -> None:
    assert lab.ctl.controller is not None
    ctl = lab.ctl.controller
    net = ctl.create_network(
        name="public-lab",
        private=False,
        mtu=1400,
        multicastLimit=8,
        enableBroadcast=False,
        v4AssignMode={"zt": True},
        v6AssignMode={"6plane": True, "rfc4193": False, "zt": False},
        ipAssignmentPools=[{"ipRangeStart": "198.18.7.1", "ipRangeEnd": "198.18.7.1"}],
        routes=[{"target": "198.18.7.0/24"}, {"target": "2001:db8::/32", "via": "198.18.7.254"}],
        dns={"domain": "lab.example", "servers": ["198.18.7.53"]},
        # Only IPv4 frames: NOT ethertype IPv4 -> drop; accept the rest.
        rules=[
            {"type": "MATCH_ETHERTYPE", "etherType": 2048, "not": True},
            {"type": "ACTION_DROP"},
            {"type": "ACTION_ACCEPT"},
        ],
    )
    nwid = net["id"]
    assert net["rules"][0] == {
        "etherType": 2048,
        "not": True,
        "or": False,
        "type": "MATCH_ETHERTYPE",
    }
    m = lab.node()
    m.join(nwid)
    info = m.wait_network(nwid, 15)  # public: authorized without an API call
    assert ctl.member(nwid, m.address)["lastAuthorizedCredentialType"] == "public"
    assert info.type == "PUBLIC" and info.mtu == 1400 and not info.broadcast
    assert info.dns_domain == "lab.example" and info.dns_servers == ("198.18.7.53",)
    assert info.ipv4 == ipaddress.IPv4Interface("198.18.7.1/24")
    six = ipaddress.IPv6Interface(f"{zt.network.sixplane_address(nwid, m.address)}/40")
    assert info.ipv6_addresses == (six,) and info.ipv6 == six
    assert {str(r.target) for r in info.routes} == {"198.18.7.0/24", "2001:db8::/32"}
    # The pool had one address: a second member gets none (but still joins).
    m2 = lab.node()
    m2.join(nwid)
    second = m2.wait_network(nwid, 15, addresses=False)
    assert second.ipv4 is None
    # The rules: IPv4 passes, ARP (0x0806) is dropped on the way out.
    mac = bytes.fromhex(info.mac.replace(":", ""))
    dst = bytes.fromhex(second.mac.replace(":", ""))
    tap = m2.frames(nwid)
    ip4 = dst + mac + b"\x08\x00" + bytes(40)
    m.send_frame(nwid, ip4)
    assert recv_frame(tap, ip4, 5)
    with pytest.raises(zt.NetworkError, match="rules"):
        m.send_frame(nwid, dst + mac + b"\x08\x06" + bytes(28))
    # Broadcast is off (an ARP *request* would still go to its ARP group).
    with pytest.raises(zt.NetworkError, match="broadcast"):
        m.send_frame(nwid, b"\xff" * 6 + mac + b"\x08\x00" + bytes(40))
    assert m.stats["drops"].get("NoCredentials", 0) == 0
    # A network update reaches online members without a re-join (pushed by the controller).
    ctl.update_network(nwid, name="renamed", mtu=2000)
    wait_until(lambda: (n := m.network(nwid)) is not None and n.name == "renamed", 10, "push")
    assert m.network(nwid).mtu == 2000  # type: ignore[union-attr]


def test_nodes_answer_ping_through_their_user_space_stacks(lab: Lab) -> None:
    assert lab.ctl.controller is not None
    ctl = lab.ctl.controller
    nwid = ctl.create_network(**NETWORK)["id"]
    a = lab.node()
    b = lab.node()
    for m in (a, b):
        m.join(nwid)
    wait_until(lambda: len(ctl.members(nwid)) == 2, 10, "both pending")
    for m in (a, b):
        ctl.authorize(nwid, m.address)
    a.wait_network(nwid, 10)
    nb = b.wait_network(nwid, 10)
    assert nb.ipv4 is not None
    rtt4 = a.ping(nwid, str(nb.ipv4.ip), timeout=10)
    assert rtt4 is not None and rtt4 < 5
    six = str(zt.network.rfc4193_address(nwid, b.address))
    rtt6 = a.ping(nwid, six, timeout=10, size=1200)
    assert rtt6 is not None
    # An address nobody holds gets no answer (and no hang).
    assert a.ping(nwid, "198.18.0.251", timeout=1) is None
    with pytest.raises(zt.NetworkError, match="cannot ping"):
        a.ping("8056c2e21c000001", "198.18.0.1", timeout=1)
    with pytest.raises(ValueError, match="not an IP"):
        a.ping(nwid, "nonsense")
