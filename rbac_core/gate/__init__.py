"""The one gate: every action of every surface runs through `Gate.submit`.

    prepare -> authorise -> rules -> step-up 2FA -> confirmation -> execute -> audit

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
writers queue on a lock (store/dialects.py) instead of SQLite's sleeping busy handler.
Read-only calls that overlap share that transaction (batching.py).

The package: `contract` (what an action declares and returns, what a caller
gets), `core` (the Gate's entry points), `stages` (the pipeline, one concern
a method), `call` (one pass through it), `confirmations` (pending actions),
`auditing` (the gate's audit entries, including those its transaction lost),
`params` (typed params and results: each action's schema), `batching`.
"""

from .auditing import REDACTED
from .confirmations import CONFIRMATION_TTL
from .contract import (
    Action,
    Context,
    NoStepUp,
    Outcome,
    Pending,
    Prepared,
    Result,
    Status,
    StepUp,
)
from .core import Gate
from .params import NO_DATA, Data, NoData, NoParams, Params, wire, wire_name

__all__ = [
    "CONFIRMATION_TTL",
    "NO_DATA",
    "REDACTED",
    "Action",
    "Context",
    "Data",
    "Gate",
    "NoData",
    "NoParams",
    "NoStepUp",
    "Outcome",
    "Params",
    "Pending",
    "Prepared",
    "Result",
    "Status",
    "StepUp",
    "wire",
    "wire_name",
]
