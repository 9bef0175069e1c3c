"""What every interop test module shares.

Off CI, interop tests skip (with the reason) where libzt 1.8.4 cannot be used or no isolated
network namespace can be made (that needs root or user namespaces). On CI (`CI` set; CI runs as
root) they must run, so the same conditions fail the test instead.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import pytest

from tests.ci import IN_CI, environment_lacks
from tests.interop.libzt import (
    LibztUnavailable,
    NodeInfo,
    libzt_available,
    libzt_unavailable_reason,
    start_node,
)

INTEROP = [
    pytest.mark.interop,
    pytest.mark.skipif(
        not IN_CI and not libzt_available(),
        reason=f"libzt unavailable: {libzt_unavailable_reason()}",
    ),
]


def start_node_or_skip(storage: Path, roots: Optional[bytes] = None) -> NodeInfo:
    """Starts a libzt node in an isolated network namespace (see `libzt.start_node`)."""
    try:
        return start_node(storage, roots=roots)
    except LibztUnavailable as exc:
        environment_lacks(
            f"a libzt node cannot start (it needs root or user namespaces): {exc.reason}"
        )
