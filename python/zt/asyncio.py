"""asyncio streams over a node's overlay TCP sockets.

    reader, writer = await zt.asyncio.open_connection(node, "198.18.0.20", 8080)
    server = await zt.asyncio.start_server(handle, node, "::", 8080)

The transports wait on the sockets' readiness descriptors (``loop.add_reader`` /
``loop.add_writer``), so they run on any selector event loop; data stays in the node's Rust
buffers until read. ``ssl=`` gives TLS as asyncio's own functions do: the transport supports
``loop.start_tls`` (and ``StreamWriter.start_tls``), whose SSL protocol then sits on top of it.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import errno
import logging
import ssl as _ssl
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any, Callable, Optional, Union

from .socket import AF_INET, AF_INET6, SOCK_STREAM
from .socket import socket as zt_socket

if TYPE_CHECKING:
    from .node import Node

__all__ = ["Server", "open_connection", "start_server"]

log = logging.getLogger("zt.asyncio")

_CHUNK = 256 * 1024
_HIGH_WATER = 1 << 20
_LOW_WATER = 256 * 1024


class _Transport(asyncio.Transport):
    """A stream transport on a :class:`zt.socket.socket` (non-blocking use only).

    It works with ``loop.start_tls`` (``_start_tls_compatible``, protocol switching, buffered
    protocols such as asyncio's SSL protocol, ``_force_close``).
    """

    _start_tls_compatible = True

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        sock: zt_socket,
        protocol: asyncio.BaseProtocol,
        *,
        call_connection_made: bool = True,
    ) -> None:
        super().__init__()
        self._loop = loop
        self._sock = sock
        self._protocol = protocol
        self._fd = sock.fileno()
        self._buffer: collections.deque[bytes] = collections.deque()
        self._closing = False
        self._finished = False
        self._paused = False
        self._writing_paused = False
        self._eof_written = False
        sock.setblocking(False)
        if call_connection_made:
            loop.call_soon(protocol.connection_made, self)
        loop.call_soon(self._resume)

    def _resume(self) -> None:
        if not self._closing and not self._paused:
            self._loop.add_reader(self._fd, self._on_readable)

    def _on_readable(self) -> None:
        protocol = self._protocol
        try:
            if isinstance(protocol, asyncio.BufferedProtocol):
                buf = memoryview(protocol.get_buffer(-1))
                if not len(buf):
                    raise RuntimeError("get_buffer() returned an empty buffer")
                n = self._sock.recv_into(buf)
                if n:
                    protocol.buffer_updated(n)
                    return
            else:
                data = self._sock.recv(_CHUNK)
                if data:
                    assert isinstance(protocol, asyncio.Protocol)
                    protocol.data_received(data)
                    return
        except BlockingIOError:
            return
        except OSError as e:
            self._fatal(e)
            return
        self._loop.remove_reader(self._fd)
        keep_open = protocol.eof_received()  # type: ignore[attr-defined]
        if not keep_open:
            self.close()

    def _on_writable(self) -> None:
        while self._buffer:
            chunk = self._buffer[0]
            try:
                n = self._sock.send(chunk)
            except BlockingIOError:
                return
            except OSError as e:
                self._fatal(e)
                return
            if n < len(chunk):
                self._buffer[0] = chunk[n:]
                self._maybe_resume_writing()
                return
            self._buffer.popleft()
        self._maybe_resume_writing()
        self._loop.remove_writer(self._fd)
        if self._eof_written:
            self._sock.shutdown(2)
        if self._closing:
            self._finish(None)

    def _maybe_resume_writing(self) -> None:
        if self._writing_paused and self.get_write_buffer_size() <= _LOW_WATER:
            self._writing_paused = False
            self._protocol.resume_writing()

    def _fatal(self, exc: Optional[Exception]) -> None:
        self._buffer.clear()
        self._closing = True
        self._finish(exc)

    def _force_close(self, exc: Optional[Exception]) -> None:
        """Closes at once, dropping what is buffered (asyncio's SSL protocol calls this)."""
        self._fatal(exc)

    def _finish(self, exc: Optional[Exception]) -> None:
        if self._finished:
            return
        self._finished = True
        self._loop.remove_reader(self._fd)
        self._loop.remove_writer(self._fd)
        self._sock.close()
        self._loop.call_soon(self._protocol.connection_lost, exc)

    # -- asyncio.Transport -----------------------------------------------------------------

    def write(self, data: Union[bytes, bytearray, memoryview]) -> None:
        if self._closing or self._eof_written:
            raise RuntimeError("write on a closing transport")
        if not data:
            return
        if not self._buffer:
            try:
                n = self._sock.send(bytes(data))
            except BlockingIOError:
                n = 0
            except OSError as e:
                self._fatal(e)
                return
            data = bytes(data[n:])
            if not data:
                return
            self._loop.add_writer(self._fd, self._on_writable)
        self._buffer.append(bytes(data))
        if not self._writing_paused and self.get_write_buffer_size() > _HIGH_WATER:
            self._writing_paused = True
            self._protocol.pause_writing()

    def write_eof(self) -> None:
        if self._eof_written or self._closing:
            return
        self._eof_written = True
        if not self._buffer:
            self._sock.shutdown(2)

    def can_write_eof(self) -> bool:
        return True

    def get_write_buffer_size(self) -> int:
        return sum(len(b) for b in self._buffer)

    def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        self._loop.remove_reader(self._fd)
        if not self._buffer:
            self._finish(None)

    def is_closing(self) -> bool:
        return self._closing

    def abort(self) -> None:
        self._fatal(None)

    def pause_reading(self) -> None:
        if not self._paused:
            self._paused = True
            self._loop.remove_reader(self._fd)

    def resume_reading(self) -> None:
        if self._paused:
            self._paused = False
            self._resume()

    def is_reading(self) -> bool:
        return not self._paused and not self._closing

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._protocol = protocol

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._protocol

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        try:
            if name == "peername":
                return self._sock.getpeername()
            if name == "sockname":
                return self._sock.getsockname()
        except OSError:
            return default
        if name == "socket":
            return self._sock
        return default


def _family(host: str) -> int:
    return AF_INET6 if ":" in host else AF_INET


async def _connect(
    node: Node,
    host: str,
    port: int,
    configure: Optional[Callable[[zt_socket], None]] = None,
) -> zt_socket:
    """A connected non-blocking zt socket (waits on its readiness descriptor); ``configure``
    sees the socket before it connects (socket options)."""
    loop = asyncio.get_running_loop()
    sock = node.socket(_family(host), SOCK_STREAM)
    try:
        if configure is not None:
            configure(sock)
        sock.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            sock.connect((host, port))
        fut: asyncio.Future[None] = loop.create_future()
        fd = sock.fileno()

        def ready() -> None:
            if not fut.done():
                fut.set_result(None)

        # Writable once connected; readable as well if it failed.
        loop.add_writer(fd, ready)
        loop.add_reader(fd, ready)
        try:
            await fut
        finally:
            loop.remove_writer(fd)
            loop.remove_reader(fd)
        native = sock._s
        if native is None:
            raise ConnectionRefusedError(errno.ECONNREFUSED, f"cannot connect to {host}:{port}")
        native.wait_connected(0.0)  # raises the connection's error (refused, reset…)
    except BaseException:
        sock.close()
        raise
    return sock


SSLArg = Union[_ssl.SSLContext, bool, None]


def _client_context(ssl: SSLArg) -> Optional[_ssl.SSLContext]:
    if isinstance(ssl, _ssl.SSLContext):
        return ssl
    if ssl:
        return _ssl.create_default_context()
    return None


async def _start_tls(
    loop: asyncio.AbstractEventLoop,
    sock: zt_socket,
    protocol: asyncio.Protocol,
    context: _ssl.SSLContext,
    *,
    server_side: bool,
    server_hostname: Optional[str],
    ssl_handshake_timeout: Optional[float],
) -> asyncio.Transport:
    """The TLS transport for ``protocol`` on ``sock`` (after the handshake). The protocol gets
    ``connection_made`` with the TLS transport only, as with ``loop.create_connection``."""
    raw = _Transport(loop, sock, protocol, call_connection_made=False)
    try:
        transport = await loop.start_tls(
            raw,
            protocol,
            context,
            server_side=server_side,
            server_hostname=server_hostname,
            ssl_handshake_timeout=ssl_handshake_timeout,
        )
    except BaseException:
        raw.abort()
        raise
    if transport is None:  # only if the loop closes meanwhile
        raw.abort()
        raise ConnectionResetError(errno.ECONNRESET, "connection closed during the handshake")
    protocol.connection_made(transport)
    return transport


async def open_connection(
    node: Node,
    host: str,
    port: int,
    *,
    limit: int = 2**16,
    ssl: SSLArg = None,
    server_hostname: Optional[str] = None,
    ssl_handshake_timeout: Optional[float] = None,
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Connects to ``(host, port)`` on the node's networks; asyncio's reader and writer.

    ``ssl``: an ``ssl.SSLContext``, or True for ``ssl.create_default_context()``, as in
    ``asyncio.open_connection``; ``server_hostname`` defaults to ``host``.
    """
    context = _client_context(ssl)
    if context is None and (server_hostname is not None or ssl_handshake_timeout is not None):
        raise ValueError("server_hostname and ssl_handshake_timeout are only meaningful with ssl")
    loop = asyncio.get_running_loop()
    sock = await _connect(node, host, port)
    reader = asyncio.StreamReader(limit=limit, loop=loop)
    protocol = asyncio.StreamReaderProtocol(reader, loop=loop)
    transport: asyncio.Transport
    if context is None:
        transport = _Transport(loop, sock, protocol)
    else:
        transport = await _start_tls(
            loop,
            sock,
            protocol,
            context,
            server_side=False,
            server_hostname=host if server_hostname is None else server_hostname,
            ssl_handshake_timeout=ssl_handshake_timeout,
        )
    writer = asyncio.StreamWriter(transport, protocol, reader, loop)
    return reader, writer


ClientHandler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Coroutine[Any, Any, None]]


class Server:
    """A listening socket accepting connections into asyncio streams (TLS with ``ssl``)."""

    def __init__(
        self,
        sock: zt_socket,
        handler: ClientHandler,
        limit: int,
        ssl: Optional[_ssl.SSLContext] = None,
        ssl_handshake_timeout: Optional[float] = None,
    ) -> None:
        self._sock = sock
        self._handler = handler
        self._limit = limit
        self._ssl = ssl
        self._ssl_handshake_timeout = ssl_handshake_timeout
        self._loop = asyncio.get_running_loop()
        self._tasks: set[asyncio.Task[None]] = set()
        self.sockets = [sock]
        sock.setblocking(False)
        self._loop.add_reader(sock.fileno(), self._accept)

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except BlockingIOError:
                return
            except OSError:
                return
            reader = asyncio.StreamReader(limit=self._limit, loop=self._loop)
            # With the callback, the protocol makes the writer at connection_made and knows
            # it is server-side (StreamWriter.start_tls relies on that).
            protocol = asyncio.StreamReaderProtocol(reader, self._connected, loop=self._loop)
            if self._ssl is None:
                _Transport(self._loop, conn, protocol)
            else:
                self._track(self._handshake(conn, protocol, self._ssl))

    def _connected(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._track(self._handler(reader, writer))

    def _track(self, coro: Coroutine[Any, Any, None]) -> None:
        task = self._loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self._loop.call_exception_handler(
                {
                    "message": "Unhandled exception in a zt.asyncio connection handler",
                    "exception": task.exception(),
                    "task": task,
                }
            )

    async def _handshake(
        self, conn: zt_socket, protocol: asyncio.StreamReaderProtocol, context: _ssl.SSLContext
    ) -> None:
        try:
            await _start_tls(
                self._loop,
                conn,
                protocol,
                context,
                server_side=True,
                server_hostname=None,
                ssl_handshake_timeout=self._ssl_handshake_timeout,
            )
        except (OSError, asyncio.TimeoutError) as e:  # ssl.SSLError is an OSError
            log.debug("TLS handshake with a client failed: %s", e)

    def close(self) -> None:
        if self._sock.fileno() >= 0:
            self._loop.remove_reader(self._sock.fileno())
        self._sock.close()

    async def wait_closed(self) -> None:
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def __aenter__(self) -> Server:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()
        await self.wait_closed()


async def start_server(
    handler: ClientHandler, node: Node, host: str, port: int, *, backlog: int = 128,
    limit: int = 2**16, ssl: Optional[_ssl.SSLContext] = None,
    ssl_handshake_timeout: Optional[float] = None,
) -> Server:  # fmt: skip
    """Serves ``handler(reader, writer)`` for each connection to ``(host, port)``; with
    ``ssl`` (a server ``ssl.SSLContext``) each connection does the TLS handshake first
    (clients failing it are dropped)."""
    if ssl is None and ssl_handshake_timeout is not None:
        raise ValueError("ssl_handshake_timeout is only meaningful with ssl")
    if ssl is not None and not isinstance(ssl, _ssl.SSLContext):
        raise TypeError("ssl must be an ssl.SSLContext")
    sock = node.socket(_family(host), SOCK_STREAM)
    sock.bind((host, port))
    sock.listen(backlog)
    return Server(sock, handler, limit, ssl, ssl_handshake_timeout)
