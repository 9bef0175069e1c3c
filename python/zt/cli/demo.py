"""``zt demo``: the main job, end to end on this machine, with traffic only on loopback.

It creates a private planet whose root is a zt node that also runs the network controller,
starts it and two more nodes in this process, shows them come online, sends USER_MESSAGEs between
the two (first relayed by the root, which then introduces them), waits for the direct path, then
creates a private network, has both nodes join it, authorizes them, and moves Ethernet frames
between them (an ARP request answered by an ARP reply). It prints what each node stored.
"""

from __future__ import annotations

import argparse
import ipaddress
import sys
import tempfile
import time
from pathlib import Path

from .._native import Identity, KeyPair
from ..events import UserMessageEvent
from ..lab import unused_udp_port
from ..network import NetworkInfo
from ..node import Node, NodeOptions
from ..planet import make_planet

USER_TYPE = 0x10001


def _mac(text: str) -> bytes:
    return bytes.fromhex(text.replace(":", ""))


def _arp(op: int, src: NetworkInfo, dst_mac: bytes, dst_ip: ipaddress.IPv4Address) -> bytes:
    assert src.ipv4 is not None
    eth_dst = b"\xff" * 6 if op == 1 else dst_mac
    body = bytes([0, 1, 8, 0, 6, 4, 0, op]) + _mac(src.mac) + src.ipv4.ip.packed
    body += (b"\0" * 6 if op == 1 else dst_mac) + dst_ip.packed
    return eth_dst + _mac(src.mac) + b"\x08\x06" + body


def _network_part(root: Node, alice: Node, bob: Node) -> bool:
    assert root.controller is not None
    net = root.controller.create_network(
        name="demo",
        v4AssignMode={"zt": True},
        v6AssignMode={"rfc4193": True},
        ipAssignmentPools=[{"ipRangeStart": "198.18.0.10", "ipRangeEnd": "198.18.0.250"}],
        routes=[{"target": "198.18.0.0/15"}],
    )
    nwid = net["id"]
    print(f"network: {nwid} '{net['name']}' created on the controller {root.address}")
    for n in (alice, bob):
        n.join(nwid)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if set(root.controller.members(nwid)) >= {alice.address, bob.address}:
            break
        time.sleep(0.1)
    print(f"pending: {sorted(root.controller.members(nwid))} (held until authorized)")
    for n in (alice, bob):
        root.controller.authorize(nwid, n.address)
    a = alice.wait_network(nwid, 15)
    b = bob.wait_network(nwid, 15)
    for name, info in (("alice", a), ("bob", b)):
        addrs = ", ".join(str(x) for x in info.addresses)
        print(f"{name:<8} {info.status} on {nwid}: mac {info.mac}, {addrs}")
    assert a.ipv4 is not None and b.ipv4 is not None
    bob_tap, alice_tap = bob.frames(nwid), alice.frames(nwid)
    request = _arp(1, a, b"", b.ipv4.ip)
    got = None
    for _ in range(10):
        alice.send_frame(nwid, request)
        got = bob_tap.recv(1.0)
        if got is not None:
            break
    if got != request:
        print("bob did not receive alice's ARP request")
        return False
    print(f"bob got alice's ARP request: who has {b.ipv4.ip}? tell {a.ipv4.ip}")
    bob.send_frame(nwid, _arp(2, b, _mac(a.mac), a.ipv4.ip))
    reply = alice_tap.recv(5.0)
    if reply is None or reply[12:14] != b"\x08\x06" or reply[20:22] != b"\x00\x02":
        print("alice did not receive bob's ARP reply")
        return False
    print(f"alice got bob's ARP reply: {b.ipv4.ip} is at {b.mac}")
    return True


def main(argv: list[str], prog: str = "zt demo") -> int:
    """Runs the demo; returns the exit code."""
    p = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0] if __doc__ else "")
    p.add_argument("--home", help="directory for the three node homes (default: temporary)")
    p.add_argument("--messages", type=int, default=20, help="messages each way (default 20)")
    args = p.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="zt-demo-") as tmp:
        base = Path(args.home) if args.home else Path(tmp)
        root_id = Identity.generate()
        port = unused_udp_port()
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
            Node(opts("root", identity=root_id, port=port, controller=True)) as root,
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
            ok = _network_part(root, alice, bob) and ok
        for name in ("root", "alice", "bob"):
            files = sorted(
                str(f.relative_to(base / name)) for f in (base / name).rglob("*") if f.is_file()
            )
            print(f"{name:<8} stored: {', '.join(files)}")
    print("demo ok" if ok else "demo FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
