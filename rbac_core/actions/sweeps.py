"""Expiry sweeps: time-bound grants, confirmations and access requests that ran out.

Expired things already stop counting the moment they expire (the policy and
the gate check `expires_at` themselves); the sweep marks them in the database
and reports whom to tell. Every transition is a conditional UPDATE from the
live state, so when several replicas sweep at once each row moves once, and
only the replica that moved it tells its owner. The sweep runs through the
gate as a system action, audited with what it marked.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Connection, Table, exists, or_, select, update

from ..errors import OperatorOnly
from ..gate import Action, Context, Data, NoParams, Prepared, Result
from ..outbox import Notice, person
from ..store.models import AccessRequest, Grant, PendingAction
from ..values import format_moment, scope_text

AUDITED_IDS = 50  # ids listed per kind in the audit entry; the counts are always whole

_GRANTS = cast(Table, Grant.__table__)
_PENDING = cast(Table, PendingAction.__table__)
_REQUESTS = cast(Table, AccessRequest.__table__)


def system_only(ctx: Context, what: str) -> None:
    """Housekeeping runs for the scheduler or an operator, never from a chat surface."""
    if not ctx.is_system:
        raise OperatorOnly(f"Only the scheduler or an operator can {what}.")


def _due_grants(now: datetime) -> Any:
    return (_GRANTS.c.revoked_at.is_(None), _GRANTS.c.expires_at <= now)


def _due_pending(now: datetime) -> Any:
    return (_PENDING.c.status == "pending", _PENDING.c.expires_at <= now)


def _due_requests(now: datetime) -> Any:
    return (_REQUESTS.c.status == "pending", _REQUESTS.c.expires_at <= now)


def sweep_due(conn: Connection, now: datetime) -> bool:
    """Whether anything has expired unmarked: a cheap read (`Gate.peek`), so idle sweeps
    write nothing."""
    query = select(
        or_(
            exists().where(*_due_grants(now)),
            exists().where(*_due_pending(now)),
            exists().where(*_due_requests(now)),
        )
    )
    return bool(conn.scalar(query))


@dataclass(frozen=True)
class Expired:
    """One thing the sweep marked, and who should hear about it."""

    kind: str  # grant, confirmation, access_request
    id: str
    owner: str
    text: str


@dataclass(frozen=True)
class SweepData(Data):
    expired: list[Expired]
    counts: dict[str, int]
    """How many of each kind were marked, every kind named (0 included)."""


class SweepAction(Action[NoParams]):
    name = "system.sweep"
    params_type = NoParams
    mutates_policy = True  # expired grants leave the snapshot

    def prepare(self, ctx: Context, params: NoParams) -> Prepared:
        system_only(ctx, "sweep expired access")
        return Prepared(
            {}, None, "*", "expiry", "mark expired grants, confirmations and access requests"
        )

    def execute(self, ctx: Context, prepared: Prepared) -> Result:
        session, now = ctx.session, ctx.now
        expired: list[Expired] = []
        grants = session.execute(
            update(_GRANTS)
            .where(*_due_grants(now))
            .values(revoked_at=_GRANTS.c.expires_at, revoked_by="system", revoke_reason="expired")
            .returning(
                _GRANTS.c.id,
                _GRANTS.c.user_id,
                _GRANTS.c.role,
                _GRANTS.c.scope,
                _GRANTS.c.expires_at,
            )
        ).all()
        for grant_id, user, role, scope, expires_at in sorted(grants):
            expired.append(
                Expired(
                    "grant",
                    str(grant_id),
                    user,
                    f"Your {role} access in {scope_text(scope)} expired at "
                    f"{format_moment(expires_at)} (grant #{grant_id}).",
                )
            )
        pending = session.execute(
            update(_PENDING)
            .where(*_due_pending(now))
            .values(status="expired", resolved_at=now)
            .returning(_PENDING.c.id, _PENDING.c.actor, _PENDING.c.summary)
        ).all()
        for pending_id, actor, summary in sorted(pending, key=lambda row: str(row[0])):
            expired.append(
                Expired(
                    "confirmation",
                    str(pending_id),
                    actor,
                    f"Your request to {summary} expired before it was confirmed; nothing was done.",
                )
            )
        requests = session.execute(
            update(_REQUESTS)
            .where(*_due_requests(now))
            .values(status="expired", decided_at=now, decision_note="expired undecided")
            .returning(_REQUESTS.c.id, _REQUESTS.c.requester, _REQUESTS.c.role, _REQUESTS.c.scope)
        ).all()
        for request_id, requester, role, scope in sorted(requests, key=lambda row: str(row[0])):
            expired.append(
                Expired(
                    "access_request",
                    str(request_id),
                    requester,
                    f"Your request for {role} in {scope_text(scope)} expired before anyone "
                    "decided it; ask again if you still need it.",
                )
            )
        counts = {kind: sum(e.kind == kind for e in expired) for kind in _KINDS}
        details: dict[str, Any] = {"expired": counts}
        for kind in _KINDS:
            ids = [e.id for e in expired if e.kind == kind]
            if ids:
                details[f"{kind}_ids"] = ids[:AUDITED_IDS]
        total = sum(counts.values())
        return Result(
            f"Marked {total} expired: {counts['grant']} grants, "
            f"{counts['confirmation']} confirmations, {counts['access_request']} access requests.",
            data=SweepData(expired, counts),
            details=details,
            policy_users=frozenset(e.owner for e in expired if e.kind == "grant"),
            # Each owner is told what of theirs expired.
            notices=tuple(
                Notice("expired", person(e.owner), {"kind": e.kind, "id": e.id, "text": e.text})
                for e in expired
            ),
        )


_KINDS = ("grant", "confirmation", "access_request")

SWEEP_ACTIONS: dict[str, Action[Any]] = {SweepAction.name: SweepAction()}
