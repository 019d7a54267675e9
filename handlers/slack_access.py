"""Access requests in Slack: posted to the audit channel with Approve / Deny buttons.

Every click runs the gate again: the button's value is only an id, never authority.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from slack_bolt import Ack, App, Respond
from slack_sdk import WebClient

from rbac_core import Gate, Outcome

from .role_command import reply_for
from .slack_blocks import escape, message

log = logging.getLogger(__name__)

APPROVE_ACTION = "wa_access_approve"
DENY_ACTION = "wa_access_deny"


def request_message(data: Mapping[str, Any]) -> dict[str, Any]:
    """The approvers' view of a request: who, what, where, how long, why, and two buttons."""
    scope = data["scope"]
    where = "the whole workspace" if scope == "*" else scope
    text = (
        f"<@{data['requester']}> asks for *{data['role']}* in {where} for {data['for']}.\n"
        f"Reason: {escape(str(data['reason']))}"
    )
    return {
        "text": text,
        "blocks": [
            {"type": "section", "text": {"type": "mrkdwn", "text": text}},
            {
                "type": "actions",
                "block_id": "wa_access_request",
                "elements": [
                    {
                        "type": "button",
                        "action_id": APPROVE_ACTION,
                        "style": "primary",
                        "text": {"type": "plain_text", "text": "Approve"},
                        "value": data["request_id"],
                    },
                    {
                        "type": "button",
                        "action_id": DENY_ACTION,
                        "style": "danger",
                        "text": {"type": "plain_text", "text": "Deny"},
                        "value": data["request_id"],
                    },
                ],
            },
        ],
    }


def post_request(client: WebClient, channel: str | None, outcome: Outcome) -> str | None:
    """Post a new request for approvers; returns a problem to tell the requester, or None."""
    if channel is None:
        return "No approvers' channel is configured (WA_AUDIT_CHANNEL): ask an admin directly."
    try:
        client.chat_postMessage(channel=channel, **request_message(outcome.data))
    except Exception:
        log.error("could not post access request %s", outcome.data.get("request_id"))
        return "Your request is saved, but I could not notify the approvers; ask an admin."
    return None


def register(app: App, gate: Gate, client: WebClient) -> None:
    def on_decision(approve: bool) -> Callable[..., None]:
        def listener(ack: Ack, body: dict[str, Any], respond: Respond) -> None:
            ack()
            actor = body.get("user", {}).get("id", "")
            request_id = str((body.get("actions") or [{}])[0].get("value") or "")
            action = "access.approve" if approve else "access.deny"
            try:
                outcome = gate.submit(actor, "slack", action, {"request_id": request_id})
            except Exception:
                log.exception("access decision failed")
                respond(
                    response_type="ephemeral",
                    replace_original=False,
                    text="Something went wrong and nothing was decided; try again.",
                )
                return
            if outcome.status != "done":
                # Not theirs to decide, or already decided: tell the clicker only.
                respond(replace_original=False, **message(reply_for(outcome), {actor}))
                return
            data = outcome.data
            verdict = "approved" if approve else "denied"
            scope = "the whole workspace" if data["scope"] == "*" else data["scope"]
            summary = (
                f"<@{actor}> {verdict} <@{data['requester']}>'s request for "
                f"*{data['role']}* in {scope} for {data['for']}."
            )
            respond(
                replace_original=True,
                text=summary,
                blocks=[{"type": "section", "text": {"type": "mrkdwn", "text": summary}}],
            )
            _tell_requester(client, data, approve, actor)

        return listener

    app.action(APPROVE_ACTION)(on_decision(approve=True))
    app.action(DENY_ACTION)(on_decision(approve=False))


def _tell_requester(client: WebClient, data: Mapping[str, Any], approved: bool, by: str) -> None:
    if approved:
        until = str(data.get("expires_at") or "")[:16].replace("T", " ")
        text = (
            f"Your request for *{data['role']}* was approved by <@{by}>; "
            f"it lasts until {until} UTC."
        )
    else:
        text = f"Your request for *{data['role']}* was denied by <@{by}>."
    try:
        client.chat_postMessage(channel=data["requester"], text=text)
    except Exception:
        log.error("could not tell %s about their request", data["requester"])
