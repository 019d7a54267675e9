"""Pending confirmations: an action that needs one waits here, bound to its actor.

A pending row is single use and short-lived: `claim` moves it out of
`pending` exactly once (under a row lock, then a conditional UPDATE), and
only for the actor who asked, before it expires. Confirming runs the whole
gate again, so a permission lost in between refuses the confirmation.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update

from ..clock import Clock, utcnow
from ..policy.versions import lock_policy
from ..store import Txn
from ..store.models import PendingAction
from .auditing import Auditor, jsonable
from .contract import Action, Context, Outcome, Prepared

CONFIRMATION_TTL = timedelta(minutes=5)


_PENDING_ID = re.compile(r"[A-Za-z0-9_-]{32}")
"""What `secrets.token_urlsafe(24)` makes: the only pending ids worth a query."""


class Confirmations:
    def __init__(
        self, actions: Mapping[str, Action[Any]], auditor: Auditor, clock: Clock, ttl: timedelta
    ) -> None:
        self.actions = actions
        self.auditor = auditor
        self.clock = clock
        self.ttl = ttl

    def create(self, ctx: Context, handler: Action[Any], prepared: Prepared) -> PendingAction:
        if handler.secret_params & set(prepared.params):
            raise ValueError(f"{handler.name} cannot both hold secrets and wait for confirmation")
        pending = PendingAction(
            id=secrets.token_urlsafe(24),
            actor=ctx.actor,
            surface=ctx.surface,
            action=handler.name,
            params=json.dumps(jsonable(prepared.params), sort_keys=True),
            summary=prepared.summary[:1000],
            status="pending",
            created_at=ctx.now,
            expires_at=ctx.now + self.ttl,
        )
        ctx.session.add(pending)
        ctx.session.flush()
        return pending

    def claim(
        self, txn: Txn, pending_id: str, actor: str, surface: str, new_status: str
    ) -> PendingAction | Outcome:
        """Move a pending action out of 'pending' exactly once, or explain why not."""
        now = utcnow(self.clock)
        well_formed = isinstance(pending_id, str) and _PENDING_ID.fullmatch(pending_id)
        if not well_formed:  # never a key the gate made: no query sees it
            pending_id = "?"
        pending = self._locked(txn, pending_id) if well_formed else None
        verb = "pending.confirm" if new_status == "confirmed" else "pending.cancel"
        why = self._refusal(pending, actor, now)
        if why is not None:
            message, code, named = why
            if code == "pending_expired" and pending is not None:
                pending.status, pending.resolved_at = "expired", now
            action = pending.action if named and pending is not None else verb
            return self._refuse(txn, pending_id, actor, surface, action, message, code)
        assert pending is not None  # _refusal refuses a missing row
        claimed = txn.session.execute(
            update(PendingAction)
            .where(PendingAction.id == pending_id, PendingAction.status == "pending")
            .values(status=new_status, resolved_at=now)
        )
        if claimed.rowcount != 1:  # type: ignore[attr-defined]
            # Unreachable under the row lock; kept so a bug can never run an action twice.
            return self._refuse(
                txn, pending_id, actor, surface, pending.action,
                "This action was already handled.", "pending_used",
            )  # fmt: skip
        pending.status = new_status
        return pending

    def _locked(self, txn: Txn, pending_id: str) -> PendingAction | None:
        # Lock order: the policy row before the pending row, as the expiry sweep takes
        # them (it locks policy, then expires pending rows). Taken the other way round, a
        # confirmation expiring as the sweep runs deadlocked them on PostgreSQL.
        session = txn.session
        action = session.scalar(select(PendingAction.action).where(PendingAction.id == pending_id))
        handler = self.actions.get(action) if action is not None else None
        if handler is not None and handler.mutates_policy:
            lock_policy(txn)
        return session.scalar(
            select(PendingAction).where(PendingAction.id == pending_id).with_for_update()
        )

    def _refusal(
        self, pending: PendingAction | None, actor: str, now: datetime
    ) -> tuple[str, str, bool] | None:
        """(message, code, whether the entry names the pending action) or None to go on."""
        if pending is None:
            return (
                "That confirmation does not exist (or has been cleaned up).",
                "pending_unknown",
                False,
            )
        if pending.actor != actor:
            return (
                f"Only {pending.actor}, who asked for it, can confirm or cancel this action.",
                "pending_not_yours",
                True,
            )
        if pending.status != "pending":
            return f"This action was already {pending.status}.", "pending_used", True
        if pending.action not in self.actions:
            return (
                "This action is no longer supported; nothing was done.",
                "pending_unsupported",
                False,
            )
        if pending.expires_at <= now:
            return (
                "This confirmation has expired; run the command again if you still want it.",
                "pending_expired",
                True,
            )
        return None

    def _refuse(
        self,
        txn: Txn,
        pending_id: str,
        actor: str,
        surface: str,
        action: str,
        message: str,
        code: str,
    ) -> Outcome:
        seq = self.auditor.append(
            txn,
            actor,
            surface,
            action,
            f"pending:{pending_id[:12]}",
            "deny",
            "refused",
            {"error": code},
        )
        return Outcome("refused", action, message, error_code=code, audit_seq=seq)
