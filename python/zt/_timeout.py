"""Timeouts checked as the standard library checks them (``socket.settimeout``)."""

from __future__ import annotations

import math
import operator
from typing import Optional

#: Longest timeout accepted (seconds): what a signed 64-bit count of nanoseconds holds, as
#: CPython's own limit for ``socket.settimeout``.
MAX_TIMEOUT_S = (2**63 - 1) / 1e9


def check_timeout(value: object) -> Optional[float]:
    """``value`` as ``socket.settimeout`` takes it: None, or a number of seconds that is not
    negative, NaN or too large. Raises the exceptions the standard library raises:
    ``TypeError`` for what is not a number (a string, a Decimal), ``ValueError`` for NaN or a
    negative value, ``OverflowError`` for infinity or a value too large."""
    if value is None:
        return None
    if isinstance(value, float):
        t = value
    else:
        try:
            t = float(operator.index(value))  # type: ignore[arg-type]
        except TypeError:
            kind = type(value)
            name = (
                kind.__qualname__
                if kind.__module__ == "builtins"
                else (f"{kind.__module__}.{kind.__qualname__}")
            )
            raise TypeError(f"'{name}' object cannot be interpreted as an integer") from None
    if math.isnan(t):
        raise ValueError("Invalid value NaN (not a number)")
    if t < 0:
        raise ValueError("Timeout value out of range")
    if t > MAX_TIMEOUT_S:
        raise OverflowError("timeout too large")
    return t
