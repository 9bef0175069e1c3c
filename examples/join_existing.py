"""Join an existing network: start a node on the network's planet, join, print the address.

    python examples/join_existing.py --planet PLANET_FILE --network NWID [--store DIR]
                                     [--connect IP:PORT]

``--planet`` is the planet of the network's roots (a private planet; this example never uses
ZeroTier's public one). A planet whose roots are all on 127.0.0.0/8, such as zt.lab's, gives
a node confined to loopback. ``--store`` keeps the node's identity (a zerotier-one home
directory); without it each run is a new node. On a private network, authorize the address
printed first on the network's controller: the node waits for it (``--timeout``). With
``--connect``, the node then sends a line to that TCP service on the network and prints the
line it answers.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import zt


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--planet", required=True, type=Path, help="the roots' planet file")
    p.add_argument("--network", required=True, help="the network ID (16 hex digits)")
    p.add_argument("--store", help="the node's home directory (default: in memory)")
    p.add_argument("--connect", metavar="IP:PORT", help="a TCP service to greet on the network")
    p.add_argument("--timeout", type=float, default=60, help="seconds to wait for the network")
    args = p.parse_args()

    planet = zt.World.from_bytes(args.planet.read_bytes())
    endpoints = [ep for root in planet.roots for ep in root.stable_endpoints]
    local = all(ep.startswith("127.") for ep in endpoints)  # roots on this host only
    node = zt.Node(
        store=args.store,
        planet=planet,
        allow_loopback=local,
        ipv6=not local,
        allowed_destinations=["127.0.0.0/8"] if local else None,
    )
    with node:
        node.start()
        print(f"node {node.address} joining {args.network}", flush=True)
        node.join(args.network)
        info = node.wait_network(args.network, timeout=args.timeout)
        print(f"network {info.id} {info.name!r}: {info.status}")
        for address in info.addresses:
            print(f"address: {address}")

        if args.connect:
            host, port = args.connect.rsplit(":", 1)
            with node.create_connection((host.strip("[]"), int(port)), timeout=30) as conn:
                conn.sendall(f"hello from {node.address}\n".encode())
                with conn.makefile("rb") as answers:
                    print(f"answer: {answers.readline().decode().rstrip()}")


if __name__ == "__main__":
    main()
