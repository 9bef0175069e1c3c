"""Impaired underlay paths between two hosts of a :class:`~tests.netns.netlab.NetLab`, and
bounded TCP transfers across them: zt→zt (two zt agents of a
:class:`~tests.netns.socketlab.SocketLab`, over the overlay) and kernel→kernel (plain sockets
between the same two namespaces, ``kerneltcp.py``).  Used by ``benches/py/bench_paths.py`` and
``tests/netns/test_impaired_paths.py``.

Where each impairment acts (the same rules, in both hosts, for both directions; they match the
peer's underlay addresses, IPv4 and IPv6, and TCP and UDP alike, so the kernel's TCP segments
and zt's UDP datagrams meet the same hooks at the same rates):

* loss: nftables ``numgen random`` drop at the *receiving* host's ``eth0`` netdev ingress
  hook.  The sending stack never learns of it, as on a wire.  (A drop at the sender's egress
  hook is silent for UDP, but a kernel TCP sender sees ``NET_XMIT_DROP``, enters CWR and sends
  the segment again without a retransmission: see ``impair_queue.py``.)  ``loss_hook="egress"``
  puts it there anyway, for comparison.
* duplication: nftables ``dup`` in the sending host's output hook (the copy is sent at once).
* delay, jitter, reordering, corruption: an NFQUEUE rule (iptables/ip6tables, mangle
  PREROUTING: the packet is already orphaned there, so holding it charges no sender's socket)
  feeding ``impair_queue.py`` in the receiving namespace.  Corruption without delay samples
  packets in the rule (``-m statistic``), so only those cross user space.

Both hosts' ``eth0`` get ``gso_max_segs 1``: otherwise the kernel's TCP hands the hooks 64 KB
GSO packets (one ``numgen`` draw would drop ~45 segments at once) while zt's datagrams are
single packets.  The counters of the rules (per protocol) are read before and after each
transfer, so a report shows the loss, duplication and corruption each flow actually met.
"""

from __future__ import annotations

import contextlib
import json
import queue
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Optional

from tests.netns.agentproto import Agent, AgentError
from tests.netns.netlab import NetLab

QUEUE_SCRIPT = str(Path(__file__).with_name("impair_queue.py"))
KERNEL_SCRIPT = str(Path(__file__).with_name("kerneltcp.py"))
QUEUE_NUM = 7
NUMGEN_MOD = 1_000_000  # rates in steps of 1e-4 %
TABLE = "zt_impair"
Json = dict[str, Any]


@dataclass(frozen=True)
class Profile:
    """An underlay impairment, applied to each direction."""

    name: str
    label: str
    loss_pct: float = 0.0
    dup_pct: float = 0.0
    corrupt_pct: float = 0.0
    delay_ms: float = 0.0
    jitter_ms: float = 0.0
    reorder_pct: float = 0.0

    @property
    def delays(self) -> bool:
        return self.delay_ms > 0 or self.jitter_ms > 0

    @property
    def queued(self) -> bool:
        return self.delays or self.corrupt_pct > 0


# Issue 14's table, in its order.
PROFILES: list[Profile] = [
    Profile("none", "none"),
    Profile("loss1", "1 % loss", loss_pct=1.0),
    Profile("loss5", "5 % loss", loss_pct=5.0),
    Profile(
        "loss5-reorder",
        "5 % loss + 25 % reorder + 10 ms",
        loss_pct=5.0,
        delay_ms=10.0,
        reorder_pct=25.0,
    ),
    Profile("dup-corrupt", "1 % duplication + 0.5 % corruption", dup_pct=1.0, corrupt_pct=0.5),
    Profile("jitter", "20 ms ± 5 ms delay (reorders)", delay_ms=20.0, jitter_ms=5.0),
]
# Not in the table: a control for the jitter row, the same delay without reordering (it tells
# what the round trip costs from what the reordering costs).
CONTROLS: list[Profile] = [
    Profile("delay", "20 ms delay (no reordering)", delay_ms=20.0),
]
BY_NAME = {p.name: p for p in PROFILES + CONTROLS}


def tools_available() -> tuple[bool, str]:
    """(True, "") when nft and iptables/ip6tables are installed, else (False, what is missing)."""
    missing = [t for t in ("nft", "iptables", "ip6tables") if shutil.which(t) is None]
    if missing:
        return False, f"{', '.join(missing)} not found (Debian: apt-get install nftables iptables)"
    return True, ""


def _threshold(pct: float) -> int:
    return round(pct / 100 * NUMGEN_MOD)


def queue_argv(p: Profile) -> list[str]:
    """``impair_queue.py``'s command line for ``p``."""
    argv = [sys.executable, QUEUE_SCRIPT, "--queue", str(QUEUE_NUM)]
    if not p.delays:
        return [*argv, "--corrupt"]  # the rule samples the packets to corrupt
    argv += ["--delay-ms", str(p.delay_ms), "--jitter-ms", str(p.jitter_ms)]
    argv += ["--reorder-pct", str(p.reorder_pct)]
    if p.corrupt_pct > 0:
        argv += ["--corrupt-pct", str(p.corrupt_pct)]
    return argv


def nft_script(p: Profile, p4: str, p6: str, loss_hook: str) -> str:
    """The nftables rules of one host whose peer has the addresses ``p4`` and ``p6``.

    Counted per protocol: ``seen-*`` every packet the loss hook met (from the peer at the
    ingress hook, to it at the egress hook), ``drop-*`` those dropped, ``out-*`` every packet
    sent to the peer, ``dup-*`` those duplicated."""
    direction = "saddr" if loss_hook == "ingress" else "daddr"
    loss: list[str] = []
    for proto in ("tcp", "udp"):
        for fam, addr in (("ip", p4), ("ip6", p6)):
            match = f"{fam} {direction} {addr} meta l4proto {proto}"
            loss.append(f'{match} counter comment "seen-{proto}"')
            if p.loss_pct > 0:
                draw = f"numgen random mod {NUMGEN_MOD} < {_threshold(p.loss_pct)}"
                loss.append(f'{match} {draw} counter drop comment "drop-{proto}"')
    hook = f'type filter hook {loss_hook} device "eth0" priority 0; policy accept;'
    script = _table(f"netdev {TABLE}", "loss", hook, loss)
    for fam, addr in (("ip", p4), ("ip6", p6)):
        out: list[str] = []
        for proto in ("tcp", "udp"):
            match = f"{fam} daddr {addr} meta l4proto {proto}"
            out.append(f'{match} counter comment "out-{proto}"')
            if p.dup_pct > 0:
                draw = f"numgen random mod {NUMGEN_MOD} < {_threshold(p.dup_pct)}"
                dup = f'dup to {addr} device "eth0"'
                out.append(f'{match} {draw} counter {dup} comment "dup-{proto}"')
        hook = "type filter hook output priority 0; policy accept;"
        script += _table(f"{fam} {TABLE}", "out", hook, out)
    return script


def _table(name: str, chain: str, hook: str, rules: list[str]) -> str:
    body = "".join(f"    {r}\n" for r in rules)
    return f"table {name} {{\n  chain {chain} {{\n    {hook}\n{body}  }}\n}}\n"


class QueueProcess:
    """``impair_queue.py`` in one lab host: its JSON lines gathered by a reader thread."""

    def __init__(self, lab: NetLab, host: int, argv: list[str]) -> None:
        self.host = host
        self.proc = lab.popen(host, argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True)  # fmt: skip
        self.lines: queue.Queue[Json] = queue.Queue()
        self.last_stats: Json = {}
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        deadline = time.monotonic() + 10
        while True:
            try:
                line = self.lines.get(timeout=0.1)
            except queue.Empty:
                line = {}
            if line.get("event") == "bound":
                return
            if self.proc.poll() is not None or time.monotonic() > deadline:
                err = self.proc.stderr.read() if self.proc.stderr else ""
                raise AgentError(f"impair_queue.py in host {host} did not bind: {err.strip()}")

    def _read(self) -> None:
        stream: Optional[IO[str]] = self.proc.stdout
        if stream is None:
            return
        for text in stream:
            with contextlib.suppress(ValueError):
                line = json.loads(text)
                if line.get("event") == "queue-stats":
                    self.last_stats = line
                self.lines.put(line)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> Json:
        """SIGTERM (it releases what it holds), and its final statistics."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self._reader.join(timeout=5)
        return self.last_stats


@dataclass
class Impairer:
    """Applies :class:`Profile` s to the underlay between lab hosts ``a`` and ``b``."""

    lab: NetLab
    a: int
    b: int
    loss_hook: str = "ingress"
    profile: Profile = PROFILES[0]
    queues: dict[int, QueueProcess] = field(default_factory=dict)
    queue_finals: dict[int, Json] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.loss_hook not in ("ingress", "egress"):
            raise ValueError("loss_hook is ingress or egress")
        for host in (self.a, self.b):
            # Segments of the kernel's TCP as they go on the wire, at every hook.
            self.lab.run(host, ["ip", "link", "set", "dev", "eth0", "gso_max_segs", "1"])

    def peer(self, host: int) -> int:
        return self.b if host == self.a else self.a

    def _nft(self, host: int, script: str) -> None:
        self.lab.run(host, ["nft", "-f", "-"], input=script)

    def clear(self) -> None:
        """Removes every rule and stops the queues (their final statistics are kept)."""
        for host, q in list(self.queues.items()):
            self.queue_finals[host] = q.stop()
        self.queues.clear()
        for host in (self.a, self.b):
            self.lab.run(host, ["nft", "flush", "ruleset"])
            for tool in ("iptables", "ip6tables"):
                self.lab.run(host, [tool, "-t", "mangle", "-F", "PREROUTING"], check=False)
        self.profile = PROFILES[0]

    def apply(self, profile: Profile) -> None:
        self.clear()
        self.queue_finals.clear()
        for host in (self.a, self.b):
            self._apply_host(host, profile)
        self.profile = profile

    def _apply_host(self, host: int, p: Profile) -> None:
        peer = self.peer(host)
        p4, p6 = self.lab.host_ip4(peer), self.lab.host_ip6(peer)
        if p.queued:
            # The queue binds before the rules that feed it (--queue-bypass meanwhile).
            self.queues[host] = QueueProcess(self.lab, host, queue_argv(p))
            sample: list[str] = []
            if not p.delays:  # corruption only: the rule samples, the queue corrupts all it gets
                probability = f"{p.corrupt_pct / 100:.6f}"
                sample = ["-m", "statistic", "--mode", "random", "--probability", probability]
            for tool, addr in (("iptables", p4), ("ip6tables", p6)):
                for proto in ("tcp", "udp"):
                    rule = ["-t", "mangle", "-A", "PREROUTING", "-i", "eth0", "-s", addr, "-p",
                            proto, *sample, "-j", "NFQUEUE", "--queue-num", str(QUEUE_NUM),
                            "--queue-bypass"]  # fmt: skip
                    self.lab.run(host, [tool, *rule])
        self._nft(host, nft_script(p, p4, p6, self.loss_hook))

    def counters(self) -> dict[str, int]:
        """The rules' packet counters by comment and host: ``seen-udp@1`` (host 1's loss hook
        met that many UDP packets of the peer's), ``drop-*``, ``out-*`` (sent to the peer),
        ``dup-*``."""
        totals: dict[str, int] = {}
        for host in (self.a, self.b):
            out = self.lab.run(host, ["nft", "-j", "list", "ruleset"]).stdout
            for item in json.loads(out).get("nftables", []):
                rule = item.get("rule")
                if not rule or not rule.get("comment"):
                    continue
                for expr in rule.get("expr", []):
                    if "counter" in expr:
                        key = f"{rule['comment']}@{host}"
                        totals[key] = totals.get(key, 0) + int(expr["counter"]["packets"])
        return totals

    def queue_stats(self) -> dict[int, Json]:
        """The latest statistics line of each running queue (they print every 10 s)."""
        return {h: dict(q.last_stats) for h, q in self.queues.items()}

    def check_queues(self) -> None:
        for host, q in self.queues.items():
            if not q.alive():
                raise AgentError(f"impair_queue.py in host {host} exited ({q.proc.returncode})")


def met(before: dict[str, int], after: dict[str, int], proto: str, src: int, dst: int) -> Json:
    """What the flow of ``proto`` from host ``src`` to ``dst`` met between two
    :meth:`Impairer.counters` readings (both directions: data and acknowledgements)."""

    def d(key: str, host: Optional[int] = None) -> int:
        hosts = (src, dst) if host is None else (host,)
        return sum(
            after.get(f"{key}-{proto}@{h}", 0) - before.get(f"{key}-{proto}@{h}", 0) for h in hosts
        )

    seen, out, dropped, dups = d("seen"), d("out"), d("drop"), d("dup")
    return {
        "packets": seen,
        "dropped": dropped,
        "loss_pct": 100 * dropped / seen if seen else 0.0,
        "duplicated": dups,
        "dup_pct": 100 * dups / out if out else 0.0,
        "data_packets_out": d("out", src),
        "ack_packets_out": d("out", dst),
    }


_UDP_ERRORS = ("RcvbufErrors", "SndbufErrors", "InCsumErrors")
SNMP_KEYS = (
    *(f"{group}:{name}" for group in ("Udp", "Udp6") for name in _UDP_ERRORS),
    "Tcp:InCsumErrors",
    "Tcp:RetransSegs",
)


def snmp(lab: NetLab, host: int) -> dict[str, int]:
    """Counters of host ``host``'s stack (``/proc/net/snmp`` and ``snmp6``: UDP buffer
    overflows, checksum errors, TCP retransmissions) that tell where packets went."""
    text = lab.run(host, ["cat", "/proc/net/snmp", "/proc/net/snmp6"]).stdout
    found: dict[str, int] = {}
    lines = text.splitlines()
    for head, values in zip(lines, lines[1:]):
        names, nums = head.split(), values.split()
        if names and names[0] == nums[0] and names[0].endswith(":") and names != nums:
            for name, num in zip(names[1:], nums[1:]):
                found[f"{names[0]}{name}"] = int(num)
    for line in lines:
        parts = line.split()
        if len(parts) == 2 and parts[0].startswith("Udp6") and parts[1].isdigit():
            found[f"Udp6:{parts[0][4:]}"] = int(parts[1])
    return {k: found[k] for k in SNMP_KEYS if k in found}


# -- transfers -------------------------------------------------------------------------------


@dataclass
class Transfer:
    """One bounded transfer's outcome (``mb_s`` of the completed ones only)."""

    path: str
    nbytes: int
    received: int = 0
    complete: bool = False
    mb_s: float = 0.0
    seconds: float = 0.0
    max_gap_s: float = 0.0
    stalls: int = 0
    error: Optional[str] = None
    detail: Json = field(default_factory=dict)

    def summary(self) -> str:
        if self.complete:
            head = f"{self.mb_s:8.2f} MB/s"
        else:
            head = f"DNF ({self.received / 1e6:.1f} of {self.nbytes / 1e6:.0f} MB)"
        return (f"{head}  longest stall {self.max_gap_s:.2f} s, {self.stalls} stalls"
                + (f"  [{self.error}]" if self.error and not self.complete else ""))  # fmt: skip


def zt_transfer(
    src: Agent, dst: Agent, nbytes: int, port: int, deadline_s: float, cc: str = ""
) -> Transfer:
    """``nbytes`` from zt agent ``src`` to ``dst`` over the overlay (IPv4), sha256-checked,
    given up ``deadline_s`` after connecting (the sink ``deadline_s`` + 5 after accepting);
    ``cc``: the sender's congestion control (``TCP_CONGESTION``; default zt's, CUBIC)."""
    sink = dst.start("sink", family=4, port=port, timeout_s=deadline_s + 5,
                     deadline_s=deadline_s + 5, accept_timeout_s=30)  # fmt: skip
    sink.listening()
    source = src.start("source", host=dst.address(4), port=port, bytes=nbytes, seed=port,
                       timeout_s=deadline_s, deadline_s=deadline_s, cc=cc)  # fmt: skip
    sent = source.result(timeout=deadline_s + 60)
    got = sink.result(timeout=30)
    return _transfer("zt->zt", nbytes, sent, got)


def kernel_transfer(
    lab: NetLab, src: int, dst: int, nbytes: int, port: int, deadline_s: float, cc: str = ""
) -> Transfer:
    """The same transfer between hosts ``src`` and ``dst`` over the underlay (IPv4), with the
    kernel's TCP (``cc``: its congestion control, default the namespace's)."""
    py = sys.executable
    sink = lab.popen(dst, [py, KERNEL_SCRIPT, "sink", "--bind", lab.host_ip4(dst), "--port",
                           str(port), "--deadline-s", str(deadline_s + 5)],
                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert sink.stdout is not None
        first = sink.stdout.readline()
        if "listening" not in first:
            sink.wait(timeout=10)
            err = sink.stderr.read() if sink.stderr else ""
            raise AgentError(f"kernel sink did not listen: {first!r} {err}")
        argv = [py, KERNEL_SCRIPT, "source", "--host", lab.host_ip4(dst), "--port", str(port),
                "--bytes", str(nbytes), "--seed", str(port),
                "--deadline-s", str(deadline_s)]  # fmt: skip
        if cc:
            argv += ["--cc", cc]
        done = lab.run(src, argv, timeout=deadline_s + 30, check=False)
        sent: Json = (
            json.loads(done.stdout or "{}")
            if done.stdout.strip()
            else {"error": f"no report (exit {done.returncode}): {done.stderr.strip()[-300:]}"}
        )
        out, _ = sink.communicate(timeout=30)
        got: Json = json.loads(out) if out.strip() else {"error": "no report from the sink"}
    finally:
        if sink.poll() is None:
            sink.kill()
            sink.wait(timeout=10)
    return _transfer("kernel->kernel", nbytes, sent, got)


def _transfer(path: str, nbytes: int, sent: Json, got: Json) -> Transfer:
    """A transfer's figures from its source's and sink's reports."""
    t = Transfer(path, nbytes, received=int(got.get("bytes", 0)))
    t.complete = (
        sent.get("error") is None
        and got.get("error") is None
        and bool(sent.get("digest_ok"))
        and t.received == nbytes
    )
    t.seconds = float(sent.get("seconds", 0.0))
    t.mb_s = float(sent["mb_s"]) if t.complete else 0.0
    t.max_gap_s = float(got.get("max_gap_s", 0.0))
    t.stalls = int(got.get("stalls", 0))
    t.error = sent.get("error") or got.get("error")
    if not t.complete and t.error is None:
        t.error = f"digest_ok={sent.get('digest_ok')} bytes={t.received}"
    t.detail = {"source": sent, "sink": got}
    return t
