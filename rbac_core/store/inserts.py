"""Insert-or-ignore: the one way a "first one wins" row is written.

Looking first and inserting after lets two replicas both see nothing and both
insert; one of them then fails on the key, late and as an error. A single
`INSERT … ON CONFLICT DO NOTHING` (both SQLite and PostgreSQL speak it) lets
the database decide, and the row count says who won.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import CursorResult, Table
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session


def insert_new(
    session: Session, table: Table, values: Mapping[str, Any], keys: Sequence[str]
) -> bool:
    """Insert `values` unless a row with the same `keys` exists; True if this call inserted it."""
    dialect = session.get_bind().dialect.name
    insert = sqlite_insert if dialect == "sqlite" else pg_insert
    statement = insert(table).values(**values).on_conflict_do_nothing(index_elements=list(keys))
    # SQLAlchemy keeps an INSERT's row count only when asked to.
    result = session.execute(statement, execution_options={"preserve_rowcount": True})
    assert isinstance(result, CursorResult)
    return result.rowcount == 1
