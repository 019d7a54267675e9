"""Bookkeeping around the gate: inbound events taken once, webhook bodies waiting to be
processed, scheduled periods, the outbox."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from .base import Base, UTCDateTime


class InboundEvent(Base):
    """A webhook or event delivery already taken in, so a retry of it is not processed again.

    Slack retries Events API deliveries and Meta retries webhooks (SPEC §4 rule 10);
    the (source, id) key makes "first one wins" hold across replicas too.
    """

    __tablename__ = "inbound_events"

    source: Mapped[str] = mapped_column(String(16), primary_key=True)
    delivery_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)


class InboundWebhook(Base):
    """A webhook body whose signature held, stored before it is answered.

    Meta wants a fast 200 and retries for days otherwise, so the request only
    stores the verified bytes; a worker processes them later, under a lease,
    fanning out every event. The (source, digest) key keeps a retried body once.
    """

    __tablename__ = "inbound_webhooks"
    __table_args__ = (
        UniqueConstraint("source", "digest", name="uq_inbound_webhooks_source_digest"),
        Index("ix_inbound_webhooks_status_next_try_at", "status", "next_try_at"),
    )

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    source: Mapped[str] = mapped_column(String(16))
    digest: Mapped[str] = mapped_column(String(64))
    """SHA-256 of the body, hex."""
    body: Mapped[str] = mapped_column(Text)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime)
    status: Mapped[str] = mapped_column(String(16))  # queued, running, done, given_up
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    owner: Mapped[str | None] = mapped_column(String(128))
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    next_try_at: Mapped[datetime] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_error: Mapped[str | None] = mapped_column(String(1000))


class JobRun(Base):
    """One period of one scheduled job, claimed by the scheduler that runs it.

    The primary key is the exactly-once guarantee: of N schedulers inserting
    the same (job, period), one succeeds. A claim is a lease; a run that dies
    stops renewing it, and once it lapses another scheduler may take over.
    """

    __tablename__ = "job_runs"
    __table_args__ = (Index("ix_job_runs_job_status", "job", "status"),)

    job: Mapped[str] = mapped_column(String(64), primary_key=True)
    period: Mapped[str] = mapped_column(String(32), primary_key=True)
    owner: Mapped[str] = mapped_column(String(128))
    attempt: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16))  # running, done, failed, given_up
    claimed_at: Mapped[datetime] = mapped_column(UTCDateTime)
    lease_until: Mapped[datetime] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    summary: Mapped[str | None] = mapped_column(String(1000))


LIVE_OUTBOX_ROWS = "status IN ('queued', 'running')"
"""Written as a literal: SQLite uses a partial index only for a query that repeats its
condition term for term, values included (a bound parameter does not count)."""


class OutboxMessage(Base):
    """Something an action tells someone outside the database, waiting to be delivered.

    Written in the transaction of the gate call that decided it, so it exists
    exactly when the action happened; delivered at least once by a worker
    holding it under a lease (leases.py). `queued` rows are due at `next_try_at`.
    """

    __tablename__ = "outbox"
    __table_args__ = (
        Index("ix_outbox_status_next_try_at", "status", "next_try_at"),
        # Rows still to deliver, in id order, without walking the delivered ones
        # (which are kept): a claim reads the oldest live rows page by page.
        Index(
            "ix_outbox_live",
            "id",
            sqlite_where=text(LIVE_OUTBOX_ROWS),
            postgresql_where=text(LIVE_OUTBOX_ROWS),
        ),
    )

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    kind: Mapped[str] = mapped_column(String(64))
    to: Mapped[str] = mapped_column(String(160))
    data: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16))  # queued, running, done, given_up
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    owner: Mapped[str | None] = mapped_column(String(128))
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    next_try_at: Mapped[datetime] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_error: Mapped[str | None] = mapped_column(String(1000))


class OutboxPace(Base):
    """The earliest moment the next message may go to one destination (a channel, a DM).

    Shared by every worker, so Slack's one-post-a-second-per-channel holds
    however many workers deliver.
    """

    __tablename__ = "outbox_pace"

    to: Mapped[str] = mapped_column(String(160), primary_key=True)
    next_at: Mapped[datetime] = mapped_column(UTCDateTime)


class SendSlot(Base):
    """The next free sending slot of one business number, shared by every sender.

    Each send takes the slot (one conditional UPDATE) and moves it `1 / rate` on, so
    however many senders in however many processes send from a number, they keep
    to its one rate together (`WA_SEND_RATE`, or the number's own).
    """

    __tablename__ = "send_slots"

    number: Mapped[str] = mapped_column(String(16), primary_key=True)
    next_us: Mapped[int] = mapped_column(BigInteger)
    """Microseconds since the epoch: slot arithmetic needs no date functions."""
