"""A zt node that runs socket commands for the namespace tests and benchmarks:

    python tests/netns/ztagent.py PLANET HOME EXCHANGE_DIR NWID NAME [TIMEOUT_S]

It joins NWID, writes ``NAME.joined.json``, waits until the network is OK with an IPv4 and an
IPv6 address, writes ``NAME.ready.json`` and runs the commands of :mod:`agentproto` (which
see) until told to stop; then prints one JSON report on stdout.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import socket
import sys
import threading
import time
from ipaddress import ip_address
from pathlib import Path
from typing import Any, Callable

import zt
from zt import asyncio as zt_asyncio
from zt import socket as zsock

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run as a script: the repo root

from tests.netns import agentproto as proto

Json = dict[str, Any]
Listening = Callable[[Json], None]
RECV_BUF = 256 << 10
SEND_BLOCK = 1 << 20


def rss_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def cpu_s() -> float:
    t = os.times()
    return t.user + t.system


class Deadline:
    """An optional deadline (``deadline_s`` from now; None: none) for a command's socket calls."""

    def __init__(self, seconds: Any) -> None:
        self.on = seconds is not None
        self.at = time.monotonic() + float(seconds) if self.on else 0.0

    def bound(self, timeout: float) -> float:
        """A socket timeout no later than the deadline (a tiny one once it has passed)."""
        if not self.on:
            return timeout
        return max(0.001, min(timeout, self.at - time.monotonic()))

    def passed(self) -> bool:
        return self.on and time.monotonic() >= self.at


class Agent:
    def __init__(self, node: zt.Node, nwid: str, info: zt.NetworkInfo) -> None:
        self.node = node
        self.nwid = nwid
        assert info.ipv4 is not None
        self.ipv4 = str(info.ipv4.ip)
        self.ipv6 = str(info.ipv6_addresses[0].ip)
        self.stop = threading.Event()

    def family(self, args: Json) -> int:
        return zsock.AF_INET if int(args["family"]) == 4 else zsock.AF_INET6

    def own(self, args: Json) -> str:
        return self.ipv4 if int(args["family"]) == 4 else self.ipv6

    def listener(self, args: Json, kind: int = zsock.SOCK_STREAM) -> zsock.socket:
        s = self.node.socket(self.family(args), kind)
        s.bind((self.own(args), int(args["port"])))
        if kind == zsock.SOCK_STREAM:
            s.listen(int(args.get("backlog", 128)))
        return s

    def connect(self, args: Json) -> zsock.socket:
        host = str(args["host"])
        fam = zsock.AF_INET6 if ":" in host else zsock.AF_INET
        s = self.node.socket(fam, zsock.SOCK_STREAM)
        s.settimeout(float(args.get("timeout_s", 30.0)))
        if args.get("cc"):
            s.setsockopt(socket.IPPROTO_TCP, zsock.TCP_CONGESTION, str(args["cc"]).encode())
        s.connect((host, int(args["port"])))
        return s

    # -- commands ----------------------------------------------------------------------------

    def sink(self, args: Json, listening: Listening) -> Json:
        timeout = float(args.get("timeout_s", 30.0))
        report: Json = {"bytes": 0}
        with self.listener(args) as ls:
            ls.settimeout(float(args.get("accept_timeout_s", 120.0)))
            listening({"address": self.own(args)})
            conn, peer = ls.accept()
        report["peer"] = list(peer)
        digest = hashlib.sha256() if args.get("digest", True) else None
        gaps = proto.Gaps(float(args.get("stall_s", proto.STALL_S)))
        buf = bytearray(RECV_BUF)
        view = memoryview(buf)
        cpu0, started = cpu_s(), None
        deadline = Deadline(args.get("deadline_s"))
        with conn:
            conn.settimeout(timeout)
            try:
                while True:
                    if deadline.on:
                        conn.settimeout(deadline.bound(timeout))
                    n = conn.recv_into(buf)
                    if started is None:
                        started = time.monotonic()
                    if n == 0:
                        break
                    if digest is not None:
                        digest.update(view[:n])
                    report["bytes"] += n
                    gaps.note(report["bytes"])
                report["receiver_tcp_info"] = tcp_info(conn)
                if digest is not None:
                    conn.settimeout(deadline.bound(timeout))
                    conn.sendall(digest.digest())
                    report["sha256"] = digest.hexdigest()
            except OSError as exc:
                report["error"] = f"{type(exc).__name__}: {exc}"
                report["errno"] = exc.errno
                report["deadline"] = deadline.passed()
                report["error_after_last_data_s"] = (
                    None if gaps.last is None else time.monotonic() - gaps.last
                )
                report.update(max_gap_s=gaps.max_gap, stalls=gaps.stalls)
                return report
        elapsed = time.monotonic() - (started or time.monotonic())
        report.update(seconds=elapsed, max_gap_s=gaps.max_gap, stalls=gaps.stalls,
                      cpu_s=cpu_s() - cpu0, timeline=gaps.timeline)  # fmt: skip
        return report

    def source(self, args: Json, listening: Listening) -> Json:
        total, seed = int(args["bytes"]), int(args.get("seed", 1))
        report: Json = {"sent": 0}
        digest = hashlib.sha256()
        check = bool(args.get("digest", True))
        gaps = proto.Gaps()
        s = self.connect(args)
        timeout = float(args.get("timeout_s", 30.0))
        deadline = Deadline(args.get("deadline_s"))
        cpu0, started = cpu_s(), time.monotonic()
        with s:
            try:
                for offset in range(0, total, SEND_BLOCK):
                    if deadline.on:
                        s.settimeout(deadline.bound(timeout))
                    size = min(SEND_BLOCK, total - offset)
                    block = b"".join(
                        proto.stream_chunk(seed, o, min(proto.CHUNK, offset + size - o))
                        for o in range(offset, offset + size, proto.CHUNK)
                    )
                    s.sendall(block)
                    if check:
                        digest.update(block)
                    report["sent"] += size
                    gaps.note()
                s.shutdown(zsock.SHUT_WR)
                answer = b""
                while len(answer) < proto.DIGEST_LEN:
                    if deadline.on:
                        s.settimeout(deadline.bound(timeout))
                    more = s.recv(proto.DIGEST_LEN - len(answer))
                    if not more:
                        break
                    answer += more
                if not check:
                    answer = digest.digest() if answer == b"" else b"unexpected data"
            except OSError as exc:
                report["error"] = f"{type(exc).__name__}: {exc}"
                report["errno"] = exc.errno
                report["deadline"] = deadline.passed()
                report["seconds"] = time.monotonic() - started
                report["error_after_last_progress_s"] = (
                    None if gaps.last is None else time.monotonic() - gaps.last
                )
                report["tcp_info"] = tcp_info(s)
                return report
            report["tcp_info"] = tcp_info(s)
        report.update(proto.source_figures(started, total, answer == digest.digest(), gaps))
        report["cpu_s"] = cpu_s() - cpu0
        return report

    def echo_server(self, args: Json, listening: Listening) -> Json:
        if args.get("mode") == "threads":
            return self.echo_server_threads(args, listening)
        wanted = int(args["conns"])
        served: list[int] = []
        errors: list[str] = []

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            moved = 0
            try:
                while data := await reader.read(65536):
                    writer.write(data)
                    await writer.drain()
                    moved += len(data)
            except OSError as exc:
                errors.append(f"{type(exc).__name__}: {exc}")
            finally:
                writer.close()
                served.append(moved)

        async def main() -> None:
            host = self.own(args)
            server = await zt_asyncio.start_server(handle, self.node, host, int(args["port"]))
            listening({"address": host})
            deadline = time.monotonic() + float(args.get("timeout_s", 120.0))
            while len(served) < wanted and not self.stop.is_set():
                if time.monotonic() > deadline:
                    errors.append(f"served {len(served)} of {wanted} before the timeout")
                    break
                await asyncio.sleep(0.02)
            server.close()

        asyncio.run(main())
        result: Json = proto.with_errors({"conns": len(served), "bytes": sum(served)}, errors)
        return result

    def echo_server_threads(self, args: Json, listening: Listening) -> Json:
        """The echo server with a blocking socket and a thread per connection (as libzt's)."""
        wanted = int(args["conns"])
        served: list[int] = []
        errors: list[str] = []
        threads: list[threading.Thread] = []

        def echo(conn: zsock.socket) -> None:
            moved = 0
            buf = bytearray(65536)
            with conn:
                try:
                    while n := conn.recv_into(buf):
                        conn.sendall(memoryview(buf)[:n])
                        moved += n
                except OSError as exc:
                    errors.append(f"{type(exc).__name__}: {exc}")
            served.append(moved)

        deadline = time.monotonic() + float(args.get("timeout_s", 120.0))
        with self.listener(args) as ls:
            ls.settimeout(0.5)
            listening({"address": self.own(args)})
            while len(threads) < wanted and time.monotonic() < deadline:
                try:
                    conn, _ = ls.accept()
                except TimeoutError:
                    continue
                conn.settimeout(60)
                if args.get("arm"):
                    conn.fileno()
                t = threading.Thread(target=echo, args=(conn,), daemon=True)
                t.start()
                threads.append(t)
        result: Json = proto.echo_served(threads, deadline, served, wanted, errors)
        return result

    def echo_clients(self, args: Json, listening: Listening) -> Json:
        host, port = str(args["host"]), int(args["port"])
        count, messages = int(args["clients"]), int(args["messages"])
        low, high = int(args.get("min_size", 64)), int(args.get("max_size", 2048))

        async def client(i: int) -> int:
            reader, writer = await zt_asyncio.open_connection(self.node, host, port)
            moved = 0
            try:
                for seq in range(messages):
                    msg = proto.message(seq + i * messages, proto.message_size(seq, low, high))
                    writer.write(msg)
                    echo = await asyncio.wait_for(reader.readexactly(len(msg)), 30)
                    if echo != msg:
                        raise ValueError(f"client {i}: echo {seq} differs")
                    moved += len(msg)
            finally:
                writer.close()
            return moved

        async def main() -> list[Any]:
            return await asyncio.gather(*(client(i) for i in range(count)), return_exceptions=True)

        started = time.monotonic()
        outcomes = asyncio.run(main())
        errors = [f"{type(o).__name__}: {o}" for o in outcomes if isinstance(o, BaseException)]
        report = {
            "ok": sum(1 for o in outcomes if isinstance(o, int)),
            "bytes": sum(o for o in outcomes if isinstance(o, int)),
            "seconds": time.monotonic() - started,
        }
        result: Json = proto.with_errors(report, errors)
        return result

    def rr(self, args: Json, listening: Listening) -> Json:
        size, count = int(args.get("size", 64)), int(args["count"])
        msg = b"r" * size
        rtts: list[float] = []
        buf = bytearray(size)
        view = memoryview(buf)
        with self.connect(args) as s:
            if args.get("arm"):
                s.fileno()  # the readiness descriptor now mirrors the socket (its cost)
            for _ in range(count):
                t0 = time.perf_counter()
                s.sendall(msg)
                got = 0
                while got < size:
                    n = s.recv_into(view[got:])
                    if n == 0:
                        raise ConnectionError("echo server closed")
                    got += n
                rtts.append(time.perf_counter() - t0)
        if bytes(buf) != msg:
            raise ValueError("last echo differs")
        report: Json = proto.rtt_report(rtts)
        return report

    def rr_async(self, args: Json, listening: Listening) -> Json:
        """``rr`` on zt.asyncio streams (the readiness descriptors drive the event loop)."""
        size, count = int(args.get("size", 64)), int(args["count"])
        msg = b"r" * size

        async def main() -> list[float]:
            reader, writer = await zt_asyncio.open_connection(
                self.node, str(args["host"]), int(args["port"])
            )
            rtts: list[float] = []
            try:
                for _ in range(count):
                    t0 = time.perf_counter()
                    writer.write(msg)
                    if await reader.readexactly(size) != msg:
                        raise ValueError("echo differs")
                    rtts.append(time.perf_counter() - t0)
            finally:
                writer.close()
            return rtts

        report: Json = proto.rtt_report(asyncio.run(main()))
        return report

    def hold(self, args: Json, listening: Listening) -> Json:
        """Opens ``conns`` connections (one 64-byte echo each), holds them ``hold_s``."""
        socks = []
        try:
            for _ in range(int(args["conns"])):
                s = self.connect(args)
                socks.append(s)
                s.sendall(b"h" * 64)
                got = 0
                while got < 64:
                    got += len(s.recv(64 - got) or b"!" * 64)
            listening({"open": len(socks), "rss_kb": rss_kb()})
            time.sleep(float(args.get("hold_s", 3.0)))
        finally:
            for s in socks:
                s.close()
        return {"held": len(socks)}

    def udp_echo(self, args: Json, listening: Listening) -> Json:
        """Echoes until ``idle_s`` without a datagram (after the first) or the timeout."""
        answered, seqs = 0, set()
        idle = float(args.get("idle_s", 3.0))
        deadline = time.monotonic() + float(args.get("timeout_s", 120.0))
        last = None
        with self.listener(args, zsock.SOCK_DGRAM) as s:
            s.settimeout(0.2)
            listening({"address": self.own(args)})
            while time.monotonic() < deadline and not self.stop.is_set():
                if last is not None and time.monotonic() - last > idle:
                    break
                try:
                    data, peer = s.recvfrom(65535)
                except TimeoutError:
                    continue
                s.sendto(data, peer)
                answered += 1
                seqs.add(data[:4])
                last = time.monotonic()
        return {"answered": answered, "distinct": len(seqs)}

    def udp_client(self, args: Json, listening: Listening) -> Json:
        host, port = str(args["host"]), int(args["port"])
        count, size = int(args["count"]), int(args.get("size", 512))
        fam = zsock.AF_INET6 if ":" in host else zsock.AF_INET
        rtts: list[float] = []
        retries = 0
        unanswered: list[int] = []
        begun = time.perf_counter()
        first: float | None = None
        with self.node.socket(fam, zsock.SOCK_DGRAM) as s:
            s.settimeout(1.0)
            for seq in range(count):
                msg = proto.message(seq, size)
                for _attempt in range(int(args.get("attempts", 5))):
                    t0 = time.perf_counter()
                    s.sendto(msg, (host, port))
                    try:
                        while True:
                            data, peer = s.recvfrom(65535)
                            if data == msg:
                                break
                    except TimeoutError:
                        retries += 1
                        continue
                    rtts.append(time.perf_counter() - t0)
                    first = first or time.perf_counter() - begun
                    if ip_address(peer[0]) != ip_address(host) or int(peer[1]) != port:
                        raise ValueError(f"answer from {peer}, not {host}:{port}")
                    break
                else:
                    unanswered.append(seq)
        report = proto.rtt_report(rtts) if rtts else {}
        report.update(answered=len(rtts), retries=retries, unanswered=unanswered, first_s=first)
        report["error"] = None if len(rtts) == count else f"{count - len(rtts)} unanswered"
        return report

    def stats(self, args: Json, listening: Listening) -> Json:
        """The node's counters (datagrams in and out, drops by reason, send errors)."""
        return {"stats": self.node.stats}

    def handlers(self) -> dict[str, Any]:
        return {
            "stats": self.stats,
            "sink": self.sink,
            "source": self.source,
            "echo_server": self.echo_server,
            "echo_clients": self.echo_clients,
            "rr": self.rr,
            "rr_async": self.rr_async,
            "hold": self.hold,
            "udp_echo": self.udp_echo,
            "udp_client": self.udp_client,
        }


def tcp_info(s: zsock.socket) -> Json | None:
    """A connection's TCP figures (``zt.socket.tcp_info``), if the socket still has them."""
    try:
        return s.tcp_info()
    except OSError:
        return None


def wait_configured(node: zt.Node, nwid: str, deadline: float) -> zt.NetworkInfo:
    while True:
        net = node.network(nwid)
        if net is not None and net.status == "OK" and net.ipv4 is not None and net.ipv6 is not None:
            return net
        if time.monotonic() > deadline:
            raise TimeoutError(f"network not OK with IPv4 and IPv6 addresses: {net}")
        time.sleep(0.05)


def main() -> int:
    planet, home, exchange_dir, nwid, name = sys.argv[1:6]
    timeout = float(sys.argv[6]) if len(sys.argv) > 6 else 300.0
    exchange = Path(exchange_dir)
    deadline = time.monotonic() + timeout
    report: Json = {"error": None, "name": name}
    node = zt.Node(zt.NodeOptions(store=home, planet=Path(planet), port=9993))
    try:
        node.start(timeout=60)
        node.wait_online(30)
        node.join(nwid)
        proto.publish(exchange, f"{name}.joined.json", {"node_id": node.address})
        info = wait_configured(node, nwid, deadline)
        agent = Agent(node, nwid, info)
        proto.publish(
            exchange,
            f"{name}.ready.json",
            {
                "node_id": node.address,
                "ipv4": agent.ipv4,
                "ipv6": agent.ipv6,
                "pid": os.getpid(),
                "rss_kb": rss_kb(),
            },
        )
        report["commands"] = proto.serve_commands(exchange, name, agent.handlers(), deadline)
        agent.stop.set()
        report["drops"] = node.stats.get("drops")
    except Exception as exc:
        report["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        node.close()
    print(json.dumps(report), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
