"""Roles, their permissions and parents, grants, and the policy version every change bumps."""

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
    text,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from .base import Base, UTCDateTime


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
