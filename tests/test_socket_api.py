"""The stdlib-shaped socket API on the overlay: create_connection/create_server and how TCP and
UDP sockets behave next to the standard library's (errors, flags, timeouts, options, close)."""

from __future__ import annotations

import array
import builtins
import errno
import gc
import hashlib
import os
import select
import selectors
import signal
import socket as std
import struct
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from unittest.mock import Mock

import pytest

import zt
from zt.socket import AF_INET, AF_INET6, MSG_DONTWAIT, SOCK_DGRAM, SOCK_STREAM

from .overlay import Pair, raises_errno, udp
from .support import wait_until


def serve(srv: zt.socket.socket, handler: str = "echo", count: int = 1) -> threading.Thread:
    """Accepts ``count`` connections on a thread: ``echo`` sends back what it reads; ``hash``
    sends back the SHA-256 of everything read once the client shuts down; ``slow`` reads 64 KiB
    every 0.1 s. Accepted sockets' timeouts are recorded in ``thread.timeouts``."""
    timeouts: list[object] = []

    def run() -> None:
        for _ in range(count):
            conn, _ = srv.accept()
            timeouts.append(conn.gettimeout())
            conn.settimeout(30)
            with conn:
                if handler == "hash":
                    h = hashlib.sha256()
                    while data := conn.recv(1 << 20):
                        h.update(data)
                    conn.sendall(h.digest())
                    continue
                while data := conn.recv(65536):
                    if handler == "slow":
                        time.sleep(0.1)
                    else:
                        conn.sendall(data)

    t = threading.Thread(target=run, daemon=True)
    t.timeouts = timeouts  # type: ignore[attr-defined]
    t.start()
    return t


@pytest.fixture
def default_timeout() -> Iterator[None]:
    before = std.getdefaulttimeout()
    yield
    std.setdefaulttimeout(before)


# -- create_connection / create_server --------------------------------------------------------


def test_create_server_and_connection_over_ipv6_adhoc(v6: Pair, default_timeout: None) -> None:
    srv = v6.b.create_server(("", 7200), family=AF_INET6)
    assert srv.family == AF_INET6 and srv.type == SOCK_STREAM
    assert isinstance(srv.family, std.AddressFamily) and isinstance(srv.type, std.SocketKind)
    # AF_INET6 addresses are 4-tuples (host, port, flowinfo, scope_id), as in the stdlib.
    assert srv.getsockname() == ("::", 7200, 0, 0)
    assert srv.getsockopt(std.SOL_SOCKET, std.SO_ACCEPTCONN) == 1
    srv.settimeout(20)
    t = serve(srv, count=2)
    # The default timeout applies when none is given, as in the standard library.
    std.setdefaulttimeout(7.5)
    with v6.a.create_connection((v6.ip_b, 7200)) as c:
        assert c.gettimeout() == 7.5
        assert c.family == AF_INET6 and c.getpeername() == (v6.ip_b, 7200, 0, 0)
        assert c.getsockname()[0] == v6.ip_a
        c.sendall(b"over ipv6")
        assert c.recv(100) == b"over ipv6"
    std.setdefaulttimeout(None)
    # The module-level function, an explicit timeout and a numeric-string port.
    with zt.socket.create_connection(v6.a, (v6.ip_b, "7200"), timeout=10) as c:
        assert c.gettimeout() == 10
        blob = os.urandom(300_000)
        got = bytearray()
        c.sendall(blob)
        while len(got) < len(blob):
            got += c.recv(1 << 20)
        assert bytes(got) == blob
    t.join(20)
    # Accepted sockets take the default timeout (None here), not the listener's 20 s.
    assert t.timeouts == [7.5, None]  # type: ignore[attr-defined]
    srv.close()
    # A port number alone listens on every network; dual-stack is accepted on AF_INET6.
    with v6.b.create_server(7201, family=AF_INET6, dualstack_ipv6=True, backlog=4) as srv2:
        assert srv2.getsockname() == ("::", 7201, 0, 0)
        srv2.settimeout(10)
        t = serve(srv2)
        with v6.a.create_connection((v6.ip_b, 7201), 10) as c:
            c.sendall(b"x")
            assert c.recv(1) == b"x"
        t.join(10)


def test_tcp_congestion_control_is_chosen_per_socket(v4: Pair) -> None:
    # TCP_CONGESTION as on Linux: a name in, the name NUL-padded out (16 bytes).
    cc = zt.socket.TCP_CONGESTION
    with v4.a.socket(AF_INET, SOCK_STREAM) as s, v4.a.socket(AF_INET, SOCK_DGRAM) as u:
        assert s.getsockopt(std.IPPROTO_TCP, cc, 16) == b"cubic".ljust(16, b"\0")
        s.setsockopt(std.IPPROTO_TCP, cc, b"bbr\0")
        assert s.getsockopt(std.IPPROTO_TCP, cc, 16) == b"bbr".ljust(16, b"\0")
        assert s.getsockopt(std.IPPROTO_TCP, cc, 3) == b"bbr"
        with raises_errno(errno.ENOENT):
            s.setsockopt(std.IPPROTO_TCP, cc, b"vegas")
        assert s.getsockopt(std.IPPROTO_TCP, cc, 16).rstrip(b"\0") == b"bbr"
        with raises_errno(errno.ENOPROTOOPT):
            u.setsockopt(std.IPPROTO_TCP, cc, b"bbr")
    # A node's default for its TCP sockets (NodeOptions.tcp_congestion); a bad name refused.
    node = zt.Node(zt.NodeOptions(tcp_congestion="bbr"))
    try:
        with node.socket(AF_INET, SOCK_STREAM) as s:
            assert s.getsockopt(std.IPPROTO_TCP, cc, 16).rstrip(b"\0") == b"bbr"
    finally:
        node.close()
    with pytest.raises(ValueError, match="tcp_congestion must be one of cubic, bbr, reno"):
        zt.Node(zt.NodeOptions(tcp_congestion="vegas"))
    # Data flows under each, and switching on a live connection starts the new one afresh.
    srv = zt.socket.create_server(v4.b, (v4.ip_b, 7301))
    srv.settimeout(20)
    t = serve(srv, handler="hash", count=3)
    for first, then in ((b"bbr", b"cubic"), (b"reno", b"bbr"), (b"cubic", b"reno")):
        blob = os.urandom(1_000_000)
        with v4.a.socket(AF_INET, SOCK_STREAM) as c:
            c.settimeout(20)
            c.setsockopt(std.IPPROTO_TCP, cc, first)
            c.connect((v4.ip_b, 7301))
            assert c.getsockopt(std.IPPROTO_TCP, cc, 16).rstrip(b"\0") == first
            c.sendall(blob[:500_000])
            c.setsockopt(std.IPPROTO_TCP, cc, then)
            c.sendall(blob[500_000:])
            assert c.getsockopt(std.IPPROTO_TCP, cc, 16).rstrip(b"\0") == then
            c.shutdown(zt.socket.SHUT_WR)
            assert c.recv(32) == hashlib.sha256(blob).digest()
    t.join(20)
    srv.close()


def test_create_server_and_connection_over_ipv4(v4: Pair) -> None:
    srv = zt.socket.create_server(v4.b, (v4.ip_b, 7300))
    assert srv.family == AF_INET and srv.getsockname() == (v4.ip_b, 7300)
    srv.settimeout(20)
    t = serve(srv, handler="hash", count=4)  # the refused source address sends nothing
    blob = os.urandom(2_000_000)
    with v4.a.create_connection((v4.ip_b, 7300), timeout=20) as c:
        assert c.getpeername() == (v4.ip_b, 7300)
        c.sendall(blob)
        c.shutdown(zt.socket.SHUT_WR)
        assert c.recv(32) == hashlib.sha256(blob).digest()
    # source_address: the host the connection goes out from (or ""), with port 0.
    with v4.a.create_connection((v4.ip_b, 7300), 20, source_address=(v4.ip_a, 0)) as c:
        assert c.getsockname()[0] == v4.ip_a
        c.shutdown(zt.socket.SHUT_WR)
        assert c.recv(32) == hashlib.sha256(b"").digest()
    with v4.a.create_connection((v4.ip_b, 7300), 20, source_address=("", 0)) as c:
        c.shutdown(zt.socket.SHUT_WR)
        assert len(c.recv(32)) == 32
    with pytest.raises(OSError, match="address on the network that routes") as e:
        v4.a.create_connection((v4.ip_b, 7300), 5, source_address=("198.18.0.3", 0))
    assert e.value.errno == errno.EADDRNOTAVAIL
    # ... and a local port, as the stdlib's (the server sees it).
    with v4.a.create_connection((v4.ip_b, 7300), 20, source_address=(v4.ip_a, 4000)) as c:
        assert c.getsockname() == (v4.ip_a, 4000)
        c.shutdown(zt.socket.SHUT_WR)
        assert c.recv(32) == hashlib.sha256(b"").digest()
        with raises_errno(errno.EADDRINUSE):  # the port is taken while c holds it
            v4.a.create_connection((v4.ip_b, 7300), 5, source_address=(v4.ip_a, 4000))
    t.join(20)
    srv.close()


def test_an_ipv6_listener_takes_ipv4_connections_as_mapped_addresses(v4: Pair) -> None:
    with v4.b.create_server(("", 7301), family=AF_INET6) as srv:
        srv.settimeout(10)
        with v4.a.create_connection((v4.ip_b, 7301), 10) as c:
            conn, peer = srv.accept()
            with conn:
                assert peer == (f"::ffff:{v4.ip_a}", c.getsockname()[1], 0, 0)
                assert conn.getpeername() == peer
                assert conn.getsockname() == (f"::ffff:{v4.ip_b}", 7301, 0, 0)
                conn.sendall(b"mapped")
                assert c.recv(6) == b"mapped"
    # An AF_INET6 socket also connects to an IPv4-mapped address.
    with v4.b.create_server(("", 7302)) as srv:
        srv.settimeout(10)
        with v4.a.socket(AF_INET6, SOCK_STREAM) as c:
            c.settimeout(10)
            c.connect((f"::ffff:{v4.ip_b}", 7302, 0, 0))
            assert c.getpeername() == (f"::ffff:{v4.ip_b}", 7302, 0, 0)
            conn, _ = srv.accept()
            conn.close()


def test_create_connection_and_server_errors(v4: Pair, v6: Pair) -> None:
    # Nobody listens: the peer's stack answers RST.
    with pytest.raises(ConnectionRefusedError) as refused:
        v4.a.create_connection((v4.ip_b, 7399), timeout=10)
    assert refused.value.errno == errno.ECONNREFUSED
    # The ad-hoc network drops SYNs to ports outside its range: the timeout ends the wait.
    start = time.monotonic()
    with pytest.raises(TimeoutError):
        v6.a.create_connection((v6.ip_b, 7600), timeout=0.5)
    assert 0.4 < time.monotonic() - start < 5
    # No joined network routes these.
    for pair, host in ((v4, "203.0.113.9"), (v6, "2001:db8::1")):
        with pytest.raises(OSError, match="unreachable") as e:
            pair.a.create_connection((host, 80), timeout=5)
        assert e.value.errno == errno.ENETUNREACH
    # Host names are not resolved (and nothing is sent anywhere).
    with pytest.raises(std.gaierror) as g:
        v4.a.create_connection(("example.invalid", 80))
    assert g.value.errno == std.EAI_NONAME
    with pytest.raises(std.gaierror):
        v4.a.create_connection((v4.ip_b, "no-such-service"))
    with pytest.raises(ValueError, match="unpack"):
        v4.a.create_connection((v4.ip_b,))  # type: ignore[arg-type]
    with pytest.raises(OverflowError):
        v4.a.create_connection((v4.ip_b, 70000))
    with pytest.raises(TypeError):
        v4.a.create_connection((v4.ip_b, [80]))
    with pytest.raises(ValueError, match="range"):
        v4.a.create_connection((v4.ip_b, 7300), timeout=-1)

    with pytest.raises(ValueError, match="SO_REUSEPORT"):
        v4.b.create_server(("", 7310), reuse_port=True)
    with pytest.raises(ValueError, match="requires AF_INET6"):
        v4.b.create_server(("", 7310), dualstack_ipv6=True)
    with v4.b.create_server(("", 7310)):
        with pytest.raises(OSError, match="while attempting to bind on address") as e:
            v4.b.create_server((v4.ip_b, 7310))
        assert e.value.errno == errno.EADDRINUSE
    with pytest.raises(OSError, match="while attempting to bind") as e:
        v4.b.create_server(("203.0.113.9", 7311))  # not an address of the node: as the OS says
    assert e.value.errno == errno.EADDRNOTAVAIL
    with pytest.raises(std.gaierror):
        v4.b.create_server(("::", 7312))  # an IPv6 address for an AF_INET socket


def test_failed_calls_and_closed_sockets_leave_no_resource_warning(v4: Pair) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(ConnectionRefusedError):
            v4.a.create_connection((v4.ip_b, 7398), timeout=10)
        s = v4.a.socket(AF_INET, SOCK_DGRAM)
        s.bind(("", 7320))
        s.close()
        s.close()  # idempotent
        del s
        gc.collect()
    assert [w for w in caught if issubclass(w.category, ResourceWarning)] == []
    # An unclosed socket warns like the standard library's, and is closed by the collector.
    u = v4.a.socket(AF_INET, SOCK_DGRAM)
    u.bind(("", 7321))
    holder = [u]
    del u
    with pytest.warns(ResourceWarning, match="unclosed"):
        holder.clear()
    with v4.a.socket(AF_INET, SOCK_DGRAM) as again:
        again.bind(("", 7321))  # the port is free again


# -- TCP next to the standard library ---------------------------------------------------------


def test_tcp_flags_timeouts_and_state_errors(v4: Pair) -> None:
    srv = v4.b.create_server((v4.ip_b, 7330))
    srv.settimeout(20)
    t = serve(srv)
    c = v4.a.create_connection((v4.ip_b, 7330), timeout=10)
    # Unsupported flags fail clearly rather than being ignored.
    with pytest.raises(OSError, match="flags") as e:
        c.recv(10, std.MSG_PEEK)
    assert e.value.errno == errno.EOPNOTSUPP
    with raises_errno(errno.EOPNOTSUPP):
        c.send(b"x", std.MSG_OOB)
    # MSG_DONTWAIT makes one blocking call non-blocking.
    with pytest.raises(BlockingIOError):
        c.recv(10, MSG_DONTWAIT)
    assert c.recv(0) == b""
    # settimeout applies to an already connected socket.
    c.settimeout(0.2)
    start = time.monotonic()
    with pytest.raises(TimeoutError):
        c.recv(10)
    assert time.monotonic() - start < 3
    c.settimeout(10)
    assert c.send(b"ping", std.MSG_NOSIGNAL) == 4
    buf = bytearray(16)
    assert c.recv_into(buf, 4) == 4 and buf[:4] == b"ping"
    with pytest.raises(ValueError, match="too small"):
        c.recv_into(bytearray(2), 5)
    with pytest.raises(ValueError, match="negative"):
        c.recv(-1)
    # State errors are the standard ones.
    with raises_errno(errno.EISCONN):
        c.connect((v4.ip_b, 7330))
    with raises_errno(errno.EINVAL):
        c.bind(("", 0))
    with raises_errno(errno.EINVAL):
        c.listen()
    with raises_errno(errno.EINVAL):
        c.accept()
    for call in (c.dup, c.detach):
        with raises_errno(errno.EOPNOTSUPP):
            call()
    with raises_errno(errno.ENOTCONN):
        srv.getpeername()
    with raises_errno(errno.EINVAL):
        c.shutdown(7)
    # After shutdown(SHUT_RD) recv() reads EOF; writes still work.
    c.shutdown(zt.socket.SHUT_RD)
    assert c.recv(10) == b""
    c.sendall(b"still")
    c.close()
    # Everything on a closed socket is EBADF; fileno() is -1.
    assert c.fileno() == -1
    for op in (
        lambda: c.send(b"x"),
        lambda: c.recv(1),
        c.getsockname,
        c.getpeername,
        lambda: c.setsockopt(std.SOL_SOCKET, std.SO_KEEPALIVE, 1),
        lambda: c.getsockopt(std.SOL_SOCKET, std.SO_TYPE),
        lambda: c.shutdown(zt.socket.SHUT_WR),
    ):
        with raises_errno(errno.EBADF):
            op()
    t.join(10)
    srv.close()


def test_sendall_timeout_bounds_the_whole_call(v4: Pair) -> None:
    """Like the standard library since 3.5: the timeout is the total time sendall() may take,
    not a per-chunk time that progress resets (the reader here keeps making progress)."""
    with v4.b.create_server((v4.ip_b, 7340)) as srv:
        srv.settimeout(10)
        t = serve(srv, handler="slow")
        c = v4.a.create_connection((v4.ip_b, 7340), timeout=1.0)
        start = time.monotonic()
        with pytest.raises(TimeoutError):
            c.sendall(b"\0" * (16 << 20))
        assert time.monotonic() - start < 2.5
        # Non-blocking: BlockingIOError once nothing more fits.
        c.setblocking(False)
        with pytest.raises(BlockingIOError):
            c.sendall(b"\0" * (16 << 20))
        c.close()
        t.join(30)


def test_non_blocking_connect_and_so_error(v4: Pair) -> None:
    with v4.b.create_server((v4.ip_b, 7350)) as srv:
        c = v4.a.socket(AF_INET, SOCK_STREAM)
        c.setblocking(False)
        assert c.connect_ex((v4.ip_b, 7350)) == errno.EINPROGRESS
        assert c.connect_ex((v4.ip_b, 7350)) in (errno.EALREADY, 0)
        sel = selectors.DefaultSelector()
        sel.register(c, selectors.EVENT_WRITE)
        assert sel.select(10), "writable once connected"
        assert c.getsockopt(std.SOL_SOCKET, std.SO_ERROR) == 0
        assert c.connect_ex((v4.ip_b, 7350)) in (0, errno.EISCONN)
        assert c.connect_ex((v4.ip_b, 7350)) == errno.EISCONN
        sel.close()
        c.close()
        srv.settimeout(10)
        srv.accept()[0].close()
    # Refused: readable, SO_ERROR says why once, then 0.
    d = v4.a.socket(AF_INET, SOCK_STREAM)
    d.setblocking(False)
    with pytest.raises(BlockingIOError) as e:
        d.connect((v4.ip_b, 7351))
    assert e.value.errno == errno.EINPROGRESS
    sel = selectors.DefaultSelector()
    sel.register(d, selectors.EVENT_READ)
    assert sel.select(10)
    assert d.getsockopt(std.SOL_SOCKET, std.SO_ERROR) == errno.ECONNREFUSED
    assert d.getsockopt(std.SOL_SOCKET, std.SO_ERROR) == 0
    sel.close()
    d.close()


def in_call(thread: threading.Thread, function: str) -> bool:
    """Whether ``thread`` is inside ``function`` (a frame of that name on its stack)."""
    frame = sys._current_frames().get(thread.ident or -1)
    while frame is not None:
        if frame.f_code.co_name == function:
            return True
        frame = frame.f_back
    return False


def test_closing_a_listener_ends_a_blocked_accept(v4: Pair) -> None:
    """An accept() blocked in another thread fails with EBADF once the listener is closed
    (it used to block forever, and with it the thread and whatever that thread held)."""
    srv = v4.b.create_server((v4.ip_b, 7355))
    srv.settimeout(None)
    errors: list[OSError] = []

    def run() -> None:
        try:
            conn, _ = srv.accept()
        except OSError as e:
            errors.append(e)
        else:
            conn.close()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    wait_until(lambda: in_call(t, "accept"), 10, "the thread to block in accept()")
    srv.close()
    t.join(10)
    assert not t.is_alive(), "accept() still blocked on a closed listener"
    assert [e.errno for e in errors] == [errno.EBADF]
    # Nothing queued on the closed listener is handed out (connecting is refused now).
    with pytest.raises(ConnectionRefusedError):
        v4.a.create_connection((v4.ip_b, 7355), timeout=10)


class AlarmError(Exception):
    pass


@pytest.fixture
def alarm() -> Iterator[list[float]]:
    """SIGALRM raises :class:`AlarmError` (or, once the list it yields holds a 0, only records
    when it came); the timer and the handler are reset afterwards."""
    mode: list[float] = []

    def handler(signum: int, frame: object) -> None:
        if mode and mode[0] == 0:
            mode.append(time.monotonic())
            return
        raise AlarmError

    before = signal.signal(signal.SIGALRM, handler)
    yield mode
    signal.setitimer(signal.ITIMER_REAL, 0)
    signal.signal(signal.SIGALRM, before)


def test_a_signal_handler_interrupts_blocked_calls_as_in_the_stdlib(
    v4: Pair, alarm: list[float]
) -> None:
    """Blocking calls on the main thread run signal handlers while they wait: an exception
    from one (as Ctrl-C's KeyboardInterrupt) ends the call; a handler that returns lets the
    call go on (PEP 475). Nothing queued is lost either way."""
    srv = v4.b.create_server((v4.ip_b, 7356))
    srv.settimeout(None)
    u = udp(v4.b, AF_INET, (v4.ip_b, 7357))
    with srv, u, v4.a.create_connection((v4.ip_b, 7356), timeout=10) as c:
        conn, _ = srv.accept()
        with conn:
            conn.settimeout(None)
            for call in (lambda: conn.recv(10), srv.accept, lambda: u.recvfrom(10)):
                start = time.monotonic()
                signal.setitimer(signal.ITIMER_REAL, 0.3)
                with pytest.raises(AlarmError):
                    call()
                assert 0.25 < time.monotonic() - start < 3
            # A timeout still applies, and an interrupted call took nothing.
            c.sendall(b"kept")
            conn.settimeout(10)
            assert recv_exactly(conn, 4) == b"kept"
            # A handler that returns: the call goes on and gets the data sent after it.
            alarm.append(0)
            conn.settimeout(None)
            threading.Timer(0.6, c.sendall, (b"later",)).start()
            start = time.monotonic()
            signal.setitimer(signal.ITIMER_REAL, 0.2)
            assert recv_exactly(conn, 5) == b"later"
            assert len(alarm) == 2 and alarm[1] - start < 0.5
            assert time.monotonic() - start >= 0.55


def test_accept_and_listen_close_the_native_socket_when_interrupted(
    v4: Pair, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A native socket the runtime handed over is closed when the call fails before wrapping
    it (dropping it left the connection open, and the port taken, until the node stopped)."""
    with (
        v4.b.create_server((v4.ip_b, 7356)) as srv,
        v4.a.create_connection((v4.ip_b, 7356), timeout=10) as c,
    ):
        srv.settimeout(10)
        with monkeypatch.context() as m:
            m.setattr(zt.socket.socket, "_wrap", Mock(side_effect=KeyboardInterrupt))
            with pytest.raises(KeyboardInterrupt):
                srv.accept()
        c.settimeout(10)
        assert c.recv(10) == b""  # the server's side was closed: EOF
    s = v4.b.socket(AF_INET, SOCK_STREAM)
    s.setsockopt(std.SOL_SOCKET, std.SO_KEEPALIVE, 1)  # an option to apply to the listener
    s.bind((v4.ip_b, 7357))
    with monkeypatch.context() as m:
        m.setattr(zt.socket.socket, "_apply_options", Mock(side_effect=KeyboardInterrupt))
        with pytest.raises(KeyboardInterrupt):
            s.listen()
    s.close()
    with v4.b.create_server((v4.ip_b, 7357)):  # the port is free again
        pass


def test_a_native_socket_dropped_unclosed_is_closed(v4: Pair) -> None:
    """A native socket that nobody holds any more ends its connection (and frees its port),
    as the OS does with a descriptor's last reference."""
    with v4.b.create_server((v4.ip_b, 7358)) as srv:
        srv.settimeout(10)
        native = v4.a._handle().tcp_connect(v4.ip_b, 7358)
        native.wait_connected(10)
        conn, _ = srv.accept()
        with conn:
            native.send(b"bye", 10)
            del native
            gc.collect()
            conn.settimeout(10)
            assert conn.recv(10) == b"bye"  # queued data still goes out
            assert conn.recv(10) == b""  # then EOF
    udp = v4.b._handle().udp_bind(v4.ip_b, 7359)
    del udp
    gc.collect()
    with v4.b.socket(AF_INET, SOCK_DGRAM) as u:
        u.bind((v4.ip_b, 7359))  # the port is free again


def test_socket_options(v4: Pair) -> None:
    with v4.a.socket(AF_INET, SOCK_STREAM) as s, v4.a.socket(AF_INET6, SOCK_DGRAM) as u:
        sol = std.SOL_SOCKET
        assert s.getsockopt(std.IPPROTO_TCP, std.TCP_NODELAY) == 1
        s.setsockopt(std.IPPROTO_TCP, std.TCP_NODELAY, 0)
        assert s.getsockopt(std.IPPROTO_TCP, std.TCP_NODELAY) == 0
        s.setsockopt(sol, std.SO_REUSEADDR, 1)
        assert s.getsockopt(sol, std.SO_REUSEADDR) == 1
        s.setsockopt(sol, std.SO_KEEPALIVE, (1).to_bytes(4, sys.byteorder))
        assert s.getsockopt(sol, std.SO_KEEPALIVE) == 1
        s.setsockopt(sol, std.SO_RCVBUF, 65536)
        assert s.getsockopt(sol, std.SO_RCVBUF) == 65536
        assert s.getsockopt(sol, std.SO_TYPE) == SOCK_STREAM
        assert s.getsockopt(sol, std.SO_TYPE, 4) == int(SOCK_STREAM).to_bytes(4, sys.byteorder)
        assert u.getsockopt(sol, std.SO_DOMAIN) == AF_INET6
        assert u.getsockopt(sol, std.SO_PROTOCOL) == std.IPPROTO_UDP
        u.setsockopt(std.IPPROTO_IPV6, std.IPV6_V6ONLY, 0)
        # Unknown options and ones that do not apply: ENOPROTOOPT, as the OS says.
        for sock, level, opt in (
            (s, sol, std.SO_REUSEPORT),
            (s, sol, 9999),
            (s, std.IPPROTO_IPV6, std.IPV6_V6ONLY),
            (u, std.IPPROTO_TCP, std.TCP_NODELAY),
        ):
            with raises_errno(errno.ENOPROTOOPT):
                sock.setsockopt(level, opt, 1)
            with raises_errno(errno.ENOPROTOOPT):
                sock.getsockopt(level, opt)
        with raises_errno(errno.EINVAL):
            s.setsockopt(sol, std.SO_REUSEADDR, b"\1")
    # Flags in the type, and bad families, types and protocols.
    nb = v4.a.socket(AF_INET, SOCK_STREAM | std.SOCK_NONBLOCK)
    assert nb.type == SOCK_STREAM and nb.getblocking() is False
    for args, code in (
        ((std.AF_UNIX, SOCK_STREAM), errno.EAFNOSUPPORT),
        ((AF_INET, std.SOCK_RAW), errno.ESOCKTNOSUPPORT),
        ((AF_INET, SOCK_STREAM, std.IPPROTO_UDP), errno.EPROTONOSUPPORT),
    ):
        with raises_errno(code):
            v4.a.socket(*args)


def test_sendfile(v4: Pair, tmp_path: Path) -> None:
    data = os.urandom(1_000_000)
    path = tmp_path / "blob"
    path.write_bytes(data)
    with v4.b.create_server((v4.ip_b, 7360)) as srv:
        srv.settimeout(20)
        t = serve(srv, handler="hash", count=2)
        with v4.a.create_connection((v4.ip_b, 7360), 20) as c, path.open("rb") as f:
            assert c.sendfile(f, offset=1000, count=500_000) == 500_000
            assert f.tell() == 501_000
            c.shutdown(zt.socket.SHUT_WR)
            assert c.recv(32) == hashlib.sha256(data[1000:501_000]).digest()
        with v4.a.create_connection((v4.ip_b, 7360), 20) as c, path.open("rb") as f:
            assert c.sendfile(f) == len(data)
            c.shutdown(zt.socket.SHUT_WR)
            assert c.recv(32) == hashlib.sha256(data).digest()
            with path.open("r") as text, pytest.raises(ValueError, match="binary"):
                c.sendfile(text)
            with pytest.raises(ValueError, match="positive"):
                c.sendfile(f, count=0)
        t.join(20)


# -- UDP next to the standard library ---------------------------------------------------------


def recv_until(s: zt.socket.socket, want: bytes, timeout: float = 10) -> list[tuple[bytes, object]]:
    """Datagrams received up to and including ``want``."""
    got = []
    deadline = time.monotonic() + timeout
    s.settimeout(timeout)
    while True:
        s.settimeout(max(0.01, deadline - time.monotonic()))
        data, addr = s.recvfrom(65536)
        got.append((data, addr))
        if data == want:
            return got


def test_udp_next_to_the_standard_library(v6: Pair) -> None:
    r = udp(v6.b, AF_INET6, ("", 7400))
    s = v6.a.socket(AF_INET6, SOCK_DGRAM)
    # Unbound: no descriptor yet; sendto binds an ephemeral port on every network.
    assert s.getsockname() == ("::", 0, 0, 0) and s.fileno() == -1
    with raises_errno(errno.EDESTADDRREQ):
        s.send(b"x")
    s.close()
    with raises_errno(errno.EBADF):
        s.send(b"x")
    s = v6.a.socket(AF_INET6, SOCK_DGRAM)
    s.bind(("", 7401))  # in the ad-hoc range, so that replies get through
    # sendto(data, flags, address) and sendto(data, address).
    assert s.sendto(b"one", 0, (v6.ip_b, 7400)) == 3
    assert s.sendto(memoryview(b"two"), (v6.ip_b, 7400, 0, 0)) == 3
    assert [d for d, _ in recv_until(r, b"two")] == [b"one", b"two"]
    with raises_errno(errno.EOPNOTSUPP):
        s.sendto(b"x", std.MSG_PEEK, (v6.ip_b, 7400))
    with pytest.raises(TypeError, match="2 or 3 arguments"):
        s.sendto(b"x")  # type: ignore[call-overload]
    # Truncation: the rest of a datagram longer than bufsize is discarded.
    payload = bytes(range(200))
    s.sendto(payload, (v6.ip_b, 7400))
    s.sendto(b"next", (v6.ip_b, 7400))
    r.settimeout(10)
    data, addr = r.recvfrom(10)
    assert data == payload[:10] and addr == (v6.ip_a, 7401, 0, 0)
    assert r.recv(100) == b"next"
    s.sendto(b"into", (v6.ip_b, 7400))
    s.sendto(b"from-into", (v6.ip_b, 7400))
    buf = bytearray(8)
    assert r.recv_into(buf) == 4 and buf[:4] == b"into"
    assert r.recvfrom_into(buf, 4) == (4, (v6.ip_a, 7401, 0, 0)) and buf[:4] == b"from"
    # Empty datagrams exist; recv(0) consumes a datagram.
    s.sendto(b"", (v6.ip_b, 7400))
    s.sendto(b"gone", (v6.ip_b, 7400))
    s.sendto(b"last", (v6.ip_b, 7400))
    assert r.recvfrom(10) == (b"", (v6.ip_a, 7401, 0, 0))
    assert r.recv(0) == b""
    assert r.recv(10) == b"last"
    # Non-blocking and timeouts.
    with pytest.raises(BlockingIOError):
        r.recv(10, MSG_DONTWAIT)
    r.settimeout(0.1)
    with pytest.raises(TimeoutError):
        r.recvfrom(10)
    r.setblocking(False)
    with pytest.raises(BlockingIOError):
        r.recvfrom(10)
    # Bad addresses and sizes.
    with pytest.raises(std.gaierror):
        s.sendto(b"x", ("198.18.0.1", 7400))  # IPv4 on an AF_INET6 socket
    with pytest.raises(std.gaierror):
        s.sendto(b"x", ("example.invalid", 7400))
    with pytest.raises(OverflowError):
        s.sendto(b"x", (v6.ip_b, -1))
    with pytest.raises(TypeError):
        s.sendto(b"x", v6.ip_b)  # type: ignore[call-overload]
    with raises_errno(errno.EMSGSIZE):
        s.sendto(b"\0" * 65508, (v6.ip_b, 7400))
    # What a datagram socket cannot do.
    for call in (s.listen, s.accept):
        with raises_errno(errno.EOPNOTSUPP):
            call()
    with raises_errno(errno.EINVAL):
        s.bind(("", 7402))
    with raises_errno(errno.ENOTCONN):
        s.getpeername()
    with raises_errno(errno.ENOTCONN):
        s.shutdown(zt.socket.SHUT_RD)
    s.close()
    r.close()
    with raises_errno(errno.EBADF):
        r.getsockname()


def test_udp_implicit_bind_and_connect_filtering(v6: Pair) -> None:
    r = udp(v6.b, AF_INET6, ("", 7410))
    s1 = udp(v6.a, AF_INET6, (v6.ip_a, 7411))
    s2 = udp(v6.a, AF_INET6, ("", 7412))
    assert s1.getsockname() == (v6.ip_a, 7411, 0, 0) and s2.getsockname() == ("::", 7412, 0, 0)
    # connect() fixes the peer: only its datagrams arrive, send() goes to it.
    r.connect((v6.ip_a, 7411))
    assert r.getpeername() == (v6.ip_a, 7411, 0, 0)
    for i in range(5):
        s2.sendto(b"not for r %d" % i, (v6.ip_b, 7410))
    assert select.select([r], [], [], 10)[0], "s2's datagrams reached r's socket"
    s1.sendto(b"for r", (v6.ip_b, 7410))
    got = recv_until(r, b"for r")
    assert got == [(b"for r", (v6.ip_a, 7411, 0, 0))]
    r.send(b"reply")
    s1.settimeout(10)
    assert s1.recvfrom(100) == (b"reply", (v6.ip_b, 7410, 0, 0))
    # connect() again changes the peer.
    r.connect((v6.ip_a, 7412))
    s2.sendto(b"now s2", (v6.ip_b, 7410))
    assert all(addr == (v6.ip_a, 7412, 0, 0) for _, addr in recv_until(r, b"now s2"))
    # shutdown(SHUT_RD): recv() reads b"" from then on; SHUT_WR: send() raises EPIPE.
    r.shutdown(zt.socket.SHUT_RDWR)
    assert r.recv(10) == b""
    with pytest.raises(BrokenPipeError):
        r.send(b"x")
    # An unbound socket's first sendto binds an ephemeral port.
    e = v6.a.socket(AF_INET6, SOCK_DGRAM)
    e.sendto(b"x", (v6.ip_b, 7410))
    host, port, flowinfo, scope_id = e.getsockname()
    assert host == "::" and port > 0 and (flowinfo, scope_id) == (0, 0) and e.fileno() >= 0
    for sock in (r, s1, s2, e):
        sock.close()


def test_udp_ipv4_sockets_and_dual_stack(v4: Pair) -> None:
    r4 = udp(v4.b, AF_INET, ("", 7420))
    r6 = udp(v4.b, AF_INET6, ("", 7421))
    s = udp(v4.a, AF_INET, (v4.ip_a, 7422))
    s.sendto(b"v4", (v4.ip_b, 7420))
    assert recv_until(r4, b"v4") == [(b"v4", (v4.ip_a, 7422))]
    # An AF_INET6 socket gets IPv4 datagrams with IPv4-mapped senders, and answers them.
    s.sendto(b"to v6 socket", (v4.ip_b, 7421))
    [(_, sender)] = recv_until(r6, b"to v6 socket")
    assert sender == (f"::ffff:{v4.ip_a}", 7422, 0, 0)
    r6.sendto(b"answer", sender)
    s.settimeout(10)
    assert s.recvfrom(100) == (b"answer", (v4.ip_b, 7421))
    for sock in (r4, r6, s):
        sock.close()


# -- data paths: bytes-like arguments, buffers written in place -------------------------------


def recv_exactly(c: zt.socket.socket, n: int) -> bytes:
    got = bytearray()
    while len(got) < n:
        data = c.recv(n - len(got))
        assert data, "EOF"
        got += data
    return bytes(got)


def test_tcp_send_and_recv_into_every_kind_of_buffer(v4: Pair) -> None:
    with zt.socket.create_server(v4.b, (v4.ip_b, 7500)) as srv:
        srv.settimeout(20)
        t = serve(srv)
        with v4.a.create_connection((v4.ip_b, 7500), timeout=20) as c:
            # Every bytes-like object is sent: bytes and bytearray in place, others copied.
            for data in (
                b"bytes",
                bytearray(b"bytearray"),
                memoryview(b"--a view--")[2:-2],
                memoryview(bytes(range(8))).cast("I"),  # not bytes: 2 items of 4 bytes
            ):
                raw = bytes(memoryview(data).cast("B"))
                assert c.send(data) == len(raw)
                assert recv_exactly(c, len(raw)) == raw
                c.sendall(data)
                assert recv_exactly(c, len(raw)) == raw
            with pytest.raises(TypeError):
                c.send("text")  # type: ignore[arg-type]
            # recv_into a bytearray (written in place): nbytes limits it, the rest is untouched.
            buf = bytearray(b"." * 16)
            c.sendall(b"0123456789")
            assert c.recv_into(buf, 4) == 4 and buf == b"0123" + b"." * 12
            assert c.recv_into(buf) == 6 and buf == b"456789" + b"." * 10
            # Into a memoryview slice, an array and a bytearray subclass.
            c.sendall(b"abcdef")
            view = memoryview(buf)
            assert c.recv_into(view[10:], 3) == 3 and buf[10:13] == b"abc"
            view.release()
            arr = array.array("b", bytes(4))
            assert c.recv_into(arr) == 3 and arr.tobytes() == b"def\0"

            class Sub(bytearray):
                pass

            sub = Sub(5)
            c.sendall(b"sub")
            assert c.recv_into(sub) == 3 and sub == b"sub\0\0"
            # recvfrom_into on TCP: (nbytes, None).
            c.sendall(b"from")
            assert c.recvfrom_into(buf, 4) == (4, None) and buf[:4] == b"from"
            # Arguments are checked as by the standard library.
            with pytest.raises(ValueError, match="negative"):
                c.recv_into(buf, -1)
            with pytest.raises(ValueError, match="too small"):
                c.recv_into(buf, 17)
            with pytest.raises(TypeError, match="read-write"):
                c.recv_into(b"immutable")  # at once, not after data arrived
            # Empty buffers and timeouts, as with recv().
            assert c.recv_into(bytearray()) == 0
            with pytest.raises(BlockingIOError):
                c.recv_into(buf, 0, MSG_DONTWAIT)
            c.settimeout(0.1)
            with pytest.raises(TimeoutError):
                c.recv_into(buf)
            c.settimeout(20)
            # A bigger transfer, in place on both ends.
            blob = bytearray(os.urandom(3 << 20))
            got = bytearray(len(blob))
            pos = 0

            def reader() -> None:
                nonlocal pos
                chunk = bytearray(1 << 16)
                while pos < len(got):
                    n = c.recv_into(chunk)
                    got[pos : pos + n] = chunk[:n]
                    pos += n

            r = threading.Thread(target=reader)
            r.start()
            c.sendall(blob)
            r.join(60)
            assert got == blob
            # EOF: recv_into returns 0.
            c.shutdown(zt.socket.SHUT_WR)
            t.join(20)
            assert c.recv_into(buf) == 0
            c.shutdown(zt.socket.SHUT_RD)
            assert c.recv_into(buf) == 0


def test_recv_into_a_bytearray_shrunk_while_the_call_waits(v4: Pair) -> None:
    """The buffer's size is read again after the wait: it is written only as far as it
    reaches, whether the resize happens before the call or while it waits."""
    with zt.socket.create_server(v4.b, (v4.ip_b, 7501)) as srv:
        srv.settimeout(20)
        with v4.a.create_connection((v4.ip_b, 7501), timeout=20) as c:
            conn, _ = srv.accept()
            with conn:
                buf = bytearray(100)
                result: list[int] = []
                started = threading.Event()

                def reader() -> None:
                    started.set()
                    result.append(c.recv_into(buf))

                r = threading.Thread(target=reader)
                r.start()
                started.wait(10)
                del buf[10:]  # nothing exports the buffer: it may shrink
                conn.sendall(bytes(range(100)))
                r.join(20)
                assert result == [10] and buf == bytes(range(10))
                assert recv_exactly(c, 90) == bytes(range(10, 100))


def test_concurrent_readers_share_the_stream(v4: Pair) -> None:
    """Readers racing for the same socket (a reader woken for data another took waits again)
    together get every byte once."""
    with zt.socket.create_server(v4.b, (v4.ip_b, 7502)) as srv:
        srv.settimeout(20)
        with v4.a.create_connection((v4.ip_b, 7502), timeout=20) as c:
            conn, _ = srv.accept()
            with conn:
                parts: list[list[bytes]] = [[], [], []]

                def reader(out: list[bytes], into: bool) -> None:
                    buf = bytearray(997)
                    while True:
                        if into:
                            n = conn.recv_into(buf)
                            data = bytes(buf[:n])
                        else:
                            data = conn.recv(1013)
                        if not data:
                            return
                        out.append(data)

                readers = [
                    threading.Thread(target=reader, args=(p, i != 1)) for i, p in enumerate(parts)
                ]
                for r in readers:
                    r.start()
                # Numbered 4-byte words: any loss, duplicate or reordering within a reader shows.
                words = b"".join(i.to_bytes(4, "big") for i in range(250_000))
                c.sendall(words)
                c.shutdown(zt.socket.SHUT_WR)
                for r in readers:
                    r.join(60)
                assert sum(len(b"".join(p)) for p in parts) == len(words)
                seen = bytearray()
                for p in parts:
                    seen += b"".join(p)
                assert sorted(seen) == sorted(words)


def test_udp_recvfrom_into_takes_only_accepted_datagrams(v6: Pair) -> None:
    r = udp(v6.b, AF_INET6, ("", 7430))
    s1 = udp(v6.a, AF_INET6, ("", 7431))
    s2 = udp(v6.a, AF_INET6, ("", 7432))
    r.connect((v6.ip_a, 7431))
    for _ in range(5):
        s2.sendto(b"X" * 50, (v6.ip_b, 7430))  # dropped: not from the peer
    assert select.select([r], [], [], 10)[0], "s2's datagrams reached r's socket"
    s1.sendto(bytearray(b"peer"), (v6.ip_b, 7430))
    buf = bytearray(b"." * 8)
    r.settimeout(10)
    assert r.recvfrom_into(buf) == (4, (v6.ip_a, 7431, 0, 0))
    # The dropped datagrams never touched the buffer.
    assert buf == b"peer...."
    # A longer datagram is truncated to the buffer (or nbytes) and the rest discarded.
    s1.sendto(b"0123456789", (v6.ip_b, 7430))
    s1.sendto(b"next", (v6.ip_b, 7430))
    assert r.recvfrom_into(buf, 3) == (3, (v6.ip_a, 7431, 0, 0)) and buf == b"012r...."
    assert r.recv_into(buf) == 4 and buf == b"next...."
    with pytest.raises(BlockingIOError):
        r.recvfrom_into(buf, 0, MSG_DONTWAIT)
    for sock in (r, s1, s2):
        sock.close()
    with raises_errno(errno.EBADF):
        r.recvfrom_into(buf)


def test_native_send_checks_its_arguments(v4: Pair) -> None:
    with zt.socket.create_server(v4.b, (v4.ip_b, 7503)) as srv:
        srv.settimeout(20)
        with v4.a.create_connection((v4.ip_b, 7503), timeout=20) as c:
            conn, _ = srv.accept()
            with conn:
                native = c._sock()
                assert native.send(b"abcdef", None, 4) == 2
                assert native.send(bytearray(b"xyz"), None, 3) == 0
                assert recv_exactly(conn, 2) == b"ef"
                with pytest.raises(ValueError, match="offset"):
                    native.send(b"abc", None, 4)
                with pytest.raises(TypeError, match="bytes or bytearray"):
                    native.send(memoryview(b"abc"))  # type: ignore[arg-type]
                with pytest.raises(OverflowError):
                    native.send(b"abc", None, -1)


def test_asyncio_transport_writes_every_buffer_kind_and_reads_in_place(v4: Pair) -> None:
    import asyncio

    import zt.asyncio

    async def digest_of_all(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        h = hashlib.sha256()
        while data := await reader.read(1 << 20):
            h.update(data)
        writer.write(h.digest())
        await writer.drain()
        writer.close()

    class Into(asyncio.BufferedProtocol):
        """Reads into one bytearray (written in place) or, every other time, into a
        memoryview slice of another (through a copy)."""

        def __init__(self) -> None:
            self.got = bytearray()
            self.whole = bytearray(1000)
            self.part = bytearray(1000)
            self.calls = 0
            self.done = asyncio.get_running_loop().create_future()

        def get_buffer(self, sizehint: int) -> Any:
            self.calls += 1
            return self.whole if self.calls % 2 else memoryview(self.part)[100:]

        def buffer_updated(self, nbytes: int) -> None:
            src = self.whole if self.calls % 2 else self.part[100:]
            self.got += src[:nbytes]

        def eof_received(self) -> None:
            self.done.set_result(None)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        async with await zt.asyncio.start_server(digest_of_all, v4.b, v4.ip_b, 7504):
            reader, writer = await zt.asyncio.open_connection(v4.a, v4.ip_b, 7504)
            big = bytearray(os.urandom(5 << 20))
            expected = bytes(big)
            # More than the socket's send buffer takes at once: the rest waits in the transport,
            # which copied it (the caller may reuse its buffer at once).
            writer.write(big)
            assert 0 < writer.transport.get_write_buffer_size() < len(big)
            big[:] = bytes(len(big))
            words = memoryview(array.array("H", [1, 2, 3]))  # 3 items of 2 bytes
            for data in (memoryview(b"0123456789")[2:8], words, b"tail"):
                writer.write(data)
                expected += bytes(memoryview(data).cast("B"))
            await writer.drain()
            writer.write_eof()
            assert await asyncio.wait_for(reader.read(), 30) == hashlib.sha256(expected).digest()
            writer.close()
        # A buffered protocol: the echo server sends 300 KB back in pieces.
        with zt.socket.create_server(v4.b, (v4.ip_b, 7505)) as srv:
            srv.settimeout(20)
            t = serve(srv)
            sock = await zt.asyncio._connect(v4.a, v4.ip_b, 7505)
            proto = Into()
            transport = zt.asyncio._Transport(loop, sock, proto)
            blob = os.urandom(300_000)
            transport.write(blob)
            transport.write_eof()
            await asyncio.wait_for(proto.done, 30)
            assert proto.got == blob and proto.calls > 2
            transport.close()
            await asyncio.to_thread(t.join, 20)

    asyncio.run(main())


def _raised(call: Callable[[Any], object], sock: Any) -> tuple[type[BaseException], str]:
    """The exception ``call(sock)`` raises: its type and message (an OSError: its errno)."""
    try:
        call(sock)
    except OSError as e:
        return type(e), f"errno {e.errno}"
    except (TypeError, OverflowError, BufferError) as e:
        return type(e), str(e)
    raise AssertionError("no exception")


BAD_CALLS: list[tuple[str, Callable[[Any], object]]] = [
    ("send(str)", lambda s: s.send("text")),
    ("sendall(str)", lambda s: s.sendall("text")),
    ("send(int)", lambda s: s.send(5)),
    ("send(strided view)", lambda s: s.send(memoryview(b"abcdef")[::2])),
    ("sendall(strided view)", lambda s: s.sendall(memoryview(b"abcdef")[::2])),
    ("shutdown(2**31)", lambda s: s.shutdown(2**31)),
    ("shutdown(-2**31-1)", lambda s: s.shutdown(-(2**31) - 1)),
    ("listen(2**31)", lambda s: s.listen(2**31)),
    ("listen(-2**31-1)", lambda s: s.listen(-(2**31) - 1)),
    ("connect(port 70000)", lambda s: s.connect(("127.0.0.1", 70000))),
    ("connect(str)", lambda s: s.connect("127.0.0.1")),
    ("sendto(bad port)", lambda s: s.sendto(b"x", ("127.0.0.1", -1))),
]


def test_bad_arguments_raise_as_the_stdlib_does(v4: Pair) -> None:
    # Each call on a zt socket raises the exception (type and message) an OS socket in the
    # same state raises: arguments are checked before the socket's state, as in the stdlib.
    server = v4.b.create_server((v4.ip_b, 7391))
    conn = v4.a.create_connection((v4.ip_b, 7391), timeout=10)
    peer, _ = server.accept()
    os_listener = std.create_server(("127.0.0.1", 0))
    os_a = std.create_connection(os_listener.getsockname())
    os_b, _ = os_listener.accept()
    fresh, os_fresh = v4.a.socket(), std.socket()
    closed, os_closed = v4.a.socket(), std.socket()
    closed.close()
    os_closed.close()
    try:
        for state, zsock, osock in (
            ("connected", conn, os_a),
            ("fresh", fresh, os_fresh),
            ("closed", closed, os_closed),
        ):
            for name, call in BAD_CALLS:
                got, want = _raised(call, zsock), _raised(call, osock)
                assert got == want, f"{name} on a {state} socket: zt {got}, the OS {want}"
        with v4.b.socket(AF_INET, SOCK_DGRAM) as zu, std.socket(AF_INET, SOCK_DGRAM) as ou:

            def sendto(s: Any) -> object:
                return s.sendto("text", ("127.0.0.1", 9))

            assert _raised(sendto, zu) == _raised(sendto, ou)
    finally:
        for s in (conn, peer, server, os_a, os_b, os_listener, fresh, os_fresh):
            s.close()


def test_a_network_id_of_the_wrong_type_says_so(v4: Pair) -> None:
    for bad in (None, 1.5, b"8056c2e21c000001", True):
        with pytest.raises(TypeError, match="a network ID is an int or 16 hexadecimal digits"):
            v4.a.join(bad)  # type: ignore[arg-type]


def test_connecting_to_port_0_is_refused_as_by_the_kernel(v4: Pair) -> None:
    with std.socket() as os_sock, pytest.raises(ConnectionRefusedError) as os_err:
        os_sock.connect(("127.0.0.1", 0))
    with v4.a.socket() as s, pytest.raises(ConnectionRefusedError) as zt_err:
        s.connect((v4.ip_b, 0))
    assert zt_err.value.errno == os_err.value.errno == errno.ECONNREFUSED
    with pytest.raises(ConnectionRefusedError):
        v4.a.create_connection((v4.ip_b, 0), timeout=5)
    # Off the overlay, port 0 or not, it is no network of the node's.
    with v4.a.socket() as s, raises_errno(errno.ENETUNREACH):
        s.connect(("203.0.113.9", 0))


def test_a_datagram_larger_than_the_network_carries_is_emsgsize(v4: Pair, v6: Pair) -> None:
    """The stacks do not fragment: a datagram over the network's MTU (2800) less the IP and
    UDP headers is refused with EMSGSIZE, naming the destination, instead of vanishing."""
    for pair, family, most in ((v4, AF_INET, 2800 - 28), (v6, AF_INET6, 2800 - 48)):
        port = 7410 if family == AF_INET6 else 7411
        with pair.b.socket(family, SOCK_DGRAM) as rx, pair.a.socket(family, SOCK_DGRAM) as tx:
            rx.bind((pair.ip_b, port))
            rx.settimeout(10)
            with pytest.raises(OSError, match=f"{port}$") as e:
                tx.sendto(b"x" * (most + 1), (pair.ip_b, port))
            assert e.value.errno == errno.EMSGSIZE and pair.ip_b in str(e.value)
            assert tx.sendto(b"z" * most, (pair.ip_b, port)) == most
            data, _ = rx.recvfrom(65536)
            assert data == b"z" * most


def test_connection_errors_name_the_address(v4: Pair) -> None:
    with pytest.raises(ConnectionRefusedError, match=f"{v4.ip_b}:7398") as e:
        v4.a.create_connection((v4.ip_b, 7398), timeout=10)
    assert e.value.errno == errno.ECONNREFUSED
    with pytest.raises(OSError, match=r"203\.0\.113\.9:80") as unreachable:
        v4.a.create_connection(("203.0.113.9", 80), timeout=5)
    assert unreachable.value.errno == errno.ENETUNREACH


def test_so_linger_is_an_option_zt_does_not_have(v4: Pair) -> None:
    linger = struct.pack("ii", 1, 0)
    for kind in (SOCK_STREAM, SOCK_DGRAM):
        with v4.a.socket(AF_INET, kind) as s:
            with raises_errno(errno.ENOPROTOOPT):
                s.setsockopt(std.SOL_SOCKET, std.SO_LINGER, linger)
            with raises_errno(errno.ENOPROTOOPT):
                s.setsockopt(std.SOL_SOCKET, std.SO_LINGER, 1)
            with raises_errno(errno.ENOPROTOOPT):
                s.getsockopt(std.SOL_SOCKET, std.SO_LINGER, 8)


def test_sendto_on_a_connected_stream_ignores_the_address_as_linux(v4: Pair) -> None:
    with std.create_server(("127.0.0.1", 0)) as os_srv:
        os_c = std.create_connection(os_srv.getsockname(), timeout=10)
        with os_c:
            assert os_c.sendto(b"os", ("203.0.113.9", 1)) == 2
            os_conn, _ = os_srv.accept()
            with os_conn:
                assert os_conn.recv(2) == b"os"
    with v4.b.create_server((v4.ip_b, 7397)) as srv:
        srv.settimeout(10)
        with v4.a.create_connection((v4.ip_b, 7397), timeout=10) as c:
            assert c.sendto(b"zt", ("203.0.113.9", 1)) == 2
            conn, _ = srv.accept()
            with conn:
                conn.settimeout(10)
                assert conn.recv(2) == b"zt"


def test_stopping_a_node_resets_its_connections_and_clears_its_state(tmp_path: Path) -> None:
    """stop() resets the node's TCP connections (a peer blocked in recv() hears it at once,
    as when a process with OS sockets exits), its own sockets then raise OSError(ENETDOWN)
    (not the node's NodeStateError), and it reads offline with no live path."""
    with zt.lab.Lab(home=tmp_path) as lab:
        nwid = lab.network()
        a, b = lab.member(nwid), lab.member(nwid)
        ip_b = lab.ip(b, nwid)
        with b.create_server((ip_b, 7395)) as srv:
            srv.settimeout(10)
            c = a.create_connection((ip_b, 7395), timeout=10)
            conn, _ = srv.accept()
            conn.settimeout(20)
            got: list[object] = []

            def read() -> None:
                try:
                    got.append(conn.recv(10))
                except OSError as e:
                    got.append(e)

            reader = threading.Thread(target=read)
            reader.start()
            time.sleep(0.2)
            assert a.online and any(p.alive for peer in a.peers() for p in peer.paths)
            stopped = time.monotonic()
            a.stop()
            reader.join(15)
            assert not reader.is_alive()
            assert isinstance(got[0], ConnectionResetError), got
            assert time.monotonic() - stopped < 2
            conn.close()
            with raises_errno(errno.ENETDOWN):
                c.send(b"x")
            c.close()
        assert not a.online
        assert not any(p.alive for peer in a.peers() for p in peer.paths)
        for call in (
            lambda: a.create_connection((ip_b, 80), timeout=5),
            lambda: a.create_server(("", 7396)),
            lambda: a.socket(AF_INET, SOCK_DGRAM).sendto(b"x", (ip_b, 9)),
        ):
            with raises_errno(errno.ENETDOWN):
                call()


def test_a_file_from_makefile_outlives_close_as_in_the_stdlib(v4: Pair) -> None:
    """close() with a makefile() file open keeps the connection until the file is closed
    too, as the standard library does (http.client closes the socket, then reads a
    ``Connection: close`` body through its file); text files have ``.mode``."""

    def second_line_after_close(listener: Any, connect: Callable[[], Any]) -> list[bytes]:
        def serve() -> None:
            conn, _ = listener.accept()
            with conn:
                conn.sendall(b"first\n")
                time.sleep(0.2)
                conn.sendall(b"second\n")

        t = threading.Thread(target=serve)
        t.start()
        s = connect()
        f = s.makefile("rb")
        lines = [f.readline()]
        s.close()
        lines.append(f.readline())  # the stdlib: still open until the file closes
        f.close()
        t.join(10)
        with raises_errno(errno.EBADF):
            s.recv(1)  # now closed
        return lines

    with std.create_server(("127.0.0.1", 0)) as ls:
        ls.settimeout(10)
        os_lines = second_line_after_close(
            ls, lambda: std.create_connection(ls.getsockname(), timeout=10)
        )
    with v4.b.create_server((v4.ip_b, 7394)) as zl:
        zl.settimeout(10)
        zt_lines = second_line_after_close(
            zl, lambda: v4.a.create_connection((v4.ip_b, 7394), timeout=10)
        )
    assert zt_lines == os_lines == [b"first\n", b"second\n"]
    with v4.a.socket() as zs, std.socket() as os_s:
        for mode in ("r", "w", "rw"):
            zf, of = zs.makefile(mode), os_s.makefile(mode)
            assert zf.mode == of.mode == mode
            zf.close()
            of.close()


def test_ephemeral_listening_ports_as_the_kernel(v4: Pair) -> None:
    """listen() on port 0, listen() without bind() and create_server((host, 0)) pick a free
    port, as with OS sockets, and take connections on it."""
    with std.socket() as os_l:
        os_l.listen()
        assert os_l.getsockname()[1] != 0
    with std.create_server(("127.0.0.1", 0)) as os_s:
        assert os_s.getsockname()[1] != 0
    b = v4.b
    unbound = b.socket(AF_INET, SOCK_STREAM)
    unbound.listen()
    bound0 = b.socket(AF_INET, SOCK_STREAM)
    bound0.bind((v4.ip_b, 0))
    bound0.listen()
    created = b.create_server(("", 0))
    listeners = (unbound, bound0, created)
    try:
        ports = [s.getsockname()[1] for s in listeners]
        assert all(p != 0 for p in ports) and len(set(ports)) == 3, ports
        assert unbound.getsockname()[0] == "0.0.0.0" and bound0.getsockname()[0] == v4.ip_b
        for s, port in zip(listeners, ports):
            s.settimeout(10)
            with v4.a.create_connection((v4.ip_b, port), timeout=10) as c:
                conn, _ = s.accept()
                with conn:
                    c.sendall(b"hi")
                    conn.settimeout(10)
                    assert conn.recv(2) == b"hi"
    finally:
        for s in listeners:
            s.close()


def test_a_full_accept_queue_keeps_connections_waiting_as_the_kernel(v4: Pair) -> None:
    """A connection beyond listen()'s backlog waits until accept() makes room (as the kernel
    keeps a completed handshake: Linux queues backlog + 1), instead of being closed (its client
    read EOF from a server that never saw it): every client is served."""

    def serve_all(listener: Any, connect: Callable[[], Any]) -> list[bytes]:
        clients = [connect() for _ in range(3)]
        for i, c in enumerate(clients):
            c.sendall(b"x%d" % i)
        time.sleep(0.5)  # every handshake is done before the first accept()
        listener.settimeout(10)
        for _ in clients:
            conn, _ = listener.accept()
            with conn:
                conn.settimeout(10)
                conn.sendall(b"ok" + conn.recv(2))
        answers = []
        for c in clients:
            with c:
                c.settimeout(10)
                answers.append(c.recv(10))
        return answers

    with std.socket() as ls:
        ls.bind(("127.0.0.1", 0))
        ls.listen(2)
        os_answers = serve_all(ls, lambda: std.create_connection(ls.getsockname(), timeout=10))
    with v4.b.socket() as zl:
        zl.bind((v4.ip_b, 7393))
        zl.listen(2)
        zt_answers = serve_all(zl, lambda: v4.a.create_connection((v4.ip_b, 7393), timeout=10))
    assert zt_answers == os_answers == [b"okx%d" % i for i in range(3)]


def test_a_datagram_sent_just_before_close_is_delivered(v4: Pair) -> None:
    """sendto() then close() at once: the datagram still goes out, as with OS sockets (a
    closed socket sends what it took before the close; it was dropped unless the loop had
    sent it already)."""
    with v4.b.socket(AF_INET, SOCK_DGRAM) as rx:
        rx.bind((v4.ip_b, 7392))
        rx.settimeout(10)
        for bound in (False, True):
            for i in range(10):
                tx = v4.a.socket(AF_INET, SOCK_DGRAM)
                if bound:
                    tx.bind((v4.ip_a, 0))
                tx.sendto(b"last words %d" % i, (v4.ip_b, 7392))
                tx.close()
            got = sorted(rx.recv(100) for _ in range(10))
            assert got == sorted(b"last words %d" % i for i in range(10)), (bound, got)


@pytest.mark.skipif(sys.version_info < (3, 11), reason="all_errors is Python 3.11's")
def test_create_connection_all_errors_as_the_stdlib(v4: Pair) -> None:
    group: Any = getattr(builtins, "ExceptionGroup")  # noqa: B009 - Python 3.11+
    connect: Any = std.create_connection  # all_errors: Python 3.11+
    with std.socket() as free:
        free.bind(("127.0.0.1", 0))
        closed_port = free.getsockname()[1]
    with pytest.raises(group) as os_group:
        connect(("127.0.0.1", closed_port), timeout=5, all_errors=True)
    with pytest.raises(group) as zt_group:
        v4.a.create_connection((v4.ip_b, 7391), timeout=5, all_errors=True)
    for g in (os_group.value, zt_group.value):
        assert g.message == "create_connection failed"
        assert [type(e) for e in g.exceptions] == [ConnectionRefusedError]


def test_connecting_to_the_nodes_own_address_says_why_it_cannot(v4: Pair) -> None:
    """No loopback on the overlay: instead of a handshake nobody answers (a long timeout),
    connect() to the node's own address fails at once, saying so."""
    start = time.monotonic()
    with v4.b.create_server((v4.ip_b, 7390)), pytest.raises(OSError, match="own address") as e:
        v4.b.create_connection((v4.ip_b, 7390), timeout=30)
    assert e.value.errno == errno.EADDRNOTAVAIL and time.monotonic() - start < 5
    assert str(e.value).endswith(f": {v4.ip_b}:7390"), e.value


def test_repr_names_descriptor_and_addresses_as_the_stdlib(v4: Pair) -> None:
    with v4.b.create_server((v4.ip_b, 7389)) as srv:
        r = repr(srv)
        assert r.startswith("<zt.socket.socket fd=") and f"laddr=('{v4.ip_b}', 7389)" in r, r
        assert "raddr" not in r and "(listening)" in r, r
        with v4.a.create_connection((v4.ip_b, 7389), timeout=10) as c:
            r = repr(c)
            assert f"raddr=('{v4.ip_b}', 7389)" in r and f"fd={c.fileno()}" in r, r
        r = repr(c)
        assert r.startswith("<zt.socket.socket [closed] fd=-1, family=2, type=1"), r


def test_sendmsg_and_recvmsg_as_the_stdlib(v4: Pair) -> None:
    """Scatter/gather without ancillary data, over TCP and UDP, next to OS sockets."""

    def exchange(pair: tuple[Any, Any], dgram: tuple[Any, Any], to: Any) -> list[object]:
        c, a = pair
        rx, tx = dgram
        out: list[object] = [c.sendmsg([b"ab", memoryview(b"cd"), bytearray(b"e")])]
        a.settimeout(10)
        out.append(a.recvmsg(5))
        out.append(tx.sendmsg([b"hello", b"world"], [], 0, to))
        rx.settimeout(10)
        data, anc, msg_flags, _ = rx.recvmsg(4)
        out.append((data, anc, msg_flags))
        tx.sendmsg([b"scatter"], (), 0, to)
        bufs = [bytearray(3), bytearray(10)]
        n, anc, msg_flags, _ = rx.recvmsg_into(bufs)
        out.append((n, bytes(bufs[0]), bytes(bufs[1][:4]), anc, msg_flags))
        try:
            tx.sendmsg([b"x"], [(std.SOL_SOCKET, 99, b"")], 0, to)
        except OSError as e:
            out.append(e.errno)
        return out

    with std.create_server(("127.0.0.1", 0)) as ls:
        c = std.create_connection(ls.getsockname(), timeout=10)
        a, _ = ls.accept()
        with c, a, std.socket(type=std.SOCK_DGRAM) as rx, std.socket(type=std.SOCK_DGRAM) as tx:
            rx.bind(("127.0.0.1", 0))
            os_out = exchange((c, a), (rx, tx), rx.getsockname())
    with v4.b.create_server((v4.ip_b, 7388)) as zl:
        zl.settimeout(10)
        zc = v4.a.create_connection((v4.ip_b, 7388), timeout=10)
        za, _ = zl.accept()
        zrx, ztx = v4.b.socket(AF_INET, SOCK_DGRAM), v4.a.socket(AF_INET, SOCK_DGRAM)
        with zc, za, zrx, ztx:
            zrx.bind((v4.ip_b, 7388))
            zt_out = exchange((zc, za), (zrx, ztx), (v4.ip_b, 7388))
    assert zt_out == os_out
    assert os_out[1] == (b"abcde", [], 0, None) and os_out[-1] == errno.EINVAL


def test_a_burst_beyond_the_backlog_waits_instead_of_being_refused(v4: Pair) -> None:
    """More clients than the listener's backlog connect at once: as with the kernel, the SYNs
    it has no room for are dropped (counted) and their clients' retries get in once accept()
    makes room; none is refused. The OS socket does the same on loopback."""
    clients = 4  # a backlog of 1 holds 2 (as Linux's): 2 wait for their SYN's retry

    def burst(listener: Any, connect: Callable[[], Any]) -> list[str]:
        outcomes: list[str] = []

        def client() -> None:
            try:
                with connect() as c:
                    c.settimeout(20)
                    outcomes.append("ok" if c.recv(1) == b"!" else "eof")
            except OSError as e:
                outcomes.append(type(e).__name__)

        threads = [threading.Thread(target=client) for _ in range(clients)]
        for t in threads:
            t.start()
        time.sleep(0.3)  # every SYN is out before the first accept()
        listener.settimeout(20)
        for _ in range(clients):
            conn, _ = listener.accept()
            with conn:
                conn.sendall(b"!")
        for t in threads:
            t.join(30)
        return outcomes

    with std.create_server(("127.0.0.1", 0), backlog=1) as os_listener:
        port = os_listener.getsockname()[1]
        os_outcomes = burst(
            os_listener, lambda: std.create_connection(("127.0.0.1", port), timeout=20)
        )
    dropped = v4.b.stats["syns_dropped"]
    with v4.b.create_server((v4.ip_b, 7391), backlog=1) as listener:
        zt_outcomes = burst(listener, lambda: v4.a.create_connection((v4.ip_b, 7391), timeout=20))
    assert os_outcomes == ["ok"] * clients
    assert zt_outcomes == ["ok"] * clients
    assert v4.b.stats["syns_dropped"] > dropped


def test_a_datagram_to_the_nodes_own_address_reaches_its_socket(v4: Pair, v6: Pair) -> None:
    """UDP to one of the node's own overlay addresses is delivered to its socket on that port,
    from that address, as through the kernel's loopback (it went nowhere)."""
    for pair, family, port in ((v4, AF_INET, 7420), (v6, AF_INET6, 7421)):
        with pair.a.socket(family, SOCK_DGRAM) as rx, pair.a.socket(family, SOCK_DGRAM) as tx:
            rx.bind(("", port))
            rx.settimeout(10)
            tx.bind((pair.ip_a, 0))
            assert tx.sendto(b"to myself", (pair.ip_a, port)) == 9
            data, sender = rx.recvfrom(100)
            assert data == b"to myself"
            assert sender[:2] == tx.getsockname()[:2] == (pair.ip_a, tx.getsockname()[1])
            # Unbound sender: from the address it was sent to.
            with pair.a.socket(family, SOCK_DGRAM) as anon:
                anon.sendto(b"again", (pair.ip_a, port))
                data, sender = rx.recvfrom(100)
                assert data == b"again" and sender[0] == pair.ip_a
