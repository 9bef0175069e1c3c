"""zt's network address derivations against libzt 1.8.4's."""

from __future__ import annotations

import ipaddress
import random

import pytest

import zt
from tests.interop.libzt import compute_addresses
from tests.interop.marks import INTEROP

pytestmark = INTEROP


def test_rfc4193_6plane_and_adhoc_ids_match_libzt() -> None:
    rng = random.Random(4)
    pairs = [(rng.getrandbits(64), f"{rng.getrandbits(38) | 1 << 32:010x}") for _ in range(50)]
    pairs.append((0x8056C2E21C000001, "89e92ceee5"))
    ranges = [(5000, 6000), (1, 65535), (9993, 9993), (0, 0)]
    libzt_addrs, libzt_adhoc = compute_addresses(pairs, ranges)
    for (nwid, node), theirs in zip(pairs, libzt_addrs):
        assert zt.network.rfc4193_address(nwid, node) == ipaddress.IPv6Address(theirs["rfc4193"])
        assert zt.network.sixplane_address(nwid, node) == ipaddress.IPv6Address(theirs["6plane"])
    assert [zt.network.adhoc_network_id(a, b) for a, b in ranges] == libzt_adhoc


@pytest.mark.parametrize("nwid", [0xFF13881770000000, 0x8056C2E21C000001])
def test_member_macs_are_unicast_and_local(nwid: int) -> None:
    mac = zt.network.member_mac(nwid, "89e92ceee5")
    first = int(mac[:2], 16)
    assert first & 1 == 0 and first & 2 == 2
