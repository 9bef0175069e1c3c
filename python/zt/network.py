"""Network identifiers and the addresses ZeroTier derives from them.

zt.network.rfc4193_address(0x8056c2e21c000001, "89e92ceee5")
# IPv6Address('fd80:56c2:e21c:0:199:9389:e92c:eee5')
"""

from __future__ import annotations

import ipaddress
from typing import Union

from . import _native

__all__ = [
    "adhoc_network_id",
    "controller_of",
    "member_mac",
    "parse_network_id",
    "rfc4193_address",
    "sixplane_address",
]

NetworkIdLike = Union[int, str]


def parse_network_id(nwid: NetworkIdLike) -> int:
    """A network ID from an int or its 16-hex-digit text form."""
    if isinstance(nwid, str):
        if len(nwid) != 16 or any(c not in "0123456789abcdefABCDEF" for c in nwid):
            raise ValueError(f"a network ID is 16 hexadecimal digits, got {nwid!r}")
        return int(nwid, 16)
    if not 0 <= nwid < 2**64:
        raise ValueError("a network ID is a 64-bit unsigned integer")
    return nwid


def controller_of(nwid: NetworkIdLike) -> str:
    """The address of the controller of a network (its top 40 bits)."""
    return f"{parse_network_id(nwid) >> 24:010x}"


def rfc4193_address(nwid: NetworkIdLike, node: str) -> ipaddress.IPv6Address:
    """The member's rfc4193 address (prefix length 88)."""
    return ipaddress.IPv6Address(_native.network_rfc4193(parse_network_id(nwid), node))


def sixplane_address(nwid: NetworkIdLike, node: str) -> ipaddress.IPv6Address:
    """The member's 6plane address (prefix length 40; the member owns the /80)."""
    return ipaddress.IPv6Address(_native.network_sixplane(parse_network_id(nwid), node))


def member_mac(nwid: NetworkIdLike, node: str) -> str:
    """The member's Ethernet MAC on the network, as ``aa:bb:cc:dd:ee:ff``."""
    return _native.network_member_mac(parse_network_id(nwid), node)


def adhoc_network_id(start_port: int, end_port: int) -> int:
    """The ad-hoc network (no controller) for TCP/UDP ports ``start..end`` (IPv6 only), as
    libzt's ``zts_net_compute_adhoc_id`` makes it."""
    if not (0 <= start_port <= 65535 and 0 <= end_port <= 65535):
        raise ValueError("ports are 0..65535")
    return _native.network_adhoc_id(start_port, end_port)
