"""The operator's actions on people and numbers: the first admin, registering a person
or a WhatsApp number, deactivating a person."""

from __future__ import annotations

import re
from dataclasses import dataclass

from sqlalchemy import select

from ..directory import ensure_user, register_number, require_user
from ..errors import (
    AdminExists,
    Conflict,
    InvalidInput,
    SelfGrant,
)
from ..gate import Action, Context, Data, Params, Prepared, Result
from ..policy.builtin_roles import ADMIN
from ..policy.grant_rules import active_admins, ensure_holds, ensure_not_last_admin
from ..store.models import (
    Grant,
    Number,
)
from ..values import (
    WILDCARD,
    clean_text,
    is_phone_number_id,
    parse_e164,
    parse_whole_number,
)
from .granting import (
    operator_only,
    reason_param,
    replace_expired,
    user_param,
)


@dataclass(frozen=True)
class UserParams(Params):
    user: str | None = None


@dataclass(frozen=True)
class UserData(Data):
    """The person an action was about."""

    user: str


@dataclass(frozen=True)
class FirstAdmin(Data):
    grant_id: int
    user: str


class BootstrapAdminAction(Action[UserParams]):
    """The first admin: allowed only while no active admin exists."""

    name = "system.bootstrap_admin"
    params_type = UserParams
    mutates_policy = True

    def prepare(self, ctx: Context, params: UserParams) -> Prepared:
        operator_only(ctx, "make the first admin")
        user = user_param(params.user)
        return Prepared(
            {"user": user}, None, WILDCARD, f"user:{user}", f"make {user} the first admin"
        )

    def check_rules(self, ctx: Context, prepared: Prepared) -> None:
        admins = active_admins(ctx.session, ctx.now)
        if admins:
            raise AdminExists(
                f"wa-access already has an admin ({', '.join(sorted(admins))}); "
                "ask them to assign roles with /wa-role assign"
            )

    def execute(self, ctx: Context, prepared: Prepared) -> Result:
        user = prepared.params["user"]
        person = ensure_user(ctx.session, user, ctx.now)
        person.active, person.deactivated_at = True, None
        replace_expired(ctx, user, ADMIN, WILDCARD, "expired; replaced by bootstrap")
        grant = Grant(
            user_id=user,
            role=ADMIN,
            scope=WILDCARD,
            granted_by="bootstrap",
            reason="first admin, created by the operator",
            granted_at=ctx.now,
        )
        ctx.session.add(grant)
        ctx.session.flush()
        return Result(
            f"{user} is now an admin (grant #{grant.id}).",
            data=FirstAdmin(grant.id, user),
            details={"grant_id": grant.id},
            policy_users=frozenset({user}),
        )


@dataclass(frozen=True)
class RegisterUserParams(Params):
    user: str | None = None
    name: str | None = None


class RegisterUserAction(Action[RegisterUserParams]):
    """An operator adds a person by Slack id; this gives them no access by itself."""

    name = "user.register"
    params_type = RegisterUserParams

    def prepare(self, ctx: Context, params: RegisterUserParams) -> Prepared:
        operator_only(ctx, "register users (Slack registers them automatically)")
        user = user_param(params.user)
        name = clean_text(params.name, "name", 200)
        return Prepared(
            {"user": user, "name": name}, None, WILDCARD, f"user:{user}", f"register {user}"
        )

    def execute(self, ctx: Context, prepared: Prepared) -> Result:
        user = ensure_user(
            ctx.session, prepared.params["user"], ctx.now, prepared.params.get("name")
        )
        return Result(
            f"{user.id} is known to wa-access (no roles until someone assigns one).",
            data=UserData(user.id),
        )


SLACK_CHANNEL = re.compile(r"[CG][A-Z0-9]{2,31}")
"""A Slack channel id: public (C…) or private (G…)."""
MAX_SEND_RATE = 1000
"""Meta's highest throughput tier, messages a second per number."""


@dataclass(frozen=True)
class NumberParams(Params):
    number: str | None = None
    """E.164, in any common spelling."""
    phone_number_id: str | None = None
    """Its id in the Graph API (digits)."""
    label: str | None = None
    channel: str | None = None
    """Its inbox channel in Slack (default: `WA_INBOX_CHANNEL`)."""
    rate: int | str | None = None
    """Messages per second it may send (default: `WA_SEND_RATE`)."""


@dataclass(frozen=True)
class NumberData(Data):
    number: str
    phone_number_id: str | None
    label: str | None
    channel: str | None
    rate: int | None


class RegisterNumberAction(Action[NumberParams]):
    """An operator declares a WhatsApp number and its Graph phone-number id.

    Once known, grants can name the number by either form.
    """

    name = "number.register"
    params_type = NumberParams

    def prepare(self, ctx: Context, params: NumberParams) -> Prepared:
        operator_only(ctx, "register numbers")
        e164 = parse_e164(params.number or "")
        phone_number_id = clean_text(params.phone_number_id, "phone-number id", 32)
        if phone_number_id is not None and not is_phone_number_id(phone_number_id):
            raise InvalidInput(f"'{phone_number_id}' is not a Graph phone-number id (digits only)")
        label = clean_text(params.label, "label", 200)
        channel = clean_text(params.channel, "channel", 32)
        if channel is not None and not SLACK_CHANNEL.fullmatch(channel):
            raise InvalidInput(f"'{channel}' is not a Slack channel id (like C0123ABCDEF)")
        rate = None
        if params.rate is not None:
            rate = parse_whole_number(
                params.rate,
                f"the send rate is a whole number of messages a second, 1 to {MAX_SEND_RATE}",
                low=1,
                high=MAX_SEND_RATE,
            )
        canonical = {"number": e164, "phone_number_id": phone_number_id, "label": label}
        return Prepared(
            {**canonical, "channel": channel, "rate": rate},
            None,
            WILDCARD,
            f"number:{e164}",
            f"register {e164}",
        )

    def execute(self, ctx: Context, prepared: Prepared) -> Result:
        p = prepared.params
        clash = ctx.session.scalar(
            select(Number.e164).where(
                Number.phone_number_id == p["phone_number_id"], Number.e164 != p["number"]
            )
        )
        if p["phone_number_id"] and clash:
            raise Conflict(f"phone-number id {p['phone_number_id']} belongs to {clash}")
        number = register_number(
            ctx.session,
            p["number"],
            p["phone_number_id"],
            p["label"],
            inbox_channel=p["channel"],
            send_rate=p["rate"],
        )
        ident = f" (phone-number id {p['phone_number_id']})" if p["phone_number_id"] else ""
        data = NumberData(
            number.e164,
            number.phone_number_id,
            number.label,
            number.inbox_channel,
            number.send_rate,
        )
        return Result(f"{p['number']}{ident} is registered.", data=data)


@dataclass(frozen=True)
class DeactivateParams(Params):
    user: str | None = None
    reason: str | None = None


class DeactivateUserAction(Action[DeactivateParams]):
    """Someone left: their grants stop counting at once (the rows stay as history)."""

    name = "user.deactivate"
    params_type = DeactivateParams
    needs_confirmation = True
    mutates_policy = True

    def prepare(self, ctx: Context, params: DeactivateParams) -> Prepared:
        user = require_user(ctx.session, user_param(params.user))
        if not user.active:
            raise InvalidInput(f"{user.id} is already deactivated")
        return Prepared(
            {"user": user.id, "reason": reason_param(params.reason)},
            "roles:assign",
            WILDCARD,
            f"user:{user.id}",
            f"deactivate {user.id} and suspend all their grants",
        )

    def check_rules(self, ctx: Context, prepared: Prepared) -> None:
        user = prepared.params["user"]
        if user == ctx.actor:
            raise SelfGrant("You cannot deactivate yourself: ask another admin.")
        # Deactivating takes away every grant at once: allowed only to someone who
        # could have revoked each of them (no escalation by the back door).
        for grant in ctx.policy.live_grants(user):
            ensure_holds(
                ctx.policy,
                ctx.actor,
                ctx.policy.permissions_of_role(grant.role),
                grant.scope,
                f"deactivate {user}, who holds {grant.role}",
            )
        ensure_not_last_admin(ctx.session, user, ctx.now, "deactivating them")

    def execute(self, ctx: Context, prepared: Prepared) -> Result:
        user = require_user(ctx.session, prepared.params["user"])
        user.active = False
        user.deactivated_at = ctx.now
        ctx.session.flush()
        return Result(
            f"Deactivated {user.id}: none of their grants count any more.",
            data=UserData(user.id),
            policy_users=frozenset({user.id}),
        )
