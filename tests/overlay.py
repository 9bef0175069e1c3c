"""Two zt nodes on loopback sharing one network, for the socket tests: an ad-hoc network (IPv6
6plane addresses) or a controller network (IPv4); an echo server and a bulk echo client
for their (plain or TLS) stream sockets; and their UDP sockets (:func:`udp`)."""

from __future__ import annotations

import contextlib
import errno
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

import pytest

import zt
import zt.ssl
from zt.network import NetworkIdLike
from zt.socket import AF_INET, AF_INET6, SOCK_DGRAM

from .support import NETWORK, Lab, wait_until


@dataclass
class Pair:
    """Nodes ``a`` and ``b`` on network ``nwid`` with addresses ``ip_a``/``ip_b`` of
    ``family``."""

    lab: Lab
    a: zt.Node
    b: zt.Node
    nwid: NetworkIdLike
    ip_a: str
    ip_b: str
    family: int

    def warm(self, timeout: float = 20.0) -> None:
        """Pings both ways until answered, so that the peers have a path and their stacks know
        each other's link addresses (a first datagram would otherwise wait for both)."""
        deadline = time.monotonic() + timeout
        for node, ip in ((self.a, self.ip_b), (self.b, self.ip_a)):
            while node.ping(self.nwid, ip, 1.0) is None:
                if time.monotonic() > deadline:
                    raise AssertionError(f"no ping answer from {ip}")


def adhoc_pair(lab: Lab, start: int, end: int) -> Pair:
    """Two nodes on the ad-hoc network for TCP/UDP ports ``start..=end`` (other ports are
    dropped by the network's rules, replies to ephemeral UDP ports too)."""
    nwid = zt.network.adhoc_network_id(start, end)
    a, b = lab.node(), lab.node()
    for n in (a, b):
        n.join(nwid)
        n.wait_network(nwid, 10)
    ip_a = str(zt.network.sixplane_address(nwid, a.address))
    ip_b = str(zt.network.sixplane_address(nwid, b.address))
    return Pair(lab, a, b, nwid, ip_a, ip_b, AF_INET6)


def ipv4_pair(lab: Lab) -> Pair:
    """Two authorized members of a controller network with IPv4 addresses."""
    ctl = lab.ctl.controller
    assert ctl is not None
    nwid = ctl.create_network(**NETWORK)["id"]
    a, b = lab.node(), lab.node()
    for n in (a, b):
        n.join(nwid)
    wait_until(lambda: len(ctl.members(nwid)) == 2, 10, "pending members")
    for n in (a, b):
        ctl.authorize(nwid, n.address)
    na, nb = a.wait_network(nwid, 10), b.wait_network(nwid, 10)
    assert na.ipv4 is not None and nb.ipv4 is not None
    return Pair(lab, a, b, nwid, str(na.ipv4.ip), str(nb.ipv4.ip), AF_INET)


def udp(
    node: zt.Node, family: int = AF_INET, bind: Optional[tuple[str, int]] = None
) -> zt.socket.socket:
    """A UDP socket of ``node``, bound to ``bind`` if given."""
    s = node.socket(family, SOCK_DGRAM)
    if bind is not None:
        s.bind(bind)
    return s


@contextlib.contextmanager
def lab_in(path: Path) -> Iterator[Lab]:
    """A lab, closed on leaving the block."""
    lab = Lab(path)
    try:
        yield lab
    finally:
        lab.close()


@contextlib.contextmanager
def raises_errno(code: int) -> Iterator[None]:
    """Asserts that the block raises an OSError with errno ``code``."""
    with pytest.raises(OSError) as info:  # noqa: PT011 - the errno is checked below
        yield
    err = info.value.errno
    assert err == code, f"errno {err} ({info.value}), not {errno.errorcode[code]}"


Stream = Union[zt.socket.socket, zt.ssl.SSLSocket]


def echo_server(
    server: Stream,
    count: int = 1,
    *,
    failed: tuple[type[Exception], ...] = (),
    close: bool = False,
) -> threading.Thread:
    """A thread echoing ``count`` connections accepted on the listener ``server``, each until
    EOF; an accept that raises one of ``failed`` counts as a connection too. ``close``: the
    listener is closed once done."""

    def run() -> None:
        try:
            for _ in range(count):
                try:
                    conn, _ = server.accept()
                except failed:
                    continue
                with conn:
                    while data := conn.recv(65536):
                        conn.sendall(data)
        finally:
            if close:
                server.close()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def bulk_echo(sock: Stream, blob: bytes, timeout: float = 60.0) -> bytes:
    """Sends ``blob`` on the connected ``sock`` while a thread reads the echo (until as many
    bytes came back, or EOF, waited for up to ``timeout``); what came back."""
    got = bytearray()

    def reader() -> None:
        while len(got) < len(blob):
            chunk = sock.recv(1 << 20)
            if not chunk:
                break
            got.extend(chunk)

    r = threading.Thread(target=reader)
    r.start()
    sock.sendall(blob)
    r.join(timeout)
    return bytes(got)
