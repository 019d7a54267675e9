"""The gate itself: public entry points, and the pipeline as a chain of short stages.

    prepare -> authorise -> rules -> step-up -> confirmation -> execute -> audit

Each stage does one thing and either hands on or stops the call by raising
`Stopped` with an audited Outcome; `_run` is the chain. (httpx's `send ->
_send_handling_auth -> _send_handling_redirects -> _send_single_request` is
the model: a long pipeline read as a list of one-concern methods.)
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import Any

from .. import outbox, signals
from ..clock import Clock, system_clock, utcnow
from ..db import Database, Txn
from ..directory import is_registered, resolve_scope
from ..errors import InvalidInput, PermissionDenied, RbacError
from ..group_commit import GroupCommit
from ..policy import Decision, Policy, PolicyCache
from ..policy_store import bump_policy_version, lock_policy
from ..principals import SURFACES, Surface
from ..values import for_scope
from .auditing import AuditLater, Auditor, audited_actor
from .call import Call, Stopped
from .confirmations import CONFIRMATION_TTL, Confirmations
from .contract import Action, Context, NoStepUp, Outcome, Prepared, Result, Status, StepUp

log = logging.getLogger("rbac_core.gate")


class Gate:
    def __init__(
        self,
        db: Database,
        actions: Mapping[str, Action],
        *,
        clock: Clock = system_clock,
        step_up: StepUp | None = None,
        confirmation_ttl: timedelta = CONFIRMATION_TTL,
        chain_key: bytes | None = None,
    ) -> None:
        self.db = db
        self.chain_key = chain_key
        """HMAC key of the audit chain (see audit.py); None keeps it plain SHA-256."""
        self.actions = dict(actions)
        for handler in self.actions.values():
            if handler.read_only and (handler.risky or handler.mutates_policy):
                raise ValueError(f"{handler.name} cannot be read-only and risky or mutating")
        self.clock = clock
        self.step_up: StepUp = step_up or NoStepUp()
        self.policies = PolicyCache(clock)
        self._auditor = Auditor(db, clock, chain_key)
        self._pending = Confirmations(self.actions, self._auditor, clock, confirmation_ttl)
        self._read_only = GroupCommit(db)

    # -- public entry points -------------------------------------------------

    def submit(self, actor: str, surface: str, action: str, params: Mapping[str, Any]) -> Outcome:
        """Run `action` for `actor`; risky actions stop at a pending confirmation.

        Raises ValueError for a caller's programming error (unknown action or
        surface, params not a mapping); everything a person typed becomes an
        audited Outcome instead.
        """
        handler = self._handler(action)
        surface = _surface(surface)
        if not isinstance(params, Mapping):
            raise ValueError("params must be a mapping")

        def run(txn: Txn) -> Outcome:
            ctx = self._context(txn, audited_actor(actor), surface, handler)
            if ctx.actor != actor:
                return self._invalid_actor(ctx, action)
            return self._run(ctx, handler, params, confirmed=False)

        return self._settled(self._read_only.run if handler.read_only else self._write, run)

    def confirm(self, pending_id: str, actor: str, surface: str) -> Outcome:
        """Confirm a pending action: only its actor, once, before it expires."""
        actor, surface = audited_actor(actor), _surface(surface)
        return self._settled(
            self._write, lambda txn: self._confirm(txn, pending_id, actor, surface)
        )

    def cancel(self, pending_id: str, actor: str, surface: str) -> Outcome:
        actor, surface = audited_actor(actor), _surface(surface)
        return self._settled(self._write, lambda txn: self._cancel(txn, pending_id, actor, surface))

    def decide(self, user: str, permission: str, scope: str = "*") -> Decision:
        """A read-only decision on fresh policy, for surfaces deciding what to show.

        `scope` may be `*`, an E.164 number in any common spelling, or a
        registered Graph phone-number id; a malformed one raises MalformedNumber.
        """
        with self.db.transaction(write=False) as txn:
            canonical = resolve_scope(txn.session, scope) if scope != "*" else scope
            return self.policies.refresh(txn).decide(user, permission, canonical)

    def knows(self, user: str) -> bool:
        """Whether `user` is registered: a read a surface needs before asking Slack about
        a newcomer (registering them is the `user.seen` action)."""
        with self.db.transaction(write=False) as txn:
            return is_registered(txn.session, user)

    def policy(self) -> Policy:
        with self.db.transaction(write=False) as txn:
            return self.policies.refresh(txn)

    # -- transactions ----------------------------------------------------------

    def _write(self, work: Callable[[Txn], Outcome]) -> Outcome:
        with self.db.transaction(write=True) as txn:
            return work(txn)

    def _settled(
        self,
        transact: Callable[[Callable[[Txn], Outcome]], Outcome],
        work: Callable[[Txn], Outcome],
    ) -> Outcome:
        """`work` in a transaction made by `transact`; a failure its own transaction could
        not audit is audited in a new one (AuditLater); the outcome is reported once."""
        try:
            outcome = transact(work)
        except AuditLater as late:
            outcome = self._auditor.alone(late)
        if signals.gate_outcome.listeners:
            signals.gate_outcome.send(outcome.action, outcome.status)
        return outcome

    def _handler(self, action: str) -> Action:
        handler = self.actions.get(action)
        if handler is None:
            raise ValueError(f"no action named {action!r}")
        return handler

    def _context(self, txn: Txn, actor: str, surface: str, handler: Action) -> Context:
        # A policy writer locks the version row before reading policy: on PostgreSQL
        # this waits for any other policy writer to commit, so its rules see current data.
        version = lock_policy(txn) if handler.mutates_policy else None
        return Context(
            txn,
            lambda: self.policies.refresh(txn, version),
            actor,
            surface,
            utcnow(self.clock),
            self.clock,
        )

    def _invalid_actor(self, ctx: Context, action: str) -> Outcome:
        seq = self._auditor.append(
            ctx.txn, ctx.actor, ctx.surface, action, "-", "deny", "invalid",
            {"error": "malformed_actor"},
        )  # fmt: skip
        return Outcome(
            "invalid",
            action,
            "That request names no valid user.",
            error_code="malformed_actor",
            audit_seq=seq,
        )

    # -- confirmations -----------------------------------------------------------

    def _confirm(self, txn: Txn, pending_id: str, actor: str, surface: str) -> Outcome:
        pending = self._pending.claim(txn, pending_id, actor, surface, "confirmed")
        if isinstance(pending, Outcome):
            return pending
        handler = self.actions[pending.action]  # claim made sure it exists
        ctx = self._context(txn, actor, surface, handler)
        params = json.loads(pending.params)
        outcome = self._run(ctx, handler, params, confirmed=True, pending_id=pending.id)
        if outcome.status != "done":
            pending.status = "refused"
        return outcome

    def _cancel(self, txn: Txn, pending_id: str, actor: str, surface: str) -> Outcome:
        pending = self._pending.claim(txn, pending_id, actor, surface, "cancelled")
        if isinstance(pending, Outcome):
            return pending
        seq = self._auditor.append(
            txn, actor, surface, pending.action, pending.summary, "deny", "cancelled",
            {"pending_id": pending.id},
        )  # fmt: skip
        return Outcome(
            "cancelled",
            pending.action,
            f"Cancelled: {pending.summary}",
            pending_id=pending.id,
            audit_seq=seq,
        )

    # -- the pipeline ------------------------------------------------------------

    def _run(
        self,
        ctx: Context,
        handler: Action,
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
            if handler.risky and not confirmed:
                return self._ask_to_confirm(call, prepared, decision)
            result = self._execute(call, prepared, decision)
        except Stopped as stopped:
            return stopped.outcome
        return self._audit_result(call, prepared, decision, result)

    def _prepare(self, call: Call) -> Prepared:
        try:
            return call.handler.prepare(call.ctx, call.params)
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
        try:
            decision = call.ctx.policy.decide(call.ctx.actor, prepared.permission, prepared.scope)
        except Exception:
            # A failure in the decision point denies (OWASP): never fall open.
            log.exception("decision point failed for %s", call.name)
            raise call.stop(
                "failed",
                "The permission check failed, so the action was refused.",
                prepared.target,
                "error",
                code="decision_error",
            ) from None
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
            raise call.stop(
                "failed",
                "The permission check failed, so the action was refused.",
                prepared.target,
                "error",
                code="decision_error",
                decision=decision,
            ) from None

    def _check_step_up(self, call: Call, prepared: Prepared, decision: Decision | None) -> None:
        ctx = call.ctx
        if prepared.sensitive and not self.step_up.satisfied(ctx.session, ctx.actor, ctx.now):
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
            data={"summary": prepared.summary, "expires_at": pending.expires_at.isoformat()},
            decision=decision,
            pending_id=pending.id,
            audit_seq=seq,
        )

    def _execute(self, call: Call, prepared: Prepared, decision: Decision | None) -> Result:
        """Run the action in a savepoint (none for a read-only one), with what must be
        written with it: the policy version bump, and its notices in the outbox."""
        ctx, handler = call.ctx, call.handler
        savepoint = None if handler.read_only else ctx.session.begin_nested()
        try:
            result = handler.execute(ctx, prepared)
            if handler.mutates_policy:
                bump_policy_version(ctx.txn, result.policy_users)
            if result.notices:
                if handler.read_only:
                    raise ValueError(f"{call.name} is read-only and cannot send notices")
                outbox.enqueue(ctx.txn, result.notices, ctx.now)
            if savepoint is not None:
                ctx.session.flush()
                savepoint.commit()
            return result
        except RbacError as exc:
            if savepoint is not None:
                savepoint.rollback()
            raise call.stop(
                "refused", exc.message, prepared.target, "failed", code=exc.code, decision=decision
            ) from None
        except Exception:
            if savepoint is not None:
                savepoint.rollback()
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


def _surface(surface: str) -> str:
    """The surface as stored and hashed: a plain string (a database driver may write an
    enum member by its name), or ValueError for a caller's programming error."""
    if surface not in SURFACES:
        raise ValueError(f"unknown surface {surface!r}")
    return str(Surface(surface))
