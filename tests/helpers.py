"""Small helpers shared by the behaviour tests."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from rbac_core import Database, Gate, Outcome
from rbac_core.models import AuditEntry, Grant, Role


def run(gate: Gate, actor: str, action: str, surface: str = "cli", **params: Any) -> Outcome:
    """Submit, and confirm if the gate asks for it: the happy path of a risky action."""
    outcome = gate.submit(actor, surface, action, params)
    if outcome.status == "needs_confirmation":
        assert outcome.pending_id
        outcome = gate.confirm(outcome.pending_id, actor, surface)
    return outcome


def live_grants(db: Database, user: str | None = None) -> list[tuple[str, str, str]]:
    with db.read() as session:
        query = select(Grant.user_id, Grant.role, Grant.scope).where(Grant.revoked_at.is_(None))
        if user:
            query = query.where(Grant.user_id == user)
        return sorted(tuple(row) for row in session.execute(query))  # type: ignore[misc]


def role_names(db: Database) -> set[str]:
    with db.read() as session:
        return set(session.scalars(select(Role.name)))


def audit_rows(db: Database) -> list[AuditEntry]:
    with db.read() as session:
        return list(session.scalars(select(AuditEntry).order_by(AuditEntry.seq)))


def audit_count(db: Database) -> int:
    with db.read() as session:
        return int(session.scalar(select(func.count()).select_from(AuditEntry)) or 0)


class AlwaysVerified:
    """A step-up hook whose second factor always checks out: stands in for TOTP,
    so tests of other rules can reach sensitive actions."""

    def satisfied(self, session: Session, actor: str, now: datetime) -> bool:
        return True


def give_2fa(db: Database, user: str, now: datetime) -> None:
    """Mark `user` as enrolled in 2FA (what a verified first code does), for rules that
    only ask whether someone has it."""
    from rbac_core.models import SecondFactor

    with db.write() as session:
        session.add(
            SecondFactor(
                user_id=user,
                secret_enc="-",
                active=True,
                created_at=now,
                activated_at=now,
                failures=0,
            )
        )
