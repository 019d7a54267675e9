"""Run `audit.verify` once in a fresh process and report time and memory as JSON.

A fresh process is what makes the memory figure honest: a high-water mark
taken in the benchmark's own process was already pushed up by the bulk fill,
so growth during verify would be hidden. On Linux the peak is read from
/proc/self/status (VmHWM), reset just before the walk through
/proc/self/clear_refs; `ru_maxrss` is only the fallback, because Linux carries
it across exec, so a child started by a big parent reports the parent's peak.

`--tracemalloc` repeats the walk under tracemalloc for the peak of Python-level
allocations (SQLite's page cache is not traced). It slows the walk down, so its
time is not reported.
"""

from __future__ import annotations

import argparse
import gc
import json
import resource
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any

from rbac_core.audit import verify
from rbac_core.store import Database

_STATUS = Path("/proc/self/status")


def status_kib(field: str) -> float | None:
    """A `Vm…:` line of /proc/self/status in KiB, or None where there is no procfs."""
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith(field + ":"):
                return float(line.split()[1])
    except OSError:
        pass
    return None


def reset_peak() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0); False if that is not possible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return status_kib("VmHWM") is not None


def ru_maxrss_kib() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1024 if sys.platform == "darwin" else float(peak)


def probe(url: str, *, with_tracemalloc: bool) -> dict[str, Any]:
    db = Database(url)
    try:
        gc.collect()
        procfs = reset_peak()
        before = status_kib("VmRSS") if procfs else ru_maxrss_kib()
        start = time.perf_counter()
        with db.snapshot() as conn:
            result = verify(conn)
        seconds = time.perf_counter() - start
        peak = status_kib("VmHWM") if procfs else ru_maxrss_kib()
        report: dict[str, Any] = {
            "ok": result.ok,
            "entries": result.entries,
            "problem": result.problem,
            "seconds": seconds,
            "rss_method": "VmHWM" if procfs else "ru_maxrss",
            "rss_before_kib": before,
            "rss_peak_kib": peak,
        }
        if with_tracemalloc:
            gc.collect()
            tracemalloc.start()
            with db.snapshot() as conn:
                verify(conn)
            _, peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
            report["tracemalloc_peak_bytes"] = peak
        return report
    finally:
        db.dispose()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.verify_probe")
    parser.add_argument("url")
    parser.add_argument("--tracemalloc", action="store_true")
    args = parser.parse_args(argv)
    print(json.dumps(probe(args.url, with_tracemalloc=args.tracemalloc)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
