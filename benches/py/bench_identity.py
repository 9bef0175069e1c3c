"""Identity generation and validation: zt against libzt 1.8.4, measured in the same run.

Usage::

    python benches/py/bench_identity.py [--count N] [--json]

Measures ``zt.Identity.generate(1)`` (one core), ``zt.Identity.generate()`` (all cores) and
libzt's ``zts_id_new`` (``tests/interop/libzt.py``'s ``id_new``, timed inside its child process),
``N`` identities each, plus ``zt.Identity.validate()``.  It prints mean, median and p90 for each,
and the ratios zt/libzt of the mean generation times (target: zt mean <= libzt mean).

The three generators are measured in interleaved rounds so that a change in machine load during
the run affects all of them alike.  Each timing excludes a warm-up call (the first ``zt`` call of
the run and the first ``zts_id_new`` call in every libzt child process).

Generation time varies a lot from one identity to the next (the number of candidates tried is
geometric, so the standard deviation is close to the mean): with ``N`` = 50 a mean is only known
to about +-14% (one standard error), which is printed beside it.  Use a larger ``--count`` to
compare close figures.

Only a release build of zt is measured; a debug build exits with a message.  If libzt cannot be
used here (no network, not Linux x86_64, ...), the zt figures are printed with the reason.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable, Optional, TypedDict

import zt

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from tests.interop import libzt  # noqa: E402 - needs the repo root on sys.path

DEFAULT_COUNT = 50
MAX_ROUNDS = 5


class Stats(TypedDict):
    """Summary of one series of timings, in seconds."""

    n: int
    mean: float
    median: float
    p90: float
    min: float
    max: float
    stderr: float  # standard error of the mean


class Report(TypedDict):
    """Everything the benchmark measured (the ``--json`` output)."""

    zt_version: str
    build_profile: str
    libzt_version: str
    python: str
    machine: str
    cpus: Optional[int]
    count: int
    rounds: int
    stats: dict[str, Stats]
    ratios: dict[str, float]
    libzt_skipped: Optional[str]
    libzt_keys_valid_in_zt: Optional[int]


LABELS: dict[str, str] = {
    "zt_generate_1": "zt Identity.generate(1)   [1 core]",
    "zt_generate_all": "zt Identity.generate()    [all cores]",
    "libzt_id_new": "libzt zts_id_new          [1 core]",
    "zt_validate": "zt Identity.validate()",
}

RATIOS: dict[str, tuple[str, str]] = {
    "generate_1_vs_libzt": ("zt_generate_1", "libzt_id_new"),
    "generate_all_vs_libzt": ("zt_generate_all", "libzt_id_new"),
}


def summarize(samples: list[float]) -> Stats:
    """Mean, median, p90 (inclusive quantile), extremes and standard error of ``samples``."""
    if not samples:
        raise ValueError("no samples")
    n = len(samples)
    mean = statistics.fmean(samples)
    if n >= 2:
        p90 = statistics.quantiles(samples, n=10, method="inclusive")[8]
        stderr = statistics.stdev(samples) / math.sqrt(n)
    else:
        p90 = samples[0]
        stderr = math.nan
    return Stats(
        n=n,
        mean=mean,
        median=statistics.median(samples),
        p90=p90,
        min=min(samples),
        max=max(samples),
        stderr=stderr,
    )


def timed(call: Callable[[], object]) -> float:
    """Seconds one call of ``call`` takes."""
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


def split(count: int, rounds: int) -> list[int]:
    """``count`` divided into ``rounds`` nearly equal positive parts."""
    base, extra = divmod(count, rounds)
    return [base + (1 if i < extra else 0) for i in range(rounds)]


def run(count: int, *, progress: bool) -> Report:
    """Measure everything; ``progress`` writes one line per round to stderr."""
    samples: dict[str, list[float]] = {key: [] for key in LABELS}
    generated: list[zt.Identity] = []
    libzt_keys: list[str] = []

    skipped = libzt.libzt_unavailable_reason()

    # Warm-up: the first call pays for page faults on the 2 MiB scratch and thread start-up.
    zt.Identity.generate(1)
    zt.Identity.generate()

    rounds = min(MAX_ROUNDS, count)
    for number, size in enumerate(split(count, rounds), start=1):
        for _ in range(size):
            started = time.perf_counter()
            identity = zt.Identity.generate(1)
            samples["zt_generate_1"].append(time.perf_counter() - started)
            generated.append(identity)
        for _ in range(size):
            started = time.perf_counter()
            identity = zt.Identity.generate()
            samples["zt_generate_all"].append(time.perf_counter() - started)
            generated.append(identity)
        if skipped is None:
            try:
                keys, seconds = libzt.id_new(size + 1)
            except (libzt.LibztUnavailable, libzt.LibztError) as exc:
                skipped = f"libzt failed during the run: {exc}"
            else:
                # The first call in each child is a warm-up (lazy binding, page faults).
                samples["libzt_id_new"].extend(seconds[1:])
                libzt_keys.extend(keys[1:])
        if progress:
            sys.stderr.write(f"round {number}/{rounds}: {size} identities per generator\n")

    for identity in generated:
        samples["zt_validate"].append(timed(identity.validate))

    # Cross-check: zt accepts every identity libzt made.
    libzt_valid: Optional[int] = None
    if libzt_keys:
        libzt_valid = sum(zt.Identity.from_string(key).is_valid() for key in libzt_keys)

    stats = {key: summarize(values) for key, values in samples.items() if values}
    ratios = {
        name: stats[num]["mean"] / stats[den]["mean"]
        for name, (num, den) in RATIOS.items()
        if num in stats and den in stats
    }
    return Report(
        zt_version=zt.__version__,
        build_profile=zt.BUILD_PROFILE,
        libzt_version=libzt.LIBZT_VERSION,
        python=platform.python_version(),
        machine=f"{platform.system()} {platform.machine()}",
        cpus=_cpu_count(),
        count=count,
        rounds=rounds,
        stats=stats,
        ratios=ratios,
        libzt_skipped=skipped,
        libzt_keys_valid_in_zt=libzt_valid,
    )


def _cpu_count() -> Optional[int]:
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count()


def _json_safe(value: Any) -> Any:
    """``value`` with every NaN (an undefined standard error) replaced by None."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {key: _json_safe(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_json_safe(item) for item in value]
    return value


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:9.2f}"


def format_table(report: Report) -> str:
    """The human-readable report."""
    lines = [
        f"zt {report['zt_version']} ({report['build_profile']}) vs libzt "
        f"{report['libzt_version']}; Python {report['python']}, {report['machine']}, "
        f"{report['cpus']} CPUs; {report['count']} identities per generator in "
        f"{report['rounds']} interleaved rounds",
        "",
        f"{'times in ms':<38} {'n':>4} {'mean':>9} {'+-se':>7} {'median':>9} {'p90':>9}"
        f" {'min':>9} {'max':>9}",
    ]
    for key, label in LABELS.items():
        stats = report["stats"].get(key)
        if stats is None:
            lines.append(f"{label:<38} {'-':>4}   (not measured)")
            continue
        rel = stats["stderr"] / stats["mean"] if stats["mean"] else math.nan
        rel_text = "-" if math.isnan(rel) else f"{rel:.0%}"
        lines.append(
            f"{label:<38} {stats['n']:>4} {_ms(stats['mean'])} {rel_text:>7} "
            f"{_ms(stats['median'])} {_ms(stats['p90'])} {_ms(stats['min'])} {_ms(stats['max'])}"
        )
    lines.append("")
    if report["ratios"]:
        for name, (num, den) in RATIOS.items():
            ratio = report["ratios"].get(name)
            if ratio is None:
                continue
            num_stats, den_stats = report["stats"][num], report["stats"][den]
            rel = math.hypot(
                num_stats["stderr"] / num_stats["mean"], den_stats["stderr"] / den_stats["mean"]
            )
            verdict = "meets" if ratio <= 1.0 else "MISSES"
            spread = "" if math.isnan(rel) else f" (+-{ratio * rel:.3f}, one standard error)"
            lines.append(
                f"ratio of means {num} / {den}: {ratio:.3f}{spread} -> {verdict} target <= 1"
            )
    if report["libzt_keys_valid_in_zt"] is not None:
        total = report["stats"]["libzt_id_new"]["n"]
        lines.append(
            f"zt accepts {report['libzt_keys_valid_in_zt']}/{total} identities made by libzt"
        )
    if report["libzt_skipped"] is not None:
        lines.append(f"libzt skipped: {report['libzt_skipped']}")
    return "\n".join(lines)


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument(
        "--count",
        type=int,
        default=DEFAULT_COUNT,
        metavar="N",
        help=f"identities per generator (default {DEFAULT_COUNT})",
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(argv)
    count: int = args.count
    if count < 1:
        parser.error("--count must be at least 1")
    if zt.BUILD_PROFILE != "release":
        sys.stderr.write(
            f"refusing to benchmark a {zt.BUILD_PROFILE!r} build of zt: build it in release mode "
            "first (e.g. `maturin develop --release`)\n"
        )
        return 2
    report = run(count, progress=not args.json)
    if args.json:
        sys.stdout.write(json.dumps(_json_safe(dict(report)), indent=2, allow_nan=False) + "\n")
    else:
        sys.stdout.write(format_table(report) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
