"""The one gate: every action of every surface runs through `Gate.submit`.

    prepare -> authorize -> rules -> step-up 2FA -> confirmation -> execute -> audit

Each step can stop the action, and every stop is audited in the same
transaction as the decision. Execution runs inside a savepoint, so an action
that fails half way leaves nothing behind but the audit entry saying it failed.
Confirmation stores a pending action bound to its actor; confirming it runs
the whole gate again, so a grant revoked in between refuses the confirmation.

Read-only actions (`/wa-role show`, `list`, `why`, ...) write nothing but their
audit entry, so they skip the savepoint. They still run in one write
transaction with their audit append: measured through gunicorn on SQLite, a
read transaction followed by a separate audit transaction cost 15% more CPU
per `/wa-role show` and a worse p99 than one short transaction, because
writers queue on a lock (see db.py) instead of SQLite's sleeping busy handler.
Read-only calls that overlap share that transaction (group_commit.py).
"""

from __future__ import annotations

import json
import logging
import re
import secrets
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, Literal, Protocol

from sqlalchemy import select, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from . import audit, outbox, signals
from .clock import Clock, system_clock, utcnow
from .db import Database, Txn
from .directory import is_registered, resolve_scope
from .errors import InvalidInput, PermissionDenied, RbacError
from .group_commit import GroupCommit
from .models import PendingAction
from .policy import Decision, Policy, PolicyCache
from .policy_store import bump_policy_version, lock_policy
from .values import for_scope

log = logging.getLogger(__name__)

CONFIRMATION_TTL = timedelta(minutes=5)

Status = Literal[
    "done",
    "cancelled",
    "denied",
    "refused",
    "invalid",
    "needs_confirmation",
    "needs_2fa",
    "failed",
]

_ACTOR = re.compile(r"[A-Za-z0-9][A-Za-z0-9:._-]{0,63}")
REDACTED = "[redacted]"


@dataclass
class Context:
    """What an action may use while it runs: the open transaction and the policy.

    The policy snapshot is read on first use: system actions that decide
    nothing (sweeps, the scheduler's review) never pay for loading every grant.
    """

    txn: Txn
    load_policy: Callable[[], Policy]
    actor: str
    surface: str
    now: datetime
    clock: Clock
    _policy: Policy | None = None

    @property
    def policy(self) -> Policy:
        if self._policy is None:
            self._policy = self.load_policy()
        return self._policy

    @property
    def session(self) -> Session:
        """The ORM session of this transaction, made on first use."""
        return self.txn.session


@dataclass(frozen=True)
class Prepared:
    """An action's request after validation: what to authorise and how to describe it."""

    params: Mapping[str, Any]
    permission: str | None
    scope: str
    target: str
    summary: str
    sensitive: bool = False


@dataclass(frozen=True)
class Result:
    """What an action did. `data` goes back to the surface only; `details` is audited.

    `refusal` (an error code) marks a request the action turned down while its
    writes must still stand, such as counting a wrong 2FA code toward lockout.
    `policy_users`, for actions that change policy: the people whose grants or
    standing changed, so other processes reload only theirs. None, the
    default, makes every process reload the whole policy: the safe answer for
    an action that cannot name them.
    """

    message: str
    data: Mapping[str, Any] = field(default_factory=dict)
    details: Mapping[str, Any] = field(default_factory=dict)
    refusal: str | None = None
    policy_users: frozenset[str] | None = None
    notices: tuple[outbox.Notice, ...] = ()
    """What to tell people outside the database: written to the outbox in this
    transaction, delivered by a worker after the commit (outbox.py)."""


class Action(ABC):
    """One thing a person can ask for. Subclasses hold no state."""

    name: str
    risky: bool = False
    mutates_policy: bool = False
    read_only: bool = False
    """Writes nothing but its audit entry, so it runs without a savepoint."""
    secret_params: frozenset[str] = frozenset()
    """Params never written to the audit log or a pending action (codes, keys)."""

    @abstractmethod
    def prepare(self, ctx: Context, params: Mapping[str, Any]) -> Prepared:
        """Validate and canonicalise params; raise InvalidInput/NotFound/Conflict."""

    def check_rules(self, ctx: Context, prepared: Prepared) -> None:  # noqa: B027
        """Rules beyond the permission (escalation, self-grant, last admin); raise Forbidden."""

    @abstractmethod
    def execute(self, ctx: Context, prepared: Prepared) -> Result:
        """Do it. Runs in a savepoint: raising undoes every write it made."""


class StepUp(Protocol):
    """Tells whether the actor has proved a second factor recently enough."""

    def satisfied(self, session: Session, actor: str, now: datetime) -> bool: ...


class NoStepUp:
    """Until a second factor is configured, sensitive actions are refused (deny by default)."""

    def satisfied(self, session: Session, actor: str, now: datetime) -> bool:
        return False


@dataclass(frozen=True)
class Outcome:
    status: Status
    action: str
    message: str
    data: Mapping[str, Any] = field(default_factory=dict)
    decision: Decision | None = None
    pending_id: str | None = None
    error_code: str | None = None
    audit_seq: int | None = None

    @property
    def ok(self) -> bool:
        return self.status in ("done", "cancelled", "needs_confirmation")

    @property
    def exit_code(self) -> int:
        if self.ok:
            return 0
        return 2 if self.status == "invalid" else 1


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
        self.confirmation_ttl = confirmation_ttl
        self.policies = PolicyCache(clock)
        self._read_only = GroupCommit(db)

    # -- public entry points -------------------------------------------------

    def submit(self, actor: str, surface: str, action: str, params: Mapping[str, Any]) -> Outcome:
        """Run `action` for `actor`; risky actions stop at a pending confirmation.

        Raises ValueError for a caller's programming error (unknown action or
        surface, params not a mapping); everything a person typed becomes an
        audited Outcome instead.
        """
        handler = self._handler(action, surface)
        if not isinstance(params, Mapping):
            raise ValueError("params must be a mapping")

        def run(txn: Txn) -> Outcome:
            ctx = self._context(txn, _actor(actor), surface, handler)
            if ctx.actor != actor:
                return self._invalid_actor(ctx, action)
            return self._run(ctx, handler, params, confirmed=False)

        return self._settled(self._read_only.run if handler.read_only else self._write, run)

    def confirm(self, pending_id: str, actor: str, surface: str) -> Outcome:
        """Confirm a pending action: only its actor, once, before it expires."""
        actor = _actor(actor)
        return self._settled(
            self._write, lambda txn: self._confirm(txn, pending_id, actor, surface)
        )

    def _confirm(self, txn: Txn, pending_id: str, actor: str, surface: str) -> Outcome:
        pending = self._claim(txn, pending_id, actor, surface, "confirmed")
        if isinstance(pending, Outcome):
            return pending
        handler = self.actions[pending.action]  # _claim made sure it exists
        ctx = self._context(txn, actor, surface, handler)
        params = json.loads(pending.params)
        outcome = self._run(ctx, handler, params, confirmed=True, pending_id=pending.id)
        if outcome.status != "done":
            pending.status = "refused"
        return outcome

    def cancel(self, pending_id: str, actor: str, surface: str) -> Outcome:
        actor = _actor(actor)
        return self._settled(self._write, lambda txn: self._cancel(txn, pending_id, actor, surface))

    def _cancel(self, txn: Txn, pending_id: str, actor: str, surface: str) -> Outcome:
        pending = self._claim(txn, pending_id, actor, surface, "cancelled")
        if isinstance(pending, Outcome):
            return pending
        seq = self._audit(
            txn,
            actor,
            surface,
            pending.action,
            pending.summary,
            "deny",
            "cancelled",
            {"pending_id": pending.id},
        )
        return Outcome(
            "cancelled",
            pending.action,
            f"Cancelled: {pending.summary}",
            pending_id=pending.id,
            audit_seq=seq,
        )

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

    def _write(self, work: Callable[[Txn], Outcome]) -> Outcome:
        with self.db.transaction(write=True) as txn:
            return work(txn)

    def _settled(
        self,
        transact: Callable[[Callable[[Txn], Outcome]], Outcome],
        work: Callable[[Txn], Outcome],
    ) -> Outcome:
        """`work` in a transaction made by `transact`; a failure its own transaction could
        not audit is audited in a new one (_AuditLater); the outcome is reported once."""
        try:
            outcome = transact(work)
        except _AuditLater as late:
            outcome = self._audit_alone(late)
        return _observed(outcome)

    # -- the pipeline ----------------------------------------------------------

    def _handler(self, action: str, surface: str) -> Action:
        handler = self.actions.get(action)
        if handler is None:
            raise ValueError(f"no action named {action!r}")
        if surface not in audit.SURFACES:
            raise ValueError(f"unknown surface {surface!r}")
        return handler

    def _invalid_actor(self, ctx: Context, action: str) -> Outcome:
        seq = self._audit(
            ctx.txn,
            ctx.actor,
            ctx.surface,
            action,
            "-",
            "deny",
            "invalid",
            {"error": "malformed_actor"},
        )
        return Outcome(
            "invalid",
            action,
            "That request names no valid user.",
            error_code="malformed_actor",
            audit_seq=seq,
        )

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

    def _run(
        self,
        ctx: Context,
        handler: Action,
        params: Mapping[str, Any],
        *,
        confirmed: bool,
        pending_id: str | None = None,
    ) -> Outcome:
        name = handler.name
        base: dict[str, Any] = {"params": _redacted(params, handler.secret_params)}
        if pending_id:
            base["pending_id"] = pending_id

        def record(
            verdict: Literal["allow", "deny"],
            target: str,
            outcome: str,
            decision: Decision | None,
            extra: Mapping[str, Any],
        ) -> int:
            """Audit this step: the request's params, the decision's reason, and `extra`."""
            details = {**base, **extra}
            if decision is not None:
                details["reason"] = decision.reason
            return self._audit(
                ctx.txn, ctx.actor, ctx.surface, name, target, verdict, outcome, details
            )

        def stop(
            status: Status,
            message: str,
            target: str,
            outcome: str,
            *,
            decision: Decision | None = None,
            code: str | None = None,
        ) -> Outcome:
            stopped = Outcome(status, name, message, decision=decision, error_code=code)
            try:
                seq = record("deny", target, outcome, decision, {"error": code} if code else {})
            except _AuditLater as late:
                # A stop comes before the action wrote anything (or after its savepoint
                # was rolled back): the rollback loses nothing, so it stands as it is.
                late.outcome = stopped
                raise
            return replace(stopped, audit_seq=seq)

        try:
            prepared = handler.prepare(ctx, params)
        except InvalidInput as exc:
            return stop("invalid", exc.message, "-", "invalid", code=exc.code)
        except RbacError as exc:
            return stop("refused", exc.message, "-", "refused", code=exc.code)
        except Exception:
            # A bug or malformed value a surface let through: refuse, audit, never fall open.
            log.exception("preparing %s failed", name)
            return stop(
                "failed",
                "That request could not be understood, so nothing was done.",
                "-",
                "error",
                code="internal_error",
            )

        decision: Decision | None = None
        if prepared.permission is not None:
            try:
                decision = ctx.policy.decide(ctx.actor, prepared.permission, prepared.scope)
            except Exception:
                # A failure in the decision point denies (OWASP): never fall open.
                log.exception("decision point failed for %s", name)
                return stop(
                    "failed",
                    "The permission check failed, so the action was refused.",
                    prepared.target,
                    "error",
                    code="decision_error",
                )
            if not decision.allowed:
                return stop(
                    "denied",
                    f"You are not allowed to {prepared.summary}: you need "
                    f"{prepared.permission}" + for_scope(prepared.scope) + ". " + decision.reason,
                    prepared.target,
                    "refused",
                    decision=decision,
                    code=PermissionDenied.code,
                )
        try:
            handler.check_rules(ctx, prepared)
        except RbacError as exc:
            return stop(
                "refused", exc.message, prepared.target, "refused", code=exc.code, decision=decision
            )
        except Exception:
            log.exception("checking the rules of %s failed", name)
            return stop(
                "failed",
                "The permission check failed, so the action was refused.",
                prepared.target,
                "error",
                code="decision_error",
                decision=decision,
            )

        if prepared.sensitive and not self.step_up.satisfied(ctx.session, ctx.actor, ctx.now):
            return stop(
                "needs_2fa",
                f"To {prepared.summary} you must verify a 2FA code first "
                "(sensitive actions need a code verified in the last 10 minutes).",
                prepared.target,
                "needs_2fa",
                decision=decision,
                code="needs_2fa",
            )

        if handler.risky and not confirmed:
            pending = self._create_pending(ctx, handler, prepared)
            seq = record("allow", prepared.target, "pending", decision, {"pending_id": pending.id})
            return Outcome(
                "needs_confirmation",
                name,
                f"Please confirm: {prepared.summary}",
                data={"summary": prepared.summary, "expires_at": pending.expires_at.isoformat()},
                decision=decision,
                pending_id=pending.id,
                audit_seq=seq,
            )

        savepoint = None if handler.read_only else ctx.session.begin_nested()
        try:
            result = handler.execute(ctx, prepared)
            if handler.mutates_policy:
                bump_policy_version(ctx.txn, result.policy_users)
            if result.notices:
                if handler.read_only:
                    raise ValueError(f"{name} is read-only and cannot send notices")
                outbox.enqueue(ctx.txn, result.notices, ctx.now)
            if savepoint is not None:
                ctx.session.flush()
                savepoint.commit()
        except RbacError as exc:
            if savepoint is not None:
                savepoint.rollback()
            return stop(
                "refused", exc.message, prepared.target, "failed", code=exc.code, decision=decision
            )
        except Exception:
            if savepoint is not None:
                savepoint.rollback()
            log.exception("action %s failed", name)
            return stop(
                "failed",
                f"Something went wrong while trying to {prepared.summary}; nothing was changed.",
                prepared.target,
                "error",
                code="internal_error",
                decision=decision,
            )
        if result.refusal is not None:
            extra = {**result.details, "error": result.refusal}
            seq = record("deny", prepared.target, "refused", decision, extra)
            return Outcome(
                "refused",
                name,
                result.message,
                data=result.data,
                decision=decision,
                error_code=result.refusal,
                audit_seq=seq,
                pending_id=pending_id,
            )
        seq = record("allow", prepared.target, "done", decision, result.details)
        return Outcome(
            "done",
            name,
            result.message,
            data=result.data,
            decision=decision,
            audit_seq=seq,
            pending_id=pending_id,
        )

    # -- pending actions -------------------------------------------------------

    def _create_pending(self, ctx: Context, handler: Action, prepared: Prepared) -> PendingAction:
        if handler.secret_params & set(prepared.params):
            raise ValueError(f"{handler.name} cannot both hold secrets and wait for confirmation")
        pending = PendingAction(
            id=secrets.token_urlsafe(24),
            actor=ctx.actor,
            surface=ctx.surface,
            action=handler.name,
            params=json.dumps(_jsonable(prepared.params), sort_keys=True),
            summary=prepared.summary[:1000],
            status="pending",
            created_at=ctx.now,
            expires_at=ctx.now + self.confirmation_ttl,
        )
        ctx.session.add(pending)
        ctx.session.flush()
        return pending

    def _claim(
        self, txn: Txn, pending_id: str, actor: str, surface: str, new_status: str
    ) -> PendingAction | Outcome:
        """Move a pending action out of 'pending' exactly once, or explain why not."""
        now = utcnow(self.clock)
        session = txn.session
        # Lock order: the policy row before the pending row, as the expiry sweep takes
        # them (it locks policy, then expires pending rows). Taken the other way round, a
        # confirmation expiring as the sweep runs deadlocked them on PostgreSQL.
        action = session.scalar(select(PendingAction.action).where(PendingAction.id == pending_id))
        handler = self.actions.get(action) if action is not None else None
        if handler is not None and handler.mutates_policy:
            lock_policy(txn)
        pending = session.scalar(
            select(PendingAction).where(PendingAction.id == pending_id).with_for_update()
        )

        verb = "pending.confirm" if new_status == "confirmed" else "pending.cancel"

        def refuse(message: str, code: str, action: str = verb) -> Outcome:
            seq = self._audit(
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

        if pending is None:
            return refuse(
                "That confirmation does not exist (or has been cleaned up).", "pending_unknown"
            )
        if pending.actor != actor:
            return refuse(
                f"Only {pending.actor}, who asked for it, can confirm or cancel this action.",
                "pending_not_yours",
                pending.action,
            )
        if pending.status != "pending":
            return refuse(
                f"This action was already {pending.status}.", "pending_used", pending.action
            )
        if pending.action not in self.actions:
            return refuse(
                "This action is no longer supported; nothing was done.", "pending_unsupported"
            )
        if pending.expires_at <= now:
            pending.status = "expired"
            pending.resolved_at = now
            return refuse(
                "This confirmation has expired; run the command again if you still want it.",
                "pending_expired",
                pending.action,
            )
        claimed = session.execute(
            update(PendingAction)
            .where(PendingAction.id == pending_id, PendingAction.status == "pending")
            .values(status=new_status, resolved_at=now)
        )
        if claimed.rowcount != 1:  # type: ignore[attr-defined]
            # Unreachable under the row lock; kept so a bug can never run an action twice.
            return refuse("This action was already handled.", "pending_used", pending.action)
        pending.status = new_status
        return pending

    # -- audit -----------------------------------------------------------------

    def _audit(
        self,
        txn: Txn,
        actor: str,
        surface: str,
        action: str,
        target: str,
        decision: Literal["allow", "deny"],
        outcome: str,
        details: Mapping[str, Any],
    ) -> int:
        entry = audit.NewEntry(
            actor=actor,
            surface=surface,
            action=action,
            target=target,
            decision=decision,
            outcome=outcome,
            details=details,
            ts_us=audit.micros(self.clock()),
        )
        try:
            return audit.append(txn, [entry], key=self.chain_key)[0]
        except DBAPIError as exc:
            raise _AuditLater(entry) from exc

    def _audit_alone(self, late: _AuditLater) -> Outcome:
        """Write the entry of a stop whose own transaction had failed, in a new one."""
        log.warning(
            "%s: the transaction failed (%s); its refusal is audited on its own",
            late.entry.action,
            type(late.__cause__).__name__,
        )
        entry, outcome = late.entry, late.outcome
        if outcome is None:  # the rollback undid what the entry reported: a failure
            entry = replace(
                entry,
                decision="deny",
                outcome="error",
                details={**entry.details, "error": "db_error"},
            )
            outcome = Outcome(
                "failed",
                entry.action,
                "Something went wrong on our side, so nothing was done.",
                error_code="internal_error",
            )
        with self.db.transaction(write=True) as txn:
            seq = audit.append(txn, [entry], key=self.chain_key)[0]
        return replace(outcome, audit_seq=seq)


class _AuditLater(Exception):
    """A gate call whose audit entry its own transaction could no longer take.

    After any database error PostgreSQL refuses every further statement of the
    transaction, the gate's audit append included: a number out of a column's
    range in a read-only action used to leave no trace at all. The gate lets
    that transaction roll back (nothing the action did survives) and appends
    the entry in a new one, so every refusal and failure is audited. Where the
    rollback undid writes the answer depended on (a success, or a refusal that
    counts a wrong 2FA code), the answer is a plain failure, the same whatever
    the request was, so it tells nobody which answer it would have been.
    """

    def __init__(self, entry: audit.NewEntry) -> None:
        super().__init__(entry.action)
        self.entry = entry
        self.outcome: Outcome | None = None


def _observed(outcome: Outcome) -> Outcome:
    """Report a gate call's outcome once its transaction has ended (for metrics)."""
    if signals.gate_outcome.listeners:
        signals.gate_outcome.send(outcome.action, outcome.status)
    return outcome


def _jsonable(params: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in params.items() if v is not None}


def _redacted(params: Mapping[str, Any], secret: frozenset[str]) -> dict[str, Any]:
    """Params as the audit log may keep them: secrets masked, odd values made text."""
    return {
        str(k): REDACTED if k in secret else _auditable(v)
        for k, v in params.items()
        if v is not None
    }


def _auditable(value: Any) -> Any:
    if isinstance(value, str | int | float | bool):
        return value
    if isinstance(value, list | tuple):
        return [_auditable(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _auditable(v) for k, v in value.items()}
    return repr(value)[:200]


def _actor(actor: object) -> str:
    """The actor as audited: itself if well-formed, else a bounded placeholder."""
    if isinstance(actor, str) and _ACTOR.fullmatch(actor):
        return actor
    return "invalid-actor"
