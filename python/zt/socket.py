"""Sockets on a node's overlay networks, shaped like the standard library's ``socket``.

    with node.socket(zt.socket.AF_INET, zt.socket.SOCK_STREAM) as s:
        s.connect(("198.18.0.20", 8080))
        s.sendall(b"hello")
        print(s.recv(1024))

Data stays in Rust (the node's user-space TCP/IP stack); ``fileno()`` is a real descriptor that
is readable/writable exactly when the socket is, so ``select``/``selectors`` work. TCP
(``SOCK_STREAM``) and UDP (``SOCK_DGRAM``); errors are the standard ``OSError`` subclasses with
errno values and ``TimeoutError`` for timeouts.
"""

from __future__ import annotations

import errno as _errno
import io
import ipaddress
import socket as _std
from typing import TYPE_CHECKING, Any, Optional, Union

from . import _native

if TYPE_CHECKING:
    from .node import Node

__all__ = ["AF_INET", "AF_INET6", "SOCK_DGRAM", "SOCK_STREAM", "socket"]

AF_INET = _std.AF_INET
AF_INET6 = _std.AF_INET6
SOCK_STREAM = _std.SOCK_STREAM
SOCK_DGRAM = _std.SOCK_DGRAM
SHUT_RD, SHUT_WR, SHUT_RDWR = _std.SHUT_RD, _std.SHUT_WR, _std.SHUT_RDWR

Address = tuple[Any, ...]


def _ip(host: str, family: int) -> str:
    ip = ipaddress.ip_address(host.strip("[]"))
    if (family == AF_INET) != (ip.version == 4):
        raise OSError(_errno.EAFNOSUPPORT, f"{host} is not an address of this socket's family")
    return str(ip)


class socket:  # noqa: N801 - the standard library's name
    """A TCP socket on a node's networks (create it with :meth:`zt.Node.socket`)."""

    def __init__(
        self, node: Node, family: int = AF_INET, type: int = SOCK_STREAM, proto: int = 0
    ) -> None:
        if family not in (AF_INET, AF_INET6):
            raise OSError(_errno.EAFNOSUPPORT, "address family not supported")
        if type not in (SOCK_STREAM, SOCK_DGRAM):
            raise OSError(_errno.ESOCKTNOSUPPORT, "socket type not supported")
        self._node = node
        self.family = family
        self.type = type
        self.proto = proto
        self._timeout: Optional[float] = _std.getdefaulttimeout()
        self._s: Optional[_native.TcpSocket] = None
        self._u: Optional[_native.UdpSocket] = None
        self._peer: Optional[tuple[str, int]] = None
        self._bound: Optional[tuple[str, int]] = None
        self._closed = False
        self._nodelay = True
        self._bufs = (1 << 20, 1 << 20)

    @classmethod
    def _wrap(cls, node: Node, family: int, native: _native.TcpSocket) -> socket:
        s = cls(node, family)
        s._s = native
        return s

    # -- helpers ---------------------------------------------------------------------------

    def _udp(self, bind_if_needed: bool = False) -> _native.UdpSocket:
        if self._closed:
            raise OSError(_errno.EBADF, "Bad file descriptor")
        if self._u is None:
            if not bind_if_needed:
                raise OSError(_errno.ENOTCONN, "Transport endpoint is not connected")
            any_host = "::" if self.family == AF_INET6 else "0.0.0.0"
            self._u = self._node._native.udp_bind(any_host, 0, *self._bufs)
        return self._u

    def _sock(self) -> _native.TcpSocket:
        if self._closed:
            raise OSError(_errno.EBADF, "Bad file descriptor")
        if self._s is None:
            raise OSError(_errno.ENOTCONN, "Transport endpoint is not connected")
        return self._s

    # -- the socket API --------------------------------------------------------------------

    def settimeout(self, value: Optional[float]) -> None:
        if value is not None and value < 0:
            raise ValueError("Timeout value out of range")
        self._timeout = value

    def gettimeout(self) -> Optional[float]:
        return self._timeout

    def setblocking(self, flag: bool) -> None:
        self._timeout = None if flag else 0.0

    def getblocking(self) -> bool:
        return self._timeout != 0.0

    def bind(self, address: Address) -> None:
        host, port = address[0], int(address[1])
        if not 0 <= port <= 65535:
            raise OverflowError("port must be 0-65535.")
        any_host = "::" if self.family == AF_INET6 else "0.0.0.0"
        self._bound = (_ip(host or any_host, self.family), port)
        if self.type == SOCK_DGRAM:
            self._u = self._node._native.udp_bind(self._bound[0], port, *self._bufs)

    def sendto(self, data: Union[bytes, bytearray, memoryview], address: Address) -> int:
        """Sends a datagram (binds an ephemeral port first if needed)."""
        if self.type != SOCK_DGRAM:
            raise OSError(_errno.EISCONN, "sendto on a stream socket")
        host, port = _ip(address[0], self.family), int(address[1])
        return self._udp(True).sendto(bytes(data), host, port, self._timeout)

    def recvfrom(self, bufsize: int, flags: int = 0) -> tuple[bytes, Address]:
        """The next datagram and its sender."""
        if self.type != SOCK_DGRAM:
            data = self.recv(bufsize)
            return data, self.getpeername()
        return self._udp().recvfrom(bufsize, self._timeout)

    def recvfrom_into(self, buffer: Any, nbytes: int = 0, flags: int = 0) -> tuple[int, Address]:
        view = memoryview(buffer).cast("B")
        n = len(view) if nbytes == 0 else min(nbytes, len(view))
        data, addr = self.recvfrom(n)
        view[: len(data)] = data
        return len(data), addr

    def listen(self, backlog: int = 128) -> None:
        if self._bound is None:
            raise OSError(_errno.EINVAL, "bind() first")
        host, port = self._bound
        self._s = self._node._native.tcp_listen(host, port, max(1, backlog), *self._bufs)

    def accept(self) -> tuple[socket, Address]:
        conn = self._sock().accept(self._timeout)
        peer = conn.addresses()[1]
        sock = socket._wrap(self._node, self.family, conn)
        sock._timeout = self._timeout if self._timeout != 0.0 else None
        return sock, (peer if peer is not None else ("", 0))

    def connect(self, address: Address) -> None:
        host, port = _ip(address[0], self.family), int(address[1])
        if self.type == SOCK_DGRAM:
            self._udp(True)
            self._peer = (host, port)
            return
        self._s = self._node._native.tcp_connect(host, port, *self._bufs)
        self._s.set_nodelay(self._nodelay)
        if self._timeout == 0.0:
            raise BlockingIOError(_errno.EINPROGRESS, "Operation now in progress")
        self._s.wait_connected(self._timeout)

    def connect_ex(self, address: Address) -> int:
        try:
            self.connect(address)
        except OSError as e:
            return e.errno or _errno.EIO
        return 0

    def send(self, data: Union[bytes, bytearray, memoryview], flags: int = 0) -> int:
        if self.type == SOCK_DGRAM:
            if self._peer is None:
                raise OSError(_errno.EDESTADDRREQ, "Destination address required")
            return self.sendto(data, self._peer)
        return self._sock().send(bytes(data), self._timeout)

    def sendall(self, data: Union[bytes, bytearray, memoryview], flags: int = 0) -> None:
        view = memoryview(data).cast("B")
        sent = 0
        while sent < len(view):
            sent += self._sock().send(bytes(view[sent : sent + (1 << 20)]), self._timeout)

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        if bufsize < 0:
            raise ValueError("negative buffersize in recv")
        if self.type == SOCK_DGRAM:
            return self._udp().recvfrom(bufsize, self._timeout)[0]
        return self._sock().recv(bufsize, self._timeout)

    def recv_into(self, buffer: Any, nbytes: int = 0, flags: int = 0) -> int:
        view = memoryview(buffer).cast("B")
        n = len(view) if nbytes == 0 else min(nbytes, len(view))
        data = self._sock().recv(n, self._timeout)
        view[: len(data)] = data
        return len(data)

    def shutdown(self, how: int) -> None:
        if how in (SHUT_WR, SHUT_RDWR):
            self._sock().shutdown_write()

    def close(self) -> None:
        if not self._closed:
            if self._s is not None:
                self._s.close()
            if self._u is not None:
                self._u.close()
        self._closed = True

    def detach(self) -> int:
        raise OSError(_errno.EOPNOTSUPP, "zt sockets have no OS descriptor to detach")

    def fileno(self) -> int:
        if self._closed:
            return -1
        if self._u is not None:
            return self._u.fileno()
        return -1 if self._s is None else self._s.fileno()

    def getsockname(self) -> Address:
        if self._u is not None:
            local = self._u.local()
            if local is not None:
                return local
        if self._s is not None:
            local = self._s.addresses()[0]
            if local is not None:
                return local
        if self._bound is not None:
            return self._bound
        return ("::" if self.family == AF_INET6 else "0.0.0.0", 0)

    def getpeername(self) -> Address:
        if self.type == SOCK_DGRAM:
            if self._peer is None:
                raise OSError(_errno.ENOTCONN, "Transport endpoint is not connected")
            return self._peer
        peer = self._sock().addresses()[1]
        if peer is None:
            raise OSError(_errno.ENOTCONN, "Transport endpoint is not connected")
        return peer

    def setsockopt(self, level: int, optname: int, value: Any, optlen: Any = None) -> None:
        if level == _std.IPPROTO_TCP and optname == _std.TCP_NODELAY:
            self._nodelay = bool(value)
            if self._s is not None:
                self._s.set_nodelay(self._nodelay)
        elif level == _std.SOL_SOCKET and optname == _std.SO_RCVBUF:
            self._bufs = (max(4096, int(value)), self._bufs[1])
        elif level == _std.SOL_SOCKET and optname == _std.SO_SNDBUF:
            self._bufs = (self._bufs[0], max(4096, int(value)))
        # SO_REUSEADDR and SO_KEEPALIVE are accepted (no TIME_WAIT port holding here).

    def getsockopt(self, level: int, optname: int, buflen: Optional[int] = None) -> int:
        if level == _std.IPPROTO_TCP and optname == _std.TCP_NODELAY:
            return int(self._nodelay)
        if level == _std.SOL_SOCKET and optname == _std.SO_RCVBUF:
            return self._bufs[0]
        if level == _std.SOL_SOCKET and optname == _std.SO_SNDBUF:
            return self._bufs[1]
        if level == _std.SOL_SOCKET and optname == _std.SO_TYPE:
            return self.type
        return 0

    def makefile(self, mode: str = "r", buffering: Optional[int] = None, **kw: Any) -> Any:
        return _makefile(self, mode, buffering, **kw)

    def _decref_socketios(self) -> None:
        """Called by ``socket.SocketIO.close`` (the stdlib's file wrapper)."""

    def __enter__(self) -> socket:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else (self._s.phase() if self._s else "open")
        return f"<zt.socket.socket family={self.family} type={self.type} {state}>"


def _makefile(sock: Any, mode: str, buffering: Optional[int], **kw: Any) -> Any:
    """``socket.makefile`` for socket-shaped objects (``recv_into``, ``send``,
    ``_decref_socketios``): the standard library's ``SocketIO`` with the usual buffering."""
    raw_mode = "rw" if "w" in mode and "r" in mode else mode.replace("b", "")
    raw = _std.SocketIO(sock, raw_mode)  # type: ignore[arg-type]
    binary = "b" in mode
    if buffering == 0 and binary:
        return raw
    size = io.DEFAULT_BUFFER_SIZE if buffering in (None, -1, 0) else buffering
    buf: Any
    if "r" in mode and "w" in mode:
        buf = io.BufferedRWPair(raw, raw, size)
    elif "w" in mode:
        buf = io.BufferedWriter(raw, size)
    else:
        buf = io.BufferedReader(raw, size)
    return buf if binary else io.TextIOWrapper(buf, **kw)
