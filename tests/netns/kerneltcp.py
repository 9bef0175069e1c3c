"""The kernel's TCP as a peer of the namespace benchmarks, run as a script inside a lab host:

    python tests/netns/kerneltcp.py sink --bind IP --port N [--deadline-s S] [--stall-s S]
    python tests/netns/kerneltcp.py source --host IP --port N --bytes B [--seed K] [--cc NAME]
                                           [--deadline-s S]

The same transfer as the zt agents' ``sink`` and ``source`` (:mod:`agentproto`: the same
stream, sha256 of it answered by the sink, stalls counted alike), over plain sockets.  The sink
prints ``{"event": "listening"}`` once it listens, then its report; the source prints its
report, with the sender's ``TCP_INFO`` (retransmitted segments and bytes, reordering seen,
round-trip estimates, congestion control).  Every call is bounded by ``--deadline-s`` from
accepting / connecting: a transfer that is not done by then is reported with ``error`` and
``deadline: true``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import socket
import struct
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run as a script: the repo root

from tests.netns import agentproto as proto

Json = dict[str, Any]
RECV_BUF = 256 << 10
SEND_BLOCK = 1 << 20
TCP_CONGESTION = getattr(socket, "TCP_CONGESTION", 13)
TCP_INFO = getattr(socket, "TCP_INFO", 11)

# struct tcp_info (linux/tcp.h): (name, offset, format) of the fields reported.
_TCP_INFO_FIELDS = [
    ("rto_us", 8, "I"),
    ("snd_mss", 16, "I"),
    ("lost", 32, "I"),
    ("retrans", 36, "I"),
    ("rtt_us", 68, "I"),
    ("rttvar_us", 72, "I"),
    ("snd_cwnd", 80, "I"),
    ("reordering", 88, "I"),
    ("total_retrans", 100, "I"),
    ("segs_out", 136, "I"),
    ("min_rtt_us", 148, "I"),
    ("data_segs_out", 156, "I"),
    ("bytes_sent", 200, "Q"),
    ("bytes_retrans", 208, "Q"),
    ("dsack_dups", 216, "I"),
    ("reord_seen", 220, "I"),
    ("rcv_ooopack", 224, "I"),
]


def tcp_info(s: socket.socket) -> Json:
    """The fields above that this kernel's ``TCP_INFO`` has, and the congestion control."""
    raw = s.getsockopt(socket.IPPROTO_TCP, TCP_INFO, 512)
    info: Json = {}
    for name, off, fmt in _TCP_INFO_FIELDS:
        if off + struct.calcsize(fmt) <= len(raw):
            info[name] = struct.unpack_from("=" + fmt, raw, off)[0]
    info["cc"] = s.getsockopt(socket.IPPROTO_TCP, TCP_CONGESTION, 16).split(b"\0")[0].decode()
    return info


class Deadline:
    def __init__(self, seconds: float) -> None:
        self.at = time.monotonic() + seconds

    def left(self) -> float:
        return max(0.001, self.at - time.monotonic())

    def passed(self) -> bool:
        return time.monotonic() >= self.at


def emit(report: Json) -> None:
    sys.stdout.write(json.dumps(report) + "\n")
    sys.stdout.flush()


def sink(a: argparse.Namespace) -> Json:
    family = socket.AF_INET6 if ":" in a.bind else socket.AF_INET
    report: Json = {"bytes": 0}
    with socket.socket(family, socket.SOCK_STREAM) as ls:
        ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        ls.bind((a.bind, a.port))
        ls.listen(1)
        ls.settimeout(a.accept_timeout_s)
        emit({"event": "listening"})
        conn, _ = ls.accept()
    deadline = Deadline(a.deadline_s)
    digest = hashlib.sha256()
    gaps = proto.Gaps(a.stall_s)
    buf = bytearray(RECV_BUF)
    view = memoryview(buf)
    started = None
    with conn:
        try:
            while True:
                conn.settimeout(deadline.left())
                n = conn.recv_into(buf)
                if started is None:
                    started = time.monotonic()
                if n == 0:
                    break
                digest.update(view[:n])
                report["bytes"] += n
                gaps.note(report["bytes"])
            conn.settimeout(deadline.left())
            conn.sendall(digest.digest())
            report["sha256"] = digest.hexdigest()
        except OSError as exc:
            report.update(error=f"{type(exc).__name__}: {exc}", deadline=deadline.passed())
        report["receiver_tcp_info"] = tcp_info(conn)
    report.update(
        seconds=time.monotonic() - (started or time.monotonic()),
        max_gap_s=gaps.max_gap,
        stalls=gaps.stalls,
        timeline=gaps.timeline,
    )
    report.setdefault("error", None)
    return report


def source(a: argparse.Namespace) -> Json:
    family = socket.AF_INET6 if ":" in a.host else socket.AF_INET
    report: Json = {"sent": 0}
    digest = hashlib.sha256()
    with socket.socket(family, socket.SOCK_STREAM) as s:
        if a.cc:
            s.setsockopt(socket.IPPROTO_TCP, TCP_CONGESTION, a.cc.encode())
        s.settimeout(a.deadline_s)
        s.connect((a.host, a.port))
        deadline = Deadline(a.deadline_s)
        started = time.monotonic()
        try:
            for offset in range(0, a.bytes, SEND_BLOCK):
                size = min(SEND_BLOCK, a.bytes - offset)
                block = b"".join(
                    proto.stream_chunk(a.seed, o, min(proto.CHUNK, offset + size - o))
                    for o in range(offset, offset + size, proto.CHUNK)
                )
                s.settimeout(deadline.left())
                s.sendall(block)
                digest.update(block)
                report["sent"] += size
            s.shutdown(socket.SHUT_WR)
            answer = b""
            while len(answer) < proto.DIGEST_LEN:
                s.settimeout(deadline.left())
                more = s.recv(proto.DIGEST_LEN - len(answer))
                if not more:
                    break
                answer += more
            elapsed = time.monotonic() - started
            report.update(
                seconds=elapsed,
                mb_s=a.bytes / elapsed / 1e6,
                digest_ok=answer == digest.digest(),
                error=None,
            )
        except OSError as exc:
            report.update(
                error=f"{type(exc).__name__}: {exc}",
                deadline=deadline.passed(),
                seconds=time.monotonic() - started,
            )
        report["tcp_info"] = tcp_info(s)
    return report


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    sub = p.add_subparsers(dest="role", required=True)
    k = sub.add_parser("sink")
    k.add_argument("--bind", required=True)
    k.add_argument("--port", type=int, required=True)
    k.add_argument("--deadline-s", type=float, default=60.0)
    k.add_argument("--accept-timeout-s", type=float, default=60.0)
    k.add_argument("--stall-s", type=float, default=proto.STALL_S)
    o = sub.add_parser("source")
    o.add_argument("--host", required=True)
    o.add_argument("--port", type=int, required=True)
    o.add_argument("--bytes", type=int, required=True)
    o.add_argument("--seed", type=int, default=1)
    o.add_argument("--cc", default="", help="TCP_CONGESTION for the socket (default: the system's)")
    o.add_argument("--deadline-s", type=float, default=60.0)
    a = p.parse_args()
    try:
        emit(sink(a) if a.role == "sink" else source(a))
    except OSError as exc:
        emit({"error": f"{type(exc).__name__}: {exc}"})
    return 0


if __name__ == "__main__":
    sys.exit(main())
