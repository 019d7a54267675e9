"""Run the access review once in a fresh process; report time and memory as JSON.

Fresh for the same reason as `bench.verify_probe` (whose peak-memory helpers it
uses): the fill that built the database would hide the review's own growth.
It times, in order: the baseline (streaming every live grant through the
review's own query, doing nothing with the rows), the review from cold (the
first one folds the whole audit log into `user_activity`), and a second review
right after (what a weekly run costs once the fold has caught up).
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
from typing import Any

from rbac_core import build_gate
from rbac_core.clock import utcnow
from rbac_core.review.building import live_grants_query
from rbac_core.store import Database

from .verify_probe import reset_peak, ru_maxrss_kib, status_kib


def _review(db: Database) -> tuple[float, Any]:
    gate = build_gate(db)
    start = time.perf_counter()
    opened = gate.submit("operator", "cli", "audit.review", {"days": 30})
    if opened.status != "done":
        raise RuntimeError(opened.message)
    built = gate.submit("operator", "cli", "review.build", {"review": opened.data["review_id"]})
    if built.status != "done":
        raise RuntimeError(built.message)
    return time.perf_counter() - start, built.data["totals"]


def probe(url: str) -> dict[str, Any]:
    db = Database(url)
    try:
        start = time.perf_counter()
        rows = 0
        with db.snapshot() as conn:
            for _ in conn.execution_options(stream_results=True, yield_per=1_000).execute(
                live_grants_query(utcnow())
            ):
                rows += 1
        baseline = time.perf_counter() - start
        gc.collect()
        procfs = reset_peak()
        before = status_kib("VmRSS") if procfs else ru_maxrss_kib()
        cold, totals = _review(db)
        peak = status_kib("VmHWM") if procfs else ru_maxrss_kib()
        warm, _ = _review(db)
        return {
            "baseline_seconds": baseline,
            "grants_streamed": rows,
            "cold_seconds": cold,
            "warm_seconds": warm,
            "findings": totals.findings,
            "by_kind": totals.by_kind,
            "grants_checked": totals.grants_checked,
            "rss_method": "VmHWM" if procfs else "ru_maxrss",
            "rss_before_kib": before,
            "rss_peak_kib": peak,
        }
    finally:
        db.dispose()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.review_probe")
    parser.add_argument("url")
    args = parser.parse_args(argv)
    print(json.dumps(probe(args.url)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
