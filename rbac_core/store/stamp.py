"""A counter the processes of one machine share through a mapped file: "policy changed".

Every gate decision used to open a read transaction only to read the policy
version, so that a grant revoked by another process is refused by the very next
decision: on a small machine that transaction is 100 µs on SQLite, where the
decision itself is under one. A SQLite database is only ever used by processes
of one machine, so they can tell each other more cheaply: whoever commits a
policy change bumps this counter after the commit (store/transaction.py,
`note_policy_change`), and a reader that finds it unchanged since it last read
the version knows the version has not moved. Reading it is one memory load.

Why this is as fresh as reading the version: the bump happens after the commit
and before the writer's call returns, and a reader reads the counter *before*
it reads the version. So a decision that starts after a revocation returned
sees the bumped counter and reads the version; one that raced with it may see
the old counter, as it could have read the old version.

The file is named after the database file itself (symlinks and `file:` URIs
resolved), so every spelling of one database shares one counter. A writer that
cannot reach the file refuses to commit its change (`ensure`), rather than
change policy unannounced. What it cannot see: a writer killed between its
commit and its bump, a change made by hand in SQL, or a stamp file deleted while
processes run. Readers therefore read the version anyway once their last read
is `TRUST_S` old, and check then that their file is still the one on disk.
PostgreSQL, whose processes may run on many machines, adds a LISTEN to it
(listened_stamp.py).
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import mmap
import os
import secrets
import socket
import struct
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol
from urllib.parse import unquote, urlsplit

log = logging.getLogger(__name__)

_FORMAT = struct.Struct("<Q")
_SIZE = 16
"""The counter, then the file's random name (`origin`), zero until first asked for."""

TRUST_S = 1.0
"""How long a reader trusts an unchanged stamp before reading the version anyway."""


class PolicyStamp(Protocol):
    """What a gate and a writer need of a database's "policy changed" signal."""

    def read(self) -> int | None:
        """Moves whenever policy may have changed; None: read the version anyway."""

    def ensure(self) -> None:
        """Before a change commits: raises OSError if it could not be announced."""

    def bump(self) -> None:
        """After a change committed, before its writer hears it is done."""

    def recheck(self) -> None:
        """Now and then, after reading the version: is the signal still the right one?"""

    def origin(self) -> str:
        """Signs this process's notifications (PostgreSQL): whoever shares the signal
        has heard of them already; empty for none."""

    def check(self) -> None:
        """For a process starting: raises OSError if changes could not be announced."""

    def close(self) -> None: ...


class Stamp:
    """A 64-bit counter in the file `path` (created if missing)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._mutex = threading.Lock()
        self._map: mmap.mmap | None = None
        self._inode: tuple[int, int] | None = None
        self._origin: tuple[tuple[int, int] | None, str] | None = None
        try:
            self._open()
        except OSError as exc:  # tried again by every read and before every change
            log.warning("the policy stamp %s cannot be opened yet: %s", path, exc)

    def _open(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            if os.fstat(fd).st_size < _SIZE:
                os.ftruncate(fd, _SIZE)  # zeros: a counter that starts at 0
            mapped = mmap.mmap(fd, _SIZE)  # keeps the file open itself
            info = os.fstat(fd)
        finally:
            os.close(fd)
        # A mapping replaced here is left to go when its last reader lets go of it.
        self._map, self._inode = mapped, (info.st_dev, info.st_ino)

    def read(self) -> int | None:
        """The counter, or None when the file cannot be reached (read the version)."""
        found = self._map
        if found is None:
            try:
                self.ensure()
            except OSError:
                return None
            found = self._map
            assert found is not None
        return int(_FORMAT.unpack_from(found)[0])

    def ensure(self) -> None:
        """Open the file if it is not; raises OSError if it cannot be."""
        with self._mutex:
            if self._map is None:
                self._open()

    def recheck(self) -> None:
        """Reopen the file if the one on disk is not the one mapped (deleted, replaced)."""
        try:
            info = os.stat(self.path)
        except OSError:
            info = None
        with self._mutex:
            if info is None or (info.st_dev, info.st_ino) != self._inode:
                try:
                    self._open()
                except OSError as exc:
                    self._map = None
                    log.warning("the policy stamp %s cannot be reopened: %s", self.path, exc)

    def bump(self) -> None:
        """Move the counter on, under the file's lock: two bumps from one value would leave
        a change unseen by a reader that read between them."""
        with self._locked() as mapped:
            _FORMAT.pack_into(mapped, 0, (_FORMAT.unpack_from(mapped)[0] + 1) % 2**64)

    def origin(self) -> str:
        """This file's name among all stamps: whoever shares the file shares it, so a
        notification signed with it comes from a writer that bumped this very counter
        (listened_stamp.py). A random number the file was given once, with the machine's
        boot and host and the file's inode: a copy of the file (a cloned machine, a
        restored backup, a directory shared over the network) is another file."""
        known = self._origin
        if known is not None and known[0] == self._inode:
            return known[1]
        mapped = self._map
        found = 0 if mapped is None else _FORMAT.unpack_from(mapped, 8)[0]
        if found == 0:
            with self._locked() as mapped:
                found = _FORMAT.unpack_from(mapped, 8)[0]
                while found == 0:
                    found = secrets.randbits(64)
                _FORMAT.pack_into(mapped, 8, found)
        where = f"{found:016x}/{_boot_id()}/{socket.gethostname()}/{self._inode}"
        name = hashlib.sha256(where.encode()).hexdigest()[:32]
        self._origin = (self._inode, name)
        return name

    def check(self) -> None:
        self.ensure()

    @contextmanager
    def _locked(self) -> Iterator[mmap.mmap]:
        """The mapping of the file on disk, under its lock."""
        with self._mutex:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                info = os.fstat(fd)
                if self._map is None or (info.st_dev, info.st_ino) != self._inode:
                    self._open()
                mapped = self._map
                assert mapped is not None
                yield mapped
            finally:
                os.close(fd)  # and with it the lock

    def close(self) -> None:
        with self._mutex:
            self._map = None  # unmapped when no reader holds it any more


class LocalStamp:
    """The stamp of databases that live in this process's memory: one counter for all of
    them, as two `Database` objects may share one in-memory database."""

    _value = 0
    _mutex = threading.Lock()

    def read(self) -> int | None:
        return LocalStamp._value

    def ensure(self) -> None:
        pass

    def recheck(self) -> None:
        pass

    def bump(self) -> None:
        with LocalStamp._mutex:
            LocalStamp._value += 1

    def origin(self) -> str:
        return ""

    def check(self) -> None:
        pass

    def close(self) -> None:
        pass


def _boot_id() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id") as found:
            return found.read().strip()
    except OSError:
        return ""


def stamp_path(database: str) -> str | None:
    """Where the stamp of the SQLite database `database` (a URL's database part) lives:
    beside the real file, whatever spelling named it; None for one in memory."""
    if database.startswith("file:"):
        parts = urlsplit(database)
        if "mode=memory" in parts.query:
            return None
        database = unquote(parts.path)
    if database in ("", ":memory:"):
        return None
    return os.path.realpath(database) + ".policy-stamp"
