from __future__ import annotations

import ipaddress

import pytest

import zt


def test_reference_examples() -> None:
    nwid, node = "8056c2e21c000001", "89e92ceee5"
    assert zt.network.controller_of(nwid) == "8056c2e21c"
    assert zt.network.member_mac(nwid, node) == "02:89:e9:30:0c:27"
    assert zt.network.rfc4193_address(nwid, node) == ipaddress.IPv6Address(
        "fd80:56c2:e21c:0000:0199:9389:e92c:eee5"
    )
    assert zt.network.sixplane_address(int(nwid, 16), node) == ipaddress.IPv6Address(
        "fc9c:56c2:e389:e92c:eee5::1"
    )
    assert zt.network.adhoc_network_id(5000, 6000) == 0xFF13881770000000


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="16 hexadecimal"):
        zt.network.rfc4193_address("123", "89e92ceee5")
    with pytest.raises(ValueError, match="10 hexadecimal"):
        zt.network.sixplane_address(1, "xyz")
    with pytest.raises(ValueError, match="64-bit"):
        zt.network.member_mac(-1, "89e92ceee5")
    with pytest.raises(ValueError, match="ports"):
        zt.network.adhoc_network_id(70000, 1)
