"""A process behind on policy catches up by reloading only the people a change named.

Two gates on one database stand for two processes: each has its own policy
snapshot, and the second sees the first's changes only through the database.
Whatever path it takes, its snapshot must equal one loaded from scratch.
"""

from __future__ import annotations

import random

import pytest
from sqlalchemy import delete, select

from handlers.scheduled.jobs import sweep_expired
from rbac_core import Database, Gate, ManualClock, build_gate
from rbac_core.policy import Policy, load_policy
from rbac_core.policy.versions import read_policy_version
from rbac_core.store.models import PolicyChange, ReviewFinding

from .conftest import ADMIN, ALICE, BOB, CAROL
from .helpers import run

NUMBER = "+15550001111"


@pytest.fixture
def other(db: Database, clock: ManualClock, team: dict[str, str]) -> Gate:
    """A second process: its own snapshot, warmed up before the changes under test."""
    gate = build_gate(db, clock=clock)
    gate.policy()
    return gate


def from_scratch(db: Database) -> Policy:
    with db.transaction(write=False) as txn:
        return load_policy(txn.session, version=read_policy_version(txn))


def same(snapshot: Policy, scratch: Policy) -> None:
    assert snapshot.version == scratch.version
    assert snapshot.grants_by_user == scratch.grants_by_user
    assert snapshot.roles == scratch.roles
    assert snapshot.closure == scratch.closure


def test_an_assignment_elsewhere_reloads_only_that_person(
    gate: Gate, other: Gate, db: Database
) -> None:
    full_before = other.policies.full_reloads
    assert not other.decide(ALICE, "messages:send_text").allowed
    assert run(gate, ADMIN, "role.assign", user=ALICE, role="agent").ok
    assert other.decide(ALICE, "messages:send_text").allowed
    assert other.policies.full_reloads == full_before
    assert other.policies.partial_reloads == 1
    same(other.policy(), from_scratch(db))


def test_revoking_and_deactivating_elsewhere_take_effect_at_once(
    gate: Gate, other: Gate, db: Database
) -> None:
    assert run(gate, ADMIN, "role.assign", user=ALICE, role="agent").ok
    assert run(gate, ADMIN, "role.assign", user=BOB, role="agent").ok
    assert other.decide(ALICE, "messages:send_text").allowed
    assert run(gate, ADMIN, "role.revoke", user=ALICE, role="agent").ok
    assert not other.decide(ALICE, "messages:send_text").allowed
    assert run(gate, ADMIN, "user.deactivate", user=BOB).ok
    assert not other.decide(BOB, "messages:send_text").allowed
    assert other.policies.partial_reloads == 3
    same(other.policy(), from_scratch(db))


def test_a_role_change_elsewhere_reloads_everything(gate: Gate, other: Gate, db: Database) -> None:
    assert run(gate, ADMIN, "role.create", name="night", perms=["messages:send_text"]).ok
    full_before = other.policies.full_reloads
    assert run(gate, ADMIN, "role.assign", user=ALICE, role="night").ok
    assert other.decide(ALICE, "messages:send_text").allowed
    assert other.policies.full_reloads == full_before + 1  # role.create named nobody
    same(other.policy(), from_scratch(db))


def test_a_snapshot_older_than_the_kept_changes_reloads_everything(
    gate: Gate, other: Gate, db: Database
) -> None:
    assert run(gate, ADMIN, "role.assign", user=ALICE, role="agent").ok
    with db.write() as session:
        session.execute(delete(PolicyChange))  # as if pruned
    full_before = other.policies.full_reloads
    assert other.decide(ALICE, "messages:send_text").allowed
    assert other.policies.full_reloads == full_before + 1
    same(other.policy(), from_scratch(db))


def test_an_expiry_sweep_elsewhere_reloads_the_owners_of_expired_grants(
    gate: Gate, other: Gate, db: Database, clock: ManualClock
) -> None:
    assert run(gate, ADMIN, "role.assign", user=ALICE, role="agent", **{"for": "1h"}).ok
    other.policy()
    clock.advance(2 * 3600)
    outcome = sweep_expired(gate)
    assert outcome is not None and outcome.status == "done"
    full_before = other.policies.full_reloads
    assert not other.decide(ALICE, "messages:send_text").allowed
    assert other.policies.full_reloads == full_before
    same(other.policy(), from_scratch(db))


def review_findings(gate: Gate, db: Database, clock: ManualClock) -> dict[str, ReviewFinding]:
    """Open and build an access review now; its findings by the person they are about."""
    opened = gate.submit("operator", "cli", "audit.review", {"days": 30})
    assert opened.status == "done", opened.message
    built = gate.submit("operator", "cli", "review.build", {"review": opened.data["review_id"]})
    assert built.status == "done", built.message
    with db.read() as session:
        return {f.user_id: f for f in session.scalars(select(ReviewFinding))}


def test_review_buttons_pressed_elsewhere_take_effect_at_once(
    gate: Gate, other: Gate, db: Database, clock: ManualClock
) -> None:
    """Revoke ends an idle grant; Keep on an expiring one extends it past its old end."""
    assert run(gate, ADMIN, "role.assign", user=ALICE, role="agent").ok
    clock.advance(36 * 86400)
    assert run(gate, ADMIN, "role.assign", user=BOB, role="agent", **{"for": "5d"}).ok
    findings = review_findings(gate, db, clock)
    assert (findings[ALICE].kind, findings[BOB].kind) == ("inactive", "expiring")
    assert other.decide(ALICE, "messages:send_text").allowed
    full_before = other.policies.full_reloads

    revoked = gate.submit(ADMIN, "cli", "review.revoke", {"finding": findings[ALICE].id})
    assert revoked.status == "done", revoked.message
    assert not other.decide(ALICE, "messages:send_text").allowed

    kept = gate.submit(ADMIN, "cli", "review.keep", {"finding": findings[BOB].id})
    assert kept.status == "done", kept.message
    clock.advance(6 * 86400)  # past the grant's first end, inside the 30 days kept
    assert other.decide(BOB, "messages:send_text").allowed
    assert other.policies.full_reloads == full_before
    same(other.policy(), from_scratch(db))


def test_the_first_admin_bootstrapped_elsewhere_is_an_admin_at_once(
    db: Database, clock: ManualClock
) -> None:
    first, other = build_gate(db, clock=clock), build_gate(db, clock=clock)
    assert not other.decide(ALICE, "roles:assign").allowed
    full_before = other.policies.full_reloads
    assert first.submit("operator", "cli", "system.bootstrap_admin", {"user": ALICE}).ok
    assert other.decide(ALICE, "roles:assign").allowed
    assert other.policies.full_reloads == full_before
    same(other.policy(), from_scratch(db))


@pytest.mark.parametrize("seed", range(4))
def test_whatever_happens_elsewhere_the_snapshot_equals_one_loaded_from_scratch(
    gate: Gate, other: Gate, db: Database, clock: ManualClock, seed: int
) -> None:
    """Random changes by one process; the other catches up at random moments."""
    pick = random.Random(seed)
    people = [ALICE, BOB, CAROL]
    roles = ["agent", "analyst", "support"]
    for step in range(30):
        who, role = pick.choice(people), pick.choice(roles)
        where = pick.choice(["*", NUMBER])
        move = pick.choice(["assign", "assign", "revoke", "expire", "deactivate", "role"])
        if move == "assign":
            extra = {"for": "1h"} if pick.random() < 0.3 else {}
            run(gate, ADMIN, "role.assign", user=who, role=role, number=where, **extra)
        elif move == "revoke":
            run(gate, ADMIN, "role.revoke", user=who, role=role, number=where)
        elif move == "expire":
            clock.advance(2 * 3600)
            sweep_expired(gate)
        elif move == "deactivate" and pick.random() < 0.2:
            run(gate, ADMIN, "user.deactivate", user=who)
        elif move == "role":
            name = f"r{step}"
            run(gate, ADMIN, "role.create", name=name, perms=["analytics:view"])
            run(gate, ADMIN, "role.assign", user=who, role=name)
        if pick.random() < 0.5:
            same(other.policy(), from_scratch(db))
    same(other.policy(), from_scratch(db))
    assert other.policies.partial_reloads > 0
