"""Step-up 2FA in Slack: a sensitive command or button opens a modal asking for a code.

On a valid code what was asked for runs again through the gate: the modal's
metadata only says what to repeat (a command line, or a decision on an access
request) and where to answer; it carries no authority. Each kind of work
registers a `Resume` that finishes it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

from slack_bolt import Ack, App
from slack_sdk import WebClient
from slack_sdk.webhook import WebhookClient

from rbac_core import Gate
from rbac_core.principals import Principal

from ..commands.roles import Reply
from .blocks import escape, message, own_json

log = logging.getLogger(__name__)

CALLBACK_ID = "wa_stepup"
BLOCK_ID = "code"
ACTION_ID = "code"

Rerun = Callable[[str, str], Reply]
"""(actor, command text) -> the reply of running the command again."""

Resume = Callable[[str, dict[str, Any]], None]
"""(actor, the modal's metadata) -> run again what the code was asked for, and answer."""

Answer = Callable[..., Any]
"""Bolt's `respond`, or the same through a saved response_url: takes a message's fields."""

COMMAND = "command"
STEP_UP_PROMPT = "This is a sensitive action: enter a 2FA code in the window that opened."


def open_code_modal(
    client: WebClient, trigger_id: str, command: str, text: str, response_url: str
) -> bool:
    """Ask for a code before running a slash command again."""
    return ask_for_code(
        client,
        trigger_id,
        f"`{escape(command)} {escape(text)}`",
        {"kind": COMMAND, "command": command, "text": text, "response_url": response_url},
    )


def ask_for_code(client: WebClient, trigger_id: str, what: str, metadata: dict[str, Any]) -> bool:
    """Ask for a code in a modal; False if Slack would not open it (trigger expired).

    `what` is mrkdwn naming the sensitive action; `metadata["kind"]` picks the
    `Resume` that finishes it once the code is good.
    """
    encoded = json.dumps(metadata)
    prompt = (
        f"{what} is a sensitive action. Enter the 6-digit code "
        "from your authenticator app to continue."
    )[:3000]
    if len(encoded) > 3000 or not trigger_id:
        return False
    try:
        client.views_open(
            trigger_id=trigger_id,
            view={
                "type": "modal",
                "callback_id": CALLBACK_ID,
                "private_metadata": encoded,
                "title": {"type": "plain_text", "text": "Verify with 2FA"},
                "submit": {"type": "plain_text", "text": "Verify"},
                "close": {"type": "plain_text", "text": "Cancel"},
                "blocks": [
                    {
                        "type": "section",
                        "text": {
                            "type": "mrkdwn",
                            "text": prompt,
                        },
                    },
                    {
                        "type": "input",
                        "block_id": BLOCK_ID,
                        "label": {"type": "plain_text", "text": "Code"},
                        "element": {
                            "type": "plain_text_input",
                            "action_id": ACTION_ID,
                            "min_length": 6,
                            "max_length": 6,
                        },
                    },
                ],
            },
        )
    except Exception:
        log.warning("could not open the 2FA modal", exc_info=False)
        return False
    return True


def answer_through(response_url: str) -> Answer:
    """Answer later through a response_url, as Bolt's `respond` would at once."""

    def send(**fields: Any) -> None:
        try:
            WebhookClient(response_url, timeout=5).send_dict(fields)
        except Exception as exc:  # done is done: the answer is what failed
            log.warning("could not answer through a saved response_url (%s)", type(exc).__name__)

    return send


def answer_by_dm(client: WebClient, user: str) -> Answer:
    """Answer in the person's DM with the app, where Slack gave no response_url.

    A button in the App Home (an approver's Approve / Deny) comes without one,
    and Bolt's own `respond` raises there. Replacing or deleting an original
    message means nothing in a DM, so those fields are dropped.
    """

    def send(text: str | dict[str, Any] = "", **fields: Any) -> None:
        message = dict(text) if isinstance(text, dict) else {"text": text, **fields}
        kept = {k: v for k, v in message.items() if k in ("text", "blocks", "attachments")}
        try:
            client.chat_postMessage(channel=user, **kept)
        except Exception:  # the action is done whether or not Slack takes the DM
            log.error("could not answer %s by DM", user)

    return send


def rerun_command(reruns: dict[str, Rerun]) -> Resume:
    """Resume a slash command: run it again and answer through its response_url."""

    def resume(actor: str, meta: dict[str, Any]) -> None:
        rerun = reruns.get(str(meta.get("command")))
        if rerun is None or not meta.get("response_url"):
            return
        reply = rerun(actor, str(meta.get("text") or ""))
        answer_through(str(meta["response_url"]))(**message(reply, {actor}), replace_original=False)

    return resume


def register(app: App, gate: Gate, resumers: dict[str, Resume]) -> None:
    @app.view(CALLBACK_ID)
    def on_code(ack: Ack, body: dict[str, Any], view: dict[str, Any]) -> None:
        actor = body.get("user", {}).get("id", "")
        try:
            values = view.get("state", {}).get("values", {})
            code = str(values.get(BLOCK_ID, {}).get(ACTION_ID, {}).get("value") or "")
            outcome = gate.submit(
                Principal.slack_user(actor), "slack", "2fa.verify", {"code": code}
            )
        except Exception:
            log.exception("2FA modal failed")
            ack(response_action="errors", errors={BLOCK_ID: "Something went wrong; try again."})
            return
        if not outcome.ok:
            ack(response_action="errors", errors={BLOCK_ID: outcome.message[:150]})
            return
        ack()
        try:
            meta = own_json(view.get("private_metadata") or "")
            if meta is not None and (resume := resumers.get(str(meta.get("kind") or COMMAND))):
                resume(actor, meta)
        except Exception:
            log.exception("could not finish the action after 2FA")
