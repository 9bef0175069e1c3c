"""The command protocol of the socket agents used by the namespace tests and benchmarks.

Two programs speak it: ``tests/netns/ztagent.py`` (a zt node) and the ``agent`` role of the
libzt worker (``tests/interop/libzt.py``).  Each joins one managed network, writes
``<name>.ready.json`` (node id, IPv4, IPv6, pid) into a shared exchange directory and then
runs commands the driver drops there: ``<name>.cmd.<k>.json`` for k = 0, 1, 2, … in order.
Every command runs on its own thread; a listening command writes ``<name>.listen.<k>.json``
once it accepts, and every command ends with ``<name>.res.<k>.json`` (its report; ``error``
is None on success).  The agent stops when the file ``stop`` (or ``<name>.stop``) appears.

Commands (``op`` and arguments; both agents implement all of them the same way):

* ``sink`` ``family, port, digest=True, timeout_s``: accept one TCP connection, read it to EOF
  (sha256 of everything), answer the 32-byte digest; report ``bytes, seconds, max_gap_s``
  (longest wait for data once the first byte came) or the ``error`` and when it happened.
  zt only: ``stalls`` (waits of ``STALL_S`` or more), and ``deadline_s``: give up that long
  after accepting.
* ``source`` ``host, port, bytes, seed, digest=True, timeout_s``: connect, send ``bytes`` of
  :func:`stream_chunk` data, shut the write side, compare the digest answered with its own
  (without ``digest``, as for a sink without it: wait for the sink's close); report
  ``digest_ok, seconds, mb_s`` or the error.  zt only: ``deadline_s``: give up (close, report
  ``error`` with ``deadline: true``) that long after connecting.
* ``echo_server`` ``family, port, conns, mode``: echo every connection until EOF; ends once
  ``conns`` connections were served (zt serves them with ``zt.asyncio``, or with ``mode``
  ``"threads"`` blocking sockets and a thread per connection as libzt does).
* ``echo_clients`` ``host, port, clients, messages, min_size, max_size``: that many
  concurrent connections, each sending ``messages`` messages and checking each echo.
* ``rr`` ``host, port, count, size=64``: one connection, ``count`` request/response round
  trips of ``size`` bytes against an echo server; report ``p50_ms, p99_ms``.
* zt only: ``arm`` (``rr``, threaded ``echo_server``): call ``fileno()`` on the connections
  first, so their readiness descriptors are kept in step (what that costs); ``rr_async``
  (``rr`` with ``zt.asyncio`` streams: the readiness descriptors in the loop) and ``hold``
  ``host, port, conns, hold_s``: open ``conns`` connections to an echo server, publish
  ``listen`` once all are open, keep them ``hold_s`` seconds.
* ``udp_echo`` ``family, port, idle_s=3``: echo datagrams until ``idle_s`` pass without one
  (after the first); report ``answered`` and ``distinct`` (message numbers).
* ``udp_client`` ``host, port, count, size, attempts=5``: ``count`` requests, each sent up
  to ``attempts`` times (1 s apart) until its echo comes; report ``answered``, ``p50_ms``,
  ``first_s`` (until the first echo) and the ``unanswered`` message numbers.
* zt only: ``stats``: the node's counters (``zt.Node.stats``: datagrams, drops by reason).

This module is loaded by file path in the libzt worker (which runs isolated, ``python -I``),
so it imports nothing from the project.
"""

from __future__ import annotations

import hashlib
import json
import os
import statistics
import struct
import threading
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Optional

Json = dict[str, Any]
Handler = Callable[[Json, Callable[[Json], None]], Json]

DIGEST_LEN = 32
CHUNK = 64 << 10
_POLL_S = 0.02
STALL_S = 0.2  # a receiver that waits this long for data has stalled (issue 14's definition)
_BLOCK_CACHE: dict[int, bytes] = {}


def publish(directory: Path, name: str, info: Json) -> None:
    """Writes ``directory/name`` atomically (readers never see a partial file)."""
    tmp = directory / f".{name}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(info))
    os.replace(tmp, directory / name)


def _block(seed: int) -> bytes:
    """1 MiB of pseudo-random bytes for ``seed`` (sha256 in counter mode), cached."""
    block = _BLOCK_CACHE.get(seed)
    if block is None:
        key = seed.to_bytes(8, "big")
        block = b"".join(
            hashlib.sha256(key + i.to_bytes(8, "big")).digest() for i in range((1 << 20) // 32)
        )
        _BLOCK_CACHE[seed] = block
    return block


def stream_chunk(seed: int, offset: int, size: int) -> bytes:
    """The source stream's bytes ``[offset, offset + size)``, ``offset`` a multiple of CHUNK
    and ``size`` ≤ CHUNK: each chunk starts with its own offset, so a misplaced chunk changes
    the digest even though the 1 MiB block repeats."""
    start = offset % (1 << 20)
    body = _block(seed)[start : start + size]
    return (struct.pack(">Q", offset) + body[8:])[:size]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def rtt_report(rtts: list[float]) -> Json:
    return {
        "count": len(rtts),
        "p50_ms": statistics.median(rtts) * 1e3,
        "p99_ms": percentile(rtts, 0.99) * 1e3,
        "max_ms": max(rtts) * 1e3,
    }


def message(seq: int, size: int) -> bytes:
    """Echo test message ``seq`` of ``size`` (≥ 8) bytes: its number, then a pattern."""
    pattern = bytes((seq + i) & 0xFF for i in range(256))
    return struct.pack(">II", seq, size) + (pattern * (size // 256 + 1))[: size - 8]


def message_size(seq: int, low: int, high: int) -> int:
    return low + (seq * 7919) % (high - low + 1)


def source_figures(started: float, total: int, digest_ok: bool, gaps: Gaps) -> Json:
    """A source's figures once it sent ``total`` bytes since ``started`` (``time.monotonic()``)
    and the sink answered (``digest_ok``: the right digest)."""
    elapsed = time.monotonic() - started
    return {
        "seconds": elapsed,
        "mb_s": total / elapsed / 1e6,
        "digest_ok": digest_ok,
        "max_gap_s": gaps.max_gap,
    }


def with_errors(report: Json, errors: list[str]) -> Json:
    """``report`` with the command's ``errors`` (the first also as ``error``)."""
    return {**report, "errors": errors, "error": errors[0] if errors else None}


def echo_served(
    threads: list[threading.Thread], deadline: float, served: list[int], wanted: int,
    errors: list[str],
) -> Json:  # fmt: skip
    """The echo server's report once its connection ``threads`` end (waited for until the
    ``time.monotonic()`` ``deadline``): connections served (of ``wanted``), bytes echoed."""
    for t in threads:
        t.join(timeout=max(0.0, deadline - time.monotonic()))
    if len(served) < wanted:
        errors.append(f"served {len(served)} of {wanted} connections")
    return with_errors({"conns": len(served), "bytes": sum(served)}, errors)


class Gaps:
    """Longest interval between progress notes (after the first), and how many intervals were
    stalls (at least ``stall_s``); with ``total`` given to :meth:`note`, also ``timeline``:
    ``[seconds since the first note, bytes so far]`` every ``TIMELINE_S`` or more (at most
    ``TIMELINE_MAX`` points), to see where a transfer lost its time."""

    TIMELINE_S = 0.05
    TIMELINE_MAX = 2000

    def __init__(self, stall_s: float = STALL_S) -> None:
        self.last: Optional[float] = None
        self.max_gap = 0.0
        self.stall_s = stall_s
        self.stalls = 0
        self.first: Optional[float] = None
        self.timeline: list[list[float]] = []

    def note(self, total: Optional[int] = None) -> None:
        now = time.monotonic()
        if self.first is None:
            self.first = now
        if total is not None and len(self.timeline) < self.TIMELINE_MAX:
            t = now - self.first
            if not self.timeline or t - self.timeline[-1][0] >= self.TIMELINE_S:
                self.timeline.append([round(t, 4), total])
        if self.last is not None:
            gap = now - self.last
            self.max_gap = max(self.max_gap, gap)
            if gap >= self.stall_s:
                self.stalls += 1
        self.last = now


def serve_commands(
    exchange: Path, name: str, handlers: dict[str, Handler], deadline: float
) -> list[Json]:
    """Runs commands until ``stop``/``<name>.stop`` or ``deadline`` (time.monotonic())."""
    threads: list[threading.Thread] = []
    summary: list[Json] = []
    k = 0

    def stopping() -> bool:
        return (exchange / "stop").is_file() or (exchange / f"{name}.stop").is_file()

    def run(k: int, cmd: Json) -> None:
        started = time.monotonic()

        def listening(info: Json) -> None:
            publish(exchange, f"{name}.listen.{k}.json", info)

        try:
            handler = handlers[str(cmd.get("op"))]
            report = handler(cmd, listening)
            report.setdefault("error", None)
        except KeyError:
            report = {"error": f"unknown op {cmd.get('op')!r}"}
        except Exception as exc:
            report = {"error": f"{type(exc).__name__}: {exc}", "trace": traceback.format_exc()}
        report["op"] = cmd.get("op")
        report["wall_s"] = time.monotonic() - started
        publish(exchange, f"{name}.res.{k}.json", report)
        summary.append({"k": k, "op": cmd.get("op"), "error": report["error"]})

    while not stopping() and time.monotonic() < deadline:
        path = exchange / f"{name}.cmd.{k}.json"
        if not path.is_file():
            time.sleep(_POLL_S)
            continue
        cmd = json.loads(path.read_text())
        t = threading.Thread(target=run, args=(k, cmd), name=f"cmd-{k}", daemon=True)
        t.start()
        threads.append(t)
        k += 1
    for t in threads:
        t.join(timeout=5)
    return summary


# -- the driver's side ----------------------------------------------------------------------


class AgentError(RuntimeError):
    pass


class Command:
    def __init__(self, agent: Agent, k: int, op: str) -> None:
        self.agent = agent
        self.k = k
        self.op = op

    def _wait(self, name: str, timeout: float) -> Json:
        path = self.agent.exchange / name
        deadline = time.monotonic() + timeout
        while not path.is_file():
            self.agent.check_alive()
            if time.monotonic() > deadline:
                raise AgentError(f"{self.agent.name}: no {name} within {timeout:g} s")
            time.sleep(_POLL_S)
        out: Json = json.loads(path.read_text())
        return out

    def listening(self, timeout: float = 30.0) -> Json:
        return self._wait(f"{self.agent.name}.listen.{self.k}.json", timeout)

    def result(self, timeout: float = 120.0) -> Json:
        return self._wait(f"{self.agent.name}.res.{self.k}.json", timeout)

    def ok(self, timeout: float = 120.0) -> Json:
        """The report; raises when it carries an error."""
        report = self.result(timeout)
        if report.get("error") is not None:
            raise AgentError(f"{self.agent.name} {self.op} failed: {report}")
        return report


class Agent:
    """The driver's handle on one agent (a zt or libzt process) by its exchange files."""

    def __init__(
        self, exchange: Path, name: str, check_alive: Callable[[], None] = lambda: None
    ) -> None:
        self.exchange = exchange
        self.name = name
        self.check_alive = check_alive
        self.k = 0
        self.info: Json = {}

    def wait_ready(self, timeout: float) -> Json:
        self.info = Command(self, -1, "ready")._wait(f"{self.name}.ready.json", timeout)
        return self.info

    def address(self, family: int) -> str:
        return str(self.info["ipv4" if family == 4 else "ipv6"])

    def start(self, op: str, **args: Any) -> Command:
        publish(self.exchange, f"{self.name}.cmd.{self.k}.json", {"op": op, **args})
        cmd = Command(self, self.k, op)
        self.k += 1
        return cmd

    def stop(self) -> None:
        (self.exchange / f"{self.name}.stop").touch()
