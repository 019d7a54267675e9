"""Two-factor authentication with TOTP (RFC 6238): enrolment, verification, step-up.

Rules held here (SPEC §4 rule 8, NIST SP 800-63B): seeds are 160 random bits,
encrypted at rest; a code is accepted once (the last accepted time step is
stored, and a code from that step or earlier is refused); five consecutive
failures lock verification for 15 minutes; a sensitive action needs a code
verified in the last 10 minutes.
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

import pyotp
from sqlalchemy.orm import Session

from .directory import require_user
from .errors import Conflict, InvalidInput, NotFound, SelfGrant
from .gate import Action, Context, Prepared, Result
from .models import SecondFactor
from .secret_box import SecretBox
from .values import WILDCARD, format_moment, parse_user_id

ISSUER = "wa-access"
STEP_SECONDS = 30
DIGITS = 6
DRIFT_STEPS = 1  # accept the previous and next step too: phone clocks drift
MAX_FAILURES = 5
LOCKOUT = timedelta(minutes=15)
STEP_UP_WINDOW = timedelta(minutes=10)

_CODE = re.compile(r"[0-9]{6}")


def matching_step(secret: str, code: str, now: float, digits: int = DIGITS) -> int | None:
    """The time step whose code equals `code` within the drift window, or None.

    Compared in constant time, and the step (not just yes/no) is returned so the
    caller can refuse a replay of an already accepted code.
    """
    totp = pyotp.TOTP(secret, digits=digits, interval=STEP_SECONDS)
    current = int(now // STEP_SECONDS)
    for step in (current, current - 1, current + 1)[: 2 * DRIFT_STEPS + 1]:
        if hmac.compare_digest(totp.generate_otp(step), code):
            return step
    return None


class TotpStepUp:
    """The gate's step-up hook: a code verified in the last 10 minutes."""

    def satisfied(self, session: Session, actor: str, now: datetime) -> bool:
        row = session.get(SecondFactor, actor)
        return (
            row is not None
            and row.active
            and row.verified_at is not None
            and row.verified_at > now - STEP_UP_WINDOW
        )


def _self(ctx: Context, what: str) -> Prepared:
    return Prepared({}, None, WILDCARD, f"user:{ctx.actor}", what)


class EnrollAction(Action):
    """Anyone may enrol (SPEC §4 rule 1); the seed goes back in `data` only, never audited."""

    name = "2fa.enroll"

    def __init__(self, box: SecretBox) -> None:
        self.box = box

    def prepare(self, ctx: Context, params: Mapping[str, Any]) -> Prepared:
        return _self(ctx, "enrol in two-factor authentication")

    def execute(self, ctx: Context, prepared: Prepared) -> Result:
        require_user(ctx.session, ctx.actor)
        row = ctx.session.get(SecondFactor, ctx.actor)
        if row is not None and row.active:
            raise Conflict(
                "You already have 2FA. If you lost your device, ask an admin to reset it."
            )
        secret = pyotp.random_base32(32)  # 160 bits
        sealed = self.box.seal(secret)
        if row is None:
            row = SecondFactor(
                user_id=ctx.actor, secret_enc=sealed, active=False, created_at=ctx.now, failures=0
            )
            ctx.session.add(row)
        else:
            row.secret_enc, row.created_at, row.failures = sealed, ctx.now, 0
            row.last_step = row.locked_until = row.verified_at = None
        ctx.session.flush()
        uri = pyotp.TOTP(secret).provisioning_uri(name=ctx.actor, issuer_name=ISSUER)
        return Result(
            "Scan the code with your authenticator app, then confirm with "
            "`/wa-2fa verify CODE`. The secret is shown this once.",
            data={"secret": secret, "uri": uri},
        )


class VerifyAction(Action):
    name = "2fa.verify"
    secret_params = frozenset({"code"})

    def __init__(self, box: SecretBox) -> None:
        self.box = box

    def prepare(self, ctx: Context, params: Mapping[str, Any]) -> Prepared:
        code = str(params.get("code") or "").replace(" ", "")
        if not _CODE.fullmatch(code):
            raise InvalidInput("a 2FA code is the 6 digits your authenticator app shows")
        return Prepared({"code": code}, None, WILDCARD, f"user:{ctx.actor}", "verify a 2FA code")

    def execute(self, ctx: Context, prepared: Prepared) -> Result:
        row = ctx.session.get(SecondFactor, ctx.actor)
        if row is None:
            raise NotFound("You have no 2FA yet: start with `/wa-2fa enroll`.")
        if row.locked_until is not None and row.locked_until > ctx.now:
            return Result(
                f"2FA is locked after too many wrong codes; try again after "
                f"{format_moment(row.locked_until)}.",
                refusal="2fa_locked",
            )
        step = matching_step(self.box.open(row.secret_enc), prepared.params["code"], ctx.clock())
        replay = step is not None and row.last_step is not None and step <= row.last_step
        if step is None or replay:
            row.failures += 1
            if row.failures >= MAX_FAILURES:
                row.failures = 0
                row.locked_until = ctx.now + LOCKOUT
                return Result(
                    f"Too many wrong codes: 2FA is locked until "
                    f"{format_moment(row.locked_until)}, and security has been alerted.",
                    data={"alert": True, "user": ctx.actor},
                    details={"locked_until": row.locked_until.isoformat()},
                    refusal="2fa_locked_now",
                )
            left = MAX_FAILURES - row.failures
            why = (
                "That code was already used; wait for the next one"
                if replay
                else ("That code is not right")
            )
            return Result(
                f"{why} ({left} tries left before a 15-minute lock).",
                details={"failures": row.failures},
                refusal="2fa_replay" if replay else "2fa_wrong_code",
            )
        row.last_step, row.failures, row.verified_at = step, 0, ctx.now
        if not row.active:
            row.active, row.activated_at = True, ctx.now
            return Result(
                "2FA is now on for your account. Sensitive actions will ask for a code.",
                data={"activated": True},
            )
        return Result("Code accepted: sensitive actions are open to you for 10 minutes.")


class StatusAction(Action):
    name = "2fa.status"
    read_only = True

    def prepare(self, ctx: Context, params: Mapping[str, Any]) -> Prepared:
        return _self(ctx, "see your 2FA status")

    def execute(self, ctx: Context, prepared: Prepared) -> Result:
        row = ctx.session.get(SecondFactor, ctx.actor)
        if row is None:
            return Result("2FA: off. Turn it on with `/wa-2fa enroll`.", data={"state": "off"})
        if not row.active:
            return Result(
                "2FA: waiting for your first code (`/wa-2fa verify CODE`).",
                data={"state": "pending"},
            )
        lines = [f"2FA: on since {format_moment(row.activated_at)}."]
        if row.locked_until is not None and row.locked_until > ctx.now:
            lines.append(f"Locked until {format_moment(row.locked_until)}.")
        if TotpStepUp().satisfied(ctx.session, ctx.actor, ctx.now):
            lines.append("A code was verified in the last 10 minutes.")
        return Result(" ".join(lines), data={"state": "on"})


class ResetAction(Action):
    """An admin clears someone's 2FA (a lost phone); itself a sensitive action."""

    name = "2fa.reset"
    risky = True

    def prepare(self, ctx: Context, params: Mapping[str, Any]) -> Prepared:
        user = parse_user_id(str(params.get("user") or ""))
        require_user(ctx.session, user)
        if ctx.session.get(SecondFactor, user) is None:
            raise NotFound(f"{user} has no 2FA to reset")
        return Prepared(
            {"user": user},
            "security:reset_2fa",
            WILDCARD,
            f"user:{user}",
            f"reset the 2FA of {user}",
            sensitive=True,
        )

    def check_rules(self, ctx: Context, prepared: Prepared) -> None:
        if prepared.params["user"] == ctx.actor:
            raise SelfGrant("You cannot reset your own 2FA: ask another admin.")

    def execute(self, ctx: Context, prepared: Prepared) -> Result:
        row = ctx.session.get(SecondFactor, prepared.params["user"])
        if row is None:
            raise NotFound(f"{prepared.params['user']} has no 2FA to reset")
        ctx.session.delete(row)
        ctx.session.flush()
        return Result(
            f"Reset the 2FA of {prepared.params['user']}: they can enrol again.",
            data={"user": prepared.params["user"]},
        )


def twofa_actions(box: SecretBox) -> dict[str, Action]:
    actions: list[Action] = [EnrollAction(box), VerifyAction(box), StatusAction(), ResetAction()]
    return {a.name: a for a in actions}
