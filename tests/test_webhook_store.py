"""Storing verified webhook bodies: once per body, and cheaply under load.

Requests of one process that arrive while another is storing are stored
together by one statement (rbac_core/store/group_commit.py); each still hears
whether its own body was new, and a body that cannot be stored costs the
others nothing.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import cast

import pytest
from sqlalchemy import Table, select
from sqlalchemy.exc import DBAPIError

from rbac_core import Database, ManualClock
from rbac_core.clock import utcnow
from rbac_core.store.inserts import insert_new_sql
from rbac_core.store.models import InboundWebhook
from rbac_core.store.webhook_inbox import WebhookInbox

JOIN_SECONDS = 30


def bodies_kept(db: Database) -> list[str]:
    with db.read() as session:
        return list(session.scalars(select(InboundWebhook.body).order_by(InboundWebhook.id)))


class SlowFirst(WebhookInbox):
    """An inbox whose first statement waits until `queued` more callers queue behind it."""

    def __init__(self, db: Database, clock: ManualClock, queued: int) -> None:
        super().__init__(db, clock)
        self.queued = queued
        self.batches: list[list[str]] = []
        self.refuse: set[str] = set()

    def store_many(self, source: str, bodies: Sequence[str]) -> list[bool]:
        self.batches.append(list(bodies))
        if len(self.batches) == 1:
            deadline = time.monotonic() + JOIN_SECONDS
            while self._combined[source].waiting() < self.queued:
                assert time.monotonic() < deadline, "the other callers never queued"
                time.sleep(0.001)
        if self.refuse.intersection(bodies):
            raise ValueError("this body cannot be stored")
        return super().store_many(source, bodies)


def store_concurrently(inbox: WebhookInbox, bodies: list[str]) -> dict[int, bool | Exception]:
    answers: dict[int, bool | Exception] = {}

    def store(i: int, body: str) -> None:
        try:
            answers[i] = inbox.store("whatsapp", body)
        except Exception as exc:  # the caller's own error, in its own thread
            answers[i] = exc

    first = threading.Thread(target=store, args=(0, bodies[0]))
    first.start()
    while not isinstance(inbox, SlowFirst) or not inbox.batches:
        time.sleep(0.001)
    rest = [threading.Thread(target=store, args=(i, b)) for i, b in enumerate(bodies) if i]
    for thread in rest:
        thread.start()
    for thread in [first, *rest]:
        thread.join(JOIN_SECONDS)
    return answers


def test_one_statement_keeps_a_new_body_and_ignores_one_kept_already(
    db: Database, clock: ManualClock
) -> None:
    inbox = WebhookInbox(db, clock)
    assert inbox.store_many("whatsapp", ['{"a":1}', '{"b":2}', '{"a":1}']) == [True, True, False]
    assert inbox.store_many("whatsapp", ['{"b":2}', '{"c":3}']) == [False, True]
    assert bodies_kept(db) == ['{"a":1}', '{"b":2}', '{"c":3}']


def test_requests_arriving_during_a_store_are_stored_together_each_told_its_own_answer(
    db: Database, clock: ManualClock
) -> None:
    inbox = SlowFirst(db, clock, queued=4)
    bodies = ['{"n":0}', '{"n":1}', '{"n":2}', '{"n":1}', '{"n":3}']

    answers = store_concurrently(inbox, bodies)

    assert len(inbox.batches) == 2 and sorted(inbox.batches[1]) == sorted(bodies[1:])
    assert answers[0] is True and answers[2] is True and answers[4] is True
    assert sorted([answers[1], answers[3]]) == [False, True]  # the same body, kept once
    assert sorted(bodies_kept(db)) == sorted(set(bodies))


def test_a_body_that_cannot_be_stored_fails_alone(db: Database, clock: ManualClock) -> None:
    inbox = SlowFirst(db, clock, queued=3)
    inbox.refuse = {'{"bad":1}'}
    bodies = ['{"n":0}', '{"n":1}', '{"bad":1}', '{"n":2}']

    answers = store_concurrently(inbox, bodies)

    assert [answers[i] for i in (0, 1, 3)] == [True, True, True]
    assert isinstance(answers[2], ValueError)
    assert sorted(bodies_kept(db)) == sorted(['{"n":0}', '{"n":1}', '{"n":2}'])


def test_a_single_statement_is_refused_inside_a_transaction(db: Database) -> None:
    with db.write(), pytest.raises(RuntimeError, match="inside a transaction"):
        db.single("SELECT 1", [])


def test_many_bodies_are_kept_in_statements_of_a_bounded_size_each_answered(
    db: Database, clock: ManualClock
) -> None:
    """Past 200 bodies the statement is split (SQLite bounds a statement's parameters); a
    body repeated across the split is still kept once, by its first occurrence."""
    inbox = WebhookInbox(db, clock)
    bodies = [f'{{"n":{n}}}' for n in range(450)]
    bodies[300] = bodies[10]
    kept = inbox.store_many("whatsapp", bodies)
    assert kept == [n != 300 for n in range(450)]
    assert len(bodies_kept(db)) == 449


def test_a_body_stored_from_inside_a_transaction_is_refused_at_once_never_queued(
    db: Database, clock: ManualClock
) -> None:
    """Queued behind a thread waiting for the writers' lock this thread holds, it would hang
    both, and every later request of the process behind them."""
    inbox = WebhookInbox(db, clock)
    with db.read(), pytest.raises(RuntimeError, match="outside any transaction"):
        inbox.store("whatsapp", '{"n":1}')
    assert inbox.store("whatsapp", '{"n":1}') is True


@pytest.mark.parametrize("count", [1, 8, 9, 200])
def test_every_column_reads_back_as_written_however_many_rows_share_a_statement(
    db: Database, clock: ManualClock, count: int
) -> None:
    """A few rows go as VALUES, more as one array per column on PostgreSQL (inserts.py):
    either way the text, the timestamp and the defaults are stored as the ORM would."""
    inbox = WebhookInbox(db, clock)
    bodies = [f'{{"n":{n},"text":"caf\u00e9 \\u00e9 {"x" * n}"}}' for n in range(count)]
    kept = inbox.store_many("whatsapp", [bodies[0], *bodies])
    assert kept == [True, False, *[True] * (count - 1)]
    with db.read() as session:
        rows = list(session.scalars(select(InboundWebhook).order_by(InboundWebhook.id)))
    assert [row.body for row in rows] == bodies
    assert {(r.source, r.status, r.attempt, r.owner, r.finished_at) for r in rows} == {
        ("whatsapp", "queued", 0, None, None)
    }
    assert {r.received_at for r in rows} == {r.next_try_at for r in rows} == {utcnow(clock)}


@pytest.mark.parametrize("count", [1, 12])
def test_a_value_too_long_for_its_column_is_refused_never_cut_short(
    db: Database, clock: ManualClock, count: int
) -> None:
    """However the rows travel (VALUES, or arrays on PostgreSQL), the column's length holds:
    two values sharing a long prefix must never become one row. SQLite does not enforce
    VARCHAR lengths, so there the value is kept whole."""
    inbox = WebhookInbox(db, clock)
    rows = [
        {"source": "x" * 17 if n == 0 else "whatsapp", "digest": f"d{n}", "body": "{}"}
        for n in range(count)
    ]
    full = [
        {**row, "received_at": utcnow(clock), "status": "queued", "attempt": 0}
        | {"next_try_at": utcnow(clock)}
        for row in rows
    ]
    table = cast(Table, InboundWebhook.__table__)
    statements = insert_new_sql(db.engine.dialect, table, full, ("source", "digest"), "digest")
    if db.is_sqlite:
        assert {d for sql, params in statements for (d,) in db.single(sql, params)} == {
            f"d{n}" for n in range(count)
        }
        return
    with pytest.raises(DBAPIError, match="too long"):
        for sql, params in statements:
            db.single(sql, params)
    assert bodies_kept(db) == []
    assert inbox.store_many("whatsapp", ["{}"]) == [True]
