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
import os
import socket
import ssl as _ssl
import warnings
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any, Callable, Optional, TypeVar, Union

from .socket import AF_INET, AF_INET6, SHUT_WR, SOCK_DGRAM, SOCK_STREAM, _family_of, _sockaddr
from .socket import socket as zt_socket

if TYPE_CHECKING:
    from .node import Node

__all__ = [
    "DatagramTransport",
    "Server",
    "create_datagram_endpoint",
    "open_connection",
    "start_server",
]

_P = TypeVar("_P", bound=asyncio.DatagramProtocol)

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
        on_close: Optional[Callable[[], None]] = None,
    ) -> None:
        super().__init__()
        self._loop = loop
        self._sock = sock
        self._on_close = on_close  # called once the socket is closed
        self._protocol = protocol
        self._fd = sock.fileno()
        # Data waiting to be sent; the first chunk's first ``_sent`` bytes are gone already.
        self._buffer: collections.deque[bytes] = collections.deque()
        self._buffered = 0
        self._sent = 0
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
                raw = protocol.get_buffer(-1)
                # A bytearray is written in place; other buffers get a copy.
                buf = raw if isinstance(raw, bytearray) else memoryview(raw)
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
                n = self._sock._send_at(chunk, self._sent)
            except BlockingIOError:
                return
            except OSError as e:
                self._fatal(e)
                return
            self._buffered -= n
            self._sent += n
            if self._sent < len(chunk):
                self._maybe_resume_writing()
                return
            self._buffer.popleft()
            self._sent = 0
        self._maybe_resume_writing()
        self._loop.remove_writer(self._fd)
        if self._eof_written:
            self._sock.shutdown(SHUT_WR)
        if self._closing:
            self._finish(None)

    def _maybe_resume_writing(self) -> None:
        if self._writing_paused and self.get_write_buffer_size() <= _LOW_WATER:
            self._writing_paused = False
            self._protocol.resume_writing()

    def _fatal(self, exc: Optional[Exception]) -> None:
        self._buffer.clear()
        self._buffered = self._sent = 0
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
        if self._on_close is not None:
            self._on_close()

    # -- asyncio.Transport -----------------------------------------------------------------

    def write(self, data: Union[bytes, bytearray, memoryview]) -> None:
        if self._closing or self._eof_written:
            raise RuntimeError("write on a closing transport")
        if not data:
            return
        if not isinstance(data, (bytes, bytearray)):
            data = memoryview(data).cast("B")
        n = 0
        if not self._buffer:
            try:
                n = self._sock.send(data)
            except BlockingIOError:
                pass
            except OSError as e:
                self._fatal(e)
                return
            if n == len(data):
                return
            self._loop.add_writer(self._fd, self._on_writable)
        # What is kept is copied (the caller may reuse its buffer); bytes are immutable.
        rest = data if n == 0 and type(data) is bytes else bytes(memoryview(data)[n:])
        self._buffer.append(rest)
        self._buffered += len(rest)
        if not self._writing_paused and self.get_write_buffer_size() > _HIGH_WATER:
            self._writing_paused = True
            self._protocol.pause_writing()

    def write_eof(self) -> None:
        if self._eof_written or self._closing:
            return
        self._eof_written = True
        if not self._buffer:
            self._sock.shutdown(SHUT_WR)

    def can_write_eof(self) -> bool:
        return True

    def get_write_buffer_size(self) -> int:
        return self._buffered

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
        err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            raise OSError(err, f"{os.strerror(err)}: cannot connect to {host}:{port}")
        native = sock._s
        if native is None or native.phase() != "connected":
            raise ConnectionRefusedError(errno.ECONNREFUSED, f"cannot connect to {host}:{port}")
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
    on_close: Optional[Callable[[], None]] = None,
) -> asyncio.Transport:
    """The TLS transport for ``protocol`` on ``sock`` (after the handshake). The protocol gets
    ``connection_made`` with the TLS transport only, as with ``loop.create_connection``."""
    raw = _Transport(loop, sock, protocol, call_connection_made=False, on_close=on_close)
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
        # Accepted connections whose sockets are still open, and wait_closed()'s waiters.
        self._conns: set[zt_socket] = set()
        self._idle: list[asyncio.Future[None]] = []
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
            self._conns.add(conn)
            if self._ssl is None:
                _Transport(self._loop, conn, protocol, on_close=self._detach(conn))
            else:
                # A handshake task cancelled before it starts never sees the socket: close it.
                self._track(self._handshake(conn, protocol, self._ssl), self._drop(conn))

    def _detach(self, conn: zt_socket) -> Callable[[], None]:
        """What to call once ``conn`` is closed (wakes wait_closed() after the last one)."""

        def closed() -> None:
            self._conns.discard(conn)
            if not self._conns:
                for waiter in self._idle:
                    if not waiter.done():
                        waiter.set_result(None)
                self._idle.clear()

        return closed

    def _drop(self, conn: zt_socket) -> Callable[[], None]:
        detach = self._detach(conn)

        def drop() -> None:
            conn.close()
            detach()

        return drop

    def _connected(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # As asyncio's own servers do (3.12+): a handler that fails or is cancelled (also
        # when the loop shuts down) leaves no connection open.
        self._track(self._handler(reader, writer), writer.transport.close)

    def _track(self, coro: Coroutine[Any, Any, None], abandon: Callable[[], None]) -> None:
        """Runs ``coro`` as a task of this server; ``abandon`` closes its connection if the
        task is cancelled or fails."""
        task = self._loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(lambda t: self._done(t, abandon))

    def _done(self, task: asyncio.Task[None], abandon: Callable[[], None]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            abandon()
            return
        exc = task.exception()
        if exc is not None:
            abandon()
            self._loop.call_exception_handler(
                {
                    "message": "Unhandled exception in a zt.asyncio connection handler",
                    "exception": exc,
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
                on_close=self._detach(conn),
            )
        except (OSError, asyncio.TimeoutError) as e:  # ssl.SSLError is an OSError
            log.debug("TLS handshake with a client failed: %s", e)

    def close(self) -> None:
        if self._sock.fileno() >= 0:
            self._loop.remove_reader(self._sock.fileno())
        self._sock.close()

    async def wait_closed(self) -> None:
        """Waits until the connections' handlers have returned and the connections are closed
        (as asyncio's servers do from Python 3.12): a TLS connection's closing handshake, or
        what a closed connection still had to send, then ends before the caller goes on (a
        loop stopping right after would leave those sockets to the garbage collector). A
        handler that never closes its writer keeps this waiting."""
        while self._tasks or self._conns:
            if self._tasks:
                await asyncio.gather(*self._tasks, return_exceptions=True)
                continue
            waiter = self._loop.create_future()
            self._idle.append(waiter)
            await waiter

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
    try:
        sock.bind((host, port))
        sock.listen(backlog)
        return Server(sock, handler, limit, ssl, ssl_handshake_timeout)
    except BaseException:
        sock.close()
        raise


# -- datagrams ------------------------------------------------------------------------------

_DGRAM_READ_BATCH = 64


class DatagramTransport(asyncio.DatagramTransport):
    """``loop.create_datagram_endpoint``'s transport on a zt UDP socket: reads when the
    socket's readiness descriptor is readable, sends without blocking (buffering while the
    socket's send queue is full, until it is writable again)."""

    max_size = 256 * 1024

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        sock: zt_socket,
        protocol: asyncio.DatagramProtocol,
        waiter: asyncio.Future[None],
    ) -> None:
        try:
            peer: Optional[Address] = sock.getpeername()
        except OSError:
            peer = None
        super().__init__({"socket": sock, "sockname": sock.getsockname(), "peername": peer})
        self._loop = loop
        self._sock: Optional[zt_socket] = sock
        self._protocol = protocol
        self._address = peer
        self._fd = sock.fileno()
        self._buffer: collections.deque[tuple[bytes, Optional[Address]]] = collections.deque()
        self._buffer_size = 0
        self._closing = False
        self._conn_lost = False
        self._reading_paused = False
        self._protocol_paused = False
        self._high_water = 64 * 1024
        self._low_water = 16 * 1024
        loop.call_soon(protocol.connection_made, self)
        loop.call_soon(self._add_reader)
        loop.call_soon(_set_result_unless_cancelled, waiter)

    def __repr__(self) -> str:
        state = "closed" if self._conn_lost else "closing" if self._closing else "open"
        return f"<zt.asyncio datagram transport fd={self._fd} {state}>"

    def _add_reader(self) -> None:
        if not self._closing and not self._reading_paused:
            self._loop.add_reader(self._fd, self._read_ready)

    def _read_ready(self) -> None:
        sock = self._sock
        for _ in range(_DGRAM_READ_BATCH):
            if sock is None or self._closing or self._reading_paused:
                return
            try:
                data, addr = sock.recvfrom(self.max_size)
            except BlockingIOError:
                return
            except OSError as exc:
                if exc.errno == errno.EBADF:  # the socket was closed under the transport
                    self._fatal_error(exc, "zt datagram socket closed")
                else:
                    self._protocol.error_received(exc)
                return
            except (SystemExit, KeyboardInterrupt):
                raise
            except BaseException as exc:
                self._fatal_error(exc, "Fatal read error on zt datagram transport")
                return
            assert addr is not None
            self._protocol.datagram_received(data, addr)

    def _send(self, sock: zt_socket, data: bytes, addr: Optional[Address]) -> None:
        if addr is None:
            sock.send(data)  # the connected peer (else EDESTADDRREQ)
        else:
            sock.sendto(data, addr)

    def sendto(self, data: Union[bytes, bytearray, memoryview], addr: Any = None) -> None:
        """Sends a datagram to ``addr`` (None: the ``remote_addr`` peer). Never blocks: while
        the socket's send queue is full, datagrams wait in the transport (the protocol's
        pause_writing() is called above the high-water mark). OSErrors of sending, such as
        ``EMSGSIZE``, go to the protocol's error_received(). Ignored once closing."""
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(
                f"data argument must be a bytes-like object, not {type(data).__name__!r}"
            )
        sock = self._sock
        if self._address is not None and addr is not None:
            try:
                same = _dgram_addr(sock, addr) == _dgram_addr(sock, self._address)
            except OSError:
                same = False
            if not same:
                raise ValueError(f"Invalid address: must be None or {self._address}")
            addr = None
        if sock is None or self._closing:
            return
        if not self._buffer:
            try:
                self._send(sock, bytes(data), addr)
                return
            except BlockingIOError:
                self._loop.add_writer(self._fd, self._sendto_ready)
            except OSError as exc:
                self._protocol.error_received(exc)
                return
            except (SystemExit, KeyboardInterrupt):
                raise
            except (TypeError, ValueError, OverflowError):
                raise  # a bad address: the caller's mistake, the transport stays up
            except BaseException as exc:
                self._fatal_error(exc, "Fatal write error on zt datagram transport")
                return
        elif addr is not None:
            try:  # a bad address fails now rather than when the buffer is flushed
                _dgram_addr(sock, addr)
            except OSError as exc:
                self._protocol.error_received(exc)
                return
        self._buffer.append((bytes(data), addr))
        self._buffer_size += len(data)
        self._maybe_pause_protocol()

    def _sendto_ready(self) -> None:
        sock = self._sock
        while self._buffer and sock is not None:
            data, addr = self._buffer.popleft()
            self._buffer_size -= len(data)
            try:
                self._send(sock, data, addr)
            except BlockingIOError:
                self._buffer.appendleft((data, addr))
                self._buffer_size += len(data)
                break
            except OSError as exc:
                self._protocol.error_received(exc)
            except (SystemExit, KeyboardInterrupt):
                raise
            except BaseException as exc:
                self._fatal_error(exc, "Fatal write error on zt datagram transport")
                return
        self._maybe_resume_protocol()
        if not self._buffer:
            self._loop.remove_writer(self._fd)
            if self._closing and not self._conn_lost:
                self._conn_lost = True
                self._call_connection_lost(None)

    # -- flow control ----------------------------------------------------------------------

    def _maybe_pause_protocol(self) -> None:
        if self._buffer_size > self._high_water and not self._protocol_paused:
            self._protocol_paused = True
            self._flow_control("pause_writing")

    def _maybe_resume_protocol(self) -> None:
        if self._protocol_paused and self._buffer_size <= self._low_water:
            self._protocol_paused = False
            self._flow_control("resume_writing")

    def _flow_control(self, method: str) -> None:
        """Calls the protocol's ``pause_writing`` or ``resume_writing`` (``method``); what it
        raises goes to the loop's exception handler."""
        try:
            getattr(self._protocol, method)()
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            self._loop.call_exception_handler(
                {"message": f"protocol.{method}() failed", "exception": exc,
                 "transport": self, "protocol": self._protocol}
            )  # fmt: skip

    def get_write_buffer_size(self) -> int:
        return self._buffer_size

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return (self._low_water, self._high_water)

    def set_write_buffer_limits(
        self, high: Optional[int] = None, low: Optional[int] = None
    ) -> None:
        if high is None:
            high = 64 * 1024 if low is None else 4 * low
        if low is None:
            low = high // 4
        if not high >= low >= 0:
            raise ValueError(f"high ({high!r}) must be >= low ({low!r}) must be >= 0")
        self._high_water, self._low_water = high, low
        self._maybe_pause_protocol()

    # -- reading ---------------------------------------------------------------------------

    def is_reading(self) -> bool:
        return not self._closing and not self._reading_paused

    def pause_reading(self) -> None:
        if self.is_reading():
            self._reading_paused = True
            self._loop.remove_reader(self._fd)

    def resume_reading(self) -> None:
        if self._closing or not self._reading_paused:
            return
        self._reading_paused = False
        self._add_reader()

    # -- life ------------------------------------------------------------------------------

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._protocol = protocol  # type: ignore[assignment]

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._protocol

    def is_closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        """Stops reading; once the buffered datagrams are sent, closes the socket and calls
        the protocol's connection_lost(None)."""
        if self._closing:
            return
        self._closing = True
        self._loop.remove_reader(self._fd)
        if not self._buffer:
            self._conn_lost = True
            self._loop.remove_writer(self._fd)
            self._loop.call_soon(self._call_connection_lost, None)

    def abort(self) -> None:
        """Closes at once, dropping buffered datagrams."""
        self._force_close(None)

    def _fatal_error(self, exc: BaseException, message: str) -> None:
        if not isinstance(exc, OSError):
            self._loop.call_exception_handler(
                {"message": message, "exception": exc, "transport": self,
                 "protocol": self._protocol}
            )  # fmt: skip
        self._force_close(exc if isinstance(exc, Exception) else None)

    def _force_close(self, exc: Optional[Exception]) -> None:
        if self._conn_lost:
            return
        if self._buffer:
            self._buffer.clear()
            self._buffer_size = 0
            self._loop.remove_writer(self._fd)
        if not self._closing:
            self._closing = True
            self._loop.remove_reader(self._fd)
        self._conn_lost = True
        self._loop.call_soon(self._call_connection_lost, exc)

    def _call_connection_lost(self, exc: Optional[Exception]) -> None:
        try:
            self._protocol.connection_lost(exc)
        finally:
            if self._sock is not None:
                self._sock.close()
                self._sock = None

    def __del__(self) -> None:
        sock = getattr(self, "_sock", None)
        if sock is not None:
            try:
                warnings.warn(
                    f"unclosed transport {self!r}", ResourceWarning, stacklevel=2, source=self
                )
            finally:
                sock.close()


Address = tuple[Any, ...]


def _dgram_addr(sock: Optional[zt_socket], addr: Any) -> tuple[str, int]:
    """``addr`` checked and normalized as ``sock`` would send to it."""
    family = sock.family if sock is not None else AF_INET6
    return _sockaddr(addr, family, "sendto")


def _set_result_unless_cancelled(fut: asyncio.Future[None]) -> None:
    if not fut.cancelled():
        fut.set_result(None)


def _endpoint_family(
    family: int, local_addr: Optional[Address], remote_addr: Optional[Address]
) -> int:
    found = set()
    for addr in (local_addr, remote_addr):
        if addr is None:
            continue
        if not (isinstance(addr, tuple) and len(addr) == 2):
            raise TypeError("2-tuple is expected")
        if addr[0] not in ("", None):
            found.add(_family_of(addr[0]))
    if family:
        if found - {family}:
            raise ValueError("can not get address information")
        return family
    if len(found) > 1:
        raise ValueError("can not get address information")
    if not found:
        raise ValueError("unexpected address family (pass family= or an IP address)")
    return found.pop()


async def create_datagram_endpoint(
    node: Node,
    protocol_factory: Callable[[], _P],
    local_addr: Optional[Address] = None,
    remote_addr: Optional[Address] = None,
    *,
    family: int = 0,
    proto: int = 0,
    reuse_port: Optional[bool] = None,
    allow_broadcast: Optional[bool] = None,
    sock: Optional[zt_socket] = None,
) -> tuple[DatagramTransport, _P]:
    """A UDP endpoint on the node's networks, like ``loop.create_datagram_endpoint``:
    ``local_addr`` is bound (host ``""``: every network), ``remote_addr`` connected (then
    ``transport.sendto(data)`` goes there and only its datagrams arrive); with neither, an
    ephemeral port on every network (``family`` required). Hosts are IP literals; ``family``
    defaults to theirs. ``sock``: an existing ``SOCK_DGRAM`` zt socket instead (no other
    socket arguments then). ``allow_broadcast`` sets ``SO_BROADCAST`` (datagrams to
    255.255.255.255 or a network's broadcast address may then be sent); ``reuse_port`` is not
    supported."""
    loop = asyncio.get_running_loop()
    if sock is not None:
        if sock.type != SOCK_DGRAM:
            raise ValueError(f"A UDP Socket was expected, got {sock!r}")
        opts = {
            "local_addr": local_addr,
            "remote_addr": remote_addr,
            "family": family,
            "proto": proto,
            "reuse_port": reuse_port,
            "allow_broadcast": allow_broadcast,
        }
        problems = ", ".join(f"{k}={v}" for k, v in opts.items() if v)
        if problems:
            raise ValueError(
                "socket modifier keyword arguments can not be used when sock is specified. "
                f"({problems})"
            )
        sock.setblocking(False)
        sock._udp()  # bound, so that it has a readiness descriptor
    else:
        if reuse_port:
            raise ValueError("SO_REUSEPORT not supported by zt sockets")
        fam = _endpoint_family(family, local_addr, remote_addr)
        sock = node.socket(fam, SOCK_DGRAM, proto)
        try:
            sock.setblocking(False)
            if allow_broadcast:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
            if local_addr is not None:
                sock.bind((local_addr[0] or "", local_addr[1]))
            if remote_addr is not None:
                sock.connect(remote_addr)
            sock._udp()
        except BaseException:
            sock.close()
            raise
    protocol = protocol_factory()
    waiter: asyncio.Future[None] = loop.create_future()
    transport = DatagramTransport(loop, sock, protocol, waiter)
    try:
        await waiter
    except BaseException:
        transport.close()
        raise
    return transport, protocol
