"""What a send's outcome writes: the wamid Meta gave it, a failure and whom to tell, a
number Meta restricted. Run by the sender inside the outbox's settling transaction
(`Outbox.done(…, also=…)`), fenced on its lease, so it is written once.

Statuses only move forward here too: a message Meta accepted becomes `sent`
unless a status webhook already took it further (a `delivered` can arrive
before the sender has written down the wamid: the intake finds the message
through the outbox row named in its callback data, and names it then).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import cast

from sqlalchemy import Table, select, update
from sqlalchemy.orm import Session

from ..outbox import ALERT_CHANNEL, Notice, person
from ..store.models import ConversationMessage, MessageStatus, Number
from .events import STATUS_ORDER

FAILED_RANK = 99
ERROR_MAX = 500

_MESSAGES = cast(Table, ConversationMessage.__table__)
_NUMBERS = cast(Table, Number.__table__)
_STATUSES = cast(Table, MessageStatus.__table__)

Settle = Callable[[Session], Sequence[Notice]]


def sent(message: int, wamid: str) -> Settle:
    """Meta accepted the message and named it `wamid`."""

    def write(session: Session) -> Sequence[Notice]:
        m = _MESSAGES.c
        session.execute(
            update(_MESSAGES).where(m.id == message, m.wamid.is_(None)).values(wamid=wamid)
        )
        # Statuses Meta sent before this moment without our callback data were kept
        # (wa_statuses) with nothing to move: the furthest of them applies now.
        status, rank = "sent", STATUS_ORDER["sent"]
        for reported in session.scalars(
            select(_STATUSES.c.status).where(_STATUSES.c.wamid == wamid)
        ):
            reported_rank = FAILED_RANK if reported == "failed" else STATUS_ORDER.get(reported, 0)
            if reported_rank > rank:
                status, rank = str(reported), reported_rank
        session.execute(
            update(_MESSAGES)
            .where(m.id == message, m.status_rank < rank)
            .values(status=status, status_rank=rank)
        )
        return ()

    return write


def failed(message: int, code: int | None, title: str, detail: str) -> Settle:
    """Meta refused the message for good: it is marked failed and its sender told why."""

    def write(session: Session) -> Sequence[Notice]:
        m = _MESSAGES.c
        moved = session.execute(
            update(_MESSAGES)
            .where(m.id == message, m.status_rank < FAILED_RANK)
            .values(
                status="failed",
                status_rank=FAILED_RANK,
                error_code=code,
                error_text=(title or detail)[:ERROR_MAX] or None,
            )
            .returning(m.conversation_id, m.sender)
        ).first()
        if moved is None or not moved[1]:
            return ()
        conversation, sender = moved
        data = {
            "conversation": int(conversation),
            "code": code,
            "title": title[:ERROR_MAX],
            "detail": detail[:ERROR_MAX],
        }
        return (Notice("whatsapp.send_failed", person(str(sender)), data),)

    return write


def paused(number: str, reason: str, now: datetime) -> Settle:
    """Meta restricted the number: it sends nothing more until an admin resumes it, and
    the alert channel hears it once."""

    def write(session: Session) -> Sequence[Notice]:
        n = _NUMBERS.c
        moved = session.execute(
            update(_NUMBERS)
            .where(n.e164 == number, n.paused_at.is_(None))
            .values(paused_at=now, paused_reason=reason[:ERROR_MAX])
        )
        if not moved.rowcount:  # type: ignore[attr-defined]
            return ()
        data = {"number": number, "reason": reason[:ERROR_MAX]}
        return (Notice("whatsapp.number_paused", ALERT_CHANNEL, data),)

    return write


def both(first: Settle, second: Settle) -> Settle:
    def write(session: Session) -> Sequence[Notice]:
        return (*first(session), *second(session))

    return write


def sending_state(session: Session) -> dict[str, tuple[int | None, bool]]:
    """Each sending number's own rate (None: the default) and whether it is paused."""
    rows = session.execute(
        select(_NUMBERS.c.e164, _NUMBERS.c.send_rate, _NUMBERS.c.paused_at).where(
            _NUMBERS.c.phone_number_id.is_not(None)
        )
    )
    return {str(e164): (rate, paused_at is not None) for e164, rate, paused_at in rows}
