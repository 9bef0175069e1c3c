"""zt sockets against libzt 1.8.4 and against zt, between real processes in namespaces.

One lab (:class:`tests.netns.socketlab.SocketLab`) for the module: host 0 is the zt root and
controller of a public network (IPv4 pool + rfc4193 IPv6); hosts 1, 2 are zt agents ``z1``,
``z2``, host 3 a libzt agent ``l3``, hosts 4, 5, 6 zt agents ``z4``, ``z5``, ``z6`` that get killed.

Covered: TCP echo and a sha256-checked bulk transfer (``ZT_NETNS_BULK_MB``, default 100 MB)
zt→libzt, libzt→zt and zt→zt over IPv4 and IPv6; UDP request/response both ways; an asyncio
echo server on zt serving 50 concurrent clients (25 libzt, 25 zt); a peer that vanishes
mid-transfer (SIGKILL) makes the survivor's socket fail within its timeout, whichever side
it was on.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import pytest

from tests.interop.marks import INTEROP
from tests.netns.agentproto import Agent
from tests.netns.netlab import require_netlab
from tests.netns.socketlab import SocketLab

pytestmark = [pytest.mark.netns, pytest.mark.slow, *INTEROP]

BULK = int(float(os.environ.get("ZT_NETNS_BULK_MB", "100")) * 1_000_000)
FAMILIES = [4, 6]
VANISH_TIMEOUT_S = 5.0
MAX_STALL_S = 2.0


@pytest.fixture(scope="module")
def slab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SocketLab]:
    require_netlab()
    lab = SocketLab(tmp_path_factory.mktemp("sockets"), ["zt", "zt", "libzt", "zt", "zt", "zt"])
    with lab.running():
        yield lab
    print("\nagent reports:", {k: v for k, v in lab.reports.items() if k in ("z1", "z2")})


_port = iter(range(6000, 7000))


def transfer(src: Agent, dst: Agent, family: int, nbytes: int = BULK) -> dict[str, float]:
    """``nbytes`` from ``src`` to ``dst``; checks the digest, the count and the stalls."""
    port = next(_port)
    sink = dst.start("sink", family=family, port=port, timeout_s=30)
    sink.listening()
    source = src.start(
        "source", host=dst.address(family), port=port, bytes=nbytes, seed=port, timeout_s=30
    )
    sent = source.ok(timeout=600)
    got = sink.ok(timeout=60)
    assert sent["digest_ok"], (sent, got)
    assert got["bytes"] == nbytes, got
    print(
        f"\n{src.name}->{dst.name} IPv{family}: {nbytes / 1e6:.0f} MB in {sent['seconds']:.2f} s "
        f"= {sent['mb_s']:.1f} MB/s, longest stall {got['max_gap_s']:.3f} s"
    )
    return {"mb_s": float(sent["mb_s"]), "max_gap_s": float(got["max_gap_s"])}


def echo(client: Agent, server: Agent, family: int, clients: int = 1, messages: int = 200) -> None:
    port = next(_port)
    srv = server.start("echo_server", family=family, port=port, conns=clients)
    srv.listening()
    out = client.start(
        "echo_clients", host=server.address(family), port=port, clients=clients,
        messages=messages, min_size=8, max_size=4000,
    ).ok(timeout=300)  # fmt: skip
    assert out["ok"] == clients, out
    served = srv.ok(timeout=60)
    assert served["conns"] == clients, served
    assert served["bytes"] == out["bytes"], (served, out)


@pytest.mark.parametrize("family", FAMILIES)
def test_tcp_echo_between_zt_and_libzt(slab: SocketLab, family: int) -> None:
    z, lz = slab.agents["z1"], slab.agents["l3"]
    echo(z, lz, family)
    echo(lz, z, family)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize(("src", "dst"), [("z1", "l3"), ("l3", "z1"), ("z1", "z2")])
def test_bulk_transfer(slab: SocketLab, family: int, src: str, dst: str) -> None:
    figures = transfer(slab.agents[src], slab.agents[dst], family)
    if "l3" not in (src, dst):
        # Between two zt nodes nothing may stall (lwIP's receive queue stalls libzt's side).
        assert figures["max_gap_s"] < MAX_STALL_S, figures


@pytest.mark.parametrize("family", FAMILIES)
def test_udp_request_response_both_ways(slab: SocketLab, family: int) -> None:
    z, lz = slab.agents["z1"], slab.agents["l3"]
    for client, server in ((z, lz), (lz, z), (z, slab.agents["z2"])):
        port = next(_port)
        srv = server.start("udp_echo", family=family, port=port)
        srv.listening()
        out = client.start(
            "udp_client", host=server.address(family), port=port, count=100, size=1200
        ).ok(timeout=120)
        print(f"\nUDP IPv{family} {client.name}->{server.name}: {out}")
        assert out["answered"] == 100, out
        assert srv.ok(timeout=30)["distinct"] == 100


def test_asyncio_echo_server_serves_50_concurrent_libzt_and_zt_clients(slab: SocketLab) -> None:
    server = slab.agents["z1"]
    port = next(_port)
    srv = server.start("echo_server", family=4, port=port, conns=50)
    srv.listening()
    host = server.address(4)
    batches = [
        slab.agents[name].start(
            "echo_clients", host=host, port=port, clients=25, messages=40,
            min_size=8, max_size=16000,
        )
        for name in ("l3", "z2")
    ]  # fmt: skip
    outs = [b.ok(timeout=300) for b in batches]
    assert [o["ok"] for o in outs] == [25, 25], outs
    served = srv.ok(timeout=60)
    assert served["conns"] == 50, served
    assert served["bytes"] == sum(o["bytes"] for o in outs)


@pytest.mark.parametrize("family", FAMILIES)
def test_peer_vanishing_mid_transfer_fails_the_socket_within_its_timeout(
    slab: SocketLab, family: int
) -> None:
    """The receiver dies (z4 or z5 SIGKILLed while z1 sends), then the sender: z1's socket
    reports an error within its timeout either way, instead of hanging."""
    survivor = slab.agents["z1"]
    victim_name = "z4" if family == 4 else "z5"
    victim = slab.agents[victim_name]
    # 1. z1 sends to the victim, which dies: z1's sends time out.
    port = next(_port)
    victim.start("sink", family=family, port=port, digest=False, timeout_s=60).listening()
    source = survivor.start(
        "source", host=victim.address(family), port=port, bytes=10_000_000_000, seed=1,
        timeout_s=VANISH_TIMEOUT_S,
    )  # fmt: skip
    time.sleep(1.0)  # mid-transfer
    slab.kill(victim_name)
    killed = time.monotonic()
    report = source.result(timeout=VANISH_TIMEOUT_S + 30)
    noticed = time.monotonic() - killed
    assert report["error"] is not None, report
    assert report["sent"] > 0, report
    assert report["error_after_last_progress_s"] <= VANISH_TIMEOUT_S + 2.0, report
    assert noticed <= VANISH_TIMEOUT_S + 5.0, (noticed, report)
    print(f"\nsender noticed the vanished receiver after {noticed:.2f} s: {report['error']}")


def test_vanishing_sender_fails_the_receiving_socket_within_its_timeout(slab: SocketLab) -> None:
    """A receiver whose sender dies mid-transfer (no FIN, no RST) times out."""
    survivor = slab.agents["z1"]
    victim = slab.agents["z6"]
    port = next(_port)
    sink = survivor.start("sink", family=6, port=port, digest=False, timeout_s=VANISH_TIMEOUT_S)
    sink.listening()
    victim.start("source", host=survivor.address(6), port=port, bytes=10_000_000_000, timeout_s=60)
    time.sleep(1.0)
    slab.kill("z6")
    killed = time.monotonic()
    report = sink.result(timeout=VANISH_TIMEOUT_S + 30)
    noticed = time.monotonic() - killed
    assert report["error"] is not None and report["bytes"] > 0, report
    assert noticed <= VANISH_TIMEOUT_S + 5.0, (noticed, report)
    print(f"\nreceiver noticed the vanished sender after {noticed:.2f} s: {report['error']}")
