"""The action contract: what an action declares, receives and returns, and what a caller gets.

An `Action` is one thing a person (or the system) can ask for. The gate hands
it a `Context` (the open transaction, the policy, who asks and from where),
asks it to `prepare` (validate, canonicalise, name the permission and scope),
to `check_rules` beyond the permission, and to `execute`; the caller gets an
`Outcome`. Names say what the gate does with them: `needs_confirmation` (a
pending action the actor must confirm), `Prepared.needs_step_up` (a TOTP code verified lately).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Generic, Literal, Protocol, TypeVar

from sqlalchemy.orm import Session

from ..clock import Clock
from ..outbox import Notice
from ..policy import Decision, Policy
from ..policy.relations import Resource
from ..principals import Principal
from ..store import Txn
from .params import NO_DATA, Data, Params

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


@dataclass
class Context:
    """What an action may use while it runs: the open transaction and the policy.

    The policy snapshot is read on first use: system actions that decide
    nothing (sweeps, the scheduler's review) never pay for loading every grant.
    """

    txn: Txn
    load_policy: Callable[[], Policy]
    principal: Principal
    surface: str
    now: datetime
    clock: Clock
    _policy: Policy | None = None

    @property
    def actor(self) -> str:
        """The principal's id: whom decisions are for, and who the audit log names."""
        return self.principal.id

    @property
    def is_system(self) -> bool:
        """The scheduler, or the operator at the server's command line; never a person."""
        return self.principal.is_system_on(self.surface)

    @property
    def is_operator(self) -> bool:
        """The operator at the server's command line, and only there."""
        return self.principal.is_operator_on(self.surface)

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
    needs_step_up: bool = False
    resource: Resource | None = None
    """What the action acts on, with the people related to it: the decision applies the
    relation rules about it (relations.py), such as separation of duties."""


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
    data: Data = NO_DATA
    details: Mapping[str, Any] = field(default_factory=dict)
    refusal: str | None = None
    policy_users: frozenset[str] | None = None
    notices: tuple[Notice, ...] = ()
    """What to tell people outside the database: written to the outbox in this
    transaction, delivered by a worker after the commit (rbac_core/outbox/)."""


P = TypeVar("P", bound=Params)


class Action(ABC, Generic[P]):
    """One thing a person can ask for. Subclasses hold no state.

    `params_type` is the dataclass of what a surface may send; the gate parses a
    surface's mapping into it before `prepare` (params.py).
    """

    name: str
    params_type: type[P]
    needs_confirmation: bool = False
    mutates_policy: bool = False
    read_only: bool = False
    """Writes nothing but its audit entry, so it runs without a savepoint."""
    secret_params: frozenset[str] = frozenset()
    """Params never written to the audit log or a pending action (codes, keys)."""
    hands_out_snapshot: bool = False
    """Once done, the surface may stream from one consistent snapshot of the database
    (`Gate.snapshot_for`): verifying or exporting the whole audit log."""

    @abstractmethod
    def prepare(self, ctx: Context, params: P) -> Prepared:
        """Validate and canonicalise params; raise InvalidInput/NotFound/Conflict.

        `Prepared.params` are the canonical params, as a mapping of wire names: they
        are audited and kept with a pending confirmation, which parses and prepares
        them again when confirmed, so they must parse as `params_type` too.
        """

    def check_rules(self, ctx: Context, prepared: Prepared) -> None:
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
class Pending(Data):
    """What waits for confirmation, and until when."""

    summary: str
    expires_at: str


@dataclass(frozen=True)
class Outcome:
    status: Status
    action: str
    message: str
    data: Data = NO_DATA
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
