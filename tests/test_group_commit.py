"""Read-only gate calls that overlap share one write transaction (group commit).

The promise to callers is that sharing is invisible: each call gets its own
answer (or its own exception), every audit entry is chained and committed
before its caller hears back, and one failing call never costs another
anything.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import OperationalError

from rbac_core import Database, Gate, Outcome
from rbac_core import audit as audit_log
from rbac_core.clock import utcnow
from rbac_core.gate.batching import GroupCommit
from rbac_core.store import Txn
from rbac_core.store.models import AuditEntry, User

from .conftest import ADMIN, ALICE, BOB, CAROL

JOIN_SECONDS = 30


class Held:
    """A first call that keeps the turn until released, so later calls queue behind it."""

    def __init__(self) -> None:
        self.started = threading.Event()
        self.release = threading.Event()

    def work(self, txn: Txn) -> str:
        self.started.set()
        assert self.release.wait(JOIN_SECONDS)
        return "held"


def _in_thread(
    commit: GroupCommit, work: Callable[[Txn], Any], results: dict[str, Any], name: str
) -> threading.Thread:
    def call() -> None:
        try:
            results[name] = commit.run(work)
        except BaseException as exc:  # the caller's own exception, in the caller's thread
            results[name] = exc

    thread = threading.Thread(target=call)
    thread.start()
    return thread


def _queue_behind(
    commit: GroupCommit, held: Held, calls: dict[str, Callable[[Txn], Any]]
) -> dict[str, Any]:
    """Run `held` first, queue `calls` behind it in order, then let everything finish."""
    results: dict[str, Any] = {}
    threads = [_in_thread(commit, held.work, results, "held")]
    assert held.started.wait(JOIN_SECONDS)
    deadline = time.monotonic() + JOIN_SECONDS
    for queued, (name, work) in enumerate(calls.items(), start=1):
        threads.append(_in_thread(commit, work, results, name))
        while commit.waiting() < queued:  # waiting for its turn, behind the ones before
            assert time.monotonic() < deadline, "the calls never queued"
            time.sleep(0.001)
    held.release.set()
    for thread in threads:
        thread.join(JOIN_SECONDS)
    return results


def _register(user: str, seen: list[Txn]) -> Callable[[Txn], str]:
    def work(txn: Txn) -> str:
        seen.append(txn)
        txn.session.add(User(id=user, created_at=utcnow()))
        return user

    return work


def _users(db: Database, *ids: str) -> int:
    with db.read() as session:
        return int(session.scalar(select(func.count()).where(User.id.in_(ids))) or 0)


def test_calls_queued_behind_a_running_one_share_one_transaction_in_order(db: Database) -> None:
    commit = GroupCommit(db)
    seen: list[Txn] = []
    names = ("U0GROUPA1", "U0GROUPB2", "U0GROUPC3")
    results = _queue_behind(commit, Held(), {n: _register(n, seen) for n in names})

    assert results == {"held": "held", **{n: n for n in names}}
    assert len(seen) == 3 and seen[0] is seen[1] is seen[2]  # one shared transaction
    assert _users(db, *names) == 3


def test_a_call_that_fails_costs_the_others_nothing(db: Database) -> None:
    commit = GroupCommit(db)
    seen: list[Txn] = []

    def broken(txn: Txn) -> str:
        seen.append(txn)
        raise ValueError("this call is broken")

    calls = {
        "U0GROUPD4": _register("U0GROUPD4", seen),
        "broken": broken,
        "U0GROUPE5": _register("U0GROUPE5", seen),
    }
    results = _queue_behind(commit, Held(), calls)

    assert results["U0GROUPD4"] == "U0GROUPD4"
    assert results["U0GROUPE5"] == "U0GROUPE5"
    assert isinstance(results["broken"], ValueError)
    # The shared attempt stopped at the broken call and was rolled back whole;
    # then each call ran again alone, so every registration exists exactly once.
    assert _users(db, "U0GROUPD4", "U0GROUPE5") == 2
    shared, alone = seen[:2], seen[2:]
    assert shared[0] is shared[1]
    assert len(alone) == 3 and len({id(txn) for txn in alone}) == 3


def test_an_interrupted_batch_answers_every_caller_and_commits_nothing(db: Database) -> None:
    """SystemExit (or KeyboardInterrupt) in the thread running a batch goes on in that
    thread; every other caller still hears back, with an error of its own."""
    commit = GroupCommit(db)
    seen: list[Txn] = []

    def leaves(txn: Txn) -> str:
        raise SystemExit(3)

    calls = {
        "U0GROUPG7": _register("U0GROUPG7", seen),
        "leaves": leaves,
        "U0GROUPH8": _register("U0GROUPH8", seen),
    }
    results = _queue_behind(commit, Held(), calls)

    # The calls queued behind the held one joined its transaction, so the held call's
    # thread ran `leaves`: SystemExit goes on there, every other caller gets an error.
    assert isinstance(results["held"], SystemExit)
    assert [type(results[name]).__name__ for name in calls] == ["RuntimeError"] * 3
    assert _users(db, "U0GROUPG7", "U0GROUPH8") == 0


class FailingDatabase:
    """A database whose transactions never commit, counting how often one is tried."""

    def __init__(self) -> None:
        self.attempts = 0

    def in_transaction_here(self) -> bool:
        return False

    @contextmanager
    def transaction(self, *, write: bool) -> Iterator[Any]:
        self.attempts += 1
        yield object()
        raise OperationalError("COMMIT", {}, Exception("database is locked"))


def test_a_transaction_that_cannot_commit_fails_every_caller_at_once() -> None:
    """Retrying each call alone would meet the same failure once per call while every
    other read-only caller of the process waits behind them."""
    failing = FailingDatabase()
    commit = GroupCommit(failing)  # type: ignore[arg-type]
    results = _queue_behind(commit, Held(), {name: (lambda txn: "ok") for name in "abc"})

    assert all(isinstance(results[name], OperationalError) for name in ("held", *"abc"))
    assert failing.attempts == 1  # the calls queued meanwhile joined the held one's attempt


def test_a_read_only_call_inside_a_transaction_never_waits_for_its_turn(
    db: Database, gate: Gate, team: dict[str, str]
) -> None:
    """Another thread may have the turn and be waiting for the writers' lock this thread
    holds: queueing behind it would hang both, and every read-only call after them.
    SQLite refuses the nested write at once, as before; PostgreSQL runs it."""
    inside = threading.Event()
    nested_answer: list[object] = []
    other_answer: list[Outcome] = []

    def holds_a_transaction() -> None:
        try:
            with db.write():
                inside.set()
                deadline = time.monotonic() + JOIN_SECONDS
                while db.is_sqlite and not gate._read_only.busy():
                    assert time.monotonic() < deadline  # the other caller has the turn
                    time.sleep(0.001)
                nested_answer.append(gate.submit(ALICE, "cli", "role.show", {}))
        except RuntimeError as exc:
            nested_answer.append(exc)

    def asks_meanwhile() -> None:
        assert inside.wait(JOIN_SECONDS)
        other_answer.append(gate.submit(BOB, "cli", "role.show", {}))

    threads = [
        threading.Thread(target=f, daemon=True) for f in (holds_a_transaction, asks_meanwhile)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(JOIN_SECONDS)
    assert not any(t.is_alive() for t in threads), "a read-only call inside a transaction hung"
    assert other_answer[0].status == "done"
    if db.is_sqlite:
        assert isinstance(nested_answer[0], RuntimeError)
        assert "inside another" in str(nested_answer[0])
    else:
        assert isinstance(nested_answer[0], Outcome) and nested_answer[0].status == "done"


class HeldSeeing(Held):
    """A held first call that also notes the transaction it ran in."""

    def __init__(self, seen: list[Txn]) -> None:
        super().__init__()
        self.seen = seen

    def work(self, txn: Txn) -> str:
        self.seen.append(txn)
        return super().work(txn)


def test_calls_that_queue_while_a_transaction_runs_join_it_before_it_commits(
    db: Database,
) -> None:
    commit = GroupCommit(db)
    seen: list[Txn] = []
    names = ("U0JOINA01", "U0JOINB02")
    results = _queue_behind(commit, HeldSeeing(seen), {n: _register(n, seen) for n in names})

    assert results == {"held": "held", **{n: n for n in names}}
    assert len(seen) == 3 and seen[0] is seen[1] is seen[2]  # the held call's transaction
    assert _users(db, *names) == 2


def test_no_more_calls_than_the_limit_share_a_transaction(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(GroupCommit, "MAX_CALLS", 2)
    commit = GroupCommit(db)
    seen: list[Txn] = []
    names = ("U0LIMITA1", "U0LIMITB2", "U0LIMITC3")
    results = _queue_behind(commit, HeldSeeing(seen), {n: _register(n, seen) for n in names})

    assert results == {"held": "held", **{n: n for n in names}}
    held, first, second, third = seen
    assert held is first and second is third and first is not second
    assert _users(db, *names) == 3


def test_a_call_alone_runs_in_a_transaction_of_its_own(db: Database) -> None:
    commit = GroupCommit(db)
    seen: list[Txn] = []
    assert commit.run(_register("U0GROUPF6", seen)) == "U0GROUPF6"
    with pytest.raises(ZeroDivisionError):
        commit.run(lambda txn: 1 // 0)
    assert _users(db, "U0GROUPF6") == 1


def test_concurrent_shows_each_get_their_own_answer_and_audit_entry(
    db: Database, gate: Gate, team: dict[str, str]
) -> None:
    """Sixteen threads asking at once: every answer is the caller's, and the chain holds."""
    actors = [ADMIN, ALICE, BOB, CAROL] * 4
    barrier = threading.Barrier(len(actors))
    outcomes: list[Outcome | None] = [None] * len(actors)

    def ask(i: int) -> None:
        barrier.wait(JOIN_SECONDS)
        outcomes[i] = gate.submit(actors[i], "slack", "role.show", {})

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(len(actors))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(JOIN_SECONDS)

    done = [o for o in outcomes if o is not None]
    assert len(done) == len(actors) and all(o.status == "done" for o in done)
    seqs = [o.audit_seq for o in done]
    assert len(set(seqs)) == len(actors)
    with db.read() as session:
        entries = {
            e.seq: e for e in session.scalars(select(AuditEntry).where(AuditEntry.seq.in_(seqs)))
        }
    for actor, outcome in zip(actors, done, strict=True):
        assert outcome.data["user"] == actor
        entry = entries[outcome.audit_seq]
        assert (entry.actor, entry.action, entry.decision) == (actor, "role.show", "allow")
    with db.snapshot() as conn:
        assert audit_log.verify(conn).ok
