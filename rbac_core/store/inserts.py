"""Insert-or-ignore: the one way a "first one wins" row is written.

Looking first and inserting after lets two replicas both see nothing and both
insert; one of them then fails on the key, late and as an error. A single
`INSERT … ON CONFLICT DO NOTHING` (both SQLite and PostgreSQL speak it) lets
the database decide, and the row count says who won.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import CursorResult, Table, bindparam
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from .statements import Sql
from .transaction import Txn


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


class InsertNew:
    """`insert_new` for a request's hot path: compiled once per dialect, run on the cursor
    (statements.py), where SQLAlchemy's per-statement work would be most of the request.

    Values go to the driver as they are: timestamps must be bound with `stored()`.
    """

    def __init__(self, table: Table, columns: Sequence[str], keys: Sequence[str]) -> None:
        values: dict[str, Any] = {column: bindparam(column) for column in columns}
        self._sql = {
            "sqlite": Sql(
                sqlite_insert(table).values(values).on_conflict_do_nothing(index_elements=keys)
            ),
            "postgresql": Sql(
                pg_insert(table).values(values).on_conflict_do_nothing(index_elements=keys)
            ),
        }

    def __call__(self, txn: Txn, values: Mapping[str, Any]) -> bool:
        """Insert unless the keys exist; True if this call inserted the row."""
        return txn.run(self._sql[txn.dialect_name], values) == 1


def insert_new_many(
    txn: Txn,
    table: Table,
    rows: Sequence[Mapping[str, Any]],
    keys: Sequence[str],
    returning: str,
    *,
    chunk: int = 200,
) -> set[Any]:
    """Insert-or-ignore many rows with one multi-row statement per `chunk`; the `returning`
    column of the rows this call inserted (the others were there already).

    The SQL is written here rather than built by SQLAlchemy, which compiles a multi-row
    VALUES anew for every statement (milliseconds for 200 rows); values go through each
    column's own bind processing, so a timestamp is stored as the ORM stores it.
    """
    if not rows:
        return set()
    dialect = txn.dialect
    columns = list(rows[0])
    quote = dialect.identifier_preparer.quote
    binders = [table.c[column].type.bind_processor(dialect) for column in columns]
    mark = "?" if dialect.paramstyle == "qmark" else "%s"
    one = "(" + ", ".join([mark] * len(columns)) + ")"
    head = f"INSERT INTO {quote(table.name)} ({', '.join(quote(c) for c in columns)}) VALUES "
    tail = (
        f" ON CONFLICT ({', '.join(quote(k) for k in keys)}) DO NOTHING "
        f"RETURNING {quote(returning)}"
    )
    inserted: set[Any] = set()
    for start in range(0, len(rows), chunk):
        part = rows[start : start + chunk]
        params = [
            value if bind is None else bind(value)
            for row in part
            for value, bind in zip((row[c] for c in columns), binders, strict=True)
        ]
        sql = head + ", ".join([one] * len(part)) + tail
        inserted.update(found for (found,) in txn.rows_of_text(sql, params))
    return inserted
