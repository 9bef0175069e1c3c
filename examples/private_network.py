"""A private network from scratch with the controller API: create it, authorize members, see them.

zt.lab provides only the planet and its root on 127.0.0.1; the controller is a node of our own
(``controller=True`` keeps its database in the node's home, ``":memory:"`` in memory) and the
rest is the ``node.controller`` API, whose records are zerotier-one's ``/controller`` JSON.
Bob is refused until he is authorized, then revoked.

    python examples/private_network.py
"""

from __future__ import annotations

import time

import zt


def wait_status(node: zt.Node, nwid: str, status: str, timeout: float = 30) -> None:
    """Waits until ``node`` sees the network in ``status`` (OK, ACCESS_DENIED...)."""
    deadline = time.monotonic() + timeout
    while (info := node.network(nwid)) is None or info.status != status:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{node.address}: {nwid} is {info and info.status}, not {status}")
        time.sleep(0.05)


def main() -> None:
    with zt.lab.Lab() as lab:
        ctl = lab.node(controller=":memory:").controller  # a controller of our own
        assert ctl is not None
        net = ctl.create_network(
            name="example",
            private=True,  # members need authorization
            v4AssignMode={"zt": True},
            ipAssignmentPools=[{"ipRangeStart": "10.147.17.10", "ipRangeEnd": "10.147.17.250"}],
            routes=[{"target": "10.147.17.0/24", "via": None}],
        )
        nwid = net["id"]  # the controller's address and 6 hex digits
        print(f"created network {nwid} {net['name']!r} private={net['private']}")

        alice, bob = lab.node(), lab.node()
        ctl.authorize(nwid, alice.address)  # authorized before she asks
        for node in (alice, bob):
            node.join(nwid)
        info = alice.wait_network(nwid, timeout=30)
        print(f"alice {alice.address}: {info.status} {info.ipv4}")
        wait_status(bob, nwid, "ACCESS_DENIED")
        print(f"bob {bob.address}: ACCESS_DENIED")

        ctl.authorize(nwid, bob.address)
        info = bob.wait_network(nwid, timeout=30)
        print(f"bob {bob.address}: {info.status} {info.ipv4}")

        for address in sorted(ctl.members(nwid)):
            m = ctl.member(nwid, address)
            print(f"member {address} authorized={m['authorized']} ips={m['ipAssignments']}")

        assert info.ipv4 is not None
        bob_ip = str(info.ipv4.ip)
        rtt = alice.ping(nwid, bob_ip, timeout=10)
        print(f"alice pings bob: {'reply' if rtt is not None else 'no reply'}")

        ctl.deauthorize(nwid, bob.address)  # revoked on every member at once
        wait_status(bob, nwid, "ACCESS_DENIED")
        print(f"bob {bob.address}: ACCESS_DENIED again")
        rtt = alice.ping(nwid, bob_ip, timeout=2)  # bob is no member any more
        print(f"alice pings bob: {'reply' if rtt is not None else 'no reply'}")


if __name__ == "__main__":
    main()
