"""The marks every interop test module carries: `interop`, and a skip with the harness's reason
when libzt 1.8.4 cannot be used on this machine."""

from __future__ import annotations

import pytest

from tests.interop.libzt import libzt_available, libzt_unavailable_reason

INTEROP = [
    pytest.mark.interop,
    pytest.mark.skipif(
        not libzt_available(), reason=f"libzt unavailable: {libzt_unavailable_reason()}"
    ),
]
