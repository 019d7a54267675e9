"""The policy-version row: read on every request, bumped on every policy change."""

from __future__ import annotations

from typing import cast

from sqlalchemy import Table, select, update

from .db import Sql, Txn
from .models import PolicyState

_STATE = cast(Table, PolicyState.__table__)
_VERSION = Sql(select(_STATE.c.version).where(_STATE.c.id == 1))
_LOCK = Sql(select(_STATE.c.version).where(_STATE.c.id == 1).with_for_update())
_BUMP = Sql(update(_STATE).where(_STATE.c.id == 1).values(version=_STATE.c.version + 1))


def read_policy_version(txn: Txn) -> int:
    row = txn.first(_VERSION)
    return int(row[0]) if row else 0


def lock_policy(txn: Txn) -> int:
    """Take the policy write lock for this transaction (row lock on PostgreSQL).

    On SQLite the whole write transaction already holds the database lock.
    """
    row = txn.first(_LOCK)
    return int(row[0]) if row else 0


def bump_policy_version(txn: Txn) -> None:
    txn.run(_BUMP)
