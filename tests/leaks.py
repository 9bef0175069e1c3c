"""Leaked sockets fail the test that leaked them (autouse fixtures, registered by conftest).

A socket nobody closed warns (ResourceWarning) when it is freed. Freed by reference counting,
that happens inside the test that dropped it, and pytest reports it there. But a socket in a
reference cycle (asyncio transports and their protocols, tracebacks) waits for the garbage
collector, which runs whenever allocations happen to trigger it: in some later test, which
then failed for another's leak. So every test, and every module (for its module-scoped
fixtures), ends with a collection here, and what that finds fails the test, showing where the
objects were allocated when tracemalloc traces (``PYTHONTRACEMALLOC=20``). A full collection
costs about 10-20 ms.
"""

from __future__ import annotations

import gc
import sys
import tracemalloc
import warnings
from collections.abc import Iterator
from typing import Optional

import pytest


def allocated_at(obj: object) -> Optional[tracemalloc.Traceback]:
    """Where ``obj`` was made, if tracemalloc traced it. Python 3.11 finds nothing for an
    instance with a managed ``__dict__`` (most classes'); then a container attribute made
    along with it, in its class's module (e.g. in ``__init__``), tells the same place."""
    tb = tracemalloc.get_object_traceback(obj)
    if tb is not None:
        return tb
    module = sys.modules.get(type(obj).__module__)
    filename = getattr(module, "__file__", None)
    for value in getattr(obj, "__dict__", {}).values():
        if value is obj or not isinstance(value, (dict, list, set, bytearray)):
            continue
        tb = tracemalloc.get_object_traceback(value)
        if tb is not None and filename is not None and tb[-1].filename == filename:
            return tb
    return None


def collect_garbage(where: str) -> None:
    """gc.collect(); fails with the ResourceWarnings it raised (other warnings go through the
    test's filters as usual)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        gc.collect()
    leaks = []
    for w in caught:
        if not issubclass(w.category, ResourceWarning):
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno, source=w.source)
            continue
        tb = allocated_at(w.source) if w.source is not None else None
        allocated = (
            "allocated at:\n" + "\n".join(tb.format())
            if tb is not None
            else "(PYTHONTRACEMALLOC=20 shows where it was allocated)"
        )
        leaks.append(f"{w.message}\n{allocated}")
    if leaks:
        pytest.fail(
            f"{where} left {len(leaks)} unclosed resource(s) to the garbage collector:\n\n"
            + "\n\n".join(leaks),
            pytrace=False,
        )


@pytest.fixture(autouse=True)
def no_leaks_in_test(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    collect_garbage(request.node.nodeid)


@pytest.fixture(autouse=True, scope="module")
def no_leaks_in_module(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    collect_garbage(f"{request.node.nodeid} (its module-scoped fixtures)")
