"""The policy-version row: read on every request, bumped on every policy change.

Each bump also records whose grants the new version changed (`policy_changes`),
so a process whose snapshot is a few versions behind reloads those people's
grants instead of every grant: with 100,000 grants a whole reload took most of
a second, and every process paid it on its first request after each change.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import cast

from sqlalchemy import Table, bindparam, delete, insert, select, update

from ..store import Sql, Txn
from ..store.models import PolicyChange, PolicyState

CHANGES_KEPT = 1000
"""Versions whose change sets are kept; a snapshot further behind reloads whole."""

_STATE = cast(Table, PolicyState.__table__)
_CHANGES = cast(Table, PolicyChange.__table__)
_VERSION = Sql(select(_STATE.c.version).where(_STATE.c.id == 1))
_LOCK = Sql(select(_STATE.c.version).where(_STATE.c.id == 1).with_for_update())
_BUMP = Sql(update(_STATE).where(_STATE.c.id == 1).values(version=_STATE.c.version + 1))
_RECORD = Sql(insert(_CHANGES).values(version=bindparam("version"), users=bindparam("users")))
_PRUNE = Sql(delete(_CHANGES).where(_CHANGES.c.version <= bindparam("oldest_dropped")))
_SINCE = Sql(
    select(_CHANGES.c.version, _CHANGES.c.users)
    .where(_CHANGES.c.version > bindparam("after"), _CHANGES.c.version <= bindparam("upto"))
    .order_by(_CHANGES.c.version)
)


def read_policy_version(txn: Txn) -> int:
    row = txn.first(_VERSION)
    return int(row[0]) if row else 0


def lock_policy(txn: Txn) -> int:
    """Take the policy write lock for this transaction (row lock on PostgreSQL).

    On SQLite the whole write transaction already holds the database lock.
    """
    row = txn.first(_LOCK)
    return int(row[0]) if row else 0


def bump_policy_version(txn: Txn, users: Iterable[str] | None) -> int:
    """A new policy version; `users` are those whose grants or standing it changed.

    None means the change may touch anyone (a role's permissions, a sweep over
    many grants): every process then reloads the whole policy.
    """
    txn.run(_BUMP)
    version = read_policy_version(txn)
    listed = None if users is None else json.dumps(sorted(set(users)))
    txn.run(_RECORD, {"version": version, "users": listed})
    txn.run(_PRUNE, {"oldest_dropped": version - CHANGES_KEPT})
    txn.note_policy_change()
    return version


def changed_users(txn: Txn, after: int, upto: int, limit: int) -> frozenset[str] | None:
    """Whose grants versions `after`+1 .. `upto` changed; None if not known or over `limit`.

    Not known when any of those versions changed roles (or anything else it
    could not name), or when its record is gone (pruned, or older than the
    table): the caller must then reload everything, as it should when more
    than `limit` people changed.
    """
    if upto <= after:
        return frozenset()
    if upto - after > CHANGES_KEPT:
        return None
    rows = txn.rows(_SINCE, {"after": after, "upto": upto})
    if len(rows) != upto - after:
        return None
    users: set[str] = set()
    for _, listed in rows:
        if listed is None:
            return None
        users.update(json.loads(listed))
        if len(users) > limit:
            return None
    return frozenset(users)
