"""Group commit: read-only gate calls that arrive together share one write transaction.

(The combining itself, one thread running what its siblings queued, is
rbac_core/store/group_commit.py's `Combiner`.)

A read-only action (`/wa-role show`, `list`, `why`, the audit log's pages)
writes nothing but its audit entry, yet that entry must be chained to the one
before it, so every such call used to pay a write transaction of its own: a
pooled connection, the writers' lock, BEGIN IMMEDIATE, COMMIT. Under load the
threads of one process queue for that lock anyway, so the thread whose turn it
is now runs every call waiting in this process, in arrival order, in one
transaction ("flat combining"); the others find their outcome ready when their
turn comes and leave at once. Measured through gunicorn (`python -m bench
--only slack`, 8 clients), this cut the server CPU of a `/wa-role show` by
about a tenth and raised its throughput as much: fewer BEGIN/COMMIT pairs,
and the calls run back to back in one thread, where their code and data stay
warm in the CPU's caches. Calls that queue while the transaction runs join it
before it commits (up to `MAX_CALLS`): with the threads of a worker sharing
one CPU, the next caller typically reaches the gate while the one before holds
the turn, and used to wait for its own transaction.

Each call still runs the whole gate against the transaction's current state,
one after the other, so every answer and audit entry is exactly what running
them one by one would have produced. If the shared transaction fails in one
of the calls, nothing of it was committed and each call runs again alone, so
one bad call never costs another its answer or its audit entry; if it fails
on its own (BEGIN or COMMIT), every caller gets that error at once rather
than each retrying in turn while the rest of the process waits. Alone, a
call runs exactly as it did before: at low load this adds two uncontended
lock operations.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TypeVar, cast

from ..store import Database, Txn
from ..store.group_commit import Combiner, Pending

log = logging.getLogger(__name__)

T = TypeVar("T")
Work = Callable[[Txn], object]
_Call = Pending[Work, object]


class GroupCommit:
    """Runs `work(txn)` for concurrent callers, several per write transaction when they overlap."""

    MAX_CALLS = 64
    """At most this many calls share a transaction: the writers' lock is held meanwhile."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self._combine: Combiner[Work, object] = Combiner(self._run)

    def waiting(self) -> int:
        """Calls queued behind the one running (for tests)."""
        return self._combine.waiting()

    def busy(self) -> bool:
        """Whether a thread is running calls (for tests)."""
        return self._combine.busy()

    def run(self, work: Callable[[Txn], T]) -> T:
        """`work(txn)` in a write transaction, possibly shared; its result or its exception."""
        if self._db.in_transaction_here():
            # Called from inside a transaction of this thread: whoever has the turn
            # may be waiting for a lock this thread holds, so never queue behind it.
            with self._db.transaction(write=True) as txn:
                return work(txn)
        return cast(T, self._combine(work))

    def _run(self, batch: list[_Call]) -> None:
        failed_call = False
        values: list[object] = []
        try:
            with self._db.transaction(write=True) as txn:
                # Calls that queue while these run join before the commit: under load
                # a worker's threads reach the gate one after the other, each while the
                # one before holds the turn, and would otherwise commit one by one.
                while len(values) < len(batch) or self._combine.more(batch, self.MAX_CALLS):
                    try:
                        values.append(batch[len(values)].item(txn))
                    except Exception:
                        failed_call = True
                        raise
        except Exception as exc:
            if len(batch) == 1:
                batch[0].fail(exc)  # alone: its own error, raised again in its own thread
                return
            if not failed_call:
                # The transaction itself failed (could not begin or commit): running
                # the calls one by one would meet that failure once per call while
                # every other read-only caller of the process waits.
                for call in batch:
                    call.fail(exc)
                return
            log.warning(
                "a transaction shared by %d calls failed in one of them; running each alone",
                len(batch),
            )
            for call in batch:
                self._alone(call)
            return
        for call, value in zip(batch, values, strict=True):
            call.answer(value)

    def _alone(self, call: _Call) -> None:
        try:
            with self._db.transaction(write=True) as txn:
                value = call.item(txn)
        except Exception as exc:  # raised again in the caller's own thread
            call.fail(exc)
        else:
            call.answer(value)
