"""The access review's one sequence: every step a gate action, authorised and audited,
and bad requests to each refused with a reason."""

from __future__ import annotations

import pytest

from handlers.commands.review_runs import ReviewRefused, run_review
from rbac_core import Database, Gate, ManualClock
from rbac_core.review.reading import Page

from .conftest import ADMIN, ALICE, BOB
from .helpers import audit_rows, run

pytestmark = pytest.mark.usefixtures("team")


@pytest.fixture
def idle_alice(team: dict[str, str], gate: Gate, clock: ManualClock) -> None:
    assert run(gate, ADMIN, "role.assign", user=ALICE, role="agent").ok
    clock.advance(40 * 86_400)


@pytest.mark.usefixtures("idle_alice")
def test_a_posted_review_went_through_the_gate_at_every_step(gate: Gate, db: Database) -> None:
    posted: list[Page] = []

    def post(first: Page, csv_text: str | None) -> tuple[str, str]:
        posted.append(first)
        return "C0WAAUDIT", "1795000000.000100"

    done = run_review(gate, "scheduler", "scheduler", period="2026-12-28T08:00Z", post=post)
    assert done.posted_to == "C0WAAUDIT" and done.totals.findings >= 1
    steps = [(e.action, e.outcome) for e in audit_rows(db) if e.actor == "scheduler"]
    assert steps == [
        ("audit.review", "done"),
        ("review.build", "done"),
        ("review.mark", "done"),
        ("review.mark", "done"),
    ]
    again = run_review(gate, "scheduler", "scheduler", period="2026-12-28T08:00Z", post=post)
    assert again.already_posted and len(posted) == 1


@pytest.fixture
def auditor(gate: Gate, idle_alice: None) -> str:
    """Bob, with a custom role holding audit:run alone."""
    assert run(gate, ADMIN, "role.create", name="auditor", perms=["audit:run"]).ok
    assert run(gate, ADMIN, "role.assign", user=BOB, role="auditor").ok
    return BOB


@pytest.mark.usefixtures("idle_alice")
def test_a_person_needs_audit_run_to_build_a_review(gate: Gate) -> None:
    with pytest.raises(ReviewRefused) as refused:
        run_review(gate, BOB, "slack")
    assert refused.value.outcome.error_code == "permission_denied"
    opened = gate.submit("operator", "cli", "audit.review", {})
    outcome = gate.submit(BOB, "slack", "review.build", {"review": opened.data["review_id"]})
    assert outcome.status == "denied" and "audit:run" in outcome.message


def test_who_may_run_a_review_sees_what_they_built(gate: Gate, auditor: str) -> None:
    done = run_review(gate, auditor, "slack")
    assert done.totals.findings >= 1 and done.first.findings


def test_a_person_builds_only_a_review_they_asked_for(gate: Gate, auditor: str) -> None:
    """Building decides what is found (who Slack says is gone): the scheduler's period
    review, or someone else's, is not theirs to build (a relation rule)."""
    scheduled = gate.submit("scheduler", "scheduler", "audit.review", {"period": "P1"})
    theirs = gate.submit(ADMIN, "slack", "audit.review", {})
    for opened in (scheduled, theirs):
        params = {"review": opened.data["review_id"], "deactivated": ["U0CAROL01"]}
        outcome = gate.submit(auditor, "slack", "review.build", params)
        assert (outcome.status, outcome.error_code) == ("refused", "not_your_review")


def test_only_the_system_marks_a_review_and_only_in_order(gate: Gate, auditor: str) -> None:
    opened = gate.submit("scheduler", "scheduler", "audit.review", {"period": "P1"})
    review = opened.data["review_id"]
    forged = {"review": review, "status": "posted", "channel": "C0EVIL001", "ts": "1.2"}
    outcome = gate.submit(auditor, "slack", "review.mark", forged)
    assert (outcome.status, outcome.error_code) == ("refused", "operator_only")
    early = gate.submit("scheduler", "scheduler", "review.mark", forged)
    assert (early.status, early.error_code) == ("refused", "conflict")  # still building
    missing = gate.submit("scheduler", "scheduler", "review.mark", {**forged, "review": 999})
    assert (missing.status, missing.error_code) == ("refused", "not_found")


def test_a_long_list_of_deactivated_people_is_audited_by_count(
    gate: Gate, db: Database, auditor: str
) -> None:
    opened = gate.submit(auditor, "slack", "audit.review", {})
    gone = [f"U0GONE{n:05d}" for n in range(5_000)]
    built = gate.submit(
        auditor, "slack", "review.build", {"review": opened.data["review_id"], "deactivated": gone}
    )
    assert built.status == "done"
    entry = audit_rows(db)[-1]
    assert len(entry.details) < 3_000 and "and 4950 more" in entry.details


@pytest.mark.parametrize(
    ("action", "params", "reason"),
    [
        ("review.build", {"review": "x"}, "that names no access review"),
        ("review.build", {"review": 2**40}, "that names no access review"),
        ("review.build", {"review": 1, "deactivated": "U0ALICE01"}, "`deactivated` must be a list"),
        ("review.build", {"review": 1, "deactivated": ["not a user"]}, "Slack user ids"),
        ("review.mark", {"review": 1, "status": "lost"}, "posting or posted"),
        ("review.mark", {"review": 1, "status": "posted"}, "channel and ts"),
        (
            "review.mark",
            {"review": 1, "status": "posted", "channel": "C0WAAUDIT", "ts": "<!here>"},
            "channel and ts",
        ),
        ("review.export", {"review": -1}, "that names no access review"),
    ],
)
def test_bad_review_requests_are_refused_with_a_reason(
    gate: Gate, db: Database, action: str, params: dict[str, object], reason: str
) -> None:
    gate.submit("operator", "cli", "audit.review", {})
    outcome = gate.submit("operator", "cli", action, params)
    assert outcome.status == "invalid", outcome
    assert reason in outcome.message
    assert audit_rows(db)[-1].outcome == "invalid"


def test_a_review_that_does_not_exist_is_named(gate: Gate) -> None:
    outcome = gate.submit("operator", "cli", "review.build", {"review": 999})
    assert (outcome.status, outcome.message) == (
        "refused",
        "There is no access review #999.",
    )


def test_a_snapshot_is_handed_out_only_for_an_allowed_bulk_read(gate: Gate) -> None:
    verified = gate.submit(ADMIN, "cli", "audit.verify", {})
    assert verified.status == "done"
    with gate.snapshot_for(verified) as conn:
        assert conn.exec_driver_sql("SELECT COUNT(*) FROM audit_log").scalar()
    denied = gate.submit(BOB, "cli", "audit.verify", {})
    shown = gate.submit(ADMIN, "cli", "role.show", {})
    for outcome in (denied, shown):
        with pytest.raises(PermissionError), gate.snapshot_for(outcome):
            pass


@pytest.mark.parametrize("request_id", ["a\x00b", "\ud800", "x" * 65, "nope"])
def test_an_access_request_named_oddly_is_not_found_never_a_failure(
    gate: Gate, request_id: str
) -> None:
    why = {"user": ALICE, "permission": "roles:view", "request": request_id}
    for action, params in [
        ("role.why", why),
        ("access.approve", {"request_id": request_id}),
        ("access.deny", {"request_id": request_id}),
    ]:
        outcome = gate.submit(ADMIN, "slack", action, params)
        assert (outcome.status, outcome.error_code) == ("refused", "not_found"), action
