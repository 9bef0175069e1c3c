"""User-space TCP of zt against libzt 1.8.4, separate processes in network namespaces, same run.

Usage (root; needs ``ip netns``; downloads libzt 1.8.4 from PyPI on first use)::

    python benches/py/bench_tcp.py [--mb 100] [--rounds 3] [--families 4,6] [--rr 2000]

A lab of five namespaces on one bridge (:class:`tests.netns.socketlab.SocketLab`): a zt root +
controller, zt agents ``z1``, ``z2`` and libzt agents ``l3``, ``l4``, all members of one
network, every path direct.  Printed:

* bulk TCP throughput (``--mb`` per transfer, median of ``--rounds`` interleaved rounds) for
  zt→zt, zt→libzt, libzt→zt and libzt→libzt, the longest stall seen by each receiver, the
  ratios zt↔zt / libzt↔libzt, and CPU seconds per GB (sender + receiver processes);
* 64-byte request/response latency p50/p99 (``--rr`` round trips after 200 warm-up ones;
  median over ``--rounds`` interleaved rounds) of zt with blocking sockets (a thread per
  connection, as libzt's agent), the same with ``fileno()`` called first (the readiness
  descriptors then mirror the sockets: the cost of the ``fileno()`` design), zt.asyncio streams
  on both ends, libzt, zt→libzt and libzt→zt;
* RSS of an idle zt agent process, of the same Python without a node, and per-connection
  memory (RSS growth of both ends with ``--conns`` open connections).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from tests.netns.agentproto import Agent  # noqa: E402
from tests.netns.netlab import netlab_available  # noqa: E402
from tests.netns.socketlab import SocketLab  # noqa: E402

import zt  # noqa: E402

PAIRS = [("z1", "z2"), ("z1", "l3"), ("l3", "z1"), ("l3", "l4")]
KIND = {"z": "zt", "l": "libzt"}


def label(src: str, dst: str) -> str:
    return f"{KIND[src[0]]}->{KIND[dst[0]]}"


class Bench:
    def __init__(self, slab: SocketLab, args: argparse.Namespace) -> None:
        self.slab = slab
        self.args = args
        self.port = 20000
        self.results: dict[str, Any] = {}

    def next_port(self) -> int:
        self.port += 1
        return self.port

    def agent(self, name: str) -> Agent:
        return self.slab.agents[name]

    def transfer(self, src: str, dst: str, family: int) -> dict[str, float]:
        nbytes = int(self.args.mb * 1_000_000)
        a, b = self.agent(src), self.agent(dst)
        port = self.next_port()
        sink = b.start("sink", family=family, port=port, digest=False, timeout_s=60)
        sink.listening()
        before = {n: self.slab.proc_stat(n) for n in (src, dst)}
        sent = a.start(
            "source", host=b.address(family), port=port, bytes=nbytes, seed=port,
            digest=False, timeout_s=60,
        ).ok(timeout=1200)  # fmt: skip
        got = sink.ok(timeout=120)
        after = {n: self.slab.proc_stat(n) for n in (src, dst)}
        if not sent["digest_ok"] or got["bytes"] != nbytes:
            raise RuntimeError(f"{src}->{dst}: incomplete transfer {sent} {got}")
        cpu = sum(after[n]["cpu_s"] - before[n]["cpu_s"] for n in (src, dst))
        return {
            "mb_s": float(sent["mb_s"]),
            "stall_s": float(got["max_gap_s"]),
            "cpu_s_per_gb": cpu / (nbytes / 1e9),
        }

    def bulk(self) -> None:
        for family in self.args.families:
            runs: dict[str, list[dict[str, float]]] = {label(*p): [] for p in PAIRS}
            for r in range(self.args.rounds):
                for src, dst in PAIRS:
                    fig = self.transfer(src, dst, family)
                    runs[label(src, dst)].append(fig)
                    print(
                        f"  round {r + 1} IPv{family} {label(src, dst):14} "
                        f"{fig['mb_s']:8.1f} MB/s  stall {fig['stall_s']:.2f} s  "
                        f"{fig['cpu_s_per_gb']:.2f} CPU s/GB",
                        flush=True,
                    )
            summary = {}
            for name, figs in runs.items():
                summary[name] = {
                    "median_mb_s": statistics.median(f["mb_s"] for f in figs),
                    "min_mb_s": min(f["mb_s"] for f in figs),
                    "max_mb_s": max(f["mb_s"] for f in figs),
                    "worst_stall_s": max(f["stall_s"] for f in figs),
                    "cpu_s_per_gb": statistics.median(f["cpu_s_per_gb"] for f in figs),
                }
            self.results[f"bulk_ipv{family}"] = summary

    def latency(self) -> None:
        """Median over ``--rounds`` interleaved rounds of each case's p50 and p99."""
        count = self.args.rr
        # Blocking sockets, a thread per connection on both ends, as libzt's agent does; and
        # zt.asyncio streams on both ends (the readiness descriptors: the fileno() design).
        # "zt fileno": the same with fileno() called on both ends, so their readiness
        # descriptors are kept in step.
        cases = [("zt", "z1", "z2", "rr", "threads"), ("zt fileno", "z1", "z2", "rr", "armed"),
                 ("zt asyncio", "z1", "z2", "rr_async", ""), ("libzt", "l3", "l4", "rr", ""),
                 ("zt->libzt", "z1", "l4", "rr", ""),
                 ("libzt->zt", "l3", "z2", "rr", "threads")]  # fmt: skip
        out: dict[str, Any] = {}
        for family in self.args.families:
            runs: dict[str, list[dict[str, float]]] = {c[0]: [] for c in cases}
            for _ in range(self.args.rounds):
                for name, client, server, op, mode in cases:
                    port = self.next_port()
                    arm = mode == "armed"
                    srv = self.agent(server).start(
                        "echo_server", family=family, port=port, conns=2,
                        mode="threads" if arm else mode, arm=arm,
                    )  # fmt: skip
                    srv.listening()
                    host = self.agent(server).address(family)
                    c = self.agent(client)
                    c.start(op, host=host, port=port, count=200, arm=arm).ok(timeout=120)
                    rep = c.start(op, host=host, port=port, count=count, arm=arm).ok(timeout=600)
                    srv.ok(timeout=60)
                    runs[name].append(rep)
                    print(
                        f"  64-byte RR IPv{family} {name:11} p50 {rep['p50_ms']:.3f} ms  "
                        f"p99 {rep['p99_ms']:.3f} ms",
                        flush=True,
                    )
            for name, reps in runs.items():
                out[f"{name} IPv{family}"] = {
                    k: statistics.median(r[k] for r in reps) for k in ("p50_ms", "p99_ms")
                }
        self.results["rr_64"] = out

    def memory(self) -> None:
        idle = self.slab.proc_stat("z2")["rss_kb"]
        libzt_idle = self.slab.proc_stat("l4")["rss_kb"]
        # What the agent imports besides its node (ztagent.py), and what a program needs.
        bare = python_rss_kb("asyncio, hashlib, json, zt, zt.socket, zt.asyncio")
        minimal = python_rss_kb("zt")
        conns = self.args.conns
        port = self.next_port()
        server, client = self.agent("z2"), self.agent("z1")
        srv = server.start("echo_server", family=4, port=port, conns=conns)
        srv.listening()
        before = {n: self.slab.proc_stat(n)["rss_kb"] for n in ("z1", "z2")}
        hold = client.start(
            "hold", host=server.address(4), port=port, conns=conns, hold_s=2.0, timeout_s=30
        )
        hold.listening(timeout=300)
        during = {n: self.slab.proc_stat(n)["rss_kb"] for n in ("z1", "z2")}
        hold.ok(timeout=120)
        srv.ok(timeout=120)
        per_conn = {n: (during[n] - before[n]) / conns for n in ("z1", "z2")}
        self.results["memory"] = {
            "idle_agent_rss_mb": idle / 1024,
            "python_without_node_rss_mb": bare / 1024,
            "idle_node_rss_mb": (idle - bare) / 1024,
            "python_importing_zt_rss_mb": minimal / 1024,
            "minimal_idle_process_rss_mb": (minimal + idle - bare) / 1024,
            "idle_libzt_agent_rss_mb": libzt_idle / 1024,
            "per_connection_kb": {"client": per_conn["z1"], "server": per_conn["z2"]},
            "conns": conns,
        }
        print(
            f"  idle zt agent RSS {idle / 1024:.1f} MB (its imports without a node: "
            f"{bare / 1024:.1f} MB, so the node takes {(idle - bare) / 1024:.1f} MB; Python "
            f"after `import zt`: {minimal / 1024:.1f} MB; libzt agent: "
            f"{libzt_idle / 1024:.1f} MB); per connection: "
            f"client {per_conn['z1']:.1f} kB, "
            f"server {per_conn['z2']:.1f} kB ({conns} connections)",
            flush=True,
        )


def python_rss_kb(imports: str) -> int:
    """RSS of a fresh interpreter after ``import <imports>`` (no node)."""
    code = (
        f"import pathlib, {imports}\n"
        "print(next(int(l.split()[1]) for l in pathlib.Path('/proc/self/status')"
        ".read_text().splitlines() if l.startswith('VmRSS:')))"
    )
    return int(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              check=True).stdout)  # fmt: skip


def report(results: dict[str, Any], families: list[int]) -> None:
    print("\n== summary ==")
    for family in families:
        bulk = results.get(f"bulk_ipv{family}")
        if not bulk:
            continue
        base = bulk["libzt->libzt"]["median_mb_s"]
        print(f"bulk TCP IPv{family} (median MB/s, ratio to libzt<->libzt in this run):")
        for name, fig in bulk.items():
            print(
                f"  {name:14} {fig['median_mb_s']:8.1f}  ({fig['min_mb_s']:.1f}-"
                f"{fig['max_mb_s']:.1f})  x{fig['median_mb_s'] / base:5.2f}  worst stall "
                f"{fig['worst_stall_s']:.2f} s  {fig['cpu_s_per_gb']:.2f} CPU s/GB"
            )
    rr = results.get("rr_64", {})
    for family in families:
        zt_p50 = rr.get(f"zt IPv{family}", {}).get("p50_ms")
        lz_p50 = rr.get(f"libzt IPv{family}", {}).get("p50_ms")
        if zt_p50 and lz_p50:
            print(f"RR p50 IPv{family}: zt {zt_p50:.3f} ms vs libzt {lz_p50:.3f} ms "
                  f"(ratio {zt_p50 / lz_p50:.2f})")  # fmt: skip
    print(json.dumps(results, indent=1))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    p.add_argument("--mb", type=float, default=100.0, help="MB per bulk transfer")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--families", default="4", help="comma-separated: 4, 6 or 4,6")
    p.add_argument("--rr", type=int, default=2000, help="64-byte round trips per case")
    p.add_argument("--conns", type=int, default=200, help="connections for per-connection memory")
    p.add_argument("--skip", default="", help="comma-separated parts to skip: bulk,rr,memory")
    args = p.parse_args()
    args.families = [int(f) for f in args.families.split(",")]
    if zt.BUILD_PROFILE != "release":
        sys.stderr.write("refusing to measure a debug build of zt\n")
        return 2
    ok, why = netlab_available()
    if not ok:
        sys.stderr.write(f"needs root and `ip netns` (network namespaces): {why}\n")
        return 2
    skip = set(filter(None, args.skip.split(",")))
    # Every process here runs from bytecode, as an installed package does (pip compiles it):
    # compiling the sources at each import (a checkout under PYTHONDONTWRITEBYTECODE) leaves
    # about 2 MB more on each interpreter's heap and would blur the memory figures.
    import compileall

    for tree in (Path(zt.__file__).parent, REPO / "tests"):
        compileall.compile_dir(str(tree), quiet=1)
    with tempfile.TemporaryDirectory(prefix="zt-bench-tcp-") as tmp:
        slab = SocketLab(Path(tmp), ["zt", "zt", "libzt", "libzt"], timeout_s=3600)
        with slab.running():
            bench = Bench(slab, args)
            started = time.monotonic()
            if "memory" not in skip:
                bench.memory()
            if "rr" not in skip:
                bench.latency()
            if "bulk" not in skip:
                bench.bulk()
            bench.results["seconds"] = time.monotonic() - started
        report(bench.results, args.families)
    return 0


if __name__ == "__main__":
    sys.exit(main())
