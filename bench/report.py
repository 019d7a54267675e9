"""Percentiles and plain-text formatting shared by the benchmarks.

Percentiles use the nearest-rank method so every figure printed is a value that
was actually observed, not an interpolation between two samples.
"""

from __future__ import annotations

import math
from collections.abc import Sequence


def percentile(values: Sequence[float], q: float) -> float:
    """The nearest-rank `q`th percentile (0 < q <= 100) of `values`."""
    if not values:
        raise ValueError("percentile of no values")
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def fmt_ns(ns: float) -> str:
    """A duration given in nanoseconds, in the unit that keeps it readable."""
    if ns < 1_000:
        return f"{ns:.0f} ns"
    if ns < 1_000_000:
        return f"{ns / 1_000:.2f} µs"
    if ns < 1_000_000_000:
        return f"{ns / 1_000_000:.2f} ms"
    return f"{ns / 1_000_000_000:.2f} s"


def fmt_count(n: float) -> str:
    """A count or rate with thousands separators, e.g. 1,000,000."""
    return f"{n:,.0f}"


def fmt_kib(kib: float) -> str:
    """A memory size given in KiB (the unit of ru_maxrss on Linux)."""
    if abs(kib) < 1024:
        return f"{kib:,.0f} KiB"
    return f"{kib / 1024:,.1f} MiB"


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def say(line: str = "") -> None:
    """Print and flush at once, so progress shows while a long phase is running."""
    print(line, flush=True)


def section(title: str) -> None:
    say()
    say(title)
    say("-" * len(title))
