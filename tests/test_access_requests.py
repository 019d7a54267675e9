"""Access requests: time-bound roles asked for, approved by someone else."""

from __future__ import annotations

import pytest

from rbac_core import Database, Gate, ManualClock

from .conftest import ADMIN, ALICE, BOB, CAROL
from .helpers import audit_rows, live_grants, run


@pytest.fixture(autouse=True)
def _team(team: dict[str, str], gate: Gate) -> None:
    """Alice and Bob are support staff; Carol has no role at all."""
    assert run(gate, ADMIN, "role.assign", user=ALICE, role="support").ok
    assert run(gate, ADMIN, "role.assign", user=BOB, role="support").ok


def ask(gate: Gate, who: str = ALICE, **params: object) -> str:
    params = {"role": "agent", "for": "4h", "reason": "covering the night shift", **params}
    outcome = gate.submit(who, "slack", "access.request", params)
    assert outcome.status == "done", outcome.message
    return str(outcome.data["request_id"])


def test_an_approved_request_grants_the_role_for_the_time_asked(
    gate: Gate, db: Database, clock: ManualClock
) -> None:
    request = ask(gate, number="+15550001111")
    approved = gate.submit(ADMIN, "slack", "access.approve", {"request_id": request})
    assert approved.status == "done", approved.message
    assert approved.data["requester"] == ALICE and approved.data["expires_at"]
    assert gate.decide(ALICE, "messages:send_text", "+15550001111").allowed
    clock.advance(4 * 3600 + 1)
    assert not gate.decide(ALICE, "messages:send_text", "+15550001111").allowed


def test_nobody_decides_on_their_own_request(gate: Gate, db: Database) -> None:
    assert run(
        gate,
        ADMIN,
        "role.create",
        name="approver",
        perms=["access:approve", "roles:view"],
        inherits=["agent"],
    ).ok
    assert run(gate, ADMIN, "role.assign", user=BOB, role="approver").ok
    request = ask(gate, who=BOB, role="analyst")
    own = gate.submit(BOB, "slack", "access.approve", {"request_id": request})
    assert own.error_code == "separation_of_duties"
    assert (BOB, "analyst", "*") not in live_grants(db, BOB)


def test_separation_of_duties_is_part_of_the_decision_and_why_explains_it(
    gate: Gate, db: Database
) -> None:
    """The rule lives in the core (relations.py): the gate's decision refuses it, the
    audit entry says why, and `why` explains it for anyone who asks about the request."""
    assert run(
        gate, ADMIN, "role.create", name="approver", perms=["access:approve", "roles:view"]
    ).ok
    assert run(gate, ADMIN, "role.assign", user=BOB, role="approver").ok
    request = ask(gate, who=BOB, role="analyst")
    own = gate.submit(BOB, "slack", "access.approve", {"request_id": request})
    assert (own.status, own.error_code) == ("refused", "separation_of_duties")
    assert own.message.startswith("You cannot decide on this request")
    entry = audit_rows(db)[-1]
    assert entry.outcome == "refused" and "(separation of duties)" in entry.details
    params = {"user": BOB, "permission": "access:approve", "request": request}
    bob = gate.submit(ADMIN, "slack", "role.why", params)
    assert bob.data["allowed"] is False
    assert f"may not use access:approve on access request {request}" in bob.message
    assert "the requester of access request" in bob.message
    admin = gate.submit(ADMIN, "slack", "role.why", {**params, "user": ADMIN})
    assert admin.data["allowed"] is True
    plain = gate.submit(ADMIN, "slack", "role.why", {"user": BOB, "permission": "access:approve"})
    assert plain.data["allowed"] is True  # the grant alone allows it; the request does not
    missing = gate.submit(ADMIN, "slack", "role.why", {**params, "request": "nope"})
    assert (missing.status, missing.error_code) == ("refused", "not_found")


def test_only_holders_of_access_approve_decide(gate: Gate) -> None:
    request = ask(gate)
    assert gate.submit(BOB, "slack", "access.approve", {"request_id": request}).status == "denied"
    assert gate.submit(BOB, "slack", "access.deny", {"request_id": request}).status == "denied"


def test_a_request_is_decided_once(gate: Gate, db: Database) -> None:
    request = ask(gate)
    assert gate.submit(
        ADMIN, "slack", "access.deny", {"request_id": request, "note": "not this week"}
    ).ok
    again = gate.submit(ADMIN, "slack", "access.approve", {"request_id": request})
    assert again.status == "refused" and "already denied" in again.message
    assert (ALICE, "agent", "*") not in live_grants(db, ALICE)


def test_requests_wait_24_hours_at_most(gate: Gate, clock: ManualClock) -> None:
    request = ask(gate)
    clock.advance(24 * 3600 + 1)
    late = gate.submit(ADMIN, "slack", "access.approve", {"request_id": request})
    assert late.status == "refused" and "expired" in late.message
    ask(gate)  # and may be asked again


def test_approving_a_sensitive_role_needs_the_approvers_second_factor(gate: Gate) -> None:
    request = ask(gate, role="analyst")
    assert gate.submit(ADMIN, "slack", "access.approve", {"request_id": request}).ok
    assert run(
        gate, ADMIN, "role.create", name="exporter", perms=["customers:export", "roles:view"]
    ).ok
    sensitive = ask(gate, role="exporter")
    outcome = gate.submit(ADMIN, "slack", "access.approve", {"request_id": sensitive})
    assert outcome.status == "needs_2fa"


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"for": None}, "--for"),
        ({"reason": None}, "--reason"),
        ({"role": "wizard"}, "unknown role"),
        ({"for": "forever"}, "not a duration"),
        ({"role": "support"}, "already holds support"),
    ],
)
def test_requests_need_a_role_a_duration_and_a_reason(
    gate: Gate, params: dict[str, object], message: str
) -> None:
    full = {"role": "agent", "for": "4h", "reason": "night shift", **params}
    outcome = gate.submit(ALICE, "slack", "access.request", full)
    assert outcome.status in ("invalid", "refused") and message in outcome.message


def test_one_open_request_per_role_and_scope(gate: Gate) -> None:
    ask(gate)
    again = gate.submit(
        ALICE, "slack", "access.request", {"role": "agent", "for": "4h", "reason": "still need it"}
    )
    assert again.status == "refused" and "waiting for an approver" in again.message


def test_people_without_any_role_ask_an_admin_directly(gate: Gate) -> None:
    outcome = gate.submit(
        CAROL, "slack", "access.request", {"role": "agent", "for": "4h", "reason": "new starter"}
    )
    assert outcome.status == "denied"


def test_asking_for_a_role_that_needs_2fa_without_having_it_is_refused_at_once(
    gate: Gate, db: Database
) -> None:
    """No approver could grant it: the request would have waited for nothing."""
    asked = gate.submit(
        ALICE, "slack", "access.request", {"role": "developer", "for": "4h", "reason": "debugging"}
    )
    assert asked.error_code == "2fa_required" and "/wa-2fa enroll" in asked.message
    assert gate.submit(ALICE, "slack", "access.pending", {}).data["mine"] == []
