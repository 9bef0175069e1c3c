"""zt.lab: a private planet, its root, a controller and members on loopback in one call."""

from __future__ import annotations

import ipaddress
import socket
from pathlib import Path

import pytest

import zt
import zt.lab


def test_members_get_addresses_and_talk(tmp_path: Path) -> None:
    with zt.lab.Lab(tmp_path / "lab") as lab:
        assert [r.identity.address for r in lab.planet.roots] == [lab.root.address]
        nwid = lab.network()
        a, b = lab.member(nwid), lab.member(nwid)
        for n in (a, b):
            info = n.network(nwid)
            assert info is not None and info.status == "OK"
            assert ipaddress.ip_address(lab.ip(n, nwid)) in ipaddress.ip_network("198.18.0.0/15")
        assert lab.ip(a, nwid) != lab.ip(b, nwid)
        assert set(lab.controller.members(nwid)) == {a.address, b.address}
        server = b.create_server((lab.ip(b, nwid), 7))
        client = a.create_connection((lab.ip(b, nwid), 7), timeout=10)
        conn, _ = server.accept()
        client.sendall(b"ping")
        assert conn.recv(4) == b"ping"
        for s in (client, conn, server):
            s.close()
        nodes = list(lab.nodes)
        assert (tmp_path / "lab" / "controller" / "controller.db").exists()
    assert lab.nodes == []
    assert all(n.state == zt.NodeState.STOPPED for n in nodes)


def test_a_temporary_home_is_removed(tmp_path: Path) -> None:
    lab = zt.lab.Lab()
    home = lab.home
    assert home.is_dir()
    lab.close()
    assert not home.exists()
    lab.close()  # twice is harmless


def test_network_fields_override_the_default() -> None:
    with zt.lab.Lab() as lab:
        nwid = lab.network(name="other", mtu=1400)
        rec = lab.controller.network(nwid)
        assert rec["name"] == "other" and rec["mtu"] == 1400 and rec["private"] is True
        with pytest.raises(LookupError):
            lab.ip(lab.root, nwid)


def test_a_root_port_taken_before_the_bind_is_retried(monkeypatch: pytest.MonkeyPatch) -> None:
    # Another process takes the port the lab chose for its root before the root binds it.
    taken = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    taken.bind(("0.0.0.0", 0))
    ports = [taken.getsockname()[1]]
    real = zt.lab.unused_udp_port

    def choose() -> int:
        return ports.pop() if ports else real()

    monkeypatch.setattr(zt.lab, "unused_udp_port", choose)
    try:
        with zt.lab.Lab() as lab:
            assert ports == []
            assert lab.planet.roots[0].stable_endpoints != [f"127.0.0.1/{taken.getsockname()[1]}"]
            assert lab.root.state == zt.NodeState.RUNNING
    finally:
        taken.close()


def test_options_the_lab_sets_itself_are_refused() -> None:
    for key in ("planet", "identity", "port", "store", "controller"):
        with pytest.raises(ValueError, match=key):
            zt.lab.Lab(**{key: None})


def test_lab_nodes_are_confined_to_loopback() -> None:
    with zt.lab.Lab(tcp_congestion="bbr") as lab:
        node = lab.node()
        assert node.options.allowed_destinations == ["127.0.0.0/8"]
        assert node.options.tcp_congestion == "bbr"
        assert node.options.allow_loopback and not node.options.ipv6
