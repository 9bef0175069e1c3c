"""TCP through zt's user-space stack between two nodes in this process, over loopback UDP.

Usage::

    python benches/py/bench_local_tcp.py [--mb 512] [--rounds 3] [--rr 2000] [--chunk 1048576]

A root and two nodes run in this process on 127.0.0.1; both nodes join an ad-hoc network and
talk over its 6plane IPv6 addresses. Printed:

* bulk throughput one way (``--mb`` MiB per transfer, ``sendall`` of ``--chunk``-sized bytes):
  the receiver reads with ``recv_into`` into one preallocated ``bytearray``, and with ``recv``
  (a new ``bytes`` per call); median of ``--rounds`` rounds, the process's CPU seconds per GiB
  moved (both nodes, the root and the Python threads: everything in this process), and the CPU
  seconds per GiB of the sending and of the receiving Python thread alone (the socket layer's
  own cost: the calls, the copies between Python objects and the sockets' buffers, waiting);
* full-duplex bulk over one connection (``--mb`` MiB each way at once, a sending and a
  receiving thread at each end: while a reader waits and leads its node's receiving, the
  other threads' sends and acknowledgements go on), aggregate MiB/s;
* 64-byte request/response latency p50/p99 over one connection (``--rr`` round trips after 200
  warm-up ones; the median of the rounds' percentiles).

Everything shares one process (and, on a small machine, the same cores), so the figures
measure the per-byte and per-call costs of the socket layer and the stack rather than a
network. Only traffic to 127.0.0.1.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time

import zt
from _loopback import loopback_planet, refuse_debug_build
from zt.socket import AF_INET6, SOCK_STREAM

PORT = 9100


class Bench:
    def __init__(self, a: zt.Node, b: zt.Node, ip_b: str, args: argparse.Namespace) -> None:
        self.a, self.b, self.ip_b, self.args = a, b, ip_b, args
        self.port = PORT

    def next_port(self) -> int:
        self.port += 1
        return self.port

    def bulk(self, mode: str) -> tuple[float, float, float, float]:
        """One transfer: MiB/s, then CPU s per GiB of the process, the sending thread and the
        receiving thread."""
        total = int(self.args.mb * (1 << 20))
        chunk = self.args.chunk
        port = self.next_port()
        srv = self.b.socket(AF_INET6, SOCK_STREAM)
        srv.bind(("::", port))
        srv.listen(1)
        srv.settimeout(30)
        got = [0]
        recv_cpu = [0.0]
        done = threading.Event()

        def sink() -> None:
            conn, _ = srv.accept()
            with conn:
                conn.settimeout(60)
                cpu0 = time.thread_time()
                n = 0
                if mode == "recv_into":
                    buf = bytearray(chunk)
                    while m := conn.recv_into(buf):
                        n += m
                else:
                    while data := conn.recv(chunk):
                        n += len(data)
                recv_cpu[0] = time.thread_time() - cpu0
                got[0] = n
            done.set()

        t = threading.Thread(target=sink, daemon=True)
        t.start()
        payload = bytes(range(256)) * (chunk // 256) + bytes(chunk % 256)
        with self.a.socket(AF_INET6, SOCK_STREAM) as c:
            c.settimeout(60)
            c.connect((self.ip_b, port))
            cpu0 = time.process_time()
            send0 = time.thread_time()
            t0 = time.perf_counter()
            left = total
            while left > 0:
                if left >= chunk:
                    c.sendall(payload)
                    left -= chunk
                else:
                    c.sendall(payload[:left])
                    left = 0
            send_cpu = time.thread_time() - send0
            c.shutdown(zt.socket.SHUT_WR)
            if not done.wait(120):
                raise RuntimeError("the receiver did not finish")
            elapsed = time.perf_counter() - t0
            cpu = time.process_time() - cpu0
        t.join(10)
        srv.close()
        if got[0] != total:
            raise RuntimeError(f"received {got[0]} of {total} bytes")
        gib = total / (1 << 30)
        return total / (1 << 20) / elapsed, cpu / gib, send_cpu / gib, recv_cpu[0] / gib

    def duplex(self) -> float:
        """Aggregate MiB/s of ``--mb`` MiB sent each way at once over one connection."""
        total = int(self.args.mb * (1 << 20))
        chunk = self.args.chunk
        port = self.next_port()
        payload = bytes(range(256)) * (chunk // 256) + bytes(chunk % 256)
        got: dict[str, int] = {}
        with self.b.socket(AF_INET6, SOCK_STREAM) as srv:
            srv.bind(("::", port))
            srv.listen(1)
            srv.settimeout(30)
            with self.a.socket(AF_INET6, SOCK_STREAM) as c:
                c.settimeout(60)
                c.connect((self.ip_b, port))
                s, _ = srv.accept()
                with s:
                    s.settimeout(60)

                    def send(sock: zt.socket.socket) -> None:
                        left = total
                        while left > 0:
                            n = min(left, chunk)
                            sock.sendall(payload[:n] if n < chunk else payload)
                            left -= n

                    def recv(sock: zt.socket.socket, key: str) -> None:
                        buf = bytearray(chunk)
                        n = 0
                        while n < total and (m := sock.recv_into(buf)):
                            n += m
                        got[key] = n

                    threads = [
                        threading.Thread(target=send, args=(c,)),
                        threading.Thread(target=send, args=(s,)),
                        threading.Thread(target=recv, args=(c, "a")),
                        threading.Thread(target=recv, args=(s, "b")),
                    ]
                    t0 = time.perf_counter()
                    for t in threads:
                        t.start()
                    for t in threads:
                        t.join(180)
                    elapsed = time.perf_counter() - t0
        if got != {"a": total, "b": total}:
            raise RuntimeError(f"received {got} of {total} bytes each way")
        return 2 * total / (1 << 20) / elapsed

    def rr(self, count: int) -> tuple[float, float]:
        """(p50, p99) in ms of ``count`` 64-byte round trips on one connection."""
        port = self.next_port()
        srv = self.b.socket(AF_INET6, SOCK_STREAM)
        srv.bind(("::", port))
        srv.listen(1)
        srv.settimeout(30)

        def echo() -> None:
            conn, _ = srv.accept()
            with conn:
                conn.settimeout(60)
                while data := conn.recv(64):
                    conn.sendall(data)

        t = threading.Thread(target=echo, daemon=True)
        t.start()
        msg = bytes(64)
        times = []
        with self.a.socket(AF_INET6, SOCK_STREAM) as c:
            c.settimeout(60)
            c.connect((self.ip_b, port))
            for _ in range(200 + count):
                t0 = time.perf_counter()
                c.sendall(msg)
                _recv_exact(c, 64)
                times.append(time.perf_counter() - t0)
            c.shutdown(zt.socket.SHUT_WR)
        t.join(10)
        srv.close()
        ms = sorted(x * 1000 for x in times[200:])
        return ms[len(ms) // 2], ms[min(len(ms) - 1, int(len(ms) * 0.99))]


def _recv_exact(c: zt.socket.socket, n: int) -> int:
    got = 0
    while got < n:
        data = c.recv(n - got)
        if not data:
            raise RuntimeError("EOF during a round trip")
        got += len(data)
    return got


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    p.add_argument("--mb", type=float, default=512.0, help="MiB per bulk transfer")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--rr", type=int, default=2000, help="64-byte round trips per round")
    p.add_argument("--chunk", type=int, default=1 << 20, help="bytes per send/recv call")
    args = p.parse_args()
    if refuse_debug_build():
        return 2
    root_opts, opts = loopback_planet()

    nwid = zt.network.adhoc_network_id(PORT, PORT + 999)
    with (
        zt.Node(root_opts) as root,
        zt.Node(opts()) as a,
        zt.Node(opts()) as b,
    ):
        del root
        for n in (a, b):
            n.join(nwid)
            n.wait_network(nwid, 20)
        ip_a = str(zt.network.sixplane_address(nwid, a.address))
        ip_b = str(zt.network.sixplane_address(nwid, b.address))
        deadline = time.monotonic() + 20
        for node, ip in ((a, ip_b), (b, ip_a)):
            while node.ping(nwid, ip, 1.0) is None:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"no ping answer from {ip}")
        bench = Bench(a, b, ip_b, args)
        print(f"zt {zt.__version__} ({zt.BUILD_PROFILE}), {args.mb:g} MiB per transfer")
        for mode in ("recv_into", "recv"):
            figs = []
            for r in range(args.rounds):
                fig = bench.bulk(mode)
                figs.append(fig)
                print(
                    f"  round {r + 1} bulk {mode:9} {fig[0]:8.1f} MiB/s  {fig[1]:6.2f} CPU s/GiB"
                    f"  (sender thread {fig[2]:.3f}, receiver thread {fig[3]:.3f})"
                )
            med = [statistics.median(f[i] for f in figs) for i in range(4)]
            print(
                f"bulk {mode:9}: median {med[0]:.1f} MiB/s "
                f"({min(f[0] for f in figs):.1f}-{max(f[0] for f in figs):.1f}), "
                f"{med[1]:.2f} CPU s/GiB; sender thread {med[2]:.3f}, receiver thread "
                f"{med[3]:.3f} CPU s/GiB",
                flush=True,
            )
        duplex = []
        for r in range(args.rounds):
            duplex.append(bench.duplex())
            print(f"  round {r + 1} full-duplex bulk {duplex[-1]:8.1f} MiB/s (both ways)")
        print(
            f"full-duplex bulk: median {statistics.median(duplex):.1f} MiB/s "
            f"({min(duplex):.1f}-{max(duplex):.1f}), both ways together",
            flush=True,
        )
        lat = []
        for r in range(args.rounds):
            p50, p99 = bench.rr(args.rr)
            lat.append((p50, p99))
            print(f"  round {r + 1} 64-byte RR p50 {p50:.3f} ms  p99 {p99:.3f} ms")
        print(
            f"64-byte RR: p50 {statistics.median(x[0] for x in lat):.3f} ms, "
            f"p99 {statistics.median(x[1] for x in lat):.3f} ms"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
