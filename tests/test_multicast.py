"""UDP broadcast and IP multicast on zt sockets: three members of a controller network (IPv4
/15 and rfc4193 IPv6) on loopback, options checked against what Linux answers."""

from __future__ import annotations

import asyncio
import errno
import socket as std
import struct
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Callable

import pytest

import zt
import zt.asyncio
from zt.socket import AF_INET, AF_INET6, SOCK_STREAM

from .overlay import lab_in, raises_errno, udp
from .support import NETWORK, Lab, wait_until

IP, IPV6, SOL = std.IPPROTO_IP, std.IPPROTO_IPV6, std.SOL_SOCKET
ANY4 = std.inet_aton("0.0.0.0")


@dataclass
class Trio:
    lab: Lab
    nodes: list[zt.Node]
    nwid: str
    v4: list[str]
    v6: list[str]


def members(lab: Lab, nwid: str, n: int) -> list[zt.Node]:
    ctl = lab.ctl.controller
    assert ctl is not None
    nodes = [lab.node() for _ in range(n)]
    for m in nodes:
        ctl.authorize(nwid, m.address)
        m.join(nwid)
    for m in nodes:
        m.wait_network(nwid, 20)
    return nodes


@pytest.fixture(scope="module")
def trio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Trio]:
    """Three members of a network with IPv4 and rfc4193 addresses that have talked to each
    other (pings both ways: each has the others' credentials and link addresses)."""
    with lab_in(tmp_path_factory.mktemp("mcast")) as lab:
        ctl = lab.ctl.controller
        assert ctl is not None
        nwid = ctl.create_network(**NETWORK)["id"]
        nodes = members(lab, nwid, 3)
        v4, v6 = [], []
        for m in nodes:
            info = m.network(nwid)
            assert info is not None and info.ipv4 is not None
            v4.append(str(info.ipv4.ip))
            v6.append(str(zt.network.rfc4193_address(nwid, m.address)))
        deadline = time.monotonic() + 30
        for i, x in enumerate(nodes):
            for ip in v4[:i] + v4[i + 1 :]:
                while x.ping(nwid, ip, 1.0) is None:
                    assert time.monotonic() < deadline, f"no ping answer from {ip}"
        yield Trio(lab, nodes, nwid, v4, v6)


def take(s: Any, got: list[tuple[bytes, Any]]) -> None:
    """Appends what ``s`` holds now to ``got`` (without blocking)."""
    while True:
        try:
            got.append(s.recvfrom(2048, std.MSG_DONTWAIT))
        except BlockingIOError:
            return


def send_until(
    tx: Any, to: tuple[str, int], tag: bytes, cond: Callable[[], bool], timeout: float = 15
) -> bool:
    """Sends ``tag + n`` to ``to`` every 100 ms (UDP may lose the first ones while paths and
    group members are found) until ``cond()`` holds; whether it did within ``timeout``."""
    end = time.monotonic() + timeout
    n = 0
    while time.monotonic() < end:
        tx.sendto(tag + b" %d" % n, to)
        n += 1
        step = time.monotonic() + 0.1
        while time.monotonic() < step:
            if cond():
                return True
            time.sleep(0.005)
    return False


def tagged(got: list[tuple[bytes, Any]], tag: bytes) -> list[tuple[bytes, Any]]:
    return [g for g in got if g[0].startswith(tag + b" ")]


def none_tagged(s: Any, tag: bytes, wait: float = 0.5) -> bool:
    """Whether nothing tagged ``tag`` arrives on ``s`` within ``wait`` seconds (what a member
    sent along with datagrams already seen elsewhere would have arrived by then)."""
    s.settimeout(wait)
    try:
        while True:
            data, _ = s.recvfrom(2048)
            if data.startswith(tag + b" "):
                return False
    except TimeoutError:
        return True


def arrived(s: Any, got: list[tuple[bytes, Any]], tag: bytes) -> bool:
    """Whether a datagram tagged ``tag`` has arrived on ``s`` (collecting into ``got``)."""
    take(s, got)
    return bool(tagged(got, tag))


def mreq(group: str, iface: str = "0.0.0.0") -> bytes:
    return std.inet_aton(group) + std.inet_aton(iface)


def mreq6(group: str, index: int = 0) -> bytes:
    return std.inet_pton(std.AF_INET6, group) + struct.pack("@I", index)


def subscribed(node: zt.Node, nwid: str, mac: str) -> bool:
    info = node.network(nwid)
    assert info is not None
    return any(g["mac"] == mac for g in info.raw.get("multicastSubscriptions", []))


# -- broadcast ----------------------------------------------------------------------------------


def test_broadcast_needs_so_broadcast_and_reaches_every_other_member(trio: Trio) -> None:
    a, b, c = trio.nodes
    rb = udp(b, AF_INET, ("", 7600))
    rc = udp(c, AF_INET6, ("", 7600))  # dual-stack: IPv4 broadcasts arrive IPv4-mapped
    tx = udp(a, AF_INET, ("", 7601))
    assert tx.getsockopt(SOL, std.SO_BROADCAST) == 0
    for bcast in ("255.255.255.255", "198.19.255.255"):
        with raises_errno(errno.EACCES):
            tx.sendto(b"no", (bcast, 7600))
        with udp(a) as s, raises_errno(errno.EACCES):
            s.connect((bcast, 7600))
    tx.setsockopt(SOL, std.SO_BROADCAST, 1)
    assert tx.getsockopt(SOL, std.SO_BROADCAST) == 1
    for bcast in ("255.255.255.255", "198.19.255.255"):
        tag = bcast.encode()
        gb: list[tuple[bytes, Any]] = []
        gc: list[tuple[bytes, Any]] = []

        def both(tag: bytes = tag, gb: Any = gb, gc: Any = gc) -> bool:
            take(rb, gb)
            take(rc, gc)
            return bool(tagged(gb, tag) and tagged(gc, tag))

        assert send_until(tx, (bcast, 7600), tag, both), f"{bcast}: {gb} {gc}"
        assert {a for _, a in tagged(gb, tag)} == {(trio.v4[0], 7601)}
        assert {a for _, a in tagged(gc, tag)} == {("::ffff:" + trio.v4[0], 7601, 0, 0)}
    # A connected socket sends to the broadcast address once SO_BROADCAST is set.
    cx = udp(a)
    cx.setsockopt(SOL, std.SO_BROADCAST, 1)
    cx.connect(("255.255.255.255", 7600))
    got: list[tuple[bytes, Any]] = []
    assert send_until(
        cx,
        ("255.255.255.255", 7600),
        b"connected",
        lambda: arrived(rb, got, b"connected"),
    )
    # Clearing SO_BROADCAST refuses again (checked at every send, as on Linux).
    cx.setsockopt(SOL, std.SO_BROADCAST, 0)
    with raises_errno(errno.EACCES):
        cx.send(b"x")
    for s in (rb, rc, tx, cx):
        s.close()


def test_asyncio_allow_broadcast(trio: Trio) -> None:
    a, b, _ = trio.nodes

    class Recorder(asyncio.DatagramProtocol):
        def __init__(self) -> None:
            self.got: list[bytes] = []
            self.event = asyncio.Event()

        def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
            self.got.append(data)
            self.event.set()

    async def main() -> None:
        ep = zt.asyncio.create_datagram_endpoint
        rt, rp = await ep(b, Recorder, local_addr=("0.0.0.0", 7610))
        tt, _ = await ep(a, asyncio.DatagramProtocol, family=AF_INET, allow_broadcast=True)
        sock = tt.get_extra_info("socket")
        assert sock.getsockopt(SOL, std.SO_BROADCAST) == 1
        for _ in range(100):
            tt.sendto(b"hello all", ("255.255.255.255", 7610))
            try:
                await asyncio.wait_for(rp.event.wait(), 0.1)
                break
            except asyncio.TimeoutError:
                pass
        assert b"hello all" in rp.got
        # Without allow_broadcast the send fails like the stdlib's (EACCES to error_received).
        errors: list[Exception] = []

        class Errors(asyncio.DatagramProtocol):
            def error_received(self, exc: Exception) -> None:
                errors.append(exc)

        nt, _ = await ep(a, Errors, family=AF_INET)
        nt.sendto(b"x", ("255.255.255.255", 7610))
        assert [getattr(e, "errno", None) for e in errors] == [errno.EACCES]
        for t in (rt, tt, nt):
            t.close()

    asyncio.run(asyncio.wait_for(main(), 60))


def test_broadcast_and_multicast_where_the_network_disables_them(trio: Trio) -> None:
    ctl = trio.lab.ctl.controller
    assert ctl is not None
    net = dict(NETWORK, enableBroadcast=False, multicastLimit=0)
    net["ipAssignmentPools"] = [{"ipRangeStart": "10.99.0.10", "ipRangeEnd": "10.99.0.250"}]
    net["routes"] = [{"target": "10.99.0.0/24", "via": None}]
    nwid = ctl.create_network(**net)["id"]
    (m,) = members(trio.lab, nwid, 1)
    s = udp(m, AF_INET6)
    s.setsockopt(SOL, std.SO_BROADCAST, 1)
    for to in ("::ffff:255.255.255.255", "::ffff:10.99.0.255", "::ffff:239.1.1.1", "ff05::1"):
        with raises_errno(errno.EPERM):
            s.sendto(b"x", (to, 7620))
    s.close()


# -- multicast ----------------------------------------------------------------------------------


def test_ipv4_multicast_reaches_members_that_joined_until_they_leave(trio: Trio) -> None:
    a, b, c = trio.nodes
    group = "239.77.0.1"
    mac = "01:00:5e:4d:00:01"
    rb = udp(b, AF_INET, ("", 7630))
    rc = udp(c, AF_INET, ("", 7630))
    tx = udp(a, AF_INET, ("", 7631))
    rb.setsockopt(IP, std.IP_ADD_MEMBERSHIP, mreq(group))
    assert subscribed(b, trio.nwid, mac) and not subscribed(c, trio.nwid, mac)
    gb: list[tuple[bytes, Any]] = []
    gc: list[tuple[bytes, Any]] = []
    # Multicast needs no SO_BROADCAST.
    assert send_until(tx, (group, 7630), b"one", lambda: arrived(rb, gb, b"one"))
    assert {a for _, a in tagged(gb, b"one")} == {(trio.v4[0], 7631)}
    assert none_tagged(rc, b"one"), "C has not joined"
    # C joins (struct ip_mreqn, naming its own address) while A keeps sending: C announces the
    # group to A, which it has talked to, and receives from then on.
    rc.setsockopt(IP, std.IP_ADD_MEMBERSHIP, mreq(group, trio.v4[2]) + struct.pack("@i", 0))
    started = time.monotonic()
    assert send_until(tx, (group, 7630), b"two", lambda: arrived(rc, gc, b"two"))
    assert time.monotonic() - started < 5, "learned from C's announcement, not a later gather"
    # B leaves: what A sends from now on reaches C only.
    rb.setsockopt(IP, std.IP_DROP_MEMBERSHIP, mreq(group))
    assert not subscribed(b, trio.nwid, mac)
    assert send_until(tx, (group, 7630), b"three", lambda: arrived(rc, gc, b"three"))
    assert none_tagged(rb, b"three"), "B left the group"
    # Closing a socket ends its memberships.
    rc.close()
    wait_until(lambda: not subscribed(c, trio.nwid, mac), 10, "C's membership to end")
    rb.close()
    tx.close()


def test_ipv6_multicast_from_the_rfc4193_address(trio: Trio) -> None:
    a, b, c = trio.nodes
    group = "ff05::7:1"
    rb = udp(b, AF_INET6, ("::", 7640))
    rc = udp(c, AF_INET6, ("::", 7640))
    tx = udp(a, AF_INET6, ("::", 7641))
    rb.setsockopt(IPV6, std.IPV6_JOIN_GROUP, mreq6(group))
    assert subscribed(b, trio.nwid, "33:33:00:07:00:01")
    gb: list[tuple[bytes, Any]] = []
    assert send_until(tx, (group, 7640), b"six", lambda: arrived(rb, gb, b"six"))
    assert {a for _, a in tagged(gb, b"six")} == {(trio.v6[0], 7641, 0, 0)}
    assert none_tagged(rc, b"six"), "C has not joined"
    # C joins, B leaves: A's next datagrams reach C and not B.
    rc.setsockopt(IPV6, std.IPV6_JOIN_GROUP, mreq6(group))
    rb.setsockopt(IPV6, std.IPV6_LEAVE_GROUP, mreq6(group))
    assert not subscribed(b, trio.nwid, "33:33:00:07:00:01")
    gc: list[tuple[bytes, Any]] = []
    assert send_until(tx, (group, 7640), b"seven", lambda: arrived(rc, gc, b"seven"))
    assert none_tagged(rb, b"seven"), "B left the group"
    for s in (rb, rc, tx):
        s.close()


def test_own_multicasts_loop_back_unless_disabled(trio: Trio) -> None:
    a = trio.nodes[0]
    group = "239.77.0.9"
    rx = udp(a, AF_INET, ("", 7650))
    rx.setsockopt(IP, std.IP_ADD_MEMBERSHIP, mreq(group))
    tx = udp(a, AF_INET, ("", 7651))
    assert tx.getsockopt(IP, std.IP_MULTICAST_LOOP) == 1
    tx.sendto(b"to myself", (group, 7650))
    rx.settimeout(10)
    assert rx.recvfrom(100) == (b"to myself", (trio.v4[0], 7651))
    tx.setsockopt(IP, std.IP_MULTICAST_LOOP, 0)
    assert tx.getsockopt(IP, std.IP_MULTICAST_LOOP) == 0
    tx.sendto(b"not to myself", (group, 7650))
    rx.settimeout(0.5)
    with pytest.raises(TimeoutError):
        rx.recvfrom(100)
    # A socket bound to the group itself takes that group's datagrams only.
    g2 = udp(a, AF_INET, (group, 7652))
    assert g2.getsockname() == (group, 7652)
    tx.setsockopt(IP, std.IP_MULTICAST_LOOP, 1)
    rx.setsockopt(IP, std.IP_ADD_MEMBERSHIP, mreq("239.77.0.10"))
    tx.sendto(b"other group", ("239.77.0.10", 7652))
    tx.sendto(b"this group", (group, 7652))
    g2.settimeout(10)
    assert g2.recvfrom(100)[0] == b"this group"
    for s in (rx, tx, g2):
        s.close()


def test_memberships_set_before_bind_apply_at_bind(trio: Trio) -> None:
    a, b, _ = trio.nodes
    group = "239.77.0.20"
    rb = udp(b, AF_INET)
    rb.setsockopt(IP, std.IP_ADD_MEMBERSHIP, mreq(group, trio.v4[1]))
    with raises_errno(errno.EADDRINUSE):
        rb.setsockopt(IP, std.IP_ADD_MEMBERSHIP, mreq(group, trio.v4[1]))
    rb.setsockopt(IP, std.IP_MULTICAST_IF, std.inet_aton(trio.v4[1]))
    rb.bind(("", 7660))
    with raises_errno(errno.EADDRINUSE):
        rb.setsockopt(IP, std.IP_ADD_MEMBERSHIP, mreq(group, trio.v4[1]))
    tx = udp(a)
    tx.setsockopt(IP, std.IP_MULTICAST_TTL, 4)
    got: list[tuple[bytes, Any]] = []
    assert send_until(tx, (group, 7660), b"early", lambda: arrived(rb, got, b"early"))
    for s in (rb, tx):
        s.close()


# -- options and errors, as Linux answers them ------------------------------------------------


def test_option_values_and_errors_match_linux(trio: Trio) -> None:
    a = trio.nodes[0]
    u = udp(a, AF_INET, ("", 7670))
    u6 = udp(a, AF_INET6, ("", 7671))
    t = a.socket(AF_INET, SOCK_STREAM)
    t6 = a.socket(AF_INET6, SOCK_STREAM)
    # Defaults.
    assert u.getsockopt(IP, std.IP_MULTICAST_TTL) == 1
    assert u.getsockopt(IP, std.IP_MULTICAST_LOOP) == 1
    assert u.getsockopt(IP, std.IP_MULTICAST_IF) == 0
    assert u6.getsockopt(IPV6, std.IPV6_MULTICAST_HOPS) == 1
    assert u6.getsockopt(IPV6, std.IPV6_MULTICAST_LOOP) == 1
    assert u6.getsockopt(IPV6, std.IPV6_MULTICAST_IF) == 0
    # Values.
    u.setsockopt(IP, std.IP_MULTICAST_TTL, 5)
    assert u.getsockopt(IP, std.IP_MULTICAST_TTL) == 5
    u.setsockopt(IP, std.IP_MULTICAST_TTL, b"\x07")
    assert u.getsockopt(IP, std.IP_MULTICAST_TTL) == 7
    u.setsockopt(IP, std.IP_MULTICAST_TTL, -1)
    assert u.getsockopt(IP, std.IP_MULTICAST_TTL) == 1
    u.setsockopt(IP, std.IP_MULTICAST_LOOP, 5)
    assert u.getsockopt(IP, std.IP_MULTICAST_LOOP) == 1
    u.setsockopt(SOL, std.SO_BROADCAST, 7)
    assert u.getsockopt(SOL, std.SO_BROADCAST) == 1
    u.setsockopt(IP, std.IP_MULTICAST_IF, std.inet_aton(trio.v4[0]))
    assert u.getsockopt(IP, std.IP_MULTICAST_IF, 4) == std.inet_aton(trio.v4[0])
    assert (
        u.getsockopt(IP, std.IP_MULTICAST_IF) == struct.unpack("=i", std.inet_aton(trio.v4[0]))[0]
    )
    u.setsockopt(IP, std.IP_MULTICAST_IF, ANY4)
    assert u.getsockopt(IP, std.IP_MULTICAST_IF) == 0
    u6.setsockopt(IPV6, std.IPV6_MULTICAST_HOPS, -1)
    u6.setsockopt(IPV6, std.IPV6_MULTICAST_IF, 0)
    u6.setsockopt(IPV6, std.IPV6_MULTICAST_LOOP, 0)
    assert u6.getsockopt(IPV6, std.IPV6_MULTICAST_LOOP) == 0
    # An AF_INET6 socket takes IPv4 memberships too (it is dual-stack).
    u6.setsockopt(IP, std.IP_ADD_MEMBERSHIP, mreq("239.77.1.1"))
    u6.setsockopt(IP, std.IP_DROP_MEMBERSHIP, mreq("239.77.1.1"))
    # Errors (the errno Linux gives for each, checked on this host's own sockets in
    # test_the_errors_are_linux_s below).
    bad: list[tuple[Any, int, int, Any, int]] = [
        (u, IP, std.IP_ADD_MEMBERSHIP, std.inet_aton("239.1.1.1"), errno.EINVAL),  # short
        (u, IP, std.IP_ADD_MEMBERSHIP, 5, errno.EINVAL),
        (u, IP, std.IP_ADD_MEMBERSHIP, mreq("10.0.0.1"), errno.EINVAL),  # not multicast
        (u, IP, std.IP_ADD_MEMBERSHIP, mreq("239.1.1.1", "203.0.113.7"), errno.ENODEV),
        (u, IP, std.IP_DROP_MEMBERSHIP, mreq("239.1.1.1"), errno.EADDRNOTAVAIL),
        (u, IP, std.IP_DROP_MEMBERSHIP, mreq("10.0.0.1"), errno.EINVAL),
        (u, IP, std.IP_MULTICAST_TTL, 256, errno.EINVAL),
        (u, IP, std.IP_MULTICAST_IF, b"abc", errno.EINVAL),
        (u, IP, std.IP_MULTICAST_IF, std.inet_aton("203.0.113.7"), errno.EADDRNOTAVAIL),
        (u, IPV6, std.IPV6_JOIN_GROUP, mreq6("ff05::1"), errno.ENOPROTOOPT),  # AF_INET
        (u6, IPV6, std.IPV6_JOIN_GROUP, mreq6("fd00::1"), errno.EINVAL),
        (u6, IPV6, std.IPV6_JOIN_GROUP, mreq6("::ffff:239.1.2.3"), errno.EINVAL),
        (u6, IPV6, std.IPV6_JOIN_GROUP, std.inet_pton(std.AF_INET6, "ff05::1"), errno.EINVAL),
        (u6, IPV6, std.IPV6_JOIN_GROUP, mreq6("ff05::1", 9999), errno.ENODEV),
        (u6, IPV6, std.IPV6_LEAVE_GROUP, mreq6("ff05::1"), errno.EADDRNOTAVAIL),
        (u6, IPV6, std.IPV6_MULTICAST_HOPS, 256, errno.EINVAL),
        (u6, IPV6, std.IPV6_MULTICAST_HOPS, -2, errno.EINVAL),
        (u6, IPV6, std.IPV6_MULTICAST_LOOP, 2, errno.EINVAL),
        (u6, IPV6, std.IPV6_MULTICAST_IF, 9999, errno.ENODEV),
        (t, IP, std.IP_ADD_MEMBERSHIP, mreq("239.1.1.1"), errno.EPROTO),
        (t, IP, std.IP_MULTICAST_TTL, 3, errno.EINVAL),
        (t, IP, std.IP_MULTICAST_IF, ANY4, errno.EINVAL),
        (t6, IPV6, std.IPV6_JOIN_GROUP, mreq6("ff05::1"), errno.EPROTO),
        (t6, IPV6, std.IPV6_MULTICAST_HOPS, 3, errno.ENOPROTOOPT),
        (t6, IPV6, std.IPV6_MULTICAST_IF, 0, errno.ENOPROTOOPT),
    ]
    for sock, level, opt, value, code in bad:
        with raises_errno(code):
            sock.setsockopt(level, opt, value)
    with pytest.raises(TypeError):  # as the standard library's
        u.setsockopt(SOL, std.SO_BROADCAST, 2**40)
    with pytest.raises(TypeError):
        u.setsockopt(IP, std.IP_MULTICAST_IF, 2**40)
    with pytest.raises(TypeError):
        u.setsockopt(IP, std.IP_ADD_MEMBERSHIP, "239.1.1.1")  # type: ignore[call-overload]
    u.setsockopt(IP, std.IP_ADD_MEMBERSHIP, mreq("239.1.1.1"))
    with raises_errno(errno.EADDRINUSE):
        u.setsockopt(IP, std.IP_ADD_MEMBERSHIP, mreq("239.1.1.1"))
    # Linux's limit: 20 groups per socket.
    for i in range(2, 21):
        u.setsockopt(IP, std.IP_ADD_MEMBERSHIP, mreq(f"239.1.1.{i}"))
    with raises_errno(errno.ENOBUFS):
        u.setsockopt(IP, std.IP_ADD_MEMBERSHIP, mreq("239.1.1.21"))
    with raises_errno(errno.ENOPROTOOPT):
        u.getsockopt(IP, std.IP_ADD_MEMBERSHIP)
    # TCP remembers the loop flags and SO_BROADCAST (Linux accepts them there).
    t.setsockopt(IP, std.IP_MULTICAST_LOOP, 0)
    t.setsockopt(SOL, std.SO_BROADCAST, 1)
    t6.setsockopt(IPV6, std.IPV6_MULTICAST_LOOP, 0)
    assert t.getsockopt(IP, std.IP_MULTICAST_LOOP) == 0
    assert t.getsockopt(SOL, std.SO_BROADCAST) == 1
    for s in (u, u6, t, t6):
        s.close()


@pytest.mark.skipif(sys.platform != "linux", reason="the errno values asserted are Linux's")
def test_the_errors_are_linux_s() -> None:
    """The errno values asserted above, from this host's kernel (only setsockopt calls on
    loopback sockets; nothing is sent)."""
    lo = "127.0.0.1"
    cases: list[tuple[int, int, int, Any, int]] = [
        (std.SOCK_DGRAM, IP, std.IP_ADD_MEMBERSHIP, std.inet_aton("239.1.1.1"), errno.EINVAL),
        (std.SOCK_DGRAM, IP, std.IP_ADD_MEMBERSHIP, 5, errno.EINVAL),
        (std.SOCK_DGRAM, IP, std.IP_ADD_MEMBERSHIP, mreq("10.0.0.1", lo), errno.EINVAL),
        (std.SOCK_DGRAM, IP, std.IP_ADD_MEMBERSHIP, mreq("239.1.1.1", "203.0.113.7"), errno.ENODEV),
        (std.SOCK_DGRAM, IP, std.IP_DROP_MEMBERSHIP, mreq("239.1.1.1", lo), errno.EADDRNOTAVAIL),
        (std.SOCK_DGRAM, IP, std.IP_MULTICAST_TTL, 256, errno.EINVAL),
        (std.SOCK_DGRAM, IP, std.IP_MULTICAST_IF, b"abc", errno.EINVAL),
        (
            std.SOCK_DGRAM,
            IP,
            std.IP_MULTICAST_IF,
            std.inet_aton("203.0.113.7"),
            errno.EADDRNOTAVAIL,
        ),
        (std.SOCK_STREAM, IP, std.IP_ADD_MEMBERSHIP, mreq("239.1.1.1", lo), errno.EPROTO),
        (std.SOCK_STREAM, IP, std.IP_MULTICAST_TTL, 3, errno.EINVAL),
        (std.SOCK_STREAM, IP, std.IP_MULTICAST_IF, ANY4, errno.EINVAL),
    ]
    for kind, level, opt, value, code in cases:
        with std.socket(std.AF_INET, kind) as s, raises_errno(code):
            s.setsockopt(level, opt, value)
    cases6: list[tuple[int, int, Any, int]] = [
        (std.SOCK_DGRAM, std.IPV6_JOIN_GROUP, mreq6("fd00::1", 1), errno.EINVAL),
        (std.SOCK_DGRAM, std.IPV6_JOIN_GROUP, mreq6("::ffff:239.1.2.3", 1), errno.EINVAL),
        (std.SOCK_DGRAM, std.IPV6_JOIN_GROUP, std.inet_pton(std.AF_INET6, "ff05::1"), errno.EINVAL),
        (std.SOCK_DGRAM, std.IPV6_JOIN_GROUP, mreq6("ff05::1", 9999), errno.ENODEV),
        (std.SOCK_DGRAM, std.IPV6_LEAVE_GROUP, mreq6("ff05::1", 1), errno.EADDRNOTAVAIL),
        (std.SOCK_DGRAM, std.IPV6_MULTICAST_HOPS, 256, errno.EINVAL),
        (std.SOCK_DGRAM, std.IPV6_MULTICAST_HOPS, -2, errno.EINVAL),
        (std.SOCK_DGRAM, std.IPV6_MULTICAST_LOOP, 2, errno.EINVAL),
        (std.SOCK_DGRAM, std.IPV6_MULTICAST_IF, 9999, errno.ENODEV),
        (std.SOCK_STREAM, std.IPV6_JOIN_GROUP, mreq6("ff05::1", 1), errno.EPROTO),
        (std.SOCK_STREAM, std.IPV6_MULTICAST_HOPS, 3, errno.ENOPROTOOPT),
        (std.SOCK_STREAM, std.IPV6_MULTICAST_IF, 0, errno.ENOPROTOOPT),
    ]
    for kind, opt, value, code in cases6:
        with std.socket(std.AF_INET6, kind) as s, raises_errno(code):
            s.setsockopt(IPV6, opt, value)
    with std.socket(std.AF_INET, std.SOCK_DGRAM) as s, raises_errno(errno.ENOPROTOOPT):
        s.setsockopt(IPV6, std.IPV6_JOIN_GROUP, mreq6("ff05::1", 1))
    with std.socket(std.AF_INET, std.SOCK_DGRAM) as s, raises_errno(errno.EACCES):
        s.sendto(b"x", ("255.255.255.255", 9))
    with std.socket(std.AF_INET, std.SOCK_DGRAM) as s:
        assert s.getsockopt(IP, std.IP_MULTICAST_TTL) == 1
        assert s.getsockopt(IP, std.IP_MULTICAST_LOOP) == 1
        assert s.getsockopt(SOL, std.SO_BROADCAST) == 0
        s.setsockopt(IP, std.IP_MULTICAST_TTL, -1)
        assert s.getsockopt(IP, std.IP_MULTICAST_TTL) == 1
