"""The role and grant actions behind `/wa-role` and the operator CLI.

Params arrive as plain JSON-able values from any surface; `prepare` turns them
into canonical form and raises a specific error for anything wrong, so the gate
can refuse before it asks anyone to confirm.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import replace
from typing import Any, cast

from sqlalchemy import Table, bindparam, select
from sqlalchemy.orm import Session

from .builtin_roles import ADMIN
from .db import Sql, utc
from .directory import ensure_user, register_number, require_user, resolve_scope
from .errors import (
    AdminExists,
    BuiltinRoleImmutable,
    Conflict,
    DuplicateGrant,
    DuplicateRole,
    InvalidInput,
    OperatorOnly,
    RoleCycle,
    RoleInUse,
    SelfGrant,
    TwoFactorRequired,
    UnknownGrant,
    UnknownRole,
)
from .gate import Action, Context, Prepared, Result
from .grants import active_admins, ensure_holds, ensure_not_last_admin, live_grant
from .models import Grant, Number, Role, RoleParent, RolePermission, SecondFactor
from .outbox import AUDIT_CHANNEL, Notice
from .permissions import SENSITIVE_PERMISSIONS, check_permission, check_permissions
from .policy import Policy
from .principals import is_operator
from .values import (
    WILDCARD,
    clean_text,
    for_scope,
    format_duration,
    format_moment,
    is_phone_number_id,
    parse_duration,
    parse_e164,
    parse_flag,
    parse_role_name,
    parse_user_id,
    scope_text,
)

REASON_MAX = 500


def _as_list(value: Any, field: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    if isinstance(value, list | tuple):
        return [str(v).strip() for v in value if str(v).strip()]
    raise InvalidInput(f"{field} must be a list of names")


def _reason(params: Mapping[str, Any]) -> str | None:
    return clean_text(params.get("reason"), "reason", REASON_MAX)


def sensitive_role(policy: Policy, role: str) -> bool:
    """Assigning it needs step-up 2FA (SPEC §4 rule 8): admin, a role that requires
    2FA (itself or by inheritance), or one carrying a sensitive permission."""
    return (
        role == ADMIN
        or policy.requires_2fa(role)
        or bool(policy.permissions_of_role(role) & SENSITIVE_PERMISSIONS)
    )


def has_active_2fa(session: Session, user: str) -> bool:
    row = session.get(SecondFactor, user)
    return row is not None and row.active


def operator_only(ctx: Context, what: str) -> None:
    if not is_operator(ctx.actor, ctx.surface):
        raise OperatorOnly(f"Only an operator at the server's command line can {what}.")


def _replace_expired(ctx: Context, user: str, role: str, scope: str, why: str) -> None:
    """Retire an expired-but-unrevoked grant so a new one can take its place."""
    stale = live_grant(ctx.session, user, role, scope)
    if stale is None:
        return
    if stale.expires_at is None or stale.expires_at > ctx.now:
        raise DuplicateGrant(f"{user} already holds {role} in {scope_text(scope)}")
    stale.revoked_at = ctx.now
    stale.revoked_by = "system"
    stale.revoke_reason = why
    ctx.session.flush()


def get_role(session: Session, name: str) -> Role:
    name = parse_role_name(name)
    role = session.get(Role, name)
    if role is None:
        known = ", ".join(session.scalars(select(Role.name).order_by(Role.name)))
        raise UnknownRole(f"unknown role '{name}' (roles: {known})")
    return role


def _user(params: Mapping[str, Any], key: str = "user") -> str:
    value = params.get(key)
    if not value:
        raise InvalidInput("say which user, e.g. @alice")
    return parse_user_id(str(value))


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


class ShowAction(Action):
    """Anyone's most frequent command, so it reads its grants with one fast statement."""

    name = "role.show"
    read_only = True

    def prepare(self, ctx: Context, params: Mapping[str, Any]) -> Prepared:
        user = parse_user_id(str(params.get("user") or ctx.actor))
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
                {
                    "id": gid,
                    "role": role,
                    "scope": scope,
                    "expired": expired,
                    "expires_at": expires_at.isoformat() if expires_at else None,
                    "granted_by": granted_by,
                    "reason": reason,
                }
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
            data={
                "user": user,
                "grants": rows,
                "effective": {s: sorted(p) for s, p in effective.items()},
            },
        )


class ListAction(Action):
    name = "role.list"
    read_only = True

    def prepare(self, ctx: Context, params: Mapping[str, Any]) -> Prepared:
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
                {
                    "name": role.name,
                    "builtin": role.builtin,
                    "requires_2fa": role.requires_2fa,
                    "permissions": own,
                    "parents": parents,
                    "effective": sorted(ctx.policy.permissions_of_role(role.name)),
                }
            )
        return Result("\n".join(lines), data={"roles": data})


def ensure_not_held(ctx: Context, user: str, role: str, scope: str) -> None:
    existing = live_grant(ctx.session, user, role, scope)
    if existing is not None and (existing.expires_at is None or existing.expires_at > ctx.now):
        until = (
            "" if existing.expires_at is None else f", until {format_moment(existing.expires_at)}"
        )
        raise DuplicateGrant(
            f"{user} already holds {role} in {scope_text(scope)} "
            f"(grant #{existing.id}{until}); revoke it first to change it"
        )


def check_grantable(ctx: Context, user: str, role: str, scope: str) -> None:
    """Rules for handing `role` to `user` in `scope`, whoever asks and however:
    no self-grant, 2FA for 2FA roles, and no escalation by the granter."""
    if user == ctx.actor:
        raise SelfGrant("You cannot give yourself a role: someone else must.")
    if ctx.policy.requires_2fa(role) and not has_active_2fa(ctx.session, user):
        raise TwoFactorRequired(
            f"{role} requires two-factor authentication, and {user} has not "
            "turned it on: ask them to run `/wa-2fa enroll` first."
        )
    ensure_holds(
        ctx.policy,
        ctx.actor,
        ctx.policy.permissions_of_role(role),
        scope,
        f"grant {role}{for_scope(scope)}",
    )


def create_grant(
    ctx: Context, user: str, role: str, scope: str, duration: str | None, reason: str | None
) -> Result:
    _replace_expired(ctx, user, role, scope, "expired; replaced by a new grant")
    expires = ctx.now + parse_duration(duration) if duration else None
    grant = Grant(
        user_id=user,
        role=role,
        scope=scope,
        granted_by=ctx.actor,
        reason=reason,
        granted_at=ctx.now,
        expires_at=expires,
    )
    ctx.session.add(grant)
    ctx.session.flush()
    until = f" until {format_moment(expires)}" if expires else ""
    return Result(
        f"Assigned {role} to {user} in {scope_text(scope)}{until} (grant #{grant.id}).",
        data={
            "grant_id": grant.id,
            "user": user,
            "role": role,
            "scope": scope,
            "expires_at": expires.isoformat() if expires else None,
            "reason": reason,
        },
        details={"grant_id": grant.id},
        policy_users=frozenset({user}),
    )


class AssignAction(Action):
    name = "role.assign"
    risky = True
    mutates_policy = True

    def prepare(self, ctx: Context, params: Mapping[str, Any]) -> Prepared:
        user = _user(params)
        role = get_role(ctx.session, str(params.get("role") or ""))
        scope = resolve_scope(ctx.session, params.get("number"), registered=True)
        duration = parse_duration(str(params["for"])) if params.get("for") else None
        reason = _reason(params)
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
            sensitive=sensitive_role(ctx.policy, role.name),
        )

    def check_rules(self, ctx: Context, prepared: Prepared) -> None:
        p = prepared.params
        check_grantable(ctx, p["user"], p["role"], p["number"])

    def execute(self, ctx: Context, prepared: Prepared) -> Result:
        p = prepared.params
        result = create_grant(ctx, p["user"], p["role"], p["number"], p.get("for"), p.get("reason"))
        return replace(result, notices=(role_changed(ctx, "assigned", result.data),))


class RevokeAction(Action):
    name = "role.revoke"
    risky = True
    mutates_policy = True

    def prepare(self, ctx: Context, params: Mapping[str, Any]) -> Prepared:
        user = _user(params)
        role = get_role(ctx.session, str(params.get("role") or ""))
        scope = resolve_scope(ctx.session, params.get("number"))
        reason = _reason(params)
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
            data={
                "grant_id": grant.id,
                "user": p["user"],
                "role": p["role"],
                "scope": p["number"],
                "reason": p.get("reason"),
            },
            details={"grant_id": grant.id},
            policy_users=frozenset({p["user"]}),
            notices=(role_changed(ctx, "revoked", {**p, "scope": p["number"]}),),
        )


def role_changed(ctx: Context, verb: str, data: Mapping[str, Any]) -> Notice:
    """The audit channel's line about a role given or taken away (SPEC §5)."""
    return Notice(
        "role.changed",
        AUDIT_CHANNEL,
        {
            "verb": verb,
            "actor": ctx.actor,
            "user": data["user"],
            "role": data["role"],
            "scope": data["scope"],
            "expires_at": data.get("expires_at"),
            "reason": data.get("reason"),
        },
    )


def _check_parents(session: Session, role_name: str, parents: Iterable[str]) -> list[str]:
    """Resolve parent roles and refuse any that would close a cycle through `role_name`."""
    resolved = [get_role(session, p).name for p in parents]
    edges: dict[str, list[str]] = {}
    for child, parent in session.execute(select(RoleParent.role, RoleParent.parent)):
        edges.setdefault(child, []).append(parent)
    for parent in resolved:
        stack, seen = [parent], set()
        while stack:
            current = stack.pop()
            if current == role_name:
                raise RoleCycle(
                    f"{role_name} cannot inherit from {parent}: {parent} already inherits "
                    f"from {role_name}, which would make a cycle"
                )
            if current not in seen:
                seen.add(current)
                stack.extend(edges.get(current, ()))
    return resolved


def _role_closure_perms(ctx: Context, own: set[str], parents: list[str]) -> set[str]:
    result = set(own)
    for parent in parents:
        result |= ctx.policy.permissions_of_role(parent)
    return result


class CreateAction(Action):
    name = "role.create"
    mutates_policy = True

    def prepare(self, ctx: Context, params: Mapping[str, Any]) -> Prepared:
        name = parse_role_name(str(params.get("name") or ""))
        if ctx.session.get(Role, name) is not None:
            raise DuplicateRole(f"a role named '{name}' already exists")
        perms = set(check_permissions(_as_list(params.get("perms"), "perms")))
        parents = _as_list(params.get("inherits"), "inherits")
        requires_2fa = bool(parse_flag(params.get("2fa"), "--2fa"))
        source = params.get("from")
        if source:
            base = get_role(ctx.session, str(source))
            perms |= {p.permission for p in base.permissions}
            parents += [p.parent for p in base.parents]
            requires_2fa = requires_2fa or base.requires_2fa
        parents = sorted(set(_check_parents(ctx.session, name, parents)))
        description = clean_text(params.get("description"), "description", 500) or ""
        if not perms and not parents:
            raise InvalidInput(
                "a role needs permissions: give --perms p1,p2, --from ROLE or --inherits ROLE"
            )
        return Prepared(
            {
                "name": name,
                "perms": sorted(perms),
                "inherits": parents,
                "2fa": requires_2fa,
                "description": description,
                "from": source,
            },
            "roles:manage",
            WILDCARD,
            f"role:{name}",
            f"create role {name}",
        )

    def check_rules(self, ctx: Context, prepared: Prepared) -> None:
        p = prepared.params
        wanted = _role_closure_perms(ctx, set(p["perms"]), list(p["inherits"]))
        ensure_holds(ctx.policy, ctx.actor, wanted, WILDCARD, f"create role {p['name']}")

    def execute(self, ctx: Context, prepared: Prepared) -> Result:
        p = prepared.params
        role = Role(
            name=p["name"],
            description=p["description"],
            builtin=False,
            requires_2fa=p["2fa"],
            created_at=ctx.now,
            created_by=ctx.actor,
        )
        role.permissions = [RolePermission(role=p["name"], permission=x) for x in p["perms"]]
        role.parents = [RoleParent(role=p["name"], parent=x) for x in p["inherits"]]
        ctx.session.add(role)
        ctx.session.flush()
        inherits = f", inheriting {', '.join(p['inherits'])}" if p["inherits"] else ""
        return Result(
            f"Created role {p['name']} with {len(p['perms'])} permissions{inherits}"
            + (" (requires 2FA)" if p["2fa"] else "")
            + ".",
            data={"role": p["name"], "permissions": p["perms"], "inherits": p["inherits"]},
        )


def _mutable_role(session: Session, name: str) -> Role:
    role = get_role(session, name)
    if role.builtin:
        raise BuiltinRoleImmutable(
            f"{role.name} is a built-in role and cannot be changed or deleted; "
            f"create a custom role instead (/wa-role create NAME --from {role.name})"
        )
    return role


class EditAction(Action):
    name = "role.edit"
    risky = True
    mutates_policy = True

    def prepare(self, ctx: Context, params: Mapping[str, Any]) -> Prepared:
        role = _mutable_role(ctx.session, str(params.get("name") or ""))
        add = sorted(check_permissions(_as_list(params.get("add"), "add")))
        remove = sorted(check_permissions(_as_list(params.get("remove"), "remove")))
        both = set(add) & set(remove)
        if both:
            raise InvalidInput(f"cannot both add and remove {', '.join(sorted(both))}")
        add_parents = sorted(
            set(
                _check_parents(
                    ctx.session, role.name, _as_list(params.get("add_parents"), "inherits")
                )
            )
        )
        remove_parents = sorted(
            get_role(ctx.session, r).name
            for r in _as_list(params.get("remove_parents"), "uninherit")
        )
        current_parents = {p.parent for p in role.parents}
        not_parents = sorted(set(remove_parents) - current_parents)
        if not_parents:
            raise InvalidInput(f"{role.name} does not inherit {', '.join(not_parents)}")
        two_fa = parse_flag(params.get("2fa"), "--2fa")
        if not (add or remove or add_parents or remove_parents or two_fa is not None):
            raise InvalidInput("nothing to change: give --add, --remove, --inherits or --2fa")
        own = {p.permission for p in role.permissions}
        unknown_removals = sorted(set(remove) - own)
        if unknown_removals:
            raise InvalidInput(f"{role.name} does not have {', '.join(unknown_removals)} to remove")
        parts = []
        if add:
            parts.append(f"add {', '.join(add)}")
        if remove:
            parts.append(f"remove {', '.join(remove)}")
        if add_parents:
            parts.append(f"inherit {', '.join(add_parents)}")
        if remove_parents:
            parts.append(f"stop inheriting {', '.join(remove_parents)}")
        if two_fa is not None:
            parts.append("require 2FA" if two_fa else "stop requiring 2FA")
        return Prepared(
            {
                "name": role.name,
                "add": add,
                "remove": remove,
                "add_parents": add_parents,
                "remove_parents": remove_parents,
                "2fa": two_fa,
            },
            "roles:manage",
            WILDCARD,
            f"role:{role.name}",
            f"edit role {role.name}: {'; '.join(parts)}",
            # Holders gain sensitive power, or lose the 2FA requirement: step up first.
            sensitive=bool(_role_closure_perms(ctx, set(add), add_parents) & SENSITIVE_PERMISSIONS)
            or any(ctx.policy.requires_2fa(parent) for parent in add_parents)
            or (two_fa is False and role.requires_2fa),
        )

    def check_rules(self, ctx: Context, prepared: Prepared) -> None:
        p = prepared.params
        adds = bool(p["add"] or p["add_parents"] or p.get("2fa") is False)
        if adds and p["name"] in ctx.policy.roles_held(ctx.actor):
            raise SelfGrant(
                f"You hold {p['name']}, so adding to it would change your own grants; "
                "ask another admin."
            )
        wanted = _role_closure_perms(ctx, set(p["add"]), list(p["add_parents"]))
        ensure_holds(ctx.policy, ctx.actor, wanted, WILDCARD, f"edit role {p['name']}")

    def execute(self, ctx: Context, prepared: Prepared) -> Result:
        p = prepared.params
        role = _mutable_role(ctx.session, p["name"])
        perms = ({x.permission for x in role.permissions} | set(p["add"])) - set(p["remove"])
        parents = ({x.parent for x in role.parents} | set(p["add_parents"])) - set(
            p["remove_parents"]
        )
        _check_parents(ctx.session, role.name, p["add_parents"])
        if not perms and not parents:
            raise InvalidInput(f"{role.name} would have no permissions left; delete it instead")
        role.permissions = [RolePermission(role=role.name, permission=x) for x in sorted(perms)]
        role.parents = [RoleParent(role=role.name, parent=x) for x in sorted(parents)]
        if p.get("2fa") is not None:
            role.requires_2fa = bool(p["2fa"])
        ctx.session.flush()
        return Result(
            f"Edited role {role.name}: now {len(perms)} permissions of its own"
            + (f", inheriting {', '.join(sorted(parents))}" if parents else "")
            + ".",
            data={"role": role.name, "permissions": sorted(perms), "inherits": sorted(parents)},
        )


class DeleteAction(Action):
    name = "role.delete"
    risky = True
    mutates_policy = True

    def prepare(self, ctx: Context, params: Mapping[str, Any]) -> Prepared:
        role = _mutable_role(ctx.session, str(params.get("name") or ""))
        self._ensure_unused(ctx.session, role.name)
        return Prepared(
            {"name": role.name},
            "roles:manage",
            WILDCARD,
            f"role:{role.name}",
            f"delete role {role.name}",
        )

    @staticmethod
    def _ensure_unused(session: Session, name: str) -> None:
        holders = session.execute(
            select(Grant.id, Grant.user_id, Grant.scope)
            .where(Grant.role == name, Grant.revoked_at.is_(None))
            .order_by(Grant.id)
        ).all()
        if holders:
            listed = ", ".join(
                f"#{gid} {user} in {scope_text(scope)}" for gid, user, scope in holders[:10]
            )
            more = f" and {len(holders) - 10} more" if len(holders) > 10 else ""
            raise RoleInUse(
                f"role {name} is still held by {len(holders)} grant(s): {listed}{more}. "
                "Revoke them first."
            )
        children = session.scalars(select(RoleParent.role).where(RoleParent.parent == name)).all()
        if children:
            raise RoleInUse(
                f"role {name} is inherited by {', '.join(sorted(children))}; "
                "remove it from them first"
            )

    def execute(self, ctx: Context, prepared: Prepared) -> Result:
        role = _mutable_role(ctx.session, prepared.params["name"])
        self._ensure_unused(ctx.session, role.name)
        ctx.session.delete(role)
        ctx.session.flush()
        return Result(f"Deleted role {role.name}.", data={"role": role.name})


class WhyAction(Action):
    name = "role.why"
    read_only = True

    def prepare(self, ctx: Context, params: Mapping[str, Any]) -> Prepared:
        user = _user(params)
        permission = check_permission(str(params.get("permission") or ""))
        scope = resolve_scope(ctx.session, params.get("number"))
        if user != ctx.actor:
            require_user(ctx.session, user)
        return Prepared(
            {"user": user, "permission": permission, "number": scope},
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
        decision = ctx.policy.decide(p["user"], p["permission"], p["number"])
        verdict = "may" if decision.allowed else "may not"
        return Result(
            f"{p['user']} {verdict} use {p['permission']} in {scope_text(p['number'])}: "
            f"{decision.reason}",
            data={
                "allowed": decision.allowed,
                "reason": decision.reason,
                "grant_id": decision.grant_id,
                "role": decision.role,
                "via": list(decision.via),
                "user": p["user"],
                "permission": p["permission"],
                "scope": p["number"],
            },
            details={"allowed": decision.allowed},
        )


class BootstrapAdminAction(Action):
    """The first admin: allowed only while no active admin exists."""

    name = "system.bootstrap_admin"
    mutates_policy = True

    def prepare(self, ctx: Context, params: Mapping[str, Any]) -> Prepared:
        operator_only(ctx, "make the first admin")
        user = _user(params)
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
        _replace_expired(ctx, user, ADMIN, WILDCARD, "expired; replaced by bootstrap")
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
            data={"grant_id": grant.id, "user": user},
            details={"grant_id": grant.id},
            policy_users=frozenset({user}),
        )


class RegisterUserAction(Action):
    """An operator adds a person by Slack id; this gives them no access by itself."""

    name = "user.register"

    def prepare(self, ctx: Context, params: Mapping[str, Any]) -> Prepared:
        operator_only(ctx, "register users (Slack registers them automatically)")
        user = _user(params)
        name = clean_text(params.get("name"), "name", 200)
        return Prepared(
            {"user": user, "name": name}, None, WILDCARD, f"user:{user}", f"register {user}"
        )

    def execute(self, ctx: Context, prepared: Prepared) -> Result:
        user = ensure_user(
            ctx.session, prepared.params["user"], ctx.now, prepared.params.get("name")
        )
        return Result(
            f"{user.id} is known to wa-access (no roles until someone assigns one).",
            data={"user": user.id},
        )


class RegisterNumberAction(Action):
    """An operator declares a WhatsApp number and its Graph phone-number id.

    Once known, grants can name the number by either form.
    """

    name = "number.register"

    def prepare(self, ctx: Context, params: Mapping[str, Any]) -> Prepared:
        operator_only(ctx, "register numbers")
        e164 = parse_e164(str(params.get("number") or ""))
        phone_number_id = clean_text(params.get("phone_number_id"), "phone-number id", 32)
        if phone_number_id is not None and not is_phone_number_id(phone_number_id):
            raise InvalidInput(f"'{phone_number_id}' is not a Graph phone-number id (digits only)")
        label = clean_text(params.get("label"), "label", 200)
        return Prepared(
            {"number": e164, "phone_number_id": phone_number_id, "label": label},
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
        register_number(ctx.session, p["number"], p["phone_number_id"], p["label"])
        ident = f" (phone-number id {p['phone_number_id']})" if p["phone_number_id"] else ""
        return Result(f"{p['number']}{ident} is registered.", data=dict(p))


class DeactivateUserAction(Action):
    """Someone left: their grants stop counting at once (the rows stay as history)."""

    name = "user.deactivate"
    risky = True
    mutates_policy = True

    def prepare(self, ctx: Context, params: Mapping[str, Any]) -> Prepared:
        user = require_user(ctx.session, _user(params))
        if not user.active:
            raise InvalidInput(f"{user.id} is already deactivated")
        return Prepared(
            {"user": user.id, "reason": _reason(params)},
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
            data={"user": user.id},
            policy_users=frozenset({user.id}),
        )


ROLE_ACTIONS: dict[str, Action] = {
    a.name: a
    for a in (
        ShowAction(),
        ListAction(),
        AssignAction(),
        RevokeAction(),
        CreateAction(),
        EditAction(),
        DeleteAction(),
        WhyAction(),
        BootstrapAdminAction(),
        RegisterUserAction(),
        RegisterNumberAction(),
        DeactivateUserAction(),
    )
}
