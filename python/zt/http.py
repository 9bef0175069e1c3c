"""httpx over a node's overlay: httpcore network backends on zt sockets, and httpx transports.

    with httpx.Client(transport=zt.http.transport(node)) as client:
        client.get("http://[fc5b:1f40:1f2e:19c5:37e8::1]:8080/")

    async with httpx.AsyncClient(transport=zt.http.async_transport(node)) as client:
        await client.get("https://198.18.0.20/", ...)

Needs ``httpx`` (``pip install 'zt[http]'``). The transports are httpcore connection pools
(``httpcore.ConnectionPool(network_backend=...)``) with :class:`NetworkBackend` /
:class:`AsyncNetworkBackend`, which open zt sockets; TLS runs on :mod:`zt.ssl` (blocking) and on
asyncio's ``start_tls`` over :mod:`zt.asyncio`'s transport. The async backend needs asyncio (not
trio). Every connection goes over the overlay: a destination no joined network holds fails
with ``httpx.ConnectError`` (ENETUNREACH).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import select
import socket as _std
import ssl
import time
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, Optional, Union

try:
    import httpcore
    import httpx
except ImportError as e:  # pragma: no cover - depends on the environment
    raise ImportError(
        "zt.http needs httpx and httpcore: pip install 'zt[http]' (or httpx>=0.27)"
    ) from e

from . import asyncio as zt_asyncio
from .socket import AF_INET, AF_INET6, SOCK_STREAM
from .socket import socket as zt_socket
from .ssl import SSLSocket, wrap_socket

if TYPE_CHECKING:
    from .node import Node

__all__ = [
    "AsyncNetworkBackend",
    "AsyncTransport",
    "NetworkBackend",
    "Transport",
    "async_transport",
    "transport",
]

SocketOption = Union[
    tuple[int, int, int], tuple[int, int, Union[bytes, bytearray]], tuple[int, int, None, int]
]

# ``socket.timeout`` is ``TimeoutError`` from Python 3.10 on; zt raises the builtin.
_TIMEOUTS = (TimeoutError, _std.timeout)


@contextlib.contextmanager
def _mapped(timeout_exc: type[Exception], error_exc: type[Exception]) -> Iterator[None]:
    try:
        yield
    except _TIMEOUTS as e:
        raise timeout_exc(str(e) or "timed out") from e
    except OSError as e:  # ssl.SSLError included
        raise error_exc(str(e)) from e


def _readable_now(fd: int) -> bool:
    if fd < 0:
        return True
    if not hasattr(select, "poll"):  # Windows: select() takes socket handles of any value
        return bool(select.select([fd], [], [], 0)[0])
    p = select.poll()
    p.register(fd, select.POLLIN)
    return bool(p.poll(0))


class _Resolver:
    def __init__(self, hosts: Optional[Mapping[str, str]]) -> None:
        self.hosts = {
            name.lower().rstrip("."): str(ipaddress.ip_address(ip))
            for name, ip in (hosts or {}).items()
        }

    def addresses(self, host: str, port: int) -> list[str]:
        """IP addresses for ``host``: a literal, a ``hosts`` name, or the system resolver's."""
        host = host.strip("[]")
        try:
            return [str(ipaddress.ip_address(host.split("%", 1)[0]))]
        except ValueError:
            pass
        mapped = self.hosts.get(host.lower().rstrip("."))
        if mapped is not None:
            return [mapped]
        infos = _std.getaddrinfo(host, port, 0, SOCK_STREAM)
        return list(dict.fromkeys(str(info[4][0]) for info in infos))


def _family(ip: str) -> int:
    return AF_INET6 if ":" in ip else AF_INET


def _apply_options(sock: zt_socket, options: Optional[Iterable[SocketOption]]) -> None:
    for option in options or ():
        if len(option) == 4:
            sock.setsockopt(option[0], option[1], None, option[3])
        elif option[2] is None:
            raise TypeError(f"socket option {option!r} has no value")
        else:
            sock.setsockopt(option[0], option[1], option[2])


# -- blocking ------------------------------------------------------------------------------


class NetworkStream(httpcore.NetworkStream):
    """An httpcore stream on a zt socket, or on TLS over one."""

    def __init__(self, sock: Union[zt_socket, SSLSocket]) -> None:
        self._sock = sock

    def read(self, max_bytes: int, timeout: Optional[float] = None) -> bytes:
        with _mapped(httpcore.ReadTimeout, httpcore.ReadError):
            self._sock.settimeout(timeout)
            return self._sock.recv(max_bytes)

    def write(self, buffer: bytes, timeout: Optional[float] = None) -> None:
        with _mapped(httpcore.WriteTimeout, httpcore.WriteError):
            self._sock.settimeout(timeout)
            self._sock.sendall(buffer)

    def close(self) -> None:
        self._sock.close()

    def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: Optional[str] = None,
        timeout: Optional[float] = None,
    ) -> NetworkStream:
        if isinstance(self._sock, SSLSocket):
            raise httpcore.ConnectError("TLS inside TLS is not supported on zt sockets")
        try:
            with _mapped(httpcore.ConnectTimeout, httpcore.ConnectError):
                tls = wrap_socket(
                    self._sock,
                    ssl_context,
                    server_hostname=server_hostname,
                    do_handshake_on_connect=False,
                )
                tls.settimeout(timeout)
                tls.do_handshake()
        except BaseException:
            self.close()
            raise
        return NetworkStream(tls)

    def get_extra_info(self, info: str) -> Any:
        sock = self._sock
        if info == "ssl_object":
            return sock.sslobject if isinstance(sock, SSLSocket) else None
        if info in ("client_addr", "server_addr"):
            try:
                return sock.getsockname() if info == "client_addr" else sock.getpeername()
            except OSError:
                return None
        if info == "socket":
            return sock
        if info == "is_readable":
            if isinstance(sock, SSLSocket) and sock.fileno() >= 0 and sock.pending():
                return True
            return _readable_now(sock.fileno())
        return None


class NetworkBackend(httpcore.NetworkBackend):
    """httpcore's blocking network backend on a node: ``connect_tcp`` opens zt sockets.

    ``hosts`` maps names to overlay addresses; other names use the system resolver.
    """

    def __init__(self, node: Node, *, hosts: Optional[Mapping[str, str]] = None) -> None:
        self.node = node
        self._resolver = _Resolver(hosts)

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: Optional[float] = None,
        local_address: Optional[str] = None,
        socket_options: Optional[Iterable[SocketOption]] = None,
    ) -> NetworkStream:
        if local_address is not None:
            raise httpcore.ConnectError("local_address is not supported on zt sockets")
        deadline = None if timeout is None else time.monotonic() + timeout
        with _mapped(httpcore.ConnectTimeout, httpcore.ConnectError):
            error: Optional[OSError] = None
            for ip in self._resolver.addresses(host, port):
                sock = self.node.socket(_family(ip), SOCK_STREAM)
                try:
                    _apply_options(sock, socket_options)
                    left = None if deadline is None else max(0.0, deadline - time.monotonic())
                    sock.settimeout(left)
                    sock.connect((ip, port))
                except OSError as e:
                    sock.close()
                    if isinstance(e, _TIMEOUTS):
                        raise
                    error = e
                    continue
                except BaseException:
                    sock.close()
                    raise
                return NetworkStream(sock)
            raise error or OSError(f"no address for {host}")

    def connect_unix_socket(
        self,
        path: str,
        timeout: Optional[float] = None,
        socket_options: Optional[Iterable[SocketOption]] = None,
    ) -> httpcore.NetworkStream:
        """A local Unix socket (not the overlay), as httpcore's own backend does."""
        return httpcore.SyncBackend().connect_unix_socket(path, timeout, socket_options)

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


# -- asyncio -------------------------------------------------------------------------------

_HIGH_WATER = 1 << 20


class _Inbox(asyncio.Protocol):
    """Buffers what the transport delivers for :class:`AsyncNetworkStream` reads."""

    def __init__(self) -> None:
        self.transport: Optional[asyncio.Transport] = None
        self.buffer = bytearray()
        self.eof = False
        self.error: Optional[Exception] = None
        self._reader: Optional[asyncio.Future[None]] = None
        self._drain: Optional[asyncio.Future[None]] = None
        self._reading_paused = False
        self._writing_paused = False

    def _wake(self, fut: Optional[asyncio.Future[None]]) -> None:
        if fut is not None and not fut.done():
            fut.set_result(None)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        self._wake(self._reader)
        if len(self.buffer) > _HIGH_WATER and self.transport is not None:
            self._reading_paused = True
            self.transport.pause_reading()

    def eof_received(self) -> bool:
        self.eof = True
        self._wake(self._reader)
        return False

    def connection_lost(self, exc: Optional[Exception]) -> None:
        self.eof = True
        self.error = exc
        self._wake(self._reader)
        self._wake(self._drain)

    def pause_writing(self) -> None:
        self._writing_paused = True

    def resume_writing(self) -> None:
        self._writing_paused = False
        self._wake(self._drain)

    async def wait_readable(self) -> None:
        while not self.buffer and not self.eof:
            self._reader = asyncio.get_running_loop().create_future()
            await self._reader

    def take(self, n: int) -> bytes:
        data = bytes(self.buffer[:n])
        del self.buffer[:n]
        if self._reading_paused and len(self.buffer) <= _HIGH_WATER // 4:
            self._reading_paused = False
            if self.transport is not None:
                self.transport.resume_reading()
        return data

    async def drained(self) -> None:
        while self._writing_paused and self.error is None and not self.eof:
            self._drain = asyncio.get_running_loop().create_future()
            await self._drain


class AsyncNetworkStream(httpcore.AsyncNetworkStream):
    """An httpcore async stream on a zt socket's asyncio transport (TLS via ``start_tls``)."""

    def __init__(self, transport: asyncio.Transport, inbox: _Inbox, sock: zt_socket) -> None:
        self._transport = transport
        self._inbox = inbox
        self._sock = sock

    async def read(self, max_bytes: int, timeout: Optional[float] = None) -> bytes:
        inbox = self._inbox
        if not inbox.buffer and not inbox.eof:
            try:
                await asyncio.wait_for(inbox.wait_readable(), timeout)
            except asyncio.TimeoutError as e:
                raise httpcore.ReadTimeout("timed out") from e
        if inbox.buffer:
            return inbox.take(max_bytes)
        if inbox.error is not None:
            raise httpcore.ReadError(str(inbox.error)) from inbox.error
        return b""

    async def write(self, buffer: bytes, timeout: Optional[float] = None) -> None:
        if not buffer:
            return
        inbox = self._inbox
        if inbox.error is not None:
            raise httpcore.WriteError(str(inbox.error)) from inbox.error
        if self._transport.is_closing():
            raise httpcore.WriteError("the connection is closed")
        self._transport.write(buffer)
        try:
            await asyncio.wait_for(inbox.drained(), timeout)
        except asyncio.TimeoutError as e:
            raise httpcore.WriteTimeout("timed out") from e
        if inbox.error is not None:
            raise httpcore.WriteError(str(inbox.error)) from inbox.error

    async def aclose(self) -> None:
        """Closes the connection; its zt socket is closed when this returns. Closing TLS sends
        close_notify at once but would close the socket only once the peer answers: after
        one pass of the loop the transport is aborted instead (as httpcore's anyio backend
        does), so no socket outlives an event loop that stops right after the close."""
        transport = self._transport
        transport.close()
        try:
            if self._sock.fileno() >= 0:
                await asyncio.sleep(0)
        finally:
            if self._sock.fileno() >= 0:
                transport.abort()

    async def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: Optional[str] = None,
        timeout: Optional[float] = None,
    ) -> AsyncNetworkStream:
        loop = asyncio.get_running_loop()
        try:
            try:
                tls = await asyncio.wait_for(
                    loop.start_tls(
                        self._transport,
                        self._inbox,
                        ssl_context,
                        server_hostname=server_hostname,
                        ssl_handshake_timeout=timeout or None,
                    ),
                    timeout,
                )
            except asyncio.TimeoutError as e:
                raise httpcore.ConnectTimeout("TLS handshake timed out") from e
            except (OSError, ConnectionError) as e:
                raise httpcore.ConnectError(str(e)) from e
            if tls is None:
                raise httpcore.ConnectError("the connection closed during the TLS handshake")
        except BaseException:
            self._transport.abort()
            raise
        self._inbox.transport = tls
        return AsyncNetworkStream(tls, self._inbox, self._sock)

    def get_extra_info(self, info: str) -> Any:
        if info == "ssl_object":
            return self._transport.get_extra_info("ssl_object")
        if info == "client_addr":
            return self._transport.get_extra_info("sockname")
        if info == "server_addr":
            return self._transport.get_extra_info("peername")
        if info == "socket":
            return self._sock
        if info == "is_readable":
            inbox = self._inbox
            return bool(inbox.buffer) or inbox.eof or _readable_now(self._sock.fileno())
        return None


class AsyncNetworkBackend(httpcore.AsyncNetworkBackend):
    """httpcore's async network backend on a node (asyncio): ``connect_tcp`` opens zt sockets
    driven by :mod:`zt.asyncio`'s transport."""

    def __init__(self, node: Node, *, hosts: Optional[Mapping[str, str]] = None) -> None:
        self.node = node
        self._resolver = _Resolver(hosts)

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: Optional[float] = None,
        local_address: Optional[str] = None,
        socket_options: Optional[Iterable[SocketOption]] = None,
    ) -> AsyncNetworkStream:
        if local_address is not None:
            raise httpcore.ConnectError("local_address is not supported on zt sockets")
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            raise RuntimeError("zt.http's async backend runs on asyncio only") from None
        try:
            sock = await asyncio.wait_for(self._connect(host, port, socket_options), timeout)
        except asyncio.TimeoutError as e:
            raise httpcore.ConnectTimeout("timed out") from e
        except OSError as e:
            raise httpcore.ConnectError(str(e)) from e
        inbox = _Inbox()
        transport = zt_asyncio._Transport(asyncio.get_running_loop(), sock, inbox)
        inbox.transport = transport
        return AsyncNetworkStream(transport, inbox, sock)

    async def _connect(
        self, host: str, port: int, socket_options: Optional[Iterable[SocketOption]]
    ) -> zt_socket:
        loop = asyncio.get_running_loop()
        addresses = await loop.run_in_executor(None, self._resolver.addresses, host, port)
        error: Optional[OSError] = None
        for ip in addresses:
            try:
                return await zt_asyncio._connect(
                    self.node, ip, port, lambda s: _apply_options(s, socket_options)
                )
            except OSError as e:
                error = e
        raise error or OSError(f"no address for {host}")

    async def connect_unix_socket(
        self,
        path: str,
        timeout: Optional[float] = None,
        socket_options: Optional[Iterable[SocketOption]] = None,
    ) -> httpcore.AsyncNetworkStream:
        """A local Unix socket (not the overlay), through httpcore's anyio backend."""
        return await httpcore.AnyIOBackend().connect_unix_socket(path, timeout, socket_options)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


# -- httpx transports ----------------------------------------------------------------------

# httpcore's exceptions and httpx's counterparts (the most specific match wins).
_EXCEPTIONS: list[tuple[type[Exception], type[Exception]]] = [
    (httpcore.ConnectTimeout, httpx.ConnectTimeout),
    (httpcore.ReadTimeout, httpx.ReadTimeout),
    (httpcore.WriteTimeout, httpx.WriteTimeout),
    (httpcore.PoolTimeout, httpx.PoolTimeout),
    (httpcore.TimeoutException, httpx.TimeoutException),
    (httpcore.ConnectError, httpx.ConnectError),
    (httpcore.ReadError, httpx.ReadError),
    (httpcore.WriteError, httpx.WriteError),
    (httpcore.NetworkError, httpx.NetworkError),
    (httpcore.ProxyError, httpx.ProxyError),
    (httpcore.UnsupportedProtocol, httpx.UnsupportedProtocol),
    (httpcore.RemoteProtocolError, httpx.RemoteProtocolError),
    (httpcore.LocalProtocolError, httpx.LocalProtocolError),
    (httpcore.ProtocolError, httpx.ProtocolError),
]


@contextlib.contextmanager
def _httpx_errors() -> Iterator[None]:
    try:
        yield
    except Exception as exc:
        for core, mapped in _EXCEPTIONS:
            if isinstance(exc, core):
                raise mapped(str(exc)) from exc
        raise


def _core_request(request: httpx.Request) -> httpcore.Request:
    return httpcore.Request(
        method=request.method,
        url=httpcore.URL(
            scheme=request.url.raw_scheme,
            host=request.url.raw_host,
            port=request.url.port,
            target=request.url.raw_path,
        ),
        headers=request.headers.raw,
        content=request.stream,
        extensions=request.extensions,
    )


class _ResponseStream(httpx.SyncByteStream):
    def __init__(self, stream: Iterable[bytes]) -> None:
        self._stream = stream

    def __iter__(self) -> Iterator[bytes]:
        with _httpx_errors():
            yield from self._stream

    def close(self) -> None:
        close = getattr(self._stream, "close", None)
        if close is not None:
            close()


class _AsyncResponseStream(httpx.AsyncByteStream):
    def __init__(self, stream: Any) -> None:
        self._stream = stream

    async def __aiter__(self) -> AsyncIterator[bytes]:
        with _httpx_errors():
            async for part in self._stream:
                yield part

    async def aclose(self) -> None:
        aclose = getattr(self._stream, "aclose", None)
        if aclose is not None:
            await aclose()


def _ssl_context(verify: Union[ssl.SSLContext, bool], cert: Any, trust_env: bool) -> ssl.SSLContext:
    if isinstance(verify, ssl.SSLContext):
        return verify
    return httpx.create_ssl_context(verify=verify, cert=cert, trust_env=trust_env)


_DEFAULT_LIMITS = httpx.Limits(max_connections=100, max_keepalive_connections=20)


def _httpx_response(
    resp: httpcore.Response, stream: Union[httpx.SyncByteStream, httpx.AsyncByteStream]
) -> httpx.Response:
    """httpcore's response as httpx's, its body read through ``stream``."""
    return httpx.Response(
        status_code=resp.status, headers=resp.headers, stream=stream, extensions=resp.extensions
    )


class _PoolTransport:
    """What :class:`Transport` and :class:`AsyncTransport` share: httpx.HTTPTransport's options
    (plus ``hosts``), from which each opens its network backend and connection pool."""

    def __init__(
        self,
        node: Node,
        *,
        verify: Union[ssl.SSLContext, bool] = True,
        cert: Any = None,
        trust_env: bool = True,
        http1: bool = True,
        http2: bool = False,
        limits: httpx.Limits = _DEFAULT_LIMITS,
        retries: int = 0,
        hosts: Optional[Mapping[str, str]] = None,
        socket_options: Optional[Iterable[SocketOption]] = None,
    ) -> None:
        self._open(
            node,
            hosts,
            {
                "ssl_context": _ssl_context(verify, cert, trust_env),
                "max_connections": limits.max_connections,
                "max_keepalive_connections": limits.max_keepalive_connections,
                "keepalive_expiry": limits.keepalive_expiry,
                "http1": http1,
                "http2": http2,
                "retries": retries,
                "socket_options": socket_options,
            },
        )

    def _open(
        self, node: Node, hosts: Optional[Mapping[str, str]], options: dict[str, Any]
    ) -> None:
        """Sets ``self.backend`` and ``self._pool`` (``options``: the pool's keyword arguments)."""
        raise NotImplementedError


class Transport(_PoolTransport, httpx.BaseTransport):
    """An httpx transport whose connections are zt sockets on ``node`` (see :func:`transport`)."""

    def _open(
        self, node: Node, hosts: Optional[Mapping[str, str]], options: dict[str, Any]
    ) -> None:
        self.backend = NetworkBackend(node, hosts=hosts)
        self._pool = httpcore.ConnectionPool(network_backend=self.backend, **options)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        with _httpx_errors():
            resp = self._pool.handle_request(_core_request(request))
        assert isinstance(resp.stream, Iterable)
        return _httpx_response(resp, _ResponseStream(resp.stream))

    def close(self) -> None:
        self._pool.close()


class AsyncTransport(_PoolTransport, httpx.AsyncBaseTransport):
    """An httpx async transport (asyncio) whose connections are zt sockets on ``node``."""

    def _open(
        self, node: Node, hosts: Optional[Mapping[str, str]], options: dict[str, Any]
    ) -> None:
        self.backend = AsyncNetworkBackend(node, hosts=hosts)
        self._pool = httpcore.AsyncConnectionPool(network_backend=self.backend, **options)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        with _httpx_errors():
            resp = await self._pool.handle_async_request(_core_request(request))
        return _httpx_response(resp, _AsyncResponseStream(resp.stream))

    async def aclose(self) -> None:
        await self._pool.aclose()


def transport(node: Node, **kwargs: Any) -> Transport:
    """An httpx transport over the node: ``httpx.Client(transport=zt.http.transport(node))``.

    Options as ``httpx.HTTPTransport``'s: ``verify`` (bool or ``ssl.SSLContext``), ``cert``,
    ``trust_env``, ``http1``, ``http2`` (needs ``h2``), ``limits``, ``retries``,
    ``socket_options``; plus ``hosts``, a mapping of names to overlay addresses. Proxies and
    ``local_address`` are not supported.
    """
    return Transport(node, **kwargs)


def async_transport(node: Node, **kwargs: Any) -> AsyncTransport:
    """An httpx async transport over the node (asyncio), options as :func:`transport`'s:
    ``httpx.AsyncClient(transport=zt.http.async_transport(node))``."""
    return AsyncTransport(node, **kwargs)
