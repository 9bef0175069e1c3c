from __future__ import annotations

import pytest

import zt


@pytest.fixture(scope="session")
def identities() -> list[zt.Identity]:
    """A few generated identities (generation costs ~0.1 s each)."""
    return [zt.Identity.generate() for _ in range(3)]
