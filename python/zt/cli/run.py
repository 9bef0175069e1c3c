"""``zt run``: run a node in the foreground until SIGINT/SIGTERM, then stop it cleanly.

Like zerotier-one, a ``planet`` file in the home overrides ZeroTier's default planet; a node
listed as a root in its planet serves as a root (answers WHOIS, relays, sends RENDEZVOUS).
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import Optional

from ..events import Event, EventCode
from ..node import Node, NodeOptions

log = logging.getLogger("zt.run")


def build_parser(prog: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0] if __doc__ else "")
    p.add_argument("--home", required=True, help="state directory (zerotier-one/libzt layout)")
    p.add_argument("--port", type=int, default=9993, help="UDP port (default 9993; 0 = random)")
    p.add_argument("--planet", help="planet file to use instead of the default planet")
    p.add_argument("--no-ipv6", action="store_true", help="do not bind IPv6")
    p.add_argument(
        "--allow-loopback",
        action="store_true",
        help="use loopback paths (several zt nodes on one host)",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return p


def main(argv: list[str], prog: str = "zt run") -> int:
    """Runs a node until a signal; returns the exit code."""
    args = build_parser(prog).parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    stop = threading.Event()

    def on_signal(signum: int, frame: Optional[FrameType]) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)

    def on_event(ev: Event) -> None:
        if ev.code in (EventCode.NODE_ONLINE, EventCode.NODE_OFFLINE):
            log.info("%s", ev.name.lower().replace("node_", "node "))

    opts = NodeOptions(
        store=args.home,
        port=args.port,
        planet=Path(args.planet) if args.planet else None,
        ipv6=not args.no_ipv6,
        allow_loopback=args.allow_loopback,
        on_event=on_event,
    )
    try:
        node = Node(opts)
        node.start(timeout=120)
    except Exception as e:  # a clear message, not a traceback, for a shell user
        sys.stderr.write(f"zt run: {e}\n")
        return 1
    role = "root" if node.is_root else "node"
    sys.stdout.write(f"{role} {node.address} listening on UDP port {node.port}\n")
    sys.stdout.flush()
    try:
        while not stop.wait(0.5):
            pass
    finally:
        node.close()
    sys.stdout.write("stopped\n")
    return 0
