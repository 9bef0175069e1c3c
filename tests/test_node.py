from __future__ import annotations

import asyncio
import logging
import select
import threading
import time
from pathlib import Path

import pytest

import zt
from zt import EventCode, NodeState


def state(node: zt.Node) -> NodeState:
    """The state, read afresh (a helper so type checkers do not narrow it)."""
    return node.state


START_CODES = [
    EventCode.STORE_IDENTITY_SECRET,
    EventCode.STORE_IDENTITY_PUBLIC,
    EventCode.NODE_UP,
    EventCode.PLANET_CHANGED,
    EventCode.STORE_PLANET,
]


def test_lifecycle_states_and_idempotence(tmp_path: Path) -> None:
    node = zt.Node(store=str(tmp_path / "h"))
    assert state(node) is NodeState.CREATED and node.fault is None
    with pytest.raises(zt.NodeStateError, match="once it has started"):
        _ = node.address
    assert node.online is False  # not running: not online (no error to catch)
    node.stop()  # no-op before start
    node.start()
    node.start()
    assert state(node) is NodeState.RUNNING
    addr = node.address
    assert len(addr) == 10 and node.identity.has_secret and repr(node).endswith("running>")
    node.stop()
    node.stop()
    assert state(node) is NodeState.STOPPED
    node.start()  # a stopped node starts again with the same identity
    assert node.address == addr
    node.close()
    assert state(node) is NodeState.STOPPED


def test_start_without_wait_reports_starting_then_running(tmp_path: Path) -> None:
    node = zt.Node(store=str(tmp_path / "h"), keygen_threads=1)
    node.start(wait=False)
    assert state(node) in (NodeState.STARTING, NodeState.RUNNING)
    assert node.online in (False, True)  # readable while it starts (keygen on a thread)
    node.wait_running(timeout=30)
    assert state(node) is NodeState.RUNNING
    node.close()


def test_concurrent_start_stop_is_safe(tmp_path: Path) -> None:
    node = zt.Node(store=str(tmp_path / "h"))
    errors: list[BaseException] = []

    def hammer(i: int) -> None:
        try:
            for _ in range(10):
                if i % 2:
                    node.start(wait=False)
                else:
                    node.stop()
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=hammer, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors
    node.stop()
    assert state(node) is NodeState.STOPPED
    node.start(timeout=30)
    assert state(node) is NodeState.RUNNING
    node.close()


def test_many_nodes_in_one_process() -> None:
    nodes = [zt.Node().start() for _ in range(4)]
    assert len({n.address for n in nodes}) == 4
    for n in nodes:
        n.close()


def test_callback_iterator_and_codes(tmp_path: Path) -> None:
    seen: list[zt.Event] = []
    done = threading.Event()

    def cb(ev: zt.Event) -> None:
        seen.append(ev)
        if ev.code == EventCode.NODE_DOWN:
            done.set()

    node = zt.Node(zt.NodeOptions(store=str(tmp_path / "h"), on_event=cb))
    stream = node.events()
    with node:
        addr = node.address
    assert done.wait(10)
    assert [e.code for e in seen] == [*START_CODES, EventCode.NODE_DOWN]
    iterated = list(stream)  # ends after NODE_DOWN
    assert [e.code for e in iterated] == [e.code for e in seen]
    up = iterated[2]
    assert isinstance(up, zt.events.NodeEvent) and up.address == addr and up.name == "NODE_UP"
    planet = iterated[3]
    assert isinstance(planet, zt.events.WorldEvent) and planet.world_id == 149604618
    store_ev = iterated[0]
    assert isinstance(store_ev, zt.events.StoreEvent) and store_ev.key == "identity.secret"


def test_failing_callback_is_logged_not_fatal(caplog: pytest.LogCaptureFixture) -> None:
    got: list[zt.Event] = []

    def bad(ev: zt.Event) -> None:
        raise RuntimeError("boom")

    node = zt.Node(on_event=bad)
    node.add_event_callback(got.append)
    with caplog.at_level(logging.ERROR, logger="zt.events"), node:
        pass
    deadline = time.time() + 10
    while not any(e.code == EventCode.NODE_DOWN for e in got) and time.time() < deadline:
        time.sleep(0.01)
    assert any(e.code == EventCode.NODE_DOWN for e in got)
    assert "boom" in caplog.text


def test_event_stream_fileno_and_timeouts() -> None:
    node = zt.Node()
    stream = node.events(until_down=False)
    r, _, _ = select.select([stream], [], [], 0)
    assert not r
    assert stream.get(timeout=0) is None
    node.start()
    r, _, _ = select.select([stream], [], [], 5)
    assert r
    first = stream.get(timeout=0)
    assert first is not None and first.code == EventCode.STORE_IDENTITY_SECRET
    node.close()
    rest = list(stream)  # closed after the node closed: drains and ends
    assert rest[-1].code == EventCode.NODE_DOWN
    with pytest.raises(EOFError):
        stream.get(timeout=0)


def test_slow_consumer_drops_are_counted() -> None:
    node = zt.Node()
    small = node.events(queue_size=2)
    node.start()
    node.close()
    assert small.dropped == len(START_CODES) + 1 - 2
    assert [e.code for e in small] == [EventCode.STORE_PLANET, EventCode.NODE_DOWN]


def test_async_iteration() -> None:
    async def main() -> list[EventCode]:
        node = zt.Node()
        codes: list[EventCode] = []
        stream = node.events()
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, node.start)
        stopper = loop.run_in_executor(None, node.stop)
        async for ev in stream:
            codes.append(ev.code)
        await stopper
        node.close()
        return codes

    assert asyncio.run(main()) == [*START_CODES, EventCode.NODE_DOWN]


def test_rust_logs_reach_python_logging(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="zt"), zt.Node() as node:
        addr = node.address
    assert any(r.name == "zt.node" and addr in r.getMessage() for r in caplog.records)


def test_private_planet_option_and_update(tmp_path: Path) -> None:
    key = zt.KeyPair.generate()
    root = zt.Identity.generate()
    v1 = zt.planet.make_planet([(root, ["203.0.113.1/9993"])], signing_key=key, timestamp=1)
    pfile = tmp_path / "planet.bin"
    pfile.write_bytes(v1.to_bytes())
    home = tmp_path / "h"
    with zt.Node(store=str(home), planet=str(pfile)) as node:
        assert node.planet == v1
        v2 = zt.planet.update_planet(v1, key)
        node.update_world(v2)
        with pytest.raises(zt.WorldError, match="not newer"):
            node.update_world(v1)
        with pytest.raises(zt.WorldError, match="not signed"):
            node.update_world(
                zt.planet.make_planet([], signing_key=zt.KeyPair.generate(), world_id=v1.id)
            )
        assert node.stats["worlds_rejected"] == 2
    # The stored newer revision of the chosen planet wins on restart...
    with zt.Node(store=str(home), planet=v1) as node:
        assert node.planet == v2
    # ...but a different chosen planet replaces a stored one.
    other = zt.planet.make_planet([(root, ["203.0.113.2/9993"])], signing_key=key)
    with zt.Node(store=str(home), planet=other) as node:
        assert node.planet == other
    with pytest.raises(zt.NodeStateError, match=r"created|stopped"):
        zt.Node().update_world(v2)
    with pytest.raises(zt.WorldError, match="moon"):
        zt.Node(planet=zt.World.make("moon", 1, 1, [], key))


def test_options_validation() -> None:
    with pytest.raises(TypeError):
        zt.Node(zt.NodeOptions(), store=None)
    with pytest.raises(ValueError, match="event_queue_size"):
        zt.Node(event_queue_size=0)
    with pytest.raises(zt.WorldError):
        zt.Node(planet=b"not a planet")


def test_running_nodes_stop_cleanly_at_exit(tmp_path: Path) -> None:
    import subprocess
    import sys

    home = str(tmp_path / "h")
    script = (
        "import zt\n"
        f"n = zt.Node(store={home!r}, on_event=lambda e: print(e.name, flush=True))\n"
        "n.start()\n"
    )
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split()[-1] == "NODE_DOWN"


def test_a_member_joining_at_start_is_configured_without_waiting_for_a_retry(
    tmp_path: Path,
) -> None:
    """A node that joins right after start() asks its controller before its root has answered
    (the controller's identity is looked up through the root). Its first answer lets what
    waited go at once: the member is configured in tens of milliseconds, where waiting for the
    next lookup retry took 0.5 s."""
    with zt.lab.Lab(home=tmp_path) as lab:
        nwid = lab.network()
        took = []
        for i in range(3):
            identity = zt.Identity.generate()  # outside the timing: generating takes a while
            lab.controller.authorize(nwid, identity.address)
            node = lab.node(identity=identity, store=str(tmp_path / f"m{i}"))
            start = time.monotonic()
            node.join(nwid)
            node.wait_network(nwid, 10)
            took.append(time.monotonic() - start)
        assert sorted(took)[1] < 0.4, took


def test_a_node_restarted_on_a_new_port_is_reached_at_once(tmp_path: Path) -> None:
    """A node restarted on another UDP port (a new process, a random port) greets the peers it
    knew; they take the new port at once instead of sending to the old one while it still
    counts as alive (~19 s)."""
    with zt.lab.Lab(home=tmp_path) as lab:
        nwid = lab.network()
        a, b = lab.member(nwid), lab.member(nwid)
        ip_a = lab.ip(a, nwid)
        assert b.ping(nwid, ip_a, 5.0) is not None
        old_port, store = a.port, a.options.store
        time.sleep(1.2)  # peers answer a credentials request at most once a second
        a.close()
        lab.nodes.remove(a)
        a = lab.node(store=store, port=zt.lab.unused_udp_port())
        assert a.port != old_port
        start = time.monotonic()
        while b.ping(nwid, ip_a, 0.1) is None:
            assert time.monotonic() - start < 1.0, "not reached within 1 s"
        paths = [p for peer in b.peers() if peer.address == a.address for p in peer.paths]
        old = [p for p in paths if p.remote.endswith(f":{old_port}")]
        assert not any(p.alive for p in old), paths
        assert any(p.alive for p in paths if p not in old), paths


def test_a_restarted_node_reaches_its_peers_at_once(tmp_path: Path) -> None:
    """A restarted member that speaks first (its ARP request, the peer's reply) is answered at
    once: peers answer its requests (a multicast gather) on the path they came by (through a
    root if relayed), not on its old port, and its HELLO makes them push their credentials
    again with their replies. Its
    network is usable as soon as wait_network() says OK (the stack exists by then)."""
    with zt.lab.Lab(home=tmp_path) as lab:
        nwid = lab.network()
        a, b = lab.member(nwid), lab.member(nwid)
        ip_b = lab.ip(b, nwid)
        assert a.ping(nwid, ip_b, 5.0) is not None
        took = []
        for _ in range(4):
            store = a.options.store
            time.sleep(0.3)
            a.close()
            lab.nodes.remove(a)
            a = lab.node(store=store, port=zt.lab.unused_udp_port())
            a.wait_network(nwid, 5)
            start = time.monotonic()
            while a.ping(nwid, ip_b, 0.05) is None:
                assert time.monotonic() - start < 5, "not reached within 5 s"
            took.append(time.monotonic() - start)
        assert max(took) < 0.5, took


def test_refused_destinations_are_counted_and_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A node confined to loopback whose planet names a root elsewhere sends nothing there:
    each refusal is counted, and the first per address is logged (no silent drop)."""
    planet = zt.planet.make_planet(
        [(zt.Identity.generate(), ["203.0.113.5/9993"])], signing_key=zt.KeyPair.generate()
    )
    caplog.set_level(logging.INFO, logger="zt.node")
    with zt.Node(
        store=str(tmp_path / "n"), planet=planet, port=0, allowed_destinations=["127.0.0.0/8"]
    ) as node:
        deadline = time.monotonic() + 10
        while node.stats["refused_destinations"] < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert node.stats["refused_destinations"] >= 2, node.stats  # HELLO retries
    refused = [r for r in caplog.records if "outside the allowed destinations" in r.getMessage()]
    assert len(refused) == 1 and "203.0.113.5" in refused[0].getMessage()
