"""The policy-version row: read on every request, bumped on every policy change."""

from __future__ import annotations

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from .models import PolicyState


def read_policy_version(session: Session) -> int:
    version = session.scalar(select(PolicyState.version).where(PolicyState.id == 1))
    return int(version or 0)


def lock_policy(session: Session) -> int:
    """Take the policy write lock for this transaction (row lock on PostgreSQL).

    On SQLite the whole write transaction already holds the database lock.
    """
    version = session.scalar(
        select(PolicyState.version).where(PolicyState.id == 1).with_for_update()
    )
    return int(version or 0)


def bump_policy_version(session: Session) -> None:
    session.execute(
        update(PolicyState).where(PolicyState.id == 1).values(version=PolicyState.version + 1)
    )
