"""Small helpers shared by the behaviour tests."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from sqlalchemy import create_engine, func, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from rbac_core import Database, Gate, Outcome
from rbac_core.store.models import AuditEntry, Grant, Role


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
    from rbac_core.store.models import SecondFactor

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


@contextmanager
def throwaway_schema(url: str, prefix: str) -> Iterator[str]:
    """A URL for a fresh PostgreSQL schema on `url`'s database, dropped afterwards,
    so parallel test sessions and benchmarks never see each other's rows."""
    schema = f"{prefix}_{uuid.uuid4().hex[:10]}"
    admin = create_engine(Database(url).url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    scoped = make_url(Database(url).url).update_query_dict({"options": f"-csearch_path={schema}"})
    try:
        yield scoped.render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def notices(db: Database, kind: str | None = None) -> list[tuple[str, str, dict[str, Any]]]:
    """What the outbox holds, oldest first: (kind, destination, data)."""
    import json

    from rbac_core.store.models import OutboxMessage

    with db.read() as session:
        query = select(OutboxMessage).order_by(OutboxMessage.id)
        if kind is not None:
            query = query.where(OutboxMessage.kind == kind)
        return [(m.kind, m.to, json.loads(m.data)) for m in session.scalars(query)]


def deliver_notices(runtime: Any) -> int:
    """Deliver what is due in the outbox now, as a worker of `runtime` would (unpaced,
    so a test need not wait a second between two posts to one channel)."""
    from datetime import timedelta

    from bot.outbox_worker import build_worker
    from rbac_core.outbox import Outbox

    if hasattr(runtime, "application"):  # a Flask test client
        runtime = runtime.application.extensions["wa_access"]
    outbox = Outbox(runtime.db, runtime.gate.clock, pace=timedelta(0))
    return build_worker(runtime.settings, outbox).run_until_idle()


def wait_for(check: Any, timeout: float = 15.0, what: str = "the condition") -> Any:
    """Poll `check()` until it returns something truthy (work done by another process)."""
    import time

    deadline = time.monotonic() + timeout
    while not (found := check()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)
    return found
