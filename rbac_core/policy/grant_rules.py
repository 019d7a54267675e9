"""Rules about grants shared by several actions: live grants, last admin, escalation."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from ..errors import LastAdmin, PrivilegeEscalation
from ..store.models import Grant, User
from ..values import WILDCARD
from .builtin_roles import ADMIN
from .snapshot import Policy


def live_grant(session: Session, user: str, role: str, scope: str) -> Grant | None:
    """The unrevoked grant of (user, role, scope), expired or not: at most one exists."""
    return session.scalar(
        select(Grant).where(
            Grant.user_id == user,
            Grant.role == role,
            Grant.scope == scope,
            Grant.revoked_at.is_(None),
        )
    )


def active_admins(session: Session, now: datetime, *, permanent: bool = False) -> set[str]:
    """Active users holding an unexpired workspace-wide admin grant (or a non-expiring one)."""
    still_valid = (
        Grant.expires_at.is_(None)
        if permanent
        else or_(Grant.expires_at.is_(None), Grant.expires_at > now)
    )
    rows = session.scalars(
        select(Grant.user_id)
        .join(User, User.id == Grant.user_id)
        .where(
            Grant.role == ADMIN,
            Grant.scope == WILDCARD,
            Grant.revoked_at.is_(None),
            still_valid,
            User.active.is_(True),
        )
        .distinct()
    )
    return set(rows)


def ensure_not_last_admin(session: Session, user: str, now: datetime, doing: str) -> None:
    """Refuse to remove the admin standing of the last active admin (SPEC §4 rule 6).

    Admins whose grant will expire do not count while a permanent one remains:
    otherwise a temporary admin could remove the permanent one and, an hour
    later, leave nobody able to manage access.
    """
    permanent = active_admins(session, now, permanent=True)
    last = permanent == {user} or (not permanent and active_admins(session, now) == {user})
    if last:
        raise LastAdmin(
            f"{user} is the last active admin: {doing} would leave nobody able to manage "
            "access. Assign admin to someone else first."
        )


def ensure_holds(
    policy: Policy, actor: str, permissions: frozenset[str] | set[str], scope: str, what: str
) -> None:
    """No privilege escalation (SPEC §4 rule 5): you only hand out what you hold there."""
    missing = policy.missing_permissions(actor, permissions, scope)
    if missing:
        where = "" if scope == WILDCARD else f" for {scope}"
        raise PrivilegeEscalation(
            f"You cannot {what}: it carries permissions you do not hold{where} "
            f"({', '.join(sorted(missing))})"
        )
