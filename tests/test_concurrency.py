"""Rules that must hold when requests race: last admin, single-use confirmations."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest

from rbac_core import Database, ManualClock, Outcome, build_gate
from rbac_core.clock import utcnow
from rbac_core.policy import relations
from rbac_core.policy.grant_rules import active_admins
from rbac_core.policy.relations import Resource
from rbac_core.policy.versions import bump_policy_version
from rbac_core.store import txn_of
from rbac_core.store.models import Grant

from .conftest import ADMIN, ALICE
from .helpers import live_grants


def _make_admin(db: Database, user: str, clock: ManualClock) -> None:
    """A second admin, written directly: assigning admin through the gate needs 2FA."""
    with db.write() as session:
        session.add(
            Grant(user_id=user, role="admin", scope="*", granted_by=ADMIN, granted_at=utcnow(clock))
        )
        bump_policy_version(txn_of(session), None)


def _race(calls: list[Callable[[], Outcome]]) -> list[Outcome]:
    barrier = threading.Barrier(len(calls))
    results: list[Outcome | None] = [None] * len(calls)

    def worker(i: int) -> None:
        barrier.wait()
        results[i] = calls[i]()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert all(r is not None for r in results)
    return [r for r in results if r is not None]


def test_two_admins_revoking_each_other_at_once_leave_one_admin(
    team: dict[str, str], db: Database, db_url: str, clock: ManualClock
) -> None:
    """Policy writers are serialised: the second confirmation re-checks and finds its actor
    is no longer an admin."""
    _make_admin(db, ALICE, clock)
    gates = [build_gate(Database(db_url), clock=clock) for _ in range(2)]
    a = gates[0].submit(ADMIN, "cli", "role.revoke", {"user": ALICE, "role": "admin"})
    b = gates[1].submit(ALICE, "cli", "role.revoke", {"user": ADMIN, "role": "admin"})
    assert a.status == b.status == "needs_confirmation"
    results = _race(
        [
            lambda: gates[0].confirm(a.pending_id or "", ADMIN, "cli"),
            lambda: gates[1].confirm(b.pending_id or "", ALICE, "cli"),
        ]
    )
    assert sorted(r.error_code or r.status for r in results) == ["done", "permission_denied"]
    with db.read() as session:
        assert len(active_admins(session, utcnow(clock))) == 1
    for g in gates:
        g.db.dispose()


def test_a_confirmation_clicked_twice_at_once_runs_once(
    team: dict[str, str], db: Database, db_url: str, clock: ManualClock
) -> None:
    gates = [build_gate(Database(db_url), clock=clock) for _ in range(3)]
    asked = gates[0].submit(ADMIN, "cli", "role.assign", {"user": ALICE, "role": "agent"})
    results = _race([(lambda g=g: g.confirm(asked.pending_id or "", ADMIN, "cli")) for g in gates])
    assert sorted(r.status for r in results) == ["done", "refused", "refused"]
    assert live_grants(db, ALICE) == [(ALICE, "agent", "*")]
    for g in gates:
        g.db.dispose()


def test_separation_of_duties_is_a_relation_rule_of_the_core() -> None:
    """SPEC §4 rule 7, written once (relations.py): the requester cannot decide."""
    request = Resource("access_request", "R1", {"requester": ALICE})
    broken = relations.check(request, ALICE, "access:approve", lambda _: True)
    assert broken is not None and broken.code == "separation_of_duties"
    assert "someone else must approve" in broken.refusal
    assert relations.check(request, ADMIN, "access:approve", lambda _: True) is None
    assert relations.check(request, ALICE, "roles:view", lambda _: True) is None


def test_a_write_inside_a_write_fails_at_once_on_sqlite_and_works_on_postgresql(
    db: Database,
) -> None:
    """SQLite has one writer, so a nested write could only wait for itself: it is
    refused at once. PostgreSQL locks rows, so an unrelated nested write just runs."""
    from rbac_core.store.models import User

    if db.is_sqlite:
        with db.write(), pytest.raises(RuntimeError, match="inside another"), db.write():
            pass
    else:
        with db.write(), db.write() as inner:
            inner.add(User(id="U0NESTED01", created_at=utcnow()))
    with db.write():  # either way the lock was let go
        pass
