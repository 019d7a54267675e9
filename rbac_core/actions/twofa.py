"""Two-factor authentication with TOTP (RFC 6238): enrolment, verification, step-up.

Rules held here (SPEC §4 rule 8, NIST SP 800-63B): seeds are 160 random bits,
encrypted at rest; a code is accepted once (the last accepted time step is
stored, and a code from that step or earlier is refused); five consecutive
wrong codes lock verification for 15 minutes and close any open step-up
window; a sensitive action needs a code verified in the last 10 minutes. Each
rule holds under concurrent requests: see `_locked_factor`.
"""

from __future__ import annotations

import hmac
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import pyotp
from sqlalchemy.orm import Session

from .. import audit
from ..directory import require_user
from ..errors import Conflict, InvalidInput, NotFound, SelfGrant
from ..gate import Action, Context, Data, NoParams, Params, Prepared, Result
from ..outbox import ALERT_CHANNEL, Notice
from ..secret_box import SecretBox
from ..store.models import SecondFactor, User
from ..values import WILDCARD, format_moment, parse_user_id
from .people import UserData, UserParams

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


def window_open(row: SecondFactor | None, now: datetime) -> bool:
    """Whether `row` proves a second factor now: a code verified in the last 10
    minutes, and no lockout since. A lockout ends the window (it also clears
    `verified_at`; checking both keeps the rule if either write is ever lost)."""
    return (
        row is not None
        and row.active
        and row.verified_at is not None
        and row.verified_at > now - STEP_UP_WINDOW
        and (row.locked_until is None or row.locked_until <= now)
    )


class TotpStepUp:
    """The gate's step-up hook: a code verified in the last 10 minutes."""

    def satisfied(self, session: Session, actor: str, now: datetime) -> bool:
        return window_open(session.get(SecondFactor, actor), now)


def _locked_factor(session: Session, user: str) -> SecondFactor | None:
    """The person's 2FA row, read under a lock held until the transaction ends.

    Every enrolment, check of a code and reset locks the person's `users` row
    first, so concurrent requests for one person queue and each reads what the
    previous one wrote: a code is accepted once and at most five wrong codes
    are checked, however many arrive at once (PostgreSQL row locks; SQLite's
    single writer). The users row, not the 2FA row, is the lock because an
    enrolment may find no 2FA row to lock yet.
    """
    # FOR NO KEY UPDATE on PostgreSQL: it serialises these requests just the same,
    # without blocking the foreign-key checks of grants being written for them.
    session.get(User, user, with_for_update={"key_share": True}, populate_existing=True)
    return session.get(SecondFactor, user, with_for_update=True, populate_existing=True)


def _self(ctx: Context, what: str) -> Prepared:
    return Prepared({}, None, WILDCARD, f"user:{ctx.actor}", what)


@dataclass(frozen=True)
class EnrolmentData(Data):
    secret: str
    """The TOTP seed (base32), shown this once."""
    uri: str
    """The same seed as an otpauth:// URI, for a QR code."""


class EnrollAction(Action[NoParams]):
    """Anyone may enrol (SPEC §4 rule 1); the seed goes back in `data` only, never audited."""

    name = "2fa.enroll"
    params_type = NoParams

    def __init__(self, box: SecretBox) -> None:
        self.box = box

    def prepare(self, ctx: Context, params: NoParams) -> Prepared:
        return _self(ctx, "enrol in two-factor authentication")

    def execute(self, ctx: Context, prepared: Prepared) -> Result:
        require_user(ctx.session, ctx.actor)
        row = _locked_factor(ctx.session, ctx.actor)
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
            data=EnrolmentData(secret, uri),
        )


@dataclass(frozen=True)
class CodeParams(Params):
    code: str | None = None


@dataclass(frozen=True)
class LockedOutData(Data):
    """Too many wrong codes: the person's 2FA is locked and security was alerted."""

    alert: bool
    user: str


@dataclass(frozen=True)
class ActivatedData(Data):
    """The first code was right: 2FA is now on."""

    activated: bool


class VerifyAction(Action[CodeParams]):
    name = "2fa.verify"
    params_type = CodeParams
    secret_params = frozenset({"code"})

    def __init__(self, box: SecretBox) -> None:
        self.box = box

    def prepare(self, ctx: Context, params: CodeParams) -> Prepared:
        code = (params.code or "").replace(" ", "")
        if not _CODE.fullmatch(code):
            raise InvalidInput("a 2FA code is the 6 digits your authenticator app shows")
        return Prepared({"code": code}, None, WILDCARD, f"user:{ctx.actor}", "verify a 2FA code")

    def execute(self, ctx: Context, prepared: Prepared) -> Result:
        row = _locked_factor(ctx.session, ctx.actor)
        if row is None:
            raise NotFound("You have no 2FA yet: start with `/wa-2fa enroll`.")
        # A guess is checked only once its outcome is sure to be recorded: were the
        # audit append to fail later (a lock timeout), the rollback would forget the
        # failure count and leave the code unused. Lock order: users, second_factors,
        # audit_head, as everywhere.
        audit.lock_head(ctx.txn)
        if row.locked_until is not None and row.locked_until > ctx.now:
            return Result(
                f"2FA is locked after too many wrong codes; try again after "
                f"{format_moment(row.locked_until)}.",
                refusal="2fa_locked",
            )
        step = matching_step(self.box.open(row.secret_enc), prepared.params["code"], ctx.clock())
        if step is not None and row.last_step is not None and step <= row.last_step:
            # A valid code used before: a double click or a replay. It tells no
            # one anything about the seed, so it is refused without counting
            # as a guess (counting it would let a double click lock people out).
            return Result(
                "That code was already used; wait for the next one.",
                refusal="2fa_replay",
            )
        if step is None:
            row.failures += 1
            if row.failures >= MAX_FAILURES:
                row.failures = 0
                row.locked_until = ctx.now + LOCKOUT
                row.verified_at = None  # a lockout closes the step-up window
                return Result(
                    f"Too many wrong codes: 2FA is locked until "
                    f"{format_moment(row.locked_until)}, and security has been alerted.",
                    data=LockedOutData(True, ctx.actor),
                    details={"locked_until": row.locked_until.isoformat()},
                    refusal="2fa_locked_now",
                    notices=(
                        Notice(
                            "2fa.locked",
                            ALERT_CHANNEL,
                            {"user": ctx.actor, "until": row.locked_until.isoformat()},
                        ),
                    ),
                )
            left = MAX_FAILURES - row.failures
            return Result(
                f"That code is not right ({left} tries left before a 15-minute lock).",
                details={"failures": row.failures},
                refusal="2fa_wrong_code",
            )
        row.last_step, row.failures, row.verified_at = step, 0, ctx.now
        if not row.active:
            row.active, row.activated_at = True, ctx.now
            return Result(
                "2FA is now on for your account. Sensitive actions will ask for a code.",
                data=ActivatedData(True),
            )
        return Result("Code accepted: sensitive actions are open to you for 10 minutes.")


@dataclass(frozen=True)
class StatusData(Data):
    state: str
    """off, pending (enrolled, no code verified yet) or on."""


class StatusAction(Action[NoParams]):
    name = "2fa.status"
    params_type = NoParams
    read_only = True

    def prepare(self, ctx: Context, params: NoParams) -> Prepared:
        return _self(ctx, "see your 2FA status")

    def execute(self, ctx: Context, prepared: Prepared) -> Result:
        row = ctx.session.get(SecondFactor, ctx.actor)
        if row is None:
            return Result("2FA: off. Turn it on with `/wa-2fa enroll`.", data=StatusData("off"))
        if not row.active:
            return Result(
                "2FA: waiting for your first code (`/wa-2fa verify CODE`).",
                data=StatusData("pending"),
            )
        lines = [f"2FA: on since {format_moment(row.activated_at)}."]
        if row.locked_until is not None and row.locked_until > ctx.now:
            lines.append(f"Locked until {format_moment(row.locked_until)}.")
        if window_open(row, ctx.now):
            lines.append("A code was verified in the last 10 minutes.")
        return Result(" ".join(lines), data=StatusData("on"))


class ResetAction(Action[UserParams]):
    """An admin clears someone's 2FA (a lost phone); itself a sensitive action."""

    name = "2fa.reset"
    params_type = UserParams
    needs_confirmation = True

    def prepare(self, ctx: Context, params: UserParams) -> Prepared:
        # Whether they exist or have 2FA is checked in check_rules, after the
        # permission: someone who may not reset 2FA learns nothing about anyone's.
        user = parse_user_id(params.user or "")
        return Prepared(
            {"user": user},
            "security:reset_2fa",
            WILDCARD,
            f"user:{user}",
            f"reset the 2FA of {user}",
            needs_step_up=True,
        )

    def check_rules(self, ctx: Context, prepared: Prepared) -> None:
        user = prepared.params["user"]
        if user == ctx.actor:
            raise SelfGrant("You cannot reset your own 2FA: ask another admin.")
        require_user(ctx.session, user)
        if ctx.session.get(SecondFactor, user) is None:
            raise NotFound(f"{user} has no 2FA to reset")

    def execute(self, ctx: Context, prepared: Prepared) -> Result:
        row = _locked_factor(ctx.session, prepared.params["user"])
        if row is None:
            raise NotFound(f"{prepared.params['user']} has no 2FA to reset")
        ctx.session.delete(row)
        ctx.session.flush()
        return Result(
            f"Reset the 2FA of {prepared.params['user']}: they can enrol again.",
            data=UserData(prepared.params["user"]),
        )


def twofa_actions(box: SecretBox) -> dict[str, Action[Any]]:
    actions: list[Action[Any]] = [
        EnrollAction(box),
        VerifyAction(box),
        StatusAction(),
        ResetAction(),
    ]
    return {a.name: a for a in actions}
