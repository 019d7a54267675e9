"""Statements on the hot path, compiled once per dialect and run on the DB-API cursor.

SQLAlchemy's per-execution machinery costs about 50 µs a statement on a small
machine; on a request whose whole budget is a millisecond that was most of it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from operator import itemgetter
from typing import Any, cast

from sqlalchemy import ARRAY, ColumnElement, String, Text, any_, bindparam
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import Session
from sqlalchemy.sql import ClauseElement
from sqlalchemy.sql.compiler import SQLCompiler


class Sql:
    """A Core statement compiled once per dialect and run on the DB-API cursor.

    Only for statements whose parameters are plain `str`/`int` values and whose
    results the caller reads positionally (`utc()` turns a stored timestamp back
    into an aware datetime). Everything else goes through the ORM session.
    """

    def __init__(self, statement: ClauseElement) -> None:
        self.statement = statement
        self._compiled: dict[str, _Compiled] = {}

    def bind(
        self, dialect: Dialect, params: Mapping[str, Any]
    ) -> tuple[str, Sequence[Any] | Mapping[str, Any]]:
        """The SQL text for `dialect` and `params` in the shape its driver wants.

        Values written into the statement itself (`id == 1`) are bound too.
        """
        found = self._compiled.get(dialect.name)
        if found is None:
            found = self._compiled[dialect.name] = _Compiled.of(self.statement, dialect)
        merged = {**found.fixed, **params} if found.fixed else params
        if found.pick is None:
            return found.sql, merged
        return found.sql, found.pick(merged)


@dataclass(frozen=True)
class _Compiled:
    """A statement's text for one dialect, its fixed values and how to order its params.

    `pick` turns a name-to-value mapping into the positional tuple the driver
    wants (SQLite's qmark style) in one C-level call: the hot statements of a
    `/wa-role show` run five times per request.
    """

    sql: str
    fixed: dict[str, Any]
    pick: Callable[[Mapping[str, Any]], tuple[Any, ...]] | None

    @classmethod
    def of(cls, statement: ClauseElement, dialect: Dialect) -> _Compiled:
        compiled = cast(SQLCompiler, statement.compile(dialect=dialect))
        fixed = {
            compiled.bind_names[bind]: bind.value
            for bind in compiled.binds.values()
            if not bind.required
        }
        if not compiled.positional:
            return cls(compiled.string, fixed, None)
        order = tuple(compiled.positiontup or ())
        if not order:
            return cls(compiled.string, fixed, lambda params: ())
        if len(order) == 1:
            name = order[0]
            return cls(compiled.string, fixed, lambda params: (params[name],))
        return cls(compiled.string, fixed, itemgetter(*order))


def utc(value: Any) -> datetime | None:
    """A timestamp column as read by the driver (text on SQLite), as aware UTC."""
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if not isinstance(value, datetime):
        raise TypeError(f"not a timestamp: {type(value).__name__}")
    return value.replace(tzinfo=UTC)


def one_of(session: Session, column: ColumnElement[Any], values: Sequence[Any]) -> Any:
    """`column IN values`, written on PostgreSQL as `= ANY(array)`: the same SQL for any
    number of values, so SQLAlchemy compiles it, psycopg converts it and the server plans
    it once, where an IN list of each length was a statement new every time (measured on
    the webhook worker, which reads and updates up to 200 rows by id per batch).

    Strings go as an unbounded text array: an explicit cast to VARCHAR(n) would cut a
    longer value short, and it could then match a row it is not.
    """
    if session.get_bind().dialect.name != "postgresql":
        return column.in_(values)
    element = Text() if isinstance(column.type, String) else column.type
    return column == any_(bindparam(None, list(values), type_=ARRAY(element)))
