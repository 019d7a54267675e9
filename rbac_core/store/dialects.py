"""What differs between SQLite (the embedded default) and PostgreSQL: connecting,
beginning a transaction, and ordering SQLite's writers.

SQLite is tuned for a server with several threads and processes: WAL so readers
never block the writer, a busy timeout instead of instant "database is locked",
foreign keys enforced, and write transactions opened with BEGIN IMMEDIATE so two
writers can never deadlock while both try to upgrade a shared lock. Writers in
this process and in its sibling processes also queue on a file lock before
BEGIN IMMEDIATE: SQLite's own busy handler polls with sleeps of up to 100 ms,
which under load turned a 1 ms write into a p99 of half a second, while a
waiter on `flock` is woken the moment the holder lets go.

Read transactions are read-only at the database level (`PRAGMA query_only` on
SQLite, `BEGIN READ ONLY` on PostgreSQL), so code that promised not to write
cannot write by mistake.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DisconnectionError

try:  # POSIX only; elsewhere SQLite's busy timeout alone orders the writers
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

SQLITE_BUSY_TIMEOUT_MS = 10_000
READ_ONLY = "wa_read_only"
_QUERY_ONLY = "wa_query_only"  # per DB-API connection: the state last set on it


def configure_sqlite(engine: Engine, *, read_only: bool = False) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, record: Any) -> None:
        # Let the "begin" event below decide how each transaction starts.
        dbapi_conn.isolation_level = None
        cursor = dbapi_conn.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.execute(f"PRAGMA query_only = {int(read_only)}")
        cursor.close()
        record.info[_QUERY_ONLY] = read_only

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        # A Txn that began on the driver already (and now wants an ORM session) is
        # in its transaction: SQLAlchemy only needs to hear about it.
        if not conn.connection.driver_connection.in_transaction:
            begin_sqlite(conn.connection, bool(conn.get_execution_options().get(READ_ONLY)))


def begin_sqlite(pooled: Any, read_only: bool) -> None:
    query_only_sqlite(pooled, read_only)
    pooled.driver_connection.execute("BEGIN" if read_only else "BEGIN IMMEDIATE")


def query_only_sqlite(pooled: Any, read_only: bool) -> None:
    """Make the connection read-only or not, unless it is already."""
    info = pooled.info
    if info.get(_QUERY_ONLY) != read_only:
        pooled.driver_connection.execute(f"PRAGMA query_only = {int(read_only)}")
        info[_QUERY_ONLY] = read_only


_PG_IDLE = 0  # psycopg.pq.TransactionStatus.IDLE


PING_AFTER_IDLE_S = 2.0
"""A pooled PostgreSQL connection idle longer than this is pinged before use (a server
restarted meanwhile has closed it). One busy within the last seconds is not: the ping is
a round trip, about a tenth of a stored webhook's cost."""
_IDLE_SINCE = "wa_idle_since"


def configure_postgresql(engine: Engine) -> None:
    @event.listens_for(engine, "checkin")
    def _on_checkin(dbapi_conn: Any, record: Any) -> None:
        record.info[_IDLE_SINCE] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _on_checkout(dbapi_conn: Any, record: Any, proxy: Any) -> None:
        idle_since = record.info.get(_IDLE_SINCE)
        if idle_since is None or time.monotonic() - idle_since < PING_AFTER_IDLE_S:
            return
        try:
            engine.dialect.do_ping(dbapi_conn)
        except engine.dialect.loaded_dbapi.Error as exc:
            # The pool drops this connection and tries another.
            raise DisconnectionError("the pooled connection is gone") from exc

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        if conn.connection.driver_connection.info.transaction_status == _PG_IDLE:
            begin_postgresql(conn.connection, bool(conn.get_execution_options().get(READ_ONLY)))


def begin_postgresql(pooled: Any, read_only: bool) -> None:
    # psycopg opens the transaction at the first statement, as BEGIN READ ONLY
    # when asked: no extra round trip.
    raw = pooled.driver_connection
    if raw.read_only != read_only:
        raw.read_only = read_only


def normalize_url(url: str) -> str:
    """Accept `postgres://` and `postgresql://` and use the psycopg 3 driver."""
    parsed = make_url(url)
    if parsed.drivername in ("postgres", "postgresql"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


class WriterLock:
    """Orders SQLite writers: a mutex for this process's threads, `flock` across processes.

    Taken before BEGIN IMMEDIATE, so at most one thread of all the processes
    sharing the file ever waits inside SQLite, and it never waits long.
    """

    def __init__(self, database_path: str | None) -> None:
        self._mutex = threading.Lock()
        self._mine = threading.local()
        self._path = f"{database_path}.writer-lock" if database_path else None
        self._fd: int | None = None
        self._pid = -1

    def _file(self) -> int | None:
        if self._path is None or fcntl is None:
            return None
        if self._pid != os.getpid():  # opened after a fork: flock locks are per open file
            self._fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o600)
            self._pid = os.getpid()
        return self._fd

    @contextmanager
    def held(self) -> Iterator[None]:
        if getattr(self._mine, "held", False):
            # SQLite has one writer: a write inside a write could only wait for itself.
            raise RuntimeError("a write transaction was opened inside another one")
        with self._mutex:
            self._mine.held = True
            try:
                fd = self._file()
                if fd is None:
                    yield
                    return
                fcntl.flock(fd, fcntl.LOCK_EX)
                try:
                    yield
                finally:
                    fcntl.flock(fd, fcntl.LOCK_UN)
            finally:
                self._mine.held = False
