"""zt→zt TCP over an impaired underlay (issue 14), two zt agent processes in namespaces.

One lab (:class:`tests.netns.socketlab.SocketLab`: a zt root + controller, agents ``z1`` and
``z2``), the underlay between the agents impaired in both directions as
``benches/py/bench_paths.py`` does it (:mod:`tests.netns.impair`); one sha256-checked transfer
of ``MB`` MB per impairment, given up after ``DEADLINE_S``, so the module ends within a minute
even when the sender crawls.  Each must arrive intact, without a stall of ``MAX_STALL_S`` or
more, and no slower than a floor derived from what a decent TCP does on that path.  The floors
sit well above what the sender before issue 14 could reach and well below what this one does
(figures from a 2-core machine, in docs/benchmarks.md), so a loaded CI machine passes and a
regression to timeout-driven recovery fails:

* 1 % loss per underlay packet.  zt's 2800-byte segments travel as two datagrams, so ≈ 2 % of
  segments are lost; the unimpaired round trip is under a millisecond.  A TCP with SACK and
  fast retransmit repairs an isolated loss in about one round trip, without a timeout: the
  Mathis et al. bound MSS/RTT·1.22/√p at RTT 1 ms and p = 0.02 is ≈ 24 MB/s (an underestimate:
  the RTT here is lower), and the kernel's TCP moves 35 to 68 MB/s over this very path.
  Floor: 8 MB/s.  The sender before issue 14 waited out a 200 ms retransmission timeout per
  loss: 2.3 to 2.5 MB/s with about two stalls per MB; this one does ≈ 40 to 60 MB/s.
* 5 % loss: ≈ 10 % of segments lost, several in most windows, some retransmissions lost too.
  Mathis: ≈ 11 MB/s; the kernel's CUBIC does ≈ 3 MB/s here.  A timeout now and then is
  expected (a lost retransmission that no later ACK reveals), a one-second stall is not.
  Floor: 1 MB/s (before: did not finish in 60 s, a connection that no longer recovered).
* 1 % duplication + 0.5 % corruption: duplicates must not be taken for loss (DSACK), a corrupt
  datagram is a loss (its MAC fails).  Floor: 8 MB/s (before: 7.4 for 20 MB, with stalls).
* 20 ms ± 5 ms delay each way (uniform, so packets are reordered by up to 10 ms).  The round
  trip is ≈ 40 ms and nothing is lost: a TCP that tolerates reordering (RACK's reordering
  window) retransmits nothing, and is bound by its window, which starts small and grows with
  the transfer.  For 4 MB, slow start dominates: the kernel's TCP does ≈ 6.6 MB/s for 3 MB.
  Floor: 2.5 MB/s (before: 0.6 to 0.8, each reordering taken for a loss).
* 5 % loss + 25 % of packets 10 ms early, with BBR (``TCP_CONGESTION``): ≈ 10 % of segments
  lost at a round trip of up to 20 ms holds a loss-based sender (CUBIC) to its Mathis bound,
  ≈ 0.5 MB/s; BBR does not take random loss for congestion and keeps the path's rate, as the
  kernel's BBR does (≈ 1.2 MB/s here).  Floor: 0.6 MB/s, above CUBIC's 0.44 to 0.50 (20 MB
  transfers); BBR moves 0.72 to 0.92 MB/s for these 4 MB (1.0 to 1.75 for 20 MB).

Needs root, ``ip netns``, nftables and iptables: skipped without them, failed on CI.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.ci import environment_lacks
from tests.netns.impair import BY_NAME, Impairer, Transfer, tools_available, zt_transfer
from tests.netns.netlab import require_netlab
from tests.netns.socketlab import SocketLab

# Throughput floors: measured while no other test runs (see conftest's `alone`).
pytestmark = [pytest.mark.netns, pytest.mark.slow, pytest.mark.alone]

MB = 4
DEADLINE_S = 12.0  # per transfer: the sender before issue 14 needed ≤ 7 s for 1 % loss
MAX_STALL_S = 1.0
BBR_FLOOR = 0.6  # MB/s: see the module's docstring
_ports = iter(range(23000, 23100))


@pytest.fixture(scope="module")
def paths(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[SocketLab, Impairer]]:
    require_netlab()
    ok, why = tools_available()
    if not ok:
        environment_lacks(why)
    slab = SocketLab(tmp_path_factory.mktemp("impaired"), ["zt", "zt"], timeout_s=300)
    with slab.running():
        assert slab.lab is not None
        imp = Impairer(slab.lab, 1, 2)
        # Unimpaired first: the agents' direct path, and a check that the lab moves data.
        warm = zt_transfer(slab.agents["z1"], slab.agents["z2"], 1_000_000, next(_ports), 10)
        assert warm.complete, warm.detail
        try:
            yield slab, imp
        finally:
            imp.clear()


def impaired_transfer(paths: tuple[SocketLab, Impairer], profile: str, cc: str = "") -> Transfer:
    slab, imp = paths
    imp.apply(BY_NAME[profile])
    try:
        t = zt_transfer(
            slab.agents["z1"], slab.agents["z2"], MB * 1_000_000, next(_ports), DEADLINE_S, cc
        )
        imp.check_queues()
    finally:
        imp.clear()
    print(f"\nzt->zt {cc or 'cubic'} {MB} MB, {BY_NAME[profile].label}: {t.summary()}")
    return t


def check(paths: tuple[SocketLab, Impairer], profile: str, floor_mb_s: float, cc: str = "") -> None:
    """One transfer over ``profile`` must complete without a stall and reach the floor.

    A transfer that completes without a stall but under the floor is run once more and the
    better of the two counts: a busy CI machine (2 cores for a root, a controller, two agents
    and the impairing queue) can slow one 4 MB transfer below a floor, while a regression to
    timeout-driven recovery (what the floors are for) misses it every time.
    """
    t = impaired_transfer(paths, profile, cc)
    assert t.complete, f"not complete within {DEADLINE_S:g} s: {t.summary()} {sender(t)}"
    assert t.max_gap_s < MAX_STALL_S, f"stalled: {t.summary()} {sender(t)}"
    if t.mb_s < floor_mb_s:
        print(f"below {floor_mb_s:g} MB/s, once more; the sender's figures: {sender(t)}")
        again = impaired_transfer(paths, profile, cc)
        assert again.complete and again.max_gap_s < MAX_STALL_S, (
            f"{again.summary()} {sender(again)}"
        )
        best = max(t.mb_s, again.mb_s)
        assert best >= floor_mb_s, (
            f"below {floor_mb_s:g} MB/s twice: {t.summary()} {sender(t)}; "
            f"{again.summary()} {sender(again)}"
        )


def sender(t: Transfer) -> str:
    """The source's TCP figures (``tcp_info``: retransmissions, timeouts, windows)."""
    source = t.detail.get("source") or {}
    return f"tcp_info={source.get('tcp_info')}"


def test_one_percent_loss(paths: tuple[SocketLab, Impairer]) -> None:
    check(paths, "loss1", floor_mb_s=8.0)


def test_five_percent_loss(paths: tuple[SocketLab, Impairer]) -> None:
    check(paths, "loss5", floor_mb_s=1.0)


def test_duplication_and_corruption(paths: tuple[SocketLab, Impairer]) -> None:
    check(paths, "dup-corrupt", floor_mb_s=8.0)


def test_jitter_20ms_5ms(paths: tuple[SocketLab, Impairer]) -> None:
    check(paths, "jitter", floor_mb_s=2.5)


def test_bbr_through_loss_and_reordering(paths: tuple[SocketLab, Impairer]) -> None:
    check(paths, "loss5-reorder", floor_mb_s=BBR_FLOOR, cc="bbr")
