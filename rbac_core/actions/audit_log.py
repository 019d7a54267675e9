"""Gate actions that read the audit log: a page of it, a verification, an export.

Reading the log is itself audited. `audit.log` answers within the gate's
transaction (one indexed page of at most `LOG_PAGE` entries). Verification
and export read the whole log, which must not happen inside a write
transaction holding SQLite's writers' lock: the gate authorises and audits
them, and the surface then runs them on `Database.snapshot()`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import Table, or_, select

from ..errors import InvalidInput
from ..gate import Action, Context, Data, NoParams, Params, Prepared, Result
from ..store.models import AuditEntry
from ..values import BIGINT_MAX, WILDCARD, parse_duration, parse_user_id, parse_whole_number

LOG_PAGE = 20
ACTION_MAX = 64

_LOG = cast(Table, AuditEntry.__table__)


@dataclass(frozen=True)
class LogLine:
    seq: int
    time: datetime
    actor: str
    surface: str
    action: str
    target: str
    decision: str
    outcome: str


@dataclass(frozen=True)
class LogParams(Params):
    user: str | None = None
    """Entries by this person or about them."""
    action: str | None = None
    since: str | None = None
    """How far back, e.g. `7d`."""
    before: int | float | bool | str | None = None
    """The page's position: entries before this seq. It comes back from an "Older
    entries" button as JSON, which a forged click can make any number or a bool:
    `prepare` refuses each as a page that does not exist, so float and bool are
    accepted here only to reach that refusal."""


@dataclass(frozen=True)
class LogData(Data):
    lines: list[LogLine]
    older: int | None
    """The seq to page on from (`before`), when older entries exist."""
    filters: dict[str, Any]
    """The canonical params of this page, for the button asking for the next one."""


class AuditLogAction(Action[LogParams]):
    """Newest entries first, by or about one person, of one action, since a while ago."""

    name = "audit.log"
    params_type = LogParams
    read_only = True

    def prepare(self, ctx: Context, params: LogParams) -> Prepared:
        user = parse_user_id(params.user) if params.user else None
        action = (params.action or "").strip() or None
        if action is not None and (len(action) > ACTION_MAX or not action.isprintable()):
            raise InvalidInput("--action takes an action name such as role.assign")
        since = parse_duration(params.since) if params.since else None
        before = params.before
        before_seq = (
            parse_whole_number(
                before, "that page of the log does not exist", low=1, high=BIGINT_MAX
            )
            if before not in (None, "")
            else None
        )
        clean = {
            "user": user,
            "action": action,
            "since": params.since if since else None,
            "before": before_seq,
        }
        return Prepared(clean, "audit:view", WILDCARD, "audit_log", "read the audit log")

    def execute(self, ctx: Context, prepared: Prepared) -> Result:
        p = prepared.params
        query = select(
            _LOG.c.seq,
            _LOG.c.ts_us,
            _LOG.c.actor,
            _LOG.c.surface,
            _LOG.c.action,
            _LOG.c.target,
            _LOG.c.decision,
            _LOG.c.outcome,
        )
        if p["user"]:
            about = f"user:{p['user']}"
            query = query.where(or_(_LOG.c.actor == p["user"], _LOG.c.target == about))
        if p["action"]:
            query = query.where(_LOG.c.action == p["action"])
        if p["since"]:
            cutoff = ctx.now - parse_duration(p["since"])
            query = query.where(_LOG.c.ts_us >= int(cutoff.timestamp() * 1_000_000))
        if p["before"] is not None:
            query = query.where(_LOG.c.seq < p["before"])
        rows = ctx.session.execute(query.order_by(_LOG.c.seq.desc()).limit(LOG_PAGE + 1)).all()
        lines = [
            LogLine(
                seq, datetime.fromtimestamp(ts / 1_000_000, UTC), actor, surface, act, tgt, dec, out
            )
            for seq, ts, actor, surface, act, tgt, dec, out in rows[:LOG_PAGE]
        ]
        older = lines[-1].seq if len(rows) > LOG_PAGE else None
        return Result(
            f"{len(lines)} audit entries" + (" (more are older)" if older else ""),
            data=LogData(lines, older, dict(p)),
        )


class _Authorise(Action[NoParams]):
    """Authorised and audited here; the surface then does the reading on a snapshot."""

    params_type = NoParams
    read_only = True
    permission = ""
    summary = ""

    def prepare(self, ctx: Context, params: NoParams) -> Prepared:
        return Prepared({}, self.permission, WILDCARD, "audit_log", self.summary)

    def execute(self, ctx: Context, prepared: Prepared) -> Result:
        return Result(f"Allowed to {self.summary}.")


class VerifyAuditAction(_Authorise):
    name = "audit.verify"
    permission = "audit:view"
    summary = "verify the audit log"
    hands_out_snapshot = True


class ExportAuditAction(_Authorise):
    name = "audit.export"
    permission = "audit:export"
    summary = "export the audit log"
    hands_out_snapshot = True


AUDIT_ACTIONS: dict[str, Action[Any]] = {
    a.name: a for a in (AuditLogAction(), VerifyAuditAction(), ExportAuditAction())
}
