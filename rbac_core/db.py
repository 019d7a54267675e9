"""Engine and transaction handling for SQLite (embedded default) and PostgreSQL.

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

Every transaction is a `Txn`: one pooled connection, an ORM `Session` made only
if something asks for it, and `Txn.rows`/`Txn.run` for the few statements on
the hot path of every request (policy version, audit append, `/wa-role show`),
which are compiled once and run straight on the DB-API cursor. SQLAlchemy's
per-execution machinery costs about 50 µs a statement on a small machine; on a
request whose whole budget is a millisecond that was most of it.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.engine import Dialect, make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session
from sqlalchemy.sql import ClauseElement
from sqlalchemy.sql.compiler import SQLCompiler

try:  # POSIX only; elsewhere SQLite's busy timeout alone orders the writers
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

SQLITE_BUSY_TIMEOUT_MS = 10_000
_READ_ONLY = "wa_read_only"
_QUERY_ONLY = "wa_query_only"  # per DB-API connection: the state last set on it


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, record: Any) -> None:
        # Let the "begin" event below decide how each transaction starts.
        dbapi_conn.isolation_level = None
        cursor = dbapi_conn.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.close()
        record.info[_QUERY_ONLY] = False

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        read_only = bool(conn.get_execution_options().get(_READ_ONLY))
        info = conn.connection.info
        raw = conn.connection.driver_connection
        if info.get(_QUERY_ONLY) != read_only:
            raw.execute(f"PRAGMA query_only = {int(read_only)}")
            info[_QUERY_ONLY] = read_only
        # Straight on the driver: through SQLAlchemy this one statement cost as
        # much as the rest of a read transaction.
        raw.execute("BEGIN" if read_only else "BEGIN IMMEDIATE")


def _configure_postgresql(engine: Engine) -> None:
    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        # psycopg then opens the transaction with BEGIN READ ONLY: no extra round trip.
        read_only = bool(conn.get_execution_options().get(_READ_ONLY))
        raw = conn.connection.driver_connection
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
        with self._mutex:
            fd = self._file()
            if fd is None:
                yield
                return
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)


class Sql:
    """A Core statement compiled once per dialect and run on the DB-API cursor.

    Only for statements whose parameters are plain `str`/`int` values and whose
    results the caller reads positionally (`utc()` turns a stored timestamp back
    into an aware datetime). Everything else goes through the ORM session.
    """

    def __init__(self, statement: ClauseElement) -> None:
        self.statement = statement
        self._compiled: dict[str, tuple[str, tuple[str, ...] | None, dict[str, Any]]] = {}

    def bind(
        self, dialect: Dialect, params: Mapping[str, Any]
    ) -> tuple[str, Sequence[Any] | Mapping[str, Any]]:
        """The SQL text for `dialect` and `params` in the shape its driver wants.

        Values written into the statement itself (`id == 1`) are bound too.
        """
        found = self._compiled.get(dialect.name)
        if found is None:
            compiled = cast(SQLCompiler, self.statement.compile(dialect=dialect))
            order = tuple(compiled.positiontup or ()) if compiled.positional else None
            fixed = {
                compiled.bind_names[bind]: bind.value
                for bind in compiled.binds.values()
                if not bind.required
            }
            found = self._compiled[dialect.name] = (compiled.string, order, fixed)
        sql, order, fixed = found
        merged = {**fixed, **params} if fixed else params
        if order is None:
            return sql, merged
        return sql, tuple(merged[name] for name in order)


def utc(value: Any) -> datetime | None:
    """A timestamp column as read by the driver (text on SQLite), as aware UTC."""
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if not isinstance(value, datetime):
        raise TypeError(f"not a timestamp: {type(value).__name__}")
    return value.replace(tzinfo=UTC)


class Txn:
    """One transaction on one pooled connection.

    `session` is made on first use and joins the transaction, so fast
    statements and ORM work see the same snapshot and commit together.
    """

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self._session: Session | None = None
        raw = conn.connection.driver_connection
        if raw is None:
            raise RuntimeError("the connection is closed")
        self._raw = raw
        self._dialect = conn.dialect

    @property
    def session(self) -> Session:
        if self._session is None:
            self._session = Session(bind=self.conn, expire_on_commit=False)
        return self._session

    def _cursor(self, sql: Sql, params: Mapping[str, Any]) -> Any:
        text_, bound = sql.bind(self._dialect, params)
        if self._session is not None:
            self._session.flush()  # fast statements must see the ORM's pending writes
        cursor = self._raw.cursor()
        try:
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
        if self._session is not None:
            self._session.flush()
        cursor = self._raw.cursor()
        try:
            cursor.executemany(text_, bound)
        except Exception as exc:
            raise DBAPIError.instance(
                text_, None, exc, self._dialect.loaded_dbapi.Error, hide_parameters=True
            ) from exc
        finally:
            cursor.close()

    def _finish(self) -> None:
        if self._session is not None:
            self._session.flush()

    def _close(self) -> None:
        if self._session is not None:
            self._session.close()
            self._session = None


def txn_of(session: Session) -> Txn:
    """The fast-statement view of a session's current transaction."""
    return Txn(session.connection())


class Database:
    """One per process: the engine, the SQLite writers' lock, and transactions."""

    def __init__(self, url: str, **engine_kwargs: Any) -> None:
        self.url = normalize_url(url)
        self.is_sqlite = self.url.startswith("sqlite")
        # hide_parameters: bound values (reasons, names, one day secrets) stay out of
        # exception messages and therefore out of logs.
        kwargs: dict[str, Any] = {"hide_parameters": True}
        if not self.is_sqlite:
            kwargs.update(pool_pre_ping=True, pool_size=5, max_overflow=10)
        kwargs.update(engine_kwargs)
        self.engine = create_engine(self.url, **kwargs)
        self._reader = self.engine.execution_options(**{_READ_ONLY: True})
        path = make_url(self.url).database if self.is_sqlite else None
        if self.is_sqlite:
            _configure_sqlite(self.engine)
            in_memory = not path or path == ":memory:" or path.startswith("file::memory:")
            self.writer_lock: WriterLock | None = WriterLock(None if in_memory else path)
        else:
            _configure_postgresql(self.engine)
            self.writer_lock = None

    @contextmanager
    def transaction(self, *, write: bool) -> Iterator[Txn]:
        """Committed on success, rolled back on any error; read-only unless `write`."""
        lock: AbstractContextManager[None] = (
            self.writer_lock.held() if write and self.writer_lock else nullcontext()
        )
        with lock, (self.engine if write else self._reader).connect() as conn:
            txn = None
            try:
                with conn.begin():
                    txn = Txn(conn)
                    yield txn
                    txn._finish()
            finally:
                if txn is not None:
                    txn._close()

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
        options: dict[str, Any] = {_READ_ONLY: True}
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
        self.engine.dispose()
