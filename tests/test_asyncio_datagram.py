"""zt.asyncio.create_datagram_endpoint: asyncio datagram transports on overlay UDP sockets."""

from __future__ import annotations

import asyncio
import errno
import hashlib
import select
import socket as std
from collections.abc import Awaitable
from typing import Any, Callable, Optional, TypeVar

import pytest

import zt
import zt.asyncio
from zt.socket import AF_INET, AF_INET6, SOCK_DGRAM, SOCK_STREAM

from .overlay import Pair, raises_errno

T = TypeVar("T")
P = TypeVar("P", bound=asyncio.DatagramProtocol)


def run(coro: Callable[[], Awaitable[T]]) -> T:
    async def main() -> T:
        return await asyncio.wait_for(coro(), 120)

    return asyncio.run(main())


class Echo(asyncio.DatagramProtocol):
    """Sends every datagram back to its sender."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.DatagramTransport)
        self.transport = transport

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        self.transport.sendto(data, addr)


class Recorder(asyncio.DatagramProtocol):
    """Records what the transport tells it; ``changed`` is set on every call."""

    def __init__(self) -> None:
        self.got: list[tuple[bytes, tuple[Any, ...]]] = []
        self.errors: list[Exception] = []
        self.lost: list[Optional[Exception]] = []
        self.made = 0
        self.paused = 0
        self.resumed = 0
        self.changed = asyncio.Event()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.made += 1
        self.changed.set()

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        self.got.append((data, addr))
        self.changed.set()

    def error_received(self, exc: Exception) -> None:
        self.errors.append(exc)
        self.changed.set()

    def connection_lost(self, exc: Optional[Exception]) -> None:
        self.lost.append(exc)
        self.changed.set()

    def pause_writing(self) -> None:
        self.paused += 1
        self.changed.set()

    def resume_writing(self) -> None:
        self.resumed += 1
        self.changed.set()

    async def until(self, cond: Callable[[], bool], timeout: float) -> bool:
        """Whether ``cond()`` holds within ``timeout`` (checked whenever something happens)."""
        try:
            await asyncio.wait_for(self._until(cond), timeout)
        except asyncio.TimeoutError:
            return cond()
        return True

    async def _until(self, cond: Callable[[], bool]) -> None:
        while not cond():
            self.changed.clear()
            await self.changed.wait()


def payload(i: int) -> bytes:
    """Datagram ``i``: its number, then 0-1399 bytes derived from it."""
    size = (i * 389) % 1400
    body = hashlib.sha256(i.to_bytes(4, "big")).digest() * (size // 32 + 1)
    return i.to_bytes(4, "big") + body[:size]


async def exchange(
    t: asyncio.DatagramTransport,
    p: Recorder,
    n: int,
    to: Optional[tuple[Any, ...]] = None,
    batch: int = 100,
) -> int:
    """Sends datagrams 0..n-1 in batches, resending the unanswered ones of a batch, until each
    has come back; the number of resends."""
    seen: set[int] = set()
    done = 0
    resends = 0

    wanted = range(0)

    def complete() -> bool:
        nonlocal done
        while done < len(p.got):
            seen.add(int.from_bytes(p.got[done][0][:4], "big"))
            done += 1
        return all(i in seen for i in wanted)

    for start in range(0, n, batch):
        wanted = range(start, min(n, start + batch))
        for attempt in range(20):
            if complete():
                break
            missing = [i for i in wanted if i not in seen]
            resends += len(missing) if attempt else 0
            for i in missing:
                t.sendto(payload(i), to)
            await p.until(complete, 1.0)
        else:
            pytest.fail(f"datagrams of {wanted} never came back")
    return resends


async def connected_to(
    v6: Pair, server: Callable[[], P], port: int
) -> tuple[zt.asyncio.DatagramTransport, P, zt.asyncio.DatagramTransport, Recorder]:
    """An endpoint of ``server`` on b's ``port`` (any IPv6 address), and a :class:`Recorder`
    endpoint on a's ``port + 1`` connected to it: (server transport, server protocol, client
    transport, client protocol)."""
    st, sp = await zt.asyncio.create_datagram_endpoint(
        v6.b, server, local_addr=("", port), family=AF_INET6
    )
    ct, cp = await zt.asyncio.create_datagram_endpoint(
        v6.a, Recorder, local_addr=("", port + 1), remote_addr=(v6.ip_b, port)
    )
    return st, sp, ct, cp


def test_echo_both_ways_with_many_datagrams_over_ipv6(v6: Pair) -> None:
    async def main() -> None:
        st, _, ct, cp = await connected_to(v6, Echo, 7450)
        assert cp.made == 1, "connection_made() ran before the endpoint was returned"
        assert isinstance(ct, asyncio.DatagramTransport)  # a subclass of asyncio's
        assert ct.get_extra_info("sockname") == ("::", 7451, 0, 0)
        assert ct.get_extra_info("peername") == (v6.ip_b, 7450, 0, 0)
        assert st.get_extra_info("peername") is None
        sock = ct.get_extra_info("socket")
        assert isinstance(sock, zt.socket.socket) and sock.type == SOCK_DGRAM
        resends = await exchange(ct, cp, 2000)
        assert resends < 200, f"{resends} resends"
        for data, addr in cp.got:
            assert data == payload(int.from_bytes(data[:4], "big"))
            assert addr == (v6.ip_b, 7450, 0, 0)
        assert cp.errors == [] and cp.paused == cp.resumed
        ct.close()
        st.close()
        assert await cp.until(lambda: cp.lost == [None], 5)
        assert sock.fileno() == -1

    run(main)


def test_unconnected_endpoints_over_ipv4(v4: Pair) -> None:
    async def main() -> None:
        # The family comes from the IPv4 literal.
        st, _ = await zt.asyncio.create_datagram_endpoint(v4.b, Echo, local_addr=("0.0.0.0", 7460))
        ct, cp = await zt.asyncio.create_datagram_endpoint(
            v4.a, Recorder, local_addr=(v4.ip_a, 7461)
        )
        assert ct.get_extra_info("socket").family == AF_INET
        assert ct.get_extra_info("peername") is None
        await exchange(ct, cp, 300, to=(v4.ip_b, 7460))
        assert {addr for _, addr in cp.got} == {(v4.ip_b, 7460)}
        ct.close()
        st.close()

    run(main)


def test_pause_writing_while_the_queue_is_full_then_abort(v4: Pair) -> None:
    """198.18.1.1 is on the network but nobody answers ARP for it: the stack holds the
    datagrams, the socket's send queue fills, and the transport buffers and pauses."""

    async def main() -> None:
        s = v4.a.socket(AF_INET, SOCK_DGRAM)
        s.setsockopt(std.SOL_SOCKET, std.SO_SNDBUF, 4096)
        s.bind(("", 7470))
        t, p = await zt.asyncio.create_datagram_endpoint(v4.a, Recorder, sock=s)
        assert t.get_write_buffer_limits() == (16384, 65536)
        t.set_write_buffer_limits(high=8192)
        assert t.get_write_buffer_limits() == (2048, 8192)
        for i in range(1000):
            t.sendto(b"%04d" % i + b"\0" * 996, ("198.18.1.1", 9))
        assert p.paused == 1 and p.resumed == 0
        size = t.get_write_buffer_size()
        assert size > 8192
        t.close()
        assert t.is_closing()
        t.sendto(b"ignored", ("198.18.1.1", 9))
        assert t.get_write_buffer_size() == size
        # close() waits for the buffer to drain, which it cannot here.
        assert not await p.until(lambda: bool(p.lost), 0.3)
        t.abort()
        assert t.get_write_buffer_size() == 0
        assert await p.until(lambda: bool(p.lost), 5)
        await asyncio.sleep(0)
        assert p.lost == [None] and p.errors == []
        assert s.fileno() == -1

    run(main)


def test_resume_writing_once_the_queue_drains(v6: Pair) -> None:
    async def main() -> None:
        rt, rp = await zt.asyncio.create_datagram_endpoint(
            v6.b, Recorder, local_addr=(v6.ip_b, 7480)
        )
        s = v6.a.socket(AF_INET6, SOCK_DGRAM)
        s.setsockopt(std.SOL_SOCKET, std.SO_SNDBUF, 4096)
        s.bind(("", 7481))
        t, p = await zt.asyncio.create_datagram_endpoint(v6.a, Recorder, sock=s)
        t.set_write_buffer_limits(high=16384, low=4096)
        # While the node's loop thread is busy, datagrams queue (an idle loop lets the
        # sending thread send them at once).
        v6.a._handle().stall(2.0)
        sent = 0
        while not p.paused and sent < 1000:
            t.sendto(b"\1" * 1400, (v6.ip_b, 7480))
            sent += 1
        assert p.paused == 1, f"no pause after {sent} datagrams"
        assert sent < 20  # 4 KiB in the socket, 16 KiB in the transport
        assert t.get_write_buffer_size() > 16384
        assert await p.until(lambda: p.resumed == 1, 10)
        assert t.get_write_buffer_size() <= 4096
        assert await rp.until(lambda: len(rp.got) > 0, 10)
        t.close()
        rt.close()
        assert await p.until(lambda: p.lost == [None], 10)
        assert await rp.until(lambda: rp.lost == [None], 10)

    run(main)


def test_errors_go_to_error_received_and_bad_arguments_raise(v6: Pair) -> None:
    async def main() -> None:
        st, _ = await zt.asyncio.create_datagram_endpoint(v6.b, Echo, local_addr=("::", 7490))
        ct, cp = await zt.asyncio.create_datagram_endpoint(
            v6.a, Recorder, local_addr=("", 7491), remote_addr=(v6.ip_b, 7490)
        )
        ut, up = await zt.asyncio.create_datagram_endpoint(
            v6.a, Recorder, local_addr=("", 7492), family=AF_INET6
        )
        ct.sendto(b"\0" * 70_000)
        ut.sendto(b"nowhere")  # unconnected and no address
        ut.sendto(b"v4", ("198.18.0.1", 7490))  # IPv4 on an AF_INET6 socket
        assert [getattr(e, "errno", None) for e in cp.errors] == [errno.EMSGSIZE]
        assert getattr(up.errors[0], "errno", None) == errno.EDESTADDRREQ
        assert isinstance(up.errors[1], std.gaierror)
        # The caller's mistakes raise and leave the transport up.
        with pytest.raises(ValueError, match="Invalid address"):
            ct.sendto(b"x", (v6.ip_a, 7490))
        with pytest.raises(TypeError, match="bytes-like"):
            ct.sendto("text")  # type: ignore[arg-type]
        with pytest.raises(TypeError):
            ut.sendto(b"x", "not a tuple")
        assert not ct.is_closing() and not ut.is_closing()
        # The peer's address in another accepted form is the peer.
        ct.sendto(b"\0\0\0\0still works", (v6.ip_b, 7490, 0, 0))
        assert await cp.until(lambda: bool(cp.got), 10)
        assert cp.got[0] == (b"\0\0\0\0still works", (v6.ip_b, 7490, 0, 0))
        for t in (ct, ut, st):
            t.close()
        assert await cp.until(lambda: bool(cp.lost), 5)
        assert await up.until(lambda: bool(up.lost), 5)

        ep = zt.asyncio.create_datagram_endpoint
        with pytest.raises(ValueError, match="unexpected address family"):
            await ep(v6.a, Recorder)
        with pytest.raises(ValueError, match="address family"):
            await ep(v6.a, Recorder, local_addr=("", 7493))
        with pytest.raises(ValueError, match="can not get address information"):
            await ep(v6.a, Recorder, local_addr=("::", 7493), remote_addr=("198.18.0.1", 1))
        with pytest.raises(ValueError, match="can not get address information"):
            await ep(v6.a, Recorder, local_addr=("::", 7493), family=AF_INET)
        with pytest.raises(std.gaierror):
            await ep(v6.a, Recorder, remote_addr=("example.invalid", 53))
        with pytest.raises(TypeError, match="2-tuple"):
            await ep(v6.a, Recorder, local_addr=("::",))
        with pytest.raises(ValueError, match="SO_REUSEPORT"):
            await ep(v6.a, Recorder, local_addr=("::", 7493), reuse_port=True)
        s = v6.a.socket(AF_INET6, SOCK_DGRAM)
        with pytest.raises(ValueError, match="can not be used when sock"):
            await ep(v6.a, Recorder, local_addr=("::", 7493), sock=s)
        s = v6.a.socket(AF_INET6, SOCK_STREAM)
        with pytest.raises(ValueError, match="UDP Socket was expected"):
            await ep(v6.a, Recorder, sock=s)
        busy, _ = await ep(v6.a, Recorder, local_addr=("::", 7494))
        with raises_errno(errno.EADDRINUSE):
            await ep(v6.a, Recorder, local_addr=("::", 7494))
        busy.close()
        await asyncio.sleep(0)

    run(main)


def test_pause_reading_close_and_limits(v6: Pair) -> None:
    async def main() -> None:
        rt, rp, st, sp = await connected_to(v6, Recorder, 7495)
        assert rt.is_reading()
        rt.pause_reading()
        assert not rt.is_reading()
        st.sendto(b"held")
        # The datagram waits in the socket (its descriptor turns readable), not delivered.
        sock = rt.get_extra_info("socket")
        readable, _, _ = await asyncio.get_running_loop().run_in_executor(
            None, select.select, [sock], [], [], 10
        )
        assert readable
        for _ in range(5):
            await asyncio.sleep(0)
        assert rp.got == []
        rt.resume_reading()
        assert await rp.until(lambda: len(rp.got) == 1, 5)
        assert rp.got == [(b"held", (v6.ip_a, 7496, 0, 0))]
        with pytest.raises(ValueError, match="must be >="):
            st.set_write_buffer_limits(high=1, low=2)
        # close(): connection_lost(None) once, soon after; the socket is closed; later calls
        # are ignored.
        st.close()
        assert st.is_closing() and sp.lost == []
        st.close()
        st.sendto(b"after close")
        assert await sp.until(lambda: bool(sp.lost), 5)
        await asyncio.sleep(0)
        assert sp.lost == [None]
        assert st.get_extra_info("socket").fileno() == -1
        rt.abort()
        assert await rp.until(lambda: rp.lost == [None], 5)

    run(main)
