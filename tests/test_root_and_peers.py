"""A zt root and its peers over real UDP on loopback, in one process, with no network joined:
coming online, relaying then going direct, the peer cache, user messages, garbage on the wire
(stock ZeroTier never uses loopback paths, so the nodes opt in with ``allow_loopback``).
Networks (controller, members, ad-hoc) are ``test_networks.py``."""

from __future__ import annotations

import os
import pathlib
import socket
import time
from collections.abc import Iterator

import pytest

import zt
from zt.events import UserMessageEvent

from .support import loopback_planet, options, wait_until

USER_TYPE = 0x10000


@pytest.fixture
def loopback_net() -> Iterator[tuple[zt.Node, zt.Node, zt.Node]]:
    root_id = zt.Identity.generate()
    planet, port = loopback_planet(root_id)
    root = zt.Node(options(planet, identity=root_id, port=port)).start()
    a = zt.Node(options(planet)).start()
    b = zt.Node(options(planet)).start()
    try:
        yield root, a, b
    finally:
        for n in (a, b, root):
            n.close()


def test_root_and_two_nodes_online_relay_then_direct(
    loopback_net: tuple[zt.Node, zt.Node, zt.Node],
) -> None:
    root, a, b = loopback_net
    assert root.is_root and root.online
    a.wait_online(15)
    b.wait_online(15)
    rp = a.peer(root.address)
    assert rp is not None and rp.is_root and rp.direct and rp.protocol == 12
    stream = b.events(until_down=False)
    a.send_user_message(b.address, USER_TYPE, b"hello over zt")
    deadline = time.monotonic() + 10
    got = None
    while got is None and time.monotonic() < deadline:
        ev = stream.get(timeout=0.5)
        if isinstance(ev, UserMessageEvent):
            got = ev
    assert got is not None, "the message arrived"
    assert (got.address, got.type_id, got.data) == (a.address, USER_TYPE, b"hello over zt")
    assert root.stats["relayed"] > 0, "the first packets went through the root"

    def direct(x: zt.Node, y: zt.Node) -> bool:
        p = x.peer(y.address)
        return p is not None and p.direct

    wait_until(lambda: direct(a, b) and direct(b, a), 15, "a direct path both ways")
    peer_b = a.peer(b.address)
    assert peer_b is not None
    path = next(p for p in peer_b.paths if p.alive)
    assert path.remote == f"127.0.0.1:{b.port}"


def test_peers_are_cached_at_stop(tmp_path: pathlib.Path) -> None:
    root_id = zt.Identity.generate()
    planet, port = loopback_planet(root_id)
    home = str(tmp_path / "a")
    with (
        zt.Node(options(planet, identity=root_id, port=port)),
        zt.Node(options(planet, store=home)) as a,
    ):
        a.wait_online(15)
    assert f"{root_id.address}.peer" in os.listdir(os.path.join(home, "peers.d"))


def test_send_user_message_validation(loopback_net: tuple[zt.Node, zt.Node, zt.Node]) -> None:
    _, a, _ = loopback_net
    with pytest.raises(ValueError, match="10 hexadecimal"):
        a.send_user_message("nothex", USER_TYPE, b"")
    with pytest.raises(ValueError, match="own address"):
        a.send_user_message(a.address, USER_TYPE, b"")
    with pytest.raises(ValueError, match="too large"):
        a.send_user_message("0123456789", USER_TYPE, bytes(20_000))


def test_garbage_on_the_wire_is_counted_and_harmless(
    loopback_net: tuple[zt.Node, zt.Node, zt.Node],
) -> None:
    root, a, _ = loopback_net
    a.wait_online(15)
    before = a.stats
    rng = __import__("random").Random(1)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for size in (0, 1, 13, 16, 17, 27, 28, 29, 64, 200, 1400, 9000):
            s.sendto(bytes(rng.getrandbits(8) for _ in range(size)), ("127.0.0.1", a.port))
        # Well-formed headers addressed to the node, from its root, with a wrong MAC.
        me = bytes.fromhex(a.address)
        src = bytes.fromhex(root.address)
        for cipher in (0, 1, 3):
            forged = bytes(8) + me + src + bytes([cipher << 3]) + bytes(8) + b"\x08" + bytes(40)
            s.sendto(forged, ("127.0.0.1", a.port))
    wait_until(
        lambda: a.stats["drops_total"] - before["drops_total"] >= 12, 5, "the drops to be counted"
    )
    drops = a.stats["drops"]
    assert drops.get("BadMac", 0) - before["drops"].get("BadMac", 0) >= 3
    assert drops.get("Runt", 0) > before["drops"].get("Runt", 0)
    assert a.online
    a.send_user_message(root.address, USER_TYPE, b"still fine")


def test_twenty_newcomers_behind_one_address_come_online_together() -> None:
    # Twenty new members behind one address (a NAT, here loopback) start together: each must
    # be answered at once, not one every 2 s as when the root's per-/24 gate took a HELLO
    # every 2 s (issue 15, item 8: online at 2.2, 4.3 and 6.3 s for three members).
    root_id = zt.Identity.generate()
    planet, port = loopback_planet(root_id)
    root = zt.Node(options(planet, identity=root_id, port=port)).start()
    ids = [zt.Identity.generate() for _ in range(20)]  # made before the clock starts
    nodes = [zt.Node(options(planet, identity=i)) for i in ids]
    try:
        t0 = time.monotonic()
        for n in nodes:
            n.start(wait=False)
        online_at: dict[int, float] = {}
        while len(online_at) < len(nodes) and time.monotonic() - t0 < 30:
            for i, n in enumerate(nodes):
                if i not in online_at and n.state is zt.NodeState.RUNNING and n.online:
                    online_at[i] = time.monotonic() - t0
            time.sleep(0.005)
        assert len(online_at) == len(nodes), f"{len(online_at)} of 20 online in 30 s"
        times = sorted(online_at.values())
        # Measured 0.39-0.50 s apart on a busy 2-core machine (the target is 1 s); the bound
        # leaves room for a loaded CI machine (1.1 s once, with a fuzzer on the other core)
        # and still fails the old gate by far (one member every 2 s: 38 s apart).
        assert times[-1] - times[0] <= 3.0, f"online from {times[0]:.2f} s to {times[-1]:.2f} s"
    finally:
        for n in nodes:
            n.close()
        root.close()
