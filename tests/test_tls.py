"""TLS on zt sockets: blocking (``zt.ssl``, SSLObject + MemoryBIO) and asyncio (``start_tls`` on
``zt.asyncio``'s transport), between two nodes on loopback with a test CA."""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import os
import pathlib
import selectors
import socket
import ssl
import sys
import threading
from collections.abc import Iterator
from typing import Any, Optional, cast

import pytest

import zt
import zt.asyncio
from zt.socket import AF_INET6, SOCK_STREAM

from .overlay import bulk_echo, echo_server
from .tlsnet import SERVER_NAME, Overlay, overlay


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Overlay]:
    yield from overlay(pathlib.Path(tmp_path_factory.mktemp("tls")))


def tls_echo_server(net: Overlay, port: int, count: int = 1) -> threading.Thread:
    """A TLS listener (``zt.ssl`` on a listening socket) echoing ``count`` connections until
    EOF; failed handshakes count too."""
    listener = zt.ssl.wrap_socket(net.listen(port), net.certs.server_context(), server_side=True)
    listener.settimeout(20)
    return echo_server(listener, count, failed=(ssl.SSLError,), close=True)


def client(net: Overlay, context: Optional[ssl.SSLContext] = None) -> zt.ssl.SSLSocket:
    sock = net.a.socket(AF_INET6, SOCK_STREAM)
    sock.settimeout(20)
    ctx = net.certs.client_context() if context is None else context
    return zt.ssl.wrap_socket(sock, ctx, server_hostname=SERVER_NAME)


def test_blocking_tls_echo_bulk_makefile_and_certificate(net: Overlay) -> None:
    t = tls_echo_server(net, 8001)
    with client(net) as c:
        c.connect((net.ip_b, 8001))
        assert c.version() in ("TLSv1.2", "TLSv1.3")
        cipher = c.cipher()
        assert cipher is not None and cipher[2] >= 128
        cert = c.getpeercert()
        assert dict(x[0] for x in cert["subject"])["commonName"] == SERVER_NAME
        sans = [(k, ipaddress.ip_address(v)) for k, v in cert["subjectAltName"] if k != "DNS"]
        assert sans == [("IP Address", ipaddress.ip_address(net.ip_b))]
        assert c.getpeername() == (net.ip_b, 8001, 0, 0)
        assert c.sslobject is not None
        c.sendall(b"hello over tls")
        assert c.recv(100) == b"hello over tls"
        blob = os.urandom(3 << 20)
        got = bulk_echo(c, blob)
        assert hashlib.sha256(got).digest() == hashlib.sha256(blob).digest()
        f = c.makefile("rwb")
        f.write(b"line one\nline two\n")
        f.flush()
        assert f.readline() == b"line one\n"
        assert f.readline() == b"line two\n"
        f.close()
        buf = bytearray(5)
        c.sendall(b"into!")
        assert c.recv_into(buf) == 5
        assert bytes(buf) == b"into!"
    t.join(10)
    assert not t.is_alive()


def test_files_from_makefile_outlive_close_on_tls(net: Overlay) -> None:
    """As with ``zt.socket`` (and the standard library): close() with makefile() files open
    keeps the TLS connection until the last of them is closed; text files have ``.mode``."""
    t = tls_echo_server(net, 8011)
    c = client(net)
    c.connect((net.ip_b, 8011))
    f = c.makefile("rwb")
    text = c.makefile("r", encoding="ascii")
    assert text.mode == "r"
    f.write(b"first\n")
    f.flush()
    assert f.readline() == b"first\n"
    c.close()
    f.write(b"second\n")  # still open: both ways through the file
    f.flush()
    assert f.readline() == b"second\n"
    f.close()
    assert c.fileno() >= 0  # the text file is still open
    text.close()
    assert c.fileno() == -1
    with pytest.raises(OSError, match="Bad file descriptor"):
        c.recv(1)
    t.join(10)
    assert not t.is_alive()


def test_blocking_tls_refuses_an_unknown_ca_and_a_wrong_name(net: Overlay) -> None:
    t = tls_echo_server(net, 8002, count=3)
    # The system's CAs do not know the test CA.
    c = client(net, ssl.create_default_context())
    with c, pytest.raises(ssl.SSLCertVerificationError, match="unable to get local issuer"):
        c.connect((net.ip_b, 8002))
    # The right CA but a name the certificate does not hold.
    sock = net.a.socket(AF_INET6, SOCK_STREAM)
    sock.settimeout(20)
    c = zt.ssl.wrap_socket(sock, net.certs.client_context(), server_hostname="other.test")
    with c, pytest.raises(ssl.SSLCertVerificationError, match="mismatch"):
        c.connect((net.ip_b, 8002))
    # The server survives failed handshakes.
    with client(net) as c:
        c.connect((net.ip_b, 8002))
        c.sendall(b"still serving")
        assert c.recv(100) == b"still serving"
    t.join(10)
    assert not t.is_alive()


def test_wrap_socket_closes_the_socket_when_its_handshake_fails(net: Overlay) -> None:
    """As ``SSLContext.wrap_socket``: wrapping a connected socket does the handshake, and a
    failed handshake closes the socket (``wrap_socket(node.create_connection(...))`` left it
    to the garbage collector)."""
    t = tls_echo_server(net, 8010)
    sock = net.a.create_connection((net.ip_b, 8010), timeout=20)
    with pytest.raises(ssl.SSLCertVerificationError):
        zt.ssl.wrap_socket(sock, ssl.create_default_context(), server_hostname=SERVER_NAME)
    assert sock.fileno() == -1
    t.join(10)
    assert not t.is_alive()


def test_blocking_tls_timeouts_nonblocking_mode_and_unwrap(net: Overlay) -> None:
    plain = net.listen(8003)
    plain.settimeout(20)
    server_ctx = net.certs.server_context()
    done = threading.Event()
    after_unwrap: list[bytes] = []

    def run() -> None:
        conn, _ = plain.accept()
        tls = zt.ssl.wrap_socket(conn, server_ctx, server_side=True)
        assert tls.recv(100) == b"ping"
        done.wait(20)  # the client times out waiting for data meanwhile
        tls.sendall(b"pong")
        raw = tls.unwrap()  # close_notify both ways, then plain bytes again
        after_unwrap.append(raw.recv(100))
        raw.sendall(b"plain again")
        raw.close()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    c = client(net)
    c.connect((net.ip_b, 8003))
    c.sendall(b"ping")
    c.settimeout(0.2)
    with pytest.raises(TimeoutError):
        c.recv(10)
    # Non-blocking: nothing to read yet raises SSLWantReadError; readiness then says when.
    c.setblocking(False)
    with pytest.raises(ssl.SSLWantReadError):
        c.recv(10)
    done.set()
    sel = selectors.DefaultSelector()
    sel.register(c, selectors.EVENT_READ)
    got = b""
    while not got:
        assert sel.select(10), "the reply never arrived"
        try:
            got = c.recv(10)
        except ssl.SSLWantReadError:
            continue
    assert got == b"pong"
    c.settimeout(20)
    raw = c.unwrap()
    assert c.sslobject is None
    with pytest.raises(ValueError, match="unwrapped"):
        c.recv(1)
    raw.sendall(b"plain text")
    assert raw.recv(100) == b"plain again"
    raw.close()
    t.join(10)
    assert after_unwrap == [b"plain text"]
    plain.close()


def test_wrap_socket_checks_its_arguments(net: Overlay) -> None:
    with socket.socket() as os_sock, pytest.raises(TypeError, match="zt sockets"):
        zt.ssl.wrap_socket(os_sock)  # type: ignore[arg-type]
    s = net.a.socket(AF_INET6, SOCK_STREAM)
    with pytest.raises(ValueError, match="certificate"):
        zt.ssl.wrap_socket(s, server_side=True)
    with pytest.raises(ValueError, match="server_hostname"):
        zt.ssl.wrap_socket(s, net.certs.server_context(), server_side=True, server_hostname="x")
    # A client context checks names: it needs server_hostname, as the stdlib's does.
    with pytest.raises(ValueError, match="server_hostname"):
        zt.ssl.wrap_socket(s, net.certs.client_context())
    u = net.a.socket(AF_INET6, zt.socket.SOCK_DGRAM)
    with pytest.raises(NotImplementedError):
        zt.ssl.wrap_socket(u, net.certs.client_context(), server_hostname=SERVER_NAME)
    # Closed: EBADF like any closed socket.
    c = zt.ssl.wrap_socket(s, net.certs.client_context(), server_hostname=SERVER_NAME)
    c.close()
    with pytest.raises(OSError, match="Bad file descriptor"):
        c.send(b"x")
    assert c.fileno() == -1


def test_asyncio_tls_server_and_client(net: Overlay) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        tls = writer.get_extra_info("ssl_object")
        writer.write(f"{tls.version()}\n".encode())
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        writer.close()

    async def echo(payload: bytes) -> tuple[bytes, str]:
        reader, writer = await zt.asyncio.open_connection(
            net.a, net.ip_b, 8004, ssl=net.certs.client_context(), server_hostname=SERVER_NAME
        )
        version = (await reader.readline()).decode().strip()
        cert = writer.get_extra_info("peercert")
        assert dict(x[0] for x in cert["subject"])["commonName"] == SERVER_NAME
        writer.write(payload)
        await writer.drain()
        got = await reader.readexactly(len(payload))
        writer.close()
        await writer.wait_closed()
        return got, version

    async def main() -> None:
        server = await zt.asyncio.start_server(
            handle, net.b, "::", 8004, ssl=net.certs.server_context()
        )
        async with server:
            payloads = [os.urandom(1000 + 50_000 * i) for i in range(8)]
            results = await asyncio.wait_for(asyncio.gather(*(echo(p) for p in payloads)), 60)
            for p, (got, version) in zip(payloads, results):
                assert got == p
                assert version in ("TLSv1.2", "TLSv1.3")
            # A client that does not trust the server fails; the server keeps serving.
            with pytest.raises(ssl.SSLCertVerificationError):
                await zt.asyncio.open_connection(
                    net.a, net.ip_b, 8004, ssl=True, server_hostname=SERVER_NAME
                )
            got, _ = await echo(b"after a failed handshake")
            assert got == b"after a failed handshake"

    asyncio.run(main())


@pytest.mark.skipif(sys.version_info < (3, 11), reason="StreamWriter.start_tls is 3.11+")
def test_asyncio_starttls_upgrades_a_plain_connection(net: Overlay) -> None:
    server_ctx = net.certs.server_context()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        assert await reader.readline() == b"STARTTLS\n"
        writer.write(b"GO\n")
        await writer.drain()
        await cast(Any, writer).start_tls(server_ctx)  # 3.11+ (mypy checks as 3.10)
        while data := await reader.read(65536):
            writer.write(data.upper())
            await writer.drain()
        writer.close()

    async def main() -> None:
        async with await zt.asyncio.start_server(handle, net.b, "::", 8005):
            reader, writer = await zt.asyncio.open_connection(net.a, net.ip_b, 8005)
            assert writer.get_extra_info("ssl_object") is None
            writer.write(b"STARTTLS\n")
            assert await reader.readline() == b"GO\n"
            await cast(Any, writer).start_tls(
                net.certs.client_context(), server_hostname=SERVER_NAME
            )
            assert writer.get_extra_info("ssl_object").version() in ("TLSv1.2", "TLSv1.3")
            writer.write(b"now encrypted")
            assert await reader.readexactly(13) == b"NOW ENCRYPTED"
            writer.close()
            await writer.wait_closed()

    asyncio.run(asyncio.wait_for(main(), 60))


def test_loop_start_tls_on_the_zt_transport(net: Overlay) -> None:
    """``loop.start_tls`` directly (any Python): the transport is start_tls-compatible and the
    protocol is switched to asyncio's SSL protocol."""
    server_ctx = net.certs.server_context()
    served: list[zt.socket.socket] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        served.append(writer.get_extra_info("socket"))
        writer.write(await reader.read(100))
        await writer.drain()
        writer.close()  # without wait_closed(): the server's wait_closed() waits for it

    class Collect(asyncio.Protocol):
        def __init__(self) -> None:
            self.data = b""
            self.done = asyncio.get_running_loop().create_future()

        def data_received(self, data: bytes) -> None:
            self.data += data

        def connection_lost(self, exc: object) -> None:
            if not self.done.done():
                self.done.set_result(None)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        async with await zt.asyncio.start_server(handle, net.b, "::", 8006, ssl=server_ctx):
            sock = await zt.asyncio._connect(net.a, net.ip_b, 8006)
            proto = Collect()
            raw = zt.asyncio._Transport(loop, sock, proto)
            assert raw.get_protocol() is proto
            tls = await loop.start_tls(
                raw, proto, net.certs.client_context(), server_hostname=SERVER_NAME
            )
            assert tls is not None
            assert raw.get_protocol() is not proto  # asyncio's SSL protocol sits on it now
            tls.write(b"via loop.start_tls")
            await asyncio.wait_for(proto.done, 20)
            assert proto.data == b"via loop.start_tls"
            tls.close()
        # The server's side of the connection ended its closing handshake (close_notify both
        # ways) before wait_closed() returned: nothing is left open when the loop stops.
        assert [s.fileno() for s in served] == [-1]

    asyncio.run(main())


def test_asyncio_server_closes_connections_whose_task_is_cancelled(net: Overlay) -> None:
    """A connection's handshake or handler task cancelled (by hand, or by ``asyncio.run``
    ending) closes the connection: its client reads EOF, and no server socket is left to the
    garbage collector."""
    accepted: list[Any] = []
    handling: list[asyncio.Event] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer.get_extra_info("socket"))
        handling[0].set()
        await reader.read()  # until cancelled

    async def cancel_the_first_task(server: zt.asyncio.Server, port: int) -> None:
        reader, writer = await zt.asyncio.open_connection(net.a, net.ip_b, port)
        while not server._tasks:  # one pass of the loop at a time: the task has not run yet
            await asyncio.sleep(0)
        for task in list(server._tasks):
            task.cancel()
        assert await asyncio.wait_for(reader.read(), 20) == b""
        writer.close()
        await writer.wait_closed()

    async def main() -> None:
        handling.append(asyncio.Event())
        # A TLS server: the handshake task is cancelled as soon as it exists (before it ran).
        ctx = net.certs.server_context()
        async with await zt.asyncio.start_server(handle, net.b, "::", 8007, ssl=ctx) as server:
            await cancel_the_first_task(server, 8007)
        # A plain server: the same with the handler's task.
        async with await zt.asyncio.start_server(handle, net.b, "::", 8008) as server:
            await cancel_the_first_task(server, 8008)
        assert accepted == []  # the handler never ran, and its connection is closed
        # A handler still running when the loop ends: asyncio.run cancels it.
        server = await zt.asyncio.start_server(handle, net.b, "::", 8009)
        handling[0].clear()
        # (A blocking client: the TCP handshake is the node's, the loop need not run.)
        clients.append(net.a.create_connection((net.ip_b, 8009), timeout=20))
        await asyncio.wait_for(handling[0].wait(), 20)
        server.close()

    clients: list[zt.socket.socket] = []
    try:
        asyncio.run(asyncio.wait_for(main(), 60))
        assert [s.fileno() for s in accepted] == [-1]
    finally:
        for c in clients:
            c.close()
