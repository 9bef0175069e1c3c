"""``zt demo``: the main job, end to end on this machine, with traffic only on loopback.

It creates a private planet whose root is a zt node, starts that root and two more nodes in this
process, shows them come online, sends USER_MESSAGEs between the two (first relayed by the root,
which then introduces them), waits for the direct path, and prints what each node stored. Later
releases add a network controller and sockets.
"""

from __future__ import annotations

import argparse
import socket
import sys
import tempfile
import time
from pathlib import Path

from .._native import Identity, KeyPair
from ..events import UserMessageEvent
from ..node import Node, NodeOptions
from ..planet import make_planet

USER_TYPE = 0x10001


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def main(argv: list[str], prog: str = "zt demo") -> int:
    """Runs the demo; returns the exit code."""
    p = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0] if __doc__ else "")
    p.add_argument("--home", help="directory for the three node homes (default: temporary)")
    p.add_argument("--messages", type=int, default=20, help="messages each way (default 20)")
    args = p.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="zt-demo-") as tmp:
        base = Path(args.home) if args.home else Path(tmp)
        root_id = Identity.generate()
        port = _free_port()
        planet = make_planet([(root_id, [f"127.0.0.1/{port}"])], signing_key=KeyPair.generate())
        print(f"planet:  {planet!r}, root {root_id.address} at 127.0.0.1/{port}")

        def opts(name: str, **kw: object) -> NodeOptions:
            o = NodeOptions(
                store=base / name,
                planet=planet,
                allow_loopback=True,
                ipv6=False,
                allowed_destinations=["127.0.0.0/8"],
            )
            for k, v in kw.items():
                setattr(o, k, v)
            return o

        t0 = time.monotonic()
        with (
            Node(opts("root", identity=root_id, port=port)) as root,
            Node(opts("alice")) as alice,
            Node(opts("bob")) as bob,
        ):
            print(f"root:    {root.address} (root={root.is_root}, online={root.online})")
            inbox = bob.events(until_down=False)
            alice.wait_online(20)
            bob.wait_online(20)
            print(f"alice:   {alice.address} online ({time.monotonic() - t0:.2f} s after start)")
            print(f"bob:     {bob.address} online")
            for i in range(args.messages):
                alice.send_user_message(bob.address, USER_TYPE, f"message {i}".encode())
                time.sleep(0.05)
            got: list[UserMessageEvent] = []
            deadline = time.monotonic() + 10
            while len(got) < args.messages and time.monotonic() < deadline:
                ev = inbox.get(timeout=0.2)
                if isinstance(ev, UserMessageEvent) and ev.address == alice.address:
                    got.append(ev)
            print(f"bob got {len(got)}/{args.messages} messages from alice")
            deadline = time.monotonic() + 15
            peer = alice.peer(bob.address)
            while not (peer and peer.direct) and time.monotonic() < deadline:
                time.sleep(0.1)
                peer = alice.peer(bob.address)
            if peer and peer.direct:
                print(f"alice -> bob direct path: {[x.remote for x in peer.paths if x.alive]}")
            print(
                f"root relayed {root.stats['relayed']} datagrams, "
                f"sent {root.stats['rendezvous_sent']} RENDEZVOUS"
            )
            ok = len(got) == args.messages and bool(peer and peer.direct)
        for name in ("root", "alice", "bob"):
            files = sorted(
                str(f.relative_to(base / name)) for f in (base / name).rglob("*") if f.is_file()
            )
            print(f"{name:<8} stored: {', '.join(files)}")
    print("demo ok" if ok else "demo FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
