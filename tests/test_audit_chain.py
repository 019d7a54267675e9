"""The audit log detects every kind of tampering, and concurrent writers never fork it."""

from __future__ import annotations

import io
import itertools
import json
import multiprocessing
import threading
from collections.abc import Callable

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from bot.cli import main
from rbac_core import Database, Gate, build_gate
from rbac_core.audit import GENESIS_HASH, verify

from .conftest import ADMIN, ALICE
from .helpers import audit_count, audit_rows


@pytest.fixture
def log_of_ten(team: dict[str, str], gate: Gate, db: Database) -> Database:
    """A log with 10 entries: bootstrap, then nine lookups."""
    for _ in range(9):
        gate.submit(ADMIN, "cli", "role.show", {"user": ADMIN})
    assert audit_count(db) == 10
    return db


@pytest.fixture
def cli(db_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: object) -> Callable[..., int]:
    monkeypatch.setenv("DATABASE_URL", db_url)
    monkeypatch.chdir(str(tmp_path))

    def invoke(*argv: str) -> int:
        return main(list(argv), out=io.StringIO())

    return invoke


def _sql(db: Database, statements: str) -> None:
    with db.write() as session:
        for statement in statements.split(";"):
            session.execute(text(statement))


def test_an_intact_log_verifies(log_of_ten: Database, cli: Callable[..., int]) -> None:
    with log_of_ten.snapshot() as conn:
        result = verify(conn)
    assert result.ok and result.entries == 10 and result.head_seq == 10
    assert cli("audit", "verify") == 0


def test_entries_link_to_their_predecessor(log_of_ten: Database) -> None:
    rows = audit_rows(log_of_ten)
    assert rows[0].prev_hash == GENESIS_HASH
    assert all(b.prev_hash == a.hash for a, b in itertools.pairwise(rows))


TAMPERING = {
    "edited": ("UPDATE audit_log SET details = '{\"params\":{}}' WHERE seq = 4", 4, "edited"),
    "actor changed": ("UPDATE audit_log SET actor = 'U0EVIL001' WHERE seq = 6", 6, "edited"),
    "deleted": ("DELETE FROM audit_log WHERE seq = 5", 5, "missing"),
    "reordered": (
        "UPDATE audit_log SET seq = -3 WHERE seq = 3; "
        "UPDATE audit_log SET seq = 3 WHERE seq = 7; "
        "UPDATE audit_log SET seq = 7 WHERE seq = -3",
        3,
        "link",
    ),
    "truncated": ("DELETE FROM audit_log WHERE seq > 8", 9, "truncated"),
}


@pytest.mark.parametrize("case", sorted(TAMPERING))
def test_tampering_is_detected_and_the_first_bad_entry_named(
    case: str, log_of_ten: Database, cli: Callable[..., int], capsys: pytest.CaptureFixture[str]
) -> None:
    statement, first_bad, word = TAMPERING[case]
    _sql(log_of_ten, statement)
    with log_of_ten.snapshot() as conn:
        result = verify(conn)
    assert not result.ok
    assert result.first_bad_seq == first_bad
    assert word in (result.problem or "")
    capsys.readouterr()
    assert cli("audit", "verify") == 1
    assert f"first bad entry {first_bad}" in capsys.readouterr().err


def test_rewriting_the_whole_tail_consistently_is_still_caught_by_the_head(
    log_of_ten: Database,
) -> None:
    """Deleting the tail and its head row together is the only way past; a head that moved on
    while the log did not is truncation."""
    _sql(log_of_ten, "DELETE FROM audit_log WHERE seq = 10")
    with log_of_ten.snapshot() as conn:
        result = verify(conn)
    assert not result.ok and result.first_bad_seq == 10


def test_export_streams_every_entry_as_jsonl_and_csv(
    log_of_ten: Database, db_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: object
) -> None:
    monkeypatch.setenv("DATABASE_URL", db_url)
    monkeypatch.chdir(str(tmp_path))
    out = io.StringIO()
    assert main(["audit", "export", "--format", "jsonl"], out=out) == 0
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [e["seq"] for e in lines] == list(range(1, 11))
    assert lines[0]["action"] == "system.bootstrap_admin"
    assert lines[1]["details"]["params"] == {"user": ADMIN}
    assert lines[0]["time"].endswith("Z")
    out = io.StringIO()
    assert main(["audit", "export", "--format", "csv"], out=out) == 0
    csv_lines = out.getvalue().splitlines()
    assert csv_lines[0].startswith("seq,time,actor,surface,action")
    assert len(csv_lines) == 11


def _writer(url: str, worker: int, count: int) -> None:
    db = Database(url)
    gate = build_gate(db)
    for _ in range(count):
        outcome = gate.submit(ADMIN, "cli", "role.show", {"user": ALICE})
        assert outcome.status == "done", outcome.message
    db.dispose()


def test_concurrent_writers_in_several_processes_never_fork_the_chain(
    team: dict[str, str], db: Database, db_url: str
) -> None:
    before = audit_count(db)
    ctx = multiprocessing.get_context("spawn")
    workers = [ctx.Process(target=_writer, args=(db_url, n, 40)) for n in range(4)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(120)
    assert [w.exitcode for w in workers] == [0, 0, 0, 0]
    assert audit_count(db) == before + 160
    with db.snapshot() as conn:
        result = verify(conn)
    assert result.ok, result.problem
    assert result.entries == before + 160


def test_verify_sees_one_snapshot_while_writers_carry_on(log_of_ten: Database, gate: Gate) -> None:
    """A verify in progress neither blocks the gate nor mistakes a new entry for tampering."""
    with log_of_ten.snapshot() as conn:
        assert conn.execute(text("SELECT count(*) FROM audit_log")).scalar_one() == 10
        done: list[str] = []
        writer = threading.Thread(
            target=lambda: done.append(gate.submit(ADMIN, "cli", "role.list", {}).status)
        )
        writer.start()
        writer.join(30)
        assert done == ["done"]
        result = verify(conn)
        assert result.ok and result.entries == 10
    assert audit_count(log_of_ten) == 11


def test_the_hashed_payload_is_the_fields_joined_by_unit_separators() -> None:
    from rbac_core.audit.chain import _payload

    payload = _payload(
        7,
        1_795_000_000_123_456,
        "U0ADMIN01",
        "slack",
        "role.show",
        "user:U0ALICE01",
        "allow",
        "done",
        '{"k":"é"}',
        "ab" * 32,
    )
    assert payload == "\x1f".join(
        [
            "7",
            "1795000000123456",
            "U0ADMIN01",
            "slack",
            "role.show",
            "user:U0ALICE01",
            "allow",
            "done",
            '{"k":"é"}',
            "ab" * 32,
        ]
    ).encode("utf-8")


def test_a_separator_smuggled_into_a_field_cannot_shift_content_between_fields(
    log_of_ten: Database,
) -> None:
    """Moving text across a field boundary keeps the joined bytes; verify must still object."""
    with log_of_ten.read() as session:
        actor, surface = session.execute(
            text("SELECT actor, surface FROM audit_log WHERE seq = 3")
        ).one()
    with log_of_ten.write() as session:
        session.execute(
            text("UPDATE audit_log SET actor = :actor, surface = :surface WHERE seq = 3"),
            {"actor": actor[:-2], "surface": actor[-2:] + "\x1f" + surface},
        )
    with log_of_ten.snapshot() as conn:
        result = verify(conn)
    assert not result.ok and result.first_bad_seq == 3


def test_writers_cannot_put_a_separator_into_the_log(team: dict[str, str], db: Database) -> None:
    from rbac_core.audit import NewEntry, append

    with db.transaction(write=True) as txn:
        append(
            txn,
            [
                NewEntry(
                    "U0ADMIN01",
                    "cli",
                    "odd\x1faction",
                    "t\x1f\x00",
                    "deny",
                    "refused",
                    {"why": "a\x1fb"},
                    1,
                )
            ],
        )
    with db.snapshot() as conn:
        assert verify(conn).ok
    last = audit_rows(db)[-1]
    assert "\x1f" not in last.action and "\x00" not in last.target


@pytest.mark.parametrize(
    ("statement", "params"),
    [
        (
            "UPDATE audit_log SET target = target || :tail WHERE seq = 2",
            {"tail": "\x00 and U0EVIL001 too"},
        ),
        ("UPDATE audit_log SET ts_us = ts_us + 0.25 WHERE seq = 2", {}),
    ],
    ids=["text hidden behind a NUL", "time stored as a fraction"],
)
def test_edits_that_only_sqlite_can_store_are_caught(
    log_of_ten: Database, statement: str, params: dict[str, str]
) -> None:
    """SQLite keeps what PostgreSQL refuses (NUL in text) or rounds (a REAL in a bigint);
    whichever the database does, the edit never passes unnoticed."""
    try:
        with log_of_ten.write() as session:
            changed = session.execute(text(statement), params)
            stored = session.execute(
                text("SELECT target, ts_us FROM audit_log WHERE seq = 2")
            ).one()
            assert changed.rowcount == 1  # type: ignore[attr-defined]
    except DBAPIError:
        return  # the database refused the edit outright
    with log_of_ten.snapshot() as conn:
        result = verify(conn)
    original_kept = "\x00" not in stored.target and isinstance(stored.ts_us, int)
    assert result.ok == original_kept
    if not result.ok:
        assert result.first_bad_seq == 2
