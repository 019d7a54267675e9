"""The Gate: its entry points (submit, confirm, cancel, the reads it hands out), the
transactions they run in, and confirmation's claim; the stages are in stages.py."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import timedelta
from typing import Any, TypeVar

from sqlalchemy import Connection

from .. import signals
from ..clock import Clock, system_clock, utcnow
from ..directory import is_registered, resolve_scope, scope_without_lookup
from ..policy import Decision, Policy, PolicyCache
from ..policy.versions import lock_policy
from ..principals import Principal, Surface, trusted
from ..store import Database, Txn
from .auditing import AuditLater, Auditor, audited_actor
from .batching import GroupCommit
from .confirmations import CONFIRMATION_TTL, Confirmations
from .contract import Action, Context, NoStepUp, Outcome, StepUp
from .params import Params
from .stages import Stages

log = logging.getLogger("rbac_core.gate")
T = TypeVar("T")


class Gate(Stages):
    def __init__(
        self,
        db: Database,
        actions: Mapping[str, Action[Any]],
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
            if not issubclass(getattr(handler, "params_type", object), Params):
                raise ValueError(f"{handler.name} declares no params_type (a Params dataclass)")
            if handler.read_only and (handler.needs_confirmation or handler.mutates_policy):
                raise ValueError(
                    f"{handler.name} cannot be read-only and need confirmation or change policy"
                )
        self.clock = clock
        self.step_up: StepUp = step_up or NoStepUp()
        self.policies = PolicyCache(clock)
        self._auditor = Auditor(db, clock, chain_key)
        self._pending = Confirmations(self.actions, self._auditor, clock, confirmation_ttl)
        self._read_only = GroupCommit(db)

    # -- public entry points -------------------------------------------------

    def submit(
        self, actor: Principal, surface: str, action: str, params: Mapping[str, Any]
    ) -> Outcome:
        """Run `action` for `actor`; actions that need confirmation stop at a pending one.

        `actor` is who asks; a plain id passed by a script or a test is read as the
        principal it names (`principal_for`).
        Raises ValueError for a caller's programming error (unknown action or
        surface, params not a mapping); everything a person typed becomes an
        audited Outcome instead.
        """
        handler = self._handler(action)
        surface = _surface(surface)
        if not isinstance(params, Mapping):
            raise ValueError("params must be a mapping")

        principal, well_formed = _audited(actor)

        def run(txn: Txn) -> Outcome:
            ctx = self._context(txn, principal, surface, handler)
            if not well_formed:
                return self._invalid_actor(ctx, action)
            return self._run(ctx, handler, params, confirmed=False)

        return self._settled(self._read_only.run if handler.read_only else self._write, run)

    def confirm(self, pending_id: str, actor: Principal, surface: str) -> Outcome:
        """Confirm a pending action: only its actor, once, before it expires."""
        principal, surface = _audited(actor)[0], _surface(surface)
        return self._settled(
            self._write, lambda txn: self._confirm(txn, pending_id, principal, surface)
        )

    def cancel(self, pending_id: str, actor: Principal, surface: str) -> Outcome:
        principal, surface = _audited(actor)[0], _surface(surface)
        return self._settled(
            self._write, lambda txn: self._cancel(txn, pending_id, principal, surface)
        )

    def decide(self, user: str, permission: str, scope: str = "*") -> Decision:
        """A read-only decision on fresh policy, for surfaces deciding what to show.

        `scope` may be `*`, an E.164 number in any common spelling, or a
        registered Graph phone-number id; a malformed one raises MalformedNumber.

        Fresh: a change committed by any process of this machine before this call
        began counts; one committed elsewhere, once its notification arrived. While
        the policy stamp stands still the snapshot answers without a transaction
        (store/stamp.py, store/listened_stamp.py); when it moved, or cannot tell,
        the version is read.
        """
        stamp = self.db.policy_stamp
        seen = stamp.read()  # before the version, never after
        if seen is not None:
            policy = self.policies.trusted(seen)
            canonical = scope_without_lookup(scope) if policy is not None else None
            if policy is not None and canonical is not None:
                return policy.decide(user, permission, canonical)
        with self.db.transaction(write=False) as txn:
            canonical = resolve_scope(txn.session, scope) if scope != "*" else scope
            policy = self.policies.refresh(txn)
        stamp.recheck()  # at least once a TRUST_S: is it still the file on disk?
        if seen is not None:
            self.policies.trust(seen, policy)
        return policy.decide(user, permission, canonical)

    def knows(self, user: str) -> bool:
        """Whether `user` is registered: a read a surface needs before asking Slack about
        a newcomer (registering them is the `user.seen` action)."""
        with self.db.transaction(write=False) as txn:
            return is_registered(txn.session, user)

    def policy(self) -> Policy:
        with self.db.transaction(write=False) as txn:
            return self.policies.refresh(txn)

    def peek(self, look: Callable[[Connection], T]) -> T:
        """A look the core defines (is anything due?) on one read-only snapshot, unaudited:
        for scheduled work deciding whether to act at all, so idle periods write nothing."""
        with self.db.snapshot() as conn:
            return look(conn)

    @contextmanager
    def snapshot_for(self, allowed: Outcome) -> Iterator[Connection]:
        """The consistent snapshot an authorised bulk read streams from (verify, export):
        handed out only for the done outcome of an action that declares it."""
        handler = self.actions.get(allowed.action)
        if allowed.status != "done" or handler is None or not handler.hands_out_snapshot:
            raise PermissionError(f"{allowed.action} ({allowed.status}) hands out no snapshot")
        with self.db.snapshot() as conn:
            yield conn

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

    def _handler(self, action: str) -> Action[Any]:
        handler = self.actions.get(action)
        if handler is None:
            raise ValueError(f"no action named {action!r}")
        return handler

    def _context(
        self, txn: Txn, principal: Principal, surface: str, handler: Action[Any]
    ) -> Context:
        # A policy writer locks the version row before reading policy: on PostgreSQL
        # this waits for any other policy writer to commit, so its rules see current data.
        version = lock_policy(txn) if handler.mutates_policy else None
        return Context(
            txn,
            lambda: self.policies.refresh(txn, version),
            principal,
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

    def _confirm(self, txn: Txn, pending_id: str, principal: Principal, surface: str) -> Outcome:
        pending = self._pending.claim(txn, pending_id, principal.id, surface, "confirmed")
        if isinstance(pending, Outcome):
            return pending
        handler = self.actions[pending.action]  # claim made sure it exists
        ctx = self._context(txn, principal, surface, handler)
        params = json.loads(pending.params)
        outcome = self._run(ctx, handler, params, confirmed=True, pending_id=pending.id)
        if outcome.status != "done":
            pending.status = "refused"
        return outcome

    def _cancel(self, txn: Txn, pending_id: str, principal: Principal, surface: str) -> Outcome:
        pending = self._pending.claim(txn, pending_id, principal.id, surface, "cancelled")
        if isinstance(pending, Outcome):
            return pending
        seq = self._auditor.append(
            txn, principal.id, surface, pending.action, pending.summary, "deny", "cancelled",
            {"pending_id": pending.id},
        )  # fmt: skip
        return Outcome(
            "cancelled",
            pending.action,
            f"Cancelled: {pending.summary}",
            pending_id=pending.id,
            audit_seq=seq,
        )


_PLAIN = {str(surface.value): str(surface.value) for surface in Surface}


def _audited(actor: object) -> tuple[Principal, bool]:
    """The principal as audited, and whether its id was well-formed: a malformed one
    becomes a bounded placeholder, so the refusal's entry never carries it."""
    principal = trusted(actor)
    if principal is None:
        return Principal.person(audited_actor(None)), False
    audited = audited_actor(principal.id)
    if audited == principal.id:
        return principal, True
    return Principal.person(audited), False


def _surface(surface: str) -> str:
    """The surface as stored and hashed: a plain string, so nothing downstream (drivers,
    the chain's hash, JSON) ever sees an enum member; ValueError for a caller's
    programming error. One dict probe: this runs on every request."""
    plain = _PLAIN.get(surface)
    if plain is None:
        raise ValueError(f"unknown surface {surface!r}")
    return plain
