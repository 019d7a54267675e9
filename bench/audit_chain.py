"""The audit hash chain on SQLite: append latency, bulk fill rate, and verify time and memory.

Everything runs on a fresh database in a temporary directory, migrated with
`rbac_core.migrate.upgrade` exactly as production does, and removed afterwards.
Single-entry transactions are the gate's real write path (one audit entry per
gated action), so their latency is what a user waits for; the bulk fill only
exists to build a log big enough to time `verify` on.

`verify` runs in a fresh process (see `bench.verify_probe`) at two sizes, so
the printed peak-memory growth is verify's own and the two sizes show whether
time grows linearly and memory stays flat.
"""

from __future__ import annotations

import inspect
import json
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import select

from rbac_core import audit
from rbac_core.audit import NewEntry
from rbac_core.store import Database, migrate
from rbac_core.store.models import AuditHead

from .report import fmt_count, fmt_kib, fmt_ns, percentile, say, section, verdict

VERIFY_BAR_ENTRIES = 1_000_000
VERIFY_BAR_SECONDS = 10.0
# verify buffers this many rows at a time, so its memory stops growing beyond it.
VERIFY_BATCH: int = inspect.signature(audit.verify).parameters["batch"].default
_REPO_ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Sizes:
    """How much to measure: the full run, or a smaller smoke run with --quick."""

    appends: int  # single-entry transactions
    checkpoints: tuple[int, ...]  # log sizes (entries) at which verify is run
    batch: int  # entries per transaction in the bulk fill


FULL = Sizes(appends=2_000, checkpoints=(100_000, 1_000_000), batch=10_000)
QUICK = Sizes(appends=500, checkpoints=(2_000, 20_000), batch=2_000)

_ACTORS = tuple(f"U0ADMIN{n:02d}" for n in range(1, 10))
_USERS = tuple(f"U{n:08d}" for n in range(1_000))
_ROLES = ("agent", "viewer", "developer", "admin")


class EntryFactory:
    """Realistic `role.show` entries with strictly increasing timestamps.

    Fields vary with the index by plain arithmetic rather than a random
    generator, so building a million entries costs little next to appending them.
    """

    def __init__(self, start_us: int) -> None:
        self.start_us = start_us

    def make(self, i: int) -> NewEntry:
        user = _USERS[(i * 7_919) % len(_USERS)]
        grant = 1 + (i * 31) % 997
        role = _ROLES[i % len(_ROLES)]
        return NewEntry(
            actor=_ACTORS[i % len(_ACTORS)],
            surface="slack",
            action="role.show",
            target=f"user:{user}",
            decision="allow",
            outcome="done",
            details={
                "params": {"user": user},
                "reason": f"allowed by grant #{grant}: role '{role}' in the whole workspace",
            },
            ts_us=self.start_us + i * 1_000 + i % 7,
        )


def _head_seq(db: Database) -> int:
    with db.read() as session:
        seq: int = session.execute(select(AuditHead.seq).where(AuditHead.id == 1)).scalar_one()
    return seq


def _db_size(path: Path) -> int:
    """The database file plus its WAL, in bytes."""
    return sum(p.stat().st_size for p in path.parent.glob(path.name + "*"))


def _append_singles(db: Database, factory: EntryFactory, start: int, n: int) -> None:
    """N transactions of one entry each: the gate's write path."""
    clock = time.perf_counter_ns
    latencies: list[float] = []
    for i in range(start, start + n):
        entry = factory.make(i)
        begin = clock()
        with db.transaction(write=True) as txn:
            audit.append(txn, [entry])
        latencies.append(clock() - begin)
    total_s = sum(latencies) / 1e9
    say(
        f"append, 1 entry per transaction: {n:,} transactions in {total_s:.2f} s = "
        f"{fmt_count(n / total_s)} entries/s; per append p50 {fmt_ns(percentile(latencies, 50))}"
        f", p99 {fmt_ns(percentile(latencies, 99))}"
    )


def _fill(db: Database, factory: EntryFactory, start: int, stop: int, batch: int) -> None:
    """Append entries start..stop-1 in transactions of `batch`; time only the transactions."""
    clock = time.perf_counter_ns
    spent = 0
    wall = clock()
    i = start
    while i < stop:
        entries = [factory.make(j) for j in range(i, min(i + batch, stop))]
        begin = clock()
        with db.transaction(write=True) as txn:
            audit.append(txn, entries)
        spent += clock() - begin
        i += len(entries)
    wall_s = (clock() - wall) / 1e9
    n = stop - start
    say(
        f"bulk fill {start:,} -> {stop:,}: {n:,} entries, {batch:,} per transaction, "
        f"{spent / 1e9:.2f} s in append+commit = {fmt_count(n / (spent / 1e9))} entries/s "
        f"({wall_s:.2f} s wall incl. building the entries)"
    )


def _probe(url: str, *, with_tracemalloc: bool) -> dict[str, Any]:
    argv = [sys.executable, "-m", "bench.verify_probe", url]
    if with_tracemalloc:
        argv.append("--tracemalloc")
    done = subprocess.run(argv, cwd=_REPO_ROOT, capture_output=True, text=True, check=True)
    report: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return report


def _verify(url: str, expected: int, db_path: Path) -> dict[str, Any]:
    report = _probe(url, with_tracemalloc=True)
    growth = report["rss_peak_kib"] - report["rss_before_kib"]
    status = "ok" if report["ok"] and report["entries"] == expected else f"BROKEN: {report}"
    say(
        f"verify {expected:,} entries ({_db_size(db_path) / 2**20:,.0f} MiB on disk): "
        f"{report['seconds']:.2f} s = {fmt_count(report['entries'] / report['seconds'])} "
        f"entries/s, chain {status}"
    )
    say(
        f"  memory: peak RSS growth during verify {fmt_kib(growth)} "
        f"(RSS {fmt_kib(report['rss_before_kib'])} -> peak {fmt_kib(report['rss_peak_kib'])}, "
        f"fresh process, {report['rss_method']}); tracemalloc peak (separate, untimed "
        f"walk) {fmt_kib(report['tracemalloc_peak_bytes'] / 1024)}"
    )
    return report


def run(*, quick: bool) -> None:
    sizes = QUICK if quick else FULL
    section("2. Audit chain on SQLite (rbac_core.audit)")
    with tempfile.TemporaryDirectory(prefix="wa-access-bench-") as tmp:
        db_path = Path(tmp) / "audit.db"
        url = f"sqlite:///{db_path}"
        db = Database(url)
        try:
            migrate.upgrade(db)
            say(f"database: {url} (migrated to head; removed afterwards)")
            factory = EntryFactory(start_us=audit.micros(time.time()))
            size = _head_seq(db)
            _append_singles(db, factory, size, sizes.appends)
            size += sizes.appends
            reports: dict[int, dict[str, Any]] = {}
            for checkpoint in sizes.checkpoints:
                _fill(db, factory, size, checkpoint, sizes.batch)
                size = checkpoint
                reports[checkpoint] = _verify(url, checkpoint, db_path)
        finally:
            db.dispose()

    small, large = sizes.checkpoints[0], sizes.checkpoints[-1]
    per_small = reports[small]["seconds"] / small * 1e9
    per_large = reports[large]["seconds"] / large * 1e9
    say(
        f"scaling {small:,} -> {large:,} entries (x{large / small:.0f}): time x"
        f"{reports[large]['seconds'] / reports[small]['seconds']:.1f} "
        f"({fmt_ns(per_small)} -> {fmt_ns(per_large)} per entry); peak RSS growth "
        f"{fmt_kib(reports[small]['rss_peak_kib'] - reports[small]['rss_before_kib'])} -> "
        f"{fmt_kib(reports[large]['rss_peak_kib'] - reports[large]['rss_before_kib'])}"
    )
    if small < VERIFY_BATCH:
        say(
            f"  note: audit.verify reads {VERIFY_BATCH:,} rows per batch, so below that size "
            "its memory grows with the log; flatness only shows on larger logs"
        )
    say()
    if VERIFY_BAR_ENTRIES in reports:
        seconds = reports[VERIFY_BAR_ENTRIES]["seconds"]
        say(
            f"audit verify of 1,000,000 entries < 10 s: "
            f"{verdict(seconds < VERIFY_BAR_SECONDS)} ({seconds:.2f} s)"
        )
    else:
        guess = per_large * VERIFY_BAR_ENTRIES / 1e9
        say(
            f"audit verify of 1,000,000 entries < 10 s: SKIPPED (--quick verified "
            f"{large:,} entries; linear extrapolation {guess:.1f} s, not a measurement)"
        )
