"""Customers and their conversations: found or made with insert-or-ignore, never look-then-insert.

A customer is keyed the way Meta names them (SPEC §2): by the business-scoped
`user_id` when the webhook carries one, else by `wa_id`. A conversation is one
business number and one customer. Both are made by `INSERT … ON CONFLICT DO
NOTHING` and read back, so workers processing two bodies about the same new
customer at once end with one row, on SQLite and PostgreSQL alike. The 24-hour
window moves only forward, from the customer's own message timestamps.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import cast

from sqlalchemy import Table, bindparam, or_, select, update
from sqlalchemy.orm import Session

from ..store.inserts import insert_new
from ..store.models import Conversation, Customer
from .events import Contact

WINDOW = timedelta(hours=24)
"""Free-form messages are allowed this long after the customer's last message."""

USER_ID_MAX, WA_ID_MAX, NAME_MAX, USERNAME_MAX = 256, 32, 200, 100

_CUSTOMERS = cast(Table, Customer.__table__)
_CONVERSATIONS = cast(Table, Conversation.__table__)


def customer_key(contact: Contact) -> str | None:
    """How the customer is keyed, or None when the contact names nobody we could keep
    (no id at all, or ids longer than Meta's: never cut to a prefix another shares)."""
    user_id, wa_id = contact.user_id, contact.wa_id
    if len(user_id) > USER_ID_MAX or len(wa_id) > WA_ID_MAX:
        return None
    if user_id:
        return "u:" + user_id
    if wa_id:
        return "w:" + wa_id
    return None


def customer_for(session: Session, contact: Contact, now: datetime) -> int | None:
    """The customer's id, made on first sight; None if the contact names nobody."""
    key = customer_key(contact)
    if key is None:
        return None
    found = _by_key(session, key)
    if found is None and contact.user_id and contact.wa_id:
        # Seen before Meta sent user ids: that row now takes the user id as its key.
        found = _adopt(session, "w:" + contact.wa_id, key, contact.user_id)
    if found is None:
        row = {
            "key": key,
            "user_id": contact.user_id or None,
            "wa_id": contact.wa_id or None,
            "name": contact.name[:NAME_MAX] or None,
            "username": contact.username[:USERNAME_MAX] or None,
            "created_at": now,
        }
        insert_new(session, _CUSTOMERS, row, ("key",))
        found = _by_key(session, key)
        if found is None:  # pragma: no cover - the row exists once insert_new returned
            raise RuntimeError("a customer inserted or kept could not be read back")
        return found[0]
    refresh(session, found, contact)
    return found[0]


def _by_key(session: Session, key: str) -> tuple[int, str | None, str | None, str | None] | None:
    c = _CUSTOMERS.c
    row = session.execute(select(c.id, c.wa_id, c.name, c.username).where(c.key == key)).first()
    return None if row is None else (int(row[0]), row[1], row[2], row[3])


def _adopt(
    session: Session, old_key: str, key: str, user_id: str
) -> tuple[int, str | None, str | None, str | None] | None:
    c = _CUSTOMERS.c
    moved = session.execute(
        update(_CUSTOMERS).where(c.key == old_key).values(key=key, user_id=user_id)
    )
    return _by_key(session, key) if moved.rowcount else None  # type: ignore[attr-defined]


def refresh(
    session: Session, found: tuple[int, str | None, str | None, str | None], contact: Contact
) -> None:
    """Keep the name, username and wa_id Meta sends now; write only what changed."""
    customer_id, wa_id, name, username = found
    changes: dict[str, str] = {}
    if contact.wa_id and contact.wa_id != wa_id:
        changes["wa_id"] = contact.wa_id
    if contact.name and contact.name[:NAME_MAX] != name:
        changes["name"] = contact.name[:NAME_MAX]
    if contact.username and contact.username[:USERNAME_MAX] != username:
        changes["username"] = contact.username[:USERNAME_MAX]
    if changes:
        session.execute(update(_CUSTOMERS).where(_CUSTOMERS.c.id == customer_id).values(**changes))


def move_identity(
    session: Session, customer_id: int, *, wa_id: str = "", user_id: str = ""
) -> bool:
    """A customer changed number or user id (Meta's system messages): their row follows,
    unless the new identity is another customer's already (then both stay as they are)."""
    if len(wa_id) > WA_ID_MAX or len(user_id) > USER_ID_MAX or not (wa_id or user_id):
        return False
    c = _CUSTOMERS.c
    current = session.execute(select(c.key).where(c.id == customer_id)).scalar_one_or_none()
    if current is None:
        return False
    values: dict[str, str] = {}
    if user_id:
        values.update(user_id=user_id, key="u:" + user_id)
    if wa_id:
        values["wa_id"] = wa_id
        if current.startswith("w:") and not user_id:
            values["key"] = "w:" + wa_id
    new_key = values.get("key")
    if new_key and new_key != current and _by_key(session, new_key) is not None:
        return False
    session.execute(update(_CUSTOMERS).where(c.id == customer_id).values(**values))
    return True


def conversation_for(session: Session, number: str, customer_id: int, now: datetime) -> int:
    """The conversation of `number` with the customer, made on first sight (state open)."""
    row = {"number": number, "customer_id": customer_id, "state": "open", "created_at": now}
    c = _CONVERSATIONS.c
    query = select(c.id).where(c.number == number, c.customer_id == customer_id)
    found = session.execute(query).scalar_one_or_none()
    if found is None:
        insert_new(session, _CONVERSATIONS, row, ("number", "customer_id"))
        found = session.execute(query).scalar_one()
    return int(found)


def renew_window(session: Session, conversation: int, at: datetime) -> bool:
    """The customer wrote at `at`: the window runs from there, never back (a retried or
    late webhook with an older timestamp leaves it alone); the conversation opens."""
    c = _CONVERSATIONS.c
    moved = session.execute(
        update(_CONVERSATIONS)
        .where(c.id == conversation, or_(c.last_customer_at.is_(None), c.last_customer_at < at))
        .values(last_customer_at=at, state="open")
    )
    return bool(moved.rowcount)  # type: ignore[attr-defined]


def renew_windows(session: Session, latest: Sequence[tuple[int, datetime]]) -> None:
    """`renew_window` for many conversations: one statement, run for each."""
    if not latest:
        return
    c = _CONVERSATIONS.c
    statement = (
        update(_CONVERSATIONS)
        .where(
            c.id == bindparam("conversation"),
            or_(c.last_customer_at.is_(None), c.last_customer_at < bindparam("at")),
        )
        .values(last_customer_at=bindparam("at"), state="open")
    )
    session.connection().execute(statement, [{"conversation": k, "at": at} for k, at in latest])


def window_open(last_customer_at: datetime | None, now: datetime) -> bool:
    """Whether free-form messages may go to the customer now."""
    return last_customer_at is not None and now < last_customer_at + WINDOW
