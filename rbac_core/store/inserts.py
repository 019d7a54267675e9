"""Insert-or-ignore: the one way a "first one wins" row is written.

Looking first and inserting after lets two replicas both see nothing and both
insert; one of them then fails on the key, late and as an error. A single
`INSERT … ON CONFLICT DO NOTHING` (both SQLite and PostgreSQL speak it) lets
the database decide, and the row count says who won.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from sqlalchemy import CursorResult, String, Table
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import Session

from .models.base import UTCDateTime
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
    column of the rows this call inserted (the others were there already)."""
    inserted: set[Any] = set()
    for sql, params in insert_new_sql(txn.dialect, table, rows, keys, returning, chunk=chunk):
        inserted.update(found for (found,) in txn.rows_of_text(sql, params))
    return inserted


def insert_new_sql(
    dialect: Dialect,
    table: Table,
    rows: Sequence[Mapping[str, Any]],
    keys: Sequence[str],
    returning: str,
    *,
    chunk: int = 200,
) -> list[tuple[str, list[Any]]]:
    """The statements of `insert_new_many`, one per `chunk` rows, with their parameters.

    The SQL is written here rather than built by SQLAlchemy, which compiles a multi-row
    VALUES anew for every statement (milliseconds for 200 rows); values go through each
    column's own bind processing, so a timestamp is stored as the ORM stores it.

    On PostgreSQL more than `FEW_ROWS` rows go as one array per column, unnested by
    the server: the statement's text is then the same for any number of rows, so
    psycopg converts it once and the server plans it once (prepared), where a VALUES
    list of each length was a new statement, converted and planned every time (a
    sixth of the webhook worker's CPU in its profile). A few rows keep VALUES: few
    lengths, each cached, and cheaper to bind than arrays (the door's one body).
    """
    if not rows:
        return []
    columns = tuple(rows[0])
    shape = _shape(dialect, table, columns, tuple(keys), returning)
    statements = []
    for start in range(0, len(rows), chunk):
        part = rows[start : start + chunk]
        if shape.by_column and len(part) > FEW_ROWS:
            params: list[Any] = [
                [row[column] if bind is None else bind(row[column]) for row in part]
                for column, bind in zip(columns, shape.binders, strict=True)
            ]
            statements.append((shape.head + shape.tail, params))
            continue
        params = [
            value if bind is None else bind(value)
            for row in part
            for value, bind in zip((row[c] for c in columns), shape.binders, strict=True)
        ]
        statements.append((shape.values + ", ".join([shape.one] * len(part)) + shape.tail, params))
    return statements


FEW_ROWS = 8


def insert_rows(
    txn: Txn, table: Table, rows: Sequence[Mapping[str, Any]], returning: str | None = None
) -> list[Any]:
    """Insert `rows` (all with the same columns) with one multi-row statement per 200;
    with `returning`, of one row only, that row's column (neither database promises the
    order RETURNING gives a multi-row insert's). Values go through each column's own bind
    processing, as the ORM's would; SQLAlchemy's per-execution work (an insert compiled
    and cached, a result proxy, events) cost more than the insert itself on a `/wa-send`."""
    if returning is not None and len(rows) != 1:
        raise ValueError("insert_rows returns a column of one row only")
    if not rows:
        return []
    columns = tuple(rows[0])
    shape = _shape(txn.dialect, table, columns, (), returning or "")
    quote = txn.dialect.identifier_preparer.quote
    tail = "" if returning is None else f" RETURNING {quote(returning)}"
    found: list[Any] = []
    for start in range(0, len(rows), 200):
        part = rows[start : start + 200]
        params = [
            value if bind is None else bind(value)
            for row in part
            for value, bind in zip((row[c] for c in columns), shape.binders, strict=True)
        ]
        sql = shape.values + ", ".join([shape.one] * len(part)) + tail
        if returning is None:
            txn.run_text(sql, params)
        else:
            found.extend(value for (value,) in txn.rows_of_text(sql, params))
    return found


@dataclass(frozen=True)
class _Shape:
    head: str
    """The unnesting statement up to its conflict clause, on PostgreSQL."""
    values: str
    one: str
    tail: str
    binders: list[Any]
    by_column: bool
    """One array parameter per column (PostgreSQL), or one parameter per value."""


@lru_cache(maxsize=64)
def _shape(
    dialect: Dialect, table: Table, columns: tuple[str, ...], keys: tuple[str, ...], returning: str
) -> _Shape:
    """The fixed parts of an insert-or-ignore and its columns' bind processors, made once:
    the webhook door writes one per request."""
    quote = dialect.identifier_preparer.quote
    binders = [_binder(table.c[column].type, dialect) for column in columns]
    names = ", ".join(quote(c) for c in columns)
    tail = (
        f" ON CONFLICT ({', '.join(quote(k) for k in keys)}) DO NOTHING "
        f"RETURNING {quote(returning)}"
    )
    mark = "?" if dialect.paramstyle == "qmark" else "%s"
    one = "(" + ", ".join([mark] * len(columns)) + ")"
    values = f"INSERT INTO {quote(table.name)} ({names}) VALUES "
    if dialect.name != "postgresql":
        return _Shape("", values, one, tail, binders, by_column=False)
    arrays = ", ".join(
        f"CAST(%s AS {_element_type(table, column, dialect)}[])" for column in columns
    )
    unnest = f"INSERT INTO {quote(table.name)} ({names}) SELECT * FROM unnest({arrays})"
    return _Shape(unnest, values, one, tail, binders, by_column=True)


def _binder(kind: Any, dialect: Dialect) -> Any:
    """A column's bind processing as the ORM's: the dialect's own processor, so that on
    SQLite a timestamp is text with its microseconds always written and compares with
    ORM-written ones. A UTC timestamp on SQLite is formatted by `datetime.isoformat`
    instead, to the same text: SQLAlchemy's processor cost the webhook door's insert
    18k instructions a request."""
    if dialect.name == "sqlite" and isinstance(kind, UTCDateTime):
        return _sqlite_utc_text
    return kind.dialect_impl(dialect).bind_processor(dialect)


def _sqlite_utc_text(value: datetime | None) -> str | None:
    if value is None:
        return None
    if value.tzinfo is None:
        raise ValueError("naive datetime given to a UTC column")
    return value.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")


def _element_type(table: Table, column: str, dialect: Dialect) -> str:
    """The array's element type: a string column's without its length. An explicit cast
    to VARCHAR(n) cuts a longer value short without a word; the insert's own conversion
    refuses it, as a VALUES list's does."""
    kind = table.c[column].type
    impl = getattr(kind, "impl", kind)
    return "TEXT" if isinstance(impl, String) else str(kind.compile(dialect=dialect))
