"""What Meta's events do to the records, each exactly once, in the transaction given.

Every event is written with a unique key and insert-or-ignore (SPEC §6): a
message by its wamid, a status by wamid and status, a template update by id,
field, event and time, a notice by the digest of what it says. So however
often Meta retries, and however it batches, an event changes the records once;
a duplicate is counted and changes nothing. A status moves its message only
forward (`status_rank`), so statuses arriving in any order end in the right
state. Events for a phone-number id the workspace has not registered are
recorded in `wa_unknown_numbers`, reported once to the alert channel, and not
processed. What people must hear (alerts, template reviews, a send that
failed) comes back as outbox notices, written with the records.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, select, update
from sqlalchemy.orm import Session

from ..outbox import ALERT_CHANNEL, AUDIT_CHANNEL, Notice, person
from ..store.inserts import insert_new
from ..store.models import (
    ConversationMessage,
    InboundEvent,
    MessageStatus,
    Number,
    OutboxMessage,
    TemplateEvent,
    UnknownNumber,
)
from . import inbound, outgoing, people
from .events import (
    AccountNotice,
    ChangeErrors,
    Event,
    Malformed,
    Message,
    MetaError,
    NumberEvent,
    NumberQualityUpdate,
    Status,
    SystemChange,
    TemplateUpdate,
)
from .meta_codes import Handling, handling_of

KIND_MAX, ERROR_MAX, REASON_MAX = 32, 500, 500
_MESSAGES = cast(Table, ConversationMessage.__table__)
_STATUSES = cast(Table, MessageStatus.__table__)
_TEMPLATES = cast(Table, TemplateEvent.__table__)
_UNKNOWN = cast(Table, UnknownNumber.__table__)
_SEEN = cast(Table, InboundEvent.__table__)
_OUTBOX = cast(Table, OutboxMessage.__table__)

SEND = "whatsapp.send"
"""The outbox kind of a message to a customer (actions/sending.py)."""


@dataclass
class Intake:
    """One body's events applied in one transaction: counts for the audit, and notices."""

    session: Session
    now: datetime
    counts: Counter[str] = field(default_factory=Counter)
    notices: list[Notice] = field(default_factory=list)
    conversations: set[int] = field(default_factory=set)
    error_codes: set[int] = field(default_factory=set)
    _numbers: dict[str, str | None] = field(default_factory=dict)
    _unknown: Counter[str] = field(default_factory=Counter)
    _displays: dict[str, str] = field(default_factory=dict)

    def apply(self, events: Iterable[Event]) -> None:
        """Customers' messages first, in runs written as sets (inbound.py), an identity
        change ending a run so the messages before it are written before it moves
        anyone; then everything else, in order. (Statuses only touch messages we sent,
        and a message we sent is never one of these.)"""
        run: list[tuple[Message, str]] = []
        rest: list[Event] = []
        for event in events:
            if isinstance(event, NumberEvent) and self._number(event) is None:
                continue
            if not isinstance(event, Message):
                rest.append(event)
            elif isinstance(event.content, SystemChange):
                self._write(run)
                run = []
                self._identity_change(event)
            else:
                run.append((event, self._numbers[event.phone_number_id] or ""))
        self._write(run)
        for event in rest:
            self._one(event)
        self._record_unknown_numbers()

    def _write(self, run: list[tuple[Message, str]]) -> None:
        if not run:
            return
        written = inbound.write_messages(self.session, self.now, run)
        self.counts["messages"] += written.messages
        self.counts["duplicates"] += written.duplicates
        self.counts["malformed"] += written.malformed
        self.conversations.update(written.conversations)

    def _one(self, event: Event) -> None:
        if isinstance(event, Status):
            self._status(event)
        elif isinstance(event, TemplateUpdate):
            self._template(event)
        elif isinstance(event, NumberQualityUpdate | AccountNotice):
            self._notice(event)
        elif isinstance(event, ChangeErrors):
            self.counts["errors"] += 1
            self.error_codes.update(e.code for e in event.errors if e.code is not None)
        elif isinstance(event, Malformed):
            self.counts["malformed"] += 1
        else:
            self.counts["ignored"] += 1  # a kind this version does not handle: kept in the body

    # -- numbers ----------------------------------------------------------------------

    def _number(self, event: NumberEvent) -> str | None:
        """The registered number (E.164) the event came through, or None (then recorded)."""
        pid = event.phone_number_id
        if pid not in self._numbers:
            self._numbers[pid] = self.session.execute(
                select(Number.e164).where(Number.phone_number_id == pid)
            ).scalar_one_or_none()
        number = self._numbers[pid]
        if number is None:
            if len(pid) > 64 or not pid:
                self.counts["malformed"] += 1
            else:
                self._unknown[pid] += 1
                self._displays.setdefault(pid, event.display_phone_number[:32])
                self.counts["unknown_number"] += 1
        return number

    def _record_unknown_numbers(self) -> None:
        for pid, n in sorted(self._unknown.items()):
            row = {
                "phone_number_id": pid,
                "display_number": self._displays.get(pid) or None,
                "first_seen_at": self.now,
                "last_seen_at": self.now,
                "events": 0,
            }
            if insert_new(self.session, _UNKNOWN, row, ("phone_number_id",)):
                data = {"phone_number_id": pid, "display_number": row["display_number"]}
                self.notices.append(Notice("whatsapp.unknown_number", ALERT_CHANNEL, data))
            self.session.execute(
                update(_UNKNOWN)
                .where(_UNKNOWN.c.phone_number_id == pid)
                .values(events=_UNKNOWN.c.events + n, last_seen_at=self.now)
            )

    # -- identity changes ------------------------------------------------------------------

    def _identity_change(self, event: Message) -> None:
        """`user_changed_number` / `user_changed_user_id`: kept as a message of the
        conversation, and the customer's row follows; not the customer writing, so the
        window stays as it was."""
        assert isinstance(event.content, SystemChange)
        number = self._numbers[event.phone_number_id]
        customer = people.customer_for(self.session, event.sender, self.now)
        if number is None or customer is None:
            self.counts["malformed"] += 1
            return
        conversation = people.conversation_for(self.session, number, customer, self.now)
        row = inbound.row_of(event, conversation, self.now)
        if not insert_new(self.session, _MESSAGES, row, ("wamid",)):
            self.counts["duplicates"] += 1
            return
        self.counts["messages"] += 1
        self.conversations.add(conversation)
        change = event.content
        if people.move_identity(
            self.session, customer, wa_id=change.new_wa_id, user_id=change.new_user_id
        ):
            self.counts["identity_changes"] += 1

    # -- statuses --------------------------------------------------------------------------

    def _status(self, event: Status) -> None:
        rank = event.rank()
        if rank == 0:
            self.counts["ignored"] += 1  # a status this version does not know
            return
        error = event.errors[0] if event.errors else None
        row = {
            "wamid": event.wamid,
            "status": event.status,
            "at": inbound.moment(event.timestamp, self.now),
            "recorded_at": self.now,
            "number": self._numbers[event.phone_number_id],
            "callback": event.callback[:512] or None,
            "error_code": error.code if error else None,
            "error_text": inbound.error_text(error),
            "billable": event.billable,
            "pricing_category": event.pricing_category[:48] or None,
        }
        if not insert_new(self.session, _STATUSES, row, ("wamid", "status")):
            self.counts["duplicates"] += 1
            return
        self.counts["statuses"] += 1
        if error is not None and error.code is not None:
            self.error_codes.add(error.code)
        self._advance(event, rank, error)

    def _advance(self, event: Status, rank: int, error: MetaError | None) -> None:
        """Move our message forward to this status (never back; failed is final), found
        by its wamid or, before the sender recorded that, by the outbox row it was sent
        from (its id is the callback data the send carried); it is named then, unless
        another row holds that wamid already."""
        m = _MESSAGES.c
        found = self._message_of(event)
        if found is None:
            return
        message_id, named = found
        moved = self.session.execute(
            update(_MESSAGES)
            .where(m.id == message_id, m.direction == "out", m.status_rank < rank)
            .values(
                wamid=m.wamid if named else event.wamid,
                status=event.status,
                status_rank=rank,
                error_code=error.code if error else m.error_code,
                error_text=inbound.error_text(error) if error else m.error_text,
            )
            .returning(m.conversation_id, m.sender)
        ).first()
        if moved is None:
            return
        conversation, sender = moved
        self.conversations.add(int(conversation))
        if event.status == "failed":
            self._failed(event, int(conversation), sender, error)

    def _message_of(self, event: Status) -> tuple[int, bool] | None:
        """(the outbound message a status is about, whether it keeps its own name): the
        message of that wamid, or the one sent from the outbox row in the callback data,
        which takes the wamid unless it has one or the wamid is another message's."""
        m = _MESSAGES.c
        holder = self.session.execute(
            select(m.id, m.direction).where(m.wamid == event.wamid)
        ).first()
        if holder is not None and holder[1] == "out":
            return int(holder[0]), True
        message_id = self._sent_from(event.callback)
        if message_id is None:
            return None
        # Named already, by another send of it (a retry after Meta's answer was lost):
        # it keeps that name, and this status, about the same message, moves it too.
        named = self.session.execute(select(m.wamid).where(m.id == message_id)).scalar()
        return message_id, named is not None or holder is not None

    def _failed(
        self, event: Status, conversation: int, sender: object, error: MetaError | None
    ) -> None:
        """Tell whoever sent it; and a code that means the number is restricted pauses it,
        as the same code in a send's answer does (it often comes this way, later)."""
        if sender:
            data = {
                "conversation": conversation,
                "code": error.code if error else None,
                "title": error.title if error else "",
                "detail": (error.details or error.message)[:ERROR_MAX] if error else "",
            }
            self.notices.append(Notice("whatsapp.send_failed", person(str(sender)), data))
        found = handling_of(error.code if error else None)
        number = self._numbers.get(event.phone_number_id)
        if found is not None and found[0] is Handling.PAUSE_NUMBER and number is not None:
            reason = f"{error.code if error else ''}: {found[1]}"
            self.notices.extend(outgoing.paused(number, reason, self.now)(self.session))

    def _sent_from(self, callback: str) -> int | None:
        """The message an outbox row of a WhatsApp send was for, from the callback data."""
        outbox_id = _outbox_id(callback)
        if outbox_id is None:
            return None
        data = self.session.execute(
            select(_OUTBOX.c.data).where(_OUTBOX.c.id == outbox_id, _OUTBOX.c.kind == SEND)
        ).scalar_one_or_none()
        try:
            message = json.loads(data)["message"] if data else None
        except (ValueError, TypeError, KeyError):
            return None
        return message if type(message) is int else None

    # -- templates and notices --------------------------------------------------------------

    def _template(self, event: TemplateUpdate) -> None:
        if not event.template_id or len(event.template_id) > 64 or len(event.event) > 64:
            self.counts["malformed"] += 1
            return
        row = {
            "waba_id": event.waba_id[:64],
            "template_id": event.template_id,
            "field": event.change[:64],
            "event": event.event,
            "time": event.time,
            "name": event.name[:512],
            "language": event.language[:32],
            "previous": event.previous[:64] or None,
            "reason": event.reason[:REASON_MAX] or None,
            "received_at": self.now,
        }
        if not insert_new(self.session, _TEMPLATES, row, ("template_id", "field", "event", "time")):
            self.counts["duplicates"] += 1
            return
        self.counts["templates"] += 1
        data = {k: row[k] for k in ("field", "name", "language", "event", "previous", "reason")}
        self.notices.append(Notice("whatsapp.template", AUDIT_CHANNEL, data))

    def _notice(self, event: NumberQualityUpdate | AccountNotice) -> None:
        """Number quality and account notices go to the alert channel, each once."""
        said = json.dumps([event.change, event.waba_id, event.raw], sort_keys=True, default=str)
        row = {
            "source": "wa-notice",
            "delivery_id": hashlib.sha256(said.encode("utf-8", "replace")).hexdigest(),
            "received_at": self.now,
        }
        if not insert_new(self.session, _SEEN, row, ("source", "delivery_id")):
            self.counts["duplicates"] += 1
            return
        self.counts["notices"] += 1
        data: dict[str, Any]
        if isinstance(event, NumberQualityUpdate):
            data = {
                "display_number": event.display_phone_number[:32],
                "event": event.event[:64],
                "limit": event.limit[:64],
            }
            self.notices.append(Notice("whatsapp.number_quality", ALERT_CHANNEL, data))
            return
        data = {
            "change": event.change[:64],
            "event": event.event[:64],
            "severity": event.severity[:32],
            "description": event.description[:ERROR_MAX],
        }
        self.notices.append(Notice("whatsapp.account", ALERT_CHANNEL, data))


def _outbox_id(callback: str) -> int | None:
    """The outbox id a send carried in `biz_opaque_callback_data`, if that is what it is."""
    text = callback.strip()
    if text.isascii() and text.isdigit() and len(text) <= 18:
        return int(text)
    return None
