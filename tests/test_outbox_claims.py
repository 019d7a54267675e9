"""Claims on a deep queue: the oldest destination first, one row each, whatever lies ahead.

A claim reads the oldest live rows of destinations not held back by their
pace a page at a time, and when whole pages hold too few destinations (many
rows to one) it asks for every destination's oldest row at once. Pages are made
tiny here so the paths a queue of thousands takes are walked with a handful of
rows.
"""

from __future__ import annotations

import pytest
from sqlalchemy import update

from rbac_core import Database, ManualClock
from rbac_core.clock import utcnow
from rbac_core.outbox import Notice, Outbox, enqueue
from rbac_core.outbox import queue as claims
from rbac_core.store.models import OutboxMessage

A, B, C = "whatsapp:1065:CA", "whatsapp:1065:CB", "whatsapp:1065:CC"


@pytest.fixture(autouse=True)
def small_pages(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(claims, "_PAGE_ROWS", 3)
    monkeypatch.setattr(claims, "_PAGES", 2)


@pytest.fixture
def outbox(db: Database, clock: ManualClock) -> Outbox:
    return Outbox(db, clock, prefix="whatsapp:")


def add(db: Database, clock: ManualClock, to: str, n: int = 1) -> None:
    with db.transaction(write=True) as txn:
        enqueue(txn, [Notice("whatsapp.send", to, {"n": k}) for k in range(n)], utcnow(clock))


def held_back(db: Database, clock: ManualClock, outbox: Outbox, to: str) -> None:
    """`to` has a post in flight: its destination is held until that lease ends."""
    add(db, clock, to)
    [delivery] = outbox.claim("sender-0", 1)
    assert delivery.to == to


def test_a_claim_takes_the_oldest_destinations_first_one_row_each(
    db: Database, clock: ManualClock, outbox: Outbox
) -> None:
    for to in (A, B, A, C, B):
        add(db, clock, to)
    claimed = outbox.claim("sender-1", 5)
    assert [d.to for d in claimed] == [A, B, C]
    assert claimed == sorted(claimed, key=lambda d: d.id)


def test_destinations_past_a_page_of_held_back_rows_are_found(
    db: Database, clock: ManualClock, outbox: Outbox
) -> None:
    held_back(db, clock, outbox, A)
    add(db, clock, A, 4)  # the first page and a bit: all held back
    add(db, clock, B)
    add(db, clock, C)
    assert [d.to for d in outbox.claim("sender-1", 2)] == [B, C]


def test_destinations_behind_more_rows_to_one_destination_than_the_pages_hold_are_found(
    db: Database, clock: ManualClock, outbox: Outbox
) -> None:
    add(db, clock, A, 20)  # far more than two pages of three, all to A
    add(db, clock, B)
    claimed = outbox.claim("sender-1", 2)
    assert [d.to for d in claimed] == [A, B]
    assert claimed[0].data == {"n": 0}  # A's oldest row


def test_a_destination_held_back_behind_many_rows_does_not_hide_the_others(
    db: Database, clock: ManualClock, outbox: Outbox
) -> None:
    held_back(db, clock, outbox, A)
    add(db, clock, A, 20)
    add(db, clock, B)
    assert [d.to for d in outbox.claim("sender-1", 4)] == [B]


def test_delivered_rows_ahead_of_the_queue_are_not_in_the_way(
    db: Database, clock: ManualClock, outbox: Outbox
) -> None:
    add(db, clock, A, 10)
    with db.write() as session:
        session.execute(update(OutboxMessage).values(status="done"))
    add(db, clock, B)
    assert [d.to for d in outbox.claim("sender-1", 4)] == [B]
