"""HTTP libraries over the overlay: httpx through ``zt.http``'s transports, and ``requests``,
``urllib.request``, ``http.client`` and plain ``socket`` code unchanged inside ``zt.route``
(http and https, against ``http.server`` on zt sockets), between two nodes on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import gc
import hashlib
import http.client
import http.server
import json
import os
import pathlib
import socket
import ssl
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, cast

import httpx
import pytest
import requests

import zt
import zt.http

from .tlsnet import DROPPED_PORT, SERVER_NAME, Handler, Overlay, ZtHTTPServer, overlay, serve

HTTP_PORT, HTTPS_PORT, ECHO_PORT, CLOSED_PORT = 8080, 8081, 8082, 8099


@dataclass
class Servers:
    net: Overlay
    plain: ZtHTTPServer
    tls: ZtHTTPServer
    local: http.server.ThreadingHTTPServer
    """A plain OS server on 127.0.0.1, for traffic zt must leave alone."""

    @property
    def base(self) -> str:
        return f"http://[{self.net.ip_b}]:{HTTP_PORT}"

    @property
    def tls_base(self) -> str:
        return f"https://{SERVER_NAME}:{HTTPS_PORT}"

    @property
    def hosts(self) -> dict[str, str]:
        return {SERVER_NAME: self.net.ip_b}


def echo_forever(listener: zt.socket.socket) -> None:
    """Echoes each connection until its EOF, then shuts down writing (half-close visible)."""

    def one(conn: zt.socket.socket) -> None:
        # Connections still open when the module's nodes stop end with ENETDOWN.
        with conn, contextlib.suppress(OSError):
            while data := conn.recv(65536):
                conn.sendall(data)
            conn.shutdown(zt.socket.SHUT_WR)

    while True:
        try:
            conn, _ = listener.accept()
        except OSError:
            return
        threading.Thread(target=one, args=(conn,), daemon=True).start()


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    for net in overlay(pathlib.Path(tmp_path_factory.mktemp("http"))):
        plain = ZtHTTPServer(net.listen(HTTP_PORT))
        tls = ZtHTTPServer(net.listen(HTTPS_PORT), tls=net.certs.server_context())
        local = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        local.daemon_threads = True
        echo = net.listen(ECHO_PORT)
        threading.Thread(target=echo_forever, args=(echo,), daemon=True).start()
        threads = [serve(s) for s in (plain, tls, local)]
        try:
            yield Servers(net, plain, tls, local)
        finally:
            for s in (plain, tls, local):
                s.shutdown()
                s.server_close()
            for t in threads:
                t.join(10)
            echo.close()


@pytest.fixture(autouse=True)
def no_proxies(monkeypatch: pytest.MonkeyPatch) -> None:
    """requests and urllib would send through proxies named in the environment."""
    for name in ("http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)
    monkeypatch.setenv("no_proxy", "*")


# -- httpx ---------------------------------------------------------------------------------


def test_httpx_get_post_and_keep_alive(servers: Servers) -> None:
    with httpx.Client(transport=zt.http.transport(servers.net.a), timeout=20) as client:
        r = client.get(f"{servers.base}/hello?x=1")
        assert r.status_code == 200
        seen = r.json()
        assert seen["path"] == "/hello?x=1"
        assert seen["client"][0] == servers.net.ip_a  # the server saw the overlay address
        assert seen["tls"] is False
        # The pooled connection is reused: same client port.
        assert client.get(f"{servers.base}/again").json()["client"] == seen["client"]
        body = os.urandom(3 << 20)
        r = client.post(f"{servers.base}/upload", content=body)
        assert r.json() == {"length": len(body), "sha256": hashlib.sha256(body).hexdigest()}
        with client.stream("GET", f"{servers.base}/streamed") as r:
            assert json.loads(b"".join(r.iter_bytes()))["path"] == "/streamed"


def test_httpx_https_verifies_against_the_test_ca(servers: Servers) -> None:
    net = servers.net
    transport = zt.http.transport(net.a, verify=net.certs.client_context(), hosts=servers.hosts)
    with httpx.Client(transport=transport, timeout=20) as client:
        r = client.get(f"{servers.tls_base}/secure")
        assert r.json()["tls"] is True
        assert r.json()["host"] == f"{SERVER_NAME}:{HTTPS_PORT}"
        # An IP literal works too: the certificate holds the address.
        r = client.get(f"https://[{net.ip_b}]:{HTTPS_PORT}/by-ip")
        assert r.json()["path"] == "/by-ip"
        body = os.urandom(1 << 20)
        r = client.post(f"{servers.tls_base}/upload", content=body)
        assert r.json()["sha256"] == hashlib.sha256(body).hexdigest()
    # The system's CAs do not know the test CA.
    client = httpx.Client(transport=zt.http.transport(net.a, hosts=servers.hosts), timeout=20)
    with client, pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        client.get(f"{servers.tls_base}/")


def test_httpx_async_get_post_https_and_concurrency(servers: Servers) -> None:
    net = servers.net

    async def main() -> None:
        transport = zt.http.async_transport(
            net.a, verify=net.certs.client_context(), hosts=servers.hosts
        )
        async with httpx.AsyncClient(transport=transport, timeout=20) as client:
            r = await client.get(f"{servers.base}/async")
            assert r.json()["path"] == "/async"
            assert r.json()["client"][0] == net.ip_a
            body = os.urandom(2 << 20)
            r = await client.post(f"{servers.base}/upload", content=body)
            assert r.json()["sha256"] == hashlib.sha256(body).hexdigest()
            r = await client.post(f"{servers.tls_base}/upload", content=body)
            assert r.json()["sha256"] == hashlib.sha256(body).hexdigest()
            rs = await asyncio.gather(*(client.get(f"{servers.tls_base}/{i}") for i in range(20)))
            assert [r.json()["path"] for r in rs] == [f"/{i}" for i in range(20)]
            assert all(r.json()["tls"] for r in rs)
            with pytest.raises(httpx.ConnectError, match="refused"):
                await client.get(f"http://[{net.ip_b}]:{CLOSED_PORT}/")
            with pytest.raises(httpx.ConnectTimeout):
                await client.get(f"http://[{net.ip_b}]:{DROPPED_PORT}/", timeout=0.5)

    asyncio.run(asyncio.wait_for(main(), 60))


def test_httpx_errors_map_to_httpx_exceptions(servers: Servers) -> None:
    net = servers.net
    with httpx.Client(transport=zt.http.transport(net.a), timeout=20) as client:
        # Nobody listens: the peer's stack answers RST.
        with pytest.raises(httpx.ConnectError, match="refused") as e:
            client.get(f"http://[{net.ip_b}]:{CLOSED_PORT}/")
        assert isinstance(e.value.__cause__, Exception)
        # Dropped by the network's rules: nothing ever answers.
        with pytest.raises(httpx.ConnectTimeout):
            client.get(f"http://[{net.ip_b}]:{DROPPED_PORT}/", timeout=0.5)
        # No joined network holds the address: it is not sent anywhere.
        with pytest.raises(httpx.ConnectError, match="unreachable"):
            client.get("http://198.51.100.7:8080/")
        # The client still works afterwards.
        assert client.get(f"{servers.base}/ok").status_code == 200


def test_zt_http_backends_are_httpcore_backends(servers: Servers) -> None:
    import httpcore

    net = servers.net
    backend = zt.http.NetworkBackend(net.a)
    with httpcore.ConnectionPool(network_backend=backend) as pool:
        r = pool.request("GET", f"{servers.base}/core")
        assert json.loads(r.content)["path"] == "/core"
    stream = backend.connect_tcp(net.ip_b, HTTP_PORT, timeout=10)
    try:
        # As httpcore's own backend gives it: the socket's getpeername(), a 4-tuple on IPv6.
        assert stream.get_extra_info("server_addr") == (net.ip_b, HTTP_PORT, 0, 0)
        assert stream.get_extra_info("client_addr")[0] == net.ip_a
        assert stream.get_extra_info("ssl_object") is None
        assert stream.get_extra_info("is_readable") is False
        stream.write(b"GET /raw HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := stream.read(65536, timeout=10):
            data += chunk
        assert data.startswith(b"HTTP/1.0 200") or data.startswith(b"HTTP/1.1 200")
    finally:
        stream.close()
    tls = backend.connect_tcp(net.ip_b, HTTPS_PORT, timeout=10).start_tls(
        net.certs.client_context(), SERVER_NAME, timeout=10
    )
    try:
        ssl_object = tls.get_extra_info("ssl_object")
        assert isinstance(ssl_object, ssl.SSLObject)
        assert ssl_object.version() in ("TLSv1.2", "TLSv1.3")
    finally:
        tls.close()


def test_connect_tcp_closes_its_socket_on_any_failure(
    servers: Servers, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not only OSErrors: whatever interrupts a connect (KeyboardInterrupt, a bug) leaves no
    socket behind (it used to be left to the garbage collector, and a ResourceWarning)."""
    net = servers.net
    started: list[zt.socket.socket] = []
    connect = zt.socket.socket.connect

    def interrupted(self: zt.socket.socket, address: Any) -> None:
        self.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            connect(self, address)  # the connection is under way...
        started.append(self)
        raise KeyboardInterrupt  # ...when the call is interrupted

    monkeypatch.setattr(zt.socket.socket, "connect", interrupted)
    with pytest.raises(KeyboardInterrupt):
        zt.http.NetworkBackend(net.a).connect_tcp(net.ip_b, HTTP_PORT, timeout=10)
    assert len(started) == 1 and started[0].fileno() == -1


def test_async_streams_close_their_sockets_in_aclose(servers: Servers) -> None:
    """aclose() returns with the zt socket closed, TLS included (whose closing handshake
    would otherwise keep it open until the peer answered: a loop stopping right after the
    close left the socket to the garbage collector, and a ResourceWarning to a later test)."""
    net = servers.net
    backend = zt.http.AsyncNetworkBackend(net.a, hosts=servers.hosts)

    async def main() -> None:
        plain = await backend.connect_tcp(net.ip_b, HTTP_PORT, timeout=10)
        sock = plain.get_extra_info("socket")
        assert sock.fileno() >= 0
        await plain.aclose()
        assert sock.fileno() == -1
        stream = await backend.connect_tcp(SERVER_NAME, HTTPS_PORT, timeout=10)
        tls = await stream.start_tls(net.certs.client_context(), SERVER_NAME, timeout=10)
        assert tls.get_extra_info("ssl_object") is not None
        sock = tls.get_extra_info("socket")
        await tls.aclose()
        assert sock.fileno() == -1

    asyncio.run(asyncio.wait_for(main(), 30))


# -- zt.route: stdlib sockets unchanged ----------------------------------------------------


def test_requests_urllib_and_http_client_inside_route(servers: Servers) -> None:
    net = servers.net

    def calls() -> None:
        r = requests.get(f"{servers.base}/requests", timeout=20)
        assert r.json()["path"] == "/requests"
        assert r.json()["client"][0] == net.ip_a
        body = os.urandom(3 << 20)
        r = requests.post(f"{servers.base}/upload", data=body, timeout=20)
        assert r.json() == {"length": len(body), "sha256": hashlib.sha256(body).hexdigest()}
        with requests.Session() as session:
            first = session.get(f"http://{SERVER_NAME}:{HTTP_PORT}/s1", timeout=20).json()
            second = session.get(f"http://{SERVER_NAME}:{HTTP_PORT}/s2", timeout=20).json()
            assert first["client"] == second["client"]  # kept alive
        with urllib.request.urlopen(f"{servers.base}/urllib", timeout=20) as resp:
            assert json.loads(resp.read())["path"] == "/urllib"
        conn = http.client.HTTPConnection(net.ip_b, HTTP_PORT, timeout=20)
        conn.request("GET", "/http.client")
        assert json.loads(conn.getresponse().read())["path"] == "/http.client"
        conn.close()

    with zt.route(net.a, hosts=servers.hosts) as router:
        calls()
        # requests' responses keep their socket until collected, as with OS connections.
        gc.collect()
        assert router.wait_idle(20), "routed connections did not end after closing"


def test_https_with_requests_and_urllib_inside_route(servers: Servers) -> None:
    net = servers.net
    ca, ctx = net.certs.ca, net.certs.client_context()

    def calls() -> None:
        r = requests.get(f"{servers.tls_base}/requests", verify=ca, timeout=20)
        assert r.json()["tls"] is True
        assert r.json()["host"] == f"{SERVER_NAME}:{HTTPS_PORT}"
        r = requests.get(f"https://[{net.ip_b}]:{HTTPS_PORT}/ip", verify=ca, timeout=20)
        assert r.json()["tls"] is True
        body = os.urandom(1 << 20)
        r = requests.post(f"{servers.tls_base}/up", data=body, verify=ca, timeout=20)
        assert r.json()["sha256"] == hashlib.sha256(body).hexdigest()
        with urllib.request.urlopen(f"{servers.tls_base}/urllib", context=ctx, timeout=20) as f:
            assert json.loads(f.read())["tls"] is True
        # Verification is the stdlib's own: an unknown CA is refused.
        with pytest.raises(requests.exceptions.SSLError):
            requests.get(f"{servers.tls_base}/", timeout=20)
        with pytest.raises(urllib.error.URLError, match="CERTIFICATE_VERIFY_FAILED"):
            urllib.request.urlopen(f"{servers.tls_base}/", timeout=20)

    with zt.route(net.a, hosts=servers.hosts) as router:
        calls()
        gc.collect()
        assert router.wait_idle(20)


def test_routed_socket_addresses_half_close_and_timeouts(servers: Servers) -> None:
    net = servers.net
    with zt.route(net.a) as router:
        s = socket.create_connection((net.ip_b, ECHO_PORT), timeout=20)
        assert s.getpeername()[:2] == (net.ip_b, ECHO_PORT)
        assert s.getsockname()[0] == net.ip_a
        assert s.family == socket.AF_INET6
        assert "raddr=('" + net.ip_b in repr(s)
        assert s.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 0)
        assert s.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 0
        s.sendall(b"echo me")
        assert s.recv(100) == b"echo me"
        # A timeout on the routed socket is the OS's (it is a real descriptor).
        s.settimeout(0.2)
        with pytest.raises(socket.timeout):
            s.recv(100)
        s.settimeout(20)
        # Half-close: our FIN reaches the server, which then ends its side: EOF here.
        s.sendall(b"last words")
        s.shutdown(socket.SHUT_WR)
        got = b""
        while chunk := s.recv(100):
            got += chunk
        assert got == b"last words"
        s.close()
        with pytest.raises(OSError, match="Bad file descriptor") as e:
            s.getpeername()
        assert e.value.errno == errno.EBADF
        assert router.wait_idle(20)
        assert router.connections == 0


def test_route_bulk_both_ways_and_an_abandoned_connection(servers: Servers) -> None:
    net = servers.net
    with zt.route(net.a) as router:
        s = socket.create_connection((net.ip_b, ECHO_PORT), timeout=20)
        blob = os.urandom(6 << 20)
        got = bytearray()

        def reader() -> None:
            while chunk := s.recv(1 << 20):
                got.extend(chunk)

        r = threading.Thread(target=reader)
        r.start()
        s.sendall(blob)
        s.shutdown(socket.SHUT_WR)
        r.join(60)
        assert hashlib.sha256(got).digest() == hashlib.sha256(blob).digest()
        s.close()
        # Closing without reading what the peer still sends ends the connection too.
        s = socket.create_connection((net.ip_b, ECHO_PORT), timeout=20)
        s.sendall(os.urandom(4 << 20))
        s.close()
        assert router.wait_idle(30)


def test_route_errors_are_the_usual_exceptions(servers: Servers) -> None:
    net = servers.net
    with zt.route(net.a):
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection((net.ip_b, CLOSED_PORT), timeout=20)
        with pytest.raises(requests.exceptions.ConnectionError) as e:
            requests.get(f"http://[{net.ip_b}]:{CLOSED_PORT}/", timeout=20)
        assert "refused" in str(e.value)
        with pytest.raises(requests.exceptions.ConnectTimeout):
            requests.get(f"http://[{net.ip_b}]:{DROPPED_PORT}/", timeout=0.5)
        with pytest.raises(urllib.error.URLError) as u:
            urllib.request.urlopen(f"http://[{net.ip_b}]:{CLOSED_PORT}/", timeout=20)
        assert isinstance(u.value.reason, ConnectionRefusedError)
        s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        assert s.connect_ex((net.ip_b, CLOSED_PORT)) == errno.ECONNREFUSED
        s.close()


def test_route_leaves_other_destinations_to_the_os(servers: Servers) -> None:
    host, port = cast(tuple[str, int], servers.local.server_address)
    with zt.route(servers.net.a) as router:
        assert not router.routes(str(host))
        assert router.routes(servers.net.ip_b)
        r = requests.get(f"http://{host}:{port}/local", timeout=20)
        assert r.json()["client"][0] == "127.0.0.1"  # the OS's loopback, not the overlay
        with socket.create_connection((str(host), int(port)), timeout=20) as s:
            assert s.getpeername() == (host, port)
            assert s.getsockopt(socket.SOL_SOCKET, socket.SO_DOMAIN) == socket.AF_INET
        # Unix sockets and UDP are not touched either.
        a, b = socket.socketpair()
        a.sendall(b"x")
        assert b.recv(1) == b"x"
        a.close()
        b.close()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            u.connect(("127.0.0.1", 9))
            assert u.getpeername() == ("127.0.0.1", 9)
        assert router.connections == 0


def test_route_restores_the_socket_module(servers: Servers) -> None:
    net = servers.net
    orig = (socket.socket, socket.getaddrinfo)
    before = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    with zt.route(net.a) as outer:
        assert socket.socket is not orig[0]
        assert socket.getaddrinfo is not orig[1]
        # Sockets made before the block are still socket.socket instances.
        assert isinstance(before, socket.socket)
        with zt.route(net.b, hosts={"inner.test": net.ip_a}) as inner:
            found = socket.getaddrinfo("inner.test", 80, flags=socket.AI_NUMERICHOST)
            assert found[0][4][0] == net.ip_a
            assert inner.routes("inner.test")
            with pytest.raises(RuntimeError, match="already active"):
                inner.__enter__()
        assert socket.socket is not orig[0]  # the outer router is still active
        with pytest.raises(socket.gaierror):  # the name is gone (and not looked up: numeric)
            socket.getaddrinfo("inner.test", 80, flags=socket.AI_NUMERICHOST)
        assert outer.routes(net.ip_b)
    assert (socket.socket, socket.getaddrinfo) == orig
    before.close()
    # Also after an exception inside the block.
    with pytest.raises(KeyError), zt.route(net.a):
        raise KeyError("boom")
    assert (socket.socket, socket.getaddrinfo) == orig
    # And routers exited from other threads, out of order.
    r1, r2 = zt.route(net.a), zt.route(net.b)
    r1.__enter__()
    t = threading.Thread(target=r2.__enter__)
    t.start()
    t.join()
    r1.__exit__(None, None, None)
    assert socket.socket is not orig[0]
    r2.__exit__(None, None, None)
    assert (socket.socket, socket.getaddrinfo) == orig


def test_asyncio_code_inside_route(servers: Servers) -> None:
    """Event loops make non-blocking sockets: they work too (the connect itself waits for the
    overlay handshake)."""
    net = servers.net

    async def main() -> bytes:
        reader, writer = await asyncio.open_connection(net.ip_b, ECHO_PORT)
        peer: Any = writer.get_extra_info("peername")
        assert peer[:2] == (net.ip_b, ECHO_PORT)
        writer.write(b"from asyncio")
        writer.write_eof()
        data = await reader.read()
        writer.close()
        await writer.wait_closed()
        return data

    with zt.route(net.a) as router:
        assert asyncio.run(asyncio.wait_for(main(), 30)) == b"from asyncio"
        assert router.wait_idle(20)


def test_routed_connections_end_when_their_node_stops(servers: Servers) -> None:
    net = servers.net
    c = net.lab.node()
    c.join(net.nwid)
    c.wait_network(net.nwid, 10)
    assert c.ping(net.nwid, net.ip_b, timeout=30) is not None
    with zt.route(c) as router:
        s = socket.create_connection((net.ip_b, ECHO_PORT), timeout=20)
        s.sendall(b"before")
        assert s.recv(100) == b"before"
        c.close()
        # The application sees the connection end (EOF), and the pump thread is gone.
        assert s.recv(100) == b""
        assert router.wait_idle(20)
        s.close()
        # A stopped node's addresses stay the overlay's: refused here, never sent by the OS.
        assert router.routes(net.ip_b)
        with pytest.raises(OSError, match="not running") as e:
            socket.create_connection((net.ip_b, ECHO_PORT), timeout=20)
        assert e.value.errno == errno.ENETUNREACH


def test_the_standard_librarys_http_server_on_a_zt_listener(
    tmp_path: pathlib.Path,
) -> None:
    """zt.httpserver: http.server's servers over a zt listener, any handler class, with what
    server_bind() would set; an OS socket is refused."""
    (tmp_path / "www").mkdir()
    (tmp_path / "www" / "a.txt").write_bytes(b"file over the overlay\n")
    handler = functools.partial(
        http.server.SimpleHTTPRequestHandler, directory=str(tmp_path / "www")
    )
    with zt.lab.Lab(home=tmp_path / "lab") as lab:
        nwid = lab.network()
        web, client = lab.member(nwid), lab.member(nwid)
        ip = lab.ip(web, nwid)
        listener = web.create_server((ip, 8081))
        with zt.httpserver.ThreadingHTTPServer(listener, handler) as server:
            assert (server.server_name, server.server_port) == (ip, 8081)
            t = threading.Thread(target=server.serve_forever, daemon=True)
            t.start()
            for _ in range(2):  # a thread per request; the listener stays up
                conn = http.client.HTTPConnection(ip, 8081, timeout=10)
                conn.sock = client.create_connection((ip, 8081), timeout=10)
                conn.request("GET", "/a.txt")
                r = conn.getresponse()
                assert (r.status, r.read()) == (200, b"file over the overlay\n")
                conn.close()
            server.shutdown()
            t.join(10)
        assert listener.fileno() == -1  # closing the server closed its listener
    with socket.socket() as os_sock, pytest.raises(TypeError, match="zt socket"):
        zt.httpserver.HTTPServer(os_sock, handler)  # type: ignore[arg-type]
