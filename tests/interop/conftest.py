"""pytest configuration for the libzt interop tests."""

from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "interop: runs ZeroTier's own libzt 1.8.4 (downloaded from PyPI) as an independent peer",
    )
