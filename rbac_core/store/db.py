"""The database of a process: its engine, its kept connections, and its transactions.

Transactions are begun and ended on the pooled driver connection (`Txn`), with
what differs between SQLite and PostgreSQL in `dialects.py` and the hot path's
precompiled statements in `statements.py`.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session
from sqlalchemy.pool import PoolProxiedConnection

from .dialects import (
    READ_ONLY,
    WriterLock,
    begin_postgresql,
    begin_sqlite,
    configure_postgresql,
    configure_sqlite,
    normalize_url,
    query_only_sqlite,
)
from .listened_stamp import ListenedStamp
from .stamp import LocalStamp, PolicyStamp, Stamp, stamp_path
from .transaction import Txn

_IDLE_MAX = 8  # kept connections per engine and process, about one per serving thread


class Database:
    """One per process: the engine, the SQLite writers' lock, and transactions."""

    def __init__(self, url: str, **engine_kwargs: Any) -> None:
        self.url = normalize_url(url)
        self.is_sqlite = self.url.startswith("sqlite")
        # hide_parameters: bound values (reasons, names, one day secrets) stay out of
        # exception messages and therefore out of logs.
        kwargs: dict[str, Any] = {"hide_parameters": True}
        if not self.is_sqlite:
            kwargs.update(pool_size=5, max_overflow=10)
        kwargs.update(engine_kwargs)
        self.engine = create_engine(self.url, **kwargs)
        self._reader = self.engine.execution_options(**{READ_ONLY: True})
        path = make_url(self.url).database if self.is_sqlite else None
        in_memory = self.is_sqlite and (not path or path == ":memory:" or "mode=memory" in self.url)
        if self.is_sqlite:
            configure_sqlite(self.engine)
            self._begin: Callable[[Any, bool], None] = begin_sqlite
            self.writer_lock: WriterLock | None = WriterLock(None if in_memory else path)
            if not in_memory:
                # Readers get connections of their own, read-only for good, so no
                # transaction pays for switching `query_only` back and forth.
                # (An in-memory database exists once per connection: it keeps one pool.)
                readers = create_engine(self.url, **kwargs)
                configure_sqlite(readers, read_only=True)
                self._reader = readers.execution_options(**{READ_ONLY: True})
        else:
            configure_postgresql(self.engine)
            self._begin = begin_postgresql
            self.writer_lock = None
        # Whether policy moved, for the price of a memory load (stamp.py), and on
        # PostgreSQL a LISTEN for other machines (listened_stamp.py).
        self.policy_stamp: PolicyStamp
        if self.is_sqlite:
            where = stamp_path(path or "")
            self.policy_stamp = LocalStamp() if where is None else Stamp(where)
        else:
            self.policy_stamp = ListenedStamp(self.engine)
        # Connections to a SQLite file that a finished transaction left clean are kept
        # checked out for the next one: SQLAlchemy's checkout and checkin (events, a
        # reset by rollback) cost a tenth of a `/wa-role show`. Not on PostgreSQL,
        # whose pool pings a connection idle for a while before handing it out
        # (dialects.py), nor for in-memory SQLite, whose pool gives each thread its own
        # database. Per process: SQLite connections must never cross a fork.
        self._idle: dict[bool, list[PoolProxiedConnection]] | None = (
            {True: [], False: []} if self.is_sqlite and not in_memory else None
        )
        self._idle_pid = os.getpid()
        self._here = threading.local()  # this thread's open transactions

    @contextmanager
    def transaction(self, *, write: bool) -> Iterator[Txn]:
        """Committed on success, rolled back on any error; read-only unless `write`."""
        lock: AbstractContextManager[None] = (
            self.writer_lock.held() if write and self.writer_lock else nullcontext()
        )
        engine = self.engine if write else self._reader
        # The checkout and checkin stay outside the writers' lock: every
        # microsecond inside it is one all other writers of every process wait.
        pooled = self._checkout(engine, write)
        txn = Txn(engine, pooled, self.policy_stamp)
        reusable = False
        self._here.depth = getattr(self._here, "depth", 0) + 1
        try:
            with lock:
                try:
                    self._begin(pooled, not write)
                except engine.dialect.loaded_dbapi.Error as exc:
                    raise DBAPIError.instance(
                        None, None, exc, engine.dialect.loaded_dbapi.Error, hide_parameters=True
                    ) from exc
                try:
                    yield txn
                    if self.is_sqlite and not txn._raw.in_transaction:
                        # SQLite rolls a whole transaction back on some errors (disk
                        # full, I/O error) that a caller may have caught; what ran after
                        # that ran in autocommit. Never report such a transaction as one.
                        raise DBAPIError.instance(
                            None,
                            None,
                            engine.dialect.loaded_dbapi.OperationalError(
                                "the transaction was rolled back by SQLite before it ended"
                            ),
                            engine.dialect.loaded_dbapi.Error,
                            hide_parameters=True,
                        )
                except BaseException:
                    txn._rollback()
                    raise
                txn._commit()
                # Ended cleanly on the driver and owned by nothing else: fit for reuse.
                reusable = txn._conn is None
            if txn._after_commit:  # outside the writers' lock: others need not wait
                txn._run_after_commit()
        finally:
            self._here.depth -= 1
            if not (reusable and self._keep(pooled, write)):
                txn._release()

    def single(self, text_: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        """The rows of one writing statement run as its own transaction (autocommit).

        For a statement that is atomic alone (a multi-row INSERT … RETURNING): one
        round trip where a transaction costs three (BEGIN, the statement, COMMIT), and
        on SQLite one step of the driver under the writers' lock instead of three.
        The caller writes the SQL for this dialect (`insert_new_sql`).
        """
        if self.in_transaction_here():
            raise RuntimeError("a single statement was run inside a transaction")
        pooled = self._checkout(self.engine, True)
        raw: Any = pooled.driver_connection
        kept = False
        try:
            lock = self.writer_lock.held() if self.writer_lock else nullcontext()
            with lock:
                if self.is_sqlite:
                    query_only_sqlite(pooled, False)
                else:
                    raw.autocommit = True
                try:
                    cursor = raw.execute(text_, params)
                    rows = [tuple(row) for row in cursor.fetchall()]
                    cursor.close()
                except Exception as exc:
                    raise DBAPIError.instance(
                        text_,
                        None,
                        exc,
                        self.engine.dialect.loaded_dbapi.Error,
                        hide_parameters=True,
                    ) from exc
                finally:
                    if not self.is_sqlite:
                        try:
                            raw.autocommit = False
                        except Exception:  # the connection is lost: never pooled again
                            pooled.invalidate()
            kept = self._keep(pooled, True)
            return rows
        finally:
            if not kept:
                pooled.close()

    def in_transaction_here(self) -> bool:
        """Whether this thread is inside a transaction of this database."""
        return bool(getattr(self._here, "depth", 0))

    def _checkout(self, engine: Engine, write: bool) -> PoolProxiedConnection:
        if self._idle is not None and self._idle_pid == os.getpid():
            try:
                return self._idle[write].pop()
            except IndexError:
                pass
        return engine.raw_connection()

    def _keep(self, pooled: PoolProxiedConnection, write: bool) -> bool:
        """Keep a connection for this process's next transaction instead of checking it in."""
        if self._idle is None or self._idle_pid != os.getpid():
            return False
        idle = self._idle[write]
        if len(idle) >= _IDLE_MAX:
            return False
        idle.append(pooled)
        return True

    @contextmanager
    def write(self) -> Iterator[Session]:
        """A read-write ORM transaction: committed on success, rolled back on any error."""
        with self.transaction(write=True) as txn:
            yield txn.session

    @contextmanager
    def read(self) -> Iterator[Session]:
        """A read-only ORM transaction that never takes SQLite's write lock."""
        with self.transaction(write=False) as txn:
            yield txn.session

    @contextmanager
    def snapshot(self) -> Iterator[Connection]:
        """A read-only connection seeing one consistent snapshot until it closes.

        For reads that must agree with themselves across statements (the audit
        head and the log it heads) while writers carry on: WAL readers on SQLite
        keep their snapshot and take no write lock; PostgreSQL needs REPEATABLE READ.
        """
        options: dict[str, Any] = {READ_ONLY: True}
        if not self.is_sqlite:
            options["isolation_level"] = "REPEATABLE READ"
        with self.engine.connect() as conn:
            conn.execution_options(**options)
            with conn.begin():
                yield conn

    def connect_read(self) -> Connection:
        """A plain read-only connection (no write lock on SQLite)."""
        return self._reader.connect()

    def ping(self) -> None:
        with self.connect_read() as conn:
            conn.execute(text("SELECT 1"))

    def dispose(self) -> None:
        if self._idle is not None:
            for idle in self._idle.values():
                while idle:
                    kept = idle.pop()
                    if self._idle_pid == os.getpid():  # never close a parent's connection
                        kept.close()
        self.engine.dispose()
        self._reader.engine.dispose()
        self.policy_stamp.close()
