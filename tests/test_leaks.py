"""The leak guard (tests/leaks.py): an object left to the garbage collector that warns
ResourceWarning fails the test (or module) that leaked it, not whichever test runs next."""

from __future__ import annotations

from pathlib import Path

import pytest

from . import leaks

pytest_plugins = ["pytester"]

LEAKY = """
import gc
import tracemalloc
import warnings

import pytest

gc.disable()  # only the guard's collections free cycles: nothing is collected at random


class Resource:
    def __init__(self) -> None:
        self.cycle = self  # freed by the collector only
        self.buffer = bytearray(100)

    def __del__(self) -> None:
        warnings.warn("unclosed resource", ResourceWarning, source=self)


@pytest.fixture(scope="module")
def shared():
    yield
    Resource()


def test_leaks():
    tracemalloc.start(5)  # as PYTHONTRACEMALLOC=5 would, from here on: the failure says where
    Resource()


def test_other_warnings_keep_their_filters():
    tracemalloc.stop()  # (it slows the rest down, reports above all)

    class Noisy:
        def __init__(self) -> None:
            self.cycle = self

        def __del__(self) -> None:
            warnings.warn("not a resource", UserWarning)

    Noisy()


def test_after_the_leak(shared):
    pass  # the module's fixture leaks after the last test: its teardown fails
"""


def test_a_leak_fails_the_test_or_module_that_leaked_it(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_leaky=LEAKY)
    pytester.makeconftest(Path(leaks.__file__).read_text())  # the guard, as a conftest
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "-W", "error::UserWarning", "--rootdir", str(pytester.path)
    )
    result.assert_outcomes(passed=3, errors=3)
    out = result.stdout.str()
    result.stdout.fnmatch_lines(
        [
            "*ERROR at teardown of test_leaks*",
            "*test_leaky.py::test_leaks left 1 unclosed resource(s) to the garbage collector*",
            "*unclosed resource*",
            "*allocated at:*",
            '*File "*test_leaky.py", line *',
            "*Resource()*",  # (on 3.11, then __init__'s line: see leaks.allocated_at)
        ]
    )
    assert "ERROR at teardown of test_after_the_leak" in out
    assert "test_leaky.py::test_after_the_leak left" not in out
    assert "test_leaky.py (its module-scoped fixtures) left 1 unclosed resource(s)" in out
    assert "ERROR at teardown of test_other_warnings_keep_their_filters" in out
    assert "UserWarning: not a resource" in out
