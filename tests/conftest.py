from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

# No test may send a datagram off this host: nodes on ZeroTier's default planet would otherwise
# greet its public roots. Namespace tests set their own list inside their namespaces.
os.environ["ZT_ALLOWED_DESTINATIONS"] = "127.0.0.0/8,::1/128"

import zt

# Autouse fixtures: a test that leaves a socket to the garbage collector fails (see leaks.py).
from .leaks import no_leaks_in_module, no_leaks_in_test  # noqa: F401
from .overlay import Pair, adhoc_pair, ipv4_pair, lab_in
from .support import Lab, turn


@pytest.fixture(autouse=True)
def _alone_or_side_by_side(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[None]:
    """Under pytest-xdist, a test marked ``alone`` (a throughput floor) runs while no other
    test does on any worker; the others run side by side as usual."""
    if "PYTEST_XDIST_WORKER" not in os.environ:
        yield
        return
    alone = request.node.get_closest_marker("alone") is not None
    # Each worker's base temp is a directory of the run's: their parent is shared.
    with turn(tmp_path_factory.getbasetemp().parent, alone):
        yield


@pytest.fixture(scope="session")
def identities() -> list[zt.Identity]:
    """A few generated identities (generation costs ~0.1 s each)."""
    return [zt.Identity.generate() for _ in range(3)]


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    """A root, a controller and room for members, on loopback (closed after the test)."""
    with lab_in(tmp_path) as lab:
        yield lab


@pytest.fixture(scope="module")
def v6(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    """Two nodes on the ad-hoc IPv6 network for ports 7200-7499, shared by a test module."""
    with lab_in(tmp_path_factory.mktemp("v6")) as lab:
        pair = adhoc_pair(lab, 7200, 7499)
        pair.warm()
        yield pair


@pytest.fixture(scope="module")
def v4(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    """Two members of an IPv4 controller network, shared by a test module."""
    with lab_in(tmp_path_factory.mktemp("v4")) as lab:
        pair = ipv4_pair(lab)
        pair.warm()
        yield pair
