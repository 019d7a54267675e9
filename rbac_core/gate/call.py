"""One call's pass through the gate's stages: what each stage needs to audit or stop it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, Literal

from ..policy import Decision
from .auditing import AuditLater, Auditor, redacted
from .contract import Action, Context, Outcome, Status

Verdict = Literal["allow", "deny"]


class Stopped(Exception):
    """A stage stopped the call; `outcome` is already audited."""

    def __init__(self, outcome: Outcome) -> None:
        super().__init__(outcome.status)
        self.outcome = outcome


@dataclass
class Call:
    """One pass through the pipeline: what every stage needs to audit or stop it."""

    ctx: Context
    handler: Action[Any]
    params: Mapping[str, Any]
    auditor: Auditor
    pending_id: str | None = None

    @property
    def name(self) -> str:
        return self.handler.name

    def record(
        self,
        verdict: Verdict,
        target: str,
        outcome: str,
        decision: Decision | None,
        extra: Mapping[str, Any],
    ) -> int:
        """Audit this step: the request's params, the decision's reason, and `extra`."""
        details: dict[str, Any] = {"params": redacted(self.params, self.handler.secret_params)}
        if self.pending_id:
            details["pending_id"] = self.pending_id
        details.update(extra)
        if decision is not None:
            details["reason"] = decision.reason
        ctx = self.ctx
        return self.auditor.append(
            ctx.txn, ctx.actor, ctx.surface, self.name, target, verdict, outcome, details
        )

    def stop(
        self,
        status: Status,
        message: str,
        target: str,
        outcome: str,
        *,
        decision: Decision | None = None,
        code: str | None = None,
    ) -> Stopped:
        """The audited stop of this call, to raise."""
        stopped = Outcome(status, self.name, message, decision=decision, error_code=code)
        try:
            seq = self.record("deny", target, outcome, decision, {"error": code} if code else {})
        except AuditLater as late:
            # A stop comes before the action wrote anything (or after its savepoint
            # was rolled back): the rollback loses nothing, so it stands as it is.
            late.outcome = stopped
            raise
        return Stopped(replace(stopped, audit_seq=seq))

    def check_failed(self, target: str, decision: Decision | None = None) -> Stopped:
        """A failure in the decision point or the rules denies (OWASP): never fall open."""
        return self.stop(
            "failed",
            "The permission check failed, so the action was refused.",
            target,
            "error",
            code="decision_error",
            decision=decision,
        )
