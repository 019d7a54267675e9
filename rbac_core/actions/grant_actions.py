"""`/wa-role show`, `list`, `assign`, `revoke` and `why`: who holds what, and changing it.

Params arrive as plain JSON-able values from any surface; `prepare` turns them
into canonical form and raises a specific error for anything wrong, so the gate
can refuse before it asks anyone to confirm.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, cast

from sqlalchemy import Table, bindparam, select

from ..directory import require_user, resolve_scope
from ..errors import (
    UnknownGrant,
)
from ..gate import Action, Context, Data, NoParams, Params, Prepared, Result, wire
from ..policy.builtin_roles import ADMIN
from ..policy.catalogue import check_permission
from ..policy.grant_rules import ensure_holds, ensure_not_last_admin, live_grant
from ..policy.relations import Resource
from ..store import Sql, utc
from ..store.models import (
    Grant,
    Role,
)
from ..values import (
    WILDCARD,
    for_scope,
    format_duration,
    format_moment,
    parse_duration,
    parse_user_id,
    scope_text,
)
from .granting import (
    GrantChange,
    check_grantable,
    create_grant,
    ensure_not_held,
    get_role,
    reason_param,
    role_changed,
    sensitive_role,
    user_param,
)
from .request_lookup import find_request

_GRANTS = cast(Table, Grant.__table__)


_LIVE_GRANTS_OF = Sql(
    select(
        _GRANTS.c.id,
        _GRANTS.c.role,
        _GRANTS.c.scope,
        _GRANTS.c.granted_by,
        _GRANTS.c.reason,
        _GRANTS.c.granted_at,
        _GRANTS.c.expires_at,
    )
    .where(_GRANTS.c.user_id == bindparam("user"), _GRANTS.c.revoked_at.is_(None))
    .order_by(_GRANTS.c.id)
)


@dataclass(frozen=True)
class ShowParams(Params):
    user: str | None = None
    """Whose grants; the asker's own when left out."""


@dataclass(frozen=True)
class GrantView(Data):
    id: int
    role: str
    scope: str
    expired: bool
    expires_at: str | None
    granted_by: str
    reason: str | None


@dataclass(frozen=True)
class ShowData(Data):
    user: str
    grants: list[GrantView]
    effective: dict[str, list[str]]
    """Scope (`*` or a number) to the permissions held there."""


class ShowAction(Action[ShowParams]):
    """Anyone's most frequent command, so it reads its grants with one fast statement."""

    name = "role.show"
    params_type = ShowParams
    read_only = True

    def prepare(self, ctx: Context, params: ShowParams) -> Prepared:
        user = parse_user_id(params.user or ctx.actor)
        if user != ctx.actor:
            require_user(ctx.session, user)
        # Rule 1: anyone may look at their own grants.
        permission = None if user == ctx.actor else "roles:view"
        return Prepared(
            {"user": user}, permission, WILDCARD, f"user:{user}", f"see the grants of {user}"
        )

    def execute(self, ctx: Context, prepared: Prepared) -> Result:
        user = prepared.params["user"]
        grants = ctx.txn.rows(_LIVE_GRANTS_OF, {"user": user})
        now = ctx.now
        lines = [f"Grants of {user}:"]
        rows = []
        for gid, role, scope, granted_by, reason, granted_at, expires in grants:
            expires_at = utc(expires)
            expired = expires_at is not None and expires_at <= now
            until = "" if expires_at is None else f", until {format_moment(expires_at)}"
            state = " [EXPIRED]" if expired else ""
            why = f"; reason: {reason}" if reason else ""
            lines.append(
                f"  #{gid} {role} in {scope_text(scope)}{state} (granted by {granted_by} "
                f"on {format_moment(utc(granted_at))}{until}{why})"
            )
            rows.append(
                GrantView(
                    gid,
                    role,
                    scope,
                    expired,
                    expires_at.isoformat() if expires_at else None,
                    granted_by,
                    reason,
                )
            )
        if not grants:
            lines.append("  none: access is denied by default")
        effective = ctx.policy.effective_permissions(user)
        lines.append("Effective permissions:")
        if not effective:
            lines.append("  none")
        for scope in sorted(effective, key=lambda s: (s != WILDCARD, s)):
            lines.append(f"  {scope_text(scope)}: {', '.join(sorted(effective[scope]))}")
        return Result(
            "\n".join(lines),
            data=ShowData(user, rows, {s: sorted(p) for s, p in effective.items()}),
        )


@dataclass(frozen=True)
class RoleView(Data):
    name: str
    builtin: bool
    requires_2fa: bool
    permissions: list[str]
    """Its own permissions."""
    parents: list[str]
    effective: list[str]
    """Its own and those it inherits."""


@dataclass(frozen=True)
class ListData(Data):
    roles: list[RoleView]


class ListAction(Action[NoParams]):
    name = "role.list"
    params_type = NoParams
    read_only = True

    def prepare(self, ctx: Context, params: NoParams) -> Prepared:
        return Prepared({}, "roles:view", WILDCARD, "roles", "list roles")

    def execute(self, ctx: Context, prepared: Prepared) -> Result:
        roles = ctx.session.scalars(select(Role).order_by(Role.builtin.desc(), Role.name)).all()
        lines = ["Roles:"]
        data = []
        for role in roles:
            flags = [f for f, on in (("built-in", role.builtin), ("2FA", role.requires_2fa)) if on]
            own = sorted(p.permission for p in role.permissions)
            parents = [p.parent for p in role.parents]
            inherits = f"; inherits {', '.join(parents)}" if parents else ""
            flag_text = f" ({', '.join(flags)})" if flags else ""
            lines.append(f"• {role.name}{flag_text}: {role.description}{inherits}")
            lines.append(f"    {', '.join(own) if own else 'no permissions of its own'}")
            data.append(
                RoleView(
                    role.name,
                    role.builtin,
                    role.requires_2fa,
                    own,
                    parents,
                    sorted(ctx.policy.permissions_of_role(role.name)),
                )
            )
        return Result("\n".join(lines), data=ListData(data))


@dataclass(frozen=True)
class AssignParams(Params):
    user: str | None = None
    role: str | None = None
    number: int | str | None = None
    """The scope: a business number (any common spelling, or its Graph id), or `*`."""
    for_: str | None = wire("for")
    """How long, e.g. `4h`, `30d`; for good when left out."""
    reason: str | None = None


class AssignAction(Action[AssignParams]):
    name = "role.assign"
    params_type = AssignParams
    needs_confirmation = True
    mutates_policy = True

    def prepare(self, ctx: Context, params: AssignParams) -> Prepared:
        user = user_param(params.user)
        role = get_role(ctx.session, params.role or "")
        scope = resolve_scope(ctx.session, params.number, registered=True)
        duration = parse_duration(params.for_) if params.for_ else None
        reason = reason_param(params.reason)
        require_user(ctx.session, user)
        ensure_not_held(ctx, user, role.name, scope)
        span = f" for {format_duration(duration)}" if duration else ""
        return Prepared(
            {
                "user": user,
                "role": role.name,
                "number": scope,
                "for": format_duration(duration) if duration else None,
                "reason": reason,
            },
            "roles:assign",
            scope,
            f"user:{user}",
            f"assign {role.name} to {user} in {scope_text(scope)}{span}",
            needs_step_up=sensitive_role(ctx.policy, role.name),
            resource=Resource("grant", f"{role.name} for {user}", {"holder": user}),
        )

    def check_rules(self, ctx: Context, prepared: Prepared) -> None:
        p = prepared.params
        check_grantable(ctx, p["user"], p["role"], p["number"])

    def execute(self, ctx: Context, prepared: Prepared) -> Result:
        p = prepared.params
        result = create_grant(ctx, p["user"], p["role"], p["number"], p.get("for"), p.get("reason"))
        return replace(result, notices=(role_changed(ctx, "assigned", result.data),))


@dataclass(frozen=True)
class RevokeParams(Params):
    user: str | None = None
    role: str | None = None
    number: int | str | None = None
    reason: str | None = None


class RevokeAction(Action[RevokeParams]):
    name = "role.revoke"
    params_type = RevokeParams
    needs_confirmation = True
    mutates_policy = True

    def prepare(self, ctx: Context, params: RevokeParams) -> Prepared:
        user = user_param(params.user)
        role = get_role(ctx.session, params.role or "")
        scope = resolve_scope(ctx.session, params.number)
        reason = reason_param(params.reason)
        require_user(ctx.session, user)
        grant = live_grant(ctx.session, user, role.name, scope)
        if grant is None:
            raise UnknownGrant(f"{user} holds no {role.name} grant in {scope_text(scope)}")
        own = user == ctx.actor
        return Prepared(
            {"user": user, "role": role.name, "number": scope, "reason": reason},
            # Dropping your own grant needs no permission (SPEC §4 rule 5).
            None if own else "roles:assign",
            scope,
            f"user:{user}",
            f"revoke {role.name} from {user} in {scope_text(scope)}",
        )

    def check_rules(self, ctx: Context, prepared: Prepared) -> None:
        p = prepared.params
        if p["user"] != ctx.actor:
            ensure_holds(
                ctx.policy,
                ctx.actor,
                ctx.policy.permissions_of_role(p["role"]),
                p["number"],
                f"revoke {p['role']}{for_scope(p['number'])}",
            )
        if p["role"] == ADMIN and p["number"] == WILDCARD:
            ensure_not_last_admin(ctx.session, p["user"], ctx.now, "revoking admin")

    def execute(self, ctx: Context, prepared: Prepared) -> Result:
        p = prepared.params
        grant = live_grant(ctx.session, p["user"], p["role"], p["number"])
        if grant is None:
            raise UnknownGrant(f"{p['user']} no longer holds {p['role']} there")
        grant.revoked_at = ctx.now
        grant.revoked_by = ctx.actor
        grant.revoke_reason = p.get("reason")
        ctx.session.flush()
        return Result(
            f"Revoked {p['role']} from {p['user']} in {scope_text(p['number'])} "
            f"(grant #{grant.id}).",
            data=GrantChange(grant.id, p["user"], p["role"], p["number"], None, p.get("reason")),
            details={"grant_id": grant.id},
            policy_users=frozenset({p["user"]}),
            notices=(role_changed(ctx, "revoked", {**p, "scope": p["number"]}),),
        )


@dataclass(frozen=True)
class WhyParams(Params):
    user: str | None = None
    permission: str | None = None
    number: int | str | None = None
    request: str | None = None
    """An access request: explain the decision on it, in its scope (its relations too)."""


@dataclass(frozen=True)
class WhyData(Data):
    allowed: bool
    reason: str
    grant_id: int | None
    role: str | None
    via: list[str]
    user: str
    permission: str
    scope: str


class WhyAction(Action[WhyParams]):
    name = "role.why"
    params_type = WhyParams
    read_only = True

    def prepare(self, ctx: Context, params: WhyParams) -> Prepared:
        user = user_param(params.user)
        permission = check_permission(params.permission or "")
        scope = resolve_scope(ctx.session, params.number)
        if user != ctx.actor:
            require_user(ctx.session, user)
        kept: dict[str, Any] = {"user": user, "permission": permission, "number": scope}
        if params.request:
            # Asked about a request: the answer is about the number it is for.
            request = find_request(ctx.session, params.request)
            kept.update(request=request.id, number=request.scope)
            scope = request.scope
        return Prepared(
            kept,
            # Unlike `show` on oneself, rule 1 does not exempt `why`: it needs roles:view,
            # which every built-in role carries, in the scope asked about (so a grant on
            # one number lets its holder ask about that number).
            "roles:view",
            scope,
            f"user:{user}",
            f"explain {user}'s access to {permission}",
        )

    def execute(self, ctx: Context, prepared: Prepared) -> Result:
        p = prepared.params
        resource = _resource_named(ctx, p.get("request"))
        if resource is None:
            decision = ctx.policy.decide(p["user"], p["permission"], p["number"])
        else:
            decision = ctx.policy.decide_on(p["user"], p["permission"], p["number"], resource)
        verdict = "may" if decision.allowed else "may not"
        on = f" on {resource.label}" if resource is not None else ""
        return Result(
            f"{p['user']} {verdict} use {p['permission']}{on} in {scope_text(p['number'])}: "
            f"{decision.reason}",
            data=WhyData(
                decision.allowed,
                decision.reason,
                decision.grant_id,
                decision.role,
                list(decision.via),
                p["user"],
                p["permission"],
                p["number"],
            ),
            details={"allowed": decision.allowed},
        )


def _resource_named(ctx: Context, request_id: str | None) -> Resource | None:
    """The access request `why` was asked about, with its requester (relations.py)."""
    if not request_id:
        return None
    request = find_request(ctx.session, request_id)
    return Resource("access_request", request.id, {"requester": request.requester})
