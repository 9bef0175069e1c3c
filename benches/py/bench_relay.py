"""Relay throughput of a zt root over real UDP on loopback.

Usage::

    python benches/py/bench_relay.py [--seconds S] [--size BYTES]

A zt root and two zt nodes (A, B) run in this process on 127.0.0.1. A sender thread then fires
well-formed packets addressed from A to B at the root as fast as it can (relays never decrypt, so
any packet with B's address is relayed to B). The figure is the root's ``relayed`` counter per
second; B drops the packets (their MACs are not A's) and counts them. Only traffic to 127.0.0.1.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import threading
import time

import zt
from _loopback import loopback_planet, refuse_debug_build


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    p.add_argument("--seconds", type=float, default=3.0)
    p.add_argument("--size", type=int, default=1400, help="payload bytes per packet")
    args = p.parse_args()
    if refuse_debug_build():
        return 2
    root_opts, opts = loopback_planet()

    with (
        zt.Node(root_opts) as root,
        zt.Node(opts()) as a,
        zt.Node(opts()) as b,
    ):
        a.wait_online(20)
        b.wait_online(20)
        header = bytes(8) + bytes.fromhex(b.address) + bytes.fromhex(a.address) + bytes(9)
        packet = header + b"\x06" + os.urandom(args.size)
        stop = threading.Event()
        sent = [0]

        def blast() -> None:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.connect(("127.0.0.1", root_opts.port))
                n = 0
                while not stop.is_set():
                    try:
                        # A fresh ID each time, like real traffic.
                        s.send(os.urandom(8) + packet[8:])
                        n += 1
                    except OSError:
                        pass
                sent[0] = n

        before = root.stats["relayed"]
        t0 = time.perf_counter()
        th = threading.Thread(target=blast)
        th.start()
        time.sleep(args.seconds)
        stop.set()
        th.join()
        elapsed = time.perf_counter() - t0
        time.sleep(0.2)
        relayed = root.stats["relayed"] - before
        print(
            f"zt {zt.__version__} ({zt.BUILD_PROFILE}), {args.size + 28}-byte packets, "
            f"{elapsed:.1f} s on 127.0.0.1"
        )
        print(f"sent to the root:   {sent[0] / elapsed:12,.0f} datagrams/s")
        print(
            f"relayed by the root:{relayed / elapsed:12,.0f} datagrams/s "
            f"({relayed * (args.size + 28) * 8 / elapsed / 1e6:,.0f} Mbit/s)"
        )
        print(f"B received and dropped: {b.stats['drops_total']:,}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
