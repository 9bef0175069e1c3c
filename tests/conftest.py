from __future__ import annotations

import os

import pytest

# No test may send a datagram off this host: nodes on ZeroTier's default planet would otherwise
# greet its public roots. Namespace tests set their own list inside their namespaces.
os.environ["ZT_ALLOWED_DESTINATIONS"] = "127.0.0.0/8,::1/128"

import zt


@pytest.fixture(scope="session")
def identities() -> list[zt.Identity]:
    """A few generated identities (generation costs ~0.1 s each)."""
    return [zt.Identity.generate() for _ in range(3)]
