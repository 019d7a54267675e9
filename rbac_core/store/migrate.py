"""Applying migrations and keeping the built-in roles in step with the code."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import select, text
from sqlalchemy.orm import Session

from ..clock import utcnow
from ..policy.builtin_roles import BUILTIN_ROLES
from ..policy.versions import bump_policy_version
from .db import Database
from .models import Role, RoleParent, RolePermission
from .transaction import txn_of

MIGRATIONS = Path(__file__).with_name("migrations")
MIGRATION_LOCK = 0x7761_6163  # "waac": an arbitrary, fixed advisory-lock key


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def current_revision(db: Database) -> str | None:
    with db.connect_read() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def is_up_to_date(db: Database) -> bool:
    return current_revision(db) == head_revision()


def upgrade(db: Database, revision: str = "head") -> None:
    """Bring the schema to `revision`, then make the built-in roles match the code."""
    config = alembic_config()
    with db.engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            # Replicas started together must not migrate at once; SQLite's
            # BEGIN IMMEDIATE already serialises them.
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
        config.attributes["connection"] = conn
        command.upgrade(config, revision)
    if revision == "head":
        with db.write() as session:
            sync_builtin_roles(session, utcnow())


def sync_builtin_roles(session: Session, now: datetime) -> bool:
    """Insert or correct built-in roles; returns True if anything changed."""
    changed = False
    existing = {
        r.name: r for r in session.scalars(select(Role).where(Role.name.in_(BUILTIN_ROLES)))
    }
    for name, definition in BUILTIN_ROLES.items():
        role = existing.get(name)
        if role is None:
            role = Role(name=name, created_at=now, created_by="system", builtin=True)
            session.add(role)
            changed = True
        wanted_perms = sorted(definition.permissions)
        wanted_parents = sorted(definition.parents)
        if (
            not role.builtin
            or role.description != definition.description
            or role.requires_2fa != definition.requires_2fa
            or [p.permission for p in role.permissions] != wanted_perms
            or [p.parent for p in role.parents] != wanted_parents
        ):
            role.builtin = True
            role.description = definition.description
            role.requires_2fa = definition.requires_2fa
            role.permissions = [RolePermission(role=name, permission=p) for p in wanted_perms]
            role.parents = [RoleParent(role=name, parent=p) for p in wanted_parents]
            changed = True
    if changed:
        session.flush()
        bump_policy_version(txn_of(session), None)  # roles changed: everyone reloads
    return changed
