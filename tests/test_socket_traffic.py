"""Traffic through overlay sockets (zt's user-space stack) between zt nodes on loopback, over an
ad-hoc network (IPv6 6plane) and a controller network (IPv4): TCP echo and bulk transfers,
vanishing and idle peers, listeners across networks, UDP request/response and an asyncio echo
server. How each socket call behaves next to the standard library's is ``test_socket_api.py``."""

from __future__ import annotations

import errno
import hashlib
import os
import selectors
import threading
import time
from socket import (
    IPPROTO_IPV6,
    IPPROTO_TCP,
    IPV6_V6ONLY,
    SO_KEEPALIVE,
    SO_RCVBUF,
    SO_SNDBUF,
    SOL_SOCKET,
)
from typing import Any

import pytest

import zt
from zt.socket import AF_INET, AF_INET6, SOCK_DGRAM, SOCK_STREAM

from .overlay import adhoc_pair, bulk_echo, echo_server, ipv4_pair
from .support import Lab


def test_tcp_echo_and_bulk_over_an_adhoc_ipv6_network(lab: Lab) -> None:
    pair = adhoc_pair(lab, 7000, 7000)
    a, b, server_ip = pair.a, pair.b, pair.ip_b
    srv = b.socket(AF_INET6, SOCK_STREAM)
    srv.bind(("::", 7000))
    srv.listen(8)
    srv.settimeout(20)
    t = echo_server(srv)
    with a.socket(AF_INET6, SOCK_STREAM) as c:
        c.settimeout(20)
        c.connect((server_ip, 7000))
        assert c.getpeername() == (server_ip, 7000, 0, 0)
        assert c.getsockname()[0] == pair.ip_a
        c.sendall(b"hello")
        assert c.recv(5) == b"hello"
        blob = os.urandom(4 << 20)
        got = bulk_echo(c, blob)
        assert hashlib.sha256(got).digest() == hashlib.sha256(blob).digest()
        # The sender's figures (as Linux's TCP_INFO): what it sent, its round trip, its
        # buffers (at least the default: left alone, they may grow with the path).
        info = c.tcp_info()
        assert info["bytes_sent"] >= len(blob) + 5
        assert info["srtt_us"] > 0 and info["cwnd"] > 0 and info["rto_us"] >= 200_000
        assert info["rx_buffer"] >= 1 << 20 and info["tx_buffer"] >= 1 << 20
        c.shutdown(zt.socket.SHUT_WR)
    t.join(20)
    srv.close()


def test_tcp_buffers_set_by_the_application_stay_fixed(lab: Lab) -> None:
    pair = adhoc_pair(lab, 7001, 7001)
    a, b, server_ip = pair.a, pair.b, pair.ip_b
    with b.socket(AF_INET6, SOCK_STREAM) as srv, a.socket(AF_INET6, SOCK_STREAM) as c:
        srv.bind(("::", 7001))
        srv.listen(1)
        srv.settimeout(20)
        with pytest.raises(OSError, match="not connected") as e:
            c.tcp_info()
        assert e.value.errno == errno.ENOTCONN
        c.setsockopt(SOL_SOCKET, SO_SNDBUF, 65536)
        c.setsockopt(SOL_SOCKET, SO_RCVBUF, 32768)
        c.settimeout(20)
        c.connect((server_ip, 7001))
        conn, _ = srv.accept()
        with conn:
            conn.settimeout(20)
            blob = os.urandom(1 << 20)
            sender = threading.Thread(target=c.sendall, args=(blob,))
            sender.start()
            got = bytearray()
            while len(got) < len(blob):
                got.extend(conn.recv(1 << 16))
            sender.join(20)
            assert bytes(got) == blob
            info = c.tcp_info()
            assert (info["tx_buffer"], info["rx_buffer"]) == (65536, 32768)
            assert conn.tcp_info()["rx_buffer"] >= 1 << 20


def test_tcp_over_ipv4_with_select_makefile_and_errors(lab: Lab) -> None:
    pair = ipv4_pair(lab)
    a, b, ip = pair.a, pair.b, pair.ip_b
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
    pair = adhoc_pair(lab, 5353, 5353)
    a, b, ip_a, ip_b = pair.a, pair.b, pair.ip_a, pair.ip_b
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
            assert addr == (ip_b, 5353, 0, 0)
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

    pair = adhoc_pair(lab, 7100, 7100)
    a, b, server_ip = pair.a, pair.b, pair.ip_b

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


def test_tcp_peer_vanishing_mid_transfer_times_out(lab: Lab) -> None:
    pair = adhoc_pair(lab, 7210, 7210)
    a, b, server_ip = pair.a, pair.b, pair.ip_b
    srv = b.socket(AF_INET6, SOCK_STREAM)
    srv.bind(("::", 7210))
    srv.listen()
    srv.settimeout(10)
    c = a.socket(AF_INET6, SOCK_STREAM)
    assert c.getsockopt(IPPROTO_TCP, zt.socket.TCP_USER_TIMEOUT) == 0  # the default (120 s)
    # Set before connect: kept, and it bounds the handshake too (the first SYNs may wait for
    # the path to the peer, so not too short).
    c.setsockopt(IPPROTO_TCP, zt.socket.TCP_USER_TIMEOUT, 30_000)
    with pytest.raises(OSError, match="must be") as bad:
        c.setsockopt(IPPROTO_TCP, zt.socket.TCP_USER_TIMEOUT, -1)
    assert bad.value.errno == errno.EINVAL
    c.settimeout(10)
    c.connect((server_ip, 7210))
    assert c.getsockopt(IPPROTO_TCP, zt.socket.TCP_USER_TIMEOUT) == 30_000
    c.setsockopt(IPPROTO_TCP, zt.socket.TCP_USER_TIMEOUT, 2000)
    assert c.getsockopt(IPPROTO_TCP, zt.socket.TCP_USER_TIMEOUT) == 2000
    conn, _ = srv.accept()
    conn.settimeout(10)
    # A call timeout while the peer is alive but silent: TimeoutError (no errno), still usable.
    c.settimeout(0.3)
    started = time.monotonic()
    with pytest.raises(TimeoutError) as call_timeout:
        c.recv(10)
    assert call_timeout.value.errno is None
    assert 0.25 < time.monotonic() - started < 3
    c.settimeout(30)  # longer than the user timeout: the abort must come first
    sel = selectors.DefaultSelector()
    sel.register(c, selectors.EVENT_READ)
    # B's side of the transfer: reads a little, then B's node stops under it.
    b_result: list[BaseException] = []

    def b_reads() -> None:
        try:
            while conn.recv(65536):
                pass
        except OSError as e:
            b_result.append(e)

    rb = threading.Thread(target=b_reads, daemon=True)
    rb.start()
    c.sendall(os.urandom(1 << 20))
    b._handle().stop(reset=False)  # vanishes, as if killed: no reset for its peers
    stopped = time.monotonic()
    rb.join(10)
    assert not rb.is_alive(), "B's blocked recv returns when its node stops"
    assert isinstance(b_result[0], OSError) and b_result[0].errno == errno.ENETDOWN

    def fill() -> None:
        while True:
            c.sendall(b"x" * 65536)

    # ETIMEDOUT is a TimeoutError (with errno 110), as the standard library raises it too.
    with pytest.raises(TimeoutError, match="connection timed out") as aborted:
        fill()
    waited = time.monotonic() - stopped
    assert aborted.value.errno == errno.ETIMEDOUT
    assert 1.5 < waited < 8, f"aborted {waited:.1f} s after the peer vanished (user timeout 2 s)"
    assert sel.select(0) != [], "the descriptor is readable once the connection failed"
    with pytest.raises(TimeoutError, match="connection timed out") as again:
        c.recv(10)
    assert again.value.errno == errno.ETIMEDOUT
    for sock in (c, conn, srv):
        sock.close()


def test_tcp_keepalive_detects_a_vanished_idle_peer(lab: Lab) -> None:
    pair = adhoc_pair(lab, 7211, 7211)
    a, b, server_ip = pair.a, pair.b, pair.ip_b
    srv = b.socket(AF_INET6, SOCK_STREAM)
    srv.bind(("::", 7211))
    # Options set on the listener are inherited by the connections it accepts.
    srv.setsockopt(SOL_SOCKET, SO_KEEPALIVE, 1)
    srv.listen()
    srv.settimeout(10)
    c = a.socket(AF_INET6, SOCK_STREAM)
    c.settimeout(10)
    c.connect((server_ip, 7211))
    conn, _ = srv.accept()
    assert conn.getsockopt(SOL_SOCKET, SO_KEEPALIVE) == 1
    assert conn.getsockopt(IPPROTO_TCP, zt.socket.TCP_KEEPIDLE) == 7200
    for opt, value in (
        (zt.socket.TCP_KEEPIDLE, 1),
        (zt.socket.TCP_KEEPINTVL, 1),
        (zt.socket.TCP_KEEPCNT, 2),
    ):
        c.setsockopt(IPPROTO_TCP, opt, value)
        assert c.getsockopt(IPPROTO_TCP, opt) == value
    c.setsockopt(SOL_SOCKET, SO_KEEPALIVE, True)
    assert c.getsockopt(SOL_SOCKET, SO_KEEPALIVE) == 1
    for opt, value in ((zt.socket.TCP_KEEPCNT, 0), (zt.socket.TCP_KEEPIDLE, 40000)):
        with pytest.raises(OSError, match="must be") as bad:
            c.setsockopt(IPPROTO_TCP, opt, value)
        assert bad.value.errno == errno.EINVAL
    with pytest.raises(TypeError):
        c.setsockopt(IPPROTO_TCP, zt.socket.TCP_KEEPCNT, "3")  # type: ignore[call-overload]
    # Idle past the give-up time (3 s) with B alive: probes are answered, nothing fails.
    c.settimeout(5)
    with pytest.raises(TimeoutError):
        c.recv(10)
    conn.sendall(b"alive")
    assert c.recv(10) == b"alive"
    b._handle().stop(reset=False)  # vanishes, as if killed: no reset for its peers
    stopped = time.monotonic()
    c.settimeout(30)
    with pytest.raises(TimeoutError, match="connection timed out") as dropped:
        c.recv(10)
    waited = time.monotonic() - stopped
    assert dropped.value.errno == errno.ETIMEDOUT
    assert 2 < waited < 10, f"dropped {waited:.1f} s after the peer vanished (expected ~3 s)"
    for sock in (c, conn, srv):
        sock.close()


def test_tcp_listeners_on_unspecified_addresses_cover_every_network(lab: Lab) -> None:
    pair = ipv4_pair(lab)
    a, b, a4, b4 = pair.a, pair.b, pair.ip_a, pair.ip_b
    adhoc = zt.network.adhoc_network_id(7400, 7402)
    # B listens before it joins the ad-hoc network: dual-stack ::, IPv4-only 0.0.0.0, and
    # IPv6-only :: (which may share a port with 0.0.0.0, as on Linux).
    dual = b.socket(AF_INET6, SOCK_STREAM)
    dual.bind(("::", 7400))
    dual.listen()
    only4 = b.socket(AF_INET, SOCK_STREAM)
    only4.bind(("0.0.0.0", 7401))
    only4.listen()
    only6 = b.socket(AF_INET6, SOCK_STREAM)
    only6.setsockopt(IPPROTO_IPV6, IPV6_V6ONLY, 1)
    assert only6.getsockopt(IPPROTO_IPV6, IPV6_V6ONLY) == 1
    only6.bind(("::", 7401))
    only6.listen()
    clash = b.socket(AF_INET, SOCK_STREAM)
    clash.bind(("0.0.0.0", 7400))
    with pytest.raises(OSError, match="in use") as in_use:
        clash.listen()
    assert in_use.value.errno == errno.EADDRINUSE
    missing = b.socket(AF_INET, SOCK_STREAM)
    missing.bind(("198.18.99.99", 7400))
    with pytest.raises(OSError, match="cannot assign") as not_mine:
        missing.listen()
    assert not_mine.value.errno == errno.EADDRNOTAVAIL
    for n in (a, b):
        n.join(adhoc)
        n.wait_network(adhoc, 10)
    a6 = str(zt.network.sixplane_address(adhoc, a.address))
    b6 = str(zt.network.sixplane_address(adhoc, b.address))

    def exchange(family: int, to: tuple[str, int], srv: zt.socket.socket) -> tuple[str, Any]:
        """Connects A to ``to``; (peer host, local address) as B's accepted socket sees them."""
        srv.settimeout(10)
        with a.socket(family, SOCK_STREAM) as c:
            c.settimeout(10)
            c.connect(to)
            conn, peer = srv.accept()
            with conn:
                c.sendall(b"hi")
                assert conn.recv(2) == b"hi"
                assert conn.getpeername() == peer
                return peer[0], conn.getsockname()

    # The dual-stack listener: IPv4 over the controller network (addresses IPv4-mapped), IPv6
    # over the network joined after listen().
    assert exchange(AF_INET, (b4, 7400), dual) == (f"::ffff:{a4}", (f"::ffff:{b4}", 7400, 0, 0))
    assert exchange(AF_INET6, (b6, 7400), dual) == (a6, (b6, 7400, 0, 0))
    # A dual-stack client reaches an IPv4 peer through its mapped address.
    assert exchange(AF_INET6, (f"::ffff:{b4}", 7400), dual)[0] == f"::ffff:{a4}"
    # 0.0.0.0 takes IPv4 only; the v6-only :: on the same port takes the IPv6 connections.
    assert exchange(AF_INET, (b4, 7401), only4) == (a4, (b4, 7401))
    assert exchange(AF_INET6, (b6, 7401), only6) == (a6, (b6, 7401, 0, 0))
    # Nothing listens on 7402: refused on either network.
    for family, host in ((AF_INET, b4), (AF_INET6, b6)):
        with a.socket(family, SOCK_STREAM) as c:
            c.settimeout(10)
            with pytest.raises(ConnectionRefusedError):
                c.connect((host, 7402))
    for s in (dual, only4, only6, clash, missing):
        s.close()
