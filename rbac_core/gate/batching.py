"""Group commit: read-only gate calls that arrive together share one write transaction.

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
warm in the CPU's caches.

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
import threading
from collections.abc import Callable
from typing import Generic, TypeVar, cast

from ..store import Database, Txn

log = logging.getLogger(__name__)

T = TypeVar("T")


class _Call(Generic[T]):
    """One caller's work and, once it ran, its result or the exception it raised."""

    __slots__ = ("answered", "done", "error", "value", "work")

    def __init__(self, work: Callable[[Txn], T]) -> None:
        self.work = work
        self.done = False
        self.answered = False  # value or error is set
        self.value: T | None = None
        self.error: BaseException | None = None

    def answer(self, value: T) -> None:
        self.value, self.answered = value, True

    def fail(self, error: BaseException) -> None:
        self.error, self.answered = error, True


class GroupCommit:
    """Runs `work(txn)` for concurrent callers, several per write transaction when they overlap."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self._turn = threading.Lock()  # whoever holds it runs everything queued so far
        self._queued: list[_Call[object]] = []
        self._queue_lock = threading.Lock()  # held only to append or take the queue

    def run(self, work: Callable[[Txn], T]) -> T:
        """`work(txn)` in a write transaction, possibly shared; its result or its exception."""
        if self._db.in_transaction_here():
            # Called from inside a transaction of this thread: whoever has the turn
            # may be waiting for a lock this thread holds, so never queue behind it.
            with self._db.transaction(write=True) as txn:
                return work(txn)
        call: _Call[T] = _Call(work)
        with self._queue_lock:
            self._queued.append(cast("_Call[object]", call))  # a string: no runtime cost
        with self._turn:
            if not call.done:
                with self._queue_lock:
                    batch, self._queued = self._queued, []
                self._run(batch)  # holds this call: nobody took the queue since it joined
        if call.error is not None:
            raise call.error
        return cast(T, call.value)

    def _run(self, batch: list[_Call[object]]) -> None:
        try:
            if len(batch) == 1:
                self._alone(batch[0])
                return
            failed_call = False
            try:
                with self._db.transaction(write=True) as txn:
                    values = []
                    for call in batch:
                        try:
                            values.append(call.work(txn))
                        except Exception:
                            failed_call = True
                            raise
            except Exception as exc:
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
        except BaseException as exc:  # KeyboardInterrupt, SystemExit: the combiner's own
            for call in batch:
                if not call.answered:
                    interrupted = RuntimeError("interrupted while sharing a transaction")
                    interrupted.__cause__ = exc
                    call.fail(interrupted)
            raise
        finally:
            for call in batch:
                call.done = True

    def _alone(self, call: _Call[object]) -> None:
        try:
            with self._db.transaction(write=True) as txn:
                value = call.work(txn)
        except Exception as exc:  # raised again in the caller's own thread
            call.fail(exc)
        else:
            call.answer(value)
