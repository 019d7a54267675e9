"""Assigning, revoking and defining roles through the gate, and every refusal."""

from __future__ import annotations

import pytest

from rbac_core import Database, Gate, ManualClock
from rbac_core.clock import utcnow
from rbac_core.directory import register_number
from rbac_core.principals import Principal

from .conftest import ADMIN, ALICE, BOB, CAROL
from .helpers import AlwaysVerified, audit_rows, give_2fa, live_grants, role_names, run

NUMBER = "+15550001111"
OTHER = "+15550002222"


@pytest.fixture(autouse=True)
def _team(team: dict[str, str]) -> None:
    """Every test here starts with one bootstrapped admin and three people."""


def test_admin_assigns_a_role_after_confirming(gate: Gate, db: Database) -> None:
    first = gate.submit(ADMIN, "cli", "role.assign", {"user": ALICE, "role": "agent"})
    assert first.status == "needs_confirmation"
    assert live_grants(db, ALICE) == []  # nothing happens before the click
    done = gate.confirm(first.pending_id or "", ADMIN, "cli")
    assert done.status == "done", done.message
    assert live_grants(db, ALICE) == [(ALICE, "agent", "*")]
    assert gate.decide(ALICE, "messages:send_text").allowed


def test_a_number_scoped_grant_applies_only_to_that_number(gate: Gate) -> None:
    assert run(gate, ADMIN, "role.assign", user=ALICE, role="agent", number=NUMBER).status == "done"
    assert gate.decide(ALICE, "messages:send_text", NUMBER).allowed
    assert not gate.decide(ALICE, "messages:send_text", OTHER).allowed
    denied = gate.decide(ALICE, "messages:send_text", "*")
    assert not denied.allowed
    assert NUMBER in denied.reason


def test_a_phone_number_id_resolves_to_its_number(gate: Gate, db: Database) -> None:
    with db.write() as session:
        register_number(session, NUMBER, phone_number_id="106540352242922")
    assert (
        run(gate, ADMIN, "role.assign", user=ALICE, role="support", number="106540352242922").status
        == "done"
    )
    assert live_grants(db, ALICE) == [(ALICE, "support", NUMBER)]


def test_time_bound_grants_stop_counting_when_they_expire(gate: Gate, clock: ManualClock) -> None:
    assert run(gate, ADMIN, "role.assign", user=ALICE, role="agent", **{"for": "4h"}).ok
    assert gate.decide(ALICE, "messages:send_text").allowed
    clock.advance(4 * 3600 + 1)
    decision = gate.decide(ALICE, "messages:send_text")
    assert not decision.allowed
    assert "expired" in decision.reason


def test_an_expired_grant_can_be_granted_again(
    gate: Gate, clock: ManualClock, db: Database
) -> None:
    assert run(gate, ADMIN, "role.assign", user=ALICE, role="agent", **{"for": "1h"}).ok
    clock.advance(7200)
    assert run(gate, ADMIN, "role.assign", user=ALICE, role="agent").ok
    assert live_grants(db, ALICE) == [(ALICE, "agent", "*")]
    assert gate.decide(ALICE, "messages:send_text").allowed


def test_revoking_takes_effect_on_the_next_decision(gate: Gate) -> None:
    assert run(gate, ADMIN, "role.assign", user=ALICE, role="agent").ok
    assert gate.decide(ALICE, "messages:send_text").allowed
    assert run(gate, ADMIN, "role.revoke", user=ALICE, role="agent", reason="left").ok
    assert not gate.decide(ALICE, "messages:send_text").allowed


def test_a_change_by_another_process_is_seen_by_the_next_decision(
    gate: Gate, db: Database, clock: ManualClock
) -> None:
    from rbac_core import build_gate

    other_process = build_gate(Database(db.url), clock=clock)
    assert not other_process.decide(ALICE, "analytics:view").allowed  # warms its cache
    assert run(gate, ADMIN, "role.assign", user=ALICE, role="analyst").ok
    assert other_process.decide(ALICE, "analytics:view").allowed
    other_process.db.dispose()


def test_users_may_drop_their_own_grants(gate: Gate, db: Database) -> None:
    assert run(gate, ADMIN, "role.assign", user=ALICE, role="analyst").ok
    assert run(gate, ALICE, "role.revoke", user=ALICE, role="analyst").ok
    assert live_grants(db, ALICE) == []


def test_nobody_assigns_themselves_a_role(gate: Gate, db: Database) -> None:
    outcome = gate.submit(ADMIN, "cli", "role.assign", {"user": ADMIN, "role": "agent"})
    assert outcome.status == "refused"
    assert outcome.error_code == "self_grant"
    assert live_grants(db, ADMIN) == [(ADMIN, "admin", "*")]


def test_no_privilege_escalation_when_granting(gate: Gate, db: Database) -> None:
    # Alice may assign roles, but only holds the analyst permissions besides.
    assert run(gate, ADMIN, "role.create", name="assigner", perms=["roles:assign", "roles:view"]).ok
    assert run(gate, ADMIN, "role.assign", user=ALICE, role="assigner").ok
    assert run(gate, ADMIN, "role.assign", user=ALICE, role="analyst").ok
    ok = run(gate, ALICE, "role.assign", user=BOB, role="analyst")
    assert ok.status == "done", ok.message
    refused = gate.submit(ALICE, "cli", "role.assign", {"user": BOB, "role": "agent"})
    assert refused.error_code == "privilege_escalation"
    assert "messages:send_text" in refused.message
    assert live_grants(db, BOB) == [(BOB, "analyst", "*")]


def test_a_number_scoped_assigner_can_only_grant_on_that_number(gate: Gate) -> None:
    assert run(
        gate, ADMIN, "role.create", name="lead", perms=["roles:assign"], inherits=["agent"]
    ).ok
    assert run(gate, ADMIN, "role.assign", user=ALICE, role="lead", number=NUMBER).ok
    assert run(gate, ALICE, "role.assign", user=BOB, role="agent", number=NUMBER).ok
    elsewhere = gate.submit(
        ALICE, "cli", "role.assign", {"user": BOB, "role": "agent", "number": OTHER}
    )
    assert elsewhere.status == "denied"
    everywhere = gate.submit(ALICE, "cli", "role.assign", {"user": BOB, "role": "agent"})
    assert everywhere.status == "denied"


def test_nobody_builds_a_role_with_permissions_they_lack(gate: Gate, db: Database) -> None:
    assert run(
        gate,
        ADMIN,
        "role.create",
        name="rolesmith",
        perms=["roles:manage", "roles:view", "analytics:view"],
    ).ok
    assert run(gate, ADMIN, "role.assign", user=ALICE, role="rolesmith").ok
    assert run(gate, ALICE, "role.create", name="viewer", perms=["analytics:view"]).ok
    for attempt in (
        {"name": "sneaky", "perms": ["billing:manage"]},
        {"name": "sneaky", "from": "admin"},
        {"name": "sneaky", "perms": ["analytics:view"], "inherits": ["agent"]},
    ):
        refused = gate.submit(ALICE, "cli", "role.create", attempt)
        assert refused.error_code == "privilege_escalation", attempt
    adding = gate.submit(ALICE, "cli", "role.edit", {"name": "viewer", "add": ["billing:manage"]})
    assert adding.error_code == "privilege_escalation"
    assert "sneaky" not in role_names(db)


def test_the_last_admin_cannot_be_revoked(gate: Gate, db: Database) -> None:
    outcome = gate.submit(ADMIN, "cli", "role.revoke", {"user": ADMIN, "role": "admin"})
    assert outcome.error_code == "last_admin"
    assert live_grants(db, ADMIN) == [(ADMIN, "admin", "*")]


def test_deny_by_default(gate: Gate) -> None:
    outcome = gate.submit(CAROL, "cli", "role.list", {})
    assert outcome.status == "denied"
    assert "no grants" in outcome.message
    assert gate.submit(CAROL, "cli", "role.show", {}).status == "done"  # own grants: always


def test_looking_at_someone_else_needs_roles_view(gate: Gate) -> None:
    assert gate.submit(CAROL, "cli", "role.show", {"user": ALICE}).status == "denied"
    assert run(gate, ADMIN, "role.assign", user=CAROL, role="support").ok
    shown = gate.submit(CAROL, "cli", "role.show", {"user": ALICE})
    assert shown.status == "done"


def test_why_explains_which_grant_and_role_allowed_it(gate: Gate) -> None:
    assert run(
        gate,
        ADMIN,
        "role.create",
        name="campaign",
        perms=["reports:generate"],
        inherits=["analyst"],
    ).ok
    assert run(gate, ADMIN, "role.assign", user=ALICE, role="campaign", number=NUMBER).ok
    why = gate.submit(
        ADMIN, "cli", "role.why", {"user": ALICE, "permission": "analytics:view", "number": NUMBER}
    )
    assert why.data["allowed"] is True
    assert why.data["via"] == ["campaign", "analyst"]
    assert "inherited through campaign -> analyst" in why.message
    no = gate.submit(ADMIN, "cli", "role.why", {"user": ALICE, "permission": "billing:manage"})
    assert no.data["allowed"] is False
    assert "includes billing:manage" in no.message


def test_custom_roles_can_be_cloned_edited_and_deleted(gate: Gate, db: Database) -> None:
    assert run(gate, ADMIN, "role.create", name="night-shift", **{"from": "support"}).ok
    assert gate.policy().permissions_of_role("night-shift") == gate.policy().permissions_of_role(
        "support"
    )
    assert run(
        gate,
        ADMIN,
        "role.edit",
        name="night-shift",
        add=["escalations:resolve"],
        remove=["chatbots:use"],
    ).ok
    perms = gate.policy().permissions_of_role("night-shift")
    assert "escalations:resolve" in perms and "chatbots:use" not in perms
    assert run(gate, ADMIN, "role.delete", name="night-shift").ok
    assert "night-shift" not in role_names(db)


def test_a_role_in_use_cannot_be_deleted_and_says_who_holds_it(gate: Gate, db: Database) -> None:
    assert run(gate, ADMIN, "role.create", name="temp", perms=["analytics:view"]).ok
    assert run(gate, ADMIN, "role.assign", user=ALICE, role="temp", number=NUMBER).ok
    refused = gate.submit(ADMIN, "cli", "role.delete", {"name": "temp"})
    assert refused.error_code == "role_in_use"
    assert ALICE in refused.message and NUMBER in refused.message
    assert "temp" in role_names(db)


def test_role_inheritance_cannot_form_a_cycle(gate: Gate) -> None:
    assert run(gate, ADMIN, "role.create", name="base-role", perms=["analytics:view"]).ok
    assert run(
        gate, ADMIN, "role.create", name="mid-role", perms=["usage:view"], inherits=["base-role"]
    ).ok
    cycle = gate.submit(
        ADMIN, "cli", "role.edit", {"name": "base-role", "add_parents": ["mid-role"]}
    )
    assert cycle.error_code == "role_cycle"


@pytest.mark.parametrize(
    ("action", "params", "code"),
    [
        ("role.assign", {"user": ALICE, "role": "wizard"}, "unknown_role"),
        ("role.assign", {"user": "U0NOBODY1", "role": "agent"}, "unknown_user"),
        ("role.assign", {"user": ALICE, "role": "agent", "number": "555-1234"}, "malformed_number"),
        ("role.assign", {"user": ALICE, "role": "agent", "for": "forever"}, "malformed_duration"),
        ("role.assign", {"user": ALICE, "role": "agent", "number": "999999999"}, "unknown_number"),
        ("role.assign", {"user": "alice", "role": "agent"}, "malformed_user"),
        ("role.create", {"name": "bad", "perms": ["messages:teleport"]}, "unknown_permission"),
        ("role.why", {"user": ALICE, "permission": "nope:nope"}, "unknown_permission"),
        ("role.delete", {"name": "admin"}, "builtin_role"),
        ("role.edit", {"name": "agent", "add": ["billing:manage"]}, "builtin_role"),
        ("role.revoke", {"user": ALICE, "role": "agent"}, "unknown_grant"),
        ("role.create", {"name": "agent", "perms": ["roles:view"]}, "duplicate_role"),
    ],
)
def test_bad_input_is_refused_specifically_and_leaves_nothing_behind(
    gate: Gate, db: Database, action: str, params: dict[str, object], code: str
) -> None:
    before_grants = live_grants(db)
    before_roles = role_names(db)
    outcome = gate.submit(ADMIN, "cli", action, params)
    assert outcome.error_code == code, outcome.message
    assert outcome.exit_code in (1, 2)
    assert outcome.message
    assert live_grants(db) == before_grants
    assert role_names(db) == before_roles
    last = audit_rows(db)[-1]
    assert (last.action, last.decision) == (action, "deny")


def test_a_duplicate_grant_is_refused(gate: Gate, db: Database) -> None:
    assert run(gate, ADMIN, "role.assign", user=ALICE, role="agent").ok
    again = gate.submit(ADMIN, "cli", "role.assign", {"user": ALICE, "role": "agent"})
    assert again.error_code == "duplicate_grant"
    assert "already holds agent" in again.message
    assert live_grants(db, ALICE) == [(ALICE, "agent", "*")]


def test_assigning_a_role_that_requires_2fa_asks_for_a_second_factor(
    gate: Gate, db: Database, clock: ManualClock
) -> None:
    refused = gate.submit(ADMIN, "cli", "role.assign", {"user": ALICE, "role": "developer"})
    assert refused.error_code == "2fa_required"  # Alice has no 2FA: she cannot hold it
    give_2fa(db, ALICE, utcnow(clock))
    outcome = gate.submit(ADMIN, "cli", "role.assign", {"user": ALICE, "role": "developer"})
    assert outcome.status == "needs_2fa"  # and the admin must step up to grant it
    assert live_grants(db, ALICE) == []


def test_why_needs_roles_view_even_about_oneself(gate: Gate) -> None:
    """Rule 1 exempts only help, show on oneself and 2FA enrolment."""
    refused = gate.submit(CAROL, "cli", "role.why", {"user": CAROL, "permission": "roles:view"})
    assert refused.status == "denied"
    assert run(gate, ADMIN, "role.assign", user=CAROL, role="support").ok
    assert gate.submit(CAROL, "cli", "role.why", {"user": CAROL, "permission": "roles:view"}).ok


def test_a_deactivated_user_loses_every_grant_at_once(gate: Gate, db: Database) -> None:
    assert run(gate, ADMIN, "role.assign", user=ALICE, role="agent", number=NUMBER).ok
    assert run(gate, ADMIN, "user.deactivate", user=ALICE, reason="left the company").ok
    assert not gate.decide(ALICE, "messages:send_text", NUMBER).allowed
    assert live_grants(db, ALICE) == [(ALICE, "agent", NUMBER)]  # kept as history
    again = gate.submit(ADMIN, "cli", "user.deactivate", {"user": ALICE})
    assert again.status == "invalid"


def test_the_last_admin_cannot_be_deactivated(db: Database, clock: ManualClock) -> None:
    from rbac_core.actions import ROLE_ACTIONS
    from rbac_core.policy.catalogue import PERMISSIONS

    gate = Gate(db, ROLE_ACTIONS, clock=clock, step_up=AlwaysVerified())
    assert gate.submit(ADMIN, "cli", "user.deactivate", {"user": ADMIN}).error_code == "self_grant"
    # Someone holding every permission, but not the admin role itself.
    assert run(gate, ADMIN, "role.create", name="superuser", perms=sorted(PERMISSIONS)).ok
    assert run(gate, ADMIN, "role.assign", user=ALICE, role="superuser").ok
    refused = gate.submit(ALICE, "cli", "user.deactivate", {"user": ADMIN})
    assert refused.error_code == "last_admin"
    assert gate.decide(ADMIN, "roles:assign").allowed


def test_a_role_inheriting_a_2fa_role_also_needs_the_second_factor(
    gate: Gate, db: Database, clock: ManualClock
) -> None:
    give_2fa(db, ALICE, utcnow(clock))
    assert run(gate, ADMIN, "role.create", name="ops", inherits=["admin"]).ok
    outcome = gate.submit(ADMIN, "cli", "role.assign", {"user": ALICE, "role": "ops"})
    assert outcome.status == "needs_2fa"
    assert live_grants(db, ALICE) == []


def test_deactivating_someone_needs_every_permission_they_hold(gate: Gate, db: Database) -> None:
    assert run(gate, ADMIN, "role.create", name="people-ops", perms=["roles:assign"]).ok
    assert run(gate, ADMIN, "role.assign", user=BOB, role="people-ops").ok
    assert run(gate, ADMIN, "role.assign", user=ALICE, role="agent").ok
    refused = gate.submit(BOB, "cli", "user.deactivate", {"user": ALICE})
    assert refused.error_code == "privilege_escalation"
    assert gate.decide(ALICE, "messages:send_text").allowed


def test_help_lists_exactly_the_subcommands_the_gate_lets_each_person_use(
    db: Database, clock: ManualClock
) -> None:
    """SPEC §5: help hides what the caller may not do, and offers nothing that is refused.

    A subcommand taking --number is checked in that number; the others everywhere.
    """
    from handlers.commands.roles import SUBCOMMANDS, RoleCommand
    from rbac_core import build_gate
    from rbac_core.directory import ensure_user

    gate = build_gate(db, clock=clock, step_up=AlwaysVerified())
    dave = "U0DAVE0001"
    with db.write() as session:
        register_number(session, NUMBER, "106540352242922")
        ensure_user(session, dave, utcnow(clock))
    give_2fa(db, CAROL, utcnow(clock))
    assert run(gate, ADMIN, "role.assign", user=ALICE, role="support", number=NUMBER).ok
    assert run(gate, ADMIN, "role.assign", user=CAROL, role="admin", number=NUMBER).ok
    assert run(gate, ADMIN, "role.assign", user=BOB, role="agent", number=NUMBER).ok
    assert run(gate, ADMIN, "role.create", name="custom1", perms=["templates:view"]).ok
    command = RoleCommand(gate)
    samples = {
        "show": "show",
        "list": "list",
        "assign": f"assign <@{dave}> analyst --number {NUMBER}",
        "revoke": f"revoke <@{BOB}> agent --number {NUMBER}",
        "create": "create tmp_{i} --perms templates:view",
        "edit": "edit custom1 --add templates:view",
        "delete": "delete custom1",
        "request": f"request analyst --number {NUMBER} --for 4h --reason covering",
        "why": f"why <@{BOB}> messages:send_text --number {NUMBER}",
    }
    assert set(samples) == {sub.name for sub in SUBCOMMANDS}
    seen = {}
    for i, person in enumerate((ADMIN, ALICE, CAROL, dave)):
        actor = Principal.person(person)
        listed = command.help(actor)
        for sub in SUBCOMMANDS:
            reply = command.handle(actor, "cli", samples[sub.name].format(i=i))
            assert reply.outcome is not None, reply.text
            allowed = reply.outcome.status != "denied"
            seen[(person, sub.name)] = allowed
            assert (f"`{sub.usage}`" in listed) == allowed, (person, sub.name, reply.text)
    # Alice's roles:view on one number lets her ask about that number, not list every role.
    assert seen[(ALICE, "why")] and not seen[(ALICE, "list")]
    assert seen[(CAROL, "assign")] and not seen[(CAROL, "create")]
    assert not any(seen[(dave, name)] for name in samples if name != "show")


def test_a_grant_on_a_number_nobody_registered_is_refused_and_says_how_to_add_it(
    gate: Gate, db: Database
) -> None:
    unknown = "+15559999999"
    outcome = run(gate, ADMIN, "role.assign", user=ALICE, role="agent", number=unknown)
    assert outcome.status == "refused" and outcome.error_code == "unknown_number"
    assert f"wa-access number add {unknown}" in outcome.message
    asked = gate.submit(ALICE, "cli", "access.request", {"role": "agent", "number": unknown})
    assert asked.error_code == "unknown_number"
    assert live_grants(db, ALICE) == []
    # Asking why about any number still answers; it grants nothing.
    assert (
        gate.submit(
            ADMIN, "cli", "role.why", {"user": ALICE, "permission": "roles:view", "number": unknown}
        ).status
        == "done"
    )
