"""TCP sockets on the overlay (zt's user-space stack) between zt nodes on loopback: an ad-hoc
network (IPv6 6plane) and a controller network (IPv4)."""

from __future__ import annotations

import hashlib
import os
import selectors
import threading

import pytest

import zt
from zt.socket import AF_INET, AF_INET6, SOCK_DGRAM, SOCK_STREAM

from .test_network import wait_until
from .test_networks import NETWORK, Lab


def echo_server(server: zt.socket.socket, count: int = 1) -> threading.Thread:
    def run() -> None:
        for _ in range(count):
            conn, _ = server.accept()
            with conn:
                while data := conn.recv(65536):
                    conn.sendall(data)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def test_tcp_echo_and_bulk_over_an_adhoc_ipv6_network(lab: Lab) -> None:
    nwid = zt.network.adhoc_network_id(7000, 7000)
    a, b = lab.node(), lab.node()
    for n in (a, b):
        n.join(nwid)
        n.wait_network(nwid, 10)
    server_ip = str(zt.network.sixplane_address(nwid, b.address))
    srv = b.socket(AF_INET6, SOCK_STREAM)
    srv.bind(("::", 7000))
    srv.listen(8)
    srv.settimeout(20)
    t = echo_server(srv)
    with a.socket(AF_INET6, SOCK_STREAM) as c:
        c.settimeout(20)
        c.connect((server_ip, 7000))
        assert c.getpeername() == (server_ip, 7000)
        assert c.getsockname()[0] == str(zt.network.sixplane_address(nwid, a.address))
        c.sendall(b"hello")
        assert c.recv(5) == b"hello"
        blob = os.urandom(4 << 20)
        got = bytearray()

        def reader() -> None:
            while len(got) < len(blob):
                got.extend(c.recv(1 << 20))

        r = threading.Thread(target=reader)
        r.start()
        c.sendall(blob)
        r.join(60)
        assert hashlib.sha256(got).digest() == hashlib.sha256(blob).digest()
        c.shutdown(zt.socket.SHUT_WR)
    t.join(20)
    srv.close()


def test_tcp_over_ipv4_with_select_makefile_and_errors(lab: Lab) -> None:
    assert lab.ctl.controller is not None
    ctl = lab.ctl.controller
    nwid = ctl.create_network(**NETWORK)["id"]
    a, b = lab.node(), lab.node()
    for n in (a, b):
        n.join(nwid)
    wait_until(lambda: len(ctl.members(nwid)) == 2, 10, "pending")
    for n in (a, b):
        ctl.authorize(nwid, n.address)
    a.wait_network(nwid, 10)
    nb = b.wait_network(nwid, 10)
    assert nb.ipv4 is not None
    ip = str(nb.ipv4.ip)
    srv = b.socket(AF_INET, SOCK_STREAM)
    srv.bind((ip, 8080))
    srv.listen()
    # Non-blocking accept with nothing pending.
    srv.setblocking(False)
    with pytest.raises(BlockingIOError):
        srv.accept()
    srv.setblocking(True)
    srv.settimeout(10)
    t = echo_server(srv)
    c = a.socket(AF_INET, SOCK_STREAM)
    c.settimeout(10)
    assert c.connect_ex((ip, 8080)) == 0
    sel = selectors.DefaultSelector()
    sel.register(c, selectors.EVENT_READ)
    assert sel.select(0.2) == [], "nothing to read yet"
    c.sendall(b"line one\nline two\n")
    assert sel.select(5), "readable once the echo arrives"
    f = c.makefile("rb")
    assert f.readline() == b"line one\n"
    assert f.readline() == b"line two\n"
    f.close()
    # A timeout raises TimeoutError and leaves the socket usable.
    c.settimeout(0.2)
    with pytest.raises(TimeoutError):
        c.recv(10)
    c.close()
    with pytest.raises(OSError, match="Bad file descriptor") as e:
        c.send(b"x")
    assert e.value.errno == 9  # EBADF
    t.join(10)
    # Nothing routes 203.0.113.0/24 on the overlay.
    d = a.socket(AF_INET, SOCK_STREAM)
    with pytest.raises(OSError, match="unreachable") as e:
        d.connect(("203.0.113.9", 80))
    assert e.value.errno == 101  # ENETUNREACH
    # A second listener on the same port is refused.
    dup = b.socket(AF_INET, SOCK_STREAM)
    dup.bind((ip, 8080))
    with pytest.raises(OSError, match="in use") as e:
        dup.listen()
    assert e.value.errno == 98  # EADDRINUSE
    srv.close()


def test_udp_request_response_both_ways(lab: Lab) -> None:
    nwid = zt.network.adhoc_network_id(5353, 5353)
    a, b = lab.node(), lab.node()
    for n in (a, b):
        n.join(nwid)
        n.wait_network(nwid, 10)
    ip_a = str(zt.network.sixplane_address(nwid, a.address))
    ip_b = str(zt.network.sixplane_address(nwid, b.address))
    sb = b.socket(AF_INET6, SOCK_DGRAM)
    sb.bind(("::", 5353))
    sa = a.socket(AF_INET6, SOCK_DGRAM)
    sa.bind(("::", 5353))
    assert sa.getsockname()[1] == 5353

    def echo() -> None:
        sb.settimeout(5)
        try:
            while True:
                data, addr = sb.recvfrom(65536)
                sb.sendto(data, addr)
        except (TimeoutError, OSError):
            pass

    t = threading.Thread(target=echo, daemon=True)
    t.start()
    sa.settimeout(0.5)
    for i in range(10):
        msg = bytes([i]) * (64 + 100 * i)
        for _ in range(20):  # the first datagram may wait for the path; resend like a client
            sa.sendto(msg, (ip_b, 5353))
            try:
                while True:
                    data, addr = sa.recvfrom(65536)
                    if data == msg:
                        break
            except TimeoutError:
                continue
            assert addr == (ip_b, 5353)
            break
        else:
            pytest.fail(f"no echo for datagram {i}")
    # connect() + send()/recv() for a fixed peer; select sees it readable.
    sa.connect((ip_b, 5353))
    sa.send(b"connected")
    sel = selectors.DefaultSelector()
    sel.register(sa, selectors.EVENT_READ)
    assert sel.select(5)
    assert sa.recv(100) == b"connected"
    sb.close()
    sa.close()
    t.join(10)
    assert ip_a != ip_b


def test_asyncio_echo_server_with_50_concurrent_clients(lab: Lab) -> None:
    import asyncio

    import zt.asyncio

    nwid = zt.network.adhoc_network_id(7100, 7100)
    a, b = lab.node(), lab.node()
    for n in (a, b):
        n.join(nwid)
        n.wait_network(nwid, 10)
    server_ip = str(zt.network.sixplane_address(nwid, b.address))

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        writer.close()

    async def client(i: int) -> bytes:
        reader, writer = await zt.asyncio.open_connection(a, server_ip, 7100)
        payload = os.urandom(1000 + i * 3000)
        writer.write(payload)
        await writer.drain()
        writer.write_eof()
        got = await reader.read(-1)
        writer.close()
        assert got == payload, f"client {i}: {len(got)} of {len(payload)} bytes"
        return hashlib.sha256(got).digest()

    async def main() -> int:
        server = await zt.asyncio.start_server(handle, b, "::", 7100)
        async with server:
            digests = await asyncio.wait_for(asyncio.gather(*(client(i) for i in range(50))), 60)
        return len(set(digests))

    assert asyncio.run(main()) == 50
    # Connecting where nobody listens (a port outside the ad-hoc range is dropped) times out.

    async def refused() -> None:
        await asyncio.wait_for(zt.asyncio.open_connection(a, server_ip, 7101), 1.0)

    with pytest.raises(asyncio.TimeoutError):
        asyncio.run(refused())
