"""Edges of the SPEC §4 rules that a plain happy path would not reach."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from rbac_core import Action, Context, Database, Gate, ManualClock, Prepared, Result
from rbac_core.actions import ROLE_ACTIONS
from rbac_core.clock import utcnow
from rbac_core.gate import Params
from rbac_core.policy.catalogue import PERMISSIONS

from .conftest import ADMIN, ALICE, BOB
from .helpers import AlwaysVerified, audit_rows, give_2fa, live_grants, role_names, run


@pytest.fixture(autouse=True)
def _team(team: dict[str, str]) -> None:
    """One bootstrapped admin and three people."""


@pytest.fixture
def verified(db: Database, clock: ManualClock) -> Gate:
    """A gate whose 2FA step-up always passes, to reach rules behind sensitive actions."""
    return Gate(db, ROLE_ACTIONS, clock=clock, step_up=AlwaysVerified())


def test_a_temporary_admin_cannot_remove_the_permanent_one(
    verified: Gate, clock: ManualClock, db: Database
) -> None:
    give_2fa(db, ALICE, utcnow(clock))
    assert run(verified, ADMIN, "role.assign", user=ALICE, role="admin", **{"for": "1h"}).ok
    refused = verified.submit(ALICE, "cli", "role.revoke", {"user": ADMIN, "role": "admin"})
    assert refused.error_code == "last_admin"
    clock.advance(3601)
    assert verified.decide(ADMIN, "roles:assign").allowed


def test_the_first_admin_is_made_only_at_the_command_line(gate: Gate, db: Database) -> None:
    outcome = gate.submit(BOB, "slack", "system.bootstrap_admin", {"user": BOB})
    assert outcome.error_code == "operator_only"
    registered = gate.submit(BOB, "slack", "user.register", {"user": BOB})
    assert registered.error_code == "operator_only"
    assert live_grants(db, BOB) == []


def test_bootstrapping_a_deactivated_user_brings_them_back(
    verified: Gate, db: Database, clock: ManualClock
) -> None:
    give_2fa(db, ALICE, utcnow(clock))
    assert run(verified, ADMIN, "role.assign", user=ALICE, role="admin").ok
    assert run(verified, ALICE, "role.revoke", user=ADMIN, role="admin").ok
    assert run(verified, ALICE, "user.deactivate", user=ADMIN).ok
    assert run(verified, ALICE, "role.revoke", user=ALICE, role="admin").error_code == "last_admin"
    # Alice leaves while still the last admin, by the database's hand (a Slack
    # deactivation, say): the operator bootstraps a new admin.
    with db.write() as session:
        from rbac_core.store.models import User

        person = session.get(User, ALICE)
        assert person is not None
        person.active = False
    outcome = verified.submit("operator", "cli", "system.bootstrap_admin", {"user": ADMIN})
    assert outcome.status == "done", outcome.message
    assert verified.decide(ADMIN, "roles:assign").allowed


@pytest.mark.parametrize(
    "steps",
    [
        [
            ("role.create", {"name": "ops", "perms": ["roles:view"]}),
            ("role.assign", {"user": ALICE, "role": "ops"}),
            ("role.edit", {"name": "ops", "add_parents": ["admin"]}),
        ],
        [
            ("role.create", {"name": "shadow", "perms": sorted(PERMISSIONS)}),
            ("role.assign", {"user": ALICE, "role": "shadow"}),
        ],
        [
            ("role.create", {"name": "keys", "perms": ["apikeys:manage"], "2fa": True}),
            ("role.edit", {"name": "keys", "2fa": "off"}),
        ],
        [
            ("role.create", {"name": "eraser", "perms": ["roles:view"]}),
            ("role.edit", {"name": "eraser", "add": ["customers:erase"]}),
        ],
    ],
    ids=["inheriting admin later", "every permission", "2fa switched off", "adding erase"],
)
def test_no_route_to_sensitive_power_skips_the_second_factor(
    gate: Gate, steps: list[tuple[str, dict[str, Any]]]
) -> None:
    *setup, last = steps
    for action, params in setup:
        assert run(gate, ADMIN, action, **params).ok, (action, params)
    outcome = gate.submit(ADMIN, "cli", last[0], last[1])
    assert outcome.status == "needs_2fa", outcome.message


def test_nobody_adds_to_a_role_they_hold(gate: Gate) -> None:
    assert run(
        gate,
        ADMIN,
        "role.create",
        name="mgr",
        perms=["roles:manage", "roles:view", "analytics:view"],
    ).ok
    assert run(gate, ADMIN, "role.create", name="reports", perms=["reports:generate"]).ok
    assert run(gate, ADMIN, "role.assign", user=ALICE, role="mgr").ok
    assert run(gate, ADMIN, "role.assign", user=ALICE, role="reports", **{"for": "4h"}).ok
    refused = gate.submit(ALICE, "cli", "role.edit", {"name": "mgr", "add": ["reports:generate"]})
    assert refused.error_code == "self_grant"
    assert run(gate, ALICE, "role.edit", name="mgr", remove=["analytics:view"]).ok


def test_a_role_once_granted_can_be_deleted_after_revoking(gate: Gate, db: Database) -> None:
    assert run(gate, ADMIN, "role.create", name="temp", perms=["analytics:view"]).ok
    assert run(gate, ADMIN, "role.assign", user=ALICE, role="temp").ok
    assert run(gate, ADMIN, "role.revoke", user=ALICE, role="temp").ok
    assert run(gate, ADMIN, "role.delete", name="temp").status == "done"
    assert "temp" not in role_names(db)


def test_options_from_api_callers_are_read_strictly(gate: Gate, db: Database) -> None:
    assert run(
        gate, ADMIN, "role.create", name="quiet", perms=["usage:view"], **{"2fa": "false"}
    ).ok
    assert gate.policy().requires_2fa("quiet") is False
    odd = gate.submit(
        ADMIN, "api", "role.create", {"name": "odd", "perms": ["usage:view"], "2fa": "maybe"}
    )
    assert odd.status == "invalid" and "on or off" in odd.message
    not_parent = gate.submit(
        ADMIN, "cli", "role.edit", {"name": "quiet", "remove_parents": ["agent"]}
    )
    assert not_parent.status == "invalid" and "does not inherit agent" in not_parent.message
    numeric = run(gate, ADMIN, "role.assign", user=ALICE, role="analyst", number=15550001111)
    assert numeric.error_code == "unknown_number" and "E.164" in numeric.message


@pytest.mark.parametrize(
    "params",
    [
        {"user": ALICE, "role": b"agent"},
        {"user": ALICE, "role": {"agent"}},
        {"user": ALICE, "role": "agent", "reason": "caf\udce9"},
        {"user": ALICE, "role": "agent", "reason": "line\x00break"},
        {"user": ALICE, "role": "agent", "reason": "x" * 501},
        {"user": 42, "role": "agent"},
    ],
)
def test_odd_values_are_refused_audited_and_never_crash(
    gate: Gate, db: Database, params: dict[str, Any]
) -> None:
    outcome = gate.submit(ADMIN, "api", "role.assign", params)
    assert outcome.status in ("invalid", "refused")
    assert live_grants(db, ALICE) == []
    assert audit_rows(db)[-1].decision == "deny"


def test_a_malformed_actor_is_refused_and_audited(gate: Gate, db: Database) -> None:
    outcome = gate.submit("x" * 100, "api", "role.show", {})
    assert outcome.status == "invalid"
    assert audit_rows(db)[-1].actor == "invalid-actor"


def test_programming_errors_raise_clearly(gate: Gate) -> None:
    with pytest.raises(ValueError, match="unknown surface"):
        gate.submit(ADMIN, "web", "role.show", {})
    with pytest.raises(ValueError, match="no action named"):
        gate.submit(ADMIN, "cli", "role.teleport", {})


def test_decisions_accept_any_spelling_of_a_number(gate: Gate, db: Database) -> None:
    assert gate.submit(
        "operator",
        "cli",
        "number.register",
        {"number": "+15550001111", "phone_number_id": "106540352242922"},
    ).ok
    assert run(gate, ADMIN, "role.assign", user=ALICE, role="agent", number="+1 555 000 1111").ok
    for spelling in ("+15550001111", "+1 (555) 000-1111", "106540352242922"):
        assert gate.decide(ALICE, "messages:send_text", spelling).allowed


@dataclass(frozen=True)
class _CodeParams(Params):
    code: str | None = None


class _TakesACode(Action[_CodeParams]):
    """Stands in for issue 3's 2FA actions: a param that must never be audited."""

    name = "test.code"
    params_type = _CodeParams
    secret_params = frozenset({"code"})

    def prepare(self, ctx: Context, params: _CodeParams) -> Prepared:
        return Prepared(params.as_dict(), None, "*", f"user:{ctx.actor}", "check a code")

    def execute(self, ctx: Context, prepared: Prepared) -> Result:
        return Result("checked")


def test_secret_params_never_reach_the_audit_log(db: Database, clock: ManualClock) -> None:
    gate = Gate(db, {**ROLE_ACTIONS, "test.code": _TakesACode()}, clock=clock)
    assert gate.submit(ALICE, "cli", "test.code", {"code": "492039"}).ok
    last = audit_rows(db)[-1]
    assert "492039" not in last.details and "[redacted]" in last.details
