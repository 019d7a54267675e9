"""What every action that hands out or checks a role shares: parsing its params,
the granting rules (2FA roles, no escalation, no duplicate), making a grant, and the
audit channel's notice of a role change."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..errors import (
    DuplicateGrant,
    InvalidInput,
    OperatorOnly,
    TwoFactorRequired,
    UnknownRole,
)
from ..gate import Context, Data, Result
from ..outbox import AUDIT_CHANNEL, Notice
from ..policy import Policy
from ..policy.builtin_roles import ADMIN
from ..policy.catalogue import SENSITIVE_PERMISSIONS
from ..policy.grant_rules import ensure_holds, live_grant
from ..store.models import (
    Grant,
    Role,
    SecondFactor,
)
from ..values import (
    clean_text,
    for_scope,
    format_moment,
    parse_duration,
    parse_role_name,
    parse_user_id,
    scope_text,
)

REASON_MAX = 500


def as_list(value: Any, field: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    if isinstance(value, list | tuple):
        return [str(v).strip() for v in value if str(v).strip()]
    raise InvalidInput(f"{field} must be a list of names")


def reason_param(value: str | None) -> str | None:
    return clean_text(value, "reason", REASON_MAX)


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
    if not ctx.is_operator:
        raise OperatorOnly(f"Only an operator at the server's command line can {what}.")


def replace_expired(ctx: Context, user: str, role: str, scope: str, why: str) -> None:
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


def user_param(value: str | None) -> str:
    if not value:
        raise InvalidInput("say which user, e.g. @alice")
    return parse_user_id(str(value))


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
    """Rules for handing `role` to `user` in `scope`, whoever asks and however: 2FA for
    2FA roles, and no escalation by the granter. (Nobody gives themselves a role: a
    relation rule each action states with its resource, relations.py.)"""
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


@dataclass(frozen=True)
class GrantChange(Data):
    """A grant given or taken away."""

    grant_id: int
    user: str
    role: str
    scope: str
    expires_at: str | None
    reason: str | None


def create_grant(
    ctx: Context, user: str, role: str, scope: str, duration: str | None, reason: str | None
) -> Result:
    replace_expired(ctx, user, role, scope, "expired; replaced by a new grant")
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
        data=GrantChange(
            grant.id, user, role, scope, expires.isoformat() if expires else None, reason
        ),
        details={"grant_id": grant.id},
        policy_users=frozenset({user}),
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
