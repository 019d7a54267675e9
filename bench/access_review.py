"""The weekly access review at scale: 100,000 people, 1,000,000 audit entries.

The database is filled the way production fills it where it matters: users and
grants as rows, and the audit log through `audit.append` (a real hash chain).
Every fifth person has done nothing for 45 days, every 50th is deactivated,
every 100th holds a grant expiring in 3 days, every 1,000th holds developer
(which requires 2FA) without 2FA. The review itself runs in a fresh
process (`bench.review_probe`) at two sizes, so the peak memory growth is the
review's own and the sizes show whether memory stays flat.

Baseline, measured in the same process just before: streaming every live grant
through the review's own query and doing nothing with the rows.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import insert, text

from rbac_core import audit
from rbac_core.audit import NewEntry
from rbac_core.clock import utcnow
from rbac_core.store import Database, migrate
from rbac_core.store.models import Grant, User
from tests.helpers import throwaway_schema

from .report import fmt_count, fmt_kib, say, section, verdict

FULL = ((10_000, 100_000), (100_000, 1_000_000))
QUICK = ((2_000, 20_000), (10_000, 100_000))
BAR_USERS = 100_000
BAR_SECONDS = 3.0
DORMANT_EVERY = 5
DEACTIVATED_EVERY = 50
EXPIRING_EVERY = 100
DEVELOPER_EVERY = 1_000
BATCH = 10_000
_REPO_ROOT = Path(__file__).resolve().parent.parent


def _user(k: int) -> str:
    return f"U0B{k:07d}"


def fill(db: Database, users: int, entries: int) -> float:
    """Build the workspace; returns seconds spent."""
    began = time.perf_counter()
    now = utcnow()
    granted = now - timedelta(days=90)
    with db.write() as session:
        for start in range(0, users, BATCH):
            ks = range(start, min(start + BATCH, users))
            session.execute(
                insert(User),
                [
                    {
                        "id": _user(k),
                        "name": None,
                        "active": k % DEACTIVATED_EVERY != 1,
                        "created_at": granted,
                    }
                    for k in ks
                ],
            )
            rows: list[dict[str, Any]] = [
                {
                    "user_id": _user(k),
                    "role": "agent",
                    "scope": "*",
                    "granted_by": "U0BENCHADM",
                    "granted_at": granted,
                    "expires_at": None,
                }
                for k in ks
            ]
            rows += [
                {
                    "user_id": _user(k),
                    "role": "support",
                    "scope": "*",
                    "granted_by": "U0BENCHADM",
                    "granted_at": granted,
                    "expires_at": now + timedelta(days=3),
                }
                for k in ks
                if k % EXPIRING_EVERY == 2
            ]
            rows += [
                {
                    "user_id": _user(k),
                    "role": "developer",  # requires 2FA, which nobody here has
                    "scope": "*",
                    "granted_by": "U0BENCHADM",
                    "granted_at": granted,
                    "expires_at": None,
                }
                for k in ks
                if k % DEVELOPER_EVERY == 3
            ]
            session.execute(insert(Grant), rows)
    start_us = audit.micros(now - timedelta(days=60))
    span_us = 60 * 86_400 * 1_000_000
    recent_us = audit.micros(now - timedelta(days=45))
    for first in range(0, entries, BATCH):
        batch = []
        for i in range(first, min(first + BATCH, entries)):
            ts = start_us + span_us * i // entries
            k = (i * 7_919) % users
            if ts >= recent_us and k % DORMANT_EVERY == 0:
                k = (k + 1) % users  # dormant people did nothing in the last 45 days
            batch.append(
                NewEntry(
                    actor=_user(k),
                    surface="slack",
                    action="role.show",
                    target=f"user:{_user(k)}",
                    decision="deny" if i % 20 == 0 else "allow",
                    outcome="done",
                    details={"params": {}},
                    ts_us=ts,
                )
            )
        with db.transaction(write=True) as txn:
            audit.append(txn, batch)
    if not db.is_sqlite:
        # What autovacuum does for a live database after changes this size; without
        # it the planner would plan for empty tables.
        with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("ANALYZE"))
    return time.perf_counter() - began


def _probe(url: str) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-m", "bench.review_probe", url],
        cwd=_REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    report: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return report


def _measure(label: str, url: str, users: int, entries: int) -> dict[str, Any]:
    db = Database(url)
    try:
        migrate.upgrade(db)
        seconds = fill(db, users, entries)
    finally:
        db.dispose()
    say(f"{label}: filled {users:,} people, {entries:,} audit entries in {seconds:.1f} s")
    r = _probe(url)
    growth = r["rss_peak_kib"] - r["rss_before_kib"]
    kinds = ", ".join(f"{n:,} {k}" for k, n in r["by_kind"].items())
    say(
        f"  review from cold (folds the whole log): {r['cold_seconds']:.2f} s; "
        f"next review: {r['warm_seconds']:.2f} s; baseline (stream {r['grants_streamed']:,} "
        f"live grants, no work): {r['baseline_seconds']:.2f} s -> cold/baseline "
        f"x{r['cold_seconds'] / r['baseline_seconds']:.1f}"
    )
    say(
        f"  {r['grants_checked']:,} grants checked, {r['findings']:,} findings ({kinds}); "
        f"peak RSS growth {fmt_kib(growth)} ({r['rss_method']}, fresh process)"
    )
    return r


def run(*, quick: bool, pg_url: str | None = None) -> None:
    sizes = QUICK if quick else FULL
    section("5. Weekly access review (rbac_core.access_review)")
    results: dict[int, dict[str, Any]] = {}
    for users, entries in sizes:
        with tempfile.TemporaryDirectory(prefix="wa-access-bench-") as tmp:
            url = f"sqlite:///{Path(tmp) / 'review.db'}"
            results[users] = _measure(f"SQLite, {fmt_count(users)} people", url, users, entries)
    small, large = results[sizes[0][0]], results[sizes[-1][0]]
    say(
        f"scaling x{sizes[-1][0] // sizes[0][0]}: cold time x"
        f"{large['cold_seconds'] / small['cold_seconds']:.1f}, peak RSS growth "
        f"{fmt_kib(small['rss_peak_kib'] - small['rss_before_kib'])} -> "
        f"{fmt_kib(large['rss_peak_kib'] - large['rss_before_kib'])}"
    )
    if pg_url:
        users, entries = sizes[-1]
        with throwaway_schema(pg_url, "wa_bench") as url:
            _measure(f"PostgreSQL, {fmt_count(users)} people", url, users, entries)
    else:
        say("PostgreSQL: not measured (pass --pg URL)")
    if sizes[-1][0] >= BAR_USERS:
        say()
        say(
            f"review over {BAR_USERS:,} people < {BAR_SECONDS:.0f} s on SQLite (from cold): "
            f"{verdict(large['cold_seconds'] < BAR_SECONDS)} ({large['cold_seconds']:.2f} s)"
        )
