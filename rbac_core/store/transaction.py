"""`Txn`: one transaction on one pooled connection.

Every transaction is a `Txn`: one pooled connection, an ORM `Session` made only
if something asks for it, and `Txn.rows`/`Txn.run` for the few statements on
the hot path of every request (policy version, audit append, `/wa-role show`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Connection, Engine
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, SessionTransaction
from sqlalchemy.pool import PoolProxiedConnection

from ..errors import PolicyNotAnnounced
from .listened_stamp import NOTIFY
from .stamp import PolicyStamp
from .statements import Sql

log = logging.getLogger(__name__)

_IDLE = 0
"""psycopg's `TransactionStatus.IDLE`: no transaction open on the connection."""


class TransactionEnded(RuntimeError):
    """A statement was asked of a transaction that is no longer open."""


class Txn:
    """One transaction on one pooled connection.

    The transaction is begun and ended on the pooled driver connection itself:
    SQLAlchemy's `Connection` (made, with its events, on every checkout) and its
    begin/commit machinery cost more than the statements of a `/wa-role show`.
    `session` is made on first use: only then is the connection wrapped in a
    SQLAlchemy `Connection` that is told the transaction is open, so fast
    statements and ORM work share one snapshot and commit or roll back together.
    """

    def __init__(
        self,
        engine: Engine,
        pooled: PoolProxiedConnection,
        policy_stamp: PolicyStamp | None = None,
    ) -> None:
        self._engine = engine
        self._policy_stamp = policy_stamp
        self._pooled = pooled
        self._conn: Connection | None = None
        self._session: Session | None = None
        self._sa_txn: Any = None
        raw = pooled.driver_connection
        if raw is None:
            raise RuntimeError("the connection is closed")
        self._raw = raw
        self._dialect = engine.dialect
        self._after_commit: list[Callable[[], None]] | None = None
        self._in_sql_savepoint = False
        self._session_savepoint: SessionTransaction | None = None
        # SQLite's transaction began with an explicit BEGIN; psycopg opens one at the
        # first statement, so there only a transaction that has run one can be over.
        self._began = self._dialect.name == "sqlite"
        self._ended = (
            (lambda: not raw.in_transaction)
            if self._began
            else (lambda: raw.info.transaction_status == _IDLE)
        )

    def after_commit(self, callback: Callable[[], None]) -> None:
        """Run `callback` once this transaction has committed; never if it rolls back.

        For effects that must not be reported before they are durable (counters
        now). A callback that raises is logged; the commit stands.
        """
        if self._after_commit is None:
            self._after_commit = []
        self._after_commit.append(callback)

    def note_policy_change(self) -> None:
        """This transaction changes policy: once it commits, tell this machine's processes
        (stamp.py), before the caller hears it is done, and on PostgreSQL the others too
        (listened_stamp.py: NOTIFY is delivered at commit)."""
        stamp = self._policy_stamp
        if stamp is not None:
            try:
                stamp.ensure()
            except OSError as exc:  # the change is not made unannounced
                raise PolicyNotAnnounced(
                    "Policy changes are refused on this machine until its policy stamp "
                    f"can be written ({exc}); an operator fixes that (see WA_STAMP_DIR)."
                ) from exc
            self.after_commit(stamp.bump)
        if self.dialect_name == "postgresql":
            self.rows_of_text(NOTIFY, ("" if stamp is None else stamp.origin(),))

    def _run_after_commit(self) -> None:
        callbacks, self._after_commit = self._after_commit or [], None
        for callback in callbacks:
            try:
                callback()
            except Exception:
                log.exception("an after-commit callback failed")

    @property
    def dialect_name(self) -> str:
        """`sqlite` or `postgresql`: for the few statements that differ between them."""
        return str(self._dialect.name)

    @property
    def dialect(self) -> Dialect:
        return self._dialect

    @classmethod
    def joining(cls, session: Session) -> Txn:
        """The fast-statement view of a session's transaction; never ends it."""
        conn = session.connection()
        txn = cls(conn.engine, conn.connection)
        txn._conn, txn._session = conn, session
        return txn

    @property
    def conn(self) -> Connection:
        """This transaction as a SQLAlchemy Connection (for Core statements)."""
        if self._conn is None:
            self._conn = Connection(self._engine, connection=self._pooled)
            self._sa_txn = self._conn.begin()  # the begin events see it is open
        return self._conn

    @property
    def session(self) -> Session:
        if self._session is None:
            session = Session(bind=self.conn, expire_on_commit=False)
            session.info["wa_txn"] = self
            if self._in_sql_savepoint:
                # Inside `savepoint`'s SQL SAVEPOINT, which the session cannot see: a
                # failed flush would otherwise roll the whole transaction back.
                self._session_savepoint = session.begin_nested()
                session.connection()
            self._session = session
        return self._session

    def _cursor(self, sql: Sql, params: Mapping[str, Any]) -> Any:
        text_, bound = sql.bind(self._dialect, params)
        return self._execute(text_, bound, many=False)

    def _execute(self, text_: str, bound: Any, *, many: bool) -> Any:
        if self._session is not None:
            self._session.flush()  # fast statements must see the ORM's pending writes
        if self._began and self._ended():
            # Something rolled the transaction back under us: a statement now would run
            # (and on SQLite commit) on its own, half of what the caller meant to write.
            raise TransactionEnded("the transaction ended before its last statement")
        self._began = True
        cursor = self._raw.cursor()
        try:
            if many:
                cursor.executemany(text_, bound)
            else:
                cursor.execute(text_, bound)
        except Exception as exc:
            cursor.close()
            # Wrapped like SQLAlchemy's own errors, and like them without the values.
            raise DBAPIError.instance(
                text_, None, exc, self._dialect.loaded_dbapi.Error, hide_parameters=True
            ) from exc
        return cursor

    def rows(self, sql: Sql, params: Mapping[str, Any] | None = None) -> list[tuple[Any, ...]]:
        cursor = self._cursor(sql, params or {})
        try:
            return [tuple(row) for row in cursor.fetchall()]
        finally:
            cursor.close()

    def rows_of_text(self, text_: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        """Rows of SQL the caller wrote for this dialect (placeholders in its paramstyle):
        for statements whose shape varies, which nothing could compile once."""
        cursor = self._execute(text_, params, many=False)
        try:
            return [tuple(row) for row in cursor.fetchall()]
        finally:
            cursor.close()

    @contextmanager
    def savepoint(self) -> Iterator[None]:
        """What runs inside is undone alone if it raises; the transaction goes on.

        Through the ORM session's `begin_nested` if a session is open. Otherwise SQL's
        own SAVEPOINT, so an action that needs no ORM never pays for a session (it was
        most of a `/wa-send`); a session opened inside it opens a savepoint of its own
        at once (`session`), so a failed flush undoes only that, never the transaction.
        """
        if self._session is not None:
            nested = self._session.begin_nested()
            # The session emits SAVEPOINT only when it next touches its connection: now,
            # or a fast statement that runs before any ORM work would not be undone.
            self._session.connection()
            try:
                yield
                self._session.flush()
            except BaseException:
                nested.rollback()
                raise
            nested.commit()
            return
        self.run_text("SAVEPOINT wa_action", ())
        self._in_sql_savepoint = True
        try:
            yield
            if self._session_savepoint is not None:
                session = self._session
                assert session is not None
                session.flush()
                self._session_savepoint.commit()
        except BaseException:
            if self._session is not None:
                if self._session_savepoint is not None and self._session_savepoint.is_active:
                    self._session_savepoint.rollback()
                self._session.close()  # it knew rows the rollback below undoes
                self._session = None
            self.run_text("ROLLBACK TO SAVEPOINT wa_action", ())
            self.run_text("RELEASE SAVEPOINT wa_action", ())
            raise
        finally:
            self._in_sql_savepoint, self._session_savepoint = False, None
        self.run_text("RELEASE SAVEPOINT wa_action", ())

    def run_text(self, text_: str, params: Sequence[Any]) -> int:
        """A write the caller wrote for this dialect (as `rows_of_text`); rows touched."""
        cursor = self._execute(text_, params, many=False)
        try:
            return int(cursor.rowcount)
        finally:
            cursor.close()

    def first(self, sql: Sql, params: Mapping[str, Any] | None = None) -> tuple[Any, ...] | None:
        cursor = self._cursor(sql, params or {})
        try:
            row = cursor.fetchone()
            return None if row is None else tuple(row)
        finally:
            cursor.close()

    def run(self, sql: Sql, params: Mapping[str, Any] | None = None) -> int:
        """Execute a write; returns the number of rows it touched."""
        cursor = self._cursor(sql, params or {})
        try:
            return int(cursor.rowcount)
        finally:
            cursor.close()

    def run_many(self, sql: Sql, rows: Sequence[Mapping[str, Any]]) -> None:
        if not rows:
            return
        text_ = sql.bind(self._dialect, rows[0])[0]
        bound = [sql.bind(self._dialect, row)[1] for row in rows]
        self._execute(text_, bound, many=True).close()

    def _commit(self) -> None:
        if self._session is not None:
            self._session.flush()
            self._session.close()
            self._session = None
        if self._sa_txn is not None:
            self._sa_txn.commit()
        else:
            self._raw.commit()

    def _rollback(self) -> None:
        if self._session is not None:
            self._session.close()
            self._session = None
        if self._sa_txn is not None:
            if self._sa_txn.is_active:
                self._sa_txn.rollback()
        else:
            self._raw.rollback()

    def _release(self) -> None:
        """Back to the pool, through the Connection if one was made (it owns it then)."""
        if self._conn is not None:
            self._conn.close()
        else:
            self._pooled.close()


def txn_of(session: Session) -> Txn:
    """The fast-statement view of a session's current transaction (never ends it).

    A session made by a `Txn` gives that Txn back, so `after_commit` callbacks
    registered through it run when its transaction commits.
    """
    owner = session.info.get("wa_txn")
    return owner if isinstance(owner, Txn) else Txn.joining(session)
