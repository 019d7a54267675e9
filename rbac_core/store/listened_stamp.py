"""PostgreSQL's "policy changed" signal: this machine's stamp, and a LISTEN for the rest.

Reading the policy version for every decision cost a round trip to the server
(580 µs here) where the decision itself is under one. SQLite's processes share a
machine, so a mapped counter tells them (stamp.py). PostgreSQL's may not, so its
signal has two halves, and a decision trusts its snapshot only while both stand
still:

- **This machine: the same mapped counter,** in one directory every process of
  the deployment shares (`stamp_directory`: `WA_STAMP_DIR`, else a per-user one in
  /dev/shm, which services and login sessions see alike) and named after the
  database itself (the cluster's system identifier, the database's oid and the
  schema), so every spelling of its URL shares one. A writer bumps it after its
  commit and before its call returns, so the very next decision of any process
  sharing the directory sees it. Processes that do not share it (another user,
  another WA_STAMP_DIR) are as good as on another machine.
  Its notifications are signed with the file's random name (`Stamp.origin`): the
  processes sharing that file have seen the bump and ignore them.
- **Other machines: `NOTIFY`,** sent inside the transaction that bumps the version
  (delivered at commit, never for a rollback, and even if the writer dies right
  after). One thread per process and server holds a connection that LISTENs and
  counts what it hears. A process elsewhere learns of a change when the
  notification reaches it: a fraction of a millisecond on one network, measured
  by `python -m bench --only engines`. That is the one freshness this gives up
  against reading the version every time, and only across machines.

While the listening connection is down (not yet up, lost, reconnecting) `read`
returns None and every decision reads the version, as before. Reconnecting
counts as hearing something, since notifications sent meanwhile were lost. And
as on SQLite, a reader reads the version anyway once its last read is
`TRUST_S` old, which bounds whatever this cannot see (a connection that died
without the thread noticing yet, or a pooler such as PgBouncer in transaction mode,
behind which LISTEN hears nothing: point this process's DATABASE_URL at the server).
"""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
import stat
import tempfile
import threading
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import Engine

from .stamp import Stamp

log = logging.getLogger(__name__)

CHANNEL = "wa_access_policy"
NOTIFY = f"SELECT pg_notify('{CHANNEL}', %s)"
"""Run in the transaction that changes policy (transaction.py `note_policy_change`)."""

APPLICATION = "wa-access policy listener"
"""The listening connection's name in pg_stat_activity."""

PING_S = 5.0
"""How often a quiet listening connection is checked with a query of its own."""

_IDENTITY = (
    "SELECT (SELECT system_identifier FROM pg_control_system())::text,"
    " (SELECT oid FROM pg_database WHERE datname = current_database())::text,"
    " current_schema()"
)

Connect = Callable[[], Any]
"""Opens a new autocommit psycopg connection to the database."""


STAMP_DIR_ENV = "WA_STAMP_DIR"


def stamp_directory() -> str:
    """Where this deployment's processes keep their stamps: `WA_STAMP_DIR` if set, else
    `wa-access-<uid>` in /dev/shm (or the temporary directory without one), made
    private. OSError if it is anyone else's or others may write in it: they could set
    a counter back and hide a change."""
    where = os.environ.get(STAMP_DIR_ENV)
    if not where:
        base = "/dev/shm" if os.path.isdir("/dev/shm") else tempfile.gettempdir()
        where = os.path.join(base, f"wa-access-{os.getuid()}")
        os.makedirs(where, mode=0o700, exist_ok=True)
    info = os.lstat(where)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o022:
        raise OSError(
            f"{where} must be a directory of this user's that only it may write "
            f"(set {STAMP_DIR_ENV} to one)"
        )
    return where


class Listener:
    """A thread holding a connection that LISTENs, counting what it hears.

    `heard` moves on every notification and every (re)connection; `healthy` says
    whether the connection is up, so that nothing is missed between two reads of
    `heard` that agree. One per process and database (`listener_for`).
    """

    def __init__(self, connect: Connect) -> None:
        self._connect = connect
        # Random, not 0: a listener made after a fork must never repeat the counts of
        # the parent's, whose snapshot the child inherited with its trust.
        self.heard = secrets.randbits(64)
        self.healthy = False
        self.identity: str | None = None
        self.ignored: set[str] = set()
        """Origins heard of through a stamp file already (see `ListenedStamp`)."""
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="policy-listener", daemon=True)
        self._thread.start()

    def wait_identity(self, timeout: float) -> str:
        """The database's identity; OSError if it could not be read in `timeout`."""
        if not self._ready.wait(timeout) or self.identity is None:
            raise OSError("the database could not be reached to name its policy stamp")
        return self.identity

    def _run(self) -> None:
        pause = 0.1
        while True:
            try:
                with self._connect() as conn:
                    self._listen(conn)
                    pause = 0.1
                    while True:
                        for notice in conn.notifies(timeout=PING_S):
                            if notice.payload not in self.ignored:
                                self.heard = (self.heard + 1) % 2**64
                        conn.execute("SELECT 1")  # a connection gone quietly is found out
            except Exception as exc:  # logged, and tried again: the thread must outlive it
                log.warning("listening for policy changes failed, reconnecting: %s", exc)
            finally:
                self.healthy = False
                self.heard = (self.heard + 1) % 2**64
                self._ready.set()  # whoever waits for the identity stops waiting
            time.sleep(pause)
            pause = min(pause * 2, PING_S)

    def _listen(self, conn: Any) -> None:
        if self.identity is None:
            row = conn.execute(_IDENTITY).fetchone()
            self.identity = hashlib.sha256("/".join(row).encode()).hexdigest()[:32]
        conn.execute(f"LISTEN {CHANNEL}")
        self.heard = (self.heard + 1) % 2**64  # whatever was sent before this went unheard
        self.healthy = True
        self._ready.set()


_listeners: dict[tuple[int, str], Listener] = {}
_listeners_lock = threading.Lock()


def _after_fork_in_child() -> None:
    """A lock another thread held at the fork stays held in the child for good."""
    global _listeners_lock
    _listeners_lock = threading.Lock()


os.register_at_fork(after_in_child=_after_fork_in_child)


def listener_for(engine: Engine) -> Listener:
    """This process's listener for `engine`'s database, started on first use (never
    before a fork: a thread and a connection do not survive one)."""
    import psycopg

    _, params = engine.dialect.create_connect_args(engine.url)
    params = {k: v for k, v in params.items() if k != "context"}
    key = (os.getpid(), repr(sorted(params.items())))
    with _listeners_lock:
        found = _listeners.get(key)
        if found is None:
            found = _listeners[key] = Listener(
                lambda: psycopg.connect(**params, autocommit=True, application_name=APPLICATION)
            )
        return found


class ListenedStamp:
    """The policy stamp of a PostgreSQL database (see the module's docstring).

    Same interface as `Stamp`: `read` before reading the version, `ensure` before
    committing a change, `bump` after.
    """

    CONNECT_WAIT_S = 10.0

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._pid = -1
        self._listener: Listener | None = None
        self._file: Stamp | None = None
        self._mutex = threading.Lock()

    def _parts(self, wait: float) -> tuple[Listener, Stamp | None]:
        listener, file = self._listener, self._file
        if listener is not None and file is not None and self._pid == os.getpid():
            return listener, file
        if self._pid != os.getpid():
            # Just forked (or first use): the child has one thread, and a mutex held by
            # another of the parent's would never be released.
            self._mutex = threading.Lock()
        with self._mutex:
            if self._pid != os.getpid():
                self._listener, self._file, self._pid = (
                    listener_for(self._engine),
                    None,
                    os.getpid(),
                )
            listener = self._listener
            assert listener is not None
            if self._file is None and (listener.identity is not None or wait > 0):
                name = listener.wait_identity(wait)
                file = Stamp(os.path.join(stamp_directory(), f"policy-{name}.stamp"))
                try:
                    listener.ignored.add(file.origin())
                except OSError as exc:
                    log.warning("the policy stamp %s cannot be opened yet: %s", file.path, exc)
                self._file = file
            return listener, self._file

    def read(self) -> int | None:
        """None while the listener is not up or the stamp cannot be reached: read the
        version. Otherwise a number that moves with any change either half sees."""
        try:
            listener, file = self._parts(0.0)
        except OSError:
            return None
        heard = listener.heard
        if not listener.healthy or file is None:
            return None
        here = file.read()
        return None if here is None else (heard << 64) | here

    def ensure(self) -> None:
        """Before a change commits: OSError if this machine's stamp cannot be bumped."""
        _, file = self._parts(self.CONNECT_WAIT_S)
        assert file is not None
        file.ensure()

    def bump(self) -> None:
        _, file = self._parts(self.CONNECT_WAIT_S)
        assert file is not None
        file.bump()

    def origin(self) -> str:
        """After `ensure`: this machine's file's name, which its notifications carry."""
        listener, file = self._parts(self.CONNECT_WAIT_S)
        assert file is not None
        name = file.origin()
        listener.ignored.add(name)
        return name

    @property
    def path(self) -> str | None:
        """This machine's stamp file, once the database has been named."""
        file = self._file
        return file.path if file is not None and self._pid == os.getpid() else None

    def check(self) -> None:
        """For a process starting: OSError if this machine's stamps cannot be kept."""
        stamp_directory()

    def recheck(self) -> None:
        file = self._file
        if file is not None and self._pid == os.getpid():
            file.recheck()

    def close(self) -> None:
        """The listener is the process's, shared by every `Database` of this database."""
