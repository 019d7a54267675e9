"""Who acts: one typed principal for the gate, the audit log and every action."""

from __future__ import annotations

import pytest

from rbac_core import Database, Gate
from rbac_core.principals import (
    OPERATOR,
    SCHEDULER,
    Identity,
    Kind,
    Principal,
    Provider,
    Surface,
    principal_for,
)

from .conftest import ADMIN, ALICE
from .helpers import audit_rows


@pytest.fixture(autouse=True)
def _team(team: dict[str, str]) -> None:
    """Admin and Alice exist (conftest's `team`)."""


def test_a_person_from_slack_is_their_slack_id_with_the_identity_they_came_through() -> None:
    alice = Principal.slack_user(ALICE)
    assert (alice.kind, alice.id) == (Kind.PERSON, ALICE)
    assert alice.via == Identity(Provider.SLACK, ALICE)
    assert str(alice) == ALICE


def test_the_system_is_two_principals_defined_once() -> None:
    assert (OPERATOR.kind, OPERATOR.id) == (Kind.SYSTEM, "operator")
    assert (SCHEDULER.kind, SCHEDULER.id) == (Kind.SYSTEM, "scheduler")
    assert principal_for("operator") is OPERATOR
    assert principal_for("scheduler") is SCHEDULER
    assert principal_for(ALICE) == Principal.person(ALICE)


@pytest.mark.parametrize(
    ("principal", "surface", "system", "operator"),
    [
        (OPERATOR, Surface.CLI, True, True),
        (SCHEDULER, Surface.SCHEDULER, True, False),
        (SCHEDULER, Surface.CLI, True, False),
        (OPERATOR, Surface.SLACK, False, False),
        (SCHEDULER, Surface.WHATSAPP, False, False),
        (Principal.person("operator"), Surface.CLI, False, False),
        (Principal.person(ADMIN), Surface.CLI, False, False),
    ],
)
def test_the_system_counts_as_the_system_only_on_a_system_surface(
    principal: Principal, surface: Surface, system: bool, operator: bool
) -> None:
    assert principal.is_system_on(surface) is system
    assert principal.is_operator_on(surface) is operator


def test_the_audit_log_names_the_principal_by_its_id(gate: Gate, db: Database) -> None:
    outcome = gate.submit(Principal.slack_user(ADMIN), Surface.SLACK, "role.show", {})
    assert outcome.ok
    entry = audit_rows(db)[-1]
    assert (entry.actor, entry.surface) == (ADMIN, "slack")


def test_a_system_principal_from_a_chat_surface_gets_no_system_rights(gate: Gate) -> None:
    for surface in (Surface.SLACK, Surface.WHATSAPP, Surface.API):
        outcome = gate.submit(SCHEDULER, surface, "system.sweep", {})
        assert (outcome.status, outcome.error_code) == ("refused", "operator_only")
    assert gate.submit(SCHEDULER, Surface.SCHEDULER, "system.sweep", {}).status == "done"


def test_a_person_named_like_the_operator_is_not_the_operator(gate: Gate) -> None:
    impostor = Principal.person("operator")
    outcome = gate.submit(impostor, Surface.CLI, "user.register", {"user": ALICE})
    assert (outcome.status, outcome.error_code) == ("refused", "operator_only")


@pytest.mark.parametrize("actor", [None, 7, b"U0ADMIN01", Principal.person("x" * 100)])
def test_anything_but_a_well_formed_principal_is_refused_and_audited(
    gate: Gate, db: Database, actor: object
) -> None:
    outcome = gate.submit(actor, Surface.API, "role.show", {})  # type: ignore[arg-type]
    assert (outcome.status, outcome.error_code) == ("invalid", "malformed_actor")
    assert audit_rows(db)[-1].actor == "invalid-actor"


def test_only_a_principal_itself_is_trusted(gate: Gate, db: Database) -> None:
    """Whatever an in-process caller hands the gate, only the real thing counts."""

    class Forged(Principal):
        def is_system_on(self, surface: str) -> bool:
            return True

        def is_operator_on(self, surface: str) -> bool:
            return True

    class Everyone(str):
        def __eq__(self, other: object) -> bool:
            return True

        __hash__ = str.__hash__

    forged = Forged(Kind.PERSON, ALICE)
    not_the_scheduler = Principal(Kind.SYSTEM, ADMIN)
    for actor in (
        forged,
        not_the_scheduler,
        Principal(Kind.PERSON, Everyone(ALICE)),
        Everyone(ALICE),
    ):
        for surface in (Surface.SLACK, Surface.CLI):
            outcome = gate.submit(actor, surface, "system.sweep", {})
            assert (outcome.status, outcome.error_code) == ("invalid", "malformed_actor")
            assert audit_rows(db)[-1].actor == "invalid-actor"


def test_the_operator_is_the_system_principal_of_that_name_only() -> None:
    assert not Principal(Kind.PERSON, "operator").is_operator_on(Surface.CLI)
    assert Principal(Kind.SYSTEM, "operator").is_operator_on(Surface.CLI)
    assert not OPERATOR.is_operator_on(Surface.SCHEDULER)


@pytest.mark.parametrize("pending_id", ["nope", "a\x00" * 16, "\ud800" * 32, None, 7, "x" * 33])
def test_a_pending_id_the_gate_never_made_is_refused_and_audited(
    gate: Gate, db: Database, pending_id: object
) -> None:
    for answer in (gate.confirm, gate.cancel):
        outcome = answer(pending_id, Principal.person(ADMIN), Surface.SLACK)  # type: ignore[arg-type]
        assert (outcome.status, outcome.error_code) == ("refused", "pending_unknown")
        assert audit_rows(db)[-1].target == "pending:?"
