"""The socket options of ``zt.socket.socket`` (broadcast and multicast ones aside: those are
:class:`zt._multicast.GroupOptions`): the option numbers and tables, and ``setsockopt``/
``getsockopt`` as the standard library has them, as a mixin of the socket class.

``zt.socket`` re-exports the public names (``TCP_KEEPIDLE``, ``CONGESTION_CONTROLS``, ...).
"""

from __future__ import annotations

import errno as _errno
import operator
import socket as _std
import struct
from typing import TYPE_CHECKING, Any, Optional, Union, overload

from ._multicast import GroupOptions

if TYPE_CHECKING:
    from . import _native
    from .node import Node
    from .socket import Buffer

# The keep-alive and user-timeout options, as the platform numbers them (Linux's numbers where
# the standard library lacks one: they only name options here).
TCP_KEEPIDLE: int = getattr(_std, "TCP_KEEPIDLE", 4)
TCP_KEEPINTVL: int = getattr(_std, "TCP_KEEPINTVL", 5)
TCP_KEEPCNT: int = getattr(_std, "TCP_KEEPCNT", 6)
TCP_USER_TIMEOUT: int = getattr(_std, "TCP_USER_TIMEOUT", 18)
TCP_CONGESTION: int = getattr(_std, "TCP_CONGESTION", 13)
#: The congestion controls TCP_CONGESTION takes (Linux's names), by their native numbers.
CONGESTION_CONTROLS = ("cubic", "bbr", "reno")
_CA_NAME_MAX = 16
_IPV6_V6ONLY: int = getattr(_std, "IPV6_V6ONLY", 26)

# Options that are accepted and remembered (getsockopt returns them) but change nothing here:
# zt holds no ports in TIME_WAIT.
_STORED_OPTIONS: dict[tuple[int, int], int] = {
    (_std.SOL_SOCKET, _std.SO_REUSEADDR): 0,
}

# (level, optname) → (native name, smallest, largest value, default).
_TCP_OPTIONS: dict[tuple[int, int], tuple[str, int, int, int]] = {
    (_std.IPPROTO_TCP, _std.TCP_NODELAY): ("nodelay", 0, 1, 1),
    (_std.SOL_SOCKET, _std.SO_KEEPALIVE): ("keepalive", 0, 1, 0),
    (_std.IPPROTO_TCP, TCP_KEEPIDLE): ("keepidle", 1, 32767, 7200),
    (_std.IPPROTO_TCP, TCP_KEEPINTVL): ("keepintvl", 1, 32767, 75),
    (_std.IPPROTO_TCP, TCP_KEEPCNT): ("keepcnt", 1, 127, 9),
    (_std.IPPROTO_TCP, TCP_USER_TIMEOUT): ("user_timeout", 0, 2**31 - 1, 0),
}


class _OptionsMixin:
    """``setsockopt``/``getsockopt`` of ``zt.socket.socket``, and the TCP options a native socket
    gets when it is made. The socket class sets up the state below and provides
    :meth:`_check_open`."""

    # The socket's state these methods read and set (zt.socket.socket.__init__ makes it).
    _node: Node
    _family: _std.AddressFamily
    _type: _std.SocketKind
    _proto: int
    _s: Optional[_native.TcpSocket]
    _u: Optional[_native.UdpSocket]
    _listening: bool
    _connect_reported: bool  # connect() said the TCP connection is up
    _error_reported: bool  # getsockopt(SO_ERROR) said why it failed
    _opts: dict[str, int]  # TCP options, by native name (applied to each native socket)
    _v6only: bool
    _bufs: tuple[int, int]  # SO_RCVBUF, SO_SNDBUF
    _bufs_fixed: tuple[bool, bool]  # whether SO_RCVBUF/SO_SNDBUF set them
    _options: dict[tuple[int, int], int]  # _STORED_OPTIONS' values
    _groups: GroupOptions

    def _check_open(self) -> None:
        """Raises ``OSError(EBADF)`` once the socket is closed (the socket class's)."""
        raise NotImplementedError

    def _apply_options(self, native: _native.TcpSocket) -> None:
        for name, value in self._opts.items():
            native.set_option(name, value)

    @overload
    def setsockopt(self, level: int, optname: int, value: Union[int, Buffer], /) -> None: ...
    @overload
    def setsockopt(self, level: int, optname: int, value: None, optlen: int, /) -> None: ...

    def setsockopt(
        self, level: int, optname: int, value: Any, optlen: Optional[int] = None
    ) -> None:
        """``TCP_NODELAY`` (on by default), ``SO_KEEPALIVE``, ``TCP_KEEPIDLE``/
        ``TCP_KEEPINTVL``/``TCP_KEEPCNT``, ``TCP_USER_TIMEOUT`` (ms; 0: the default 120 s),
        ``TCP_CONGESTION`` (``b"cubic"``; ``b"bbr"``: model-based, for paths with random loss;
        ``b"reno"``; another name raises ``OSError(ENOENT)``; the default is the node's
        ``NodeOptions.tcp_congestion``, CUBIC unless set),
        ``IPV6_V6ONLY`` (before listen: an ``AF_INET6`` listener then takes no IPv4),
        ``SO_RCVBUF``/``SO_SNDBUF`` (for native sockets made after the call: set them before
        bind/connect/listen); ``SO_REUSEADDR`` is remembered but changes nothing. UDP:
        ``SO_BROADCAST``, ``IP_ADD_MEMBERSHIP``/``IP_DROP_MEMBERSHIP`` (``struct ip_mreq`` or
        ``ip_mreqn``), ``IPV6_JOIN_GROUP``/``IPV6_LEAVE_GROUP`` (``struct ipv6_mreq``),
        ``IP_MULTICAST_IF``/``TTL``/``LOOP``, ``IPV6_MULTICAST_IF``/``HOPS``/``LOOP`` (see
        docs/python-api.md). Anything else raises ``OSError(ENOPROTOOPT)`` like an unknown
        option does."""
        self._check_open()
        if value is None:
            raise OSError(_errno.EINVAL, "Invalid argument")
        if (level, optname) == (_std.IPPROTO_TCP, TCP_CONGESTION):
            if self._type != _std.SOCK_STREAM:
                raise OSError(_errno.ENOPROTOOPT, "Protocol not available")
            self._set_congestion(value)
            return
        if GroupOptions.handles(level, optname):
            self._groups.set(self._node, self._u, level, optname, value)
            return
        key = (level, optname)
        known = _TCP_OPTIONS.get(key)
        if not (
            (known is not None and self._type == _std.SOCK_STREAM)
            or (key == (_std.IPPROTO_IPV6, _IPV6_V6ONLY) and self._family == _std.AF_INET6)
            or key in ((_std.SOL_SOCKET, _std.SO_RCVBUF), (_std.SOL_SOCKET, _std.SO_SNDBUF))
            or (key in self._options and self._applies(key))
        ):
            # Whatever the value's shape (SO_LINGER's struct linger included): an option zt
            # does not have, as the kernel answers for one it does not know.
            raise OSError(_errno.ENOPROTOOPT, "Protocol not available")
        if isinstance(value, (bytes, bytearray, memoryview)):
            raw = bytes(value)
            if len(raw) != 4:
                raise OSError(_errno.EINVAL, "Invalid argument")
            v: int = struct.unpack("=i", raw)[0]
        else:
            v = operator.index(value)
        if known is not None and self._type == _std.SOCK_STREAM:
            name, lo, hi, _ = known
            if name in ("nodelay", "keepalive"):
                v = int(v != 0)
            elif not lo <= v <= hi:
                raise OSError(_errno.EINVAL, f"{name} must be {lo}-{hi}")
            self._opts[name] = v
            if self._s is not None:
                self._s.set_option(name, v)
        elif key == (_std.IPPROTO_IPV6, _IPV6_V6ONLY) and self._family == _std.AF_INET6:
            if self._listening:
                raise OSError(_errno.EINVAL, "IPV6_V6ONLY must be set before listen()")
            self._v6only = v != 0
        elif key == (_std.SOL_SOCKET, _std.SO_RCVBUF):
            self._bufs = (max(4096, v), self._bufs[1])
            self._bufs_fixed = (True, self._bufs_fixed[1])
        elif key == (_std.SOL_SOCKET, _std.SO_SNDBUF):
            self._bufs = (self._bufs[0], max(4096, v))
            self._bufs_fixed = (self._bufs_fixed[0], True)
        elif key in self._options and self._applies(key):
            self._options[key] = v
        else:
            raise OSError(_errno.ENOPROTOOPT, "Protocol not available")

    def _set_congestion(self, value: Any) -> None:
        """``TCP_CONGESTION``: a name, as bytes (NUL-terminated or not) or str."""
        if isinstance(value, str):
            value = value.encode()
        if not isinstance(value, (bytes, bytearray, memoryview)):
            raise TypeError(f"a bytes-like object is required, not '{type(value).__name__}'")
        name = bytes(value).split(b"\0", 1)[0].decode("ascii", "replace")
        if name not in CONGESTION_CONTROLS:
            raise OSError(
                _errno.ENOENT,
                f"No such congestion control {name!r} (zt has {', '.join(CONGESTION_CONTROLS)})",
            )
        number = CONGESTION_CONTROLS.index(name)
        self._opts["congestion"] = number
        if self._s is not None:
            self._s.set_option("congestion", number)

    def _congestion(self) -> bytes:
        number = (
            self._s.option("congestion") if self._s is not None else self._opts.get("congestion", 0)
        )
        return CONGESTION_CONTROLS[number].encode()

    def _tcp_bufs(self) -> tuple[int, int]:
        """Buffer sizes for a native TCP socket: 0 for one left to grow with the path."""
        rx, tx = self._bufs
        return (rx if self._bufs_fixed[0] else 0, tx if self._bufs_fixed[1] else 0)

    def _applies(self, key: tuple[int, int]) -> bool:
        if key[0] == _std.IPPROTO_TCP:
            return self._type == _std.SOCK_STREAM
        if key[0] == _std.IPPROTO_IPV6:
            return self._family == _std.AF_INET6
        return True

    def _take_error(self) -> int:
        """SO_ERROR: why a TCP connection failed (reported once), else 0."""
        s = self._s
        if s is None or self._listening or self._error_reported or self._type != _std.SOCK_STREAM:
            return 0
        try:
            s.wait_connected(0.0)
        except BlockingIOError:
            return 0
        except OSError as e:
            if self._connect_reported and e.errno == _errno.ECONNREFUSED:
                return 0  # closed after being connected: no error
            self._error_reported = True
            return e.errno or _errno.EIO
        self._connect_reported = True
        return 0

    @overload
    def getsockopt(self, level: int, optname: int, /) -> int: ...
    @overload
    def getsockopt(self, level: int, optname: int, buflen: int, /) -> bytes: ...

    def getsockopt(self, level: int, optname: int, buflen: Optional[int] = None) -> Any:
        """The options setsockopt() takes, and ``SO_TYPE``, ``SO_ERROR``, ``SO_ACCEPTCONN``,
        ``SO_DOMAIN``, ``SO_PROTOCOL``; with ``buflen``, the value's bytes."""
        self._check_open()
        key = (level, optname)
        if key == (_std.IPPROTO_TCP, TCP_CONGESTION) and self._type == _std.SOCK_STREAM:
            padded = self._congestion().ljust(_CA_NAME_MAX, b"\0")
            if buflen is None:
                # As on Linux: the first bytes of the name read as an int.
                return struct.unpack("=i", padded[:4])[0]
            buflen = operator.index(buflen)
            if not 0 < buflen <= 1024:
                raise OSError(_errno.EINVAL, "getsockopt buflen out of range")
            return padded[:buflen]
        default_proto = _std.IPPROTO_TCP if self._type == _std.SOCK_STREAM else _std.IPPROTO_UDP
        fixed: dict[tuple[int, int], int] = {
            (_std.SOL_SOCKET, _std.SO_TYPE): int(self._type),
            (_std.SOL_SOCKET, _std.SO_RCVBUF): self._bufs[0],
            (_std.SOL_SOCKET, _std.SO_SNDBUF): self._bufs[1],
            (_std.SOL_SOCKET, _std.SO_ACCEPTCONN): int(self._listening),
        }
        if hasattr(_std, "SO_DOMAIN"):
            fixed[(_std.SOL_SOCKET, _std.SO_DOMAIN)] = int(self._family)
        if hasattr(_std, "SO_PROTOCOL"):
            fixed[(_std.SOL_SOCKET, _std.SO_PROTOCOL)] = self._proto or default_proto
        if self._type == _std.SOCK_STREAM:
            for k, (name, _lo, _hi, default) in _TCP_OPTIONS.items():
                if self._s is not None:
                    fixed[k] = self._s.option(name)
                else:
                    fixed[k] = self._opts.get(name, default)
        if self._family == _std.AF_INET6:
            fixed[(_std.IPPROTO_IPV6, _IPV6_V6ONLY)] = int(self._v6only)
        group_value = self._groups.get(level, optname)
        if key == (_std.SOL_SOCKET, _std.SO_ERROR):
            value = self._take_error()
        elif group_value is not None:
            value = group_value
        elif key in fixed:
            value = fixed[key]
        elif key in self._options and self._applies(key):
            value = self._options[key]
        else:
            raise OSError(_errno.ENOPROTOOPT, "Protocol not available")
        if buflen is None:
            return value
        buflen = operator.index(buflen)
        if not 0 < buflen <= 1024:
            raise OSError(_errno.EINVAL, "getsockopt buflen out of range")
        return struct.pack("=i", value)[:buflen]
