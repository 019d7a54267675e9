"""Slack listener for `/wa-audit`.

The review, a chain verification and an export read a lot, so the command is
acknowledged at once ("working on it", or the usage error, or help) and the
work runs in a Bolt lazy listener that answers through the `response_url`:
Slack's 3-second limit holds however large the workspace.
"""

from __future__ import annotations

import json
import logging
import tempfile
from typing import Any

from slack_bolt import Ack, App, Respond
from slack_sdk import WebClient

from rbac_core import Gate, Outcome
from rbac_core import audit as audit_log
from rbac_core.clock import utcnow
from rbac_core.principals import Principal
from rbac_core.review.reading import Page

from ..commands.audit import AuditCommand
from ..commands.grammar import UsageError, parse
from ..commands.roles import Reply
from ..scheduled.jobs import slack_deactivated
from .blocks import OUT_OF_DATE, clicked_json, message
from .review import render

log = logging.getLogger(__name__)

OLDER_ACTION = "wa_audit_log_older"
WORKING = "Working on it: the answer will appear here in a moment."
TROUBLE = "Something went wrong on our side and nothing was done; please try again."


def _older_button(filters: dict[str, Any], older: int) -> dict[str, Any]:
    value = json.dumps({**{k: v for k, v in filters.items() if k != "before"}, "before": older})
    return {
        "type": "actions",
        "block_id": "wa_audit_log_pages",
        "elements": [
            {
                "type": "button",
                "action_id": OLDER_ACTION,
                "text": {"type": "plain_text", "text": "Older entries"},
                "value": value[:2000],
            }
        ],
    }


def log_message(reply: Reply) -> dict[str, Any]:
    lines = reply.data.get("lines") or []
    people = {line.actor for line in lines}
    people |= {line.target[5:] for line in lines if line.target.startswith("user:")}
    answer = message(reply, people)
    if reply.data.get("older"):
        answer["blocks"].append(_older_button(reply.data["filters"], reply.data["older"]))
    return answer


def register(app: App, audit: AuditCommand, client: WebClient) -> None:
    gate = audit.gate

    def acknowledge(ack: Ack, command: dict[str, Any]) -> None:
        try:
            parsed = parse(audit.command, command.get("text") or "", audit.subcommands)
        except UsageError as exc:
            ack(response_type="ephemeral", text=exc.render())
            return
        if parsed is None:
            ack(
                response_type="ephemeral",
                text=audit.help(Principal.slack_user(str(command.get("user_id", "")))),
            )
            return
        ack(response_type="ephemeral", text=WORKING)

    def work(command: dict[str, Any], respond: Respond) -> None:
        actor = str(command.get("user_id", ""))
        try:
            if parse(audit.command, command.get("text") or "", audit.subcommands) is None:
                return  # help: answered by the acknowledgement
        except UsageError:
            return  # answered by the acknowledgement
        try:
            reply = audit.handle(
                Principal.slack_user(actor),
                "slack",
                command.get("text") or "",
                deactivated=lambda: slack_deactivated(client, lambda: None),
            )
            respond(replace_original=True, **_answer(reply, actor, gate, client))
        except Exception:
            log.exception("/wa-audit failed")
            respond(response_type="ephemeral", replace_original=True, text=TROUBLE)

    app.command(audit.command)(ack=acknowledge, lazy=[work])

    @app.action(OLDER_ACTION)
    def older(ack: Ack, body: dict[str, Any], respond: Respond) -> None:
        ack()
        actor = str(body.get("user", {}).get("id", ""))
        filters = clicked_json(body)
        if filters is None:
            respond(response_type="ephemeral", replace_original=False, text=OUT_OF_DATE)
            return
        try:
            outcome = gate.submit(Principal.slack_user(actor), "slack", "audit.log", filters)
            if outcome.status != "done":
                respond(response_type="ephemeral", replace_original=False, text=outcome.message)
                return
            reply = audit.log_page(Reply("text", "", outcome=outcome))
            respond(replace_original=True, **log_message(reply))
        except Exception:
            log.exception("paging the audit log failed")
            respond(response_type="ephemeral", replace_original=False, text=TROUBLE)


def _answer(reply: Reply, actor: str, gate: Gate, client: WebClient) -> dict[str, Any]:
    outcome = reply.outcome
    if outcome is not None and outcome.status == "done":
        if outcome.action == "audit.review" and isinstance(reply.data.get("page"), Page):
            return {"response_type": "ephemeral", **render(reply.data["page"], utcnow(gate.clock))}
        if outcome.action == "audit.log":
            return log_message(reply)
        if outcome.action == "audit.export":
            return {"response_type": "ephemeral", "text": _export(gate, client, actor, outcome)}
    return message(reply, {actor})


def _export(gate: Gate, client: WebClient, actor: str, allowed: Outcome) -> str:
    """Stream the log to a temporary file and send it to the person by DM."""
    with tempfile.NamedTemporaryFile("w+", suffix=".csv", encoding="utf-8", newline="") as fh:
        with gate.snapshot_for(allowed) as conn:
            count = audit_log.export(conn, fh, "csv")
        fh.flush()
        stamp = utcnow(gate.clock).strftime("%Y%m%d-%H%M")
        channel = client.conversations_open(users=actor)["channel"]["id"]
        client.files_upload_v2(
            channel=channel,
            file=fh.name,
            filename=f"wa-access-audit-{stamp}.csv",
            title=f"wa-access audit log ({count} entries)",
        )
    return f"Sent you the audit log by DM as CSV ({count} entries)."
