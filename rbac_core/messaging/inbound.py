"""Customers' messages written as a set: a few statements for a batch, not a few per message.

Under load the intake worker hands the gate many bodies at once (actions/webhooks.py),
and written one by one their messages cost five statements each, which was most
of the time a webhook took. Here a run of messages is written with one read of
the customers it names, one of their conversations, one multi-row
`INSERT … ON CONFLICT (wamid) DO NOTHING RETURNING wamid` for the messages (what
comes back is what was new: the rest are duplicates) and one conditional UPDATE
per conversation for its window. Customers and conversations seen for the first
time are still made one at a time, with insert-or-ignore (people.py), so workers
racing on a new customer still end with one row.

Identity changes (`user_changed_number`) are not written here: the intake writes
the run before one, and the change itself on its own, so they apply in order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import Table, select
from sqlalchemy.orm import Session

from ..store.inserts import insert_new_many
from ..store.models import Conversation, ConversationMessage, Customer
from ..store.statements import one_of
from ..store.transaction import txn_of
from . import people
from .events import (
    Location,
    Media,
    Message,
    MetaError,
    Reaction,
    Reply,
    SharedContacts,
    SystemChange,
    Text,
)

KIND_MAX, ERROR_MAX = 32, 500
CHUNK = 200
"""Rows per statement: far below SQLite's 32,766 bound parameters."""

_MESSAGES = cast(Table, ConversationMessage.__table__)
_CUSTOMERS = cast(Table, Customer.__table__)
_CONVERSATIONS = cast(Table, Conversation.__table__)


@dataclass
class Written:
    """What a run of messages did."""

    messages: int = 0
    duplicates: int = 0
    malformed: int = 0
    conversations: set[int] = field(default_factory=set)


def write_messages(session: Session, now: datetime, run: Sequence[tuple[Message, str]]) -> Written:
    """Write `run` (each message with its business number, E.164); what it did."""
    written = Written()
    keyed = [(m, number, people.customer_key(m.sender)) for m, number in run]
    written.malformed = sum(key is None for _, _, key in keyed)
    known = [(m, number, key) for m, number, key in keyed if key is not None]
    if not known:
        return written
    customers = _customers(session, now, [(m, key) for m, _, key in known])
    pairs = [(number, customers[key]) for _, number, key in known]
    conversations = _conversations(session, now, pairs)
    rows: dict[str, dict[str, Any]] = {}
    for (message, _, _), pair in zip(known, pairs, strict=True):
        if message.wamid in rows:
            written.duplicates += 1  # the same message twice in one batch
            continue
        rows[message.wamid] = row_of(message, conversations[pair], now)
    new = _insert_new(session, [rows[wamid] for wamid in sorted(rows)])
    written.messages = len(new)
    written.duplicates += len(rows) - len(new)
    latest: dict[int, datetime] = {}
    for wamid in new:
        conversation, at = int(rows[wamid]["conversation_id"]), rows[wamid]["sent_at"]
        written.conversations.add(conversation)
        if conversation not in latest or at > latest[conversation]:
            latest[conversation] = at
    people.renew_windows(session, sorted(latest.items()))
    return written


def _customers(
    session: Session, now: datetime, named: Sequence[tuple[Message, str]]
) -> dict[str, int]:
    """Each key's customer id: one read for those known, made one by one for the rest."""
    keys = sorted({key for _, key in named})
    found: dict[str, tuple[int, str | None, str | None, str | None]] = {}
    c = _CUSTOMERS.c
    for start in range(0, len(keys), CHUNK):
        query = select(c.key, c.id, c.wa_id, c.name, c.username).where(
            one_of(session, c.key, keys[start : start + CHUNK])
        )
        for key, *rest in session.execute(query):
            found[str(key)] = (int(rest[0]), rest[1], rest[2], rest[3])
    ids: dict[str, int] = {}
    # In key order: two workers making the same new customers lock them in one order,
    # so they cannot deadlock on PostgreSQL.
    for message, key in sorted(named, key=lambda pair: pair[1]):
        if key in ids:
            continue
        if key in found:
            people.refresh(session, found[key], message.sender)
            ids[key] = found[key][0]
        else:
            made = people.customer_for(session, message.sender, now)
            assert made is not None  # the key says the contact names someone
            ids[key] = made
    return ids


def _conversations(
    session: Session, now: datetime, pairs: Sequence[tuple[str, int]]
) -> dict[tuple[str, int], int]:
    wanted = set(pairs)
    customers = sorted({customer for _, customer in wanted})
    c = _CONVERSATIONS.c
    ids: dict[tuple[str, int], int] = {}
    for start in range(0, len(customers), CHUNK):
        query = select(c.number, c.customer_id, c.id).where(
            one_of(session, c.customer_id, customers[start : start + CHUNK])
        )
        for number, customer, conversation in session.execute(query):
            if (number, customer) in wanted:
                ids[(str(number), int(customer))] = int(conversation)
    for number, customer in sorted(wanted):  # one order for every worker, as above
        if (number, customer) not in ids:
            ids[(number, customer)] = people.conversation_for(session, number, customer, now)
    return ids


def _insert_new(session: Session, rows: list[dict[str, Any]]) -> list[str]:
    """Insert the rows whose wamid is new; their wamids, in the order given."""
    new = insert_new_many(txn_of(session), _MESSAGES, rows, ["wamid"], "wamid", chunk=CHUNK)
    return [row["wamid"] for row in rows if row["wamid"] in new]


def row_of(message: Message, conversation: int, now: datetime) -> dict[str, Any]:
    """The `wa_messages` row of an inbound message."""
    error = message.errors[0] if message.errors else None
    return {
        "wamid": message.wamid,
        "conversation_id": conversation,
        "direction": "in",
        "kind": message.kind[:KIND_MAX] or "unknown",
        "text": text_of(message.content),
        "reply_to": _reply_to(message) or None,
        "sender": None,
        "sent_at": moment(message.timestamp, now),
        "received_at": now,
        "status": None,
        "status_rank": 0,
        "error_code": error.code if error else None,
        "error_text": error_text(error),
    }


def moment(timestamp: int, now: datetime) -> datetime:
    """A Meta timestamp as a moment, never later than now: a clock that runs ahead
    must not hold a customer's window open beyond what they were given."""
    if timestamp <= 0 or timestamp >= now.timestamp():
        return now
    return datetime.fromtimestamp(timestamp, UTC)


def text_of(content: object) -> str | None:
    """What a person reading the conversation sees of a message, for the record."""
    if isinstance(content, Text):
        return content.body
    if isinstance(content, Media):
        return content.caption or content.filename or content.mime_type or None
    if isinstance(content, Location):
        return " · ".join(p for p in (content.name, content.address) if p) or None
    if isinstance(content, SharedContacts):
        return ", ".join(content.names) or None
    if isinstance(content, Reaction):
        return content.emoji or None
    if isinstance(content, Reply):
        return content.title or content.reply_id or None
    if isinstance(content, SystemChange):
        return content.body or None
    return None


def _reply_to(message: Message) -> str:
    if isinstance(message.content, Reaction):
        return message.content.message_wamid
    return message.context_wamid


def error_text(error: MetaError | None) -> str | None:
    if error is None:
        return None
    return (error.title or error.message or error.details)[:ERROR_MAX] or None
