"""Read-only gate calls that overlap share one write transaction (group commit).

The promise to callers is that sharing is invisible: each call gets its own
answer (or its own exception), every audit entry is chained and committed
before its caller hears back, and one failing call never costs another
anything.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import func, select

from rbac_core import Database, Gate, Outcome
from rbac_core import audit as audit_log
from rbac_core.clock import utcnow
from rbac_core.db import Txn
from rbac_core.group_commit import GroupCommit
from rbac_core.models import AuditEntry, User

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
        except Exception as exc:  # the caller's own exception, in the caller's thread
            results[name] = exc

    thread = threading.Thread(target=call)
    thread.start()
    return thread


def _queue_behind(
    commit: GroupCommit, held: Held, calls: dict[str, Callable[[Txn], Any]]
) -> dict[str, Any]:
    """Run `held` first, queue `calls` behind it, then let everything finish."""
    results: dict[str, Any] = {}
    threads = [_in_thread(commit, held.work, results, "held")]
    assert held.started.wait(JOIN_SECONDS)
    threads += [_in_thread(commit, work, results, name) for name, work in calls.items()]
    deadline = time.monotonic() + JOIN_SECONDS
    while len(commit._queued) < len(calls):  # every later call is waiting for its turn
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
