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

What it cannot see: a writer that died between its commit and its bump, or a
change made by hand in SQL. Readers therefore read the version anyway once
their last read is `TRUST_S` old. PostgreSQL, whose processes may run on many
machines, has no stamp: its readers read the version every time.
"""

from __future__ import annotations

import fcntl
import mmap
import os
import struct
import threading

_FORMAT = struct.Struct("<Q")

TRUST_S = 1.0
"""How long a reader trusts an unchanged stamp before reading the version anyway."""


class Stamp:
    """A 64-bit counter in `path` (created if missing), or in this process alone (None)."""

    def __init__(self, path: str | None) -> None:
        self.path = path
        self._mutex = threading.Lock()
        self._local = 0
        self._map: mmap.mmap | None = None
        self._fd: int | None = None
        self._pid = os.getpid()
        if path is not None:
            self._open()

    def _open(self) -> None:
        assert self.path is not None
        # Inherited across a fork: this process's copy of the descriptor. The old mapping is
        # left to go when the last reader of it lets go (closing it under one would fail).
        if self._fd is not None:
            os.close(self._fd)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        if os.fstat(fd).st_size < _FORMAT.size:
            os.ftruncate(fd, _FORMAT.size)  # zeros: a counter that starts at 0
        self._fd, self._map = fd, mmap.mmap(fd, _FORMAT.size)
        self._pid = os.getpid()

    def read(self) -> int:
        found = self._map
        if found is None:
            if self.path is None:
                return self._local
            with self._mutex:  # closed (the database disposed, then used again): reopen
                if self._map is None:
                    self._open()
            found = self._map
            assert found is not None
        return int(_FORMAT.unpack_from(found)[0])

    def bump(self) -> None:
        """Move the counter on. Writers take the file's lock, so no bump is lost to another
        (two bumps from the same value would leave one change unseen)."""
        with self._mutex:
            if self.path is None:
                self._local += 1
                return
            if self._map is None or self._pid != os.getpid():
                self._open()  # closed, or after a fork: flock locks belong to an open file
            mapped, fd = self._map, self._fd
            assert mapped is not None and fd is not None
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                _FORMAT.pack_into(mapped, 0, (_FORMAT.unpack_from(mapped)[0] + 1) % 2**64)
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)

    def close(self) -> None:
        if self._map is not None and self._pid == os.getpid():
            self._map.close()
            assert self._fd is not None
            os.close(self._fd)
        self._map, self._fd = None, None
