"""People, WhatsApp business numbers, second factors, and when people were last active."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    ForeignKey,
    Integer,
    String,
    Text,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from .base import Base, UTCDateTime


class User(Base):
    """A person wa-access knows, by Slack user id."""

    __tablename__ = "users"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str | None] = mapped_column(String(200))
    active: Mapped[bool] = mapped_column(Boolean, default=True, server_default=text("true"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    deactivated_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class Number(Base):
    """A WhatsApp number of the workspace: E.164, its Graph phone-number id, and how
    it sends: its rate (None: `WA_SEND_RATE`), its inbox channel (None:
    `WA_INBOX_CHANNEL`), and whether sending is paused (Meta restricted it)."""

    __tablename__ = "numbers"

    e164: Mapped[str] = mapped_column(String(16), primary_key=True)
    phone_number_id: Mapped[str | None] = mapped_column(String(32), unique=True)
    label: Mapped[str | None] = mapped_column(String(200))
    send_rate: Mapped[int | None] = mapped_column(Integer)
    inbox_channel: Mapped[str | None] = mapped_column(String(32))
    paused_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    paused_reason: Mapped[str | None] = mapped_column(String(500))


class SecondFactor(Base):
    """A user's TOTP enrolment. The seed is stored encrypted (see `secret_box`)."""

    __tablename__ = "second_factors"

    user_id: Mapped[str] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    secret_enc: Mapped[str] = mapped_column(Text)
    active: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    activated_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # The last accepted 30-second step: a code is accepted once (no replay).
    last_step: Mapped[int | None] = mapped_column(BigInteger)
    failures: Mapped[int] = mapped_column(Integer, default=0)
    locked_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    verified_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class UserActivity(Base):
    """When each person last did something they were allowed to, rolled up from the audit log.

    The audit log is the record of activity (every authorised action is an entry);
    this table folds it incrementally (`activity_rollup.through_seq`), so a review
    reads one row per person instead of scanning a million entries.
    """

    __tablename__ = "user_activity"

    user_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    last_active_us: Mapped[int] = mapped_column(BigInteger)


class ActivityRollup(Base):
    """The single row saying how far into the audit log `user_activity` has been folded."""

    __tablename__ = "activity_rollup"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    through_seq: Mapped[int] = mapped_column(BigInteger)
