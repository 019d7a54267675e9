"""Counters, single-use rules and state machines hold when requests race.

Each test lets several gates, each with its own Database (as separate
processes have), or many threads of one gate, ask at the same instant. On
PostgreSQL these are real concurrent transactions; on SQLite the writers'
lock serialises them, so the same rules must hold there too.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterator
from functools import partial

import pyotp
import pytest
from sqlalchemy import select

from rbac_core import Database, Gate, ManualClock, Outcome, build_gate
from rbac_core.actions.twofa import MAX_FAILURES
from rbac_core.store.models import ReviewFinding

from .conftest import ADMIN, ALICE, BOB
from .helpers import live_grants, run

KEY = "k" * 40


def race(calls: list[Callable[[], Outcome]]) -> list[Outcome]:
    """Run every call at once (released together by a barrier); their outcomes in order."""
    barrier = threading.Barrier(len(calls))
    results: list[Outcome | BaseException | None] = [None] * len(calls)

    def worker(i: int) -> None:
        barrier.wait()
        try:
            results[i] = calls[i]()
        except BaseException as exc:  # reported below, never lost in a thread
            results[i] = exc

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    errors = [r for r in results if not isinstance(r, Outcome)]
    assert errors == []
    return [r for r in results if isinstance(r, Outcome)]


@pytest.fixture
def gates(db_url: str, clock: ManualClock) -> Iterator[list[Gate]]:
    """Eight gates on one database, each with its own connections, like eight processes."""
    made = [build_gate(Database(db_url), clock=clock, secret_key=KEY) for _ in range(8)]
    yield made
    for g in made:
        g.db.dispose()


@pytest.fixture
def alice_totp(team: dict[str, str], gates: list[Gate], clock: ManualClock) -> pyotp.TOTP:
    outcome = gates[0].submit(ALICE, "slack", "2fa.enroll", {})
    totp = pyotp.TOTP(outcome.data["secret"])
    assert gates[0].submit(ALICE, "slack", "2fa.verify", {"code": totp.at(clock())}).ok
    return totp


def _wrong(totp: pyotp.TOTP, clock: ManualClock) -> str:
    now = clock()
    valid = {totp.at(now + d) for d in (-30, 0, 30)}
    return next(c for c in ("000000", "111111", "222222", "333333") if c not in valid)


def test_the_same_code_sent_eight_times_at_once_is_accepted_once(
    gates: list[Gate], alice_totp: pyotp.TOTP, clock: ManualClock
) -> None:
    for _ in range(3):  # three rounds, each with a fresh code
        clock.advance(30)
        code = alice_totp.at(clock())
        results = race(
            [partial(g.submit, ALICE, "slack", "2fa.verify", {"code": code}) for g in gates]
        )
        assert Counter(r.error_code or r.status for r in results) == {"done": 1, "2fa_replay": 7}


def test_forty_wrong_codes_at_once_are_at_most_five_guesses(
    gates: list[Gate], alice_totp: pyotp.TOTP, clock: ManualClock
) -> None:
    clock.advance(30)
    wrong = _wrong(alice_totp, clock)
    calls = [
        partial(gates[i % 8].submit, ALICE, "slack", "2fa.verify", {"code": wrong})
        for i in range(40)
    ]
    counts = Counter(r.error_code for r in race(calls))
    assert counts == {
        "2fa_wrong_code": MAX_FAILURES - 1,
        "2fa_locked_now": 1,
        "2fa_locked": 40 - MAX_FAILURES,
    }
    # Locked means locked: even the right code is refused now.
    right = gates[0].submit(ALICE, "slack", "2fa.verify", {"code": alice_totp.at(clock())})
    assert right.error_code == "2fa_locked"


def test_two_dozen_threads_of_one_process_guess_at_most_five_times(
    gates: list[Gate], alice_totp: pyotp.TOTP, clock: ManualClock
) -> None:
    clock.advance(30)
    wrong = _wrong(alice_totp, clock)
    one = gates[0]
    calls = [(lambda: one.submit(ALICE, "slack", "2fa.verify", {"code": wrong})) for _ in range(24)]
    counts = Counter(r.error_code for r in race(calls))
    assert counts["2fa_wrong_code"] + counts["2fa_locked_now"] == MAX_FAILURES
    assert counts["2fa_locked_now"] == 1 and counts["2fa_locked"] == 24 - MAX_FAILURES


def test_enrolling_twice_at_once_leaves_one_usable_secret(
    team: dict[str, str], gates: list[Gate], clock: ManualClock
) -> None:
    results = race([(lambda g=g: g.submit(BOB, "slack", "2fa.enroll", {})) for g in gates[:4]])
    assert all(r.status == "done" for r in results), [r.message for r in results]
    usable = [
        r
        for r in results
        if gates[0]
        .submit(BOB, "slack", "2fa.verify", {"code": pyotp.TOTP(r.data["secret"]).at(clock())})
        .ok
    ]
    assert len(usable) == 1  # the last enrolment wins; the others' secrets are void


def test_an_access_request_approved_and_denied_at_once_is_decided_once(
    team: dict[str, str], gates: list[Gate], db: Database, clock: ManualClock
) -> None:
    assert run(gates[0], ADMIN, "role.assign", user=ALICE, role="support").ok
    asked = gates[0].submit(
        ALICE, "slack", "access.request", {"role": "analyst", "reason": "qa", "for": "4h"}
    )
    assert asked.status == "done", asked.message
    request_id = asked.data["request_id"]
    calls: list[Callable[[], Outcome]] = []
    for i, g in enumerate(gates):
        verb = "access.approve" if i % 2 == 0 else "access.deny"
        calls.append(
            lambda g=g, verb=verb: g.submit(ADMIN, "slack", verb, {"request_id": request_id})
        )
    results = race(calls)
    assert sum(r.status == "done" for r in results) == 1
    assert all(r.error_code == "pending_action" for r in results if r.status != "done")
    winner = next(r for r in results if r.status == "done")
    expected = [(ALICE, "analyst", "*")] if winner.action == "access.approve" else []
    assert [g for g in live_grants(db, ALICE) if g[1] == "analyst"] == expected


def test_the_same_access_request_sent_at_once_is_opened_once(
    team: dict[str, str], gates: list[Gate], clock: ManualClock
) -> None:
    assert run(gates[0], ADMIN, "role.assign", user=ALICE, role="support").ok
    params = {"role": "analyst", "reason": "qa", "for": "4h"}
    results = race(
        [(lambda g=g: g.submit(ALICE, "slack", "access.request", params)) for g in gates]
    )
    assert Counter(r.error_code or r.status for r in results) == {"done": 1, "conflict": 7}
    pending = gates[0].submit(ALICE, "slack", "access.pending", {})
    assert len(pending.data["mine"]) == 1


def test_revoke_and_keep_clicked_at_once_on_one_finding_act_once(
    team: dict[str, str], gates: list[Gate], db: Database, clock: ManualClock
) -> None:
    """Two reports list Alice's idle grant; eight admins' clicks on either row land at once."""
    assert run(gates[0], ADMIN, "role.assign", user=ALICE, role="agent").ok
    clock.advance(40 * 86_400)
    findings = []
    for _ in range(2):
        review = gates[0].submit("operator", "cli", "audit.review", {"days": 30})
        built = gates[0].submit(
            "operator", "cli", "review.build", {"review": review.data["review_id"]}
        )
        assert built.status == "done", built.message
        with db.read() as session:
            findings.append(
                session.scalars(
                    select(ReviewFinding.id)
                    .where(ReviewFinding.user_id == ALICE)
                    .order_by(ReviewFinding.id.desc())
                ).first()
            )
    assert len(set(findings)) == 2
    calls = [
        partial(
            g.submit,
            ADMIN,
            "slack",
            "review.revoke" if i % 2 else "review.keep",
            {"finding": str(findings[i % 2 - 1])},
        )
        for i, g in enumerate(gates)
    ]
    results = race(calls)
    assert sum(r.status == "done" for r in results) == 1, [r.message for r in results]
    assert all(r.error_code == "conflict" for r in results if r.status != "done")
    with db.read() as session:
        states = set(
            session.scalars(select(ReviewFinding.status).where(ReviewFinding.user_id == ALICE))
        )
    assert len(states) == 1 and states <= {"revoked", "kept"}


def test_a_confirmation_expiring_as_a_replica_sweeps_does_not_deadlock(
    team: dict[str, str], db_url: str, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Clocks of two replicas straddle the expiry: one confirms, the other sweeps. Both
    take the policy lock before the pending row; the other way round they deadlocked."""
    import time

    import rbac_core.gate.confirmations as gate_module

    confirming = build_gate(Database(db_url), clock=clock)
    asked = confirming.submit(ADMIN, "cli", "role.assign", {"user": ALICE, "role": "agent"})
    later = ManualClock(clock() + 301)
    sweeping = build_gate(Database(db_url), clock=later)
    clock.advance(299)
    real_lock = gate_module.lock_policy

    def slow_lock(txn: object) -> object:
        if threading.current_thread().name == "confirm":
            time.sleep(0.5)  # the sweep takes the policy lock meanwhile
        return real_lock(txn)  # type: ignore[arg-type]

    monkeypatch.setattr(gate_module, "lock_policy", slow_lock)
    results: dict[str, object] = {}

    def confirm() -> None:
        try:
            results["confirm"] = confirming.confirm(asked.pending_id or "", ADMIN, "cli").status
        except Exception as exc:
            results["confirm"] = exc

    def sweep() -> None:
        time.sleep(0.2)
        try:
            results["sweep"] = sweeping.submit("scheduler", "scheduler", "system.sweep", {}).status
        except Exception as exc:
            results["sweep"] = exc

    threads = [threading.Thread(target=confirm, name="confirm"), threading.Thread(target=sweep)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert results["sweep"] == "done", results
    assert results["confirm"] in ("done", "refused"), results
    for g in (confirming, sweeping):
        g.db.dispose()


def test_a_retried_event_reaching_eight_replicas_at_once_is_taken_by_exactly_one(
    db_url: str, clock: ManualClock
) -> None:
    """Insert-or-ignore lets the database pick the winner: no replica sees "not yet
    taken" and then fails on the key, and none is told it won when it did not."""
    from rbac_core.store.inbound import InboundEvents

    replicas = [InboundEvents(Database(db_url), clock) for _ in range(8)]
    barrier = threading.Barrier(len(replicas))
    won: list[bool] = []

    def take(inbound: InboundEvents) -> None:
        barrier.wait()
        won.append(inbound.claim("whatsapp", "wamid.HBgLMTY1MDM4Nzk0MzkVAgARGBI"))

    threads = [threading.Thread(target=take, args=(r,)) for r in replicas]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(won) == [False] * 7 + [True]
    for inbound in replicas:
        inbound.db.dispose()
