"""Broadcast and multicast socket options of ``zt.socket.socket``: ``SO_BROADCAST``,
``IP_ADD_MEMBERSHIP``/``IP_DROP_MEMBERSHIP``, ``IPV6_JOIN_GROUP``/``IPV6_LEAVE_GROUP``,
``IP_MULTICAST_IF``/``TTL``/``LOOP`` and ``IPV6_MULTICAST_IF``/``HOPS``/``LOOP``, parsed and
checked as Linux does (errno values included).

Values live here; a UDP socket's native side gets ``SO_BROADCAST``, the loop flags,
``IP_MULTICAST_IF`` and the memberships once it exists (options set before ``bind`` are
applied then). The TTL and hop limit are remembered only: a ZeroTier network is one Ethernet
segment, nothing on it routes by them.
"""

from __future__ import annotations

import errno as _errno
import ipaddress
import operator
import os
import socket as _std
import struct
from typing import TYPE_CHECKING, Any, Optional

from . import _native

if TYPE_CHECKING:
    from .node import Node

# The platform's numbers (Linux's where the standard library lacks one: they only name options).
SO_BROADCAST: int = _std.SO_BROADCAST
IP_MULTICAST_IF: int = getattr(_std, "IP_MULTICAST_IF", 32)
IP_MULTICAST_TTL: int = getattr(_std, "IP_MULTICAST_TTL", 33)
IP_MULTICAST_LOOP: int = getattr(_std, "IP_MULTICAST_LOOP", 34)
IP_ADD_MEMBERSHIP: int = getattr(_std, "IP_ADD_MEMBERSHIP", 35)
IP_DROP_MEMBERSHIP: int = getattr(_std, "IP_DROP_MEMBERSHIP", 36)
IPV6_MULTICAST_IF: int = getattr(_std, "IPV6_MULTICAST_IF", 17)
IPV6_MULTICAST_HOPS: int = getattr(_std, "IPV6_MULTICAST_HOPS", 18)
IPV6_MULTICAST_LOOP: int = getattr(_std, "IPV6_MULTICAST_LOOP", 19)
IPV6_JOIN_GROUP: int = getattr(_std, "IPV6_JOIN_GROUP", 20)
IPV6_LEAVE_GROUP: int = getattr(_std, "IPV6_LEAVE_GROUP", 21)

_SOL = _std.SOL_SOCKET
_IP = _std.IPPROTO_IP
_IPV6 = _std.IPPROTO_IPV6
_KEYS = {
    (_SOL, SO_BROADCAST),
    (_IP, IP_MULTICAST_IF),
    (_IP, IP_MULTICAST_TTL),
    (_IP, IP_MULTICAST_LOOP),
    (_IP, IP_ADD_MEMBERSHIP),
    (_IP, IP_DROP_MEMBERSHIP),
    (_IPV6, IPV6_MULTICAST_IF),
    (_IPV6, IPV6_MULTICAST_HOPS),
    (_IPV6, IPV6_MULTICAST_LOOP),
    (_IPV6, IPV6_JOIN_GROUP),
    (_IPV6, IPV6_LEAVE_GROUP),
}
# The options Linux refuses on a TCP socket (EINVAL at the IP level, ENOPROTOOPT at IPv6's).
_UDP_ONLY = {
    (_IP, IP_MULTICAST_TTL),
    (_IP, IP_MULTICAST_IF),
    (_IPV6, IPV6_MULTICAST_HOPS),
    (_IPV6, IPV6_MULTICAST_IF),
}


def _err(code: int, what: str = "") -> OSError:
    return OSError(code, os.strerror(code) + (f" ({what})" if what else ""))


def _int(value: Any, byte_ok: bool = False) -> int:
    """An integer option value: an int, 4 bytes (a C int) or, where Linux takes it, 1 byte."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        raw = bytes(value)
        if len(raw) >= 4:
            v: int = struct.unpack("=i", raw[:4])[0]
            return v
        if byte_ok and len(raw) >= 1:
            return raw[0]
        raise _err(_errno.EINVAL)
    v = operator.index(value)
    if not -(2**31) <= v < 2**31:
        # What the standard library raises for an int that is no C int.
        raise TypeError("a bytes-like object is required, not 'int' (out of a C int's range)")
    return v


def _hop_limit(value: Any, name: str, byte_ok: bool = False) -> int:
    """IP_MULTICAST_TTL's or IPV6_MULTICAST_HOPS's value: 0-255, or -1 for the default (1)."""
    v = _int(value, byte_ok=byte_ok)
    if not -1 <= v <= 255:
        raise _err(_errno.EINVAL, f"{name} must be -1-255")
    return 1 if v == -1 else v


def _raw(value: Any) -> bytes:
    """A structure option value (an int is the C int's bytes, as the stdlib passes it)."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    return struct.pack("=i", _int(value))


def _index(raw: bytes) -> int:
    v: int = struct.unpack("=i", raw)[0]
    return v


class GroupOptions:
    """One socket's broadcast and multicast options and memberships."""

    def __init__(self, family: int, kind: int) -> None:
        self._family = family
        self._stream = kind == _std.SOCK_STREAM
        self.broadcast = 0
        self.loop4 = 1
        self.loop6 = 1
        self.ttl = 1
        self.hops = 1
        self.if4: Optional[str] = None
        # Memberships asked for before the native UDP socket existed: (group, interface).
        self.pending: list[tuple[str, Optional[str]]] = []

    @staticmethod
    def handles(level: int, optname: int) -> bool:
        return (level, optname) in _KEYS

    # -- setsockopt ------------------------------------------------------------------------

    def set(
        self,
        node: Node,
        udp: Optional[_native.UdpSocket],
        level: int,
        optname: int,
        value: Any,
    ) -> None:
        """Sets an option (``handles(level, optname)`` holds); raises OSError as Linux does."""
        if level == _IPV6 and self._family != _std.AF_INET6:
            raise _err(_errno.ENOPROTOOPT)
        key = (level, optname)
        if self._stream and key in _UDP_ONLY:
            raise _err(_errno.EINVAL if level == _IP else _errno.ENOPROTOOPT)
        if key == (_SOL, SO_BROADCAST):
            self.broadcast = int(_int(value) != 0)
            if udp is not None:
                udp.set_option("broadcast", self.broadcast)
        elif key == (_IP, IP_MULTICAST_LOOP):
            self.loop4 = int(_int(value, byte_ok=True) != 0)
            if udp is not None:
                udp.set_option("multicast_loop", self.loop4)
        elif key == (_IPV6, IPV6_MULTICAST_LOOP):
            v = _int(value)
            if v not in (0, 1):
                raise _err(_errno.EINVAL, "IPV6_MULTICAST_LOOP must be 0 or 1")
            self.loop6 = v
            if udp is not None:
                udp.set_option("multicast_loop_v6", v)
        elif key == (_IP, IP_MULTICAST_TTL):
            self.ttl = _hop_limit(value, "IP_MULTICAST_TTL", byte_ok=True)
        elif key == (_IPV6, IPV6_MULTICAST_HOPS):
            self.hops = _hop_limit(value, "IPV6_MULTICAST_HOPS")
        elif key == (_IP, IP_MULTICAST_IF):
            self._set_if4(node, udp, _raw(value))
        elif key == (_IPV6, IPV6_MULTICAST_IF):
            if _int(value) != 0:
                raise _err(_errno.ENODEV, "zt networks have no interface index: use 0")
        else:
            join = optname in (IP_ADD_MEMBERSHIP, IPV6_JOIN_GROUP)
            group, iface = self._mreq(level, _raw(value))
            self._membership(node, udp, group, iface, join)

    def _set_if4(self, node: Node, udp: Optional[_native.UdpSocket], raw: bytes) -> None:
        if len(raw) >= 12:  # struct ip_mreqn: group, address, interface index
            if _index(raw[8:12]) != 0:
                raise _err(_errno.ENODEV, "zt networks have no interface index: use 0")
            addr = raw[4:8]
        elif len(raw) >= 8:  # struct ip_mreq: group, interface address
            addr = raw[4:8]
        elif len(raw) >= 4:  # struct in_addr
            addr = raw[:4]
        else:
            raise _err(_errno.EINVAL)
        ip = ipaddress.IPv4Address(addr)
        iface = None if ip.is_unspecified else str(ip)
        if udp is not None:
            node._handle().udp_multicast_if(udp, iface)
        elif iface is not None and not _node_has(node, iface):
            raise _err(_errno.EADDRNOTAVAIL, f"no network gives this node {iface}")
        self.if4 = iface

    def _mreq(self, level: int, raw: bytes) -> tuple[str, Optional[str]]:
        """(group, interface address or None) of an ``ip_mreq``/``ip_mreqn``/``ipv6_mreq``."""
        if self._stream:
            raise _err(_errno.EPROTO, "multicast groups are for UDP sockets")
        if level == _IP:
            if len(raw) < 8:
                raise _err(_errno.EINVAL, "struct ip_mreq is 8 bytes (ip_mreqn: 12)")
            if len(raw) >= 12 and _index(raw[8:12]) != 0:
                raise _err(_errno.ENODEV, "zt networks have no interface index: use 0")
            g4 = ipaddress.IPv4Address(raw[:4])
            if not g4.is_multicast:
                raise _err(_errno.EINVAL, f"{g4} is not a multicast group")
            iface = ipaddress.IPv4Address(raw[4:8])
            return str(g4), (None if iface.is_unspecified else str(iface))
        if len(raw) < 20:
            raise _err(_errno.EINVAL, "struct ipv6_mreq is 20 bytes")
        if _index(raw[16:20]) != 0:
            raise _err(_errno.ENODEV, "zt networks have no interface index: use 0")
        g6 = ipaddress.IPv6Address(raw[:16])
        if not g6.is_multicast:
            raise _err(_errno.EINVAL, f"{g6} is not a multicast group")
        return str(g6), None

    def _membership(
        self,
        node: Node,
        udp: Optional[_native.UdpSocket],
        group: str,
        iface: Optional[str],
        join: bool,
    ) -> None:
        if udp is not None:
            node._handle().udp_membership(udp, group, iface, join)
            return
        # Not bound yet: checked like the native side does, applied when it is bound.
        m = (group, iface)
        if join:
            if iface is not None and not _node_has(node, iface):
                raise _err(_errno.ENODEV, f"no network gives this node {iface}")
            if m in self.pending:
                raise _err(_errno.EADDRINUSE)
            if len(self.pending) >= 20:
                raise _err(_errno.ENOBUFS)
            self.pending.append(m)
            return
        for i, (g, f) in enumerate(self.pending):
            if g == group and (iface is None or f == iface):
                del self.pending[i]
                return
        raise _err(_errno.EADDRNOTAVAIL)

    def apply(self, node: Node, udp: _native.UdpSocket) -> None:
        """Gives a new native UDP socket what was set before it existed."""
        udp.set_option("broadcast", self.broadcast)
        udp.set_option("multicast_loop", self.loop4)
        udp.set_option("multicast_loop_v6", self.loop6)
        if self.if4 is not None:
            node._handle().udp_multicast_if(udp, self.if4)
        pending, self.pending = self.pending, []
        for group, iface in pending:
            node._handle().udp_membership(udp, group, iface, True)

    # -- getsockopt ------------------------------------------------------------------------

    def get(self, level: int, optname: int) -> Optional[int]:
        """An option's value; None where getsockopt has none (raise ENOPROTOOPT)."""
        if level == _IPV6 and self._family != _std.AF_INET6:
            return None
        key = (level, optname)
        if key == (_SOL, SO_BROADCAST):
            return self.broadcast
        if key == (_IP, IP_MULTICAST_LOOP):
            return self.loop4
        if key == (_IPV6, IPV6_MULTICAST_LOOP):
            return self.loop6
        if key == (_IP, IP_MULTICAST_TTL):
            return self.ttl
        if key == (_IP, IP_MULTICAST_IF):
            # The address as the C int holding its bytes (what the stdlib returns).
            packed = ipaddress.IPv4Address(self.if4 or "0.0.0.0").packed
            return _index(packed)
        if self._stream:
            return None
        if key == (_IPV6, IPV6_MULTICAST_HOPS):
            return self.hops
        if key == (_IPV6, IPV6_MULTICAST_IF):
            return 0
        return None


def _node_has(node: Node, ip: str) -> bool:
    """Whether one of the node's networks gives it the address ``ip``."""
    want = ipaddress.ip_address(ip)
    return any(a.ip == want for n in node.networks() for a in n.addresses)
