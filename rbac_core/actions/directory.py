"""The operator's view of the directory: who and which numbers wa-access knows, and removals.

Registering people and numbers lives with the role actions (`user.register`,
`number.register`); this module holds what an operator needs beside them at
the command line: listing both, and taking either out. Every one of these is
operator-only and audited like any other gate action.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select

from ..directory import ensure_user, require_user, resolve_scope
from ..errors import Conflict, Forbidden, InvalidInput, NotFound
from ..gate import Action, Context, Data, NoParams, Params, Prepared, Result
from ..policy.grant_rules import ensure_not_last_admin
from ..store.models import Grant, Number, User
from ..values import WILDCARD, format_moment, parse_user_id
from .granting import operator_only
from .people import UserData, UserParams

LIST_MAX = 10_000


def _live(ctx: Context) -> Any:
    """Grants that still count: not revoked, not expired."""
    return (Grant.revoked_at.is_(None)) & (
        Grant.expires_at.is_(None) | (Grant.expires_at > ctx.now)
    )


@dataclass(frozen=True)
class SeenParams(Params):
    user: str | None = None
    name: str | None = None
    """Their name as Slack gives it, if any."""
    via: str | None = None
    """How the surface knows them: `request` (a signed request's sender) or `users.info`."""


@dataclass(frozen=True)
class SeenData(Data):
    user: str
    created: bool
    """True when this registered them; false when wa-access knew them already."""


class SeenUserAction(Action[SeenParams]):
    """A surface registers a person it has verified: the sender of a signed Slack
    request, or someone a command named whom Slack's users.info vouches for.

    Registering gives no access, but it is a write, so it passes the gate and is
    audited like any other: who was registered, by whose request, and how the
    surface knew them (`via`).
    """

    name = "user.seen"
    params_type = SeenParams

    def prepare(self, ctx: Context, params: SeenParams) -> Prepared:
        if ctx.surface != "slack":
            raise Forbidden("Only Slack, which verified the person, registers them this way.")
        user = parse_user_id(params.user or "")
        via = params.via or ""
        if via not in SEEN_VIA:
            raise InvalidInput(f"'{via}' is not how a surface knows a person")
        return Prepared(
            {"user": user, "name": params.name, "via": via},
            None,
            WILDCARD,
            f"user:{user}",
            f"register {user}, seen in Slack",
        )

    def execute(self, ctx: Context, prepared: Prepared) -> Result:
        p = prepared.params
        known = ctx.session.get(User, p["user"]) is not None
        user = ensure_user(ctx.session, p["user"], ctx.now, p["name"])
        return Result(
            f"{user.id} is known to wa-access." if known else f"Registered {user.id}.",
            data=SeenData(user.id, not known),
            details={"created": not known, "via": p["via"]},
        )


SEEN_VIA = ("request", "users.info")


@dataclass(frozen=True)
class PersonView(Data):
    user: str
    name: str | None
    active: bool
    deactivated_at: str | None
    """When they were removed, as the console shows moments."""
    grants: int
    """How many of their grants still count."""


@dataclass(frozen=True)
class UsersData(Data):
    users: list[PersonView]


class ListUsersAction(Action[NoParams]):
    name = "user.list"
    params_type = NoParams
    read_only = True

    def prepare(self, ctx: Context, params: NoParams) -> Prepared:
        operator_only(ctx, "list everyone wa-access knows")
        return Prepared({}, None, WILDCARD, "users", "list the people wa-access knows")

    def execute(self, ctx: Context, prepared: Prepared) -> Result:
        grants = (
            select(Grant.user_id, func.count().label("n"))
            .where(_live(ctx))
            .group_by(Grant.user_id)
            .subquery()
        )
        rows = ctx.session.execute(
            select(User.id, User.name, User.active, User.deactivated_at, grants.c.n)
            .outerjoin(grants, grants.c.user_id == User.id)
            .order_by(User.id)
            .limit(LIST_MAX)
        ).all()
        people = [
            PersonView(uid, name, bool(active), format_moment(gone) if gone else None, int(n or 0))
            for uid, name, active, gone, n in rows
        ]
        return Result(f"{len(people)} people are known to wa-access.", data=UsersData(people))


class RemoveUserAction(Action[UserParams]):
    """An operator takes someone out: deactivated, so no grant of theirs counts.

    The row stays, as history the audit log and old grants refer to; the person
    comes back only through `user add` (and new grants).
    """

    name = "user.remove"
    params_type = UserParams
    mutates_policy = True

    def prepare(self, ctx: Context, params: UserParams) -> Prepared:
        operator_only(ctx, "remove people")
        user = require_user(ctx.session, parse_user_id(params.user or ""))
        if not user.active:
            raise Conflict(f"{user.id} was already removed on {format_moment(user.deactivated_at)}")
        return Prepared({"user": user.id}, None, WILDCARD, f"user:{user.id}", f"remove {user.id}")

    def check_rules(self, ctx: Context, prepared: Prepared) -> None:
        ensure_not_last_admin(ctx.session, prepared.params["user"], ctx.now, "removing them")

    def execute(self, ctx: Context, prepared: Prepared) -> Result:
        user = require_user(ctx.session, prepared.params["user"], lock=True)
        user.active, user.deactivated_at = False, ctx.now
        ctx.session.flush()
        return Result(
            f"Removed {user.id}: none of their grants count any more.",
            data=UserData(user.id),
            policy_users=frozenset({user.id}),
        )


@dataclass(frozen=True)
class NumberView(Data):
    number: str
    phone_number_id: str | None
    label: str | None
    grants: int
    """How many grants on it still count."""
    channel: str | None
    rate: int | None
    paused: bool


@dataclass(frozen=True)
class NumbersData(Data):
    numbers: list[NumberView]


class ListNumbersAction(Action[NoParams]):
    name = "number.list"
    params_type = NoParams
    read_only = True

    def prepare(self, ctx: Context, params: NoParams) -> Prepared:
        operator_only(ctx, "list the workspace's numbers")
        return Prepared({}, None, WILDCARD, "numbers", "list the workspace's numbers")

    def execute(self, ctx: Context, prepared: Prepared) -> Result:
        grants = (
            select(Grant.scope, func.count().label("n"))
            .where(_live(ctx))
            .group_by(Grant.scope)
            .subquery()
        )
        rows = ctx.session.execute(
            select(Number, grants.c.n)
            .outerjoin(grants, grants.c.scope == Number.e164)
            .order_by(Number.e164)
            .limit(LIST_MAX)
        ).all()
        numbers = [
            NumberView(
                number.e164,
                number.phone_number_id,
                number.label,
                int(n or 0),
                number.inbox_channel,
                number.send_rate,
                number.paused_at is not None,
            )
            for number, n in rows
        ]
        return Result(f"{len(numbers)} numbers are registered.", data=NumbersData(numbers))


@dataclass(frozen=True)
class RemoveNumberParams(Params):
    number: int | str | None = None
    """E.164 in any common spelling, or its Graph phone-number id (which may come as a
    number)."""


@dataclass(frozen=True)
class RemovedNumberData(Data):
    number: str


class RemoveNumberAction(Action[RemoveNumberParams]):
    """An operator takes a number out; refused while grants on it still count."""

    name = "number.remove"
    params_type = RemoveNumberParams

    def prepare(self, ctx: Context, params: RemoveNumberParams) -> Prepared:
        return _operator_on_number(ctx, params, "remove")

    def execute(self, ctx: Context, prepared: Prepared) -> Result:
        e164 = prepared.params["number"]
        number = _locked(ctx, e164)
        holders = ctx.session.execute(
            select(Grant.id, Grant.user_id, Grant.role)
            .where(Grant.scope == e164, _live(ctx))
            .order_by(Grant.id)
            .limit(11)
        ).all()
        if holders:
            named = ", ".join(f"#{gid} {user} ({role})" for gid, user, role in holders[:10])
            more = " and more" if len(holders) > 10 else ""
            raise Conflict(
                f"{e164} still has grants that count: {named}{more}. Revoke them first "
                f"(`/wa-role revoke @user ROLE --number {e164}`)."
            )
        ctx.session.delete(number)
        ctx.session.flush()
        return Result(
            f"Removed {e164}: grants can no longer name it.", data=RemovedNumberData(e164)
        )


def _locked(ctx: Context, e164: str) -> Number:
    """The registered number, held until the transaction ends (it may have gone since
    `prepare` found it)."""
    number = ctx.session.get(Number, e164, with_for_update=True)
    if number is None:
        raise NotFound(f"{e164} is not a registered number")
    return number


def _operator_on_number(ctx: Context, params: RemoveNumberParams, verb: str) -> Prepared:
    """An operator's action on one registered number, named by E.164 or phone-number id."""
    operator_only(ctx, f"{verb} numbers")
    raw = str(params.number or "").strip()
    if not raw:
        raise InvalidInput(f"name the number to {verb}, e.g. +15550001111")
    e164 = resolve_scope(ctx.session, raw)
    if e164 == WILDCARD or ctx.session.get(Number, e164) is None:
        raise NotFound(f"{raw} is not a registered number (see `wa-access number list`)")
    return Prepared({"number": e164}, None, WILDCARD, f"number:{e164}", f"{verb} {e164}")


class ResumeNumberAction(Action[RemoveNumberParams]):
    """An operator lets a number Meta had restricted send again (its queued messages go)."""

    name = "number.resume"
    params_type = RemoveNumberParams

    def prepare(self, ctx: Context, params: RemoveNumberParams) -> Prepared:
        return _operator_on_number(ctx, params, "resume")

    def execute(self, ctx: Context, prepared: Prepared) -> Result:
        e164 = prepared.params["number"]
        number = _locked(ctx, e164)
        if number.paused_at is None:
            return Result(f"{e164} was not paused.", data=RemovedNumberData(e164))
        was = number.paused_reason or "no reason recorded"
        number.paused_at, number.paused_reason = None, None
        return Result(
            f"{e164} sends again (it was paused: {was}).",
            data=RemovedNumberData(e164),
            details={"was_paused_for": was},
        )


DIRECTORY_ACTIONS: dict[str, Action[Any]] = {
    a.name: a
    for a in (
        SeenUserAction(),
        ListUsersAction(),
        RemoveUserAction(),
        ListNumbersAction(),
        RemoveNumberAction(),
        ResumeNumberAction(),
    )
}
