"""Sockets on a node's overlay networks, shaped like the standard library's ``socket``.

    with node.create_connection(("198.18.0.20", 8080), timeout=10) as s:
        s.sendall(b"hello")
        print(s.recv(1024))

Data stays in Rust (the node's user-space TCP/IP stack); ``fileno()`` is a real descriptor that
is readable/writable exactly when the socket is, so ``select``/``selectors`` work. TCP
(``SOCK_STREAM``) and UDP (``SOCK_DGRAM``); errors are the standard ``OSError`` subclasses with
errno values, ``socket.gaierror`` for what is not an IP address of the socket's family, and
``TimeoutError`` for timeouts.

Addresses are shaped as the standard library's: ``(host, port)`` on ``AF_INET``, and
``(host, port, flowinfo, scope_id)`` on ``AF_INET6`` (flowinfo and scope_id are always 0 here;
2- to 4-tuples are accepted).

Where zt differs from the operating system's sockets (see docs/python-api.md): addresses are
IP literals only (no name resolution); sockets are dual-stack (an ``AF_INET6`` socket shows
IPv4 peers as ``::ffff:a.b.c.d``); recv/send flags other than ``MSG_DONTWAIT`` (and
``MSG_NOSIGNAL`` when sending) raise ``EOPNOTSUPP``.

Data is copied once between a Python object and the socket's buffer in Rust: ``send`` and
``sendall`` read a ``bytes`` or ``bytearray`` in place (other buffers are copied first),
``recv`` builds its ``bytes`` straight from the socket's receive buffer, and ``recv_into`` and
``recvfrom_into`` with a ``bytearray`` write straight into it (other writable buffers get a
copy of a received ``bytes``).
"""

from __future__ import annotations

import builtins
import contextlib
import errno as _errno
import ipaddress
import operator
import socket as _std
import sys
import time
import warnings
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Optional, Union, overload

from . import _native
from ._fileio import _MakefileMixin
from ._multicast import GroupOptions
from ._sockopt import _CA_NAME_MAX as _CA_NAME_MAX
from ._sockopt import _IPV6_V6ONLY as _IPV6_V6ONLY
from ._sockopt import (
    _STORED_OPTIONS,
    CONGESTION_CONTROLS,
    TCP_CONGESTION,
    TCP_KEEPCNT,
    TCP_KEEPIDLE,
    TCP_KEEPINTVL,
    TCP_USER_TIMEOUT,
    _OptionsMixin,
)
from ._sockopt import _TCP_OPTIONS as _TCP_OPTIONS
from ._timeout import check_timeout

if TYPE_CHECKING:
    from .node import Node

__all__ = [
    "AF_INET",
    "AF_INET6",
    "CONGESTION_CONTROLS",
    "MSG_DONTWAIT",
    "MSG_NOSIGNAL",
    "SHUT_RD",
    "SHUT_RDWR",
    "SHUT_WR",
    "SOCK_DGRAM",
    "SOCK_STREAM",
    "TCP_CONGESTION",
    "TCP_KEEPCNT",
    "TCP_KEEPIDLE",
    "TCP_KEEPINTVL",
    "TCP_USER_TIMEOUT",
    "create_connection",
    "create_server",
    "has_dualstack_ipv6",
    "socket",
]

AF_INET = _std.AF_INET
AF_INET6 = _std.AF_INET6
SOCK_STREAM = _std.SOCK_STREAM
SOCK_DGRAM = _std.SOCK_DGRAM
SHUT_RD, SHUT_WR, SHUT_RDWR = _std.SHUT_RD, _std.SHUT_WR, _std.SHUT_RDWR
MSG_DONTWAIT: int = getattr(_std, "MSG_DONTWAIT", 0x40)
MSG_NOSIGNAL: int = getattr(_std, "MSG_NOSIGNAL", 0x4000)

Address = tuple[Any, ...]
Buffer = Union[bytes, bytearray, memoryview]

_C_INT_MIN, _C_INT_MAX = -(2**31), 2**31 - 1


# Errors that are about the peer's address: their messages name it (the errno, and so the
# OSError subclass, stay the stdlib's).
_NAMED_ERRNOS = frozenset(
    {
        _errno.ECONNREFUSED,
        _errno.ENETUNREACH,
        _errno.EADDRNOTAVAIL,
        _errno.EHOSTUNREACH,
        _errno.ETIMEDOUT,
        _errno.EMSGSIZE,
        _errno.EACCES,
        _errno.EPERM,
    }
)


def _naming(e: OSError, peer: tuple[Any, ...]) -> OSError:
    """``e`` with the peer's address in its message (``[Errno 111] Connection refused:
    198.18.0.2:80``), of the same class; other errors as they are."""
    if e.errno not in _NAMED_ERRNOS or not isinstance(e.strerror, str):
        return e
    host = f"[{peer[0]}]" if ":" in str(peer[0]) else str(peer[0])
    named = type(e)(e.errno, f"{e.strerror}: {host}:{peer[1]}")
    return named


def _bytes_view(data: object) -> memoryview:
    """``data`` as bytes, or the standard library's TypeError for what is not bytes-like."""
    try:
        view = memoryview(data)  # type: ignore[arg-type]
    except TypeError:
        raise TypeError(f"a bytes-like object is required, not '{type(data).__name__}'") from None
    if not view.c_contiguous:
        raise BufferError("memoryview: underlying buffer is not C-contiguous")
    return view.cast("B")


def _c_int(value: object, converted: bool = False) -> int:
    """An argument the standard library passes to C as an ``int``: an OverflowError outside
    its range, with the stdlib's message (argument parsing's, or a conversion's: ``converted``)."""
    n = operator.index(value)  # type: ignore[arg-type]
    if converted and not _C_INT_MIN <= n <= _C_INT_MAX:
        raise OverflowError("Python int too large to convert to C int")
    if n > _C_INT_MAX:
        raise OverflowError("signed integer is greater than maximum")
    if n < _C_INT_MIN:
        raise OverflowError("signed integer is less than minimum")
    return n


#: The largest UDP payload the stack takes (a larger one raises EMSGSIZE).
MAX_DATAGRAM = 65507
_CHUNK = 1 << 20
_DEFAULT_BACKLOG = 128
_GLOBAL_DEFAULT_TIMEOUT: object = getattr(_std, "_GLOBAL_DEFAULT_TIMEOUT", object())
_EAI_ADDRFAMILY: int = getattr(_std, "EAI_ADDRFAMILY", _std.EAI_FAMILY)
_TYPE_FLAGS: int = getattr(_std, "SOCK_NONBLOCK", 0) | getattr(_std, "SOCK_CLOEXEC", 0)


def has_dualstack_ipv6() -> bool:
    """Whether an ``AF_INET6`` listener also takes IPv4 connections: always, on zt."""
    return True


def _ip(host: Any, family: int) -> str:
    """``host`` as the IP literal the native layer takes (an IPv4-mapped IPv6 address becomes
    plain IPv4); ``socket.gaierror`` if it is not an IP address of ``family``."""
    if isinstance(host, (bytes, bytearray)):
        host = bytes(host).decode("ascii")
    if not isinstance(host, str):
        raise TypeError(f"str, bytes or bytearray expected, not {type(host).__name__}")
    if host == "":
        return "::" if family == AF_INET6 else "0.0.0.0"
    try:
        ip = ipaddress.ip_address(host[1:-1] if host.startswith("[") else host)
    except ValueError:
        raise _std.gaierror(
            _std.EAI_NONAME, f"{host!r} is not an IP address (zt sockets resolve no host names)"
        ) from None
    if family == AF_INET6 and ip.version == 6:
        assert isinstance(ip, ipaddress.IPv6Address)
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Address(ip.packed))  # without a %scope
    if family == AF_INET and ip.version == 4:
        return str(ip)
    raise _std.gaierror(_EAI_ADDRFAMILY, "Address family for hostname not supported")


def _sockaddr(address: Any, family: int, what: str = "connect") -> tuple[str, int]:
    """A stdlib-shaped address argument checked like the standard library does it."""
    name = "AF_INET6" if family == AF_INET6 else "AF_INET"
    if not isinstance(address, tuple):
        raise TypeError(f"{what}(): {name} address must be tuple, not {type(address).__name__}")
    if family == AF_INET and len(address) != 2:
        raise TypeError("AF_INET address must be a pair (host, port)")
    if family == AF_INET6 and not 2 <= len(address) <= 4:
        raise TypeError("AF_INET6 address must be a tuple (host, port[, flowinfo[, scopeid]])")
    port = operator.index(address[1])
    if not 0 <= port <= 65535:
        raise OverflowError(f"{what}(): port must be 0-65535.")
    return _ip(address[0], family), port


class _Deadline:
    """The time left of one call's timeout (None: block; 0: never block)."""

    def __init__(self, timeout: Optional[float]) -> None:
        self.timeout = timeout
        self.end = None if not timeout else time.monotonic() + timeout

    def left(self) -> Optional[float]:
        if self.end is None:
            return self.timeout
        left = self.end - time.monotonic()
        if left <= 0:
            raise TimeoutError("timed out")
        return left


class socket(_MakefileMixin, _OptionsMixin):  # noqa: N801 - the standard library's name
    """A TCP or UDP socket on a node's networks (:meth:`zt.Node.socket`,
    :func:`create_connection`, :func:`create_server`)."""

    def __init__(
        self, node: Node, family: int = AF_INET, type: int = SOCK_STREAM, proto: int = 0
    ) -> None:
        self._closed = True  # until set up (for __del__)
        self._s: Optional[_native.TcpSocket] = None
        self._u: Optional[_native.UdpSocket] = None
        if family not in (AF_INET, AF_INET6):
            raise OSError(_errno.EAFNOSUPPORT, "Address family not supported by protocol")
        kind = operator.index(type) & ~_TYPE_FLAGS
        if kind not in (SOCK_STREAM, SOCK_DGRAM):
            raise OSError(_errno.ESOCKTNOSUPPORT, "Socket type not supported")
        default_proto = _std.IPPROTO_TCP if kind == SOCK_STREAM else _std.IPPROTO_UDP
        if proto not in (0, default_proto):
            raise OSError(_errno.EPROTONOSUPPORT, "Protocol not supported")
        self._node = node
        self._family = _std.AddressFamily(family)
        self._type = _std.SocketKind(kind)
        self._proto = proto
        self._timeout: Optional[float] = _std.getdefaulttimeout()
        if operator.index(type) & getattr(_std, "SOCK_NONBLOCK", 0):
            self._timeout = 0.0
        self._peer: Optional[tuple[str, int]] = None  # a UDP socket's connect()ed peer
        self._bound: Optional[tuple[str, int]] = None
        self._listening = False
        self._connect_reported = False  # connect() said the TCP connection is up
        self._error_reported = False  # getsockopt(SO_ERROR) said why it failed
        self._shut_rd = False
        self._shut_wr = False
        # TCP options set before the native socket exists (applied when it is created).
        self._opts: dict[str, int] = {}
        default_cc = getattr(getattr(node, "options", None), "tcp_congestion", "cubic")
        if kind == SOCK_STREAM and default_cc != "cubic":
            self._opts["congestion"] = CONGESTION_CONTROLS.index(default_cc)
        self._v6only = False
        self._bufs = (1 << 20, 1 << 20)
        # Whether SO_RCVBUF/SO_SNDBUF fixed the sizes; left alone, TCP's buffers start at the
        # default and grow with the path (as Linux's auto-tuning, which setting them turns off).
        self._bufs_fixed = (False, False)
        self._options = dict(_STORED_OPTIONS)
        self._groups = GroupOptions(self._family, self._type)
        self._closed = False

    @classmethod
    def _wrap(cls, node: Node, family: int, native: _native.TcpSocket) -> socket:
        s = cls(node, family)
        s._s = native
        s._connect_reported = True
        return s

    # -- attributes ------------------------------------------------------------------------

    @property
    def family(self) -> _std.AddressFamily:
        return self._family

    @property
    def type(self) -> _std.SocketKind:
        return self._type

    @property
    def proto(self) -> int:
        return self._proto

    @property
    def timeout(self) -> Optional[float]:
        return self._timeout

    # -- helpers ---------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise OSError(_errno.EBADF, "Bad file descriptor")

    def _any(self) -> str:
        return "::" if self._family == AF_INET6 else "0.0.0.0"

    def _out(self, addr: tuple[str, int]) -> Address:
        """An address as this socket's family shows it: ``(host, port)`` on AF_INET,
        ``(host, port, flowinfo, scope_id)`` on AF_INET6 (IPv4 hosts IPv4-mapped)."""
        ip, port = addr
        if self._family == AF_INET6:
            if ":" not in ip:
                ip = "::ffff:" + ip
            return (ip, port, 0, 0)
        return (ip, port)

    def _udp(self) -> _native.UdpSocket:
        """The UDP socket, bound to an ephemeral port on every network first if need be."""
        self._check_open()
        if self._u is None:
            self._u = self._new_udp(self._any(), 0)
        return self._u

    def _new_udp(self, host: str, port: int) -> _native.UdpSocket:
        """A native UDP socket bound to ``(host, port)`` with the broadcast and multicast
        options and memberships set so far (closed again if they fail)."""
        u = self._node._handle().udp_bind(host, port, *self._bufs)
        try:
            self._groups.apply(self._node, u)
        except BaseException:
            u.close()
            raise
        return u

    def _sock(self) -> _native.TcpSocket:
        self._check_open()
        if self._s is None:
            raise OSError(_errno.ENOTCONN, "Transport endpoint is not connected")
        return self._s

    def _stream(self, shut: bool) -> Optional[_native.TcpSocket]:
        """The native socket when the common case applies (an open TCP socket with one, this
        direction not shut down): the hot calls then skip their general checks."""
        native = self._s
        if native is None or shut or self._closed or self._type != SOCK_STREAM:
            return None
        return native

    def _call_timeout(self, flags: int, allowed: int = MSG_DONTWAIT) -> Optional[float]:
        """The timeout of one call with ``flags`` (``MSG_DONTWAIT``: do not block)."""
        flags = operator.index(flags)
        if flags & ~allowed:
            raise OSError(
                _errno.EOPNOTSUPP, f"zt sockets do not support the flags {flags & ~allowed:#x}"
            )
        return 0.0 if flags & MSG_DONTWAIT else self._timeout

    def _recv_dgram(self, bufsize: int, timeout: Optional[float]) -> tuple[bytes, Address]:
        """The next datagram this socket accepts: from its peer if connect()ed; of its own
        family on AF_INET (an AF_INET6 socket takes IPv4 too, shown IPv4-mapped). The native
        socket drops the others."""
        u = self._udp()
        data, sender = u.recvfrom(bufsize, timeout, self._family == AF_INET, self._peer)
        return data, self._out(sender)

    def _recv_dgram_into(
        self, buffer: bytearray, nbytes: int, timeout: Optional[float]
    ) -> tuple[int, Address]:
        """:meth:`_recv_dgram` written straight into ``buffer``."""
        u = self._udp()
        n, sender = u.recvfrom_into(buffer, nbytes, timeout, self._family == AF_INET, self._peer)
        return n, self._out(sender)

    # -- timeouts --------------------------------------------------------------------------

    def settimeout(self, value: Optional[float]) -> None:
        self._timeout = check_timeout(value)

    def gettimeout(self) -> Optional[float]:
        return self._timeout

    def setblocking(self, flag: bool) -> None:
        self._timeout = None if flag else 0.0

    def getblocking(self) -> bool:
        return self._timeout != 0.0

    # -- addresses and connections ---------------------------------------------------------

    def bind(self, address: Address) -> None:
        """Binds to ``(host, port)``; ``host`` ``""`` (or ``"::"``/``"0.0.0.0"``) is every
        network. A UDP socket is bound at once; a TCP socket's address is used by listen()."""
        self._check_open()
        host, port = _sockaddr(address, self._family, "bind")
        if self._bound is not None or self._u is not None or self._s is not None:
            raise OSError(_errno.EINVAL, "Invalid argument (already bound)")
        if self._type == SOCK_DGRAM:
            self._u = self._new_udp(host, port)
        self._bound = (host, port)

    def listen(self, backlog: Optional[int] = None) -> None:
        n = _DEFAULT_BACKLOG if backlog is None else _c_int(backlog)
        self._check_open()
        if self._type != SOCK_STREAM:
            raise OSError(_errno.EOPNOTSUPP, "Operation not supported")
        if self._listening:
            return
        if self._s is not None:
            raise OSError(_errno.EINVAL, "Invalid argument (connected)")
        # Unbound, or bound to port 0: an ephemeral port (on every network), as the kernel.
        host, port = self._bound or ("::" if self._family == AF_INET6 else "0.0.0.0", 0)
        s = self._node._handle().tcp_listen(
            host, port, max(1, n), *self._tcp_bufs(), v6only=self._v6only
        )
        try:
            self._apply_options(s)
        except BaseException:
            s.close()
            raise
        self._s = s
        self._listening = True

    def accept(self) -> tuple[socket, Address]:
        """The next connection, with the default timeout (like the standard library's)."""
        self._check_open()
        if self._type != SOCK_STREAM:
            raise OSError(_errno.EOPNOTSUPP, "Operation not supported")
        if not self._listening:
            raise OSError(_errno.EINVAL, "Invalid argument (not listening)")
        conn = self._sock().accept(self._timeout)
        try:
            peer = conn.addresses()[1]
            sock = socket._wrap(self._node, self._family, conn)
        except BaseException:
            conn.close()
            raise
        return sock, self._out(peer if peer is not None else ("", 0))

    def connect(self, address: Address) -> None:
        """Connects (TCP) or sets the peer that send()/recv() use (UDP: other senders' datagrams
        are then dropped). A non-blocking TCP connect raises ``BlockingIOError(EINPROGRESS)``;
        the socket turns writable once connected (or readable if it failed:
        ``getsockopt(SOL_SOCKET, SO_ERROR)`` tells why)."""
        host, port = _sockaddr(address, self._family)
        self._check_open()
        if self._type == SOCK_DGRAM:
            # EACCES for a broadcast address without SO_BROADCAST, as on Linux.
            self._udp().check_destination(host)
            self._peer = (host, port)
            return
        if self._listening:
            raise OSError(_errno.EISCONN, "Transport endpoint is already connected")
        if self._s is not None:
            self._connect_again()
            return
        local_ip, local_port = self._bound or (None, 0)
        try:
            s = self._node._handle().tcp_connect(
                host, port, *self._tcp_bufs(), local_port, local_ip or None
            )
        except OSError as e:
            if e.errno == _errno.EADDRNOTAVAIL and local_ip and "own address" not in str(e):
                raise OSError(
                    e.errno,
                    f"{e.strerror}: {local_ip} is not this node's address on the network that "
                    f"routes {host} (nothing was sent)",
                ) from None
            raise _naming(e, (host, port)) from None
        self._s = s
        self._apply_options(s)
        if self._timeout == 0.0:
            raise BlockingIOError(_errno.EINPROGRESS, "Operation now in progress")
        self._wait_connected(s, (host, port))

    def _wait_connected(self, s: Any, peer: tuple[str, int]) -> None:
        try:
            s.wait_connected(self._timeout)
        except OSError as e:
            raise _naming(e, peer) from None
        self._connect_reported = True

    def _connect_again(self) -> None:
        """connect() on a socket that has begun connecting (the non-blocking pattern)."""
        s = self._sock()
        phase = s.phase()
        if phase == "connecting" and self._timeout == 0.0:
            raise OSError(_errno.EALREADY, "Operation already in progress")
        if self._connect_reported:
            raise OSError(_errno.EISCONN, "Transport endpoint is already connected")
        peer = s.addresses()[1]
        self._wait_connected(s, peer if peer is not None else ("?", 0))

    def connect_ex(self, address: Address) -> int:
        """connect(), returning the errno instead of raising (``EINPROGRESS`` when
        non-blocking, ``EAGAIN`` on a timeout); bad addresses still raise."""
        try:
            self.connect(address)
        except _std.gaierror:
            raise
        except OSError as e:
            return e.errno if e.errno is not None else _errno.EAGAIN
        return 0

    def getsockname(self) -> Address:
        self._check_open()
        if self._u is not None:
            local = self._u.local()
            if local is not None:
                return self._out(local)
        if self._s is not None:
            local = self._s.addresses()[0]
            if local is not None:
                return self._out(local)
        if self._bound is not None:
            return self._out(self._bound)
        return self._out((self._any(), 0))

    def getpeername(self) -> Address:
        self._check_open()
        if self._type == SOCK_DGRAM:
            if self._peer is None:
                raise OSError(_errno.ENOTCONN, "Transport endpoint is not connected")
            return self._out(self._peer)
        peer = None if self._listening else self._sock().addresses()[1]
        if peer is None:
            raise OSError(_errno.ENOTCONN, "Transport endpoint is not connected")
        return self._out(peer)

    # -- data ------------------------------------------------------------------------------

    def send(self, data: Buffer, flags: int = 0) -> int:
        if not isinstance(data, (bytes, bytearray)):
            data = _bytes_view(data)
        timeout = self._call_timeout(flags, MSG_DONTWAIT | MSG_NOSIGNAL)
        self._check_open()
        if self._type == SOCK_DGRAM:
            if self._peer is None:
                raise OSError(_errno.EDESTADDRREQ, "Destination address required")
            return self._send_dgram(data, self._peer, timeout)
        if self._shut_wr:
            raise BrokenPipeError(_errno.EPIPE, "Broken pipe")
        if isinstance(data, (bytes, bytearray)):
            return self._sock().send(data, timeout)  # read in place
        assert isinstance(data, memoryview)  # made one above
        return self._sock().send(bytes(data[: 4 * _CHUNK]), timeout)

    def _send_at(self, data: Union[bytes, bytearray], offset: int) -> int:
        """send(data[offset:]) on a TCP socket without slicing (zt.asyncio's buffers)."""
        self._check_open()
        if self._shut_wr:
            raise BrokenPipeError(_errno.EPIPE, "Broken pipe")
        return self._sock().send(data, self._timeout, offset)

    def sendall(self, data: Buffer, flags: int = 0) -> None:
        """Sends all of ``data``; the timeout bounds the whole call (as in the standard
        library), a non-blocking socket raises ``BlockingIOError`` once it would block."""
        common = flags == 0 and type(flags) is int and type(data) is bytes
        s = self._stream(self._shut_wr) if common else None
        if s is not None:
            timeout = self._timeout  # the common case: nothing else to check
        else:
            if not isinstance(data, (bytes, bytearray)):
                data = _bytes_view(data)
            timeout = self._call_timeout(flags, MSG_DONTWAIT | MSG_NOSIGNAL)
            self._check_open()
            if self._type == SOCK_DGRAM:
                self.send(data, flags)
                return
            if self._shut_wr:
                raise BrokenPipeError(_errno.EPIPE, "Broken pipe")
            s = self._sock()
        deadline = _Deadline(timeout)
        sent = 0
        if isinstance(data, (bytes, bytearray)):
            # Read in place from an offset; the view pins a bytearray's size meanwhile.
            with memoryview(data) as pinned:
                while sent < len(pinned):
                    sent += s.send(data, deadline.left(), sent)
            return
        assert isinstance(data, memoryview)  # made one above (the common case is bytes)
        while sent < len(data):
            sent += s.send(bytes(data[sent : sent + _CHUNK]), deadline.left())

    @overload
    def sendto(self, data: Buffer, address: Address, /) -> int: ...
    @overload
    def sendto(self, data: Buffer, flags: int, address: Address, /) -> int: ...

    def sendto(self, data: Buffer, *args: Any) -> int:
        """Sends a datagram to ``address`` (``sendto(data, address)`` or
        ``sendto(data, flags, address)``); binds an ephemeral port on every network first if
        the socket is unbound."""
        if len(args) == 1:
            flags, address = 0, args[0]
        elif len(args) == 2:
            flags, address = args
        else:
            raise TypeError(f"sendto() takes 2 or 3 arguments ({len(args) + 1} given)")
        if not isinstance(data, (bytes, bytearray)):
            data = _bytes_view(data)
        to = _sockaddr(address, self._family, "sendto")
        timeout = self._call_timeout(flags, MSG_DONTWAIT | MSG_NOSIGNAL)
        self._check_open()
        if self._type != SOCK_DGRAM:
            return self.send(data, flags)  # as Linux: a stream socket ignores the address
        return self._send_dgram(data, to, timeout)

    def _send_dgram(self, data: Buffer, to: tuple[str, int], timeout: Optional[float]) -> int:
        payload = data if isinstance(data, (bytes, bytearray)) else bytes(data)
        if len(payload) > MAX_DATAGRAM:
            raise OSError(_errno.EMSGSIZE, "Message too long")
        if self._shut_wr:
            raise BrokenPipeError(_errno.EPIPE, "Broken pipe")
        try:
            return self._udp().sendto(payload, to[0], to[1], timeout)
        except OSError as e:
            raise _naming(e, to) from None

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        """Up to ``bufsize`` bytes (TCP; b"" at EOF) or the next datagram, truncated to
        ``bufsize`` (UDP: the rest of a longer datagram is discarded, as in the standard
        library)."""
        common = flags == 0 and type(flags) is int and type(bufsize) is int
        native = self._stream(self._shut_rd) if common else None
        if native is not None and bufsize > 0:
            return native.recv(bufsize, self._timeout)  # the common case in one native call
        bufsize = operator.index(bufsize)
        if bufsize < 0:
            raise ValueError("negative buffersize in recv")
        timeout = self._call_timeout(flags)
        self._check_open()
        if self._shut_rd:
            return b""
        if self._type == SOCK_DGRAM:
            return self._recv_dgram(bufsize, timeout)[0]
        s = self._sock()
        if bufsize == 0:
            return b""
        return s.recv(bufsize, timeout)

    def recvfrom(self, bufsize: int, flags: int = 0) -> tuple[bytes, Any]:
        """The next datagram (truncated to ``bufsize``) and its sender; on TCP, recv() and
        None (as on Linux)."""
        bufsize = operator.index(bufsize)
        if bufsize < 0:
            raise ValueError("negative buffersize in recvfrom")
        if self._type != SOCK_DGRAM:
            return self.recv(bufsize, flags), None
        timeout = self._call_timeout(flags)
        self._check_open()
        if self._shut_rd:
            return b"", None
        return self._recv_dgram(bufsize, timeout)

    @staticmethod
    def _into_size(size: int, nbytes: int, what: str) -> int:
        """How many bytes to read into a buffer of ``size`` bytes (0: all of them)."""
        nbytes = operator.index(nbytes)
        if nbytes < 0:
            raise ValueError(f"negative buffersize in {what}")
        if nbytes > size:
            raise ValueError(f"buffer too small for requested bytes in {what}")
        return nbytes or size

    @staticmethod
    def _into(buffer: Any, nbytes: int, what: str) -> tuple[memoryview, int]:
        view = memoryview(buffer)
        if view.readonly:
            raise TypeError(
                f"{what}() argument 'buffer' must be read-write bytes-like object, "
                f"not {type(buffer).__name__}"
            )
        view = view.cast("B")
        return view, socket._into_size(len(view), nbytes, what)

    def _recv_direct(
        self, buffer: bytearray, nbytes: int, flags: int, what: str
    ) -> Optional[tuple[int, Any]]:
        """recv_into/recvfrom_into a bytearray, written in place by the native socket: the
        bytes and the sender (None on TCP); None when the call reads nothing (an empty
        read, or after ``shutdown(SHUT_RD)``: the caller's ordinary path handles those)."""
        n = self._into_size(len(buffer), nbytes, what)
        timeout = self._call_timeout(flags)
        self._check_open()
        if self._shut_rd or n == 0:
            return None
        if self._type == SOCK_DGRAM:
            return self._recv_dgram_into(buffer, n, timeout)
        return self._sock().recv_into(buffer, n, timeout), None

    def recv_into(self, buffer: Any, nbytes: int = 0, flags: int = 0) -> int:
        common = flags == 0 == nbytes and type(flags) is int and type(nbytes) is int
        native = self._stream(self._shut_rd) if common else None
        if native is not None and type(buffer) is bytearray and buffer:
            # The common case in one native call (what _recv_direct does).
            return native.recv_into(buffer, len(buffer), self._timeout)
        if isinstance(buffer, bytearray):
            got = self._recv_direct(buffer, nbytes, flags, "recv_into")
            if got is not None:
                return got[0]
        view, n = self._into(buffer, nbytes, "recv_into")
        data = self.recv(n, flags)
        view[: len(data)] = data
        return len(data)

    def recvfrom_into(self, buffer: Any, nbytes: int = 0, flags: int = 0) -> tuple[int, Any]:
        if isinstance(buffer, bytearray):
            got = self._recv_direct(buffer, nbytes, flags, "recvfrom_into")
            if got is not None:
                return got
        view, n = self._into(buffer, nbytes, "recvfrom_into")
        data, addr = self.recvfrom(n, flags)
        view[: len(data)] = data
        return len(data), addr

    def sendmsg(
        self,
        buffers: Iterable[Buffer],
        ancdata: Iterable[Any] = (),
        flags: int = 0,
        address: Optional[Address] = None,
        /,
    ) -> int:
        """The buffers' bytes as one send (TCP) or one datagram (UDP, to ``address`` if given),
        as the standard library's. zt sockets carry no ancillary data: any raises
        ``OSError(EINVAL)``, as the kernel does for a control message it does not know."""
        data = b"".join(_bytes_view(b) for b in buffers)
        if list(ancdata):
            raise OSError(_errno.EINVAL, "Invalid argument (zt sockets carry no ancillary data)")
        if address is None:
            return self.send(data, flags)
        return self.sendto(data, flags, address)

    def recvmsg(
        self, bufsize: int, ancbufsize: int = 0, flags: int = 0, /
    ) -> tuple[bytes, list[Any], int, Any]:
        """``(data, [], msg_flags, address)`` as the standard library's: a datagram longer than
        ``bufsize`` is cut and flagged ``MSG_TRUNC``; TCP's address is None. No ancillary data
        is ever returned."""
        bufsize, ancbufsize = operator.index(bufsize), operator.index(ancbufsize)
        if bufsize < 0:
            raise ValueError("negative buffer size in recvmsg()")
        if ancbufsize < 0:
            raise ValueError("negative buffer size in recvmsg()")
        if self._type != SOCK_DGRAM:
            return self.recv(bufsize, flags), [], 0, None
        data, address = self.recvfrom(MAX_DATAGRAM, flags)
        truncated = _std.MSG_TRUNC if len(data) > bufsize else 0
        return data[:bufsize], [], truncated, address

    def recvmsg_into(
        self, buffers: Iterable[Any], ancbufsize: int = 0, flags: int = 0, /
    ) -> tuple[int, list[Any], int, Any]:
        """:meth:`recvmsg` scattered into ``buffers`` (writable buffers, filled in order)."""
        views = [memoryview(b).cast("B") for b in buffers]
        if any(v.readonly for v in views):
            raise TypeError("recvmsg_into() argument 1 must be an iterable of writable buffers")
        total = sum(len(v) for v in views)
        data, anc, msg_flags, address = self.recvmsg(total, ancbufsize, flags)
        at = 0
        for v in views:
            part = data[at : at + len(v)]
            v[: len(part)] = part
            at += len(part)
        return len(data), anc, msg_flags, address

    def sendfile(self, file: Any, offset: int = 0, count: Optional[int] = None) -> int:
        """Sends a binary file's bytes from ``offset`` (``count`` of them, or to the end) like
        the standard library's fallback: read and send in blocks. The file position ends after
        the last byte sent. Blocking sockets only."""
        if "b" not in getattr(file, "mode", "b"):
            raise ValueError("file should be opened in binary mode")
        if self._type != SOCK_STREAM:
            raise ValueError("only SOCK_STREAM type sockets are supported")
        if count is not None:
            if not isinstance(count, int):
                raise TypeError(f"count must be a positive integer (got {count!r})")
            if count <= 0:
                raise ValueError(f"count must be a positive integer (got {count!r})")
        if self._timeout == 0.0:
            raise ValueError("non-blocking sockets are not supported")
        self._check_open()
        if offset:
            file.seek(offset)
        total = 0
        try:
            while count is None or total < count:
                want = 1 << 16 if count is None else min(1 << 16, count - total)
                data = memoryview(file.read(want))
                if not data:
                    break
                while data:
                    n = self.send(data)
                    total += n
                    data = data[n:]
            return total
        finally:
            if total > 0 and hasattr(file, "seek"):
                file.seek(offset + total)

    # -- life ------------------------------------------------------------------------------

    def shutdown(self, how: int) -> None:
        """``SHUT_WR`` sends FIN after the queued data (TCP); ``SHUT_RD`` makes recv() return
        b"" from now on."""
        how = _c_int(how, converted=True)
        self._check_open()
        if how not in (SHUT_RD, SHUT_WR, SHUT_RDWR):
            raise OSError(_errno.EINVAL, "Invalid argument")
        if self._type == SOCK_DGRAM:
            if self._peer is None:
                raise OSError(_errno.ENOTCONN, "Transport endpoint is not connected")
        else:
            s = self._sock()
            if how in (SHUT_WR, SHUT_RDWR) and not self._listening:
                s.shutdown_write()
        if how in (SHUT_RD, SHUT_RDWR):
            self._shut_rd = True
        if how in (SHUT_WR, SHUT_RDWR):
            self._shut_wr = True

    def _real_close(self) -> None:
        if not self._closed:
            self._closed = True
            self._listening = False
            if self._s is not None:
                self._s.close()
            if self._u is not None:
                self._u.close()

    def __del__(self) -> None:
        if not getattr(self, "_closed", True) and (self._s is not None or self._u is not None):
            try:
                warnings.warn(f"unclosed {self!r}", ResourceWarning, stacklevel=2, source=self)
            finally:
                self.close()

    def detach(self) -> int:
        raise OSError(_errno.EOPNOTSUPP, "zt sockets have no OS descriptor to detach")

    def dup(self) -> socket:
        raise OSError(_errno.EOPNOTSUPP, "zt sockets cannot be duplicated")

    def fileno(self) -> int:
        """The readiness descriptor (-1 once closed, or before a UDP socket is bound or a TCP
        socket connects or listens)."""
        if self._closed:
            return -1
        if self._u is not None:
            return self._u.fileno()
        return -1 if self._s is None else self._s.fileno()

    # -- options (setsockopt/getsockopt: _OptionsMixin, in zt/_sockopt.py) -----------------

    def tcp_info(self) -> dict[str, Any]:
        """zt extension: a TCP connection's round-trip estimates (``srtt_us``, ``rttvar_us``,
        ``min_rtt_us``, ``rto_us``), congestion window and threshold (``cwnd``, ``ssthresh``,
        bytes; ``in_flight``, ``pacing_rate`` in bytes/s), buffer sizes (``rx_buffer``,
        ``tx_buffer``: they grow with the path unless ``SO_RCVBUF``/``SO_SNDBUF`` fixed them)
        and counters (``bytes_sent``, ``bytes_retrans``, ``segs_retrans``, ``timeouts``,
        ``loss_probes``, ``recoveries``, ``undos``, ``dsacks_received``, ``rx_out_of_order``,
        ``rx_duplicates``, ``rx_too_many_holes``; ``reordering_seen``), as Linux's ``TCP_INFO``
        reports them, as of the node's last pass over the connection."""
        self._check_open()
        if self._type != SOCK_STREAM or self._s is None or self._listening:
            raise OSError(_errno.ENOTCONN, "Transport endpoint is not connected")
        return self._s.tcp_info()

    # -- context ---------------------------------------------------------------------------

    def __enter__(self) -> socket:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        """As the standard library's (``fd``, ``family``, ``type``, ``proto``, ``laddr``,
        ``raddr``), with the TCP phase (``listening``, ``connected``, …) at the end."""
        parts = [f"fd={self.fileno()}", f"family={int(self._family)}", f"type={int(self._type)}",
                 f"proto={self._proto}"]  # fmt: skip
        if not self._closed:
            for name, get in (("laddr", self.getsockname), ("raddr", self.getpeername)):
                with contextlib.suppress(OSError):
                    parts.append(f"{name}={get()!r}")
        head = "<zt.socket.socket [closed] " if self._closed else "<zt.socket.socket "
        phase = f" ({self._s.phase()})" if self._s is not None and not self._closed else ""
        return head + ", ".join(parts) + phase + ">"


# -- convenience functions (the standard library's) ------------------------------------------


def _port(port: Any) -> int:
    """A port given as getaddrinfo() takes it: a number, a numeric string or a service name
    (looked up in the local services database)."""
    if isinstance(port, (bytes, bytearray)):
        port = bytes(port).decode("ascii")
    if isinstance(port, str):
        if port.isdigit():
            port = int(port)
        else:
            try:
                return _std.getservbyname(port, "tcp")
            except OSError:
                raise _std.gaierror(
                    _std.EAI_SERVICE, f"Servname not supported for ai_socktype: {port!r}"
                ) from None
    if port is None:
        return 0
    number = operator.index(port)
    if not 0 <= number <= 65535:
        raise OverflowError("port must be 0-65535.")
    return number


def _family_of(host: Any) -> int:
    """AF_INET or AF_INET6 for an IP literal; ``socket.gaierror`` for anything else."""
    if isinstance(host, (bytes, bytearray)):
        host = bytes(host).decode("ascii")
    try:
        ip = ipaddress.ip_address(host[1:-1] if host.startswith("[") else host)
    except (ValueError, AttributeError, TypeError):
        raise _std.gaierror(
            _std.EAI_NONAME, f"{host!r} is not an IP address (zt sockets resolve no host names)"
        ) from None
    return AF_INET6 if ip.version == 6 else AF_INET


def create_connection(
    node: Node,
    address: tuple[Any, Any],
    timeout: Optional[float] = _GLOBAL_DEFAULT_TIMEOUT,  # type: ignore[assignment]
    source_address: Optional[Address] = None,
    *,
    all_errors: bool = False,
) -> socket:
    """Connects a TCP socket to ``(host, port)`` on the node's networks, like
    ``socket.create_connection``: ``host`` is an IPv4 or IPv6 literal (its family picks the
    socket's), ``port`` a number or service name; ``timeout`` (default: the global default
    timeout) stays set on the returned socket. ``source_address``: ``(ip, port)`` the
    connection goes out from (``""``: any address; port 0: an ephemeral one). The socket is
    closed if connecting fails: ``ConnectionRefusedError``, ``TimeoutError``,
    ``OSError(ENETUNREACH)`` when no joined network routes the host, ``socket.gaierror`` for a
    host name. With
    ``all_errors`` (Python 3.11+, as the stdlib's) the failure comes as an
    ``ExceptionGroup``."""
    if all_errors and sys.version_info < (3, 11):
        raise TypeError("create_connection() got an unexpected keyword argument 'all_errors'")
    host, port = address
    family = _family_of(host)
    sa = (host, _port(port))
    sock = socket(node, family, SOCK_STREAM)
    try:
        if timeout is not _GLOBAL_DEFAULT_TIMEOUT:
            sock.settimeout(timeout)
        if source_address:
            sock.bind(source_address)
        sock.connect(sa)
    except OSError as e:
        sock.close()
        if all_errors:
            group: Any = getattr(builtins, "ExceptionGroup")  # noqa: B009 - Python 3.11+
            raise group("create_connection failed", [e]) from None
        raise
    except BaseException:
        sock.close()
        raise
    return sock


def create_server(
    node: Node,
    address: Union[Address, int],
    *,
    family: int = AF_INET,
    backlog: Optional[int] = None,
    reuse_port: bool = False,
    dualstack_ipv6: bool = False,
) -> socket:
    """A TCP socket bound to ``address`` (``(host, port)``, or just a port for every network)
    and listening, like ``socket.create_server``. zt listeners are always dual-stack
    (``dualstack_ipv6`` is accepted with ``AF_INET6``); ``reuse_port`` is not supported
    (``ValueError``, as on a platform without ``SO_REUSEPORT``). A failure to bind or listen
    raises its ``OSError`` with the address in the message."""
    if reuse_port:
        raise ValueError("SO_REUSEPORT not supported by zt sockets")
    if dualstack_ipv6 and family != AF_INET6:
        raise ValueError("dualstack_ipv6 requires AF_INET6 family")
    addr: Address = ("", address) if isinstance(address, int) else address
    sock = socket(node, family, SOCK_STREAM)
    try:
        try:
            sock.bind(addr)
            sock.listen(backlog)
        except _std.gaierror:
            raise
        except OSError as err:
            msg = f"{err.strerror} (while attempting to bind on address {addr!r})"
            raise OSError(err.errno, msg) from None
    except BaseException:
        sock.close()
        raise
    return sock
