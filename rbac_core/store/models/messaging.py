"""The WhatsApp half's records: customers, their conversations, messages both ways, what
Meta said became of them, template updates, and numbers Meta named that nobody registered.

Every table that takes Meta's events has a unique key for the event itself
(a message's wamid; a status's wamid and status; a template update's id, field,
event and time), so a retried or re-batched event is written with one
insert-or-ignore and processed once, whatever order and however often it comes.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from .base import Base, UTCDateTime

_ID = BigInteger().with_variant(Integer, "sqlite")


class Customer(Base):
    """Someone writing to one of the workspace's numbers.

    `key` is how Meta names them: `u:` + the business-scoped user id when a webhook
    carries one, else `w:` + the wa_id. A customer first seen by wa_id and later
    with a user id keeps their row (the key moves to the user id).
    """

    __tablename__ = "customers"

    id: Mapped[int] = mapped_column(_ID, primary_key=True)
    key: Mapped[str] = mapped_column(String(300), unique=True)
    user_id: Mapped[str | None] = mapped_column(String(256))
    wa_id: Mapped[str | None] = mapped_column(String(32), index=True)
    name: Mapped[str | None] = mapped_column(String(200))
    username: Mapped[str | None] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Conversation(Base):
    """One business number and one customer (`C-<id>`), with its 24-hour window.

    `last_customer_at` is the customer's latest message's own timestamp (never when
    it reached us), and only ever moves forward: a webhook Meta retries hours later
    cannot reopen a window that has closed.
    """

    __tablename__ = "conversations"
    __table_args__ = (
        UniqueConstraint("number", "customer_id", name="uq_conversations_pair"),
        Index("ix_conversations_customer_id", "customer_id"),
    )

    id: Mapped[int] = mapped_column(_ID, primary_key=True)
    number: Mapped[str] = mapped_column(String(16))
    """The business number (E.164), kept when the number is unregistered."""
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id", ondelete="CASCADE"))
    state: Mapped[str] = mapped_column(String(16))  # open, closed
    assignee: Mapped[str | None] = mapped_column(String(32))
    last_customer_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class ConversationMessage(Base):
    """A message of a conversation: from the customer (`in`) or sent by us (`out`).

    Inbound messages are keyed by their wamid; an outbound one gets its wamid when
    Meta accepts it (its outbox row, whose id travels as `biz_opaque_callback_data`,
    names it until then). `status_rank` orders an outbound message's statuses
    (sent < delivered < read < played; failed outranks all and is final).
    """

    __tablename__ = "wa_messages"
    __table_args__ = (Index("ix_wa_messages_conversation_id", "conversation_id", "id"),)

    id: Mapped[int] = mapped_column(_ID, primary_key=True)
    wamid: Mapped[str | None] = mapped_column(String(512), unique=True)
    conversation_id: Mapped[int] = mapped_column(ForeignKey("conversations.id", ondelete="CASCADE"))
    direction: Mapped[str] = mapped_column(String(3))  # in, out
    kind: Mapped[str] = mapped_column(String(32))
    text: Mapped[str | None] = mapped_column(Text)
    reply_to: Mapped[str | None] = mapped_column(String(512))
    sender: Mapped[str | None] = mapped_column(String(32))
    """Who sent an outbound message (a user id)."""
    sent_at: Mapped[datetime] = mapped_column(UTCDateTime)
    """Inbound: the customer's timestamp; outbound: when it was queued."""
    received_at: Mapped[datetime] = mapped_column(UTCDateTime)
    status: Mapped[str | None] = mapped_column(String(16))
    status_rank: Mapped[int] = mapped_column(Integer, default=0)
    error_code: Mapped[int | None] = mapped_column(Integer)
    error_text: Mapped[str | None] = mapped_column(String(500))


class MessageStatus(Base):
    """A status Meta reported for a message we sent, once per (wamid, status).

    Kept whether or not the message is known yet: a status can arrive before the
    sender has recorded the wamid Meta answered with, and is applied then.
    """

    __tablename__ = "wa_statuses"

    wamid: Mapped[str] = mapped_column(String(512), primary_key=True)
    status: Mapped[str] = mapped_column(String(16), primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime)
    number: Mapped[str] = mapped_column(String(16))
    callback: Mapped[str | None] = mapped_column(String(512))
    error_code: Mapped[int | None] = mapped_column(Integer)
    error_text: Mapped[str | None] = mapped_column(String(500))
    billable: Mapped[bool | None] = mapped_column(Boolean)
    pricing_category: Mapped[str | None] = mapped_column(String(48))


class TemplateEvent(Base):
    """A template's review, quality or category update, once per (id, field, event, time)."""

    __tablename__ = "wa_template_events"
    __table_args__ = (
        UniqueConstraint("template_id", "field", "event", "time", name="uq_wa_template_events"),
    )

    id: Mapped[int] = mapped_column(_ID, primary_key=True)
    waba_id: Mapped[str] = mapped_column(String(64))
    template_id: Mapped[str] = mapped_column(String(64))
    field: Mapped[str] = mapped_column(String(64))
    event: Mapped[str] = mapped_column(String(64))
    time: Mapped[int] = mapped_column(BigInteger)
    name: Mapped[str] = mapped_column(String(512))
    language: Mapped[str] = mapped_column(String(32))
    previous: Mapped[str | None] = mapped_column(String(64))
    reason: Mapped[str | None] = mapped_column(String(500))
    received_at: Mapped[datetime] = mapped_column(UTCDateTime)


class UnknownNumber(Base):
    """A phone-number id Meta sent events for that the workspace has not registered.

    Its events are not processed; the first sighting is reported to the alert channel.
    """

    __tablename__ = "wa_unknown_numbers"

    phone_number_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    display_number: Mapped[str | None] = mapped_column(String(32))
    first_seen_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime)
    events: Mapped[int] = mapped_column(Integer, default=0)
