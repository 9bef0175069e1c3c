"""asyncio streams over a node's overlay TCP sockets.

    reader, writer = await zt.asyncio.open_connection(node, "198.18.0.20", 8080)
    server = await zt.asyncio.start_server(handle, node, "::", 8080)

The transports wait on the sockets' readiness descriptors (``loop.add_reader`` /
``loop.add_writer``), so they run on any selector event loop; data stays in the node's Rust
buffers until read.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import errno
import os
import socket
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any, Callable, Optional, Union

from .socket import AF_INET, AF_INET6, SHUT_WR, SOCK_STREAM
from .socket import socket as zt_socket

if TYPE_CHECKING:
    from .node import Node

__all__ = ["Server", "open_connection", "start_server"]

_CHUNK = 256 * 1024
_HIGH_WATER = 1 << 20
_LOW_WATER = 256 * 1024


class _Transport(asyncio.Transport):
    """A stream transport on a :class:`zt.socket.socket` (non-blocking use only)."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        sock: zt_socket,
        protocol: asyncio.Protocol,
    ) -> None:
        super().__init__()
        self._loop = loop
        self._sock = sock
        self._protocol = protocol
        self._fd = sock.fileno()
        self._buffer: collections.deque[bytes] = collections.deque()
        self._closing = False
        self._paused = False
        self._writing_paused = False
        self._eof_written = False
        sock.setblocking(False)
        loop.call_soon(protocol.connection_made, self)
        loop.call_soon(self._resume)

    def _resume(self) -> None:
        if not self._closing:
            self._loop.add_reader(self._fd, self._on_readable)

    def _on_readable(self) -> None:
        try:
            data = self._sock.recv(_CHUNK)
        except BlockingIOError:
            return
        except OSError as e:
            self._fatal(e)
            return
        if data:
            self._protocol.data_received(data)
            return
        self._loop.remove_reader(self._fd)
        keep_open = self._protocol.eof_received()
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
            self._sock.shutdown(SHUT_WR)
        if self._closing:
            self._finish(None)

    def _maybe_resume_writing(self) -> None:
        if self._writing_paused and self.get_write_buffer_size() <= _LOW_WATER:
            self._writing_paused = False
            self._protocol.resume_writing()

    def _fatal(self, exc: Optional[Exception]) -> None:
        self._loop.remove_reader(self._fd)
        self._loop.remove_writer(self._fd)
        self._buffer.clear()
        self._closing = True
        self._finish(exc)

    def _finish(self, exc: Optional[Exception]) -> None:
        self._loop.remove_reader(self._fd)
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
        self._eof_written = True
        if not self._buffer:
            self._sock.shutdown(SHUT_WR)

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

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "peername":
            return self._sock.getpeername()
        if name == "sockname":
            return self._sock.getsockname()
        if name == "socket":
            return self._sock
        return default


def _family(host: str) -> int:
    return AF_INET6 if ":" in host else AF_INET


async def open_connection(
    node: Node, host: str, port: int, *, limit: int = 2**16
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Connects to ``(host, port)`` on the node's networks; asyncio's reader and writer."""
    loop = asyncio.get_running_loop()
    sock = node.socket(_family(host), SOCK_STREAM)
    try:
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
    reader = asyncio.StreamReader(limit=limit, loop=loop)
    protocol = asyncio.StreamReaderProtocol(reader, loop=loop)
    transport = _Transport(loop, sock, protocol)
    writer = asyncio.StreamWriter(transport, protocol, reader, loop)
    return reader, writer


ClientHandler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Coroutine[Any, Any, None]]


class Server:
    """A listening socket accepting connections into asyncio streams."""

    def __init__(self, sock: zt_socket, handler: ClientHandler, limit: int) -> None:
        self._sock = sock
        self._handler = handler
        self._limit = limit
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
            protocol = asyncio.StreamReaderProtocol(reader, loop=self._loop)
            transport = _Transport(self._loop, conn, protocol)
            writer = asyncio.StreamWriter(transport, protocol, reader, self._loop)
            task: asyncio.Task[None] = self._loop.create_task(self._handler(reader, writer))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

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
    limit: int = 2**16,
) -> Server:  # fmt: skip
    """Serves ``handler(reader, writer)`` for each connection to ``(host, port)``."""
    sock = node.socket(_family(host), SOCK_STREAM)
    sock.bind((host, port))
    sock.listen(backlog)
    return Server(sock, handler, limit)
