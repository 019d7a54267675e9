"""TOTP two-factor authentication: enrolment, one-time codes, lockout, step-up."""

from __future__ import annotations

import base64
import logging

import pyotp
import pytest

from rbac_core import Database, Gate, ManualClock, build_gate
from rbac_core.actions.twofa import matching_step
from rbac_core.clock import utcnow
from rbac_core.directory import ensure_user
from rbac_core.store.models import SecondFactor

from .conftest import ADMIN, ALICE, BOB
from .helpers import audit_rows, live_grants, run

KEY = "k" * 40


@pytest.fixture
def gate(db: Database, clock: ManualClock) -> Gate:
    """The production gate: TOTP step-up, seeds sealed with WA_SECRET_KEY."""
    return build_gate(db, clock=clock, secret_key=KEY)


@pytest.fixture(autouse=True)
def _team(team: dict[str, str]) -> None:
    """One bootstrapped admin and three people."""


def enrol(gate: Gate, clock: ManualClock, user: str) -> pyotp.TOTP:
    outcome = gate.submit(user, "slack", "2fa.enroll", {})
    assert outcome.status == "done", outcome.message
    totp = pyotp.TOTP(outcome.data["secret"])
    assert outcome.data["uri"].startswith("otpauth://totp/wa-access:")
    first = gate.submit(user, "slack", "2fa.verify", {"code": totp.at(clock())})
    assert first.status == "done" and first.data.get("activated")
    return totp


@pytest.mark.parametrize(
    ("moment", "code"),
    [
        (59, "94287082"),
        (1111111109, "07081804"),
        (1234567890, "89005924"),
        (2000000000, "69279037"),
    ],
)
def test_codes_follow_rfc_6238_appendix_b(moment: int, code: str) -> None:
    seed = base64.b32encode(b"12345678901234567890").decode()
    assert matching_step(seed, code, moment, digits=8) == moment // 30
    assert matching_step(seed, code, moment + 90, digits=8) is None


def test_enrolment_is_confirmed_by_a_first_valid_code(gate: Gate, clock: ManualClock) -> None:
    outcome = gate.submit(ALICE, "slack", "2fa.enroll", {})
    assert gate.submit(ALICE, "slack", "2fa.status", {}).data["state"] == "pending"
    totp = pyotp.TOTP(outcome.data["secret"])
    assert len(outcome.data["secret"]) == 32  # 160 bits
    assert gate.submit(ALICE, "slack", "2fa.verify", {"code": totp.at(clock())}).ok
    assert gate.submit(ALICE, "slack", "2fa.status", {}).data["state"] == "on"
    again = gate.submit(ALICE, "slack", "2fa.enroll", {})
    assert again.status == "refused" and "ask an admin to reset" in again.message


def test_a_code_is_accepted_once(gate: Gate, clock: ManualClock) -> None:
    totp = enrol(gate, clock, ALICE)
    clock.advance(30)
    code = totp.at(clock())
    assert gate.submit(ALICE, "slack", "2fa.verify", {"code": code}).ok
    replay = gate.submit(ALICE, "slack", "2fa.verify", {"code": code})
    assert replay.error_code == "2fa_replay"
    older = gate.submit(ALICE, "slack", "2fa.verify", {"code": totp.at(clock() - 30)})
    assert older.error_code == "2fa_replay"


def test_five_wrong_codes_lock_for_fifteen_minutes_and_raise_the_alert(
    gate: Gate, clock: ManualClock
) -> None:
    totp = enrol(gate, clock, ALICE)
    clock.advance(60)
    wrong = "000000" if totp.at(clock()) != "000000" else "111111"
    results = [gate.submit(ALICE, "slack", "2fa.verify", {"code": wrong}) for _ in range(5)]
    assert [r.error_code for r in results] == ["2fa_wrong_code"] * 4 + ["2fa_locked_now"]
    assert results[-1].data["alert"] is True
    locked = gate.submit(ALICE, "slack", "2fa.verify", {"code": totp.at(clock())})
    assert locked.error_code == "2fa_locked"
    clock.advance(15 * 60 + 1)
    assert gate.submit(ALICE, "slack", "2fa.verify", {"code": totp.at(clock())}).ok


def test_a_correct_code_resets_the_failure_count(gate: Gate, clock: ManualClock) -> None:
    totp = enrol(gate, clock, ALICE)
    for _ in range(4):
        clock.advance(30)
        assert (
            gate.submit(
                ALICE,
                "slack",
                "2fa.verify",
                {"code": "999999" if totp.at(clock()) != "999999" else "888888"},
            ).error_code
            == "2fa_wrong_code"
        )
        assert gate.submit(ALICE, "slack", "2fa.verify", {"code": totp.at(clock())}).ok


def test_malformed_codes_are_usage_errors_not_failures(gate: Gate, clock: ManualClock) -> None:
    enrol(gate, clock, ALICE)
    for code in ("12345", "abcdef", "1234567", ""):
        assert gate.submit(ALICE, "slack", "2fa.verify", {"code": code}).status == "invalid"


def test_sensitive_actions_need_a_code_from_the_last_ten_minutes(
    gate: Gate, clock: ManualClock, db: Database
) -> None:
    enrol(gate, clock, ALICE)
    admin_totp = enrol(gate, clock, ADMIN)
    clock.advance(11 * 60)
    stale = gate.submit(ADMIN, "slack", "role.assign", {"user": ALICE, "role": "developer"})
    assert stale.status == "needs_2fa"
    assert gate.submit(ADMIN, "slack", "2fa.verify", {"code": admin_totp.at(clock())}).ok
    assert run(gate, ADMIN, "role.assign", surface="slack", user=ALICE, role="developer").ok
    assert (ALICE, "developer", "*") in live_grants(db, ALICE)


def test_roles_requiring_2fa_go_only_to_people_who_have_it(
    gate: Gate, clock: ManualClock, db: Database
) -> None:
    admin_totp = enrol(gate, clock, ADMIN)
    clock.advance(30)
    assert gate.submit(ADMIN, "slack", "2fa.verify", {"code": admin_totp.at(clock())}).ok
    refused = gate.submit(ADMIN, "slack", "role.assign", {"user": BOB, "role": "developer"})
    assert refused.error_code == "2fa_required" and "/wa-2fa enroll" in refused.message


def test_resetting_someones_2fa_is_itself_sensitive(
    gate: Gate, clock: ManualClock, db: Database
) -> None:
    enrol(gate, clock, ALICE)
    admin_totp = enrol(gate, clock, ADMIN)
    clock.advance(11 * 60)
    assert gate.submit(ADMIN, "slack", "2fa.reset", {"user": ALICE}).status == "needs_2fa"
    assert gate.submit(BOB, "slack", "2fa.reset", {"user": ALICE}).status == "denied"
    assert gate.submit(ADMIN, "slack", "2fa.verify", {"code": admin_totp.at(clock())}).ok
    assert run(gate, ADMIN, "2fa.reset", surface="slack", user=ALICE).ok
    assert gate.submit(ALICE, "slack", "2fa.status", {}).data["state"] == "off"


def test_seeds_are_encrypted_at_rest_and_never_audited_or_logged(
    gate: Gate, clock: ManualClock, db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    outcome = gate.submit(ALICE, "slack", "2fa.enroll", {})
    secret = outcome.data["secret"]
    code = pyotp.TOTP(secret).at(clock())
    gate.submit(ALICE, "slack", "2fa.verify", {"code": code})
    with db.read() as session:
        row = session.get(SecondFactor, ALICE)
        assert row is not None and secret not in row.secret_enc
    trail = " ".join(r.details + r.target for r in audit_rows(db))
    assert secret not in trail and code not in trail
    assert secret not in caplog.text and code not in caplog.text


class TestAWorkspaceWithoutASecretKey:
    @pytest.fixture(autouse=True)
    def _team(self, db: Database, clock: ManualClock) -> None:
        """Nobody set WA_SECRET_KEY here, ever: the audit log is not keyed either."""
        with db.write() as session:
            ensure_user(session, ALICE, utcnow(clock))

    def test_2fa_is_refused_clearly(self, db: Database, clock: ManualClock) -> None:
        gate = build_gate(db, clock=clock)
        outcome = gate.submit(ALICE, "slack", "2fa.enroll", {})
        assert outcome.status == "refused" and "WA_SECRET_KEY" in outcome.message


def test_a_lockout_closes_the_step_up_window_a_good_code_had_opened(
    gate: Gate, clock: ManualClock, db: Database
) -> None:
    enrol(gate, clock, ALICE)
    admin_totp = enrol(gate, clock, ADMIN)
    clock.advance(30)
    assert gate.submit(ADMIN, "slack", "2fa.verify", {"code": admin_totp.at(clock())}).ok
    waiting = gate.submit(ADMIN, "slack", "role.assign", {"user": ALICE, "role": "admin"})
    assert waiting.status == "needs_confirmation"
    wrong = "000000" if admin_totp.at(clock()) != "000000" else "111111"
    for _ in range(5):
        last = gate.submit(ADMIN, "slack", "2fa.verify", {"code": wrong})
    assert last.error_code == "2fa_locked_now"
    status = gate.submit(ADMIN, "slack", "2fa.status", {}).message
    assert "Locked until" in status and "verified in the last 10 minutes" not in status
    # Neither the confirmation asked for before the lockout nor a new request runs.
    assert gate.confirm(waiting.pending_id or "", ADMIN, "slack").status == "needs_2fa"
    again = run(gate, ADMIN, "role.assign", surface="slack", user=ALICE, role="admin")
    assert again.status == "needs_2fa"
    assert (ALICE, "admin", "*") not in live_grants(db, ALICE)


def test_a_used_code_sent_again_is_refused_without_counting_as_a_guess(
    gate: Gate, clock: ManualClock
) -> None:
    """A double click resends a good code: refusing it must not move anyone toward a lockout."""
    totp = enrol(gate, clock, ALICE)
    clock.advance(30)
    code = totp.at(clock())
    assert gate.submit(ALICE, "slack", "2fa.verify", {"code": code}).ok
    for _ in range(10):
        assert gate.submit(ALICE, "slack", "2fa.verify", {"code": code}).error_code == "2fa_replay"
    clock.advance(30)
    assert gate.submit(ALICE, "slack", "2fa.verify", {"code": totp.at(clock())}).ok


def test_someone_who_may_not_reset_2fa_learns_nothing_about_anyones(
    gate: Gate, clock: ManualClock
) -> None:
    enrol(gate, clock, ALICE)
    answers = {
        target: gate.submit(BOB, "slack", "2fa.reset", {"user": target})
        for target in (ALICE, "U0NOBODY01", ADMIN)  # has 2FA, unknown, known without 2FA
    }
    assert {a.status for a in answers.values()} == {"denied"}
    assert len({a.message.replace(t, "X") for t, a in answers.items()}) == 1
