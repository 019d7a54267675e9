"""How the gate writes its audit entries, including those its own transaction lost.

Every stop and every success is audited in the transaction of the decision.
After any database error PostgreSQL refuses every further statement of that
transaction, the audit append included (a number out of a column's range in
a read-only action used to leave no trace at all): `AuditLater` carries the
entry out, the transaction rolls back (nothing the action did survives), and
`Auditor.alone` appends it in a new one, so every refusal and failure is
audited. Where the rollback undid writes the answer depended on (a success, or
a refusal that counts a wrong 2FA code), the answer becomes a plain failure,
the same whatever the request was, so it tells nobody which it would have been.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, Literal

from sqlalchemy.exc import DBAPIError

from .. import audit
from ..clock import Clock
from ..store import Database, Txn
from .contract import Outcome

log = logging.getLogger("rbac_core.gate")

REDACTED = "[redacted]"
AUDITED_ITEMS = 50
"""Items of a list param kept in an audit entry; the rest are counted (a review's list
of people deactivated in Slack can run to thousands)."""
_ACTOR = re.compile(r"[A-Za-z0-9][A-Za-z0-9:._-]{0,63}")


class AuditLater(Exception):
    """A gate call whose audit entry its own transaction could no longer take (see above).

    `outcome` is set when the entry reports a stop that came before any write
    (or after its savepoint rolled back): the rollback loses nothing, so that
    answer stands as it is.
    """

    def __init__(self, entry: audit.NewEntry) -> None:
        super().__init__(entry.action)
        self.entry = entry
        self.outcome: Outcome | None = None


@dataclass(frozen=True)
class Auditor:
    db: Database
    clock: Clock
    chain_key: bytes | None
    """HMAC key of the audit chain (see audit.py); None keeps it plain SHA-256."""

    def append(
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
            raise AuditLater(entry) from exc

    def alone(self, late: AuditLater) -> Outcome:
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


def jsonable(params: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in params.items() if v is not None}


AUDITED_DEPTH = 3
"""Containers nested deeper than this are audited as a short text."""
AUDITED_CHARS = 1000
"""Longest text kept of one value (the longest field any action accepts is 500)."""


def redacted(params: Mapping[str, Any], secret: frozenset[str]) -> dict[str, Any]:
    """Params as the audit log may keep them: secrets masked, odd values made text, and
    bounded however the surface shaped them (items, depth, length), so no request can
    make an entry huge or its writer recurse without end."""
    kept: dict[str, Any] = {}
    for key, value in list(params.items())[:AUDITED_ITEMS]:
        if value is not None:
            kept[str(key)[:100]] = REDACTED if key in secret else _auditable(value, 1)
    if len(params) > AUDITED_ITEMS:
        kept["..."] = f"and {len(params) - AUDITED_ITEMS} more"
    return kept


def field_names(params: Mapping[str, Any]) -> dict[str, Any]:
    """What is audited of params the action's schema refused: their names, never their
    values (a code sent under a misspelt name is still a code)."""
    names = [str(key)[:100] for key in list(params)[:AUDITED_ITEMS]]
    return {"fields": names, "count": len(params)}


def _auditable(value: Any, depth: int) -> Any:
    if isinstance(value, bool | int | float):
        return value
    if isinstance(value, str):
        return value if len(value) <= AUDITED_CHARS else value[:AUDITED_CHARS] + "..."
    if depth >= AUDITED_DEPTH and isinstance(value, list | tuple | Mapping):
        return f"<{type(value).__name__} of {len(value)}>"
    if isinstance(value, list | tuple):
        kept = [_auditable(v, depth + 1) for v in value[:AUDITED_ITEMS]]
        if len(value) > AUDITED_ITEMS:
            kept.append(f"... and {len(value) - AUDITED_ITEMS} more")
        return kept
    if isinstance(value, Mapping):
        return redacted_mapping(value, depth)
    return repr(value)[:200]


def redacted_mapping(value: Mapping[Any, Any], depth: int) -> dict[str, Any]:
    kept = {str(k)[:100]: _auditable(v, depth + 1) for k, v in list(value.items())[:AUDITED_ITEMS]}
    if len(value) > AUDITED_ITEMS:
        kept["..."] = f"and {len(value) - AUDITED_ITEMS} more"
    return kept


def audited_actor(actor: object) -> str:
    """The actor as audited: itself if well-formed, else a bounded placeholder."""
    if isinstance(actor, str) and _ACTOR.fullmatch(actor):
        return actor
    return "invalid-actor"
