"""Rows written by the fast inserts (store/inserts.py) are rows the ORM could have written:
the same values, and on SQLite the same text for a timestamp, so they compare alike."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import cast

import pytest
from sqlalchemy import Table, func, select, text

from rbac_core import Database
from rbac_core.directory import register_number
from rbac_core.store import migrate
from rbac_core.store.inserts import insert_new_many, insert_rows
from rbac_core.store.models import Conversation, ConversationMessage, Customer

NUMBER = "+15550001111"
_MESSAGES = cast(Table, ConversationMessage.__table__)


def _conversation(db: Database) -> int:
    now = datetime(2026, 12, 5, 11, 0, tzinfo=UTC)
    with db.write() as session:
        register_number(session, NUMBER, "106540352242922")
        customer = Customer(key="wa:16505551234", wa_id="16505551234", created_at=now)
        session.add(customer)
        session.flush()
        conversation = Conversation(
            number=NUMBER, customer_id=customer.id, state="open", created_at=now
        )
        session.add(conversation)
        session.flush()
        return conversation.id


def _row(conversation: int, at: datetime, wamid: str | None = None) -> dict[str, object]:
    return {
        "wamid": wamid,
        "conversation_id": conversation,
        "direction": "in" if wamid else "out",
        "kind": "text",
        "text": "hello",
        "sender": None,
        "sent_at": at,
        "received_at": at,
        "status": "received" if wamid else "queued",
        "status_rank": 0,
    }


@pytest.mark.parametrize("micro", [0, 123456])
def test_a_timestamp_written_fast_is_found_by_the_orm_at_that_very_instant(
    db: Database, micro: int
) -> None:
    conversation = _conversation(db)
    at = datetime(2026, 12, 5, 11, 6, 41, micro, tzinfo=UTC)
    with db.transaction(write=True) as txn:
        [made] = insert_rows(txn, _MESSAGES, [_row(conversation, at)], returning="id")
        insert_new_many(txn, _MESSAGES, [_row(conversation, at, "wamid.1")], ["wamid"], "id")
    sent = ConversationMessage.sent_at
    with db.read() as session:
        assert session.scalar(select(sent).where(ConversationMessage.id == made)) == at
        found = session.scalar(select(func.count()).where(sent >= at, sent <= at))
        assert found == 2


def test_insert_rows_promises_returned_values_only_for_one_row(db: Database) -> None:
    conversation = _conversation(db)
    at = datetime(2026, 12, 5, 11, 6, 41, tzinfo=UTC)
    with db.transaction(write=True) as txn, pytest.raises(ValueError, match="one row"):
        insert_rows(txn, _MESSAGES, [_row(conversation, at)] * 2, returning="id")


def test_sqlite_timestamps_written_short_before_are_brought_to_the_orms_form(
    tmp_path: Path,
) -> None:
    db = Database(f"sqlite:///{tmp_path / 'old.db'}")
    try:
        migrate.upgrade(db, "0016")
        conversation = _conversation(db)
        with db.engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO wa_messages (wamid, conversation_id, direction, kind, sent_at,"
                    " received_at, status, status_rank) VALUES ('wamid.old', :c, 'in', 'text',"
                    " '2026-12-05 11:06:41', '2026-12-05 11:06:41.250000', 'received', 0)"
                ),
                {"c": conversation},
            )
        migrate.upgrade(db)
        with db.engine.connect() as conn:
            row = conn.execute(text("SELECT sent_at, received_at FROM wa_messages")).one()
        assert tuple(row) == ("2026-12-05 11:06:41.000000", "2026-12-05 11:06:41.250000")
    finally:
        db.dispose()
