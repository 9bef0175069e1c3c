"""Standard-library sockets routed through a node: ``with zt.route(node): ...``.

Inside the block, TCP connections that ordinary code opens with ``socket.socket`` (``requests``,
``urllib3``, ``http.client``, ``urllib.request``, ``socket.create_connection``…) to an address of
one of the node's joined networks go over the node's overlay instead of the OS; every other
destination is the OS's, untouched.

How: ``socket.socket`` is replaced, for the block, by a subclass whose ``connect()`` checks the
destination. For an overlay address it connects a zt socket, then puts one end of a Unix socket
pair onto the socket's own descriptor (``dup2``) and starts a pump thread moving bytes between
the other end and the zt socket. The caller keeps a real OS socket, so everything built on
descriptors works on it unchanged: ``ssl`` wrapping (https), ``select``, timeouts, ``makefile``,
event loops. ``socket.getaddrinfo`` is replaced too, to resolve the names given in ``hosts``.
"""

from __future__ import annotations

import contextlib
import errno as _errno
import ipaddress
import logging
import os
import select
import socket as _std
import sys
import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Callable, Optional, Union, overload

from .network import on_overlay
from .socket import SHUT_WR
from .socket import socket as zt_socket

if TYPE_CHECKING:
    from .node import Node

__all__ = ["Router", "route"]

log = logging.getLogger("zt.routing")

_CHUNK = 64 * 1024
# How often an idle pump checks that its node still runs (a stopped node's sockets go quiet).
_WATCHDOG_MS = 1000

IpAddress = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]

# The originals, saved while any router is active.
_lock = threading.RLock()
_active: list[Router] = []
_saved: Optional[tuple[Any, Any]] = None
_OrigSocket = _std.socket


def _original_getaddrinfo() -> Callable[..., Any]:
    return _saved[1] if _saved is not None else _std.getaddrinfo


class _Meta(type):
    """``isinstance(s, socket.socket)`` stays true, during the block, for sockets made
    before it (they are instances of the original class, not of this subclass)."""

    def __instancecheck__(cls, obj: object) -> bool:
        return isinstance(obj, _OrigSocket)

    def __subclasscheck__(cls, sub: type) -> bool:
        return issubclass(sub, _OrigSocket)


class _Link:
    """A routed connection: its zt socket and addresses."""

    def __init__(self, router: Router, zs: zt_socket, peer: IpAddress, port: int) -> None:
        self.router = router
        self.zs = zs
        self.peer = (str(peer), port)
        local = zs.getsockname()
        self.local = (str(local[0]), int(local[1]))
        self.tcp_options: dict[int, Any] = {_std.TCP_NODELAY: 1}


def _format(family: int, addr: tuple[str, int]) -> tuple[Any, ...]:
    return (addr[0], addr[1], 0, 0) if family == _std.AF_INET6 else addr


class _RoutedSocket(_std.socket, metaclass=_Meta):
    """``socket.socket`` while a router is active: overlay destinations go through a node."""

    __slots__ = ("_zt",)

    def __init__(
        self, family: int = -1, type: int = -1, proto: int = -1, fileno: Optional[int] = None
    ) -> None:
        super().__init__(family, type, proto, fileno)
        self._zt: Optional[_Link] = None

    def _link(self) -> Optional[_Link]:
        link: Optional[_Link] = getattr(self, "_zt", None)
        if link is not None and self.fileno() < 0:
            raise OSError(_errno.EBADF, "Bad file descriptor")
        return link

    def _match(self, address: Any) -> Optional[tuple[Router, IpAddress, int]]:
        if self.family not in (_std.AF_INET, _std.AF_INET6) or self.type != _std.SOCK_STREAM:
            return None
        if not isinstance(address, tuple) or len(address) < 2:
            return None
        host, port = address[0], address[1]
        if isinstance(host, bytes):
            host = host.decode("ascii", "replace")
        if not isinstance(host, str) or not isinstance(port, int):
            return None
        with _lock:
            routers = list(reversed(_active))
        for router in routers:
            ip = router._resolve(host)
            if ip is None or (ip.version == 6) != (self.family == _std.AF_INET6):
                continue
            if router.routes(ip):
                return router, ip, port
        return None

    def connect(self, address: Any) -> None:
        m = self._match(address)
        if m is None:
            super().connect(address)
            return
        self._connect_overlay(*m)

    def connect_ex(self, address: Any) -> int:
        m = self._match(address)
        if m is None:
            return int(super().connect_ex(address))
        try:
            self._connect_overlay(*m)
        except (TimeoutError, _std.timeout):
            return _errno.ETIMEDOUT
        except OSError as e:
            return e.errno or _errno.EIO
        return 0

    def _connect_overlay(self, router: Router, ip: IpAddress, port: int) -> None:
        if self.fileno() < 0:
            raise OSError(_errno.EBADF, "Bad file descriptor")
        if getattr(self, "_zt", None) is not None:
            raise OSError(_errno.EISCONN, "Transport endpoint is already connected")
        if not _running(router.node):
            # Its addresses still belong to the overlay: never hand them to the OS.
            raise OSError(_errno.ENETUNREACH, "Network is unreachable (the zt node is not running)")
        timeout = self.gettimeout()
        zs = router.node.socket(self.family, _std.SOCK_STREAM)
        try:
            # A non-blocking connect (event loops) still waits for the overlay handshake.
            zs.settimeout(router.connect_timeout if timeout == 0.0 else timeout)
            try:
                zs.connect((str(ip), port))
            except TimeoutError:
                raise _std.timeout("timed out") from None
            link = _Link(router, zs, ip, port)
            mine, theirs = _std.socketpair(_std.AF_UNIX, _std.SOCK_STREAM)
        except BaseException:
            zs.close()
            raise
        try:
            with mine:
                os.dup2(mine.fileno(), self.fileno(), inheritable=False)
            # The new descriptor is blocking: apply this socket's timeout mode to it.
            self.settimeout(timeout)
            theirs.setblocking(False)
            zs.setblocking(False)
        except BaseException:
            theirs.close()
            zs.close()
            raise
        self._zt = link
        router._start_pump(theirs, link)

    def getpeername(self) -> Any:
        link = self._link()
        if link is None:
            return super().getpeername()
        return _format(self.family, link.peer)

    def getsockname(self) -> Any:
        link = self._link()
        if link is None:
            return super().getsockname()
        return _format(self.family, link.local)

    def setsockopt(self, level: int, optname: int, value: Any, optlen: Any = None, /) -> None:
        link = self._link()
        if link is not None and level == _std.IPPROTO_TCP:
            # TCP options belong to the overlay connection (the descriptor is a Unix socket).
            link.tcp_options[optname] = value
            if optname == _std.TCP_NODELAY and isinstance(value, int):
                link.zs.setsockopt(level, optname, value)
            return
        if optlen is None:
            super().setsockopt(level, optname, value)
        else:
            super().setsockopt(level, optname, value, optlen)

    @overload
    def getsockopt(self, level: int, optname: int, /) -> int: ...
    @overload
    def getsockopt(self, level: int, optname: int, buflen: int, /) -> bytes: ...
    def getsockopt(self, level: int, optname: int, buflen: Optional[int] = None, /) -> Any:
        link = self._link()
        if link is not None:
            if level == _std.IPPROTO_TCP:
                value = link.tcp_options.get(optname, 0)
                if buflen is None:
                    return int(value) if isinstance(value, int) else 0
                raw = value if isinstance(value, bytes) else int(value).to_bytes(4, "little")
                return raw[:buflen]
            if level == _std.SOL_SOCKET and buflen is None:
                if optname == getattr(_std, "SO_DOMAIN", -1):
                    return self.family
                if optname == getattr(_std, "SO_PROTOCOL", -1):
                    return _std.IPPROTO_TCP
        if buflen is None:
            return super().getsockopt(level, optname)
        return super().getsockopt(level, optname, buflen)

    def dup(self) -> Any:
        sock = super().dup()
        sock._zt = getattr(self, "_zt", None)
        return sock


def _running(node: Node) -> bool:
    try:
        return node.state.value == "running"
    except Exception:
        return False


def _pull(sock: Union[_std.socket, zt_socket], buf: bytearray) -> bool:
    """Appends what ``sock`` has to read (non-blocking) to ``buf``; whether its input ended (EOF
    or an error)."""
    try:
        data = sock.recv(_CHUNK)
    except BlockingIOError:
        return False
    except OSError:
        return True
    buf += data
    return not data


def _push(sock: Union[_std.socket, zt_socket], buf: bytearray) -> bool:
    """Sends what ``sock`` takes of ``buf`` (non-blocking) and drops it from ``buf``; whether
    sending failed."""
    try:
        n = sock.send(buf)
    except BlockingIOError:
        return False
    except OSError:
        return True
    del buf[:n]
    return False


class _Pump:
    """Moves bytes between the Unix end and the zt socket until both directions end.

    Half-closes travel across (the application's ``shutdown(SHUT_WR)`` becomes a FIN on the
    overlay, and the peer's FIN an EOF here); a failed overlay connection reads as EOF and
    makes further writes fail with EPIPE; closing the application's socket closes the overlay
    connection once what it wrote is sent.
    """

    def __init__(self, end: _std.socket, link: _Link) -> None:
        self.end = end
        self.link = link

    def run(self) -> None:
        try:
            self._loop()
        except Exception:  # pragma: no cover - a bug, not a network condition
            log.exception("zt route pump failed")
        finally:
            self.end.close()
            self.link.zs.close()
            self.link.router._pump_done()

    def _loop(self) -> None:
        end, zs, node = self.end, self.link.zs, self.link.router.node
        up = bytearray()  # application → overlay
        down = bytearray()  # overlay → application
        app_eof = peer_eof = False
        up_done = down_done = False
        efd, zfd = end.fileno(), zs.fileno()
        poller = select.poll()
        watched: set[int] = set()

        def watch(fd: int, events: int) -> None:
            if events:
                poller.register(fd, events)
                watched.add(fd)
            elif fd in watched:
                poller.unregister(fd)
                watched.discard(fd)

        while not (up_done and down_done):
            eev = (select.POLLIN if not (app_eof or up or up_done) else 0) | (
                select.POLLOUT if down else 0
            )
            # Still watch the application's end for a hang-up while the overlay is pending.
            if not eev and not down_done:
                eev = select.POLLHUP
            zev = (select.POLLIN if not (peer_eof or down or down_done) else 0) | (
                select.POLLOUT if up else 0
            )
            watch(efd, eev)
            watch(zfd, zev)
            events = dict(poller.poll(_WATCHDOG_MS))
            if not events:
                if not _running(node):
                    return
                continue
            if events.get(efd, 0) & (select.POLLHUP | select.POLLERR) and not down_done:
                # The application closed its socket: nothing more to deliver to it.
                down_done = True
                down.clear()
            # application → overlay
            if not (app_eof or up or up_done):
                app_eof = _pull(end, up)
            if up and not up_done and _push(zs, up):
                # The overlay connection failed: the application's writes fail from now on.
                up_done = True
                up.clear()
                self._shutdown(_std.SHUT_RD)
            if app_eof and not up and not up_done:
                up_done = True
                with contextlib.suppress(OSError):
                    zs.shutdown(SHUT_WR)
            # overlay → application
            if not (peer_eof or down or down_done):
                peer_eof = _pull(zs, down)
            if down and not down_done and _push(end, down):
                down_done = True
                down.clear()
            if peer_eof and not down and not down_done:
                down_done = True
                self._shutdown(_std.SHUT_WR)

    def _shutdown(self, how: int) -> None:
        with contextlib.suppress(OSError):
            self.end.shutdown(how)


class Router:
    """Routes new connections to the node's overlay addresses while active (see :func:`route`).

    A context manager; routers nest (the innermost one that routes a destination wins) and
    may be active from several threads at once. Connections made while active keep working
    after the block ends, until closed.
    """

    def __init__(
        self,
        node: Node,
        *,
        hosts: Optional[Mapping[str, str]] = None,
        connect_timeout: float = 30.0,
    ) -> None:
        if sys.platform == "win32":
            raise NotImplementedError(
                "zt.route needs Unix descriptors (a routed connection takes over the OS "
                "socket's descriptor); on Windows connect with node.create_connection()"
            )
        self.node = node
        self.hosts: dict[str, IpAddress] = {
            name.lower().rstrip("."): ipaddress.ip_address(ip) for name, ip in (hosts or {}).items()
        }
        if connect_timeout <= 0:
            raise ValueError("connect_timeout must be positive")
        self.connect_timeout = connect_timeout
        self._cond = threading.Condition()
        self._pumps = 0
        self._entered = False

    # -- routing decisions -------------------------------------------------------------------

    def _resolve(self, host: str) -> Optional[IpAddress]:
        try:
            return ipaddress.ip_address(host.strip("[]").split("%", 1)[0])
        except ValueError:
            return self.hosts.get(host.lower().rstrip("."))

    def routes(self, address: Union[str, IpAddress]) -> bool:
        """Whether connections to ``address`` go through this router's node: an address inside
        a managed prefix of one of its joined networks (link-local excluded), as the node's
        own stack routes. Names resolve through ``hosts`` only. A stopped node keeps its
        addresses: connections to them fail with ENETUNREACH rather than leave through the
        OS."""
        ip = self._resolve(address) if isinstance(address, str) else address
        if ip is None:
            return False
        try:
            networks = self.node.networks()
        except Exception:  # a node that never ran has no networks
            return False
        return on_overlay(networks, ip)

    # -- pumps -----------------------------------------------------------------------------

    def _start_pump(self, end: _std.socket, link: _Link) -> None:
        with self._cond:
            self._pumps += 1
        pump = _Pump(end, link)
        t = threading.Thread(target=pump.run, name=f"zt-route {link.peer[0]}", daemon=True)
        try:
            t.start()
        except BaseException:
            end.close()
            link.zs.close()
            self._pump_done()
            raise

    def _pump_done(self) -> None:
        with self._cond:
            self._pumps -= 1
            self._cond.notify_all()

    @property
    def connections(self) -> int:
        """Routed connections still open (their pump threads)."""
        with self._cond:
            return self._pumps

    def wait_idle(self, timeout: Optional[float] = None) -> bool:
        """Waits until every routed connection has ended; False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: self._pumps == 0, timeout)

    # -- activation ------------------------------------------------------------------------

    def __enter__(self) -> Router:
        global _saved
        with _lock:
            if self._entered:
                raise RuntimeError("this router is already active")
            if not _active:
                _saved = (_std.socket, _std.getaddrinfo)
                _std.socket = _RoutedSocket  # type: ignore[misc]
                _std.getaddrinfo = _getaddrinfo
            _active.append(self)
            self._entered = True
        return self

    def __exit__(self, *exc: object) -> None:
        global _saved
        with _lock:
            if not self._entered:
                return
            self._entered = False
            _active.remove(self)
            if not _active and _saved is not None:
                orig_socket, orig_getaddrinfo = _saved
                # Put back only what is still ours (someone may have patched after us).
                if _std.socket is _RoutedSocket:
                    _std.socket = orig_socket  # type: ignore[misc]
                if _std.getaddrinfo is _getaddrinfo:
                    _std.getaddrinfo = orig_getaddrinfo
                _saved = None

    def __repr__(self) -> str:
        state = "active" if self._entered else "inactive"
        return f"<zt.Router {state} node={self.node.address} connections={self.connections}>"


def _getaddrinfo(
    host: Any, port: Any, family: int = 0, type: int = 0, proto: int = 0, flags: int = 0
) -> Any:
    """``socket.getaddrinfo`` that knows the active routers' ``hosts`` names."""
    name = host.decode("idna") if isinstance(host, bytes) else host
    if isinstance(name, str):
        with _lock:
            routers = list(reversed(_active))
        for router in routers:
            ip = router.hosts.get(name.lower().rstrip("."))
            if ip is not None:
                return _original_getaddrinfo()(str(ip), port, family, type, proto, flags)
    return _original_getaddrinfo()(host, port, family, type, proto, flags)


def route(
    node: Node,
    *,
    hosts: Optional[Mapping[str, str]] = None,
    connect_timeout: float = 30.0,
) -> Router:
    """Routes stdlib TCP connections to the node's overlay addresses through the node while
    the returned context manager is active::

        with zt.route(node, hosts={"api.internal": "198.18.0.20"}):
            requests.get("https://api.internal/status", verify="ca.pem")

    ``hosts`` names resolve (in ``socket.getaddrinfo``) to those addresses; other names use
    the system resolver. ``connect_timeout`` bounds the overlay handshake of a non-blocking
    ``connect()`` (event loops); blocking sockets use their own timeout. Destinations that no
    joined network holds go to the OS exactly as without the block.

    The replacement is process-wide (every thread's new sockets) and restored when the last
    active router exits, also on exceptions.
    """
    return Router(node, hosts=hosts, connect_timeout=connect_timeout)
