#!/usr/bin/env python3
# ruff: noqa: E501
# (the docstring keeps the original tool's lines as they were)
"""A userspace network impairment queue for kernels without sch_netem (no CONFIG_NET_SCH_NETEM here): an NFQUEUE
consumer that delays, reorders or corrupts the packets an iptables NFQUEUE rule hands it. Loss and duplication are
better done in the kernel with nftables (numgen random ... drop at the device's netdev egress hook, so the sender
sees no error; dup in the output hook). Example, inside a test namespace:
  impair_queue.py --queue 7 --delay-ms 20 &
  iptables -A OUTPUT -o eth0 -p udp -j NFQUEUE --queue-num 7 --queue-bypass
Run it only inside a test namespace, as root, before the rule that feeds its queue.

  impair_queue.py --queue N [--delay-ms D] [--jitter-ms J] [--reorder-pct R] [--corrupt] [--corrupt-pct C]

  delay/jitter: each packet is held D ms, or uniformly D-J..D+J ms with jitter (netem's default "delay D J" draws
                uniformly; held packets leave in time order, so jitter reorders, as netem's tfifo does)
  reorder:      R % of the packets leave at once, the rest after D ms (netem's "delay D reorder R%")
  corrupt:      every packet this queue gets has one random bit of its UDP payload flipped and its UDP checksum
                recomputed, so the corrupted datagram reaches the receiving process (the rule samples which packets
                come here); with netem's corrupt the receiver's UDP checksum would usually drop it instead

Prints {"event": "bound", ...} once the queue is bound, and {"event": "queue-stats", ...} every 10 s and on SIGTERM.
SIGTERM releases every held packet at once and exits. Raw netlink (NETLINK_NETFILTER), no library needed.

----

Origin: the team's ``shared/tools/impair_queue.py`` (docstring above kept as it was, but for the
``--corrupt-pct`` in the usage line), copied here so that the namespace tests and
``benches/py/bench_paths.py`` run from a clean clone.  Changes from that copy:

* TCP segments can be corrupted too (the original left them alone and counted them ``not_udp``,
  so a kernel TCP flow crossing the same rule was not impaired at all): one bit of the TCP
  segment (header or payload: a pure ACK has no payload) is flipped and the TCP checksum is
  *left stale*, so the receiving kernel drops the
  segment (``TcpInCsumErrors``), which is what becomes of a corrupted zt datagram too (its MAC
  fails: ``BadMac`` in the node's drop counters).  Recomputing the TCP checksum instead would
  hand corrupted bytes to the application: no real path does that to TCP, which has no MAC.
* ``--corrupt-pct C``: corrupt only C % of the queued packets (for a queue that also delays,
  where the rule cannot sample); ``--corrupt`` alone still means every packet.
* Packets that arrive while the queue is being configured (a rule that already fed it) were
  read as the configuration's answer and never given a verdict (each one stuck in the kernel
  until the queue went away, i.e. silently lost); they are now accepted at once (``early``).
* The poll timeout was truncated to whole milliseconds, so with a packet due in under 1 ms the
  loop spun at 100 % CPU (on a 2-core machine that starves the very stacks being measured); it
  is now rounded up (a packet leaves at most ~1 ms late).
* Verdicts due together are sent in one netlink write (several messages per datagram) instead
  of one system call each.
* The statistics include the kernel's own counters of this queue from
  ``/proc/net/netfilter/nfnetlink_queue`` (``queue_dropped``: the queue was full,
  ``user_dropped``: the netlink socket overflowed), parsed, every time, not only at the end:
  both are extra loss that the profile did not ask for; and counts per protocol.
* SIGINT ends it like SIGTERM; type annotations, formatting.

Two notes on the advice in the first paragraph, measured on this kernel (6.18, veth):

* A drop at the *sender's* netdev egress hook is silent for UDP (``sendto`` succeeds unless the
  socket asked for ``IP_RECVERR``) but not for a kernel TCP sender: the hook's drop comes back
  as ``NET_XMIT_DROP``, TCP enters CWR and keeps the segment to send again, without counting a
  retransmission (5 % dropped there: 107 drops, 0 retransmissions; the same drop at the
  receiver's ingress hook: 154 drops, 153 retransmissions).  To hit both flows alike the lab
  drops at the receiving host's ingress hook (``tests/netns/impair.py``).
* A packet held by this queue at the sender's OUTPUT hook stays charged to its socket (TCP
  Small Queues throttle a kernel sender by it; a UDP socket's send buffer fills), which no
  wire delay does; the lab queues at the receiver's PREROUTING hook, where the packet is
  already orphaned.
"""

from __future__ import annotations

import argparse
import errno
import heapq
import json
import math
import os
import random
import select
import signal
import socket
import struct
import sys
import time
from typing import Any, Optional

NETLINK_NETFILTER = 12
NFNL_SUBSYS_QUEUE = 3
NFQNL_MSG_PACKET, NFQNL_MSG_VERDICT, NFQNL_MSG_CONFIG = 0, 1, 2
NFQA_CFG_CMD, NFQA_CFG_PARAMS, NFQA_CFG_QUEUE_MAXLEN = 1, 2, 3
NFQNL_CFG_CMD_BIND = 1
NFQNL_COPY_PACKET = 2
NFQA_PACKET_HDR, NFQA_VERDICT_HDR, NFQA_PAYLOAD = 1, 2, 10
NLM_F_REQUEST, NLM_F_ACK = 1, 4
NLMSG_ERROR = 2
NF_ACCEPT = 1
SO_RCVBUFFORCE = 33
MAX_BATCH_BYTES = 32 << 10  # verdict messages gathered into one netlink write

Packet = tuple[int, Optional[memoryview]]


def out(**kw: Any) -> None:
    sys.stdout.write(json.dumps(kw) + "\n")
    sys.stdout.flush()


def attr(t: int, data: bytes) -> bytes:
    n = 4 + len(data)
    return struct.pack("=HH", n, t) + data + b"\0" * ((4 - n % 4) % 4)


def parse_packets(buf: bytearray, n: int) -> list[Packet]:
    """(packet id, payload or None) for each queued packet among the messages in ``buf[:n]``."""
    res: list[Packet] = []
    off = 0
    mv = memoryview(buf)
    while off + 16 <= n:
        ln, t = struct.unpack_from("=IH", buf, off)
        if ln < 16:
            break
        if (t >> 8) == NFNL_SUBSYS_QUEUE and (t & 0xFF) == NFQNL_MSG_PACKET:
            a = off + 20  # nlmsghdr (16) + nfgenmsg (4)
            end = off + ln
            pid: Optional[int] = None
            payload: Optional[memoryview] = None
            while a + 4 <= end:
                alen, atype = struct.unpack_from("=HH", buf, a)
                if alen < 4:
                    break
                atype &= 0x3FFF
                if atype == NFQA_PACKET_HDR:
                    pid = struct.unpack_from("!I", buf, a + 4)[0]
                elif atype == NFQA_PAYLOAD:
                    payload = mv[a + 4 : a + alen]
                a += (alen + 3) & ~3
            if pid is not None:
                res.append((pid, payload))
        off += (ln + 3) & ~3
    return res


class Queue:
    def __init__(self, num: int) -> None:
        self.num = num
        self.s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
        for opt in (SO_RCVBUFFORCE, socket.SO_RCVBUF):  # SO_RCVBUFFORCE (root), else SO_RCVBUF
            try:
                self.s.setsockopt(socket.SOL_SOCKET, opt, 16 << 20)
                break
            except OSError:
                pass
        self.s.bind((0, 0))
        self.seq = 0
        self.early = 0
        self.pending: list[bytes] = []
        self.pending_bytes = 0

    def msg(self, mtype: int, payload: bytes, flags: int = NLM_F_REQUEST) -> bytes:
        self.seq += 1
        body = struct.pack("=BBH", socket.AF_UNSPEC, 0, socket.htons(self.num)) + payload
        header = struct.pack(
            "=IHHII", 16 + len(body), (NFNL_SUBSYS_QUEUE << 8) | mtype, flags, self.seq, 0
        )
        return header + body

    def config(self, payload: bytes) -> None:
        """Sends one configuration message and waits for its acknowledgement; packets read
        meanwhile (a rule fed the queue already) are accepted unchanged at once."""
        self.s.send(self.msg(NFQNL_MSG_CONFIG, payload, NLM_F_REQUEST | NLM_F_ACK))
        want = self.seq
        buf = bytearray(1 << 17)
        while True:
            n = self.s.recv_into(buf)
            off = 0
            while off + 16 <= n:
                ln, t, _flags, seq = struct.unpack_from("=IHHI", buf, off)
                if ln < 16:
                    break
                if t == NLMSG_ERROR and seq == want:
                    code = struct.unpack_from("=i", buf, off + 16)[0]
                    if code:
                        raise OSError(-code, f"nfqueue config: {os.strerror(-code)}")
                    return
                off += (ln + 3) & ~3
            for pid, _payload in parse_packets(buf, n):
                self.early += 1
                self.s.send(self.verdict_msg(pid, None))

    def bind(self, maxlen: int) -> None:
        self.config(attr(NFQA_CFG_CMD, struct.pack("=BBH", NFQNL_CFG_CMD_BIND, 0, 0)))
        self.config(attr(NFQA_CFG_PARAMS, struct.pack("!IB", 0xFFFF, NFQNL_COPY_PACKET)))
        self.config(attr(NFQA_CFG_QUEUE_MAXLEN, struct.pack("!I", maxlen)))
        self.s.setblocking(False)

    def verdict_msg(self, pid: int, payload: Optional[bytes]) -> bytes:
        a = attr(NFQA_VERDICT_HDR, struct.pack("!II", NF_ACCEPT, pid))
        if payload is not None:
            a += attr(NFQA_PAYLOAD, payload)
        return self.msg(NFQNL_MSG_VERDICT, a)

    def verdict(self, pid: int, payload: Optional[bytes] = None) -> None:
        """Queues the verdict; :meth:`flush` sends the gathered verdicts in one write."""
        m = self.verdict_msg(pid, payload)
        self.pending.append(m)
        self.pending_bytes += len(m)
        if self.pending_bytes >= MAX_BATCH_BYTES:
            self.flush()

    def flush(self) -> None:
        if self.pending:
            data = b"".join(self.pending)
            self.pending.clear()
            self.pending_bytes = 0
            self.s.send(data)

    def packets(self, buf: bytearray) -> list[Packet]:
        """(packet id, payload or None) for each queued packet in one datagram read into buf."""
        return parse_packets(buf, self.s.recv_into(buf))


def csum16(data: bytes) -> int:
    if len(data) % 2:
        data = bytes(data) + b"\0"
    s: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return s


def transport(p: bytearray) -> tuple[int, int, bytes]:
    """(protocol, offset of the transport header, pseudo-header) of an IPv4 or IPv6 packet
    without extension headers; protocol 0 when it is neither."""
    v = p[0] >> 4
    if v == 4:
        u = (p[0] & 0xF) * 4
        return p[9], u, bytes(p[12:20]) + struct.pack("!BBH", 0, p[9], len(p) - u)
    if v == 6 and len(p) >= 40:
        return p[6], 40, bytes(p[8:40]) + struct.pack("!I3xB", len(p) - 40, p[6])
    return 0, 0, b""


def corrupt(pkt: memoryview) -> Optional[tuple[str, bytes]]:
    """One random bit flipped: of a UDP datagram's payload, its checksum recomputed (the datagram
    reaches the process); of a TCP segment (header or payload: a pure ACK has no payload), its
    checksum left stale (the receiving kernel drops it).  ("udp"/"tcp", packet), or None when
    it is neither or a UDP datagram without payload."""
    p = bytearray(pkt)
    proto, u, pseudo = transport(p)
    if proto == 6 and len(p) >= u + 20:
        i = random.randrange(u, len(p))
        p[i] ^= 1 << random.randrange(8)
        return "tcp", bytes(p)
    if proto != 17 or len(p) <= u + 8:
        return None
    i = random.randrange(u + 8, len(p))
    p[i] ^= 1 << random.randrange(8)
    p[u + 6 : u + 8] = b"\0\0"
    c = 0xFFFF - csum16(pseudo + bytes(p[u:]))
    p[u + 6 : u + 8] = struct.pack("!H", c or 0xFFFF)
    return "udp", bytes(p)


def proto_of(pkt: Optional[memoryview]) -> str:
    if pkt is None or len(pkt) < 20:
        return "other"
    proto, _, _ = transport(bytearray(pkt[:40]))
    return {6: "tcp", 17: "udp"}.get(proto, "other")


def kernel_stats(num: int) -> dict[str, int]:
    """This queue's line of /proc/net/netfilter/nfnetlink_queue (this namespace's), parsed."""
    names = ["queue", "portid", "waiting", "copy_mode", "copy_range", "queue_dropped",
             "user_dropped", "id_sequence"]  # fmt: skip
    try:
        with open("/proc/net/netfilter/nfnetlink_queue") as f:
            for line in f:
                fields = [int(x) for x in line.split()[: len(names)]]
                if fields and fields[0] == num:
                    return dict(zip(names, fields))
    except (OSError, ValueError):
        pass
    return {}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--queue", type=int, required=True)
    ap.add_argument("--delay-ms", type=float, default=0.0)
    ap.add_argument("--jitter-ms", type=float, default=0.0)
    ap.add_argument("--reorder-pct", type=float, default=0.0)
    ap.add_argument("--corrupt", action="store_true", help="corrupt every packet")
    ap.add_argument("--corrupt-pct", type=float, default=None, help="corrupt this %% of them")
    ap.add_argument("--maxlen", type=int, default=20000)
    ap.add_argument("--stats-every-s", type=float, default=10.0)
    a = ap.parse_args()
    corrupt_p = (a.corrupt_pct if a.corrupt_pct is not None else 100.0 if a.corrupt else 0.0) / 100
    q = Queue(a.queue)
    q.bind(a.maxlen)
    st: dict[str, int] = dict(packets=0, held=0, immediate=0, corrupted=0, not_corruptible=0,
                              enobufs=0, max_held=0, verdict_errors=0)  # fmt: skip
    by_proto: dict[str, int] = {}
    out(event="bound", queue=a.queue, delay_ms=a.delay_ms, jitter_ms=a.jitter_ms,
        reorder_pct=a.reorder_pct, corrupt_pct=corrupt_p * 100)  # fmt: skip
    heap: list[tuple[float, int, int, Optional[bytes]]] = []
    seq = 0
    stop = [False]

    def on_signal(*_: Any) -> None:
        stop[0] = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    buf = bytearray(1 << 17)
    poll = select.poll()
    poll.register(q.s, select.POLLIN)
    t_stats = time.monotonic() + a.stats_every_s
    d, j, r = a.delay_ms / 1e3, a.jitter_ms / 1e3, a.reorder_pct / 100.0

    def release(pid: int, payload: Optional[bytes]) -> None:
        try:
            q.verdict(pid, payload)
        except OSError:
            st["verdict_errors"] += 1

    def flush() -> None:
        try:
            q.flush()
        except OSError:
            st["verdict_errors"] += 1

    def stats(**extra: Any) -> None:
        out(event="queue-stats", held_now=len(heap), early=q.early, by_proto=by_proto,
            kernel=kernel_stats(a.queue), **st, **extra)  # fmt: skip

    while not stop[0]:
        now = time.monotonic()
        while heap and heap[0][0] <= now:
            _, _, pid, payload = heapq.heappop(heap)
            release(pid, payload)
        flush()
        if now >= t_stats:
            stats()
            t_stats = now + a.stats_every_s
        timeout = 100 if not heap else max(0, math.ceil((heap[0][0] - now) * 1e3))
        try:
            ready = poll.poll(min(timeout, 100))
        except InterruptedError:
            continue
        if not ready:
            continue
        for _ in range(512):
            try:
                pkts = q.packets(buf)
            except BlockingIOError:
                break
            except OSError as e:
                if e.errno == errno.ENOBUFS:
                    st["enobufs"] += 1
                    continue
                raise
            now = time.monotonic()
            for pid, pkt in pkts:
                st["packets"] += 1
                kind = proto_of(pkt)
                by_proto[kind] = by_proto.get(kind, 0) + 1
                new: Optional[bytes] = None
                if corrupt_p > 0 and pkt is not None and random.random() < corrupt_p:
                    done = corrupt(pkt)
                    if done is None:
                        st["not_corruptible"] += 1
                    else:
                        st["corrupted"] += 1
                        key = f"corrupted_{done[0]}"
                        by_proto[key] = by_proto.get(key, 0) + 1
                        new = done[1]
                if d > 0 or j > 0:
                    if r > 0 and random.random() < r:
                        st["immediate"] += 1
                        release(pid, new)
                        continue
                    hold = d + (random.uniform(-j, j) if j > 0 else 0.0)
                    seq += 1
                    heapq.heappush(heap, (now + max(0.0, hold), seq, pid, new))
                    st["held"] += 1
                    st["max_held"] = max(st["max_held"], len(heap))
                else:
                    release(pid, new)
            flush()
    for _, _, pid, payload in sorted(heap):
        release(pid, payload)
    flush()
    heap.clear()
    stats(final=True)
    os._exit(0)


if __name__ == "__main__":
    main()
