"""Whether the tests run on CI, and what a test does when its environment is lacking."""

from __future__ import annotations

import os
from typing import NoReturn

import pytest

IN_CI = bool(os.environ.get("CI"))


def environment_lacks(what: str) -> NoReturn:
    """Ends a test whose environment lacks ``what``: off CI it is skipped with that reason; on
    CI (which runs as root and must run every test) it fails."""
    if IN_CI:
        pytest.fail(f"CI must run this test, but {what}")
    else:
        pytest.skip(what)
