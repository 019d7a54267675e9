"""Fixtures: a migrated database per test, on SQLite by default or PostgreSQL.

Set WA_TEST_DATABASE_URL=postgresql://… to run every store-touching test on
PostgreSQL; each test session then works in a schema of its own, so parallel
runs never see each other's rows.
"""

from __future__ import annotations

import io
import os
import shutil
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from rbac_core import Database, Gate, ManualClock, build_gate
from rbac_core.audit import GENESIS_HASH
from rbac_core.clock import utcnow
from rbac_core.directory import ensure_user, register_number
from rbac_core.store.migrate import sync_builtin_roles, upgrade
from rbac_core.store.models import Base

from .helpers import throwaway_schema

PG_URL = os.environ.get("WA_TEST_DATABASE_URL", "").strip()
START = 1_795_000_000.0  # 2026-11-18, a fixed instant: tests move the clock, never sleep

TABLES = tuple(table.name for table in Base.metadata.sorted_tables)
"""Every table of the schema: emptied between PostgreSQL tests, new ones included."""


def pytest_report_header(config: pytest.Config) -> str:
    backend = make_url(PG_URL).render_as_string() if PG_URL else "SQLite"
    return f"wa-access test database: {backend}"


@pytest.fixture(scope="session")
def pg_schema_url() -> Iterator[str | None]:
    if not PG_URL:
        yield None
        return
    with throwaway_schema(PG_URL, "wa_test") as url:
        migrated = Database(url)
        upgrade(migrated)
        migrated.dispose()
        yield url


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("template") / "template.db"
    db = Database(f"sqlite:///{path}")
    upgrade(db)
    db.dispose()  # the last connection to close checkpoints the WAL into the file
    assert not path.with_name("template.db-wal").exists()
    return path


@pytest.fixture
def db_url(pg_schema_url: str | None, sqlite_template: Path, tmp_path: Path) -> str:
    """A URL for a freshly migrated, empty database (built-in roles only)."""
    if pg_schema_url is None:
        target = tmp_path / "wa_access.db"
        shutil.copyfile(sqlite_template, target)
        return f"sqlite:///{target}"
    reset = Database(pg_schema_url)
    with reset.write() as session:
        session.execute(text(f"TRUNCATE {', '.join(TABLES)} RESTART IDENTITY CASCADE"))
        session.execute(text("INSERT INTO policy_state (id, version) VALUES (1, 1)"))
        session.execute(
            text("INSERT INTO audit_head (id, seq, hash) VALUES (1, 0, :h)"), {"h": GENESIS_HASH}
        )
        session.execute(text("INSERT INTO activity_rollup (id, through_seq) VALUES (1, 0)"))
        sync_builtin_roles(session, utcnow())
    reset.dispose()
    return pg_schema_url


@pytest.fixture
def db(db_url: str) -> Iterator[Database]:
    database = Database(db_url)
    yield database
    database.dispose()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(START)


@pytest.fixture
def gate(db: Database, clock: ManualClock) -> Gate:
    return build_gate(db, clock=clock)


NUMBERS = ("+15550001111", "+15550002222", "+15550000001", "+15550000002", "+15550000003")
"""The workspace's registered WhatsApp numbers: grants may be made only on these."""

ADMIN = "U0ADMIN01"
ALICE = "U0ALICE01"
BOB = "U0BOB0001"
CAROL = "U0CAROL01"


@pytest.fixture
def team(db: Database, gate: Gate, clock: ManualClock) -> dict[str, str]:
    """A workspace with one admin (bootstrapped), three known people without roles,
    and the registered numbers of NUMBERS."""
    outcome = gate.submit("operator", "cli", "system.bootstrap_admin", {"user": ADMIN})
    assert outcome.status == "done", outcome
    with db.write() as session:
        for user in (ALICE, BOB, CAROL):
            ensure_user(session, user, utcnow(clock))
        for number in NUMBERS:
            register_number(session, number)
    return {"admin": ADMIN, "alice": ALICE, "bob": BOB, "carol": CAROL}


Cli = Callable[..., tuple[int, str, str]]
"""`cli(*argv, stdin="")` -> (exit code, stdout, stderr) of `wa-access` run in process."""


@pytest.fixture
def cli(
    db_url: str,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> Cli:
    """`wa-access` on the test database, run in process from an empty folder."""
    from bot.cli import main

    monkeypatch.setenv("DATABASE_URL", db_url)
    monkeypatch.chdir(tmp_path)

    def invoke(*argv: str, stdin: str = "") -> tuple[int, str, str]:
        monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
        out = io.StringIO()
        capsys.readouterr()
        code = main(list(argv), out=out)
        return code, out.getvalue(), capsys.readouterr().err

    return invoke
