"""A decision is fresh: a change committed by any process counts from the very next decision.

On SQLite a gate learns that policy has not moved from a counter the processes of the
machine share (rbac_core/store/stamp.py) instead of a transaction; these tests hold it to
the promise a transaction kept, across real processes, and bound what it cannot see.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Iterator
from multiprocessing.connection import Connection
from typing import Any

import pytest
from sqlalchemy import text, update

from rbac_core import Database, Gate, build_gate
from rbac_core.clock import utcnow
from rbac_core.policy import loading
from rbac_core.store.models import Grant
from rbac_core.store.stamp import TRUST_S, Stamp

from .conftest import ADMIN, ALICE
from .helpers import run

JOIN_S = 60


def _decider(url: str, conn: Connection) -> None:
    """Another process: a gate of its own, deciding on demand."""
    db = Database(url)
    gate = build_gate(db)
    try:
        while (asked := conn.recv()) is not None:
            conn.send(gate.decide(*asked).allowed)
    finally:
        db.dispose()


@pytest.fixture
def elsewhere(db_url: str) -> Iterator[Connection]:
    ctx = multiprocessing.get_context("spawn")
    mine, theirs = ctx.Pipe()
    process = ctx.Process(target=_decider, args=(db_url, theirs), daemon=True)
    process.start()
    yield mine
    mine.send(None)
    process.join(JOIN_S)
    assert process.exitcode == 0


def decide_there(conn: Connection, *asked: str) -> bool:
    conn.send(asked)
    assert conn.poll(JOIN_S), "the other process did not answer"
    return bool(conn.recv())


def test_a_grant_revoked_here_is_refused_by_the_next_decision_in_another_process(
    gate: Gate, team: dict[str, str], elsewhere: Connection
) -> None:
    assert not decide_there(elsewhere, ALICE, "messages:send_text")
    assert run(gate, ADMIN, "role.assign", user=ALICE, role="agent").ok
    for _ in range(3):  # warm: decided from the snapshot, the stamp unchanged
        assert decide_there(elsewhere, ALICE, "messages:send_text", "+15550001111")
    assert run(gate, ADMIN, "role.revoke", user=ALICE, role="agent").ok
    assert not decide_there(elsewhere, ALICE, "messages:send_text", "+15550001111")
    assert run(gate, ADMIN, "role.assign", user=ALICE, role="agent").ok
    assert decide_there(elsewhere, ALICE, "messages:send_text")


def test_while_policy_stands_still_a_decision_opens_no_transaction_on_sqlite(
    db: Database, gate: Gate, team: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """On PostgreSQL, whose processes may live on other machines, it always reads."""
    assert run(gate, ADMIN, "role.assign", user=ALICE, role="agent").ok
    assert gate.decide(ALICE, "messages:send_text").allowed
    opened: list[bool] = []
    real = db.transaction

    def counting(**kwargs: Any) -> Any:
        opened.append(kwargs["write"])
        return real(**kwargs)

    monkeypatch.setattr(db, "transaction", counting)
    assert gate.decide(ALICE, "messages:send_text", "+1 555 000 1111").allowed
    assert not gate.decide(ALICE, "templates:approve").allowed
    assert opened == ([] if db.is_sqlite else [False, False])


def test_a_change_the_stamp_missed_counts_within_its_trust_period(
    db: Database, gate: Gate, team: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A writer that died between its commit and its bump, or SQL typed by hand: the
    snapshot is read again once it is TRUST_S old."""
    if not db.is_sqlite:
        pytest.skip("PostgreSQL reads the version for every decision: nothing to miss")
    assert run(gate, ADMIN, "role.assign", user=ALICE, role="agent").ok
    assert gate.decide(ALICE, "messages:send_text").allowed
    with db.engine.begin() as conn:  # by hand: no gate, no stamp
        conn.execute(update(Grant).where(Grant.user_id == ALICE).values(revoked_at=utcnow()))
        conn.execute(text("UPDATE policy_state SET version = version + 1"))
    assert gate.decide(ALICE, "messages:send_text").allowed  # not seen yet
    later = loading.time.monotonic() + TRUST_S
    monkeypatch.setattr(loading.time, "monotonic", lambda: later)
    assert not gate.decide(ALICE, "messages:send_text").allowed


def _bump(path: str, times: int) -> None:
    stamp = Stamp(path)
    for _ in range(times):
        stamp.bump()
    stamp.close()


def test_bumps_from_several_processes_are_never_lost(tmp_path: Any) -> None:
    """Two bumps from the same value would leave one change unseen by a reader between."""
    path = str(tmp_path / "db.policy-stamp")
    ctx = multiprocessing.get_context("spawn")
    workers = [ctx.Process(target=_bump, args=(path, 300)) for _ in range(3)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(JOIN_S)
        assert worker.exitcode == 0
    assert Stamp(path).read() == 900
