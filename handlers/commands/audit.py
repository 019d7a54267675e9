"""`/wa-audit`: the access review on demand, the audit log by page, its verification and export.

Surface-neutral like `/wa-role`: the gate authorises (and audits) each
subcommand; then, for the ones that read a lot, this module does the reading
outside the gate's transaction — building the review, walking the hash chain —
and words the answer. Exporting is left to the surface, which knows where a
file can go.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from rbac_core import Gate
from rbac_core import audit as audit_log
from rbac_core.actions.audit_log import LogLine
from rbac_core.principals import Principal
from rbac_core.review.building import KIND_TITLES, KINDS

from .grammar import NameLookup, Option, Subcommand
from .review_runs import ReviewRefused, complete_review
from .roles import Reply, SlashCommand

COMMAND = "/wa-audit"

SUBCOMMANDS: tuple[Subcommand, ...] = (
    Subcommand(
        "inactive",
        "audit.review",
        "/wa-audit inactive [--days 30]",
        "the access review now: inactive, deactivated, missing 2FA, expiring",
        options=(Option("days"),),
        permission="audit:run",
    ),
    Subcommand(
        "log",
        "audit.log",
        "/wa-audit log [@user] [--action A] [--since 7d]",
        "audit entries, newest first",
        positionals=(("user", "user", False),),
        options=(Option("action"), Option("since")),
        permission="audit:view",
    ),
    Subcommand(
        "verify",
        "audit.verify",
        "/wa-audit verify",
        "check the audit log's hash chain",
        permission="audit:view",
    ),
    Subcommand(
        "export",
        "audit.export",
        "/wa-audit export",
        "the whole audit log as a CSV file",
        permission="audit:export",
    ),
)

Deactivated = Callable[[], set[str]]
"""People the chat platform says are deactivated; None where it cannot be asked."""


def log_text(lines: list[LogLine]) -> str:
    if not lines:
        return "No audit entries match."
    return "\n".join(
        f"`#{line.seq}` {line.time.strftime('%Y-%m-%d %H:%M')} {line.actor} "
        f"*{line.action}* {line.target} — {line.decision}/{line.outcome} ({line.surface})"
        for line in lines
    )


class AuditCommand(SlashCommand):
    def __init__(self, gate: Gate) -> None:
        super().__init__(gate, COMMAND, SUBCOMMANDS, "the audit log and the access review")

    def handle(
        self,
        actor: Principal,
        surface: str,
        text: str,
        before_submit: Callable[[Mapping[str, object]], None] | None = None,
        names: NameLookup | None = None,
        deactivated: Deactivated | None = None,
    ) -> Reply:
        reply = super().handle(actor, surface, text, before_submit, names)
        outcome = reply.outcome
        if outcome is None or outcome.status != "done":
            return reply
        if outcome.action == "audit.review":
            return self._review(actor, surface, deactivated, reply)
        if outcome.action == "audit.log":
            return self.log_page(reply)
        if outcome.action == "audit.verify":
            return self._verify(reply)
        return reply  # audit.export: the surface sends the file

    def log_page(self, reply: Reply) -> Reply:
        assert reply.outcome is not None
        lines: list[LogLine] = list(reply.outcome.data["lines"])
        text = log_text(lines)
        if reply.outcome.data.get("older"):
            text += "\n_Older entries: use the button below._"
        return Reply("text", text, outcome=reply.outcome, data=dict(reply.outcome.data))

    def _review(
        self, actor: Principal, surface: str, deactivated: Deactivated | None, reply: Reply
    ) -> Reply:
        assert reply.outcome is not None
        try:
            run = complete_review(self.gate, actor, surface, reply.outcome, deactivated=deactivated)
        except ReviewRefused as refused:
            return Reply("error", refused.outcome.message, outcome=refused.outcome)
        review_id, totals = run.review_id, run.totals
        lines = [
            f"Access review #{review_id}: {totals.findings} grants to look at, held by "
            f"{totals.users} people ({totals.grants_checked} live grants checked)."
        ]
        lines += [f"• {totals.by_kind[k]} {KIND_TITLES[k]}" for k in KINDS if totals.by_kind[k]]
        if deactivated is None:
            lines.append("(Deactivations in Slack were not checked from here.)")
        data: dict[str, Any] = {"review_id": review_id, "page": run.first}
        return Reply("text", "\n".join(lines), outcome=reply.outcome, data=data)

    def _verify(self, reply: Reply) -> Reply:
        assert reply.outcome is not None
        with self.gate.snapshot_for(reply.outcome) as conn:
            result = audit_log.verify(conn, key=self.gate.chain_key)
        if result.ok:
            text = (
                f"The audit log is intact: {result.entries} entries, "
                f"head #{result.head_seq} {result.head_hash[:16]}…"
            )
        else:
            text = (
                f"The audit log has been TAMPERED WITH: the first bad entry is "
                f"#{result.first_bad_seq} ({result.problem})."
            )
        if not result.ok:  # an error reply: the console exits 1, as `audit verify` does
            return Reply("error", text, data={"intact": False})
        return Reply("text", text, outcome=reply.outcome, data={"intact": True})
