"""Network identifiers and the addresses ZeroTier derives from them.

zt.network.rfc4193_address(0x8056c2e21c000001, "89e92ceee5")
# IPv6Address('fd80:56c2:e21c:0:199:9389:e92c:eee5')
"""

from __future__ import annotations

import ipaddress
import operator
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Optional, Union

from . import _native

__all__ = [
    "NetworkInfo",
    "Route",
    "adhoc_network_id",
    "controller_of",
    "format_network_id",
    "member_mac",
    "on_overlay",
    "parse_network_id",
    "rfc4193_address",
    "sixplane_address",
]

NetworkIdLike = Union[int, str]


def parse_network_id(nwid: NetworkIdLike) -> int:
    """A network ID from an int or its 16-hex-digit text form."""
    if not isinstance(nwid, str):
        if isinstance(nwid, bool) or not hasattr(type(nwid), "__index__"):
            raise TypeError(
                f"a network ID is an int or 16 hexadecimal digits, not {type(nwid).__name__}"
            )
        nwid = operator.index(nwid)
    if isinstance(nwid, str):
        if len(nwid) != 16 or any(c not in "0123456789abcdefABCDEF" for c in nwid):
            raise ValueError(f"a network ID is 16 hexadecimal digits, got {nwid!r}")
        return int(nwid, 16)
    if not 0 <= nwid < 2**64:
        raise ValueError("a network ID is a 64-bit unsigned integer")
    return nwid


def format_network_id(nwid: NetworkIdLike) -> str:
    """The 16-hex-digit text form of a network ID."""
    return f"{parse_network_id(nwid):016x}"


def on_overlay(
    networks: Iterable[NetworkInfo], ip: Union[ipaddress.IPv4Address, ipaddress.IPv6Address]
) -> bool:
    """Whether ``ip`` is inside a managed prefix of one of ``networks`` (link-local excluded):
    the addresses a node's own stack routes."""
    if ip.is_link_local:
        return False
    return any(
        ip in iface.network for net in networks for iface in net.addresses
        if not iface.ip.is_link_local
    )  # fmt: skip


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


IpInterface = Union[ipaddress.IPv4Interface, ipaddress.IPv6Interface]


@dataclass(frozen=True)
class Route:
    """A managed route: ``target`` network, via ``via`` (None = on the network itself)."""

    target: Union[ipaddress.IPv4Network, ipaddress.IPv6Network]
    via: Optional[Union[ipaddress.IPv4Address, ipaddress.IPv6Address]]
    flags: int = 0
    metric: int = 0


@dataclass(frozen=True)
class NetworkInfo:
    """A joined network as the node sees it (zerotier-one's ``/network`` object in ``raw``).

    ``status`` is one of ``REQUESTING_CONFIGURATION``, ``OK``, ``ACCESS_DENIED``,
    ``NOT_FOUND``, ``PORT_ERROR``, ``CLIENT_TOO_OLD``, ``AUTHENTICATION_REQUIRED``.
    """

    id: str
    name: str
    status: str
    type: str
    mac: str
    mtu: int
    broadcast: bool
    revision: int
    addresses: tuple[IpInterface, ...]
    routes: tuple[Route, ...]
    dns_domain: str
    dns_servers: tuple[str, ...]
    raw: dict[str, Any] = field(repr=False, compare=False, default_factory=dict)

    @property
    def ipv4(self) -> Optional[ipaddress.IPv4Interface]:
        """The first managed IPv4 address, if any (all of them: :attr:`ipv4_addresses`)."""
        return next(iter(self.ipv4_addresses), None)

    @property
    def ipv6(self) -> Optional[ipaddress.IPv6Interface]:
        """The first managed IPv6 address, if any (all of them: :attr:`ipv6_addresses`; a
        network may assign both an RFC 4193 and a 6PLANE address)."""
        return next(iter(self.ipv6_addresses), None)

    @property
    def ipv4_addresses(self) -> tuple[ipaddress.IPv4Interface, ...]:
        """The managed IPv4 addresses."""
        return tuple(a for a in self.addresses if isinstance(a, ipaddress.IPv4Interface))

    @property
    def ipv6_addresses(self) -> tuple[ipaddress.IPv6Interface, ...]:
        """The managed IPv6 addresses."""
        return tuple(a for a in self.addresses if isinstance(a, ipaddress.IPv6Interface))

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> NetworkInfo:
        """From zerotier-one's ``/network/<id>`` JSON object."""
        routes = []
        for r in d.get("routes", []):
            via = r.get("via")
            routes.append(
                Route(
                    target=ipaddress.ip_network(r["target"], strict=False),
                    via=ipaddress.ip_address(via) if via else None,
                    flags=int(r.get("flags", 0)),
                    metric=int(r.get("metric", 0)),
                )
            )
        dns = d.get("dns") or {}
        return cls(
            id=str(d["id"]),
            name=str(d.get("name", "")),
            status=str(d.get("status", "")),
            type=str(d.get("type", "")),
            mac=str(d.get("mac", "")),
            mtu=int(d.get("mtu", 0)),
            broadcast=bool(d.get("broadcastEnabled", False)),
            revision=int(d.get("netconfRevision", 0)),
            addresses=tuple(ipaddress.ip_interface(a) for a in d.get("assignedAddresses", [])),
            routes=tuple(routes),
            dns_domain=str(dns.get("domain", "")),
            dns_servers=tuple(str(x) for x in dns.get("servers", [])),
            raw=d,
        )
