"""The database schema, as SQLAlchemy 2.x typed ORM classes.

Alembic migrations under `migrations/` create these tables; nothing in a
production path calls `create_all`.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[datetime]):
    """Stores naive UTC, returns aware UTC: identical on SQLite and PostgreSQL.

    The audit chain hashes timestamps, so a value must read back exactly as it
    was written whatever the database or its session time zone.
    """

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class User(Base):
    """A person wa-access knows, by Slack user id."""

    __tablename__ = "users"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str | None] = mapped_column(String(200))
    active: Mapped[bool] = mapped_column(Boolean, default=True, server_default=text("true"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    deactivated_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class Role(Base):
    __tablename__ = "roles"

    name: Mapped[str] = mapped_column(String(40), primary_key=True)
    description: Mapped[str] = mapped_column(String(500), default="")
    builtin: Mapped[bool] = mapped_column(Boolean, default=False)
    requires_2fa: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    created_by: Mapped[str | None] = mapped_column(String(32))

    permissions: Mapped[list[RolePermission]] = relationship(
        cascade="all, delete-orphan", lazy="selectin", order_by="RolePermission.permission"
    )
    parents: Mapped[list[RoleParent]] = relationship(
        cascade="all, delete-orphan",
        lazy="selectin",
        foreign_keys="RoleParent.role",
        order_by="RoleParent.parent",
    )


class RolePermission(Base):
    __tablename__ = "role_permissions"

    role: Mapped[str] = mapped_column(
        ForeignKey("roles.name", ondelete="CASCADE"), primary_key=True
    )
    permission: Mapped[str] = mapped_column(String(64), primary_key=True)


class RoleParent(Base):
    __tablename__ = "role_parents"

    role: Mapped[str] = mapped_column(
        ForeignKey("roles.name", ondelete="CASCADE"), primary_key=True
    )
    parent: Mapped[str] = mapped_column(
        ForeignKey("roles.name", ondelete="RESTRICT"), primary_key=True
    )


class Number(Base):
    """A WhatsApp number of the workspace: E.164 and its Graph phone-number id."""

    __tablename__ = "numbers"

    e164: Mapped[str] = mapped_column(String(16), primary_key=True)
    phone_number_id: Mapped[str | None] = mapped_column(String(32), unique=True)
    label: Mapped[str | None] = mapped_column(String(200))


class Grant(Base):
    __tablename__ = "grants"
    __table_args__ = (
        # One live grant per (user, role, scope); revoked rows stay as history.
        Index(
            "uq_grants_live",
            "user_id",
            "role",
            "scope",
            unique=True,
            sqlite_where=text("revoked_at IS NULL"),
            postgresql_where=text("revoked_at IS NULL"),
        ),
        Index("ix_grants_role", "role"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="RESTRICT"))
    # No foreign key: revoked grants are history and keep the name of a custom
    # role deleted since. Live grants block deletion in code (role.delete), under
    # the policy lock.
    role: Mapped[str] = mapped_column(String(40))
    scope: Mapped[str] = mapped_column(String(32))
    granted_by: Mapped[str] = mapped_column(String(32))
    reason: Mapped[str | None] = mapped_column(String(500))
    granted_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revoked_by: Mapped[str | None] = mapped_column(String(32))
    revoke_reason: Mapped[str | None] = mapped_column(String(500))


class PendingAction(Base):
    """An action waiting for its actor's confirmation: single use, expiring."""

    __tablename__ = "pending_actions"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    actor: Mapped[str] = mapped_column(String(32), index=True)
    surface: Mapped[str] = mapped_column(String(16))
    action: Mapped[str] = mapped_column(String(64))
    params: Mapped[str] = mapped_column(Text)
    summary: Mapped[str] = mapped_column(String(1000))
    status: Mapped[str] = mapped_column(String(16), default="pending")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    resolved_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class AuditEntry(Base):
    """One link of the hash chain. Rows are only ever inserted."""

    __tablename__ = "audit_log"
    __table_args__ = (Index("ix_audit_log_actor_seq", "actor", "seq"),)

    # INTEGER on SQLite makes seq the rowid, so the chain is stored in seq order.
    seq: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=False
    )
    # Microseconds since the epoch, UTC: an integer hashes the same on every database.
    ts_us: Mapped[int] = mapped_column(BigInteger)
    actor: Mapped[str] = mapped_column(String(64))
    surface: Mapped[str] = mapped_column(String(16))
    action: Mapped[str] = mapped_column(String(64))
    target: Mapped[str] = mapped_column(String(200))
    decision: Mapped[str] = mapped_column(String(8))
    outcome: Mapped[str] = mapped_column(String(32))
    details: Mapped[str] = mapped_column(Text)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))


class AuditHead(Base):
    """The chain's last link, kept outside the log so truncation is detectable."""

    __tablename__ = "audit_head"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger)
    hash: Mapped[str] = mapped_column(String(64))
    keyed: Mapped[bool] = mapped_column(Boolean, default=False, server_default=text("false"))


class PolicyState(Base):
    """A counter bumped by every change of roles or grants.

    Each process caches compiled policy; reading this one row per request tells
    it whether another process changed something. Locking it also serialises
    policy writes, which is what makes last-admin protection race-free.
    """

    __tablename__ = "policy_state"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    version: Mapped[int] = mapped_column(BigInteger)


class PolicyChange(Base):
    """Whose grants one policy version changed, so other processes reload just theirs.

    `users` is a JSON list of user ids, or NULL when the change may touch anyone
    (roles created, edited or deleted, migrations): a process that meets a NULL,
    or a version whose row was pruned, reloads the whole policy.
    """

    __tablename__ = "policy_changes"

    version: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    users: Mapped[str | None] = mapped_column(Text)


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


class AccessRequest(Base):
    """Someone asking for a time-bound role, waiting for an approver (24 hours)."""

    __tablename__ = "access_requests"
    __table_args__ = (Index("ix_access_requests_status_expires", "status", "expires_at"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    requester: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    role: Mapped[str] = mapped_column(String(40))
    scope: Mapped[str] = mapped_column(String(32))
    duration: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(String(500))
    status: Mapped[str] = mapped_column(String(16), default="pending")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    decided_by: Mapped[str | None] = mapped_column(String(32))
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    decision_note: Mapped[str | None] = mapped_column(String(500))
    grant_id: Mapped[int | None] = mapped_column(Integer)


class Delivery(Base):
    """A webhook or event delivery already taken in, so a retry of it is not processed again.

    Slack retries Events API deliveries and Meta retries webhooks (SPEC §4 rule 10);
    the (source, id) key makes "first one wins" hold across replicas too.
    """

    __tablename__ = "deliveries"

    source: Mapped[str] = mapped_column(String(16), primary_key=True)
    delivery_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)


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


class AccessReview(Base):
    """One run of the access review: scheduled (one per period) or asked for on demand."""

    __tablename__ = "access_reviews"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    period: Mapped[str | None] = mapped_column(String(32), unique=True)
    requested_by: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    days: Mapped[int] = mapped_column(Integer)
    through_seq: Mapped[int | None] = mapped_column(BigInteger)
    status: Mapped[str] = mapped_column(String(16))  # building, ready, posting, posted
    totals: Mapped[str | None] = mapped_column(Text)
    channel: Mapped[str | None] = mapped_column(String(32))
    message_ts: Mapped[str | None] = mapped_column(String(32))


class ReviewFinding(Base):
    """One grant the review asks someone to look at, and what they decided."""

    __tablename__ = "review_findings"
    __table_args__ = (
        Index("ix_review_findings_review_position", "review_id", "position", unique=True),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    review_id: Mapped[int] = mapped_column(ForeignKey("access_reviews.id", ondelete="CASCADE"))
    position: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(16))  # deactivated, no_2fa, inactive, expiring
    user_id: Mapped[str] = mapped_column(String(32))
    grant_id: Mapped[int] = mapped_column(Integer)
    role: Mapped[str] = mapped_column(String(40))
    scope: Mapped[str] = mapped_column(String(32))
    granted_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_active_us: Mapped[int | None] = mapped_column(BigInteger)
    status: Mapped[str] = mapped_column(String(16))  # open, revoked, kept
    handled_by: Mapped[str | None] = mapped_column(String(32))
    handled_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class ReviewKeep(Base):
    """A "Keep 30 days": the grant gets no finding of this kind until `until`."""

    __tablename__ = "review_keeps"

    grant_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(16), primary_key=True, server_default="inactive")
    until: Mapped[datetime] = mapped_column(UTCDateTime)
    kept_by: Mapped[str] = mapped_column(String(32))
    kept_at: Mapped[datetime] = mapped_column(UTCDateTime)


class OutboxMessage(Base):
    """Something an action tells someone outside the database, waiting to be delivered.

    Written in the transaction of the gate call that decided it, so it exists
    exactly when the action happened; delivered at least once by a worker
    holding it under a lease (leases.py). `queued` rows are due at `next_try_at`.
    """

    __tablename__ = "outbox"
    __table_args__ = (Index("ix_outbox_status_next_try_at", "status", "next_try_at"),)

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
