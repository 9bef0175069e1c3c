"""``zt demo``: the main job, end to end on this machine with no network traffic.

It loads (or creates) a node home, starts the node, prints its identity, builds a private
planet with the node as its root, restarts the node on that planet, signs and verifies a message,
and shows the events it saw. Later releases extend it to a root, a controller and two nodes
moving data.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from .._native import KeyPair
from ..events import Event
from ..node import Node, NodeOptions
from ..planet import make_planet


def main(argv: list[str], prog: str = "zt demo") -> int:
    """Runs the demo; returns the exit code."""
    p = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0] if __doc__ else "")
    p.add_argument("--home", help="node home directory (default: a temporary directory)")
    args = p.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="zt-demo-") as tmp:
        home = Path(args.home) if args.home else Path(tmp) / "home"
        seen: list[Event] = []
        with Node(NodeOptions(store=home, on_event=seen.append)) as node:
            ident = node.identity
            print(f"home:      {home}")
            print(f"address:   {node.address}")
            print(f"identity:  {ident}")
            print(f"planet:    {node.planet!r} (ZeroTier's default)")

        # A private planet with this node as its only root (documentation address: no traffic).
        key = KeyPair.generate()
        planet = make_planet([(ident, ["203.0.113.1/9993"])], signing_key=key)
        with Node(NodeOptions(store=home, planet=planet)) as node:
            assert node.address == ident.address, "the stored identity is reused"
            print(f"planet:    {node.planet!r} (private, signed: {node.planet.verify()})")
            sig = node.identity.sign(b"hello, zt")
            print(f"signature: {sig.hex()[:32]}… valid={ident.public.verify(b'hello, zt', sig)}")
        print("events:    " + ", ".join(e.name for e in seen))
        files = sorted(str(f.relative_to(home)) for f in home.rglob("*") if f.is_file())
        print("stored:    " + ", ".join(files))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
