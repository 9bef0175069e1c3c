"""zt→zt TCP over an impaired underlay (issue 14), two zt agent processes in namespaces.

One lab (:class:`tests.netns.socketlab.SocketLab`: a zt root + controller, agents ``z1`` and
``z2``), the underlay between the agents impaired in both directions as
``benches/py/bench_paths.py`` does it (:mod:`tests.netns.impair`); one sha256-checked transfer
of ``MB`` MB per impairment, given up after ``DEADLINE_S``, so the module ends within a minute
even when the sender crawls.  Each must arrive intact, without a stall of a second or more, and
no slower than a floor derived from what a decent TCP does on that path:

* 1 % loss per underlay packet.  zt's 2800-byte segments travel as two datagrams, so ≈ 2 % of
  segments are lost; the unimpaired round trip is under a millisecond.  A TCP with SACK and
  fast retransmit repairs an isolated loss in about one round trip, without a timeout: the
  Mathis et al. bound MSS/RTT·1.22/√p at RTT 1 ms and p = 0.02 is ≈ 24 MB/s, and the kernel's
  TCP (BBR) moves 17 to 68 MB/s over this very path (the benchmark, 20 MB transfers).
  Floor: 4 MB/s, a sixth of that bound, for a loaded 2-core CI machine.  A sender that waits
  out its 200 ms retransmission timeout for a loss (≈ 7 lost segments per MB here) cannot
  reach it: today's does 2.3 to 2.5 MB/s, with about two stalls of 0.2 to 0.6 s per MB.
* 20 ms ± 5 ms delay each way (uniform, so packets are reordered by up to 10 ms).  The round
  trip is ≈ 40 ms and nothing is lost: a TCP that tolerates reordering (RACK's reordering
  window, or a duplicate-ACK threshold raised on seeing reordering) retransmits nothing, and is
  bound by its window (1 MiB by default: ≈ 26 MB/s after ≈ 6 round trips of slow start).
  Floor: 2 MB/s, below the kernel's over the same path (6.6 MB/s for 3 MB, 16 to 20 MB/s for
  20 MB; issue 14 asks for at least the kernel's).  Today's sender does 0.6 to 0.8 MB/s
  without a single stall and sends ≈ 16 % more data packets per MB than unimpaired although
  nothing is lost (the benchmark's counters): it takes the
  reordering for loss (spurious fast retransmits, each halving its window).

Today's sender fails both (marked ``xfail``, strict: once the sender meets them the marks must
go).  Needs root, ``ip netns``, nftables and iptables: skipped without them, failed on CI.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.ci import environment_lacks
from tests.netns.impair import BY_NAME, Impairer, Transfer, tools_available, zt_transfer
from tests.netns.netlab import require_netlab
from tests.netns.socketlab import SocketLab

pytestmark = [pytest.mark.netns, pytest.mark.slow]

MB = 4
DEADLINE_S = 12.0  # per transfer: today's sender finishes (in ≤ 7 s), a worse one is cut off
MAX_STALL_S = 1.0
_ports = iter(range(23000, 23100))
LOSS = "issue 14: today's TCP sender waits out a 200 ms retransmission timeout per loss"
REORDER = "issue 14: today's TCP sender takes reordering for loss"


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


def impaired_transfer(paths: tuple[SocketLab, Impairer], profile: str) -> Transfer:
    slab, imp = paths
    imp.apply(BY_NAME[profile])
    try:
        t = zt_transfer(
            slab.agents["z1"], slab.agents["z2"], MB * 1_000_000, next(_ports), DEADLINE_S
        )
        imp.check_queues()
    finally:
        imp.clear()
    print(f"\nzt->zt {MB} MB, {BY_NAME[profile].label}: {t.summary()}")
    return t


def check(t: Transfer, floor_mb_s: float) -> None:
    assert t.complete, f"not complete within {DEADLINE_S:g} s: {t.summary()}"
    assert t.max_gap_s < MAX_STALL_S, f"stalled: {t.summary()}"
    assert t.mb_s >= floor_mb_s, f"below {floor_mb_s:g} MB/s: {t.summary()}"


@pytest.mark.xfail(reason=LOSS, raises=AssertionError, strict=True)
def test_one_percent_loss(paths: tuple[SocketLab, Impairer]) -> None:
    check(impaired_transfer(paths, "loss1"), floor_mb_s=4.0)


@pytest.mark.xfail(reason=REORDER, raises=AssertionError, strict=True)
def test_jitter_20ms_5ms(paths: tuple[SocketLab, Impairer]) -> None:
    check(impaired_transfer(paths, "jitter"), floor_mb_s=2.0)
