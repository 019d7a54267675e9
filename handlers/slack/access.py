"""Access requests in Slack: posted to the audit channel with Approve / Deny buttons.

Every click runs the gate again: the button's value is only an id, never authority.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from typing import Any

from slack_bolt import Ack, App, Respond
from slack_sdk import WebClient

from rbac_core import Gate
from rbac_core.principals import Principal

from ..commands.roles import reply_for
from .blocks import OUT_OF_DATE, clicked_json, clicked_value, escape, message, own_json
from .stepup import (
    STEP_UP_PROMPT,
    Answer,
    Resume,
    answer_by_dm,
    answer_through,
    ask_for_code,
)

log = logging.getLogger(__name__)

APPROVE_ACTION = "wa_access_approve"
DENY_ACTION = "wa_access_deny"


def decision_buttons(request_id: str) -> dict[str, Any]:
    """Approve / Deny for one request: the value is only an id, never authority."""
    return {
        "type": "actions",
        "block_id": f"wa_access_request_{request_id}"[:255],
        "elements": [
            {
                "type": "button",
                "action_id": APPROVE_ACTION,
                "style": "primary",
                "text": {"type": "plain_text", "text": "Approve"},
                "value": request_id,
            },
            {
                "type": "button",
                "action_id": DENY_ACTION,
                "style": "danger",
                "text": {"type": "plain_text", "text": "Deny"},
                "value": request_id,
            },
        ],
    }


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
            decision_buttons(data["request_id"]),
        ],
    }


def approvers_told(channel: str | None) -> str:
    """What a requester is told about approvers: the request's notice is in the outbox,
    posted to the approvers' channel by the worker (rbac_core/outbox/)."""
    if channel is None:
        return "No approvers' channel is configured (WA_AUDIT_CHANNEL): ask an admin directly."
    return "Approvers are being told in the approvers' channel."


DECISION_KIND = "access_decision"
"""The step-up modal's `kind` for an Approve or Deny click waiting for a code."""


def _decide(
    gate: Gate,
    actor: str,
    approve: bool,
    request_id: str,
    answer: Answer,
    ask_code: Callable[[dict[str, Any]], bool] | None = None,
) -> bool:
    """Decide and answer; True when it waits for the approver's 2FA code instead."""
    action = "access.approve" if approve else "access.deny"
    try:
        outcome = gate.submit(
            Principal.slack_user(actor), "slack", action, {"request_id": request_id}
        )
    except Exception:
        log.exception("access decision failed")
        answer(
            response_type="ephemeral",
            replace_original=False,
            text="Something went wrong and nothing was decided; try again.",
        )
        return False
    if outcome.status == "needs_2fa" and ask_code is not None:
        metadata = {"kind": DECISION_KIND, "approve": approve, "request_id": request_id}
        if ask_code(metadata):
            answer(response_type="ephemeral", replace_original=False, text=STEP_UP_PROMPT)
            return True
    if outcome.status != "done":
        # Not theirs to decide, already decided, or no code: tell the clicker only.
        answer(replace_original=False, **message(reply_for(outcome), {actor}))
        return False
    summary = _decision_summary(actor, approve, outcome.data)
    answer(
        replace_original=True,
        text=summary,
        blocks=[{"type": "section", "text": {"type": "mrkdwn", "text": summary}}],
    )
    return False


def _decision_summary(actor: str, approve: bool, data: Mapping[str, Any]) -> str:
    verdict = "approved" if approve else "denied"
    scope = "the whole workspace" if data["scope"] == "*" else data["scope"]
    return (
        f"<@{actor}> {verdict} <@{data['requester']}>'s request for "
        f"*{data['role']}* in {scope} for {data['for']}."
    )


def register(
    app: App, gate: Gate, client: WebClient, refresh_home: Callable[[str], None]
) -> Resume:
    """Approve / Deny listeners; returns how to finish a decision after a 2FA code.

    The buttons sit in the audit channel's message and in each approver's App
    Home. A click in the Home has no response_url: the outcome goes to the
    approver by DM, and their Home is drawn again without the request.
    """

    def on_decision(approve: bool) -> Callable[..., None]:
        def listener(ack: Ack, body: dict[str, Any], respond: Respond) -> None:
            ack()
            actor = body.get("user", {}).get("id", "")
            request_id = clicked_value(body)
            verb = "Approving" if approve else "Denying"

            def ask_code(metadata: dict[str, Any]) -> bool:
                return ask_for_code(
                    client,
                    str(body.get("trigger_id") or ""),
                    f"{verb} this access request",
                    {**metadata, "response_url": str(body.get("response_url") or "")},
                )

            waiting = False
            try:
                waiting = _decide(gate, actor, approve, request_id, respond, ask_code)
            finally:
                if not body.get("response_url") and not waiting:
                    refresh_home(actor)

        return listener

    app.action(APPROVE_ACTION)(on_decision(approve=True))
    app.action(DENY_ACTION)(on_decision(approve=False))

    def resume(actor: str, meta: dict[str, Any]) -> None:
        """After a good code: the same decision again, answered on the original message,
        or for a click in the App Home by DM, with the Home drawn again."""
        response_url = str(meta.get("response_url") or "")
        try:
            _decide(
                gate,
                actor,
                meta.get("approve") is True,
                str(meta.get("request_id") or ""),
                answer_through(response_url) if response_url else answer_by_dm(client, actor),
            )
        finally:
            if not response_url:
                refresh_home(actor)

    return resume


REQUEST_BUTTON = "wa_request_access"
REQUEST_VIEW = "wa_request_access_view"


def request_button(permission: str, scope: str) -> dict[str, Any]:
    """The "Request access" button offered under a denial explained by `why`."""
    return {
        "type": "actions",
        "block_id": "wa_request_access",
        "elements": [
            {
                "type": "button",
                "action_id": REQUEST_BUTTON,
                "text": {"type": "plain_text", "text": "Request access"},
                "value": json.dumps({"permission": permission, "scope": scope}),
            }
        ],
    }


def request_modal(
    gate: Gate, permission: str, scope: str, response_url: str
) -> dict[str, Any] | None:
    """A form to ask for a role that carries `permission`; None if no role does."""
    policy = gate.policy()
    roles = sorted(
        (r for r in policy.roles if permission in policy.permissions_of_role(r)),
        key=lambda r: (len(policy.permissions_of_role(r)), r),
    )[:100]
    if not roles:
        return None
    where = "the whole workspace" if scope == "*" else scope
    return {
        "type": "modal",
        "callback_id": REQUEST_VIEW,
        "private_metadata": json.dumps({"scope": scope, "response_url": response_url}),
        "title": {"type": "plain_text", "text": "Request access"},
        "submit": {"type": "plain_text", "text": "Ask approvers"},
        "blocks": _request_blocks(permission, where, roles),
    }


def _request_blocks(permission: str, where: str, roles: list[str]) -> list[dict[str, Any]]:
    return [
        {
            "type": "section",
            "text": {
                "type": "mrkdwn",
                "text": (f"Roles that allow `{escape(permission)}`, smallest first, for {where}."),
            },
        },
        {
            "type": "input",
            "block_id": "role",
            "label": {"type": "plain_text", "text": "Role"},
            "element": {
                "type": "static_select",
                "action_id": "role",
                "initial_option": _option(roles[0]),
                "options": [_option(r) for r in roles],
            },
        },
        {
            "type": "input",
            "block_id": "for",
            "label": {"type": "plain_text", "text": "For how long (e.g. 4h, 2d)"},
            "element": {
                "type": "plain_text_input",
                "action_id": "for",
                "initial_value": "4h",
                "max_length": 8,
            },
        },
        {
            "type": "input",
            "block_id": "reason",
            "label": {"type": "plain_text", "text": "Why"},
            "element": {
                "type": "plain_text_input",
                "action_id": "reason",
                "multiline": True,
                "max_length": 500,
            },
        },
    ]


def _option(role: str) -> dict[str, Any]:
    return {"text": {"type": "plain_text", "text": role[:75]}, "value": role}


def register_request_form(
    app: App, gate: Gate, client: WebClient, audit_channel: str | None
) -> None:
    @app.action(REQUEST_BUTTON)
    def on_request_button(ack: Ack, body: dict[str, Any], respond: Respond) -> None:
        ack()
        _open_request_form(gate, client, body, respond)

    @app.view(REQUEST_VIEW)
    def on_request_form(ack: Ack, body: dict[str, Any], view: dict[str, Any]) -> None:
        _submit_request_form(gate, audit_channel, body, view, ack)


def _open_request_form(
    gate: Gate, client: WebClient, body: dict[str, Any], respond: Respond
) -> None:
    wanted = clicked_json(body)
    if wanted is None:
        respond(replace_original=False, text=OUT_OF_DATE)
        return
    try:
        view = request_modal(
            gate,
            str(wanted.get("permission")),
            str(wanted.get("scope") or "*"),
            str(body.get("response_url") or ""),
        )
        if view is None:
            respond(replace_original=False, text="No role carries that permission.")
            return
        client.views_open(trigger_id=body.get("trigger_id"), view=view)
    except Exception:
        log.exception("could not open the request form")
        respond(
            replace_original=False,
            text="I could not open the request form; use "
            "`/wa-role request ROLE --for 4h --reason TEXT`.",
        )


def _form_value(values: dict[str, Any], block: str) -> str:
    """What a block of the submitted form holds: a selected option's value or the text."""
    field = values.get(block, {}).get(block, {})
    selected = field.get("selected_option")
    chosen = selected.get("value") if isinstance(selected, dict) else None
    return str(chosen or field.get("value") or "")


def _field_at_fault(message: str) -> str:
    """Which input a refusal is about, so Slack shows it under that field."""
    if "duration" in message or "--for" in message:
        return "for"
    return "reason" if "--reason" in message else "role"


def _submit_request_form(
    gate: Gate, audit_channel: str | None, body: dict[str, Any], view: dict[str, Any], ack: Ack
) -> None:
    actor = body.get("user", {}).get("id", "")
    values = view.get("state", {}).get("values", {})
    meta = own_json(view.get("private_metadata") or "")
    if meta is None:
        ack(response_action="errors", errors={"reason": OUT_OF_DATE})
        return
    params = {
        "role": _form_value(values, "role"),
        "for": _form_value(values, "for"),
        "reason": _form_value(values, "reason"),
        "number": meta.get("scope"),
    }
    try:
        outcome = gate.submit(Principal.slack_user(actor), "slack", "access.request", params)
    except Exception:
        log.exception("access request form failed")
        ack(response_action="errors", errors={"reason": "Something went wrong; try again."})
        return
    if not outcome.ok:
        ack(
            response_action="errors",
            errors={_field_at_fault(outcome.message): outcome.message[:150]},
        )
        return
    ack()
    notice = approvers_told(audit_channel)
    if meta.get("response_url"):
        try:
            answer_through(str(meta["response_url"]))(
                text=f"{outcome.message}\n{notice}",
                replace_original=False,
                response_type="ephemeral",
            )
        except Exception:
            log.error("could not confirm the access request to %s", actor)
