"""Sockets on a node's overlay networks, shaped like the standard library's ``socket``.

    with node.socket(zt.socket.AF_INET, zt.socket.SOCK_STREAM) as s:
        s.connect(("198.18.0.20", 8080))
        s.sendall(b"hello")
        print(s.recv(1024))

Data stays in Rust (the node's user-space TCP/IP stack); ``fileno()`` is a real descriptor that
is readable/writable exactly when the socket is, so ``select``/``selectors`` work. TCP
(``SOCK_STREAM``) and UDP (``SOCK_DGRAM``); errors are the standard ``OSError`` subclasses with
errno values and ``TimeoutError`` for timeouts.

A TCP listener on ``::`` is dual-stack, as on Linux: it also accepts IPv4 connections, whose
addresses it reports IPv4-mapped (``::ffff:198.18.0.1``), unless ``IPV6_V6ONLY`` is set; on
``0.0.0.0`` it accepts IPv4 only. Either listens on every network, including networks joined
after ``listen()``.
"""

from __future__ import annotations

import errno as _errno
import io
import ipaddress
import socket as _std
import sys as _sys
from typing import TYPE_CHECKING, Any, Optional, Union

from . import _native

if TYPE_CHECKING:
    from .node import Node

__all__ = [
    "AF_INET",
    "AF_INET6",
    "SOCK_DGRAM",
    "SOCK_STREAM",
    "TCP_KEEPCNT",
    "TCP_KEEPIDLE",
    "TCP_KEEPINTVL",
    "TCP_USER_TIMEOUT",
    "socket",
]

AF_INET = _std.AF_INET
AF_INET6 = _std.AF_INET6
SOCK_STREAM = _std.SOCK_STREAM
SOCK_DGRAM = _std.SOCK_DGRAM
SHUT_RD, SHUT_WR, SHUT_RDWR = _std.SHUT_RD, _std.SHUT_WR, _std.SHUT_RDWR
# The keep-alive and user-timeout options, as the platform numbers them (Linux's numbers where
# the standard library lacks one: they only name options here).
TCP_KEEPIDLE: int = getattr(_std, "TCP_KEEPIDLE", 4)
TCP_KEEPINTVL: int = getattr(_std, "TCP_KEEPINTVL", 5)
TCP_KEEPCNT: int = getattr(_std, "TCP_KEEPCNT", 6)
TCP_USER_TIMEOUT: int = getattr(_std, "TCP_USER_TIMEOUT", 18)
_IPV6_V6ONLY: int = getattr(_std, "IPV6_V6ONLY", 26)

Address = tuple[Any, ...]

# (level, optname) → (native name, smallest, largest value, default).
_TCP_OPTIONS: dict[tuple[int, int], tuple[str, int, int, int]] = {
    (_std.IPPROTO_TCP, _std.TCP_NODELAY): ("nodelay", 0, 1, 1),
    (_std.SOL_SOCKET, _std.SO_KEEPALIVE): ("keepalive", 0, 1, 0),
    (_std.IPPROTO_TCP, TCP_KEEPIDLE): ("keepidle", 1, 32767, 7200),
    (_std.IPPROTO_TCP, TCP_KEEPINTVL): ("keepintvl", 1, 32767, 75),
    (_std.IPPROTO_TCP, TCP_KEEPCNT): ("keepcnt", 1, 127, 9),
    (_std.IPPROTO_TCP, TCP_USER_TIMEOUT): ("user_timeout", 0, 2**31 - 1, 0),
}


def _ip(host: str, family: int) -> str:
    ip = ipaddress.ip_address(host.strip("[]"))
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None and family == AF_INET6:
        return str(ip.ipv4_mapped)  # a dual-stack socket reaching an IPv4 peer
    if (family == AF_INET) != (ip.version == 4):
        raise OSError(_errno.EAFNOSUPPORT, f"{host} is not an address of this socket's family")
    return str(ip)


def _int_option(value: Any) -> int:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return int.from_bytes(bytes(value), _sys.byteorder, signed=True)
    if isinstance(value, int):  # bool included
        return int(value)
    raise TypeError(f"an integer or a bytes-like object is required, not {type(value).__name__}")


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
        # Options set before the native socket exists (applied when it is created).
        self._opts: dict[str, int] = {}
        self._v6only = False
        self._bufs = (1 << 20, 1 << 20)

    @classmethod
    def _wrap(cls, node: Node, family: int, native: _native.TcpSocket) -> socket:
        s = cls(node, family)
        s._s = native
        return s

    # -- helpers ---------------------------------------------------------------------------

    def _addr(self, addr: Optional[tuple[str, int]]) -> Optional[tuple[str, int]]:
        """An address as this socket's family shows it (IPv4 peers of a dual-stack IPv6 socket
        IPv4-mapped)."""
        if addr is not None and self.family == AF_INET6 and ":" not in addr[0]:
            return (f"::ffff:{addr[0]}", addr[1])
        return addr

    def _apply_options(self, native: _native.TcpSocket) -> None:
        for name, value in self._opts.items():
            native.set_option(name, value)

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
        s = self._node._native.tcp_listen(
            host, port, max(1, backlog), *self._bufs, v6only=self._v6only
        )
        self._apply_options(s)
        self._s = s

    def accept(self) -> tuple[socket, Address]:
        conn = self._sock().accept(self._timeout)
        sock = socket._wrap(self._node, self.family, conn)
        sock._timeout = self._timeout if self._timeout != 0.0 else None
        peer = sock._addr(conn.addresses()[1])
        return sock, (peer if peer is not None else ("", 0))

    def connect(self, address: Address) -> None:
        host, port = _ip(address[0], self.family), int(address[1])
        if self.type == SOCK_DGRAM:
            self._udp(True)
            self._peer = (host, port)
            return
        s = self._node._native.tcp_connect(host, port, *self._bufs)
        self._apply_options(s)
        self._s = s
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
            local = self._addr(self._s.addresses()[0])
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
        peer = self._addr(self._sock().addresses()[1])
        if peer is None:
            raise OSError(_errno.ENOTCONN, "Transport endpoint is not connected")
        return peer

    def setsockopt(self, level: int, optname: int, value: Any, optlen: Any = None) -> None:
        """TCP_NODELAY, SO_KEEPALIVE, TCP_KEEPIDLE, TCP_KEEPINTVL, TCP_KEEPCNT, TCP_USER_TIMEOUT,
        SO_RCVBUF, SO_SNDBUF (before connect/listen), IPV6_V6ONLY (before listen); others (e.g.
        SO_REUSEADDR: no TIME_WAIT port holding here) are accepted and ignored."""
        known = _TCP_OPTIONS.get((level, optname))
        if known is not None:
            name, lo, hi, _ = known
            v = _int_option(value)
            if name in ("nodelay", "keepalive"):
                v = int(v != 0)
            elif not lo <= v <= hi:
                raise OSError(_errno.EINVAL, f"{name} must be {lo}-{hi}")
            if self._s is not None:
                self._s.set_option(name, v)
            else:
                self._opts[name] = v
        elif level == _std.SOL_SOCKET and optname == _std.SO_RCVBUF:
            self._bufs = (max(4096, _int_option(value)), self._bufs[1])
        elif level == _std.SOL_SOCKET and optname == _std.SO_SNDBUF:
            self._bufs = (self._bufs[0], max(4096, _int_option(value)))
        elif level == _std.IPPROTO_IPV6 and optname == _IPV6_V6ONLY:
            if self.family != AF_INET6:
                raise OSError(_errno.ENOPROTOOPT, "IPV6_V6ONLY on a non-IPv6 socket")
            self._v6only = _int_option(value) != 0

    def getsockopt(self, level: int, optname: int, buflen: Optional[int] = None) -> int:
        known = _TCP_OPTIONS.get((level, optname))
        if known is not None:
            name, _, _, default = known
            if self._s is not None:
                return self._s.option(name)
            return self._opts.get(name, default)
        if level == _std.SOL_SOCKET and optname == _std.SO_RCVBUF:
            return self._bufs[0]
        if level == _std.SOL_SOCKET and optname == _std.SO_SNDBUF:
            return self._bufs[1]
        if level == _std.SOL_SOCKET and optname == _std.SO_TYPE:
            return self.type
        if level == _std.IPPROTO_IPV6 and optname == _IPV6_V6ONLY:
            return int(self._v6only)
        return 0

    def makefile(self, mode: str = "r", buffering: Optional[int] = None, **kw: Any) -> Any:
        raw = _std.SocketIO(self, "rw" if "w" in mode and "r" in mode else mode.replace("b", ""))  # type: ignore[arg-type]
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

    def _decref_socketios(self) -> None:
        """Called by ``socket.SocketIO.close`` (the stdlib's file wrapper)."""

    def __enter__(self) -> socket:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else (self._s.phase() if self._s else "open")
        return f"<zt.socket.socket family={self.family} type={self.type} {state}>"
