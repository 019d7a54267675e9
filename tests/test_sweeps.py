"""Expiry sweeps: what ran out is marked once, its owner told once (a notice in the outbox,
written in the sweep's transaction), on any number of replicas."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import select

from handlers.scheduled.jobs import sweep_expired
from rbac_core import Database, Gate, ManualClock, build_gate
from rbac_core.store.models import AccessRequest, Grant, PendingAction

from .conftest import ADMIN, ALICE, BOB
from .helpers import audit_rows, live_grants, notices, run

pytestmark = pytest.mark.usefixtures("team")


def told(db: Database) -> list[tuple[str, str]]:
    """(person, text) of every expiry notice in the outbox: what the worker will DM."""
    return [(to.removeprefix("person:"), data["text"]) for _, to, data in notices(db, "expired")]


def test_an_expired_grant_is_marked_and_its_holder_told(
    gate: Gate, db: Database, clock: ManualClock
) -> None:
    assert run(gate, ADMIN, "role.assign", user=ALICE, role="agent", **{"for": "1h"}).ok
    clock.advance(2 * 3600)
    outcome = sweep_expired(gate)
    assert outcome is not None and outcome.status == "done"
    assert live_grants(db, ALICE) == []
    with db.read() as session:
        grant = session.scalars(select(Grant).where(Grant.user_id == ALICE)).one()
        assert (grant.revoked_by, grant.revoke_reason) == ("system", "expired")
        assert grant.revoked_at == grant.expires_at
    [(user, text)] = told(db)
    assert user == ALICE and text.startswith("Your agent access in the whole workspace expired")
    entry = audit_rows(db)[-1]
    assert (entry.actor, entry.surface, entry.action, entry.outcome) == (
        "scheduler",
        "scheduler",
        "system.sweep",
        "done",
    )
    assert '"grant":1' in entry.details


def test_an_idle_sweep_writes_nothing_at_all(gate: Gate, db: Database) -> None:
    entries = len(audit_rows(db))
    assert sweep_expired(gate) is None
    assert len(audit_rows(db)) == entries


def test_an_unconfirmed_action_and_an_undecided_request_expire_and_their_owners_hear(
    gate: Gate, db: Database, clock: ManualClock
) -> None:
    assert run(gate, ADMIN, "role.assign", user=ALICE, role="support").ok
    asked = gate.submit(ADMIN, "slack", "role.assign", {"user": BOB, "role": "agent"})
    assert asked.status == "needs_confirmation"
    request = gate.submit(
        ALICE, "slack", "access.request", {"role": "agent", "for": "4h", "reason": "night shift"}
    )
    assert request.status == "done"
    clock.advance(25 * 3600)
    sweep_expired(gate)
    with db.read() as session:
        pending = session.get(PendingAction, asked.pending_id)
        assert pending is not None and pending.status == "expired"
        assert session.scalars(select(AccessRequest.status)).all() == ["expired"]
    heard = dict(told(db))
    assert "expired before it was confirmed; nothing was done" in heard[ADMIN]
    assert "Your request for agent in the whole workspace expired" in heard[ALICE]
    refused = gate.confirm(str(asked.pending_id), ADMIN, "slack")
    assert refused.error_code == "pending_used"  # marked: it can never run now


def test_replicas_sweeping_at_once_mark_and_tell_each_thing_once(
    gate: Gate, db_url: str, db: Database, clock: ManualClock
) -> None:
    for user in (ALICE, BOB):
        assert run(gate, ADMIN, "role.assign", user=user, role="agent", **{"for": "1h"}).ok
    clock.advance(2 * 3600)
    replicas = [Database(db_url) for _ in range(3)]
    gates = [build_gate(each, clock=clock) for each in replicas]
    start = threading.Barrier(len(gates))

    def sweep(each: Gate) -> None:
        start.wait()
        sweep_expired(each)

    threads = [threading.Thread(target=sweep, args=(g,)) for g in gates]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    for each in replicas:
        each.dispose()
    assert sorted(user for user, _ in told(db)) == [ALICE, BOB]


def test_a_chat_surface_cannot_sweep(gate: Gate) -> None:
    outcome = gate.submit(ADMIN, "slack", "system.sweep", {})
    assert (outcome.status, outcome.error_code) == ("refused", "operator_only")
