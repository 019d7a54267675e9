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

import logging
import os
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from datetime import UTC, datetime
from operator import itemgetter
from typing import Any, cast

from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.engine import Dialect, make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session
from sqlalchemy.pool import PoolProxiedConnection
from sqlalchemy.sql import ClauseElement
from sqlalchemy.sql.compiler import SQLCompiler

try:  # POSIX only; elsewhere SQLite's busy timeout alone orders the writers
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

SQLITE_BUSY_TIMEOUT_MS = 10_000
_IDLE_MAX = 8  # kept connections per engine and process, about one per serving thread
_READ_ONLY = "wa_read_only"
_QUERY_ONLY = "wa_query_only"  # per DB-API connection: the state last set on it


def _configure_sqlite(engine: Engine, *, read_only: bool = False) -> None:
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
            _begin_sqlite(conn.connection, bool(conn.get_execution_options().get(_READ_ONLY)))


def _begin_sqlite(pooled: Any, read_only: bool) -> None:
    info = pooled.info
    raw = pooled.driver_connection
    if info.get(_QUERY_ONLY) != read_only:
        raw.execute(f"PRAGMA query_only = {int(read_only)}")
        info[_QUERY_ONLY] = read_only
    raw.execute("BEGIN" if read_only else "BEGIN IMMEDIATE")


_PG_IDLE = 0  # psycopg.pq.TransactionStatus.IDLE


def _configure_postgresql(engine: Engine) -> None:
    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        if conn.connection.driver_connection.info.transaction_status == _PG_IDLE:
            _begin_postgresql(conn.connection, bool(conn.get_execution_options().get(_READ_ONLY)))


def _begin_postgresql(pooled: Any, read_only: bool) -> None:
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


class Txn:
    """One transaction on one pooled connection.

    The transaction is begun and ended on the pooled driver connection itself:
    SQLAlchemy's `Connection` (made, with its events, on every checkout) and its
    begin/commit machinery cost more than the statements of a `/wa-role show`.
    `session` is made on first use: only then is the connection wrapped in a
    SQLAlchemy `Connection` that is told the transaction is open, so fast
    statements and ORM work share one snapshot and commit or roll back together.
    """

    def __init__(self, engine: Engine, pooled: PoolProxiedConnection) -> None:
        self._engine = engine
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

    def after_commit(self, callback: Callable[[], None]) -> None:
        """Run `callback` once this transaction has committed; never if it rolls back.

        For effects that must not be reported before they are durable (counters
        now). A callback that raises is logged; the commit stands.
        """
        if self._after_commit is None:
            self._after_commit = []
        self._after_commit.append(callback)

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
            self._session = Session(bind=self.conn, expire_on_commit=False)
            self._session.info["wa_txn"] = self
        return self._session

    def _cursor(self, sql: Sql, params: Mapping[str, Any]) -> Any:
        text_, bound = sql.bind(self._dialect, params)
        return self._execute(text_, bound, many=False)

    def _execute(self, text_: str, bound: Any, *, many: bool) -> Any:
        if self._session is not None:
            self._session.flush()  # fast statements must see the ORM's pending writes
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
        in_memory = self.is_sqlite and (not path or path == ":memory:" or "mode=memory" in self.url)
        if self.is_sqlite:
            _configure_sqlite(self.engine)
            self._begin: Callable[[Any, bool], None] = _begin_sqlite
            self.writer_lock: WriterLock | None = WriterLock(None if in_memory else path)
            if not in_memory:
                # Readers get connections of their own, read-only for good, so no
                # transaction pays for switching `query_only` back and forth.
                # (An in-memory database exists once per connection: it keeps one pool.)
                readers = create_engine(self.url, **kwargs)
                _configure_sqlite(readers, read_only=True)
                self._reader = readers.execution_options(**{_READ_ONLY: True})
        else:
            _configure_postgresql(self.engine)
            self._begin = _begin_postgresql
            self.writer_lock = None
        # Connections to a SQLite file that a finished transaction left clean are kept
        # checked out for the next one: SQLAlchemy's checkout and checkin (events, a
        # reset by rollback) cost a tenth of a `/wa-role show`. Not on PostgreSQL,
        # whose pool pings a connection before handing it out, nor for in-memory
        # SQLite, whose pool gives each thread its own database. Per process: SQLite
        # connections must never cross a fork.
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
        txn = Txn(engine, pooled)
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
        if self._idle is not None:
            for idle in self._idle.values():
                while idle:
                    kept = idle.pop()
                    if self._idle_pid == os.getpid():  # never close a parent's connection
                        kept.close()
        self.engine.dispose()
        self._reader.engine.dispose()
