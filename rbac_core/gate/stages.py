"""The pipeline's stages, one concern each, chained by `_run`.

    prepare -> authorise -> rules -> step-up -> confirmation -> execute -> audit

Each stage hands on, or stops the call by raising `Stopped` with an audited
Outcome. (httpx's `send -> _send_handling_auth -> _send_handling_redirects ->
_send_single_request` is the model: a long pipeline read as a list of
one-concern methods.) `Gate` (core.py) is these stages plus its entry points.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from contextlib import nullcontext
from typing import Any

from .. import outbox
from ..errors import InvalidInput, PermissionDenied, RbacError
from ..policy import Decision
from ..policy.versions import bump_policy_version
from ..values import for_scope
from .auditing import Auditor, field_names
from .call import Call, Stopped
from .confirmations import Confirmations
from .contract import Action, Context, Outcome, Pending, Prepared, Result, Status, StepUp
from .params import UnexpectedParam, WrongParamType

log = logging.getLogger("rbac_core.gate")


class Stages:
    step_up: StepUp
    _auditor: Auditor
    _pending: Confirmations

    def _run(
        self,
        ctx: Context,
        handler: Action[Any],
        params: Mapping[str, Any],
        *,
        confirmed: bool,
        pending_id: str | None = None,
    ) -> Outcome:
        call = Call(ctx, handler, params, self._auditor, pending_id)
        try:
            prepared = self._prepare(call)
            decision = self._authorise(call, prepared)
            self._check_rules(call, prepared, decision)
            self._check_step_up(call, prepared, decision)
            if handler.needs_confirmation and not confirmed:
                return self._ask_to_confirm(call, prepared, decision)
            result = self._execute(call, prepared, decision)
        except Stopped as stopped:
            return stopped.outcome
        return self._audit_result(call, prepared, decision, result)

    def _prepare(self, call: Call) -> Prepared:
        try:
            params = call.handler.params_type.parse(call.params)
            return call.handler.prepare(call.ctx, params)
        except (UnexpectedParam, WrongParamType) as exc:
            call.params = field_names(call.params)
            raise call.stop("invalid", exc.message, "-", "invalid", code=exc.code) from None
        except InvalidInput as exc:
            raise call.stop("invalid", exc.message, "-", "invalid", code=exc.code) from None
        except RbacError as exc:
            raise call.stop("refused", exc.message, "-", "refused", code=exc.code) from None
        except Exception:
            # A bug or malformed value a surface let through: refuse, audit, never fall open.
            log.exception("preparing %s failed", call.name)
            raise call.stop(
                "failed",
                "That request could not be understood, so nothing was done.",
                "-",
                "error",
                code="internal_error",
            ) from None

    def _authorise(self, call: Call, prepared: Prepared) -> Decision | None:
        """The policy's decision on the permission the action named (None: it needs none)."""
        if prepared.permission is None:
            return None
        ctx = call.ctx
        try:
            if prepared.resource is None:
                decision = ctx.policy.decide(ctx.actor, prepared.permission, prepared.scope)
            else:
                decision = ctx.policy.decide_on(
                    ctx.actor, prepared.permission, prepared.scope, prepared.resource
                )
        except Exception:
            log.exception("decision point failed for %s", call.name)
            raise call.check_failed(prepared.target) from None
        if not decision.allowed and decision.code is not None:  # a relation rule, not a grant
            raise call.stop(
                "refused",
                decision.refusal or decision.reason,
                prepared.target,
                "refused",
                decision=decision,
                code=decision.code,
            )
        if not decision.allowed:
            raise call.stop(
                "denied",
                f"You are not allowed to {prepared.summary}: you need "
                f"{prepared.permission}" + for_scope(prepared.scope) + ". " + decision.reason,
                prepared.target,
                "refused",
                decision=decision,
                code=PermissionDenied.code,
            )
        return decision

    def _check_rules(self, call: Call, prepared: Prepared, decision: Decision | None) -> None:
        try:
            call.handler.check_rules(call.ctx, prepared)
        except RbacError as exc:
            raise call.stop(
                "refused", exc.message, prepared.target, "refused", code=exc.code, decision=decision
            ) from None
        except Exception:
            log.exception("checking the rules of %s failed", call.name)
            raise call.check_failed(prepared.target, decision) from None

    def _check_step_up(self, call: Call, prepared: Prepared, decision: Decision | None) -> None:
        ctx = call.ctx
        if prepared.needs_step_up and not self.step_up.satisfied(ctx.session, ctx.actor, ctx.now):
            raise call.stop(
                "needs_2fa",
                f"To {prepared.summary} you must verify a 2FA code first "
                "(sensitive actions need a code verified in the last 10 minutes).",
                prepared.target,
                "needs_2fa",
                decision=decision,
                code="needs_2fa",
            )

    def _ask_to_confirm(self, call: Call, prepared: Prepared, decision: Decision | None) -> Outcome:
        pending = self._pending.create(call.ctx, call.handler, prepared)
        seq = call.record("allow", prepared.target, "pending", decision, {"pending_id": pending.id})
        return Outcome(
            "needs_confirmation",
            call.name,
            f"Please confirm: {prepared.summary}",
            data=Pending(prepared.summary, pending.expires_at.isoformat()),
            decision=decision,
            pending_id=pending.id,
            audit_seq=seq,
        )

    def _execute(self, call: Call, prepared: Prepared, decision: Decision | None) -> Result:
        """Run the action in a savepoint (none for a read-only one), with what must be
        written with it: the policy version bump, and its notices in the outbox."""
        ctx, handler = call.ctx, call.handler
        try:
            with nullcontext() if handler.read_only else ctx.txn.savepoint():
                result = handler.execute(ctx, prepared)
                if handler.mutates_policy:
                    bump_policy_version(ctx.txn, result.policy_users)
                if result.notices:
                    if handler.read_only:
                        raise ValueError(f"{call.name} is read-only and cannot send notices")
                    outbox.enqueue(ctx.txn, result.notices, ctx.now)
            return result
        except RbacError as exc:
            raise call.stop(
                "refused", exc.message, prepared.target, "failed", code=exc.code, decision=decision
            ) from None
        except Exception:
            log.exception("action %s failed", call.name)
            raise call.stop(
                "failed",
                f"Something went wrong while trying to {prepared.summary}; nothing was changed.",
                prepared.target,
                "error",
                code="internal_error",
                decision=decision,
            ) from None

    def _audit_result(
        self, call: Call, prepared: Prepared, decision: Decision | None, result: Result
    ) -> Outcome:
        """The entry of an action that ran: done, or refused with its writes standing."""
        status: Status = "done" if result.refusal is None else "refused"
        if result.refusal is None:
            seq = call.record("allow", prepared.target, "done", decision, result.details)
        else:
            extra = {**result.details, "error": result.refusal}
            seq = call.record("deny", prepared.target, "refused", decision, extra)
        return Outcome(
            status,
            call.name,
            result.message,
            data=result.data,
            decision=decision,
            error_code=result.refusal,
            audit_seq=seq,
            pending_id=call.pending_id,
        )
