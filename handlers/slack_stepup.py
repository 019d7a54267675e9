"""Step-up 2FA in Slack: a sensitive command opens a modal asking for a code.

On a valid code the original command runs again through the gate (the modal's
metadata only says which command to repeat; it carries no authority), and its
answer goes back where the command was typed, through its response_url.
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

from .role_command import Reply
from .slack_blocks import escape, message

log = logging.getLogger(__name__)

CALLBACK_ID = "wa_stepup"
BLOCK_ID = "code"
ACTION_ID = "code"

Rerun = Callable[[str, str], Reply]
"""(actor, command text) -> the reply of running the command again."""


def open_code_modal(
    client: WebClient, trigger_id: str, command: str, text: str, response_url: str
) -> bool:
    """Ask for a code in a modal; False if Slack would not open it (trigger expired)."""
    metadata = json.dumps({"command": command, "text": text, "response_url": response_url})
    prompt = (
        f"`{escape(command)} {escape(text)}` is a sensitive action. Enter the 6-digit code "
        "from your authenticator app to continue."
    )[:3000]
    if len(metadata) > 3000:
        return False
    try:
        client.views_open(
            trigger_id=trigger_id,
            view={
                "type": "modal",
                "callback_id": CALLBACK_ID,
                "private_metadata": metadata,
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


def register(
    app: App, gate: Gate, reruns: dict[str, Rerun], on_lockout: Callable[[str], None]
) -> None:
    @app.view(CALLBACK_ID)
    def on_code(ack: Ack, body: dict[str, Any], view: dict[str, Any]) -> None:
        actor = body.get("user", {}).get("id", "")
        try:
            values = view.get("state", {}).get("values", {})
            code = str(values.get(BLOCK_ID, {}).get(ACTION_ID, {}).get("value") or "")
            outcome = gate.submit(actor, "slack", "2fa.verify", {"code": code})
        except Exception:
            log.exception("2FA modal failed")
            ack(response_action="errors", errors={BLOCK_ID: "Something went wrong; try again."})
            return
        if not outcome.ok:
            if outcome.error_code == "2fa_locked_now":
                on_lockout(actor)
            ack(response_action="errors", errors={BLOCK_ID: outcome.message[:150]})
            return
        ack()
        try:
            meta = json.loads(view.get("private_metadata") or "{}")
            rerun = reruns.get(str(meta.get("command")))
            if rerun is None or not meta.get("response_url"):
                return
            reply = rerun(actor, str(meta.get("text") or ""))
            WebhookClient(str(meta["response_url"]), timeout=5).send_dict(
                {**message(reply, {actor}), "replace_original": False}
            )
        except Exception:
            log.exception("could not finish the command after 2FA")
