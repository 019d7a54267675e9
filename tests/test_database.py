"""How transactions get and give back connections.

On a SQLite file, a connection that a transaction ended cleanly is kept for
the process's next transaction instead of going back through SQLAlchemy's
pool; a connection that saw an error always goes back, so the pool rolls it
back. None of this may ever be visible in the data.
"""

from __future__ import annotations

import sqlite3

import pytest
from sqlalchemy import bindparam, func, insert, select, text
from sqlalchemy.exc import DBAPIError

from rbac_core import Database
from rbac_core.clock import utcnow
from rbac_core.store import Sql, dialects
from rbac_core.store.models import User


def _count(db: Database, user: str) -> int:
    with db.read() as session:
        return int(session.scalar(select(func.count()).where(User.id == user)) or 0)


def _driver(db: Database, *, write: bool) -> object:
    with db.transaction(write=write) as txn:
        return txn._raw


def test_the_next_transaction_reuses_a_connection_left_clean(db: Database) -> None:
    if not db.is_sqlite:
        pytest.skip("PostgreSQL connections always go back to the pool, which pings them")
    for write in (True, False):
        assert _driver(db, write=write) is _driver(db, write=write)


def test_a_failed_transaction_leaves_nothing_behind_for_the_next(db: Database) -> None:
    with pytest.raises(RuntimeError), db.write() as session:
        session.add(User(id="U0HALFDONE", created_at=utcnow()))
        session.flush()
        raise RuntimeError("half way")
    with db.write() as session:  # whichever connection this gets, it starts clean
        session.add(User(id="U0WHOLE001", created_at=utcnow()))
    assert _count(db, "U0HALFDONE") == 0
    assert _count(db, "U0WHOLE001") == 1


def test_a_fast_statement_before_an_error_leaves_nothing_behind(db: Database) -> None:
    """The connection of a failed transaction is never kept: the next one starts clean."""
    add = Sql(
        insert(User.__table__).values(id=bindparam("id"), active=True, created_at=bindparam("at"))
    )
    with pytest.raises(RuntimeError), db.transaction(write=True) as txn:
        txn.run(add, {"id": "U0FASTHALF", "at": utcnow().replace(tzinfo=None)})
        raise RuntimeError("half way")
    for write in (True, False):
        with db.transaction(write=write) as txn:
            assert txn._raw.in_transaction if db.is_sqlite else True
    assert _count(db, "U0FASTHALF") == 0


def test_a_transaction_sqlite_rolled_back_under_us_is_never_reported_as_committed(
    db: Database,
) -> None:
    """SQLite ends a transaction on some errors (disk full, I/O error) that a caller may
    have caught; what runs after that runs in autocommit. Such a transaction raises."""
    if not db.is_sqlite:
        pytest.skip("SQLite's behaviour")
    with (
        pytest.raises(DBAPIError, match="rolled back by SQLite"),
        db.transaction(write=True) as txn,
    ):
        txn._raw.execute("ROLLBACK")  # what SQLite does itself on SQLITE_FULL
    with db.write() as session:  # and the next transaction is fine
        session.add(User(id="U0AFTERFUL", created_at=utcnow()))
    assert _count(db, "U0AFTERFUL") == 1


def test_a_transaction_using_the_orm_still_commits_and_reads_back(db: Database) -> None:
    for i in range(3):  # its connection goes back through the pool each time
        with db.write() as session:
            session.add(User(id=f"U0ORMUSE{i}", created_at=utcnow()))
    assert sum(_count(db, f"U0ORMUSE{i}") for i in range(3)) == 3


def test_dispose_closes_the_connections_kept_for_reuse(db: Database) -> None:
    if not db.is_sqlite:
        pytest.skip("only SQLite keeps connections")
    raw = _driver(db, write=True)
    assert isinstance(raw, sqlite3.Connection)
    db.dispose()
    with pytest.raises(sqlite3.ProgrammingError):
        raw.execute("SELECT 1")


def test_a_pooled_postgresql_connection_the_server_closed_while_idle_is_replaced(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A connection idle for a while is pinged before use; one the server dropped meanwhile
    (a restart, an idle timeout) is swapped for a new one, and the caller never knows."""
    if db.is_sqlite:
        pytest.skip("PostgreSQL's pool")
    monkeypatch.setattr(dialects, "PING_AFTER_IDLE_S", 0.0)  # every checkout is "idle"
    with db.read() as session:
        backend = session.scalar(text("SELECT pg_backend_pid()"))
    other = Database(db.url)
    try:
        with other.read() as session:
            assert session.scalar(text("SELECT pg_terminate_backend(:pid)"), {"pid": backend})
    finally:
        other.dispose()
    with db.read() as session:
        assert session.scalar(text("SELECT pg_backend_pid()")) != backend


def test_after_one_lost_postgresql_connection_the_pool_opens_new_ones_for_the_next(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A restart under load: connections busy a moment ago are not pinged, so one
    transaction meets the loss; the next gets a new connection, not a sibling as dead
    (SQLAlchemy's pool, finding the first lost as it comes back, retires all it had)."""
    if db.is_sqlite:
        pytest.skip("PostgreSQL's pool")
    monkeypatch.setattr(dialects, "PING_AFTER_IDLE_S", 3600.0)  # nothing is pinged
    first, second = db.engine.raw_connection(), db.engine.raw_connection()
    backends = []
    for pooled in (first, second):
        cursor = pooled.cursor()
        cursor.execute("SELECT pg_backend_pid()")
        backends.append(cursor.fetchone()[0])
        cursor.close()
        pooled.commit()
    first.close(), second.close()  # both back in the pool, alive
    other = Database(db.url)
    try:
        with other.read() as session:
            for backend in backends:
                session.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": backend})
    finally:
        other.dispose()
    with pytest.raises(DBAPIError), db.read() as session:
        session.scalar(text("SELECT 1"))
    with db.read() as session:
        assert session.scalar(text("SELECT pg_backend_pid()")) not in backends


def test_one_of_finds_exactly_the_rows_named_however_many_and_however_long(db: Database) -> None:
    """`= ANY(array)` on PostgreSQL, IN elsewhere: one statement for any count of values,
    and a value longer than its column never matches a row that shares its prefix."""
    from rbac_core.store.models import Customer
    from rbac_core.store.statements import one_of

    longest = "u:" + "x" * 298  # the column's whole length
    keys = [longest, *(f"w:1650555{n:04d}" for n in range(250))]
    with db.write() as session:
        session.execute(
            insert(Customer), [{"key": k, "created_at": utcnow(), "wa_id": None} for k in keys]
        )
    for wanted in ([], keys[1:2], keys[1:201], [longest + "y", keys[3]], [longest]):
        with db.read() as session:
            query = select(Customer.key).where(one_of(session, Customer.key, wanted))
            assert sorted(session.scalars(query)) == sorted(set(wanted) & set(keys))
