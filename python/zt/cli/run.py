"""``zt run``: run a node in the foreground until SIGINT/SIGTERM, then stop it cleanly.

Like zerotier-one, a ``planet`` file in the home overrides ZeroTier's default planet; a node
listed as a root in its planet serves as a root (answers WHOIS, relays, sends RENDEZVOUS).
Networks joined before (``networks.d``) are rejoined; ``--join`` joins more. With
``--controller`` the node also runs the built-in network controller (``controller.db`` in the
home). The local JSON API of zerotier-one is served on loopback TCP at the UDP port's number
(``--api-port`` to choose, ``--no-api`` to disable), authenticated by ``authtoken.secret``;
its port is written to ``zerotier-one.port`` in the home, where ``zt cli -D<home>`` finds it.
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

from ..events import AddressEvent, Event, EventCode, NetworkEvent
from ..network import parse_network_id
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
    p.add_argument(
        "--join", action="append", default=[], metavar="NWID", help="join this network (repeat)"
    )
    p.add_argument("--controller", action="store_true", help="run the built-in network controller")
    p.add_argument("--api-port", type=int, help="local API TCP port (default: the UDP port)")
    p.add_argument("--no-api", action="store_true", help="do not serve the local JSON API")
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
        elif isinstance(ev, (NetworkEvent, AddressEvent)):
            log.info("%s", ev)

    try:
        joins = [parse_network_id(n) for n in args.join]
    except ValueError as e:
        sys.stderr.write(f"zt run: {e}\n")
        return 2
    api_port: Optional[int] = None
    if not args.no_api:
        api_port = args.api_port if args.api_port is not None else args.port

    opts = NodeOptions(
        store=args.home,
        port=args.port,
        planet=Path(args.planet) if args.planet else None,
        ipv6=not args.no_ipv6,
        allow_loopback=args.allow_loopback,
        on_event=on_event,
        controller=bool(args.controller),
        api_port=api_port,
    )
    try:
        node = Node(opts)
        node.start(timeout=120)
    except Exception as e:  # a clear message, not a traceback, for a shell user
        sys.stderr.write(f"zt run: {e}\n")
        return 1
    for nwid in joins:
        node.join(nwid)
    role = "root" if node.is_root else "node"
    if node.api_port is not None:
        # As zerotier-one: where zerotier-cli (and `zt cli -D<home>`) finds the API. Written
        # before the API is announced, so a supervisor that reads the line finds the file.
        try:
            Path(args.home, "zerotier-one.port").write_text(f"{node.api_port}")
        except OSError as e:
            log.warning("cannot write zerotier-one.port: %s", e)
    sys.stdout.write(f"{role} {node.address} listening on UDP port {node.port}\n")
    if node.api_port is not None:
        sys.stdout.write(f"api on 127.0.0.1:{node.api_port}\n")
    sys.stdout.flush()
    try:
        while not stop.wait(0.5):
            pass
    finally:
        node.close()
    sys.stdout.write("stopped\n")
    return 0
