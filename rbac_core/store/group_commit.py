"""Flat combining: calls from concurrent threads of one process, run several at a time.

A write's fixed cost dwarfs a small write: the writers' lock (SQLite has one
writer across every process), BEGIN and COMMIT, a WAL flush. Under load the
threads of a process queue for that anyway, so the thread whose turn it is
runs every call waiting in this process at once, and the others find their
outcome ready when their turn comes and leave. Alone, a call runs at once: at
low load this costs two uncontended lock operations, no timer, no delay.

Two users: read-only gate calls sharing one write transaction for their audit
entries (rbac_core/gate/batching.py), and webhook bodies stored by one
multi-row statement (webhook_inbox.py). Each supplies `run(batch)`, which
must answer or fail every call of the batch; how one failure spares the other
calls is theirs to decide.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class Pending(Generic[T, R]):
    """One caller's item and, once its batch ran, its result or the exception to raise."""

    __slots__ = ("answered", "done", "error", "item", "value")

    def __init__(self, item: T) -> None:
        self.item = item
        self.done = False
        self.answered = False  # value or error is set
        self.value: R | None = None
        self.error: BaseException | None = None

    def answer(self, value: R) -> None:
        self.value, self.answered = value, True

    def fail(self, error: BaseException) -> None:
        self.error, self.answered = error, True


class Combiner(Generic[T, R]):
    """`combiner(item)`: `run` gets every item queued meanwhile in this process, in order."""

    def __init__(self, run: Callable[[list[Pending[T, R]]], None]) -> None:
        self._run = run
        self._turn = threading.Lock()  # whoever holds it runs everything queued so far
        self._queued: list[Pending[T, R]] = []
        self._queue_lock = threading.Lock()  # held only to append or take the queue

    def waiting(self) -> int:
        """Calls queued for the next turn (for tests and operators)."""
        with self._queue_lock:
            return len(self._queued)

    def busy(self) -> bool:
        """Whether a thread has the turn (is running a batch)."""
        return self._turn.locked()

    def __call__(self, item: T) -> R:
        call: Pending[T, R] = Pending(item)
        with self._queue_lock:
            self._queued.append(call)
        with self._turn:
            if not call.done:
                with self._queue_lock:
                    batch, self._queued = self._queued, []
                self._run_batch(batch)  # holds this call: nobody took the queue since
        if call.error is not None:
            raise call.error
        if not call.answered:
            raise RuntimeError("a combined call was neither answered nor failed")
        return call.value  # type: ignore[return-value]

    def more(self, batch: list[Pending[T, R]], limit: int) -> bool:
        """Move calls queued since `batch` was taken onto its end, up to `limit` calls in
        all; whether any came. Only for `run`, while it holds the turn: what it adds is
        answered, failed and marked done with the rest of the batch."""
        room = limit - len(batch)
        if room <= 0:
            return False
        with self._queue_lock:
            taken, self._queued = self._queued[:room], self._queued[room:]
        batch.extend(taken)
        return bool(taken)

    def _run_batch(self, batch: list[Pending[T, R]]) -> None:
        try:
            self._run(batch)
        except BaseException as exc:  # KeyboardInterrupt, SystemExit, a bug in `run`
            for call in batch:
                if not call.answered:
                    interrupted = RuntimeError("interrupted while running a combined batch")
                    interrupted.__cause__ = exc
                    call.fail(interrupted)
            if not isinstance(exc, Exception):
                raise
        finally:
            for call in batch:
                call.done = True
