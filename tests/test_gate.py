"""The one gate: confirmation, re-authorization, step-up, failure and audit."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from sqlalchemy import select, text

from rbac_core import Action, Context, Database, Gate, ManualClock, Prepared, Result, audit
from rbac_core.actions import ROLE_ACTIONS
from rbac_core.clock import utcnow
from rbac_core.gate import NoParams
from rbac_core.store.models import Grant, PendingAction

from .conftest import ADMIN, ALICE, BOB
from .helpers import AlwaysVerified, audit_rows, give_2fa, live_grants, run


@pytest.fixture(autouse=True)
def _team(team: dict[str, str]) -> None:
    """One bootstrapped admin and three people."""


def _pending(db: Database, pending_id: str) -> PendingAction:
    with db.read() as session:
        row = session.get(PendingAction, pending_id)
        assert row is not None
        return row


def test_only_the_actor_can_confirm(gate: Gate, db: Database) -> None:
    asked = gate.submit(ADMIN, "cli", "role.assign", {"user": ALICE, "role": "agent"})
    other = gate.confirm(asked.pending_id or "", BOB, "cli")
    assert other.error_code == "pending_not_yours"
    assert live_grants(db, ALICE) == []
    assert gate.confirm(asked.pending_id or "", ADMIN, "cli").status == "done"


def test_a_confirmation_is_single_use(gate: Gate, db: Database) -> None:
    asked = gate.submit(ADMIN, "cli", "role.assign", {"user": ALICE, "role": "agent"})
    assert gate.confirm(asked.pending_id or "", ADMIN, "cli").status == "done"
    again = gate.confirm(asked.pending_id or "", ADMIN, "cli")
    assert again.error_code == "pending_used"
    assert "already confirmed" in again.message


def test_a_confirmation_expires_after_five_minutes(
    gate: Gate, db: Database, clock: ManualClock
) -> None:
    asked = gate.submit(ADMIN, "cli", "role.assign", {"user": ALICE, "role": "agent"})
    clock.advance(5 * 60 + 1)
    late = gate.confirm(asked.pending_id or "", ADMIN, "cli")
    assert late.error_code == "pending_expired"
    assert live_grants(db, ALICE) == []
    assert _pending(db, asked.pending_id or "").status == "expired"


def test_a_cancelled_action_cannot_be_confirmed(gate: Gate, db: Database) -> None:
    asked = gate.submit(ADMIN, "cli", "role.assign", {"user": ALICE, "role": "agent"})
    assert gate.cancel(asked.pending_id or "", ADMIN, "cli").status == "cancelled"
    assert gate.confirm(asked.pending_id or "", ADMIN, "cli").error_code == "pending_used"
    assert live_grants(db, ALICE) == []


def test_confirming_checks_the_permission_again(gate: Gate, db: Database) -> None:
    """A grant revoked between the request and the click refuses the click (rule 3)."""
    assert run(
        gate, ADMIN, "role.create", name="assigner", perms=["roles:assign"], inherits=["agent"]
    ).ok
    assert run(gate, ADMIN, "role.assign", user=ALICE, role="assigner").ok
    asked = gate.submit(ALICE, "cli", "role.assign", {"user": BOB, "role": "support"})
    assert asked.status == "needs_confirmation"
    assert run(gate, ADMIN, "role.revoke", user=ALICE, role="assigner").ok
    click = gate.confirm(asked.pending_id or "", ALICE, "cli")
    assert click.status == "denied"
    assert live_grants(db, BOB) == []
    assert _pending(db, asked.pending_id or "").status == "refused"


def test_confirming_revalidates_the_request(gate: Gate, db: Database) -> None:
    first = gate.submit(ADMIN, "cli", "role.assign", {"user": ALICE, "role": "agent"})
    second = gate.submit(ADMIN, "cli", "role.assign", {"user": ALICE, "role": "agent"})
    assert gate.confirm(first.pending_id or "", ADMIN, "cli").status == "done"
    dup = gate.confirm(second.pending_id or "", ADMIN, "cli")
    assert dup.error_code == "duplicate_grant"
    assert live_grants(db, ALICE) == [(ALICE, "agent", "*")]


def test_every_decision_is_audited_allowed_or_denied(gate: Gate, db: Database) -> None:
    before = len(audit_rows(db))
    gate.submit(BOB, "cli", "role.list", {})
    asked = gate.submit(ADMIN, "cli", "role.assign", {"user": ALICE, "role": "agent"})
    gate.confirm(asked.pending_id or "", ADMIN, "cli")
    rows = audit_rows(db)[before:]
    assert [(r.actor, r.action, r.decision, r.outcome) for r in rows] == [
        (BOB, "role.list", "deny", "refused"),
        (ADMIN, "role.assign", "allow", "pending"),
        (ADMIN, "role.assign", "allow", "done"),
    ]
    assert "no grants" in rows[0].details
    assert rows[2].target == f"user:{ALICE}"


def test_sensitive_actions_pass_once_the_second_factor_is_satisfied(
    db: Database, clock: ManualClock
) -> None:
    gate = Gate(db, ROLE_ACTIONS, clock=clock, step_up=AlwaysVerified())
    give_2fa(db, ALICE, utcnow(clock))
    assert run(gate, ADMIN, "role.assign", user=ALICE, role="developer").status == "done"


class _Explodes(Action[NoParams]):
    """Writes a grant, then fails: the gate must leave no trace but the audit entry."""

    name = "test.explodes"
    params_type = NoParams

    def prepare(self, ctx: Context, params: NoParams) -> Prepared:
        return Prepared(params.as_dict(), "roles:assign", "*", "user:U0ALICE01", "explode")

    def execute(self, ctx: Context, prepared: Prepared) -> Result:
        ctx.session.add(
            Grant(user_id=ALICE, role="agent", scope="*", granted_by=ctx.actor, granted_at=ctx.now)
        )
        ctx.session.flush()
        raise RuntimeError("disk on fire")


def test_a_failing_action_writes_nothing_but_its_audit_entry(
    db: Database, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    gate = Gate(db, {**ROLE_ACTIONS, "test.explodes": _Explodes()}, clock=clock)
    outcome = gate.submit(ADMIN, "cli", "test.explodes", {})
    assert outcome.status == "failed"
    assert "nothing was changed" in outcome.message
    assert "disk on fire" not in outcome.message
    with db.read() as session:
        assert session.scalars(select(Grant).where(Grant.user_id == ALICE)).all() == []
    last = audit_rows(db)[-1]
    assert (last.action, last.outcome) == ("test.explodes", "error")


class _ExplodesAfterWriting(Action[NoParams]):
    """Writes a grant through `how`, then fails; with `session_first` the ORM session is
    open before the action runs (its savepoint is the session's, else SQL's own)."""

    name = "test.explodes"
    params_type = NoParams

    def __init__(self, how: str, session_first: bool) -> None:
        self.how, self.session_first = how, session_first

    def prepare(self, ctx: Context, params: NoParams) -> Prepared:
        if self.session_first:
            ctx.session.get(Grant, 1)
        return Prepared(params.as_dict(), "roles:assign", "*", "user:U0ALICE01", "explode")

    def execute(self, ctx: Context, prepared: Prepared) -> Result:
        self.ran_with_session = ctx.txn._session is not None
        values = {"u": ALICE, "by": ctx.actor}
        if self.how == "sql":
            ctx.txn.run_text(
                "INSERT INTO grants (user_id, role, scope, granted_by, granted_at) VALUES "
                + (
                    "(?, 'agent', '*', ?, CURRENT_TIMESTAMP)"
                    if ctx.txn.dialect_name == "sqlite"
                    else "(%s, 'agent', '*', %s, now())"
                ),
                [values["u"], values["by"]],
            )
        elif self.how == "broken-orm":  # the database refuses the flush: no such person
            ctx.session.add(
                Grant(
                    user_id="U0NOBODY1",
                    role="agent",
                    scope="*",
                    granted_by=ctx.actor,
                    granted_at=ctx.now,
                )
            )
            ctx.session.flush()
        else:
            ctx.session.add(
                Grant(
                    user_id=ALICE, role="agent", scope="*", granted_by=ctx.actor, granted_at=ctx.now
                )
            )
            ctx.session.flush()
        raise RuntimeError("disk on fire")


@pytest.mark.parametrize("how", ["sql", "orm", "broken-orm"])
@pytest.mark.parametrize("session_first", [False, True])
def test_a_failing_action_is_undone_however_it_wrote_and_the_call_goes_on(
    db: Database, clock: ManualClock, how: str, session_first: bool
) -> None:
    explodes = _ExplodesAfterWriting(how, session_first)
    gate = Gate(db, {**ROLE_ACTIONS, "test.explodes": explodes}, clock=clock)
    gate.policy()  # loaded: the call itself needs no ORM session unless the action asks
    assert gate.submit(ADMIN, "cli", "test.explodes", {}).status == "failed"
    assert explodes.ran_with_session == session_first
    assert live_grants(db, ALICE) == []
    last = audit_rows(db)[-1]
    assert (last.action, last.outcome) == ("test.explodes", "error")
    assert run(gate, ADMIN, "role.assign", user=ALICE, role="analyst").ok  # nothing left open


class _BadQuery(Action[NoParams]):
    """A read-only action whose query the database refuses: a column's range overflowed,
    say. PostgreSQL then refuses every later statement of the transaction."""

    params_type = NoParams
    read_only = True

    def __init__(self, name: str, where: str) -> None:
        self.name, self.where = name, where

    def prepare(self, ctx: Context, params: NoParams) -> Prepared:
        if self.where == "prepare":
            ctx.session.execute(text("SELECT * FROM no_such_table"))
        return Prepared({}, "roles:view", "*", "-", "read something")

    def execute(self, ctx: Context, prepared: Prepared) -> Result:
        ctx.session.execute(text("SELECT * FROM no_such_table"))
        return Result("unreachable")


@pytest.mark.parametrize("where", ["prepare", "execute"])
def test_a_database_error_in_a_read_only_action_is_audited_as_failed(
    db: Database, clock: ManualClock, where: str
) -> None:
    gate = Gate(db, {**ROLE_ACTIONS, "test.bad_query": _BadQuery("test.bad_query", where)})
    outcome = gate.submit(ADMIN, "cli", "test.bad_query", {})
    assert outcome.status == "failed" and outcome.audit_seq is not None
    assert "no_such_table" not in outcome.message
    last = audit_rows(db)[-1]
    assert (last.seq, last.action, last.decision, last.outcome) == (
        outcome.audit_seq,
        "test.bad_query",
        "deny",
        "error",
    )
    # The same holds when the failing call shares its transaction with others.
    calls = [("role.show", {}), ("test.bad_query", {}), ("role.show", {})] * 3
    with ThreadPoolExecutor(len(calls)) as pool:
        outcomes = list(pool.map(lambda c: gate.submit(ADMIN, "cli", *c), calls))
    assert [o.status for o in outcomes] == ["done", "failed", "done"] * 3
    seqs = {o.audit_seq for o in outcomes}
    assert None not in seqs and len(seqs) == len(calls)
    with db.snapshot() as conn:
        assert audit.verify(conn).ok


def test_a_failing_decision_point_denies(db: Database, clock: ManualClock) -> None:
    gate = Gate(db, ROLE_ACTIONS, clock=clock)
    policy = gate.policy()

    def broken(*args: Any) -> Any:
        raise RuntimeError("corrupt cache")

    policy.decide = broken  # type: ignore[method-assign]
    outcome = gate.submit(ADMIN, "cli", "role.list", {})
    assert outcome.status == "failed"
    assert outcome.error_code == "decision_error"


def test_values_of_the_wrong_type_are_refused_not_crashed_on(gate: Gate, db: Database) -> None:
    outcome = gate.submit(ADMIN, "api", "role.assign", {"user": ALICE, "role": {"$ne": 1}})
    assert outcome.status in ("invalid", "refused", "failed")
    assert outcome.exit_code in (1, 2)
    assert live_grants(db, ALICE) == []
    assert audit_rows(db)[-1].decision == "deny"


def _everything_but_the_audit_log(db: Database) -> dict[str, list[tuple[Any, ...]]]:
    from rbac_core.store.models import Base

    tables = {}
    with db.read() as session:
        for table in Base.metadata.sorted_tables:
            if table.name in ("audit_log", "audit_head"):
                continue
            rows = session.execute(select(table)).all()
            tables[table.name] = sorted((tuple(row) for row in rows), key=repr)
    return tables


READ_ONLY_CALLS = [
    (ADMIN, "role.show", {}),
    (ADMIN, "role.show", {"user": ALICE}),
    (ALICE, "role.show", {"user": BOB}),
    (ADMIN, "role.show", {"user": "U0NOBODY01"}),
    (ADMIN, "role.list", {}),
    (ALICE, "role.list", {}),
    (ADMIN, "role.why", {"user": ALICE, "permission": "roles:assign"}),
    (ADMIN, "role.why", {"user": ALICE, "permission": "no:such"}),
    (ALICE, "role.why", {"user": ALICE, "permission": "messages:send", "number": "+1 555 0100"}),
    (ADMIN, "access.pending", {}),
    (ALICE, "2fa.status", {}),
    (ADMIN, "review.page", {"review": 1, "page": 0}),
    (ALICE, "review.page", {"review": "x"}),
    (ADMIN, "review.export", {"review": 1}),
    (ALICE, "review.export", {"review": 1}),
    (ADMIN, "audit.log", {"user": ALICE, "since": "7d"}),
    (ALICE, "audit.log", {}),
    (ADMIN, "audit.verify", {}),
    (ADMIN, "audit.export", {}),
    (ADMIN, "audit.checkpoint", {}),  # refused here; executed in test_audit_checkpoint
    (ADMIN, "review.latest", {}),
    (ADMIN, "user.list", {}),  # refused here (operator only); listed in test_cli
    (ADMIN, "number.list", {}),
    ("", "role.show", {}),
]


def test_read_only_actions_change_nothing_but_the_audit_log(gate: Gate, db: Database) -> None:
    """They run without a savepoint, so this is what stands behind `read_only`."""
    assert {name for name, a in gate.actions.items() if a.read_only} == {
        call[1] for call in READ_ONLY_CALLS
    }
    before = _everything_but_the_audit_log(db)
    entries = len(audit_rows(db))
    for actor, action, params in READ_ONLY_CALLS:
        outcome = gate.submit(actor, "slack", action, params)
        entries += 1
        assert outcome.audit_seq == entries, (action, params, outcome)
    assert _everything_but_the_audit_log(db) == before
    assert len(audit_rows(db)) == entries


def test_an_action_cannot_be_both_read_only_and_need_confirmation(db: Database) -> None:
    class Sneaky(Action[NoParams]):
        name = "sneaky"
        params_type = NoParams
        read_only = True
        needs_confirmation = True

        def prepare(self, ctx: Context, params: NoParams) -> Prepared:
            return Prepared({}, None, "*", "-", "look")

        def execute(self, ctx: Context, prepared: Prepared) -> Result:
            return Result("looked")

    with pytest.raises(ValueError, match="read-only"):
        Gate(db, {"sneaky": Sneaky()})


def test_a_surface_given_as_the_enum_is_audited_as_its_plain_value(
    gate: Gate, db: Database
) -> None:
    """Surfaces may pass the enum; the log and the chain's hash hold its plain text."""
    from rbac_core import audit
    from rbac_core.principals import Surface

    outcome = gate.submit("operator", Surface.CLI, "user.list", {})
    assert outcome.status == "done"
    assert audit_rows(db)[-1].surface == "cli"
    with db.snapshot() as conn:
        assert audit.verify(conn).ok
    with pytest.raises(ValueError, match="unknown surface"):
        gate.submit("operator", "carrier-pigeon", "user.list", {})


def test_an_action_must_declare_what_it_takes(db: Database) -> None:
    """Its params are its schema: a surface never sends an action fields it did not name."""

    class Untyped(Action[NoParams]):
        name = "untyped"

        def prepare(self, ctx: Context, params: NoParams) -> Prepared:
            return Prepared({}, None, "*", "-", "look")

        def execute(self, ctx: Context, prepared: Prepared) -> Result:
            return Result("looked")

    with pytest.raises(ValueError, match="declares no params_type"):
        Gate(db, {"untyped": Untyped()})
